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
            // Trace and span id of the innermost span (no extensions of it are held here). The
            // subscriber must be the global one (as `init_with` installs it): a scoped default
            // is not reachable from inside an event's dispatch.
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::Value;
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::fmt::format::JsonFields;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::JsonLines;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    /// Held by a test while it logs: a scoped default subscriber on any thread (the text test's
    /// `with_default`) takes every thread off tracing-core's global fast path, and an event's
    /// dispatch then sees no default, so the JSON test would lose its trace ids at random.
    static SUBSCRIBERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn json_lines_carry_the_trace_and_the_ids_of_their_spans() {
        let _one_at_a_time = SUBSCRIBERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        crate::propagate::set_enabled(true);
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry().with(crate::otel::layer(&provider.clone().into())).with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(JsonFields::new())
                .event_format(JsonLines)
                .with_writer(buffer.clone()),
        );
        // Global, as in a service: a scoped default is not visible from inside an event's dispatch,
        // where the trace ids are read.
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber of this test binary");
        let (trace, span_id) = {
            let task =
                tracing::info_span!("agent.task", bead_id = "demo-abc", dispatch_id = "d-1", correlation_id = "c-1");
            let _task = task.enter();
            let step = tracing::info_span!("agent.step");
            let _step = step.enter();
            tracing::info!(attempt = 2, "hello");
            tracing::warn!(bead = "other-xyz", "about another bead");
            (crate::propagate::trace_id(&step).unwrap(), crate::propagate::carrier_of(&step).traceparent.unwrap())
        };
        tracing::info!("outside any span");
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
        assert_eq!(lines.len(), 3, "{text}");
        let first = &lines[0];
        assert_eq!(first["message"], "hello");
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["attempt"], 2);
        assert_eq!(first["span"], "agent.step");
        assert_eq!(
            (&first["bead_id"], &first["dispatch_id"], &first["correlation_id"]),
            (&"demo-abc".into(), &"d-1".into(), &"c-1".into())
        );
        assert_eq!(first["trace_id"], Value::String(trace.clone()));
        assert_eq!(span_id.split('-').nth(2), first["span_id"].as_str(), "the innermost span's id");
        assert!(first["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        // An event's own field wins over its spans'.
        let second = &lines[1];
        assert_eq!((&second["bead_id"], &second["dispatch_id"]), (&"other-xyz".into(), &"d-1".into()));
        assert_eq!(second["trace_id"], Value::String(trace));
        let outside = &lines[2];
        assert!(outside.get("trace_id").is_none() && outside.get("bead_id").is_none(), "{outside}");
    }

    #[test]
    fn text_lines_leave_out_the_trace_backends_attributes() {
        let _one_at_a_time = SUBSCRIBERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(super::TextFields)
            .compact()
            .with_ansi(false)
            .with_writer(buffer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "http.request",
                otel.name = "POST /api/v1/beads",
                http.route = "/x",
                bead_id = "demo-abc"
            );
            let _entered = span.enter();
            tracing::info!(attempt = 2, reason = "slow", "task started");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("task started attempt=2 reason=\"slow\""), "{text}");
        assert!(text.contains("bead_id=\"demo-abc\""), "{text}");
        assert!(!text.contains("otel.") && !text.contains("http.route"), "{text}");
    }
}

/// Text log fields for people: `name=value` separated by spaces, the message bare, without the
/// span attributes meant for the trace backend (`otel.*`, `http.*`, `rpc.*`, `messaging.*`) —
/// a line inside a traced request still names its bead and dispatch.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = TextVisitor { writer, first: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct TextVisitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl TextVisitor<'_> {
    fn write(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        let name = field.name();
        let hidden = ["otel.", "http.", "rpc.", "messaging.", "log."].iter().any(|p| name.starts_with(p));
        if self.result.is_err() || hidden {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = if name == "message" {
            write!(self.writer, "{sep}{value}")
        } else {
            write!(self.writer, "{sep}{name}={value}")
        };
    }
}

impl Visit for TextVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, format_args!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write(field, format_args!("{value}"));
        } else {
            self.write(field, format_args!("{value:?}"));
        }
    }
}
