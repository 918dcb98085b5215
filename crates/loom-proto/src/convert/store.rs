//! The store's request and response types: filters, paging, patches, claims, results, events and
//! outbox rows.

use loom_domain::{BeadId, DispatchId, Error, ProjectId, Status};
use loom_store::{
    BeadFilter, BeadPatch, Claim, ClaimRequest, CreatedBead, DispatchResult, DispatchStart, ImportAction, ImportBead,
    NewEvent, OutboxMessage, Outcome, PageRequest, ResultOutcome, StartOutcome,
};

use super::domain::{project_id, time};
use super::{FromProto, IntoProto, json, priority, required};
use crate::v1;
use crate::v1::bead_patch::{AssigneeChange, ParentChange};
use crate::v1::record_result_response::Outcome as WireOutcome;
use crate::v1::start_dispatch_response::Outcome as WireStart;

impl IntoProto<v1::BeadFilter> for BeadFilter {
    fn into_proto(self) -> v1::BeadFilter {
        v1::BeadFilter {
            project_id: self.project.map(String::from),
            status: self.status.into_proto(),
            r#type: self.bead_type.into_proto(),
            assignee: self.assignee,
            priority: self.priority.map(|p| u32::from(p.get())),
            tag: self.tag,
        }
    }
}

impl FromProto<v1::BeadFilter> for BeadFilter {
    fn from_proto(f: v1::BeadFilter) -> Result<Self, Error> {
        Ok(BeadFilter {
            project: project_id(f.project_id.as_deref())?,
            status: FromProto::from_proto(f.status)?,
            bead_type: FromProto::from_proto(f.r#type)?,
            assignee: f.assignee,
            priority: f.priority.map(priority).transpose()?,
            tag: f.tag,
        })
    }
}

impl IntoProto<v1::PageRequest> for PageRequest {
    fn into_proto(self) -> v1::PageRequest {
        v1::PageRequest { after: self.after, limit: self.limit }
    }
}

impl FromProto<v1::PageRequest> for PageRequest {
    fn from_proto(p: v1::PageRequest) -> Result<Self, Error> {
        // Range checks stay with the store, which owns the limits and phrases them.
        Ok(PageRequest { after: p.after, limit: p.limit })
    }
}

impl IntoProto<v1::BeadPatch> for BeadPatch {
    fn into_proto(self) -> v1::BeadPatch {
        v1::BeadPatch {
            title: self.title,
            description: self.description,
            r#type: self.bead_type.into_proto(),
            priority: self.priority.map(|p| u32::from(p.get())),
            status: self.status.into_proto(),
            assignee_change: self.assignee.map(|a| match a {
                Some(name) => AssigneeChange::SetAssignee(name),
                None => AssigneeChange::ClearAssignee(true),
            }),
            tags: self.tags.map(|values| v1::StringList { values }),
            context: self.context.map(|entries| v1::StringMap { entries }),
            parent_change: self.parent.map(|p| match p {
                Some(id) => ParentChange::SetParent(id.into()),
                None => ParentChange::ClearParent(true),
            }),
        }
    }
}

impl FromProto<v1::BeadPatch> for BeadPatch {
    fn from_proto(p: v1::BeadPatch) -> Result<Self, Error> {
        let assignee = match p.assignee_change {
            None => None,
            Some(AssigneeChange::SetAssignee(name)) => Some(Some(name)),
            Some(AssigneeChange::ClearAssignee(true)) => Some(None),
            Some(AssigneeChange::ClearAssignee(false)) => return Err(clear_false("clear_assignee")),
        };
        let parent = match p.parent_change {
            None => None,
            Some(ParentChange::SetParent(id)) => Some(Some(BeadId::parse(&id)?)),
            Some(ParentChange::ClearParent(true)) => Some(None),
            Some(ParentChange::ClearParent(false)) => return Err(clear_false("clear_parent")),
        };
        Ok(BeadPatch {
            title: p.title,
            description: p.description,
            bead_type: FromProto::from_proto(p.r#type)?,
            priority: p.priority.map(priority).transpose()?,
            status: FromProto::from_proto(p.status)?,
            assignee,
            tags: p.tags.map(|t| t.values),
            context: p.context.map(|c| c.entries),
            parent,
        })
    }
}

fn clear_false(field: &'static str) -> Error {
    Error::Invalid { field, reason: "must be true when set (leave the field out to keep the value)".into() }
}

impl IntoProto<v1::ClaimReadyRequest> for ClaimRequest {
    fn into_proto(self) -> v1::ClaimReadyRequest {
        v1::ClaimReadyRequest {
            project_id: self.project.into(),
            max: self.max,
            now: Some(self.now.into_proto()),
            lease: Some(self.lease.into_proto()),
            claimer: self.claimer,
        }
    }
}

impl FromProto<v1::ClaimReadyRequest> for ClaimRequest {
    fn from_proto(r: v1::ClaimReadyRequest) -> Result<Self, Error> {
        Ok(ClaimRequest {
            project: ProjectId::parse(&r.project_id)?,
            max: r.max,
            now: time(r.now, "now")?,
            lease: FromProto::from_proto(required(r.lease, "lease")?)?,
            claimer: r.claimer,
        })
    }
}

impl IntoProto<v1::Claim> for Claim {
    fn into_proto(self) -> v1::Claim {
        v1::Claim {
            bead: Some(self.bead.into_proto()),
            dispatch_id: self.dispatch_id.into(),
            attempt: self.attempt,
            lease_expires_at: Some(self.lease_expires_at.into_proto()),
            outbox_id: self.outbox_id,
        }
    }
}

impl FromProto<v1::Claim> for Claim {
    fn from_proto(c: v1::Claim) -> Result<Self, Error> {
        Ok(Claim {
            bead: FromProto::from_proto(required(c.bead, "bead")?)?,
            dispatch_id: DispatchId::parse(&c.dispatch_id)?,
            attempt: c.attempt,
            lease_expires_at: time(c.lease_expires_at, "lease_expires_at")?,
            outbox_id: c.outbox_id,
        })
    }
}

impl IntoProto<v1::CreateClaimedResponse> for CreatedBead {
    fn into_proto(self) -> v1::CreateClaimedResponse {
        use v1::create_claimed_response::Created;
        let created = match self {
            CreatedBead::Claimed(c) => Created::Claimed(c.into_proto()),
            CreatedBead::Open(b) => Created::Open(b.into_proto()),
        };
        v1::CreateClaimedResponse { created: Some(created) }
    }
}

impl FromProto<v1::CreateClaimedResponse> for CreatedBead {
    fn from_proto(r: v1::CreateClaimedResponse) -> Result<Self, Error> {
        use v1::create_claimed_response::Created;
        match required(r.created, "created")? {
            Created::Claimed(c) => Ok(CreatedBead::Claimed(FromProto::from_proto(c)?)),
            Created::Open(b) => Ok(CreatedBead::Open(FromProto::from_proto(b)?)),
        }
    }
}

impl IntoProto<v1::DispatchResult> for DispatchResult {
    fn into_proto(self) -> v1::DispatchResult {
        use v1::dispatch_result::Outcome as W;
        v1::DispatchResult {
            bead_id: self.bead_id.into(),
            dispatch_id: self.dispatch_id.into(),
            agent_id: self.agent_id,
            outcome: Some(match self.outcome {
                Outcome::Success => W::Success(v1::Success {}),
                Outcome::Failure { error } => W::Failure(v1::Failure { error }),
            }),
            report: Some(self.report.into_proto()),
            now: Some(self.now.into_proto()),
            max_attempts: self.max_attempts,
            retry_backoff: Some(self.retry_backoff.into_proto()),
        }
    }
}

impl FromProto<v1::DispatchResult> for DispatchResult {
    fn from_proto(r: v1::DispatchResult) -> Result<Self, Error> {
        use v1::dispatch_result::Outcome as W;
        Ok(DispatchResult {
            bead_id: BeadId::parse(&r.bead_id)?,
            dispatch_id: DispatchId::parse(&r.dispatch_id)?,
            agent_id: r.agent_id,
            outcome: match required(r.outcome, "outcome")? {
                W::Success(_) => Outcome::Success,
                W::Failure(f) => Outcome::Failure { error: f.error },
            },
            report: FromProto::from_proto(r.report.unwrap_or_default())?,
            now: time(r.now, "now")?,
            max_attempts: r.max_attempts,
            retry_backoff: FromProto::from_proto(r.retry_backoff.unwrap_or_default())?,
        })
    }
}

impl IntoProto<v1::RecordResultResponse> for ResultOutcome {
    fn into_proto(self) -> v1::RecordResultResponse {
        let outcome = match self {
            ResultOutcome::Closed(b) => WireOutcome::Closed(b.into_proto()),
            ResultOutcome::Retrying(b) => WireOutcome::Retrying(b.into_proto()),
            ResultOutcome::Blocked(b) => WireOutcome::Blocked(b.into_proto()),
            ResultOutcome::Ignored => WireOutcome::Ignored(true),
        };
        v1::RecordResultResponse { outcome: Some(outcome) }
    }
}

impl FromProto<v1::RecordResultResponse> for ResultOutcome {
    fn from_proto(r: v1::RecordResultResponse) -> Result<Self, Error> {
        Ok(match required(r.outcome, "outcome")? {
            WireOutcome::Closed(b) => ResultOutcome::Closed(FromProto::from_proto(b)?),
            WireOutcome::Retrying(b) => ResultOutcome::Retrying(FromProto::from_proto(b)?),
            WireOutcome::Blocked(b) => ResultOutcome::Blocked(FromProto::from_proto(b)?),
            WireOutcome::Ignored(_) => ResultOutcome::Ignored,
        })
    }
}

impl IntoProto<v1::NewEvent> for NewEvent {
    fn into_proto(self) -> v1::NewEvent {
        v1::NewEvent {
            kind: self.kind.as_str().to_owned(),
            source: self.source,
            project_id: self.project_id.map(String::from),
            entity_id: self.entity_id,
            action: self.action,
            description: self.description,
            data_json: self.data.to_string(),
            correlation_id: self.correlation_id,
        }
    }
}

impl FromProto<v1::NewEvent> for NewEvent {
    fn from_proto(e: v1::NewEvent) -> Result<Self, Error> {
        Ok(NewEvent {
            kind: e.kind.parse()?,
            source: e.source,
            project_id: project_id(e.project_id.as_deref())?,
            entity_id: e.entity_id,
            action: e.action,
            description: e.description,
            data: json(&e.data_json, "event data")?,
            correlation_id: e.correlation_id,
        })
    }
}

impl IntoProto<v1::OutboxMessage> for OutboxMessage {
    fn into_proto(self) -> v1::OutboxMessage {
        v1::OutboxMessage {
            id: self.id,
            kind: self.kind.into_proto(),
            project_id: self.project_id.into(),
            bead_id: self.bead_id.into(),
            dispatch_id: self.dispatch_id.into(),
            attempt: self.attempt,
            payload_json: self.payload.to_string(),
            created_at: Some(self.created_at.into_proto()),
        }
    }
}

impl FromProto<v1::OutboxMessage> for OutboxMessage {
    fn from_proto(m: v1::OutboxMessage) -> Result<Self, Error> {
        Ok(OutboxMessage {
            id: m.id,
            kind: FromProto::from_proto(m.kind)?,
            project_id: ProjectId::parse(&m.project_id)?,
            bead_id: BeadId::parse(&m.bead_id)?,
            dispatch_id: DispatchId::parse(&m.dispatch_id)?,
            attempt: m.attempt,
            payload: json(&m.payload_json, "outbox payload")?,
            created_at: time(m.created_at, "created_at")?,
        })
    }
}

impl IntoProto<v1::StatusCount> for (Status, u64) {
    fn into_proto(self) -> v1::StatusCount {
        v1::StatusCount { status: self.0.into_proto(), count: self.1 }
    }
}

impl FromProto<v1::StatusCount> for (Status, u64) {
    fn from_proto(c: v1::StatusCount) -> Result<Self, Error> {
        Ok((FromProto::from_proto(c.status)?, c.count))
    }
}

impl IntoProto<v1::StartDispatchRequest> for DispatchStart {
    fn into_proto(self) -> v1::StartDispatchRequest {
        v1::StartDispatchRequest {
            bead_id: self.bead_id.into(),
            dispatch_id: self.dispatch_id.into(),
            agent_id: self.agent_id,
            now: Some(self.now.into_proto()),
            lease: Some(self.lease.into_proto()),
            max_attempts: self.max_attempts,
        }
    }
}

impl FromProto<v1::StartDispatchRequest> for DispatchStart {
    fn from_proto(r: v1::StartDispatchRequest) -> Result<Self, Error> {
        if r.agent_id.trim().is_empty() || r.agent_id.len() > 128 {
            return Err(Error::Invalid { field: "agent_id", reason: "must be 1 to 128 characters".into() });
        }
        Ok(DispatchStart {
            bead_id: BeadId::parse(&r.bead_id)?,
            dispatch_id: DispatchId::parse(&r.dispatch_id)?,
            agent_id: r.agent_id,
            now: time(r.now, "now")?,
            lease: FromProto::from_proto(required(r.lease, "lease")?)?,
            max_attempts: r.max_attempts,
        })
    }
}

impl IntoProto<v1::StartDispatchResponse> for StartOutcome {
    fn into_proto(self) -> v1::StartDispatchResponse {
        let outcome = match self {
            StartOutcome::Started(b) => WireStart::Started(b.into_proto()),
            StartOutcome::Stale => WireStart::Stale(true),
            StartOutcome::Superseded(b) => WireStart::Superseded(b.into_proto()),
        };
        v1::StartDispatchResponse { outcome: Some(outcome) }
    }
}

impl FromProto<v1::StartDispatchResponse> for StartOutcome {
    fn from_proto(r: v1::StartDispatchResponse) -> Result<Self, Error> {
        Ok(match required(r.outcome, "outcome")? {
            WireStart::Started(b) => StartOutcome::Started(FromProto::from_proto(b)?),
            WireStart::Stale(_) => StartOutcome::Stale,
            WireStart::Superseded(b) => StartOutcome::Superseded(FromProto::from_proto(b)?),
        })
    }
}

impl IntoProto<v1::ImportBead> for ImportBead {
    fn into_proto(self) -> v1::ImportBead {
        v1::ImportBead {
            id: self.id.into(),
            title: self.title,
            description: self.description,
            r#type: self.bead_type.into_proto(),
            priority: u32::from(self.priority.get()),
            status: self.status.into_proto(),
            assignee: self.assignee,
            tags: self.tags,
            context: self.context,
            parent: self.parent.map(String::from),
            blocked_by: self.blocked_by.into_iter().map(String::from).collect(),
            close_reason: self.close_reason,
            created_at: Some(self.created_at.into_proto()),
            updated_at: Some(self.updated_at.into_proto()),
            closed_at: self.closed_at.into_proto(),
        }
    }
}

impl FromProto<v1::ImportBead> for ImportBead {
    fn from_proto(b: v1::ImportBead) -> Result<Self, Error> {
        Ok(ImportBead {
            id: BeadId::parse(&b.id)?,
            title: b.title,
            description: b.description,
            bead_type: FromProto::from_proto(b.r#type)?,
            priority: priority(b.priority)?,
            status: FromProto::from_proto(b.status)?,
            assignee: b.assignee,
            tags: b.tags,
            context: b.context,
            parent: b.parent.as_deref().map(BeadId::parse).transpose()?,
            blocked_by: b.blocked_by.iter().map(|s| BeadId::parse(s)).collect::<Result<_, _>>()?,
            close_reason: b.close_reason,
            created_at: time(b.created_at, "created_at")?,
            updated_at: time(b.updated_at, "updated_at")?,
            closed_at: FromProto::from_proto(b.closed_at)?,
        })
    }
}

impl IntoProto<v1::ImportOutcome> for ImportAction {
    fn into_proto(self) -> v1::ImportOutcome {
        use v1::import_outcome::Action;
        let (action, reason) = match self {
            ImportAction::Created => (Action::Created, String::new()),
            ImportAction::Updated => (Action::Updated, String::new()),
            ImportAction::Unchanged => (Action::Unchanged, String::new()),
            ImportAction::Refused(reason) => (Action::Refused, reason),
        };
        v1::ImportOutcome { action: action.into(), reason }
    }
}

impl FromProto<v1::ImportOutcome> for ImportAction {
    fn from_proto(o: v1::ImportOutcome) -> Result<Self, Error> {
        use v1::import_outcome::Action;
        match Action::try_from(o.action) {
            Ok(Action::Created) => Ok(ImportAction::Created),
            Ok(Action::Updated) => Ok(ImportAction::Updated),
            Ok(Action::Unchanged) => Ok(ImportAction::Unchanged),
            Ok(Action::Refused) => Ok(ImportAction::Refused(o.reason)),
            _ => {
                Err(Error::Invalid { field: "import outcome", reason: format!("{} is not an import action", o.action) })
            }
        }
    }
}

impl IntoProto<v1::BeadProject> for (BeadId, ProjectId) {
    fn into_proto(self) -> v1::BeadProject {
        v1::BeadProject { id: self.0.into(), project_id: self.1.into() }
    }
}

impl FromProto<v1::BeadProject> for (BeadId, ProjectId) {
    fn from_proto(b: v1::BeadProject) -> Result<Self, Error> {
        Ok((BeadId::parse(&b.id)?, ProjectId::parse(&b.project_id)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loom_domain::{BeadType, Priority};

    #[test]
    fn patches_say_leave_clear_or_set() {
        let patches = [
            BeadPatch::default(),
            BeadPatch { assignee: Some(None), parent: Some(None), tags: Some(vec![]), ..BeadPatch::default() },
            BeadPatch {
                title: Some("t".into()),
                bead_type: Some(BeadType::Bug),
                priority: Some(Priority::P0),
                status: Some(Status::Closed),
                assignee: Some(Some("ana".into())),
                parent: Some(Some(BeadId::parse("p-1").unwrap())),
                context: Some([("k".to_owned(), "v".to_owned())].into()),
                ..BeadPatch::default()
            },
        ];
        for patch in patches {
            assert_eq!(BeadPatch::from_proto(patch.clone().into_proto()).unwrap(), patch);
        }
    }

    #[test]
    fn bad_values_name_their_field() {
        let wire = v1::BeadPatch { priority: Some(4), ..v1::BeadPatch::default() };
        assert!(BeadPatch::from_proto(wire).unwrap_err().to_string().starts_with("invalid priority"));
        let wire = v1::BeadPatch { status: Some(42), ..v1::BeadPatch::default() };
        let err = BeadPatch::from_proto(wire).unwrap_err().to_string();
        assert_eq!(err, "invalid status: 42 is not one of open, in_progress, blocked, closed");
        let wire =
            v1::BeadPatch { assignee_change: Some(AssigneeChange::ClearAssignee(false)), ..v1::BeadPatch::default() };
        assert!(BeadPatch::from_proto(wire).unwrap_err().to_string().starts_with("invalid clear_assignee"));
    }

    #[test]
    fn results_round_trip() {
        let result = DispatchResult {
            bead_id: BeadId::parse("p-1").unwrap(),
            dispatch_id: DispatchId::parse("d-1").unwrap(),
            agent_id: "a".into(),
            outcome: Outcome::Failure { error: "boom".into() },
            report: loom_store::Report {
                output: "out".into(),
                commits: vec![loom_store::Commit { sha: "abc".into(), branch: "bead/p-1".into() }],
                artifacts: vec!["x".into()],
                duration_ms: 7,
                discovered: vec![loom_store::Discovered {
                    title: "t".into(),
                    description: "d".into(),
                    priority: loom_domain::Priority::try_from(1).unwrap(),
                    bead_type: loom_domain::BeadType::Bug,
                }],
                usage: loom_store::TokenUsage {
                    prompt_tokens: 5,
                    completion_tokens: 2,
                    cost_usd: 0.5,
                    ..Default::default()
                },
                conversation: "[]".into(),
            },
            now: chrono::DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            max_attempts: 3,
            retry_backoff: std::time::Duration::from_millis(1500),
        };
        assert_eq!(DispatchResult::from_proto(result.clone().into_proto()).unwrap(), result);
        let ignored = ResultOutcome::from_proto(ResultOutcome::Ignored.into_proto()).unwrap();
        assert_eq!(ignored, ResultOutcome::Ignored);
    }
}
