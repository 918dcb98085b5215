//! `loom bench bus` and the bus connection `loom up` uses.

use clap::Args;
use loom_bus::{Bus, BusConfig};

use super::Common;
use crate::config::Config;

#[derive(Debug, Args)]
pub struct BusArgs {
    /// Messages to publish and consume on each path.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    #[command(flatten)]
    common: Common,
}

/// Connects the configured bus (NATS, or the embedded one) and provisions it; returns a
/// description for the operator.
pub async fn connect(config: &Config) -> anyhow::Result<String> {
    match &config.nats_url {
        Some(url) => {
            let bus = Bus::connect(BusConfig { url: url.clone(), ..BusConfig::default() }).await?;
            bus.provision().await?;
            Ok(format!("NATS JetStream at {}", loom_store::redact_url(url)))
        }
        None => {
            let bus = Bus::embedded(BusConfig::default())?;
            bus.provision().await?;
            Ok("embedded in-process bus (state is lost on restart)".into())
        }
    }
}

pub async fn run(args: BusArgs, config: &Config) -> anyhow::Result<()> {
    let _ = (args.messages, args.common.json, super::nats_url(config));
    anyhow::bail!("loom bench bus is wired once loom-bus exposes its bench")
}
