//! `loom bench agent`: N no-op tasks through one agent at concurrency 1 and 8, on a scratch bus
//! namespace that is deleted afterwards. Overhead is the time a task spends in the agent
//! outside the executor (slot acquired → result published and acked, minus the executor).
//! The sandbox's cost is the p50 of a trivial command (`true`) in the bubblewrap sandbox minus
//! the p50 of the same command unsandboxed, measured in the same run, interleaved. The LLM
//! loop's overhead is the p50, over every model turn of a few `llm` tasks against a scripted
//! chat completions server on localhost (native tool calls: `read_file`, `list_files`, then
//! `done`), of the time from the server's reply to the agent's next request, as the server sees
//! it: everything the agent does per turn outside the model call (reading the reply, the
//! action, the next request and its transport).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use loom_bus::{
    Bus, BusConfig, ConsumeOptions, ResultKind, TaskData, TaskKind, TaskMessage, TaskMetadata, TraceContext,
};
use loom_domain::{BeadId, DispatchId, ProjectId};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::agent::{Stats, lock, run_with};
use crate::config::CommandLimits;
use crate::sandbox::{Isolation, run_command};
use crate::{AgentConfig, Error, ExecutorKind, SandboxConfig};

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Where to run; its namespace is replaced by a scratch one per round.
    pub bus: BusConfig,
    /// Use the embedded in-process bus instead of NATS.
    pub embedded: bool,
    /// Tasks per round.
    pub tasks: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions { bus: BusConfig::default(), embedded: false, tasks: 2000 }
    }
}

/// The figures, with the field names `loom bench agent --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub tasks_per_s_c1: f64,
    pub tasks_per_s_c8: f64,
    /// p99 over both rounds.
    pub overhead_p99_ms: f64,
    /// p50 of `true` sandboxed − p50 of `true` unsandboxed; `None` when bubblewrap cannot run.
    pub sandbox_overhead_p50_ms: Option<f64>,
    /// p50 of the LLM loop's time per model turn outside the model call (scripted server).
    pub llm_overhead_p50_ms: f64,
}

/// `llm` tasks of the LLM figure, and model turns each (the last one is `done`).
const LLM_TASKS: usize = 20;
const LLM_TURNS: usize = 10;

/// Trivial commands run each way for the sandbox figure.
const SANDBOX_SAMPLES: usize = 60;

/// Runs both rounds.
pub async fn run(opts: BenchOptions) -> Result<BenchReport, Error> {
    let stats = Arc::new(Stats::default());
    let c1 = round(&opts, 1, stats.clone()).await?;
    let c8 = round(&opts, 8, stats.clone()).await?;
    let mut overhead = lock(&stats.overhead).clone();
    overhead.sort();
    let p99 = overhead.get((overhead.len() * 99 / 100).min(overhead.len().saturating_sub(1))).copied();
    Ok(BenchReport {
        tasks_per_s_c1: c1,
        tasks_per_s_c8: c8,
        overhead_p99_ms: p99.unwrap_or_default().as_secs_f64() * 1000.0,
        sandbox_overhead_p50_ms: sandbox_overhead().await?,
        llm_overhead_p50_ms: llm_overhead(&opts).await?,
    })
}

async fn sandbox_overhead() -> Result<Option<f64>, Error> {
    let config = SandboxConfig::default();
    if let Err(err) = crate::sandbox::probe(&config).await {
        tracing::warn!(%err, "no sandbox figure");
        return Ok(None);
    }
    let dir = std::env::temp_dir();
    let limits = CommandLimits { timeout: Duration::from_secs(30), output_cap: 4096 };
    let (sandboxed, plain) = (Isolation::new(&config), Isolation::none());
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..SANDBOX_SAMPLES {
        for (isolation, times) in [(&sandboxed, &mut with), (&plain, &mut without)] {
            let started = Instant::now();
            let out = run_command(isolation, &dir, "true", &limits, &[]).await?;
            if !out.success() {
                return Err(Error::Config(format!("`true` failed in the bench: {}", out.output)));
            }
            times.push(started.elapsed());
        }
    }
    let p50 = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2].as_secs_f64() * 1000.0
    };
    Ok(Some(p50(&mut with) - p50(&mut without)))
}

async fn round(opts: &BenchOptions, concurrency: usize, stats: Arc<Stats>) -> Result<f64, Error> {
    let config = BusConfig { namespace: Some(format!("bench{:08x}", rand::random::<u32>())), ..opts.bus.clone() };
    let bus = if opts.embedded { Bus::embedded(config)? } else { Bus::connect(config).await? };
    bus.provision().await?;
    let outcome = measure(&bus, opts.tasks, concurrency, stats).await;
    let cleanup = bus.destroy().await;
    bus.shutdown();
    let rate = outcome?;
    cleanup?;
    Ok(rate)
}

async fn measure(bus: &Bus, tasks: usize, concurrency: usize, stats: Arc<Stats>) -> Result<f64, Error> {
    let project = ProjectId::parse("bench").expect("valid id");
    let mut config = AgentConfig::new(project.clone(), std::env::temp_dir().join("loom-bench"), "");
    config.concurrency = concurrency;
    config.default_executor = ExecutorKind::Noop;
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(run_with(config, bus.clone(), shutdown.clone(), Some(stats)));
    let mut results = bus.consume_results(ConsumeOptions { max_in_flight: 512, prefetch: true }).await?;
    while bus.list_agents().await?.is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let mut msgs: Vec<_> = (0..tasks)
        .map(|i| bus.unsigned_task(&noop_task(&project, i), &TraceContext::default()))
        .collect::<Result<_, _>>()?;
    bus.sign_tasks(&mut msgs)?;
    for sent in bus.publish_batch(msgs).await {
        sent?;
    }
    let mut done = 0;
    while done < tasks {
        let next = tokio::time::timeout(Duration::from_secs(60), results.next()).await;
        let Ok(Some(received)) = next else {
            shutdown.cancel();
            return Err(Error::Config(format!("bench stalled after {done} of {tasks} results")));
        };
        if received.message.kind == ResultKind::Completed {
            done += 1;
        }
        received.delivery.ack_nowait().await?;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    agent.await.map_err(|e| Error::Config(format!("agent task failed: {e}")))??;
    Ok(tasks as f64 / elapsed.as_secs_f64())
}

fn noop_task(project: &ProjectId, i: usize) -> TaskMessage {
    TaskMessage {
        kind: TaskKind::Assigned,
        project_id: project.clone(),
        bead_id: BeadId::parse(&format!("bench-{}", loom_domain::base36(i as u64))).expect("valid id"),
        assigned_to: String::new(),
        task_data: TaskData { title: format!("noop {i}"), ..TaskData::default() },
        correlation_id: format!("bench-{i}"),
        timestamp: Utc::now(),
        metadata: TaskMetadata {
            dispatch_id: DispatchId::parse(&format!("b{:08x}{i}", rand::random::<u32>())).expect("valid id"),
            attempt: 1,
            role: None,
            executor: "noop".into(),
        },
    }
}

/// The LLM figure, in a scratch directory (a bare remote and the agent's work root) and bus
/// namespace that are removed afterwards.
async fn llm_overhead(opts: &BenchOptions) -> Result<f64, Error> {
    let dir = std::env::temp_dir().join(format!("loom-bench-llm-{:08x}", rand::random::<u32>()));
    let config = BusConfig { namespace: Some(format!("benchllm{:08x}", rand::random::<u32>())), ..opts.bus.clone() };
    let bus = if opts.embedded { Bus::embedded(config)? } else { Bus::connect(config).await? };
    let outcome = async {
        bus.provision().await?;
        llm_measure(&bus, &dir).await
    }
    .await;
    let cleanup = bus.destroy().await;
    bus.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    let figure = outcome?;
    cleanup?;
    Ok(figure)
}

async fn llm_measure(bus: &Bus, dir: &std::path::Path) -> Result<f64, Error> {
    let remote = seed_remote(dir)?;
    let model = scripted_model().await?;
    let project = ProjectId::parse("bench").expect("valid id");
    let mut config = AgentConfig::new(project.clone(), dir.join("work"), remote);
    config.default_executor = ExecutorKind::Llm;
    // Its actions run no command: the figure is the loop's, not the sandbox's.
    config.sandbox.mode = crate::SandboxMode::None;
    config.llm.base_url = model.url.clone();
    config.llm.model = "bench".into();
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(run_with(config, bus.clone(), shutdown.clone(), None));
    let measured = async {
        let mut results = bus.consume_results(ConsumeOptions { max_in_flight: 64, prefetch: true }).await?;
        while bus.list_agents().await?.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let msgs = (0..LLM_TASKS)
            .map(|i| {
                let mut task = noop_task(&project, i);
                task.metadata.executor = "llm".into();
                bus.task(&task, &TraceContext::default())
            })
            .collect::<Result<_, _>>()?;
        for sent in bus.publish_batch(msgs).await {
            sent?;
        }
        let mut done = 0;
        while done < LLM_TASKS {
            let next = tokio::time::timeout(Duration::from_secs(60), results.next()).await;
            let Ok(Some(received)) = next else {
                return Err(Error::Config(format!("the LLM bench stalled after {done} of {LLM_TASKS} results")));
            };
            if received.message.kind == ResultKind::Completed {
                done += 1;
            } else if received.message.kind == ResultKind::Failed {
                return Err(Error::Config(format!("an LLM bench task failed: {}", received.message.result.error)));
            }
            received.delivery.ack_nowait().await?;
        }
        Ok(())
    }
    .await;
    shutdown.cancel();
    agent.await.map_err(|e| Error::Config(format!("agent task failed: {e}")))??;
    model.server.abort();
    measured?;
    let mut turns = lock(&model.gaps).clone();
    if turns.len() < LLM_TASKS * (LLM_TURNS - 1) {
        return Err(Error::Config(format!("the LLM bench timed only {} turns", turns.len())));
    }
    turns.sort();
    Ok(turns[turns.len() / 2].as_secs_f64() * 1000.0)
}

/// A bare repository with one commit, `README.md`.
fn seed_remote(dir: &std::path::Path) -> Result<String, Error> {
    let (remote, seed) = (dir.join("remote.git"), dir.join("seed"));
    std::fs::create_dir_all(&seed).map_err(|e| Error::io("creating the LLM bench directory", e))?;
    std::fs::write(seed.join("README.md"), "# bench\n").map_err(|e| Error::io("writing the bench seed", e))?;
    let git = |cwd: &std::path::Path, args: &[&str]| -> Result<(), Error> {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=bench", "-c", "user.email=bench@loom.invalid"])
            .args(args)
            .current_dir(cwd)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .map_err(|e| Error::io("running git for the LLM bench", e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Error::Config(format!("git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr))))
        }
    };
    let remote_s = remote.to_str().ok_or_else(|| Error::Config("the temporary directory is not UTF-8".into()))?;
    git(dir, &["init", "-q", "--bare", "-b", "main", remote_s])?;
    git(&seed, &["init", "-q", "-b", "main"])?;
    git(&seed, &["add", "-A"])?;
    git(&seed, &["commit", "-q", "-m", "seed"])?;
    git(&seed, &["push", "-q", remote_s, "main"])?;
    Ok(remote_s.to_owned())
}

struct ScriptedModel {
    url: String,
    server: tokio::task::JoinHandle<()>,
    /// Per turn but a conversation's first: from the reply's last byte written to the next
    /// request's complete arrival, i.e. all the agent's time between two model calls.
    gaps: Arc<std::sync::Mutex<Vec<Duration>>>,
}

/// The scripted model's clock: per conversation (its task message), when it last answered.
#[derive(Default)]
struct Timing {
    answered: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
    gaps: Arc<std::sync::Mutex<Vec<Duration>>>,
}

/// A chat completions server on localhost that answers at once: `read_file` and `list_files`
/// calls until the conversation holds `LLM_TURNS - 1` tool answers, then `done`. Plain HTTP/1.1 with keep-alive,
/// enough for the agent's client.
async fn scripted_model() -> Result<ScriptedModel, Error> {
    let listener =
        tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| Error::io("binding the scripted model", e))?;
    let addr = listener.local_addr().map_err(|e| Error::io("binding the scripted model", e))?;
    let timing = Arc::new(Timing::default());
    let gaps = timing.gaps.clone();
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_model(stream, timing.clone()));
        }
    });
    Ok(ScriptedModel { url: format!("http://{addr}"), server, gaps })
}

async fn serve_model(mut stream: tokio::net::TcpStream, timing: Arc<Timing>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < end + 4 + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let arrived = Instant::now();
        let body: serde_json::Value = serde_json::from_slice(&buf[end + 4..end + 4 + length]).unwrap_or_default();
        buf.drain(..end + 4 + length);
        let messages = body["messages"].as_array().map(Vec::as_slice).unwrap_or_default();
        let conversation = messages.get(1).map(|m| m["content"].to_string()).unwrap_or_default();
        if let Some(last) = lock(&timing.answered).get(&conversation) {
            lock(&timing.gaps).push(arrived - *last);
        }
        let answered = messages.iter().filter(|m| m["role"] == "tool").count();
        // Alternating, as the loop stops a model that repeats itself.
        let (name, args) = if answered + 1 < LLM_TURNS && answered % 2 == 0 {
            ("read_file", r#"{"path":"README.md"}"#)
        } else if answered + 1 < LLM_TURNS {
            ("list_files", "{}")
        } else {
            ("done", r#"{"summary":"read it"}"#)
        };
        let reply = serde_json::json!({
            "id": "bench", "object": "chat.completion", "model": "bench",
            "choices": [{ "index": 0, "finish_reason": "tool_calls", "message": { "role": "assistant", "content": null,
                "tool_calls": [{ "id": format!("call_{answered}"), "type": "function",
                                 "function": { "name": name, "arguments": args } }] } }],
            "usage": { "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2 },
        })
        .to_string();
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
            reply.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
        lock(&timing.answered).insert(conversation, Instant::now());
    }
}
