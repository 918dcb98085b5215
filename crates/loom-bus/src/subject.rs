//! Subject builders. Every token comes from a validated id, so no subject can contain a
//! wildcard, a dot or whitespace that would make it match more than intended.

use loom_domain::{EventKind, ProjectId};

use crate::Error;
use crate::config::{Names, StreamKind};

/// An agent role (persona) as it appears in `loom.tasks.{project}.{role}` and in the consumer
/// name `agents-{project}-{role}`: `^[a-z0-9][a-z0-9_-]{0,62}$`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Role(String);

impl Role {
    /// Validates a role token: lowercase letters, digits, `_` and `-`; no dots, wildcards or
    /// whitespace.
    pub fn parse(s: &str) -> Result<Role, Error> {
        match loom_domain::validate_role(s) {
            Ok(()) => Ok(Role(s.to_owned())),
            Err(reason) => Err(Error::invalid("role", reason)),
        }
    }

    /// The role as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Builds the subjects of one namespace.
#[derive(Clone, Debug)]
pub struct Subjects {
    names: Names,
}

impl Subjects {
    pub fn new(names: Names) -> Subjects {
        Subjects { names }
    }

    /// The names these subjects live under.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// `loom.tasks.{project}`, or `loom.tasks.{project}.{role}` with a role.
    pub fn tasks(&self, project: &ProjectId, role: Option<&Role>) -> String {
        let root = self.names.root(StreamKind::Tasks);
        match role {
            Some(role) => format!("{root}.{project}.{role}"),
            None => format!("{root}.{project}"),
        }
    }

    /// `loom.results.{project}`.
    pub fn results(&self, project: &ProjectId) -> String {
        format!("{}.{project}", self.names.root(StreamKind::Results))
    }

    /// `loom.events.{type}`.
    pub fn events(&self, kind: EventKind) -> String {
        format!("{}.{}", self.names.root(StreamKind::Events), kind.as_str())
    }

    /// `loom.dlq.{stream}.{project}`, `stream` being `tasks`, `results` or `events`; `project`
    /// is `_` when the message has none.
    pub fn dlq(&self, stream: StreamKind, project: Option<&ProjectId>) -> String {
        let project = project.map_or("_", |p| p.as_str());
        format!("{}.{}.{project}", self.names.root(StreamKind::Dlq), stream.token())
    }

    /// The project token of a task or result subject, if it is one and the token is a valid id.
    pub fn project_of(&self, subject: &str) -> Option<ProjectId> {
        let kind = self.names.kind_of(subject)?;
        if !matches!(kind, StreamKind::Tasks | StreamKind::Results) {
            return None;
        }
        let rest = &subject[self.names.root(kind).len() + 1..];
        ProjectId::parse(rest.split('.').next()?).ok()
    }
}

/// The durable consumer name for a project's agents: `agents-{project}` or
/// `agents-{project}-{role}`.
pub fn agents_consumer(project: &ProjectId, role: Option<&Role>) -> String {
    match role {
        Some(role) => format!("agents-{project}-{role}"),
        None => format!("agents-{project}"),
    }
}

/// The durable consumer name of the control plane on the results stream.
pub const RESULTS_CONSUMER: &str = "control-plane-results";

#[cfg(test)]
mod tests {
    use super::*;

    fn subjects(ns: Option<&str>) -> Subjects {
        Subjects::new(Names::new(ns).unwrap())
    }

    #[test]
    fn builds_design_subjects() {
        let s = subjects(None);
        let p = ProjectId::parse("web-app").unwrap();
        let r = Role::parse("reviewer").unwrap();
        assert_eq!(s.tasks(&p, None), "loom.tasks.web-app");
        assert_eq!(s.tasks(&p, Some(&r)), "loom.tasks.web-app.reviewer");
        assert_eq!(s.results(&p), "loom.results.web-app");
        assert_eq!(s.events(EventKind::BeadStatusChanged), "loom.events.bead.status_changed");
        assert_eq!(s.dlq(StreamKind::Tasks, Some(&p)), "loom.dlq.tasks.web-app");
        assert_eq!(agents_consumer(&p, Some(&r)), "agents-web-app-reviewer");
        assert_eq!(s.project_of("loom.tasks.web-app.reviewer"), Some(p.clone()));
        assert_eq!(s.project_of("loom.events.bead.created"), None);
    }

    #[test]
    fn namespaced_subjects() {
        let s = subjects(Some("t9"));
        let p = ProjectId::parse("p").unwrap();
        assert_eq!(s.tasks(&p, None), "t9.loom.tasks.p");
        assert_eq!(s.project_of("t9.loom.results.p"), Some(p));
    }

    #[test]
    fn rejects_unsafe_roles() {
        for bad in ["", "a.b", "a*", "a>", "a b", "A", "-a", "a\tb", &"r".repeat(64)] {
            assert!(Role::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Role::parse("qa_2-x").is_ok());
    }
}
