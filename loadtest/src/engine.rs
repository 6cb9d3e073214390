//! The load loop: `connections` simulated clients, each with one keep-alive HTTP/1.1
//! connection and one request in flight, for a warm-up and then a measured window.
//!
//! Why a hand-written loop on hyper's client connection rather than goose: goose drives
//! each user through reqwest's pooled client and a per-request metrics channel, and records
//! whole milliseconds; on a 2-core machine that shares its cores with the service, every
//! microsecond the generator spends is one the service does not get. Here a request is one
//! `send_request` on a connection the client owns, and a latency is one histogram record in
//! microseconds on the client's own histogram (merged at the end). Against the hello-world
//! server on the 2-core box it matched wrk within noise and served twice the requests/s of
//! goose 0.17 (figures in the README). Its cost: only what this file does (no ramp-up
//! curves, no scenario language).
//!
//! Closed loop by default, like wrk: a client sends its next request when the previous
//! answer arrived. When the server saturates, clients wait instead of piling up requests, so
//! the latencies are those of the requests that were sent ("coordinated omission"): read p99
//! together with requests/s, and compare runs at the same connection count. `Plan::rate`
//! makes it an open loop that measures from each request's due time instead.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::BodyExt;
use hyper::Method;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::{series::Series, server_timing::TimingSums, target::Target};

/// One request a workload wants sent.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    /// Path and query, relative to the target's base URL.
    pub path: String,
    pub body: Option<Bytes>,
    pub token: Option<Arc<str>>,
    /// A GraphQL answer: a 200 whose body has `"errors":` is counted as an error.
    pub graphql: bool,
    /// The route class it is reported under (`anonymous_lists`, `logins`, ...), for
    /// workloads that mix classes; `None`: counted in the run's totals only.
    pub class: Option<&'static str>,
}

impl Call {
    pub fn get(path: impl Into<String>) -> Self {
        Self {
            method: Method::GET,
            path: path.into(),
            body: None,
            token: None,
            graphql: false,
            class: None,
        }
    }

    /// A GraphQL POST of `body` to `/graphql`.
    pub fn graphql(body: Bytes) -> Self {
        Self {
            method: Method::POST,
            body: Some(body),
            graphql: true,
            ..Self::get("/graphql")
        }
    }

    /// The same call, reported under `class`.
    pub fn class(self, class: &'static str) -> Self {
        Self {
            class: Some(class),
            ..self
        }
    }
}

/// What to send next. `client` is the simulated client's index; `rng` is its own stream.
pub trait Source: Send + Sync + 'static {
    fn next(&self, client: usize, rng: &mut Rng) -> Call;
}

/// How long and how hard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub connections: usize,
    #[serde(with = "millis")]
    pub warmup: Duration,
    /// The measured window; with `requests`, its upper bound.
    #[serde(with = "millis")]
    pub duration: Duration,
    /// Stop after this many measured requests (each counted once sent).
    pub requests: Option<u64>,
    /// A request unanswered this long is an error (`timeout`) and its connection is dropped.
    #[serde(with = "millis")]
    pub timeout: Duration,
    /// Seeds every client's random stream: client i uses `seed` mixed with i.
    pub seed: u64,
    /// Open loop: this many requests per second in all, spread evenly over the clients, and
    /// each latency measured from when its request was *due*, not from when a busy client got
    /// round to sending it. Past saturation the queueing shows in the percentiles, as it
    /// would for real users who do not wait for each other (wrk2's correction for
    /// coordinated omission). `None`: closed loop.
    pub rate: Option<f64>,
    /// Sent as `Accept-Encoding` on every request (`gzip, br, zstd`), to measure compressed
    /// answers; `None`: not sent, so answers come uncompressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_encoding: Option<String>,
    /// Each client keeps the `X-Consistency-Token` its last write was answered with and
    /// sends it on every later request, as a client wanting read-your-writes does; the
    /// staleness auditor then counts those reads apart (`token="yes"`).
    #[serde(default)]
    pub carry_token: bool,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            connections: 64,
            warmup: Duration::from_secs(3),
            duration: Duration::from_secs(15),
            requests: None,
            timeout: Duration::from_secs(5),
            seed: 42,
            rate: None,
            accept_encoding: None,
            carry_token: false,
        }
    }
}

/// `15s`, `500ms`, `2m`, or seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| Duration::from_secs_f64(v * scale))
        .ok_or_else(|| format!("`{s}` is not a duration (15s, 500ms, 2m)"))
}

/// The raw figures of one measured window.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Length of the measured window: from its start to the deadline, or to the last
    /// answer when a request count ended it first.
    pub elapsed: Duration,
    /// Answers in the window, any status.
    pub responses: u64,
    /// Answers with a status outside 200..=299, by status.
    pub non_2xx: BTreeMap<u16, u64>,
    /// Requests without a usable answer, by kind (`connect`, `timeout`, `io`, `graphql`).
    pub errors: BTreeMap<String, u64>,
    /// The first few distinct error messages, so a failing run says why.
    pub error_samples: Vec<String>,
    /// Requests still in flight at the deadline: abandoned, counted nowhere else.
    pub unfinished: u64,
    /// Latency of every answer in the window (any status), microseconds.
    pub latency_us: Histogram<u64>,
    pub stopped_by: StopReason,
    /// The same figures per route class ([`Call::class`]); empty for single-class workloads.
    pub classes: BTreeMap<String, ClassOutcome>,
    /// The service's `Server-Timing` of every answer in the window, summed per metric.
    pub server_timing: TimingSums,
    /// Bytes of the answers' bodies in the window, as sent (compressed, if they were).
    pub body_bytes: u64,
}

/// One route class's figures in a measured window.
#[derive(Debug, Clone)]
pub struct ClassOutcome {
    /// Answers, any status.
    pub responses: u64,
    /// Answers with a 2xx status (and, for GraphQL, no `errors`).
    pub ok: u64,
    pub non_2xx: BTreeMap<u16, u64>,
    /// Requests without a usable answer (timeouts, I/O).
    pub errors: u64,
    /// Latency of every answer, microseconds.
    pub latency_us: Histogram<u64>,
}

impl ClassOutcome {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            responses: 0,
            ok: 0,
            non_2xx: BTreeMap::new(),
            errors: 0,
            latency_us: new_histogram()?,
        })
    }

    fn add(&mut self, other: &Self) -> anyhow::Result<()> {
        self.responses += other.responses;
        self.ok += other.ok;
        self.errors += other.errors;
        for (status, n) in &other.non_2xx {
            *self.non_2xx.entry(*status).or_default() += n;
        }
        self.latency_us.add(&other.latency_us)?;
        Ok(())
    }

    /// Requests sent in the window and answered or failed.
    pub fn requests(&self) -> u64 {
        self.responses + self.errors
    }

    /// The share of requests with a 2xx answer.
    pub fn success_ratio(&self) -> f64 {
        match self.requests() {
            0 => 0.0,
            n => self.ok as f64 / n as f64,
        }
    }

    /// Latency at `quantile` in milliseconds; 0 without answers.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        if self.latency_us.is_empty() {
            return 0.0;
        }
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Duration,
    Requests,
}

impl Outcome {
    pub fn requests_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.responses as f64 / secs
        } else {
            0.0
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn non_2xx_count(&self) -> u64 {
        self.non_2xx.values().sum()
    }

    /// Latency at `quantile` (0..=1) in milliseconds; 0 without answers.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        if self.latency_us.is_empty() {
            return 0.0;
        }
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        if self.latency_us.is_empty() {
            return 0.0;
        }
        self.latency_us.max() as f64 / 1000.0
    }
}

/// Progress the caller may watch while a run goes on (answers so far, measured or not).
#[derive(Debug, Default)]
pub struct Progress {
    pub answered: AtomicU64,
}

/// Runs `plan` against `target`. `on_window_start` is called once when the warm-up ends
/// (the caller scrapes the service's metrics there, or starts its fault timeline) while the
/// load goes on; its result is returned with the outcome. With `series`, every measured
/// answer and failure is also recorded in its second of the window.
pub async fn run<F, Fut, T>(
    target: &Target,
    source: Arc<dyn Source>,
    plan: &Plan,
    progress: Arc<Progress>,
    series: Option<Arc<Series>>,
    on_window_start: F,
) -> anyhow::Result<(Outcome, T)>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    anyhow::ensure!(plan.connections > 0, "at least one connection");
    anyhow::ensure!(
        plan.rate.is_none_or(|r| r.is_finite() && r > 0.0),
        "a rate is a positive number of requests per second"
    );
    let start = Instant::now();
    let shared = Arc::new(Shared {
        start,
        // Each client's requests are due this far apart; clients are staggered over it.
        interval: plan
            .rate
            .map(|rate| Duration::from_secs_f64(plan.connections as f64 / rate)),
        connections: plan.connections,
        target: target.clone(),
        source,
        measure_from: start + plan.warmup,
        deadline: start + plan.warmup + plan.duration,
        requests: plan.requests,
        timeout: plan.timeout,
        tickets: AtomicU64::new(0),
        progress,
        series,
        accept_encoding: plan
            .accept_encoding
            .as_deref()
            .map(hyper::header::HeaderValue::from_str)
            .transpose()
            .map_err(|_| anyhow::anyhow!("--accept-encoding is not a header value"))?,
        carry_token: plan.carry_token,
    });
    let clients: Vec<_> = (0..plan.connections)
        .map(|i| {
            let shared = shared.clone();
            let rng = Rng::stream(plan.seed, i as u64);
            Ok(tokio::spawn(client(i, shared, rng, new_histogram()?)))
        })
        .collect::<anyhow::Result<_>>()?;
    tokio::time::sleep_until(shared.measure_from).await;
    let at_start = on_window_start().await;

    let mut outcome = Outcome {
        elapsed: Duration::ZERO,
        responses: 0,
        non_2xx: BTreeMap::new(),
        errors: BTreeMap::new(),
        error_samples: Vec::new(),
        unfinished: 0,
        latency_us: new_histogram()?,
        stopped_by: StopReason::Duration,
        classes: BTreeMap::new(),
        server_timing: TimingSums::default(),
        body_bytes: 0,
    };
    let mut last_answer = shared.measure_from;
    for handle in clients {
        let tally = handle.await?;
        outcome.responses += tally.responses;
        outcome.unfinished += tally.unfinished;
        for (status, n) in tally.non_2xx {
            *outcome.non_2xx.entry(status).or_default() += n;
        }
        for (kind, n) in tally.errors {
            *outcome.errors.entry(kind.to_owned()).or_default() += n;
        }
        for sample in tally.error_samples {
            if outcome.error_samples.len() < 5 && !outcome.error_samples.contains(&sample) {
                outcome.error_samples.push(sample);
            }
        }
        outcome.latency_us.add(&tally.latency_us)?;
        outcome.server_timing.merge(&tally.server_timing);
        outcome.body_bytes += tally.body_bytes;
        for (class, figures) in &tally.classes {
            match outcome.classes.get_mut(*class) {
                Some(all) => all.add(figures)?,
                None => {
                    outcome.classes.insert((*class).to_owned(), figures.clone());
                }
            }
        }
        last_answer = last_answer.max(tally.last_answer);
    }
    let exhausted = plan
        .requests
        .is_some_and(|limit| shared.tickets.load(Ordering::Relaxed) >= limit);
    if exhausted {
        outcome.stopped_by = StopReason::Requests;
        outcome.elapsed = last_answer.min(shared.deadline) - shared.measure_from;
    } else {
        outcome.elapsed = shared.deadline - shared.measure_from;
    }
    Ok((outcome, at_start))
}

/// Microseconds from 1 µs to 10 minutes, 3 significant digits: at most 0.1 % off, in a
/// few tens of kilobytes per client.
fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 600_000_000, 3)?)
}

struct Shared {
    start: Instant,
    interval: Option<Duration>,
    connections: usize,
    target: Target,
    source: Arc<dyn Source>,
    measure_from: Instant,
    deadline: Instant,
    requests: Option<u64>,
    timeout: Duration,
    tickets: AtomicU64,
    progress: Arc<Progress>,
    series: Option<Arc<Series>>,
    accept_encoding: Option<hyper::header::HeaderValue>,
    carry_token: bool,
}

struct Tally {
    responses: u64,
    non_2xx: BTreeMap<u16, u64>,
    errors: BTreeMap<&'static str, u64>,
    error_samples: Vec<String>,
    unfinished: u64,
    latency_us: Histogram<u64>,
    last_answer: Instant,
    classes: BTreeMap<&'static str, ClassOutcome>,
    server_timing: TimingSums,
    body_bytes: u64,
}

impl Tally {
    fn error(&mut self, kind: &'static str, message: String) {
        *self.errors.entry(kind).or_default() += 1;
        if self.error_samples.len() < 5 && !self.error_samples.contains(&message) {
            self.error_samples.push(message);
        }
    }

    /// The figures of `class`, created on its first request (a histogram each: tens of
    /// kilobytes, per class and client).
    fn class(&mut self, class: &'static str) -> Option<&mut ClassOutcome> {
        if !self.classes.contains_key(class) {
            self.classes.insert(class, ClassOutcome::new().ok()?);
        }
        self.classes.get_mut(class)
    }
}

/// What one exchange ended with.
enum Exchange {
    Answer {
        status: u16,
        graphql_errors: bool,
        /// The answer's `Server-Timing`: a handle on the received bytes, not a copy.
        server_timing: Option<hyper::header::HeaderValue>,
        /// The body's length as received.
        bytes: u64,
        /// The answer's `X-Consistency-Token` (writes), kept with `carry_token`.
        consistency_token: Option<hyper::header::HeaderValue>,
    },
    Failed(anyhow::Error),
    TimedOut,
}

/// `X-Consistency-Token`, which writes answer with and `carry_token` clients send back.
const CONSISTENCY_TOKEN: hyper::header::HeaderName =
    hyper::header::HeaderName::from_static("x-consistency-token");

async fn client(
    index: usize,
    shared: Arc<Shared>,
    mut rng: Rng,
    latency_us: Histogram<u64>,
) -> Tally {
    let mut carried_token: Option<hyper::header::HeaderValue> = None;
    let mut tally = Tally {
        responses: 0,
        non_2xx: BTreeMap::new(),
        errors: BTreeMap::new(),
        error_samples: Vec::new(),
        unfinished: 0,
        latency_us,
        last_answer: shared.measure_from,
        classes: BTreeMap::new(),
        server_timing: TimingSums::default(),
        body_bytes: 0,
    };
    let deadline = shared.deadline;
    let mut connection = None;
    let mut due = shared
        .interval
        .map(|every| shared.start + every.mul_f64(index as f64 / shared.connections as f64));
    loop {
        // Closed loop: now. Open loop: when this request is due (waiting for it if early);
        // a late start then counts in the latency, as a waiting user would see it.
        let sent_at = match (&mut due, shared.interval) {
            (Some(at), Some(every)) => {
                let intended = *at;
                *at += every;
                if intended >= deadline {
                    break;
                }
                tokio::time::sleep_until(intended).await;
                if Instant::now() >= deadline {
                    tally.unfinished += backlog(&shared, intended);
                    break;
                }
                intended
            }
            _ => Instant::now(),
        };
        if sent_at >= deadline {
            break;
        }
        let measured = sent_at >= shared.measure_from;
        if measured
            && let Some(limit) = shared.requests
            && shared.tickets.fetch_add(1, Ordering::Relaxed) >= limit
        {
            break;
        }
        let sender = match &mut connection {
            Some(sender) if !hyper::client::conn::http1::SendRequest::is_closed(sender) => sender,
            _ => match shared.target.connect(shared.timeout).await {
                Ok(sender) => connection.insert(sender),
                Err(err) => {
                    if measured {
                        tally.error("connect", format!("{err:#}"));
                        if let Some(series) = &shared.series {
                            series.failure(shared.offset(Instant::now()));
                        }
                    }
                    // A refused connection fails in microseconds: without a pause, the
                    // loop would spin a core that the service needs.
                    tokio::time::sleep_until(
                        (Instant::now() + Duration::from_millis(10)).min(deadline),
                    )
                    .await;
                    continue;
                }
            },
        };
        let call = shared.source.next(index, &mut rng);
        let class = call.class;
        let request =
            match shared
                .target
                .request(call.method, &call.path, call.body, call.token.as_deref())
            {
                Ok(mut request) => {
                    if let Some(encodings) = &shared.accept_encoding {
                        request
                            .headers_mut()
                            .insert(hyper::header::ACCEPT_ENCODING, encodings.clone());
                    }
                    if let Some(token) = &carried_token {
                        request
                            .headers_mut()
                            .insert(CONSISTENCY_TOKEN, token.clone());
                    }
                    request
                }
                Err(err) => {
                    tally.error("request", format!("{err:#}"));
                    break;
                }
            };
        let exchange = async {
            if let Err(err) = sender.ready().await {
                return Exchange::Failed(err.into());
            }
            let response = match sender.send_request(request).await {
                Ok(response) => response,
                Err(err) => return Exchange::Failed(err.into()),
            };
            let status = response.status().as_u16();
            let server_timing = response.headers().get("server-timing").cloned();
            let consistency_token = shared
                .carry_token
                .then(|| response.headers().get(CONSISTENCY_TOKEN).cloned())
                .flatten();
            match response.into_body().collect().await {
                Ok(body) => {
                    let body = body.to_bytes();
                    Exchange::Answer {
                        status,
                        graphql_errors: call.graphql && contains(&body, b"\"errors\":"),
                        server_timing,
                        bytes: body.len() as u64,
                        consistency_token,
                    }
                }
                Err(err) => Exchange::Failed(err.into()),
            }
        };
        let result = tokio::select! {
            result = tokio::time::timeout(shared.timeout, exchange) => result.unwrap_or(Exchange::TimedOut),
            () = tokio::time::sleep_until(deadline) => {
                if measured {
                    tally.unfinished += 1;
                }
                if let Some(next) = due {
                    tally.unfinished += backlog(&shared, next);
                }
                break;
            }
        };
        let answered_at = Instant::now();
        if answered_at > deadline {
            // Tokio's timers have millisecond granularity, so the deadline branch above can
            // fire late and let an answer from after the window through: it is not counted.
            if measured {
                tally.unfinished += 1;
            }
            if let Some(next) = due {
                tally.unfinished += backlog(&shared, next);
            }
            break;
        }
        shared.progress.answered.fetch_add(1, Ordering::Relaxed);
        let failed = matches!(result, Exchange::Failed(_) | Exchange::TimedOut);
        match result {
            Exchange::Answer {
                status,
                graphql_errors,
                server_timing,
                bytes,
                consistency_token,
            } => {
                if consistency_token.is_some() {
                    carried_token = consistency_token;
                }
                if !measured {
                    continue;
                }
                tally.body_bytes += bytes;
                if let Some(header) = &server_timing {
                    tally.server_timing.add_header(header.as_bytes());
                }
                tally.responses += 1;
                tally.last_answer = answered_at;
                let micros = (answered_at - sent_at).as_micros().max(1) as u64;
                tally.latency_us.saturating_record(micros);
                let success = (200..300).contains(&status) && !graphql_errors;
                if let Some(series) = &shared.series {
                    series.answer(shared.offset(answered_at), status, success, micros);
                }
                if !(200..300).contains(&status) {
                    *tally.non_2xx.entry(status).or_default() += 1;
                } else if graphql_errors {
                    tally.error("graphql", "a 200 GraphQL answer with errors".to_owned());
                }
                if let Some(figures) = class.and_then(|c| tally.class(c)) {
                    figures.responses += 1;
                    figures.ok += u64::from(success);
                    figures.latency_us.saturating_record(micros);
                    if !(200..300).contains(&status) {
                        *figures.non_2xx.entry(status).or_default() += 1;
                    }
                }
            }
            Exchange::Failed(err) => {
                connection = None;
                if measured {
                    tally.error("io", format!("{err:#}"));
                }
            }
            Exchange::TimedOut => {
                connection = None;
                if measured {
                    tally.error("timeout", format!("no answer within {:?}", shared.timeout));
                }
            }
        }
        if measured
            && failed
            && let Some(series) = &shared.series
        {
            series.failure(shared.offset(answered_at));
        }
        if measured
            && failed
            && let Some(figures) = class.and_then(|c| tally.class(c))
        {
            figures.errors += 1;
        }
    }
    tally
}

impl Shared {
    /// How far into the measured window `at` is.
    fn offset(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.measure_from)
    }
}

/// Open loop, behind schedule at the deadline: the requests due in the measured window from
/// `from` on that were never sent. They are reported as unfinished: an overloaded open loop's
/// backlog is the queue its users would be standing in.
fn backlog(shared: &Shared, from: Instant) -> u64 {
    let (Some(every), true) = (shared.interval, from < shared.deadline) else {
        return 0;
    };
    let from = from.max(shared.measure_from);
    ((shared.deadline - from).as_secs_f64() / every.as_secs_f64()).ceil() as u64
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// SplitMix64: a seeded, reproducible stream of ids, written out rather than taken from
/// `rand` so that the same `--seed` picks the same ids whatever `rand`'s version does to
/// its algorithms.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Stream `index` of `seed` (one per simulated client). Seeds that differ by a multiple of
    /// SplitMix64's increment replay one sequence a few steps apart: 64 clients would ask for
    /// the same ids at the same moment, and the service's single flight would answer them
    /// with one read (found by the first comparison: 6 cache misses per SQL statement). A
    /// hashed index starts each stream at an unrelated point of the cycle.
    pub fn stream(seed: u64, index: u64) -> Self {
        Self::new(seed ^ Self::new(index).next_u64())
    }

    /// Uniform in `0..n` (n > 0), by Lemire's multiply-shift (bias below 2^-32 for n < 2^32).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// A seeded Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn the_rng_is_reproducible_and_covers_its_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<usize> = (0..1000).map(|_| a.below(10)).collect();
        let ys: Vec<usize> = (0..1000).map(|_| b.below(10)).collect();
        assert_eq!(xs, ys);
        for v in 0..10 {
            let n = xs.iter().filter(|&&x| x == v).count();
            assert!((50..150).contains(&n), "{v} drawn {n} times of 1000");
        }
        let mut items: Vec<u32> = (0..100).collect();
        Rng::new(1).shuffle(&mut items);
        assert_ne!(items, (0..100).collect::<Vec<_>>());
        items.sort_unstable();
        assert_eq!(items, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn client_streams_do_not_replay_each_other() {
        let streams: Vec<std::collections::HashSet<u64>> = (0..64)
            .map(|i| {
                let mut rng = Rng::stream(42, i);
                (0..1000).map(|_| rng.next_u64()).collect()
            })
            .collect();
        for (i, a) in streams.iter().enumerate() {
            for b in &streams[i + 1..] {
                assert_eq!(a.intersection(b).count(), 0, "stream {i} shares values");
            }
        }
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        // 1..=10_000 µs, once each: p50 = 5 ms, p99 = 9.9 ms, within hdrhistogram's 0.1 %.
        let mut h = new_histogram().expect("histogram");
        for us in 1..=10_000u64 {
            h.record(us).expect("in range");
        }
        let outcome = Outcome {
            elapsed: Duration::from_secs(2),
            responses: 10_000,
            non_2xx: BTreeMap::new(),
            errors: BTreeMap::new(),
            error_samples: Vec::new(),
            unfinished: 0,
            latency_us: h,
            stopped_by: StopReason::Duration,
            classes: BTreeMap::new(),
            server_timing: TimingSums::default(),
            body_bytes: 0,
        };
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(
            near(outcome.latency_ms(0.5), 5.0),
            "{}",
            outcome.latency_ms(0.5)
        );
        assert!(
            near(outcome.latency_ms(0.95), 9.5),
            "{}",
            outcome.latency_ms(0.95)
        );
        assert!(
            near(outcome.latency_ms(0.99), 9.9),
            "{}",
            outcome.latency_ms(0.99)
        );
        assert!(near(outcome.max_ms(), 10.0), "{}", outcome.max_ms());
        assert!((outcome.requests_per_sec() - 5000.0).abs() < 1e-9);
    }
}
