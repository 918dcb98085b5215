//! The PostgreSQL store: sqlx with a connection pool, embedded migrations, `FOR UPDATE SKIP
//! LOCKED` claims and optimistic concurrency on `version`.

mod attempts;
mod beads;
mod connectors;
mod dispatch;
mod import;
mod keys;
mod rows;
mod starts;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use loom_domain::{
    Agent, ApiKey, Bead, BeadId, DispatchId, Event, NewBead, NewProject, Project, ProjectId, Role, Status,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use std::str::FromStr;
use std::time::Duration;

use crate::{
    Attempt, BeadFilter, BeadPage, BeadPatch, Claim, ClaimRequest, CreatedBead, DispatchResult, DispatchStart, Error,
    EventPage, EventQuery, ImportAction, ImportBead, NewEvent, OutboxMessage, PageRequest, ProjectUsage, Result,
    ResultOutcome, StartOutcome, Store,
};
use rows::{agent_from_row, event_from_row, outbox_from_row, project_from_row};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How to connect to PostgreSQL.
#[derive(Clone, Debug)]
pub struct PgOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// For PgBouncer in transaction-pooling mode: no prepared statements that outlive a transaction.
    pub statement_cache: bool,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self { max_connections: 16, acquire_timeout: Duration::from_secs(5), statement_cache: true }
    }
}

/// The PostgreSQL implementation of [`Store`].
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    starts: starts::Starts,
}

impl PgStore {
    /// Connects to `url` (does not migrate: call [`PgStore::migrate`]).
    pub async fn connect(url: &str, options: &PgOptions) -> Result<Self> {
        let mut connect = PgConnectOptions::from_str(url)
            .map_err(|e| Error::Unavailable(format!("bad database url: {e}")))?
            .application_name("loom");
        if !options.statement_cache {
            connect = connect.statement_cache_capacity(0);
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            // A ping before every statement would double the round trips of the hot path; only a
            // connection that sat idle (and may have been cut by a restart), or any connection
            // shortly after one was found broken (its siblings likely are too), is pinged first,
            // and replaced when the ping fails.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > Duration::from_secs(1)
                        || crate::error::connection_lost_within(Duration::from_secs(10))
                    {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(connect)
            .await?;
        Ok(Self { pool, starts: starts::Starts::default() })
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool, starts: starts::Starts::default() }
    }

    /// Applies pending migrations; returns how many were applied.
    pub async fn migrate(&self) -> Result<usize> {
        let before = applied(&self.pool).await?;
        MIGRATOR.run(&self.pool).await?;
        Ok(applied(&self.pool).await? - before)
    }

    /// How many of the embedded migrations the database has not applied (successfully). Unlike
    /// `migrate` it takes no lock, so it works through a transaction-pooling PgBouncer.
    pub async fn pending_migrations(&self) -> Result<usize> {
        let exists: bool =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetch_one(&self.pool).await?;
        let applied: Vec<i64> = if exists {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success").fetch_all(&self.pool).await?
        } else {
            Vec::new()
        };
        Ok(MIGRATOR.iter().filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version)).count())
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

async fn applied(pool: &PgPool) -> Result<usize> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetch_one(pool).await?;
    if !exists {
        return Ok(0);
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success").fetch_one(pool).await?;
    Ok(n as usize)
}

type Tx<'a> = Transaction<'a, Postgres>;

/// Begins a transaction in a task of its own. sqlx (0.8.6; launchbadge/sqlx#4393) cannot roll
/// back a transaction whose caller is cancelled during `BEGIN`'s round trip (a client gone, a
/// gRPC deadline, a timeout): the connection goes back to the pool inside an open transaction,
/// and the next borrower's single statements run in it, reported done but not committed. The
/// fault suite saw a claim applied that way, its task published, and the agent told the
/// dispatch was stale. Here a cancelled caller only drops the task's finished transaction,
/// which sqlx rolls back on the connection's next use.
pub(crate) async fn begin(pool: &PgPool) -> Result<Tx<'static>> {
    let pool = pool.clone();
    match tokio::spawn(async move { pool.begin().await }).await {
        Ok(tx) => Ok(tx?),
        Err(e) => Err(Error::Internal(format!("beginning a transaction: {e}"))),
    }
}

/// Ends a transaction: commits after `Ok`; after `Err` rolls back before returning. A dropped
/// sqlx transaction is rolled back only when its connection goes back to the pool, in a
/// background task; until then it keeps its row locks, and concurrent `SKIP LOCKED` claims skip
/// those rows.
async fn finish<T>(tx: Tx<'_>, result: Result<T>) -> Result<T> {
    match result {
        Ok(v) => {
            tx.commit().await?;
            Ok(v)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// Appends events inside `tx`, in order.
pub(crate) async fn insert_events(tx: &mut Tx<'_>, events: &[NewEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&NewEvent) -> String| events.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO events (id, kind, source, project_id, entity_id, action, description, data, correlation_id, created_at)
         SELECT id, kind, source, project_id, entity_id, action, description, data, correlation_id, $10
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::jsonb[], $9::text[])
           WITH ORDINALITY AS t(id, kind, source, project_id, entity_id, action, description, data, correlation_id, n)
         ORDER BY n",
    )
    .bind(col(|_| uuid::Uuid::now_v7().to_string()))
    .bind(col(|e| e.kind.as_str().to_owned()))
    .bind(col(|e| e.source.clone()))
    .bind(events.iter().map(|e| e.project_id.as_ref().map(|p| p.to_string())).collect::<Vec<_>>())
    .bind(col(|e| e.entity_id.clone()))
    .bind(col(|e| e.action.clone()))
    .bind(col(|e| e.description.clone()))
    .bind(events.iter().map(|e| e.data.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.correlation_id.clone()).collect::<Vec<_>>())
    .bind(crate::now())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

const PROJECT_COLS: &str =
    "id, name, git_repo, branch, bead_prefix, context, git_strategy, status, created_at, updated_at";

#[async_trait]
impl Store for PgStore {
    async fn create_project(&self, p: NewProject) -> Result<Project> {
        p.validate()?;
        let mut tx = begin(&self.pool).await?;
        let result: Result<Project> = async {
            let now = crate::now();
            let res = sqlx::query(&format!(
                "INSERT INTO projects ({PROJECT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
                 ON CONFLICT (id) DO NOTHING RETURNING {PROJECT_COLS}"
            ))
            .bind(p.id.as_str())
            .bind(&p.name)
            .bind(&p.git_repo)
            .bind(&p.branch)
            .bind(p.bead_prefix.as_str())
            .bind(sqlx::types::Json(&p.context))
            .bind(p.git_strategy.as_str())
            .bind(p.status.as_str())
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = res else {
                return Err(Error::AlreadyExists { entity: "project", id: p.id.to_string() });
            };
            let project = project_from_row(&row)?;
            insert_events(&mut tx, &[NewEvent::for_project(&project, loom_domain::EventKind::ProjectCreated)]).await?;
            Ok(project)
        }
        .await;
        finish(tx, result).await
    }

    async fn get_project(&self, id: &ProjectId) -> Result<Project> {
        let row = sqlx::query(&format!("SELECT {PROJECT_COLS} FROM projects WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::not_found("project", id))?;
        project_from_row(&row)
    }

    async fn list_projects(&self) -> Result<Vec<Project>> {
        let rows =
            sqlx::query(&format!("SELECT {PROJECT_COLS} FROM projects ORDER BY id")).fetch_all(&self.pool).await?;
        rows.iter().map(project_from_row).collect()
    }

    async fn update_project(&self, p: NewProject) -> Result<Project> {
        p.validate()?;
        let mut tx = begin(&self.pool).await?;
        let result: Result<Project> = async {
            let prefix: Option<String> =
                sqlx::query_scalar("SELECT bead_prefix FROM projects WHERE id = $1 FOR UPDATE")
                    .bind(p.id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            let prefix = prefix.ok_or_else(|| Error::not_found("project", &p.id))?;
            if prefix != p.bead_prefix.as_str() {
                return Err(Error::Conflict(format!(
                    "project {}: the bead prefix is {prefix:?} and cannot be changed (bead ids keep it)",
                    p.id
                )));
            }
            let row = sqlx::query(&format!(
                "UPDATE projects SET name = $2, git_repo = $3, branch = $4, context = $5, git_strategy = $6,
                 status = $7, updated_at = $8 WHERE id = $1 RETURNING {PROJECT_COLS}"
            ))
            .bind(p.id.as_str())
            .bind(&p.name)
            .bind(&p.git_repo)
            .bind(&p.branch)
            .bind(sqlx::types::Json(&p.context))
            .bind(p.git_strategy.as_str())
            .bind(p.status.as_str())
            .bind(crate::now())
            .fetch_one(&mut *tx)
            .await?;
            let project = project_from_row(&row)?;
            insert_events(&mut tx, &[NewEvent::for_project(&project, loom_domain::EventKind::ProjectUpdated)]).await?;
            Ok(project)
        }
        .await;
        finish(tx, result).await
    }

    async fn delete_project(&self, id: &ProjectId) -> Result<()> {
        let mut tx = begin(&self.pool).await?;
        let result: Result<()> = async {
            let row = sqlx::query(&format!("SELECT {PROJECT_COLS} FROM projects WHERE id = $1 FOR UPDATE"))
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| Error::not_found("project", id))?;
            let project = project_from_row(&row)?;
            let running: i64 =
                sqlx::query_scalar("SELECT count(*) FROM beads WHERE project_id = $1 AND status = 'in_progress'")
                    .bind(id.as_str())
                    .fetch_one(&mut *tx)
                    .await?;
            if running > 0 {
                return Err(Error::Conflict(format!(
                    "project {id} has {running} beads in progress; close or wait for them first"
                )));
            }
            let edges: Vec<(String, String, String)> = sqlx::query_as(&crate::transitions::dependents_query('$'))
                .bind(id.as_str())
                .bind(crate::transitions::DEPENDENTS_SHOWN)
                .fetch_all(&mut *tx)
                .await?;
            if let Some(refused) = crate::transitions::refuse_delete(id, &edges) {
                return Err(refused);
            }
            sqlx::query("DELETE FROM projects WHERE id = $1").bind(id.as_str()).execute(&mut *tx).await?;
            insert_events(&mut tx, &[NewEvent::for_project(&project, loom_domain::EventKind::ProjectDeleted)]).await?;
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    async fn create_beads(&self, beads: Vec<NewBead>) -> Result<Vec<Bead>> {
        beads::create(&self.pool, beads).await
    }

    async fn get_bead(&self, id: &BeadId) -> Result<Bead> {
        beads::get(&self.pool, id).await
    }

    async fn get_bead_view(&self, id: &BeadId) -> Result<(Bead, Option<Attempt>)> {
        attempts::bead_view(&self.pool, id).await
    }

    async fn list_beads(&self, filter: &BeadFilter, page: &PageRequest) -> Result<BeadPage> {
        beads::list(&self.pool, filter, page).await
    }

    async fn update_bead(&self, id: &BeadId, expected_version: i64, patch: BeadPatch) -> Result<Bead> {
        beads::update(&self.pool, id, expected_version, patch).await
    }

    async fn claim_bead(&self, id: &BeadId, claimer: &str, lease: Duration) -> Result<Bead> {
        beads::claim(&self.pool, id, claimer, lease).await
    }

    async fn close_bead(&self, id: &BeadId, reason: &str, expected_version: Option<i64>) -> Result<Bead> {
        beads::set_status(&self.pool, id, Status::Closed, Some(reason), expected_version).await
    }

    async fn reopen_bead(&self, id: &BeadId, expected_version: Option<i64>) -> Result<Bead> {
        beads::set_status(&self.pool, id, Status::Open, None, expected_version).await
    }

    async fn add_dependency(&self, bead: &BeadId, blocker: &BeadId) -> Result<Bead> {
        beads::add_dependency(&self.pool, bead, blocker).await
    }

    async fn remove_dependency(&self, bead: &BeadId, blocker: &BeadId) -> Result<Bead> {
        beads::remove_dependency(&self.pool, bead, blocker).await
    }

    async fn import_beads(&self, project: &ProjectId, beads: Vec<ImportBead>) -> Result<Vec<ImportAction>> {
        import::import(&self.pool, project, beads).await
    }

    async fn bead_projects(&self, ids: &[BeadId]) -> Result<Vec<(BeadId, ProjectId)>> {
        import::bead_projects(&self.pool, ids).await
    }

    async fn list_ready(&self, project: &ProjectId, limit: u32, now: DateTime<Utc>) -> Result<Vec<Bead>> {
        dispatch::list_ready(&self.pool, project, limit, now).await
    }

    async fn create_claimed(&self, bead: NewBead, request: &ClaimRequest) -> Result<CreatedBead> {
        dispatch::create_claimed(&self.pool, bead, request).await
    }

    async fn claim_ready(&self, request: &ClaimRequest) -> Result<Vec<Claim>> {
        dispatch::claim(&self.pool, request).await
    }

    async fn create_and_claim(&self, beads: Vec<NewBead>, request: &ClaimRequest) -> Result<(Vec<Bead>, Vec<Claim>)> {
        dispatch::create_and_claim(&self.pool, beads, request).await
    }

    async fn start_dispatch(&self, start: &DispatchStart) -> Result<StartOutcome> {
        self.starts.start(&self.pool, start).await
    }

    async fn hand_back(&self, dispatch: &DispatchId, agent_id: &str, reason: &str) -> Result<Option<Bead>> {
        dispatch::hand_back(&self.pool, dispatch, agent_id, reason).await
    }

    async fn extend_lease(&self, dispatch: &DispatchId, until: DateTime<Utc>) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE beads SET lease_expires_at = $2, started_at = COALESCE(started_at, $3)
             WHERE dispatch_id = $1 AND status = 'in_progress'",
        )
        .bind(dispatch.as_str())
        .bind(until)
        .bind(crate::now())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn record_results(&self, results: &[DispatchResult]) -> Result<Vec<ResultOutcome>> {
        dispatch::record_results(&self.pool, results).await
    }

    async fn list_attempts(&self, bead: &BeadId) -> Result<Vec<Attempt>> {
        attempts::list(&self.pool, bead).await
    }

    async fn release_expired_leases(&self, now: DateTime<Utc>, max_attempts: u32, limit: u32) -> Result<Vec<Bead>> {
        dispatch::release_expired(&self.pool, now, max_attempts, limit).await
    }

    async fn block_dispatch(&self, dispatch: &DispatchId, reason: &str) -> Result<Option<Bead>> {
        dispatch::block(&self.pool, dispatch, reason).await
    }

    async fn position(&self, name: &str) -> Result<i64> {
        let p: Option<i64> = sqlx::query_scalar("SELECT position FROM positions WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(p.unwrap_or(0))
    }

    async fn save_position(&self, name: &str, position: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO positions (name, position, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at
             WHERE positions.position < EXCLUDED.position",
        )
        .bind(name)
        .bind(position)
        .bind(crate::now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn append_event(&self, event: NewEvent) -> Result<Event> {
        let row = sqlx::query(
            "INSERT INTO events (id, kind, source, project_id, entity_id, action, description, data, correlation_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(event.kind.as_str())
        .bind(&event.source)
        .bind(event.project_id.as_ref().map(ProjectId::as_str))
        .bind(&event.entity_id)
        .bind(&event.action)
        .bind(&event.description)
        .bind(&event.data)
        .bind(&event.correlation_id)
        .bind(crate::now())
        .fetch_one(&self.pool)
        .await?;
        event_from_row(&row)
    }

    async fn append_events(&self, events: Vec<NewEvent>) -> Result<()> {
        let mut tx = begin(&self.pool).await?;
        insert_events(&mut tx, &events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_events(&self, after: i64, limit: u32) -> Result<Vec<Event>> {
        let (_, limit) = PageRequest::first(limit).parse()?;
        let rows = sqlx::query("SELECT * FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn list_event_page(&self, q: &EventQuery) -> Result<EventPage> {
        let (_, limit) = PageRequest::first(q.limit).parse()?;
        // One statement, one snapshot: the highest seq below the first gap that may still fill
        // (its next event is younger than `gaps_fill_until`), else the newest seq.
        let horizon: i64 = sqlx::query_scalar(
            "SELECT CASE WHEN gap.next IS NULL THEN GREATEST($1, (SELECT COALESCE(max(seq), 0) FROM events))
                    ELSE COALESCE((SELECT max(seq) FROM events WHERE seq > $1 AND seq < gap.next), $1) END
             FROM (SELECT min(y.seq) AS next FROM events y
                   WHERE y.seq > $1 + 1 AND y.created_at > $2
                     AND NOT EXISTS (SELECT 1 FROM events e WHERE e.seq = y.seq - 1)) gap",
        )
        .bind(q.after)
        .bind(q.gaps_fill_until)
        .fetch_one(&self.pool)
        .await?;
        let sql = match q.project {
            None => "SELECT * FROM events WHERE seq > $1 AND seq <= $2 AND $4::text IS NULL ORDER BY seq LIMIT $3",
            Some(_) => "SELECT * FROM events WHERE project_id = $4 AND seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
        };
        let rows = sqlx::query(sql)
            .bind(q.after)
            .bind(horizon)
            .bind(limit)
            .bind(q.project.as_ref().map(ProjectId::as_str))
            .fetch_all(&self.pool)
            .await?;
        Ok(EventPage::settled(q, horizon, rows.iter().map(event_from_row).collect::<Result<_>>()?))
    }

    async fn last_event_seq(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COALESCE(max(seq), 0) FROM events").fetch_one(&self.pool).await?)
    }

    async fn take_outbox(&self, limit: u32) -> Result<Vec<OutboxMessage>> {
        let rows = sqlx::query("SELECT * FROM outbox ORDER BY id LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn outbox_backlog(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&self.pool).await?;
        Ok(n.max(0) as u64)
    }

    async fn mark_outbox_sent(&self, ids: &[i64]) -> Result<()> {
        sqlx::query("DELETE FROM outbox WHERE id = ANY($1)").bind(ids).execute(&self.pool).await?;
        Ok(())
    }

    async fn upsert_agent(&self, a: &Agent) -> Result<()> {
        sqlx::query(
            "INSERT INTO agents (id, project_id, role, instance, status, current_bead, capacity, last_heartbeat)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (id) DO UPDATE SET project_id = $2, role = $3, instance = $4, status = $5,
               current_bead = $6, capacity = $7, last_heartbeat = $8",
        )
        .bind(a.id.as_str())
        .bind(a.project_id.as_str())
        .bind(&a.role)
        .bind(&a.instance)
        .bind(a.status.as_str())
        .bind(a.current_bead.as_ref().map(BeadId::as_str))
        .bind(i64::from(a.capacity))
        .bind(a.last_heartbeat)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_agents(&self, project: Option<&ProjectId>) -> Result<Vec<Agent>> {
        let rows = sqlx::query("SELECT * FROM agents WHERE $1::text IS NULL OR project_id = $1 ORDER BY id")
            .bind(project.map(ProjectId::as_str))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(agent_from_row).collect()
    }

    async fn bead_counts(&self, project: Option<&ProjectId>) -> Result<Vec<(Status, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, count(*) FROM beads WHERE $1::text IS NULL OR project_id = $1 GROUP BY status",
        )
        .bind(project.map(ProjectId::as_str))
        .fetch_all(&self.pool)
        .await?;
        Ok(Status::ALL
            .iter()
            .map(|s| (*s, rows.iter().find(|(n, _)| n == s.as_str()).map_or(0, |(_, c)| *c as u64)))
            .collect())
    }

    async fn running_by_project(&self) -> Result<Vec<(ProjectId, u64)>> {
        // Walks the running beads in `beads_status_seq`, not the table.
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT project_id, count(*) FROM beads WHERE status = 'in_progress' GROUP BY project_id ORDER BY project_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(p, n)| Ok((ProjectId::parse(&p).map_err(|e| Error::Internal(e.to_string()))?, n as u64)))
            .collect()
    }

    async fn create_api_key(&self, name: &str, role: Role, hash: &str) -> Result<ApiKey> {
        keys::create(&self.pool, name, role, hash).await
    }

    async fn find_api_key(&self, hash: &str) -> Result<Option<ApiKey>> {
        keys::find(&self.pool, hash).await
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        keys::list(&self.pool).await
    }

    async fn revoke_api_key(&self, id: &str) -> Result<()> {
        keys::revoke(&self.pool, id).await
    }

    async fn acquire_lease(&self, name: &str, holder: &str, now: DateTime<Utc>, ttl: Duration) -> Result<bool> {
        keys::acquire_lease(&self.pool, name, holder, now, ttl).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        keys::release_lease(&self.pool, name, holder).await
    }

    async fn list_connectors(&self) -> Result<Vec<crate::ConnectorRecord>> {
        connectors::list(&self.pool).await
    }

    async fn get_connector(&self, id: &str) -> Result<crate::ConnectorRecord> {
        connectors::get(&self.pool, id).await
    }

    async fn create_connector(&self, connector: crate::NewConnector) -> Result<crate::ConnectorRecord> {
        connectors::create(&self.pool, connector).await
    }

    async fn update_connector(
        &self,
        expected_version: i64,
        connector: crate::NewConnector,
    ) -> Result<crate::ConnectorRecord> {
        connectors::update(&self.pool, expected_version, connector).await
    }

    async fn delete_connector(&self, id: &str) -> Result<()> {
        connectors::delete(&self.pool, id).await
    }

    async fn token_usage(&self, project: Option<&ProjectId>) -> Result<Vec<ProjectUsage>> {
        attempts::usage(&self.pool, project).await
    }
}
