//! The cluster a fault run starts and kills: its own nats-server and PostgreSQL (loom-faults),
//! the fault proxy in front of the database service, and Loom's services as separate processes
//! of this very binary: `serve db`, two `serve control-plane` (one on PostgreSQL directly, one
//! through the database service behind the proxy) and N `serve agent`. Where network namespaces
//! can be made (`Netns::available`), each control plane and each agent runs in one of its own, so
//! a partition fault can cut it off from everything at once; the servers and the database
//! service stay on the root namespace's loopback, exposed to the namespaces port by port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use loom_faults::{NatsServer, Netns, PgCluster, Proxy, free_port};

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
    /// The network namespace it runs in (every start, restarts too), if any.
    netns: Option<Arc<Netns>>,
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
            netns: None,
            child: None,
        }
    }

    /// Runs it in `netns` from its next start on.
    fn in_netns(mut self, netns: Option<Arc<Netns>>) -> Service {
        self.netns = netns;
        self
    }

    /// The network namespace it runs in, if any.
    pub fn netns(&self) -> Option<Arc<Netns>> {
        self.netns.clone()
    }

    /// Starts the process (its output appended to `{name}.log`), with none of the caller's
    /// `LOOM_*` variables; inside its network namespace, if it has one (`ip netns exec` execs
    /// the program, so the child's pid stays the program's for kills and signals).
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = match &self.netns {
            Some(netns) => netns.command(&self.exe),
            None => Command::new(&self.exe),
        };
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
    /// Whether each control plane and each agent runs in a network namespace of its own, which
    /// the partition faults cut off (else why not).
    pub netns: Result<(), String>,
    pub db: Service,
    pub db_addr: SocketAddr,
    /// `[0]` on PostgreSQL directly, `[1]` through the database service (behind the proxy).
    pub control_planes: Vec<Service>,
    /// Where the run and the agents reach each control plane: its listener, or for one in a
    /// namespace a proxy on loopback in front of it (so a partition looks the same to all).
    pub cp_urls: Vec<String>,
    /// Where each control plane listens, as this process reaches it past any front proxy:
    /// what a start waits on.
    cp_listeners: Vec<SocketAddr>,
    /// The front proxies of control planes in namespaces.
    cp_fronts: Vec<Proxy>,
    pub agents: Vec<Service>,
}

pub const PROJECT: &str = "faults";

/// How the run's Loom processes are configured: the binary, the run's directory and what every
/// one of them gets.
struct Setup<'a> {
    exe: PathBuf,
    dir: &'a Path,
    netns: &'a Result<(), String>,
    env: Vec<(String, String)>,
}

impl Setup<'_> {
    /// The common environment plus `extra` (later entries win).
    fn env(&self, extra: &[(&str, String)]) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        env
    }

    /// A network namespace of its own where they can be made, in which the root namespace's
    /// loopback `ports` are reachable.
    async fn namespace(&self, ports: &[u16]) -> anyhow::Result<Option<Arc<Netns>>> {
        if self.netns.is_err() {
            return Ok(None);
        }
        let netns = Netns::new().await?;
        for &port in ports {
            netns.expose(port).await?;
        }
        Ok(Some(Arc::new(netns)))
    }
}

/// `url` (on 127.0.0.1) as a process in `netns` reaches it: at the namespace's host address.
fn reached_from(netns: Option<&Netns>, url: &str) -> String {
    match netns {
        Some(netns) => url.replacen("127.0.0.1", &netns.host_addr().to_string(), 1),
        None => url.to_owned(),
    }
}

impl Cluster {
    /// Starts NATS, PostgreSQL, the database service, the proxy and both control planes, and
    /// registers the project; the agents are made but not started (see [`Cluster::start_agents`]).
    /// `effects` is the side-effect log the beads' commands append to: created here, and the
    /// one path outside their worktrees the agents' sandbox lets them write.
    pub async fn start(dir: &Path, effects: &Path, agents: usize, slots: usize) -> anyhow::Result<Cluster> {
        std::fs::OpenOptions::new().create(true).append(true).open(effects).context("creating the effect log")?;
        let mut nats = NatsServer::start().await?;
        // Before anything is stored: the store moves onto a tmpfs the disk-full fault can fill.
        let nats_disk = nats.store_on_tmpfs(NATS_STORE_BYTES).await.map_err(|e| e.to_string());
        let netns = Netns::available().await;
        let nats_proxy = Proxy::start(([127, 0, 0, 1], nats.port()).into()).await?;
        let pg = PgCluster::start().await?;
        let db_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        // The control planes sign tasks with this key; the agents get its public half only.
        let (signing_pem, signing) = loom_bus::SigningKey::generate_pem();
        let (signing_key, verify_key) = (dir.join("task-signing.pem"), dir.join("task-verify.pem"));
        crate::certs::write_private(&signing_key, signing_pem.as_bytes())?;
        std::fs::write(&verify_key, signing.verify_key().to_pem())?;
        let mut env: Vec<(String, String)> = DISPATCH.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        env.push(("LOOM_DISPATCH__LEASE_SECS".into(), LEASE.as_secs().to_string()));
        env.push(("LOOM_NATS_URL".into(), nats.url()));
        env.push(("LOOM_BUS__TASK_VERIFY_KEY".into(), verify_key.display().to_string()));
        let exe = std::env::current_exe().context("the path of this loom binary")?;
        let setup = Setup { exe, dir, netns: &netns, env };
        let listen = db_addr.to_string();
        // Its own metrics port too: never the default one another service on the host may hold.
        let metrics = format!("127.0.0.1:{}", free_port());
        let args = ["serve", "db", "--listen", &listen, "--metrics-addr", &metrics];
        let mut db = Service::new("db", &setup.exe, dir, &args, setup.env(&[("LOOM_DATABASE_URL", pg.url())]));
        db.spawn()?;
        wait_port(db_addr, &mut db).await?;
        let proxy = Proxy::start(db_addr).await?;
        let stores =
            [("LOOM_DATABASE_URL", pg.url()), ("LOOM_DATABASE__SERVICE_URL", format!("http://{}", proxy.addr()))];
        let exposed = [nats.port(), pg.port(), proxy.addr().port()];
        let mut cluster = Cluster {
            nats,
            pg,
            proxy,
            nats_proxy,
            nats_disk,
            netns: netns.clone(),
            db,
            db_addr,
            control_planes: Vec::new(),
            cp_urls: Vec::new(),
            cp_listeners: Vec::new(),
            cp_fronts: Vec::new(),
            agents: Vec::new(),
        };
        for (i, (key, url)) in stores.into_iter().enumerate() {
            let netns = setup.namespace(&exposed).await?;
            let ns = netns.as_deref();
            let env = setup.env(&[
                (key, reached_from(ns, &url)),
                ("LOOM_NATS_URL", reached_from(ns, &cluster.nats.url())),
                ("LOOM_DATA_DIR", dir.join(format!("cp{i}")).display().to_string()),
                ("LOOM_BUS__TASK_SIGNING_KEY", signing_key.display().to_string()),
            ]);
            cluster.start_control_plane(&setup, i, env, netns).await?;
        }
        let repo = cluster.register_project(dir).await?;
        cluster.agents = cluster.make_agents(&setup, &repo, effects, (agents, slots)).await?;
        Ok(cluster)
    }

    /// Starts control plane `i` (in `netns` if given: listening on the namespace's loopback,
    /// published at its peer address, a front proxy on this loopback) and waits until it listens.
    async fn start_control_plane(
        &mut self,
        setup: &Setup<'_>,
        i: usize,
        env: Vec<(String, String)>,
        netns: Option<Arc<Netns>>,
    ) -> anyhow::Result<()> {
        let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let (listener, url) = match netns.as_deref() {
            Some(ns) => {
                ns.publish(listen.port()).await?;
                let listener = SocketAddr::from((ns.peer_addr(), listen.port()));
                let front = Proxy::start(listener).await?;
                let url = format!("http://{}", front.addr());
                self.cp_fronts.push(front);
                (listener, url)
            }
            None => (listen, format!("http://{listen}")),
        };
        let args = ["serve", "control-plane", "--listen", &listen.to_string()];
        let mut cp = Service::new(&format!("cp{i}"), &setup.exe, setup.dir, &args, env).in_netns(netns);
        cp.spawn()?;
        wait_port(listener, &mut cp).await?;
        self.control_planes.push(cp);
        self.cp_listeners.push(listener);
        self.cp_urls.push(url);
        Ok(())
    }

    /// Waits until control plane `i`, just started again, listens.
    pub async fn wait_control_plane(&mut self, i: usize) -> anyhow::Result<()> {
        wait_port(self.cp_listeners[i], &mut self.control_planes[i]).await
    }

    /// Registers the project, on a bare repository made in `dir`; returns the repository.
    async fn register_project(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let repo = bare_repo(dir)?;
        let client = loom_client::Client::new(&self.cp_urls[0], None);
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
        Ok(repo)
    }

    /// `agents` agents of `slots` slots each, made but not started; agent `i` talks to control
    /// plane `i mod 2`, and reaches NATS through the agents' proxy.
    async fn make_agents(
        &self,
        setup: &Setup<'_>,
        repo: &Path,
        effects: &Path,
        (agents, slots): (usize, usize),
    ) -> anyhow::Result<Vec<Service>> {
        let writable = format!("[{:?}]", effects.display().to_string());
        let (slots, repo) = (slots.to_string(), repo.display().to_string());
        let agent_nats = format!("nats://{}", self.nats_proxy.addr());
        let mut made = Vec::new();
        for i in 0..agents {
            let cp_url = &self.cp_urls[i % self.cp_urls.len()];
            let cp_port = cp_url.rsplit(':').next().and_then(|p| p.parse().ok()).context("a control plane's port")?;
            let netns = setup.namespace(&[self.nats_proxy.addr().port(), cp_port]).await?;
            let env = setup.env(&[
                ("LOOM_API_URL", reached_from(netns.as_deref(), cp_url)),
                ("LOOM_NATS_URL", reached_from(netns.as_deref(), &agent_nats)),
                ("LOOM_AGENT__SANDBOX_WRITABLE", writable.clone()),
            ]);
            let work = setup.dir.join(format!("agent{i}")).display().to_string();
            let args =
                ["serve", "agent", "--project", PROJECT, "--concurrency", &slots, "--repo", &repo, "--work-dir", &work];
            made.push(Service::new(&format!("agent{i}"), &setup.exe, setup.dir, &args, env).in_netns(netns));
        }
        Ok(made)
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
        (0..self.control_planes.len()).find(|&i| self.leads(i) == Some(true))
    }

    /// Whether control plane `i`, if it runs, last said it holds the dispatcher lease.
    pub fn leads(&mut self, i: usize) -> Option<bool> {
        let cp = &mut self.control_planes[i];
        if cp.is_running() { last_leadership(cp.log()) } else { None }
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
