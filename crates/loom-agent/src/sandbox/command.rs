//! Running a command for a task: `sh -c` through its [`Isolation`] (the bubblewrap sandbox, or
//! opted out, directly), in its own process group, with a scrubbed environment (PATH, HOME = the
//! working directory, LANG, and what the caller adds — never the agent's own variables or
//! secrets), a timeout that kills everything the command started, and an output cap that keeps
//! the head and the tail.
//!
//! The timeout kills the process group of `bwrap`; the sandbox's init dies with it
//! (`--die-with-parent`), and with the pid namespace's init every process inside dies, so a
//! `setsid` or a double fork cannot outlive the command. For the same reason a background
//! process a command leaves behind dies when the command ends.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::isolation::Isolation;
use crate::Error;
use crate::config::{CommandLimits, SandboxMode};

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
    let what = if isolation.mode() == SandboxMode::None { "sh" } else { "bwrap" };
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
    use crate::config::{ResourceLimits, SandboxConfig};

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
}
