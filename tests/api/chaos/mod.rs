//! The tests that stop, pause or restart servers: replicas that lag and die, primaries that
//! die, Redis stopped or paused (under the cache and under the rate limits). They run on the
//! second ("chaos") stack (`SCALABLE_API_CHAOS_*`), never the shared one, so the parallel
//! tests never see a failure they did not cause.
//!
//! They take turns on that stack (the nextest test group `chaos` selects this module, and a
//! file lock serves runners without groups) and always leave it running (the guard's `Drop`).
//! **Any new test that pauses or stops a server belongs in this module**, or it will race the
//! others.

mod cache;
mod db;
mod ratelimit;

use std::{
    fs::File,
    future::Future,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::helpers::{ResponseExt, Stack, TestApp};

/// Exclusive use of the chaos stack for one test; restores it on drop.
pub struct Chaos {
    _lock: File,
    pub stack: Stack,
}

impl Chaos {
    pub async fn acquire() -> Self {
        let lock = tokio::task::spawn_blocking(|| {
            let path = std::env::temp_dir().join("scalable-api-chaos-tests.lock");
            let file = File::create(path).expect("create the lock file");
            file.lock().expect("lock the chaos stack");
            file
        })
        .await
        .expect("join");
        Self {
            _lock: lock,
            stack: Stack::chaos(),
        }
    }

    /// Runs `scripts/stack ARGS` against the chaos stack.
    pub fn ctl(args: &[&str]) {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: use scripts/test"))
        };
        let status = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/stack"))
            .args(args)
            .env(
                "SCALABLE_API_STACK_PORT_BASE",
                var("SCALABLE_API_CHAOS_PORT_BASE"),
            )
            .env("SCALABLE_API_STACK_DIR", var("SCALABLE_API_CHAOS_DIR"))
            .status()
            .expect("run scripts/stack");
        assert!(status.success(), "scripts/stack {args:?} failed");
    }

    /// [`Chaos::ctl`] off the test's runtime thread: the app under test runs on that
    /// thread too, and must keep serving while the script stops and starts servers.
    pub async fn control(args: &'static [&'static str]) {
        tokio::task::spawn_blocking(move || Chaos::ctl(args))
            .await
            .expect("scripts/stack ran");
    }

    pub async fn replay(&self, shard: usize, paused: bool) {
        let pool =
            crate::helpers::connect(&format!("{}/postgres", self.stack.replicas[shard])).await;
        let sql = if paused {
            "SELECT pg_wal_replay_pause()"
        } else {
            "SELECT pg_wal_replay_resume()"
        };
        sqlx::query(sql)
            .execute(&pool)
            .await
            .expect("pause/resume replay");
    }
}

impl Drop for Chaos {
    /// Whatever the test did or wherever it failed: replay resumed, every server running.
    fn drop(&mut self) {
        let replicas = self.stack.replicas.clone();
        let _ = std::thread::spawn(move || {
            Chaos::ctl(&["up"]);
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                for replica in replicas {
                    if let Ok(pool) = sqlx::PgPool::connect(&format!("{replica}/postgres")).await {
                        let _ = sqlx::query("SELECT pg_wal_replay_resume()")
                            .execute(&pool)
                            .await;
                    }
                }
            });
        })
        .join();
    }
}

/// Polls `check` every 20 ms until it returns true, or panics after `limit` naming `what`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// The service's `/readyz` report: breakers, replicas in rotation, pending invalidations.
pub async fn readyz(app: &TestApp) -> Value {
    app.get("/readyz").await.json_body().await
}
