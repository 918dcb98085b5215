//! JSON log lines that join up with traces and with each other: besides the time, level, target,
//! message and the event's own fields, each line carries `trace_id` and `span_id` (while trace
//! export is on) and the `correlation_id`, `bead_id` and `dispatch_id` of the spans it happened
//! in (or of its own fields: `bead` and `dispatch` count as `bead_id` and `dispatch_id`).

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The span fields lifted to the top of every line logged inside the span.
const JOINED: [&str; 3] = ["correlation_id", "bead_id", "dispatch_id"];

/// The JSON event format (one object per line).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("timestamp".into(), Value::String(chrono_now()));
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_owned()));
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        let mut fields = fields.0;
        if let Some(message) = fields.remove("message") {
            line.insert("message".into(), message);
        }
        for (short, long) in [("bead", "bead_id"), ("dispatch", "dispatch_id")] {
            if let Some(v) = fields.get(short).cloned()
                && !fields.contains_key(long)
            {
                fields.insert(long.into(), v);
            }
        }
        if let Some(current) = ctx.lookup_current() {
            line.insert("span".into(), Value::String(current.name().to_owned()));
            // Trace and span id of the innermost span (no extensions of it are held here).
            if crate::propagate::enabled() {
                let cx =
                    tracing::dispatcher::get_default(|d| tracing_opentelemetry::get_otel_context(&current.id(), d));
                if let Some(cx) = cx {
                    use opentelemetry::trace::TraceContextExt as _;
                    let sc = cx.span().span_context().clone();
                    if sc.is_valid() {
                        line.insert("trace_id".into(), Value::String(sc.trace_id().to_string()));
                        line.insert("span_id".into(), Value::String(sc.span_id().to_string()));
                    }
                }
            }
        }
        if let Some(scope) = ctx.event_scope() {
            // Innermost first: the nearest span's value wins.
            for span in scope {
                let ext = span.extensions();
                if let Some(formatted) = ext.get::<FormattedFields<JsonFields>>()
                    && let Ok(Value::Object(span_fields)) = serde_json::from_str::<Value>(formatted.as_str())
                {
                    for key in JOINED {
                        if !line.contains_key(key)
                            && !fields.contains_key(key)
                            && let Some(v) = span_fields.get(key)
                        {
                            line.insert(key.into(), v.clone());
                        }
                    }
                }
            }
        }
        for (k, v) in fields {
            line.entry(k).or_insert(v);
        }
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

fn chrono_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// An event's fields as JSON values.
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::String(value.to_owned()));
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
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), Value::String(value.to_string()));
    }
}
