//! What travels besides the body: headers, trace context, and outgoing messages ready to publish.

use async_nats::HeaderMap;
use bytes::Bytes;

/// Header names Loom sets and reads.
pub mod header {
    /// The dedupe key: `{dispatch_id}` for tasks, `{dispatch_id}:result` for results, the event
    /// id for events.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C trace state.
    pub const TRACESTATE: &str = "tracestate";
    pub const CORRELATION_ID: &str = "Loom-Correlation-Id";
    /// The body schema version; always `1` for now.
    pub const SCHEMA: &str = "Loom-Schema";
    /// The id of the key that signed a task (see [`crate::SigningKey`]).
    pub const TASK_KEY: &str = "Loom-Task-Key";
    /// The task's Ed25519 signature, base64url without padding.
    pub const TASK_SIGNATURE: &str = "Loom-Task-Signature";
    /// A batch-signed task's place in its batch: `{index}.{n}.{siblings}` (see
    /// [`crate::SigningKey::sign_batch`]); absent or empty when the signature is the task's own.
    pub const TASK_PROOF: &str = "Loom-Task-Proof";
    /// Why a message was dead-lettered.
    pub const DLQ_REASON: &str = "Loom-Dlq-Reason";
    /// The subject the dead-lettered message was published on.
    pub const DLQ_SUBJECT: &str = "Loom-Dlq-Subject";
    /// The stream it came from (`LOOM_TASKS`, …).
    pub const DLQ_STREAM: &str = "Loom-Dlq-Stream";
    /// Its sequence in that stream.
    pub const DLQ_STREAM_SEQ: &str = "Loom-Dlq-Stream-Seq";
    /// How many times it had been delivered.
    pub const DLQ_DELIVERIES: &str = "Loom-Dlq-Deliveries";
    /// Its original `Nats-Msg-Id`.
    pub const DLQ_MSG_ID: &str = "Loom-Dlq-Msg-Id";
}

/// The schema version written in `Loom-Schema`.
pub const SCHEMA_VERSION: &str = "1";

/// W3C trace context to propagate with a message (both optional).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// Message headers, read-only view.
#[derive(Clone, Debug, Default)]
pub struct Headers(pub(crate) HeaderMap);

impl Headers {
    /// The last value of a header, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get_last(name).map(|v| v.as_str())
    }

    /// `traceparent` and `tracestate`.
    pub fn trace(&self) -> TraceContext {
        TraceContext {
            traceparent: self.get(header::TRACEPARENT).map(str::to_owned),
            tracestate: self.get(header::TRACESTATE).map(str::to_owned),
        }
    }
}

/// A message ready to publish: subject, headers (with `Nats-Msg-Id`) and JSON body. Build one
/// with [`crate::Bus::task`], [`crate::Bus::result`] or [`crate::Bus::event`].
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub(crate) subject: String,
    pub(crate) msg_id: String,
    pub(crate) headers: HeaderMap,
    pub(crate) payload: Bytes,
}

impl Outgoing {
    pub(crate) fn new(
        subject: String,
        msg_id: String,
        correlation_id: &str,
        trace: &TraceContext,
        payload: Bytes,
    ) -> Outgoing {
        let mut headers = HeaderMap::new();
        headers.insert(header::MSG_ID, msg_id.as_str());
        headers.insert(header::SCHEMA, SCHEMA_VERSION);
        if !correlation_id.is_empty() {
            headers.insert(header::CORRELATION_ID, correlation_id);
        }
        // No context given: the current span's (while trace export is on), so every message a
        // traced operation publishes continues its trace.
        let current;
        let trace = if trace.traceparent.is_none() && loom_telemetry::propagate::enabled() {
            let c = loom_telemetry::propagate::current();
            current = TraceContext { traceparent: c.traceparent, tracestate: c.tracestate };
            &current
        } else {
            trace
        };
        if let Some(tp) = &trace.traceparent {
            headers.insert(header::TRACEPARENT, tp.as_str());
        }
        if let Some(ts) = &trace.tracestate {
            headers.insert(header::TRACESTATE, ts.as_str());
        }
        Outgoing { subject, msg_id, headers, payload }
    }

    /// A message with an arbitrary body, for tools and fault tests (malformed input, foreign
    /// publishers). Services use [`crate::Bus::task`] and friends.
    pub fn raw(subject: impl Into<String>, msg_id: impl Into<String>, payload: impl Into<Bytes>) -> Outgoing {
        let msg_id = msg_id.into();
        Outgoing::new(subject.into(), msg_id, "", &TraceContext::default(), payload.into())
    }

    /// The same message with one more header (tools and tests: a foreign publisher's headers).
    pub fn with_header(mut self, name: &str, value: &str) -> Outgoing {
        self.headers.insert(name, value);
        self
    }

    /// The subject it will be published on.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Its dedupe key.
    pub fn msg_id(&self) -> &str {
        &self.msg_id
    }

    /// The headers it will carry.
    pub fn headers(&self) -> Headers {
        Headers(self.headers.clone())
    }

    /// The encoded body.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }
}

/// The bus's acknowledgement of one publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// Position in the stream (for a duplicate: the original's position).
    pub stream_sequence: u64,
    /// The `Nats-Msg-Id` was already seen within the dedupe window; nothing new was stored.
    pub duplicate: bool,
}
