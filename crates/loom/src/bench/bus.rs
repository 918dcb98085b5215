//! `loom bench bus`: publish + consume N messages of 256 B through `loom-bus` and through raw
//! async-nats on the same server in the same run.

use std::sync::{Arc, Mutex};

use clap::Args;
use indicatif::ProgressBar;
use loom_bus::bench::{BenchOptions, run as run_bench};

use super::{Common, progress};
use crate::config::Config;

#[derive(Debug, Args)]
pub struct BusArgs {
    /// Messages per pass (each side runs two passes and keeps its best).
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 256)]
    payload_size: usize,
    #[command(flatten)]
    common: Common,
}

pub async fn run(args: BusArgs, config: &Config) -> anyhow::Result<()> {
    let bar: Arc<Mutex<Option<(String, ProgressBar)>>> = Arc::new(Mutex::new(None));
    let shown = bar.clone();
    let on_progress = move |phase: &str, done: u64, total: u64| {
        let mut slot = shown.lock().expect("progress lock");
        if slot.as_ref().is_none_or(|(p, _)| p != phase) {
            if let Some((_, old)) = slot.take() {
                old.finish_and_clear();
            }
            *slot = Some((phase.to_owned(), progress(phase, total)));
        }
        if let Some((_, b)) = slot.as_ref() {
            b.set_position(done);
        }
    };
    let opts = BenchOptions {
        url: super::nats_url(config),
        messages: args.messages,
        payload_size: args.payload_size,
        progress: Some(Box::new(on_progress)),
    };
    let report = run_bench(opts).await?;
    if let Some((_, b)) = bar.lock().expect("progress lock").take() {
        b.finish_and_clear();
    }
    if args.common.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "bus: raw async-nats {:.0} msg/s, loom-bus {:.0} msg/s, ratio {:.2}; publish->receive p50 {} us, p99 {} us",
            report.raw_msgs_per_s, report.loom_msgs_per_s, report.ratio, report.p50_us, report.p99_us
        );
    }
    Ok(())
}
