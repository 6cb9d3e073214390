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
    /// 90 % GET /v1/users/{id}/posts?limit=10 over the hot set (which includes the writers),
    /// 10 % POST /v1/posts by logged-in users: reads that writes keep invalidating.
    WriteMix,
    /// GET / on the hello-world server: the machine's ceiling.
    Hello,
}

pub const STANDARD: [Workload; 5] = [
    Workload::UserHot,
    Workload::UserUniform,
    Workload::UserPosts,
    Workload::GraphqlNested,
    Workload::WriteMix,
];

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Self::UserHot => "user_hot",
            Self::UserUniform => "user_uniform",
            Self::UserPosts => "user_posts",
            Self::GraphqlNested => "graphql_nested",
            Self::WriteMix => "write_mix",
            Self::Hello => "hello",
        }
    }

    fn needs_ids(self) -> bool {
        matches!(
            self,
            Self::UserHot | Self::UserUniform | Self::UserPosts | Self::WriteMix
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
            .chain([Self::Hello])
            .find(|w| w.name() == s)
            .with_context(|| {
                format!(
                    "unknown workload `{s}`: one of {}, hello",
                    STANDARD.map(Workload::name).join(", ")
                )
            })
    }
}

/// The nested query: the first 50 users, each with their 5 newest posts and each post's author.
pub const NESTED_QUERY: &str = "{ users(first: 50) { edges { node { id name posts(first: 5) { id title author { id name } } } } } }";

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
}

impl Default for DataOptions {
    fn default() -> Self {
        Self {
            hot: 1000,
            writers: 8,
            password: "demo-password".to_owned(),
            seed: 42,
        }
    }
}

/// The ids and tokens the workloads draw from.
#[derive(Debug, Clone, Default)]
pub struct DataSet {
    pub ids: Arc<[i64]>,
    pub hot: Arc<[i64]>,
    /// `(user id, access token)` of each logged-in writer.
    pub writers: Arc<[(i64, Arc<str>)]>,
}

impl DataSet {
    /// Reads what `workloads` need from the service at `target`.
    pub async fn load(
        target: &Target,
        workloads: &[Workload],
        options: &DataOptions,
    ) -> anyhow::Result<Self> {
        let mut data = Self::default();
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
        if workloads.contains(&Workload::WriteMix) {
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
}

impl Generator {
    pub fn new(workload: Workload, data: DataSet) -> anyhow::Result<Self> {
        if workload.needs_ids() {
            ensure!(!data.hot.is_empty(), "{workload} needs user ids");
        }
        if workload == Workload::WriteMix {
            ensure!(
                !data.writers.is_empty(),
                "write_mix needs logged-in writers"
            );
        }
        Ok(Self {
            workload,
            data,
            nested_body: json!({ "query": NESTED_QUERY }).to_string().into(),
        })
    }

    fn pick(ids: &[i64], rng: &mut Rng) -> i64 {
        ids[rng.below(ids.len())]
    }
}

impl Source for Generator {
    fn next(&self, client: usize, rng: &mut Rng) -> Call {
        match self.workload {
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
            Workload::GraphqlNested => Call {
                method: Method::POST,
                path: "/graphql".to_owned(),
                body: Some(self.nested_body.clone()),
                token: None,
                graphql: true,
            },
            Workload::WriteMix => {
                if rng.below(10) == 0 {
                    let (_, token) = &self.data.writers[client % self.data.writers.len()];
                    let n = rng.next_u64() % 1_000_000;
                    Call {
                        method: Method::POST,
                        path: "/v1/posts".to_owned(),
                        body: Some(
                            json!({ "title": format!("load test post {n}"), "body": "Written by loadtest write_mix." })
                                .to_string()
                                .into(),
                        ),
                        token: Some(token.clone()),
                        graphql: false,
                    }
                } else {
                    Call::get(format!(
                        "/v1/users/{}/posts?limit=10",
                        Self::pick(&self.data.hot, rng)
                    ))
                }
            }
            Workload::Hello => Call::get("/"),
        }
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
    fn write_mix_is_one_write_in_ten_by_the_clients_writer() {
        let data = DataSet {
            ids: vec![1, 2, 1_000_000_001].into(),
            hot: vec![2, 1_000_000_001].into(),
            writers: vec![(2, Arc::from("t2")), (1_000_000_001, Arc::from("t1b"))].into(),
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
    fn uniform_draws_every_id_and_hot_only_the_hot_set() {
        let data = DataSet {
            ids: vec![1, 2, 3, 1_000_000_001].into(),
            hot: vec![3].into(),
            writers: Vec::new().into(),
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
}
