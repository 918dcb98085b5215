//! `loom bench reads`: the control plane's memory with 100 k beads after every read route.
//!
//! Loads a scratch PostgreSQL database with `beads` beads (a quarter waiting on another), starts
//! `loom serve control-plane` on it as a child process (its own RSS, nothing of the bench's),
//! calls every `GET` route of the OpenAPI document once, and reports the child's resident set
//! from `/proc` before and after, with its peak (`VmHWM`), and each route's status, bytes and
//! time. The target (DESIGN.md §8) is ≤ 128 MiB with 100 k beads after any API call.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use loom_domain::{BeadId, NewBead, NewProject, ProjectId};
use loom_store::Store;
use loom_store::scratch::ScratchDatabase;
use serde::Serialize;
use serde_json::Value;

use super::{Common, progress};
use crate::config::Config;

#[derive(Debug, Args)]
pub struct ReadsArgs {
    /// Beads loaded into the one project before the routes are called.
    #[arg(long, default_value_t = 100_000)]
    beads: usize,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Serialize)]
struct Report {
    beads: usize,
    rss_idle_mib: f64,
    rss_after_reads_mib: f64,
    rss_peak_mib: f64,
    routes: Vec<RouteReport>,
}

#[derive(Debug, Serialize)]
struct RouteReport {
    path: String,
    status: u16,
    bytes: usize,
    ms: f64,
}

/// The project the beads go in.
const PROJECT: &str = "reads";

pub async fn run(args: ReadsArgs, config: &Config) -> anyhow::Result<()> {
    let scratch = ScratchDatabase::create_on(&super::database_url(config), "loom_bench")
        .await
        .context("creating the scratch database")?;
    let store = scratch.open(&crate::storage::pg_options(config)).await?;
    let bead = load(&store, args.beads).await?;
    let key = loom_control_plane::bootstrap_admin_key(&store).await?.context("a fresh store has no key")?;
    let server = Server::start(scratch.url()).await?;
    let result = measure(&server, &key, &bead, args.beads).await;
    drop(server);
    drop(scratch);
    let report = result?;
    if args.common.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for r in &report.routes {
            println!("{:<44} {:>3} {:>10} bytes {:>8.1} ms", r.path, r.status, r.bytes, r.ms);
        }
        println!(
            "control plane with {} beads: RSS idle {:.1} MiB, after every read route {:.1} MiB, peak {:.1} MiB (target ≤ 128)",
            report.beads, report.rss_idle_mib, report.rss_after_reads_mib, report.rss_peak_mib
        );
    }
    Ok(())
}

/// Loads `n` beads into [`PROJECT`] (every fourth waits on the bead before it); returns one.
async fn load(store: &dyn Store, n: usize) -> anyhow::Result<BeadId> {
    let project = ProjectId::parse(PROJECT)?;
    store.create_project(NewProject::new(project.clone(), "/tmp/bench")).await?;
    let bar = progress(&format!("reads: load {n} beads"), n as u64);
    let mut last: Option<BeadId> = None;
    let mut loaded = 0;
    while loaded < n {
        let batch: Vec<NewBead> = (loaded..(loaded + 1000).min(n))
            .map(|i| {
                let mut b = NewBead::new(project.clone(), format!("bead {i}"));
                b.description = format!("bead {i} of the reads bench: a line or two of markdown, as a real bead has.");
                if i % 4 == 3 {
                    b.blocked_by = last.iter().cloned().collect();
                }
                b
            })
            .collect();
        loaded += batch.len();
        last = store.create_beads(batch).await?.pop().map(|b| b.id);
        bar.set_position(loaded as u64);
    }
    bar.finish_and_clear();
    last.context("no beads loaded")
}

async fn measure(server: &Server, key: &str, bead: &BeadId, beads: usize) -> anyhow::Result<Report> {
    // No route may hang the bench (the SSE stream is read for a few seconds only).
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let rss_idle_mib = server.memory_mib("VmRSS")?;
    let document: Value = http.get(format!("{}/api/v1/openapi.json", server.url)).send().await?.json().await?;
    let mut paths = vec!["/metrics".to_owned(), "/readyz".to_owned(), "/healthz".to_owned()];
    for (path, ops) in document["paths"].as_object().context("the OpenAPI document has no paths")? {
        if ops.get("get").is_some() {
            paths.push(format!("/api/v1{}", concrete(path, bead)));
        }
    }
    let mut routes = Vec::new();
    for path in paths {
        let started = Instant::now();
        let request = http.get(format!("{}{path}", server.url)).bearer_auth(key);
        let (status, bytes) = if path.contains("/events/stream") {
            // An SSE stream never ends: read it (from the first event) for a few seconds, then
            // hang up.
            let mut resp = request.send().await?;
            let status = resp.status().as_u16();
            let (mut bytes, until) = (0, Instant::now() + Duration::from_secs(3));
            while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(until.into(), resp.chunk()).await {
                bytes += chunk.len();
            }
            (status, bytes)
        } else {
            let resp = request.send().await?;
            (resp.status().as_u16(), resp.bytes().await?.len())
        };
        routes.push(RouteReport { path, status, bytes, ms: started.elapsed().as_secs_f64() * 1000.0 });
    }
    if let Some(failed) = routes.iter().find(|r| r.status >= 400) {
        anyhow::bail!("GET {} answered {}", failed.path, failed.status);
    }
    Ok(Report {
        beads,
        rss_idle_mib,
        rss_after_reads_mib: server.memory_mib("VmRSS")?,
        rss_peak_mib: server.memory_mib("VmHWM")?,
        routes,
    })
}

/// A route with its path parameters filled in, and the query parameters it needs.
fn concrete(path: &str, bead: &BeadId) -> String {
    let path = path.replace("{id}", if path.starts_with("/beads/") { bead.as_str() } else { PROJECT });
    match path.as_str() {
        "/ready" | "/work-graph" => format!("{path}?project_id={PROJECT}"),
        "/events/stream" => format!("{path}?after=0"),
        _ => path,
    }
}

/// `loom serve control-plane` on the scratch database, as a child process (the embedded bus:
/// nothing is dispatched, no agent advertises slots); killed when dropped.
pub(super) struct Server {
    child: tokio::process::Child,
    pub(super) url: String,
    dir: std::path::PathBuf,
}

impl Server {
    pub(super) async fn start(database_url: &str) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = super::temp_dir()?;
        let child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["serve", "control-plane", "--listen", &format!("127.0.0.1:{port}")])
            .current_dir(&dir)
            .env("LOOM_DATABASE_URL", database_url)
            .env_remove("LOOM_NATS_URL")
            .env_remove("LOOM_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting `loom serve control-plane`")?;
        let server = Self { child, url: format!("http://127.0.0.1:{port}"), dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("{}/healthz", server.url)).await.is_err() {
            anyhow::ensure!(Instant::now() < deadline, "the control plane did not answer /healthz within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Let the loops settle (leader election, first passes) before the idle figure.
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Server {
    /// A memory figure of the child from `/proc/{pid}/status` (`VmRSS`, `VmHWM`), in MiB.
    pub(super) fn memory_mib(&self, field: &str) -> anyhow::Result<f64> {
        let pid = self.child.id().context("the control plane exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
        Ok(kib / 1024.0)
    }
}
