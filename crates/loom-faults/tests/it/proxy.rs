//! `Proxy`: each mode over a real TCP echo server, switched while connections are open.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use loom_faults::{Mode, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// An echo server on a free port; it runs until the test ends.
async fn echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
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
    addr
}

/// Sends `msg` and reads the echo back, within 5 s.
async fn round_trip(conn: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    conn.write_all(msg).await?;
    let mut got = vec![0u8; msg.len()];
    timeout(Duration::from_secs(5), conn.read_exact(&mut got)).await.map_err(std::io::Error::other)??;
    Ok(got)
}

async fn proxied() -> (Proxy, TcpStream) {
    let proxy = Proxy::start(echo().await).await.unwrap();
    let conn = TcpStream::connect(proxy.addr()).await.unwrap();
    (proxy, conn)
}

#[tokio::test]
async fn pass_forwards_both_ways() {
    let (proxy, mut conn) = proxied().await;
    assert_eq!(proxy.mode(), Mode::Pass);
    assert_eq!(round_trip(&mut conn, b"hello").await.unwrap(), b"hello");
}

#[tokio::test]
async fn delay_holds_each_direction() {
    let (proxy, mut conn) = proxied().await;
    round_trip(&mut conn, b"warm").await.unwrap();
    proxy.set(Mode::Delay(Duration::from_millis(150)));
    let started = Instant::now();
    assert_eq!(round_trip(&mut conn, b"slow").await.unwrap(), b"slow");
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    proxy.set(Mode::Pass);
    let started = Instant::now();
    round_trip(&mut conn, b"fast").await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(150), "{:?}", started.elapsed());
}

#[tokio::test]
async fn jitter_delays_between_base_and_base_plus_spread() {
    let (proxy, mut conn) = proxied().await;
    proxy.set(Mode::Jitter { base: Duration::from_millis(50), spread: Duration::from_millis(100) });
    for _ in 0..3 {
        let started = Instant::now();
        round_trip(&mut conn, b"j").await.unwrap();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(100) && took < Duration::from_millis(1000), "{took:?}");
    }
}

#[tokio::test]
async fn black_hole_hangs_open_and_new_connections() {
    let (proxy, mut conn) = proxied().await;
    proxy.set(Mode::BlackHole);
    conn.write_all(b"lost").await.unwrap();
    let mut buf = [0u8; 4];
    assert!(timeout(Duration::from_millis(300), conn.read(&mut buf)).await.is_err(), "an answer came through");
    let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(round_trip_within(&mut fresh, Duration::from_millis(300)).await.is_err());
    proxy.set(Mode::Pass);
    let mut healed = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut healed, b"back").await.unwrap(), b"back");
}

async fn round_trip_within(conn: &mut TcpStream, within: Duration) -> Result<(), ()> {
    conn.write_all(b"x").await.map_err(drop)?;
    let mut buf = [0u8; 1];
    match timeout(within, conn.read(&mut buf)).await {
        Ok(Ok(1)) => Ok(()),
        _ => Err(()),
    }
}

#[tokio::test]
async fn reset_cuts_open_connections_and_refuses_new_ones() {
    let (proxy, mut conn) = proxied().await;
    round_trip(&mut conn, b"up").await.unwrap();
    proxy.set(Mode::Reset);
    let mut buf = [0u8; 1];
    let read = timeout(Duration::from_secs(2), conn.read(&mut buf)).await.expect("the reset came at once");
    assert_eq!(read.unwrap_err().kind(), std::io::ErrorKind::ConnectionReset);
    let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
    let read = timeout(Duration::from_secs(2), fresh.read(&mut buf)).await.expect("reset on accept");
    assert_eq!(read.unwrap_err().kind(), std::io::ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn close_after_bytes_ends_the_connection_at_the_limit() {
    let (proxy, mut conn) = proxied().await;
    proxy.set(Mode::CloseAfter(10));
    conn.write_all(b"0123456789abcdefghij").await.unwrap();
    let mut got = Vec::new();
    let read = timeout(Duration::from_secs(2), conn.read_to_end(&mut got)).await.expect("closed, not hanging");
    assert!(read.is_ok(), "a clean close (FIN), not a reset: {read:?}");
    assert!(got.len() <= 10 && b"0123456789".starts_with(&got), "{got:?}");
    proxy.set(Mode::Pass);
    let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut fresh, b"ok").await.unwrap(), b"ok");
}
