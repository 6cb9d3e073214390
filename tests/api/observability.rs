//! Metrics, logs and traces, observed from the outside: `/metrics` as Prometheus scrapes it
//! (and a real Prometheus), the log lines the app writes, and the spans a collector receives.
//!
//! The metrics recorder is one per process (the `metrics` facade is global), so the exact
//! counts below assume one test per process, which is how `scripts/test` runs them
//! (nextest). Under plain `cargo test`, run this module alone with `--test-threads=1`.

use std::time::Duration;

use reqwest::StatusCode;
use scalable_api::{Config, config::LogFormat};
use serde_json::{Value, json};

use crate::{
    helpers::{Request, ResponseExt, TestApp},
    telemetry_harness::{Collector, LogCapture, Prometheus, Scrape, attribute, free_port},
};

const HTTP: &str = "http_server_request_duration_seconds_count";
const SQL: &str = "db_queries_total";
const SQL_TIME: &str = "db_query_duration_seconds_count";
const CACHE: &str = "cache_requests_total";

async fn scrape(app: &TestApp) -> Scrape {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    Scrape::parse(&response.text().await.expect("a text body"))
}

fn sql(
    shard: &'static str,
    role: &'static str,
    op: &'static str,
) -> [(&'static str, &'static str); 3] {
    [("shard", shard), ("role", role), ("op", op)]
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_sql_by_shard_role_and_op() {
    // Arrange: a user on each shard, replicas caught up, and a first scrape.
    let app = TestApp::spawn().await;
    let on_shard0 = app.register("zero@example.com", "Zero").await;
    let on_shard1 = app.register("one@example.com", "One").await;
    app.wait_for_replicas().await;
    let before = scrape(&app).await;

    // Act: on shard 0 a user read twice (a cache miss, then a hit) and an id that does not
    // exist (a miss); on shard 1 a user read once, then a write; and a path no route matches.
    for id in [on_shard0.id, on_shard0.id, 123, on_shard1.id] {
        app.users().get(id).await;
    }
    app.create_post(&on_shard1, "counted").await;
    assert_eq!(
        app.get("/no/such/thing").await.status(),
        StatusCode::NOT_FOUND
    );
    let after = scrape(&app).await;

    // Assert: requests are counted under their route template, never the raw path.
    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    let users = [("method", "GET"), ("route", "/v1/users/{id}")];
    assert_eq!(delta(HTTP, &[users[0], users[1], ("status", "200")]), 3.0);
    assert_eq!(delta(HTTP, &[users[0], users[1], ("status", "404")]), 1.0);
    assert_eq!(
        delta(
            HTTP,
            &[
                ("method", "POST"),
                ("route", "/v1/posts"),
                ("status", "201")
            ]
        ),
        1.0
    );
    assert_eq!(
        delta(
            HTTP,
            &[("method", "GET"), ("route", "unmatched"), ("status", "404")]
        ),
        1.0
    );
    let raw_paths: Vec<_> = after
        .series()
        .filter(|s| s.contains("/v1/users/123") || s.contains("/no/such"))
        .collect();
    assert!(
        raw_paths.is_empty(),
        "raw paths became labels: {raw_paths:?}"
    );

    // Assert: the cache saw three misses and one hit, and only the misses reached SQL: per
    // shard, role and op, exactly what those requests did.
    let redis = |result| [("tier", "redis"), ("result", result)];
    assert_eq!(delta(CACHE, &redis("hit")), 1.0);
    assert_eq!(delta(CACHE, &redis("miss")), 3.0);
    let expected = [
        (sql("0", "replica", "read"), 2.0),
        (sql("1", "replica", "read"), 1.0),
        (sql("1", "primary", "write"), 1.0),
        // The write's commit position, once: the fence of the cache entries it invalidates
        // and the response's consistency token share it (the request's Scope remembers it).
        (sql("1", "primary", "commit_lsn"), 1.0),
        (sql("0", "primary", "read"), 0.0),
        (sql("0", "primary", "write"), 0.0),
        (sql("0", "primary", "commit_lsn"), 0.0),
        (sql("1", "primary", "read"), 0.0),
        // The write's access token, checked against its user's credentials version once
        // (then kept for `auth.revocation_check_ttl`).
        (sql("1", "primary", "credentials"), 1.0),
    ];
    for (labels, count) in expected {
        assert_eq!(delta(SQL, &labels), count, "{SQL} {labels:?}");
        assert_eq!(delta(SQL_TIME, &labels), count, "{SQL_TIME} {labels:?}");
    }
    // A user's entry is fenced at their registration: a miss may first ask the replica
    // whether it replayed that far (when the health monitor has not seen it yet), at most
    // once per read.
    for shard in ["0", "1"] {
        let asked = delta(SQL, &sql(shard, "replica", "replay_lsn"));
        assert!((0.0..=1.0).contains(&asked), "shard {shard}: {asked}");
    }

    // Assert: the gauges are there too.
    let pool = [("shard", "0"), ("role", "replica"), ("state", "idle")];
    assert!(
        after.value("db_pool_connections", &pool) >= 1.0,
        "an idle replica connection"
    );
    assert_eq!(
        after.value("circuit_breaker_state", &[("breaker", "shard1-primary")]),
        0.0
    );
    assert!(after.has("circuit_breaker_state"));
    assert!(after.has("db_replica_lag_bytes") && after.has("db_replica_in_rotation"));
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_service_and_serves_its_series() {
    // Arrange: some traffic, then a Prometheus scraping the app every second.
    let app = TestApp::spawn().await;
    for id in [5, 6, 7] {
        // Ids nobody has: three cache misses, three reads on shard 0's replica.
        app.users().get(id).await;
    }
    let target = app
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("host:port");
    let prometheus = Prometheus::start(target);

    // Act + Assert: its HTTP API answers with the app's series.
    let within = Duration::from_secs(30);
    let up = prometheus
        .query_until_found(r#"up{job="scalable-api"}"#, within)
        .await;
    assert_eq!(up[0]["value"][1], "1", "the scrape succeeds: {up:?}");
    let reads = prometheus
        .query_until_found(
            r#"db_queries_total{shard="0",role="replica",op="read"}"#,
            within,
        )
        .await;
    assert_eq!(reads[0]["value"][1], "3", "{reads:?}");
    let requests = prometheus
        .query_until_found(
            r#"http_server_request_duration_seconds_count{route="/v1/users/{id}",status="404"}"#,
            within,
        )
        .await;
    assert_eq!(requests[0]["value"][1], "3", "{requests:?}");
    let p99 = prometheus
        .query_until_found(
            "histogram_quantile(0.99, sum by (le) (http_server_request_duration_seconds_bucket))",
            within,
        )
        .await;
    assert!(
        p99[0]["value"][1].as_str().is_some_and(|v| v != "NaN"),
        "{p99:?}"
    );
}

#[tokio::test]
async fn metrics_can_move_to_an_admin_address_off_the_public_one() {
    let admin = free_port();
    let app = TestApp::spawn_with(|c| {
        c.telemetry.metrics_addr = Some(([127, 0, 0, 1], admin).into());
    })
    .await;
    app.get("/healthz").await;

    assert_eq!(app.get("/metrics").await.status(), StatusCode::NOT_FOUND);
    let text = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .expect("the admin address answers")
        .text()
        .await
        .expect("a text body");
    assert!(Scrape::parse(&text).has("http_server_request_duration_seconds_count"));
}

#[tokio::test]
async fn metrics_turned_off_install_nothing_and_hide_the_endpoint() {
    let app = TestApp::spawn_with(|c| c.telemetry.metrics = false).await;

    assert!(app.state.metrics.is_none());
    assert_eq!(app.get("/metrics").await.status(), StatusCode::NOT_FOUND);
}

/// A config whose logs are JSON lines at `filter`, and whose spans go to `collector`.
fn telemetry_config(filter: &str, collector: Option<&Collector>) -> Config {
    let mut config = Config::default();
    config.telemetry.log_format = LogFormat::Json;
    config.telemetry.log_filter = filter.into();
    config.telemetry.otlp_endpoint = collector.map(|c| c.endpoint.clone());
    config
}

/// The app with `config`'s telemetry, its logs (and spans) captured for this test's thread.
async fn spawn_observed(config: &Config) -> (LogCapture, TestApp) {
    let logs = LogCapture::install(config);
    let telemetry = config.telemetry.clone();
    let app = TestApp::spawn_with(move |c| c.telemetry = telemetry).await;
    (logs, app)
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// `request` from a caller whose sampled span `CALLER_SPAN` of trace `TRACE_ID` is calling us.
fn traced(request: Request) -> Request {
    request.header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
}

#[tokio::test]
async fn a_sent_request_id_is_echoed_and_on_every_log_line_of_its_request() {
    // Arrange: JSON logs, with every SQL statement logged (sqlx at debug) so a request writes
    // more than its access line. No trace exporter: ids must not depend on one.
    let config = telemetry_config("info,sqlx=debug", None);
    let (logs, app) = spawn_observed(&config).await;
    let user = app.register("traced@example.com", "Traced").await;
    app.wait_for_replicas().await;

    // Act
    let response = traced(app.users().get(user.id))
        .header("x-request-id", "support-ticket-42")
        .await;

    // Assert: the id comes back, the trace continues the caller's.
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.header_str("x-request-id"), "support-ticket-42");
    let traceparent = response.header_str("traceparent");
    assert!(
        traceparent.starts_with(&format!("00-{TRACE_ID}-")) && !traceparent.contains(CALLER_SPAN),
        "the response names this service's span in the caller's trace: {traceparent}"
    );
    // Assert: every line of that request carries both ids, and there are several.
    let lines: Vec<Value> = logs
        .json_lines()
        .into_iter()
        .filter(|l| {
            l["spans"]
                .as_str()
                .is_some_and(|s| s.starts_with("request"))
        })
        .filter(|l| l["http.route"] == "/v1/users/{id}")
        .collect();
    assert!(
        lines.len() >= 2,
        "the access line and the SQL statement: {lines:#?}"
    );
    for line in &lines {
        assert_eq!(line["request_id"], "support-ticket-42", "{line}");
        assert_eq!(line["trace_id"], TRACE_ID, "{line}");
    }
    let access = lines
        .iter()
        .find(|l| l["target"] == "scalable_api::access")
        .expect("an access log line");
    assert_eq!(access["status"], 200);
    assert!(access["latency_ms"].as_f64().is_some(), "{access}");
    assert!(
        lines
            .iter()
            .any(|l| l["spans"] == "request:db.query" && l["role"] == "replica"),
        "the SQL line names its shard and role: {lines:#?}"
    );
}

#[tokio::test]
async fn a_request_without_an_id_gets_a_generated_one() {
    let config = telemetry_config("info", None);
    let (logs, app) = spawn_observed(&config).await;

    let response = app.get("/healthz").await;

    let id = response.header_str("x-request-id");
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(id.matches('-').count(), 4, "a UUID: {id}");
    let access: Vec<Value> = logs
        .json_lines()
        .into_iter()
        .filter(|l| l["target"] == "scalable_api::access")
        .collect();
    assert_eq!(access.len(), 1, "{access:#?}");
    assert_eq!(access[0]["request_id"], id.as_str());
    let traceparent = response.header_str("traceparent");
    assert_eq!(
        access[0]["trace_id"].as_str(),
        traceparent.split('-').nth(1),
        "a fresh trace, the same in the log and the response"
    );
}

#[tokio::test]
async fn no_password_or_token_appears_in_the_logs_of_registering_and_logging_in() {
    // Arrange: everything the app and its libraries log, at every level.
    let config = telemetry_config("trace", None);
    let (logs, app) = spawn_observed(&config).await;
    let password = "Tr0ub4dor-and-3-unique-words";

    // Act: register, log in, and use the token (in an `Authorization` header).
    let registered = app
        .auth()
        .register("secret@example.com", "Secret", password)
        .await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    let token = app.login("secret@example.com", password).await;
    let wrong = app
        .auth()
        .login("secret@example.com", "a-wrong-password-typed")
        .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let posted = app
        .posts()
        .create(&token, json!({ "title": "t", "body": "b" }))
        .await;
    assert_eq!(posted.status(), StatusCode::CREATED);

    // Assert: the capture saw those requests (so it can see a leak), and no secret.
    let text = logs.text();
    assert!(
        text.contains("/v1/auth/login") && text.contains("/v1/posts"),
        "{text}"
    );
    let signature = token.rsplit('.').next().expect("a JWT");
    for secret in [
        password,
        "a-wrong-password-typed",
        token.as_str(),
        signature,
    ] {
        assert!(
            !text.contains(secret),
            "a secret reached the logs: {secret}"
        );
    }
    assert!(!text.contains(scalable_api::config::DEV_JWT_SECRET));
}

#[tokio::test]
async fn a_trace_reaches_the_collector_with_cache_and_sql_spans_under_the_server_span() {
    // Arrange: an in-test OTLP collector, and the app exporting to it.
    let collector = Collector::start().await;
    let config = telemetry_config("info", Some(&collector));
    let (logs, app) = spawn_observed(&config).await;
    let user = app.register("spans@example.com", "Spans").await;
    app.wait_for_replicas().await;

    // Act: a read carrying the caller's trace context, then flush the exporter (from a
    // blocking thread: this one runs the collector).
    let response = traced(app.users().get(user.id)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let guard = logs.guard.clone();
    tokio::task::spawn_blocking(move || guard.flush())
        .await
        .expect("flush");

    // Assert: the server span is in the caller's trace, under the caller's span.
    let spans = collector.spans();
    let server = spans
        .iter()
        .find(|s| hex(&s.trace_id) == TRACE_ID && s.name == "GET /v1/users/{id}")
        .unwrap_or_else(|| panic!("no server span in the caller's trace among {spans:#?}"));
    assert_eq!(hex(&server.parent_span_id), CALLER_SPAN);
    assert_eq!(server.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(
        attribute(server, "http.route").as_deref(),
        Some("/v1/users/{id}")
    );
    assert_eq!(
        attribute(server, "http.response.status_code").as_deref(),
        Some("200")
    );
    let traceparent = response.header_str("traceparent");
    assert_eq!(
        traceparent,
        format!("00-{TRACE_ID}-{}-01", hex(&server.span_id)),
        "the response names the server span"
    );
    // Assert: the SQL statement is its child, with shard and role.
    let sql: Vec<_> = spans
        .iter()
        .filter(|s| s.parent_span_id == server.span_id && s.name == "db read")
        .collect();
    assert_eq!(
        sql.len(),
        1,
        "one SQL span under the server span: {spans:#?}"
    );
    assert_eq!(sql[0].trace_id, server.trace_id);
    assert_eq!(attribute(sql[0], "shard").as_deref(), Some("0"));
    assert_eq!(attribute(sql[0], "role").as_deref(), Some("replica"));
    assert_eq!(attribute(sql[0], "op").as_deref(), Some("read"));
    // Assert: so is the cache lookup of that miss, before it. (Its fill is not: fills run in
    // the cache's background filler, which no request waits for.)
    let cache = |name: &str| -> Vec<_> {
        spans
            .iter()
            .filter(|s| s.parent_span_id == server.span_id && s.name == name)
            .collect()
    };
    let (lookups, fills) = (cache("cache lookup"), cache("cache fill"));
    assert!(
        !lookups.is_empty(),
        "a cache lookup span under the server span: {spans:#?}"
    );
    assert_eq!(
        fills.len(),
        0,
        "no cache fill span in the request: {spans:#?}"
    );
    assert_eq!(attribute(lookups[0], "tier").as_deref(), Some("redis"));
    assert!(
        lookups[0].end_time_unix_nano <= sql[0].start_time_unix_nano,
        "lookup, then SQL"
    );
}

#[tokio::test]
async fn requests_never_wait_for_a_collector_that_does_not_answer() {
    // Arrange: a "collector" that accepts connections and never answers, a tiny span queue,
    // and a short export timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let mut config = telemetry_config("warn", None);
    config.telemetry.otlp_endpoint = Some(format!(
        "http://{}/v1/traces",
        silent.local_addr().expect("local addr")
    ));
    config.telemetry.trace_queue_size = 4;
    config.telemetry.otlp_timeout = Duration::from_millis(500);
    let (logs, app) = spawn_observed(&config).await;

    // Act + Assert: far more requests than the queue holds all succeed, well within a bound
    // a blocked exporter would blow (each export waits its full timeout).
    let all = async {
        for _ in 0..50 {
            assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), all)
        .await
        .expect("50 requests finish without waiting for the exporter");
    drop((app, silent, logs));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_dashboard_and_the_alert_rules_use_only_series_the_service_exports() {
    use scalable_api::telemetry::names::*;
    let exported = [
        HTTP_SERVER_REQUEST_DURATION,
        HTTP_API_VERSION_REQUESTS,
        DB_QUERIES,
        DB_QUERY_DURATION,
        DB_POOL_CONNECTIONS,
        DB_REPLICA_LAG,
        DB_REPLICA_IN_ROTATION,
        DB_READ_FALLBACK,
        CIRCUIT_BREAKER_STATE,
        CACHE_REQUESTS,
        CACHE_INVALIDATIONS,
        RATELIMIT_DECISIONS,
        LOAD_SHED_LIMIT,
        LOAD_SHED_IN_FLIGHT,
        LOAD_SHED_QUEUED,
        LOAD_SHED_WINDOW_LATENCY,
        LOAD_SHED_BASELINE_LATENCY,
        LOAD_SHED_REQUESTS,
        STALE_READS,
        STALE_READS_AUDITED,
        STALE_READS_SKIPPED,
        STALE_READ_AGE,
    ];
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    for file in [
        "grafana/dashboards/scalable-api.json",
        "prometheus/alerts.yml",
        "prometheus/alerts_test.yml",
    ] {
        let text = std::fs::read_to_string(root.join(file)).expect("the deploy file exists");
        let used: std::collections::BTreeSet<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .filter(|t| !t.contains(':'))
            .filter(|t| {
                [
                    "http_",
                    "db_",
                    "cache_",
                    "circuit_",
                    "ratelimit_",
                    "load_shed_",
                    "stale_read",
                ]
                .iter()
                .any(|p| t.starts_with(p))
            })
            .collect();
        assert!(!used.is_empty(), "{file} names no series");
        for name in used {
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            assert!(
                exported.contains(&base),
                "{file} uses `{name}`, which the service does not export"
            );
        }
    }
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("grafana/dashboards/scalable-api.json")).expect("read"),
    )
    .expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "scalable-api");
}

#[tokio::test]
async fn the_audit_log_says_who_did_what_from_where_and_how_it_ended_never_with_what_secret() {
    // Arrange
    let config = telemetry_config("warn,scalable_api::audit=info", None);
    let (logs, app) = spawn_observed(&config).await;
    let ada = app.register("ada@example.com", "Ada").await;
    let bob = app.register("bob@example.com", "Bob").await;

    // Act: a refused login, a post, someone else's change refused.
    let refused = app
        .auth()
        .login("ada@example.com", "not-her-password")
        .await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let post = app.create_post(&ada, "mine").await;
    let post_id = post["id"].as_i64().expect("an id");
    let stranger = app
        .posts()
        .patch(post_id, &bob, json!({ "title": "theirs" }))
        .await;
    assert_eq!(stranger.status(), StatusCode::FORBIDDEN);

    // Assert
    let audit: Vec<Value> = logs
        .json_lines()
        .into_iter()
        .filter(|line| line["target"] == "scalable_api::audit")
        .collect();
    let event = |action: &str, outcome: &str| {
        audit
            .iter()
            .find(|l| l["action"] == action && l["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no {action} {outcome} in {audit:#?}"))
            .clone()
    };
    assert_eq!(event("account.register", "ok")["subject"], json!(ada.id));
    let login = event("account.login", "unauthorized");
    assert_eq!(
        login["subject"],
        json!(ada.id),
        "the account it was tried on"
    );
    assert!(login.get("actor").is_none(), "nobody signed in: {login}");
    let logins: Vec<&Value> = audit
        .iter()
        .filter(|l| l["action"] == "account.login" && l["outcome"] == "ok")
        .collect();
    assert!(
        logins.iter().all(|l| l["actor"] == l["subject"]),
        "{logins:#?}"
    );
    assert!(
        logins.iter().any(|l| l["actor"] == json!(bob.id)),
        "{logins:#?}"
    );
    assert_eq!(event("post.create", "ok")["subject"], json!(post_id));
    let denied = event("post.update", "forbidden");
    assert_eq!(
        (&denied["actor"], &denied["subject"]),
        (&json!(bob.id), &json!(post_id))
    );
    for line in &audit {
        assert_eq!(line["client.address"], "127.0.0.1", "from where: {line}");
        assert!(line["request_id"].is_string(), "{line}");
    }
    let text = logs.text();
    for secret in ["ada@example.com", "not-her-password", &ada.token] {
        assert!(!text.contains(secret), "the logs hold {secret}");
    }
}
