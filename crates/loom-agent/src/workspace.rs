//! The project's workspace: a clone of its repository at `work_root/<project>/repo` (cloned on
//! first use, fetched before each task) and one git worktree per bead at
//! `work_root/<project>/worktrees/<bead>` on branch `bead/<id>`. Work lands with the project's
//! strategy: `direct` pushes to the branch (fetch, rebase and retry when the push is rejected),
//! `branch-pr` pushes `bead/<id>` for a pull request.
//!
//! Every git command runs with a scrubbed environment (no inherited variables, HOME = the
//! project directory, no system or global config, no terminal prompts), with hooks and
//! fsmonitor off (`-c core.hooksPath=/dev/null -c core.fsmonitor=false`, which win over any
//! repository config) and the `ext::` transport refused, and a timeout. Git calls on a bead's
//! worktree name its git directory explicitly (`--git-dir`, `--work-tree`), read right after
//! `worktree add`: a command may replace the worktree's `.git` file with a repository of its own
//! (hooks, config, another remote), and the agent would otherwise commit and push through it.
//! Commands that touch the shared repository (clone, fetch, worktree add/remove, push) are
//! serialised by one lock.
//!
//! Before a push the bead's changes (from the commit its worktree started at) are checked
//! ([`PushChecks`]): no protected path changed, the diff within its size limit; a violation is
//! [`Error::PushRefused`] and nothing is pushed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use loom_domain::{BeadId, GitStrategy};
use tokio::process::Command;
use tokio::sync::Mutex;

use crate::config::PushChecks;
use crate::sandbox::command::cap_text;
use crate::{AgentConfig, Error};

const GIT_TIMEOUT: Duration = Duration::from_secs(600);
/// Put before every git command's arguments: no hook and no fsmonitor program ever runs,
/// whatever a repository's config says, and no `ext::` remote runs a command.
const HARDENED: [&str; 6] =
    ["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "protocol.ext.allow=never"];
const PUSH_ATTEMPTS: usize = 4;
const AUTHOR: [&str; 4] = ["-c", "user.name=Loom Agent", "-c", "user.email=agent@loom.invalid"];

/// One project's repository clone and its per-bead worktrees.
#[derive(Debug)]
pub(crate) struct Workspace {
    repo_url: String,
    branch: String,
    strategy: GitStrategy,
    project_dir: PathBuf,
    checks: PushChecks,
    lock: Mutex<()>,
}

/// A bead's worktree.
#[derive(Debug)]
pub(crate) struct Worktree {
    pub(crate) path: PathBuf,
    /// The worktree's git directory in the shared clone (`repo/.git/worktrees/<name>`).
    git_dir: PathBuf,
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
            checks: config.push_checks.clone(),
            lock: Mutex::new(()),
        })
    }

    fn repo(&self) -> PathBuf {
        self.project_dir.join("repo")
    }

    /// The shared clone's git directory, which sandboxed commands see read-only.
    pub(crate) fn git_common_dir(&self) -> PathBuf {
        self.repo().join(".git")
    }

    /// A copy of the clone's config with only `[core]` and `[extensions]` (what git inside the
    /// sandbox needs to read the repository), written next to the clone: the sandbox shows it
    /// instead of the real one, whose remote URL may carry a credential.
    pub(crate) async fn sandbox_git_config(&self) -> Result<PathBuf, Error> {
        let real = self.git_common_dir().join("config");
        let text = tokio::fs::read_to_string(&real).await.map_err(|e| Error::io("reading the clone's config", e))?;
        let copy = self.project_dir.join("sandbox-gitconfig");
        // Renamed into place: a sandbox being set up for another bead never binds a half file.
        let fresh = self.project_dir.join(format!("sandbox-gitconfig.{:x}", rand::random::<u64>()));
        let written = tokio::fs::write(&fresh, public_config(&text)).await;
        let renamed = match written {
            Ok(()) => tokio::fs::rename(&fresh, &copy).await,
            Err(e) => Err(e),
        };
        if let Err(e) = renamed {
            let _ = tokio::fs::remove_file(&fresh).await;
            return Err(Error::io("writing the sandbox's git config", e));
        }
        Ok(copy)
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
        // Read now, before any command ran in the worktree, and used from here on.
        let git_dir = PathBuf::from(self.git(&path, &["rev-parse", "--absolute-git-dir"]).await?.trim());
        if !git_dir.starts_with(self.git_common_dir().join("worktrees")) {
            return Err(Error::Git {
                command: "worktree add".into(),
                detail: format!("the worktree's git directory {} is not in the clone", git_dir.display()),
            });
        }
        let mut wt = Worktree { path, git_dir, bead: bead.clone(), base: String::new() };
        wt.base = self.wt_git(&wt, &["rev-parse", "HEAD"]).await?.trim().to_owned();
        Ok(wt)
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
        self.wt_git(wt, &["add", "-A"]).await?;
        let (clean, _) = self.git_raw(&wt.path, &wt.args(&["diff", "--cached", "--quiet"])).await?;
        if clean {
            return Ok(None);
        }
        let mut args = AUTHOR.to_vec();
        args.extend(["commit", "-q", "--no-verify", "-m", message]);
        self.wt_git(wt, &args).await?;
        Ok(Some(self.wt_git(wt, &["rev-parse", "HEAD"]).await?.trim().to_owned()))
    }

    /// `git status --porcelain` and `git diff` for the LLM's git actions.
    pub(crate) async fn status(&self, wt: &Worktree) -> Result<String, Error> {
        self.wt_git(wt, &["status", "--porcelain"]).await
    }

    pub(crate) async fn diff(&self, wt: &Worktree) -> Result<String, Error> {
        let unstaged = self.wt_git(wt, &["diff", "--no-ext-diff", "--no-textconv"]).await?;
        let staged = self.wt_git(wt, &["diff", "--cached", "--no-ext-diff", "--no-textconv"]).await?;
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
        self.check(wt).await?;
        let _guard = self.lock.lock().await;
        match self.strategy {
            GitStrategy::BranchPr => {
                let refspec = format!("HEAD:refs/heads/{}", self.landing_branch(&wt.bead));
                self.wt_git(wt, &["push", "-q", "--force", "origin", &refspec]).await?;
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
            let commits = self.wt_git(wt, &["rev-list", "--reverse", &pending]).await?;
            let (ok, out) = self.git_raw(&wt.path, &wt.args(&["push", "-q", "origin", &refspec])).await?;
            if ok {
                return Ok(commits.lines().map(str::to_owned).collect());
            }
            let rejected = ["rejected", "fetch first", "non-fast-forward"].iter().any(|s| out.contains(s));
            if !rejected {
                return Err(Error::Git { command: "push".into(), detail: out });
            }
            tracing::info!(bead = %wt.bead, attempt, "push rejected; rebasing on the new tip");
            self.wt_git(wt, &["fetch", "-q", "origin", &self.branch]).await?;
            let mut args = AUTHOR.to_vec();
            args.extend(["rebase", "-q", &upstream]);
            let (rebased, why) = self.git_raw(&wt.path, &wt.args(&args)).await?;
            if !rebased {
                let _ = self.git_raw(&wt.path, &wt.args(&["rebase", "--abort"])).await;
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
        let out = self.wt_git(wt, &["rev-list", "--reverse", &range]).await?;
        Ok(out.lines().map(str::to_owned).collect())
    }

    /// The push checks: no protected path changed, the diff within its limit.
    async fn check(&self, wt: &Worktree) -> Result<(), Error> {
        let names = self.wt_git(wt, &["diff", "--no-renames", "--name-only", &wt.base, "HEAD"]).await?;
        let protected = &self.checks.protected_paths;
        let touched: Vec<&str> =
            names.lines().filter(|path| protected.iter().any(|glob| glob_matches(glob, path))).collect();
        if !touched.is_empty() {
            return Err(Error::PushRefused(format!(
                "the bead changed protected path(s) {} (protected: {})",
                touched.join(", "),
                protected.join(", ")
            )));
        }
        let limit = self.checks.max_diff_bytes;
        if limit > 0 {
            let diff = ["diff", "--binary", "--no-color", "--no-ext-diff", "--no-textconv", &wt.base, "HEAD"];
            let size = self.output_size(&wt.path, &wt.args(&diff), limit).await?;
            if size > limit {
                return Err(Error::PushRefused(format!(
                    "the bead's diff is larger than the limit of {limit} bytes (more than {size} bytes)"
                )));
            }
        }
        Ok(())
    }

    /// Bytes git writes to stdout, counted up to just over `limit` (then it is stopped).
    async fn output_size(&self, dir: &Path, args: &[&str], limit: u64) -> Result<u64, Error> {
        use tokio::io::AsyncReadExt;
        let mut cmd = self.git_command(dir, args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().map_err(|e| Error::io("running git", e))?;
        let mut stdout = child.stdout.take().expect("piped");
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        let counted = tokio::time::timeout(GIT_TIMEOUT, async {
            while size <= limit {
                match stdout.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => size += n as u64,
                }
            }
        })
        .await;
        let _ = child.start_kill();
        let _ = child.wait().await;
        counted
            .map_err(|_| Error::Git { command: "diff".into(), detail: format!("timed out after {GIT_TIMEOUT:?}") })?;
        Ok(size)
    }

    /// git on a bead's worktree, through the git directory read at checkout.
    async fn wt_git(&self, wt: &Worktree, args: &[&str]) -> Result<String, Error> {
        self.git(&wt.path, &wt.args(args)).await
    }

    async fn git(&self, dir: &Path, args: &[&str]) -> Result<String, Error> {
        match self.git_raw(dir, args).await? {
            (true, out) => Ok(out),
            (false, out) => Err(Error::Git { command: args.first().copied().unwrap_or("").to_owned(), detail: out }),
        }
    }

    /// git with the hardened options and the scrubbed environment.
    fn git_command(&self, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("git");
        cmd.args(HARDENED).args(args).current_dir(dir).env_clear();
        if let Ok(path) = std::env::var("PATH") {
            cmd.env("PATH", path);
        }
        cmd.env("HOME", &self.project_dir)
            .env("LANG", "C")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs git; returns whether it exited 0 and its output (stdout then stderr, capped).
    async fn git_raw(&self, dir: &Path, args: &[&str]) -> Result<(bool, String), Error> {
        let mut cmd = self.git_command(dir, args);
        let out = tokio::time::timeout(GIT_TIMEOUT, cmd.output())
            .await
            .map_err(|_| Error::Git { command: args.join(" "), detail: format!("timed out after {GIT_TIMEOUT:?}") })?
            .map_err(|e| Error::io("running git", e))?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok((out.status.success(), cap_text(&text, 16 * 1024)))
    }
}

impl Worktree {
    /// `args` after `--git-dir` and `--work-tree` of this worktree.
    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["--git-dir", self.git_dir_str(), "--work-tree", self.path_str()];
        all.extend_from_slice(args);
        all
    }

    fn git_dir_str(&self) -> &str {
        self.git_dir.to_str().unwrap_or_default()
    }

    fn path_str(&self) -> &str {
        self.path.to_str().unwrap_or_default()
    }
}

/// The `[core]` and `[extensions]` sections of a git config file, nothing else.
fn public_config(text: &str) -> String {
    let mut keep = false;
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(header) = trimmed.strip_prefix('[') {
            let name: String =
                header.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect::<String>();
            let name = name.to_ascii_lowercase();
            keep = name == "core" || name == "extensions";
        }
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Whether `path` matches `glob`: `**` spans any number of segments (`dir/**` is everything
/// under `dir`), `*` any characters within a segment, `?` one character; nothing else is
/// special. Matched against the whole path, relative to the repository root.
pub(crate) fn glob_matches(glob: &str, path: &str) -> bool {
    fn segments(glob: &[&str], path: &[&str]) -> bool {
        match (glob.first(), path.first()) {
            (None, None) => true,
            (Some(&"**"), _) => segments(&glob[1..], path) || (!path.is_empty() && segments(glob, &path[1..])),
            (Some(g), Some(p)) => segment(g.as_bytes(), p.as_bytes()) && segments(&glob[1..], &path[1..]),
            _ => false,
        }
    }
    fn segment(g: &[u8], p: &[u8]) -> bool {
        match (g.first(), p.first()) {
            (None, None) => true,
            (Some(b'*'), _) => segment(&g[1..], p) || (!p.is_empty() && segment(g, &p[1..])),
            (Some(b'?'), Some(_)) => segment(&g[1..], &p[1..]),
            (Some(a), Some(b)) => a == b && segment(&g[1..], &p[1..]),
            _ => false,
        }
    }
    let glob: Vec<&str> = glob.trim_matches('/').split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    segments(&glob, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_paths_by_segment() {
        assert!(glob_matches(".github/workflows/**", ".github/workflows/ci.yml"));
        assert!(glob_matches(".github/workflows/**", ".github/workflows/sub/x.yaml"));
        assert!(!glob_matches(".github/workflows/**", ".github/dependabot.yml"));
        assert!(glob_matches(".gitlab-ci.yml", ".gitlab-ci.yml"));
        assert!(!glob_matches(".gitlab-ci.yml", "sub/.gitlab-ci.yml"));
        assert!(glob_matches("**/.gitlab-ci.yml", "sub/.gitlab-ci.yml"));
        assert!(glob_matches("**/.gitlab-ci.yml", ".gitlab-ci.yml"));
        assert!(glob_matches("src/*.rs", "src/main.rs") && !glob_matches("src/*.rs", "src/a/main.rs"));
        assert!(glob_matches("v?.txt", "v1.txt") && !glob_matches("v?.txt", "v10.txt"));
    }

    #[test]
    fn the_sandbox_config_keeps_core_and_extensions_only() {
        let config = "[core]\n\trepositoryformatversion = 1\n\tbare = false\n[remote \"origin\"]\n\turl = \
                      https://x-token:ghp_secret@github.com/o/r.git\n[extensions]\n\tobjectformat = sha256\n\
                      [branch \"main\"]\n\tremote = origin\n";
        let public = public_config(config);
        assert!(!public.contains("ghp_secret") && !public.contains("origin"), "{public}");
        assert!(public.contains("repositoryformatversion = 1") && public.contains("objectformat = sha256"));
    }
}
