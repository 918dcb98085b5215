//! The agent registry: one entry per agent instance in the `loom-agents` bucket, refreshed by
//! heartbeats and expiring after the TTL, and a watch that turns puts, deletes and expiry into
//! online/offline changes (written once for both backends).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use loom_domain::{Agent, AgentId, AgentStatus, BeadId, ProjectId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::Error;
use crate::message::ids;

/// An agent instance as stored in the registry (JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    #[serde(rename = "id", with = "ids::agent")]
    pub agent_id: AgentId,
    #[serde(with = "ids::project")]
    pub project_id: ProjectId,
    #[serde(default)]
    pub role: String,
    /// Host, pid and a random nonce (see [`crate::instance_id`]).
    #[serde(default)]
    pub instance: String,
    #[serde(serialize_with = "status_ser", deserialize_with = "status_de")]
    pub status: AgentStatus,
    #[serde(default, with = "ids::bead::option")]
    pub current_bead: Option<BeadId>,
    #[serde(default)]
    pub capacity: u32,
    pub last_heartbeat: DateTime<Utc>,
}

impl From<&Agent> for AgentRecord {
    fn from(a: &Agent) -> Self {
        AgentRecord {
            agent_id: a.id.clone(),
            project_id: a.project_id.clone(),
            role: a.role.clone(),
            instance: a.instance.clone(),
            status: a.status,
            current_bead: a.current_bead.clone(),
            capacity: a.capacity,
            last_heartbeat: a.last_heartbeat,
        }
    }
}

impl From<AgentRecord> for Agent {
    fn from(r: AgentRecord) -> Self {
        Agent {
            id: r.agent_id,
            project_id: r.project_id,
            role: r.role,
            instance: r.instance,
            status: r.status,
            current_bead: r.current_bead,
            capacity: r.capacity,
            last_heartbeat: r.last_heartbeat,
        }
    }
}

fn status_ser<S: Serializer>(s: &AgentStatus, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

fn status_de<'de, D: Deserializer<'de>>(d: D) -> Result<AgentStatus, D::Error> {
    String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
}

/// A change seen by [`AgentWatch`].
#[derive(Clone, Debug, PartialEq)]
pub enum AgentChange {
    /// The instance appeared (registered, or came back after going offline).
    Online(AgentRecord),
    /// A heartbeat changed its status or current bead.
    Updated(AgentRecord),
    /// The instance went away.
    Offline { agent_id: AgentId, reason: OfflineReason },
}

/// Why an instance went offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfflineReason {
    /// Deregistered, deleted or purged.
    Removed,
    /// No heartbeat within the TTL.
    Expired,
}

/// A raw change of the bucket, from either backend.
#[derive(Debug)]
pub(crate) enum KvEvent {
    Put { value: Bytes, created: DateTime<Utc> },
    Removed { key: String },
}

/// The bucket key of an agent: its id (already limited to `[A-Za-z0-9_.-]`).
pub(crate) fn key(agent: &AgentId) -> Result<String, Error> {
    let k = agent.as_str();
    if k.ends_with('.') || k.contains("..") {
        return Err(Error::invalid("agent id", format!("{k:?} cannot be a registry key (trailing or double dot)")));
    }
    Ok(k.to_owned())
}

fn remaining(created: DateTime<Utc>, ttl: Duration) -> Duration {
    let age = (Utc::now() - created).to_std().unwrap_or_default();
    ttl.saturating_sub(age)
}

/// Decodes bucket entries, keeping those still within the TTL.
pub(crate) fn decode_live(entries: Vec<(Bytes, DateTime<Utc>)>, ttl: Duration) -> Vec<AgentRecord> {
    let mut out: Vec<AgentRecord> = entries
        .into_iter()
        .filter(|(_, created)| !remaining(*created, ttl).is_zero())
        .filter_map(|(value, _)| serde_json::from_slice(&value).ok())
        .collect();
    out.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
    out
}

/// Online/offline changes of agent instances.
#[derive(Debug)]
pub struct AgentWatch {
    rx: mpsc::Receiver<AgentChange>,
    _stop: DropGuard,
}

impl AgentWatch {
    pub(crate) fn start(raw: mpsc::Receiver<KvEvent>, ttl: Duration, cancel: CancellationToken) -> AgentWatch {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(track(raw, tx, ttl, cancel.clone()));
        AgentWatch { rx, _stop: cancel.drop_guard() }
    }

    /// The next change, or `None` once the bus is shut down.
    pub async fn next(&mut self) -> Option<AgentChange> {
        self.rx.recv().await
    }
}

async fn track(
    mut raw: mpsc::Receiver<KvEvent>,
    tx: mpsc::Sender<AgentChange>,
    ttl: Duration,
    cancel: CancellationToken,
) {
    let mut known: HashMap<String, (AgentRecord, Instant)> = HashMap::new();
    loop {
        let next_expiry = known.values().map(|(_, at)| *at).min();
        let changes = tokio::select! {
            _ = cancel.cancelled() => return,
            event = raw.recv() => match event {
                Some(event) => apply(&mut known, event, ttl),
                None => return,
            },
            _ = sleep_until(next_expiry) => expire(&mut known),
        };
        for change in changes {
            if tx.send(change).await.is_err() {
                return;
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn apply(known: &mut HashMap<String, (AgentRecord, Instant)>, event: KvEvent, ttl: Duration) -> Vec<AgentChange> {
    match event {
        KvEvent::Put { value, created } => {
            let Ok(record) = serde_json::from_slice::<AgentRecord>(&value) else {
                tracing::warn!("ignoring an undecodable agent registry entry");
                return vec![];
            };
            let left = remaining(created, ttl);
            let key = record.agent_id.to_string();
            if left.is_zero() {
                return known
                    .remove(&key)
                    .map(|_| offline(&record.agent_id, OfflineReason::Expired))
                    .into_iter()
                    .collect();
            }
            let expires = Instant::now() + left;
            match known.insert(key, (record.clone(), expires)) {
                None => vec![AgentChange::Online(record)],
                Some((old, _)) if old.status != record.status || old.current_bead != record.current_bead => {
                    vec![AgentChange::Updated(record)]
                }
                Some(_) => vec![],
            }
        }
        KvEvent::Removed { key } => match known.remove(&key) {
            Some((record, _)) => vec![offline(&record.agent_id, OfflineReason::Removed)],
            None => vec![],
        },
    }
}

fn expire(known: &mut HashMap<String, (AgentRecord, Instant)>) -> Vec<AgentChange> {
    let now = Instant::now();
    let gone: Vec<String> = known.iter().filter(|(_, (_, at))| *at <= now).map(|(k, _)| k.clone()).collect();
    gone.into_iter()
        .filter_map(|k| known.remove(&k))
        .map(|(record, _)| offline(&record.agent_id, OfflineReason::Expired))
        .collect()
}

fn offline(agent_id: &AgentId, reason: OfflineReason) -> AgentChange {
    AgentChange::Offline { agent_id: agent_id.clone(), reason }
}
