//! [`NatsServer`]: a private `nats-server` with JetStream, on its own port and store directory.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::process::{self, POLL, find_program, is_executable, log_tail};
use crate::{Error, Result, free_port};

const SERVER: &str = "nats-server";
/// How long a start may take before it counts as failed.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a SIGTERM may take before the launcher escalates to SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one readiness probe may wait for the connection and the INFO line.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A `nats-server -js` this process started, on 127.0.0.1 and a port of its own, with its store in
/// a temporary directory. Stopping, killing and restarting keep the port and the store; dropping
/// it kills the server (by its pid) and removes the directory.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    version: String,
    port: u16,
    dir: TempDir,
    child: Option<Child>,
    /// A configuration file (`-c`) and the environment it reads (`$VAR` references).
    config: Option<(PathBuf, Vec<(OsString, OsString)>)>,
    /// The store is a tmpfs of this many bytes mounted by [`NatsServer::store_on_tmpfs`]
    /// (unmounted when dropped).
    tmpfs: Option<u64>,
}

impl NatsServer {
    /// Launches a server and waits until it greets clients with JetStream enabled.
    ///
    /// The binary is `$LOOM_NATS_SERVER` if set, else `nats-server` on `PATH`, else
    /// `/usr/sbin/nats-server`.
    pub async fn start() -> Result<NatsServer> {
        Self::launch(None).await
    }

    /// Like [`NatsServer::start`], with a configuration file (users, accounts, permissions) and
    /// the variables it reads. The port, address and store directory are still this server's
    /// own (flags override the file).
    pub async fn start_with_config(config: &Path, env: &[(&str, &str)]) -> Result<NatsServer> {
        let env = env.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))).collect();
        Self::launch(Some((config.to_path_buf(), env))).await
    }

    async fn launch(config: Option<(PathBuf, Vec<(OsString, OsString)>)>) -> Result<NatsServer> {
        let binary = binary(std::env::var_os("LOOM_NATS_SERVER"))?;
        let version = version_of(&binary).await?;
        let dir = tempfile::Builder::new()
            .prefix("loom-nats-")
            .tempdir()
            .map_err(|err| Error::io("create a temporary directory for nats-server", err))?;
        let mut server = NatsServer { binary, version, port: free_port(), dir, child: None, config, tmpfs: None };
        server.start_again().await?;
        Ok(server)
    }

    /// The client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on, the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The pid of the running server; `None` while it is stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The JetStream store directory (`-sd`), the same across restarts.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The server's log (stdout and stderr of every run, appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// The server's version as `nats-server --version` prints it, e.g. `v2.9.10`.
    pub fn version(&self) -> String {
        self.version.clone()
    }

    /// Stops the server gracefully (SIGTERM) and waits for it to exit, escalating to SIGKILL
    /// after 20 s. Does nothing if it is not running.
    pub async fn stop(&mut self) -> Result<()> {
        self.terminate("TERM").await
    }

    /// Crashes the server (SIGKILL) and waits for it to exit. Does nothing if it is not running.
    pub async fn kill(&mut self) -> Result<()> {
        self.terminate("KILL").await
    }

    /// Starts the stopped server again on the same port and store, and waits until it is ready.
    pub async fn start_again(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Err(Error::AlreadyRunning { server: SERVER, port: self.port });
        }
        self.child = Some(self.spawn()?);
        let ready = self.wait_ready().await;
        if ready.is_err() {
            // A server that failed to get ready is not left half-running; the start error is
            // the one worth reporting.
            self.kill().await.ok();
        }
        ready
    }

    /// Moves the store onto a tmpfs of `bytes` (stops the server, mounts, starts it again), so
    /// [`NatsServer::fill_store`] can fill its disk. Call it before anything is stored: what the
    /// store held is hidden under the mount. `Err` with the reason where mounting is not allowed
    /// (no root, no `CAP_SYS_ADMIN`); the server then runs on as it was.
    pub async fn store_on_tmpfs(&mut self, bytes: u64) -> Result<()> {
        self.stop().await?;
        let store = self.store_dir();
        std::fs::create_dir_all(&store).map_err(|err| Error::io("create the nats-server store dir", err))?;
        let output = tokio::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&store)
            .output()
            .await
            .map_err(|err| Error::io("run mount", err));
        let mounted = output.and_then(|o| process::check("mount -t tmpfs", &o));
        if mounted.is_ok() {
            self.tmpfs = Some(bytes);
        }
        self.start_again().await?;
        mounted
    }

    /// Fills the store's file system (a tmpfs from [`NatsServer::store_on_tmpfs`]) with a
    /// ballast file until a write fails for want of space; returns the bytes written.
    pub fn fill_store(&self) -> Result<u64> {
        if self.tmpfs.is_none() {
            return Err(Error::io("fill the nats-server store", std::io::Error::other("the store is not on a tmpfs")));
        }
        let mut file = File::create(self.ballast()).map_err(|err| Error::io("create the store ballast", err))?;
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0u64;
        loop {
            match std::io::Write::write(&mut file, &chunk) {
                Ok(0) | Err(_) => return Ok(written),
                Ok(n) => written += n as u64,
            }
        }
    }

    /// Removes the ballast of [`NatsServer::fill_store`]: the disk has room again.
    pub fn free_store(&self) -> Result<()> {
        match std::fs::remove_file(self.ballast()) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove the store ballast", err)),
            _ => Ok(()),
        }
    }

    /// Whether the running server greets clients with JetStream enabled (a server whose store
    /// ran out of space disables JetStream until restarted).
    pub async fn jetstream_enabled(&self) -> bool {
        answers_with_jetstream(self.port).await
    }

    /// Stops the server, removes the stored messages of `stream` (of the default account) and
    /// starts it again: the server has lost what it had acknowledged, and the stream restarts
    /// from sequence 0, as nats-server 2.9 does with a stream that failed a write on a full disk.
    /// Its consumers keep their state (2.9 keeps their positions past the stream's new end).
    pub async fn lose_stream_messages(&mut self, stream: &str) -> Result<()> {
        self.stop().await?;
        let msgs = self.store_dir().join("jetstream").join("$G").join("streams").join(stream).join("msgs");
        std::fs::remove_dir_all(&msgs).map_err(|err| Error::io(format!("remove {}", msgs.display()), err))?;
        self.start_again().await
    }

    /// How long the server's log is now, for [`NatsServer::store_failures_since`].
    pub fn log_len(&self) -> u64 {
        std::fs::metadata(self.log_path()).map_or(0, |m| m.len())
    }

    /// How many writes the server logged as failed to store ("JetStream failed to store a msg")
    /// after the log was `offset` bytes long. nats-server 2.10+ keeps failing every write to a
    /// stream whose store failed once, even once the disk has room again, until it restarts.
    pub fn store_failures_since(&self, offset: u64) -> usize {
        let Ok(log) = std::fs::read(self.log_path()) else { return 0 };
        let tail = log.get(usize::try_from(offset).unwrap_or(usize::MAX)..).unwrap_or_default();
        String::from_utf8_lossy(tail).lines().filter(|l| l.contains("failed to store a msg")).count()
    }

    fn ballast(&self) -> PathBuf {
        self.store_dir().join("ballast")
    }

    /// Stops the server gracefully and starts it again.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.start_again().await
    }

    fn spawn(&self) -> Result<Child> {
        let log = self.open_log()?;
        let log_err = log.try_clone().map_err(|err| Error::io("duplicate the nats-server log handle", err))?;
        let mut command = Command::new(&self.binary);
        if let Some((config, env)) = &self.config {
            command.arg("-c").arg(config).envs(env.iter().map(|(k, v)| (k, v)));
        }
        command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.store_dir())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|err| Error::io(format!("spawn {}", self.binary.display()), err))
    }

    fn open_log(&self) -> Result<File> {
        let path = self.log_path();
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|err| Error::io(format!("open {}", path.display()), err))
    }

    /// Polls until the port answers with an INFO line saying JetStream is on, the server exits,
    /// or [`READY_TIMEOUT`] passes.
    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.exit_status()? {
                return Err(self.start_error(format!("it exited with {status}")));
            }
            if answers_with_jetstream(self.port).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let reason = format!("no INFO line with \"jetstream\":true within {READY_TIMEOUT:?}");
                return Err(self.start_error(reason));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn exit_status(&mut self) -> Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => child.try_wait().map_err(|err| Error::io("wait for nats-server", err)),
            None => Ok(None),
        }
    }

    fn start_error(&self, reason: String) -> Error {
        Error::Start { server: SERVER, port: self.port, reason, log_tail: log_tail(&self.log_path()) }
    }

    /// Sends `signal` to the server and waits for it to exit, escalating to SIGKILL if it has
    /// not after [`STOP_TIMEOUT`].
    async fn terminate(&mut self, signal: &str) -> Result<()> {
        let port = self.port;
        // The child stays in `self` until it is reaped, so an error here leaves it to `Drop`.
        let Some(child) = self.child.as_mut() else { return Ok(()) };
        process::signal(child.id(), signal).await?;
        if process::wait_exit(child, STOP_TIMEOUT).await?.is_none() {
            tracing::warn!(port, pid = child.id(), "nats-server ignored SIG{signal}; killing it");
            child.kill().map_err(|err| Error::io("kill nats-server", err))?;
            child.wait().map_err(|err| Error::io("wait for nats-server", err))?;
        }
        self.child = None;
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // `Child::kill` signals this child's own pid; waiting reaps it before the store goes.
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
        if self.tmpfs.is_some() {
            // Lazily, so a file still open elsewhere does not keep the mount (and the temporary
            // directory under it) alive.
            let _ = std::process::Command::new("umount").arg("-l").arg(self.store_dir()).status();
        }
    }
}

/// The binary to run: `env` (the value of `LOOM_NATS_SERVER`) if given, else a search.
fn binary(env: Option<OsString>) -> Result<PathBuf> {
    if let Some(path) = env {
        let path = PathBuf::from(path);
        if is_executable(&path) {
            return Ok(path);
        }
        let hint = format!("LOOM_NATS_SERVER={} is not an executable file", path.display());
        return Err(Error::MissingBinary { program: SERVER, hint });
    }
    find_program(SERVER, &["/usr/sbin/nats-server"]).ok_or_else(|| Error::MissingBinary {
        program: SERVER,
        hint: "install it with `apt-get install nats-server`, or set LOOM_NATS_SERVER to its path".to_owned(),
    })
}

async fn version_of(binary: &Path) -> Result<String> {
    let output = tokio::process::Command::new(binary)
        .arg("--version")
        .output()
        .await
        .map_err(|err| Error::io(format!("run {} --version", binary.display()), err))?;
    process::check(&format!("{} --version", binary.display()), &output)?;
    Ok(parse_version(&String::from_utf8_lossy(&output.stdout)))
}

/// `nats-server: v2.9.10` → `v2.9.10`.
fn parse_version(text: &str) -> String {
    let line = text.trim();
    line.strip_prefix("nats-server:").unwrap_or(line).trim().to_owned()
}

/// Whether `port` accepts a connection and greets it with an INFO line with JetStream enabled.
async fn answers_with_jetstream(port: u16) -> bool {
    let greeting = async {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await.ok()?;
        Some(line)
    };
    match timeout(PROBE_TIMEOUT, greeting).await {
        Ok(Some(line)) => line.starts_with("INFO ") && line.contains("\"jetstream\":true"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_drops_the_program_name() {
        assert_eq!(parse_version("nats-server: v2.9.10\n"), "v2.9.10");
        assert_eq!(parse_version("v2.10.1"), "v2.10.1");
    }

    #[test]
    fn a_bad_override_names_the_variable() {
        let err = binary(Some("/no/such/nats-server".into())).unwrap_err();
        assert!(matches!(err, Error::MissingBinary { .. }));
        assert!(err.to_string().contains("LOOM_NATS_SERVER=/no/such/nats-server"), "{err}");
    }
}
