//! `loom bench agent`: N no-op tasks through one agent with concurrency 1 and 8 on a scratch bus
//! namespace; overhead is the time the agent spends outside the executor; the sandbox's cost is
//! that of a trivial command in bubblewrap over the same command unsandboxed; the LLM loop's is
//! its time per model turn outside the model call, against a scripted server.

use clap::Args;
use loom_agent::bench::{BenchOptions, run as run_bench};
use loom_bus::BusConfig;

use super::Common;
use crate::config::Config;

#[derive(Debug, Args)]
pub struct AgentBenchArgs {
    /// Tasks per round.
    #[arg(long, default_value_t = 3000)]
    tasks: usize,
    /// Use the embedded bus instead of NATS.
    #[arg(long)]
    embedded: bool,
    #[command(flatten)]
    common: Common,
}

pub async fn run(args: AgentBenchArgs, config: &Config) -> anyhow::Result<()> {
    let bus = BusConfig { url: super::nats_url(config), ..BusConfig::default() };
    let bar = super::progress("agent: rounds c1, c8", 2);
    let report = run_bench(BenchOptions { bus, embedded: args.embedded, tasks: args.tasks }).await?;
    bar.finish_and_clear();
    if args.common.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let sandbox = report
            .sandbox_overhead_p50_ms
            .map_or_else(|| "n/a (bubblewrap cannot run here)".to_owned(), |ms| format!("{ms:.2} ms"));
        println!(
            "agent: {:.0} tasks/s at concurrency 1, {:.0} tasks/s at 8; overhead p99 {:.2} ms; sandbox overhead p50 \
             {sandbox} (a trivial command); LLM loop overhead p50 {:.2} ms per model turn",
            report.tasks_per_s_c1, report.tasks_per_s_c8, report.overhead_p99_ms, report.llm_overhead_p50_ms
        );
    }
    Ok(())
}
