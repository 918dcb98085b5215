//! Dead letters: messages moved to `LOOM_DLQ` with the reason, and the notices the control
//! plane receives about them (to block the bead).

use async_nats::HeaderMap;
use bytes::Bytes;
use loom_domain::{BeadId, DispatchId, ProjectId};

use crate::config::StreamKind;
use crate::envelope::{Headers, Outgoing, header};
use crate::subject::Subjects;

/// One dead-lettered message, as read back from the DLQ or announced when it was moved there.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// Why it was dead-lettered (`malformed: …`, `max deliveries (5) reached`, a handler's reason).
    pub reason: String,
    /// The stream it came from (`LOOM_TASKS`, …).
    pub stream: String,
    /// The subject it was published on.
    pub subject: String,
    /// Its sequence in the stream it came from.
    pub stream_sequence: u64,
    /// How many times it had been delivered.
    pub deliveries: u32,
    /// Its sequence in the DLQ stream (0 when unknown).
    pub dlq_sequence: u64,
    /// Read from the subject or body when they carry one.
    pub project_id: Option<ProjectId>,
    /// Read from the body when it is a task or result.
    pub bead_id: Option<BeadId>,
    /// Read from the body's `metadata.dispatch_id` when present.
    pub dispatch_id: Option<DispatchId>,
    /// The original headers (plus the `Loom-Dlq-*` ones).
    pub headers: Headers,
    /// The original body, untouched.
    pub payload: Bytes,
}

/// Where a message came from, to describe it in the DLQ.
#[derive(Debug)]
pub(crate) struct Origin<'a> {
    pub(crate) kind: StreamKind,
    pub(crate) stream: &'a str,
    pub(crate) subject: &'a str,
    pub(crate) stream_sequence: u64,
    pub(crate) deliveries: u32,
}

/// Builds the DLQ copy of a message: original body and headers, plus reason headers. Its
/// `Nats-Msg-Id` is `{stream}:{seq}` so moving the same message twice stores it once.
pub(crate) fn dlq_message(
    subjects: &Subjects,
    origin: &Origin<'_>,
    headers: &HeaderMap,
    payload: Bytes,
    reason: &str,
) -> Outgoing {
    let mut out = HeaderMap::new();
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        if name.eq_ignore_ascii_case(header::MSG_ID) {
            if let Some(v) = values.last() {
                out.insert(header::DLQ_MSG_ID, v.as_str());
            }
            continue;
        }
        for v in values {
            out.append(name, v.as_str());
        }
    }
    let msg_id = format!("{}:{}", origin.stream, origin.stream_sequence);
    out.insert(header::MSG_ID, msg_id.as_str());
    // Header values cannot hold line breaks; keep the reason on one line and bounded.
    let reason: String = reason.replace(['\r', '\n'], " ").chars().take(1024).collect();
    out.insert(header::DLQ_REASON, reason.as_str());
    out.insert(header::DLQ_SUBJECT, origin.subject);
    out.insert(header::DLQ_STREAM, origin.stream);
    out.insert(header::DLQ_STREAM_SEQ, origin.stream_sequence.to_string().as_str());
    out.insert(header::DLQ_DELIVERIES, origin.deliveries.to_string().as_str());
    let project = subjects.project_of(origin.subject);
    Outgoing { subject: subjects.dlq(origin.kind, project.as_ref()), msg_id, headers: out, payload }
}

/// Reads a stored DLQ message back into a [`DeadLetter`].
pub(crate) fn parse(subjects: &Subjects, dlq_sequence: u64, headers: HeaderMap, payload: Bytes) -> DeadLetter {
    let headers = Headers(headers);
    let get = |name| headers.get(name).unwrap_or_default().to_owned();
    let subject = get(header::DLQ_SUBJECT);
    let ids = BodyIds::read(&payload);
    DeadLetter {
        reason: get(header::DLQ_REASON),
        stream: get(header::DLQ_STREAM),
        stream_sequence: get(header::DLQ_STREAM_SEQ).parse().unwrap_or(0),
        deliveries: get(header::DLQ_DELIVERIES).parse().unwrap_or(0),
        dlq_sequence,
        project_id: subjects.project_of(&subject).or(ids.project_id),
        bead_id: ids.bead_id,
        dispatch_id: ids.dispatch_id,
        subject,
        headers,
        payload,
    }
}

/// The ids a task or result body carries, read leniently (the body may be malformed).
#[derive(Debug, Default)]
struct BodyIds {
    project_id: Option<ProjectId>,
    bead_id: Option<BeadId>,
    dispatch_id: Option<DispatchId>,
}

impl BodyIds {
    fn read(payload: &[u8]) -> BodyIds {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
            return BodyIds::default();
        };
        let s = |p: &str| v.pointer(p).and_then(|x| x.as_str()).map(str::to_owned);
        BodyIds {
            project_id: s("/project_id").and_then(|x| ProjectId::parse(&x).ok()),
            bead_id: s("/bead_id").and_then(|x| BeadId::parse(&x).ok()),
            dispatch_id: s("/metadata/dispatch_id").and_then(|x| DispatchId::parse(&x).ok()),
        }
    }
}
