//! [`PgCluster`]: a private PostgreSQL cluster (`initdb` + `pg_ctl`) on its own port and
//! directory.

mod tools;

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;
use tokio::time::Instant;

use self::tools::{PG_USER, Tools};
use crate::process::{self, POLL, log_tail};
use crate::{Error, Result, free_port};

const SERVER: &str = "PostgreSQL";
/// How long a start (including crash recovery after an immediate stop) may take.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A PostgreSQL cluster this process created with `initdb` in a temporary directory under
/// `/tmp`, listening on 127.0.0.1 and a port of its own (and a Unix socket in that directory),
/// with `trust` authentication for the `postgres` superuser and `fsync=off`.
///
/// When this process is root, every PostgreSQL command runs as the `postgres` user, which owns
/// the directory. Stopping and restarting keep the port and the data directory; dropping it
/// stops the server (immediate shutdown) and removes the directory.
#[derive(Debug)]
pub struct PgCluster {
    tools: Tools,
    port: u16,
    dir: TempDir,
    running: bool,
}

impl PgCluster {
    /// Creates a cluster and starts it, waiting until it accepts connections.
    ///
    /// The binaries are taken from `$LOOM_PG_BINDIR` if set, else `pg_config --bindir`, else the
    /// highest `/usr/lib/postgresql/*/bin` holding `initdb`.
    pub async fn start() -> Result<PgCluster> {
        let tools = Tools::find().await?;
        let dir = cluster_dir(&tools).await?;
        let mut cluster = PgCluster { tools, port: free_port(), dir, running: false };
        cluster.initdb().await?;
        cluster.start_again().await?;
        Ok(cluster)
    }

    /// The connection URL, `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://{PG_USER}@127.0.0.1:{}/postgres", self.port)
    }

    /// The port the server listens on, the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (`-D`), the same across restarts.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log (`pg_ctl -l`, appended across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// Stops the server with a fast shutdown (clients disconnected, a clean checkpoint) and
    /// waits for it to exit. Does nothing if it is not running.
    pub async fn stop_fast(&mut self) -> Result<()> {
        self.stop("fast").await
    }

    /// Stops the server with an immediate shutdown (no checkpoint: the next start runs crash
    /// recovery) and waits for it to exit. Does nothing if it is not running.
    pub async fn stop_immediate(&mut self) -> Result<()> {
        self.stop("immediate").await
    }

    /// Starts the stopped server again on the same port and data directory, and waits until
    /// `pg_isready` succeeds (30 s at most).
    pub async fn start_again(&mut self) -> Result<()> {
        if self.running {
            return Err(Error::AlreadyRunning { server: SERVER, port: self.port });
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        // Counted as running from here on, so a failed start is still stopped (here or on drop).
        self.running = true;
        let started = match self.pg_ctl_start().await {
            Ok(()) => self.wait_ready(deadline).await,
            Err(err) => Err(err),
        };
        if started.is_err() {
            self.stop("immediate").await.ok();
        }
        started
    }

    /// Stops the server with a fast shutdown and starts it again.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop_fast().await?;
        self.start_again().await
    }

    async fn initdb(&self) -> Result<()> {
        let data = self.data_dir().display().to_string();
        // Synchronous writes buy nothing in a throwaway cluster; the C locale exists everywhere.
        let args = ["-A", "trust", "-U", PG_USER, "-E", "UTF8", "--locale=C", "--no-sync", "-D", &data];
        self.run("initdb", &args).await
    }

    async fn pg_ctl_start(&self) -> Result<()> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().join("sock").display()
        );
        let data = self.data_dir().display().to_string();
        let log = self.log_path().display().to_string();
        let timeout = READY_TIMEOUT.as_secs().to_string();
        let args = ["-D", &data, "-l", &log, "-w", "-t", &timeout, "-o", &options, "start"];
        self.run("pg_ctl", &args).await.map_err(|err| self.start_error(err.to_string()))
    }

    async fn wait_ready(&self, deadline: Instant) -> Result<()> {
        loop {
            if self.is_ready().await? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let reason = format!("pg_isready did not succeed within {READY_TIMEOUT:?}");
                return Err(self.start_error(reason));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn is_ready(&self) -> Result<bool> {
        let port = self.port.to_string();
        let status = tokio::process::Command::new(self.tools.program("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port, "-t", "2"])
            .status()
            .await
            .map_err(|err| Error::io("run pg_isready", err))?;
        Ok(status.success())
    }

    async fn stop(&mut self, mode: &str) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        self.run("pg_ctl", &self.stop_args(mode)).await?;
        self.running = false;
        Ok(())
    }

    fn stop_args(&self, mode: &str) -> Vec<String> {
        let data = self.data_dir().display().to_string();
        let timeout = READY_TIMEOUT.as_secs().to_string();
        ["-D", &data, "-m", mode, "-w", "-t", &timeout, "stop"].map(str::to_owned).to_vec()
    }

    /// Runs PostgreSQL program `name` (as a user it accepts) and checks that it succeeded.
    async fn run(&self, name: &str, args: &[impl AsRef<str>]) -> Result<()> {
        let args: Vec<String> = args.iter().map(|arg| arg.as_ref().to_owned()).collect();
        let mut command = tokio::process::Command::from(self.tools.command(self.dir.path(), name, &args));
        let output = command.output().await.map_err(|err| Error::io(format!("run {name}"), err))?;
        process::check(&format!("{name} {}", args.join(" ")), &output)
    }

    fn start_error(&self, reason: String) -> Error {
        Error::Start { server: SERVER, port: self.port, reason, log_tail: log_tail(&self.log_path()) }
    }

    /// The pid in the postmaster's pid file: the server this cluster started, if any.
    fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        let stopped = self
            .tools
            .command(self.dir.path(), "pg_ctl", &self.stop_args("immediate"))
            .output()
            .is_ok_and(|output| output.status.success());
        // If pg_ctl could not do it, SIGQUIT (PostgreSQL's immediate shutdown) goes to the
        // postmaster of this cluster's own data directory, so the server does not outlive it.
        if let (false, Some(pid)) = (stopped, self.postmaster_pid()) {
            tracing::warn!(port = self.port, pid, "pg_ctl stop failed; sending SIGQUIT to the postmaster");
            std::process::Command::new("kill").args(["-QUIT", &pid.to_string()]).status().ok();
        }
    }
}

/// A fresh directory under `/tmp` that the user running PostgreSQL can use: mode 0755, with a
/// `sock` subdirectory for the Unix socket, owned by `postgres` when this process is root.
async fn cluster_dir(tools: &Tools) -> Result<TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("loom-pg-")
        .tempdir_in("/tmp")
        .map_err(|err| Error::io("create a temporary directory for PostgreSQL under /tmp", err))?;
    let path = dir.path();
    std::fs::set_permissions(path, Permissions::from_mode(0o755))
        .map_err(|err| Error::io(format!("chmod 0755 {}", path.display()), err))?;
    std::fs::create_dir(path.join("sock")).map_err(|err| Error::io(format!("create {}/sock", path.display()), err))?;
    if tools.as_root() {
        let path = path.display().to_string();
        let output = tokio::process::Command::new("chown")
            .args(["-R", PG_USER, &path])
            .output()
            .await
            .map_err(|err| Error::io("run chown", err))?;
        process::check(&format!("chown -R {PG_USER} {path}"), &output)?;
    }
    Ok(dir)
}
