//! The `loom.db.v1.Database` handlers: decode and validate the request (a bad value is
//! `INVALID_ARGUMENT`), call the store, encode the answer. Adding an RPC for a new `Store` method
//! is one handler here and one method in `client/calls.rs`.

use std::sync::Arc;

use loom_domain::{BeadId, DispatchId, ProjectId};
use loom_proto::v1::database_server::Database;
use loom_proto::{FromProto, IntoProto, required, v1};
use loom_store::{DispatchResult, DispatchStart, EventQuery, Store};
use tonic::{Request, Response, Status};

use crate::status::to_status;

/// Most results one `RecordResults` call may carry.
const MAX_RESULTS_BATCH: usize = 1024;

/// The service implementation over one store.
#[derive(Debug, Clone)]
pub struct DatabaseService {
    store: Arc<dyn Store>,
}

impl DatabaseService {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn reply<T>(message: T) -> Reply<T> {
    Ok(Response::new(message))
}

/// A store error as the client will see it; unexpected ones are logged here, once.
fn fail(err: loom_store::Error) -> Status {
    match &err {
        loom_store::Error::Internal(_) => tracing::error!(error = %err, "store call failed"),
        loom_store::Error::Unavailable(_) => tracing::warn!(error = %err, "store unavailable"),
        _ => tracing::debug!(error = %err, "store refused the call"),
    }
    to_status(&err)
}

/// Decodes and validates a wire value.
fn decode<T: FromProto<P>, P>(proto: P) -> Result<T, Status> {
    T::from_proto(proto).map_err(|e| fail(e.into()))
}

/// Decodes a message field that must be present.
fn decode_required<T: FromProto<P>, P>(proto: Option<P>, field: &'static str) -> Result<T, Status> {
    decode(required(proto, field).map_err(|e| fail(e.into()))?)
}

fn valid<T>(parsed: Result<T, loom_domain::Error>) -> Result<T, Status> {
    parsed.map_err(|e| fail(e.into()))
}

fn project_id(id: Option<&str>) -> Result<Option<ProjectId>, Status> {
    valid(id.map(ProjectId::parse).transpose())
}

#[tonic::async_trait]
impl Database for DatabaseService {
    async fn create_project(&self, r: Request<v1::CreateProjectRequest>) -> Reply<v1::Project> {
        let project = decode_required(r.into_inner().project, "project")?;
        reply(self.store.create_project(project).await.map_err(fail)?.into_proto())
    }

    async fn get_project(&self, r: Request<v1::GetProjectRequest>) -> Reply<v1::Project> {
        let id = valid(ProjectId::parse(&r.into_inner().id))?;
        reply(self.store.get_project(&id).await.map_err(fail)?.into_proto())
    }

    async fn list_projects(&self, _: Request<v1::ListProjectsRequest>) -> Reply<v1::ListProjectsResponse> {
        reply(v1::ListProjectsResponse { projects: self.store.list_projects().await.map_err(fail)?.into_proto() })
    }

    async fn update_project(&self, r: Request<v1::UpdateProjectRequest>) -> Reply<v1::Project> {
        let project = decode_required(r.into_inner().project, "project")?;
        reply(self.store.update_project(project).await.map_err(fail)?.into_proto())
    }

    async fn delete_project(&self, r: Request<v1::DeleteProjectRequest>) -> Reply<v1::DeleteProjectResponse> {
        let id = valid(ProjectId::parse(&r.into_inner().id))?;
        self.store.delete_project(&id).await.map_err(fail)?;
        reply(v1::DeleteProjectResponse {})
    }

    async fn create_beads(&self, r: Request<v1::CreateBeadsRequest>) -> Reply<v1::CreateBeadsResponse> {
        let beads = decode(r.into_inner().beads)?;
        reply(v1::CreateBeadsResponse { beads: self.store.create_beads(beads).await.map_err(fail)?.into_proto() })
    }

    async fn get_bead(&self, r: Request<v1::GetBeadRequest>) -> Reply<v1::Bead> {
        let id = valid(BeadId::parse(&r.into_inner().id))?;
        reply(self.store.get_bead(&id).await.map_err(fail)?.into_proto())
    }

    async fn get_bead_view(&self, r: Request<v1::GetBeadRequest>) -> Reply<v1::BeadView> {
        let id = valid(BeadId::parse(&r.into_inner().id))?;
        let (bead, latest) = self.store.get_bead_view(&id).await.map_err(fail)?;
        reply(v1::BeadView { bead: Some(bead.into_proto()), latest: latest.map(IntoProto::into_proto) })
    }

    async fn list_beads(&self, r: Request<v1::ListBeadsRequest>) -> Reply<v1::ListBeadsResponse> {
        let r = r.into_inner();
        let filter = decode(r.filter.unwrap_or_default())?;
        let page = decode_required(r.page, "page")?;
        let page = self.store.list_beads(&filter, &page).await.map_err(fail)?;
        reply(v1::ListBeadsResponse { beads: page.beads.into_proto(), next_cursor: page.next_cursor })
    }

    async fn update_bead(&self, r: Request<v1::UpdateBeadRequest>) -> Reply<v1::Bead> {
        let r = r.into_inner();
        let id = valid(BeadId::parse(&r.id))?;
        let patch = decode(r.patch.unwrap_or_default())?;
        reply(self.store.update_bead(&id, r.expected_version, patch).await.map_err(fail)?.into_proto())
    }

    async fn claim_bead(&self, r: Request<v1::ClaimBeadRequest>) -> Reply<v1::Bead> {
        let r = r.into_inner();
        let id = valid(BeadId::parse(&r.id))?;
        let lease: std::time::Duration = decode_required(r.lease, "lease")?;
        reply(self.store.claim_bead(&id, &r.claimer, lease).await.map_err(fail)?.into_proto())
    }

    async fn close_bead(&self, r: Request<v1::CloseBeadRequest>) -> Reply<v1::Bead> {
        let r = r.into_inner();
        let id = valid(BeadId::parse(&r.id))?;
        reply(self.store.close_bead(&id, &r.reason, r.expected_version).await.map_err(fail)?.into_proto())
    }

    async fn reopen_bead(&self, r: Request<v1::ReopenBeadRequest>) -> Reply<v1::Bead> {
        let r = r.into_inner();
        let id = valid(BeadId::parse(&r.id))?;
        reply(self.store.reopen_bead(&id, r.expected_version).await.map_err(fail)?.into_proto())
    }

    async fn add_dependency(&self, r: Request<v1::DependencyRequest>) -> Reply<v1::Bead> {
        let r = r.into_inner();
        let (bead, blocker) = (valid(BeadId::parse(&r.bead))?, valid(BeadId::parse(&r.blocker))?);
        reply(self.store.add_dependency(&bead, &blocker).await.map_err(fail)?.into_proto())
    }

    async fn remove_dependency(&self, r: Request<v1::DependencyRequest>) -> Reply<v1::Bead> {
        let r = r.into_inner();
        let (bead, blocker) = (valid(BeadId::parse(&r.bead))?, valid(BeadId::parse(&r.blocker))?);
        reply(self.store.remove_dependency(&bead, &blocker).await.map_err(fail)?.into_proto())
    }

    async fn import_beads(&self, r: Request<v1::ImportBeadsRequest>) -> Reply<v1::ImportBeadsResponse> {
        let r = r.into_inner();
        let project = valid(ProjectId::parse(&r.project_id))?;
        let beads = decode(r.beads)?;
        let outcomes = self.store.import_beads(&project, beads).await.map_err(fail)?;
        reply(v1::ImportBeadsResponse { outcomes: outcomes.into_proto() })
    }

    async fn bead_projects(&self, r: Request<v1::BeadProjectsRequest>) -> Reply<v1::BeadProjectsResponse> {
        let ids = r.into_inner().ids.iter().map(|id| BeadId::parse(id)).collect::<Result<Vec<_>, _>>();
        let ids = valid(ids)?;
        reply(v1::BeadProjectsResponse { beads: self.store.bead_projects(&ids).await.map_err(fail)?.into_proto() })
    }

    async fn list_ready(&self, r: Request<v1::ListReadyRequest>) -> Reply<v1::ListReadyResponse> {
        let r = r.into_inner();
        let project = valid(ProjectId::parse(&r.project_id))?;
        let now = decode_required(r.now, "now")?;
        let beads = self.store.list_ready(&project, r.limit, now).await.map_err(fail)?;
        reply(v1::ListReadyResponse { beads: beads.into_proto() })
    }

    async fn claim_ready(&self, r: Request<v1::ClaimReadyRequest>) -> Reply<v1::ClaimReadyResponse> {
        let request = decode(r.into_inner())?;
        reply(v1::ClaimReadyResponse { claims: self.store.claim_ready(&request).await.map_err(fail)?.into_proto() })
    }

    async fn create_claimed(&self, r: Request<v1::CreateClaimedRequest>) -> Reply<v1::CreateClaimedResponse> {
        let r = r.into_inner();
        let bead = decode_required(r.bead, "bead")?;
        let request = decode_required(r.claim, "claim")?;
        reply(self.store.create_claimed(bead, &request).await.map_err(fail)?.into_proto())
    }

    async fn start_dispatch(&self, r: Request<v1::StartDispatchRequest>) -> Reply<v1::StartDispatchResponse> {
        let start: DispatchStart = valid(FromProto::from_proto(r.into_inner()))?;
        reply(self.store.start_dispatch(&start).await.map_err(fail)?.into_proto())
    }

    async fn hand_back(&self, r: Request<v1::HandBackRequest>) -> Reply<v1::HandBackResponse> {
        let r = r.into_inner();
        let dispatch = valid(DispatchId::parse(&r.dispatch_id))?;
        let bead = self.store.hand_back(&dispatch, &r.agent_id, &r.reason).await.map_err(fail)?;
        reply(v1::HandBackResponse { bead: bead.into_proto() })
    }

    async fn get_position(&self, r: Request<v1::GetPositionRequest>) -> Reply<v1::GetPositionResponse> {
        let position = self.store.position(&r.into_inner().name).await.map_err(fail)?;
        reply(v1::GetPositionResponse { position })
    }

    async fn save_position(&self, r: Request<v1::SavePositionRequest>) -> Reply<v1::SavePositionResponse> {
        let r = r.into_inner();
        self.store.save_position(&r.name, r.position).await.map_err(fail)?;
        reply(v1::SavePositionResponse {})
    }

    async fn extend_lease(&self, r: Request<v1::ExtendLeaseRequest>) -> Reply<v1::ExtendLeaseResponse> {
        let r = r.into_inner();
        let dispatch = valid(DispatchId::parse(&r.dispatch_id))?;
        let until = decode_required(r.until, "until")?;
        reply(v1::ExtendLeaseResponse { extended: self.store.extend_lease(&dispatch, until).await.map_err(fail)? })
    }

    async fn record_result(&self, r: Request<v1::RecordResultRequest>) -> Reply<v1::RecordResultResponse> {
        let result = decode_required(r.into_inner().result, "result")?;
        reply(self.store.record_result(&result).await.map_err(fail)?.into_proto())
    }

    async fn list_attempts(&self, r: Request<v1::ListAttemptsRequest>) -> Reply<v1::ListAttemptsResponse> {
        let id = valid(BeadId::parse(&r.into_inner().bead_id))?;
        reply(v1::ListAttemptsResponse { attempts: self.store.list_attempts(&id).await.map_err(fail)?.into_proto() })
    }

    async fn record_results(&self, r: Request<v1::RecordResultsRequest>) -> Reply<v1::RecordResultsResponse> {
        let results: Vec<DispatchResult> = decode(r.into_inner().results)?;
        if results.len() > MAX_RESULTS_BATCH {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_RESULTS_BATCH} results per call, got {}",
                results.len()
            )));
        }
        reply(v1::RecordResultsResponse {
            outcomes: self.store.record_results(&results).await.map_err(fail)?.into_proto(),
        })
    }

    async fn release_expired_leases(
        &self,
        r: Request<v1::ReleaseExpiredLeasesRequest>,
    ) -> Reply<v1::ReleaseExpiredLeasesResponse> {
        let r = r.into_inner();
        let now = decode_required(r.now, "now")?;
        let beads = self.store.release_expired_leases(now, r.max_attempts, r.limit).await.map_err(fail)?;
        reply(v1::ReleaseExpiredLeasesResponse { beads: beads.into_proto() })
    }

    async fn block_dispatch(&self, r: Request<v1::BlockDispatchRequest>) -> Reply<v1::BlockDispatchResponse> {
        let r = r.into_inner();
        let dispatch = valid(DispatchId::parse(&r.dispatch_id))?;
        let bead = self.store.block_dispatch(&dispatch, &r.reason).await.map_err(fail)?;
        reply(v1::BlockDispatchResponse { bead: bead.into_proto() })
    }

    async fn append_event(&self, r: Request<v1::AppendEventRequest>) -> Reply<v1::Event> {
        let event = decode_required(r.into_inner().event, "event")?;
        reply(self.store.append_event(event).await.map_err(fail)?.into_proto())
    }

    async fn list_events(&self, r: Request<v1::ListEventsRequest>) -> Reply<v1::ListEventsResponse> {
        let r = r.into_inner();
        let events = self.store.list_events(r.after, r.limit).await.map_err(fail)?;
        reply(v1::ListEventsResponse { events: events.into_proto() })
    }

    async fn list_event_page(&self, r: Request<v1::ListEventPageRequest>) -> Reply<v1::ListEventPageResponse> {
        let r = r.into_inner();
        let query = EventQuery {
            after: r.after,
            limit: r.limit,
            project: project_id(r.project_id.as_deref())?,
            gaps_fill_until: decode_required(r.gaps_fill_until, "gaps_fill_until")?,
        };
        let page = self.store.list_event_page(&query).await.map_err(fail)?;
        reply(v1::ListEventPageResponse { events: page.events.into_proto(), next: page.next })
    }

    async fn take_outbox(&self, r: Request<v1::TakeOutboxRequest>) -> Reply<v1::TakeOutboxResponse> {
        let messages = self.store.take_outbox(r.into_inner().limit).await.map_err(fail)?;
        reply(v1::TakeOutboxResponse { messages: messages.into_proto() })
    }

    async fn mark_outbox_sent(&self, r: Request<v1::MarkOutboxSentRequest>) -> Reply<v1::MarkOutboxSentResponse> {
        self.store.mark_outbox_sent(&r.into_inner().ids).await.map_err(fail)?;
        reply(v1::MarkOutboxSentResponse {})
    }

    async fn outbox_backlog(&self, _: Request<v1::OutboxBacklogRequest>) -> Reply<v1::OutboxBacklogResponse> {
        reply(v1::OutboxBacklogResponse { count: self.store.outbox_backlog().await.map_err(fail)? })
    }

    async fn upsert_agent(&self, r: Request<v1::UpsertAgentRequest>) -> Reply<v1::UpsertAgentResponse> {
        let agent = decode_required(r.into_inner().agent, "agent")?;
        self.store.upsert_agent(&agent).await.map_err(fail)?;
        reply(v1::UpsertAgentResponse {})
    }

    async fn list_agents(&self, r: Request<v1::ListAgentsRequest>) -> Reply<v1::ListAgentsResponse> {
        let project = project_id(r.into_inner().project_id.as_deref())?;
        let agents = self.store.list_agents(project.as_ref()).await.map_err(fail)?;
        reply(v1::ListAgentsResponse { agents: agents.into_proto() })
    }

    async fn bead_counts(&self, r: Request<v1::BeadCountsRequest>) -> Reply<v1::BeadCountsResponse> {
        let project = project_id(r.into_inner().project_id.as_deref())?;
        let counts = self.store.bead_counts(project.as_ref()).await.map_err(fail)?;
        reply(v1::BeadCountsResponse { counts: counts.into_proto() })
    }

    async fn running_by_project(&self, _: Request<v1::RunningByProjectRequest>) -> Reply<v1::RunningByProjectResponse> {
        let counts = self.store.running_by_project().await.map_err(fail)?;
        let counts =
            counts.into_iter().map(|(p, count)| v1::ProjectCount { project_id: p.to_string(), count }).collect();
        reply(v1::RunningByProjectResponse { counts })
    }

    async fn last_event_seq(&self, _: Request<v1::LastEventSeqRequest>) -> Reply<v1::LastEventSeqResponse> {
        reply(v1::LastEventSeqResponse { seq: self.store.last_event_seq().await.map_err(fail)? })
    }

    async fn create_api_key(&self, r: Request<v1::CreateApiKeyRequest>) -> Reply<v1::ApiKey> {
        let r = r.into_inner();
        let role = decode(r.role)?;
        reply(self.store.create_api_key(&r.name, role, &r.hash).await.map_err(fail)?.into_proto())
    }

    async fn find_api_key(&self, r: Request<v1::FindApiKeyRequest>) -> Reply<v1::FindApiKeyResponse> {
        let key = self.store.find_api_key(&r.into_inner().hash).await.map_err(fail)?;
        reply(v1::FindApiKeyResponse { key: key.into_proto() })
    }

    async fn list_api_keys(&self, _: Request<v1::ListApiKeysRequest>) -> Reply<v1::ListApiKeysResponse> {
        reply(v1::ListApiKeysResponse { keys: self.store.list_api_keys().await.map_err(fail)?.into_proto() })
    }

    async fn revoke_api_key(&self, r: Request<v1::RevokeApiKeyRequest>) -> Reply<v1::RevokeApiKeyResponse> {
        self.store.revoke_api_key(&r.into_inner().id).await.map_err(fail)?;
        reply(v1::RevokeApiKeyResponse {})
    }

    async fn acquire_lease(&self, r: Request<v1::AcquireLeaseRequest>) -> Reply<v1::AcquireLeaseResponse> {
        let r = r.into_inner();
        let now = decode_required(r.now, "now")?;
        let ttl = decode_required(r.ttl, "ttl")?;
        reply(v1::AcquireLeaseResponse {
            held: self.store.acquire_lease(&r.name, &r.holder, now, ttl).await.map_err(fail)?,
        })
    }

    async fn release_lease(&self, r: Request<v1::ReleaseLeaseRequest>) -> Reply<v1::ReleaseLeaseResponse> {
        let r = r.into_inner();
        self.store.release_lease(&r.name, &r.holder).await.map_err(fail)?;
        reply(v1::ReleaseLeaseResponse {})
    }

    async fn list_connectors(
        &self,
        _: Request<v1::ListConnectorRecordsRequest>,
    ) -> Reply<v1::ListConnectorRecordsResponse> {
        reply(v1::ListConnectorRecordsResponse {
            connectors: self.store.list_connectors().await.map_err(fail)?.into_proto(),
        })
    }

    async fn get_connector(&self, r: Request<v1::GetConnectorRecordRequest>) -> Reply<v1::ConnectorRecord> {
        reply(self.store.get_connector(&r.into_inner().id).await.map_err(fail)?.into_proto())
    }

    async fn create_connector(&self, r: Request<v1::CreateConnectorRecordRequest>) -> Reply<v1::ConnectorRecord> {
        let connector = decode_required(r.into_inner().connector, "connector")?;
        reply(self.store.create_connector(connector).await.map_err(fail)?.into_proto())
    }

    async fn update_connector(&self, r: Request<v1::UpdateConnectorRecordRequest>) -> Reply<v1::ConnectorRecord> {
        let r = r.into_inner();
        let connector = decode_required(r.connector, "connector")?;
        reply(self.store.update_connector(r.expected_version, connector).await.map_err(fail)?.into_proto())
    }

    async fn delete_connector(
        &self,
        r: Request<v1::DeleteConnectorRecordRequest>,
    ) -> Reply<v1::DeleteConnectorRecordResponse> {
        self.store.delete_connector(&r.into_inner().id).await.map_err(fail)?;
        reply(v1::DeleteConnectorRecordResponse {})
    }

    async fn token_usage(&self, r: Request<v1::TokenUsageRequest>) -> Reply<v1::TokenUsageResponse> {
        let project = project_id(r.into_inner().project_id.as_deref())?;
        let projects = self.store.token_usage(project.as_ref()).await.map_err(fail)?;
        reply(v1::TokenUsageResponse { projects: projects.into_proto() })
    }
}
