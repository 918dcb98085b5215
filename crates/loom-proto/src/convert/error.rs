//! The store's error as a wire message (`StoreError`), so a client rebuilds the very error the
//! store returned — same variant, same fields, same text.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use loom_store::Error;

use super::{FromProto, IntoProto};
use crate::v1::StoreError;
use crate::v1::store_error::{self, Kind};

impl IntoProto<StoreError> for &Error {
    fn into_proto(self) -> StoreError {
        let kind = match self {
            Error::NotFound { entity, id } => {
                Kind::NotFound(store_error::NotFound { entity: (*entity).into(), id: id.clone() })
            }
            Error::AlreadyExists { entity, id } => {
                Kind::AlreadyExists(store_error::AlreadyExists { entity: (*entity).into(), id: id.clone() })
            }
            Error::Domain(loom_domain::Error::Invalid { field, reason }) => {
                Kind::Invalid(store_error::Invalid { field: (*field).into(), reason: reason.clone() })
            }
            Error::Domain(loom_domain::Error::IllegalTransition { bead, from, to, hint }) => {
                Kind::IllegalTransition(store_error::IllegalTransition {
                    bead: bead.clone(),
                    from: from.into_proto(),
                    to: to.into_proto(),
                    hint: (*hint).into(),
                })
            }
            Error::Domain(loom_domain::Error::Cycle { bead, blocker, path }) => {
                Kind::Cycle(store_error::Cycle { bead: bead.clone(), blocker: blocker.clone(), path: path.clone() })
            }
            Error::VersionConflict { bead, expected, actual } => Kind::VersionConflict(store_error::VersionConflict {
                bead: bead.clone(),
                expected: *expected,
                actual: *actual,
            }),
            Error::MissingBlocker { bead, blocker } => {
                Kind::MissingBlocker(store_error::MissingBlocker { bead: bead.clone(), blocker: blocker.clone() })
            }
            Error::Conflict(text) => Kind::Conflict(text.clone()),
            Error::Unavailable(text) => Kind::Unavailable(text.clone()),
            Error::Internal(text) => Kind::Internal(text.clone()),
        };
        StoreError { kind: Some(kind) }
    }
}

impl FromProto<StoreError> for Error {
    fn from_proto(e: StoreError) -> Result<Self, loom_domain::Error> {
        let kind =
            e.kind.ok_or_else(|| loom_domain::Error::Invalid { field: "store error", reason: "has no kind".into() })?;
        Ok(match kind {
            Kind::NotFound(n) => Error::NotFound { entity: intern(&n.entity), id: n.id },
            Kind::AlreadyExists(a) => Error::AlreadyExists { entity: intern(&a.entity), id: a.id },
            Kind::Invalid(i) => loom_domain::Error::Invalid { field: intern(&i.field), reason: i.reason }.into(),
            Kind::IllegalTransition(t) => loom_domain::Error::IllegalTransition {
                bead: t.bead,
                from: FromProto::from_proto(t.from)?,
                to: FromProto::from_proto(t.to)?,
                hint: intern(&t.hint),
            }
            .into(),
            Kind::Cycle(c) => loom_domain::Error::Cycle { bead: c.bead, blocker: c.blocker, path: c.path }.into(),
            Kind::VersionConflict(v) => Error::VersionConflict { bead: v.bead, expected: v.expected, actual: v.actual },
            Kind::MissingBlocker(m) => Error::MissingBlocker { bead: m.bead, blocker: m.blocker },
            Kind::Conflict(text) => Error::Conflict(text),
            Kind::Unavailable(text) => Error::Unavailable(text),
            Kind::Internal(text) => Error::Internal(text),
        })
    }
}

/// Most distinct names kept; the store uses a few dozen (entity and field names, transition hints).
const INTERNED_MAX: usize = 512;
/// Longest name kept; anything longer is not a name the store produces.
const INTERNED_LEN_MAX: usize = 256;

/// The store's error carries `&'static str` names. The set the store produces is small and fixed,
/// so each distinct one is leaked once; a bound keeps a misbehaving server from growing it.
fn intern(s: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = names.get(s) {
        return known;
    }
    if names.len() >= INTERNED_MAX || s.len() > INTERNED_LEN_MAX {
        return "value";
    }
    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::*;
    use loom_domain::{BeadId, Status};

    fn round_trip(err: Error) -> Error {
        Error::from_proto((&err).into_proto()).unwrap()
    }

    #[test]
    fn every_variant_round_trips_with_its_text() {
        let transition =
            Status::Closed.check_transition(Status::InProgress, &BeadId::parse("t-1").unwrap()).unwrap_err();
        let errors = vec![
            Error::NotFound { entity: "bead", id: "t-1".into() },
            Error::AlreadyExists { entity: "project", id: "p".into() },
            loom_domain::Error::Invalid { field: "priority", reason: "7 is out of range".into() }.into(),
            transition.into(),
            loom_domain::Error::Cycle { bead: "t-1".into(), blocker: "t-2".into(), path: "t-1 -> t-2 -> t-1".into() }
                .into(),
            Error::VersionConflict { bead: "t-1".into(), expected: 1, actual: 2 },
            Error::MissingBlocker { bead: "t-1".into(), blocker: "t-9".into() },
            Error::Conflict("busy".into()),
            Error::Unavailable("down".into()),
            Error::Internal("bug".into()),
        ];
        for err in errors {
            let text = err.to_string();
            let back = round_trip(err);
            assert_eq!(back.to_string(), text);
        }
    }

    #[test]
    fn names_are_interned_once() {
        assert!(std::ptr::eq(intern("parent bead"), intern(&String::from("parent bead"))));
        assert_eq!(intern(&"x".repeat(1000)), "value");
    }
}
