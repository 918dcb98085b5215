//! Dead letters on JetStream: the max-deliveries advisories (kept in `LOOM_ADVISORIES`) are
//! taken by a durable consumer that moves exhausted messages to `LOOM_DLQ`; and reading the DLQ
//! back.

use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::stream::RawMessageErrorKind;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{JetStream, provision};
use crate::config::StreamKind;
use crate::dead_letter::{self, DeadLetter, Origin};
use crate::subject::Subjects;
use crate::{Bus, Error};

/// How long a failed advisory pull or move waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// `io.nats.jetstream.advisory.v1.max_deliver`.
#[derive(Debug, Deserialize)]
struct MaxDeliverAdvisory {
    stream: String,
    consumer: String,
    stream_seq: u64,
    deliveries: u32,
}

impl JetStream {
    /// Takes the max-deliveries advisories of the tasks and results streams from
    /// `LOOM_ADVISORIES` (where the server's advisories are kept, also those published while no
    /// control plane ran). For each, the message (still in its work-queue stream: it was never
    /// acked) is copied to the DLQ with the reason, deleted from its stream, and announced on
    /// `tx`; the advisory is acked only then, so a control plane stopped half way leaves it to
    /// the next one.
    pub(crate) async fn watch_max_deliveries(
        &self,
        bus: Bus,
        tx: mpsc::Sender<DeadLetter>,
        cancel: CancellationToken,
    ) -> Result<(), Error> {
        let consumer = provision::ensure_advisory_consumer(&self.js, &self.names).await?;
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let mut advisories = match consumer.messages().await {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot pull max-deliveries advisories; retrying");
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(RETRY) => continue,
                        }
                    }
                };
                loop {
                    let msg = tokio::select! {
                        _ = cancel.cancelled() => return,
                        m = advisories.next() => m,
                    };
                    let msg = match msg {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "advisory pull interrupted; pulling again");
                            break;
                        }
                        None => break,
                    };
                    if !this.handle_advisory(&bus, &msg, &tx).await {
                        return;
                    }
                }
            }
        });
        Ok(())
    }

    /// Moves the message one advisory names and settles the advisory. False when nobody
    /// listens for notices any more.
    async fn handle_advisory(
        &self,
        bus: &Bus,
        msg: &async_nats::jetstream::Message,
        tx: &mpsc::Sender<DeadLetter>,
    ) -> bool {
        let Ok(advisory) = serde_json::from_slice::<MaxDeliverAdvisory>(&msg.payload) else {
            tracing::warn!(subject = %msg.subject, "undecodable max-deliveries advisory; dropping it");
            let _ = msg.ack().await;
            return true;
        };
        let kind = if advisory.stream == self.names.stream(StreamKind::Tasks) {
            StreamKind::Tasks
        } else {
            StreamKind::Results
        };
        match self.move_exhausted(bus, kind, &advisory).await {
            Ok(notice) => {
                let _ = msg.ack().await;
                if let Some(notice) = notice {
                    return tx.send(notice).await.is_ok();
                }
            }
            Err(err) => {
                tracing::error!(?advisory, %err, "cannot move exhausted message to the DLQ; retrying");
                let _ = msg.ack_with(AckKind::Nak(Some(RETRY))).await;
            }
        }
        true
    }

    async fn move_exhausted(
        &self,
        bus: &Bus,
        kind: StreamKind,
        advisory: &MaxDeliverAdvisory,
    ) -> Result<Option<DeadLetter>, Error> {
        let stream = self.js.get_stream_no_info(&advisory.stream).await.map_err(|e| Error::backend("get stream", e))?;
        // Another control plane may have moved it already.
        let Ok(original) = stream.get_raw_message(advisory.stream_seq).await else { return Ok(None) };
        let subject = original.subject.to_string();
        let origin = Origin {
            kind,
            stream: &advisory.stream,
            subject: &subject,
            stream_sequence: advisory.stream_seq,
            deliveries: advisory.deliveries,
        };
        let reason = format!("max deliveries ({}) reached on consumer {}", advisory.deliveries, advisory.consumer);
        let headers = original.headers.clone();
        let msg = dead_letter::dlq_message(bus.subjects(), &origin, &headers, original.payload.clone(), &reason);
        let (dlq_headers, dlq_payload) = (msg.headers.clone(), msg.payload.clone());
        let receipt = bus.publish(msg).await?;
        stream.delete_message(advisory.stream_seq).await.map_err(|e| Error::backend("delete message", e))?;
        tracing::warn!(%subject, seq = advisory.stream_seq, %reason, "dead-lettered message");
        Ok(Some(dead_letter::parse(bus.subjects(), receipt.stream_sequence, dlq_headers, dlq_payload)))
    }

    /// The sequence, headers and body of up to `limit` messages of a stream from `from` on.
    pub(crate) async fn read_raw(
        &self,
        kind: StreamKind,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, async_nats::HeaderMap, bytes::Bytes)>, Error> {
        let stream =
            self.js.get_stream_no_info(self.names.stream(kind)).await.map_err(|e| Error::backend("get stream", e))?;
        let filter = self.names.wildcard(kind);
        let mut out = Vec::new();
        let mut seq = from.max(1);
        while out.len() < limit {
            match stream.raw_message_builder().sequence(seq).next_by_subject(filter.clone()).send().await {
                Ok(m) => {
                    seq = m.sequence + 1;
                    out.push((m.sequence, m.headers, m.payload));
                }
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(Error::backend("read stream", e)),
            }
        }
        Ok(out)
    }

    pub(crate) async fn read_dlq(
        &self,
        subjects: &Subjects,
        from: u64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, Error> {
        let raw = self.read_raw(StreamKind::Dlq, from, limit).await?;
        Ok(raw.into_iter().map(|(seq, headers, payload)| dead_letter::parse(subjects, seq, headers, payload)).collect())
    }
}
