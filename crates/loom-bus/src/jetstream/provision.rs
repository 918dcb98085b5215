//! Idempotent provisioning: create what is missing, verify what exists, never change or delete
//! an existing stream, consumer or bucket. Only the settings Loom sets are compared, so fields a
//! server version does not echo back (2.9 lacks several) are never a false mismatch.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{Context, ErrorCode, kv};

use crate::Error;
use crate::backend::ConsumerSpec;
use crate::config::{BusConfig, Names, StreamKind};

const DAY: Duration = Duration::from_secs(24 * 3600);
const MAX_TASK_MSG: i32 = 1024 * 1024;
/// Most unacknowledged deliveries per consumer, over all its subscribers.
const MAX_ACK_PENDING: i64 = 10_000;

/// The stream configuration DESIGN.md §3 prescribes for `kind`.
pub(super) fn stream_config(names: &Names, kind: StreamKind, config: &BusConfig) -> stream::Config {
    let base = stream::Config {
        name: names.stream(kind),
        subjects: vec![names.wildcard(kind)],
        storage: StorageType::File,
        duplicate_window: config.duplicate_window,
        ..Default::default()
    };
    match kind {
        StreamKind::Tasks => stream::Config {
            retention: RetentionPolicy::WorkQueue,
            discard: DiscardPolicy::New,
            max_message_size: MAX_TASK_MSG,
            ..base
        },
        StreamKind::Results => stream::Config { retention: RetentionPolicy::WorkQueue, ..base },
        StreamKind::Events => {
            stream::Config { retention: RetentionPolicy::Limits, max_age: 7 * DAY, max_bytes: 1 << 30, ..base }
        }
        StreamKind::Dlq => stream::Config { retention: RetentionPolicy::Limits, max_age: 30 * DAY, ..base },
    }
}

/// The subject of the max-deliveries advisories of the stream `stream`, for every consumer.
pub(super) fn max_deliveries_subject(stream: &str) -> String {
    format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.*")
}

/// `LOOM_ADVISORIES`: keeps the max-deliveries advisories of the tasks and results streams
/// (a work queue: one control plane handles each). The server publishes an advisory once, to
/// whoever listens at that moment; captured here, one published while no control plane ran is
/// handled when one starts.
pub(super) fn advisory_stream_config(names: &Names, config: &BusConfig) -> stream::Config {
    stream::Config {
        name: names.advisories_stream(),
        subjects: [StreamKind::Tasks, StreamKind::Results]
            .into_iter()
            .map(|kind| max_deliveries_subject(&names.stream(kind)))
            .collect(),
        storage: StorageType::File,
        retention: RetentionPolicy::WorkQueue,
        max_age: 30 * DAY,
        duplicate_window: config.duplicate_window,
        ..Default::default()
    }
}

pub(super) async fn ensure_streams(js: &Context, names: &Names, config: &BusConfig) -> Result<(), Error> {
    for kind in StreamKind::ALL {
        ensure_stream(js, stream_config(names, kind, config)).await?;
    }
    ensure_stream(js, advisory_stream_config(names, config)).await
}

/// The durable consumer through which control planes take captured advisories.
pub(super) async fn ensure_advisory_consumer(js: &Context, names: &Names) -> Result<PullConsumer, Error> {
    let stream_name = names.advisories_stream();
    let stream = js
        .get_stream_no_info(&stream_name)
        .await
        .map_err(|e| Error::backend("get stream", format!("{stream_name}: {e}")))?;
    match stream.get_consumer(ADVISORY_CONSUMER).await {
        Ok(c) => Ok(c),
        Err(e) if e.to_string().contains("consumer not found") => stream
            .create_consumer(pull::Config {
                durable_name: Some(ADVISORY_CONSUMER.to_owned()),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::backend("create consumer", format!("{stream_name}/{ADVISORY_CONSUMER}: {e}"))),
        Err(e) => Err(Error::backend("get consumer", format!("{stream_name}/{ADVISORY_CONSUMER}: {e}"))),
    }
}

const ADVISORY_CONSUMER: &str = "control-plane-advisories";

/// Stream creations retried when the server fails to make the stream's directory: nats-server
/// 2.9 removes an account's `streams` directory when its last file stream is deleted, and a
/// creation racing that removal fails with "could not create storage directory"; a retry finds
/// the directory made again.
const CREATE_ATTEMPTS: u32 = 5;

async fn create_stream(
    js: &Context,
    want: &stream::Config,
) -> Result<(), async_nats::jetstream::context::CreateStreamError> {
    let mut attempt = 1;
    loop {
        match js.create_stream(want.clone()).await {
            Err(e) if attempt < CREATE_ATTEMPTS && e.to_string().contains("error creating store for stream") => {
                tracing::warn!(stream = %want.name, attempt, error = %e, "stream creation raced the server's directory cleanup; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(50 * u64::from(attempt))).await;
                attempt += 1;
            }
            other => return other.map(|_| ()),
        }
    }
}

async fn ensure_stream(js: &Context, want: stream::Config) -> Result<(), Error> {
    let name = want.name.clone();
    let have = match js.get_stream(&name).await {
        Ok(mut s) => s.info().await.map_err(|e| Error::backend("stream info", e))?.config.clone(),
        Err(e) if is_code(&e, ErrorCode::STREAM_NOT_FOUND) => match create_stream(js, &want).await {
            Ok(_) => {
                tracing::info!(stream = %name, "created stream");
                return Ok(());
            }
            // Someone else created it meanwhile: verify theirs like any existing one.
            Err(e) if e.to_string().contains("already in use") => {
                js.get_stream(&name).await.map_err(|e| Error::backend("get stream", e))?.cached_info().config.clone()
            }
            Err(e) => return Err(Error::backend("create stream", format!("{name}: {e}"))),
        },
        Err(e) => return Err(Error::backend("get stream", format!("{name}: {e}"))),
    };
    check("stream", &name, stream_differences(&want, &have))
}

fn stream_differences(want: &stream::Config, have: &stream::Config) -> Vec<String> {
    let mut d = Differences::default();
    let mut w_subjects = want.subjects.clone();
    let mut h_subjects = have.subjects.clone();
    w_subjects.sort();
    h_subjects.sort();
    d.cmp("subjects", &w_subjects, &h_subjects);
    d.cmp("retention", &want.retention, &have.retention);
    d.cmp("storage", &want.storage, &have.storage);
    d.cmp("discard", &want.discard, &have.discard);
    d.cmp("max_age", &want.max_age, &have.max_age);
    if want.max_bytes != 0 {
        d.cmp("max_bytes", &want.max_bytes, &have.max_bytes);
    }
    if want.max_message_size != 0 {
        d.cmp("max_msg_size", &want.max_message_size, &have.max_message_size);
    }
    if !have.duplicate_window.is_zero() {
        d.cmp("duplicate_window", &want.duplicate_window, &have.duplicate_window);
    }
    d.0
}

/// The durable pull consumer configuration for `spec`.
pub(super) fn consumer_config(spec: &ConsumerSpec, config: &BusConfig) -> pull::Config {
    // No server-side BackOff: the server would replace AckWait by its first entry (1 s), and a
    // running task would be redelivered every second. Backoff is applied by naks instead.
    pull::Config {
        durable_name: Some(spec.durable.clone()),
        filter_subject: spec.filter.clone(),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        max_deliver: i64::from(config.max_deliver),
        max_ack_pending: MAX_ACK_PENDING,
        ..Default::default()
    }
}

pub(crate) async fn ensure_consumer(
    js: &Context,
    stream: &str,
    spec: &ConsumerSpec,
    config: &BusConfig,
) -> Result<PullConsumer, Error> {
    let want = consumer_config(spec, config);
    let s = js.get_stream_no_info(stream).await.map_err(|e| Error::backend("get stream", format!("{stream}: {e}")))?;
    let mut consumer: PullConsumer = match s.get_consumer(&spec.durable).await {
        Ok(c) => c,
        Err(e) if e.to_string().contains("consumer not found") => s
            .create_consumer(want.clone())
            .await
            .map_err(|e| Error::backend("create consumer", format!("{stream}/{}: {e}", spec.durable)))?,
        Err(e) => return Err(Error::backend("get consumer", format!("{stream}/{}: {e}", spec.durable))),
    };
    let have = consumer.info().await.map_err(|e| Error::backend("consumer info", e))?.config.clone();
    let mut d = Differences::default();
    d.cmp("filter_subject", &want.filter_subject, &have.filter_subject);
    d.cmp("ack_policy", &want.ack_policy, &have.ack_policy);
    d.cmp("ack_wait", &want.ack_wait, &have.ack_wait);
    d.cmp("max_deliver", &want.max_deliver, &have.max_deliver);
    d.cmp("deliver_policy", &want.deliver_policy, &have.deliver_policy);
    d.cmp("backoff", &want.backoff, &have.backoff);
    d.cmp("max_ack_pending", &want.max_ack_pending, &have.max_ack_pending);
    d.cmp("push (deliver_subject)", &None::<String>, &have.deliver_subject);
    check("consumer", &format!("{stream}/{}", spec.durable), d.0)?;
    Ok(consumer)
}

/// Creates or verifies the agent registry bucket.
pub(super) async fn ensure_bucket(js: &Context, bucket: &str, ttl: Duration) -> Result<kv::Store, Error> {
    let stream_name = format!("KV_{bucket}");
    match js.get_stream(&stream_name).await {
        Ok(mut s) => {
            let have = s.info().await.map_err(|e| Error::backend("bucket info", e))?.config.clone();
            let mut d = Differences::default();
            d.cmp("ttl (max_age)", &ttl, &have.max_age);
            d.cmp("history", &1i64, &have.max_messages_per_subject);
            check("bucket", bucket, d.0)?;
        }
        Err(e) if is_code(&e, ErrorCode::STREAM_NOT_FOUND) => {
            // The bucket's stream is created by hand with the KV conventions: async-nats'
            // `create_key_value` cannot parse nats-server 2.9's reply.
            let cfg = stream::Config {
                name: stream_name.clone(),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: 1,
                max_age: ttl,
                duplicate_window: ttl.min(Duration::from_secs(120)),
                discard: DiscardPolicy::New,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                storage: StorageType::File,
                num_replicas: 1,
                ..Default::default()
            };
            match create_stream(js, &cfg).await {
                Ok(()) => tracing::info!(%bucket, "created agent registry bucket"),
                Err(e) if e.to_string().contains("already in use") => {}
                Err(e) => return Err(Error::backend("create bucket", format!("{bucket}: {e}"))),
            }
        }
        Err(e) => return Err(Error::backend("get bucket", format!("{bucket}: {e}"))),
    }
    js.get_key_value(bucket).await.map_err(|e| Error::backend("open bucket", format!("{bucket}: {e}")))
}

fn is_code(e: &async_nats::jetstream::context::GetStreamError, code: ErrorCode) -> bool {
    matches!(e.kind(), async_nats::jetstream::context::GetStreamErrorKind::JetStream(j) if j.error_code() == code)
}

fn check(kind: &'static str, name: &str, differences: Vec<String>) -> Result<(), Error> {
    if differences.is_empty() {
        Ok(())
    } else {
        Err(Error::Mismatch { kind, name: name.to_owned(), differences: differences.join("; ") })
    }
}

#[derive(Default)]
struct Differences(Vec<String>);

impl Differences {
    fn cmp<T: PartialEq + std::fmt::Debug>(&mut self, field: &str, want: &T, have: &T) {
        if want != have {
            self.0.push(format!("{field}: have {have:?}, want {want:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_configs_do_not_differ() {
        let names = Names::new(None).unwrap();
        let cfg = stream_config(&names, StreamKind::Tasks, &BusConfig::default());
        assert!(stream_differences(&cfg, &cfg).is_empty());
    }

    #[test]
    fn a_changed_retention_is_reported() {
        let names = Names::new(None).unwrap();
        let want = stream_config(&names, StreamKind::Tasks, &BusConfig::default());
        let have = stream::Config { retention: RetentionPolicy::Limits, ..want.clone() };
        let d = stream_differences(&want, &have);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].starts_with("retention: have Limits, want WorkQueue"), "{d:?}");
    }
}
