//! A rolling restart under load, through a real nginx: two `scalable-api serve` processes
//! behind Debian's nginx, configured from the same template as docker-compose and
//! `scripts/dev --instances 2` (`deploy/nginx/`), a steady closed-loop load through nginx, and
//! each instance in turn stopped with SIGTERM (it drains), started again on its port and
//! waited for on `/readyz`. Every request must be answered with a 2xx: the graceful drain, the
//! load balancer's retries and its passive health checks together must hide the restarts.
//! Without the template's fail-open backups nginx answers 502 while the second instance
//! restarts, and without the service's shutdown linger a write now and then crosses the
//! closing of its pooled connection (docs/deployment.md, "Rolling restart").

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::process::{Child, Command};

use crate::helpers::{TestApp, free_addr};

/// Simulated clients, each with one request in flight (a closed loop).
const CONNECTIONS: usize = 16;
/// A request unanswered this long counts as failed: the service's own `http.request_timeout`,
/// far above the latencies seen here, so a busy machine does not fail the test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds on each wait, far above what they take (a debug build on a busy 2-core machine):
/// the test stops by itself however the service or nginx misbehave.
const READY_PATIENCE: Duration = Duration::from_secs(60);
/// Above `http.shutdown_grace` (20 s): past it the service drops stragglers and exits anyway.
const EXIT_PATIENCE: Duration = Duration::from_secs(40);
const LOAD_PATIENCE: Duration = Duration::from_secs(60);
/// Answers to collect before the first restart and after each one.
const ANSWERS_BEFORE: u64 = 1_000;
const ANSWERS_BETWEEN: u64 = 500;

/// The test's phases, in order; every answer is filed under the one it arrived in.
const BEFORE: usize = 0;
const fn restarting(instance: usize) -> usize {
    1 + 2 * instance
}
const fn restarted(instance: usize) -> usize {
    2 + 2 * instance
}
const PHASES: [&str; 5] = ["before", "restarting a", "a back", "restarting b", "b back"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_behind_nginx_answers_every_request_under_load() {
    // Arrange: two instances over the test's databases, nginx in front of them.
    let app = TestApp::spawn_seeded(200, 1_000, |_| {}).await;
    let dir = std::env::temp_dir().join(format!("rolling-restart-{}", app.directory_db));
    let launch = app
        .launch(&dir)
        // One address (nginx's) sends the whole load: the rate limits would refuse it.
        .env("SCALABLE_API_RATELIMIT__ENABLED", "false")
        // Behind nginx on loopback, as `scripts/dev --instances 2` runs them.
        .env("SCALABLE_API_HTTP__TRUSTED_PROXIES", r#"["127.0.0.1/32"]"#);
    let mut instances = Vec::new();
    for name in ["a", "b"] {
        let mut instance = launch.start(name, free_addr());
        instance.wait_ready(READY_PATIENCE).await;
        instances.push(instance);
    }
    let upstreams: Vec<SocketAddr> = instances.iter().map(|i| i.addr).collect();
    let nginx = Nginx::start(&dir, &upstreams).await;
    let ids: Vec<i64> = {
        let mut ids = Vec::new();
        for shard in 0..app.shard_dbs.len() {
            ids.extend(
                sqlx::query_scalar::<_, i64>("SELECT id FROM users ORDER BY id LIMIT 50")
                    .fetch_all(&app.primary(shard).await)
                    .await
                    .expect("the seeded users"),
            );
        }
        ids
    };
    assert!(!ids.is_empty(), "the seed made users");
    // Reads of both shards and of the feed, and one write in eleven: a write that reached an
    // instance is never resent by nginx, so only the service can keep it from failing.
    let mut calls: Vec<Call> = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        calls.push(Call::get(format!("/v2/users/{id}")));
        calls.push(Call::get("/v1/posts".to_owned()));
        if n % 5 == 0 {
            calls.push(Call::post("/v1/posts".to_owned()));
        }
    }
    let writer = app.register("writer@example.com", "Writer").await;
    let load = Load::start(&nginx.base, calls, writer.token);
    load.wait_for_answers(ANSWERS_BEFORE).await;

    // Act: restart each instance in turn, under the load.
    let mut windows = Vec::new();
    for (k, instance) in instances.iter_mut().enumerate() {
        load.phase.store(restarting(k), Ordering::SeqCst);
        let signalled = Instant::now();
        let exit = instance.terminate(EXIT_PATIENCE).await;
        let drained = signalled.elapsed();
        assert!(
            exit.success(),
            "{} exits cleanly after its drain ({exit}); its log:\n{}",
            instance.name,
            instance.log_tail()
        );
        *instance = launch.start(&instance.name, instance.addr);
        instance.wait_ready(READY_PATIENCE).await;
        load.phase.store(restarted(k), Ordering::SeqCst);
        windows.push(format!(
            "{}: exited {:.0} ms after SIGTERM, ready again {:.0} ms later",
            instance.name,
            drained.as_secs_f64() * 1000.0,
            (signalled.elapsed() - drained).as_secs_f64() * 1000.0
        ));
        load.wait_for_answers(ANSWERS_BETWEEN).await;
    }
    // Both are back in nginx's rotation: each answers through it again since its restart.
    let rejoined = load
        .wait_until_each_answered_since_restart(&upstreams)
        .await;
    let samples = load.stop().await;

    // Assert
    let failed: Vec<&Sample> = samples.iter().filter(|s| !s.ok()).collect();
    let mut per_phase = [0u64; PHASES.len()];
    for sample in samples.iter().filter(|s| s.ok()) {
        per_phase[sample.phase] += 1;
    }
    let retried = samples
        .iter()
        .filter(|s| s.ok() && s.upstream.contains(','))
        .count();
    let before = p99_ms(&samples, |phase| phase == BEFORE);
    let during = p99_ms(&samples, |phase| {
        phase == restarting(0) || phase == restarting(1)
    });
    println!(
        "rolling restart through nginx, {CONNECTIONS} connections: {} requests, {} failed, \
         {retried} retried by nginx past a stopped instance; answers per phase {:?}; \
         p99 {before:.1} ms before the restarts, {during:.1} ms during them; \
         both instances answering through nginx again {} after the second restart",
        samples.len(),
        failed.len(),
        PHASES.iter().zip(per_phase).collect::<Vec<_>>(),
        match &rejoined {
            Ok(seconds) => format!("{seconds:.1} s"),
            Err(missing) => format!("not {missing:?}"),
        },
    );
    println!("restarts: {}", windows.join("; "));
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, e.g.\n{}\nnginx's log:\n{}",
        failed.len(),
        samples.len(),
        failed
            .iter()
            .take(5)
            .map(|s| s.describe())
            .collect::<Vec<_>>()
            .join("\n"),
        nginx.log_tail()
    );
    // Requests went on throughout: answered during each restart window as well.
    for (phase, answers) in PHASES.iter().zip(per_phase) {
        assert!(answers > 0, "no answers while {phase}: {per_phase:?}");
    }
    assert!(
        samples.len() as u64 >= ANSWERS_BEFORE + 2 * ANSWERS_BETWEEN,
        "{} requests",
        samples.len()
    );
    // And each restarted instance took its share again.
    if let Err(missing) = rejoined {
        panic!("nginx sent nothing to {missing:?} within {LOAD_PATIENCE:?} of their restart");
    }

    drop(nginx);
    drop(instances);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One request of the load, as its client saw it.
#[derive(Debug)]
struct Sample {
    /// The phase ([`PHASES`]) the answer (or failure) arrived in.
    phase: usize,
    call: Call,
    latency: Duration,
    /// The status, or `None` when there was no answer (connection error, timeout).
    status: Option<u16>,
    /// nginx's `X-Upstream`: the instance that answered, or several (`a, b`) when nginx
    /// retried past the first.
    upstream: String,
    error: Option<String>,
}

impl Sample {
    fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// `POST /v1/posts while restarting a: 502 from 127.0.0.1:41234 after 3.1ms`
    fn describe(&self) -> String {
        let outcome = match (&self.status, &self.error) {
            (_, Some(error)) => format!("no answer ({error})"),
            (Some(status), None) => format!("{status} from {}", self.upstream),
            (None, None) => "nothing".to_owned(),
        };
        let method = if self.call.post { "POST" } else { "GET" };
        format!(
            "{method} {} while {}: {outcome} after {:?}",
            self.call.path, PHASES[self.phase], self.latency
        )
    }
}

/// The 99th percentile latency of the successful answers in the phases `select` picks.
fn p99_ms(samples: &[Sample], select: impl Fn(usize) -> bool) -> f64 {
    let mut latencies: Vec<Duration> = samples
        .iter()
        .filter(|s| s.ok() && select(s.phase))
        .map(|s| s.latency)
        .collect();
    if latencies.is_empty() {
        return 0.0;
    }
    latencies.sort_unstable();
    let at = (latencies.len() * 99).div_ceil(100).saturating_sub(1);
    latencies[at].as_secs_f64() * 1000.0
}

/// One request of the load: a GET, or a POST of a new post as the test's writer.
#[derive(Debug, Clone)]
struct Call {
    post: bool,
    path: String,
}

impl Call {
    fn get(path: String) -> Self {
        Self { post: false, path }
    }

    fn post(path: String) -> Self {
        Self { post: true, path }
    }
}

/// A closed-loop load through `base`: [`CONNECTIONS`] clients, each sending its next request
/// when the previous one was answered, until stopped.
struct Load {
    phase: Arc<AtomicUsize>,
    answered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<Vec<Sample>>>,
    /// Every answer's upstream, for the rejoin check while the load runs.
    upstreams: Arc<std::sync::Mutex<Vec<(usize, String)>>>,
}

impl Load {
    fn start(base: &str, calls: Vec<Call>, token: String) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(CONNECTIONS)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("an HTTP client");
        let calls = Arc::new(calls);
        let phase = Arc::new(AtomicUsize::new(BEFORE));
        let answered = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let upstreams = Arc::new(std::sync::Mutex::new(Vec::new()));
        let clients = (0..CONNECTIONS)
            .map(|client| {
                let (http, base, calls) = (http.clone(), base.to_owned(), calls.clone());
                let token = token.clone();
                let (phase, answered, stop) = (phase.clone(), answered.clone(), stop.clone());
                let upstreams = upstreams.clone();
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    // Client i starts at its own place in the calls: all kinds mixed.
                    let mut next = client * calls.len() / CONNECTIONS;
                    while !stop.load(Ordering::SeqCst) {
                        let call = calls[next % calls.len()].clone();
                        next += 1;
                        let url = format!("{base}{}", call.path);
                        let request = if call.post {
                            http.post(url).bearer_auth(&token).json(&serde_json::json!({
                                "title": format!("written during a restart ({client}/{next})"),
                                "body": "still answered",
                            }))
                        } else {
                            http.get(url)
                        };
                        let sent = Instant::now();
                        let answer = request.send().await;
                        let latency = sent.elapsed();
                        let phase = phase.load(Ordering::SeqCst);
                        let sample = match answer {
                            Ok(answer) => {
                                let upstream = answer
                                    .headers()
                                    .get("x-upstream")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_owned();
                                let status = answer.status().as_u16();
                                // The body too: a connection cut mid-body is a failure.
                                let error = answer.bytes().await.err().map(|e| e.to_string());
                                Sample {
                                    phase,
                                    call,
                                    latency,
                                    status: error.is_none().then_some(status),
                                    upstream,
                                    error,
                                }
                            }
                            Err(err) => Sample {
                                phase,
                                call,
                                latency,
                                status: None,
                                upstream: String::new(),
                                error: Some(format!("{err:?}")),
                            },
                        };
                        if sample.ok()
                            && let Ok(mut seen) = upstreams.lock()
                        {
                            seen.push((phase, sample.upstream.clone()));
                        }
                        answered.fetch_add(1, Ordering::SeqCst);
                        samples.push(sample);
                    }
                    samples
                })
            })
            .collect();
        Self {
            phase,
            answered,
            stop,
            clients,
            upstreams,
        }
    }

    /// Waits until `n` more requests have been answered (or have failed).
    async fn wait_for_answers(&self, n: u64) {
        let target = self.answered.load(Ordering::SeqCst) + n;
        let deadline = tokio::time::Instant::now() + LOAD_PATIENCE;
        while self.answered.load(Ordering::SeqCst) < target {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the load did not get {n} answers within {LOAD_PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every instance in `upstreams` (in the order they were restarted) has
    /// answered through nginx since its restart, for at most [`LOAD_PATIENCE`]; returns how
    /// long that took in seconds, or the instances that had not.
    async fn wait_until_each_answered_since_restart(
        &self,
        upstreams: &[SocketAddr],
    ) -> Result<f64, Vec<SocketAddr>> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + LOAD_PATIENCE;
        loop {
            let missing: Vec<SocketAddr> = {
                let seen = self.upstreams.lock().expect("no client panics holding it");
                upstreams
                    .iter()
                    .enumerate()
                    .filter(|(k, addr)| {
                        let addr = addr.to_string();
                        !seen.iter().any(|(phase, upstream)| {
                            *phase >= restarted(*k) && upstream.ends_with(&addr)
                        })
                    })
                    .map(|(_, addr)| *addr)
                    .collect()
            };
            if missing.is_empty() {
                return Ok(started.elapsed().as_secs_f64());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(missing);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the clients (each after its request in flight) and returns every sample.
    async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        let mut samples = Vec::new();
        for client in self.clients {
            samples.extend(client.await.expect("a load client does not panic"));
        }
        samples
    }
}

/// Debian's nginx on a free loopback port with the repository's configuration, rendered by
/// `deploy/nginx/render` as `scripts/dev --instances N` does; its pid file, logs and
/// temporary files stay in the test's directory. Killed when dropped.
struct Nginx {
    base: String,
    log: PathBuf,
    _child: Child,
}

impl Nginx {
    async fn start(dir: &Path, upstreams: &[SocketAddr]) -> Self {
        let conf = dir.join("nginx");
        let listen = free_addr();
        let rendered = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx/render"))
            .arg(&conf)
            .arg(listen.to_string())
            .args(upstreams.iter().map(ToString::to_string))
            .status()
            .await
            .expect("deploy/nginx/render runs");
        assert!(rendered.success(), "deploy/nginx/render: {rendered}");
        let log = conf.join("nginx.log");
        let file = std::fs::File::create(&log).expect("nginx's log can be created");
        let mut child = Command::new(nginx_binary())
            // The error log to stderr from the start (before the config names it), and one
            // process: a killed master would leave its worker behind, holding the port.
            .args(["-e", "stderr", "-g", "master_process off;", "-p"])
            .arg(&conf)
            .arg("-c")
            .arg(conf.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("the log file handle can be cloned"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("nginx starts");
        let base = format!("http://{listen}");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + READY_PATIENCE;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "nginx exited ({status}); its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let answer = http
                .get(format!("{base}/readyz"))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if answer.is_ok_and(|a| a.status().is_success()) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nginx did not answer /readyz on {base} within {READY_PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            base,
            log,
            _child: child,
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// nginx is in /usr/sbin, which a user's PATH may not have (`scripts/stack up` installs it
/// as root).
fn nginx_binary() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("nginx is not installed: `scripts/stack up` as root installs it, or `sudo apt-get install nginx`")
        })
}
