//! What an import does to the beads it names, independent of the backend: backends load (and
//! lock) the beads of the batch that exist, let [`plan`] decide, then write its rows, edges and
//! events in the same transaction, checking in the database only the edges an update adds to a
//! bead that existed before (the only ones that can close a cycle through stored edges).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use loom_domain::graph::Graph;
use loom_domain::{Bead, BeadId, EventKind, ProjectId, Status};
use serde_json::json;

use crate::{Error, ImportAction, ImportBead, NewEvent, Result, micros, transitions};

/// The changes one import batch makes.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// One per bead of the batch, in order.
    pub actions: Vec<ImportAction>,
    /// Beads to insert, with their `blocked_by` edges.
    pub inserts: Vec<Bead>,
    /// Existing beads to write back, with their edge changes.
    pub updates: Vec<Update>,
    /// `bead.created` / `bead.updated` events of the above.
    pub events: Vec<NewEvent>,
}

/// An existing bead that the import changes.
#[derive(Debug)]
pub(crate) struct Update {
    pub bead: Bead,
    /// Edges to add: each is checked for a cycle against the stored graph.
    pub added: Vec<BeadId>,
    pub removed: Vec<BeadId>,
}

/// Every id a batch names as a parent or blocker that is not itself in the batch.
pub(crate) fn outside_refs(beads: &[ImportBead]) -> BTreeSet<String> {
    let ids: BTreeSet<&str> = beads.iter().map(|b| b.id.as_str()).collect();
    beads
        .iter()
        .flat_map(|b| b.parent.iter().chain(&b.blocked_by))
        .map(BeadId::as_str)
        .filter(|id| !ids.contains(id))
        .map(str::to_owned)
        .collect()
}

/// Decides what importing `beads` into `project` does. `existing` holds the beads of the batch
/// already stored (in any project), `known` the ids of [`outside_refs`] that exist.
pub(crate) fn plan(
    project: &ProjectId,
    beads: Vec<ImportBead>,
    existing: &BTreeMap<String, Bead>,
    known: &BTreeSet<String>,
) -> Result<Plan> {
    let mut ids = BTreeSet::new();
    for b in &beads {
        b.validate()?;
        if !ids.insert(b.id.as_str()) {
            return Err(loom_domain::Error::Invalid {
                field: "id",
                reason: format!("bead {} is twice in the batch", b.id),
            }
            .into());
        }
    }
    for b in &beads {
        let exists = |id: &BeadId| ids.contains(id.as_str()) || known.contains(id.as_str());
        if let Some(p) = b.parent.as_ref().filter(|p| !exists(p)) {
            return Err(Error::not_found("parent bead", p));
        }
        if let Some(x) = b.blocked_by.iter().find(|x| !exists(x)) {
            return Err(Error::MissingBlocker { bead: b.id.to_string(), blocker: x.to_string() });
        }
        if b.blocked_by.contains(&b.id) {
            let path = format!("{0} -> {0}", b.id);
            return Err(loom_domain::Error::Cycle { bead: b.id.to_string(), blocker: b.id.to_string(), path }.into());
        }
    }
    let mut plan = Plan::default();
    for b in beads {
        match existing.get(b.id.as_str()) {
            Some(e) if &e.project_id != project => {
                return Err(Error::Conflict(format!(
                    "bead {} belongs to project {}, not {project}",
                    e.id, e.project_id
                )));
            }
            Some(e) if e.status == Status::InProgress => plan.actions.push(ImportAction::Refused(format!(
                "bead {} is in_progress under a Loom dispatch; the import leaves it as it is",
                e.id
            ))),
            Some(e) => update(&mut plan, e, b),
            None => {
                let bead = fresh(project, b);
                plan.events.push(transitions::created_event(&bead));
                plan.inserts.push(bead);
                plan.actions.push(ImportAction::Created);
            }
        }
    }
    check_new_cycles(&plan.inserts, existing)?;
    Ok(plan)
}

fn sorted(mut ids: Vec<BeadId>) -> Vec<BeadId> {
    ids.sort();
    ids.dedup();
    ids
}

fn closed_at(b: &ImportBead) -> Option<DateTime<Utc>> {
    (b.status == Status::Closed).then(|| micros(b.closed_at.unwrap_or(b.updated_at)))
}

fn fresh(project: &ProjectId, b: ImportBead) -> Bead {
    Bead {
        project_id: project.clone(),
        closed_at: closed_at(&b),
        created_at: micros(b.created_at),
        updated_at: micros(b.updated_at),
        blocked_by: sorted(b.blocked_by),
        id: b.id,
        title: b.title,
        description: b.description,
        bead_type: b.bead_type,
        priority: b.priority,
        status: b.status,
        assignee: b.assignee,
        tags: b.tags,
        context: b.context,
        parent: b.parent,
        attempts: 0,
        last_error: None,
        close_reason: b.close_reason,
        dispatch_id: None,
        lease_expires_at: None,
        started_at: None,
        started_by: None,
        not_before: None,
        version: 1,
    }
}

/// Overwrites what an import owns on an existing bead; leaves it alone when nothing differs.
fn update(plan: &mut Plan, e: &Bead, b: ImportBead) {
    let mut target = e.clone();
    let mut changed: Vec<&str> = Vec::new();
    macro_rules! set {
        ($field:ident, $value:expr) => {{
            let v = $value;
            if target.$field != v {
                target.$field = v;
                changed.push(stringify!($field));
            }
        }};
    }
    set!(closed_at, closed_at(&b));
    set!(created_at, micros(b.created_at));
    set!(updated_at, micros(b.updated_at));
    set!(blocked_by, sorted(b.blocked_by));
    set!(title, b.title);
    set!(description, b.description);
    set!(bead_type, b.bead_type);
    set!(priority, b.priority);
    set!(status, b.status);
    set!(assignee, b.assignee);
    set!(tags, b.tags);
    set!(context, b.context);
    set!(parent, b.parent);
    set!(close_reason, b.close_reason);
    if changed.is_empty() {
        plan.actions.push(ImportAction::Unchanged);
        return;
    }
    if target.status != e.status {
        target.last_error = None;
        target.not_before = None;
    }
    target.version += 1;
    let added = target.blocked_by.iter().filter(|x| !e.blocked_by.contains(x)).cloned().collect();
    let removed = e.blocked_by.iter().filter(|x| !target.blocked_by.contains(x)).cloned().collect();
    let description = format!("bead {} updated by an import: {}", target.id, changed.join(", "));
    let data = json!({ "changed": changed, "import": true });
    plan.events.push(NewEvent::for_bead(&target, EventKind::BeadUpdated, description, data));
    plan.updates.push(Update { bead: target, added, removed });
    plan.actions.push(ImportAction::Updated);
}

/// A new bead has no stored dependant, so a cycle through one runs through new beads only:
/// checked here, in memory.
fn check_new_cycles(inserts: &[Bead], existing: &BTreeMap<String, Bead>) -> Result<()> {
    let new: BTreeSet<&str> = inserts.iter().map(|b| b.id.as_str()).collect();
    let mut graph = Graph::new();
    for b in inserts {
        for x in b.blocked_by.iter().filter(|x| new.contains(x.as_str()) && !existing.contains_key(x.as_str())) {
            if let Err(path) = graph.add_edge(b.id.clone(), x.clone()) {
                let path = std::iter::once(b.id.to_string())
                    .chain(path.iter().map(BeadId::to_string))
                    .collect::<Vec<_>>()
                    .join(" -> ");
                return Err(loom_domain::Error::Cycle { bead: b.id.to_string(), blocker: x.to_string(), path }.into());
            }
        }
    }
    Ok(())
}

/// The highest sequence number among `ids` that the id generator could one day draw
/// (`{prefix}-{base36(seq)}` with `seq` a positive `i64`): the counter is moved past it so a
/// bead created later never gets an imported bead's id.
pub(crate) fn highest_seq(ids: &[&BeadId]) -> Option<i64> {
    ids.iter()
        .filter_map(|id| id.as_str().rsplit_once('-'))
        .filter_map(|(_, n)| u64::from_str_radix(n, 36).ok())
        .filter_map(|n| i64::try_from(n).ok())
        .max()
}
