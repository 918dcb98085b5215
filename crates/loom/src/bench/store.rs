//! `loom bench store`: per backend, concurrent single-bead creates, batched claims, the ready
//! query's latency with 100 k beads loaded (a quarter of them waiting on another bead), and the
//! latency of a dependency add at the top of a deep diamond ladder (`dep_add_p99_ms_deep`), and
//! the import of a bd tracker of 10 k issues with edges (`import_beads_per_s`: batched, so it
//! should reach at least twice `create_per_s`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use clap::{Args, ValueEnum};
use futures::StreamExt;
use loom_domain::{BeadId, NewBead, NewProject, Priority, ProjectId};
use loom_store::scratch::ScratchDatabase;
use loom_store::{ClaimRequest, SqliteStore, Store};
use serde::Serialize;

use super::{Common, progress, quantile_ms};
use crate::config::Config;

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Which backends to measure.
    #[arg(long, value_enum, default_value_t = Backend::Both)]
    backend: Backend,
    /// Single-bead creates to time (also the beads then claimed).
    #[arg(long, default_value_t = 20_000)]
    creates: usize,
    /// Concurrent clients for creates and claims.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Beads claimed per claim transaction (what the dispatcher asks for).
    #[arg(long, default_value_t = 16)]
    claim_batch: u32,
    /// Beads loaded before timing the ready query.
    #[arg(long, default_value_t = 100_000)]
    ready_beads: usize,
    /// Ready queries timed.
    #[arg(long, default_value_t = 500)]
    ready_queries: usize,
    /// Levels of the two-wide diamond ladder below the timed dependency adds (2^depth paths).
    #[arg(long, default_value_t = 24)]
    dep_depth: usize,
    /// Dependency adds timed at the top of the ladder.
    #[arg(long, default_value_t = 200)]
    dep_adds: usize,
    /// Issues of the bd tracker imported (epics of 50, each issue waiting on up to two earlier ones).
    #[arg(long, default_value_t = 10_000)]
    import_issues: usize,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Postgres,
    Sqlite,
    Both,
}

#[derive(Debug, Serialize)]
struct Report {
    backend: &'static str,
    create_per_s: f64,
    claim_per_s: f64,
    ready_query_p50_ms_100k: f64,
    ready_query_p99_ms_100k: f64,
    /// An edge added at the top of a diamond ladder `dep_depth` levels deep.
    dep_add_p50_ms_deep: f64,
    dep_add_p99_ms_deep: f64,
    /// Issues per second of a bd JSONL import (`import_issues` issues with edges), end to end:
    /// parsing, ordering, batched store transactions.
    import_beads_per_s: f64,
    creates: usize,
    concurrency: usize,
    claim_batch: u32,
    ready_beads: usize,
    dep_depth: usize,
    import_issues: usize,
}

pub async fn run(args: StoreArgs, config: &Config) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    if matches!(args.backend, Backend::Postgres | Backend::Both) {
        let admin = super::database_url(config);
        let scratch =
            ScratchDatabase::create_on(&admin, "loom_bench").await.context("creating the scratch database")?;
        let mut opts = crate::storage::pg_options(config);
        opts.max_connections = opts.max_connections.max(args.concurrency as u32 + 2);
        let store = scratch.open(&opts).await?;
        reports.push(measure("postgres", Arc::new(store), &args).await?);
        drop(scratch);
    }
    if matches!(args.backend, Backend::Sqlite | Backend::Both) {
        let dir = super::temp_dir()?;
        let store = SqliteStore::open(&dir.join("bench.sqlite")).await?;
        let report = measure("sqlite", Arc::new(store), &args).await;
        let _ = std::fs::remove_dir_all(&dir);
        reports.push(report?);
    }
    for r in &reports {
        if args.common.json {
            println!("{}", serde_json::to_string(r)?);
        } else {
            println!(
                "{:<9} create {:>8.0}/s   claim {:>8.0}/s (batch {})   ready query with {} beads: p50 {:.2} ms, p99 {:.2} ms   dependency add at depth {}: p50 {:.2} ms, p99 {:.2} ms   bd import of {} issues {:>8.0}/s",
                r.backend,
                r.create_per_s,
                r.claim_per_s,
                r.claim_batch,
                r.ready_beads,
                r.ready_query_p50_ms_100k,
                r.ready_query_p99_ms_100k,
                r.dep_depth,
                r.dep_add_p50_ms_deep,
                r.dep_add_p99_ms_deep,
                r.import_issues,
                r.import_beads_per_s
            );
        }
    }
    Ok(())
}

async fn measure(backend: &'static str, store: Arc<dyn Store>, args: &StoreArgs) -> anyhow::Result<Report> {
    let project = ProjectId::parse("bench")?;
    store.create_project(NewProject::new(project.clone(), "/tmp/bench")).await?;

    let bar = progress(&format!("{backend}: create"), args.creates as u64);
    let started = Instant::now();
    futures::stream::iter(0..args.creates)
        .map(|i| {
            let (store, project, bar) = (store.clone(), project.clone(), bar.clone());
            async move {
                let mut b = NewBead::new(project, format!("bench bead {i}"));
                b.priority = Priority::try_from((i % 4) as i64)?;
                store.create_beads(vec![b]).await?;
                bar.inc(1);
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<()>>()?;
    let create_per_s = args.creates as f64 / started.elapsed().as_secs_f64();
    bar.finish_and_clear();

    let claim_per_s = claim_all(backend, &store, &project, args).await?;
    let (p50, p99) = ready_latency(backend, &store, args).await?;
    let (dep_p50, dep_p99) = dep_add_latency(backend, &store, args).await?;
    let import_beads_per_s = import_rate(backend, &store, args).await?;
    Ok(Report {
        backend,
        create_per_s,
        claim_per_s,
        ready_query_p50_ms_100k: p50,
        ready_query_p99_ms_100k: p99,
        dep_add_p50_ms_deep: dep_p50,
        dep_add_p99_ms_deep: dep_p99,
        import_beads_per_s,
        creates: args.creates,
        concurrency: args.concurrency,
        claim_batch: args.claim_batch,
        ready_beads: args.ready_beads,
        dep_depth: args.dep_depth,
        import_issues: args.import_issues,
    })
}

async fn claim_all(
    backend: &str,
    store: &Arc<dyn Store>,
    project: &ProjectId,
    args: &StoreArgs,
) -> anyhow::Result<f64> {
    let bar = progress(&format!("{backend}: claim"), args.creates as u64);
    let started = Instant::now();
    let claimers = (0..args.concurrency).map(|_| {
        let (store, bar) = (store.clone(), bar.clone());
        let request = ClaimRequest {
            project: project.clone(),
            max: args.claim_batch,
            now: Utc::now(),
            lease: Duration::from_secs(600),
            claimer: "bench".into(),
        };
        async move {
            let mut claimed = 0usize;
            loop {
                let n = store.claim_ready(&request).await?.len();
                if n == 0 {
                    return anyhow::Ok(claimed);
                }
                claimed += n;
                bar.inc(n as u64);
            }
        }
    });
    let claimed: usize = futures::future::try_join_all(claimers).await?.into_iter().sum();
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    anyhow::ensure!(claimed == args.creates, "claimed {claimed} beads, expected {}", args.creates);
    Ok(claimed as f64 / elapsed.as_secs_f64())
}

/// Loads `ready_beads` beads into a fresh project (every fourth waits on its predecessor) and
/// times `list_ready(limit 50)`.
async fn ready_latency(backend: &str, store: &Arc<dyn Store>, args: &StoreArgs) -> anyhow::Result<(f64, f64)> {
    let project = ProjectId::parse("ready")?;
    store.create_project(NewProject::new(project.clone(), "/tmp/bench")).await?;
    let bar = progress(&format!("{backend}: load {} beads", args.ready_beads), args.ready_beads as u64);
    let mut previous: Option<BeadId> = None;
    let mut loaded = 0usize;
    while loaded < args.ready_beads {
        let n = (args.ready_beads - loaded).min(1000);
        let batch: Vec<NewBead> = (loaded..loaded + n)
            .map(|i| {
                let mut b = NewBead::new(project.clone(), format!("ready bead {i}"));
                b.priority = Priority::try_from(((i * 7) % 4) as i64).expect("0-3");
                b
            })
            .collect();
        let created = store.create_beads(batch).await?;
        // Dependencies go in as a second batch so that blockers exist.
        let mut waits = Vec::new();
        for (k, b) in created.iter().enumerate() {
            if (loaded + k) % 4 == 3
                && let Some(p) = &previous
            {
                waits.push((b.id.clone(), p.clone()));
            }
            previous = Some(b.id.clone());
        }
        for (bead, blocker) in waits {
            store.add_dependency(&bead, &blocker).await?;
        }
        loaded += n;
        bar.set_position(loaded as u64);
    }
    bar.finish_and_clear();
    let bar = progress(&format!("{backend}: ready query"), args.ready_queries as u64);
    let mut samples = Vec::with_capacity(args.ready_queries);
    for _ in 0..args.ready_queries {
        let t = Instant::now();
        let ready = store.list_ready(&project, 50, Utc::now()).await?;
        samples.push(t.elapsed());
        anyhow::ensure!(ready.len() == 50, "ready query returned {} beads, expected 50", ready.len());
        bar.inc(1);
    }
    bar.finish_and_clear();
    samples.sort();
    Ok((quantile_ms(&samples, 0.5), quantile_ms(&samples, 0.99)))
}

/// Builds a two-wide diamond ladder `dep_depth` levels deep (each bead of a level waits on both
/// of the level below: 2^depth paths from the top to the bottom), then times adding an edge from a
/// fresh bead to the top, which the cycle check walks down the whole ladder for. Also checks that
/// the edge closing the ladder into a cycle is refused.
async fn dep_add_latency(backend: &str, store: &Arc<dyn Store>, args: &StoreArgs) -> anyhow::Result<(f64, f64)> {
    let project = ProjectId::parse("ladder")?;
    store.create_project(NewProject::new(project.clone(), "/tmp/bench")).await?;
    let rung = |level: usize, below: &[BeadId]| -> Vec<NewBead> {
        (0..2)
            .map(|side| {
                let mut b = NewBead::new(project.clone(), format!("rung {level}.{side}"));
                b.blocked_by = below.to_vec();
                b
            })
            .collect()
    };
    let mut level: Vec<BeadId> = store.create_beads(rung(0, &[])).await?.into_iter().map(|b| b.id).collect();
    let bottom = level[0].clone();
    for depth in 1..=args.dep_depth {
        level = store.create_beads(rung(depth, &level)).await?.into_iter().map(|b| b.id).collect();
    }
    let fresh: Vec<NewBead> = (0..args.dep_adds).map(|i| NewBead::new(project.clone(), format!("top {i}"))).collect();
    let fresh = store.create_beads(fresh).await?;
    let bar = progress(&format!("{backend}: dependency add at depth {}", args.dep_depth), args.dep_adds as u64);
    let mut samples = Vec::with_capacity(args.dep_adds);
    for (i, b) in fresh.iter().enumerate() {
        let t = Instant::now();
        store.add_dependency(&b.id, &level[i % 2]).await?;
        samples.push(t.elapsed());
        bar.inc(1);
    }
    bar.finish_and_clear();
    anyhow::ensure!(
        store.add_dependency(&bottom, &level[0]).await.is_err(),
        "the edge from the bottom of the ladder to its top closes a cycle and must be refused"
    );
    samples.sort();
    Ok((quantile_ms(&samples, 0.5), quantile_ms(&samples, 0.99)))
}

/// A bd tracker of `n` issues as bd writes it: an epic every 50 issues with the others its
/// children, each issue after the first waiting (`blocks`) on one or two earlier ones, a fifth of
/// them closed.
fn bd_tracker(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 400);
    for i in 0..n {
        let id = format!("bd-{}", loom_domain::base36(46_656 + i as u64));
        let epic = format!("bd-{}", loom_domain::base36(46_656 + (i - i % 50) as u64));
        let mut deps = Vec::new();
        if !i.is_multiple_of(50) {
            deps.push(serde_json::json!({ "issue_id": id, "depends_on_id": epic, "type": "parent-child",
                "created_at": "2025-01-01T00:00:00Z", "created_by": "bench" }));
        }
        for back in [1, 7].into_iter().filter(|b| i >= *b && i.is_multiple_of(*b + 1)) {
            let on = format!("bd-{}", loom_domain::base36(46_656 + (i - back) as u64));
            deps.push(serde_json::json!({ "issue_id": id, "depends_on_id": on, "type": "blocks",
                "created_at": "2025-01-01T00:00:00Z", "created_by": "bench" }));
        }
        let closed = i.is_multiple_of(5);
        let mut issue = serde_json::json!({ "id": id, "title": format!("bench issue {i}"),
            "description": "Something to do, with a paragraph of markdown.", "status": if closed { "closed" } else { "open" },
            "priority": i % 5, "issue_type": if i.is_multiple_of(50) { "epic" } else { "task" }, "labels": ["bench"],
            "created_at": "2025-01-01T00:00:00.123456789Z", "updated_at": "2025-01-02T00:00:00Z",
            "dependencies": deps });
        if closed {
            issue["closed_at"] = serde_json::json!("2025-01-03T00:00:00Z");
        }
        out.extend_from_slice(issue.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// Imports the tracker of `import_issues` issues into a fresh project, as `POST /import` does.
async fn import_rate(backend: &str, store: &Arc<dyn Store>, args: &StoreArgs) -> anyhow::Result<f64> {
    let id = ProjectId::parse("bdimport")?;
    let project = store.create_project(NewProject::new(id, "/tmp/bench")).await?;
    let file = bd_tracker(args.import_issues);
    let bar = progress(&format!("{backend}: bd import of {} issues", args.import_issues), 1);
    let started = Instant::now();
    let summary = loom_control_plane::bd::import(
        &**store,
        &project,
        std::io::Cursor::new(file),
        loom_api::Dangling::Keep,
        loom_control_plane::bd::BATCH,
    )
    .await?;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    anyhow::ensure!(
        summary.created == args.import_issues as u64 && summary.errors.is_empty(),
        "the bench import created {} of {} issues: {:?}",
        summary.created,
        args.import_issues,
        summary.errors.first()
    );
    Ok(args.import_issues as f64 / elapsed.as_secs_f64())
}
