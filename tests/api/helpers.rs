//! `TestApp`: the real service on port 0 over fresh databases on the shared local stack.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use reqwest::{Method, Response, StatusCode};
use scalable_api::{
    App, AppState, Config,
    admin::seed::{SeedOptions, seed},
    config::ShardConfig,
};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection, PgPool, postgres::PgPoolOptions};

/// The stack's servers, from `eval "$(scripts/stack env)"`.
#[derive(Debug, Clone)]
pub struct Stack {
    pub primaries: Vec<String>,
    pub replicas: Vec<String>,
    pub redis: String,
}

impl Stack {
    /// The shared stack every test uses (`SCALABLE_API_STACK_*`).
    pub fn from_env() -> Self {
        Self::with_prefix("SCALABLE_API_STACK_")
    }

    /// The second stack (`SCALABLE_API_CHAOS_*`) for tests that pause, stop and restart
    /// servers; they take turns on it (see `chaos.rs`), so the shared stack never blinks.
    pub fn chaos() -> Self {
        Self::with_prefix("SCALABLE_API_CHAOS_")
    }

    fn with_prefix(prefix: &str) -> Self {
        let var = |name: &str| {
            let name = format!("{prefix}{name}");
            std::env::var(&name).unwrap_or_else(|_| {
                panic!("{name} is not set: run the tests with `scripts/test`, which starts both stacks and exports their settings")
            })
        };
        Self {
            primaries: vec![var("SHARD0_PRIMARY"), var("SHARD1_PRIMARY")],
            replicas: vec![var("SHARD0_REPLICA"), var("SHARD1_REPLICA")],
            redis: var("REDIS"),
        }
    }
}

pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub stack: Stack,
    /// Per-test database names: `shard_dbs[i]` lives on shard i's primary (and, replicated,
    /// its replica); `directory_db` on shard 0's primary.
    pub shard_dbs: Vec<String>,
    pub directory_db: String,
    server: tokio::task::JoinHandle<()>,
}

/// A registered user and their access token.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: i64,
    pub email: String,
    pub password: String,
    pub token: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique_name() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "t_{}_{}_{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Spawns the app after `tweak` has adjusted the config (shard ranges, limits, ...).
    /// The shard map's URLs are filled in here; `tweak` sees them already set.
    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::spawn_on(Stack::from_env(), tweak).await
    }

    /// Like [`TestApp::spawn_with`], on the given stack.
    pub async fn spawn_on(stack: Stack, tweak: impl FnOnce(&mut Config)) -> Self {
        init_test_logs();
        let name = unique_name();
        let shard_dbs: Vec<String> = (0..stack.primaries.len())
            .map(|i| format!("{name}_s{i}"))
            .collect();
        let directory_db = format!("{name}_dir");
        for (i, db) in shard_dbs.iter().enumerate() {
            create_database(&stack.primaries[i], db).await;
        }
        create_database(&stack.primaries[0], &directory_db).await;

        let mut config = Config::default();
        config.http.addr = ([127, 0, 0, 1], 0).into();
        config.db.directory_url = format!("{}/{directory_db}", stack.primaries[0]).into();
        config.db.shards = shard_dbs
            .iter()
            .enumerate()
            .map(|(i, db)| ShardConfig {
                id: i as u16,
                first_id: i as i64 * 1_000_000_000 + 1,
                last_id: (i as i64 + 1) * 1_000_000_000,
                primary: format!("{}/{db}", stack.primaries[i]).into(),
                replicas: vec![format!("{}/{db}", stack.replicas[i]).into()],
                accepts_new_users: true,
            })
            .collect();
        config.db.pool_max_connections = 5;
        // The cache on the stack's Redis, under this test's own key prefix.
        config.cache.redis_url = stack.redis.as_str().into();
        config.cache.key_prefix = name.clone();
        // Parallel tests load the shared stack hard (one seeds a million rows), so its
        // replicas can lag past the production bounds and leave rotation, which would send
        // reads that tests expect on replicas to primaries. Lag bounds are tested on the
        // chaos stack, where tests set them; here they are out of the way.
        config.db.replicas.max_lag_bytes = u64::MAX;
        config.db.replicas.max_lag = Duration::MAX;
        tweak(&mut config);

        let state = App::build(config.clone()).expect("the test config is valid");
        scalable_api::admin::migrate::run(&state.db, &config.db)
            .await
            .expect("migrations apply");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        let serve_state = state.clone();
        let server = tokio::spawn(async move {
            let _ = scalable_api::serve(listener, serve_state, std::future::pending()).await;
        });
        let app = Self {
            base,
            client: reqwest::Client::new(),
            state,
            stack,
            shard_dbs,
            directory_db,
            server,
        };
        // Replicas must have the databases and the schema before the first read goes there.
        app.wait_for_replicas().await;
        app
    }

    /// Spawns the app (after `tweak`), loads `users` and `posts` of the deterministic demo data
    /// set, and waits until the replicas have them.
    pub async fn spawn_seeded(users: u64, posts: u64, tweak: impl FnOnce(&mut Config)) -> Self {
        let app = Self::spawn_with(tweak).await;
        seed(
            &app.state.db,
            SeedOptions {
                users,
                posts,
                reset: false,
                if_empty: false,
            },
        )
        .await
        .expect("seeding works");
        app.wait_for_replicas().await;
        app
    }

    /// Sends a request; `token` adds `Authorization: Bearer`, `body` is sent as JSON.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Response {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request
            .send()
            .await
            .expect("the request reaches the test server")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path, None, None).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.request(Method::POST, path, None, Some(body)).await
    }

    pub async fn register(&self, email: &str, name: &str) -> TestUser {
        let password = "correct horse battery".to_owned();
        let response = self
            .post_json(
                "/v1/auth/register",
                &json!({ "email": email, "name": name, "password": password }),
            )
            .await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "registering {email}"
        );
        let user: Value = response.json().await.expect("JSON body");
        let id = user["id"].as_i64().expect("an integer id");
        let token = self.login(email, &password).await;
        TestUser {
            id,
            email: email.to_owned(),
            password,
            token,
        }
    }

    pub async fn login(&self, email: &str, password: &str) -> String {
        let response = self
            .post_json(
                "/v1/auth/login",
                &json!({ "email": email, "password": password }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK, "logging in as {email}");
        let body: Value = response.json().await.expect("JSON body");
        body["access_token"].as_str().expect("a token").to_owned()
    }

    pub async fn create_post(&self, user: &TestUser, title: &str) -> Value {
        let response = self
            .request(
                Method::POST,
                "/v1/posts",
                Some(&user.token),
                Some(&json!({ "title": title, "body": format!("body of {title}") })),
            )
            .await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "creating post {title}"
        );
        response.json().await.expect("JSON body")
    }

    /// POSTs a GraphQL request to `/graphql`; returns the status and the JSON body.
    pub async fn graphql(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> (StatusCode, Value) {
        let body = json!({ "query": query, "variables": variables });
        let response = self
            .request(Method::POST, "/graphql", token, Some(&body))
            .await;
        let status = response.status();
        let body = response.json().await.expect("a JSON body from /graphql");
        (status, body)
    }

    /// Every server of the stack in this test's databases: (label, pool), primaries and
    /// replicas of each shard.
    pub async fn servers(&self) -> Vec<(String, PgPool)> {
        let mut servers = Vec::new();
        for shard in 0..self.shard_dbs.len() {
            servers.push((format!("shard{shard}-primary"), self.primary(shard).await));
            servers.push((format!("shard{shard}-replica"), self.replica(shard).await));
        }
        servers
    }

    /// A direct connection pool to shard `i`'s primary test database (bypassing the app).
    pub async fn primary(&self, i: usize) -> PgPool {
        connect(&format!(
            "{}/{}",
            self.stack.primaries[i], self.shard_dbs[i]
        ))
        .await
    }

    /// A direct connection pool to shard `i`'s replica test database.
    pub async fn replica(&self, i: usize) -> PgPool {
        connect(&format!("{}/{}", self.stack.replicas[i], self.shard_dbs[i])).await
    }

    pub async fn directory(&self) -> PgPool {
        connect(&format!(
            "{}/{}",
            self.stack.primaries[0], self.directory_db
        ))
        .await
    }

    /// Waits until every replica has replayed everything its primary had written when this
    /// was called: after it, a replica read sees all earlier writes.
    pub async fn wait_for_replicas(&self) {
        for (primary, replica) in self.stack.primaries.iter().zip(&self.stack.replicas) {
            let mut p = PgConnection::connect(&format!("{primary}/postgres"))
                .await
                .expect("primary");
            // The insert position, not `pg_current_wal_lsn()` (the write position): with
            // `synchronous_commit = off` a commit can still sit in WAL buffers past the latter.
            let target: String = sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text")
                .fetch_one(&mut p)
                .await
                .expect("current LSN");
            // Replicas receive only flushed WAL, and the WAL writer flushes asynchronous
            // commits up to 3 x wal_writer_delay later. Flush now: a transaction that commits
            // synchronously flushes all WAL before its own commit record, target included.
            p.execute("SET synchronous_commit = on")
                .await
                .expect("synchronous commit");
            p.execute("SELECT pg_current_xact_id()")
                .await
                .expect("flush the WAL");
            let mut r = PgConnection::connect(&format!("{replica}/postgres"))
                .await
                .expect("replica");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let caught_up: bool = sqlx::query_scalar(
                    "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), $1::pg_lsn) >= 0",
                )
                .bind(&target)
                .fetch_one(&mut r)
                .await
                .expect("replay LSN");
                if caught_up {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "replica {replica} did not catch up within 30s"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

impl Drop for TestApp {
    /// Drops this test's databases (replication drops them on the replicas too), even when
    /// the test panicked. Runs on its own thread: `Drop` cannot await on the test's runtime.
    fn drop(&mut self) {
        self.server.abort();
        let mut targets: Vec<(String, String)> = self
            .shard_dbs
            .iter()
            .enumerate()
            .map(|(i, db)| (self.stack.primaries[i].clone(), db.clone()))
            .collect();
        targets.push((self.stack.primaries[0].clone(), self.directory_db.clone()));
        let (redis, prefix) = (
            self.stack.redis.clone(),
            self.state.config.cache.key_prefix.clone(),
        );
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                drop_keys(&redis, &prefix).await;
                for (server, db) in targets {
                    if let Ok(mut conn) = PgConnection::connect(&format!("{server}/postgres")).await
                    {
                        let _ = conn
                            .execute(
                                format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)").as_str(),
                            )
                            .await;
                    }
                }
            });
        });
        let _ = dropper.join();
    }
}

/// Deletes this test's cache keys (best effort; they would expire anyway).
async fn drop_keys(redis_url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(redis_url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
    }
}

async fn create_database(server: &str, name: &str) {
    let mut conn = PgConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap_or_else(|e| panic!("cannot reach {server}: is the stack up? ({e})"));
    conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
        .await
        .expect("CREATE DATABASE");
    let mut db = PgConnection::connect(&format!("{server}/{name}"))
        .await
        .expect("connect to the new database");
    // Statement counts per server (the stack preloads the library): how tests prove which
    // server ran a query.
    db.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await
        .expect("pg_stat_statements");
}

pub async fn connect(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

/// Calls of statements matching `pattern` (SQL LIKE) run on `pool`'s server in its database,
/// from pg_stat_statements: proof of where a query really ran.
pub async fn statement_calls(pool: &PgPool, pattern: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(s.calls), 0)::bigint FROM pg_stat_statements s \
         JOIN pg_database d ON d.oid = s.dbid \
         WHERE d.datname = current_database() AND s.query LIKE $1",
    )
    .bind(pattern)
    .fetch_one(pool)
    .await
    .expect("pg_stat_statements is readable")
}

/// Calls of every statement run on `pool`'s server in its database, except the statistics
/// queries themselves: what a request cost, as a difference of two readings.
/// Counts only statements on the data tables (`users`, `posts`): the service's own probes
/// (the health monitor every interval, live replay checks, commit LSNs) and the driver's
/// housekeeping are routing overhead, not the statements a request costs.
pub async fn all_statement_calls(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(s.calls), 0)::bigint FROM pg_stat_statements s \
         JOIN pg_database d ON d.oid = s.dbid \
         WHERE d.datname = current_database() \
         AND (s.query ILIKE '%users%' OR s.query ILIKE '%posts%')",
    )
    .fetch_one(pool)
    .await
    .expect("pg_stat_statements is readable")
}

/// Asserts a problem+json response with `status` and returns its body.
pub async fn assert_problem(response: Response, status: StatusCode, what: &str) -> Value {
    assert_eq!(response.status(), status, "{what}");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        content_type, "application/problem+json",
        "{what}: content type"
    );
    let body: Value = response.json().await.expect("a JSON problem body");
    assert_eq!(
        body["status"].as_u64(),
        Some(u64::from(status.as_u16())),
        "{what}: status field"
    );
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("https://scalable-api.dev/problems/")),
        "{what}: type field in {body}"
    );
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{what}: title and detail in {body}"
    );
    body
}

/// The `X-Db-Route` header of a response.
pub fn route_of(response: &Response) -> String {
    response
        .headers()
        .get("x-db-route")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Test logs only when `TEST_LOG` is set: parallel tests' output is noise otherwise.
fn init_test_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    }
}
