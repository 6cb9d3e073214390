//! Traces: OpenTelemetry spans exported over OTLP/HTTP, and W3C trace context in and out.
//!
//! `tracing` spans are the single source: the request span, a span per SQL call (and per
//! cache call), all become OpenTelemetry spans through `tracing-opentelemetry` when
//! `telemetry.otlp_endpoint` is set. Without it no exporter exists and spans cost what a
//! `tracing` span costs (the log lines still carry a trace id, see [`RequestTrace`]).
//!
//! **Never blocking a request.** A finished span goes into a bounded queue
//! (`telemetry.trace_queue_size`); a background thread sends batches to the collector with a
//! timeout (`telemetry.otlp_timeout`). A collector that is slow or gone fills the queue,
//! and further spans are dropped, not waited for: tracing loses data before it loses latency.
//! Export errors are not logged (a dead collector would otherwise log on every batch).
//!
//! **Sampling.** [`OwnRatio`]: a request's span is kept at `trace_sample_ratio`, decided from
//! its trace id (the caller's, from `traceparent`, or a new one), so every service that sees
//! the same trace id at the same ratio decides alike and a trace stays whole; the spans
//! inside a request follow the request's decision. The caller's "sampled" flag is not
//! obeyed, as `ParentBased` would: `traceparent` comes from the client, and a client setting
//! the flag on every request would have every one of them exported, at any ratio (a cheap
//! way to flood the collector and the exporter's queue, which then drops other requests'
//! spans). The trace id is still the caller's, so a trace the caller records and we keep
//! joins up.

use anyhow::Context as _;
use axum::http::{HeaderMap, HeaderValue};
use opentelemetry::{
    KeyValue,
    propagation::TextMapPropagator,
    trace::{
        Link, SamplingDecision, SamplingResult, SpanContext, SpanKind, TraceContextExt, TraceId,
        TracerProvider as _,
    },
};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{
        BatchConfigBuilder, BatchSpanProcessor, IdGenerator, RandomIdGenerator, Sampler,
        SdkTracerProvider, ShouldSample,
    },
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::TelemetryConfig;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// `bytes` as lower-case hex into `out` (twice as long).
fn hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

/// The OTLP exporter and its batch processor, or `None` when no endpoint is configured.
pub(crate) fn provider(config: &TelemetryConfig) -> anyhow::Result<Option<SdkTracerProvider>> {
    let Some(endpoint) = &config.otlp_endpoint else {
        return Ok(None);
    };
    let timeout = config.otlp_timeout;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint.clone())
        .with_timeout(timeout)
        .build()
        .context("Failed to build the OTLP span exporter")?;
    let batches = BatchConfigBuilder::default()
        .with_max_queue_size(config.trace_queue_size)
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batches)
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(OwnRatio::new(config.trace_sample_ratio))
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build(),
    ))
}

/// The sampler: our ratio decides for a span with no parent or a remote one (the client's
/// `traceparent`), whatever the remote's "sampled" flag says; a span whose parent is one of
/// ours follows it. See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct OwnRatio(Sampler);

impl OwnRatio {
    pub(crate) fn new(ratio: f64) -> Self {
        Self(Sampler::TraceIdRatioBased(ratio))
    }
}

impl ShouldSample for OwnRatio {
    fn should_sample(
        &self,
        parent_context: Option<&opentelemetry::Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let local_parent = parent_context
            .filter(|cx| cx.has_active_span())
            .map(|cx| cx.span().span_context().clone())
            .filter(|parent| parent.is_valid() && !parent.is_remote());
        match local_parent {
            Some(parent) => SamplingResult {
                decision: if parent.is_sampled() {
                    SamplingDecision::RecordAndSample
                } else {
                    SamplingDecision::Drop
                },
                attributes: Vec::new(),
                trace_state: parent.trace_state().clone(),
            },
            // From the trace id alone: the same answer for the caller's trace id anywhere.
            None => {
                self.0
                    .should_sample(parent_context, trace_id, name, span_kind, attributes, links)
            }
        }
    }
}

/// The `tracing` layer that turns spans into OpenTelemetry spans for `provider`.
pub(crate) fn layer<S>(
    provider: &SdkTracerProvider,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer(env!("CARGO_PKG_NAME")))
}

/// Where a request sits in its distributed trace: the ids its log lines carry and its
/// response's `traceparent` names.
#[derive(Debug, Clone)]
pub struct RequestTrace(SpanContext);

impl RequestTrace {
    /// Joins `span` (the request's server span) to the trace its `traceparent` header names,
    /// or starts a new trace when there is none (or it is malformed, which W3C says to treat
    /// as absent).
    ///
    /// With the exporter off there is no OpenTelemetry span to ask, so the ids are made here:
    /// the caller's trace id, or a random one. Logs correlate across services either way.
    pub fn start(span: &Span, headers: &HeaderMap) -> Self {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        // Fails only when no OpenTelemetry layer is installed: handled just below.
        let _ = span.set_parent(parent.clone());
        let exported = span.context().span().span_context().clone();
        if exported.is_valid() {
            return Self(exported);
        }
        let caller = parent.span().span_context().clone();
        let ids = RandomIdGenerator::default();
        let trace_id = if caller.is_valid() {
            caller.trace_id()
        } else {
            ids.new_trace_id()
        };
        Self(SpanContext::new(
            trace_id,
            ids.new_span_id(),
            caller.trace_flags(),
            false,
            caller.trace_state().clone(),
        ))
    }

    pub fn trace_id(&self) -> TraceId {
        self.0.trace_id()
    }

    /// Writes `traceparent` (and `tracestate`, if any) naming this request's span, so a
    /// client can look its request up in Jaeger.
    ///
    /// Written by hand into a stack buffer rather than through the propagator, which formats
    /// a `String` (and an empty `tracestate`) for every response: 2.5 % of a cache hit's CPU.
    pub fn inject(&self, headers: &mut HeaderMap) {
        // `00-{trace id:32 hex}-{span id:16 hex}-{flags:2 hex}`
        let mut value = [0u8; 55];
        value[..3].copy_from_slice(b"00-");
        hex(&self.0.trace_id().to_bytes(), &mut value[3..35]);
        value[35] = b'-';
        hex(&self.0.span_id().to_bytes(), &mut value[36..52]);
        value[52] = b'-';
        hex(&[self.0.trace_flags().to_u8()], &mut value[53..55]);
        if let Ok(value) = HeaderValue::from_bytes(&value) {
            headers.insert(TRACEPARENT, value);
        }
        let state = self.0.trace_state().header();
        if !state.is_empty()
            && let Ok(value) = HeaderValue::from_str(&state)
        {
            headers.insert(TRACESTATE, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::{
        Context,
        trace::{SpanId, TraceFlags, TraceState},
    };
    use opentelemetry_http::HeaderInjector;

    use super::*;

    /// The sampler's decision for a span under `parent` (none: a new trace).
    fn decision(ratio: f64, parent: Option<SpanContext>) -> SamplingDecision {
        let trace_id = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").expect("hex");
        // Whether the parent is remote is the span context's own flag.
        let cx = parent.map(|parent| Context::new().with_remote_span_context(parent));
        OwnRatio::new(ratio)
            .should_sample(
                cx.as_ref(),
                trace_id,
                "request",
                &SpanKind::Server,
                &[],
                &[],
            )
            .decision
    }

    fn parent(flags: TraceFlags, remote: bool) -> SpanContext {
        SpanContext::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").expect("hex"),
            SpanId::from_hex("b7ad6b7169203331").expect("hex"),
            flags,
            remote,
            TraceState::default(),
        )
    }

    /// A client's `traceparent` with the sampled flag does not force recording: at ratio 0 the
    /// request is not recorded, at ratio 1 it is even when the caller did not sample.
    #[test]
    fn a_remote_parent_s_sampled_flag_does_not_override_the_ratio() {
        let sampled = parent(TraceFlags::SAMPLED, true);
        let unsampled = parent(TraceFlags::default(), true);
        assert_eq!(decision(0.0, Some(sampled)), SamplingDecision::Drop);
        assert_eq!(decision(0.0, None), SamplingDecision::Drop);
        assert_eq!(
            decision(1.0, Some(unsampled)),
            SamplingDecision::RecordAndSample
        );
        assert_eq!(decision(1.0, None), SamplingDecision::RecordAndSample);
    }

    /// A span inside a request (its parent is ours) follows the request's decision.
    #[test]
    fn a_local_parent_s_decision_is_followed() {
        let kept = parent(TraceFlags::SAMPLED, false);
        let dropped = parent(TraceFlags::default(), false);
        assert_eq!(decision(0.0, Some(kept)), SamplingDecision::RecordAndSample);
        assert_eq!(decision(1.0, Some(dropped)), SamplingDecision::Drop);
    }

    /// The trace id decides, so the caller's trace keeps its id and one service's decision
    /// is every service's at the same ratio: for a given ratio, a remote parent and no parent
    /// decide alike on the same trace id.
    #[test]
    fn the_decision_depends_on_the_trace_id_alone_for_remote_parents() {
        for ratio in [0.0, 0.3, 0.5, 0.9, 1.0] {
            for flags in [TraceFlags::SAMPLED, TraceFlags::default()] {
                assert_eq!(
                    decision(ratio, Some(parent(flags, true))),
                    decision(ratio, None),
                    "ratio {ratio}, flags {flags:?}"
                );
            }
        }
    }

    /// The hand-written `traceparent` is what the W3C propagator writes, sampled or not, and a
    /// `tracestate` is passed on only when there is one.
    #[test]
    fn inject_writes_what_the_w3c_propagator_writes() {
        let state = TraceState::from_key_value([("vendor", "x1")]).expect("a valid state");
        for (flags, state) in [
            (TraceFlags::SAMPLED, TraceState::default()),
            (TraceFlags::default(), state),
        ] {
            let context = SpanContext::new(
                TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").expect("hex"),
                SpanId::from_hex("b7ad6b7169203331").expect("hex"),
                flags,
                false,
                state,
            );
            let mut ours = HeaderMap::new();
            RequestTrace(context.clone()).inject(&mut ours);
            let mut theirs = HeaderMap::new();
            let cx = Context::new().with_remote_span_context(context);
            TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(&mut theirs));
            if theirs.get(TRACESTATE).is_some_and(|v| v.is_empty()) {
                theirs.remove(TRACESTATE);
            }
            assert_eq!(ours, theirs);
        }
    }
}
