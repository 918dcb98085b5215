//! `loom bench connectors`: `HealthCheckAll` over many connectors, half of them slow (their
//! endpoint answers after ten timeouts), against a small HTTP server of its own, on a scratch
//! SQLite store. Reported as elapsed ÷ the per-check timeout: checks run concurrently, so the
//! target is ≤ 1.2 however many there are.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use crate::{Connectors, Error, Key, Keyring, Kind, Spec, Status};

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub connectors: usize,
    pub timeout: Duration,
    /// Where the scratch SQLite file goes (removed afterwards).
    pub dir: std::path::PathBuf,
}

/// The figures, as `--json` prints them.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub connectors: usize,
    pub slow: usize,
    pub timeout_ms: u64,
    pub elapsed_ms: f64,
    pub healthy: usize,
    pub timed_out: usize,
    /// Elapsed ÷ the per-check timeout (target ≤ 1.2).
    pub health_check_all_over_timeout: f64,
}

pub async fn run(options: BenchOptions) -> Result<BenchReport, Error> {
    let io = |e: std::io::Error| Error::Internal(format!("bench: {e}"));
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(io)?;
    let addr = listener.local_addr().map_err(io)?;
    let slow_for = options.timeout * 10;
    let server = tokio::spawn(serve(listener, slow_for));
    std::fs::create_dir_all(&options.dir).map_err(io)?;
    let path = options.dir.join("connectors-bench.sqlite");
    let store = loom_store::SqliteStore::open(&path).await?;
    let key = Key::parse(Key::generate_base64().as_bytes())?;
    let connectors = Connectors::new(Arc::new(store), Keyring::new(key, vec![]));
    let slow = options.connectors / 2;
    for i in 0..options.connectors {
        let mut spec = Spec::new(format!("c{i:04}"), Kind::Http, format!("http://{addr}"));
        let path = if i < slow { "/slow" } else { "/fast" };
        spec.settings.insert("health_path".into(), path.into());
        spec.check_timeout = options.timeout;
        spec.check_interval = Duration::from_secs(3600);
        connectors.register(spec).await?;
    }
    let started = Instant::now();
    let all = connectors.check_all().await?;
    let elapsed = started.elapsed();
    server.abort();
    let _ = std::fs::remove_dir_all(&options.dir);
    let healthy = all.iter().filter(|h| h.status == Status::Healthy).count();
    let timed_out = all.iter().filter(|h| h.message.starts_with("timed out")).count();
    Ok(BenchReport {
        connectors: all.len(),
        slow,
        timeout_ms: options.timeout.as_millis() as u64,
        elapsed_ms: elapsed.as_secs_f64() * 1000.0,
        healthy,
        timed_out,
        health_check_all_over_timeout: elapsed.as_secs_f64() / options.timeout.as_secs_f64(),
    })
}

/// A minimal HTTP/1.1 server: `/slow` answers after `slow_for`, anything else at once.
async fn serve(listener: TcpListener, slow_for: Duration) {
    while let Ok((mut tcp, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut read = 0;
            while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf[read..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => read += n,
                }
                if read == buf.len() {
                    return;
                }
            }
            if buf[..read].starts_with(b"GET /slow") {
                tokio::time::sleep(slow_for).await;
            }
            let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
        });
    }
}
