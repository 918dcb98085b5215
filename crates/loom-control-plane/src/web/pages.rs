//! The UI's pages and the fragments their live regions re-fetch (`…/columns`, `…/panel`,
//! `…/rows`): each fragment is the part of its page that changes, rendered by the same code.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use askama::Template;
use axum::Extension;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::Utc;
use loom_domain::{AgentStatus, Bead, BeadId, BeadType, ProjectId, ProjectStatus, Status};
use loom_store::{Attempt, BeadFilter, EventQuery, PageRequest};
use serde::Deserialize;

use super::Web;
use super::assets;
use super::session::Session;
use super::view::{self, Action, Card, Choice, Column, enc, when};
use crate::Error;
use crate::api::ApiQuery;

/// Beads a board or list reads at most (in pages of 1000).
const MAX_BEADS: usize = 5000;
/// Cards a board column shows at most; the rest are counted.
const MAX_CARDS: usize = 1000;
/// Cards the Closed column shows at most (the most recently closed).
const MAX_CLOSED: usize = 100;

/// What every page's frame shows.
pub(crate) struct Chrome {
    pub title: String,
    pub nav: &'static str,
    pub csrf: String,
    pub user: String,
    pub role: String,
    /// Whether there is a login to log out of.
    pub auth: bool,
    pub can_write: bool,
    pub css: String,
    pub htmx: String,
    pub app: String,
    /// The page's live stream.
    pub live: String,
    /// `?project=…` for the navigation links (empty without a project).
    pub project_query: String,
}

pub(crate) fn chrome(session: &Session, title: &str, nav: &'static str, project: Option<&str>) -> Chrome {
    let project_query = project.map(|p| format!("?project={}", enc(p))).unwrap_or_default();
    Chrome {
        title: title.to_owned(),
        nav,
        csrf: session.csrf.clone(),
        user: session.name.clone(),
        role: session.role.to_string(),
        auth: session.key.is_some(),
        can_write: session.can_write(),
        css: assets::url("app.css"),
        htmx: assets::url("htmx.min.js"),
        app: assets::url("app.js"),
        live: format!("/ui/live{project_query}"),
        project_query,
    }
}

fn html<T: Template>(t: &T) -> Response {
    match t.render() {
        Ok(body) => Html(body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("template error: {e}")).into_response(),
    }
}

fn render<T: Template>(t: &T) -> String {
    t.render().unwrap_or_else(|e| format!("template error: {e}"))
}

#[derive(Template)]
#[template(path = "web/error.html")]
struct ErrorPage {
    chrome: Chrome,
    heading: String,
    message: String,
    back: String,
}

/// An error page with `status`.
pub(crate) fn error_page(
    session: &Session,
    status: StatusCode,
    heading: &str,
    message: String,
    back: &str,
) -> Response {
    let page = ErrorPage {
        chrome: chrome(session, heading, "", None),
        heading: heading.to_owned(),
        message,
        back: back.to_owned(),
    };
    let mut r = html(&page);
    *r.status_mut() = status;
    r
}

/// A read that failed, as a page with the API's status.
fn failed(session: &Session, e: Error) -> Response {
    let detail = e.to_string();
    let status = e.into_response().status();
    let message = if status.is_client_error() { detail } else { e_message(status) };
    let heading = format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""));
    error_page(session, status, &heading, message, "/ui/board")
}

fn e_message(status: StatusCode) -> String {
    match status {
        StatusCode::NOT_FOUND => "There is no such bead or project.".into(),
        StatusCode::BAD_REQUEST => "The address names an invalid id or filter.".into(),
        StatusCode::SERVICE_UNAVAILABLE => "The store does not answer right now; try again shortly.".into(),
        _ => "Something went wrong; the control plane's log says what.".into(),
    }
}

fn or_fail(session: &Session, r: Result<Response, Error>) -> Response {
    r.unwrap_or_else(|e| failed(session, e))
}

// ---------------------------------------------------------------------------------------------
// Board and list

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BoardQuery {
    project: Option<String>,
    #[serde(rename = "type")]
    bead_type: Option<String>,
    tag: Option<String>,
    assignee: Option<String>,
    q: Option<String>,
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl BoardQuery {
    /// The filters as a query string (without `?`).
    fn query(&self, project: &str) -> String {
        let mut q = format!("project={}", enc(project));
        for (name, value) in
            [("type", &self.bead_type), ("tag", &self.tag), ("assignee", &self.assignee), ("q", &self.q)]
        {
            if let Some(v) = nonempty(value) {
                q.push_str(&format!("&{name}={}", enc(v)));
            }
        }
        q
    }
}

pub(crate) struct ProjectChoice {
    pub id: String,
    pub selected: bool,
}

pub(crate) struct Filters {
    pub tag: String,
    pub assignee: String,
    pub q: String,
}

/// A project's beads as the filters select them, with their columns.
struct Selection {
    projects: Vec<ProjectChoice>,
    project: Option<ProjectId>,
    beads: Vec<(Bead, Column)>,
    /// More beads matched than were read.
    truncated: bool,
}

async fn select(web: &Web, q: &BoardQuery) -> Result<Selection, Error> {
    let store = &*web.shared.store;
    let all = store.list_projects().await?;
    let project = match nonempty(&q.project) {
        Some(p) => Some(ProjectId::parse(p)?),
        None => all.first().map(|p| p.id.clone()),
    };
    let projects =
        all.iter().map(|p| ProjectChoice { id: p.id.to_string(), selected: Some(&p.id) == project.as_ref() }).collect();
    let Some(project) = project else {
        return Ok(Selection { projects, project: None, beads: vec![], truncated: false });
    };
    let filter = BeadFilter {
        project: Some(project.clone()),
        bead_type: nonempty(&q.bead_type).map(str::parse::<BeadType>).transpose()?,
        tag: nonempty(&q.tag).map(str::to_owned),
        assignee: nonempty(&q.assignee).map(str::to_owned),
        ..BeadFilter::default()
    };
    let mut beads = Vec::new();
    let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
    let truncated = loop {
        let got = store.list_beads(&filter, &page).await?;
        beads.extend(got.beads);
        match got.next_cursor {
            Some(next) if beads.len() < MAX_BEADS => page.after = Some(next),
            Some(_) => break true,
            None => break false,
        }
    };
    let ready: HashSet<BeadId> =
        store.list_ready(&project, PageRequest::MAX_LIMIT, Utc::now()).await?.into_iter().map(|b| b.id).collect();
    let query = nonempty(&q.q);
    let mut beads: Vec<(Bead, Column)> = beads
        .into_iter()
        .filter(|b| query.is_none_or(|q| view::matches(b, q)))
        .map(|b| {
            let c = Column::of(&b, &ready);
            (b, c)
        })
        .collect();
    beads.sort_by(|(a, ca), (b, cb)| match (ca, cb) {
        (Column::Closed, Column::Closed) => b.closed_at.cmp(&a.closed_at),
        _ => (a.priority, a.created_at).cmp(&(b.priority, b.created_at)),
    });
    Ok(Selection { projects, project: Some(project), beads, truncated })
}

pub(crate) struct ColumnView {
    pub key: &'static str,
    pub title: &'static str,
    pub total: usize,
    pub cards: Vec<Card>,
    pub hidden: usize,
}

#[derive(Template)]
#[template(path = "web/columns.html")]
struct Columns {
    columns: Vec<ColumnView>,
    can_write: bool,
    csrf: String,
    next: String,
    note: Option<String>,
    list_query: String,
}

fn columns(session: &Session, sel: &Selection, q: &BoardQuery) -> Columns {
    let mut columns: Vec<ColumnView> = Column::ALL
        .iter()
        .map(|c| ColumnView { key: c.key(), title: c.title(), total: 0, cards: vec![], hidden: 0 })
        .collect();
    for (bead, column) in &sel.beads {
        let i = Column::ALL.iter().position(|c| c == column).unwrap_or(0);
        let col = &mut columns[i];
        col.total += 1;
        let cap = if *column == Column::Closed { MAX_CLOSED } else { MAX_CARDS };
        if col.cards.len() < cap {
            col.cards.push(Card::of(bead, *column));
        } else {
            col.hidden += 1;
        }
    }
    let project = sel.project.as_ref().map(ToString::to_string).unwrap_or_default();
    let list_query = q.query(&project);
    Columns {
        columns,
        can_write: session.can_write(),
        csrf: session.csrf.clone(),
        next: format!("/ui/board?{list_query}"),
        note: sel.truncated.then(|| format!("Showing the first {MAX_BEADS} beads; narrow the filters to see others.")),
        list_query,
    }
}

/// The create/edit dialog's fields.
pub(crate) struct EditForm {
    pub title: String,
    pub description: String,
    pub assignee: String,
    pub tags: String,
    pub types: Vec<Choice>,
    pub priorities: Vec<Choice>,
}

impl EditForm {
    fn blank() -> Self {
        EditForm {
            title: String::new(),
            description: String::new(),
            assignee: String::new(),
            tags: String::new(),
            types: view::type_choices(Some("task")),
            priorities: view::priority_choices(2),
        }
    }

    fn of(b: &Bead) -> Self {
        EditForm {
            title: b.title.clone(),
            description: b.description.clone(),
            assignee: b.assignee.clone().unwrap_or_default(),
            tags: b.tags.join(", "),
            types: view::type_choices(Some(b.bead_type.as_str())),
            priorities: view::priority_choices(b.priority.get()),
        }
    }
}

#[derive(Template)]
#[template(path = "web/board.html")]
struct BoardPage {
    chrome: Chrome,
    projects: Vec<ProjectChoice>,
    project: Option<String>,
    filters: Filters,
    types: Vec<Choice>,
    form_action: &'static str,
    columns: String,
    fragment_url: String,
    here: String,
    form_id: &'static str,
    edit: EditForm,
}

fn filters(q: &BoardQuery) -> Filters {
    Filters {
        tag: nonempty(&q.tag).unwrap_or_default().to_owned(),
        assignee: nonempty(&q.assignee).unwrap_or_default().to_owned(),
        q: nonempty(&q.q).unwrap_or_default().to_owned(),
    }
}

pub(crate) async fn board(
    Extension(web): Extension<Arc<Web>>,
    session: Session,
    ApiQuery(q): ApiQuery<BoardQuery>,
) -> Response {
    let result = async {
        let sel = select(&web, &q).await?;
        let project = sel.project.as_ref().map(ToString::to_string);
        let cols = columns(&session, &sel, &q);
        let query = cols.list_query.clone();
        let page = BoardPage {
            chrome: chrome(&session, "Board", "board", project.as_deref()),
            projects: sel.projects,
            project,
            filters: filters(&q),
            types: view::type_choices(nonempty(&q.bead_type)),
            form_action: "/ui/board",
            here: format!("/ui/board?{query}"),
            fragment_url: format!("/ui/board/columns?{query}"),
            columns: render(&cols),
            form_id: "create",
            edit: EditForm::blank(),
        };
        Ok(html(&page))
    }
    .await;
    or_fail(&session, result)
}

pub(crate) async fn board_columns(
    Extension(web): Extension<Arc<Web>>,
    session: Session,
    ApiQuery(q): ApiQuery<BoardQuery>,
) -> Response {
    let result = select(&web, &q).await.map(|sel| html(&columns(&session, &sel, &q)));
    or_fail(&session, result)
}

#[derive(Template)]
#[template(path = "web/list_rows.html")]
struct Rows {
    rows: Vec<Card>,
    can_write: bool,
    note: Option<String>,
}

#[derive(Template)]
#[template(path = "web/list.html")]
struct ListPage {
    chrome: Chrome,
    projects: Vec<ProjectChoice>,
    project: Option<String>,
    filters: Filters,
    types: Vec<Choice>,
    form_action: &'static str,
    rows: String,
    fragment_url: String,
    here: String,
}

fn rows(session: &Session, sel: &Selection) -> Rows {
    Rows {
        rows: sel.beads.iter().map(|(b, c)| Card::of(b, *c)).collect(),
        can_write: session.can_write(),
        note: sel.truncated.then(|| format!("Showing the first {MAX_BEADS} beads; narrow the filters to see others.")),
    }
}

pub(crate) async fn list(
    Extension(web): Extension<Arc<Web>>,
    session: Session,
    ApiQuery(q): ApiQuery<BoardQuery>,
) -> Response {
    let result = async {
        let sel = select(&web, &q).await?;
        let project = sel.project.as_ref().map(ToString::to_string);
        let query = q.query(project.as_deref().unwrap_or_default());
        let page = ListPage {
            chrome: chrome(&session, "Beads", "list", project.as_deref()),
            rows: render(&rows(&session, &sel)),
            projects: sel.projects,
            project,
            filters: filters(&q),
            types: view::type_choices(nonempty(&q.bead_type)),
            form_action: "/ui/list",
            fragment_url: format!("/ui/list/rows?{query}"),
            here: format!("/ui/list?{query}"),
        };
        Ok(html(&page))
    }
    .await;
    or_fail(&session, result)
}

pub(crate) async fn list_rows(
    Extension(web): Extension<Arc<Web>>,
    session: Session,
    ApiQuery(q): ApiQuery<BoardQuery>,
) -> Response {
    let result = select(&web, &q).await.map(|sel| html(&rows(&session, &sel)));
    or_fail(&session, result)
}

// ---------------------------------------------------------------------------------------------
// Bead detail

pub(crate) struct BeadView {
    pub id: String,
    pub title: String,
    pub priority: String,
    pub prio_class: String,
    pub bead_type: &'static str,
    pub project: String,
    pub column: &'static str,
    pub status: &'static str,
    pub assignee: Option<String>,
    pub tags: String,
    pub attempts: u32,
    pub close_reason: Option<String>,
    pub created: String,
    pub updated: String,
    pub last_error: Option<String>,
    pub description_html: String,
    pub actions: Vec<Action>,
    pub version: i64,
}

pub(crate) struct CommitView {
    pub sha: String,
    pub branch: Option<String>,
}

pub(crate) struct AttemptView {
    pub attempt: u32,
    pub succeeded: bool,
    pub outcome: &'static str,
    pub agent: String,
    pub duration: String,
    pub finished: String,
    pub finished_iso: String,
    pub dispatch: String,
    pub error: Option<String>,
    pub commits: Vec<CommitView>,
    pub created: Vec<String>,
    pub output: String,
}

pub(crate) struct DepView {
    pub id: String,
    pub title: String,
    pub status: &'static str,
}

pub(crate) struct TimelineItem {
    pub when: String,
    pub iso: String,
    pub text: String,
    at: chrono::DateTime<Utc>,
}

#[derive(Template)]
#[template(path = "web/bead_panel.html")]
struct BeadPanel {
    bead: BeadView,
    can_write: bool,
    csrf: String,
    attempts: Vec<AttemptView>,
    graph: String,
    upstream: Vec<DepView>,
    downstream: Vec<DepView>,
    timeline: Vec<TimelineItem>,
}

#[derive(Template)]
#[template(path = "web/bead.html")]
struct BeadPage {
    chrome: Chrome,
    bead: BeadView,
    panel: String,
    form_id: &'static str,
    edit: EditForm,
}

/// Events of the project read back for a bead's timeline at most.
const TIMELINE_SCAN: i64 = 5000;

async fn bead_data(web: &Web, session: &Session, raw: &str) -> Result<(Bead, BeadPanel), Error> {
    let store = &*web.shared.store;
    let id = BeadId::parse(raw)?;
    let bead = store.get_bead(&id).await?;
    let attempts = store.list_attempts(&id).await?;
    // The neighbourhood: the project's beads, and blockers in other projects.
    let filter = BeadFilter { project: Some(bead.project_id.clone()), ..BeadFilter::default() };
    let mut beads: HashMap<BeadId, Bead> = HashMap::new();
    let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
    loop {
        let got = store.list_beads(&filter, &page).await?;
        beads.extend(got.beads.into_iter().map(|b| (b.id.clone(), b)));
        match got.next_cursor {
            Some(next) if beads.len() < MAX_BEADS => page.after = Some(next),
            _ => break,
        }
    }
    for blocker in &bead.blocked_by {
        if !beads.contains_key(blocker)
            && let Ok(b) = store.get_bead(blocker).await
        {
            beads.insert(b.id.clone(), b);
        }
    }
    let mut waiting: HashMap<BeadId, Vec<BeadId>> = HashMap::new();
    for b in beads.values() {
        for blocker in &b.blocked_by {
            waiting.entry(blocker.clone()).or_default().push(b.id.clone());
        }
    }
    waiting.values_mut().for_each(|v| v.sort_by(|a, b| a.as_str().cmp(b.as_str())));
    let dep = |id: &BeadId| DepView {
        id: id.to_string(),
        title: beads.get(id).map(|b| b.title.clone()).unwrap_or_default(),
        status: beads.get(id).map_or("unknown", |b| b.status.as_str()),
    };
    let upstream = bead.blocked_by.iter().map(dep).collect();
    let downstream = waiting.get(&id).map(|w| w.iter().map(dep).collect()).unwrap_or_default();
    let graph = super::graph::svg(&bead, &beads, &waiting);
    let ready: HashSet<BeadId> = if bead.status == Status::Open {
        store
            .list_ready(&bead.project_id, PageRequest::MAX_LIMIT, Utc::now())
            .await?
            .into_iter()
            .map(|b| b.id)
            .collect()
    } else {
        HashSet::new()
    };
    let column = Column::of(&bead, &ready);
    let timeline = timeline(web, &bead, &attempts).await?;
    let (created, _) = when(bead.created_at);
    let (updated, _) = when(bead.updated_at);
    let view = BeadView {
        id: bead.id.to_string(),
        title: bead.title.clone(),
        priority: bead.priority.to_string(),
        prio_class: format!("p{}", bead.priority.get()),
        bead_type: bead.bead_type.as_str(),
        project: bead.project_id.to_string(),
        column: column.title(),
        status: bead.status.as_str(),
        assignee: bead.assignee.clone().or_else(|| bead.started_by.clone()),
        tags: bead.tags.join(", "),
        attempts: bead.attempts,
        close_reason: bead.close_reason.clone(),
        created,
        updated,
        last_error: bead.last_error.clone(),
        description_html: super::markdown::render(&bead.description),
        actions: view::actions(column),
        version: bead.version,
    };
    let attempts = attempts.iter().rev().map(attempt_view).collect();
    let panel = BeadPanel {
        bead: view,
        can_write: session.can_write(),
        csrf: session.csrf.clone(),
        attempts,
        graph,
        upstream,
        downstream,
        timeline,
    };
    Ok((bead, panel))
}

fn attempt_view(a: &Attempt) -> AttemptView {
    let (finished, finished_iso) = when(a.finished_at);
    AttemptView {
        attempt: a.attempt,
        succeeded: a.succeeded,
        outcome: if a.succeeded { "success" } else { "failure" },
        agent: a.agent_id.clone(),
        duration: format!("{:.1} s", a.duration_ms as f64 / 1000.0),
        finished,
        finished_iso,
        dispatch: a.dispatch_id.to_string(),
        error: a.error.clone(),
        commits: a
            .commits
            .iter()
            .map(|c| CommitView { sha: c.sha.clone(), branch: Some(c.branch.clone()).filter(|b| !b.is_empty()) })
            .collect(),
        created: a.created_beads.iter().map(ToString::to_string).collect(),
        output: a.output.clone(),
    }
}

/// The bead's history: its own times, its attempts, and the events about it among the
/// project's last [`TIMELINE_SCAN`] events; newest first.
async fn timeline(web: &Web, bead: &Bead, attempts: &[Attempt]) -> Result<Vec<TimelineItem>, Error> {
    let item = |at: chrono::DateTime<Utc>, text: String| {
        let (when, iso) = when(at);
        TimelineItem { when, iso, text, at }
    };
    let mut items = vec![item(bead.created_at, "created".into())];
    for a in attempts {
        if let Some(s) = a.started_at {
            items.push(item(s, format!("attempt {} started by {}", a.attempt, a.agent_id)));
        }
        let outcome =
            if a.succeeded { "succeeded".to_owned() } else { format!("failed: {}", a.error.as_deref().unwrap_or("")) };
        items.push(item(a.finished_at, format!("attempt {} {outcome}", a.attempt)));
    }
    let store = &*web.shared.store;
    let last = store.last_event_seq().await?;
    let mut after = (last - TIMELINE_SCAN).max(0);
    let gaps_fill_until = Utc::now() - crate::cursor::WINDOW;
    for _ in 0..(TIMELINE_SCAN / 500 + 1) {
        let query = EventQuery { after, limit: 500, project: Some(bead.project_id.clone()), gaps_fill_until };
        let page = store.list_event_page(&query).await?;
        for e in page.events.iter().filter(|e| e.entity_id == bead.id.as_str()) {
            if e.kind.as_str() == "bead.created" {
                continue;
            }
            items.push(item(e.created_at, format!("{}: {}", e.kind.as_str(), e.description)));
        }
        if page.events.is_empty() || page.next <= after {
            break;
        }
        after = page.next;
    }
    items.sort_by_key(|i| std::cmp::Reverse(i.at));
    Ok(items)
}

pub(crate) async fn bead(Extension(web): Extension<Arc<Web>>, session: Session, Path(id): Path<String>) -> Response {
    let result = async {
        let (bead, panel) = bead_data(&web, &session, &id).await?;
        let page = BeadPage {
            chrome: chrome(&session, &format!("{} {}", bead.id, bead.title), "board", Some(bead.project_id.as_str())),
            panel: render(&panel),
            bead: panel.bead,
            form_id: "edit",
            edit: EditForm::of(&bead),
        };
        Ok(html(&page))
    }
    .await;
    or_fail(&session, result)
}

pub(crate) async fn bead_panel(
    Extension(web): Extension<Arc<Web>>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let result = bead_data(&web, &session, &id).await.map(|(_, panel)| html(&panel));
    or_fail(&session, result)
}

// ---------------------------------------------------------------------------------------------
// Projects, agents, events

#[derive(Template)]
#[template(path = "web/page.html")]
struct LivePage {
    chrome: Chrome,
    heading: String,
    fragment_url: String,
    panel: String,
}

pub(crate) struct ProjectView {
    pub id: String,
    pub name: String,
    pub status: &'static str,
    pub paused: bool,
    pub repo: String,
    pub open: u64,
    pub in_progress: u64,
    pub blocked: u64,
    pub closed: u64,
}

#[derive(Template)]
#[template(path = "web/projects.html")]
struct ProjectsPanel {
    projects: Vec<ProjectView>,
    can_write: bool,
    csrf: String,
}

async fn projects_data(web: &Web, session: &Session) -> Result<ProjectsPanel, Error> {
    let store = &*web.shared.store;
    let mut projects = Vec::new();
    for p in store.list_projects().await? {
        let counts = store.bead_counts(Some(&p.id)).await?;
        let n = |s: Status| counts.iter().find(|(st, _)| *st == s).map_or(0, |(_, n)| *n);
        projects.push(ProjectView {
            id: p.id.to_string(),
            name: if p.name == p.id.as_str() { String::new() } else { p.name.clone() },
            status: p.status.as_str(),
            paused: p.status == ProjectStatus::Paused,
            repo: loom_store::redact_url(&p.git_repo),
            open: n(Status::Open),
            in_progress: n(Status::InProgress),
            blocked: n(Status::Blocked),
            closed: n(Status::Closed),
        });
    }
    Ok(ProjectsPanel { projects, can_write: session.can_write(), csrf: session.csrf.clone() })
}

pub(crate) async fn projects(Extension(web): Extension<Arc<Web>>, session: Session) -> Response {
    let result = projects_data(&web, &session).await.map(|panel| {
        html(&LivePage {
            chrome: chrome(&session, "Projects", "projects", None),
            heading: "Projects".into(),
            fragment_url: "/ui/projects/panel".into(),
            panel: render(&panel),
        })
    });
    or_fail(&session, result)
}

pub(crate) async fn projects_panel(Extension(web): Extension<Arc<Web>>, session: Session) -> Response {
    let result = projects_data(&web, &session).await.map(|p| html(&p));
    or_fail(&session, result)
}

pub(crate) struct AgentView {
    pub id: String,
    pub project: String,
    pub online: bool,
    pub status: &'static str,
    pub bead: Option<String>,
    pub capacity: u32,
    pub role: String,
    pub heartbeat: String,
    pub heartbeat_iso: String,
}

#[derive(Template)]
#[template(path = "web/agents.html")]
struct AgentsPanel {
    agents: Vec<AgentView>,
    online: usize,
}

async fn agents_data(web: &Web) -> Result<AgentsPanel, Error> {
    let mut agents: Vec<AgentView> = web
        .shared
        .store
        .list_agents(None)
        .await?
        .iter()
        .map(|a| {
            let (heartbeat, heartbeat_iso) = when(a.last_heartbeat);
            AgentView {
                id: a.id.to_string(),
                project: a.project_id.to_string(),
                online: a.status != AgentStatus::Offline,
                status: a.status.as_str(),
                bead: a.current_bead.as_ref().map(ToString::to_string),
                capacity: a.capacity,
                role: a.role.clone(),
                heartbeat,
                heartbeat_iso,
            }
        })
        .collect();
    agents.sort_by(|a, b| (!a.online, &a.project, &a.id).cmp(&(!b.online, &b.project, &b.id)));
    let online = agents.iter().filter(|a| a.online).count();
    Ok(AgentsPanel { agents, online })
}

pub(crate) async fn agents(Extension(web): Extension<Arc<Web>>, session: Session) -> Response {
    let result = agents_data(&web).await.map(|panel| {
        html(&LivePage {
            chrome: chrome(&session, "Agents", "agents", None),
            heading: "Agents".into(),
            fragment_url: "/ui/agents/panel".into(),
            panel: render(&panel),
        })
    });
    or_fail(&session, result)
}

pub(crate) async fn agents_panel(Extension(web): Extension<Arc<Web>>, session: Session) -> Response {
    let result = agents_data(&web).await.map(|p| html(&p));
    or_fail(&session, result)
}

pub(crate) struct EventView {
    pub when: String,
    pub iso: String,
    pub kind: &'static str,
    pub bead: Option<String>,
    pub text: String,
}

#[derive(Template)]
#[template(path = "web/events.html")]
struct EventsPanel {
    events: Vec<EventView>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    project: Option<String>,
}

/// Events the feed shows.
const FEED: usize = 100;

async fn events_data(web: &Web, q: &EventsQuery) -> Result<EventsPanel, Error> {
    let store = &*web.shared.store;
    let project = nonempty(&q.project).map(ProjectId::parse).transpose()?;
    let last = store.last_event_seq().await?;
    let back = if project.is_some() { 5000 } else { FEED as i64 * 2 };
    let gaps_fill_until = Utc::now() - crate::cursor::WINDOW;
    let mut after = (last - back).max(0);
    let mut events = Vec::new();
    for _ in 0..12 {
        let page =
            store.list_event_page(&EventQuery { after, limit: 500, project: project.clone(), gaps_fill_until }).await?;
        events.extend(page.events);
        if page.next <= after || page.next >= last {
            break;
        }
        after = page.next;
    }
    let events = events
        .iter()
        .rev()
        .take(FEED)
        .map(|e| {
            let (when, iso) = when(e.created_at);
            EventView {
                when,
                iso,
                kind: e.kind.as_str(),
                bead: e.kind.as_str().starts_with("bead.").then(|| e.entity_id.clone()),
                text: e.description.clone(),
            }
        })
        .collect();
    Ok(EventsPanel { events })
}

pub(crate) async fn events(
    Extension(web): Extension<Arc<Web>>,
    session: Session,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Response {
    let result = events_data(&web, &q).await.map(|panel| {
        let project = nonempty(&q.project);
        html(&LivePage {
            chrome: chrome(&session, "Events", "events", project),
            heading: match project {
                Some(p) => format!("Events · {p}"),
                None => "Events".into(),
            },
            fragment_url: match project {
                Some(p) => format!("/ui/events/panel?project={}", enc(p)),
                None => "/ui/events/panel".into(),
            },
            panel: render(&panel),
        })
    });
    or_fail(&session, result)
}

pub(crate) async fn events_panel(
    Extension(web): Extension<Arc<Web>>,
    session: Session,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Response {
    let result = events_data(&web, &q).await.map(|p| html(&p));
    or_fail(&session, result)
}
