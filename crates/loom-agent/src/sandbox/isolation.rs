//! The bubblewrap sandbox of a task's commands ([`Isolation`]) and the start-up check
//! ([`probe`]). This is the only place that starts `bwrap`.
//!
//! The sandbox is `bwrap` with: the root bound read-only; `/dev` and `/proc`
//! fresh (the latter of a new pid namespace, so no agent process, environment or file
//! descriptor is visible); a private `/tmp`; the paths that hold Loom's secrets hidden (a
//! directory shows empty and read-only, a file empty): the agent's work root — its journal, the
//! shared clone and the other beads' worktrees — and what the binary adds (data directory with
//! the SQLite file, configuration file, key files); the shared clone's `.git` bound back
//! read-only, so `git status`/`log`/`diff` work inside, with its `config` replaced by a copy
//! holding only `[core]` and `[extensions]` (the remote URL, which may carry a token, is not
//! shown); the bead's worktree bound read-write; new user (when not root), pid, ipc, uts, cgroup
//! and — unless the project allows it — network namespaces; every capability dropped;
//! `--die-with-parent` and `--new-session`; and per-process resource limits through `prlimit`.
//!
//! Mounts are applied shallowest first, so a hidden directory that holds the worktree (the data
//! directory does) is masked before the worktree is bound back into it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use super::command::run_command;
use crate::Error;
use crate::config::{CommandLimits, ResourceLimits, SandboxConfig, SandboxMode};

/// How commands are isolated from the agent: the sandbox of one task's worktree.
#[derive(Clone, Debug)]
pub struct Isolation {
    mode: SandboxMode,
    bwrap: PathBuf,
    limits: ResourceLimits,
    hidden: Vec<PathBuf>,
    writable: Vec<PathBuf>,
    read_only: Vec<(PathBuf, PathBuf)>,
    network: bool,
}

/// One mount of the sandbox, ordered by the depth of its destination.
#[derive(Debug)]
enum Mount {
    HideDir(PathBuf),
    HideFile(PathBuf),
    ReadOnly(PathBuf, PathBuf),
    Writable(PathBuf),
}

impl Mount {
    fn dest(&self) -> &Path {
        match self {
            Mount::HideDir(d) | Mount::HideFile(d) | Mount::ReadOnly(_, d) | Mount::Writable(d) => d,
        }
    }
}

impl Isolation {
    /// No sandbox: the command runs as the agent's user.
    pub fn none() -> Isolation {
        Isolation {
            mode: SandboxMode::None,
            bwrap: PathBuf::new(),
            limits: ResourceLimits::default(),
            hidden: Vec::new(),
            writable: Vec::new(),
            read_only: Vec::new(),
            network: true,
        }
    }

    /// The configured sandbox, with no network and `config.hidden` hidden.
    pub fn new(config: &SandboxConfig) -> Isolation {
        Isolation {
            mode: config.mode,
            bwrap: config.bwrap.clone(),
            limits: config.limits,
            hidden: config.hidden.clone(),
            writable: config.writable.clone(),
            read_only: Vec::new(),
            network: config.mode == SandboxMode::None,
        }
    }

    /// Also hides `path` (a directory shows empty, a file empty); a missing path is ignored.
    pub fn hide(mut self, path: impl Into<PathBuf>) -> Isolation {
        self.hidden.push(path.into());
        self
    }

    /// Binds `source` read-only at `dest` (after the hidden paths above it are masked).
    pub fn read_only(mut self, source: impl Into<PathBuf>, dest: impl Into<PathBuf>) -> Isolation {
        self.read_only.push((source.into(), dest.into()));
        self
    }

    /// Lets the command reach the network (the project allows it); off by default.
    pub fn network(mut self, allowed: bool) -> Isolation {
        if self.mode == SandboxMode::Bubblewrap {
            self.network = allowed;
        }
        self
    }

    pub fn mode(&self) -> SandboxMode {
        self.mode
    }

    pub fn network_allowed(&self) -> bool {
        self.network
    }

    /// The program and arguments that run `script` in `dir`.
    fn argv(&self, dir: &Path, script: &str) -> Vec<String> {
        let sh = ["sh".to_owned(), "-c".to_owned(), script.to_owned()];
        if self.mode == SandboxMode::None {
            return sh.into();
        }
        let mut argv: Vec<String> = [
            "--die-with-parent",
            "--new-session",
            "--unshare-user-try",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--cap-drop",
            "ALL",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/tmp",
        ]
        .map(str::to_owned)
        .into();
        if !self.network {
            argv.push("--unshare-net".into());
        }
        let mut mounts = self.mounts(dir);
        mounts.sort_by_key(|m| m.dest().components().count());
        let s = |p: &Path| p.to_string_lossy().into_owned();
        for m in &mounts {
            match m {
                Mount::HideDir(d) => argv.extend(["--tmpfs".into(), s(d)]),
                Mount::HideFile(f) => argv.extend(["--ro-bind".into(), "/dev/null".into(), s(f)]),
                Mount::ReadOnly(src, d) => argv.extend(["--ro-bind".into(), s(src), s(d)]),
                Mount::Writable(d) => argv.extend(["--bind".into(), s(d), s(d)]),
            }
        }
        // Remounted read-only last: their mount points inside had to be created first.
        for m in &mounts {
            if let Mount::HideDir(d) = m {
                argv.extend(["--remount-ro".into(), s(d)]);
            }
        }
        argv.extend(["--chdir".into(), s(dir), "--".into()]);
        argv.extend(self.prlimit());
        argv.extend(sh);
        argv
    }

    fn mounts(&self, dir: &Path) -> Vec<Mount> {
        let mut mounts = Vec::new();
        for path in &self.hidden {
            // Canonical, so bwrap mounts over the real place; a missing path holds nothing.
            let Ok(real) = path.canonicalize() else { continue };
            let Ok(meta) = std::fs::metadata(&real) else { continue };
            mounts.push(if meta.is_dir() { Mount::HideDir(real) } else { Mount::HideFile(real) });
        }
        for (src, dest) in &self.read_only {
            if src.exists() {
                mounts.push(Mount::ReadOnly(src.clone(), dest.clone()));
            }
        }
        mounts.extend(self.writable.iter().filter_map(|p| p.canonicalize().ok()).map(Mount::Writable));
        mounts.push(Mount::Writable(dir.to_path_buf()));
        mounts
    }

    fn prlimit(&self) -> Vec<String> {
        let l = &self.limits;
        let set: Vec<String> =
            [("cpu", l.cpu_secs), ("as", l.memory_bytes), ("nproc", l.processes), ("fsize", l.file_size_bytes)]
                .into_iter()
                .filter(|(_, v)| *v > 0)
                .map(|(name, v)| format!("--{name}={v}"))
                .collect();
        if set.is_empty() {
            return set;
        }
        let mut argv = vec!["prlimit".to_owned()];
        argv.extend(set);
        argv.push("--".into());
        argv
    }

    /// The process that runs `script` in `dir`, environment not set yet.
    pub(super) fn command(&self, dir: &Path, script: &str) -> Command {
        let argv = self.argv(dir, script);
        let mut cmd = match self.mode {
            SandboxMode::None => Command::new(&argv[0]),
            SandboxMode::Bubblewrap => Command::new(&self.bwrap),
        };
        let args = if self.mode == SandboxMode::None { &argv[1..] } else { &argv[..] };
        cmd.args(args).current_dir(dir);
        cmd
    }
}

/// Checks that commands can run as configured: `bwrap` is there and can create its sandbox
/// here (user and pid namespaces work), with `prlimit` inside. A clear error naming the package
/// and the opt-out otherwise. The opt-out itself is logged as a warning.
pub async fn probe(config: &SandboxConfig) -> Result<(), Error> {
    if config.mode == SandboxMode::None {
        tracing::warn!(
            "commands run WITHOUT a sandbox (sandbox = \"none\"): a bead's command can read the agent's \
             environment and files, reach the network and leave processes behind"
        );
        return Ok(());
    }
    let opt_out = "or, on a machine without user namespaces, run commands unsandboxed with \
                   `[agent] sandbox = \"none\"` (`--sandbox none`)";
    let dir = std::env::temp_dir();
    let limits = CommandLimits { timeout: Duration::from_secs(30), output_cap: 4096 };
    match run_command(&Isolation::new(config), &dir, "true", &limits, &[]).await {
        Ok(out) if out.success() => {
            if is_root() && config.limits.processes > 0 {
                tracing::warn!(
                    "the agent runs as root: the kernel does not apply the sandbox's process limit to root; \
                     run the agent as an unprivileged user for it to hold"
                );
            }
            Ok(())
        }
        Ok(out) => Err(Error::Config(format!(
            "commands run in a bubblewrap sandbox, but {} cannot create one here ({}: {}); {opt_out}",
            config.bwrap.display(),
            out.status_line(),
            out.output.trim()
        ))),
        Err(Error::Io { source, .. }) => Err(Error::Config(format!(
            "commands run in a bubblewrap sandbox, but {} cannot be started ({source}): install it \
             (Debian/Ubuntu: `apt-get install bubblewrap`), {opt_out}",
            config.bwrap.display()
        ))),
        Err(other) => Err(other),
    }
}

/// Whether this process runs as root (the owner of `/proc/self` is the effective user).
pub(crate) fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandboxed() -> Isolation {
        Isolation::new(&SandboxConfig::default())
    }

    #[test]
    fn mounts_go_shallowest_first_and_hidden_directories_become_read_only() {
        let state = tempfile::tempdir().unwrap();
        let wt = state.path().join("work/p/worktrees/p-1");
        std::fs::create_dir_all(&wt).unwrap();
        std::fs::write(state.path().join("key"), "k").unwrap();
        let state = state.path().canonicalize().unwrap();
        let wt = wt.canonicalize().unwrap();
        let argv = sandboxed().hide(state.join("work")).hide(&state).hide(state.join("key")).argv(&wt, "make");
        let at = |flag: &str, path: &Path| {
            let p = path.to_string_lossy();
            argv.windows(2).position(|w| w[0] == flag && w[1] == p).unwrap_or_else(|| panic!("{flag} {p}: {argv:?}"))
        };
        assert!(at("--tmpfs", &state) < at("--tmpfs", &state.join("work")));
        assert!(at("--tmpfs", &state.join("work")) < at("--bind", &wt));
        assert!(at("--ro-bind", Path::new("/dev/null")) < at("--bind", &wt), "{argv:?}");
        assert!(at("--bind", &wt) < at("--remount-ro", &state));
        assert!(argv.contains(&"--unshare-net".to_owned()) && argv.contains(&"--unshare-pid".to_owned()));
        assert!(argv.ends_with(&["sh".into(), "-c".into(), "make".into()]));
        assert!(argv.iter().any(|a| a.starts_with("--nproc=")), "{argv:?}");
        assert!(!sandboxed().network(true).argv(&wt, "x").contains(&"--unshare-net".to_owned()));
        assert_eq!(Isolation::none().argv(&wt, "make"), ["sh", "-c", "make"]);
    }

    #[tokio::test]
    async fn a_missing_bwrap_is_a_clear_error_naming_the_package_and_the_opt_out() {
        let config = SandboxConfig { bwrap: "/nonexistent/bwrap".into(), ..SandboxConfig::default() };
        let err = probe(&config).await.unwrap_err().to_string();
        assert!(err.contains("apt-get install bubblewrap") && err.contains("sandbox = \"none\""), "{err}");
        assert!(probe(&SandboxConfig::default()).await.is_ok(), "bwrap works on this machine (scripts/test.sh)");
        assert!(probe(&SandboxConfig { mode: SandboxMode::None, ..config }).await.is_ok());
    }
}
