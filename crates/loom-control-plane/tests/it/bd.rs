//! bd (beads) JSONL in and out through the HTTP API, against a realistic tracker the test writes:
//! 20 epics with children, blockers across epics written after the issues that wait on them,
//! every bd status and type, closed and open issues, hierarchical ids (`bd-x.1`, not bead ids
//! here), dangling references and bd's other fields and edge types.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Duration, TimeZone, Utc};
use loom_api::{Dangling, ImportSummary};
use loom_client::Client;
use loom_domain::{BeadId, ProjectId};
use loom_store::{BeadFilter, PageRequest};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Cluster, fast_config};

const STATUSES: [&str; 8] = ["open", "in_progress", "blocked", "deferred", "closed", "tombstone", "pinned", "hooked"];
const TYPES: [&str; 13] = [
    "task",
    "bug",
    "feature",
    "epic",
    "chore",
    "message",
    "merge-request",
    "molecule",
    "gate",
    "agent",
    "role",
    "convoy",
    "event",
];

/// A seeded xorshift: the tracker is the same on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn dep(issue: &str, on: &str, kind: &str, n: usize) -> Value {
    let at = Utc.timestamp_opt(1_730_000_000 + n as i64, 987_654_321).unwrap();
    json!({ "issue_id": issue, "depends_on_id": on, "type": kind, "created_at": at.to_rfc3339(),
            "created_by": "alice", "metadata": "{\"why\":\"test\"}" })
}

/// The tracker: `epics` epics of `children` children each, as bd writes it, in a shuffled order
/// (so blockers often come after what waits on them).
fn tracker(epics: usize, children: usize) -> Vec<Value> {
    let mut rng = Rng(0x5eed_1234_abcd);
    let mut issues: Vec<Value> = Vec::new();
    let base = Utc.timestamp_opt(1_725_000_000, 0).unwrap();
    let mut n = 0usize;
    for e in 0..epics {
        let epic_id = format!("bd-e{e:02}");
        issues.push(json!({ "id": epic_id, "title": format!("Epic {e}"), "description": "A big piece of work",
            "status": if e % 5 == 4 { "closed" } else { "open" }, "priority": e % 5, "issue_type": "epic",
            "created_at": (base + Duration::seconds(n as i64)).to_rfc3339(), "updated_at": (base + Duration::seconds(n as i64 + 7)).to_rfc3339() }));
        if e % 5 == 4 {
            issues.last_mut().unwrap()["closed_at"] = json!((base + Duration::seconds(n as i64 + 7)).to_rfc3339());
        }
        n += 1;
        for c in 0..children {
            // Half the children use bd's hierarchical ids, which are not bead ids here.
            let id = if c % 2 == 0 {
                format!("bd-e{e:02}.{c}")
            } else {
                format!("bd-{}", loom_domain::base36(1000 + n as u64))
            };
            let status = STATUSES[n % STATUSES.len()];
            let kind = TYPES[n % TYPES.len()];
            let created = base + Duration::seconds(n as i64) + Duration::nanoseconds(123_456_789);
            let mut issue = json!({ "id": id, "title": format!("Issue {n} of epic {e}"), "status": status,
                "priority": n % 5, "issue_type": kind, "created_at": created.to_rfc3339(),
                "updated_at": (created + Duration::minutes(5)).to_rfc3339(),
                "dependencies": [dep(&id, &epic_id, "parent-child", n)] });
            if !n.is_multiple_of(3) {
                issue["description"] = json!(format!("Do part {c} of epic {e}.\n\nIn markdown."));
            }
            if n.is_multiple_of(4) {
                issue["notes"] = json!("remember the edge case");
                issue["design"] = json!("## Design\nsplit it");
                issue["acceptance_criteria"] = json!("- it works");
            }
            if n % 3 == 1 {
                issue["assignee"] = json!("bob");
                issue["owner"] = json!("carol");
                issue["labels"] = json!(["backend", format!("epic-{e}")]);
            }
            if n.is_multiple_of(7) {
                issue["estimated_minutes"] = json!(90);
                issue["external_ref"] = json!("gh-42");
                issue["x_custom"] = json!({ "nested": [1, 2, 3] });
                issue["comments"] = json!([{ "id": n, "issue_id": id, "author": "dave", "text": "hi", "created_at": created.to_rfc3339() }]);
            }
            if status == "closed" || status == "tombstone" {
                issue["closed_at"] = json!((created + Duration::hours(1)).to_rfc3339());
                issue["close_reason"] = json!("done");
            }
            if status == "tombstone" {
                issue["deleted_at"] = json!((created + Duration::hours(2)).to_rfc3339());
            }
            issues.push(issue);
            n += 1;
        }
    }
    // Edges between non-epic issues: `blocks` only to an earlier issue (no cycle), across epics;
    // other types anywhere; a few to issues that are not in the file.
    let ids: Vec<String> = issues.iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect();
    for i in 1..issues.len() {
        if ids[i].starts_with("bd-e") && !ids[i].contains('.') {
            continue;
        }
        let mut deps = issues[i]["dependencies"].as_array().cloned().unwrap_or_default();
        for k in 0..rng.below(3) {
            let j = rng.below(i);
            if !deps.iter().any(|d| d["depends_on_id"] == ids[j].as_str()) && j != i {
                deps.push(dep(&ids[i], &ids[j], "blocks", i * 10 + k));
            }
        }
        if rng.below(4) == 0 {
            let kind = ["related", "discovered-from", "tracks", "waits-for"][rng.below(4)];
            let j = rng.below(issues.len());
            if j != i {
                deps.push(dep(&ids[i], &ids[j], kind, i * 10 + 5));
            }
        }
        if i.is_multiple_of(37) {
            deps.push(dep(&ids[i], &format!("ext-{}", i % 3), "blocks", i * 10 + 6));
        }
        if i.is_multiple_of(53) {
            deps.push(dep(&ids[i], "other-proj.7", "related", i * 10 + 7));
        }
        issues[i]["dependencies"] = Value::Array(deps);
    }
    for i in (1..issues.len()).rev() {
        issues.swap(i, rng.below(i + 1));
    }
    issues
}

fn jsonl(issues: &[Value]) -> String {
    issues.iter().map(|i| format!("{i}\n")).collect()
}

async fn import(c: &Client, project: &str, text: String, dangling: Dangling) -> ImportSummary {
    // Sent in small chunks that split lines, as a real upload does.
    let chunks: Vec<std::io::Result<bytes::Bytes>> =
        text.into_bytes().chunks(7919).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
    c.import_beads(project, dangling, futures::stream::iter(chunks)).await.unwrap()
}

async fn export(c: &Client, project: &str) -> Vec<Value> {
    use futures::StreamExt;
    let mut body = Vec::new();
    let mut stream = std::pin::pin!(c.export_beads(project).await.unwrap());
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.unwrap());
    }
    String::from_utf8(body).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn by_id(issues: &[Value]) -> BTreeMap<String, Value> {
    issues.iter().map(|i| (i["id"].as_str().unwrap().to_owned(), i.clone())).collect()
}

fn edges(issue: &Value, kind: &str) -> BTreeSet<String> {
    let deps = issue["dependencies"].as_array().into_iter().flatten();
    deps.filter(|d| d["type"] == kind).map(|d| d["depends_on_id"].as_str().unwrap().to_owned()).collect()
}

/// bd's ready set: open, and every `blocks` target resolved (closed or deleted; a target not in
/// the file is not resolved).
fn bd_ready(issues: &BTreeMap<String, Value>) -> BTreeSet<String> {
    let resolved = |id: &String| issues.get(id).is_some_and(|i| i["status"] == "closed" || i["status"] == "tombstone");
    issues
        .values()
        .filter(|i| i["status"] == "open" && edges(i, "blocks").iter().all(resolved))
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every bead of `project`, paging through the store.
async fn beads(c: &Cluster, project: &str) -> Vec<loom_domain::Bead> {
    let filter = BeadFilter { project: Some(ProjectId::parse(project).unwrap()), ..BeadFilter::default() };
    let (mut out, mut after) = (Vec::new(), None);
    loop {
        let page = c.store.list_beads(&filter, &PageRequest { after, limit: 1000 }).await.unwrap();
        out.extend(page.beads);
        match page.next_cursor {
            Some(n) => after = Some(n),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bd_tracker_imports_with_its_edges_and_exports_back_the_same() {
    let c = Cluster::start(fast_config()).await;
    c.project("bdp").await;
    let client = Client::new(&c.cp.url, Some(c.key.clone()));
    let issues = tracker(20, 20);
    assert!(issues.len() >= 400);
    let file = by_id(&issues);
    let summary = import(&client, "bdp", jsonl(&issues), Dangling::Keep).await;
    assert_eq!(summary.errors, [], "{summary:#?}");
    assert_eq!((summary.created, summary.updated, summary.skipped), (issues.len() as u64, 0, 0));
    let dotted = issues.iter().filter(|i| i["id"].as_str().unwrap().contains('.')).count();
    assert_eq!(summary.mapped.len(), dotted, "hierarchical ids are mapped, and said so");
    let dangling: usize = issues
        .iter()
        .map(|i| {
            let deps = i["dependencies"].as_array().into_iter().flatten();
            deps.filter(|d| !file.contains_key(d["depends_on_id"].as_str().unwrap())).count()
        })
        .sum();
    assert_eq!(summary.dangling.len(), dangling);
    assert!(summary.dangling.iter().all(|d| d.action == "kept" && d.line >= 1));
    assert_eq!(summary.external, 3, "one external reference per missing blocker: ext-0, ext-1, ext-2");

    // Counts by status and type: bd's kept exactly, Loom's by the documented mapping.
    let stored = beads(&c, "bdp").await;
    let (externals, imported): (Vec<_>, Vec<_>) = stored.iter().partition(|b| b.context.contains_key("bd.external"));
    assert_eq!((externals.len(), imported.len()), (3, issues.len()));
    let kept = |b: &loom_domain::Bead| -> Value { serde_json::from_str(&b.context["bd.issue"]).unwrap() };
    let count = |f: &dyn Fn(&Value) -> String| -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        issues.iter().for_each(|i| *m.entry(f(i)).or_default() += 1);
        m
    };
    let mut loom_status: BTreeMap<String, usize> = BTreeMap::new();
    let mut bd_status: BTreeMap<String, usize> = BTreeMap::new();
    let mut bd_type: BTreeMap<String, usize> = BTreeMap::new();
    for b in &imported {
        *loom_status.entry(b.status.to_string()).or_default() += 1;
        *bd_status.entry(kept(b)["status"].as_str().unwrap().to_owned()).or_default() += 1;
        *bd_type.entry(kept(b)["issue_type"].as_str().unwrap().to_owned()).or_default() += 1;
        assert_eq!(b.bead_type, loom_control_plane::bd::loom_type(kept(b)["issue_type"].as_str().unwrap()));
    }
    assert_eq!(bd_status, count(&|i| i["status"].as_str().unwrap().to_owned()));
    assert_eq!(bd_status.len(), STATUSES.len(), "every bd status is in the tracker");
    assert_eq!(bd_type, count(&|i| i["issue_type"].as_str().unwrap().to_owned()));
    assert_eq!(bd_type.len(), TYPES.len(), "every bd type is in the tracker");
    let mapped = count(&|i| loom_control_plane::bd::loom_status(i["status"].as_str().unwrap()).to_string());
    assert_eq!(loom_status, mapped);

    // Every edge: `blocks` are dependencies, `parent-child` the parent, by the mapped ids.
    let bead_of: BTreeMap<String, &loom_domain::Bead> =
        stored.iter().map(|b| (loom_control_plane::bd::bd_id(b), b)).collect();
    let loom_id = |bd: &str| bead_of[bd].id.to_string();
    for issue in &issues {
        let b = bead_of[issue["id"].as_str().unwrap()];
        let want: BTreeSet<String> = edges(issue, "blocks").iter().map(|t| loom_id(t)).collect();
        let got: BTreeSet<String> = b.blocked_by.iter().map(BeadId::to_string).collect();
        assert_eq!(got, want, "blockers of {}", issue["id"]);
        let parent = edges(issue, "parent-child").iter().next().map(|p| loom_id(p));
        assert_eq!(b.parent.as_ref().map(BeadId::to_string), parent, "parent of {}", issue["id"]);
    }

    // The ready set is bd's.
    let ready = c.store.list_ready(&ProjectId::parse("bdp").unwrap(), 1000, Utc::now()).await.unwrap();
    let ready: BTreeSet<String> = ready.iter().map(loom_control_plane::bd::bd_id).collect();
    assert_eq!(ready, bd_ready(&file));
    assert!(!ready.is_empty() && ready.len() < issues.len() / 2, "{}", ready.len());

    // The export is the file: every issue, field and edge as bd wrote it.
    let exported = export(&client, "bdp").await;
    assert_eq!(exported.len(), issues.len(), "external references are not issues");
    assert_eq!(by_id(&exported), file);

    // Idempotent: the same file again changes nothing.
    let seq = c.store.last_event_seq().await.unwrap();
    let again = import(&client, "bdp", jsonl(&issues), Dangling::Keep).await;
    assert_eq!((again.created, again.updated, again.skipped, again.external), (0, 0, issues.len() as u64, 0));
    assert_eq!(again.errors, []);
    // The audit log records the import requests themselves (behind their responses): not changes.
    let after = c.store.list_events(seq, 1000).await.unwrap();
    let changes: Vec<_> = after.iter().filter(|e| e.kind != loom_domain::EventKind::ApiWrite).collect();
    assert!(changes.is_empty(), "no bead changed: {changes:?}");

    // Round trip: the export into a new project exports the same issues and edges.
    c.project("copy").await;
    let lines: String = exported.iter().map(|i| format!("{i}\n")).collect();
    let copy = import(&client, "copy", lines, Dangling::Keep).await;
    assert_eq!((copy.created, copy.errors.len()), (issues.len() as u64, 0), "{copy:#?}");
    assert_eq!(copy.mapped.len(), issues.len(), "every id is taken by bdp: all are mapped");
    assert_eq!(by_id(&export(&client, "copy").await), file);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_cycles_and_dangling_edges_are_reported_by_line() {
    let c = Cluster::start(fast_config()).await;
    c.project("bad").await;
    let client = Client::new(&c.cp.url, Some(c.key.clone()));
    let t = "\"created_at\":\"2025-01-01T00:00:00Z\"";
    let text = [
        format!(r#"{{"id":"bd-1","title":"fine",{t}}}"#),
        format!(r#"{{"id":"bd-2","title":"waits on a missing one",{t},"dependencies":[{{"issue_id":"bd-2","depends_on_id":"gone-9","type":"blocks"}}]}}"#),
        "{not json".to_owned(),
        String::new(),
        format!(r#"{{"id":"bd-3",{t}}}"#),
        format!(r#"{{"id":"bd-4","title":"too urgent","priority":9,{t}}}"#),
        format!(r#"{{"id":"bd-a","title":"cycle a",{t},"dependencies":[{{"depends_on_id":"bd-b","type":"blocks"}}]}}"#),
        format!(r#"{{"id":"bd-b","title":"cycle b",{t},"dependencies":[{{"depends_on_id":"bd-a","type":"blocks"}}]}}"#),
        format!(r#"{{"id":"bd-c","title":"waits on the cycle",{t},"dependencies":[{{"depends_on_id":"bd-a","type":"blocks"}}]}}"#),
        format!(r#"{{"id":"bd-1","title":"twice",{t}}}"#),
        format!("{{\"id\":\"bd-5\",\"title\":\"{}\",{t}}}", "x".repeat(loom_control_plane::bd::MAX_LINE)),
        format!(r#"{{"id":"bd-6","title":"last",{t}}}"#),
    ]
    .join("\n");
    let s = import(&client, "bad", text.clone(), Dangling::Skip).await;
    let lines: Vec<u64> = s.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [3, 5, 6, 7, 8, 10, 11], "{:#?}", s.errors);
    assert!(s.errors[0].error.starts_with("not a JSON issue object"), "{}", s.errors[0].error);
    assert!(s.errors[1].error.contains("title"), "{}", s.errors[1].error);
    assert!(s.errors[2].error.contains("priority 9"), "{}", s.errors[2].error);
    assert!(s.errors[3].error.contains("cycle"), "{}", s.errors[3].error);
    assert!(s.errors[5].error.contains("already on line 1"), "{}", s.errors[5].error);
    assert!(s.errors[6].error.contains("longer than"), "{}", s.errors[6].error);
    assert_eq!(s.cycles.len(), 1);
    assert_eq!(
        (s.cycles[0].issues.clone(), s.cycles[0].lines.clone()),
        (vec!["bd-a".into(), "bd-b".into()], vec![7, 8])
    );
    assert_eq!((s.created, s.lines), (4, 12), "bd-1, bd-2, bd-c and bd-6 are in");
    let dangling: Vec<(u64, &str, &str)> =
        s.dangling.iter().map(|d| (d.line, d.depends_on.as_str(), d.action.as_str())).collect();
    assert_eq!(dangling, [(2, "gone-9", "skipped"), (9, "bd-a", "skipped")]);
    let b2 = c.store.get_bead(&BeadId::parse("bd-2").unwrap()).await.unwrap();
    assert!(b2.blocked_by.is_empty(), "a skipped edge is left out");
    let exported = export(&client, "bad").await;
    assert!(exported.iter().all(|i| i.get("dependencies").is_none()), "{exported:?}");

    // Kept instead: the missing blocker becomes an external reference bd-2 waits on.
    c.project("keep").await;
    let text = text.replace("bd-", "kp-");
    let s = import(&client, "keep", text, Dangling::Keep).await;
    assert_eq!((s.created, s.external), (4, 2), "gone-9, and kp-a that was not imported");
    let b2 = c.store.get_bead(&BeadId::parse("kp-2").unwrap()).await.unwrap();
    assert_eq!(b2.blocked_by, [BeadId::parse("gone-9").unwrap()]);
    let ext = c.store.get_bead(&b2.blocked_by[0]).await.unwrap();
    assert_eq!((ext.status.as_str(), ext.bead_type.as_str()), ("open", "decision"));
    let ready = c.get("/api/v1/ready?project_id=keep").await;
    let ready: BTreeSet<&str> = ready.as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ready, BTreeSet::from(["kp-1", "kp-6"]), "an external reference does not count as resolved");
    let exported = by_id(&export(&client, "keep").await);
    assert_eq!(exported.len(), 4);
    assert_eq!(edges(&exported["kp-2"], "blocks"), BTreeSet::from(["gone-9".to_owned()]), "the kept edge comes back");

    // Bad requests: an unknown format, a project that does not exist, a viewer's key.
    let (status, body) = c.call(Method::POST, "/api/v1/projects/bad/import?format=csv", None).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = c.call(Method::GET, "/api/v1/projects/nope/export", None).await;
    assert_eq!(status, 404);
    let viewer = c.post("/api/v1/keys", json!({ "name": "ro", "role": "viewer" })).await;
    let viewer = viewer["secret"].as_str().unwrap();
    let (status, _) = c.call_as(Some(viewer), Method::POST, "/api/v1/projects/bad/import", None).await;
    assert_eq!(status, 403, "importing needs an operator");
    let (status, _) = c.call_as(Some(viewer), Method::GET, "/api/v1/projects/bad/export", None).await;
    assert_eq!(status, 200, "a viewer may export");
    c.stop().await;
}
