//! Events: a state change, published on `loom.events.{type}` for UIs and integrations.

use chrono::{DateTime, Utc};
use loom_domain::{EventKind, ProjectId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Body, ids};

/// One event as it travels on the bus. Its id travels as the `Nats-Msg-Id` header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventMessage {
    #[serde(rename = "type", serialize_with = "kind_ser", deserialize_with = "kind_de")]
    pub kind: EventKind,
    /// The service that emitted it (`control-plane`, `agent`, …).
    #[serde(default)]
    pub source: String,
    #[serde(default, with = "ids::project::option")]
    pub project_id: Option<ProjectId>,
    /// The bead, agent, project or connector the event is about.
    #[serde(default)]
    pub entity_id: String,
    pub event: EventBody,
    #[serde(default)]
    pub correlation_id: String,
    pub timestamp: DateTime<Utc>,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventBody {
    #[serde(default)]
    pub action: String,
    /// The part of the type before the dot (`bead`, `agent`, …).
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub data: serde_json::Value,
}

fn kind_ser<S: Serializer>(kind: &EventKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.as_str())
}

fn kind_de<'de, D: Deserializer<'de>>(d: D) -> Result<EventKind, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

impl Body for EventMessage {
    fn is_known_type(kind: &str) -> bool {
        kind.parse::<EventKind>().is_ok()
    }
}
