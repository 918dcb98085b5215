//! The cluster a fault run starts and kills: its own nats-server and PostgreSQL (loom-faults),
//! the fault proxy in front of the database service, and Loom's services as separate processes
//! of this very binary: `serve db`, two `serve control-plane` (one on PostgreSQL directly, one
//! through the database service behind the proxy) and N `serve agent`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use loom_faults::{NatsServer, PgCluster, Proxy, free_port};

/// The bead lease of every control plane of the run.
pub(super) const LEASE: Duration = Duration::from_secs(30);

/// The size of the tmpfs NATS's store lives on (memory only as it fills): JetStream takes 75 %
/// of it as its file store limit, which must cover the events stream's 1 GiB `max_bytes`
/// reservation; filling it takes a second or two.
const NATS_STORE_BYTES: u64 = 1536 << 20;

/// The settings every Loom process of the run gets, as `LOOM_*` variables. A short lease and
/// backoff so a killed agent's bead comes back within the run; a budget of attempts that a bead
/// hit by a few faults does not spend, while an always-failing one does.
const DISPATCH: &[(&str, &str)] = &[
    ("LOOM_DISPATCH__MAX_ATTEMPTS", "4"),
    ("LOOM_DISPATCH__RETRY_BACKOFF_SECS", "1"),
    ("LOOM_INSECURE_NO_AUTH", "true"),
];

/// One Loom process: how to start it again, and the running child.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    exe: PathBuf,
    cwd: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Service {
    fn new(name: &str, exe: &Path, dir: &Path, args: &[&str], env: Vec<(String, String)>) -> Service {
        Service {
            name: name.to_owned(),
            exe: exe.to_owned(),
            cwd: dir.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env,
            log: dir.join(format!("{name}.log")),
            child: None,
        }
    }

    /// Starts the process (its output appended to `{name}.log`), with none of the caller's
    /// `LOOM_*` variables.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = Command::new(&self.exe);
        cmd.args(&self.args).current_dir(&self.cwd).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("LOOM_") {
                cmd.env_remove(name);
            }
        }
        cmd.env("RUST_LOG", "info").envs(self.env.iter().map(|(k, v)| (k, v)));
        self.child = Some(cmd.spawn().with_context(|| format!("starting {}", self.name))?);
        Ok(())
    }

    /// SIGKILL, by the pid of the child this run started, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// SIGTERM and wait (up to 30 s, then SIGKILL).
    pub async fn stop(&mut self) {
        let Some(child) = self.child.as_mut() else { return };
        let pid = child.id().to_string();
        let _ = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                self.child = None;
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the child this run started, if it runs.
    pub async fn signal(&mut self, signal: &str) {
        if let Some(child) = &self.child {
            let pid = child.id().to_string();
            let _ = tokio::process::Command::new("kill").args([format!("-{signal}"), pid]).status().await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn log(&self) -> &Path {
        &self.log
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Everything a run started; dropping it stops it all.
#[derive(Debug)]
pub struct Cluster {
    pub nats: NatsServer,
    pub pg: PgCluster,
    /// Between the second control plane and the database service.
    pub proxy: Proxy,
    /// Between the agents and nats-server (the control planes connect directly).
    pub nats_proxy: Proxy,
    /// Whether NATS's store is on a small tmpfs the disk-full fault can fill (else why not).
    pub nats_disk: Result<(), String>,
    pub db: Service,
    pub db_addr: SocketAddr,
    /// `[0]` on PostgreSQL directly, `[1]` through the database service (behind the proxy).
    pub control_planes: Vec<Service>,
    pub cp_urls: Vec<String>,
    pub agents: Vec<Service>,
}

pub const PROJECT: &str = "faults";

impl Cluster {
    /// Starts NATS, PostgreSQL, the database service, the proxy and both control planes, and
    /// registers the project; the agents are made but not started (see [`Cluster::start_agents`]).
    /// `effects` is the side-effect log the beads' commands append to: created here, and the
    /// one path outside their worktrees the agents' sandbox lets them write.
    pub async fn start(dir: &Path, effects: &Path, agents: usize, slots: usize) -> anyhow::Result<Cluster> {
        std::fs::OpenOptions::new().create(true).append(true).open(effects).context("creating the effect log")?;
        let writable = format!("[{:?}]", effects.display().to_string());
        let exe = std::env::current_exe().context("the path of this loom binary")?;
        let mut nats = NatsServer::start().await?;
        // Before anything is stored: the store moves onto a tmpfs the disk-full fault can fill.
        let nats_disk = nats.store_on_tmpfs(NATS_STORE_BYTES).await.map_err(|e| e.to_string());
        let nats_proxy = Proxy::start(([127, 0, 0, 1], nats.port()).into()).await?;
        let agent_nats = format!("nats://{}", nats_proxy.addr());
        let pg = PgCluster::start().await?;
        let db_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        // The control planes sign tasks with this key; the agents get its public half only.
        let (signing_pem, signing) = loom_bus::SigningKey::generate_pem();
        let (signing_key, verify_key) = (dir.join("task-signing.pem"), dir.join("task-verify.pem"));
        crate::certs::write_private(&signing_key, signing_pem.as_bytes())?;
        std::fs::write(&verify_key, signing.verify_key().to_pem())?;
        let common = |extra: &[(&str, String)]| -> Vec<(String, String)> {
            let mut env: Vec<(String, String)> = DISPATCH.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
            env.push(("LOOM_DISPATCH__LEASE_SECS".into(), LEASE.as_secs().to_string()));
            env.push(("LOOM_NATS_URL".into(), nats.url()));
            env.push(("LOOM_BUS__TASK_VERIFY_KEY".into(), verify_key.display().to_string()));
            env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
            env
        };
        let listen = db_addr.to_string();
        // Its own metrics port too: never the default one another service on the host may hold.
        let metrics = format!("127.0.0.1:{}", free_port());
        let mut db = Service::new(
            "db",
            &exe,
            dir,
            &["serve", "db", "--listen", &listen, "--metrics-addr", &metrics],
            common(&[("LOOM_DATABASE_URL", pg.url())]),
        );
        db.spawn()?;
        wait_port(db_addr, &mut db).await?;
        let proxy = Proxy::start(db_addr).await?;
        let mut control_planes = Vec::new();
        let mut cp_urls = Vec::new();
        let via = format!("http://{}", proxy.addr());
        for (i, store) in [("LOOM_DATABASE_URL", pg.url()), ("LOOM_DATABASE__SERVICE_URL", via)].into_iter().enumerate()
        {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let env = common(&[
                store,
                ("LOOM_DATA_DIR", dir.join(format!("cp{i}")).display().to_string()),
                ("LOOM_BUS__TASK_SIGNING_KEY", signing_key.display().to_string()),
            ]);
            let listen = addr.to_string();
            let mut cp =
                Service::new(&format!("cp{i}"), &exe, dir, &["serve", "control-plane", "--listen", &listen], env);
            cp.spawn()?;
            wait_port(addr, &mut cp).await?;
            cp_urls.push(format!("http://{addr}"));
            control_planes.push(cp);
        }
        let repo = bare_repo(dir)?;
        let client = loom_client::Client::new(&cp_urls[0], None);
        let project = loom_api::ProjectRequest {
            id: Some(PROJECT.into()),
            name: None,
            git_repo: repo.display().to_string(),
            branch: Some("main".into()),
            bead_prefix: Some("ft".into()),
            context: Default::default(),
            git_strategy: Some("direct".into()),
            status: None,
        };
        client.create_project(&project).await.context("registering the project")?;
        let slots = slots.to_string();
        let agents = (0..agents)
            .map(|i| {
                let work = dir.join(format!("agent{i}"));
                let env = common(&[
                    ("LOOM_API_URL", cp_urls[i % cp_urls.len()].clone()),
                    ("LOOM_NATS_URL", agent_nats.clone()),
                    ("LOOM_AGENT__SANDBOX_WRITABLE", writable.clone()),
                ]);
                let args = [
                    "serve",
                    "agent",
                    "--project",
                    PROJECT,
                    "--concurrency",
                    &slots,
                    "--repo",
                    &repo.display().to_string(),
                    "--work-dir",
                    &work.display().to_string(),
                ];
                Service::new(&format!("agent{i}"), &exe, dir, &args, env)
            })
            .collect();
        Ok(Cluster { nats, pg, proxy, nats_proxy, nats_disk, db, db_addr, control_planes, cp_urls, agents })
    }

    /// Starts every agent and waits until the registry lists them all.
    pub async fn start_agents(&mut self) -> anyhow::Result<()> {
        for agent in &mut self.agents {
            agent.spawn()?;
        }
        let client = loom_client::Client::new(&self.cp_urls[0], None);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let listed = client.agents().await.ok().map(|v| count_agents(&v)).unwrap_or(0);
            if listed >= self.agents.len() {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {listed} of {} agents registered in 60 s",
                self.agents.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The index of the control plane that holds the dispatcher lease, from the last leadership
    /// line in the logs of the running ones.
    pub fn leader(&mut self) -> Option<usize> {
        (0..self.control_planes.len()).find(|&i| {
            let cp = &mut self.control_planes[i];
            cp.is_running() && last_leadership(cp.log()) == Some(true)
        })
    }

    /// Stops the Loom services gracefully (agents first), then the servers when dropped.
    pub async fn stop(&mut self) {
        for s in self.agents.iter_mut().chain(self.control_planes.iter_mut()) {
            s.stop().await;
        }
        self.db.stop().await;
    }
}

/// Whether the last "dispatcher leadership changed" line in `log` says leader (of the last run
/// that wrote to it).
fn last_leadership(log: &Path) -> Option<bool> {
    let text = std::fs::read_to_string(log).ok()?;
    let start = text.rfind("loom: control plane at").unwrap_or(0);
    let line = text[start..].lines().rev().find(|l| l.contains("dispatcher leadership changed"))?;
    Some(line.contains("leader=true"))
}

fn count_agents(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => a.len(),
        serde_json::Value::Object(o) => o.get("agents").map_or(0, count_agents),
        _ => 0,
    }
}

impl Cluster {
    /// What a supervisor (systemd, Kubernetes) does for a process that exits on its own:
    /// starts it again. Returns the names of the Loom services that had exited; a fault's own
    /// kills are restarted by the fault itself before this runs.
    pub fn revive(&mut self) -> anyhow::Result<Vec<String>> {
        let mut revived = Vec::new();
        let services =
            std::iter::once(&mut self.db).chain(self.control_planes.iter_mut()).chain(self.agents.iter_mut());
        for service in services {
            if service.child.is_some() && !service.is_running() {
                service.child = None;
                service.spawn()?;
                revived.push(service.name.clone());
            }
        }
        Ok(revived)
    }
}

/// Waits until `addr` accepts connections (the service is up) or the service exits.
pub async fn wait_port(addr: SocketAddr, service: &mut Service) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        anyhow::ensure!(service.is_running(), "{} exited; see {}", service.name, service.log().display());
        anyhow::ensure!(Instant::now() < deadline, "{} did not listen on {addr} in 60 s", service.name);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A bare repository `origin.git` in `dir` whose `main` has one commit.
fn bare_repo(dir: &Path) -> anyhow::Result<PathBuf> {
    let origin = dir.join("origin.git");
    let seed = dir.join("seed");
    std::fs::create_dir_all(&seed)?;
    let git = |cwd: &Path, args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("git")
            .args(["-c", "user.name=loom-faults", "-c", "user.email=faults@loom.invalid"])
            .args(args)
            .current_dir(cwd)
            .output()?;
        anyhow::ensure!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    };
    git(dir, &["init", "-q", "--bare", "-b", "main", &origin.display().to_string()])?;
    git(&seed, &["init", "-q", "-b", "main"])?;
    std::fs::write(seed.join("README"), "fault suite\n")?;
    git(&seed, &["add", "README"])?;
    git(&seed, &["commit", "-qm", "init"])?;
    git(&seed, &["push", "-q", &origin.display().to_string(), "main"])?;
    Ok(origin)
}
