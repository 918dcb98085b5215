//! `loom bench e2e --via-db-service --json` on the shared PostgreSQL and NATS (the bench makes its
//! own scratch databases and stream namespaces): one JSON object with both runs, nothing lost or
//! done twice in either, and the CPU each bead cost.

use crate::support::fresh;

#[test]
fn bench_e2e_reports_the_run_through_the_database_service_and_cpu_per_bead() {
    let tmp = tempfile::tempdir().unwrap();
    let out = fresh(crate::support::LOOM, tmp.path(), &[("RUST_LOG", "warn")])
        .args(["bench", "e2e", "--beads", "300", "--via-db-service", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object on stdout: {stdout}");
    let r: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    let via = &r["via_db_service"];
    for run in [&r, via] {
        assert_eq!(
            (run["beads"].as_u64(), run["lost"].as_u64(), run["duplicated"].as_u64()),
            (Some(300), Some(0), Some(0)),
            "{r}"
        );
        assert!(run["beads_per_s"].as_f64().unwrap() > 0.0, "{r}");
        // This process did the work of the control plane and the agents; the shared PostgreSQL
        // and nats-server run on this machine, so their share is read too.
        let cpu = &run["cpu_ms_per_bead_by_process"];
        assert!(cpu["loom"].as_f64().unwrap() > 0.0, "{r}");
        assert!(cpu["postgres"].as_f64().is_some() && cpu["nats_server"].as_f64().is_some(), "{r}");
        assert!(run["cpu_ms_per_bead"].as_f64().unwrap() >= cpu["loom"].as_f64().unwrap(), "{r}");
    }
    let ratio = r["vs_direct"].as_f64().unwrap();
    let expected = via["beads_per_s"].as_f64().unwrap() / r["beads_per_s"].as_f64().unwrap();
    assert!((ratio - expected).abs() < 1e-9, "vs_direct is the ratio of the two runs: {r}");
}

#[test]
fn bench_api_loads_every_route_and_every_subscriber_reads_every_event() {
    let tmp = tempfile::tempdir().unwrap();
    let out = fresh(crate::support::LOOM, tmp.path(), &[("RUST_LOG", "warn")])
        .args([
            "bench",
            "api",
            "--connections",
            "2",
            "--secs",
            "1",
            "--subscribers",
            "5",
            "--sse-beads",
            "20",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for route in ["create", "get_bead", "ready", "trivial"] {
        assert_eq!(r[route]["errors"], 0, "{route}: {r}");
        assert!(r[route]["req_per_s"].as_f64().unwrap() > 0.0, "{route}: {r}");
        assert!(r[route]["p99_ms"].as_f64().unwrap() >= r[route]["p50_ms"].as_f64().unwrap(), "{route}: {r}");
    }
    assert_eq!(r["sse"]["deliveries"], 5 * 20, "every subscriber reads every bead.created: {r}");
    let ratio = r["get_bead_vs_trivial"].as_f64().unwrap();
    let expected = r["get_bead"]["req_per_s"].as_f64().unwrap() / r["trivial"]["req_per_s"].as_f64().unwrap();
    assert!((ratio - expected).abs() < 1e-9, "{r}");
    assert!(r["rss_mib"].as_f64().unwrap() > 1.0, "the control plane's RSS is read: {r}");
}

/// The processes whose parent is `pid`, by `/proc/*/stat`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        if rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            found.push(child);
        }
    }
    found
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// SIGTERM (or Ctrl-C) in the middle of a fault run stops every server it started: no
/// nats-server or Loom service of the run is left running.
#[test]
fn an_interrupted_fault_run_leaves_no_server_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = fresh(crate::support::LOOM, tmp.path(), &[("RUST_LOG", "warn")]);
    cmd.args(["bench", "faults", "--tier", "ci", "--beads", "40", "--agents", "1"]);
    let (run, lines) = crate::support::Group::spawn(cmd);
    let pid = run.0.id();
    // Wait until the agent is up: the nats-server, the database service, both control planes and
    // the agent are children of the run by then.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let started = loop {
        let kids = children_of(pid);
        let agent = kids
            .iter()
            .any(|k| std::fs::read_to_string(format!("/proc/{k}/cmdline")).is_ok_and(|c| c.contains("serve\0agent")));
        if agent {
            break kids;
        }
        assert!(std::time::Instant::now() < deadline, "the run started no agent: {}", lines.text());
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(started.len() >= 4, "{started:?}");
    let sent = std::process::Command::new("kill").args(["-s", "TERM", &pid.to_string()]).status().unwrap();
    assert!(sent.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while alive(pid) {
        assert!(std::time::Instant::now() < deadline, "the run did not stop on SIGTERM: {}", lines.text());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let left: Vec<u32> = started.into_iter().filter(|k| alive(*k)).collect();
    assert!(left.is_empty(), "servers of the run still running after SIGTERM: {left:?}; {}", lines.text());
    assert!(lines.text().contains("interrupted"), "{}", lines.text());
}
