//! The JetStream backend (async-nats): publishing with a bounded ack window, resilient pull
//! subscribers on durable consumers, health. Provisioning, dead letters and the registry bucket
//! live in the submodules.

mod dlq;
mod kv;
mod provision;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::pin::Pin;

use async_nats::jetstream::consumer::pull::{self, MessagesErrorKind};
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, Context};
use async_nats::{Client, ConnectOptions};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::backend::{Acker, ConsumerSpec, RawDelivery};
use crate::config::{BusConfig, Names};
use crate::envelope::{Outgoing, Receipt};
use crate::health::{ConsumerAhead, ConsumerLag, Health};

/// Most publish acks this process awaits at once, below async-nats' own 5,000 limit so that
/// its semaphore never blocks a task that holds unawaited ack futures.
const MAX_INFLIGHT_ACKS: usize = 4096;
/// Idle heartbeat asked of the server on pull requests; two missed ones restart the pull.
const PULL_HEARTBEAT: Duration = Duration::from_secs(5);
const PULL_EXPIRES: Duration = Duration::from_secs(30);

/// How long a health check waits for each stream to answer.
const STREAM_CHECK: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub(crate) struct JetStream {
    client: Client,
    js: Context,
    names: Names,
    /// Permits for unawaited publish acks, shared by every publisher of this process.
    inflight: Arc<Semaphore>,
    /// (stream, consumer) pairs this bus bound to, for [`Health`].
    bound: Arc<Mutex<BTreeSet<(String, String)>>>,
    kv: Arc<OnceCell<async_nats::jetstream::kv::Store>>,
    agent_ttl: Duration,
}

impl JetStream {
    pub(crate) async fn connect(config: &BusConfig, names: Names) -> Result<Self, Error> {
        let name = format!("{}-{}", config.client_name, crate::instance_id());
        let options = ConnectOptions::new()
            .name(name)
            .subscription_capacity(64 * 1024)
            .client_capacity(8 * 1024)
            .ping_interval(Duration::from_secs(10))
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(10)))
            .custom_inbox_prefix(&config.inbox_prefix);
        let options = config.tls.apply(config.credentials.apply(options).await?)?;
        let client = options
            .connect(config.url.as_str())
            .await
            .map_err(|e| Error::Connect { url: config.url.clone(), reason: e.to_string() })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(10))
            .max_ack_inflight(5_000)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Ok(JetStream {
            client,
            js,
            names,
            inflight: Arc::new(Semaphore::new(MAX_INFLIGHT_ACKS)),
            bound: Arc::default(),
            kv: Arc::new(OnceCell::new()),
            agent_ttl: config.agent_ttl,
        })
    }

    /// The underlying client (tests and the benchmark use it to compare with raw async-nats).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) async fn publish(&self, msgs: Vec<Outgoing>, window: usize) -> Vec<Result<Receipt, Error>> {
        let window = window.clamp(1, MAX_INFLIGHT_ACKS);
        let mut results: Vec<Option<Result<Receipt, Error>>> = Vec::with_capacity(msgs.len());
        results.resize_with(msgs.len(), || None);
        let mut pending = FuturesUnordered::new();
        for (i, msg) in msgs.into_iter().enumerate() {
            if pending.len() >= window
                && let Some((j, r)) = pending.next().await
            {
                results[j] = Some(r);
            }
            // Never wait for a permit while holding unawaited acks of our own: drain one first.
            let permit = loop {
                match self.inflight.clone().try_acquire_owned() {
                    Ok(p) => break p,
                    Err(_) if !pending.is_empty() => {
                        if let Some((j, r)) = pending.next().await {
                            results[j] = Some(r);
                        }
                    }
                    Err(_) => match self.inflight.clone().acquire_owned().await {
                        Ok(p) => break p,
                        Err(_) => unreachable!("the semaphore is never closed"),
                    },
                }
            };
            let subject = msg.subject;
            let publish = PublishMessage::build().payload(msg.payload).headers(msg.headers);
            match self.js.send_publish(subject.clone(), publish).await {
                Ok(ack) => pending.push(await_ack(i, subject, ack, permit)),
                Err(e) => results[i] = Some(Err(Error::Publish { subject, reason: e.to_string() })),
            }
        }
        while let Some((j, r)) = pending.next().await {
            results[j] = Some(r);
        }
        results.into_iter().map(|r| r.unwrap_or(Err(Error::Closed))).collect()
    }

    pub(crate) async fn subscribe(
        &self,
        config: &BusConfig,
        spec: ConsumerSpec,
        permits: Arc<Semaphore>,
        cancel: CancellationToken,
    ) -> Result<Puller, Error> {
        let stream = self.names.stream(spec.kind);
        provision::ensure_consumer(&self.js, &stream, &spec, config).await?;
        self.bound.lock().unwrap_or_else(|p| p.into_inner()).insert((stream.clone(), spec.durable.clone()));
        let batch = spec.max_in_flight.min(config.pull_batch).max(1);
        Ok(Puller {
            js: self.clone(),
            config: config.clone(),
            stream,
            spec,
            batch,
            permits,
            cancel,
            messages: None,
            exact: ExactPulls::default(),
            retry: Duration::from_millis(100),
        })
    }

    async fn open_pull(
        &self,
        config: &BusConfig,
        stream: &str,
        spec: &ConsumerSpec,
        batch: usize,
    ) -> Result<pull::Stream, Error> {
        let consumer = provision::ensure_consumer(&self.js, stream, spec, config).await?;
        consumer
            .stream()
            .max_messages_per_batch(batch)
            .heartbeat(PULL_HEARTBEAT)
            .expires(PULL_EXPIRES)
            .messages()
            .await
            .map_err(|e| Error::backend("pull", e))
    }

    pub(crate) async fn health(&self) -> Health {
        let connected = self.client.connection_state() == async_nats::connection::State::Connected;
        // Every stream, not only one: nats-server 2.9 can leave a stream that failed a write on a
        // full disk unanswering (its info requests and publishes time out) while the others and
        // the JetStream API still answer. Each is asked at once, bounded by `STREAM_CHECK`.
        let unanswered: Vec<String> = if connected {
            let checks = crate::config::StreamKind::ALL.map(|kind| {
                let name = self.names.stream(kind);
                async move {
                    let answered =
                        tokio::time::timeout(STREAM_CHECK, self.js.get_stream(&name)).await.is_ok_and(|r| r.is_ok());
                    (!answered).then_some(name)
                }
            });
            futures::future::join_all(checks).await.into_iter().flatten().collect()
        } else {
            Vec::new()
        };
        let jetstream = connected && unanswered.is_empty();
        let bound: Vec<(String, String)> =
            self.bound.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        let mut consumers = Vec::new();
        if jetstream {
            for (stream, consumer) in bound {
                let Ok(s) = self.js.get_stream_no_info(&stream).await else { continue };
                if let Ok(info) = s.consumer_info(&consumer).await {
                    consumers.push(ConsumerLag {
                        stream,
                        consumer,
                        num_pending: info.num_pending,
                        num_ack_pending: info.num_ack_pending as u64,
                    });
                }
            }
        }
        Health { connected, jetstream, unanswered, consumers }
    }

    pub(crate) async fn consumer_lag(
        &self,
        kind: crate::config::StreamKind,
        consumer: &str,
    ) -> Result<ConsumerLag, Error> {
        let stream = self.names.stream(kind);
        let s = self.js.get_stream_no_info(&stream).await.map_err(|e| Error::backend("consumer info", e))?;
        let info = s.consumer_info(consumer).await.map_err(|e| Error::backend("consumer info", e))?;
        Ok(ConsumerLag {
            stream,
            consumer: consumer.to_owned(),
            num_pending: info.num_pending,
            num_ack_pending: info.num_ack_pending as u64,
        })
    }

    /// The consumers of `kind`'s stream that had delivered past its end (see
    /// [`crate::Bus::consumers_ahead`]). The consumers are read before the stream: a healthy
    /// server never shows a consumer past a stream read after it.
    pub(crate) async fn consumers_ahead(&self, kind: crate::config::StreamKind) -> Result<Vec<ConsumerAhead>, Error> {
        let name = self.names.stream(kind);
        let stream = self.js.get_stream_no_info(&name).await.map_err(|e| Error::backend("get stream", e))?;
        let mut consumers = Vec::new();
        let mut list = stream.consumers();
        while let Some(info) = list.next().await {
            let info = info.map_err(|e| Error::backend("list consumers", format!("{name}: {e}")))?;
            consumers.push((info.name, info.delivered.stream_sequence));
        }
        let after =
            self.js.get_stream(&name).await.map_err(|e| Error::backend("stream info", format!("{name}: {e}")))?;
        let stream_last = after.cached_info().state.last_sequence;
        Ok(consumers
            .into_iter()
            .filter(|(_, delivered)| *delivered > stream_last)
            .map(|(consumer, delivered)| ConsumerAhead { stream: name.clone(), consumer, delivered, stream_last })
            .collect())
    }

    /// Deletes a consumer found by [`JetStream::consumers_ahead`] (one already gone is no error).
    pub(crate) async fn reset_consumer(&self, ahead: &ConsumerAhead) -> Result<(), Error> {
        let (stream, consumer) = (&ahead.stream, &ahead.consumer);
        tracing::warn!(
            %stream, %consumer, delivered = ahead.delivered, stream_last = ahead.stream_last,
            "the consumer had delivered past the stream's end (the server lost stored messages); deleting it so that it is made again from the stream's start"
        );
        let s = self.js.get_stream_no_info(stream).await.map_err(|e| Error::backend("get stream", e))?;
        match s.delete_consumer(consumer).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("not found") => Ok(()),
            Err(e) => Err(Error::backend("delete consumer", format!("{stream}/{consumer}: {e}"))),
        }
    }

    /// How many messages `kind`'s stream holds now.
    pub(crate) async fn stream_messages(&self, kind: crate::config::StreamKind) -> Result<u64, Error> {
        let name = self.names.stream(kind);
        let mut stream = self.js.get_stream(&name).await.map_err(|e| Error::backend("stream info", e))?;
        let info = stream.info().await.map_err(|e| Error::backend("stream info", e))?;
        Ok(info.state.messages)
    }

    pub(crate) async fn provision(&self, config: &BusConfig) -> Result<(), Error> {
        provision::ensure_streams(&self.js, &self.names, config).await?;
        self.kv_store().await?;
        Ok(())
    }

    pub(crate) async fn destroy(&self) -> Result<(), Error> {
        for kind in crate::config::StreamKind::ALL {
            delete_stream(&self.js, &self.names.stream(kind)).await?;
        }
        delete_stream(&self.js, &self.names.advisories_stream()).await?;
        delete_stream(&self.js, &format!("KV_{}", self.names.bucket())).await
    }
}

/// One subscriber's pull state. It re-binds after any failure (server restart, deleted
/// consumer, missed heartbeats) and takes a permit before each message, so the subscriber never
/// holds more than `max_in_flight` deliveries.
pub(crate) struct Puller {
    js: JetStream,
    config: BusConfig,
    stream: String,
    spec: ConsumerSpec,
    batch: usize,
    permits: Arc<Semaphore>,
    cancel: CancellationToken,
    messages: Option<Pin<Box<pull::Stream>>>,
    exact: ExactPulls,
    retry: Duration,
}

/// How long one exact pull request waits on the server for messages before it is renewed.
const EXACT_EXPIRES: Duration = Duration::from_secs(10);

/// A delivery of an exact pull, with the permit its request reserved for it.
type Held = Result<(jetstream::Message, Option<OwnedSemaphorePermit>), async_nats::Error>;

/// Open exact pull requests. Each asks for as many messages as it holds permits; a permit not
/// used by the time the request ends is released with it. A permit freed while requests are
/// open gets a request of its own, so no free slot waits for an older request to expire.
#[derive(Default)]
struct ExactPulls {
    consumer: Option<async_nats::jetstream::consumer::PullConsumer>,
    open: futures::stream::SelectAll<Pin<Box<dyn futures::Stream<Item = Held> + Send>>>,
}

impl ExactPulls {
    fn hold(
        batch: pull::Batch,
        permits: Vec<OwnedSemaphorePermit>,
    ) -> Pin<Box<dyn futures::Stream<Item = Held> + Send>> {
        Box::pin(futures::stream::unfold((batch, permits), |(mut batch, mut permits)| async move {
            let item = batch.next().await?;
            let held = item.map(|m| (m, permits.pop()));
            Some((held, (batch, permits)))
        }))
    }
}

impl std::fmt::Debug for Puller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Puller").field("stream", &self.stream).field("consumer", &self.spec.durable).finish()
    }
}

impl Puller {
    /// The next delivery, or `None` once cancelled.
    pub(crate) async fn next(&mut self) -> Option<RawDelivery> {
        if self.spec.prefetch { self.next_streamed().await } else { self.next_exact().await }
    }

    /// Exact pulls: a request for exactly the free permits whenever permits are free.
    async fn next_exact(&mut self) -> Option<RawDelivery> {
        loop {
            if self.exact.consumer.is_none() {
                match provision::ensure_consumer(&self.js.js, &self.stream, &self.spec, &self.config).await {
                    Ok(c) => self.exact.consumer = Some(c),
                    Err(err) => {
                        tracing::warn!(stream = %self.stream, consumer = %self.spec.durable, %err, "cannot pull; retrying");
                        self.back_off().await?;
                        continue;
                    }
                }
            }
            let waiting = !self.exact.open.is_empty();
            tokio::select! {
                _ = self.cancel.cancelled() => return None,
                permit = self.permits.clone().acquire_owned() => {
                    let mut permits = vec![permit.ok()?];
                    while permits.len() < self.batch {
                        match self.permits.clone().try_acquire_owned() {
                            Ok(p) => permits.push(p),
                            Err(_) => break,
                        }
                    }
                    self.request(permits).await?;
                }
                item = self.exact.open.next(), if waiting => match item {
                    Some(Ok((msg, permit))) => {
                        self.retry = Duration::from_millis(100);
                        let Some(mut raw) = to_raw(&self.js.client, msg) else { continue };
                        raw.permit = permit;
                        return Some(raw);
                    }
                    Some(Err(err)) => {
                        tracing::warn!(stream = %self.stream, consumer = %self.spec.durable, %err, "pull interrupted; re-binding");
                        self.exact.consumer = None;
                    }
                    None => {}
                },
            }
        }
    }

    /// Opens one pull request for as many messages as `permits`; `None` once cancelled.
    async fn request(&mut self, permits: Vec<OwnedSemaphorePermit>) -> Option<()> {
        let consumer = self.exact.consumer.as_ref()?;
        match consumer.batch().max_messages(permits.len()).expires(EXACT_EXPIRES).messages().await {
            Ok(batch) => self.exact.open.push(ExactPulls::hold(batch, permits)),
            Err(err) => {
                tracing::warn!(stream = %self.stream, consumer = %self.spec.durable, %err, "pull request failed; retrying");
                self.exact.consumer = None;
                drop(permits);
                self.back_off().await?;
            }
        }
        Some(())
    }

    /// Waits the retry delay (doubling it up to 5 s); `None` once cancelled.
    async fn back_off(&mut self) -> Option<()> {
        tokio::select! {
            _ = self.cancel.cancelled() => return None,
            _ = tokio::time::sleep(self.retry) => {}
        }
        self.retry = (self.retry * 2).min(Duration::from_secs(5));
        Some(())
    }

    /// Streamed pulls: the server may send up to a batch ahead of the permits.
    async fn next_streamed(&mut self) -> Option<RawDelivery> {
        loop {
            let Some(messages) = self.messages.as_mut() else {
                match self.js.open_pull(&self.config, &self.stream, &self.spec, self.batch).await {
                    Ok(m) => self.messages = Some(Box::pin(m)),
                    Err(err) => {
                        tracing::warn!(stream = %self.stream, consumer = %self.spec.durable, %err, "cannot pull; retrying");
                        tokio::select! {
                            _ = self.cancel.cancelled() => return None,
                            _ = tokio::time::sleep(self.retry) => {}
                        }
                        self.retry = (self.retry * 2).min(Duration::from_secs(5));
                    }
                }
                continue;
            };
            let permit = tokio::select! {
                _ = self.cancel.cancelled() => return None,
                p = self.permits.clone().acquire_owned() => p.ok()?,
            };
            let item = tokio::select! {
                _ = self.cancel.cancelled() => return None,
                item = messages.next() => item,
            };
            match item {
                Some(Ok(msg)) => {
                    self.retry = Duration::from_millis(100);
                    let Some(mut raw) = to_raw(&self.js.client, msg) else { continue };
                    raw.permit = Some(permit);
                    return Some(raw);
                }
                Some(Err(err)) if matches!(err.kind(), MessagesErrorKind::Pull | MessagesErrorKind::Other) => {
                    tracing::debug!(stream = %self.stream, consumer = %self.spec.durable, %err, "pull hiccup");
                }
                Some(Err(err)) => {
                    tracing::warn!(stream = %self.stream, consumer = %self.spec.durable, %err, "pull interrupted; re-binding");
                    self.messages = None;
                }
                None => self.messages = None,
            }
        }
    }
}

async fn delete_stream(js: &Context, name: &str) -> Result<(), Error> {
    match js.delete_stream(name).await {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("not found") => Ok(()),
        Err(e) if e.to_string().contains("10059") => Ok(()),
        Err(e) => Err(Error::backend("delete stream", format!("{name}: {e}"))),
    }
}

async fn await_ack(
    i: usize,
    subject: String,
    ack: PublishAckFuture,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> (usize, Result<Receipt, Error>) {
    let result = ack.await;
    drop(permit);
    let result = result
        .map(|a| Receipt { stream_sequence: a.sequence, duplicate: a.duplicate })
        .map_err(|e| Error::Publish { subject, reason: e.to_string() });
    (i, result)
}

fn to_raw(client: &Client, msg: jetstream::Message) -> Option<RawDelivery> {
    let (stream_sequence, deliveries) = match msg.info() {
        Ok(info) => (info.stream_sequence, u32::try_from(info.delivered).unwrap_or(u32::MAX)),
        Err(err) => {
            tracing::warn!(subject = %msg.subject, %err, "delivery without JetStream metadata; skipped");
            return None;
        }
    };
    let m = msg.message;
    let reply = m.reply?;
    Some(RawDelivery {
        subject: m.subject.to_string(),
        headers: m.headers.unwrap_or_default(),
        payload: m.payload,
        stream_sequence,
        deliveries,
        acker: Acker::JetStream(client.clone(), reply),
        permit: None,
    })
}
