//! Conversions between wire messages and Loom's types. `IntoProto` never fails; `FromProto`
//! validates (ids, enums, ranges, required fields) and names the offending field.

mod attempts;
mod connectors;
mod domain;
mod error;
mod store;

use chrono::{DateTime, Utc};
use loom_domain::{AgentStatus, BeadType, Error, GitStrategy, ProjectStatus, Role, Status};
use loom_store::OutboxKind;

use crate::v1;

/// Converts a value into its wire message.
pub trait IntoProto<P> {
    fn into_proto(self) -> P;
}

/// Converts a wire message into a validated value.
pub trait FromProto<P>: Sized {
    fn from_proto(proto: P) -> Result<Self, Error>;
}

impl<T: IntoProto<P>, P> IntoProto<Vec<P>> for Vec<T> {
    fn into_proto(self) -> Vec<P> {
        self.into_iter().map(IntoProto::into_proto).collect()
    }
}

impl<T: FromProto<P>, P> FromProto<Vec<P>> for Vec<T> {
    fn from_proto(proto: Vec<P>) -> Result<Self, Error> {
        proto.into_iter().map(T::from_proto).collect()
    }
}

impl<T: IntoProto<P>, P> IntoProto<Option<P>> for Option<T> {
    fn into_proto(self) -> Option<P> {
        self.map(IntoProto::into_proto)
    }
}

impl<T: FromProto<P>, P> FromProto<Option<P>> for Option<T> {
    fn from_proto(proto: Option<P>) -> Result<Self, Error> {
        proto.map(T::from_proto).transpose()
    }
}

/// A message field that must be present.
pub fn required<T>(value: Option<T>, field: &'static str) -> Result<T, Error> {
    value.ok_or_else(|| Error::Invalid { field, reason: "is required".into() })
}

impl IntoProto<prost_types::Timestamp> for DateTime<Utc> {
    fn into_proto(self) -> prost_types::Timestamp {
        prost_types::Timestamp { seconds: self.timestamp(), nanos: self.timestamp_subsec_nanos() as i32 }
    }
}

impl FromProto<prost_types::Timestamp> for DateTime<Utc> {
    fn from_proto(ts: prost_types::Timestamp) -> Result<Self, Error> {
        u32::try_from(ts.nanos)
            .ok()
            .and_then(|nanos| DateTime::from_timestamp(ts.seconds, nanos))
            .ok_or_else(|| Error::Invalid { field: "timestamp", reason: format!("{ts} is out of range") })
    }
}

impl IntoProto<prost_types::Duration> for std::time::Duration {
    fn into_proto(self) -> prost_types::Duration {
        // A std Duration beyond i64 seconds is ~292 billion years; saturate rather than fail.
        prost_types::Duration::try_from(self).unwrap_or(prost_types::Duration { seconds: i64::MAX, nanos: 999_999_999 })
    }
}

impl FromProto<prost_types::Duration> for std::time::Duration {
    fn from_proto(d: prost_types::Duration) -> Result<Self, Error> {
        std::time::Duration::try_from(d)
            .map_err(|e| Error::Invalid { field: "duration", reason: format!("{e} (durations are non-negative)") })
    }
}

/// A priority from the wire's `uint32`.
pub(crate) fn priority(n: u32) -> Result<loom_domain::Priority, Error> {
    loom_domain::Priority::try_from(i64::from(n))
}

macro_rules! enum_map {
    ($domain:ident, $proto:ident, $field:literal { $($d:ident => $p:ident),+ $(,)? }) => {
        impl IntoProto<i32> for $domain {
            fn into_proto(self) -> i32 {
                match self { $($domain::$d => v1::$proto::$p as i32),+ }
            }
        }

        impl FromProto<i32> for $domain {
            fn from_proto(value: i32) -> Result<Self, Error> {
                match v1::$proto::try_from(value) {
                    $(Ok(v1::$proto::$p) => Ok($domain::$d),)+
                    _ => {
                        let names = [$($domain::$d.as_str()),+].join(", ");
                        let reason = if value == 0 {
                            format!("is unspecified: use one of {names}")
                        } else {
                            format!("{value} is not one of {names}")
                        };
                        Err(Error::Invalid { field: $field, reason })
                    }
                }
            }
        }
    };
}

enum_map!(Status, BeadStatus, "status" {
    Open => Open, InProgress => InProgress, Blocked => Blocked, Closed => Closed,
});
enum_map!(BeadType, BeadType, "bead type" {
    Task => Task, Bug => Bug, Feature => Feature, Epic => Epic, Chore => Chore, Decision => Decision,
});
enum_map!(GitStrategy, GitStrategy, "git strategy" { Direct => Direct, BranchPr => BranchPr });
enum_map!(ProjectStatus, ProjectStatus, "project status" { Active => Active, Paused => Paused, Archived => Archived });
enum_map!(AgentStatus, AgentStatus, "agent status" { Idle => Idle, Busy => Busy, Draining => Draining, Offline => Offline });
enum_map!(Role, Role, "role" { Admin => Admin, Operator => Operator, Viewer => Viewer });

impl IntoProto<i32> for OutboxKind {
    fn into_proto(self) -> i32 {
        match self {
            OutboxKind::TaskAssigned => v1::OutboxKind::TaskAssigned as i32,
            OutboxKind::TaskCancelled => v1::OutboxKind::TaskCancelled as i32,
        }
    }
}

impl FromProto<i32> for OutboxKind {
    fn from_proto(value: i32) -> Result<Self, Error> {
        match v1::OutboxKind::try_from(value) {
            Ok(v1::OutboxKind::TaskAssigned) => Ok(OutboxKind::TaskAssigned),
            Ok(v1::OutboxKind::TaskCancelled) => Ok(OutboxKind::TaskCancelled),
            _ => Err(Error::Invalid {
                field: "outbox kind",
                reason: format!("{value} is not one of task.assigned, task.cancelled"),
            }),
        }
    }
}

/// JSON text to a value.
pub(crate) fn json(text: &str, field: &'static str) -> Result<serde_json::Value, Error> {
    if text.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(text).map_err(|e| Error::Invalid { field, reason: format!("is not valid JSON: {e}") })
}
