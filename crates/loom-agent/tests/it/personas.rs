//! Personas: a bead's `role` picks the system prompt and the actions offered; a denied action
//! is refused without running, and a persona that may not push lands nothing.

use std::time::Duration;

use loom_agent::ToolMode;
use loom_bus::{ResultKind, Role};
use serde_json::{Value, json};

use crate::support::{Agent, ChatServer, Recorded, Repo, calls, embedded, final_result, publish, results, task};

fn system(req: &Recorded) -> &str {
    req.messages()[0]["content"].as_str().unwrap()
}

/// The answers (`tool` messages) the request carries, in order.
fn answers(req: &Recorded) -> Vec<String> {
    let tool = req.messages().iter().filter(|m| m["role"] == "tool");
    tool.map(|m| m["content"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reviewer_bead_gets_the_reviewer_prompt_and_tools_and_cannot_commit_write_or_push() {
    let repo = Repo::new();
    let reviewer = [
        calls(&[("git_diff", json!({}))]),
        calls(&[("git_commit", json!({"message": "sneaky fix"}))]),
        calls(&[("write_file", json!({"path": "fix.txt", "content": "x"}))]),
        // A command may still change the worktree; the change is never landed.
        calls(&[("run_command", json!({"command": "echo review > notes.txt"}))]),
        calls(&[("done", json!({"summary": "approve"}))]),
    ];
    let engineer = [
        calls(&[("write_file", json!({"path": "hello.txt", "content": "hi\n"}))]),
        calls(&[("git_commit", json!({"message": "add hello"}))]),
        calls(&[("done", json!({"summary": "added"}))]),
    ];
    let server = ChatServer::start(reviewer.into_iter().chain(engineer).collect()).await;
    let bus = embedded();
    let mut sub = results(&bus).await;
    let mut config = repo.config("demo");
    config.llm.base_url = server.url.clone();
    config.llm.tool_mode = ToolMode::Tools;
    config.llm.retry_base = Duration::from_millis(20);
    // As `loom serve agent --role reviewer`: the bead's role routes it to this agent.
    let mut reviewer_config = config.clone();
    reviewer_config.role = Some(Role::parse("reviewer").unwrap());
    let agent = Agent::start(reviewer_config, &bus);

    let mut review = task("demo", "demo-rv", "llm", &[("role", "reviewer")]);
    review.metadata.role = Some("reviewer".into());
    publish(&bus, &review).await;
    let r = final_result(&mut sub).await;
    assert_eq!(r.kind, ResultKind::Completed, "{r:?}");
    assert_eq!(r.result.output, "approve");
    assert!(r.result.commits.is_empty(), "{r:?}");
    assert_eq!(r.result.context["persona"], "reviewer");
    assert_eq!(r.result.context["push"], "not pushed: the reviewer persona may not push");
    assert_eq!(repo.log("main"), ["seed"], "nothing reached the remote");
    assert_eq!(repo.show("main", "notes.txt"), None);
    let heads = crate::support::git(repo.dir.path(), &["--git-dir", repo.remote.to_str().unwrap(), "branch", "-a"]);
    assert_eq!(heads.trim(), "* main", "no other branch was pushed either");
    let actions: Value = serde_json::from_str(&r.result.context["actions"]).unwrap();
    let refused: Vec<&str> = actions
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["detail"] == "denied by the persona")
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(refused, ["git_commit", "write_file"]);

    let requests = server.requests();
    let want = include_str!("../../../../personas/reviewer/SKILL.md");
    let body = want.split("\n---\n").nth(1).unwrap().trim();
    assert!(system(&requests[0]).starts_with(body), "the SKILL.md body is the system prompt: {}", system(&requests[0]));
    assert!(system(&requests[0]).contains("may not use: write_file, edit_file, git_commit, push"));
    let offered = requests[0].tools();
    for denied in ["write_file", "edit_file", "git_commit"] {
        assert!(!offered.contains(&denied), "{denied} is not offered: {offered:?}");
    }
    assert!(offered.contains(&"git_diff") && offered.contains(&"run_command") && offered.contains(&"done"));
    let said = answers(&requests[4]);
    assert!(said[1].contains("git_commit is not available to the reviewer persona"), "{said:?}");
    assert!(said[2].contains("write_file is not available to the reviewer persona"), "{said:?}");

    // A bead without a role, on an agent without one: the engineer, who may do everything.
    agent.stop().await;
    let agent = Agent::start(config, &bus);
    publish(&bus, &task("demo", "demo-en", "llm", &[])).await;
    let r = final_result(&mut sub).await;
    assert_eq!(r.kind, ResultKind::Completed, "{r:?}");
    assert_eq!(r.result.context["persona"], "engineer");
    assert_eq!(repo.log("main")[0], "add hello");
    let requests = server.requests();
    let first = &requests[5];
    assert!(system(first).starts_with("# Engineer"), "{}", system(first));
    assert!(!system(first).contains("may not use"));
    assert_eq!(first.tools().len(), 15, "every action is offered: {:?}", first.tools());
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_a_persona_fails_the_task_naming_the_known_ones() {
    let repo = Repo::new();
    let server = ChatServer::start(vec![]).await;
    let bus = embedded();
    let mut sub = results(&bus).await;
    let mut config = repo.config("demo");
    config.llm.base_url = server.url.clone();
    config.role = Some(Role::parse("astronaut").unwrap());
    let agent = Agent::start(config, &bus);
    let mut t = task("demo", "demo-nr", "llm", &[("role", "astronaut")]);
    t.metadata.role = Some("astronaut".into());
    publish(&bus, &t).await;
    let r = final_result(&mut sub).await;
    assert_eq!(r.kind, ResultKind::Failed);
    assert!(r.result.error.contains("no persona named \"astronaut\""), "{}", r.result.error);
    assert!(r.result.error.contains("reviewer"), "{}", r.result.error);
    assert!(server.requests().is_empty(), "the model was never asked");
    agent.stop().await;
}
