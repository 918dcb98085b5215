//! `NatsServer`: a crash or a stop keeps the port and the JetStream store; drop cleans up.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use loom_faults::NatsServer;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const STREAM: &str = "FAULTS";

#[tokio::test]
async fn a_killed_server_comes_back_on_its_port_with_its_store() -> anyhow::Result<()> {
    let mut server = NatsServer::start().await?;
    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
    assert!(info_line(server.port()).await?.contains("\"jetstream\":true"));
    let reply = request(server.port(), &format!("$JS.API.STREAM.CREATE.{STREAM}"), &stream_config()).await?;
    ensure!(!reply.contains("\"error\""), "stream create failed: {reply}");
    let meta = stream_meta(&server.store_dir());
    assert!(meta.exists(), "nats-server wrote no {}", meta.display());
    let first_pid = server.pid().context("a started server has a pid")?;

    server.kill().await?;
    assert_eq!(server.pid(), None);
    assert!(TcpStream::connect(("127.0.0.1", server.port())).await.is_err(), "the port still answers");

    server.start_again().await?;
    assert_ne!(server.pid(), Some(first_pid));
    assert!(info_line(server.port()).await?.contains("\"jetstream\":true"));
    assert!(meta.exists(), "the store lost {}", meta.display());
    let info = request(server.port(), &format!("$JS.API.STREAM.INFO.{STREAM}"), "").await?;
    assert!(info.contains(&format!("\"name\":\"{STREAM}\"")) && !info.contains("\"error\""), "{info}");
    Ok(())
}

#[tokio::test]
async fn a_restarted_server_keeps_acknowledged_messages() -> anyhow::Result<()> {
    let mut server = NatsServer::start().await?;
    assert!(server.version().trim_start_matches('v').starts_with(char::is_numeric), "{}", server.version());
    request(server.port(), &format!("$JS.API.STREAM.CREATE.{STREAM}"), &stream_config()).await?;
    let ack = request(server.port(), "faults.one", "hello").await?;
    ensure!(ack.contains(&format!("\"stream\":\"{STREAM}\"")), "no publish ack: {ack}");

    server.restart().await?;
    let info = request(server.port(), &format!("$JS.API.STREAM.INFO.{STREAM}"), "").await?;
    assert!(info.contains("\"messages\":1"), "{info}");
    assert!(matches!(server.start_again().await, Err(loom_faults::Error::AlreadyRunning { .. })));
    Ok(())
}

#[tokio::test]
async fn dropping_a_server_kills_it_and_removes_its_store() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let (port, store) = (server.port(), server.store_dir());
    let pid = server.pid().context("a started server has a pid")?;
    drop(server);
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err(), "the port still answers");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "process {pid} is still there");
    assert!(!store.exists(), "{} is still there", store.display());
    Ok(())
}

/// The disk-full fault: with its store on a small tmpfs filled by a ballast, the server refuses
/// to store a message; once the ballast is gone (and the server restarted if JetStream turned
/// itself off) it stores them again, and what it acknowledged before is still there.
#[tokio::test]
async fn a_full_store_refuses_messages_until_it_has_room_again() -> anyhow::Result<()> {
    let mut server = NatsServer::start().await?;
    if let Err(why) = server.store_on_tmpfs(32 << 20).await {
        eprintln!("skipped: cannot mount a tmpfs here ({why})");
        return Ok(());
    }
    request(server.port(), &format!("$JS.API.STREAM.CREATE.{STREAM}"), &stream_config()).await?;
    let ack = request(server.port(), "faults.one", "before").await?;
    ensure!(ack.contains("\"seq\":1"), "no publish ack: {ack}");
    let ballast = server.fill_store()?;
    assert!(ballast > 16 << 20, "only {ballast} bytes of ballast fit in a 32 MiB store");
    let big = "x".repeat(64 << 10);
    let mut refused = None;
    for _ in 0..8 {
        match request(server.port(), "faults.one", &big).await {
            Ok(reply) if !reply.contains("\"error\"") => {}
            other => {
                refused = Some(format!("{other:?}"));
                break;
            }
        }
    }
    assert!(refused.is_some(), "a full store kept acknowledging 512 KiB of messages");
    server.free_store()?;
    if !server.jetstream_enabled().await || request(server.port(), "faults.one", "after").await.is_err() {
        server.kill().await?;
        server.start_again().await?;
    }
    let ack = request(server.port(), "faults.one", "after").await?;
    ensure!(
        ack.contains(&format!("\"stream\":\"{STREAM}\"")) && !ack.contains("\"error\""),
        "no ack after freeing: {ack}"
    );
    let info = request(server.port(), &format!("$JS.API.STREAM.INFO.{STREAM}"), "").await?;
    assert!(!info.contains("\"messages\":0"), "the message acked before the disk filled is gone: {info}");
    let store = server.store_dir();
    drop(server);
    assert!(!store.exists(), "{} is still there (the tmpfs was not unmounted)", store.display());
    Ok(())
}

fn stream_config() -> String {
    format!(r#"{{"name":"{STREAM}","subjects":["faults.>"],"storage":"file","num_replicas":1}}"#)
}

fn stream_meta(store: &Path) -> std::path::PathBuf {
    store.join("jetstream").join("$G").join("streams").join(STREAM).join("meta.inf")
}

/// The first line the server sends a new client.
async fn info_line(port: u16) -> anyhow::Result<String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(5), BufReader::new(stream).read_line(&mut line)).await??;
    ensure!(line.starts_with("INFO "), "not an INFO line: {line}");
    Ok(line)
}

/// One request-reply over the plain NATS protocol (the crate deliberately has no NATS client).
async fn request(port: u16, subject: &str, payload: &str) -> anyhow::Result<String> {
    tokio::time::timeout(Duration::from_secs(10), request_inner(port, subject, payload)).await?
}

async fn request_inner(port: u16, subject: &str, payload: &str) -> anyhow::Result<String> {
    let (read, mut write) = TcpStream::connect(("127.0.0.1", port)).await?.into_split();
    let mut read = BufReader::new(read);
    let commands = format!(
        "CONNECT {{\"verbose\":false}}\r\nSUB _INBOX.faults 1\r\nPUB {subject} _INBOX.faults {}\r\n{payload}\r\n",
        payload.len()
    );
    write.write_all(commands.as_bytes()).await?;
    loop {
        let mut line = String::new();
        if read.read_line(&mut line).await? == 0 {
            bail!("the server closed the connection");
        }
        if line.starts_with("PING") {
            write.write_all(b"PONG\r\n").await?;
        } else if line.starts_with("-ERR") {
            bail!("server error: {line}");
        } else if let Some(header) = line.strip_prefix("MSG ") {
            let size: usize = header.split_whitespace().last().context("MSG without size")?.parse()?;
            let mut body = vec![0; size + 2];
            read.read_exact(&mut body).await?;
            body.truncate(size);
            return Ok(String::from_utf8(body)?);
        }
    }
}
