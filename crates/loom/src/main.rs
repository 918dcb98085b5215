//! `loom`: the one binary. It parses the command line, loads the layered configuration, installs
//! logging and composes the services; the services themselves live in library crates.

mod agents;
mod bench;
mod certs;
mod cli;
mod compose;
mod config;
mod paths;
mod personas;
mod requeue;
mod serve;
mod storage;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc rather than the system allocator: every service here allocates per message (JSON,
/// headers, rows), and glibc's malloc was a quarter of the process's CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Overrides};

/// Loom orchestrates autonomous AI agents that do software work.
#[derive(Debug, Parser)]
#[command(name = "loom", version, about)]
struct Cli {
    /// Configuration file (default: ./loom.toml when present).
    #[arg(long, global = true, env = "LOOM_CONFIG")]
    config: Option<PathBuf>,
    /// PostgreSQL URL; without one, Loom uses an embedded SQLite file.
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// NATS URL; without one, Loom uses its embedded in-process bus.
    #[arg(long, global = true)]
    nats_url: Option<String>,
    /// Directory for embedded state.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, global = true)]
    log_format: Option<String>,
    /// The control plane's URL, for commands that talk to it (default http://{http_addr}).
    #[arg(long, global = true, env = "LOOM_API_URL")]
    api_url: Option<String>,
    /// API key for those commands.
    #[arg(long, global = true, env = "LOOM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run Loom on this machine (embedded SQLite and bus unless URLs are configured).
    Up,
    /// Run one service of a distributed deployment.
    #[command(subcommand)]
    Serve(serve::ServeCommand),
    /// Database administration.
    #[command(subcommand)]
    Db(DbCommand),
    /// Configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Certificates and keys (`loom certs dev`: a local CA and everything TLS and task signing need).
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Personas (`personas/<name>/SKILL.md`).
    #[command(subcommand)]
    Persona(PersonaCommand),
    /// Measure Loom against raw baselines.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Projects (through the API).
    #[command(subcommand)]
    Project(cli::ProjectCmd),
    /// Beads (through the API).
    #[command(subcommand)]
    Bead(cli::BeadCmd),
    /// Decisions agents escalated to a person (through the API).
    #[command(subcommand)]
    Decision(cli::DecisionCmd),
    /// Agents (through the API).
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Connectors: LLM providers, observability, git hosts, webhooks (through the API).
    #[command(subcommand)]
    Connector(cli::connectors::ConnectorCmd),
    /// Counts of projects, beads by status and agents; tokens and cost per project.
    Status(cli::Output),
    /// The event log; `--follow` streams new events.
    Events {
        #[arg(long)]
        follow: bool,
        /// Start after this event sequence number.
        #[arg(long)]
        after: Option<i64>,
        #[command(flatten)]
        out: cli::Output,
    },
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Live agents from the registry.
    List(cli::Output),
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Apply pending migrations to the configured database.
    Migrate,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (secrets redacted).
    Show,
}

#[derive(Debug, Subcommand)]
enum PersonaCommand {
    /// Validate and list the personas: the built-in ones and those of a directory.
    List(PersonaArgs),
}

#[derive(Debug, Args)]
struct PersonaArgs {
    /// The personas directory overriding the built-in ones [default: `personas_dir` of the
    /// configuration, `personas`].
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides {
        database_url: cli.database_url.clone(),
        nats_url: cli.nats_url.clone(),
        data_dir: cli.data_dir.clone(),
        log_format: cli.log_format.clone(),
        api_url: cli.api_url.clone(),
        api_key: cli.api_key.clone(),
    };
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let format =
        if config.log_format == "json" { loom_telemetry::LogFormat::Json } else { loom_telemetry::LogFormat::Text };
    // Multi-thread: the trace exporter's batch thread hands its exports to the runtime.
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut export = trace_service(&cli.command).map(loom_telemetry::TraceExport::from_env).unwrap_or_default();
    if matches!(&cli.command, Command::Up) {
        // Every service in one process: each part's spans under its own service name.
        export = export.by_part();
    }
    if matches!(&cli.command, Command::Bench(bench::BenchCommand::E2e(_))) {
        // `loom bench e2e` measures the cost of tracing: spans go to a receiver in this process,
        // exported only while the bench says so.
        match runtime.block_on(bench::e2e::start_receiver()) {
            Ok(endpoint) => export = loom_telemetry::TraceExport::to(endpoint, "loom-bench"),
            Err(e) => eprintln!("warning: no in-process OTLP receiver, so no tracing overhead figure: {e}"),
        }
    }
    let telemetry = {
        let _in_runtime = runtime.enter();
        match loom_telemetry::init_with(format, &config.log_level, &export) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    };
    if matches!(&cli.command, Command::Bench(_)) {
        loom_telemetry::set_exporting(false);
    }
    let code = match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // The last spans go out before the runtime stops.
    telemetry.shutdown();
    code
}

/// The default OpenTelemetry `service.name` of a command (`OTEL_SERVICE_NAME` overrides it; under
/// `loom up`, the name of the spans of none of its parts);
/// `None`: the command never exports traces (benchmarks measure with tracing on their own terms).
fn trace_service(command: &Command) -> Option<&'static str> {
    Some(match command {
        Command::Up => "loom",
        Command::Serve(serve::ServeCommand::Db(_)) => "loom-db",
        Command::Serve(serve::ServeCommand::ControlPlane(_)) => "loom-control-plane",
        Command::Serve(serve::ServeCommand::Agent(_)) => "loom-agent",
        Command::Serve(serve::ServeCommand::Connectors(_)) => "loom-connectors",
        Command::Bench(_) => return None,
        _ => "loom-cli",
    })
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Up => up::run(&config).await,
        Command::Serve(cmd) => serve::run(cmd, &config).await,
        Command::Db(DbCommand::Migrate) => storage::migrate(&config).await,
        Command::Config(ConfigCommand::Show) => {
            print!("{}", config.to_redacted_toml());
            Ok(())
        }
        Command::Certs(cmd) => certs::run(cmd),
        Command::Persona(PersonaCommand::List(args)) => {
            personas::list(args.dir.as_ref().unwrap_or(&config.personas_dir))
        }
        Command::Bench(cmd) => bench::run(cmd, &config).await,
        Command::Project(cmd) => cli::project(cmd, &config).await,
        Command::Bead(cmd) => cli::bead(cmd, &config).await,
        Command::Decision(cmd) => cli::decision(cmd, &config).await,
        Command::Agent(AgentCommand::List(out)) => cli::agents(&config, out).await,
        Command::Connector(cmd) => cli::connectors::run(cmd, &config).await,
        Command::Status(out) => cli::status(&config, out).await,
        Command::Events { follow, after, out } => cli::events(&config, follow, after, out).await,
    }
}
