//! `TestApp`: the real service on port 0 over fresh databases on the shared local stack, and
//! the arrange steps every test needs (a registered user, a post) as one call each.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use reqwest::{Response, StatusCode};
use scalable_api::{
    App, AppState, Config,
    admin::seed::{SeedOptions, seed},
    config::ShardConfig,
};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};

use super::{
    client::ResponseExt,
    db::{create_database, drop_keys},
};

/// The password of every user that [`TestApp::register`] creates.
pub const PASSWORD: &str = "correct horse battery";

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

/// Another instance of the service over a [`TestApp`]'s databases and Redis prefix, as a load
/// balancer puts several side by side: what one instance does, the other must honour.
/// Stopped when dropped (the databases belong to the `TestApp`).
pub struct Instance {
    pub base: String,
    pub client: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// An API key made by [`TestApp::create_api_key`]: its id and the whole key.
#[derive(Debug, Clone)]
pub struct TestKey {
    pub id: i64,
    pub key: String,
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
        // The rate limits too (the login limits count in the same limiter): every test comes
        // from 127.0.0.1, and one test's requests must not spend another's budgets. Under the
        // cache's prefix, so that the same clean-up drops both.
        config.ratelimit.redis_url = stack.redis.as_str().into();
        config.ratelimit.key_prefix = format!("{name}:ratelimit");
        // And the idempotency keys: two tests may well send the same key.
        config.http.idempotency.redis_url = stack.redis.as_str().into();
        config.http.idempotency.key_prefix = format!("{name}:idempotency");
        // Parallel tests load the shared stack hard (one seeds a million rows), so its
        // replicas can lag past the production bounds and leave rotation, which would send
        // reads that tests expect on replicas to primaries. Lag bounds are tested on the
        // chaos stack, where tests set them; here they are out of the way.
        config.db.replicas.max_lag_bytes = u64::MAX;
        config.db.replicas.max_lag = Duration::MAX;
        // Likewise the load-shedding limit: it follows latency, and other tests' load makes
        // this machine's latency swing, so a limit that shrank under it would shed this
        // test's requests. The layer still runs (every request gets its priority); its limit
        // is out of reach. Shedding is tested with limits of its own (`shedding.rs`).
        config.shedding.initial_limit = 100_000;
        config.shedding.min_limit = 100_000;
        config.shedding.max_limit = 100_000;
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

    /// Registers a user and logs them in: an arrange step that asserts both succeeded.
    pub async fn register(&self, email: &str, name: &str) -> TestUser {
        let password = PASSWORD.to_owned();
        let user = self
            .auth()
            .register(email, name, &password)
            .await
            .expect_json(StatusCode::CREATED, &format!("registering {email}"))
            .await;
        let id = user["id"].as_i64().expect("an integer id");
        let token = self.login(email, &password).await;
        TestUser {
            id,
            email: email.to_owned(),
            password,
            token,
        }
    }

    /// Logs in and returns the access token, asserting it worked.
    pub async fn login(&self, email: &str, password: &str) -> String {
        let body = self
            .auth()
            .login(email, password)
            .await
            .expect_json(StatusCode::OK, &format!("logging in as {email}"))
            .await;
        body["access_token"].as_str().expect("a token").to_owned()
    }

    /// Creates a post titled `title` by `user` and returns it, asserting it worked.
    pub async fn create_post(&self, user: &TestUser, title: &str) -> Value {
        self.posts()
            .create(
                user,
                json!({ "title": title, "body": format!("body of {title}") }),
            )
            .await
            .expect_json(StatusCode::CREATED, &format!("creating post {title}"))
            .await
    }

    /// Creates an API key for `user` with `scope` (`read` or `write`), asserting it worked.
    pub async fn create_api_key(&self, user: &TestUser, scope: &str) -> TestKey {
        let body = self
            .api_keys()
            .create(
                user,
                json!({ "name": format!("{scope} key"), "scope": scope }),
            )
            .await
            .expect_json(StatusCode::CREATED, &format!("creating a {scope} key"))
            .await;
        TestKey {
            id: body["id"].as_i64().expect("an integer id"),
            key: body["key"]
                .as_str()
                .expect("the key, shown once")
                .to_owned(),
        }
    }

    /// Starts another instance with this one's config (its databases, its Redis prefixes).
    pub async fn another_instance(&self) -> Instance {
        self.another_instance_with(|_| {}).await
    }

    /// Starts another instance with this one's config after `tweak` (same databases and Redis
    /// prefixes, another setting).
    pub async fn another_instance_with(&self, tweak: impl FnOnce(&mut Config)) -> Instance {
        let mut config = self.state.config.clone();
        tweak(&mut config);
        let state = App::build(config).expect("the test config is valid");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        let server = tokio::spawn(async move {
            let _ = scalable_api::serve(listener, state, std::future::pending()).await;
        });
        Instance {
            base,
            client: reqwest::Client::new(),
            server,
        }
    }

    /// Renames `user` (a write on their shard), asserting it worked; the response carries the
    /// write's consistency token.
    pub async fn rename(&self, user: &TestUser, name: &str) -> Response {
        let response = self
            .users()
            .patch(user.id, user, json!({ "name": name }))
            .await;
        assert_eq!(response.status(), StatusCode::OK, "rename to {name}");
        response
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

/// Test logs only when `TEST_LOG` is set: parallel tests' output is noise otherwise.
fn init_test_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    }
}
