//! `loom connector add|list|show|update|rm|check`, through the control plane's
//! `/api/v1/connectors`. Secret values never appear on the command line: `--secret-env
//! name=VAR` reads one from an environment variable, `--secret-file name=PATH` from a file.

use std::collections::BTreeMap;

use anyhow::Context;
use clap::{Args, Subcommand};
use loom_api::{ConnectorDto, ConnectorRequest, UpdateConnector};

use super::print::print_json;
use super::{Output, client, parse_kv};
use crate::config::Config;

#[derive(Debug, Args)]
pub struct ConnectorFields {
    /// `llm_provider`, `prometheus`, `grafana`, `jaeger`, `git_host`, `webhook` or `http`.
    #[arg(long)]
    kind: Option<String>,
    /// Base URL (an LLM provider's with or without `/v1`).
    #[arg(long)]
    url: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// `enabled` or `disabled`.
    #[arg(long)]
    mode: Option<String>,
    /// A setting `key=value` (`default_model=…`, `health_path=/ping`, …); repeatable.
    #[arg(long = "setting", value_parser = parse_kv)]
    settings: Vec<(String, String)>,
    /// A secret read from an environment variable: `api_key=OPENAI_API_KEY`; repeatable.
    #[arg(long = "secret-env", value_parser = parse_kv)]
    secret_env: Vec<(String, String)>,
    /// A secret read from a file (trimmed): `signing_secret=/run/secrets/hook`; repeatable.
    #[arg(long = "secret-file", value_parser = parse_kv)]
    secret_file: Vec<(String, String)>,
    /// An event type a webhook subscribes to (`bead.closed`, `*`); repeatable.
    #[arg(long = "event")]
    events: Vec<String>,
    #[arg(long)]
    check_interval_ms: Option<u64>,
    #[arg(long)]
    check_timeout_ms: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum ConnectorCmd {
    /// Register a connector.
    Add {
        id: String,
        #[command(flatten)]
        fields: ConnectorFields,
        #[command(flatten)]
        out: Output,
    },
    /// Connectors with their health.
    List(Output),
    /// One connector (secrets by name only).
    Show {
        id: String,
        #[command(flatten)]
        out: Output,
    },
    /// Change a connector; what is not given stays as it is (secrets included).
    Update {
        id: String,
        #[command(flatten)]
        fields: ConnectorFields,
        /// A secret to delete; repeatable.
        #[arg(long = "remove-secret")]
        remove_secrets: Vec<String>,
        /// Clear the webhook's subscriptions before adding `--event`s.
        #[arg(long)]
        clear_events: bool,
        #[command(flatten)]
        out: Output,
    },
    /// Remove a connector.
    Rm { id: String },
    /// Check a connector's health now.
    Check {
        id: String,
        #[command(flatten)]
        out: Output,
    },
}

pub async fn run(cmd: ConnectorCmd, config: &Config) -> anyhow::Result<()> {
    let c = client(config);
    match cmd {
        ConnectorCmd::Add { id, fields, out } => {
            let secrets = secrets(&fields)?;
            let req = ConnectorRequest {
                id,
                kind: fields.kind.context("--kind is required")?,
                mode: fields.mode,
                url: fields.url.context("--url is required")?,
                description: fields.description.unwrap_or_default(),
                settings: fields.settings.into_iter().collect(),
                secrets,
                event_types: fields.events,
                check_interval_ms: fields.check_interval_ms,
                check_timeout_ms: fields.check_timeout_ms,
            };
            show(&c.create_connector(&req).await?, out.json)
        }
        ConnectorCmd::List(out) => {
            let list = c.connectors().await?;
            if out.json {
                return print_json(&list);
            }
            println!("{:<20} {:<13} {:<9} {:<10} URL", "ID", "KIND", "MODE", "HEALTH");
            for x in &list {
                println!("{:<20} {:<13} {:<9} {:<10} {}", x.id, x.kind, x.mode, x.health.status, x.url);
            }
            Ok(())
        }
        ConnectorCmd::Show { id, out } => show(&c.connector(&id).await?, out.json),
        ConnectorCmd::Update { id, fields, remove_secrets, clear_events, out } => {
            let now = c.connector(&id).await?;
            let secrets = secrets(&fields)?;
            let mut settings = now.settings.clone();
            settings.extend(fields.settings);
            let mut event_types = if clear_events { Vec::new() } else { now.event_types.clone() };
            event_types.extend(fields.events);
            let req = UpdateConnector {
                expected_version: now.version,
                kind: fields.kind.unwrap_or(now.kind),
                mode: Some(fields.mode.unwrap_or(now.mode)),
                url: fields.url.unwrap_or(now.url),
                description: fields.description.unwrap_or(now.description),
                settings,
                secrets,
                remove_secrets,
                event_types,
                check_interval_ms: Some(fields.check_interval_ms.unwrap_or(now.check_interval_ms)),
                check_timeout_ms: Some(fields.check_timeout_ms.unwrap_or(now.check_timeout_ms)),
            };
            show(&c.update_connector(&id, &req).await?, out.json)
        }
        ConnectorCmd::Rm { id } => {
            c.delete_connector(&id).await?;
            println!("removed connector {id}");
            Ok(())
        }
        ConnectorCmd::Check { id, out } => {
            let h = c.check_connector(&id).await?;
            if out.json {
                return print_json(&h);
            }
            println!("{}: {} ({} ms){}", h.connector_id, h.status, h.latency_ms, suffix(&h.message));
            if !h.models.is_empty() {
                println!("models: {}", h.models.join(", "));
            }
            Ok(())
        }
    }
}

fn suffix(message: &str) -> String {
    if message.is_empty() { String::new() } else { format!(": {message}") }
}

fn secrets(fields: &ConnectorFields) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (name, var) in &fields.secret_env {
        let value = std::env::var(var).with_context(|| format!("--secret-env {name}={var}: {var} is not set"))?;
        out.insert(name.clone(), value);
    }
    for (name, path) in &fields.secret_file {
        let value =
            std::fs::read_to_string(path).with_context(|| format!("--secret-file {name}: cannot read {path}"))?;
        out.insert(name.clone(), value.trim().to_owned());
    }
    Ok(out)
}

fn show(c: &ConnectorDto, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(c);
    }
    println!("{} ({}, {}) version {}", c.id, c.kind, c.mode, c.version);
    println!("url:      {}", c.url);
    if !c.description.is_empty() {
        println!("about:    {}", c.description);
    }
    for (k, v) in &c.settings {
        println!("setting:  {k} = {v}");
    }
    for (k, v) in &c.secrets {
        println!("secret:   {k} = {v}");
    }
    if !c.event_types.is_empty() {
        println!("events:   {}", c.event_types.join(", "));
    }
    println!("checks:   every {} ms, timeout {} ms", c.check_interval_ms, c.check_timeout_ms);
    println!("health:   {}{}", c.health.status, suffix(&c.health.message));
    Ok(())
}
