//! Typed message bodies (DESIGN.md §3). Field names are the wire contract shared with earlier
//! agents and tools: unknown fields are ignored on decode and new fields may only be added.

mod event;
mod result;
mod task;

pub use event::{EventBody, EventMessage};
pub use result::{ResultData, ResultKind, ResultMessage, ResultMetadata, ResultStatus};
pub use task::{PROJECT_COMMANDS, TaskData, TaskKind, TaskMessage, TaskMetadata};

use serde::de::DeserializeOwned;

/// A message body that can travel on a durable consumer: it knows its valid `type` values.
pub trait Body: DeserializeOwned + serde::Serialize + Send + 'static {
    /// Whether this body accepts the `type` value; anything else is dead-lettered as unknown.
    fn is_known_type(kind: &str) -> bool;
}

/// Why a payload could not become a typed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Not JSON, or JSON without the required fields or with invalid values.
    Malformed(String),
    /// JSON with a `type` this consumer does not know.
    UnknownType(String),
}

impl DecodeError {
    pub(crate) fn reason(&self) -> String {
        match self {
            DecodeError::Malformed(e) => format!("malformed: {e}"),
            DecodeError::UnknownType(t) => format!("unknown message type {t:?}"),
        }
    }
}

/// Decodes a body, telling malformed input from an unknown `type`. The hot path parses once;
/// only a failure is parsed again to classify it.
pub(crate) fn decode<T: Body>(payload: &[u8]) -> Result<T, DecodeError> {
    let err = match serde_json::from_slice::<T>(payload) {
        Ok(msg) => return Ok(msg),
        Err(err) => err,
    };
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "type")]
        kind: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(payload).map(|p| p.kind) {
        Ok(Some(serde_json::Value::String(t))) if !T::is_known_type(&t) => Err(DecodeError::UnknownType(t)),
        Ok(Some(other)) if !other.is_string() => Err(DecodeError::UnknownType(other.to_string())),
        Ok(None) => Err(DecodeError::Malformed("missing field `type`".into())),
        _ => Err(DecodeError::Malformed(err.to_string())),
    }
}

/// Serde adapters for the validated ids of `loom-domain`, which do not derive wire formats.
pub(crate) mod ids {
    use serde::{Deserialize, Deserializer, Serializer};

    macro_rules! id_serde {
        ($module:ident, $ty:ty) => {
            pub(crate) mod $module {
                use super::*;

                pub(crate) fn serialize<S: Serializer>(id: &$ty, s: S) -> Result<S::Ok, S::Error> {
                    s.serialize_str(id.as_str())
                }

                pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                    let s = String::deserialize(d)?;
                    <$ty>::parse(&s).map_err(serde::de::Error::custom)
                }

                #[allow(dead_code)]
                pub(crate) mod option {
                    use super::*;

                    pub(crate) fn serialize<S: Serializer>(id: &Option<$ty>, s: S) -> Result<S::Ok, S::Error> {
                        match id {
                            Some(id) => s.serialize_str(id.as_str()),
                            None => s.serialize_none(),
                        }
                    }

                    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<$ty>, D::Error> {
                        match Option::<String>::deserialize(d)? {
                            Some(s) if !s.is_empty() => <$ty>::parse(&s).map(Some).map_err(serde::de::Error::custom),
                            _ => Ok(None),
                        }
                    }
                }
            }
        };
    }

    id_serde!(project, loom_domain::ProjectId);
    id_serde!(bead, loom_domain::BeadId);
    id_serde!(dispatch, loom_domain::DispatchId);
    id_serde!(agent, loom_domain::AgentId);
}
