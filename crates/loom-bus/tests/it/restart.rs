//! A real nats-server of our own, restarted in the middle of a stream of 10,000 tasks.
//!
//! - Restarted (SIGTERM, then started again on the same port and store): every task is
//!   consumed, and none is delivered again after its ack was confirmed.
//! - Crashed (SIGKILL): every task is still consumed (nothing acknowledged is lost). nats-server
//!   2.9 persists consumer ack state asynchronously, so acks confirmed in the last moments before
//!   a crash can be forgotten and those tasks redelivered: at-least-once, which the dispatch id
//!   fencing of DESIGN.md §3 turns into a single effect.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loom_bus::{Bus, BusConfig, ConsumeOptions, TraceContext};

use crate::support::{project, task, unique_namespace};

const NATS_SERVER: &str = "/usr/sbin/nats-server";
const MESSAGES: u64 = 10_000;

/// A nats-server child process, killed when dropped.
struct Server {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
}

impl Server {
    fn start() -> anyhow::Result<Server> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let store = tempfile::tempdir()?;
        let mut server = Server { child: None, port, store };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new(NATS_SERVER)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        wait_listening(self.port, self.store.path())
    }

    /// Stops the server: gracefully (SIGTERM, it flushes its state) or by crashing it (SIGKILL).
    fn stop(&mut self, crash: bool) {
        if let Some(mut child) = self.child.take() {
            if crash {
                child.kill().ok();
            } else {
                Command::new("kill").args(["-TERM", &child.id().to_string()]).status().ok();
            }
            child.wait().ok();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop(true);
    }
}

fn wait_listening(port: u16, store: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("nats-server on port {port} (store {}) did not start", store.display())
}

#[derive(Default)]
struct Tally {
    consumed: HashSet<String>,
    acked: HashSet<String>,
    after_ack: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_survives_a_server_restart_exactly_once() -> anyhow::Result<()> {
    let duplicates = stream_through_restart(false).await?;
    assert!(
        duplicates.is_empty(),
        "{} delivered again after a confirmed ack: {:?}",
        duplicates.len(),
        &duplicates[..duplicates.len().min(10)]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_is_lost_when_the_server_crashes() -> anyhow::Result<()> {
    let duplicates = stream_through_restart(true).await?;
    eprintln!("after a crash, {} acked tasks were redelivered", duplicates.len());
    Ok(())
}

/// Streams the tasks through a restart; returns the tasks delivered again after a confirmed ack.
async fn stream_through_restart(crash: bool) -> anyhow::Result<Vec<String>> {
    let mut server = Server::start()?;
    let config = BusConfig {
        url: server.url(),
        namespace: Some(unique_namespace()),
        ack_wait: Duration::from_secs(3),
        ..BusConfig::default()
    };
    let bus = Bus::connect(config).await?;
    let info = bus.server_info().expect("a NATS server");
    assert_eq!(info.port, server.port, "talking to our own server, not the shared one");
    bus.provision().await?;

    let tally: Arc<Mutex<Tally>> = Arc::default();
    let mut sub = bus.consume_tasks(&project(), None, ConsumeOptions { max_in_flight: 64, prefetch: true }).await?;
    let consumer = {
        let tally = tally.clone();
        tokio::spawn(async move {
            while let Some(r) = sub.next().await {
                let id = r.message.metadata.dispatch_id.to_string();
                let acked_before = {
                    let mut t = tally.lock().unwrap();
                    t.consumed.insert(id.clone());
                    t.acked.contains(&id)
                };
                if acked_before {
                    tally.lock().unwrap().after_ack.push(id.clone());
                }
                if r.delivery.ack().await.is_ok() {
                    tally.lock().unwrap().acked.insert(id);
                }
            }
        })
    };

    let started = Instant::now();
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move { publish_all(&bus).await })
    };
    // Restart the server once a good part of the stream went through.
    while tally.lock().unwrap().acked.len() < 3_000 {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "too slow before the restart");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop(crash);
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.spawn()?;

    publisher.await??;
    while tally.lock().unwrap().consumed.len() < MESSAGES as usize {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(90),
            "only {} of {MESSAGES} consumed",
            tally.lock().unwrap().consumed.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give any wrongful redelivery time to show up (longer than the ack wait).
    tokio::time::sleep(Duration::from_secs(4)).await;
    consumer.abort();
    assert_eq!(bus.server_info().map(|i| i.port), Some(server.port));
    let health = bus.health().await;
    assert!(health.is_ready(), "{health:?}");
    let t = tally.lock().unwrap();
    assert_eq!(t.consumed.len(), MESSAGES as usize);
    Ok(t.after_ack.clone())
}

/// Publishes every task, retrying failures (the server is down for a while); the dispatch id
/// dedupes a retry of a publish whose ack was lost.
async fn publish_all(bus: &Bus) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut todo: Vec<u64> = (0..MESSAGES).collect();
    while !todo.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "{} tasks never published", todo.len());
        let batch: Vec<u64> = todo.drain(..todo.len().min(500)).collect();
        let msgs =
            batch.iter().map(|n| bus.task(&task(*n), &TraceContext::default())).collect::<Result<Vec<_>, _>>()?;
        let results = bus.publish_batch(msgs).await;
        let failed: Vec<u64> = batch.iter().zip(results).filter(|(_, r)| r.is_err()).map(|(n, _)| *n).collect();
        if !failed.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            todo.extend(failed);
        }
    }
    Ok(())
}
