//! The projects' contexts (their `build`, `test` and `lint` commands, notes) that every task of a
//! project carries, so agents see them. The dispatcher's view refreshes them with the project
//! list it re-reads after any project change (and every quarter second), this instance's API at
//! once when it changes a project; a project not seen yet is read from the store once.

use std::collections::HashMap;
use std::sync::RwLock;

use loom_domain::{ContextMap, Project, ProjectId};
use loom_store::Store;

#[derive(Debug, Default)]
pub(crate) struct ProjectContexts(RwLock<HashMap<ProjectId, ContextMap>>);

impl ProjectContexts {
    /// Replaces what is known with the contexts of `projects` (all of them).
    pub(crate) fn set(&self, projects: &[Project]) {
        let known = projects.iter().map(|p| (p.id.clone(), p.context.clone())).collect();
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = known;
    }

    /// What a project change through this instance's API made the project's context, at once
    /// (a bead created right after it carries it).
    pub(crate) fn put(&self, project: &Project) {
        let mut known = self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        known.insert(project.id.clone(), project.context.clone());
    }

    /// The context of `project`; empty for a project that no longer exists.
    pub(crate) async fn get(&self, store: &dyn Store, project: &ProjectId) -> Result<ContextMap, loom_store::Error> {
        if let Some(c) = self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(project) {
            return Ok(c.clone());
        }
        let context = match store.get_project(project).await {
            Ok(p) => p.context,
            Err(loom_store::Error::NotFound { .. }) => return Ok(ContextMap::new()),
            Err(e) => return Err(e),
        };
        self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(project.clone(), context.clone());
        Ok(context)
    }
}
