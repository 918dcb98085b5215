//! What results report and what the store keeps of them: reports, commits, discovered beads and
//! attempts.

use loom_domain::{BeadId, DispatchId, Error};
use loom_store::{Attempt, Commit, Discovered, ProjectUsage, Report, TokenUsage};

use super::domain::time;
use super::{FromProto, IntoProto, priority};
use crate::v1;

impl IntoProto<v1::Commit> for Commit {
    fn into_proto(self) -> v1::Commit {
        v1::Commit { sha: self.sha, branch: self.branch }
    }
}

impl FromProto<v1::Commit> for Commit {
    fn from_proto(c: v1::Commit) -> Result<Self, Error> {
        Ok(Commit { sha: c.sha, branch: c.branch })
    }
}

impl IntoProto<v1::Discovered> for Discovered {
    fn into_proto(self) -> v1::Discovered {
        v1::Discovered {
            title: self.title,
            description: self.description,
            priority: u32::from(self.priority.get()),
            r#type: self.bead_type.into_proto(),
        }
    }
}

impl FromProto<v1::Discovered> for Discovered {
    fn from_proto(d: v1::Discovered) -> Result<Self, Error> {
        Ok(Discovered {
            title: d.title,
            description: d.description,
            priority: priority(d.priority)?,
            bead_type: FromProto::from_proto(d.r#type)?,
        })
    }
}

impl IntoProto<v1::Report> for Report {
    fn into_proto(self) -> v1::Report {
        v1::Report {
            output: self.output,
            commits: self.commits.into_proto(),
            artifacts: self.artifacts,
            duration_ms: self.duration_ms,
            discovered: self.discovered.into_proto(),
            usage: Some(self.usage.into_proto()),
            conversation: self.conversation,
        }
    }
}

impl FromProto<v1::Report> for Report {
    fn from_proto(r: v1::Report) -> Result<Self, Error> {
        Ok(Report {
            output: r.output,
            commits: FromProto::from_proto(r.commits)?,
            artifacts: r.artifacts,
            duration_ms: r.duration_ms,
            discovered: FromProto::from_proto(r.discovered)?,
            usage: r.usage.map(TokenUsage::from_proto).transpose()?.unwrap_or_default(),
            conversation: r.conversation,
        })
    }
}

impl IntoProto<v1::Attempt> for Attempt {
    fn into_proto(self) -> v1::Attempt {
        v1::Attempt {
            bead_id: self.bead_id.into(),
            dispatch_id: self.dispatch_id.into(),
            attempt: self.attempt,
            agent_id: self.agent_id,
            succeeded: self.succeeded,
            error: self.error,
            output: self.output,
            commits: self.commits.into_proto(),
            artifacts: self.artifacts,
            created_beads: self.created_beads.into_iter().map(String::from).collect(),
            duration_ms: self.duration_ms,
            started_at: self.started_at.into_proto(),
            finished_at: Some(self.finished_at.into_proto()),
            usage: Some(self.usage.into_proto()),
            conversation: self.conversation,
        }
    }
}

impl FromProto<v1::Attempt> for Attempt {
    fn from_proto(a: v1::Attempt) -> Result<Self, Error> {
        Ok(Attempt {
            bead_id: BeadId::parse(&a.bead_id)?,
            dispatch_id: DispatchId::parse(&a.dispatch_id)?,
            attempt: a.attempt,
            agent_id: a.agent_id,
            succeeded: a.succeeded,
            error: a.error,
            output: a.output,
            commits: FromProto::from_proto(a.commits)?,
            artifacts: a.artifacts,
            created_beads: a.created_beads.iter().map(|id| BeadId::parse(id)).collect::<Result<_, _>>()?,
            duration_ms: a.duration_ms,
            started_at: FromProto::from_proto(a.started_at)?,
            finished_at: time(a.finished_at, "finished_at")?,
            usage: a.usage.map(TokenUsage::from_proto).transpose()?.unwrap_or_default(),
            conversation: a.conversation,
        })
    }
}

impl IntoProto<v1::TokenUsage> for TokenUsage {
    fn into_proto(self) -> v1::TokenUsage {
        v1::TokenUsage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            model: self.model,
            provider: self.provider,
            cost_usd: self.cost_usd,
        }
    }
}

impl FromProto<v1::TokenUsage> for TokenUsage {
    fn from_proto(u: v1::TokenUsage) -> Result<Self, Error> {
        if !u.cost_usd.is_finite() || u.cost_usd < 0.0 {
            return Err(Error::Invalid {
                field: "usage.cost_usd",
                reason: "must be a finite amount, at least 0".into(),
            });
        }
        Ok(TokenUsage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            model: u.model,
            provider: u.provider,
            cost_usd: u.cost_usd,
        })
    }
}

impl IntoProto<v1::ProjectUsage> for ProjectUsage {
    fn into_proto(self) -> v1::ProjectUsage {
        v1::ProjectUsage {
            project_id: self.project_id.into(),
            attempts: self.attempts,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cost_usd: self.cost_usd,
        }
    }
}

impl FromProto<v1::ProjectUsage> for ProjectUsage {
    fn from_proto(u: v1::ProjectUsage) -> Result<Self, Error> {
        Ok(ProjectUsage {
            project_id: loom_domain::ProjectId::parse(&u.project_id)?,
            attempts: u.attempts,
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cost_usd: u.cost_usd,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_round_trip() {
        let at = chrono::DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let attempt = Attempt {
            bead_id: BeadId::parse("p-1").unwrap(),
            dispatch_id: DispatchId::parse("d-1").unwrap(),
            attempt: 2,
            agent_id: "agent".into(),
            succeeded: false,
            error: Some("boom".into()),
            output: "tail".into(),
            commits: vec![Commit { sha: "abc".into(), branch: "main".into() }],
            artifacts: vec!["a.txt".into()],
            created_beads: vec![BeadId::parse("p-2").unwrap()],
            duration_ms: 42,
            usage: TokenUsage {
                prompt_tokens: 120,
                completion_tokens: 30,
                model: "m".into(),
                provider: "p".into(),
                cost_usd: 0.25,
            },
            conversation: r#"[{"role":"system","content":"S"}]"#.into(),
            started_at: Some(at),
            finished_at: at,
        };
        assert_eq!(Attempt::from_proto(attempt.clone().into_proto()).unwrap(), attempt);
    }
}
