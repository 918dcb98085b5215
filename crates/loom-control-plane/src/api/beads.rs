//! `/beads`, `/ready` and `/work-graph`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::Utc;
use loom_api::{
    AnswerDecision, BeadDto, BeadPageDto, ClaimBead, CloseBead, CreateBead, Dependency, HandBack, HandedBack,
    RenewLease, StartDispatch, StartedDispatch, UpdateBead,
};
use loom_domain::{BeadId, BeadType, DispatchId, Priority, ProjectId, Status};
use loom_store::{BeadFilter, BeadPatch, DispatchStart, PageRequest, StartOutcome, TaskSnapshot};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiJson, ApiQuery, parse_id};
use crate::{Error, Shared};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    project_id: Option<String>,
    status: Option<String>,
    #[serde(rename = "type")]
    bead_type: Option<String>,
    assignee: Option<String>,
    priority: Option<String>,
    tag: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

pub(crate) async fn list(
    State(s): State<Arc<Shared>>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<BeadPageDto>, Error> {
    let filter = BeadFilter {
        project: q.project_id.as_deref().map(ProjectId::parse).transpose()?,
        status: q.status.as_deref().map(str::parse::<Status>).transpose()?,
        bead_type: q.bead_type.as_deref().map(str::parse::<BeadType>).transpose()?,
        assignee: q.assignee,
        priority: q.priority.as_deref().map(str::parse::<Priority>).transpose()?,
        tag: q.tag,
    };
    let page = PageRequest { after: q.cursor, limit: q.limit.unwrap_or(100) };
    let page = s.store.list_beads(&filter, &page).await?;
    Ok(Json(BeadPageDto { beads: page.beads.iter().map(BeadDto::from).collect(), next_cursor: page.next_cursor }))
}

pub(crate) async fn create(
    State(s): State<Arc<Shared>>,
    ApiJson(req): ApiJson<CreateBead>,
) -> Result<(StatusCode, Json<BeadDto>), Error> {
    let new = req.into_domain()?;
    crate::oversight::check_budget(&new.context, "the bead's")?;
    let snapshot = TaskSnapshot {
        title: new.title.clone(),
        description: new.description.clone(),
        priority: new.priority.get(),
        bead_type: new.bead_type.as_str().to_owned(),
        context: new.context.clone(),
        assignee: new.assignee.clone(),
    };
    let project_context = s.contexts.get(&*s.store, &new.project_id).await?;
    crate::relay::check_publishable(&s.bus, &new.project_id, snapshot, project_context)?;
    let bead = crate::dispatcher::create(&s, new).await?;
    Ok((StatusCode::CREATED, Json(BeadDto::from(&bead))))
}

pub(crate) async fn update(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateBead>,
) -> Result<Json<BeadDto>, Error> {
    let id = parse_id(BeadId::parse, &id)?;
    let patch = BeadPatch {
        title: req.title,
        description: req.description,
        bead_type: req.bead_type.as_deref().map(str::parse::<BeadType>).transpose()?,
        priority: req.priority.map(Priority::try_from).transpose()?,
        status: req.status.as_deref().map(str::parse::<Status>).transpose()?,
        assignee: req.assignee,
        tags: req.tags,
        context: req.context,
        parent: req.parent.map(|p| p.as_deref().map(BeadId::parse).transpose()).transpose()?,
    };
    patch.validate()?;
    let touches_task = patch.title.is_some()
        || patch.description.is_some()
        || patch.context.is_some()
        || patch.assignee.is_some()
        || patch.bead_type.is_some();
    let version = match (req.version, touches_task) {
        (Some(v), false) => v,
        (version, _) => {
            let current = s.store.get_bead(&id).await?;
            if touches_task {
                check_patched(&s, &current, &patch).await?;
            }
            version.unwrap_or(current.version)
        }
    };
    let bead = s.store.update_bead(&id, version, patch).await?;
    s.changed();
    Ok(Json(BeadDto::from(&bead)))
}

/// Refuses a change after which the bead's task could not be published.
async fn check_patched(s: &Shared, current: &loom_domain::Bead, patch: &BeadPatch) -> Result<(), Error> {
    let mut snapshot = TaskSnapshot::of(current);
    if let Some(t) = &patch.title {
        snapshot.title = t.clone();
    }
    if let Some(d) = &patch.description {
        snapshot.description = d.clone();
    }
    if let Some(c) = &patch.context {
        crate::oversight::check_budget(c, "the bead's")?;
        snapshot.context = c.clone();
    }
    if let Some(a) = &patch.assignee {
        snapshot.assignee = a.clone();
    }
    if let Some(t) = patch.bead_type {
        snapshot.bead_type = t.as_str().to_owned();
    }
    let project_context = s.contexts.get(&*s.store, &current.project_id).await?;
    crate::relay::check_publishable(&s.bus, &current.project_id, snapshot, project_context)
}

/// Beads are never erased (their history matters): `DELETE` closes the bead.
pub(crate) async fn delete(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Json<BeadDto>, Error> {
    let id = parse_id(BeadId::parse, &id)?;
    let bead = s.store.close_bead(&id, "deleted", None).await?;
    s.changed();
    Ok(Json(BeadDto::from(&bead)))
}

/// Claims a bead for the caller, who works on it without a published task.
pub(crate) async fn claim(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ClaimBead>,
) -> Result<Json<BeadDto>, Error> {
    let id = parse_id(BeadId::parse, &id)?;
    let lease = lease(&s, req.lease_secs)?;
    let bead = s.store.claim_bead(&id, req.agent_id.trim(), lease).await?;
    s.changed();
    Ok(Json(BeadDto::from(&bead)))
}

/// A claim by hand's lease: the default, or 1 s to a day.
fn lease(s: &Shared, secs: Option<u64>) -> Result<std::time::Duration, Error> {
    match secs {
        None => Ok(s.config.lease),
        Some(n @ 1..=loom_api::MAX_CLAIM_LEASE_SECS) => Ok(std::time::Duration::from_secs(n)),
        Some(n) => {
            Err(Error::BadRequest(format!("lease_secs must be 1 to {}, got {n}", loom_api::MAX_CLAIM_LEASE_SECS)))
        }
    }
}

/// Renews the lease of the bead's current dispatch (a claimer working on it by hand).
pub(crate) async fn renew_lease(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RenewLease>,
) -> Result<Json<BeadDto>, Error> {
    let id = parse_id(BeadId::parse, &id)?;
    let dispatch = DispatchId::parse(req.dispatch_id.trim())?;
    let lease = lease(&s, req.lease_secs)?;
    let bead = s.store.get_bead(&id).await?;
    let stale = || {
        Error::Store(loom_store::Error::Conflict(format!(
            "bead {id} is not in progress under dispatch {dispatch} (its lease lapsed or it was closed, \
             reopened or dispatched again): claim it again"
        )))
    };
    if bead.dispatch_id.as_ref() != Some(&dispatch) {
        return Err(stale());
    }
    if !s.store.extend_lease(&dispatch, Utc::now() + lease).await? {
        return Err(stale());
    }
    Ok(Json(BeadDto::from(&s.store.get_bead(&id).await?)))
}

/// An agent starts the dispatch it holds (queued → running); the answer says whether to run it.
pub(crate) async fn start(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<StartDispatch>,
) -> Result<Json<StartedDispatch>, Error> {
    let start = DispatchStart {
        bead_id: parse_id(BeadId::parse, &id)?,
        dispatch_id: DispatchId::parse(req.dispatch_id.trim())?,
        agent_id: agent_id(&req.agent_id)?,
        now: Utc::now(),
        lease: s.config.lease,
        max_attempts: s.config.max_attempts,
    };
    let (outcome, bead) = match s.store.start_dispatch(&start).await? {
        StartOutcome::Started(b) => ("started", Some(b)),
        StartOutcome::Stale => ("stale", None),
        StartOutcome::Superseded(b) => {
            s.changed();
            ("superseded", Some(b))
        }
    };
    s.events_wake.send_replace(());
    Ok(Json(StartedDispatch { outcome: outcome.to_owned(), bead: bead.as_ref().map(BeadDto::from) }))
}

/// An agent gives its dispatch back unfinished; the bead is dispatched again at once.
pub(crate) async fn hand_back(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<HandBack>,
) -> Result<Json<HandedBack>, Error> {
    let id = parse_id(BeadId::parse, &id)?;
    let dispatch = DispatchId::parse(req.dispatch_id.trim())?;
    let agent = agent_id(&req.agent_id)?;
    let reason = if req.reason.trim().is_empty() { "shutting down" } else { req.reason.trim() };
    // A rare call: read first, so a dispatch of another bead is never handed back by mistake.
    let bead = if s.store.get_bead(&id).await?.dispatch_id.as_ref() == Some(&dispatch) {
        s.store.hand_back(&dispatch, &agent, reason).await?
    } else {
        None
    };
    if bead.is_some() {
        s.changed();
    }
    Ok(Json(HandedBack { handed_back: bead.is_some(), bead: bead.as_ref().map(BeadDto::from) }))
}

fn agent_id(raw: &str) -> Result<String, Error> {
    let id = raw.trim();
    if id.is_empty() || id.len() > 128 {
        return Err(Error::BadRequest(format!("agent_id must be 1 to 128 characters, got {:?}", raw)));
    }
    Ok(id.to_owned())
}

pub(crate) async fn close(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<BeadDto>, Error> {
    let id = parse_id(BeadId::parse, &id)?;
    // The body is optional: an empty one closes with the default reason.
    let req: CloseBead = if body.iter().all(u8::is_ascii_whitespace) {
        CloseBead::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| Error::BadRequest(format!("invalid JSON body: {e}")))?
    };
    let bead = s.store.close_bead(&id, req.reason.as_deref().unwrap_or("closed by hand"), req.version).await?;
    s.changed();
    s.relay_wake.notify_one();
    Ok(Json(BeadDto::from(&bead)))
}

/// `POST /beads/{id}/answer`: a person answers a decision bead; the bead that escalated runs
/// again with the answer.
pub(crate) async fn answer(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<AnswerDecision>,
) -> Result<Json<BeadDto>, Error> {
    let id = parse_id(BeadId::parse, &id)?;
    let bead = crate::oversight::answer(&s, &id, &req.text).await?;
    Ok(Json(BeadDto::from(&bead)))
}

pub(crate) async fn reopen(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Json<BeadDto>, Error> {
    let id = parse_id(BeadId::parse, &id)?;
    let bead = s.store.reopen_bead(&id, None).await?;
    s.changed();
    Ok(Json(BeadDto::from(&bead)))
}

/// Cancels a running bead's task and dispatches it again under a new dispatch id.
pub(crate) async fn redispatch(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Json<BeadDto>, Error> {
    let id = parse_id(BeadId::parse, &id)?;
    let current = s.store.get_bead(&id).await?;
    if current.status != Status::InProgress {
        return Err(Error::Store(loom_store::Error::Conflict(format!(
            "bead {id} is {}, not in_progress: only a running bead can be redispatched",
            current.status
        ))));
    }
    let patch = BeadPatch { status: Some(Status::Open), ..BeadPatch::default() };
    let bead = s.store.update_bead(&id, current.version, patch).await?;
    s.changed();
    s.relay_wake.notify_one();
    Ok(Json(BeadDto::from(&bead)))
}

pub(crate) async fn add_dependency(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    ApiJson(dep): ApiJson<Dependency>,
) -> Result<Json<BeadDto>, Error> {
    let id = parse_id(BeadId::parse, &id)?;
    let blocker = parse_id(BeadId::parse, &dep.blocker)?;
    let bead = s.store.add_dependency(&id, &blocker).await?;
    s.changed();
    Ok(Json(BeadDto::from(&bead)))
}

pub(crate) async fn remove_dependency(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    ApiJson(dep): ApiJson<Dependency>,
) -> Result<Json<BeadDto>, Error> {
    let id = parse_id(BeadId::parse, &id)?;
    let blocker = parse_id(BeadId::parse, &dep.blocker)?;
    let bead = s.store.remove_dependency(&id, &blocker).await?;
    s.changed();
    Ok(Json(BeadDto::from(&bead)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProjectQuery {
    project_id: String,
    limit: Option<u32>,
}

pub(crate) async fn ready(
    State(s): State<Arc<Shared>>,
    ApiQuery(q): ApiQuery<ProjectQuery>,
) -> Result<Json<Vec<BeadDto>>, Error> {
    let project = parse_id(ProjectId::parse, &q.project_id)?;
    let beads = s.store.list_ready(&project, q.limit.unwrap_or(100), Utc::now()).await?;
    Ok(Json(beads.iter().map(BeadDto::from).collect()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GraphQuery {
    project_id: String,
    /// The `next_cursor` of the previous page (as for `/beads`).
    cursor: Option<String>,
    /// Beads per page: 1–1000, [`GRAPH_PAGE`] by default.
    limit: Option<u32>,
}

/// Beads per `/work-graph` page unless `limit` says otherwise (at most `PageRequest::MAX_LIMIT`).
pub(crate) const GRAPH_PAGE: u32 = 500;

/// A page of a project's beads with their edges, for graph views: `{nodes, edges, next_cursor}`,
/// oldest bead first. A page holds at most `limit` beads (1000 at most), so a large project is
/// read in pages (`cursor` = the previous `next_cursor`, `null` on the last page) and neither the
/// response nor the control plane's memory grows with the project. Each edge is listed with the
/// bead that waits (`bead`), so every edge comes exactly once across the pages.
pub(crate) async fn work_graph(
    State(s): State<Arc<Shared>>,
    ApiQuery(q): ApiQuery<GraphQuery>,
) -> Result<Json<Value>, Error> {
    let project = parse_id(ProjectId::parse, &q.project_id)?;
    s.store.get_project(&project).await?;
    let filter = BeadFilter { project: Some(project), ..BeadFilter::default() };
    let page = PageRequest { after: q.cursor, limit: q.limit.unwrap_or(GRAPH_PAGE) };
    let got = s.store.list_beads(&filter, &page).await?;
    let edges: Vec<Value> = got
        .beads
        .iter()
        .flat_map(|b| b.blocked_by.iter().map(|x| json!({ "bead": b.id.as_str(), "blocker": x.as_str() })))
        .collect();
    let nodes: Vec<BeadDto> = got.beads.iter().map(BeadDto::from).collect();
    Ok(Json(json!({ "nodes": nodes, "edges": edges, "next_cursor": got.next_cursor })))
}
