//! What the templates show, computed from domain values: board columns, cards, legal actions,
//! times, and the parsed form bodies.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use loom_domain::{Bead, BeadId, BeadType, DispatchState, Status};

/// An `application/x-www-form-urlencoded` body (repeated names kept, in order).
#[derive(Debug, Default)]
pub(crate) struct FormData(pub Vec<(String, String)>);

impl FormData {
    pub(crate) fn parse(body: &[u8]) -> Self {
        FormData(serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).unwrap_or_default())
    }

    /// The first value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every value of `name`.
    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// The board's columns, left to right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Column {
    /// Open but not ready: waiting on a blocker, on its retry backoff, or its project is paused.
    Open,
    /// Open and ready: the dispatcher will hand it to an agent when a slot is free.
    Ready,
    /// Dispatched; its task waits for an agent slot.
    Queued,
    /// An agent started it.
    Running,
    Blocked,
    Closed,
}

impl Column {
    pub(crate) const ALL: [Column; 6] =
        [Column::Open, Column::Ready, Column::Queued, Column::Running, Column::Blocked, Column::Closed];

    pub(crate) fn title(self) -> &'static str {
        match self {
            Column::Open => "Open",
            Column::Ready => "Ready",
            Column::Queued => "Queued",
            Column::Running => "Running",
            Column::Blocked => "Blocked",
            Column::Closed => "Closed",
        }
    }

    pub(crate) fn key(self) -> &'static str {
        match self {
            Column::Open => "open",
            Column::Ready => "ready",
            Column::Queued => "queued",
            Column::Running => "running",
            Column::Blocked => "blocked",
            Column::Closed => "closed",
        }
    }

    /// The column of a bead, given the set of its project's ready beads (`Store::list_ready`,
    /// the reference definition).
    pub(crate) fn of(bead: &Bead, ready: &HashSet<BeadId>) -> Column {
        match (bead.status, bead.dispatch_state()) {
            (Status::InProgress, Some(DispatchState::Running)) => Column::Running,
            (Status::InProgress, _) => Column::Queued,
            (Status::Blocked, _) => Column::Blocked,
            (Status::Closed, _) => Column::Closed,
            (Status::Open, _) if ready.contains(&bead.id) => Column::Ready,
            (Status::Open, _) => Column::Open,
        }
    }
}

/// A button for a status change the status machine allows from where the bead is.
#[derive(Clone, Debug)]
pub(crate) struct Action {
    /// The path segment under `/ui/beads/{id}/` (and the API's).
    pub action: &'static str,
    pub label: &'static str,
}

/// The legal hand-made transitions of a bead in `column` (`Status::check_transition` and the
/// store's reopen/redispatch rules): close what is not closed, redispatch what is dispatched,
/// reopen what is blocked or closed.
pub(crate) fn actions(column: Column) -> Vec<Action> {
    let close = Action { action: "close", label: "Close" };
    let reopen = Action { action: "reopen", label: "Reopen" };
    let redispatch = Action { action: "redispatch", label: "Redispatch" };
    match column {
        Column::Open | Column::Ready => vec![close],
        Column::Queued | Column::Running => vec![redispatch, close],
        Column::Blocked => vec![Action { label: "Unblock", ..reopen }, close],
        Column::Closed => vec![reopen],
    }
}

/// A bead on the board or in the list.
#[derive(Clone, Debug)]
pub(crate) struct Card {
    pub id: String,
    pub title: String,
    pub priority: String,
    pub prio_class: String,
    pub bead_type: &'static str,
    pub assignee: Option<String>,
    pub tags: Vec<String>,
    /// Why it is blocked (or failed last), shown on the card.
    pub reason: Option<String>,
    pub column: &'static str,
    pub actions: Vec<Action>,
}

impl Card {
    pub(crate) fn of(bead: &Bead, column: Column) -> Card {
        let reason = match column {
            Column::Blocked | Column::Open | Column::Ready => bead.last_error.as_deref().map(short),
            _ => None,
        };
        Card {
            id: bead.id.to_string(),
            title: bead.title.clone(),
            priority: bead.priority.to_string(),
            prio_class: format!("p{}", bead.priority.get()),
            bead_type: bead.bead_type.as_str(),
            assignee: bead.assignee.clone().or_else(|| bead.started_by.clone()),
            tags: bead.tags.clone(),
            reason,
            column: column.title(),
            actions: actions(column),
        }
    }
}

/// The first 160 characters of a reason.
fn short(s: &str) -> String {
    let mut out: String = s.chars().take(160).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// The search box: a bead matches when its id or title contains every word (any case).
pub(crate) fn matches(bead: &Bead, query: &str) -> bool {
    let hay = format!("{} {}", bead.id, bead.title).to_lowercase();
    query.split_whitespace().all(|w| hay.contains(&w.to_lowercase()))
}

/// One `<option>`.
#[derive(Clone, Debug)]
pub(crate) struct Choice {
    pub value: String,
    pub selected: bool,
}

pub(crate) fn type_choices(selected: Option<&str>) -> Vec<Choice> {
    BeadType::ALL.iter().map(|t| Choice { value: t.as_str().into(), selected: selected == Some(t.as_str()) }).collect()
}

pub(crate) fn priority_choices(selected: u8) -> Vec<Choice> {
    (0..=3u8).map(|p| Choice { value: p.to_string(), selected: p == selected }).collect()
}

/// A time for people (UTC, to the second) and its ISO form for `<time datetime>`.
pub(crate) fn when(t: DateTime<Utc>) -> (String, String) {
    (t.format("%Y-%m-%d %H:%M:%S UTC").to_string(), t.to_rfc3339())
}

/// Percent-encodes a query value.
pub(crate) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use loom_domain::DispatchId;

    fn bead(status: Status) -> Bead {
        super::super::graph::tests::bead("dm-1", "t", &[], status)
    }

    #[test]
    fn columns_follow_status_dispatch_and_readiness() {
        let ready: HashSet<BeadId> = [BeadId::parse("dm-1").unwrap()].into();
        assert_eq!(Column::of(&bead(Status::Open), &ready), Column::Ready);
        assert_eq!(Column::of(&bead(Status::Open), &HashSet::new()), Column::Open);
        let mut queued = bead(Status::InProgress);
        queued.dispatch_id = Some(DispatchId::parse("d-1").unwrap());
        assert_eq!(Column::of(&queued, &ready), Column::Queued);
        queued.started_at = Some(Utc::now());
        assert_eq!(Column::of(&queued, &ready), Column::Running);
        assert_eq!(Column::of(&bead(Status::Blocked), &ready), Column::Blocked);
        assert_eq!(Column::of(&bead(Status::Closed), &ready), Column::Closed);
    }

    #[test]
    fn only_legal_transitions_are_offered() {
        let id = BeadId::parse("dm-1").unwrap();
        let target = |a: &str| match a {
            "close" => Status::Closed,
            _ => Status::Open,
        };
        for (column, from) in [
            (Column::Open, Status::Open),
            (Column::Ready, Status::Open),
            (Column::Queued, Status::InProgress),
            (Column::Running, Status::InProgress),
            (Column::Blocked, Status::Blocked),
            (Column::Closed, Status::Closed),
        ] {
            for a in actions(column) {
                assert!(from.check_transition(target(a.action), &id).is_ok(), "{column:?} offers {}", a.action);
                // Reopen is refused by the store for a running bead; redispatch only applies to one.
                assert!(a.action != "reopen" || from != Status::InProgress);
                assert!(a.action != "redispatch" || from == Status::InProgress);
            }
        }
    }

    #[test]
    fn search_matches_every_word_of_id_or_title() {
        let mut b = bead(Status::Open);
        b.title = "Fix the Login page".into();
        assert!(matches(&b, "login fix") && matches(&b, "DM-1") && !matches(&b, "logout"));
    }

    #[test]
    fn forms_keep_repeated_names() {
        let f = FormData::parse(b"ids=a-1&ids=a-2&action=close&t=x+y%21");
        assert_eq!(f.all("ids").collect::<Vec<_>>(), ["a-1", "a-2"]);
        assert_eq!(f.get("t"), Some("x y!"));
        assert_eq!(enc("a b&c"), "a%20b%26c");
    }
}
