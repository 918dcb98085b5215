//! Domain entities: projects, beads, agents and events.

use chrono::{DateTime, Utc};
use loom_domain::{
    Agent, AgentId, ApiKey, Bead, BeadId, BeadPrefix, DispatchId, Error, Event, NewBead, NewProject, Project, ProjectId,
};

use super::{FromProto, IntoProto, json, priority, required};
use crate::v1;

impl IntoProto<v1::NewProject> for NewProject {
    fn into_proto(self) -> v1::NewProject {
        v1::NewProject {
            id: self.id.into(),
            name: self.name,
            git_repo: self.git_repo,
            branch: self.branch,
            bead_prefix: self.bead_prefix.into(),
            context: self.context,
            git_strategy: self.git_strategy.into_proto(),
            status: self.status.into_proto(),
        }
    }
}

impl FromProto<v1::NewProject> for NewProject {
    fn from_proto(p: v1::NewProject) -> Result<Self, Error> {
        Ok(NewProject {
            id: ProjectId::parse(&p.id)?,
            name: p.name,
            git_repo: p.git_repo,
            branch: p.branch,
            bead_prefix: BeadPrefix::parse(&p.bead_prefix)?,
            context: p.context,
            git_strategy: FromProto::from_proto(p.git_strategy)?,
            status: FromProto::from_proto(p.status)?,
        })
    }
}

impl IntoProto<v1::Project> for Project {
    fn into_proto(self) -> v1::Project {
        v1::Project {
            id: self.id.into(),
            name: self.name,
            git_repo: self.git_repo,
            branch: self.branch,
            bead_prefix: self.bead_prefix.into(),
            context: self.context,
            git_strategy: self.git_strategy.into_proto(),
            status: self.status.into_proto(),
            created_at: Some(self.created_at.into_proto()),
            updated_at: Some(self.updated_at.into_proto()),
        }
    }
}

impl FromProto<v1::Project> for Project {
    fn from_proto(p: v1::Project) -> Result<Self, Error> {
        Ok(Project {
            id: ProjectId::parse(&p.id)?,
            name: p.name,
            git_repo: p.git_repo,
            branch: p.branch,
            bead_prefix: BeadPrefix::parse(&p.bead_prefix)?,
            context: p.context,
            git_strategy: FromProto::from_proto(p.git_strategy)?,
            status: FromProto::from_proto(p.status)?,
            created_at: time(p.created_at, "created_at")?,
            updated_at: time(p.updated_at, "updated_at")?,
        })
    }
}

impl IntoProto<v1::NewBead> for NewBead {
    fn into_proto(self) -> v1::NewBead {
        v1::NewBead {
            project_id: self.project_id.into(),
            title: self.title,
            description: self.description,
            r#type: self.bead_type.into_proto(),
            priority: u32::from(self.priority.get()),
            assignee: self.assignee,
            tags: self.tags,
            context: self.context,
            parent: self.parent.map(String::from),
            blocked_by: self.blocked_by.into_iter().map(String::from).collect(),
        }
    }
}

impl FromProto<v1::NewBead> for NewBead {
    fn from_proto(b: v1::NewBead) -> Result<Self, Error> {
        Ok(NewBead {
            project_id: ProjectId::parse(&b.project_id)?,
            title: b.title,
            description: b.description,
            bead_type: FromProto::from_proto(b.r#type)?,
            priority: priority(b.priority)?,
            assignee: b.assignee,
            tags: b.tags,
            context: b.context,
            parent: b.parent.as_deref().map(BeadId::parse).transpose()?,
            blocked_by: bead_ids(&b.blocked_by)?,
        })
    }
}

impl IntoProto<v1::Bead> for Bead {
    fn into_proto(self) -> v1::Bead {
        v1::Bead {
            id: self.id.into(),
            project_id: self.project_id.into(),
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
            attempts: self.attempts,
            last_error: self.last_error,
            close_reason: self.close_reason,
            dispatch_id: self.dispatch_id.map(String::from),
            lease_expires_at: self.lease_expires_at.into_proto(),
            not_before: self.not_before.into_proto(),
            created_at: Some(self.created_at.into_proto()),
            updated_at: Some(self.updated_at.into_proto()),
            closed_at: self.closed_at.into_proto(),
            version: self.version,
            started_at: self.started_at.into_proto(),
            started_by: self.started_by,
        }
    }
}

impl FromProto<v1::Bead> for Bead {
    fn from_proto(b: v1::Bead) -> Result<Self, Error> {
        Ok(Bead {
            id: BeadId::parse(&b.id)?,
            project_id: ProjectId::parse(&b.project_id)?,
            title: b.title,
            description: b.description,
            bead_type: FromProto::from_proto(b.r#type)?,
            priority: priority(b.priority)?,
            status: FromProto::from_proto(b.status)?,
            assignee: b.assignee,
            tags: b.tags,
            context: b.context,
            parent: b.parent.as_deref().map(BeadId::parse).transpose()?,
            blocked_by: bead_ids(&b.blocked_by)?,
            attempts: b.attempts,
            last_error: b.last_error,
            close_reason: b.close_reason,
            dispatch_id: b.dispatch_id.as_deref().map(DispatchId::parse).transpose()?,
            lease_expires_at: FromProto::from_proto(b.lease_expires_at)?,
            started_at: FromProto::from_proto(b.started_at)?,
            started_by: b.started_by,
            not_before: FromProto::from_proto(b.not_before)?,
            created_at: time(b.created_at, "created_at")?,
            updated_at: time(b.updated_at, "updated_at")?,
            closed_at: FromProto::from_proto(b.closed_at)?,
            version: b.version,
        })
    }
}

impl IntoProto<v1::Agent> for Agent {
    fn into_proto(self) -> v1::Agent {
        v1::Agent {
            id: self.id.into(),
            project_id: self.project_id.into(),
            role: self.role,
            instance: self.instance,
            status: self.status.into_proto(),
            current_bead: self.current_bead.map(String::from),
            capacity: self.capacity,
            last_heartbeat: Some(self.last_heartbeat.into_proto()),
        }
    }
}

impl FromProto<v1::Agent> for Agent {
    fn from_proto(a: v1::Agent) -> Result<Self, Error> {
        Ok(Agent {
            id: AgentId::parse(&a.id)?,
            project_id: ProjectId::parse(&a.project_id)?,
            role: a.role,
            instance: a.instance,
            status: FromProto::from_proto(a.status)?,
            current_bead: a.current_bead.as_deref().map(BeadId::parse).transpose()?,
            capacity: a.capacity,
            last_heartbeat: time(a.last_heartbeat, "last_heartbeat")?,
        })
    }
}

impl IntoProto<v1::Event> for Event {
    fn into_proto(self) -> v1::Event {
        v1::Event {
            seq: self.seq,
            id: self.id,
            kind: self.kind.as_str().to_owned(),
            source: self.source,
            project_id: self.project_id.map(String::from),
            entity_id: self.entity_id,
            action: self.action,
            description: self.description,
            data_json: self.data.to_string(),
            correlation_id: self.correlation_id,
            created_at: Some(self.created_at.into_proto()),
        }
    }
}

impl FromProto<v1::Event> for Event {
    fn from_proto(e: v1::Event) -> Result<Self, Error> {
        Ok(Event {
            seq: e.seq,
            id: e.id,
            kind: e.kind.parse()?,
            source: e.source,
            project_id: project_id(e.project_id.as_deref())?,
            entity_id: e.entity_id,
            action: e.action,
            description: e.description,
            data: json(&e.data_json, "event data")?,
            correlation_id: e.correlation_id,
            created_at: time(e.created_at, "created_at")?,
        })
    }
}

impl IntoProto<v1::ApiKey> for ApiKey {
    fn into_proto(self) -> v1::ApiKey {
        v1::ApiKey {
            id: self.id,
            name: self.name,
            role: self.role.into_proto(),
            created_at: Some(self.created_at.into_proto()),
            revoked_at: self.revoked_at.into_proto(),
        }
    }
}

impl FromProto<v1::ApiKey> for ApiKey {
    fn from_proto(k: v1::ApiKey) -> Result<Self, Error> {
        Ok(ApiKey {
            id: k.id,
            name: k.name,
            role: FromProto::from_proto(k.role)?,
            created_at: time(k.created_at, "created_at")?,
            revoked_at: FromProto::from_proto(k.revoked_at)?,
        })
    }
}

/// A required timestamp field.
pub(crate) fn time(ts: Option<prost_types::Timestamp>, field: &'static str) -> Result<DateTime<Utc>, Error> {
    DateTime::from_proto(required(ts, field)?)
}

/// An optional project id.
pub fn project_id(id: Option<&str>) -> Result<Option<ProjectId>, Error> {
    id.map(ProjectId::parse).transpose()
}

fn bead_ids(ids: &[String]) -> Result<Vec<BeadId>, Error> {
    ids.iter().map(|s| BeadId::parse(s)).collect()
}
