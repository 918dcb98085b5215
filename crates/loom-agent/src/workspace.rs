//! The project's workspace: a clone of its repository at `work_root/<project>/repo` (cloned on
//! first use, fetched before each task) and one git worktree per bead at
//! `work_root/<project>/worktrees/<bead>` on branch `bead/<id>`. Work lands with the project's
//! strategy: `direct` pushes to the branch (fetch, rebase and retry when the push is rejected),
//! `branch-pr` pushes `bead/<id>` for a pull request.
//!
//! Every git command runs with a scrubbed environment (no inherited variables, HOME = the
//! project directory, no system config, no terminal prompts) and a timeout. Commands that touch
//! the shared repository (clone, fetch, worktree add/remove, push) are serialised by one lock.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use loom_domain::{BeadId, GitStrategy};
use tokio::process::Command;
use tokio::sync::Mutex;

use crate::sandbox::command::cap_text;
use crate::{AgentConfig, Error};

const GIT_TIMEOUT: Duration = Duration::from_secs(600);
const PUSH_ATTEMPTS: usize = 4;
const AUTHOR: [&str; 4] = ["-c", "user.name=Loom Agent", "-c", "user.email=agent@loom.invalid"];

/// One project's repository clone and its per-bead worktrees.
#[derive(Debug)]
pub(crate) struct Workspace {
    repo_url: String,
    branch: String,
    strategy: GitStrategy,
    project_dir: PathBuf,
    lock: Mutex<()>,
}

/// A bead's worktree.
#[derive(Debug)]
pub(crate) struct Worktree {
    pub(crate) path: PathBuf,
    bead: BeadId,
    /// The commit the worktree started from; commits after it are the bead's work.
    base: String,
}

impl Workspace {
    /// `None` when the agent has no repository configured.
    pub(crate) fn new(config: &AgentConfig) -> Option<Workspace> {
        if config.git_repo.is_empty() {
            return None;
        }
        Some(Workspace {
            repo_url: config.git_repo.clone(),
            branch: config.branch.clone(),
            strategy: config.git_strategy,
            project_dir: config.work_root.join(config.project.as_str()),
            lock: Mutex::new(()),
        })
    }

    fn repo(&self) -> PathBuf {
        self.project_dir.join("repo")
    }

    /// A fresh worktree for `bead` at the tip of the project's branch (an earlier attempt's
    /// worktree is discarded).
    pub(crate) async fn checkout(&self, bead: &BeadId) -> Result<Worktree, Error> {
        let _guard = self.lock.lock().await;
        self.sync_repo().await?;
        let path = self.project_dir.join("worktrees").join(bead.as_str());
        self.discard(&path).await;
        let upstream = format!("origin/{}", self.branch);
        let branch = format!("bead/{bead}");
        let path_str = path.to_string_lossy().into_owned();
        self.git(&self.repo(), &["worktree", "add", "-q", "-f", "-B", &branch, &path_str, &upstream]).await?;
        let base = self.git(&path, &["rev-parse", "HEAD"]).await?.trim().to_owned();
        Ok(Worktree { path, bead: bead.clone(), base })
    }

    async fn sync_repo(&self) -> Result<(), Error> {
        let repo = self.repo();
        if repo.join(".git").exists() {
            // The project's repository may have changed since the clone (the agent restarted
            // with the new one): fetch from where the project is now.
            self.git(&repo, &["remote", "set-url", "--", "origin", &self.repo_url]).await?;
            return self.git(&repo, &["fetch", "-q", "--prune", "origin"]).await.map(drop);
        }
        if repo.exists() {
            tokio::fs::remove_dir_all(&repo).await.map_err(|e| Error::io("removing a broken clone", e))?;
        }
        tokio::fs::create_dir_all(&self.project_dir).await.map_err(|e| Error::io("creating the workspace", e))?;
        let repo_str = repo.to_string_lossy().into_owned();
        self.git(&self.project_dir, &["clone", "-q", "--no-checkout", "--", &self.repo_url, &repo_str]).await?;
        Ok(())
    }

    async fn discard(&self, path: &Path) {
        if path.exists() {
            let p = path.to_string_lossy().into_owned();
            let _ = self.git(&self.repo(), &["worktree", "remove", "--force", &p]).await;
            let _ = tokio::fs::remove_dir_all(path).await;
        }
        let _ = self.git(&self.repo(), &["worktree", "prune"]).await;
    }

    /// Removes a finished bead's worktree (its work is in the remote).
    pub(crate) async fn remove(&self, wt: &Worktree) {
        let _guard = self.lock.lock().await;
        self.discard(&wt.path).await;
    }

    /// Commits everything in the worktree; `None` when there was nothing to commit.
    pub(crate) async fn commit(&self, wt: &Worktree, message: &str) -> Result<Option<String>, Error> {
        self.git(&wt.path, &["add", "-A"]).await?;
        let (clean, _) = self.git_raw(&wt.path, &["diff", "--cached", "--quiet"]).await?;
        if clean {
            return Ok(None);
        }
        let mut args = AUTHOR.to_vec();
        args.extend(["commit", "-q", "--no-verify", "-m", message]);
        self.git(&wt.path, &args).await?;
        Ok(Some(self.git(&wt.path, &["rev-parse", "HEAD"]).await?.trim().to_owned()))
    }

    /// `git status --porcelain` and `git diff` for the LLM's git actions.
    pub(crate) async fn status(&self, wt: &Worktree) -> Result<String, Error> {
        self.git(&wt.path, &["status", "--porcelain"]).await
    }

    pub(crate) async fn diff(&self, wt: &Worktree) -> Result<String, Error> {
        let unstaged = self.git(&wt.path, &["diff"]).await?;
        let staged = self.git(&wt.path, &["diff", "--cached"]).await?;
        Ok(format!("{staged}{unstaged}"))
    }

    /// Lands the bead's commits with the project's strategy and returns their hashes (as
    /// pushed; a rebase changes them). Nothing to push is not an error.
    /// The branch a bead's work lands on: the project's (`direct`) or `bead/{id}` (`branch-pr`).
    pub(crate) fn landing_branch(&self, bead: &loom_domain::BeadId) -> String {
        match self.strategy {
            GitStrategy::BranchPr => format!("bead/{bead}"),
            GitStrategy::Direct => self.branch.clone(),
        }
    }

    pub(crate) async fn push(&self, wt: &Worktree) -> Result<Vec<String>, Error> {
        if self.commits(wt).await?.is_empty() {
            return Ok(Vec::new());
        }
        let _guard = self.lock.lock().await;
        match self.strategy {
            GitStrategy::BranchPr => {
                let refspec = format!("HEAD:refs/heads/{}", self.landing_branch(&wt.bead));
                self.git(&wt.path, &["push", "-q", "--force", "origin", &refspec]).await?;
                self.commits(wt).await
            }
            GitStrategy::Direct => self.push_direct(wt).await,
        }
    }

    async fn push_direct(&self, wt: &Worktree) -> Result<Vec<String>, Error> {
        let refspec = format!("HEAD:refs/heads/{}", self.branch);
        let upstream = format!("origin/{}", self.branch);
        let mut last = String::new();
        let pending = format!("{upstream}..HEAD");
        for attempt in 1..=PUSH_ATTEMPTS {
            // After a rebase the bead's commits are the ones above the new upstream tip.
            let commits = self.git(&wt.path, &["rev-list", "--reverse", &pending]).await?;
            let (ok, out) = self.git_raw(&wt.path, &["push", "-q", "origin", &refspec]).await?;
            if ok {
                return Ok(commits.lines().map(str::to_owned).collect());
            }
            let rejected = ["rejected", "fetch first", "non-fast-forward"].iter().any(|s| out.contains(s));
            if !rejected {
                return Err(Error::Git { command: "push".into(), detail: out });
            }
            tracing::info!(bead = %wt.bead, attempt, "push rejected; rebasing on the new tip");
            self.git(&wt.path, &["fetch", "-q", "origin", &self.branch]).await?;
            let mut args = AUTHOR.to_vec();
            args.extend(["rebase", "-q", &upstream]);
            let (rebased, why) = self.git_raw(&wt.path, &args).await?;
            if !rebased {
                let _ = self.git_raw(&wt.path, &["rebase", "--abort"]).await;
                return Err(Error::Git {
                    command: "rebase".into(),
                    detail: format!("conflict with {upstream}: {why}"),
                });
            }
            last = out;
        }
        Err(Error::Git {
            command: "push".into(),
            detail: format!("still rejected after {PUSH_ATTEMPTS} attempts: {last}"),
        })
    }

    async fn commits(&self, wt: &Worktree) -> Result<Vec<String>, Error> {
        let range = format!("{}..HEAD", wt.base);
        let out = self.git(&wt.path, &["rev-list", "--reverse", &range]).await?;
        Ok(out.lines().map(str::to_owned).collect())
    }

    async fn git(&self, dir: &Path, args: &[&str]) -> Result<String, Error> {
        match self.git_raw(dir, args).await? {
            (true, out) => Ok(out),
            (false, out) => Err(Error::Git { command: args.first().copied().unwrap_or("").to_owned(), detail: out }),
        }
    }

    /// Runs git; returns whether it exited 0 and its output (stdout then stderr, capped).
    async fn git_raw(&self, dir: &Path, args: &[&str]) -> Result<(bool, String), Error> {
        let mut cmd = Command::new("git");
        cmd.args(args).current_dir(dir).env_clear();
        if let Ok(path) = std::env::var("PATH") {
            cmd.env("PATH", path);
        }
        cmd.env("HOME", &self.project_dir)
            .env("LANG", "C")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(GIT_TIMEOUT, cmd.output())
            .await
            .map_err(|_| Error::Git { command: args.join(" "), detail: format!("timed out after {GIT_TIMEOUT:?}") })?
            .map_err(|e| Error::io("running git", e))?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok((out.status.success(), cap_text(&text, 16 * 1024)))
    }
}
