//! A small run of `loom bench db`: it measures every figure and cleans up after itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use loom_db::bench::{self, BenchOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_every_figure() {
    let calls = Arc::new(AtomicU64::new(0));
    let seen = calls.clone();
    let mut options = BenchOptions::new(loom_store::testing::admin_url());
    (options.get_samples, options.claim_samples, options.warmup) = (300, 100, 20);
    options.progress = Some(Arc::new(move |_, _, _| {
        seen.fetch_add(1, Ordering::Relaxed);
    }));
    let report = bench::run(options).await.expect("bench runs");
    let json = serde_json::to_value(&report).unwrap();
    for key in ["get_bead_p50_us", "get_bead_p99_us", "claim_p99_us", "direct_get_bead_p99_us"] {
        let v = json[key].as_f64().unwrap_or_else(|| panic!("{key} missing from {json}"));
        assert!(v > 0.0, "{key} = {v}");
    }
    assert!(report.get_bead_p50_us <= report.get_bead_p99_us);
    assert!(calls.load(Ordering::Relaxed) > 0, "progress was reported");
}
