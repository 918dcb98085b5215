//! [`Netns`]: a network namespace of its own for processes a test starts, joined to the root
//! namespace by a veth pair, that can be cut off from everything (a partition) and healed.
//!
//! The cluster's servers stay on 127.0.0.1 in the root namespace. A process inside reaches the
//! ports it was given ([`Netns::expose`]) at the host end's address: nftables DNATs them to
//! 127.0.0.1 (with `route_localnet` on the host end, which lets the kernel route to loopback from
//! a real interface) and SNATs their source to 127.0.0.1, so the servers see a loopback client —
//! PostgreSQL's `trust` entries for 127.0.0.1 and a control plane's loopback-only rules keep
//! holding. The other way, a server listening on 127.0.0.1 inside is reached from the root
//! namespace at the peer's address ([`Netns::publish`], the same DNAT inside). Kernel NAT rather
//! than a forwarder in user space: nothing has to relay bytes (or be told of a partition), the
//! connections are the processes' own, and a drop rule on the veth cuts them exactly as a
//! partition does — no RST, no FIN, retransmits that succeed once healed. Everything else
//! arriving from the namespace is dropped, so a process inside reaches only what it was given.
//!
//! Addresses are /30s of 198.18.0.0/15 (RFC 2544's range for network tests, routed nowhere),
//! the namespace, the interfaces and the nftables table are named after this process's pid and
//! a counter, and dropping a [`Netns`] removes all of them. A namespace left behind by a process
//! that died without dropping it (kill -9) is removed by the next [`Netns::new`].

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::process::{self, find_program};
use crate::{Error, Result};

/// The prefix of every namespace, interface and table this module makes.
const PREFIX: &str = "loomfaults";
/// The interface inside the namespace.
const PEER_IF: &str = "veth0";
/// The table inside the namespace that publishes its loopback ports.
const INNER_TABLE: &str = "loomfaults";
/// 198.18.0.0/15 holds this many /30s.
const SUBNETS: u32 = 1 << 15;

/// Namespaces made by this process so far: the counter in their names.
static MADE: AtomicU32 = AtomicU32::new(0);

/// A network namespace this process made, with `lo` up and a veth pair: `host_addr` on the root
/// namespace's end, `peer_addr` inside. Dropping it removes the nftables table, the veth pair and
/// the namespace, and kills what still runs inside.
#[derive(Debug)]
pub struct Netns {
    name: String,
    host_if: String,
    table: String,
    host_addr: Ipv4Addr,
    peer_addr: Ipv4Addr,
    ip: PathBuf,
    nft: PathBuf,
}

impl Netns {
    /// `Ok` if namespaces can be made and cut here, else why not: not root, `ip` or `nft`
    /// missing, or the kernel refusing a trial namespace (its error).
    pub async fn available() -> std::result::Result<(), String> {
        if !is_root() {
            return Err("not root: network namespaces and nftables rules need CAP_NET_ADMIN".to_owned());
        }
        programs().map_err(|err| err.to_string())?;
        match Netns::new().await {
            Ok(trial) => {
                drop(trial);
                Ok(())
            }
            Err(err) => Err(format!("a trial network namespace could not be set up: {err}")),
        }
    }

    /// Makes a namespace with its veth pair and nftables table (no port exposed yet).
    pub async fn new() -> Result<Netns> {
        let (ip, nft) = programs()?;
        let pid = std::process::id();
        sweep_stale(&ip, &nft).await;
        let n = MADE.fetch_add(1, Ordering::SeqCst);
        let subnet = free_subnet(&ip, pid.wrapping_mul(64).wrapping_add(n)).await?;
        let netns = Netns {
            name: format!("{PREFIX}-{pid}-{n}"),
            host_if: format!("lf{pid}-{n}"),
            table: format!("{PREFIX}_{pid}_{n}"),
            host_addr: subnet_addr(subnet, 1),
            peer_addr: subnet_addr(subnet, 2),
            ip,
            nft,
        };
        // From here on, a failed step is undone by dropping `netns`.
        netns.set_up().await?;
        Ok(netns)
    }

    async fn set_up(&self) -> Result<()> {
        let (name, host, peer) = (self.name.as_str(), self.host_if.as_str(), PEER_IF);
        let host_cidr = format!("{}/30", self.host_addr);
        let peer_cidr = format!("{}/30", self.peer_addr);
        self.ip(&["netns", "add", name]).await?;
        self.ip(&["link", "add", host, "type", "veth", "peer", "name", peer, "netns", name]).await?;
        self.ip(&["addr", "add", &host_cidr, "dev", host]).await?;
        self.ip(&["link", "set", host, "up"]).await?;
        self.ip(&["-n", name, "addr", "add", &peer_cidr, "dev", peer]).await?;
        self.ip(&["-n", name, "link", "set", peer, "up"]).await?;
        self.ip(&["-n", name, "link", "set", "lo", "up"]).await?;
        let localnet = |interface: &str| format!("/proc/sys/net/ipv4/conf/{interface}/route_localnet");
        std::fs::write(localnet(host), "1").map_err(|err| Error::io(format!("write {}", localnet(host)), err))?;
        run(self.command("sh").args(["-c", &format!("echo 1 > {}", localnet(peer))]), None).await?;
        run(Command::new(&self.nft).args(["-f", "-"]), Some(&self.host_rules())).await?;
        run(self.command(&self.nft).args(["-f", "-"]), Some(&self.inner_rules())).await
    }

    /// The root namespace's table: DNAT of the exposed ports to loopback, their source made
    /// loopback too, the rest from the namespace dropped, and the two (empty until a partition)
    /// chains that drop everything on the veth, before conntrack sees it.
    fn host_rules(&self) -> String {
        let (table, host, addr) = (&self.table, &self.host_if, self.host_addr);
        format!(
            "table inet {table} {{
  set exposed {{ type inet_service; }}
  chain cut_in {{ type filter hook prerouting priority raw; policy accept; }}
  chain cut_out {{ type filter hook postrouting priority 300; policy accept; }}
  chain expose {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname \"{host}\" ip daddr {addr} tcp dport @exposed dnat ip to 127.0.0.1
  }}
  chain loopback_source {{
    type nat hook input priority 100; policy accept;
    iifname \"{host}\" ct status dnat snat ip to 127.0.0.1
  }}
  chain guard {{
    type filter hook input priority filter; policy accept;
    iifname \"{host}\" ct state established,related accept
    iifname \"{host}\" ct status dnat accept
    iifname \"{host}\" drop
  }}
}}
"
        )
    }

    /// The namespace's own table: DNAT of the published ports on the peer address to its
    /// loopback. It goes with the namespace.
    fn inner_rules(&self) -> String {
        let addr = self.peer_addr;
        format!(
            "table inet {INNER_TABLE} {{
  set published {{ type inet_service; }}
  chain publish {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname \"{PEER_IF}\" ip daddr {addr} tcp dport @published dnat ip to 127.0.0.1
  }}
}}
"
        )
    }

    /// The namespace's name (`ip netns list`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The nftables table of the root namespace that belongs to it (`nft list tables`).
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The address a process inside uses for the root namespace's exposed ports.
    pub fn host_addr(&self) -> Ipv4Addr {
        self.host_addr
    }

    /// The address the root namespace uses for the namespace's published ports.
    pub fn peer_addr(&self) -> Ipv4Addr {
        self.peer_addr
    }

    /// Lets processes inside reach the root namespace's `127.0.0.1:port` at
    /// `host_addr():port`.
    pub async fn expose(&self, port: u16) -> Result<()> {
        let element = format!("{{ {port} }}");
        run(Command::new(&self.nft).args(["add", "element", "inet", &self.table, "exposed", &element]), None).await
    }

    /// Lets the root namespace reach a server listening on the namespace's `127.0.0.1:port` at
    /// `peer_addr():port`.
    pub async fn publish(&self, port: u16) -> Result<()> {
        let element = format!("{{ {port} }}");
        run(self.command(&self.nft).args(["add", "element", "inet", INNER_TABLE, "published", &element]), None).await
    }

    /// `program` run inside the namespace (`ip netns exec`, which execs it: the child's pid is
    /// the program's own, so signalling it by pid reaches the program).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(&self.ip);
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Drops every packet from and to the namespace: open connections hang (no reset, no close)
    /// and new ones do not complete, in both directions, until [`Netns::heal`].
    pub async fn partition(&self) -> Result<()> {
        let (table, host) = (&self.table, &self.host_if);
        let rules = format!(
            "flush chain inet {table} cut_in\nflush chain inet {table} cut_out\n\
             add rule inet {table} cut_in iifname \"{host}\" drop\n\
             add rule inet {table} cut_out oifname \"{host}\" drop\n"
        );
        run(Command::new(&self.nft).args(["-f", "-"]), Some(&rules)).await
    }

    /// Lets packets through again; connections that hung resume by their own retransmits.
    pub async fn heal(&self) -> Result<()> {
        let table = &self.table;
        let rules = format!("flush chain inet {table} cut_in\nflush chain inet {table} cut_out\n");
        run(Command::new(&self.nft).args(["-f", "-"]), Some(&rules)).await
    }

    async fn ip(&self, args: &[&str]) -> Result<()> {
        run(Command::new(&self.ip).args(args), None).await
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove(&self.ip, &self.nft, &self.name, &self.host_if, &self.table);
    }
}

/// Kills what still runs in namespace `name` (only processes started into it, which only this
/// process could do), then removes the table, the veth pair (both ends) and the namespace.
/// Each step is tried even when one fails, and a missing part is not an error.
fn remove(ip: &PathBuf, nft: &PathBuf, name: &str, host_if: &str, table: &str) {
    if let Ok(out) = Command::new(ip).args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    let quiet = |command: &mut Command| {
        let _ = command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status();
    };
    quiet(Command::new(nft).args(["delete", "table", "inet", table]));
    quiet(Command::new(ip).args(["link", "del", host_if]));
    quiet(Command::new(ip).args(["netns", "del", name]));
}

/// Removes the namespaces (and their interfaces and tables) of processes that are gone.
async fn sweep_stale(ip: &PathBuf, nft: &PathBuf) {
    let Ok(out) = tokio::process::Command::new(ip).args(["netns", "list"]).output().await else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some((pid, n)) = parse_name(name) else { continue };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            tracing::info!(namespace = name, "removing a network namespace left by a process that is gone");
            remove(ip, nft, name, &format!("lf{pid}-{n}"), &format!("{PREFIX}_{pid}_{n}"));
        }
    }
}

/// `loomfaults-<pid>-<n>` → `(pid, n)`.
fn parse_name(name: &str) -> Option<(u32, u32)> {
    let (pid, n) = name.strip_prefix(PREFIX)?.strip_prefix('-')?.split_once('-')?;
    Some((pid.parse().ok()?, n.parse().ok()?))
}

/// The first /30 from `start` on that no interface here has an address in.
async fn free_subnet(ip: &PathBuf, start: u32) -> Result<u32> {
    let out = tokio::process::Command::new(ip)
        .args(["-o", "-4", "addr", "show"])
        .output()
        .await
        .map_err(|err| Error::io("run `ip -o -4 addr show`", err))?;
    let used: Vec<u32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|word| word.split('/').next()?.parse::<Ipv4Addr>().ok())
        .map(|addr| u32::from(addr) >> 2)
        .collect();
    (0..SUBNETS)
        .map(|k| (start.wrapping_add(k)) % SUBNETS)
        .find(|&s| !used.contains(&(u32::from(subnet_addr(s, 0)) >> 2)))
        .ok_or_else(|| Error::io("find a free /30 in 198.18.0.0/15", std::io::Error::other("all are in use")))
}

/// Address `host` (0–3) of /30 number `subnet` of 198.18.0.0/15.
fn subnet_addr(subnet: u32, host: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (subnet % SUBNETS) * 4 + host)
}

fn programs() -> Result<(PathBuf, PathBuf)> {
    let ip = find_program("ip", &["/usr/sbin/ip", "/sbin/ip"]).ok_or_else(|| Error::MissingBinary {
        program: "ip",
        hint: "install it with `apt-get install iproute2`".to_owned(),
    })?;
    let nft = find_program("nft", &["/usr/sbin/nft", "/sbin/nft"]).ok_or_else(|| Error::MissingBinary {
        program: "nft",
        hint: "install it with `apt-get install nftables`".to_owned(),
    })?;
    Ok((ip, nft))
}

/// Whether this process's effective uid is 0 (`/proc/self/status`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|ids| ids.split_whitespace().nth(1)) == Some("0")
    })
}

/// Runs `command`, feeding `stdin` to it (an nftables script), and checks that it succeeded.
async fn run(command: &mut Command, stdin: Option<&str>) -> Result<()> {
    use std::process::Stdio;
    use tokio::io::AsyncWriteExt;
    let shown = format!("{command:?}").replace('"', "");
    let mut child = tokio::process::Command::from(std::mem::replace(command, Command::new("true")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| Error::io(format!("run {shown}"), err))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).await.map_err(|err| Error::io(format!("feed {shown}"), err))?;
    }
    child.stdin = None;
    let output = child.wait_with_output().await.map_err(|err| Error::io(format!("run {shown}"), err))?;
    process::check(&shown, &output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_to_their_pid_and_counter() {
        assert_eq!(parse_name("loomfaults-1234-7"), Some((1234, 7)));
        assert_eq!(parse_name("loomfaults-1234"), None);
        assert_eq!(parse_name("other-1234-7"), None);
    }

    #[test]
    fn subnets_are_30s_of_the_benchmark_range() {
        assert_eq!(subnet_addr(0, 1), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(subnet_addr(1, 2), Ipv4Addr::new(198, 18, 0, 6));
        assert_eq!(subnet_addr(SUBNETS - 1, 2), Ipv4Addr::new(198, 19, 255, 254));
        assert_eq!(subnet_addr(SUBNETS, 1), subnet_addr(0, 1), "wraps inside the range");
    }
}
