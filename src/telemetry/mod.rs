//! Observability: metrics, logs and traces, from one set of `tracing` spans and the
//! `metrics` facade.
//!
//! | signal | where it comes from | where it goes |
//! |---|---|---|
//! | metrics | [`http::observe`] (RED per route), the shard map (SQL per shard/role/op), the health monitor (replica lag), breakers, the cache and rate-limit layers | `/metrics` ([`metrics::scrape`]), Prometheus format |
//! | logs | any `tracing` event; [`http::observe`] writes one access line per request | stdout, text in dev, JSON lines in production ([`logs`]) |
//! | audit log | one line per security-relevant attempt ([`audit`]), target `scalable_api::audit` | the same output as logs, separable by target |
//! | traces | the request span, one span per SQL call and per cache call | OTLP/HTTP to a collector such as Jaeger ([`traces`]), when configured |
//! | server timing | the request's SQL calls, Redis round trips, DataLoader waits and serialisation ([`timing`]) | the `Server-Timing` header of the answer (browser devtools' Timing tab) |
//!
//! For other layers (cache, GraphQL, rate limits): emit metrics with the facade and the names
//! in [`names`]; wrap a call to a dependency in a span made by [`cache_span`] (or an
//! `info_span!` with the same shape), and it becomes a child of the request in the trace and
//! tags the log lines written inside it.
//!
//! The subscriber is built by [`subscriber`] without installing it: the binary installs it
//! process-wide ([`init`]); a test can install it for its own thread and writer.

pub mod audit;
mod debug;
pub mod http;
pub mod logs;
pub mod metrics;
pub mod names;
pub mod timing;
pub mod traces;

use std::io::IsTerminal;

use anyhow::Context;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Subscriber, level_filters::LevelFilter};
use tracing_subscriber::{
    EnvFilter, Layer, Registry,
    fmt::{self, format::JsonFields, writer::BoxMakeWriter},
    prelude::*,
};

use crate::config::{Config, LogFormat};

pub use debug::DebugTrace;
pub use timing::{Phase, ServerTiming};

/// Keeps the trace exporter alive; dropping it flushes the spans still queued (for at most
/// `telemetry.otlp_timeout`) and stops the export thread.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports every finished span now. Blocks until the collector answered or timed out:
    /// call it from a blocking thread.
    pub fn flush(&self) {
        if let Some(provider) = &self.provider {
            let _ = provider.force_flush();
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Builds the log and trace pipeline for `config`, writing logs to `writer` (stdout when
/// `None`), without installing it.
pub fn subscriber(
    config: &Config,
    writer: Option<BoxMakeWriter>,
) -> anyhow::Result<(Box<dyn Subscriber + Send + Sync>, TelemetryGuard)> {
    let telemetry = &config.telemetry;
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) => {
            EnvFilter::try_new(directives).context("RUST_LOG is not a valid filter")?
        }
        Err(_) => EnvFilter::try_new(&telemetry.log_filter)
            .context("telemetry.log_filter is not a valid filter")?,
    };
    // Whatever the level, the request span stays enabled for the log layer: it is what puts
    // the request and trace ids on a `warn` line. Its module writes no events of its own (the
    // access log has its own target), so this directive enables the span and nothing else.
    // (A directive rather than `FilterExt::or` with a `filter_fn`: combined with an
    // `EnvFilter` as a per-layer filter, that drops events at random in tracing-subscriber
    // 0.3.23.)
    let filter = filter.add_directive(
        format!("{}=info", http::SPAN_TARGET)
            .parse()
            .context("the request span's directive parses")?,
    );
    let ansi = writer.is_none() && std::io::stdout().is_terminal();
    let writer = writer.unwrap_or_else(|| BoxMakeWriter::new(std::io::stdout));
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match config.log_format() {
        LogFormat::Json => fmt::layer()
            .fmt_fields(JsonFields::new())
            .event_format(logs::JsonLines)
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
        _ => fmt::layer()
            .compact()
            .with_ansi(ansi)
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    };
    let provider = traces::provider(telemetry)?;
    let mut layers = vec![logs];
    if let Some(provider) = &provider {
        layers.push(
            traces::layer(provider)
                .with_filter(LevelFilter::INFO)
                .boxed(),
        );
    }
    let subscriber = tracing_subscriber::registry().with(layers);
    Ok((Box::new(subscriber), TelemetryGuard { provider }))
}

/// Installs the pipeline for the whole process (the binary). Keep the guard until exit.
pub fn init(config: &Config) -> anyhow::Result<TelemetryGuard> {
    let (subscriber, guard) = subscriber(config, None)?;
    // A second initialisation (embedding, tests) is not worth dying for.
    let _ = subscriber.try_init();
    Ok(guard)
}

/// The span to wrap one cache call in: a child of the request's span in the trace, and the
/// `tier` and `op` on every log line inside. Count its outcome under
/// [`names::CACHE_REQUESTS`] with the same `tier`.
///
/// ```ignore
/// let value = redis.get(&key).instrument(telemetry::cache_span("redis", "get")).await;
/// metrics::counter!(names::CACHE_REQUESTS, "tier" => "redis", "result" => "hit").increment(1);
/// ```
pub fn cache_span(tier: &'static str, op: &'static str) -> tracing::Span {
    tracing::info_span!(
        "cache",
        otel.name = format_args!("cache {op}").to_string(),
        otel.kind = "client",
        tier,
        op,
    )
}
