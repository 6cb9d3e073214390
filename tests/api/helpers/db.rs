//! Direct access to the test's databases, bypassing the app: where rows really are, which
//! server ran a statement, and waiting for the replicas.

use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, PgConnection, PgPool, postgres::PgPoolOptions};

use super::TestApp;

impl TestApp {
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

/// Deletes this test's cache keys (best effort; they would expire anyway).
pub(super) async fn drop_keys(redis_url: &str, prefix: &str) {
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

pub(super) async fn create_database(server: &str, name: &str) {
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
