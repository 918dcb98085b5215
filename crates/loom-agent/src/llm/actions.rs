//! Performing the model's actions in the bead's worktree, through the sandbox. Every failure
//! becomes an observation for the model (it can correct itself); none escapes the worktree.
//! Files are read and written only when they are regular files (opened non-blocking and without
//! following a last symlink, then checked, so a FIFO, socket or device is refused rather than
//! hanging the agent), and a file over [`READ_MAX`] is not read into memory.

use std::path::Path;

use loom_bus::TaskData;
use serde_json::{Value, json};

use super::protocol::Action;
use crate::Error;
use crate::config::CommandLimits;
use crate::executor::runner::Runner;
use crate::sandbox::Sandbox;
use crate::sandbox::command::cap_text;
use crate::workspace::{Workspace, Worktree};

const LIST_MAX: usize = 1000;
const SEARCH_MAX: usize = 200;
const SEARCH_FILE_MAX: u64 = 1024 * 1024;
/// Largest file `read_file` and `edit_file` read.
pub(crate) const READ_MAX: u64 = 4 * 1024 * 1024;

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
    /// Runs the `run_command`, `build` and `test` actions (sandboxed, audited).
    pub(crate) runner: &'a Runner<'a>,
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
                let text = read(&abs, path).await?;
                ok(cap_text(&text, cap))
            }
            Action::WriteFile { path, content } => {
                let abs = self.sandbox.resolve(path)?;
                write(&abs, path, content).await?;
                ok(format!("wrote {} bytes to {path}", content.len()))
            }
            Action::EditFile { path, old, new } => {
                let abs = self.sandbox.resolve(path)?;
                let text = read(&abs, path).await?;
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
            Action::RunCommand { command } => self.command("run_command", command).await,
            Action::Build | Action::Test => {
                let key = if matches!(action, Action::Build) { "build" } else { "test" };
                match self.task.project_command(key) {
                    Some(command) => self.command(key, command).await,
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

    async fn command(&self, kind: &str, command: &str) -> Result<Step, Error> {
        let out = self.runner.run(kind, command).await?;
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

/// Opens `abs` if it is a regular file (see the module documentation).
fn open_regular(abs: &Path, rel: &str, write: bool) -> Result<std::fs::File, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let not_regular = || Error::refused(rel, "it is not a regular file (a FIFO, socket or device)");
    if let Ok(meta) = std::fs::symlink_metadata(abs)
        && !meta.is_file()
    {
        return Err(not_regular());
    }
    let mut options = std::fs::OpenOptions::new();
    if write {
        options.write(true).create(true);
    } else {
        options.read(true);
    }
    let what = if write { "writing" } else { "reading" };
    let file = options
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(abs)
        .map_err(|e| Error::io(format!("{what} {rel}"), e))?;
    let meta = file.metadata().map_err(|e| Error::io(format!("{what} {rel}"), e))?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    if !write && meta.len() > READ_MAX {
        return Err(Error::refused(
            rel,
            format!(
                "it is {} bytes, over the {READ_MAX} bytes a file action reads; use search_text or a command",
                meta.len()
            ),
        ));
    }
    Ok(file)
}

async fn read(abs: &Path, rel: &str) -> Result<String, Error> {
    let (abs, rel) = (abs.to_path_buf(), rel.to_owned());
    let join = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let file = open_regular(&abs, &rel, false)?;
        let mut bytes = Vec::new();
        file.take(READ_MAX).read_to_end(&mut bytes).map_err(|e| Error::io(format!("reading {rel}"), e))?;
        String::from_utf8(bytes).map_err(|_| Error::refused(&rel, "it is not UTF-8 text"))
    });
    join.await.map_err(|e| Error::io("reading a file", std::io::Error::other(e)))?
}

async fn write(abs: &Path, rel: &str, content: &str) -> Result<(), Error> {
    if let Some(parent) = abs.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| Error::io(format!("creating the directory of {rel}"), e))?;
    }
    let (abs, rel, content) = (abs.to_path_buf(), rel.to_owned(), content.to_owned());
    let join = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut file = open_regular(&abs, &rel, true)?;
        file.set_len(0)
            .and_then(|()| file.write_all(content.as_bytes()))
            .map_err(|e| Error::io(format!("writing {rel}"), e))
    });
    join.await.map_err(|e| Error::io("writing a file", std::io::Error::other(e)))?
}
