//! Dead letters on JetStream: the max-deliveries advisory listener that moves exhausted
//! messages to `LOOM_DLQ`, and reading the DLQ back.

use async_nats::jetstream::stream::RawMessageErrorKind;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::JetStream;
use crate::config::StreamKind;
use crate::dead_letter::{self, DeadLetter, Origin};
use crate::subject::Subjects;
use crate::{Bus, Error};

/// `io.nats.jetstream.advisory.v1.max_deliver`.
#[derive(Debug, Deserialize)]
struct MaxDeliverAdvisory {
    stream: String,
    consumer: String,
    stream_seq: u64,
    deliveries: u32,
}

impl JetStream {
    /// Subscribes to the max-deliveries advisories of the tasks and results streams. For each,
    /// the message (still in its work-queue stream: it was never acked) is copied to the DLQ
    /// with the reason, deleted from its stream, and announced on `tx`.
    pub(crate) async fn watch_max_deliveries(
        &self,
        bus: Bus,
        tx: mpsc::Sender<DeadLetter>,
        cancel: CancellationToken,
    ) -> Result<(), Error> {
        let mut subs = Vec::new();
        for kind in [StreamKind::Tasks, StreamKind::Results] {
            let subject = format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.*", self.names.stream(kind));
            let sub = self.client.subscribe(subject).await.map_err(|e| Error::backend("subscribe advisory", e))?;
            subs.push(sub.map(move |m| (kind, m)));
        }
        let mut advisories = futures::stream::select_all(subs);
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let (kind, msg) = tokio::select! {
                    _ = cancel.cancelled() => return,
                    m = advisories.next() => match m { Some(m) => m, None => return },
                };
                let Ok(advisory) = serde_json::from_slice::<MaxDeliverAdvisory>(&msg.payload) else {
                    tracing::warn!("undecodable max-deliveries advisory");
                    continue;
                };
                match this.move_exhausted(&bus, kind, &advisory).await {
                    Ok(Some(notice)) => {
                        if tx.send(notice).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(err) => tracing::error!(?advisory, %err, "cannot move exhausted message to the DLQ"),
                }
            }
        });
        Ok(())
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
