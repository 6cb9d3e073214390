//! The standard workloads (docs/benchmarks.md) and the data they need from the service.
//!
//! Ids are range-sharded (shard 0 from 1, shard 1 from 1,000,000,001, ...), so a workload
//! never assumes `1..=N`: [`DataSet::load`] pages through the service's own user list
//! (GraphQL keyset pages, which cost the same at any depth; REST offsets stop at 10,000)
//! and picks the hot set from the ids that exist with a seeded shuffle, so every run and
//! every strategy draws from the same ids.

use std::{fmt, str::FromStr, sync::Arc};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    engine::{Call, Rng, Source},
    target::Target,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// GET /v1/users/{id}, id from the hot set.
    UserHot,
    /// GET /v1/users/{id}, any existing id.
    UserUniform,
    /// GET /v1/users/{id}/posts?limit=10, id from the hot set.
    UserPosts,
    /// The first 50 users, each with their 5 newest posts and the posts' author, in one
    /// GraphQL query.
    GraphqlNested,
    /// The same query without the author level: the first 50 users and their 5 newest posts.
    /// Next to `graphql_nested` it shows what one more DataLoader level costs (its batch
    /// window, in the `batch` column of the Server-Timing table).
    GraphqlNoAuthors,
    /// 90 % GET /v1/users/{id}/posts?limit=10 over the hot set (which includes the writers),
    /// 10 % POST /v1/posts by logged-in users: reads that writes keep invalidating.
    WriteMix,
    /// A priority mix for load shedding, run open loop past capacity (`--rate`): anonymous
    /// lists (the feed, the user list), free-tier users reading their own pages, writes and
    /// logins, in the proportions of `--mix`; figures per class.
    Overload,
    /// GET /v2/users/{id}, id from the hot set: `user_hot` through REST v2, for what v2's
    /// rendering costs next to v1's.
    UserHotV2,
    /// GET /v2/users?limit=100: a page of 100 users (about 10 KB of JSON), for what
    /// compression saves and costs on a list (`--accept-encoding`).
    UsersPageV2,
    /// A mixed soak: 40 % `user_hot`, 20 % `user_uniform`, 10 % `graphql_nested`, 30 %
    /// `write_mix` (its reads and writes), each request reported under its workload's name.
    /// Run long (`--duration 10m`): what it watches is the service's memory and its in-process
    /// maps over time, not its speed.
    Soak,
    /// Each client as its own writer (`--writers` at least `--connections`): 20 % POST
    /// /v1/posts, 80 % GET of its own first page of posts. A client reads only what it wrote,
    /// so with `--carry-token` every stale read the auditor finds breaks read-your-writes
    /// (expected: none), and without it the same reads show what a client that drops its
    /// token sees.
    OwnWrites,
    /// GET / on the hello-world server: the machine's ceiling.
    Hello,
}

/// Workloads run only when named (`--workloads user_hot_v2,...`).
pub const EXTRA: [Workload; 5] = [
    Workload::Overload,
    Workload::UserHotV2,
    Workload::UsersPageV2,
    Workload::Soak,
    Workload::OwnWrites,
];

pub const STANDARD: [Workload; 6] = [
    Workload::UserHot,
    Workload::UserUniform,
    Workload::UserPosts,
    Workload::GraphqlNested,
    Workload::GraphqlNoAuthors,
    Workload::WriteMix,
];

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Self::UserHot => "user_hot",
            Self::UserUniform => "user_uniform",
            Self::UserPosts => "user_posts",
            Self::GraphqlNested => "graphql_nested",
            Self::GraphqlNoAuthors => "graphql_no_authors",
            Self::WriteMix => "write_mix",
            Self::Overload => "overload",
            Self::UserHotV2 => "user_hot_v2",
            Self::UsersPageV2 => "users_page_v2",
            Self::Soak => "soak",
            Self::OwnWrites => "own_writes",
            Self::Hello => "hello",
        }
    }

    /// Some of its answers are 503s on purpose: the service sheds them (`overload`).
    pub fn sheds(self) -> bool {
        self == Self::Overload
    }

    fn needs_writers(self) -> bool {
        matches!(
            self,
            Self::WriteMix | Self::Overload | Self::Soak | Self::OwnWrites
        )
    }

    fn needs_ids(self) -> bool {
        matches!(
            self,
            Self::UserHot
                | Self::UserUniform
                | Self::UserPosts
                | Self::WriteMix
                | Self::UserHotV2
                | Self::Soak
                | Self::OwnWrites
        )
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        STANDARD
            .into_iter()
            .chain(EXTRA)
            .chain([Self::Hello])
            .find(|w| w.name() == s)
            .with_context(|| {
                format!(
                    "unknown workload `{s}`: one of {}, {}, hello",
                    STANDARD.map(Workload::name).join(", "),
                    EXTRA.map(Workload::name).join(", ")
                )
            })
    }
}

/// The nested query: the first 50 users, each with their 5 newest posts and each post's author.
pub const NESTED_QUERY: &str = "{ users(first: 50) { edges { node { id name posts(first: 5) { id title author { id name } } } } } }";

/// The nested query less its author level: the first 50 users and their 5 newest posts.
pub const NO_AUTHORS_QUERY: &str =
    "{ users(first: 50) { edges { node { id posts(first: 5) { id title } } } } }";

/// Setup knobs of the workloads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataOptions {
    /// Size of the hot set.
    pub hot: usize,
    /// Logged-in users of `write_mix` (demo users `user1@example.com` ...).
    pub writers: usize,
    /// The demo users' password (`seed` gives all of them the same one).
    pub password: String,
    /// Seeds the hot-set choice.
    pub seed: u64,
    /// The proportions of the `overload` workload's classes.
    #[serde(default)]
    pub mix: Mix,
}

impl Default for DataOptions {
    fn default() -> Self {
        Self {
            hot: 1000,
            writers: 8,
            password: "demo-password".to_owned(),
            seed: 42,
            mix: Mix::default(),
        }
    }
}

/// The `overload` workload's classes, by weight (`anonymous_lists=60,free_reads=30,...`).
///
/// Logins run argon2 (tens of milliseconds of a core each), and the service bounds hashing on
/// its own (`auth.max_concurrent_hashes`, then 503): keep their share small enough that their
/// absolute rate stays below what the cores can hash, or the hashing bound, not load
/// shedding, is what refuses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mix {
    pub anonymous_lists: u32,
    pub free_reads: u32,
    pub writes: u32,
    pub logins: u32,
}

impl Mix {
    /// The class names, as reported.
    pub const CLASSES: [&'static str; 4] = ["anonymous_lists", "free_reads", "writes", "logins"];

    fn weights(&self) -> [u32; 4] {
        [
            self.anonymous_lists,
            self.free_reads,
            self.writes,
            self.logins,
        ]
    }

    /// A class drawn by weight.
    fn pick(&self, rng: &mut Rng) -> &'static str {
        let weights = self.weights();
        let total: u32 = weights.iter().sum();
        let mut at = rng.below(total.max(1) as usize) as u32;
        for (class, weight) in Self::CLASSES.into_iter().zip(weights) {
            if at < weight {
                return class;
            }
            at -= weight;
        }
        Self::CLASSES[0]
    }
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            anonymous_lists: 60,
            free_reads: 30,
            writes: 9,
            logins: 1,
        }
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = Self::CLASSES
            .into_iter()
            .zip(self.weights())
            .map(|(class, weight)| format!("{class}={weight}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for Mix {
    type Err = anyhow::Error;

    /// Classes not named weigh 0.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let mut weights = [0u32; 4];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (class, weight) = part
                .split_once('=')
                .with_context(|| format!("`{part}` is not class=weight"))?;
            let at = Self::CLASSES
                .iter()
                .position(|c| *c == class.trim())
                .with_context(|| {
                    format!(
                        "unknown class `{class}`: one of {}",
                        Self::CLASSES.join(", ")
                    )
                })?;
            weights[at] = weight
                .trim()
                .parse()
                .with_context(|| format!("`{weight}` is not a whole number"))?;
        }
        ensure!(weights.iter().sum::<u32>() > 0, "the mix weighs nothing");
        let [anonymous_lists, free_reads, writes, logins] = weights;
        Ok(Self {
            anonymous_lists,
            free_reads,
            writes,
            logins,
        })
    }
}

/// The ids and tokens the workloads draw from.
#[derive(Debug, Clone, Default)]
pub struct DataSet {
    pub ids: Arc<[i64]>,
    pub hot: Arc<[i64]>,
    /// `(user id, access token)` of each logged-in writer.
    pub writers: Arc<[(i64, Arc<str>)]>,
    /// The writers of the free tier (`overload` reads as them).
    pub readers: Arc<[(i64, Arc<str>)]>,
    /// Login bodies of the writers (`overload` logs in again and again).
    pub logins: Arc<[Bytes]>,
    pub mix: Mix,
}

impl DataSet {
    /// Reads what `workloads` need from the service at `target`.
    pub async fn load(
        target: &Target,
        workloads: &[Workload],
        options: &DataOptions,
    ) -> anyhow::Result<Self> {
        let mut data = Self {
            mix: options.mix,
            ..Self::default()
        };
        if workloads.contains(&Workload::Overload) {
            let mut writers = Vec::with_capacity(options.writers);
            let mut logins = Vec::with_capacity(options.writers);
            for n in 1..=options.writers.max(1) {
                let email = format!("user{n}@example.com");
                writers.push(login(target, &email, &options.password).await?);
                logins.push(
                    json!({ "email": email, "password": options.password })
                        .to_string()
                        .into(),
                );
            }
            data.readers = writers
                .iter()
                .filter(|(_, token)| token_tier(token).as_deref() == Some("free"))
                .cloned()
                .collect();
            data.writers = writers.into();
            data.logins = logins.into();
        }
        if !workloads.iter().any(|w| w.needs_ids()) {
            return Ok(data);
        }
        let ids = user_ids(target).await?;
        ensure!(
            !ids.is_empty(),
            "the service at {} has no users: seed it first (`scalable-api seed`)",
            target.base()
        );
        let mut shuffled = ids.clone();
        Rng::new(options.seed).shuffle(&mut shuffled);
        let mut hot: Vec<i64> = shuffled.into_iter().take(options.hot.max(1)).collect();
        if workloads
            .iter()
            .any(|w| matches!(w, Workload::WriteMix | Workload::Soak | Workload::OwnWrites))
        {
            let mut writers = Vec::with_capacity(options.writers);
            for n in 1..=options.writers.max(1) {
                writers
                    .push(login(target, &format!("user{n}@example.com"), &options.password).await?);
            }
            for (id, _) in &writers {
                if !hot.contains(id) {
                    hot.push(*id);
                }
            }
            data.writers = writers.into();
        }
        data.ids = ids.into();
        data.hot = hot.into();
        Ok(data)
    }
}

/// The `tier` claim of an access token: its payload is base64url JSON (checking the
/// signature is the service's business).
fn token_tier(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&json).ok()?;
    claims["tier"].as_str().map(str::to_owned)
}

/// Every user id, in id order, through GraphQL keyset pages of 100.
async fn user_ids(target: &Target) -> anyhow::Result<Vec<i64>> {
    const PAGE: &str = "query ($after: String) { users(first: 100, after: $after) { edges { node { id } } pageInfo { endCursor hasNextPage } } }";
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let body = json!({ "query": PAGE, "variables": { "after": after } });
        let page = graphql(target, &body, None).await?;
        let users = &page["data"]["users"];
        let edges = users["edges"]
            .as_array()
            .context("the users page has no edges")?;
        for edge in edges {
            ids.push(id_of(&edge["node"]["id"])?);
        }
        if users["pageInfo"]["hasNextPage"] != Value::Bool(true) {
            return Ok(ids);
        }
        after = Some(
            users["pageInfo"]["endCursor"]
                .as_str()
                .context("hasNextPage without an endCursor")?
                .to_owned(),
        );
    }
}

/// Logs in and returns `(user id, token)`; the id comes from `viewer`.
async fn login(target: &Target, email: &str, password: &str) -> anyhow::Result<(i64, Arc<str>)> {
    let body = json!({ "email": email, "password": password });
    let answer = post_json(target, "/v1/auth/login", &body, None)
        .await
        .with_context(|| {
            format!("login as {email} (write_mix logs in as the seeded demo users)")
        })?;
    let token = answer["access_token"]
        .as_str()
        .context("login answer without access_token")?;
    let viewer = graphql(
        target,
        &json!({ "query": "{ viewer { id } }" }),
        Some(token),
    )
    .await?;
    Ok((id_of(&viewer["data"]["viewer"]["id"])?, token.into()))
}

async fn graphql(target: &Target, body: &Value, token: Option<&str>) -> anyhow::Result<Value> {
    let answer = post_json(target, "/graphql", body, token).await?;
    if let Some(errors) = answer.get("errors") {
        bail!("GraphQL errors: {errors}");
    }
    Ok(answer)
}

/// POSTs `body` and returns the JSON answer, which must be a 200.
async fn post_json(
    target: &Target,
    path: &str,
    body: &Value,
    token: Option<&str>,
) -> anyhow::Result<Value> {
    let (status, answer) = target
        .fetch(Method::POST, path, Some(body.to_string().into()), token)
        .await?;
    ensure!(
        status == StatusCode::OK,
        "POST {path} answered {status}: {}",
        String::from_utf8_lossy(&answer)
    );
    serde_json::from_slice(&answer)
        .with_context(|| format!("the answer of POST {path} is not JSON"))
}

/// GraphQL `ID`s are strings; accept numbers too.
fn id_of(value: &Value) -> anyhow::Result<i64> {
    match value {
        Value::String(s) => s.parse().with_context(|| format!("`{s}` is not an id")),
        Value::Number(n) => n.as_i64().context("an id out of range"),
        other => bail!("`{other}` is not an id"),
    }
}

/// A workload bound to its data: what the engine asks for the next request.
pub struct Generator {
    workload: Workload,
    data: DataSet,
    nested_body: Bytes,
    no_authors_body: Bytes,
}

impl Generator {
    pub fn new(workload: Workload, data: DataSet) -> anyhow::Result<Self> {
        if workload.needs_ids() {
            ensure!(!data.hot.is_empty(), "{workload} needs user ids");
        }
        if workload.needs_writers() {
            ensure!(
                !data.writers.is_empty(),
                "{workload} needs logged-in writers"
            );
        }
        if workload == Workload::Overload {
            ensure!(
                data.mix.free_reads == 0 || !data.readers.is_empty(),
                "overload reads as free-tier users, and none of the {} logged-in demo users is one: raise --writers",
                data.writers.len()
            );
        }
        Ok(Self {
            workload,
            data,
            nested_body: json!({ "query": NESTED_QUERY }).to_string().into(),
            no_authors_body: json!({ "query": NO_AUTHORS_QUERY }).to_string().into(),
        })
    }

    /// POST /v1/posts as the writer holding `token`: `{title} <n>`, signed by `workload`.
    fn new_post(token: &Arc<str>, title: &str, workload: &str, rng: &mut Rng) -> Call {
        let n = rng.next_u64() % 1_000_000;
        let body = json!({ "title": format!("{title} {n}"), "body": format!("Written by loadtest {workload}.") });
        Call {
            method: Method::POST,
            path: "/v1/posts".to_owned(),
            body: Some(body.to_string().into()),
            token: Some(token.clone()),
            graphql: false,
            class: None,
        }
    }

    fn pick(ids: &[i64], rng: &mut Rng) -> i64 {
        ids[rng.below(ids.len())]
    }
}

impl Source for Generator {
    fn next(&self, client: usize, rng: &mut Rng) -> Call {
        self.call(self.workload, client, rng)
    }
}

impl Generator {
    /// The soak's share of each workload, in tenths.
    const SOAK: [(Workload, usize); 4] = [
        (Workload::UserHot, 4),
        (Workload::UserUniform, 2),
        (Workload::GraphqlNested, 1),
        (Workload::WriteMix, 3),
    ];

    fn call(&self, workload: Workload, client: usize, rng: &mut Rng) -> Call {
        match workload {
            Workload::UserHot => {
                Call::get(format!("/v1/users/{}", Self::pick(&self.data.hot, rng)))
            }
            Workload::UserUniform => {
                Call::get(format!("/v1/users/{}", Self::pick(&self.data.ids, rng)))
            }
            Workload::UserPosts => Call::get(format!(
                "/v1/users/{}/posts?limit=10",
                Self::pick(&self.data.hot, rng)
            )),
            Workload::GraphqlNested => Call::graphql(self.nested_body.clone()),
            Workload::GraphqlNoAuthors => Call::graphql(self.no_authors_body.clone()),
            Workload::WriteMix => {
                if rng.below(10) == 0 {
                    let (_, token) = &self.data.writers[client % self.data.writers.len()];
                    Self::new_post(token, "load test post", "write_mix", rng)
                } else {
                    Call::get(format!(
                        "/v1/users/{}/posts?limit=10",
                        Self::pick(&self.data.hot, rng)
                    ))
                }
            }
            Workload::OwnWrites => {
                let (id, token) = &self.data.writers[client % self.data.writers.len()];
                if rng.below(5) == 0 {
                    Self::new_post(token, "own write", "own_writes", rng)
                } else {
                    Call::get(format!("/v1/users/{id}/posts?limit=10"))
                }
            }
            Workload::Overload => self.overload(client, rng),
            Workload::UserHotV2 => {
                Call::get(format!("/v2/users/{}", Self::pick(&self.data.hot, rng)))
            }
            Workload::UsersPageV2 => Call::get("/v2/users?limit=100"),
            Workload::Soak => {
                let mut at = rng.below(10);
                let (workload, _) = Self::SOAK
                    .into_iter()
                    .find(|(_, tenths)| {
                        let here = at < *tenths;
                        at = at.saturating_sub(*tenths);
                        here
                    })
                    .unwrap_or(Self::SOAK[0]);
                self.call(workload, client, rng).class(workload.name())
            }
            Workload::Hello => Call::get("/"),
        }
    }
}

impl Generator {
    fn overload(&self, client: usize, rng: &mut Rng) -> Call {
        let class = self.data.mix.pick(rng);
        let call = match class {
            "free_reads" => {
                let (id, token) = &self.data.readers[client % self.data.readers.len()];
                Call {
                    token: Some(token.clone()),
                    ..Call::get(format!("/v1/users/{id}/posts?limit=10"))
                }
            }
            "writes" => {
                let (_, token) = &self.data.writers[client % self.data.writers.len()];
                let n = rng.next_u64() % 1_000_000;
                Call {
                    method: Method::POST,
                    body: Some(
                        json!({ "title": format!("overload post {n}"), "body": "Written by loadtest overload." })
                            .to_string()
                            .into(),
                    ),
                    token: Some(token.clone()),
                    ..Call::get("/v1/posts")
                }
            }
            "logins" => Call {
                method: Method::POST,
                body: Some(self.data.logins[rng.below(self.data.logins.len())].clone()),
                ..Call::get("/v1/auth/login")
            },
            // The feed merges every shard; the user list pages through one.
            _ if rng.below(2) == 0 => Call::get("/v1/posts?limit=20"),
            _ => Call::get(format!("/v1/users?limit=20&offset={}", rng.below(1000))),
        };
        call.class(class)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_names_round_trip_and_unknown_ones_are_named() {
        for w in STANDARD.into_iter().chain([Workload::Hello]) {
            assert_eq!(w.name().parse::<Workload>().expect("known"), w);
        }
        let err = "user_cold".parse::<Workload>().expect_err("unknown");
        assert!(err.to_string().contains("user_cold"), "{err}");
    }

    #[test]
    fn graphql_no_authors_follows_graphql_nested_and_asks_no_author() {
        let at = STANDARD
            .iter()
            .position(|w| *w == Workload::GraphqlNested)
            .expect("in the standard set");
        assert_eq!(STANDARD.get(at + 1), Some(&Workload::GraphqlNoAuthors));
        let generator =
            Generator::new(Workload::GraphqlNoAuthors, DataSet::default()).expect("valid");
        let call = generator.next(0, &mut Rng::new(1));
        assert_eq!(
            (call.method, call.path.as_str()),
            (Method::POST, "/graphql")
        );
        assert!(call.graphql);
        let body: Value = serde_json::from_slice(&call.body.expect("a body")).expect("a JSON body");
        assert_eq!(body["query"], NO_AUTHORS_QUERY);
        assert!(!NO_AUTHORS_QUERY.contains("author") && NESTED_QUERY.contains("author"));
    }

    #[test]
    fn write_mix_is_one_write_in_ten_by_the_clients_writer() {
        let data = DataSet {
            ids: vec![1, 2, 1_000_000_001].into(),
            hot: vec![2, 1_000_000_001].into(),
            writers: vec![(2, Arc::from("t2")), (1_000_000_001, Arc::from("t1b"))].into(),
            ..DataSet::default()
        };
        let generator = Generator::new(Workload::WriteMix, data).expect("valid");
        let mut rng = Rng::new(3);
        let calls: Vec<Call> = (0..10_000).map(|_| generator.next(1, &mut rng)).collect();
        let writes: Vec<&Call> = calls.iter().filter(|c| c.method == Method::POST).collect();
        assert!(
            (900..1100).contains(&writes.len()),
            "{} writes",
            writes.len()
        );
        assert!(writes.iter().all(|c| c.token.as_deref() == Some("t1b")));
        assert!(calls.iter().filter(|c| c.method == Method::GET).all(|c| {
            c.path == "/v1/users/2/posts?limit=10"
                || c.path == "/v1/users/1000000001/posts?limit=10"
        }));
    }

    #[test]
    fn soak_mixes_reads_writes_and_graphql_by_share_and_labels_each() {
        let data = DataSet {
            ids: vec![1, 2, 1_000_000_001].into(),
            hot: vec![2].into(),
            writers: vec![(2, Arc::from("t2"))].into(),
            ..DataSet::default()
        };
        let generator = Generator::new(Workload::Soak, data).expect("valid");
        let mut rng = Rng::new(11);
        let calls: Vec<Call> = (0..10_000).map(|_| generator.next(0, &mut rng)).collect();
        for (class, share) in [
            ("user_hot", 4000),
            ("user_uniform", 2000),
            ("graphql_nested", 1000),
            ("write_mix", 3000),
        ] {
            let n = calls.iter().filter(|c| c.class == Some(class)).count();
            assert!(n.abs_diff(share) < share / 10, "{class}: {n} of 10,000");
        }
        assert!(
            calls.iter().all(|c| c.class.is_some()),
            "every call labelled"
        );
        let graphql = calls.iter().filter(|c| c.graphql).count();
        let posts = calls
            .iter()
            .filter(|c| c.method == Method::POST && c.path == "/v1/posts")
            .count();
        assert_eq!(
            graphql,
            calls
                .iter()
                .filter(|c| c.class == Some("graphql_nested"))
                .count()
        );
        assert!(
            (200..400).contains(&posts),
            "{posts} writes: a tenth of write_mix"
        );
        let soak: Workload = "soak".parse().expect("named");
        assert_eq!(soak, Workload::Soak);
    }

    #[test]
    fn uniform_draws_every_id_and_hot_only_the_hot_set() {
        let data = DataSet {
            ids: vec![1, 2, 3, 1_000_000_001].into(),
            hot: vec![3].into(),
            ..DataSet::default()
        };
        let uniform = Generator::new(Workload::UserUniform, data.clone()).expect("valid");
        let hot = Generator::new(Workload::UserHot, data).expect("valid");
        let mut rng = Rng::new(9);
        let mut seen: Vec<String> = (0..400).map(|_| uniform.next(0, &mut rng).path).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert!((0..100).all(|_| hot.next(0, &mut rng).path == "/v1/users/3"));
    }

    #[test]
    fn overload_draws_each_class_by_its_weight_and_labels_it() {
        let data = DataSet {
            writers: vec![(1, Arc::from("pro")), (2, Arc::from("free"))].into(),
            readers: vec![(2, Arc::from("free"))].into(),
            logins: vec![Bytes::from_static(b"{}")].into(),
            mix: "anonymous_lists=50,free_reads=30,writes=15,logins=5"
                .parse()
                .expect("a mix"),
            ..DataSet::default()
        };
        let generator = Generator::new(Workload::Overload, data).expect("valid");
        let mut rng = Rng::new(5);
        let calls: Vec<Call> = (0..10_000).map(|_| generator.next(0, &mut rng)).collect();
        let count = |class: &str| calls.iter().filter(|c| c.class == Some(class)).count();
        for (class, share) in [
            ("anonymous_lists", 5000),
            ("free_reads", 3000),
            ("writes", 1500),
            ("logins", 500),
        ] {
            let n = count(class);
            assert!(n.abs_diff(share) < share / 10, "{class}: {n} of 10,000");
        }
        for call in &calls {
            match call.class {
                Some("anonymous_lists") => {
                    assert!(call.token.is_none() && call.method == Method::GET)
                }
                Some("free_reads") => assert_eq!(
                    (call.path.as_str(), call.token.as_deref()),
                    ("/v1/users/2/posts?limit=10", Some("free"))
                ),
                Some("writes") => assert_eq!(
                    (call.method.clone(), call.path.as_str()),
                    (Method::POST, "/v1/posts")
                ),
                Some("logins") => assert_eq!(call.path, "/v1/auth/login"),
                other => panic!("unlabelled call {other:?}"),
            }
        }
    }

    #[test]
    fn a_mix_names_known_classes_and_weighs_something() {
        let mix: Mix = "writes=3, logins=1".parse().expect("a mix");
        assert_eq!(
            mix.to_string(),
            "anonymous_lists=0,free_reads=0,writes=3,logins=1"
        );
        assert_eq!(
            Mix::default()
                .to_string()
                .parse::<Mix>()
                .expect("round trip"),
            Mix::default()
        );
        assert!("reads=3".parse::<Mix>().is_err());
        assert!("writes=x".parse::<Mix>().is_err());
        assert!("writes=0".parse::<Mix>().is_err());
    }

    #[test]
    fn the_tier_is_read_from_the_tokens_payload() {
        use base64::Engine as _;
        let payload =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"sub":"7","tier":"free"}"#);
        assert_eq!(
            token_tier(&format!("h.{payload}.s")).as_deref(),
            Some("free")
        );
        assert_eq!(token_tier("not-a-token"), None);
    }
}
