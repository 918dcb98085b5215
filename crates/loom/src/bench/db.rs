//! `loom bench db`: `GetBead` latency through the gRPC database service against the PostgreSQL
//! store alone, and `ClaimReady` latency, in one run on a scratch database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Args;
use indicatif::ProgressBar;
use loom_db::bench::{self, BenchOptions};

use super::{Common, progress};
use crate::config::Config;

#[derive(Debug, Args)]
pub struct DbArgs {
    /// `GetBead` calls timed, over gRPC and as many directly.
    #[arg(long, default_value_t = 20_000)]
    gets: usize,
    /// `ClaimReady` calls timed (one bead each).
    #[arg(long, default_value_t = 2_000)]
    claims: usize,
    #[command(flatten)]
    common: Common,
}

pub async fn run(args: DbArgs, config: &Config) -> anyhow::Result<()> {
    let mut options = BenchOptions::new(super::database_url(config));
    options.pg = crate::storage::pg_options(config);
    (options.get_samples, options.claim_samples) = (args.gets, args.claims);
    let bars: Arc<Mutex<HashMap<&'static str, ProgressBar>>> = Arc::default();
    let shown = bars.clone();
    options.progress = Some(Arc::new(move |stage, done, total| {
        let mut bars = shown.lock().unwrap_or_else(|e| e.into_inner());
        let bar = bars.entry(stage).or_insert_with(|| progress(&format!("db: {stage}"), total));
        bar.set_position(done);
        if done >= total {
            bar.finish_and_clear();
        }
    }));
    let report = bench::run(options).await.context("loom bench db")?;
    for bar in bars.lock().unwrap_or_else(|e| e.into_inner()).values() {
        bar.finish_and_clear();
    }
    if args.common.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "db service  GetBead over gRPC p50 {:.0} µs, p99 {:.0} µs (target ≤ 1000)   PostgreSQL store directly p99 {:.0} µs   ClaimReady over gRPC p99 {:.0} µs",
            report.get_bead_p50_us, report.get_bead_p99_us, report.direct_get_bead_p99_us, report.claim_p99_us
        );
    }
    Ok(())
}
