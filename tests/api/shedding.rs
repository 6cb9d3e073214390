//! Load shedding over HTTP (`src/http/shed.rs`, `src/traffic/shed/`): who is refused first
//! when the limit is full, what they get, and what is never refused.
//!
//! Each test fixes the limit (`min = initial = max`): the capacity is then the limit, not
//! this machine's CPU, so the outcome does not depend on how busy the machine is. The
//! adaptation itself is unit-tested with made-up latencies (`src/traffic/shed/limit.rs`).

use std::{collections::BTreeMap, time::Duration};

use reqwest::{Method, Response, StatusCode};
use scalable_api::traffic::{LoadShedder, Permit, Priority};
use serde_json::json;

use crate::helpers::{ResponseExt, TestApp, TestUser, assert_problem_mentioning};

/// An app whose limit is fixed at `limit`, with `queue_size` places waiting at most `max_wait`.
async fn spawn(limit: usize, queue_size: usize, max_wait: Duration) -> TestApp {
    TestApp::spawn_with(|config| {
        let shedding = &mut config.shedding;
        shedding.enabled = true;
        (
            shedding.initial_limit,
            shedding.min_limit,
            shedding.max_limit,
        ) = (limit, limit, limit);
        (shedding.queue_size, shedding.max_wait) = (queue_size, max_wait);
        // These tests send many requests from one address, logins among them: the rate limits
        // and the login limits, in front of the shedder, are out of the way.
        config.ratelimit.enabled = false;
        let tries = &mut config.auth.login_limits;
        (tries.account_tries, tries.address_tries) = (1_000_000, 1_000_000);
    })
    .await
}

fn shedder(app: &TestApp) -> &LoadShedder {
    app.state.shedder.as_ref().expect("shedding is on")
}

/// Takes `n` slots of the limit, as requests in flight would.
async fn hold(app: &TestApp, n: usize) -> Vec<Permit> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(
            shedder(app)
                .acquire(Priority::Critical)
                .await
                .expect("a free slot"),
        );
    }
    held
}

async fn assert_shed(response: Response, what: &str) {
    assert_eq!(
        response.header_str("retry-after"),
        "1",
        "{what}: Retry-After"
    );
    assert_problem_mentioning(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        what,
    )
    .await;
}

#[tokio::test]
async fn health_readiness_and_metrics_are_answered_while_everything_else_is_shed() {
    let app = spawn(1, 0, Duration::from_millis(50)).await;
    let held = hold(&app, 1).await;

    assert_shed(app.posts().feed("?limit=5").await, "the feed").await;
    assert_shed(app.users().get(1).await, "a single read").await;
    let (status, body) = app
        .graphql(
            None,
            "{ users(first: 2) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "UNAVAILABLE",
        "{body}"
    );
    assert_eq!(body["errors"][0]["extensions"]["retryAfter"], 1, "{body}");
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(app.get(path).await.status(), StatusCode::OK, "{path}");
    }

    drop(held);
    let feed = app.posts().feed("?limit=5").await;
    assert_eq!(
        feed.status(),
        StatusCode::OK,
        "served once the slot is free"
    );
    let metrics = app.get("/metrics").await.text().await.expect("text");
    let series = r#"load_shed_requests_total{priority="anonymous_lists",decision="shed_at_once"} "#;
    let shed: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"));
    assert!(
        shed >= 2.0,
        "the feed and the GraphQL query are counted as shed anonymous lists: {shed}"
    );
}

#[tokio::test]
async fn with_half_the_limit_busy_anonymous_lists_are_shed_and_logins_writes_and_user_reads_go_on()
{
    // Limit 4: anonymous lists may fill 2 slots, reads 3, critical requests all 4.
    let app = spawn(4, 0, Duration::from_millis(50)).await;
    let ada = app.register("ada@example.com", "Ada").await;
    let held = hold(&app, 2).await;

    assert_shed(app.posts().feed("?limit=5").await, "an anonymous feed").await;
    assert_shed(app.users().list("?limit=5").await, "an anonymous user list").await;
    let own = app.users().posts(ada.id, "?limit=5").bearer(&ada).await;
    assert_eq!(
        own.status(),
        StatusCode::OK,
        "a free-tier user's list is a read"
    );
    let token = app.login(&ada.email, &ada.password).await;
    assert!(!token.is_empty());
    app.create_post(&ada, "written while the anonymous are shed")
        .await;

    // A made-up token buys no priority: the request is shed as anonymous...
    let forged = app.posts().feed("?limit=5").bearer("not-a-token").await;
    assert_shed(forged, "a list with a bad token").await;
    let genuine = app.posts().feed("?limit=5").bearer(&ada).await;
    assert_eq!(
        genuine.status(),
        StatusCode::OK,
        "where a good one is a read"
    );
    // ...and when there is room, the handlers refuse it as before.
    drop(held);
    let forged = app.users().get(ada.id).bearer("not-a-token").await;
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_client_over_its_rate_gets_a_429_before_the_shedder_and_takes_no_slot() {
    // The rate limits run in front of the shedder (Stripe's order): an anonymous address may
    // read once a minute here, and the only slot is taken.
    let app = TestApp::spawn_with(|config| {
        let shedding = &mut config.shedding;
        (
            shedding.initial_limit,
            shedding.min_limit,
            shedding.max_limit,
        ) = (1, 1, 1);
        shedding.queue_size = 0;
        config.ratelimit.enabled = true;
        let reads = &mut config.ratelimit.tiers.anonymous.reads;
        (reads.rate, reads.burst) = (1, 1);
    })
    .await;
    let held = hold(&app, 1).await;

    // Within its rate: it reaches the shedder, which has no room.
    assert_shed(app.users().get(1).await, "the first read").await;
    // Over its rate: refused by the limits, before the shedder.
    assert_eq!(
        app.users().get(1).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    drop(held);
    assert_eq!(
        app.users().get(1).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    let metrics = app.get("/metrics").await.text().await.expect("text");
    let series = r#"load_shed_requests_total{priority="reads",decision="shed_queue_full"} "#;
    let shed = metrics
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .unwrap_or_else(|| panic!("no {series} in /metrics"));
    assert_eq!(
        shed, "1",
        "only the read within its rate reached the shedder"
    );
}

/// Request outcomes per class: (2xx, 503, anything else as `status` -> count).
#[derive(Debug, Default)]
struct Tally {
    ok: u32,
    shed: u32,
    other: BTreeMap<u16, u32>,
}

impl Tally {
    async fn record(&mut self, response: Response, what: &str) {
        match response.status() {
            status if status.is_success() => self.ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_shed(response, what).await;
                self.shed += 1;
            }
            status => *self.other.entry(status.as_u16()).or_default() += 1,
        }
    }

    fn total(&self) -> u32 {
        self.ok + self.shed + self.other.values().sum::<u32>()
    }

    fn success(&self) -> f64 {
        f64::from(self.ok) / f64::from(self.total().max(1))
    }
}

/// Runs `step` `count` times in a loop, or until `stop` says so when `count` is `None`.
async fn client<F, Fut>(
    count: Option<u32>,
    stop: tokio::sync::watch::Receiver<bool>,
    what: &'static str,
    mut step: F,
) -> Tally
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Response>,
{
    let mut tally = Tally::default();
    for n in 0.. {
        if count.is_some_and(|c| n >= c) || count.is_none() && *stop.borrow() {
            break;
        }
        tally.record(step(n).await, what).await;
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_twice_its_capacity_logins_and_writes_keep_going_while_anonymous_lists_are_shed() {
    // Capacity is the limit: 4 requests in flight. Eight clients, each with one request in
    // flight at a time and no pause, are twice that: one logging in, two writing, two
    // free-tier users reading their pages, three anonymous clients reading the feed. The
    // critical clients do a fixed number of requests; the others go on until they are done.
    let app = spawn(4, 4, Duration::from_secs(2)).await;
    let mut users: Vec<TestUser> = Vec::new();
    for i in 0..4 {
        let user = app.register(&format!("u{i}@example.com"), "User").await;
        app.create_post(&user, "a first post").await;
        users.push(user);
    }
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (logins, writes, reads, lists) = {
        let app = &app;
        let login = client(Some(30), stop.clone(), "login", |_| {
            app.auth()
                .login(&users[0].email, &users[0].password)
                .into_future()
        });
        let write = |who: &TestUser| {
            let who = who.clone();
            client(Some(80), stop.clone(), "write", move |n| {
                app.posts()
                    .create(
                        &who,
                        json!({ "title": format!("post {n}"), "body": "under load" }),
                    )
                    .into_future()
            })
        };
        let read = |who: &TestUser| {
            let who = who.clone();
            client(None, stop.clone(), "free read", move |_| {
                app.users()
                    .posts(who.id, "?limit=10")
                    .bearer(&who)
                    .into_future()
            })
        };
        let list = || {
            client(None, stop.clone(), "anonymous list", |_| {
                app.request(Method::GET, "/v1/posts?limit=20").into_future()
            })
        };
        let critical = async {
            let done = tokio::join!(login, write(&users[1]), write(&users[2]));
            let _ = stop_tx.send(true);
            done
        };
        let others = async {
            tokio::join!(
                futures_util::future::join(read(&users[0]), read(&users[3])),
                futures_util::future::join3(list(), list(), list()),
            )
        };
        let ((login, write_a, write_b), ((read_a, read_b), (list_a, list_b, list_c))) =
            tokio::time::timeout(
                Duration::from_secs(120),
                futures_util::future::join(critical, others),
            )
            .await
            .expect("the load ends: every request is answered or refused within its bounds");
        let merge = |tallies: Vec<Tally>| {
            tallies.into_iter().fold(Tally::default(), |mut all, t| {
                (all.ok, all.shed) = (all.ok + t.ok, all.shed + t.shed);
                for (status, n) in t.other {
                    *all.other.entry(status).or_default() += n;
                }
                all
            })
        };
        (
            login,
            merge(vec![write_a, write_b]),
            merge(vec![read_a, read_b]),
            merge(vec![list_a, list_b, list_c]),
        )
    };
    eprintln!(
        "logins {logins:?}\nwrites {writes:?}\nfree reads {reads:?}\nanonymous lists {lists:?}"
    );

    for (class, tally) in [
        ("logins", &logins),
        ("writes", &writes),
        ("reads", &reads),
        ("lists", &lists),
    ] {
        assert!(
            tally.other.is_empty(),
            "{class}: only successes and sheds: {tally:?}"
        );
    }
    assert_eq!(logins.total() + writes.total(), 30 + 2 * 80);
    for (class, tally) in [("logins", &logins), ("writes", &writes)] {
        assert!(tally.success() >= 0.99, "{class} keep going: {tally:?}");
    }
    // At least one in twenty; about one in two on a quiet machine, one in six when other
    // tests load it (the higher priorities then arrive less often to take their places).
    assert!(
        lists.shed > 0 && lists.shed * 20 >= lists.total(),
        "anonymous lists are shed: {lists:?}"
    );
    assert_eq!(
        (shedder(&app).in_flight(), shedder(&app).queued()),
        (0, 0),
        "nothing leaks"
    );
}
