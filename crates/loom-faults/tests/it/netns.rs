//! `Netns`: a process inside reaches the root namespace's loopback ports it was given and the
//! root namespace reaches the ones it publishes; a partition hangs open connections (no reset)
//! and new ones; healing lets a hung connection resume; dropping it leaves nothing behind.
//! Skipped, saying why, where `Netns::available` says namespaces cannot be made here.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use loom_faults::{Netns, free_port};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::time::timeout;

/// How long a hung connection is watched for an answer that must not come.
const SILENCE: Duration = Duration::from_secs(2);
/// How long an answer that must come may take (a healed connection waits for its retransmit).
const ANSWER: Duration = Duration::from_secs(60);

async fn netns_or_skip(test: &str) -> anyhow::Result<Option<Netns>> {
    if let Err(why) = Netns::available().await {
        eprintln!("{test}: skipped: {why}");
        return Ok(None);
    }
    Ok(Some(Netns::new().await?))
}

/// An echo server on 127.0.0.1 of the root namespace; it runs until the test ends.
async fn echo() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(port)
}

/// A TCP client inside the namespace (bash's `/dev/tcp` and `cat`): lines written to it go to
/// the server, the server's bytes come back on its stdout.
struct Relay {
    _child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
}

impl Relay {
    fn start(ns: &Netns, port: u16) -> anyhow::Result<Relay> {
        let mut command = ns.command("bash");
        command.args(["-c", r#"exec 3<>"/dev/tcp/$0/$1"; cat <&3 & exec cat >&3"#]);
        command.args([ns.host_addr().to_string(), port.to_string()]);
        let mut child = tokio::process::Command::from(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let to = child.stdin.take().context("the relay's stdin")?;
        let from = BufReader::new(child.stdout.take().context("the relay's stdout")?);
        Ok(Relay { _child: child, to, from })
    }

    async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        self.to.write_all(format!("{line}\n").as_bytes()).await?;
        Ok(self.to.flush().await?)
    }

    /// The next line from the server within `within`; `None` if none came.
    async fn reply(&mut self, within: Duration) -> anyhow::Result<Option<String>> {
        let mut line = String::new();
        match timeout(within, self.from.read_line(&mut line)).await {
            Err(_) => Ok(None),
            Ok(read) => {
                ensure!(read? > 0, "the connection ended");
                Ok(Some(line.trim_end().to_owned()))
            }
        }
    }
}

/// How a fresh connection from inside to `addr:port` goes within [`SILENCE`].
#[derive(Debug, PartialEq, Eq)]
enum Connect {
    Done,
    Refused,
    Hangs,
}

fn connect_from_inside(ns: &Netns, addr: Ipv4Addr, port: u16) -> anyhow::Result<Connect> {
    let status = ns
        .command("timeout")
        .args([&SILENCE.as_secs().to_string(), "bash", "-c", r#"exec 3<>"/dev/tcp/$0/$1""#])
        .args([addr.to_string(), port.to_string()])
        .stderr(Stdio::null())
        .status()?;
    Ok(match status.code() {
        Some(0) => Connect::Done,
        Some(124) => Connect::Hangs,
        _ => Connect::Refused,
    })
}

fn listed(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program).args(args).output()?;
    ensure!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn a_partition_hangs_connections_until_healed_and_drop_removes_everything() -> anyhow::Result<()> {
    let Some(ns) = netns_or_skip("netns partition").await? else { return Ok(()) };
    let port = echo().await?;
    let hidden = TcpListener::bind("127.0.0.1:0").await?;
    ns.expose(port).await?;
    let host = ns.host_addr();
    assert_eq!(connect_from_inside(&ns, host, port)?, Connect::Done);
    let not_exposed = hidden.local_addr()?.port();
    assert_eq!(connect_from_inside(&ns, host, not_exposed)?, Connect::Hangs, "a port not exposed is reachable");

    let mut relay = Relay::start(&ns, port)?;
    relay.send("one").await?;
    assert_eq!(relay.reply(ANSWER).await?.as_deref(), Some("one"));

    ns.partition().await?;
    relay.send("two").await?;
    assert_eq!(relay.reply(SILENCE).await?, None, "an answer came through the partition");
    assert_eq!(connect_from_inside(&ns, host, port)?, Connect::Hangs, "a new connection is refused or completes");

    ns.heal().await?;
    assert_eq!(relay.reply(ANSWER).await?.as_deref(), Some("two"), "the hung connection did not resume");
    relay.send("three").await?;
    assert_eq!(relay.reply(ANSWER).await?.as_deref(), Some("three"));
    assert_eq!(connect_from_inside(&ns, host, port)?, Connect::Done);

    let (name, table) = (ns.name().to_owned(), ns.table().to_owned());
    ensure!(listed("ip", &["netns", "list"])?.contains(&name), "{name} is not listed while it exists");
    ensure!(listed("nft", &["list", "tables"])?.contains(&table), "{table} is not listed while it exists");
    drop(relay);
    drop(ns);
    let namespaces = listed("ip", &["netns", "list"])?;
    ensure!(!namespaces.lines().any(|l| l.split_whitespace().next() == Some(&name)), "{name} left: {namespaces}");
    let tables = listed("nft", &["list", "tables"])?;
    ensure!(!tables.lines().any(|l| l.trim() == format!("table inet {table}")), "{table} left: {tables}");
    Ok(())
}

/// The nats-server the other tests use (`$LOOM_NATS_SERVER`, else on `PATH`, else in
/// `/usr/sbin`): a real server to run inside the namespace.
fn nats_server() -> anyhow::Result<String> {
    if let Ok(path) = std::env::var("LOOM_NATS_SERVER") {
        return Ok(path);
    }
    let found = Command::new("sh").args(["-c", "command -v nats-server || ls /usr/sbin/nats-server"]).output()?;
    let path = String::from_utf8_lossy(&found.stdout).trim().to_owned();
    if path.is_empty() {
        bail!("nats-server not found: install it with `apt-get install nats-server`");
    }
    Ok(path)
}

/// The INFO line of a NATS server at `addr`, within `within`; `None` if it could not be had.
async fn greeting(addr: (Ipv4Addr, u16), within: Duration) -> Option<String> {
    let read = async {
        let stream = TcpStream::connect(addr).await.ok()?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await.ok()?;
        Some(line)
    };
    timeout(within, read).await.ok().flatten()
}

#[tokio::test]
async fn a_published_loopback_server_is_reached_from_outside_until_a_partition() -> anyhow::Result<()> {
    let Some(ns) = netns_or_skip("netns publish").await? else { return Ok(()) };
    let port = free_port();
    let _server = tokio::process::Command::from(ns.command(nats_server()?))
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    ns.publish(port).await?;
    let addr = (ns.peer_addr(), port);
    let mut info = None;
    for _ in 0..100 {
        info = greeting(addr, SILENCE).await;
        if info.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(info.is_some_and(|l| l.starts_with("INFO ")), "the server inside never greeted from {addr:?}");

    ns.partition().await?;
    assert_eq!(greeting(addr, SILENCE).await, None, "reached through the partition");
    ns.heal().await?;
    let healed = greeting(addr, ANSWER).await;
    assert!(healed.is_some_and(|l| l.starts_with("INFO ")), "not reached after healing");
    Ok(())
}
