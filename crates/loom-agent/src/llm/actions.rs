//! Performing the model's actions in the bead's worktree, through the sandbox. Every failure
//! becomes an observation for the model (it can correct itself); none escapes the worktree.

use std::path::Path;

use loom_bus::TaskData;
use serde_json::{Value, json};

use super::protocol::Action;
use crate::Error;
use crate::config::CommandLimits;
use crate::sandbox::command::cap_text;
use crate::sandbox::{Sandbox, run_command};
use crate::workspace::{Workspace, Worktree};

const LIST_MAX: usize = 1000;
const SEARCH_MAX: usize = 200;
const SEARCH_FILE_MAX: u64 = 1024 * 1024;

/// What the loop does after an action.
#[derive(Debug)]
pub(crate) enum Step {
    /// Tell the model this and go on; `ok` is false when the action failed.
    Observe {
        ok: bool,
        text: String,
    },
    Done(String),
    Fail(String),
    Escalate(String),
}

/// Everything an action may touch.
pub(crate) struct Env<'a> {
    pub(crate) sandbox: Sandbox,
    pub(crate) workspace: &'a Workspace,
    pub(crate) worktree: &'a Worktree,
    pub(crate) limits: CommandLimits,
    /// The bead and its project's commands.
    pub(crate) task: &'a TaskData,
    /// Beads the model asked for, reported in the result.
    pub(crate) created_beads: Vec<Value>,
    pub(crate) commits: Vec<String>,
}

impl Env<'_> {
    pub(crate) async fn perform(&mut self, action: &Action) -> Step {
        match self.try_perform(action).await {
            Ok(step) => step,
            Err(err) => Step::Observe { ok: false, text: format!("error: {err}") },
        }
    }

    async fn try_perform(&mut self, action: &Action) -> Result<Step, Error> {
        let cap = self.limits.output_cap;
        let ok = |text: String| Ok(Step::Observe { ok: true, text });
        match action {
            Action::ReadFile { path } => {
                let abs = self.sandbox.resolve(path)?;
                let text =
                    tokio::fs::read_to_string(&abs).await.map_err(|e| Error::io(format!("reading {path}"), e))?;
                ok(cap_text(&text, cap))
            }
            Action::WriteFile { path, content } => {
                let abs = self.sandbox.resolve(path)?;
                write(&abs, path, content).await?;
                ok(format!("wrote {} bytes to {path}", content.len()))
            }
            Action::EditFile { path, old, new } => {
                let abs = self.sandbox.resolve(path)?;
                let text =
                    tokio::fs::read_to_string(&abs).await.map_err(|e| Error::io(format!("reading {path}"), e))?;
                match text.matches(old.as_str()).count() {
                    1 => {
                        write(&abs, path, &text.replacen(old.as_str(), new, 1)).await?;
                        ok(format!("edited {path}"))
                    }
                    0 => {
                        Ok(Step::Observe { ok: false, text: format!("`old` does not occur in {path}; read it first") })
                    }
                    n => Ok(Step::Observe {
                        ok: false,
                        text: format!("`old` occurs {n} times in {path}; make it unique"),
                    }),
                }
            }
            Action::ListFiles { path } => {
                let abs = self.sandbox.resolve(path.as_deref().unwrap_or("."))?;
                ok(self.list(&abs).join("\n"))
            }
            Action::SearchText { query, path } => {
                let abs = self.sandbox.resolve(path.as_deref().unwrap_or("."))?;
                ok(cap_text(&self.search(&abs, query).join("\n"), cap))
            }
            Action::RunCommand { command } => self.command(command).await,
            Action::Build | Action::Test => {
                let key = if matches!(action, Action::Build) { "build" } else { "test" };
                match self.task.project_command(key) {
                    Some(command) => self.command(command).await,
                    None => Ok(Step::Observe { ok: false, text: format!("the project has no `{key}` command") }),
                }
            }
            Action::GitStatus => ok(self.workspace.status(self.worktree).await?),
            Action::GitDiff => ok(cap_text(&self.workspace.diff(self.worktree).await?, cap)),
            Action::GitCommit { message } => match self.workspace.commit(self.worktree, message).await? {
                Some(hash) => {
                    self.commits.push(hash.clone());
                    ok(format!("committed {hash}"))
                }
                None => Ok(Step::Observe { ok: false, text: "nothing to commit".into() }),
            },
            Action::CreateBead { title, description, priority, bead_type } => {
                self.created_beads.push(json!({
                    "title": title, "description": description, "priority": priority, "type": bead_type,
                }));
                ok(format!("recorded follow-up bead {title:?} (created when the result is applied)"))
            }
            Action::Done { summary } => Ok(Step::Done(summary.clone())),
            Action::Fail { reason } => Ok(Step::Fail(reason.clone())),
            Action::Escalate { reason } => Ok(Step::Escalate(reason.clone())),
        }
    }

    async fn command(&self, command: &str) -> Result<Step, Error> {
        let out = run_command(self.sandbox.root(), command, &self.limits).await?;
        Ok(Step::Observe { ok: out.success(), text: format!("{}\n{}", out.status_line(), out.output) })
    }

    /// Files under `dir`, relative to the worktree, without following symlinks or entering `.git`.
    fn list(&self, dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        self.walk(dir, &mut |path, _| {
            out.push(self.sandbox.relative(path).display().to_string());
            out.len() < LIST_MAX
        });
        out.sort();
        if out.len() >= LIST_MAX {
            out.push(format!("… (listing stopped at {LIST_MAX} entries)"));
        }
        out
    }

    fn search(&self, dir: &Path, query: &str) -> Vec<String> {
        let mut hits = Vec::new();
        self.walk(dir, &mut |path, len| {
            if len <= SEARCH_FILE_MAX
                && let Ok(text) = std::fs::read_to_string(path)
            {
                for (n, line) in text.lines().enumerate().filter(|(_, l)| l.contains(query)) {
                    let line = &line[..line.floor_char_boundary(300)];
                    hits.push(format!("{}:{}: {line}", self.sandbox.relative(path).display(), n + 1));
                    if hits.len() >= SEARCH_MAX {
                        return false;
                    }
                }
            }
            true
        });
        if hits.is_empty() {
            hits.push(format!("no match for {query:?}"));
        }
        hits
    }

    /// Calls `visit(file, size)` for regular files under `dir` until it returns false.
    fn walk(&self, dir: &Path, visit: &mut dyn FnMut(&Path, u64) -> bool) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(path) = stack.pop() {
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if meta.is_file() {
                if !visit(&path, meta.len()) {
                    return;
                }
            } else if meta.is_dir() {
                let Ok(entries) = std::fs::read_dir(&path) else { continue };
                let mut children: Vec<_> =
                    entries.flatten().filter(|e| e.file_name() != ".git").map(|e| e.path()).collect();
                children.sort_by(|a, b| b.cmp(a));
                stack.extend(children);
            }
        }
    }
}

async fn write(abs: &Path, rel: &str, content: &str) -> Result<(), Error> {
    if let Some(parent) = abs.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| Error::io(format!("creating the directory of {rel}"), e))?;
    }
    tokio::fs::write(abs, content).await.map_err(|e| Error::io(format!("writing {rel}"), e))
}
