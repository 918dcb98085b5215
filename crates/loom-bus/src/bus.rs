//! `Bus`: the cloneable handle services hold. It builds subjects and headers, and hands
//! publishing, consuming and the registry to one of the two backends.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use loom_domain::{AgentId, ProjectId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::backend::ConsumerSpec;
use crate::config::{BusConfig, Names, StreamKind};
use crate::dead_letter::DeadLetter;
use crate::embedded::Embedded;
use crate::envelope::{Outgoing, Receipt, TraceContext};
use crate::health::{ConsumerAhead, ConsumerLag, Health};
use crate::jetstream::JetStream;
use crate::message::{EventMessage, ResultMessage, TaskMessage};
use crate::registry::{AgentRecord, AgentWatch};
use crate::subject::{RESULTS_CONSUMER, Role, Subjects, agents_consumer};
use crate::subscription::{DeadLetters, Subscription};

/// The message bus: JetStream or the embedded in-process twin, with the same semantics.
/// Cheap to clone; every clone shares one connection.
#[derive(Clone, Debug)]
pub struct Bus {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: BusConfig,
    pub(crate) subjects: Subjects,
    pub(crate) backend: Backend,
    /// Cancelled when the last handle is dropped or [`Bus::shutdown`] is called.
    pub(crate) shutdown: CancellationToken,
}

#[derive(Debug)]
pub(crate) enum Backend {
    JetStream(Box<JetStream>),
    Embedded(Embedded),
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The NATS server a bus is talking to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSummary {
    pub server_id: String,
    pub version: String,
    pub port: u16,
}

/// How a subscriber pulls.
#[derive(Clone, Copy, Debug)]
pub struct ConsumeOptions {
    /// Most deliveries this subscriber holds at once, buffered or being handled. An agent sets
    /// it to its capacity so it never sits on tasks another instance could run.
    pub max_in_flight: usize,
    /// Keep a stream of pulls open, so the server may send up to a batch of messages ahead of
    /// the subscriber taking them (throughput: the result consumer). Without it (the default)
    /// the subscriber asks the server for exactly as many messages as it has free permits, so
    /// it never holds a message it is not handling — one it would leave to reach the ack wait
    /// while another instance sits idle.
    pub prefetch: bool,
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        ConsumeOptions { max_in_flight: 1, prefetch: false }
    }
}

impl Bus {
    /// Connects to NATS JetStream at `config.url`. Does not create anything: call
    /// [`Bus::provision`] (idempotent) before publishing.
    pub async fn connect(config: BusConfig) -> Result<Bus, Error> {
        let names = config.validate()?;
        let shutdown = CancellationToken::new();
        let backend = Backend::JetStream(Box::new(JetStream::connect(&config, names.clone()).await?));
        Ok(Bus::from_parts(config, names, backend, shutdown))
    }

    /// An in-process bus with the same semantics as JetStream (durable queues, explicit ack,
    /// in-progress ack, redelivery, dead letters, dedupe, agent registry). Its state lives in
    /// memory only: it does not survive a restart of the process. Call it inside a tokio
    /// runtime (it starts the task that redelivers expired deliveries).
    pub fn embedded(config: BusConfig) -> Result<Bus, Error> {
        let names = config.validate()?;
        let shutdown = CancellationToken::new();
        let backend = Backend::Embedded(Embedded::new(&config, names.clone(), shutdown.clone()));
        Ok(Bus::from_parts(config, names, backend, shutdown))
    }

    fn from_parts(config: BusConfig, names: Names, backend: Backend, shutdown: CancellationToken) -> Bus {
        Bus { inner: Arc::new(Inner { config, subjects: Subjects::new(names), backend, shutdown }) }
    }

    /// The configuration this bus runs with.
    pub fn config(&self) -> &BusConfig {
        &self.inner.config
    }

    /// The subject builder of this bus's namespace.
    pub fn subjects(&self) -> &Subjects {
        &self.inner.subjects
    }

    /// Which server the bus is connected to (`None` for the embedded bus).
    pub fn server_info(&self) -> Option<ServerSummary> {
        match &self.inner.backend {
            Backend::JetStream(js) => {
                let info = js.client().server_info();
                Some(ServerSummary { server_id: info.server_id, version: info.version, port: info.port })
            }
            Backend::Embedded(_) => None,
        }
    }

    /// Whether this is the embedded in-process bus.
    pub fn is_embedded(&self) -> bool {
        matches!(self.inner.backend, Backend::Embedded(_))
    }

    /// Creates the streams and the agent bucket, or verifies that existing ones have Loom's
    /// settings. Never deletes or changes an existing one: a difference is an
    /// [`Error::Mismatch`].
    pub async fn provision(&self) -> Result<(), Error> {
        match &self.inner.backend {
            Backend::JetStream(js) => js.provision(&self.inner.config).await,
            Backend::Embedded(_) => Ok(()),
        }
    }

    /// Deletes this namespace's streams and bucket. Refused without a namespace: it exists for
    /// tests and scratch benchmarks, never for a production installation.
    pub async fn destroy(&self) -> Result<(), Error> {
        if !self.inner.subjects.names().is_namespaced() {
            return Err(Error::invalid("namespace", "destroy needs a namespace; refusing to delete Loom's streams"));
        }
        match &self.inner.backend {
            Backend::JetStream(js) => js.destroy().await,
            Backend::Embedded(_) => Ok(()),
        }
    }

    /// Stops every subscription, watch and background task of this bus.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// A task ready to publish, on `loom.tasks.{project}` or, when `metadata.role` is set,
    /// `loom.tasks.{project}.{role}`; its dedupe key is the dispatch id. It is signed with
    /// `task_signing_key` (refused without one).
    pub fn task(&self, msg: &TaskMessage, trace: &TraceContext) -> Result<Outgoing, Error> {
        let mut out = self.unsigned_task(msg, trace)?;
        self.sign_tasks(std::slice::from_mut(&mut out))?;
        Ok(out)
    }

    /// Signs task messages that are published together with one signature
    /// ([`crate::SigningKey::sign_batch`]): what a publisher of many tasks calls on the messages of
    /// [`Bus::unsigned_task`] before [`Bus::publish_batch`].
    pub fn sign_tasks(&self, msgs: &mut [Outgoing]) -> Result<(), Error> {
        self.signing_key()?.sign_batch(msgs);
        Ok(())
    }

    fn signing_key(&self) -> Result<&crate::SigningKey, Error> {
        self.inner.config.task_signing_key.as_ref().ok_or_else(|| {
            Error::invalid("task_signing_key", "no task signing key is configured: this bus cannot publish tasks")
        })
    }

    /// [`Bus::task`] without the signature, for [`Bus::sign_tasks`] (still refused without a
    /// signing key, so a task that could never be signed is refused while it is built).
    pub fn unsigned_task(&self, msg: &TaskMessage, trace: &TraceContext) -> Result<Outgoing, Error> {
        let role = msg.metadata.role.as_deref().filter(|r| !r.is_empty()).map(Role::parse).transpose()?;
        let subject = self.inner.subjects.tasks(&msg.project_id, role.as_ref());
        // A cancellation has its own dedupe key: under the assignment's it would be dropped as a
        // duplicate for the whole dedupe window.
        let msg_id = match msg.kind {
            crate::TaskKind::Assigned => msg.metadata.dispatch_id.to_string(),
            crate::TaskKind::Cancelled => format!("{}:cancel", msg.metadata.dispatch_id),
        };
        let body = encode(msg)?;
        if body.len() > MAX_TASK_BYTES {
            return Err(Error::invalid(
                "task",
                format!(
                    "the task message would be {} bytes; the limit is {MAX_TASK_BYTES} (1 MiB less room for headers): \
                     shorten the description or the context",
                    body.len()
                ),
            ));
        }
        self.signing_key()?;
        Ok(Outgoing::new(subject, msg_id, &msg.correlation_id, trace, body))
    }

    /// A result ready to publish on `loom.results.{project}`; dedupe key `{dispatch_id}:result`.
    /// Progress messages are keyed `{dispatch_id}:progress:{timestamp}` so each one counts.
    pub fn result(&self, msg: &ResultMessage, trace: &TraceContext) -> Result<Outgoing, Error> {
        let subject = self.inner.subjects.results(&msg.project_id);
        let msg_id = match msg.kind {
            crate::ResultKind::Progress => {
                format!("{}:progress:{}", msg.metadata.dispatch_id, msg.timestamp.timestamp_micros())
            }
            _ => format!("{}:result", msg.metadata.dispatch_id),
        };
        Ok(Outgoing::new(subject, msg_id, &msg.correlation_id, trace, encode(msg)?))
    }

    /// An event ready to publish on `loom.events.{type}`; `event_id` is its dedupe key.
    pub fn event(&self, msg: &EventMessage, event_id: &str, trace: &TraceContext) -> Result<Outgoing, Error> {
        if event_id.is_empty() || event_id.len() > 256 || event_id.chars().any(char::is_control) {
            return Err(Error::invalid("event id", "must be 1-256 printable characters"));
        }
        let subject = self.inner.subjects.events(msg.kind);
        Ok(Outgoing::new(subject, event_id.to_owned(), &msg.correlation_id, trace, encode(msg)?))
    }

    /// Publishes one message and waits for the bus to store it.
    pub async fn publish(&self, msg: Outgoing) -> Result<Receipt, Error> {
        self.publish_batch(vec![msg]).await.pop().unwrap_or(Err(Error::Closed))
    }

    /// Publishes many messages with a bounded window of unacknowledged publishes; one result
    /// per message, in order. A failure of one does not stop the others.
    pub async fn publish_batch(&self, msgs: Vec<Outgoing>) -> Vec<Result<Receipt, Error>> {
        match &self.inner.backend {
            Backend::JetStream(js) => js.publish(msgs, self.inner.config.publish_window).await,
            Backend::Embedded(e) => msgs.into_iter().map(|m| e.publish(m)).collect(),
        }
    }

    /// Binds to `agents-{project}` (or `agents-{project}-{role}`), creating the durable consumer
    /// if needed. Every instance binding to it competes: each task goes to exactly one. Only
    /// tasks signed by `task_verify_key` are handed over (refused without one); any other is
    /// dead-lettered with the reason.
    pub async fn consume_tasks(
        &self,
        project: &ProjectId,
        role: Option<&Role>,
        options: ConsumeOptions,
    ) -> Result<Subscription<TaskMessage>, Error> {
        let verify = self.inner.config.task_verify_key.clone().ok_or_else(|| {
            Error::invalid(
                "task_verify_key",
                "no task verify key is configured: refusing to consume tasks whose origin cannot be checked",
            )
        })?;
        let spec = ConsumerSpec {
            kind: StreamKind::Tasks,
            durable: agents_consumer(project, role),
            filter: self.inner.subjects.tasks(project, role),
            max_in_flight: options.max_in_flight.max(1),
            prefetch: options.prefetch,
        };
        Subscription::start(self.clone(), spec, Some(verify)).await
    }

    /// Binds to `control-plane-results` on every project's results.
    pub async fn consume_results(&self, options: ConsumeOptions) -> Result<Subscription<ResultMessage>, Error> {
        let spec = ConsumerSpec {
            kind: StreamKind::Results,
            durable: RESULTS_CONSUMER.to_owned(),
            filter: self.inner.subjects.names().wildcard(StreamKind::Results),
            max_in_flight: options.max_in_flight.max(1),
            prefetch: options.prefetch,
        };
        Subscription::start(self.clone(), spec, None).await
    }

    /// Starts moving messages that exhausted their deliveries to the DLQ (JetStream: by
    /// listening to the max-deliveries advisory) and yields a notice for each. The control plane
    /// runs exactly this and blocks the bead named in the notice.
    pub async fn dead_letters(&self) -> Result<DeadLetters, Error> {
        let (tx, rx) = mpsc::channel(1024);
        let cancel = self.inner.shutdown.child_token();
        match &self.inner.backend {
            Backend::JetStream(js) => js.watch_max_deliveries(self.clone(), tx, cancel.clone()).await?,
            Backend::Embedded(e) => e.watch_dead_letters(tx, cancel.clone()),
        }
        Ok(DeadLetters::new(rx, cancel))
    }

    /// Reads up to `limit` DLQ entries with a DLQ sequence ≥ `from_sequence`.
    pub async fn read_dlq(&self, from_sequence: u64, limit: usize) -> Result<Vec<DeadLetter>, Error> {
        match &self.inner.backend {
            Backend::JetStream(js) => js.read_dlq(&self.inner.subjects, from_sequence, limit).await,
            Backend::Embedded(e) => Ok(e.read_dlq(&self.inner.subjects, from_sequence, limit)),
        }
    }

    /// The `(sequence, Nats-Msg-Id)` of up to `limit` messages of `LOOM_EVENTS` from
    /// `from_sequence` on: the event ids the bus holds (a message's id is its event's id).
    pub async fn read_event_ids(&self, from_sequence: u64, limit: usize) -> Result<Vec<(u64, String)>, Error> {
        let raw = match &self.inner.backend {
            Backend::JetStream(js) => js.read_raw(StreamKind::Events, from_sequence, limit).await?,
            Backend::Embedded(e) => e.read_raw(StreamKind::Events, from_sequence, limit),
        };
        Ok(raw
            .into_iter()
            .filter_map(|(seq, headers, _)| {
                headers.get(crate::envelope::header::MSG_ID).map(|id| (seq, id.as_str().to_owned()))
            })
            .collect())
    }

    /// How many messages the stream of `kind` holds now (for `LOOM_TASKS`, a work queue: the
    /// tasks queued or running; for `LOOM_DLQ`: the dead letters kept).
    pub async fn stream_messages(&self, kind: StreamKind) -> Result<u64, Error> {
        match &self.inner.backend {
            Backend::JetStream(js) => js.stream_messages(kind).await,
            Backend::Embedded(e) => Ok(e.stream_messages(kind)),
        }
    }

    /// How far the durable `consumer` on `kind`'s stream is behind: one server call (the
    /// consumer's info), whoever bound it.
    pub async fn consumer_lag(&self, kind: StreamKind, consumer: &str) -> Result<ConsumerLag, Error> {
        match &self.inner.backend {
            Backend::JetStream(js) => js.consumer_lag(kind, consumer).await,
            Backend::Embedded(e) => e
                .health()
                .consumers
                .into_iter()
                .find(|c| c.consumer == consumer && c.stream == e.stream_name(kind))
                .ok_or_else(|| Error::backend("consumer info", format!("no consumer {consumer}"))),
        }
    }

    /// The durable consumers on `kind`'s stream that had delivered past the stream's end: the
    /// server lost acknowledged messages (see [`ConsumerAhead`]), and what it stores from now on
    /// up to their position would never be delivered. The messages lost were tasks or results
    /// the store believes are on the bus: the caller hands those dispatches back, then resets
    /// the consumers with [`Bus::reset_consumer`]. The embedded bus never loses messages.
    pub async fn consumers_ahead(&self, kind: StreamKind) -> Result<Vec<ConsumerAhead>, Error> {
        match &self.inner.backend {
            Backend::JetStream(js) => js.consumers_ahead(kind).await,
            Backend::Embedded(_) => Ok(Vec::new()),
        }
    }

    /// Deletes a consumer [`Bus::consumers_ahead`] found; its subscribers re-bind to a new one,
    /// which delivers what the stream holds from its start.
    pub async fn reset_consumer(&self, ahead: &ConsumerAhead) -> Result<(), Error> {
        match &self.inner.backend {
            Backend::JetStream(js) => js.reset_consumer(ahead).await,
            Backend::Embedded(_) => Ok(()),
        }
    }

    /// Connection state, JetStream reachability and the lag of the consumers this bus bound to.
    pub async fn health(&self) -> Health {
        match &self.inner.backend {
            Backend::JetStream(js) => js.health().await,
            Backend::Embedded(e) => e.health(),
        }
    }

    /// Registers an agent instance, or refreshes its heartbeat: it stays online for
    /// `agent_ttl` after the last call.
    pub async fn register_agent(&self, agent: &AgentRecord) -> Result<(), Error> {
        let key = crate::registry::key(&agent.agent_id)?;
        let value = Bytes::from(serde_json::to_vec(agent)?);
        match &self.inner.backend {
            Backend::JetStream(js) => js.kv_put(&key, value).await,
            Backend::Embedded(e) => e.kv_put(&key, value),
        }
    }

    /// Same as [`Bus::register_agent`]: a heartbeat is a fresh registration.
    pub async fn heartbeat_agent(&self, agent: &AgentRecord) -> Result<(), Error> {
        self.register_agent(agent).await
    }

    /// Removes an agent instance (it goes offline at once).
    pub async fn deregister_agent(&self, agent: &AgentId) -> Result<(), Error> {
        let key = crate::registry::key(agent)?;
        match &self.inner.backend {
            Backend::JetStream(js) => js.kv_delete(&key).await,
            Backend::Embedded(e) => e.kv_delete(&key),
        }
    }

    /// Every agent instance currently registered (heartbeat within the TTL).
    pub async fn list_agents(&self) -> Result<Vec<AgentRecord>, Error> {
        let entries = match &self.inner.backend {
            Backend::JetStream(js) => js.kv_entries().await?,
            Backend::Embedded(e) => e.kv_entries(),
        };
        Ok(crate::registry::decode_live(entries, self.inner.config.agent_ttl))
    }

    /// Online/offline changes of agent instances, starting with the ones online now. A key that
    /// is deleted, purged or not refreshed within the TTL is reported offline.
    pub async fn watch_agents(&self) -> Result<AgentWatch, Error> {
        let (tx, rx) = mpsc::channel(1024);
        let cancel = self.inner.shutdown.child_token();
        match &self.inner.backend {
            Backend::JetStream(js) => js.kv_watch(tx, cancel.clone()).await?,
            Backend::Embedded(e) => e.kv_watch(tx, cancel.clone()),
        }
        Ok(AgentWatch::start(rx, self.inner.config.agent_ttl, cancel))
    }

    /// The configured in-progress interval, for [`crate::Delivery::keep_alive`].
    pub fn progress_interval(&self) -> Duration {
        self.inner.config.progress_interval
    }
}

/// The largest task body [`Bus::task`] builds: the stream's 1 MiB message limit less room for
/// headers (trace context, ids).
pub const MAX_TASK_BYTES: usize = 1024 * 1024 - 16 * 1024;

fn encode<T: serde::Serialize>(msg: &T) -> Result<Bytes, Error> {
    Ok(Bytes::from(serde_json::to_vec(msg)?))
}
