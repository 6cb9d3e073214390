//! scalable-api: a users/posts API that shows, in running code, how an API is scaled.
//!
//! [`App::build`] turns a [`Config`] into the shared state, [`router`] into the axum
//! `Router`, [`service`] into what is served (the router behind header versioning), and
//! [`serve`] runs it with graceful shutdown. The binary (`main.rs`) and the
//! integration tests both go through these, so the tests exercise the real wiring.

pub mod admin;
pub mod auth;
pub mod cache;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod graphql;
pub mod http;
pub mod operations;
pub mod telemetry;
pub mod traffic;

use std::{future::Future, ops::Deref, sync::Arc};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

pub use config::Config;
pub use error::{Error, Result};
pub use http::{router, service};

use auth::{ApiKeyVerifier, JwtKeys, password::Hasher};
use cache::Cache;
use db::Db;

/// Everything a request handler may need, built once at start-up.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub db: Arc<Db>,
    /// The cache in front of `db` for users, posts and post pages.
    pub cache: Cache,
    pub jwt: JwtKeys,
    /// argon2, behind a bound on concurrent runs.
    pub hasher: Hasher,
    /// Checks presented API keys against the directory, through a short in-process cache.
    pub api_keys: ApiKeyVerifier,
    /// Refuses access tokens issued before a password change, or for a deleted account.
    pub credential_versions: auth::CredentialVersions,
    /// Signs and checks the v2 lists' cursors.
    pub cursors: http::cursor::Cursors,
    /// Signs the consistency tokens writes answer with, and checks those reads send back.
    pub consistency_tokens: http::session::ConsistencyTokens,
    /// The distributed rate limiter (Redis): one atomic decision per check.
    pub limiter: traffic::RateLimiter,
    /// The limits routes apply through `limiter`: per tier and route class, with the
    /// fallback when Redis cannot decide (`src/http/limits.rs` applies them).
    pub limits: traffic::RouteLimits,
    /// The adaptive concurrency limit with priorities; `None` when `shedding.enabled` is off.
    pub shedder: Option<traffic::LoadShedder>,
    /// Renders `/metrics`; `None` when `telemetry.metrics` is off.
    pub metrics: Option<PrometheusHandle>,
    /// Claims and answers of POSTs with an `Idempotency-Key` (Redis); `None` when
    /// `http.idempotency.enabled` is off.
    pub idempotency: Option<http::idempotency::Store>,
}

/// Cheap-to-clone handle to the [`App`]; handlers take `State<AppState>`.
#[derive(Debug, Clone)]
pub struct AppState(Arc<App>);

impl Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

impl App {
    /// Builds the state from a validated config. Opens no connection: pools connect lazily,
    /// so the service starts (and reports itself degraded) even when a shard is down.
    pub fn build(config: Config) -> anyhow::Result<AppState> {
        config.validate()?;
        // First: the shard map registers its series with whatever recorder is installed.
        let metrics = config.telemetry.metrics.then(telemetry::metrics::install);
        let db = Arc::new(Db::connect_lazy(&config.db)?);
        let jwt = JwtKeys::new(&config.auth);
        let cursors = http::cursor::Cursors::new(&config.auth);
        let consistency_tokens = http::session::ConsistencyTokens::new(&config.auth);
        let hasher = Hasher::new(&config.auth);
        let cache = Cache::new(&config.cache, db.clone())?.audited(&config.consistency.audit);
        let api_keys = ApiKeyVerifier::new(
            &config.auth.api_keys,
            Arc::new(operations::api_keys::DirectoryKeys(db.clone())),
        );
        let credential_versions = auth::CredentialVersions::new(
            &config.auth,
            Arc::new(operations::accounts::ShardVersions(db.clone())),
        );
        let limiter = traffic::RateLimiter::new(&config.ratelimit)?;
        let limits = traffic::RouteLimits::new(&config.ratelimit);
        let shedder = config
            .shedding
            .enabled
            .then(|| traffic::LoadShedder::new(&config.shedding));
        let idempotency = config
            .http
            .idempotency
            .enabled
            .then(|| {
                http::idempotency::Store::new(&config.http.idempotency, config.http.request_timeout)
            })
            .transpose()?;
        Ok(AppState(Arc::new(App {
            config,
            db,
            cache,
            jwt,
            hasher,
            api_keys,
            credential_versions,
            cursors,
            consistency_tokens,
            limiter,
            limits,
            shedder,
            metrics,
            idempotency,
        })))
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting connections and
/// lets in-flight requests finish, for at most `http.shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    app: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let grace = app.config.http.shutdown_grace;
    // Health monitors and the directory repair pass run while this instance serves.
    let mut background = app.db.spawn_background();
    background.extend(app.cache.spawn_background());
    if let Some(admin) = http::metrics::admin_server(&app).await? {
        background.push(admin);
    }
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server = http::server::run(
        listener,
        service(app.clone()),
        &app.config.http,
        async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight requests");
            let _ = stopping_tx.send(());
        },
    );
    let drained = async {
        // Once shutdown has begun, give the drain `grace` before giving up on stragglers.
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = server => {}
        () = drained => tracing::warn!(?grace, "shutdown grace period over; dropping unfinished requests"),
    }
    for task in background {
        task.abort();
    }
    app.db.close().await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM (what Kubernetes sends before killing a pod).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
