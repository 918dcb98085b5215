//! Running a command for a task: `sh -c` in a bubblewrap sandbox (or, opted out, directly),
//! in its own process group, with a scrubbed environment (PATH, HOME = the working directory,
//! LANG, and what the caller adds — never the agent's own variables or secrets), a timeout that
//! kills everything the command started, and an output cap that keeps the head and the tail.
//!
//! The sandbox ([`Isolation`]) is `bwrap` with: the root bound read-only; `/dev` and `/proc`
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
//!
//! The timeout kills the process group of `bwrap`; the sandbox's init dies with it
//! (`--die-with-parent`), and with the pid namespace's init every process inside dies, so a
//! `setsid` or a double fork cannot outlive the command. For the same reason a background
//! process a command leaves behind dies when the command ends.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::Error;
use crate::config::{CommandLimits, ResourceLimits, SandboxConfig, SandboxMode};

/// What a command did.
#[derive(Clone, Debug)]
pub struct CommandOutput {
    /// Exit code; `None` when killed by a signal or at the timeout.
    pub code: Option<i32>,
    /// stdout and stderr interleaved as read, capped.
    pub output: String,
    pub timed_out: bool,
    pub duration: Duration,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }

    /// One line for a report: `exit 0`, `exit 2`, `killed after 5s (timeout)`.
    pub fn status_line(&self) -> String {
        match (self.timed_out, self.code) {
            (true, _) => format!("killed after {:?} (timeout)", self.duration),
            (false, Some(code)) => format!("exit {code}"),
            (false, None) => "killed by a signal".to_owned(),
        }
    }
}

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

    fn command(&self, dir: &Path, script: &str) -> Command {
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

/// The environment every command gets: nothing inherited except a sane PATH.
pub(crate) fn scrubbed_env(cmd: &mut Command, home: &Path) {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned());
    cmd.env_clear().env("PATH", path).env("HOME", home).env("LANG", "C.UTF-8");
}

/// Runs `script` with `sh -c` in `dir`, isolated as `isolation` says, with extra environment
/// variables (the task's ids) set after the scrub. Fails only if it cannot be started; a
/// non-zero exit or a timeout is reported in the output.
pub async fn run_command(
    isolation: &Isolation,
    dir: &Path,
    script: &str,
    limits: &CommandLimits,
    env: &[(&str, &str)],
) -> Result<CommandOutput, Error> {
    let mut cmd = isolation.command(dir, script);
    scrubbed_env(&mut cmd, dir);
    cmd.envs(env.iter().copied());
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).kill_on_drop(true);
    let started = Instant::now();
    let what = if isolation.mode == SandboxMode::None { "sh" } else { "bwrap" };
    let mut child = cmd.spawn().map_err(|e| Error::io(format!("starting {what}"), e))?;
    // Killing the group on drop also covers a task that is cancelled while the command runs.
    let group = ProcessGroup(child.id());
    let buffer = Arc::new(Mutex::new(Capped::new(limits.output_cap)));
    let readers = [
        child.stdout.take().map(|s| tokio::spawn(pump(s, buffer.clone()))),
        child.stderr.take().map(|s| tokio::spawn(pump(s, buffer.clone()))),
    ];
    let status = tokio::select! {
        status = child.wait() => Some(status.map_err(|e| Error::io(format!("waiting for {what}"), e))?),
        _ = tokio::time::sleep(limits.timeout) => None,
    };
    // Also reaps background processes the script left holding the pipes.
    group.kill();
    let timed_out = status.is_none();
    let status = match status {
        Some(s) => s,
        None => child.wait().await.map_err(|e| Error::io(format!("waiting for {what}"), e))?,
    };
    for reader in readers.into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
    }
    let output = buffer.lock().unwrap_or_else(|p| p.into_inner()).render();
    Ok(CommandOutput { code: status.code(), output, timed_out, duration: started.elapsed() })
}

async fn pump(mut source: impl AsyncRead + Unpin, sink: Arc<Mutex<Capped>>) {
    let mut chunk = vec![0u8; 8192];
    while let Ok(n) = source.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        sink.lock().unwrap_or_else(|p| p.into_inner()).push(&chunk[..n]);
    }
}

/// A process group, killed with SIGKILL when asked or dropped.
struct ProcessGroup(Option<u32>);

impl ProcessGroup {
    fn kill(&self) {
        if let Some(pid) = self.0 {
            // `kill` the utility, not libc: this crate forbids unsafe code.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Keeps the first and last `cap / 2` bytes of a stream and counts what was cut.
#[derive(Debug)]
pub(crate) struct Capped {
    cap: usize,
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    cut: usize,
}

impl Capped {
    pub(crate) fn new(cap: usize) -> Capped {
        Capped { cap, head: Vec::new(), tail: Default::default(), cut: 0 }
    }

    pub(crate) fn push(&mut self, mut bytes: &[u8]) {
        let half = self.cap / 2;
        let room = half.saturating_sub(self.head.len());
        let take = room.min(bytes.len());
        self.head.extend_from_slice(&bytes[..take]);
        bytes = &bytes[take..];
        self.tail.extend(bytes);
        let excess = self.tail.len().saturating_sub(self.cap - half);
        self.tail.drain(..excess);
        self.cut += excess;
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::from_utf8_lossy(&self.head).into_owned();
        if self.cut > 0 {
            out.push_str(&format!("\n…[{} bytes truncated]…\n", self.cut));
        }
        let (a, b) = self.tail.as_slices();
        out.push_str(&String::from_utf8_lossy(&[a, b].concat()));
        out
    }
}

/// Caps a string the same way (for file contents and diffs shown to the model).
pub(crate) fn cap_text(text: &str, cap: usize) -> String {
    let mut c = Capped::new(cap);
    c.push(text.as_bytes());
    c.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(timeout_ms: u64, cap: usize) -> CommandLimits {
        CommandLimits { timeout: Duration::from_millis(timeout_ms), output_cap: cap }
    }

    fn sandboxed() -> Isolation {
        Isolation::new(&SandboxConfig::default())
    }

    async fn run(isolation: &Isolation, dir: &Path, script: &str, timeout_ms: u64) -> CommandOutput {
        run_command(isolation, dir, script, &limits(timeout_ms, 64 * 1024), &[]).await.unwrap()
    }

    #[tokio::test]
    async fn runs_with_a_scrubbed_environment() {
        let dir = tempfile::tempdir().unwrap();
        let kept = ["PATH", "HOME", "LANG", "PWD", "SHLVL", "_", "OLDPWD"];
        let (name, _) = std::env::vars()
            .find(|(k, _)| !kept.contains(&k.as_str()) && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            .expect("the test process has some variable besides PATH/HOME");
        let script = format!("echo \"home=$HOME leaked=${{{name}-unset}} task=$LOOM_BEAD_ID\"; exit 3");
        for isolation in [Isolation::none(), sandboxed()] {
            let out =
                run_command(&isolation, dir.path(), &script, &limits(5000, 4096), &[("LOOM_BEAD_ID", "p-1")]).await;
            let out = out.unwrap();
            assert_eq!(out.code, Some(3), "{out:?}");
            assert!(out.output.contains(&format!("home={}", dir.path().display())), "{}", out.output);
            assert!(out.output.contains("leaked=unset"), "{name} leaked into the command: {}", out.output);
            assert!(out.output.contains("task=p-1"), "{}", out.output);
        }
    }

    #[tokio::test]
    async fn kills_the_whole_group_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        for isolation in [Isolation::none(), sandboxed()] {
            let started = Instant::now();
            let out = run(&isolation, dir.path(), "sleep 60 & sleep 60; echo never", 300).await;
            assert!(out.timed_out && !out.success(), "{out:?}");
            assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
            assert!(!out.output.contains("never"));
        }
    }

    #[tokio::test]
    async fn caps_output_keeping_head_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let script = "echo START; head -c 100000 /dev/zero | tr '\\0' x; echo; echo END";
        let out = run_command(&sandboxed(), dir.path(), script, &limits(5000, 2048), &[]).await.unwrap();
        assert!(out.success(), "{out:?}");
        assert!(out.output.starts_with("START"), "{}", &out.output[..50]);
        assert!(out.output.trim_end().ends_with("END"));
        assert!(out.output.contains("bytes truncated"));
        assert!(out.output.len() < 2200, "{}", out.output.len());
    }

    /// A process of the agent's host holding a secret in its environment, like the agent does.
    struct SecretHolder(std::process::Child);

    impl SecretHolder {
        fn start(secret: &str) -> SecretHolder {
            let child = std::process::Command::new("sleep").arg("30").env("LOOM_LLM_API_KEY", secret).spawn();
            SecretHolder(child.unwrap())
        }
    }

    impl Drop for SecretHolder {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[tokio::test]
    async fn a_sandboxed_command_sees_no_agent_process_no_hidden_file_and_writes_only_its_worktree() {
        let secret = format!("sk-proc-{:x}", rand::random::<u64>());
        let _holder = SecretHolder::start(&secret);
        // Outside /tmp, which is private anyway: the hiding itself is under test.
        let state = tempfile::tempdir_in("/var/tmp").unwrap();
        std::fs::write(state.path().join("loom.sqlite"), &secret).unwrap();
        let key = tempfile::NamedTempFile::new_in("/var/tmp").unwrap();
        std::fs::write(key.path(), &secret).unwrap();
        // The worktree lives inside the hidden directory, as under `loom up`.
        let dir = state.path().join("work/p/worktrees/p-1");
        std::fs::create_dir_all(&dir).unwrap();
        let read = format!(
            "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep LOOM_LLM; \
             cat {db} {key} 2>&1; ls {state}; ls /proc | grep -c '^[0-9]' | sed 's/^/procs=/'; ",
            db = state.path().join("loom.sqlite").display(),
            key = key.path().display(),
            state = state.path().display(),
        );
        let script = format!(
            "{read} echo x > {state}/planted 2>/dev/null || echo state-read-only; \
             echo x > /etc/loom-planted 2>/dev/null || echo root-read-only; \
             echo x > /tmp/{scratch} && echo tmp-writable; echo mine > mine.txt",
            state = state.path().display(),
            scratch = secret,
        );
        let isolation = sandboxed().hide(state.path()).hide(key.path());
        let out = run(&isolation, &dir, &script, 10_000).await;
        assert!(!out.output.contains(&secret), "a secret leaked into the sandbox: {}", out.output);
        assert!(out.output.contains("procs="), "{}", out.output);
        let procs: u32 = out.output.split("procs=").nth(1).unwrap().trim().lines().next().unwrap().parse().unwrap();
        assert!(procs <= 8, "only the sandbox's own processes are visible, saw {procs}: {}", out.output);
        for want in ["state-read-only", "root-read-only", "tmp-writable"] {
            assert!(out.output.contains(want), "{want}: {}", out.output);
        }
        assert_eq!(std::fs::read_to_string(dir.join("mine.txt")).unwrap(), "mine\n", "the worktree is writable");
        assert!(!state.path().join("planted").exists() && !Path::new("/etc/loom-planted").exists());
        assert!(!Path::new("/tmp").join(&secret).exists(), "/tmp is private");

        // The same reads without the sandbox do see the secret: the test can fail.
        let out = run(&Isolation::none(), &dir, &read, 10_000).await;
        assert!(out.output.contains(&secret), "{}", out.output);
    }

    #[tokio::test]
    async fn setsid_and_double_forks_do_not_outlive_the_timeout_or_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let escapes = "setsid sh -c 'sleep 1; touch setsid.marker' & \
                       (sh -c 'sleep 1; touch fork.marker' &) ; \
                       nohup sh -c 'sleep 1; touch nohup.marker' >/dev/null 2>&1 &";
        let out = run(&sandboxed(), dir.path(), &format!("{escapes} sleep 30"), 300).await;
        assert!(out.timed_out, "{out:?}");
        let out = run(&sandboxed(), dir.path(), &format!("{escapes} exit 0"), 5000).await;
        assert!(out.success(), "{out:?}");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(left.is_empty(), "a process outlived its command: {left:?}");
    }

    #[tokio::test]
    async fn network_is_off_unless_allowed() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let probe = |port: u16| {
            format!(
                "bash -c 'echo > /dev/tcp/127.0.0.1/{port}' 2>/dev/null && echo open-{port} || echo closed-{port}; "
            )
        };
        let script = format!("{}{}", probe(port), probe(4222));
        let off = run(&sandboxed(), dir.path(), &script, 10_000).await;
        assert!(off.output.contains(&format!("closed-{port}")) && off.output.contains("closed-4222"), "{}", off.output);
        let on = run(&sandboxed().network(true), dir.path(), &probe(port), 10_000).await;
        assert!(
            on.output.contains(&format!("open-{port}")),
            "a project that allows it reaches the network: {}",
            on.output
        );
    }

    #[tokio::test]
    async fn resource_limits_hold_inside_the_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let config = SandboxConfig {
            limits: ResourceLimits { cpu_secs: 1, memory_bytes: 256 << 20, processes: 0, file_size_bytes: 1 << 20 },
            ..SandboxConfig::default()
        };
        let isolation = Isolation::new(&config);
        let out = run(&isolation, dir.path(), "head -c 3000000 /dev/zero > big.bin; echo rc=$?", 10_000).await;
        assert!(!out.output.contains("rc=0"), "{}", out.output);
        assert!(std::fs::metadata(dir.path().join("big.bin")).unwrap().len() <= 1 << 20);
        let started = Instant::now();
        let out = run(&isolation, dir.path(), "while :; do :; done", 20_000).await;
        assert!(!out.timed_out && !out.success(), "the CPU limit stops a busy loop: {out:?}");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        let out =
            run(&isolation, dir.path(), "x=$(head -c 400000000 /dev/zero | tr '\\0' a); echo survived", 20_000).await;
        assert!(!out.output.contains("survived"), "the memory limit stops a hog: {out:?}");
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
