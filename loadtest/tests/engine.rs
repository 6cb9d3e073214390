//! The load generator against small in-test servers whose behaviour is known exactly: it
//! must count what it sends, measure the latencies the server imposes, stop on time, and
//! report every kind of failure instead of hiding it.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use hyper::Method;
use loadtest::{
    engine::{self, Call, Outcome, Plan, Progress, Rng, Source, StopReason},
    series::Series,
    target::Target,
};
use tokio::io::AsyncReadExt;

/// Counts requests; `behave(n)` decides how request number `n` (0-based) is answered.
#[derive(Clone)]
struct Server {
    hits: Arc<AtomicU64>,
    addr: SocketAddr,
}

async fn serve<F, Fut, R>(behave: F) -> Server
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = R> + Send,
    R: IntoResponse,
{
    let hits = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .fallback(get(
            |State((hits, behave)): State<(Arc<AtomicU64>, F)>| async move {
                let n = hits.fetch_add(1, Ordering::SeqCst);
                behave(n).await.into_response()
            },
        ))
        .with_state((hits.clone(), behave));
    let addr = spawn_router(app).await;
    Server { hits, addr }
}

/// Serves `app` on a loopback port of its own, in the background.
async fn spawn_router(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// Answers every even request at once and lets every odd one hang for a minute.
async fn hanging_every_other_request() -> Server {
    serve(|n| async move {
        if n % 2 == 1 {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        "ok"
    })
    .await
}

/// GET `/` (the same request every time), optionally read as a GraphQL answer.
struct Get {
    graphql: bool,
}

impl Source for Get {
    fn next(&self, _client: usize, _rng: &mut Rng) -> Call {
        Call {
            graphql: self.graphql,
            ..Call::get("/")
        }
    }
}

async fn load(addr: SocketAddr, plan: Plan) -> Outcome {
    load_with(addr, plan, false).await
}

async fn load_with(addr: SocketAddr, plan: Plan, graphql: bool) -> Outcome {
    let target = Target::resolve(&format!("http://{addr}"), false)
        .await
        .expect("loopback target");
    let (outcome, ()) = engine::run(
        &target,
        Arc::new(Get { graphql }),
        &plan,
        Arc::new(Progress::default()),
        None,
        || async {},
    )
    .await
    .expect("the run completes");
    outcome
}

fn plan(connections: usize, duration_ms: u64, requests: Option<u64>) -> Plan {
    Plan {
        connections,
        warmup: Duration::ZERO,
        duration: Duration::from_millis(duration_ms),
        requests,
        timeout: Duration::from_secs(10),
        seed: 1,
        rate: None,
        accept_encoding: None,
        carry_token: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_count_is_sent_and_counted_exactly() {
    let server = serve(|_| async { "ok" }).await;

    let outcome = load(server.addr, plan(8, 60_000, Some(2_000))).await;

    assert_eq!(outcome.stopped_by, StopReason::Requests);
    assert_eq!(outcome.responses, 2_000);
    assert_eq!(server.hits.load(Ordering::SeqCst), 2_000);
    assert_eq!(outcome.latency_us.len(), 2_000, "one latency per answer");
    assert_eq!(outcome.error_count() + outcome.non_2xx_count(), 0);
    assert_eq!(outcome.body_bytes, 2_000 * 2, "every answer's body, \"ok\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_series_counts_every_measured_answer_and_failure_in_its_second() {
    // Every other request answers 503: failed, and counted as such per second.
    let server = serve(|n| async move {
        if n % 2 == 0 {
            Err(StatusCode::SERVICE_UNAVAILABLE)
        } else {
            Ok("ok")
        }
    })
    .await;
    let plan = plan(4, 60_000, Some(1_000));
    let target = Target::resolve(&format!("http://{}", server.addr), false)
        .await
        .expect("target");
    let series = Arc::new(Series::new(plan.duration).expect("series"));

    let (outcome, ()) = engine::run(
        &target,
        Arc::new(Get { graphql: false }),
        &plan,
        Arc::new(Progress::default()),
        Some(series.clone()),
        || async {},
    )
    .await
    .expect("run");

    let buckets = Arc::try_unwrap(series)
        .expect("the run is over")
        .into_buckets();
    let responses: u64 = buckets.iter().map(|b| b.responses).sum();
    let failed: u64 = buckets.iter().map(|b| b.failed).sum();
    let unavailable: u64 = buckets.iter().map(|b| b.unavailable).sum();
    let recorded: u64 = buckets.iter().map(|b| b.latency_us.len()).sum();
    assert_eq!(responses, outcome.responses);
    assert_eq!(recorded, outcome.responses, "one latency per answer");
    assert_eq!(failed, outcome.non_2xx_count());
    assert_eq!(unavailable, outcome.non_2xx[&503]);
    assert!(unavailable > 0, "the server's 503s were counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_run_counts_every_answer_the_server_gave_and_nothing_of_the_warmup() {
    // The server notes when it handled each request.
    let handled = Arc::new(std::sync::Mutex::new(Vec::<tokio::time::Instant>::new()));
    let log = handled.clone();
    let server = serve(move |_| {
        let log = log.clone();
        async move {
            log.lock().expect("lock").push(tokio::time::Instant::now());
            "ok"
        }
    })
    .await;
    let mut plan = plan(8, 1_000, None);
    plan.warmup = Duration::from_millis(300);
    let target = Target::resolve(&format!("http://{}", server.addr), false)
        .await
        .expect("target");
    // The run's clock starts within microseconds of this (no await before it in `run`).
    let started = tokio::time::Instant::now();

    let (outcome, ()) = engine::run(
        &target,
        Arc::new(Get { graphql: false }),
        &plan,
        Arc::new(Progress::default()),
        None,
        || async {},
    )
    .await
    .expect("run");

    let window = (started + plan.warmup)..(started + plan.warmup + plan.duration);
    let handled = handled.lock().expect("lock").clone();
    let in_window = handled.iter().filter(|t| window.contains(t)).count() as u64;
    assert!(
        in_window < handled.len() as u64,
        "the warm-up sent requests"
    );
    assert_eq!(outcome.stopped_by, StopReason::Duration);
    assert_eq!(outcome.elapsed, Duration::from_secs(1));
    assert!(outcome.responses > 100, "{} answers", outcome.responses);
    // Every answer the tool counts was handled in the window. The server handled at most two
    // more per connection there: one sent during the warm-up, one still in flight at the
    // deadline.
    assert!(
        outcome.responses <= in_window
            && in_window - outcome.responses <= 2 * plan.connections as u64,
        "server handled {in_window} in the window, the tool counted {}",
        outcome.responses
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percentiles_match_a_known_latency_distribution() {
    // Of every 25 requests: 15 take 10 ms, 9 take 40 ms, 1 takes 120 ms, so 60 % / 36 % /
    // 4 %: p50 is in the 10 ms band, p95 in the 40 ms band, p99 in the 120 ms band.
    let server = serve(|n| async move {
        let ms = match n % 25 {
            0..15 => 10,
            15..24 => 40,
            _ => 120,
        };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        "ok"
    })
    .await;

    let outcome = load(server.addr, plan(8, 60_000, Some(500))).await;

    assert_eq!(outcome.responses, 500);
    let (p50, p95, p99, max) = (
        outcome.latency_ms(0.50),
        outcome.latency_ms(0.95),
        outcome.latency_ms(0.99),
        outcome.max_ms(),
    );
    // A latency is never below the server's sleep (less hdrhistogram's 0.1 %); above it,
    // allow for a shared, noisy machine, but not up to the next band.
    let within = |got: f64, floor: f64, next: f64| got >= floor * 0.999 && got < next;
    assert!(within(p50, 10.0, 40.0), "p50 {p50} ms");
    assert!(within(p95, 40.0, 120.0), "p95 {p95} ms");
    assert!(within(p99, 120.0, 1_000.0), "p99 {p99} ms");
    assert!(max >= p99, "max {max} ms");
    assert_eq!(outcome.error_count() + outcome.non_2xx_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stops_at_its_deadline_even_when_the_server_hangs() {
    let server = hanging_every_other_request().await;
    let started = Instant::now();

    let outcome = load(server.addr, plan(4, 1_000, None)).await;

    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(outcome.unfinished >= 1, "the hung requests are abandoned");
    assert!(outcome.responses >= 1, "the quick ones were answered");
    assert_eq!(
        outcome.error_count(),
        0,
        "abandoned at the deadline is not an error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_timeout_is_an_error_and_the_run_goes_on() {
    let server = hanging_every_other_request().await;
    let mut plan = plan(2, 1_500, None);
    plan.timeout = Duration::from_millis(200);

    let outcome = load(server.addr, plan).await;

    let timeouts = outcome.errors.get("timeout").copied().unwrap_or(0);
    assert!(timeouts >= 2, "errors {:?}", outcome.errors);
    assert!(
        outcome.responses >= 2,
        "a timed-out connection is replaced and the load goes on"
    );
    assert!(
        outcome.error_samples.iter().any(|s| s.contains("200ms")),
        "{:?}",
        outcome.error_samples
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses_are_counted_by_status() {
    let server = serve(|n| async move {
        if n % 10 == 0 {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }
    })
    .await;

    let outcome = load(server.addr, plan(4, 60_000, Some(1_000))).await;

    assert_eq!(
        outcome.responses, 1_000,
        "an error status is still an answer"
    );
    assert_eq!(outcome.non_2xx.get(&503), Some(&100));
    assert_eq!(outcome.non_2xx_count(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_errors_in_a_200_are_errors() {
    let server = serve(|n| async move {
        let body = if n % 4 == 0 {
            r#"{"data":null,"errors":[{"message":"boom"}]}"#
        } else {
            r#"{"data":{"title":"\"errors\": is only text here"}}"#
        };
        ([(header::CONTENT_TYPE, "application/json")], body)
    })
    .await;

    let outcome = load_with(server.addr, plan(2, 60_000, Some(400)), true).await;

    assert_eq!(
        outcome.errors.get("graphql"),
        Some(&100),
        "{:?}",
        outcome.errors
    );
    assert_eq!(outcome.non_2xx_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_dropped_connections_are_errors_with_their_reason() {
    // Nothing listens on a port that was just released.
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let outcome = load(refused, plan(2, 300, None)).await;
    assert_eq!(outcome.responses, 0);
    assert!(
        outcome.errors.get("connect").copied().unwrap_or(0) >= 2,
        "{:?}",
        outcome.errors
    );
    assert!(
        outcome.error_samples.iter().any(|s| s.contains("connect")),
        "{:?}",
        outcome.error_samples
    );

    // A server that reads the request and hangs up without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let rude = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
        }
    });
    let outcome = load(rude, plan(2, 300, None)).await;
    assert_eq!(outcome.responses, 0);
    assert!(
        outcome.errors.get("io").copied().unwrap_or(0) >= 2,
        "{:?}",
        outcome.errors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_elsewhere_is_an_answer_not_a_new_target() {
    let elsewhere = serve(|_| async { "should never be reached" }).await;
    let location = format!("http://{}/", elsewhere.addr);
    let redirecting = serve(move |_| {
        let location = location.clone();
        async move { (StatusCode::FOUND, [(header::LOCATION, location)]) }
    })
    .await;

    let outcome = load(redirecting.addr, plan(2, 60_000, Some(200))).await;

    assert_eq!(outcome.non_2xx.get(&302), Some(&200));
    assert_eq!(elsewhere.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_cli_refuses_a_remote_base_url_before_sending_anything() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "run",
            "--base-url",
            "http://192.0.2.1:8080",
            "--workload",
            "hello",
        ])
        .output()
        .await
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("192.0.2.1") && stderr.contains("--allow-remote"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_measures_its_own_hello_world_baseline_and_writes_a_report() {
    let out = std::env::temp_dir().join(format!("loadtest-cli-{}", std::process::id()));
    let port = loadtest::process::free_port().expect("port");
    let mut hello = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["hello", "--addr", &format!("127.0.0.1:{port}")])
        .kill_on_drop(true)
        .spawn()
        .expect("hello starts");
    let target = Target::resolve(&format!("http://127.0.0.1:{port}"), false)
        .await
        .expect("target");
    let mut ready = false;
    for _ in 0..100 {
        if let Ok((status, body)) = target.fetch(Method::GET, "/", None, None).await {
            assert_eq!(status, StatusCode::OK);
            assert_eq!(&body[..], b"Hello, World!");
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the hello server answered");

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "run",
            "--workload",
            "hello",
            "--metrics-path",
            "none",
            "--quiet",
        ])
        .args(["--base-url", &format!("http://127.0.0.1:{port}")])
        .args(["--requests", "300", "--warmup", "0s", "--connections", "4"])
        .arg("--out")
        .arg(&out)
        .output()
        .await
        .expect("run");
    let _ = hello.kill().await;

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("| hello |"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report.json"))
            .expect("JSON");
    assert_eq!(json["runs"][0]["responses"], 300);
    assert!(out.join("chart.svg").exists() && out.join("report.md").exists());
    let _ = std::fs::remove_dir_all(out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_keeps_its_rate_below_capacity_and_shows_the_queue_above_it() {
    // One connection to a server that takes 10 ms: at most about 100 answers a second.
    let server = serve(|_| async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        "ok"
    })
    .await;

    let mut below = plan(1, 1_000, None);
    below.rate = Some(50.0);
    let below = load(server.addr, below).await;
    assert!(
        (45..=51).contains(&below.responses),
        "50/s for 1 s: {} answers",
        below.responses
    );
    assert!(
        below.latency_ms(0.5) < 40.0,
        "no queue below capacity: p50 {}",
        below.latency_ms(0.5)
    );

    let closed = load(server.addr, plan(1, 1_000, None)).await;
    let mut above = plan(1, 1_000, None);
    above.rate = Some(400.0);
    let above = load(server.addr, above).await;
    // The closed loop never has more than one request waiting, so its p99 stays near the
    // server's 10 ms; the open loop's requests fall ever further behind their due times.
    assert!(
        above.latency_ms(0.99) > 3.0 * closed.latency_ms(0.99),
        "open p99 {} ms, closed p99 {} ms",
        above.latency_ms(0.99),
        closed.latency_ms(0.99)
    );
    assert!(
        above.unfinished > 100,
        "the backlog at the deadline is reported: {}",
        above.unfinished
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_carrying_its_token_sends_back_the_last_one_it_was_given() {
    // A server that hands out a new token on every fifth request and records, for every
    // request, whether it carried the last token handed out (one connection: sequential).
    #[derive(Default)]
    struct Seen {
        issued: std::sync::Mutex<Option<String>>,
        carried_last: AtomicU64,
        carried_other: AtomicU64,
        requests: AtomicU64,
    }
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .fallback(get(
            |State(seen): State<Arc<Seen>>, headers: axum::http::HeaderMap| async move {
                let n = seen.requests.fetch_add(1, Ordering::SeqCst);
                let sent = headers
                    .get("x-consistency-token")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let mut issued = seen.issued.lock().expect("lock");
                match (&sent, &*issued) {
                    (Some(sent), Some(last)) if sent == last => {
                        seen.carried_last.fetch_add(1, Ordering::SeqCst);
                    }
                    (Some(_), _) => {
                        seen.carried_other.fetch_add(1, Ordering::SeqCst);
                    }
                    (None, _) => {}
                }
                if n % 5 == 0 {
                    let token = format!("0=0/{n:X}; sig=test");
                    *issued = Some(token.clone());
                    ([("x-consistency-token", token)], "written").into_response()
                } else {
                    "read".into_response()
                }
            },
        ))
        .with_state(seen.clone());
    let addr = spawn_router(app).await;

    let outcome = load(
        addr,
        Plan {
            carry_token: true,
            ..plan(1, 60_000, Some(100))
        },
    )
    .await;

    // Every request after the first carried the last token handed out, and no other.
    assert_eq!(outcome.responses, 100);
    assert_eq!(seen.carried_last.load(Ordering::SeqCst), 99);
    assert_eq!(seen.carried_other.load(Ordering::SeqCst), 0);

    // Without the switch, nothing is sent back.
    let before =
        seen.carried_last.load(Ordering::SeqCst) + seen.carried_other.load(Ordering::SeqCst);
    load(addr, plan(1, 60_000, Some(20))).await;
    let after =
        seen.carried_last.load(Ordering::SeqCst) + seen.carried_other.load(Ordering::SeqCst);
    assert_eq!(after, before);
}
