//! CPU time spent by the processes of a bench run, read from `/proc` (Linux): this process (the
//! Loom services the bench runs in-process), the PostgreSQL backends serving the bench's database
//! and the nats-server listening on the bench's NATS port — each only where it runs on this
//! machine and can be read. `cpu_ms_per_bead` divides the sum by the beads, a figure that moves
//! less from one machine to the next than a rate does.
//!
//! Hand-written rather than a crate (`procfs`, `sysinfo`): three small files are read and the
//! heavier crates would add far more than they save here.

use std::collections::HashMap;

use serde::Serialize;

/// `/proc/[pid]/stat` counts CPU time in clock ticks of `USER_HZ`, which Linux fixes at 100 on
/// every architecture it exposes to user space through that file.
const TICKS_PER_S: f64 = 100.0;

/// CPU time (user + system) per process, in ticks, at one moment.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sample {
    loom: u64,
    postgres: HashMap<u32, u64>,
    nats: HashMap<u32, u64>,
}

/// Which processes to count besides this one.
#[derive(Clone, Debug, Default)]
pub(crate) struct Watched {
    /// PostgreSQL backends of the bench's database (`pg_stat_activity`), when the server is local.
    pub postgres: Vec<u32>,
    /// The nats-server listening on the bench's port, when it is local.
    pub nats: Option<u32>,
}

/// CPU milliseconds per bead, in all and by process kind (`None`: could not be read here).
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct PerBead {
    pub loom: f64,
    pub postgres: Option<f64>,
    pub nats_server: Option<f64>,
}

impl PerBead {
    /// Everything that could be read.
    pub(crate) fn total(&self) -> f64 {
        self.loom + self.postgres.unwrap_or(0.0) + self.nats_server.unwrap_or(0.0)
    }
}

pub(crate) fn sample(watched: &Watched) -> Sample {
    Sample {
        loom: ticks("self").unwrap_or(0),
        postgres: watched.postgres.iter().filter_map(|pid| Some((*pid, ticks(&pid.to_string())?))).collect(),
        nats: watched.nats.iter().filter_map(|pid| Some((*pid, ticks(&pid.to_string())?))).collect(),
    }
}

/// CPU per bead between two samples. A backend first seen at `after` started during the run
/// (the pool grew) and counts from zero; one gone by then is left out (its time is lost).
pub(crate) fn per_bead(before: &Sample, after: &Sample, watched: &Watched, beads: usize) -> PerBead {
    let ms = |ticks: u64| ticks as f64 / TICKS_PER_S * 1000.0 / beads.max(1) as f64;
    let spent = |b: &HashMap<u32, u64>, a: &HashMap<u32, u64>| -> u64 {
        a.iter().map(|(pid, t)| t.saturating_sub(b.get(pid).copied().unwrap_or(0))).sum()
    };
    PerBead {
        loom: ms(after.loom.saturating_sub(before.loom)),
        postgres: (!watched.postgres.is_empty()).then(|| ms(spent(&before.postgres, &after.postgres))),
        nats_server: watched.nats.map(|_| ms(spent(&before.nats, &after.nats))),
    }
}

/// utime + stime of `/proc/{pid}/stat`.
fn ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_ticks(&stat)
}

fn parse_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces: count after its end.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line are 12 and 13 after the name.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The local PostgreSQL backends serving the pool's database right now, checked to be
/// `postgres` processes of this machine (a remote server's pids mean nothing here).
pub(crate) async fn postgres_backends(pool: &sqlx::PgPool) -> Vec<u32> {
    let pids: Vec<i32> =
        sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid IS NOT NULL")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    pids.into_iter().filter_map(|p| u32::try_from(p).ok()).filter(|p| comm(*p).as_deref() == Some("postgres")).collect()
}

/// The local nats-server listening on `port` (its listening socket found in `/proc/net/tcp`,
/// then the process holding it), if any.
pub(crate) fn nats_server(port: u16) -> Option<u32> {
    let inode = listening_inode(port)?;
    let target = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if comm(pid).as_deref() != Some("nats-server") {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        if fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == target)) {
            return Some(pid);
        }
    }
    None
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim().to_owned())
}

/// The inode of the IPv4 or IPv6 socket listening on `port`.
fn listening_inode(port: u16) -> Option<String> {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|table| {
        let text = std::fs::read_to_string(table).ok()?;
        listening_in(&text, port)
    })
}

fn listening_in(table: &str, port: u16) -> Option<String> {
    const LISTEN: &str = "0A";
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local_port = f.get(1)?.rsplit(':').next()?;
        (u16::from_str_radix(local_port, 16).ok()? == port && *f.get(3)? == LISTEN)
            .then(|| f.get(9).map(|s| (*s).to_owned()))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_read_after_a_command_name_with_spaces() {
        let stat = "4242 (nats server) S 1 4242 4242 0 -1 4194560 800 0 0 0 150 25 0 0 20 0 12 0 100 0 0";
        assert_eq!(parse_ticks(stat), Some(175));
    }

    #[test]
    fn this_process_has_spent_some_cpu() {
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < std::time::Duration::from_millis(60) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0 && ticks("self").is_some_and(|t| t > 0));
    }

    #[test]
    fn the_listening_socket_of_a_port_is_found_in_the_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:107E 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1 0 100 0 0 10 0\n\
   1: 0100007F:107E 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4444 1 0 20 4 30 10 -1\n";
        assert_eq!(listening_in(table, 4222).as_deref(), Some("31337"));
        assert_eq!(listening_in(table, 4223), None);
    }

    #[test]
    fn per_bead_counts_new_backends_from_zero_and_reads_what_it_can() {
        let watched = Watched { postgres: vec![1, 2], nats: None };
        let before = Sample { loom: 100, postgres: HashMap::from([(1, 50)]), nats: HashMap::new() };
        let after = Sample { loom: 300, postgres: HashMap::from([(1, 150), (2, 100)]), nats: HashMap::new() };
        let p = per_bead(&before, &after, &watched, 1000);
        assert_eq!((p.loom, p.postgres, p.nats_server), (2.0, Some(2.0), None));
        assert_eq!(p.total(), 4.0);
    }
}
