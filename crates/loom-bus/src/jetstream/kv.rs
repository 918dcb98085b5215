//! The agent registry on the `loom-agents` key-value bucket.

use async_nats::jetstream::kv::{Operation, Store};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::JetStream;
use super::provision::ensure_bucket;
use crate::Error;
use crate::registry::KvEvent;

fn to_chrono(t: async_nats::jetstream::kv::Entry) -> DateTime<Utc> {
    let nanos = t.created.unix_timestamp_nanos();
    DateTime::from_timestamp_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
}

impl JetStream {
    pub(super) async fn kv_store(&self) -> Result<&Store, Error> {
        self.kv.get_or_try_init(|| ensure_bucket(&self.js, self.names.bucket(), self.agent_ttl)).await
    }

    pub(crate) async fn kv_put(&self, key: &str, value: Bytes) -> Result<(), Error> {
        let store = self.kv_store().await?;
        store.put(key, value).await.map(|_| ()).map_err(|e| Error::backend("registry put", e))
    }

    pub(crate) async fn kv_delete(&self, key: &str) -> Result<(), Error> {
        let store = self.kv_store().await?;
        store.delete(key).await.map_err(|e| Error::backend("registry delete", e))
    }

    pub(crate) async fn kv_entries(&self) -> Result<Vec<(Bytes, DateTime<Utc>)>, Error> {
        let store = self.kv_store().await?;
        let mut keys = store.keys().await.map_err(|e| Error::backend("registry keys", e))?;
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| Error::backend("registry keys", e))?;
            let entry = store.entry(key).await.map_err(|e| Error::backend("registry get", e))?;
            if let Some(entry) = entry.filter(|e| e.operation == Operation::Put) {
                let value = entry.value.clone();
                out.push((value, to_chrono(entry)));
            }
        }
        Ok(out)
    }

    /// Forwards every change of the bucket: first the current entries, then every put, delete
    /// and purge as the server publishes it. (async-nats' KV watch yields nothing on
    /// nats-server 2.9, so this listens to the bucket's subjects directly.) The subscription is
    /// restored by the client after a reconnect; a delete missed meanwhile still ends in
    /// "offline" through the TTL.
    pub(crate) async fn kv_watch(&self, tx: mpsc::Sender<KvEvent>, cancel: CancellationToken) -> Result<(), Error> {
        let prefix = format!("$KV.{}.", self.names.bucket());
        let mut sub =
            self.client.subscribe(format!("{prefix}>")).await.map_err(|e| Error::backend("registry watch", e))?;
        let snapshot = self.kv_entries().await?;
        tokio::spawn(async move {
            for (value, created) in snapshot {
                if tx.send(KvEvent::Put { value, created }).await.is_err() {
                    return;
                }
            }
            loop {
                let msg = tokio::select! {
                    _ = cancel.cancelled() => return,
                    m = sub.next() => match m { Some(m) => m, None => return },
                };
                let op = msg.headers.as_ref().and_then(|h| h.get_last("KV-Operation")).map(|v| v.as_str().to_owned());
                let event = match op.as_deref() {
                    Some("DEL") | Some("PURGE") => {
                        KvEvent::Removed { key: msg.subject.as_str().trim_start_matches(&prefix).to_owned() }
                    }
                    _ => KvEvent::Put { value: msg.payload, created: Utc::now() },
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        Ok(())
    }
}
