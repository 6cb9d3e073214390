//! `[graphql]`: the limits a public GraphQL endpoint needs, and the DataLoader knobs.

use std::time::Duration;

use anyhow::ensure;
use serde::{Deserialize, Serialize};

/// The limits a public GraphQL endpoint needs (see `src/graphql/limits.rs`), and the
/// DataLoader switch. Page sizes (`first`) are bounded by `api.max_page_size`, like REST's
/// `limit`; the body size by `http.body_limit_bytes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphqlConfig {
    /// Deepest nesting of fields a query may have. `User.posts` and `Post.author` make the
    /// schema cyclic, so without a bound one request could nest them a thousand times.
    pub max_depth: u32,
    /// Largest cost a query may have. A field costs 1 plus its selections; a field with
    /// `first: n` costs n times its selection, so `users(first: 50) { ... posts(first: 5) }`
    /// weighs in at what it really asks for (250 posts), not at its few lines of text.
    pub max_complexity: u32,
    /// Answer `__schema` / `__type` introspection, and "Did you mean ...?" suggestions in
    /// validation errors (which would reveal the field names introspection hides). GraphiQL
    /// and code generators need it; a public API need not hand attackers a map. Unset: on in
    /// the dev profile, off in production ([`Config::introspection`](super::Config::introspection)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub introspection: Option<bool>,
    /// Serve the GraphiQL page on `GET /graphql` (404 when off). Unset: on in the dev profile,
    /// off in production ([`Config::graphiql`](super::Config::graphiql)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graphiql: Option<bool>,
    /// Most root fields one operation may select, counted through aliases and fragments.
    /// Each root list (`posts`, `users`) is its own cross-shard read; without a bound one
    /// 64 KB body holds about 1,500 aliased `posts` roots, each asking every shard.
    pub max_root_fields: u32,
    /// Most bytes of field values one answer may hold, counted while it is built (text by
    /// its length, every other value a few bytes); past it the request stops with
    /// `RESPONSE_TOO_LARGE`. The cost limit bounds how many fields a query selects, not how
    /// long they are: `posts(first: 100) { body author { posts(first: 100) { body } } }`
    /// passes it and could otherwise build 10,000 bodies of up to 80 KB each.
    pub max_response_bytes: usize,
    /// Most reads one request may make (a read is one batched call to the data layer: at
    /// most one statement per shard it touches, none on a cache hit); past it the request
    /// stops with `TOO_MANY_READS`. With DataLoaders a query makes about one read per root
    /// list and one per level; without them (`dataloaders = false`) one per parent, so the
    /// N+1 switch needs a larger budget.
    pub max_reads: u32,
    /// Reads of one request running at once; the others wait their turn. Root lists are
    /// resolved concurrently, so without it twenty aliased roots take twenty connections
    /// per shard at once, from the pool every other request shares.
    pub max_concurrent_reads: u32,
    /// Batch reads through per-request DataLoaders (one statement per shard per level). Off,
    /// every parent costs its own statement: the N+1 the loaders remove, kept switchable so it
    /// can be measured.
    pub dataloaders: bool,
    /// How long a DataLoader collects the keys of one level before it loads them. Longer
    /// windows keep a level in one batch when a busy machine polls its resolvers slowly; every
    /// level of every query waits this long, which is most of a nested query's latency at
    /// low load. Compare with `scripts/loadtest --vary graphql.batch_window=1ms,5ms,20ms
    /// --workloads graphql_nested`.
    #[serde(with = "humantime_serde")]
    pub batch_window: Duration,
    /// How queries run (`src/graphql/planned/`): `planned` reads each level of a query in one
    /// batch and writes the answer straight to JSON, for the queries it covers (the rest, and
    /// every mutation, run on the resolvers); `resolvers` runs everything on async-graphql's
    /// resolvers and DataLoaders. Same answers, same statements; `planned` costs a fraction
    /// of the CPU. `dataloaders = false` implies `resolvers` (the N+1 lives there).
    pub executor: Executor,
}

/// See [`GraphqlConfig::executor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Executor {
    Planned,
    Resolvers,
}

impl Default for GraphqlConfig {
    fn default() -> Self {
        Self {
            max_depth: 10,
            // `users(first: 50) { ... posts(first: 50) { id title author { id name } } }`
            // costs about 12,800: it passes; `first: 100` at both levels (10,000 posts) does not.
            max_complexity: 20_000,
            introspection: None,
            graphiql: None,
            max_root_fields: 20,
            max_response_bytes: 4 * 1024 * 1024,
            max_reads: 100,
            max_concurrent_reads: 4,
            dataloaders: true,
            batch_window: Duration::from_millis(20),
            executor: Executor::Planned,
        }
    }
}

impl GraphqlConfig {
    /// Whether queries the planned executor covers run on it.
    pub fn plans(&self) -> bool {
        self.executor == Executor::Planned && self.dataloaders
    }

    pub(super) fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.max_depth >= 1 && self.max_complexity >= 1,
            "graphql.max_depth and graphql.max_complexity must be at least 1"
        );
        ensure!(
            self.max_root_fields >= 1
                && self.max_response_bytes >= 1
                && self.max_reads >= 1
                && self.max_concurrent_reads >= 1,
            "graphql.max_root_fields, max_response_bytes, max_reads and max_concurrent_reads must be at least 1"
        );
        Ok(())
    }
}
