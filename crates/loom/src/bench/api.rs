//! `loom bench api`: the HTTP API under load. `loom serve control-plane` runs as a child process on
//! a scratch PostgreSQL database (the embedded bus: nothing is dispatched, so only the API is
//! measured); N connections hammer one route at a time for a few seconds — `POST /beads`,
//! `GET /beads/{id}`, `GET /ready`, and `/healthz`, the trivial handler of the same process and
//! stack, the baseline the ratios are taken against — then S subscribers follow the SSE event
//! stream while beads are created, and the child's resident set is read at the end.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use clap::Args;
use loom_domain::{NewProject, ProjectId};
use loom_store::scratch::ScratchDatabase;
use serde::Serialize;

use super::reads::Server;
use super::{Common, quantile_ms};
use crate::config::Config;

#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Concurrent connections (each a client task issuing one request after another).
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Seconds each route is loaded for.
    #[arg(long, default_value_t = 3)]
    secs: u64,
    /// SSE subscribers following the event stream.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Beads created while the subscribers follow the stream.
    #[arg(long, default_value_t = 500)]
    sse_beads: usize,
    #[command(flatten)]
    common: Common,
}

/// One route under load.
#[derive(Debug, Serialize)]
struct RouteLoad {
    requests: usize,
    errors: usize,
    req_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Debug, Serialize)]
struct SseLoad {
    subscribers: usize,
    beads: usize,
    /// Events delivered to all subscribers, over the time from the first create to the last one.
    deliveries: usize,
    deliveries_per_s: f64,
    /// From the event's commit (its `timestamp`) to a subscriber reading it.
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    connections: usize,
    create: RouteLoad,
    get_bead: RouteLoad,
    ready: RouteLoad,
    trivial: RouteLoad,
    sse: SseLoad,
    /// `create.req_per_s ÷ trivial.req_per_s`.
    create_vs_trivial: f64,
    /// `get_bead.req_per_s ÷ trivial.req_per_s` (target ≥ 0.3).
    get_bead_vs_trivial: f64,
    /// The control plane's resident set at the end, and its peak (target ≤ 128 MiB).
    rss_mib: f64,
    rss_peak_mib: f64,
}

const PROJECT: &str = "api";

pub async fn run(args: ApiArgs, config: &Config) -> anyhow::Result<()> {
    anyhow::ensure!(args.connections > 0 && args.secs > 0, "--connections and --secs must be at least 1");
    let scratch = ScratchDatabase::create_on(&super::database_url(config), "loom_bench")
        .await
        .context("creating the scratch database")?;
    let store = scratch.open(&crate::storage::pg_options(config)).await?;
    loom_store::Store::create_project(&store, NewProject::new(ProjectId::parse(PROJECT)?, "/tmp/bench")).await?;
    let key = loom_control_plane::bootstrap_admin_key(&store).await?.context("a fresh store has no key")?;
    drop(store);
    let server = Server::start(scratch.url()).await?;
    let result = measure(&args, &server, &key).await;
    drop(server);
    drop(scratch);
    let report = result?;
    if args.common.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for (name, r) in [
            ("POST /beads", &report.create),
            ("GET /beads/{id}", &report.get_bead),
            ("GET /ready", &report.ready),
            ("GET /healthz (trivial)", &report.trivial),
        ] {
            println!(
                "{name:<24} {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} requests, {} errors)",
                r.req_per_s, r.p50_ms, r.p99_ms, r.requests, r.errors
            );
        }
        println!(
            "SSE: {} subscribers × {} beads: {:.0} deliveries/s, p50 {:.2} ms, p99 {:.2} ms",
            report.sse.subscribers, report.sse.beads, report.sse.deliveries_per_s, report.sse.p50_ms, report.sse.p99_ms
        );
        println!(
            "create ÷ trivial {:.2}; get ÷ trivial {:.2} (target ≥ 0.3); control plane RSS {:.1} MiB, peak {:.1} MiB (target ≤ 128)",
            report.create_vs_trivial, report.get_bead_vs_trivial, report.rss_mib, report.rss_peak_mib
        );
    }
    Ok(())
}

async fn measure(args: &ApiArgs, server: &Server, key: &str) -> anyhow::Result<Report> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(args.connections + args.subscribers)
        .build()?;
    let api = format!("{}/api/v1", server.url);
    let for_secs = Duration::from_secs(args.secs);
    let ids: Arc<Mutex<Vec<String>>> = Arc::default();
    let create = {
        let (http, api, key, ids) = (http.clone(), api.clone(), key.to_owned(), ids.clone());
        load("POST /beads", args.connections, for_secs, move |i| {
            let (http, api, key, ids) = (http.clone(), api.clone(), key.clone(), ids.clone());
            async move {
                let body = serde_json::json!({ "project_id": PROJECT, "title": format!("api bench {i}") });
                let resp = http.post(format!("{api}/beads")).bearer_auth(&key).json(&body).send().await?;
                anyhow::ensure!(
                    resp.status() == reqwest::StatusCode::CREATED,
                    "POST /beads answered {}",
                    resp.status()
                );
                let bead: serde_json::Value = resp.json().await?;
                let id = bead["id"].as_str().context("a created bead has an id")?.to_owned();
                ids.lock().unwrap_or_else(|e| e.into_inner()).push(id);
                Ok(())
            }
        })
        .await
    };
    let ids: Arc<Vec<String>> = Arc::new(std::mem::take(&mut *ids.lock().unwrap_or_else(|e| e.into_inner())));
    anyhow::ensure!(!ids.is_empty(), "no bead was created ({} errors)", create.errors);
    let get_bead = {
        let (http, api, key, ids) = (http.clone(), api.clone(), key.to_owned(), ids.clone());
        load("GET /beads/{id}", args.connections, for_secs, move |i| {
            let url = format!("{api}/beads/{}", ids[i % ids.len()]);
            get(http.clone(), url, key.clone())
        })
        .await
    };
    let ready = {
        let (http, api, key) = (http.clone(), api.clone(), key.to_owned());
        load("GET /ready", args.connections, for_secs, move |_| {
            get(http.clone(), format!("{api}/ready?project_id={PROJECT}"), key.clone())
        })
        .await
    };
    let trivial = {
        let (http, url, key) = (http.clone(), format!("{}/healthz", server.url), key.to_owned());
        load("GET /healthz", args.connections, for_secs, move |_| get(http.clone(), url.clone(), key.clone())).await
    };
    let sse = sse(args, &http, &api, key).await?;
    let ratio = |r: &RouteLoad| if trivial.req_per_s > 0.0 { r.req_per_s / trivial.req_per_s } else { 0.0 };
    Ok(Report {
        connections: args.connections,
        create_vs_trivial: ratio(&create),
        get_bead_vs_trivial: ratio(&get_bead),
        create,
        get_bead,
        ready,
        trivial,
        sse,
        rss_mib: server.memory_mib("VmRSS")?,
        rss_peak_mib: server.memory_mib("VmHWM")?,
    })
}

async fn get(http: reqwest::Client, url: String, key: String) -> anyhow::Result<()> {
    let resp = http.get(&url).bearer_auth(&key).send().await?;
    anyhow::ensure!(resp.status().is_success(), "GET {url} answered {}", resp.status());
    resp.bytes().await?;
    Ok(())
}

/// `connections` tasks call `request(i)` one after another for `for_secs`; the latencies of the
/// ones that succeeded give the quantiles, every one counts toward the rate.
async fn load<F, Fut>(label: &str, connections: usize, for_secs: Duration, request: F) -> RouteLoad
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let bar = super::progress(&format!("api: {label}"), for_secs.as_secs());
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let until = Instant::now() + for_secs;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (request, counter) = (request.clone(), counter.clone());
        tasks.spawn(async move {
            let (mut lat, mut errors, mut first_error) = (Vec::new(), 0usize, None);
            while Instant::now() < until {
                let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let at = Instant::now();
                match request(i).await {
                    Ok(()) => lat.push(at.elapsed()),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e.to_string());
                    }
                }
            }
            (lat, errors, first_error)
        });
    }
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                bar.inc(1);
            }
        })
    };
    let (mut lat, mut errors) = (Vec::new(), 0);
    while let Some(done) = tasks.join_next().await {
        if let Ok((l, e, first)) = done {
            lat.extend(l);
            errors += e;
            if let Some(first) = first {
                tracing::warn!(route = label, error = %first, "requests failed during the bench");
            }
        }
    }
    ticker.abort();
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort();
    RouteLoad {
        requests: lat.len() + errors,
        errors,
        req_per_s: lat.len() as f64 / elapsed,
        p50_ms: quantile_ms(&lat, 0.5),
        p99_ms: quantile_ms(&lat, 0.99),
    }
}

/// `subscribers` follow `/events/stream` from now while `sse_beads` beads are created; each
/// counts the `bead.created` events it reads and how long after their commit it read them.
async fn sse(args: &ApiArgs, http: &reqwest::Client, api: &str, key: &str) -> anyhow::Result<SseLoad> {
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let last_read: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut streams = Vec::with_capacity(args.subscribers);
    for _ in 0..args.subscribers {
        let resp = http
            .get(format!("{api}/events/stream"))
            .bearer_auth(key)
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .context("subscribing to /events/stream")?;
        anyhow::ensure!(resp.status().is_success(), "/events/stream answered {}", resp.status());
        streams.push(resp);
    }
    let want = args.sse_beads;
    let mut readers = tokio::task::JoinSet::new();
    for mut resp in streams {
        let (latencies, last_read) = (latencies.clone(), last_read.clone());
        readers.spawn(async move {
            let (mut buf, mut seen) = (String::new(), 0usize);
            while seen < want {
                let Ok(Some(chunk)) = resp.chunk().await else { break };
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let frame: String = buf.drain(..end + 2).collect();
                    let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data:")) else { continue };
                    let Ok(event) = serde_json::from_str::<serde_json::Value>(data.trim()) else { continue };
                    if event["type"] != "bead.created" {
                        continue;
                    }
                    let Some(at) = event["timestamp"].as_str().and_then(|t| t.parse::<chrono::DateTime<Utc>>().ok())
                    else {
                        continue;
                    };
                    seen += 1;
                    let lag = (Utc::now() - at).to_std().unwrap_or_default();
                    latencies.lock().unwrap_or_else(|e| e.into_inner()).push(lag);
                    *last_read.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                }
            }
        });
    }
    let started = Instant::now();
    let creators = args.connections.min(want.max(1));
    let mut creates = tokio::task::JoinSet::new();
    for c in 0..creators {
        let (http, api, key) = (http.clone(), api.to_owned(), key.to_owned());
        creates.spawn(async move {
            for i in (c..want).step_by(creators) {
                let body = serde_json::json!({ "project_id": PROJECT, "title": format!("sse bench {i}") });
                http.post(format!("{api}/beads")).bearer_auth(&key).json(&body).send().await?.error_for_status()?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = creates.join_next().await {
        done??;
    }
    // Every subscriber reads every bead's event, or the bench stops waiting after 60 s.
    let _ = tokio::time::timeout(Duration::from_secs(60), async { while readers.join_next().await.is_some() {} }).await;
    readers.abort_all();
    let mut lat = std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
    lat.sort();
    let last = last_read.lock().unwrap_or_else(|e| e.into_inner()).unwrap_or(started);
    let secs = last.duration_since(started).as_secs_f64();
    Ok(SseLoad {
        subscribers: args.subscribers,
        beads: want,
        deliveries: lat.len(),
        deliveries_per_s: if secs > 0.0 { lat.len() as f64 / secs } else { 0.0 },
        p50_ms: quantile_ms(&lat, 0.5),
        p99_ms: quantile_ms(&lat, 0.99),
    })
}
