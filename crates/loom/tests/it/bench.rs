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
