//! Log lines: readable text for a developer, one flat JSON object per line for a log
//! pipeline.
//!
//! A JSON line holds the event (`timestamp`, `level`, `target`, `message`, its fields) and
//! the fields of every span it happened in, flattened, so each line of a request carries that
//! request's `request_id`, `trace_id`, `http.route`, and a SQL call's `shard` and `role`,
//! without the reader joining lines. (tracing-subscriber's own JSON nests spans in a list,
//! which log queries cannot address by name.)
//!
//! What is never logged: request and response bodies and headers (so no password, no
//! `Authorization` token), query strings, SQL parameters. The access log names the route
//! template, not the path. Secrets in the config are `SecretString`s, which print as
//! `[REDACTED]`.
//!
//! Cost: every enabled event is formatted and written to stdout under a lock, one `write`
//! per line; at thousands of requests a second the access log is most of it. Turn it off
//! with `telemetry.log_filter = "info,scalable_api::access=off"`.

use std::fmt;

use serde_json::{Map, Value};
use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
};
use tracing_subscriber::{
    fmt::{
        FmtContext, FormatEvent, FormattedFields,
        format::{JsonFields, Writer},
    },
    registry::LookupSpan,
};

/// The JSON line format (used with [`JsonFields`] for span fields, so they can be merged).
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLines;

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Map::new();
        if let Some(scope) = ctx.event_scope() {
            let mut names = Vec::new();
            for span in scope.from_root() {
                names.push(span.name());
                let extensions = span.extensions();
                if let Some(formatted) = extensions.get::<FormattedFields<JsonFields>>()
                    && let Ok(Value::Object(span_fields)) = serde_json::from_str::<Value>(formatted)
                {
                    // `otel.*` fields steer the exported span (its name, kind); noise here.
                    fields.extend(
                        span_fields
                            .into_iter()
                            .filter(|(k, _)| !k.starts_with("otel.")),
                    );
                }
            }
            fields.insert("spans".into(), names.join(":").into());
        }
        event.record(&mut JsonVisitor(&mut fields));
        let message = fields.remove("message").unwrap_or(Value::Null);
        // The fixed keys first, by hand (a JSON map would sort them among the fields), then
        // the fields object without its opening brace.
        let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let rest = Value::Object(fields).to_string();
        let rest = rest.strip_prefix('{').unwrap_or("}");
        let comma = if rest == "}" { "" } else { "," };
        writeln!(
            writer,
            "{{\"timestamp\":{},\"level\":{},\"target\":{},\"message\":{message}{comma}{rest}",
            Value::from(timestamp),
            Value::from(meta.level().as_str()),
            Value::from(meta.target()),
        )
    }
}

/// Collects an event's fields into the line, typed where JSON has the type.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}
