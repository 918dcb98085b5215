//! The shell executor with real git: results, pushes with both strategies, rebase on a
//! rejected push, and a hanging command killed at its timeout.

use std::time::{Duration, Instant};

use loom_bus::{ResultKind, ResultStatus};
use loom_domain::GitStrategy;

use crate::support::{Agent, Repo, embedded, final_result, git, publish, results, task};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_bead_is_committed_and_pushed_to_the_branch() {
    let repo = Repo::new();
    let bus = embedded();
    let mut sub = results(&bus).await;
    let agent = Agent::start(repo.config("demo"), &bus);
    let t = task("demo", "demo-1", "shell", &[("command", "echo generated > out.txt && echo built")]);
    publish(&bus, &t).await;
    let r = final_result(&mut sub).await;
    assert_eq!(r.kind, ResultKind::Completed, "{r:?}");
    assert_eq!(r.result.status, ResultStatus::Success);
    assert_eq!(r.metadata.dispatch_id, t.metadata.dispatch_id);
    assert!(r.result.output.contains("built"), "{r:?}");
    assert_eq!(r.result.commits.len(), 1, "{r:?}");
    assert_eq!(repo.show("main", "out.txt").as_deref(), Some("generated\n"));
    let head = git(repo.dir.path(), &["--git-dir", repo.remote.to_str().unwrap(), "rev-parse", "main"]);
    assert_eq!(head.trim(), r.result.commits[0], "the reported commit is the branch tip");
    assert_eq!(repo.log("main")[0], "demo-1: implement demo-1");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_push_is_rebased_and_retried() {
    let repo = Repo::new();
    let bus = embedded();
    let mut sub = results(&bus).await;
    let agent = Agent::start(repo.config("demo"), &bus);
    // While the bead runs, someone else lands a commit on main, so the agent's push is rejected.
    // The command cannot reach the other clone (it is sandboxed), so it waits for the test to.
    let wt = repo.work_root().join("demo/worktrees/demo-2");
    let command = "echo mine > mine.txt && touch started && while [ ! -f go ]; do sleep 0.05; done; rm -f go started";
    publish(&bus, &task("demo", "demo-2", "shell", &[("command", command)])).await;
    let deadline = Instant::now() + crate::support::WAIT;
    while !wt.join("started").exists() {
        assert!(Instant::now() < deadline, "the command did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seed = repo.seed();
    git(&seed, &["commit", "-q", "--allow-empty", "-m", "other"]);
    git(&seed, &["push", "-q", "origin", "HEAD:main"]);
    std::fs::write(wt.join("go"), "").unwrap();
    let r = final_result(&mut sub).await;
    assert_eq!(r.kind, ResultKind::Completed, "{r:?}");
    assert_eq!(repo.log("main")[..2], ["demo-2: implement demo-2".to_owned(), "other".to_owned()]);
    assert_eq!(repo.show("main", "mine.txt").as_deref(), Some("mine\n"));
    assert_eq!(r.result.commits.len(), 1, "only the bead's commit is reported: {r:?}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branch_pr_pushes_the_bead_branch_only() {
    let repo = Repo::new();
    let bus = embedded();
    let mut sub = results(&bus).await;
    let mut config = repo.config("demo");
    config.git_strategy = GitStrategy::BranchPr;
    config.git_repo = format!("file://{}", repo.remote.display());
    let agent = Agent::start(config, &bus);
    publish(&bus, &task("demo", "demo-3", "shell", &[("build", "echo b > b.txt"), ("test", "test -f b.txt")])).await;
    let r = final_result(&mut sub).await;
    assert_eq!(r.kind, ResultKind::Completed, "{r:?}");
    assert_eq!(repo.show("bead/demo-3", "b.txt").as_deref(), Some("b\n"));
    assert_eq!(repo.show("main", "b.txt"), None, "branch-pr leaves main alone");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_fails_the_task_and_pushes_nothing() {
    let repo = Repo::new();
    let bus = embedded();
    let mut sub = results(&bus).await;
    let agent = Agent::start(repo.config("demo"), &bus);
    publish(&bus, &task("demo", "demo-4", "shell", &[("command", "echo half > half.txt; echo broken >&2; exit 7")]))
        .await;
    let r = final_result(&mut sub).await;
    assert_eq!(r.kind, ResultKind::Failed);
    assert!(r.result.error.contains("exit 7"), "{r:?}");
    assert!(r.result.output.contains("broken"), "{r:?}");
    assert_eq!(repo.show("main", "half.txt"), None);
    publish(&bus, &task("demo", "demo-5", "shell", &[])).await;
    let r = final_result(&mut sub).await;
    assert!(r.result.error.contains("no command"), "{r:?}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_command_is_killed_at_its_timeout() {
    let repo = Repo::new();
    let bus = embedded();
    let mut sub = results(&bus).await;
    let mut config = repo.config("demo");
    config.command.timeout = Duration::from_secs(1);
    let agent = Agent::start(config, &bus);
    let started = Instant::now();
    publish(&bus, &task("demo", "demo-6", "shell", &[("command", "echo started; sleep 60.4242; echo never")])).await;
    let r = final_result(&mut sub).await;
    assert_eq!(r.kind, ResultKind::Failed);
    assert!(r.result.error.contains("timeout"), "{r:?}");
    assert!(r.result.output.contains("started"), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    assert!(!r.result.output.contains("never"));
    let sleeping = std::process::Command::new("pgrep").args(["-f", "sleep 60.4242"]).output().unwrap();
    assert!(sleeping.stdout.is_empty(), "the command's process group was killed");
    agent.stop().await;
}

/// A secret in a command or its output is not kept: the result's output and error, and the
/// command records the control plane turns into `agent.command` audit events, hold it redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_a_command_and_its_output_are_redacted_in_the_result() {
    let repo = Repo::new();
    let bus = embedded();
    let mut sub = results(&bus).await;
    let agent = Agent::start(repo.config("demo"), &bus);
    let command = "echo 'token: ghp_abcdefghijklmnopqrstuvwxyz0123' && echo password=hunter2-long-secret >&2 && exit 3";
    publish(&bus, &task("demo", "demo-9", "shell", &[("command", command)])).await;
    let r = final_result(&mut sub).await;
    assert_eq!(r.kind, ResultKind::Failed, "{r:?}");
    let kept = format!("{} {} {:?}", r.result.output, r.result.error, r.result.context);
    for secret in ["ghp_abcdefghijklmnopqrstuvwxyz0123", "hunter2-long-secret"] {
        assert!(!kept.contains(secret), "{secret} kept in {kept}");
    }
    assert!(r.result.output.contains("<redacted>"), "{r:?}");
    let commands = r.result.context.get("commands").expect("the command records");
    assert!(commands.contains("<redacted>") && commands.contains("echo"), "{commands}");
    agent.stop().await;
}
