//! `loom bench db`: latency of the database service against the PostgreSQL store alone, in one
//! run on a scratch database. The service runs in-process on 127.0.0.1:0 and is called through
//! [`GrpcStore`](crate::GrpcStore), one call at a time, so the figures are per-call latency:
//! `GetBead` p50/p99 over gRPC, `get_bead` p99 on the `PgStore` directly (interleaved in blocks
//! with the gRPC samples so both see the same machine noise), and `ClaimReady` (one bead) p99
//! over gRPC.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use loom_domain::{BeadId, NewBead, NewProject, ProjectId};
use loom_store::scratch::ScratchDatabase;
use loom_store::{ClaimRequest, PgOptions, Store};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{ClientConfig, Error, GrpcStore, ServerConfig};

/// Reports progress: `(stage, done, total)`.
pub type Progress = Arc<dyn Fn(&'static str, u64, u64) + Send + Sync>;

/// What to measure.
#[derive(Clone)]
pub struct BenchOptions {
    /// Any database URL of the PostgreSQL server to create the scratch database on.
    pub admin_url: String,
    pub pg: PgOptions,
    /// `GetBead` calls timed (over gRPC, and as many directly).
    pub get_samples: usize,
    /// `ClaimReady` calls timed (each claims one bead).
    pub claim_samples: usize,
    /// Untimed calls first, to open connections and warm caches.
    pub warmup: usize,
    pub progress: Option<Progress>,
}

impl std::fmt::Debug for BenchOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchOptions")
            .field("admin_url", &loom_store::redact_url(&self.admin_url))
            .field("pg", &self.pg)
            .field("get_samples", &self.get_samples)
            .field("claim_samples", &self.claim_samples)
            .field("warmup", &self.warmup)
            .finish_non_exhaustive()
    }
}

impl BenchOptions {
    /// 20 000 `GetBead`s and 2 000 claims on the server of `admin_url`.
    pub fn new(admin_url: impl Into<String>) -> Self {
        Self {
            admin_url: admin_url.into(),
            pg: PgOptions::default(),
            get_samples: 20_000,
            claim_samples: 2_000,
            warmup: 1_000,
            progress: None,
        }
    }
}

/// The figures, in microseconds.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BenchReport {
    pub get_bead_p50_us: f64,
    pub get_bead_p99_us: f64,
    pub claim_p99_us: f64,
    pub direct_get_bead_p99_us: f64,
    pub direct_get_bead_p50_us: f64,
    pub claim_p50_us: f64,
    pub get_samples: usize,
    pub claim_samples: usize,
}

/// Runs the bench; the scratch database is dropped afterwards, whatever happens.
pub async fn run(options: BenchOptions) -> Result<BenchReport, Error> {
    let scratch = ScratchDatabase::create_on(&options.admin_url, "loom_bench").await?;
    let direct: Arc<dyn Store> = Arc::new(scratch.open(&options.pg).await?);
    let listener =
        TcpListener::bind("127.0.0.1:0").await.map_err(|e| Error::Bench(format!("bind 127.0.0.1:0: {e}")))?;
    let url = format!("http://{}", listener.local_addr().map_err(|e| Error::Bench(e.to_string()))?);
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(crate::serve(ServerConfig::default(), listener, direct.clone(), shutdown.clone()));
    let grpc: Arc<dyn Store> = Arc::new(GrpcStore::connect(ClientConfig::new(url))?);
    let report = measure(&options, &direct, &grpc).await;
    shutdown.cancel();
    server.await.map_err(|e| Error::Bench(format!("the service task failed: {e}")))??;
    drop(scratch);
    report
}

async fn measure(options: &BenchOptions, direct: &Arc<dyn Store>, grpc: &Arc<dyn Store>) -> Result<BenchReport, Error> {
    let report = |stage, done: usize, total: usize| {
        if let Some(p) = &options.progress {
            p(stage, done as u64, total as u64);
        }
    };
    let project = ProjectId::parse("bench").map_err(loom_store::Error::from)?;
    direct.create_project(NewProject::new(project.clone(), "/tmp/bench")).await?;
    let total = options.claim_samples.max(1000);
    let mut ids: Vec<BeadId> = Vec::with_capacity(total);
    while ids.len() < total {
        let batch = (ids.len()..total.min(ids.len() + 500)).map(|i| NewBead::new(project.clone(), format!("bead {i}")));
        ids.extend(direct.create_beads(batch.collect()).await?.into_iter().map(|b| b.id));
        report("create beads", ids.len(), total);
    }
    for i in 0..options.warmup {
        grpc.get_bead(&ids[i % ids.len()]).await?;
        direct.get_bead(&ids[i % ids.len()]).await?;
    }

    // Interleaved blocks: both paths see the same background noise.
    let (mut over_grpc, mut on_pg) = (Vec::with_capacity(options.get_samples), Vec::with_capacity(options.get_samples));
    while over_grpc.len() < options.get_samples {
        let block = (options.get_samples - over_grpc.len()).min(500);
        for (store, samples) in [(grpc, &mut over_grpc), (direct, &mut on_pg)] {
            for i in 0..block {
                let id = &ids[(samples.len() + i * 7) % ids.len()];
                let started = Instant::now();
                store.get_bead(id).await?;
                samples.push(started.elapsed());
            }
        }
        report("GetBead", over_grpc.len(), options.get_samples);
    }

    let mut claims = Vec::with_capacity(options.claim_samples);
    let request = |now| ClaimRequest {
        project: project.clone(),
        max: 1,
        now,
        lease: Duration::from_secs(600),
        claimer: "bench".into(),
    };
    for i in 0..options.claim_samples {
        let started = Instant::now();
        let claimed = grpc.claim_ready(&request(Utc::now())).await?;
        claims.push(started.elapsed());
        if claimed.len() != 1 {
            return Err(Error::Bench(format!("claim {i} returned {} beads, expected 1", claimed.len())));
        }
        if i % 100 == 99 {
            report("ClaimReady", i + 1, options.claim_samples);
        }
    }
    Ok(BenchReport {
        get_bead_p50_us: quantile_us(&mut over_grpc, 0.50),
        get_bead_p99_us: quantile_us(&mut over_grpc, 0.99),
        claim_p99_us: quantile_us(&mut claims, 0.99),
        direct_get_bead_p99_us: quantile_us(&mut on_pg, 0.99),
        direct_get_bead_p50_us: quantile_us(&mut on_pg, 0.50),
        claim_p50_us: quantile_us(&mut claims, 0.50),
        get_samples: options.get_samples,
        claim_samples: options.claim_samples,
    })
}

/// The q-quantile (0..=1) of the samples, in microseconds (nearest rank).
fn quantile_us(samples: &mut [Duration], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    let idx = ((samples.len() - 1) as f64 * q).round() as usize;
    (samples[idx].as_secs_f64() * 1e6 * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let mut s: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        assert_eq!(quantile_us(&mut s, 0.5), 51.0);
        assert_eq!(quantile_us(&mut s, 0.99), 99.0);
        assert_eq!(quantile_us(&mut [], 0.99), 0.0);
    }
}
