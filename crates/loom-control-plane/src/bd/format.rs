//! One bd issue line ⇄ one Loom bead.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use loom_domain::{Bead, BeadId, BeadType, ContextMap, Priority, Status};
use loom_store::ImportBead;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The context key holding the issue as bd wrote it (less what Loom keeps in its own fields).
pub(crate) const ISSUE_KEY: &str = "bd.issue";
/// The context key of an external-reference bead: the bd id it stands for.
pub(crate) const EXTERNAL_KEY: &str = "bd.external";
/// Long text fields kept under their own key (`bd.notes`, …), where agents read them.
const TEXT_FIELDS: [&str; 3] = ["notes", "design", "acceptance_criteria"];
/// The field an export puts a Loom bead's own context in (bd ignores fields it does not know).
const LOOM_CONTEXT: &str = "loom_context";
/// Marks, in the kept dependencies, the bead a `blocks` / `parent-child` edge became.
const LOOM_TARGET: &str = "_loom";

pub(crate) const BLOCKS: &str = "blocks";
pub(crate) const PARENT_CHILD: &str = "parent-child";

/// The Loom status of a bd status: `open` and `closed` are themselves and a `tombstone` (deleted)
/// is closed; every other (`in_progress`, `hooked`, `pinned`, `deferred`, `blocked`, custom ones)
/// is work bd holds elsewhere or on ice, so it is `blocked` in Loom: kept, not dispatched.
/// (`in_progress` in Loom means a Loom dispatch with a lease; an import never makes one.)
pub fn loom_status(bd: &str) -> Status {
    match bd {
        "open" => Status::Open,
        "closed" | "tombstone" => Status::Closed,
        _ => Status::Blocked,
    }
}

/// The Loom type of a bd issue type: Loom's own names are themselves, any other is a `task`.
pub fn loom_type(bd: &str) -> BeadType {
    bd.parse().unwrap_or(BeadType::Task)
}

/// The Loom priority of a bd priority (0–4): P4 (backlog) is P3, Loom's lowest.
pub fn loom_priority(bd: i64) -> Result<Priority, String> {
    match bd {
        0..=3 => Priority::try_from(bd).map_err(|e| e.to_string()),
        4 => Ok(Priority::try_from(3).expect("3 is a priority")),
        _ => Err(format!("priority {bd} is out of bd's range 0-4")),
    }
}

/// What pass one reads of a line: its id and the ids it points at.
#[derive(Debug)]
pub(crate) struct Head {
    pub id: String,
    /// `(depends_on_id, type)` of each dependency, then `(parent, "parent-child")`.
    pub edges: Vec<(String, String)>,
}

#[derive(Deserialize)]
struct RawHead {
    id: Option<Value>,
    #[serde(default)]
    parent: Option<Value>,
    #[serde(default)]
    dependencies: Option<Vec<RawDep>>,
}

#[derive(Deserialize)]
struct RawDep {
    depends_on_id: Option<String>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

/// Reads the id and edges of a line, or says why it is not a bd issue.
pub(crate) fn head(line: &[u8]) -> Result<Head, String> {
    let raw: RawHead = serde_json::from_slice(line).map_err(|e| format!("not a JSON issue object: {e}"))?;
    let id = match raw.id {
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        Some(Value::String(_)) | None | Some(Value::Null) => return Err("the issue has no `id`".into()),
        Some(other) => return Err(format!("`id` must be a string, not {other}")),
    };
    let mut edges = Vec::new();
    for (n, d) in raw.dependencies.unwrap_or_default().into_iter().enumerate() {
        let target = d
            .depends_on_id
            .filter(|t| !t.is_empty())
            .ok_or_else(|| format!("dependency {n} has no `depends_on_id`"))?;
        edges.push((target, d.kind.unwrap_or_else(|| BLOCKS.to_owned())));
    }
    match raw.parent {
        Some(Value::String(p)) if !p.is_empty() => edges.push((p, PARENT_CHILD.to_owned())),
        Some(Value::String(_) | Value::Null) | None => {}
        Some(other) => return Err(format!("`parent` must be a string, not {other}")),
    }
    Ok(Head { id, edges })
}

/// What becomes of one edge of an issue.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Edge {
    /// A `blocks` / `parent-child` edge that Loom keeps as its own, to this bead.
    Loom(BeadId),
    /// Kept with the issue only (a type Loom does not act on).
    Keep,
    /// Left out (a dangling edge with `--dangling skip`).
    Drop,
}

fn take_string(obj: &mut Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("`{key}` must be a string, not {other}")),
    }
}

fn time(obj: &Map<String, Value>, key: &str) -> Result<Option<DateTime<Utc>>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| format!("`{key}` {s:?} is not an RFC 3339 time: {e}")),
        Some(other) => Err(format!("`{key}` must be a time string, not {other}")),
    }
}

/// Converts one line into the bead to import as `id`; `edge(target, type)` says what each edge
/// becomes (it is asked once per edge, in order).
pub(crate) fn to_import(
    line: &[u8],
    id: BeadId,
    edge: &mut dyn FnMut(&str, &str) -> Edge,
) -> Result<ImportBead, String> {
    let mut obj: Map<String, Value> =
        serde_json::from_slice(line).map_err(|e| format!("not a JSON issue object: {e}"))?;
    let title = take_string(&mut obj, "title")?.unwrap_or_default();
    let description = take_string(&mut obj, "description")?.unwrap_or_default();
    let assignee = take_string(&mut obj, "assignee")?.filter(|a| !a.is_empty());
    let close_reason = take_string(&mut obj, "close_reason")?.filter(|r| !r.is_empty());
    let tags = match obj.remove("labels") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value::<Vec<String>>(v).map_err(|e| format!("`labels` must be strings: {e}"))?,
    };
    let mut context = match obj.remove(LOOM_CONTEXT) {
        None | Some(Value::Null) => ContextMap::new(),
        Some(v) => {
            serde_json::from_value(v).map_err(|e| format!("`{LOOM_CONTEXT}` must map strings to strings: {e}"))?
        }
    };
    context.retain(|k, _| !k.starts_with("bd."));
    for field in TEXT_FIELDS {
        if let Some(Value::String(s)) = obj.get(field) {
            if !s.is_empty() {
                context.insert(format!("bd.{field}"), s.clone());
            }
            obj.remove(field);
        }
    }
    let status = match obj.get("status") {
        None | Some(Value::Null) => Status::Open,
        Some(Value::String(s)) if s.is_empty() => Status::Open,
        Some(Value::String(s)) => loom_status(s),
        Some(other) => return Err(format!("`status` must be a string, not {other}")),
    };
    let priority = match obj.get("priority") {
        None | Some(Value::Null) => Priority::DEFAULT,
        Some(v) => loom_priority(v.as_i64().ok_or_else(|| format!("`priority` must be an integer, not {v}"))?)?,
    };
    let bead_type = match obj.get("issue_type") {
        None | Some(Value::Null) => BeadType::Task,
        Some(Value::String(s)) => loom_type(s),
        Some(other) => return Err(format!("`issue_type` must be a string, not {other}")),
    };
    let created_at = time(&obj, "created_at")?.ok_or("the issue has no `created_at`")?;
    let updated_at = time(&obj, "updated_at")?.unwrap_or(created_at);
    let closed_at = time(&obj, "closed_at")?;
    let (parent, blocked_by) = edges(&mut obj, edge)?;
    context.insert(ISSUE_KEY.to_owned(), Value::Object(obj).to_string());
    let bead = ImportBead {
        id,
        title,
        description,
        bead_type,
        priority,
        status,
        assignee,
        tags,
        context,
        parent,
        blocked_by,
        close_reason,
        created_at,
        updated_at,
        closed_at,
    };
    bead.validate().map_err(|e| e.to_string())?;
    Ok(bead)
}

/// Applies `edge` to the dependencies and `parent` of `obj`, marking each one Loom keeps with its
/// bead and dropping the dropped ones; returns the parent and the blockers.
fn edges(
    obj: &mut Map<String, Value>,
    edge: &mut dyn FnMut(&str, &str) -> Edge,
) -> Result<(Option<BeadId>, Vec<BeadId>), String> {
    let mut parent = None;
    let mut blocked_by = Vec::new();
    if let Some(Value::Array(deps)) = obj.get_mut("dependencies") {
        let mut kept = Vec::with_capacity(deps.len());
        for mut d in std::mem::take(deps) {
            let target = d.get("depends_on_id").and_then(Value::as_str).unwrap_or_default().to_owned();
            let kind = d.get("type").and_then(Value::as_str).unwrap_or(BLOCKS).to_owned();
            match edge(&target, &kind) {
                Edge::Drop => continue,
                Edge::Keep => {}
                Edge::Loom(id) => {
                    if kind == BLOCKS {
                        blocked_by.push(id.clone());
                    } else if parent.is_none() {
                        parent = Some(id.clone());
                    } else {
                        kept.push(d);
                        continue;
                    }
                    d[LOOM_TARGET] = json!(id.as_str());
                }
            }
            kept.push(d);
        }
        *deps = kept;
    }
    if let Some(Value::String(p)) = obj.get("parent").cloned() {
        match edge(&p, PARENT_CHILD) {
            Edge::Drop => {
                obj.remove("parent");
            }
            Edge::Keep => {}
            Edge::Loom(id) => {
                parent.get_or_insert(id);
            }
        }
    }
    Ok((parent, blocked_by))
}

/// The blockers of `bead` that an export must look up: edges added in Loom (not kept from bd),
/// whose bd id is their bead's own if it was imported.
pub fn uncovered_blockers(bead: &Bead) -> Vec<BeadId> {
    let kept = kept_issue(bead);
    let covered = covered(&kept, BLOCKS);
    let mut out: Vec<BeadId> = bead.blocked_by.iter().filter(|b| !covered.contains(&b.as_str())).cloned().collect();
    if let Some(p) = bead.parent.as_ref().filter(|p| !covered_parent(&kept, p)) {
        out.push(p.clone());
    }
    out
}

/// The id an export gives `bead`: the bd id it was imported with, else its own.
pub fn bd_id(bead: &Bead) -> String {
    match kept_issue(bead).get("id").and_then(Value::as_str) {
        Some(id) => id.to_owned(),
        None => bead.context.get(EXTERNAL_KEY).cloned().unwrap_or_else(|| bead.id.to_string()),
    }
}

fn kept_issue(bead: &Bead) -> Map<String, Value> {
    bead.context
        .get(ISSUE_KEY)
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .and_then(|v| match v {
            Value::Object(m) => Some(m),
            _ => None,
        })
        .unwrap_or_default()
}

fn covered<'a>(kept: &'a Map<String, Value>, kind: &str) -> Vec<&'a str> {
    kept.get("dependencies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|d| d.get("type").and_then(Value::as_str).unwrap_or(BLOCKS) == kind)
        .filter_map(|d| d.get(LOOM_TARGET).and_then(Value::as_str))
        .collect()
}

fn covered_parent(kept: &Map<String, Value>, parent: &BeadId) -> bool {
    covered(kept, PARENT_CHILD).contains(&parent.as_str())
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The time as kept if it still names `current` at store precision, else `current`.
fn same_time(kept: Option<&Value>, current: DateTime<Utc>) -> Value {
    use chrono::SubsecRound;
    match kept.and_then(Value::as_str) {
        Some(s) if DateTime::parse_from_rfc3339(s).is_ok_and(|t| t.with_timezone(&Utc).trunc_subsecs(6) == current) => {
            json!(s)
        }
        _ => json!(rfc3339(current)),
    }
}

/// The bd issue line of `bead` (without the newline), or `None` for an external-reference bead.
/// `bd_ids` holds the bd id of each of [`uncovered_blockers`] (its own id if it has none).
pub fn export_line(bead: &Bead, bd_ids: &BTreeMap<BeadId, String>) -> Option<String> {
    if bead.context.contains_key(EXTERNAL_KEY) {
        return None;
    }
    let mut obj = kept_issue(bead);
    let id = obj.get("id").and_then(Value::as_str).map_or_else(|| bead.id.to_string(), str::to_owned);
    obj.insert("id".into(), json!(id));
    obj.insert("title".into(), json!(bead.title));
    set_or_remove(&mut obj, "description", (!bead.description.is_empty()).then(|| json!(bead.description)));
    for field in TEXT_FIELDS {
        if let Some(text) = bead.context.get(&format!("bd.{field}")) {
            obj.insert(field.into(), json!(text));
        }
    }
    // A field the bd line left out (its default) stays out while Loom holds the default. (A bead
    // made in Loom always gets them: bd reads a missing priority as P0.)
    let from_bd = bead.context.contains_key(ISSUE_KEY);
    let status = match obj.get("status").and_then(Value::as_str) {
        Some(s) if loom_status(s) == bead.status && !s.is_empty() => Some(s.to_owned()),
        None if from_bd && bead.status == Status::Open => None,
        _ => Some(bead.status.as_str().to_owned()),
    };
    set_or_remove(&mut obj, "status", status.map(Value::from));
    let priority = match obj.get("priority").and_then(Value::as_i64) {
        Some(p) if loom_priority(p).ok() == Some(bead.priority) => Some(p),
        None if from_bd && !obj.contains_key("priority") && bead.priority == Priority::DEFAULT => None,
        _ => Some(i64::from(bead.priority.get())),
    };
    set_or_remove(&mut obj, "priority", priority.map(Value::from));
    let kind = match obj.get("issue_type").and_then(Value::as_str) {
        Some(t) if loom_type(t) == bead.bead_type => Some(t.to_owned()),
        None if from_bd && !obj.contains_key("issue_type") && bead.bead_type == BeadType::Task => None,
        _ => Some(bead.bead_type.as_str().to_owned()),
    };
    set_or_remove(&mut obj, "issue_type", kind.map(Value::from));
    set_or_remove(&mut obj, "assignee", bead.assignee.as_ref().map(|a| json!(a)));
    set_or_remove(&mut obj, "labels", (!bead.tags.is_empty()).then(|| json!(bead.tags)));
    obj.insert("created_at".into(), same_time(obj.get("created_at"), bead.created_at));
    obj.insert("updated_at".into(), same_time(obj.get("updated_at"), bead.updated_at));
    let closed = bead.closed_at.filter(|_| bead.status == Status::Closed).map(|t| same_time(obj.get("closed_at"), t));
    set_or_remove(&mut obj, "closed_at", closed);
    set_or_remove(&mut obj, "close_reason", bead.close_reason.as_ref().map(|r| json!(r)));
    let bd_id = |b: &BeadId| bd_ids.get(b).cloned().unwrap_or_else(|| b.to_string());
    if obj.contains_key("parent") {
        set_or_remove(&mut obj, "parent", bead.parent.as_ref().map(|p| json!(bd_id(p))));
    }
    let deps = dependencies(bead, &obj, &id, &bd_id);
    set_or_remove(&mut obj, "dependencies", (!deps.is_empty()).then_some(Value::Array(deps)));
    let own: Map<String, Value> =
        bead.context.iter().filter(|(k, _)| !k.starts_with("bd.")).map(|(k, v)| (k.clone(), json!(v))).collect();
    set_or_remove(&mut obj, LOOM_CONTEXT, (!own.is_empty()).then_some(Value::Object(own)));
    Some(Value::Object(obj).to_string())
}

fn set_or_remove(obj: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    match value {
        Some(v) => {
            obj.insert(key.into(), v);
        }
        None => {
            obj.remove(key);
        }
    }
}

/// The kept dependencies that still hold (a `blocks` / `parent-child` edge removed in Loom is
/// gone), then one for each edge added in Loom.
fn dependencies(bead: &Bead, obj: &Map<String, Value>, id: &str, bd_id: &dyn Fn(&BeadId) -> String) -> Vec<Value> {
    let mut out = Vec::new();
    let stamp = rfc3339(bead.updated_at);
    for d in obj.get("dependencies").and_then(Value::as_array).into_iter().flatten() {
        let mut d = d.clone();
        let kind = d.get("type").and_then(Value::as_str).unwrap_or(BLOCKS).to_owned();
        let target = d.as_object_mut().and_then(|m| m.remove(LOOM_TARGET));
        let holds = match (target.as_ref().and_then(Value::as_str), kind.as_str()) {
            (None, _) => true,
            (Some(t), BLOCKS) => bead.blocked_by.iter().any(|b| b.as_str() == t),
            (Some(t), _) => bead.parent.as_ref().is_some_and(|p| p.as_str() == t),
        };
        if holds {
            out.push(d);
        }
    }
    let blocks = covered(obj, BLOCKS);
    for b in bead.blocked_by.iter().filter(|b| !blocks.contains(&b.as_str())) {
        out.push(json!({ "issue_id": id, "depends_on_id": bd_id(b), "type": BLOCKS, "created_at": stamp }));
    }
    if let Some(p) = bead.parent.as_ref().filter(|p| !covered_parent(obj, p)) {
        out.push(json!({ "issue_id": id, "depends_on_id": bd_id(p), "type": PARENT_CHILD, "created_at": stamp }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_types_and_priorities_map() {
        assert_eq!(loom_status("open"), Status::Open);
        assert_eq!(loom_status("tombstone"), Status::Closed);
        for s in ["in_progress", "hooked", "pinned", "deferred", "blocked", "review", "custom"] {
            assert_eq!(loom_status(s), Status::Blocked, "{s}");
        }
        assert_eq!(loom_type("epic"), BeadType::Epic);
        assert_eq!(loom_type("convoy"), BeadType::Task);
        assert_eq!(loom_priority(4).unwrap().get(), 3);
        assert!(loom_priority(5).unwrap_err().contains("0-4"));
    }

    #[test]
    fn heads_name_their_edges_and_bad_lines_say_why() {
        let h = head(br#"{"id":"bd-1","parent":"bd-0","dependencies":[{"depends_on_id":"bd-2","type":"related"}]}"#)
            .unwrap();
        assert_eq!(h.id, "bd-1");
        assert_eq!(h.edges, [("bd-2".into(), "related".into()), ("bd-0".into(), PARENT_CHILD.into())]);
        assert!(head(b"{not json").unwrap_err().starts_with("not a JSON issue object"));
        assert_eq!(head(br#"{"title":"x"}"#).unwrap_err(), "the issue has no `id`");
        assert!(head(br#"{"id":7}"#).unwrap_err().contains("must be a string"));
    }

    fn bead(context: ContextMap) -> Bead {
        let t = chrono::TimeZone::timestamp_opt(&Utc, 1_700_000_000, 0).unwrap();
        Bead {
            id: BeadId::parse("lm-1").unwrap(),
            project_id: loom_domain::ProjectId::parse("p").unwrap(),
            title: "made in Loom".into(),
            description: String::new(),
            bead_type: BeadType::Task,
            priority: Priority::DEFAULT,
            status: Status::InProgress,
            assignee: None,
            tags: Vec::new(),
            context,
            parent: None,
            blocked_by: vec![BeadId::parse("lm-0").unwrap()],
            attempts: 1,
            last_error: None,
            close_reason: None,
            dispatch_id: None,
            lease_expires_at: None,
            started_at: None,
            started_by: None,
            not_before: None,
            created_at: t,
            updated_at: t,
            closed_at: None,
            version: 3,
        }
    }

    #[test]
    fn a_bead_made_in_loom_exports_every_field_bd_needs() {
        let mut context = ContextMap::new();
        context.insert("role".into(), "qa".into());
        let ids = BTreeMap::from([(BeadId::parse("lm-0").unwrap(), "bd-77".to_owned())]);
        let line: Value = serde_json::from_str(&export_line(&bead(context), &ids).unwrap()).unwrap();
        assert_eq!(line["id"], "lm-1");
        assert_eq!((line["status"].as_str(), line["priority"].as_i64()), (Some("in_progress"), Some(2)));
        assert_eq!(line["issue_type"], "task");
        assert_eq!(line["dependencies"][0]["depends_on_id"], "bd-77", "an edge names the blocker's bd id");
        assert_eq!(line["dependencies"][0]["type"], BLOCKS);
        assert_eq!(line["loom_context"]["role"], "qa");
        let mut external = ContextMap::new();
        external.insert(EXTERNAL_KEY.into(), "ext-1".into());
        assert_eq!(export_line(&bead(external), &ids), None, "an external reference is not an issue");
    }
}
