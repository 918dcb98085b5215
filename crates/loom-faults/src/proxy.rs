//! [`Proxy`]: a TCP fault proxy on loopback (no toxiproxy exists in the registries here). It
//! forwards every connection to one upstream address and applies a [`Mode`] that can be switched
//! while connections are open: delay, jitter, black hole, reset, close after N bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Error, Result};

/// What the proxy does to the bytes of every connection, new and open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward as received.
    Pass,
    /// Hold each chunk this long before forwarding it (both directions).
    Delay(Duration),
    /// Hold each chunk `base` plus a pseudo-random part of up to `spread`.
    Jitter { base: Duration, spread: Duration },
    /// Accept and read, forward nothing: peers see a connection that hangs (a partition).
    BlackHole,
    /// Reset every connection (RST), the open ones at once and new ones on accept.
    Reset,
    /// Close each connection (FIN) once this many bytes, both directions together, passed.
    CloseAfter(u64),
}

/// A running proxy; dropping it stops accepting and cuts every connection.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    modes: Arc<watch::Sender<Mode>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`, in [`Mode::Pass`].
    pub async fn start(upstream: SocketAddr) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| Error::io("bind the fault proxy", e))?;
        let addr = listener.local_addr().map_err(|e| Error::io("address of the fault proxy", e))?;
        let modes = Arc::new(watch::Sender::new(Mode::Pass));
        let accept = tokio::spawn(accept_loop(listener, upstream, modes.clone()));
        Ok(Proxy { addr, modes, accept })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the mode; open connections follow at their next chunk (a reset, at once).
    pub fn set(&self, mode: Mode) {
        tracing::debug!(proxy = %self.addr, ?mode, "fault proxy mode");
        self.modes.send_replace(mode);
    }

    pub fn mode(&self) -> Mode {
        *self.modes.borrow()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Connections watch the mode; a reset ends them all.
        self.modes.send_replace(Mode::Reset);
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, modes: Arc<watch::Sender<Mode>>) {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        seed = seed.wrapping_add(0x6a09_e667_f3bc_c909);
        tokio::spawn(connection(client, upstream, modes.subscribe(), seed));
    }
}

/// How one direction of a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Eof,
    Reset,
    Closed,
}

async fn connection(mut client: TcpStream, upstream: SocketAddr, modes: watch::Receiver<Mode>, seed: u64) {
    let mode = *modes.borrow();
    let ending = match mode {
        Mode::Reset => Ending::Reset,
        Mode::BlackHole => swallow(&mut client, modes).await,
        _ => match TcpStream::connect(upstream).await {
            Ok(mut server) => {
                let ending = forward(&mut client, &mut server, modes, seed).await;
                if ending == Ending::Reset {
                    let _ = server.set_zero_linger();
                }
                ending
            }
            Err(_) => Ending::Reset,
        },
    };
    if ending == Ending::Reset {
        let _ = client.set_zero_linger();
    }
}

/// Both directions until both reach EOF, or either is reset or closed.
async fn forward(client: &mut TcpStream, server: &mut TcpStream, modes: watch::Receiver<Mode>, seed: u64) -> Ending {
    let used = AtomicU64::new(0);
    let (cr, cw) = client.split();
    let (sr, sw) = server.split();
    let up = pump(cr, sw, modes.clone(), &used, seed);
    let down = pump(sr, cw, modes, &used, seed.rotate_left(17));
    tokio::pin!(up, down);
    tokio::select! {
        e = &mut up => if e == Ending::Eof { down.await } else { e },
        e = &mut down => if e == Ending::Eof { up.await } else { e },
    }
}

/// A black-holed connection: read and drop everything until the peer goes or a reset.
async fn swallow(client: &mut TcpStream, mut modes: watch::Receiver<Mode>) -> Ending {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            n = client.read(&mut buf) => if !matches!(n, Ok(n) if n > 0) { return Ending::Eof },
            changed = modes.changed() => if changed.is_err() || *modes.borrow() == Mode::Reset { return Ending::Reset },
        }
    }
}

/// Copies `from` → `to` chunk by chunk, applying the mode current at each chunk.
async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    mut modes: watch::Receiver<Mode>,
    used: &AtomicU64,
    mut rng: u64,
) -> Ending {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            n = from.read(&mut buf) => match n {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return Ending::Eof;
                }
                Ok(n) => n,
            },
            changed = modes.changed() => {
                if changed.is_err() || *modes.borrow() == Mode::Reset {
                    return Ending::Reset;
                }
                continue;
            }
        };
        let mode = *modes.borrow();
        let chunk = match mode {
            Mode::Pass => &buf[..n],
            Mode::Delay(d) => {
                tokio::time::sleep(d).await;
                &buf[..n]
            }
            Mode::Jitter { base, spread } => {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let extra = spread.as_micros() as u64;
                tokio::time::sleep(base + Duration::from_micros(if extra == 0 { 0 } else { rng % extra })).await;
                &buf[..n]
            }
            Mode::BlackHole => continue,
            Mode::Reset => return Ending::Reset,
            Mode::CloseAfter(limit) => {
                let before = used.fetch_add(n as u64, Ordering::SeqCst);
                if before + n as u64 >= limit {
                    let keep = limit.saturating_sub(before) as usize;
                    let _ = to.write_all(&buf[..keep.min(n)]).await;
                    let _ = to.shutdown().await;
                    return Ending::Closed;
                }
                &buf[..n]
            }
        };
        if to.write_all(chunk).await.is_err() {
            return Ending::Eof;
        }
    }
}
