//! `bench::run` produces its figures under their wire names.

use loom_agent::bench::{BenchOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_throughput_and_overhead_under_their_names() {
    let opts = BenchOptions { embedded: true, tasks: 200, ..BenchOptions::default() };
    let report = run(opts).await.unwrap();
    assert!(report.tasks_per_s_c1 > 0.0 && report.tasks_per_s_c8 > 0.0, "{report:?}");
    assert!(report.overhead_p99_ms > 0.0 && report.overhead_p99_ms < 1000.0, "{report:?}");
    let sandbox = report.sandbox_overhead_p50_ms.expect("bwrap runs here (scripts/test.sh installs it)");
    assert!(sandbox > 0.0 && sandbox < 1000.0, "{report:?}");
    let llm = report.llm_overhead_p50_ms;
    assert!(llm > 0.0 && llm < 50.0, "the loop's time per model turn outside the model call: {report:?}");
    let json = serde_json::to_value(&report).unwrap();
    let mut keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["llm_overhead_p50_ms", "overhead_p99_ms", "sandbox_overhead_p50_ms", "tasks_per_s_c1", "tasks_per_s_c8"]
    );
}
