//! `loom up` follows its projects over time: a bead's result is shown by `loom bead show`, a
//! project's commands reach its shell beads, a changed repository restarts the project's agent
//! on the new one, and an archived project's agent stops.

use std::time::{Duration, Instant};

use crate::support::{Up, bare_repo, log, show};

/// How many lines `loom up` printed that contain `text`.
fn count(up: &Up, text: &str) -> usize {
    up.output.all().iter().filter(|l| l.contains(text)).count()
}

fn create(up: &Up, title: &str, command: &str) -> String {
    let command = format!("command={command}");
    up.loom(&["bead", "create", "--project", "demo", "--title", title, "--context", &command]).trim().to_owned()
}

#[test]
fn loom_up_shows_results_and_follows_project_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let (first_dir, second_dir) = (tmp.path().join("first"), tmp.path().join("second"));
    let (first, second) = (bare_repo(&first_dir), bare_repo(&second_dir));
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let up = Up::start(&home, &[]);
    let repo = first.to_str().unwrap();
    up.loom(&["project", "add", "demo", "--repo", repo, "--context", "build=make all", "--context", "lint=make lint"]);
    let one = create(&up, "one", "echo \"build: $LOOM_BUILD, lint: $LOOM_LINT\" | tee ONE.txt");
    assert_eq!(up.wait_status(&one, "closed")["status"], "closed");
    assert_eq!(show(&first, "ONE.txt"), "build: make all, lint: make lint\n", "the project's commands reach the bead");
    let shown = up.loom(&["bead", "show", &one]);
    for want in
        ["latest result: success (attempt 1, agent ", "commit ", " on main", "| build: make all, lint: make lint"]
    {
        assert!(shown.contains(want), "`loom bead show` shows {want:?}:\n{shown}");
    }

    up.loom(&["project", "update", "demo", "--repo", second.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&up, "starting an agent for the project") < 2 {
        assert!(Instant::now() < deadline, "the agent was not restarted:\n{}", up.output.text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(count(&up, "restarting its agent"), 1, "{}", up.output.text());
    let two = create(&up, "two", "echo two > TWO.txt");
    assert_eq!(up.wait_status(&two, "closed")["status"], "closed");
    assert_eq!(show(&second, "TWO.txt"), "two\n", "the restarted agent works on the new repository");
    assert!(!log(&first).iter().any(|s| s.starts_with(&two)), "and not on the old one: {:?}", log(&first));

    up.loom(&["project", "update", "demo", "--status", "archived"]);
    up.output.wait_for("the agent stopping", Duration::from_secs(30), |l| l.contains("stopping its agent"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let agents: serde_json::Value = serde_json::from_str(&up.loom(&["agent", "list", "--json"])).unwrap();
        if !agents.as_array().unwrap().iter().any(|a| a["project_id"] == "demo") {
            break;
        }
        assert!(Instant::now() < deadline, "the archived project's agent is still registered: {agents}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
