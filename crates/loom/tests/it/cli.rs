//! `loom up` on the embedded default (SQLite + in-process bus) with an absolute `--data-dir`:
//! the CLI registers a local git repository by a relative path and runs a two-bead shell chain to
//! completion.

use crate::support::{Up, bare_repo, log};

#[test]
fn loom_up_runs_a_shell_bead_chain_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = bare_repo(tmp.path());
    let data = tmp.path().join("data");
    let up = Up::run(&format!("loom up --data-dir {}", data.display()), tmp.path(), &[]);
    let missing = up.loom_in(tmp.path(), &["project", "add", "demo", "--repo", "no-such.git"]);
    let error = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success() && error.contains("no-such.git does not exist"), "{error}");
    // A relative path is the user's: taken from where they ran the command, stored absolute.
    let added = up.loom_in(tmp.path(), &["project", "add", "demo", "--repo", "origin.git", "--json"]);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let added: serde_json::Value = serde_json::from_slice(&added.stdout).unwrap();
    assert_eq!(added["git_repo"], std::fs::canonicalize(&origin).unwrap().to_str().unwrap());
    let first = up.loom(&[
        "bead",
        "create",
        "--project",
        "demo",
        "--title",
        "write",
        "--context",
        "command=echo built > out.txt",
    ]);
    let first = first.trim();
    let check = "command=grep -q built out.txt && echo checked >> out.txt";
    let second = up.loom(&[
        "bead",
        "create",
        "--project",
        "demo",
        "--title",
        "check",
        "--blocked-by",
        first,
        "--context",
        check,
    ]);
    let second = second.trim();
    let shown = up.wait_status(second, "closed");
    assert_eq!(shown["status"], "closed", "{shown}");
    assert_eq!(shown["close_reason"], "completed");
    assert_eq!(log(&origin), [format!("{second}: check"), format!("{first}: write"), "init".into()]);
    let listed = up.loom(&["bead", "list", "--project", "demo"]);
    assert_eq!(listed.matches("closed").count(), 2, "{listed}");
    assert!(data.join("loom.sqlite").exists() && !tmp.path().join(".loom").exists(), "state is in --data-dir");
    // One process, one recorder: the control plane's `/metrics` shows its agents' too.
    let (status, metrics) = crate::serve::get(&up.addr, "/metrics");
    assert_eq!(status, 200);
    let tasks = metrics.lines().find(|l| {
        l.starts_with("loom_agent_tasks_total{") && l.contains("project=\"demo\"") && l.contains("outcome=\"success\"")
    });
    assert_eq!(tasks.and_then(|l| l.rsplit(' ').next()), Some("2"), "{metrics}");
    assert!(metrics.contains("loom_agent_slots{"), "{metrics}");
}
