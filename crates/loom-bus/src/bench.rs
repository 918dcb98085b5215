//! `loom bench bus`: publish and consume N messages of 256 B through loom-bus and through raw
//! async-nats, on the same server in the same run, and compare. Both sides put the same bytes
//! on the wire (a 256 B task body with a unique `Nats-Msg-Id`, since dedupe is part of the
//! contract and costs the server the same), use a work-queue file stream, the same window of
//! unawaited publish acks, one durable pull consumer with the same batch, and fire-and-forget
//! acks. Each side uses its own scratch streams, deleted afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream};
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use loom_domain::{BeadId, DispatchId, ProjectId};

use crate::{Bus, BusConfig, ConsumeOptions, Error, TaskData, TaskKind, TaskMessage, TaskMetadata, TraceContext};

/// Both sides pull this many messages per request and keep this many publish acks in flight.
const RAW_PULL_BATCH: usize = 1024;
const RAW_PUBLISH_WINDOW: usize = 512;

/// Called as `(phase, done, total)`; phases are `raw` and `loom`.
pub type Progress = Box<ProgressFn>;

/// The progress callback's signature.
pub type ProgressFn = dyn Fn(&str, u64, u64) + Send + Sync;

/// What to run.
pub struct BenchOptions {
    pub url: String,
    /// Messages per pass (default 100,000; each side runs two passes).
    pub messages: u64,
    /// Body size in bytes (default 256).
    pub payload_size: usize,
    pub progress: Option<Progress>,
}

impl std::fmt::Debug for BenchOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchOptions")
            .field("url", &self.url)
            .field("messages", &self.messages)
            .field("payload_size", &self.payload_size)
            .finish_non_exhaustive()
    }
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions { url: BusConfig::default().url, messages: 100_000, payload_size: 256, progress: None }
    }
}

/// The result, printed by `loom bench bus --json`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BenchReport {
    /// Publish + consume throughput of raw async-nats.
    pub raw_msgs_per_s: f64,
    /// The same through loom-bus (typed messages, headers, decode, delivery handles).
    pub loom_msgs_per_s: f64,
    /// `loom_msgs_per_s / raw_msgs_per_s` (target ≥ 0.8).
    pub ratio: f64,
    /// Publish-to-receive latency through loom-bus, median, in microseconds.
    pub p50_us: u64,
    /// … and 99th percentile.
    pub p99_us: u64,
}

/// Runs both sides and returns the comparison.
pub async fn run(opts: BenchOptions) -> Result<BenchReport, Error> {
    let progress: Arc<ProgressFn> = match opts.progress {
        Some(p) => Arc::from(p),
        None => Arc::new(|_: &str, _: u64, _: u64| {}),
    };
    let namespace = format!("bench{:08x}", rand::random::<u32>());
    let config = BusConfig {
        url: opts.url.clone(),
        namespace: Some(namespace.clone()),
        pull_batch: RAW_PULL_BATCH,
        publish_window: RAW_PUBLISH_WINDOW,
        ..BusConfig::default()
    };
    let bus = Bus::connect(config).await?;
    let result = async {
        bus.provision().await?;
        let body = task_body(opts.payload_size);
        // Raw, Loom, Loom, Raw: order effects (server caches, file store growth) cancel out, and
        // each side keeps its better pass, as a noisy shared machine calls for.
        let raw1 = run_raw(&bus, &namespace, &body, opts.messages, &*progress).await?;
        let (loom1, lat1) = run_loom(&bus, &body, 1, opts.messages, &*progress).await?;
        let (loom2, lat2) = run_loom(&bus, &body, 2, opts.messages, &*progress).await?;
        let raw2 = run_raw(&bus, &namespace, &body, opts.messages, &*progress).await?;
        let raw = raw1.max(raw2);
        let (loom, mut latencies) = if loom1 >= loom2 { (loom1, lat1) } else { (loom2, lat2) };
        latencies.sort_unstable();
        let pct =
            |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)));
        Ok::<_, Error>(BenchReport {
            raw_msgs_per_s: raw,
            loom_msgs_per_s: loom,
            ratio: if raw > 0.0 { loom / raw } else { 0.0 },
            p50_us: pct(0.50).copied().unwrap_or(0),
            p99_us: pct(0.99).copied().unwrap_or(0),
        })
    }
    .await;
    let cleanup = bus.destroy().await;
    let report = result?;
    cleanup?;
    Ok(report)
}

/// A valid `task.assigned` body padded to `size` bytes (its timestamp is rewritten per message).
fn task_body(size: usize) -> TaskMessage {
    let mut msg = TaskMessage {
        kind: TaskKind::Assigned,
        project_id: ProjectId::parse("bench").expect("valid id"),
        bead_id: BeadId::parse("bench-1").expect("valid id"),
        assigned_to: String::new(),
        task_data: TaskData::default(),
        correlation_id: String::new(),
        timestamp: Utc::now(),
        metadata: TaskMetadata {
            dispatch_id: DispatchId::parse("d0000000000").expect("valid id"),
            attempt: 1,
            role: None,
            executor: String::new(),
        },
    };
    let len = serde_json::to_vec(&msg).map(|v| v.len()).unwrap_or(size);
    msg.task_data.description = "x".repeat(size.saturating_sub(len));
    msg
}

fn rate(n: u64, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64().max(1e-9)
}

async fn run_loom(
    bus: &Bus,
    body: &TaskMessage,
    pass: u64,
    n: u64,
    progress: &ProgressFn,
) -> Result<(f64, Vec<u64>), Error> {
    let mut sub =
        bus.consume_tasks(&body.project_id, None, ConsumeOptions { max_in_flight: 1024, prefetch: true }).await?;
    let start = Instant::now();
    let publisher = {
        let (bus, body) = (bus.clone(), body.clone());
        tokio::spawn(async move {
            for chunk_start in (0..n).step_by(1024) {
                let mut batch = Vec::with_capacity(1024);
                for i in chunk_start..(chunk_start + 1024).min(n) {
                    let mut m = body.clone();
                    m.metadata.dispatch_id = DispatchId::parse(&format!("d{pass}{i:010}")).expect("valid id");
                    m.timestamp = Utc::now();
                    batch.push(bus.unsigned_task(&m, &TraceContext::default())?);
                }
                // As the control plane's publisher does: one signature per published batch.
                bus.sign_tasks(&mut batch)?;
                for r in bus.publish_batch(batch).await {
                    r?;
                }
            }
            Ok::<(), Error>(())
        })
    };
    let mut latencies = Vec::with_capacity(n as usize);
    for done in 1..=n {
        let r = tokio::time::timeout(Duration::from_secs(30), sub.next()).await.ok().flatten().ok_or(Error::Closed)?;
        latencies.push((Utc::now() - r.message.timestamp).num_microseconds().unwrap_or(0).max(0) as u64);
        r.delivery.ack_nowait().await?;
        if done % 4096 == 0 || done == n {
            progress("loom", done, n);
        }
    }
    let elapsed = start.elapsed();
    publisher.await.map_err(|e| Error::backend("bench publisher", e))??;
    Ok((rate(n, elapsed), latencies))
}

async fn run_raw(bus: &Bus, namespace: &str, body: &TaskMessage, n: u64, progress: &ProgressFn) -> Result<f64, Error> {
    let client =
        async_nats::connect(bus.config().url.as_str()).await.map_err(|e| Error::backend("bench connect", e))?;
    let js = jetstream::new(client);
    let name = format!("{}_RAW", namespace.to_ascii_uppercase());
    let subject = format!("{namespace}.raw.x");
    let result = raw_inner(&js, &name, &subject, body, n, progress).await;
    js.delete_stream(&name).await.ok();
    result
}

async fn raw_inner(
    js: &jetstream::Context,
    name: &str,
    subject: &str,
    body: &TaskMessage,
    n: u64,
    progress: &ProgressFn,
) -> Result<f64, Error> {
    let be = |op| move |e: Box<dyn std::error::Error + Send + Sync>| Error::backend(op, e);
    let stream = js
        .create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![subject.to_owned()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .map_err(|e| be("bench stream")(e.into()))?;
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("raw".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: 10_000,
            ..Default::default()
        })
        .await
        .map_err(|e| be("bench consumer")(e.into()))?;
    let payload = Bytes::from(serde_json::to_vec(body)?);
    let start = Instant::now();
    let publisher = {
        let (js, subject) = (js.clone(), subject.to_owned());
        tokio::spawn(async move {
            let mut pending = FuturesUnordered::new();
            for i in 0..n {
                if pending.len() >= RAW_PUBLISH_WINDOW {
                    pending.next().await.transpose().map_err(|e| be("bench publish")(Box::new(e)))?;
                }
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(crate::header::MSG_ID, format!("d{i:010}").as_str());
                headers.insert(crate::header::SCHEMA, crate::SCHEMA_VERSION);
                let ack = js
                    .publish_with_headers(subject.clone(), headers, payload.clone())
                    .await
                    .map_err(|e| be("bench publish")(Box::new(e)))?;
                pending.push(ack.into_future());
            }
            while let Some(r) = pending.next().await {
                r.map_err(|e| be("bench publish")(Box::new(e)))?;
            }
            Ok::<(), Error>(())
        })
    };
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(RAW_PULL_BATCH)
        .messages()
        .await
        .map_err(|e| be("bench pull")(Box::new(e)))?;
    for done in 1..=n {
        let m = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .ok()
            .flatten()
            .ok_or(Error::Closed)?
            .map_err(|e| be("bench pull")(Box::new(e)))?;
        m.ack().await.map_err(|e| be("bench ack")(e))?;
        if done % 4096 == 0 || done == n {
            progress("raw", done, n);
        }
    }
    let elapsed = start.elapsed();
    publisher.await.map_err(|e| Error::backend("bench publisher", e))??;
    Ok(rate(n, elapsed))
}
