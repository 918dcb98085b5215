//! The commands that talk to a running control plane through its HTTP API: tables for people,
//! `--json` for scripts.

use std::collections::BTreeMap;

use anyhow::Context;
use clap::{Args, Subcommand};
use futures::StreamExt;
use loom_api::{CreateBead, ProjectRequest, UpdateBead};
use loom_client::Client;

use crate::config::Config;

pub mod connectors;
mod print;

use print::{print_bead, print_beads, print_conversation, print_json, print_projects};

#[derive(Debug, Args)]
pub struct Output {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Where a project's work lands; what is not given stays the project's.
#[derive(Debug, Args)]
pub struct GitArgs {
    /// The repository: a URL or a local path (a relative one is taken from the current directory).
    #[arg(long)]
    pub repo: Option<String>,
    #[arg(long)]
    pub branch: Option<String>,
    /// `direct` or `branch-pr`.
    #[arg(long)]
    pub git_strategy: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ProjectCmd {
    /// Register a project (a git repository).
    Add {
        id: String,
        /// The repository: a URL or a local path (a relative one is taken from the current
        /// directory and sent absolute).
        #[arg(long)]
        repo: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        branch: Option<String>,
        /// Prefix of the project's bead ids (default: derived from the id).
        #[arg(long)]
        prefix: Option<String>,
        /// `direct` or `branch-pr`.
        #[arg(long)]
        git_strategy: Option<String>,
        /// Context entries `key=value` (e.g. `test=cargo test`); repeatable.
        #[arg(long = "context", value_parser = parse_kv)]
        context: Vec<(String, String)>,
        #[command(flatten)]
        out: Output,
    },
    /// Change a project's settings; what is not given stays as it is. `loom up` restarts the
    /// project's agent when its repository, branch or git strategy changes, and stops it when
    /// the project is archived.
    Update {
        id: String,
        #[command(flatten)]
        git: GitArgs,
        /// `active`, `paused` or `archived`.
        #[arg(long)]
        status: Option<String>,
        /// Context entries `key=value` to set; repeatable.
        #[arg(long = "context", value_parser = parse_kv)]
        context: Vec<(String, String)>,
        #[command(flatten)]
        out: Output,
    },
    List(Output),
    /// One project in full.
    Show {
        id: String,
        #[command(flatten)]
        out: Output,
    },
    /// Delete a project and its beads (refused while its beads run, or while beads of other
    /// projects wait on them).
    Rm {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum BeadCmd {
    /// Create a bead.
    Create {
        #[arg(long)]
        project: String,
        #[arg(long)]
        title: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long)]
        priority: Option<i64>,
        #[arg(long = "type")]
        bead_type: Option<String>,
        /// A bead this one waits on; repeatable.
        #[arg(long = "blocked-by")]
        blocked_by: Vec<String>,
        /// Context entries `key=value` (e.g. `command=make test`, `executor=shell`); repeatable.
        #[arg(long = "context", value_parser = parse_kv)]
        context: Vec<(String, String)>,
        #[command(flatten)]
        out: Output,
    },
    /// List beads (filters combine).
    List {
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        out: Output,
    },
    /// One bead in full.
    Show {
        id: String,
        #[command(flatten)]
        out: Output,
    },
    /// Change a bead's title, priority, status or description.
    Update {
        id: String,
        #[arg(long)]
        title: Option<String>,
        #[arg(long)]
        priority: Option<i64>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// Take an open, unblocked bead to work on yourself (no agent gets it); close it when done.
    Claim {
        id: String,
        /// Who claims (becomes the assignee).
        #[arg(long = "as", value_name = "NAME")]
        claimer: String,
        /// Lease in seconds (default: the control plane's); the bead is dispatched again after it.
        #[arg(long)]
        lease_secs: Option<u64>,
        #[command(flatten)]
        out: Output,
    },
    /// Renew the lease of a bead you claimed, before it lapses.
    Renew {
        id: String,
        /// The bead's dispatch id, as `claim` showed it.
        #[arg(long = "dispatch", value_name = "DISPATCH_ID")]
        dispatch_id: String,
        /// The lease runs this many seconds from now (default: the control plane's).
        #[arg(long)]
        lease_secs: Option<u64>,
        #[command(flatten)]
        out: Output,
    },
    /// Close a bead by hand (a running task is cancelled).
    Close {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reopen a closed or blocked bead, with a fresh retry budget.
    Reopen { id: String },
    /// Dependencies between beads.
    #[command(subcommand)]
    Dep(DepCmd),
    /// The beads of a project ready to run, in dispatch order.
    Ready {
        #[arg(long)]
        project: String,
        #[command(flatten)]
        out: Output,
    },
    /// Import a bd (beads) tracker's `.beads/issues.jsonl` into a project, streamed through the
    /// API. Ids, statuses, types, edges and every other field are kept (an export gives them
    /// back); importing the same file twice changes nothing. Prints what was created, updated
    /// and skipped, and every line with an error by number; exits 1 if any line had one.
    Import {
        #[arg(long)]
        project: String,
        /// The JSONL file (`-` for standard input).
        file: std::path::PathBuf,
        /// An edge to an issue neither in the file nor in the project: `keep` it as an external
        /// reference (an open decision bead its dependants wait on until closed), or `skip` it.
        #[arg(long, value_enum, default_value_t = DanglingArg::Keep)]
        dangling: DanglingArg,
        #[command(flatten)]
        out: Output,
    },
    /// One attempt's conversation with the model: the system prompt, each reply, each action
    /// and its result (bounded, secrets redacted).
    Conversation {
        id: String,
        /// The attempt number (1 for the first); the latest when left out.
        #[arg(long)]
        attempt: Option<u32>,
        #[command(flatten)]
        out: Output,
    },
    /// Export a project's beads as bd JSONL (to standard output, or `--output FILE`), streamed.
    Export {
        #[arg(long)]
        project: String,
        #[arg(long, value_enum, default_value_t = Format::Bd)]
        format: Format,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
}

/// Decisions: beads an agent's `escalate` created, which its bead waits on until a person answers.
#[derive(Debug, Subcommand)]
pub enum DecisionCmd {
    /// The decisions waiting for an answer (open `decision` beads).
    List {
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// Answer a decision: it is closed with the answer, and the bead that escalated runs again
    /// with the answer in its prompt.
    Answer {
        id: String,
        #[arg(long)]
        text: String,
        #[command(flatten)]
        out: Output,
    },
}

/// `--dangling`: what an import does with an edge to an issue it cannot find.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DanglingArg {
    Keep,
    Skip,
}

/// `--format` of `loom bead export`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    /// bd's `issues.jsonl`: one issue per line.
    Bd,
}

#[derive(Debug, Subcommand)]
pub enum DepCmd {
    /// BEAD waits on BLOCKER.
    Add { bead: String, blocker: String },
    /// BEAD no longer waits on BLOCKER.
    Rm { bead: String, blocker: String },
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("{s:?} is not key=value"))
}

fn client(config: &Config) -> Client {
    Client::new(&config.api_url(), config.api_key.clone())
}

pub async fn project(cmd: ProjectCmd, config: &Config) -> anyhow::Result<()> {
    let c = client(config);
    match cmd {
        ProjectCmd::Add { id, repo, name, branch, prefix, git_strategy, context, out } => {
            let req = ProjectRequest {
                id: Some(id),
                name,
                git_repo: crate::paths::repo(&repo).context("--repo")?,
                branch,
                bead_prefix: prefix,
                context: context.into_iter().collect::<BTreeMap<_, _>>(),
                git_strategy,
                status: None,
            };
            let p = c.create_project(&req).await?;
            if out.json { print_json(&p)? } else { println!("project {} added (bead prefix {})", p.id, p.bead_prefix) }
        }
        ProjectCmd::Update { id, git: GitArgs { repo, branch, git_strategy }, status, context, out } => {
            let p = c.project(&id).await?;
            let mut merged = p.context;
            merged.extend(context);
            let req = ProjectRequest {
                id: None,
                name: Some(p.name),
                git_repo: match repo {
                    Some(r) => crate::paths::repo(&r).context("--repo")?,
                    None => p.git_repo,
                },
                branch: Some(branch.unwrap_or(p.branch)),
                bead_prefix: Some(p.bead_prefix),
                context: merged,
                git_strategy: Some(git_strategy.unwrap_or(p.git_strategy)),
                status: Some(status.unwrap_or(p.status)),
            };
            let p = c.update_project(&id, &req).await?;
            if out.json { print_json(&p)? } else { print_projects(&[p]) }
        }
        ProjectCmd::List(out) => {
            let ps = c.projects().await?;
            if out.json { print_json(&ps)? } else { print_projects(&ps) }
        }
        ProjectCmd::Show { id, out } => {
            let p = c.project(&id).await?;
            if out.json { print_json(&p)? } else { print_projects(&[p]) }
        }
        ProjectCmd::Rm { id } => {
            c.delete_project(&id).await?;
            println!("project {id} removed");
        }
    }
    Ok(())
}

pub async fn bead(cmd: BeadCmd, config: &Config) -> anyhow::Result<()> {
    let c = client(config);
    match cmd {
        BeadCmd::Create { project, title, description, priority, bead_type, blocked_by, context, out } => {
            let req = CreateBead {
                project_id: project,
                title,
                description,
                bead_type,
                priority,
                blocked_by,
                context: context.into_iter().collect(),
                ..CreateBead::default()
            };
            let b = c.create_bead(&req).await?;
            if out.json { print_json(&b)? } else { println!("{}", b.id) }
        }
        BeadCmd::List { project, status, limit, out } => {
            let mut q = vec![format!("limit={limit}")];
            q.extend(project.map(|p| format!("project_id={p}")));
            q.extend(status.map(|s| format!("status={s}")));
            let page = c.beads(&q.join("&")).await?;
            if out.json { print_json(&page)? } else { print_beads(&page.beads) }
        }
        BeadCmd::Show { id, out } => {
            let b = c.bead(&id).await?;
            if out.json { print_json(&b)? } else { print_bead(&b) }
        }
        BeadCmd::Update { id, title, priority, status, description, out } => {
            let req = UpdateBead { title, priority, status, description, ..UpdateBead::default() };
            let b = c.update_bead(&id, &req).await?;
            if out.json { print_json(&b)? } else { print_bead(&b) }
        }
        BeadCmd::Claim { id, claimer, lease_secs, out } => {
            let b = c.claim_bead(&id, &claimer, lease_secs).await?;
            if out.json { print_json(&b)? } else { print_bead(&b) }
        }
        BeadCmd::Renew { id, dispatch_id, lease_secs, out } => {
            let b = c.renew_lease(&id, &dispatch_id, lease_secs).await?;
            if out.json { print_json(&b)? } else { print_bead(&b) }
        }
        BeadCmd::Close { id, reason } => println!("{} closed", c.close_bead(&id, reason).await?.id),
        BeadCmd::Reopen { id } => println!("{} reopened", c.reopen_bead(&id).await?.id),
        BeadCmd::Dep(DepCmd::Add { bead, blocker }) => {
            c.add_dependency(&bead, &blocker).await?;
            println!("{bead} now waits on {blocker}");
        }
        BeadCmd::Dep(DepCmd::Rm { bead, blocker }) => {
            c.remove_dependency(&bead, &blocker).await?;
            println!("{bead} no longer waits on {blocker}");
        }
        BeadCmd::Ready { project, out } => {
            let beads = c.ready(&project).await?;
            if out.json { print_json(&beads)? } else { print_beads(&beads) }
        }
        BeadCmd::Import { project, file, dangling, out } => import(&c, &project, &file, dangling, out).await?,
        BeadCmd::Export { project, format: Format::Bd, output } => export(&c, &project, output.as_deref()).await?,
        BeadCmd::Conversation { id, attempt, out } => {
            let conv = c.conversation(&id, attempt).await?;
            if out.json { print_json(&conv)? } else { print_conversation(&conv) }
        }
    }
    Ok(())
}

pub async fn decision(cmd: DecisionCmd, config: &Config) -> anyhow::Result<()> {
    let c = client(config);
    match cmd {
        DecisionCmd::List { project, out } => {
            let mut q = vec!["type=decision".to_owned(), "status=open".to_owned(), "limit=1000".to_owned()];
            q.extend(project.map(|p| format!("project_id={p}")));
            let page = c.beads(&q.join("&")).await?;
            if out.json { print_json(&page.beads)? } else { print_beads(&page.beads) }
        }
        DecisionCmd::Answer { id, text, out } => {
            let b = c.answer_decision(&id, &text).await?;
            if out.json {
                print_json(&b)?
            } else {
                let waiting = b.context.get("escalated_from").map(|w| format!("; {w} runs again")).unwrap_or_default();
                println!("{} answered{waiting}", b.id);
            }
        }
    }
    Ok(())
}

/// Streams `file` to the import route, with a progress bar of the bytes sent on a terminal.
async fn import(
    c: &Client,
    project: &str,
    file: &std::path::Path,
    dangling: DanglingArg,
    out: Output,
) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let (reader, size): (Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>, Option<u64>) =
        if file == std::path::Path::new("-") {
            (Box::new(tokio::io::stdin()), None)
        } else {
            let f = tokio::fs::File::open(file).await.with_context(|| format!("opening {}", file.display()))?;
            let size = f.metadata().await.ok().map(|m| m.len());
            (Box::new(f), size)
        };
    let bar = if std::io::stderr().is_terminal() && !out.json {
        let bar = match size {
            Some(n) => indicatif::ProgressBar::new(n).with_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .expect("a valid template"),
            ),
            None => indicatif::ProgressBar::new_spinner(),
        };
        bar.set_message("sending");
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let (sent, waiting) = (bar.clone(), bar.clone());
    let body = tokio_util::io::ReaderStream::with_capacity(reader, 64 * 1024)
        .inspect(move |chunk| {
            if let Ok(c) = chunk {
                sent.inc(c.len() as u64);
            }
        })
        .chain(futures::stream::once(async move {
            waiting.set_message("importing");
            Ok(bytes::Bytes::new())
        }));
    let dangling = match dangling {
        DanglingArg::Keep => loom_api::Dangling::Keep,
        DanglingArg::Skip => loom_api::Dangling::Skip,
    };
    let summary = c.import_beads(project, dangling, body).await;
    bar.finish_and_clear();
    let summary = summary?;
    if out.json {
        print_json(&summary)?;
    } else {
        print::print_import(&summary);
    }
    if !summary.errors.is_empty() {
        anyhow::bail!(
            "{} of {} lines had errors (listed above); the rest was imported",
            summary.errors.len(),
            summary.lines
        );
    }
    Ok(())
}

async fn export(c: &Client, project: &str, output: Option<&std::path::Path>) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut sink: Box<dyn tokio::io::AsyncWrite + Unpin> = match output {
        Some(path) => {
            Box::new(tokio::fs::File::create(path).await.with_context(|| format!("creating {}", path.display()))?)
        }
        None => Box::new(tokio::io::stdout()),
    };
    let mut chunks = std::pin::pin!(c.export_beads(project).await?);
    while let Some(chunk) = chunks.next().await {
        sink.write_all(&chunk?).await?;
    }
    sink.flush().await?;
    Ok(())
}

pub async fn agents(config: &Config, out: Output) -> anyhow::Result<()> {
    let agents = client(config).agents().await?;
    if out.json {
        return print_json(&agents);
    }
    println!("{:<36} {:<14} {:<10} {:<8} BEAD", "ID", "PROJECT", "ROLE", "STATUS");
    for a in agents.as_array().into_iter().flatten() {
        let s = |k: &str| a[k].as_str().unwrap_or("").to_owned();
        println!("{:<36} {:<14} {:<10} {:<8} {}", s("id"), s("project_id"), s("role"), s("status"), s("current_bead"));
    }
    Ok(())
}

pub async fn status(config: &Config, out: Output) -> anyhow::Result<()> {
    let s = client(config).status().await?;
    if out.json {
        return print_json(&s);
    }
    println!("projects: {}   agents: {}", s["projects"], s["agents"]);
    let beads = s["beads"].as_object().cloned().unwrap_or_default();
    println!("beads: {}", beads.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "));
    let usage: Vec<loom_api::UsageDto> = serde_json::from_value(s["usage"].clone()).unwrap_or_default();
    if !usage.is_empty() {
        println!(
            "{:<20} {:>8} {:>14} {:>14} {:>14} {:>12}",
            "PROJECT", "ATTEMPTS", "PROMPT", "COMPLETION", "TOKENS", "COST_USD"
        );
        for u in usage {
            println!(
                "{:<20} {:>8} {:>14} {:>14} {:>14} {:>12.4}",
                u.project_id, u.attempts, u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cost_usd
            );
        }
    }
    Ok(())
}

pub async fn events(config: &Config, follow: bool, after: Option<i64>, out: Output) -> anyhow::Result<()> {
    let c = client(config);
    let show = |e: &loom_api::EventDto| -> anyhow::Result<()> {
        if out.json {
            println!("{}", serde_json::to_string(e)?);
        } else {
            println!("{:>6} {} {:<24} {}", e.seq, e.timestamp.format("%H:%M:%S"), e.kind, e.description);
        }
        Ok(())
    };
    if !follow {
        for e in c.events(after.unwrap_or(0), 1000).await? {
            show(&e)?;
        }
        return Ok(());
    }
    let mut stream = Box::pin(c.follow_events(after).await?);
    while let Some(e) = stream.next().await {
        show(&e.context("event stream")?)?;
    }
    Ok(())
}
