//! Running a command for a task: `sh -c` in its own process group, a scrubbed environment
//! (PATH, HOME = the working directory, LANG — never the agent's own variables or secrets), a
//! timeout that kills the whole group, and an output cap that keeps the head and the tail.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::Error;
use crate::config::CommandLimits;

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

/// Runs `script` with `sh -c` in `dir`. Fails only if it cannot be started; a non-zero exit or
/// a timeout is reported in the output.
pub async fn run_command(dir: &Path, script: &str, limits: &CommandLimits) -> Result<CommandOutput, Error> {
    run_command_with(dir, script, limits, &[]).await
}

/// [`run_command`] with extra environment variables (the task's ids), set after the scrub.
pub async fn run_command_with(
    dir: &Path,
    script: &str,
    limits: &CommandLimits,
    env: &[(&str, &str)],
) -> Result<CommandOutput, Error> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).current_dir(dir);
    scrubbed_env(&mut cmd, dir);
    cmd.envs(env.iter().copied());
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).kill_on_drop(true);
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| Error::io("starting sh", e))?;
    // Killing the group on drop also covers a task that is cancelled while the command runs.
    let group = ProcessGroup(child.id());
    let buffer = Arc::new(Mutex::new(Capped::new(limits.output_cap)));
    let readers = [
        child.stdout.take().map(|s| tokio::spawn(pump(s, buffer.clone()))),
        child.stderr.take().map(|s| tokio::spawn(pump(s, buffer.clone()))),
    ];
    let status = tokio::select! {
        status = child.wait() => Some(status.map_err(|e| Error::io("waiting for sh", e))?),
        _ = tokio::time::sleep(limits.timeout) => None,
    };
    // Also reaps background processes the script left holding the pipes.
    group.kill();
    let timed_out = status.is_none();
    let status = match status {
        Some(s) => s,
        None => child.wait().await.map_err(|e| Error::io("waiting for sh", e))?,
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

    #[tokio::test]
    async fn runs_with_a_scrubbed_environment() {
        let dir = tempfile::tempdir().unwrap();
        let kept = ["PATH", "HOME", "LANG", "PWD", "SHLVL", "_", "OLDPWD"];
        let (name, _) = std::env::vars()
            .find(|(k, _)| !kept.contains(&k.as_str()) && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            .expect("the test process has some variable besides PATH/HOME");
        let script = format!("echo \"home=$HOME leaked=${{{name}-unset}}\"; exit 3");
        let out = run_command(dir.path(), &script, &limits(5000, 4096)).await.unwrap();
        assert_eq!(out.code, Some(3));
        assert!(out.output.contains(&format!("home={}", dir.path().display())), "{}", out.output);
        assert!(out.output.contains("leaked=unset"), "{name} leaked into the command: {}", out.output);
    }

    #[tokio::test]
    async fn kills_the_whole_group_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let out = run_command(dir.path(), "sleep 60 & sleep 60; echo never", &limits(300, 4096)).await.unwrap();
        assert!(out.timed_out && !out.success(), "{out:?}");
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
        assert!(!out.output.contains("never"));
    }

    #[tokio::test]
    async fn caps_output_keeping_head_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let out = run_command(
            dir.path(),
            "echo START; head -c 100000 /dev/zero | tr '\\0' x; echo; echo END",
            &limits(5000, 2048),
        )
        .await
        .unwrap();
        assert!(out.success());
        assert!(out.output.starts_with("START"), "{}", &out.output[..50]);
        assert!(out.output.trim_end().ends_with("END"));
        assert!(out.output.contains("bytes truncated"));
        assert!(out.output.len() < 2200, "{}", out.output.len());
    }
}
