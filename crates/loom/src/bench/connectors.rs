//! `loom bench connectors`: `HealthCheckAll` over 100 connectors, half of them slow, as elapsed
//! ÷ the per-check timeout (`health_check_all_over_timeout`; target ≤ 1.2).

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use loom_connectors::bench::{self, BenchOptions};

use super::Common;
use crate::config::Config;

#[derive(Debug, Args)]
pub struct ConnectorsArgs {
    /// Connectors registered; half of them answer only after ten timeouts.
    #[arg(long, default_value_t = 100)]
    connectors: usize,
    /// The per-check timeout, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    #[command(flatten)]
    common: Common,
}

pub async fn run(args: ConnectorsArgs, _config: &Config) -> anyhow::Result<()> {
    let options = BenchOptions {
        connectors: args.connectors,
        timeout: Duration::from_millis(args.timeout_ms),
        dir: super::temp_dir()?,
    };
    let report = bench::run(options).await.context("loom bench connectors")?;
    if args.common.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "connectors  HealthCheckAll over {} ({} slow, timeout {} ms): {:.0} ms = {:.2} × the timeout (target ≤ 1.2); {} healthy, {} timed out",
            report.connectors,
            report.slow,
            report.timeout_ms,
            report.elapsed_ms,
            report.health_check_all_over_timeout,
            report.healthy,
            report.timed_out
        );
    }
    Ok(())
}
