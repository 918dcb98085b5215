//! The LLM executor against a real, scripted chat completions server and a real repository.

use loom_agent::ApiKey;
use loom_bus::ResultKind;
use serde_json::json;

use crate::support::{Agent, ChatServer, Reply, Repo, embedded, final_result, publish, results, say, task};

const KEY: &str = "sk-test-secret-4242";

fn config(repo: &Repo, server: &ChatServer) -> loom_agent::AgentConfig {
    let mut c = repo.config("demo");
    c.llm.base_url = server.url.clone();
    c.llm.api_key = Some(ApiKey::new(KEY));
    c.llm.model = "test-model".into();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_bead_is_implemented_committed_and_pushed() {
    let repo = Repo::new();
    let server = ChatServer::start(vec![
        Reply::Say(format!(
            "I'll create the file.\n```json\n{}\n```",
            json!({"action": "write_file", "path": "src/hello.txt", "content": "hello\n"})
        )),
        say(json!({"action": "edit_file", "path": "src/hello.txt", "old": "hello", "new": "hello world"})),
        say(json!({"action": "read_file", "path": "src/hello.txt"})),
        say(json!({"action": "run_command", "command": "cat src/hello.txt && echo key=${LOOM_LLM_API_KEY-unset}"})),
        say(json!({"action": "create_bead", "title": "document hello", "priority": 2})),
        say(json!({"action": "git_commit", "message": "add hello"})),
        say(json!({"action": "done", "summary": "added hello.txt"})),
    ])
    .await;
    let bus = embedded();
    let mut sub = results(&bus).await;
    let agent = Agent::start(config(&repo, &server), &bus);
    publish(&bus, &task("demo", "demo-1", "llm", &[])).await;
    let r = final_result(&mut sub).await;
    assert_eq!(r.kind, ResultKind::Completed, "{r:?}");
    assert_eq!(r.result.output, "added hello.txt");
    assert_eq!(repo.show("main", "src/hello.txt").as_deref(), Some("hello world\n"));
    assert_eq!(repo.log("main")[0], "add hello");
    assert_eq!(r.result.commits.len(), 1);
    assert_eq!(r.result.context["llm_total_tokens"], "770", "7 replies × 110 tokens");
    assert_eq!(r.result.context["llm_iterations"], "7");
    let actions: serde_json::Value = serde_json::from_str(&r.result.context["actions"]).unwrap();
    let names: Vec<&str> = actions.as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert_eq!(names, ["write_file", "edit_file", "read_file", "run_command", "create_bead", "git_commit", "done"]);
    assert!(r.result.artifacts.contains(&"bead:document hello".to_owned()), "{r:?}");

    let requests = server.requests();
    assert_eq!(requests.len(), 7);
    assert_eq!(requests[0].authorization.as_deref(), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(requests[0].body["model"], "test-model");
    let system = requests[0].body["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("MARKER-AGENTS-MD"), "AGENTS.md is in the system prompt: {system}");
    assert!(system.contains("Action protocol"));
    let observation =
        |i: usize| requests[i].body["messages"].as_array().unwrap().last().unwrap()["content"].to_string();
    assert!(observation(3).contains("hello world"), "read_file shows the edit: {}", observation(3));
    assert!(observation(4).contains("key=unset"), "commands do not see the agent's environment: {}", observation(4));
    for req in &requests {
        assert!(!req.body.to_string().contains(KEY), "the API key never appears in a prompt");
    }
    assert!(!serde_json::to_string(&r).unwrap().contains(KEY), "nor in the result");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_output_is_retried_then_failed_clearly() {
    let repo = Repo::new();
    let server = ChatServer::start(vec![
        Reply::Say("Sure! I will edit the file now.".into()),
        Reply::Say("```json\n{\"action\": \"read_file\"}\n```".into()),
        Reply::Say("{\"not\": \"an action\"}".into()),
    ])
    .await;
    let bus = embedded();
    let mut sub = results(&bus).await;
    let agent = Agent::start(config(&repo, &server), &bus);
    publish(&bus, &task("demo", "demo-2", "llm", &[])).await;
    let r = final_result(&mut sub).await;
    assert_eq!(r.kind, ResultKind::Failed);
    assert!(r.result.error.contains("could not be parsed as an action 3 times"), "{}", r.result.error);
    assert!(r.result.error.contains("no \"action\" field"), "the last reason is given: {}", r.result.error);
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    let correction = requests[1].body["messages"].as_array().unwrap().last().unwrap()["content"].to_string();
    assert!(correction.contains("not a valid action") && correction.contains("no JSON object"), "{correction}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_absolute_paths_and_symlink_escapes_are_refused() {
    let repo = Repo::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "top secret").unwrap();
    // A symlink committed to the repository that points out of it.
    let seed = repo.seed();
    std::os::unix::fs::symlink(outside.path(), seed.join("escape")).unwrap();
    crate::support::git(&seed, &["add", "-A"]);
    crate::support::git(&seed, &["commit", "-q", "-m", "symlink"]);
    crate::support::git(&seed, &["push", "-q", "origin", "main"]);
    let absolute = outside.path().join("abs.txt");
    let server = ChatServer::start(vec![
        say(json!({"action": "read_file", "path": "../../secret.txt"})),
        say(json!({"action": "write_file", "path": absolute.to_str().unwrap(), "content": "x"})),
        say(json!({"action": "write_file", "path": "escape/pwned.txt", "content": "x"})),
        say(json!({"action": "read_file", "path": "escape/secret.txt"})),
        say(json!({"action": "write_file", "path": ".git", "content": "gitdir: /tmp"})),
        say(json!({"action": "fail", "reason": "the sandbox held"})),
    ])
    .await;
    let bus = embedded();
    let mut sub = results(&bus).await;
    let agent = Agent::start(config(&repo, &server), &bus);
    publish(&bus, &task("demo", "demo-3", "llm", &[])).await;
    let r = final_result(&mut sub).await;
    assert_eq!(r.kind, ResultKind::Failed);
    assert!(r.result.error.contains("the sandbox held"), "{r:?}");
    let requests = server.requests();
    let observations: Vec<String> = requests[1..]
        .iter()
        .map(|q| q.body["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap().to_owned())
        .collect();
    assert!(observations[0].contains("refused") && observations[0].contains("`..`"), "{}", observations[0]);
    assert!(observations[1].contains("refused") && observations[1].contains("absolute"), "{}", observations[1]);
    assert!(observations[2].contains("refused") && observations[2].contains("outside"), "{}", observations[2]);
    assert!(observations[3].contains("refused") && !observations[3].contains("top secret"), "{}", observations[3]);
    assert!(observations[4].contains("refused") && observations[4].contains(".git"), "{}", observations[4]);
    assert!(!absolute.exists() && !outside.path().join("pwned.txt").exists(), "nothing was written outside");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_length_errors_trim_history_and_repeats_stop_the_loop() {
    let repo = Repo::new();
    let list = say(json!({"action": "list_files"}));
    let server = ChatServer::start(vec![
        say(json!({"action": "git_status"})),
        say(json!({"action": "read_file", "path": "README.md"})),
        Reply::Status(400, r#"{"error":{"message":"This model's maximum context length is 8192 tokens","code":"context_length_exceeded"}}"#.into()),
        list.clone(),
        list.clone(),
        list,
    ])
    .await;
    let bus = embedded();
    let mut sub = results(&bus).await;
    let agent = Agent::start(config(&repo, &server), &bus);
    publish(&bus, &task("demo", "demo-4", "llm", &[])).await;
    let r = final_result(&mut sub).await;
    assert_eq!(r.kind, ResultKind::Failed);
    assert!(r.result.error.contains("repeated the same list_files action 3 times"), "{}", r.result.error);
    let requests = server.requests();
    let sizes: Vec<usize> = requests.iter().map(|q| q.body["messages"].as_array().unwrap().len()).collect();
    assert_eq!(sizes[..4], [2, 4, 6, 4], "the retry after the 400 dropped the oldest exchange: {sizes:?}");
    agent.stop().await;
}
