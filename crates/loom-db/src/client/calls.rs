//! `Store` for [`GrpcStore`]: one RPC per trait method. Each says whether it is safe to repeat
//! (see the module docs of `client`), encodes its arguments and validates the answer.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use loom_domain::{
    Agent, ApiKey, Bead, BeadId, DispatchId, Event, NewBead, NewProject, Project, ProjectId, Role, Status,
};
use loom_proto::{FromProto, IntoProto, v1};
use loom_store::{
    BeadFilter, BeadPage, BeadPatch, Claim, ClaimRequest, ConnectorRecord, CreatedBead, DispatchResult, DispatchStart,
    Error, EventPage, EventQuery, ImportAction, ImportBead, NewConnector, NewEvent, OutboxMessage, PageRequest, Result,
    ResultOutcome, StartOutcome, Store,
};

use super::{GrpcStore, Retry};

/// Sends `$message` with `$method` of the generated client, under `GrpcStore::call`.
macro_rules! rpc {
    ($self:ident . $method:ident($message:expr), $retry:expr) => {{
        let message = $message;
        $self
            .call(stringify!($method), $retry, move |mut client, left| {
                let mut request = tonic::Request::new(message.clone());
                request.set_timeout(left);
                async move { client.$method(request).await }
            })
            .await?
    }};
}

/// Validates an answer of the service; a malformed one is the service's bug, not the caller's.
fn answer<T: FromProto<P>, P>(proto: P) -> Result<T> {
    T::from_proto(proto).map_err(|e| Error::Internal(format!("the database service sent an invalid answer: {e}")))
}

use Retry::{Always, IfNoEffect};

#[async_trait]
impl Store for GrpcStore {
    async fn create_project(&self, project: NewProject) -> Result<Project> {
        answer(rpc!(self.create_project(v1::CreateProjectRequest { project: Some(project.into_proto()) }), IfNoEffect))
    }

    async fn get_project(&self, id: &ProjectId) -> Result<Project> {
        answer(rpc!(self.get_project(v1::GetProjectRequest { id: id.to_string() }), Always))
    }

    async fn list_projects(&self) -> Result<Vec<Project>> {
        answer(rpc!(self.list_projects(v1::ListProjectsRequest {}), Always).projects)
    }

    async fn update_project(&self, project: NewProject) -> Result<Project> {
        // A full replacement: repeating it sets the same fields again.
        answer(rpc!(self.update_project(v1::UpdateProjectRequest { project: Some(project.into_proto()) }), Always))
    }

    async fn delete_project(&self, id: &ProjectId) -> Result<()> {
        rpc!(self.delete_project(v1::DeleteProjectRequest { id: id.to_string() }), IfNoEffect);
        Ok(())
    }

    async fn create_beads(&self, beads: Vec<NewBead>) -> Result<Vec<Bead>> {
        answer(rpc!(self.create_beads(v1::CreateBeadsRequest { beads: beads.into_proto() }), IfNoEffect).beads)
    }

    async fn get_bead(&self, id: &BeadId) -> Result<Bead> {
        answer(rpc!(self.get_bead(v1::GetBeadRequest { id: id.to_string() }), Always))
    }

    async fn get_bead_view(&self, id: &BeadId) -> Result<(Bead, Option<loom_store::Attempt>)> {
        let view = rpc!(self.get_bead_view(v1::GetBeadRequest { id: id.to_string() }), Always);
        let bead = answer(
            view.bead.ok_or_else(|| Error::Internal("the database service sent a view without its bead".into()))?,
        )?;
        Ok((bead, view.latest.map(answer).transpose()?))
    }

    async fn list_beads(&self, filter: &BeadFilter, page: &PageRequest) -> Result<BeadPage> {
        let request =
            v1::ListBeadsRequest { filter: Some(filter.clone().into_proto()), page: Some(page.clone().into_proto()) };
        let response = rpc!(self.list_beads(request), Always);
        Ok(BeadPage { beads: answer(response.beads)?, next_cursor: response.next_cursor })
    }

    async fn update_bead(&self, id: &BeadId, expected_version: i64, patch: BeadPatch) -> Result<Bead> {
        // A repeat of an applied update would be refused (version conflict): never a second
        // change, but a misleading answer, so it is repeated only when the first had no effect.
        let request = v1::UpdateBeadRequest { id: id.to_string(), expected_version, patch: Some(patch.into_proto()) };
        answer(rpc!(self.update_bead(request), IfNoEffect))
    }

    async fn claim_bead(&self, id: &BeadId, claimer: &str, lease: std::time::Duration) -> Result<Bead> {
        // A repeat would be refused (the bead is in progress), so only when it had no effect.
        let request =
            v1::ClaimBeadRequest { id: id.to_string(), claimer: claimer.to_owned(), lease: Some(lease.into_proto()) };
        answer(rpc!(self.claim_bead(request), IfNoEffect))
    }

    async fn close_bead(&self, id: &BeadId, reason: &str, expected_version: Option<i64>) -> Result<Bead> {
        // As for updates: a repeat would be refused (already closed), so only when it had no effect.
        let request = v1::CloseBeadRequest { id: id.to_string(), reason: reason.to_owned(), expected_version };
        answer(rpc!(self.close_bead(request), IfNoEffect))
    }

    async fn reopen_bead(&self, id: &BeadId, expected_version: Option<i64>) -> Result<Bead> {
        answer(rpc!(self.reopen_bead(v1::ReopenBeadRequest { id: id.to_string(), expected_version }), IfNoEffect))
    }

    async fn add_dependency(&self, bead: &BeadId, blocker: &BeadId) -> Result<Bead> {
        let request = v1::DependencyRequest { bead: bead.to_string(), blocker: blocker.to_string() };
        answer(rpc!(self.add_dependency(request), Always))
    }

    async fn remove_dependency(&self, bead: &BeadId, blocker: &BeadId) -> Result<Bead> {
        let request = v1::DependencyRequest { bead: bead.to_string(), blocker: blocker.to_string() };
        answer(rpc!(self.remove_dependency(request), IfNoEffect))
    }

    async fn import_beads(&self, project: &ProjectId, beads: Vec<ImportBead>) -> Result<Vec<ImportAction>> {
        // Idempotent: a repeat of a batch that was applied finds every bead unchanged.
        let request = v1::ImportBeadsRequest { project_id: project.to_string(), beads: beads.into_proto() };
        answer(rpc!(self.import_beads(request), Always).outcomes)
    }

    async fn bead_projects(&self, ids: &[BeadId]) -> Result<Vec<(BeadId, ProjectId)>> {
        let request = v1::BeadProjectsRequest { ids: ids.iter().map(BeadId::to_string).collect() };
        answer(rpc!(self.bead_projects(request), Always).beads)
    }

    async fn list_ready(&self, project: &ProjectId, limit: u32, now: DateTime<Utc>) -> Result<Vec<Bead>> {
        let request = v1::ListReadyRequest { project_id: project.to_string(), limit, now: Some(now.into_proto()) };
        answer(rpc!(self.list_ready(request), Always).beads)
    }

    async fn claim_ready(&self, request: &ClaimRequest) -> Result<Vec<Claim>> {
        // Not idempotent: a repeat claims more beads. (Beads claimed by an answer that got lost
        // are not lost: their outbox rows dispatch them, and their leases expire if not.)
        answer(rpc!(self.claim_ready(request.clone().into_proto()), IfNoEffect).claims)
    }

    async fn create_claimed(&self, bead: NewBead, request: &ClaimRequest) -> Result<CreatedBead> {
        // Not idempotent: a repeat creates another bead.
        let request =
            v1::CreateClaimedRequest { bead: Some(bead.into_proto()), claim: Some(request.clone().into_proto()) };
        answer(rpc!(self.create_claimed(request), IfNoEffect))
    }

    async fn start_dispatch(&self, start: &DispatchStart) -> Result<StartOutcome> {
        // Repeating a start is harmless: the same agent's second start only renews the lease.
        answer(rpc!(self.start_dispatch(start.clone().into_proto()), Always))
    }

    async fn hand_back(&self, dispatch: &DispatchId, agent_id: &str, reason: &str) -> Result<Option<Bead>> {
        // A repeat finds the dispatch no longer current and changes nothing.
        let request = v1::HandBackRequest {
            dispatch_id: dispatch.to_string(),
            agent_id: agent_id.to_owned(),
            reason: reason.to_owned(),
        };
        answer(rpc!(self.hand_back(request), Always).bead)
    }

    async fn position(&self, name: &str) -> Result<i64> {
        Ok(rpc!(self.get_position(v1::GetPositionRequest { name: name.to_owned() }), Always).position)
    }

    async fn save_position(&self, name: &str, position: i64) -> Result<()> {
        // Positions only advance, so a repeat is harmless.
        rpc!(self.save_position(v1::SavePositionRequest { name: name.to_owned(), position }), Always);
        Ok(())
    }

    async fn extend_lease(&self, dispatch: &DispatchId, until: DateTime<Utc>) -> Result<bool> {
        let request = v1::ExtendLeaseRequest { dispatch_id: dispatch.to_string(), until: Some(until.into_proto()) };
        Ok(rpc!(self.extend_lease(request), Always).extended)
    }

    async fn record_result(&self, result: &DispatchResult) -> Result<ResultOutcome> {
        // Keyed by dispatch id: a repeat of an applied result is ignored by the store.
        let request = v1::RecordResultRequest { result: Some(result.clone().into_proto()) };
        answer(rpc!(self.record_result(request), Always))
    }

    async fn list_attempts(&self, bead: &BeadId) -> Result<Vec<loom_store::Attempt>> {
        answer(rpc!(self.list_attempts(v1::ListAttemptsRequest { bead_id: bead.to_string() }), Always).attempts)
    }

    async fn record_results(&self, results: &[DispatchResult]) -> Result<Vec<ResultOutcome>> {
        // All or none, each keyed by dispatch id: a repeat of an applied batch changes nothing.
        let request = v1::RecordResultsRequest { results: results.to_vec().into_proto() };
        let outcomes: Vec<ResultOutcome> = answer(rpc!(self.record_results(request), Always).outcomes)?;
        if outcomes.len() != results.len() {
            return Err(Error::Internal(format!(
                "the database service answered {} outcomes for {} results",
                outcomes.len(),
                results.len()
            )));
        }
        Ok(outcomes)
    }

    async fn release_expired_leases(&self, now: DateTime<Utc>, max_attempts: u32, limit: u32) -> Result<Vec<Bead>> {
        let request = v1::ReleaseExpiredLeasesRequest { now: Some(now.into_proto()), max_attempts, limit };
        answer(rpc!(self.release_expired_leases(request), Always).beads)
    }

    async fn block_dispatch(&self, dispatch: &DispatchId, reason: &str) -> Result<Option<Bead>> {
        let request = v1::BlockDispatchRequest { dispatch_id: dispatch.to_string(), reason: reason.to_owned() };
        answer(rpc!(self.block_dispatch(request), Always).bead)
    }

    async fn append_event(&self, event: NewEvent) -> Result<Event> {
        answer(rpc!(self.append_event(v1::AppendEventRequest { event: Some(event.into_proto()) }), IfNoEffect))
    }

    async fn list_events(&self, after: i64, limit: u32) -> Result<Vec<Event>> {
        answer(rpc!(self.list_events(v1::ListEventsRequest { after, limit }), Always).events)
    }

    async fn list_event_page(&self, q: &EventQuery) -> Result<EventPage> {
        let request = v1::ListEventPageRequest {
            after: q.after,
            limit: q.limit,
            project_id: q.project.as_ref().map(ToString::to_string),
            gaps_fill_until: Some(q.gaps_fill_until.into_proto()),
        };
        let page = rpc!(self.list_event_page(request), Always);
        Ok(EventPage { events: answer(page.events)?, next: page.next })
    }

    async fn take_outbox(&self, limit: u32) -> Result<Vec<OutboxMessage>> {
        answer(rpc!(self.take_outbox(v1::TakeOutboxRequest { limit }), Always).messages)
    }

    async fn outbox_backlog(&self) -> Result<u64> {
        Ok(rpc!(self.outbox_backlog(v1::OutboxBacklogRequest {}), Always).count)
    }

    async fn mark_outbox_sent(&self, ids: &[i64]) -> Result<()> {
        rpc!(self.mark_outbox_sent(v1::MarkOutboxSentRequest { ids: ids.to_vec() }), Always);
        Ok(())
    }

    async fn upsert_agent(&self, agent: &Agent) -> Result<()> {
        rpc!(self.upsert_agent(v1::UpsertAgentRequest { agent: Some(agent.clone().into_proto()) }), Always);
        Ok(())
    }

    async fn list_agents(&self, project: Option<&ProjectId>) -> Result<Vec<Agent>> {
        let request = v1::ListAgentsRequest { project_id: project.map(ToString::to_string) };
        answer(rpc!(self.list_agents(request), Always).agents)
    }

    async fn bead_counts(&self, project: Option<&ProjectId>) -> Result<Vec<(Status, u64)>> {
        let request = v1::BeadCountsRequest { project_id: project.map(ToString::to_string) };
        answer(rpc!(self.bead_counts(request), Always).counts)
    }

    async fn running_by_project(&self) -> Result<Vec<(ProjectId, u64)>> {
        let counts = rpc!(self.running_by_project(v1::RunningByProjectRequest {}), Always).counts;
        counts
            .into_iter()
            .map(|c| {
                let id = ProjectId::parse(&c.project_id)
                    .map_err(|e| Error::Internal(format!("the database service sent an invalid answer: {e}")))?;
                Ok((id, c.count))
            })
            .collect()
    }

    async fn last_event_seq(&self) -> Result<i64> {
        Ok(rpc!(self.last_event_seq(v1::LastEventSeqRequest {}), Always).seq)
    }

    async fn create_api_key(&self, name: &str, role: Role, hash: &str) -> Result<ApiKey> {
        let request = v1::CreateApiKeyRequest { name: name.to_owned(), role: role.into_proto(), hash: hash.to_owned() };
        answer(rpc!(self.create_api_key(request), IfNoEffect))
    }

    async fn find_api_key(&self, hash: &str) -> Result<Option<ApiKey>> {
        answer(rpc!(self.find_api_key(v1::FindApiKeyRequest { hash: hash.to_owned() }), Always).key)
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        answer(rpc!(self.list_api_keys(v1::ListApiKeysRequest {}), Always).keys)
    }

    async fn revoke_api_key(&self, id: &str) -> Result<()> {
        rpc!(self.revoke_api_key(v1::RevokeApiKeyRequest { id: id.to_owned() }), IfNoEffect);
        Ok(())
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<bool> {
        // Taking a lease one already holds renews it to the same expiry: safe to repeat.
        let request = v1::AcquireLeaseRequest {
            name: name.to_owned(),
            holder: holder.to_owned(),
            now: Some(now.into_proto()),
            ttl: Some(ttl.into_proto()),
        };
        Ok(rpc!(self.acquire_lease(request), Always).held)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        rpc!(self.release_lease(v1::ReleaseLeaseRequest { name: name.to_owned(), holder: holder.to_owned() }), Always);
        Ok(())
    }

    async fn list_connectors(&self) -> Result<Vec<ConnectorRecord>> {
        answer(rpc!(self.list_connectors(v1::ListConnectorRecordsRequest {}), Always).connectors)
    }

    async fn get_connector(&self, id: &str) -> Result<ConnectorRecord> {
        answer(rpc!(self.get_connector(v1::GetConnectorRecordRequest { id: id.to_owned() }), Always))
    }

    async fn create_connector(&self, connector: NewConnector) -> Result<ConnectorRecord> {
        let request = v1::CreateConnectorRecordRequest { connector: Some(connector.into_proto()) };
        answer(rpc!(self.create_connector(request), IfNoEffect))
    }

    async fn update_connector(&self, expected_version: i64, connector: NewConnector) -> Result<ConnectorRecord> {
        let request = v1::UpdateConnectorRecordRequest { expected_version, connector: Some(connector.into_proto()) };
        answer(rpc!(self.update_connector(request), IfNoEffect))
    }

    async fn delete_connector(&self, id: &str) -> Result<()> {
        rpc!(self.delete_connector(v1::DeleteConnectorRecordRequest { id: id.to_owned() }), IfNoEffect);
        Ok(())
    }

    async fn token_usage(&self, project: Option<&ProjectId>) -> Result<Vec<loom_store::ProjectUsage>> {
        let request = v1::TokenUsageRequest { project_id: project.map(ToString::to_string) };
        answer(rpc!(self.token_usage(request), Always).projects)
    }
}
