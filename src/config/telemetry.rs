//! `[telemetry]`: metrics, logs and traces (see `src/telemetry/`).

use std::{net::SocketAddr, time::Duration};

use anyhow::ensure;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `auto`: readable text in the dev profile, JSON lines in production. `text` or `json`
    /// force one.
    pub log_format: LogFormat,
    /// Which log lines are written, in `RUST_LOG` syntax; `RUST_LOG` wins when set. The
    /// access log (one line per request) is the target `scalable_api::access`:
    /// `info,scalable_api::access=off` silences it.
    pub log_filter: String,
    /// Prometheus metrics at `/metrics`. Off: no recorder is installed, every metric call in
    /// the code is a no-op, and `/metrics` is a 404.
    pub metrics: bool,
    /// Serve `/metrics` on this address instead of the API's (an admin port that the public
    /// load balancer does not route). Unset: on the API's own address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<SocketAddr>,
    /// Where spans go: the full OTLP/HTTP traces URL of a collector (Jaeger accepts OTLP:
    /// `http://127.0.0.1:4318/v1/traces`). Unset: no exporter, nothing leaves the process.
    /// Plain `http://` only: the collector is expected on the node or as a sidecar.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// Fraction of traces recorded and exported, 0.0 to 1.0, decided from the trace id: the
    /// caller's (from `traceparent`) or a new one. A caller's "sampled" flag does not force
    /// recording: a client could otherwise have every one of its requests exported.
    pub trace_sample_ratio: f64,
    /// Finished spans buffered for export. When the collector is slow or gone and the buffer
    /// is full, new spans are dropped: a request never waits for the exporter.
    pub trace_queue_size: usize,
    /// Bound on one export request to the collector.
    #[serde(with = "humantime_serde")]
    pub otlp_timeout: Duration,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// A `Server-Timing` header on every answer: the time the request spent in SQL, Redis,
    /// DataLoader batch windows and serialisation, and in all (`src/telemetry/timing.rs`).
    /// Browser devtools show it in a request's Timing tab, and the load-test report sums it.
    /// The trade-off: it tells every client how long each part took, so a cache hit shows
    /// (no `db` entry, a shorter total); a deployment that treats such timings as a side
    /// channel (is this record cached, did that account exist) turns it off. Collected either
    /// way; off only leaves the header out. Unset: on in the dev profile, off in production
    /// ([`Config::server_timing`](super::Config::server_timing)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_timing: Option<bool>,
}

/// The shape of the log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Text in the dev profile, JSON in production.
    Auto,
    /// Readable lines for a terminal.
    Text,
    /// One JSON object per line, for a log pipeline.
    Json,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Auto,
            log_filter: "info,sqlx=warn".into(),
            metrics: true,
            metrics_addr: None,
            otlp_endpoint: None,
            trace_sample_ratio: 1.0,
            trace_queue_size: 2048,
            otlp_timeout: Duration::from_secs(3),
            service_name: "scalable-api".into(),
            server_timing: None,
        }
    }
}

impl TelemetryConfig {
    /// `api_addr` is `http.addr`, which the metrics address must not take.
    pub(super) fn validate(&self, api_addr: SocketAddr) -> anyhow::Result<()> {
        ensure!(
            (0.0..=1.0).contains(&self.trace_sample_ratio),
            "telemetry.trace_sample_ratio must be between 0.0 and 1.0"
        );
        ensure!(
            self.trace_queue_size >= 1,
            "telemetry.trace_queue_size must be at least 1"
        );
        if let Some(endpoint) = &self.otlp_endpoint {
            // The exporter is built without TLS (no second TLS stack in the binary); an https
            // URL would fail on every export, silently, so it is refused here instead.
            ensure!(
                endpoint.starts_with("http://"),
                "telemetry.otlp_endpoint must be an http:// URL (a collector on the node or a sidecar), got {endpoint}"
            );
        }
        if let Some(addr) = self.metrics_addr {
            ensure!(
                addr != api_addr || addr.port() == 0,
                "telemetry.metrics_addr must differ from http.addr (leave it unset to serve /metrics on the API's address)"
            );
        }
        Ok(())
    }
}
