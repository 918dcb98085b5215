//! Beads: prioritised work items, their types and the status machine.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::{BeadId, ContextMap, DispatchId, Error, ProjectId, limits};

/// Priority 0–3; P0 is the most urgent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(u8);

impl Priority {
    /// P0, the most urgent.
    pub const P0: Priority = Priority(0);
    /// The default, P2.
    pub const DEFAULT: Priority = Priority(2);

    /// The number 0–3.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<i64> for Priority {
    type Error = Error;
    fn try_from(n: i64) -> Result<Self, Error> {
        match n {
            0..=3 => Ok(Priority(n as u8)),
            _ => Err(Error::invalid("priority", format!("{n} is out of range: use 0 (P0, most urgent) to 3 (P3)"))),
        }
    }
}

impl std::str::FromStr for Priority {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let digits = s.strip_prefix(['P', 'p']).unwrap_or(s);
        let n: i64 = digits
            .parse()
            .map_err(|_| Error::invalid("priority", format!("{s:?} is not a priority: use 0-3 or P0-P3")))?;
        Priority::try_from(n)
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "P{}", self.0)
    }
}

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident, $field:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The lowercase wire and storage name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::Error;
            fn from_str(s: &str) -> Result<Self, $crate::Error> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::Error::invalid($field, format!(
                        "{s:?} is not one of {}", [$($text),+].join(", ")
                    ))),
                }
            }
        }
    };
}
pub(crate) use string_enum;

string_enum!(
    /// What kind of work a bead is.
    BeadType, "bead type" {
        Task => "task", Bug => "bug", Feature => "feature", Epic => "epic", Chore => "chore",
        Decision => "decision",
    }
);

string_enum!(
    /// Where a bead is in its life.
    Status, "status" {
        Open => "open", InProgress => "in_progress", Blocked => "blocked", Closed => "closed",
    }
);

impl Status {
    /// Checks a status change against the machine of DESIGN.md §2:
    /// `open → in_progress → closed`; `in_progress → open | blocked`; `blocked → open`;
    /// `open | blocked → closed`; `closed → open`.
    pub fn check_transition(self, to: Status, bead: &BeadId) -> Result<(), Error> {
        use Status::*;
        let hint = match (self, to) {
            (Open, InProgress)
            | (InProgress, Closed | Open | Blocked)
            | (Blocked, Open)
            | (Open | Blocked, Closed)
            | (Closed, Open) => return Ok(()),
            (a, b) if a == b => "it already has that status",
            (Closed, _) => "a closed bead must be reopened first",
            (Blocked, InProgress) => "unblock it (set it open) so it can be dispatched",
            (Open, Blocked) => "only a dispatched bead becomes blocked (retry budget spent, dead letter or escalation)",
            _ => "not allowed by the status machine",
        };
        Err(Error::IllegalTransition { bead: bead.to_string(), from: self, to, hint })
    }
}

/// A bead as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Bead {
    pub id: BeadId,
    pub project_id: ProjectId,
    pub title: String,
    pub description: String,
    pub bead_type: BeadType,
    pub priority: Priority,
    pub status: Status,
    pub assignee: Option<String>,
    pub tags: Vec<String>,
    pub context: ContextMap,
    pub parent: Option<BeadId>,
    pub blocked_by: Vec<BeadId>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub close_reason: Option<String>,
    /// The current dispatch (fencing token) while `in_progress`.
    pub dispatch_id: Option<DispatchId>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// When an agent reported that it started the current dispatch. `None` while the task is
    /// queued (dispatched, waiting for an agent slot): only a started dispatch has a lease clock.
    pub started_at: Option<DateTime<Utc>>,
    /// The agent running the current dispatch, once started.
    pub started_by: Option<String>,
    /// A failed bead waits until then before it is ready again (retry backoff).
    pub not_before: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    /// Bumped on every change; updates name the version they expect.
    pub version: i64,
}

/// Where a dispatched bead is: waiting for an agent slot, or started by an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DispatchState {
    /// Its task waits on the bus; no agent has started it, so no lease clock runs.
    Queued,
    /// An agent started it; its lease is kept alive by the agent's progress.
    Running,
}

impl DispatchState {
    pub fn as_str(self) -> &'static str {
        match self {
            DispatchState::Queued => "queued",
            DispatchState::Running => "running",
        }
    }
}

impl Bead {
    /// `None` unless the bead is `in_progress`.
    pub fn dispatch_state(&self) -> Option<DispatchState> {
        match (self.status, self.started_at) {
            (Status::InProgress, None) => Some(DispatchState::Queued),
            (Status::InProgress, Some(_)) => Some(DispatchState::Running),
            _ => None,
        }
    }
}

/// A bead to create; `validate` checks every field against `limits`.
#[derive(Clone, Debug, PartialEq)]
pub struct NewBead {
    pub project_id: ProjectId,
    pub title: String,
    pub description: String,
    pub bead_type: BeadType,
    pub priority: Priority,
    pub assignee: Option<String>,
    pub tags: Vec<String>,
    pub context: ContextMap,
    pub parent: Option<BeadId>,
    pub blocked_by: Vec<BeadId>,
}

impl NewBead {
    /// A task with default priority and no extras.
    pub fn new(project_id: ProjectId, title: impl Into<String>) -> Self {
        Self {
            project_id,
            title: title.into(),
            description: String::new(),
            bead_type: BeadType::Task,
            priority: Priority::DEFAULT,
            assignee: None,
            tags: Vec::new(),
            context: ContextMap::new(),
            parent: None,
            blocked_by: Vec::new(),
        }
    }

    /// Checks sizes and shapes of the free-form fields.
    pub fn validate(&self) -> Result<(), Error> {
        validate_title(&self.title)?;
        validate_description(&self.description)?;
        validate_tags(&self.tags)?;
        validate_context(&self.context)
    }
}

/// A title is 1–`TITLE_MAX` bytes and not blank.
pub fn validate_title(title: &str) -> Result<(), Error> {
    if title.trim().is_empty() {
        return Err(Error::invalid("title", "must not be empty"));
    }
    if title.len() > limits::TITLE_MAX {
        return Err(Error::invalid("title", format!("is {} bytes; the limit is {}", title.len(), limits::TITLE_MAX)));
    }
    Ok(())
}

/// A description is at most `DESCRIPTION_MAX` bytes.
pub fn validate_description(description: &str) -> Result<(), Error> {
    if description.len() > limits::DESCRIPTION_MAX {
        return Err(Error::invalid(
            "description",
            format!("is {} bytes; the limit is {} (256 KiB)", description.len(), limits::DESCRIPTION_MAX),
        ));
    }
    Ok(())
}

/// Tags are short, non-empty, and few.
pub fn validate_tags(tags: &[String]) -> Result<(), Error> {
    if tags.len() > limits::TAGS_MAX {
        return Err(Error::invalid("tags", format!("{} tags; the limit is {}", tags.len(), limits::TAGS_MAX)));
    }
    if let Some(t) = tags.iter().find(|t| t.trim().is_empty() || t.len() > limits::TAG_MAX) {
        return Err(Error::invalid("tags", format!("{t:?} must be 1-{} bytes and not blank", limits::TAG_MAX)));
    }
    Ok(())
}

/// Context maps have bounded entries and values, and the keys the dispatcher and agents read
/// (`role`, `executor`) hold values they can route and run: a bead is refused here rather than
/// accepted and then left undeliverable.
pub fn validate_context(context: &ContextMap) -> Result<(), Error> {
    if context.len() > limits::CONTEXT_ENTRIES_MAX {
        return Err(Error::invalid(
            "context",
            format!("{} entries; the limit is {}", context.len(), limits::CONTEXT_ENTRIES_MAX),
        ));
    }
    if let Some((k, v)) =
        context.iter().find(|(k, v)| k.is_empty() || k.len() > 128 || v.len() > limits::CONTEXT_VALUE_MAX)
    {
        return Err(Error::invalid(
            "context",
            format!(
                "entry {k:?} ({} bytes): keys must be 1-128 bytes, values at most {} bytes",
                v.len(),
                limits::CONTEXT_VALUE_MAX
            ),
        ));
    }
    let total: usize = context.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > limits::CONTEXT_TOTAL_MAX {
        return Err(Error::invalid(
            "context",
            format!("{total} bytes in all; the limit is {} (256 KiB)", limits::CONTEXT_TOTAL_MAX),
        ));
    }
    if let Some(role) = context.get("role") {
        validate_role(role).map_err(|reason| Error::invalid("context.role", reason))?;
    }
    if let Some(executor) = context.get("executor")
        && !EXECUTORS.contains(&executor.as_str())
    {
        return Err(Error::invalid(
            "context.executor",
            format!("{executor:?} is not an executor: use one of {}", EXECUTORS.join(", ")),
        ));
    }
    Ok(())
}

/// The executors an agent can run (`context.executor`).
pub const EXECUTORS: &[&str] = &["shell", "llm", "noop"];

/// A role routes a task to `loom.tasks.{project}.{role}`, so it must be one subject token:
/// `^[a-z0-9][a-z0-9_-]{0,62}$` (lower case; `QA` is refused, `qa` is fine).
pub fn validate_role(role: &str) -> Result<(), String> {
    let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-';
    let bytes = role.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|&b| ok(b));
    if valid { Ok(()) } else { Err(format!("{role:?} must match ^[a-z0-9][a-z0-9_-]{{0,62}}$ (lower case)")) }
}

/// Cuts free text to `limits::REASON_MAX` bytes on a character boundary.
pub fn truncate_reason(reason: &str) -> String {
    if reason.len() <= limits::REASON_MAX {
        return reason.to_owned();
    }
    let mut end = limits::REASON_MAX;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &reason[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> BeadId {
        BeadId::parse("t-1").unwrap()
    }

    #[test]
    fn legal_transitions() {
        use Status::*;
        let legal = [
            (Open, InProgress),
            (InProgress, Closed),
            (InProgress, Open),
            (InProgress, Blocked),
            (Blocked, Open),
            (Open, Closed),
            (Blocked, Closed),
            (Closed, Open),
        ];
        for &from in Status::ALL {
            for &to in Status::ALL {
                let res = from.check_transition(to, &id());
                assert_eq!(res.is_ok(), legal.contains(&(from, to)), "{from} -> {to}: {res:?}");
            }
        }
    }

    #[test]
    fn illegal_transition_message_is_clear() {
        let err = Status::Closed.check_transition(Status::InProgress, &id()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bead t-1: cannot go from closed to in_progress: a closed bead must be reopened first"
        );
    }

    #[test]
    fn priorities() {
        assert_eq!("P1".parse::<Priority>().unwrap().get(), 1);
        assert_eq!("3".parse::<Priority>().unwrap().get(), 3);
        let err = Priority::try_from(7).unwrap_err().to_string();
        assert_eq!(err, "invalid priority: 7 is out of range: use 0 (P0, most urgent) to 3 (P3)");
        assert!("high".parse::<Priority>().is_err());
        assert!(Priority::try_from(-1).is_err());
    }

    #[test]
    fn enums_parse_their_names() {
        for t in BeadType::ALL {
            assert_eq!(t.as_str().parse::<BeadType>().unwrap(), *t);
        }
        assert_eq!(
            "story".parse::<BeadType>().unwrap_err().to_string(),
            "invalid bead type: \"story\" is not one of task, bug, feature, epic, chore, decision"
        );
    }

    #[test]
    fn new_bead_limits() {
        let p = ProjectId::parse("p").unwrap();
        assert!(NewBead::new(p.clone(), "ok").validate().is_ok());
        assert!(NewBead::new(p.clone(), "  ").validate().is_err());
        let mut big = NewBead::new(p.clone(), "big");
        big.description = "x".repeat(limits::DESCRIPTION_MAX + 1);
        assert!(big.validate().unwrap_err().to_string().contains("256 KiB"));
        let mut tags = NewBead::new(p, "tags");
        tags.tags = vec![String::new()];
        assert!(tags.validate().is_err());
    }

    #[test]
    fn reasons_are_truncated_on_char_boundaries() {
        let long = "é".repeat(limits::REASON_MAX);
        let cut = truncate_reason(&long);
        assert!(cut.len() <= limits::REASON_MAX + '…'.len_utf8());
    }
}
