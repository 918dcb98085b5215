//! Test helpers: a bus per test with its own namespace, deleted at the end even on panic.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::Utc;
use loom_bus::{Bus, BusConfig, TaskData, TaskKind, TaskMessage, TaskMetadata};
use loom_domain::{BeadId, DispatchId, ProjectId};

pub fn nats_url() -> String {
    std::env::var("LOOM_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// Which implementation a conformance case runs against.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Embedded,
    JetStream,
}

/// A namespace no other test (or earlier run) uses.
pub fn unique_namespace() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("t{:x}{:x}{}", std::process::id(), rand::random::<u16>(), N.fetch_add(1, Ordering::Relaxed))
}

/// Short timings so redelivery and dead-letter cases run in seconds.
pub fn fast_config() -> BusConfig {
    BusConfig {
        url: nats_url(),
        namespace: Some(unique_namespace()),
        ack_wait: Duration::from_secs(2),
        backoff: vec![Duration::from_millis(100)],
        progress_interval: Duration::from_millis(300),
        agent_ttl: Duration::from_secs(2),
        ..BusConfig::default()
    }
}

/// A provisioned bus whose namespace is destroyed when dropped.
pub struct TestBus {
    pub bus: Bus,
}

impl std::ops::Deref for TestBus {
    type Target = Bus;
    fn deref(&self) -> &Bus {
        &self.bus
    }
}

impl TestBus {
    pub async fn new(kind: Kind, config: BusConfig) -> anyhow::Result<TestBus> {
        let bus = match kind {
            Kind::Embedded => Bus::embedded(config)?,
            Kind::JetStream => Bus::connect(config).await?,
        };
        let bus = TestBus { bus };
        bus.provision().await?;
        Ok(bus)
    }

    /// Another handle on the same bus, as a second process would have (own connection for
    /// JetStream; the same in-process bus for the embedded one).
    pub async fn peer(&self) -> anyhow::Result<Bus> {
        if self.bus.is_embedded() { Ok(self.bus.clone()) } else { Ok(Bus::connect(self.bus.config().clone()).await?) }
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        if self.bus.is_embedded() {
            return;
        }
        let config = self.bus.config().clone();
        // Drop cannot await; clean up on a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                let bus = Bus::connect(config).await;
                if let Err(err) = &bus {
                    eprintln!("cleanup cannot connect: {err}");
                }
                if let Ok(bus) = bus
                    && let Err(err) = bus.destroy().await
                {
                    eprintln!("cleanup of {:?} failed: {err}", bus.config().namespace);
                }
            });
        })
        .join();
    }
}

pub fn project() -> ProjectId {
    ProjectId::parse("proj").unwrap()
}

/// A task for bead `proj-{n}` with dispatch id `d{n}`.
pub fn task(n: u64) -> TaskMessage {
    TaskMessage {
        kind: TaskKind::Assigned,
        project_id: project(),
        bead_id: BeadId::parse(&format!("proj-{}", loom_domain::base36(n))).unwrap(),
        assigned_to: String::new(),
        task_data: TaskData { title: format!("task {n}"), priority: 2, bead_type: "task".into(), ..Default::default() },
        correlation_id: format!("corr-{n}"),
        timestamp: Utc::now(),
        metadata: TaskMetadata {
            dispatch_id: DispatchId::parse(&format!("d{n}")).unwrap(),
            attempt: 1,
            role: None,
            executor: "shell".into(),
        },
    }
}

/// Waits for `fut` at most `secs` seconds.
pub async fn within<F: std::future::Future>(secs: u64, fut: F) -> Option<F::Output> {
    tokio::time::timeout(Duration::from_secs(secs), fut).await.ok()
}
