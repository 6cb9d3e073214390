//! What the observability tests observe with: a log capture, a `/metrics` parser, an
//! in-test OTLP/HTTP collector, and a real Prometheus process.

use std::{
    collections::BTreeMap,
    io::Write,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, body::Bytes, extract::State, routing::post};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    trace::v1::Span,
};
use prost::Message;
use scalable_api::{Config, telemetry};
use tracing::subscriber::DefaultGuard;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

// ---------------------------------------------------------------------------- logs

/// Everything the app logged while the capture was installed on this thread.
///
/// Installed for the current thread only (`#[tokio::test]` runs the app, its connections and
/// the test on one thread), so tests in one process never see each other's lines.
pub struct LogCapture {
    buffer: Arc<Mutex<Vec<u8>>>,
    pub guard: Arc<telemetry::TelemetryGuard>,
    _default: DefaultGuard,
}

#[derive(Clone)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Installs the app's own log (and trace) pipeline for `config`, writing into memory.
    pub fn install(config: &Config) -> Self {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = SharedBuffer(buffer.clone());
        let (subscriber, guard) =
            telemetry::subscriber(config, Some(BoxMakeWriter::new(move || writer.clone())))
                .expect("the telemetry config is valid");
        Self {
            buffer,
            guard: Arc::new(guard),
            _default: tracing::subscriber::set_default(subscriber),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// The captured lines, parsed (the JSON format).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------- metrics

/// A `/metrics` page: series (name plus sorted labels) to value.
#[derive(Debug, Default)]
pub struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    pub fn parse(text: &str) -> Self {
        let mut series = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (key, value) = line.rsplit_once(' ').expect("`series value` lines");
            let (name, labels) = match key.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (key, ""),
            };
            let mut labels: Vec<&str> = labels.split("\",").filter(|l| !l.is_empty()).collect();
            labels.sort_unstable();
            let labels: Vec<String> = labels
                .iter()
                .map(|l| l.trim_end_matches('"').replacen("=\"", "=", 1))
                .collect();
            series.insert(
                format!("{name}{{{}}}", labels.join(",")),
                value.parse().expect("a number"),
            );
        }
        Self(series)
    }

    /// The value of `name` with exactly these labels (0 when the series does not exist).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort_unstable();
        self.0
            .get(&format!("{name}{{{}}}", labels.join(",")))
            .copied()
            .unwrap_or(0.0)
    }

    /// Names of every series, with their labels.
    pub fn series(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.keys().any(|k| k.starts_with(&format!("{name}{{")))
    }
}

// ---------------------------------------------------------------------------- traces

/// An OTLP/HTTP collector on a loopback port that keeps every span it is sent.
pub struct Collector {
    pub endpoint: String,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Collector {
    pub async fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let router = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            endpoint: format!("http://{addr}/v1/traces"),
            spans,
        }
    }

    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Decodes an `ExportTraceServiceRequest` (protobuf, as opentelemetry-otlp's `http-proto`
/// sends it) and answers as a collector does.
async fn receive(
    State(spans): State<Arc<Mutex<Vec<Span>>>>,
    body: Bytes,
) -> ([(&'static str, &'static str); 1], Vec<u8>) {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
    let received = request
        .resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans);
    spans
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(received);
    (
        [("content-type", "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

/// A span attribute's string value.
pub fn attribute(span: &Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
}

// ---------------------------------------------------------------------------- prometheus

/// Debian's `prometheus`, scraping `target` every second from a temporary directory, on a
/// free loopback port. Killed and its directory removed on drop.
pub struct Prometheus {
    pub base: String,
    child: Child,
    dir: PathBuf,
}

impl Prometheus {
    pub fn start(target: SocketAddr) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "scalable-api-prometheus-{}-{}",
            std::process::id(),
            target.port()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: scalable-api\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write the Prometheus config");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `prometheus` ({e}): scripts/stack up installs it as root, or: sudo apt-get install prometheus")
            });
        Self {
            base: format!("http://127.0.0.1:{port}"),
            child,
            dir,
        }
    }

    /// Runs an instant query until it returns a series (Prometheus needs a scrape or two),
    /// at most `within`; returns the result vector.
    pub async fn query_until_found(&self, query: &str, within: Duration) -> Vec<serde_json::Value> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + within;
        loop {
            let answer = client
                .get(format!("{}/api/v1/query", self.base))
                .query(&[("query", query)])
                .send()
                .await;
            if let Ok(answer) = answer
                && let Ok(body) = answer.json::<serde_json::Value>().await
                && let Some(result) = body["data"]["result"].as_array()
                && !result.is_empty()
            {
                return result.clone();
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus at {} returned nothing for `{query}` within {within:?}",
                self.base
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
