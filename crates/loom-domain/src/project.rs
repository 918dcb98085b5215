//! Projects: git repositories that beads are worked on in.

use chrono::{DateTime, Utc};

use crate::bead::{string_enum, validate_context, validate_title};
use crate::{BeadPrefix, ContextMap, Error, ProjectId};

string_enum!(
    /// How an agent lands its commits.
    GitStrategy, "git strategy" { Direct => "direct", BranchPr => "branch-pr" }
);

string_enum!(
    /// Whether the dispatcher hands out the project's beads.
    ProjectStatus, "project status" { Active => "active", Paused => "paused", Archived => "archived" }
);

/// A project as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Project {
    pub id: ProjectId,
    pub name: String,
    pub git_repo: String,
    pub branch: String,
    pub bead_prefix: BeadPrefix,
    pub context: ContextMap,
    pub git_strategy: GitStrategy,
    pub status: ProjectStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A project to create (or the full new state of one to update).
#[derive(Clone, Debug, PartialEq)]
pub struct NewProject {
    pub id: ProjectId,
    pub name: String,
    pub git_repo: String,
    pub branch: String,
    pub bead_prefix: BeadPrefix,
    pub context: ContextMap,
    pub git_strategy: GitStrategy,
    pub status: ProjectStatus,
}

impl NewProject {
    /// A project with defaults: name = id, branch `main`, prefix derived from the id, `direct`.
    pub fn new(id: ProjectId, git_repo: impl Into<String>) -> Self {
        Self {
            name: id.to_string(),
            bead_prefix: BeadPrefix::derive(&id),
            id,
            git_repo: git_repo.into(),
            branch: "main".into(),
            context: ContextMap::new(),
            git_strategy: GitStrategy::Direct,
            status: ProjectStatus::Active,
        }
    }

    /// Checks the free-form fields.
    pub fn validate(&self) -> Result<(), Error> {
        validate_title(&self.name).map_err(|_| Error::invalid("project name", "must be 1-500 bytes and not blank"))?;
        if self.git_repo.len() > 2048 {
            return Err(Error::invalid("git_repo", "is longer than 2048 bytes"));
        }
        let bad_branch = self.branch.is_empty()
            || self.branch.len() > 255
            || self.branch.starts_with('-')
            || self.branch.contains("..")
            || self.branch.chars().any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c));
        if bad_branch {
            return Err(Error::invalid("branch", format!("{:?} is not a valid git branch name", self.branch)));
        }
        validate_context(&self.context)
    }
}
