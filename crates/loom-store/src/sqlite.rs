//! The SQLite store, the embedded default of `loom up`: one file in WAL mode, one writer
//! connection whose transactions begin `IMMEDIATE`, and a small pool of readers.
//!
//! SQLite allows one writer at a time. Funnelling every write through a single connection (and
//! taking the write lock when the transaction begins, not at its first write) means a write never
//! deadlocks with another or fails with `SQLITE_BUSY` halfway through; another process writing the
//! same file waits up to the busy timeout. That lock is also what keeps concurrent claimers from
//! getting the same bead.

mod attempts;
mod beads;
mod connectors;
mod deps;
mod dispatch;
mod import;
mod keys;
mod projects;
mod records;
mod rows;

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use loom_domain::{
    Agent, ApiKey, Bead, BeadId, DispatchId, Event, NewBead, NewProject, Project, ProjectId, Role, Status,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

use crate::{
    Attempt, BeadFilter, BeadPage, BeadPatch, Claim, ClaimRequest, CreatedBead, DispatchResult, DispatchStart, Error,
    EventPage, EventQuery, ImportAction, ImportBead, NewEvent, OutboxMessage, PageRequest, ProjectUsage, Result,
    ResultOutcome, StartOutcome, Store,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a connection waits for another process's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Reader connections for a file database; the machine this targets has two cores.
const READERS: u32 = 4;

type Tx = Transaction<'static, Sqlite>;

/// The SQLite implementation of [`Store`].
#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// One connection: every write transaction goes through it, one at a time.
    writer: SqlitePool,
    /// Reads that need no transaction; the same pool as `writer` for an in-memory database.
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path` and runs migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        // The writer connects first, so the file exists and is in WAL mode before any reader opens it.
        let writer =
            SqlitePoolOptions::new().max_connections(1).min_connections(1).connect_with(options.clone()).await?;
        let reader =
            SqlitePoolOptions::new().max_connections(READERS).connect_with(options.pragma("query_only", "ON")).await?;
        let store = Self { writer, reader };
        store.migrate().await?;
        Ok(store)
    }

    /// A private in-memory database (for tests and benchmarks), migrated.
    pub async fn in_memory() -> Result<Self> {
        // Each connection to `:memory:` is its own database, so there is exactly one, kept open
        // for the life of the pool, serving reads and writes.
        let options = SqliteConnectOptions::new().in_memory(true).foreign_keys(true).busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        let store = Self { writer: pool.clone(), reader: pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Runs pending migrations (idempotent); returns the number applied.
    pub async fn migrate(&self) -> Result<usize> {
        let before = self.applied().await?;
        MIGRATOR.run(&self.writer).await?;
        Ok(self.applied().await? - before)
    }

    async fn applied(&self) -> Result<usize> {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
        )
        .fetch_one(&self.writer)
        .await?;
        if !exists {
            return Ok(0);
        }
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success").fetch_one(&self.writer).await?;
        Ok(usize::try_from(n).unwrap_or_default())
    }

    /// Begins a write transaction holding the database's write lock from its first statement.
    async fn write(&self) -> Result<Tx> {
        self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(locked)
    }
}

/// Maps `SQLITE_BUSY` / `SQLITE_LOCKED` (and their extended codes), which SQLite returns once the
/// busy timeout has passed while another process holds the write lock, to `Unavailable`: a retry
/// may succeed. Everything else converts as usual.
fn locked(e: sqlx::Error) -> Error {
    let code = e.as_database_error().and_then(|d| d.code()).and_then(|c| c.parse::<i32>().ok());
    match code {
        Some(c) if matches!(c & 0xff, 5 | 6) => Error::Unavailable(format!("the database file is locked: {e}")),
        _ => e.into(),
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_project(&self, project: NewProject) -> Result<Project> {
        projects::create(self, project).await
    }

    async fn get_project(&self, id: &ProjectId) -> Result<Project> {
        projects::get(&self.reader, id).await
    }

    async fn list_projects(&self) -> Result<Vec<Project>> {
        projects::list(&self.reader).await
    }

    async fn update_project(&self, project: NewProject) -> Result<Project> {
        projects::update(self, project).await
    }

    async fn delete_project(&self, id: &ProjectId) -> Result<()> {
        projects::delete(self, id).await
    }

    async fn create_beads(&self, beads: Vec<NewBead>) -> Result<Vec<Bead>> {
        beads::create(self, beads).await
    }

    async fn get_bead(&self, id: &BeadId) -> Result<Bead> {
        beads::get(&self.reader, id).await
    }

    async fn list_beads(&self, filter: &BeadFilter, page: &PageRequest) -> Result<BeadPage> {
        beads::list(&self.reader, filter, page).await
    }

    async fn update_bead(&self, id: &BeadId, expected_version: i64, patch: BeadPatch) -> Result<Bead> {
        beads::update(self, id, expected_version, patch).await
    }

    async fn claim_bead(&self, id: &BeadId, claimer: &str, lease: std::time::Duration) -> Result<Bead> {
        beads::claim(self, id, claimer, lease).await
    }

    async fn close_bead(&self, id: &BeadId, reason: &str, expected_version: Option<i64>) -> Result<Bead> {
        beads::set_status(self, id, Status::Closed, Some(reason), expected_version).await
    }

    async fn reopen_bead(&self, id: &BeadId, expected_version: Option<i64>) -> Result<Bead> {
        beads::set_status(self, id, Status::Open, None, expected_version).await
    }

    async fn add_dependency(&self, bead: &BeadId, blocker: &BeadId) -> Result<Bead> {
        deps::add(self, bead, blocker).await
    }

    async fn remove_dependency(&self, bead: &BeadId, blocker: &BeadId) -> Result<Bead> {
        deps::remove(self, bead, blocker).await
    }

    async fn import_beads(&self, project: &ProjectId, beads: Vec<ImportBead>) -> Result<Vec<ImportAction>> {
        import::import(self, project, beads).await
    }

    async fn bead_projects(&self, ids: &[BeadId]) -> Result<Vec<(BeadId, ProjectId)>> {
        import::bead_projects(&self.reader, ids).await
    }

    async fn list_ready(&self, project: &ProjectId, limit: u32, now: DateTime<Utc>) -> Result<Vec<Bead>> {
        dispatch::list_ready(&self.reader, project, limit, now).await
    }

    async fn create_claimed(&self, bead: NewBead, request: &ClaimRequest) -> Result<CreatedBead> {
        dispatch::create_claimed(self, bead, request).await
    }

    async fn claim_ready(&self, request: &ClaimRequest) -> Result<Vec<Claim>> {
        dispatch::claim(self, request).await
    }

    async fn start_dispatch(&self, start: &DispatchStart) -> Result<StartOutcome> {
        dispatch::start(self, start).await
    }

    async fn hand_back(&self, dispatch: &DispatchId, agent_id: &str, reason: &str) -> Result<Option<Bead>> {
        dispatch::hand_back(self, dispatch, agent_id, reason).await
    }

    async fn extend_lease(&self, dispatch: &DispatchId, until: DateTime<Utc>) -> Result<bool> {
        dispatch::extend_lease(self, dispatch, until).await
    }

    async fn record_results(&self, results: &[DispatchResult]) -> Result<Vec<ResultOutcome>> {
        dispatch::record_results(self, results).await
    }

    async fn list_attempts(&self, bead: &BeadId) -> Result<Vec<Attempt>> {
        attempts::list(&self.reader, bead).await
    }

    async fn release_expired_leases(&self, now: DateTime<Utc>, max_attempts: u32, limit: u32) -> Result<Vec<Bead>> {
        dispatch::release_expired(self, now, max_attempts, limit).await
    }

    async fn block_dispatch(&self, dispatch: &DispatchId, reason: &str) -> Result<Option<Bead>> {
        dispatch::block(self, dispatch, reason).await
    }

    async fn append_event(&self, event: NewEvent) -> Result<Event> {
        records::append_event(self, event).await
    }

    async fn append_events(&self, events: Vec<NewEvent>) -> Result<()> {
        let mut tx = self.write().await?;
        records::insert_events(&mut tx, &events).await?;
        tx.commit().await.map_err(locked)
    }

    async fn position(&self, name: &str) -> Result<i64> {
        records::position(&self.reader, name).await
    }

    async fn save_position(&self, name: &str, position: i64) -> Result<()> {
        records::save_position(self, name, position).await
    }

    async fn list_events(&self, after: i64, limit: u32) -> Result<Vec<Event>> {
        records::list_events(&self.reader, after, limit).await
    }

    async fn list_event_page(&self, query: &EventQuery) -> Result<EventPage> {
        records::list_event_page(&self.reader, query).await
    }

    async fn last_event_seq(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COALESCE(max(seq), 0) FROM events").fetch_one(&self.reader).await?)
    }

    async fn take_outbox(&self, limit: u32) -> Result<Vec<OutboxMessage>> {
        records::take_outbox(&self.reader, limit).await
    }

    async fn outbox_backlog(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&self.reader).await?;
        Ok(n.max(0) as u64)
    }

    async fn mark_outbox_sent(&self, ids: &[i64]) -> Result<()> {
        records::mark_outbox_sent(self, ids).await
    }

    async fn upsert_agent(&self, agent: &Agent) -> Result<()> {
        records::upsert_agent(self, agent).await
    }

    async fn list_agents(&self, project: Option<&ProjectId>) -> Result<Vec<Agent>> {
        records::list_agents(&self.reader, project).await
    }

    async fn bead_counts(&self, project: Option<&ProjectId>) -> Result<Vec<(Status, u64)>> {
        records::bead_counts(&self.reader, project).await
    }

    async fn running_by_project(&self) -> Result<Vec<(ProjectId, u64)>> {
        records::running_by_project(&self.reader).await
    }

    async fn create_api_key(&self, name: &str, role: Role, hash: &str) -> Result<ApiKey> {
        keys::create(self, name, role, hash).await
    }

    async fn find_api_key(&self, hash: &str) -> Result<Option<ApiKey>> {
        keys::find(&self.reader, hash).await
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        keys::list(&self.reader).await
    }

    async fn revoke_api_key(&self, id: &str) -> Result<()> {
        keys::revoke(self, id).await
    }

    async fn acquire_lease(&self, name: &str, holder: &str, now: DateTime<Utc>, ttl: Duration) -> Result<bool> {
        keys::acquire_lease(self, name, holder, now, ttl).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        keys::release_lease(self, name, holder).await
    }

    async fn list_connectors(&self) -> Result<Vec<crate::ConnectorRecord>> {
        connectors::list(&self.reader).await
    }

    async fn get_connector(&self, id: &str) -> Result<crate::ConnectorRecord> {
        connectors::get(&self.reader, id).await
    }

    async fn create_connector(&self, connector: crate::NewConnector) -> Result<crate::ConnectorRecord> {
        connectors::create(self, connector).await
    }

    async fn update_connector(
        &self,
        expected_version: i64,
        connector: crate::NewConnector,
    ) -> Result<crate::ConnectorRecord> {
        connectors::update(self, expected_version, connector).await
    }

    async fn delete_connector(&self, id: &str) -> Result<()> {
        connectors::delete(self, id).await
    }

    async fn token_usage(&self, project: Option<&ProjectId>) -> Result<Vec<ProjectUsage>> {
        attempts::usage(&self.reader, project).await
    }
}
