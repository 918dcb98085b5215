//! Process plumbing shared by the launchers: finding programs, signalling a child by its pid,
//! waiting for it to exit and reading the end of its log.

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Output};
use std::time::Duration;

use tokio::time::Instant;

use crate::{Error, Result};

/// How often a wait loop looks again.
pub(crate) const POLL: Duration = Duration::from_millis(25);

/// Lines of a server's log quoted in a start error.
const LOG_TAIL_LINES: usize = 30;

/// The first executable `name` in a `PATH` directory, else the first of `fallbacks` that exists.
pub(crate) fn find_program(name: &str, fallbacks: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .chain(fallbacks.iter().map(PathBuf::from))
        .find(|candidate| is_executable(candidate))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Sends `signal` (`TERM`, `KILL`, `QUIT`, …) to `pid` with the `kill` command.
///
/// Callers pass only pids of processes they started and have not reaped, so the pid cannot have
/// been reused by an unrelated process.
pub(crate) async fn signal(pid: u32, signal: &str) -> Result<()> {
    let output = tokio::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .output()
        .await
        .map_err(|err| Error::io(format!("run `kill -{signal} {pid}`"), err))?;
    check(&format!("kill -{signal} {pid}"), &output)
}

/// Waits up to `timeout` for `child` to exit; `None` if it is still running.
pub(crate) async fn wait_exit(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().map_err(|err| Error::io("wait for a child", err))? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `Ok` if the command succeeded, else an [`Error::Command`] quoting its output.
pub(crate) fn check(command: &str, output: &Output) -> Result<()> {
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Err(Error::Command {
        command: command.to_owned(),
        status: output.status.to_string(),
        output: text.trim().to_owned(),
    })
}

/// The last lines of the log at `path`, or a note saying why there are none.
pub(crate) fn log_tail(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => tail(&String::from_utf8_lossy(&bytes), LOG_TAIL_LINES),
        Err(err) => format!("(no log at {}: {err})", path.display()),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a\nb", 5), "a\nb");
        assert_eq!(tail("", 3), "");
    }

    #[test]
    fn find_program_uses_path_then_fallbacks() {
        assert!(find_program("sh", &[]).is_some());
        assert_eq!(find_program("no-such-program-loom", &["/bin/sh"]), Some(PathBuf::from("/bin/sh")));
        assert_eq!(find_program("no-such-program-loom", &["/no/such/file"]), None);
    }
}
