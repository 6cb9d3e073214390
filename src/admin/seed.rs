//! Deterministic demo data, loaded with `COPY` per shard.
//!
//! The same `--users N --posts M` always produces the same rows (ids, emails, texts, times),
//! so load tests and examples are repeatable. Users are spread over the shards that accept
//! new users round-robin (the placement policy), each post goes to its author's shard, and
//! the shards load in parallel. `COPY` streams rows without per-row round trips or
//! statement parsing: it is what makes a million rows a matter of seconds.
//!
//! Every demo user's password is [`DEMO_PASSWORD`], hashed once: argon2id costs tens of
//! milliseconds on purpose, which is an hour for 100,000 users.
//!
//! Safety: accounts whose password is printed in the README must never exist in production,
//! so seeding refuses the production profile outright. `--reset` truncates every shard and
//! the directory: the CLI asks for it to be confirmed (typed on a terminal, or `--yes`), and
//! the reset also drops the cache's and the idempotency store's Redis entries, which would
//! otherwise serve the deleted rows (and replay answers that name them) until their TTLs.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, TimeZone, Utc};
use sqlx::PgPool;

use crate::auth::password::{self, DEMO_PASSWORD};
use crate::config::Profile;
use crate::db::Db;

#[derive(Debug, Clone, Copy)]
pub struct SeedOptions {
    pub users: u64,
    pub posts: u64,
    /// Delete existing users, posts and directory entries first.
    pub reset: bool,
    /// Do nothing when data is already there (for the dev script's repeated starts).
    pub if_empty: bool,
}

#[derive(Debug)]
pub struct SeedReport {
    pub users: u64,
    pub posts: u64,
    pub skipped: bool,
    pub elapsed: Duration,
}

/// Where the demo data set's users go: shard slot and id of user `n` (1-based).
struct Layout {
    /// (index into `db.cluster()`, first id) of each shard that takes users.
    shards: Vec<(usize, i64)>,
}

impl Layout {
    fn of_user(&self, n: u64) -> (usize, i64) {
        let k = self.shards.len() as u64;
        let (slot, first) = self.shards[((n - 1) % k) as usize];
        (slot, first + ((n - 1) / k) as i64)
    }
}

/// Refuses to load demo accounts (public password) in the production profile.
pub fn allowed(profile: Profile) -> anyhow::Result<()> {
    ensure!(
        profile != Profile::Production,
        "seed loads demo accounts whose password ({DEMO_PASSWORD}) is public: refused in the production profile"
    );
    Ok(())
}

/// Drops every Redis key under `prefix:` with SCAN and UNLINK (never FLUSHDB: the Redis may
/// be shared): a reset's old rows must not be served from the cache afterwards. Returns how
/// many went. (The load generator has the same loop in `loadtest/src/process.rs`: it is a
/// crate of its own that does not link the service.)
pub async fn forget_cached(redis_url: &str, prefix: &str) -> anyhow::Result<u64> {
    let client = redis::Client::open(redis_url).context("Failed to parse the Redis URL")?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .context("Failed to connect to Redis to drop the cache")?;
    let pattern = format!("{prefix}:*");
    let (mut cursor, mut dropped) = (0_u64, 0);
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let n: u64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await?;
            dropped += n;
        }
        if next == 0 {
            return Ok(dropped);
        }
        cursor = next;
    }
}

pub async fn seed(db: &Db, options: SeedOptions) -> anyhow::Result<SeedReport> {
    let started = Instant::now();
    let shards: Vec<_> = db.cluster().iter().collect();
    let mut has_data = false;
    for shard in &shards {
        has_data |= sqlx::query_scalar!("SELECT EXISTS (SELECT 1 FROM users) AS \"exists!\"")
            .fetch_one(shard.primary_pool())
            .await
            .with_context(|| {
                format!(
                    "Failed to inspect shard {} (did `migrate` run?)",
                    shard.id()
                )
            })?;
    }
    if has_data {
        if options.if_empty {
            return Ok(SeedReport {
                users: 0,
                posts: 0,
                skipped: true,
                elapsed: started.elapsed(),
            });
        }
        if !options.reset {
            bail!("the shards already hold users: pass --reset to replace them");
        }
        for shard in &shards {
            sqlx::query!("TRUNCATE users, posts")
                .execute(shard.primary_pool())
                .await?;
        }
        sqlx::query!("TRUNCATE directory_entries")
            .execute(db.directory_pool())
            .await?;
    }

    let layout = Layout {
        shards: shards
            .iter()
            .enumerate()
            .filter(|(_, s)| s.accepts_new_users())
            .map(|(i, s)| (i, *s.range().start()))
            .collect(),
    };
    ensure!(!layout.shards.is_empty(), "no shard accepts new users");
    for (i, shard) in shards.iter().enumerate() {
        let capacity = (shard.range().end() - shard.range().start() + 1) as u64;
        let needed = options
            .users
            .div_ceil(layout.shards.len() as u64)
            .max(options.posts);
        ensure!(
            needed <= capacity || !layout.shards.iter().any(|(slot, _)| *slot == i),
            "shard {} has room for {capacity} ids, fewer than the data set needs",
            shard.id()
        );
    }

    let hash = tokio::task::spawn_blocking(|| password::hash_blocking(DEMO_PASSWORD)).await??;
    let layout = std::sync::Arc::new(layout);
    let mut tasks = tokio::task::JoinSet::new();
    for (slot, shard) in shards.iter().enumerate() {
        let (pool, layout, hash) = (shard.primary_pool().clone(), layout.clone(), hash.clone());
        let first_post = *shard.range().start();
        tasks.spawn(
            async move { load_shard(&pool, &layout, slot, first_post, &hash, options).await },
        );
    }
    let directory = db.directory_pool().clone();
    let dir_layout = layout.clone();
    tasks.spawn(async move { load_directory(&directory, &dir_layout, options.users).await });
    while let Some(result) = tasks.join_next().await {
        result.context("a seeding task panicked")??;
    }
    Ok(SeedReport {
        users: options.users,
        posts: options.posts,
        skipped: false,
        elapsed: started.elapsed(),
    })
}

/// Rows of one shard: its users, then their posts, then the sequences moved past them.
async fn load_shard(
    pool: &PgPool,
    layout: &Layout,
    slot: usize,
    first_post: i64,
    hash: &str,
    options: SeedOptions,
) -> anyhow::Result<()> {
    // One transaction per shard: a failed load leaves the shard as it was, not half-filled.
    let mut tx = pool.begin().await?;
    // Bulk loads outlast the service's per-statement bound.
    sqlx::query!("SET LOCAL statement_timeout = 0")
        .execute(&mut *tx)
        .await?;
    // COPY FROM STDIN is a data stream, not a statement sqlx can prepare: no checked form.
    let mut copy = tx
        .copy_in_raw(
            "COPY users (id, email, name, password_hash, tier, created_at, updated_at) FROM STDIN",
        )
        .await?;
    let mut buf = String::with_capacity(CHUNK + 4096);
    let mut last_user = None;
    for n in 1..=options.users {
        let (user_slot, id) = layout.of_user(n);
        if user_slot != slot {
            continue;
        }
        let at = timestamp(user_time(n, options.users));
        let tier = if mix(n).is_multiple_of(10) {
            "pro"
        } else {
            "free"
        };
        let name = person_name(n);
        buf.push_str(&format!(
            "{id}\tuser{n}@example.com\t{name}\t{hash}\t{tier}\t{at}\t{at}\n"
        ));
        last_user = Some(id);
        if buf.len() >= CHUNK {
            copy.send(std::mem::take(&mut buf).into_bytes()).await?;
        }
    }
    copy.send(std::mem::take(&mut buf).into_bytes()).await?;
    copy.finish().await?;

    // COPY FROM STDIN: no checked form (see above).
    let mut copy = tx
        .copy_in_raw("COPY posts (id, user_id, title, body, created_at, updated_at) FROM STDIN")
        .await?;
    let mut next_post = first_post;
    for j in 0..options.posts {
        // Authors drawn uniformly from the users: about posts/users posts each.
        let author = 1 + mix(j ^ 0x5eed) % options.users.max(1);
        let (post_slot, user_id) = layout.of_user(author);
        if post_slot != slot || options.users == 0 {
            continue;
        }
        let at = timestamp(post_time(j, options.posts));
        let (title, body) = (
            words(j, 3, 8, true),
            words(j.wrapping_mul(31), 15, 40, false),
        );
        buf.push_str(&format!(
            "{next_post}\t{user_id}\t{title}\t{body}\t{at}\t{at}\n"
        ));
        next_post += 1;
        if buf.len() >= CHUNK {
            copy.send(std::mem::take(&mut buf).into_bytes()).await?;
        }
    }
    copy.send(std::mem::take(&mut buf).into_bytes()).await?;
    copy.finish().await?;

    // COPY with explicit ids leaves the sequences behind; move them past what was loaded.
    if let Some(last) = last_user {
        sqlx::query_scalar!("SELECT setval('users_id_seq', $1)", last)
            .fetch_one(&mut *tx)
            .await?;
    }
    if next_post > first_post {
        sqlx::query_scalar!("SELECT setval('posts_id_seq', $1)", next_post - 1)
            .fetch_one(&mut *tx)
            .await?;
    }
    // Fresh statistics, or the planner guesses from an empty table.
    sqlx::query!("ANALYZE users, posts")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

async fn load_directory(pool: &PgPool, layout: &Layout, users: u64) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query!("SET LOCAL statement_timeout = 0")
        .execute(&mut *tx)
        .await?;
    // COPY FROM STDIN: no checked form (see `load_shard`).
    let mut copy = tx
        .copy_in_raw("COPY directory_entries (email, user_id, state) FROM STDIN")
        .await?;
    let mut buf = String::with_capacity(CHUNK + 4096);
    for n in 1..=users {
        let (_, id) = layout.of_user(n);
        buf.push_str(&format!("user{n}@example.com\t{id}\tactive\n"));
        if buf.len() >= CHUNK {
            copy.send(std::mem::take(&mut buf).into_bytes()).await?;
        }
    }
    copy.send(std::mem::take(&mut buf).into_bytes()).await?;
    copy.finish().await?;
    sqlx::query!("ANALYZE directory_entries")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Bytes per COPY message: large enough to amortise the round trip, small enough to stream.
const CHUNK: usize = 1 << 20;

/// Users join over the first 30 days, posts follow over the next 300: a post is never older
/// than its author, and within a shard post ids grow with time (the feed relies on it).
const EPOCH: i64 = 1_735_689_600; // 2025-01-01T00:00:00Z
const USER_SPAN: i64 = 30 * 86_400;
const POST_SPAN: i64 = 300 * 86_400;

fn user_time(n: u64, users: u64) -> i64 {
    EPOCH + (n as i64 * USER_SPAN) / users.max(1) as i64
}

fn post_time(j: u64, posts: u64) -> i64 {
    EPOCH + USER_SPAN + (j as i64 * POST_SPAN) / posts.max(1) as i64
}

fn timestamp(secs: i64) -> String {
    let at: DateTime<Utc> = Utc.timestamp_opt(secs, 0).single().unwrap_or_default();
    at.format("%Y-%m-%d %H:%M:%S+00").to_string()
}

/// SplitMix64: a fixed, documented mixing function, written out because the demo data must
/// not change when a random-number crate changes its algorithms between versions.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const FIRST: [&str; 16] = [
    "Ada", "Alan", "Barbara", "Donald", "Edsger", "Frances", "Grace", "John", "Ken", "Leslie",
    "Margaret", "Niklaus", "Radia", "Shafi", "Tony", "Vint",
];
const LAST: [&str; 16] = [
    "Lovelace",
    "Turing",
    "Liskov",
    "Knuth",
    "Dijkstra",
    "Allen",
    "Hopper",
    "Backus",
    "Thompson",
    "Lamport",
    "Hamilton",
    "Wirth",
    "Perlman",
    "Goldwasser",
    "Hoare",
    "Cerf",
];
const WORDS: [&str; 32] = [
    "shard", "replica", "cache", "latency", "queue", "lease", "token", "index", "merge", "stream",
    "batch", "limit", "retry", "breaker", "pool", "primary", "lag", "commit", "snapshot", "range",
    "cursor", "page", "hot", "cold", "key", "write", "read", "fan", "out", "load", "tail",
    "budget",
];

fn person_name(n: u64) -> String {
    let h = mix(n);
    format!(
        "{} {}",
        FIRST[(h % 16) as usize],
        LAST[((h >> 8) % 16) as usize]
    )
}

/// `min..=max` words chosen by `seed`; a title gets a capital and no full stop.
fn words(seed: u64, min: u64, max: u64, title: bool) -> String {
    let mut h = mix(seed);
    let count = min + h % (max - min + 1);
    let mut out = String::new();
    for i in 0..count {
        h = mix(h ^ i);
        let word = WORDS[(h % WORDS.len() as u64) as usize];
        if i > 0 {
            out.push(' ');
        }
        if i == 0 {
            let mut chars = word.chars();
            if let Some(c) = chars.next() {
                out.extend(c.to_uppercase());
                out.push_str(chars.as_str());
            }
        } else {
            out.push_str(word);
        }
    }
    if !title {
        out.push('.');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_alternate_over_shards_with_consecutive_ids() {
        let layout = Layout {
            shards: vec![(0, 1), (1, 1_000_000_001)],
        };
        let placed: Vec<_> = (1..=4).map(|n| layout.of_user(n)).collect();
        assert_eq!(
            placed,
            [(0, 1), (1, 1_000_000_001), (0, 2), (1, 1_000_000_002)]
        );
    }

    #[test]
    fn demo_text_is_deterministic_and_copy_safe() {
        assert_eq!(words(7, 3, 8, true), words(7, 3, 8, true));
        let text = words(99, 15, 40, false);
        assert!(!text.contains(['\t', '\n', '\\']));
    }
}
