//! The LLM executor against a real, scripted chat completions server and a real repository.

use std::time::Duration;

use loom_agent::{ApiKey, ToolMode};
use loom_bus::{ResultKind, ResultMessage};
use serde_json::{Value, json};

use crate::support::{
    Agent, ChatServer, Recorded, Reply, Repo, SERVED_MODEL, calls, embedded, final_result, publish, results, say, task,
};

const KEY: &str = "sk-test-secret-4242";

fn config(repo: &Repo, server: &ChatServer, mode: ToolMode) -> loom_agent::AgentConfig {
    let mut c = repo.config("demo");
    c.llm.base_url = server.url.clone();
    c.llm.api_key = Some(ApiKey::new(KEY));
    c.llm.model = "test-model".into();
    c.llm.tool_mode = mode;
    c.llm.retry_base = Duration::from_millis(20);
    c
}

/// The last message of a request, as text.
fn last(req: &Recorded) -> String {
    req.messages().last().unwrap()["content"].as_str().unwrap_or_default().to_owned()
}

fn action_names(r: &ResultMessage) -> Vec<String> {
    let actions: Value = serde_json::from_str(&r.result.context["actions"]).unwrap();
    actions.as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap().to_owned()).collect()
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
    let agent = Agent::start(config(&repo, &server, ToolMode::Text), &bus);
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
    let agent = Agent::start(config(&repo, &server, ToolMode::Text), &bus);
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
    let agent = Agent::start(config(&repo, &server, ToolMode::Text), &bus);
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
    let agent = Agent::start(config(&repo, &server, ToolMode::Text), &bus);
    publish(&bus, &task("demo", "demo-4", "llm", &[])).await;
    let r = final_result(&mut sub).await;
    assert_eq!(r.kind, ResultKind::Failed);
    assert!(r.result.error.contains("repeated the same list_files action 3 times"), "{}", r.result.error);
    let requests = server.requests();
    let sizes: Vec<usize> = requests.iter().map(|q| q.body["messages"].as_array().unwrap().len()).collect();
    assert_eq!(sizes[..4], [2, 4, 6, 4], "the retry after the 400 dropped the oldest exchange: {sizes:?}");
    agent.stop().await;
}

/// The bead `edit → build → test → commit` takes: its project commands check the edit.
fn build_test_task(bead: &str) -> loom_bus::TaskMessage {
    task("demo", bead, "llm", &[("build", "test -f src/lib.txt"), ("test", "grep -q 'hello world' src/lib.txt")])
}

const EDIT_BUILD_TEST_COMMIT: [(&str, &str); 6] = [
    ("write_file", r#"{"path":"src/lib.txt","content":"hello\n"}"#),
    ("edit_file", r#"{"path":"src/lib.txt","old":"hello","new":"hello world"}"#),
    ("build", "{}"),
    ("test", "{}"),
    ("git_commit", r#"{"message":"add lib.txt"}"#),
    ("done", r#"{"summary":"lib.txt says hello world"}"#),
];

async fn edit_build_test_commit(mode: ToolMode, script: Vec<Reply>) -> (ResultMessage, Vec<Recorded>, Repo) {
    let repo = Repo::new();
    let server = ChatServer::start(script).await;
    let bus = embedded();
    let mut sub = results(&bus).await;
    let agent = Agent::start(config(&repo, &server, mode), &bus);
    publish(&bus, &build_test_task("demo-5")).await;
    let r = final_result(&mut sub).await;
    agent.stop().await;
    assert_eq!(r.kind, ResultKind::Completed, "{r:?}");
    assert_eq!(r.result.output, "lib.txt says hello world");
    assert_eq!(repo.show("main", "src/lib.txt").as_deref(), Some("hello world\n"), "the edit landed");
    assert_eq!(repo.log("main")[0], "add lib.txt");
    assert_eq!(action_names(&r), ["write_file", "edit_file", "build", "test", "git_commit", "done"]);
    let actions: Value = serde_json::from_str(&r.result.context["actions"]).unwrap();
    assert!(actions.as_array().unwrap().iter().all(|a| a["ok"] == true), "build and test passed: {actions}");
    let ctx = &r.result.context;
    assert_eq!(ctx["llm_turns"], "6");
    assert_eq!(ctx["llm_prompt_tokens"], "600", "6 replies × 100 prompt tokens");
    assert_eq!(ctx["llm_completion_tokens"], "60");
    assert_eq!(ctx["llm_model"], SERVED_MODEL, "the model the server says answered");
    let usage: Value = serde_json::from_str(&ctx["llm_usage"]).unwrap();
    assert_eq!(usage.as_array().unwrap().len(), 6, "one usage record per turn: {usage}");
    assert_eq!(usage[0]["prompt_tokens"], 100);
    assert!(usage[0]["model_ms"].as_f64().is_some() && usage[0]["agent_ms"].as_f64().is_some(), "{usage}");
    assert!(usage[5].get("agent_ms").is_none(), "no model call follows the last turn: {usage}");
    let agent_ms: f64 = ctx["llm_agent_ms"].parse().unwrap();
    assert!(agent_ms > 0.0, "build and test ran between model calls: {ctx:?}");
    let requests = server.requests();
    assert_eq!(requests.len(), 6);
    assert_eq!(requests[0].body["max_tokens"], 4096, "max_tokens is always requested");
    (r, requests, repo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_edit_build_test_and_commit_a_bead() {
    let script = EDIT_BUILD_TEST_COMMIT
        .iter()
        .map(|(name, args)| calls(&[(name, serde_json::from_str(args).unwrap())]))
        .collect();
    let (r, requests, _repo) = edit_build_test_commit(ToolMode::Auto, script).await;
    assert_eq!(r.result.context["llm_tool_mode"], "tools");
    for req in &requests {
        let tools = req.tools();
        assert_eq!(tools.len(), 15, "every action is offered as a tool: {tools:?}");
        assert!(tools.contains(&"edit_file") && tools.contains(&"git_commit"));
    }
    let f = &requests[0].body["tools"][2]["function"];
    assert_eq!(f["name"], "edit_file");
    assert_eq!(f["parameters"]["required"], json!(["path", "old", "new"]), "a JSON Schema per action: {f}");
    let system = requests[0].messages()[0]["content"].as_str().unwrap();
    assert!(system.contains("# Tools") && !system.contains("Action protocol"), "{system}");
    // After `build`: the assistant's call, answered by a `tool` message carrying its id.
    let m = requests[3].messages();
    let (call, answer) = (&m[m.len() - 2], &m[m.len() - 1]);
    assert_eq!(call["role"], "assistant");
    assert_eq!(call["tool_calls"][0]["type"], "function");
    assert_eq!(call["tool_calls"][0]["function"]["name"], "build");
    assert_eq!(answer["role"], "tool");
    assert_eq!(answer["tool_call_id"], call["tool_calls"][0]["id"]);
    assert!(answer["content"].as_str().unwrap().contains("exit 0"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_mode_edits_builds_tests_and_commits_a_bead() {
    let script = EDIT_BUILD_TEST_COMMIT
        .iter()
        .map(|(name, args)| {
            let mut v: Value = serde_json::from_str(args).unwrap();
            v["action"] = (*name).into();
            say(v)
        })
        .collect();
    let (r, requests, _repo) = edit_build_test_commit(ToolMode::Text, script).await;
    assert_eq!(r.result.context["llm_tool_mode"], "text");
    for req in &requests {
        assert!(req.body.get("tools").is_none(), "text mode sends no tools");
        assert!(req.messages().iter().all(|m| m["role"] != "tool"));
    }
    assert!(last(&requests[3]).contains("Result of build:\nexit 0"), "{}", last(&requests[3]));
    assert!(requests[0].messages()[0]["content"].as_str().unwrap().contains("Action protocol"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_tool_calls_in_one_reply_run_in_order() {
    let repo = Repo::new();
    let server = ChatServer::start(vec![
        calls(&[
            ("write_file", json!({"path": "a.txt", "content": "one\n"})),
            ("edit_file", json!({"path": "a.txt", "old": "one", "new": "two"})),
            ("read_file", json!({"path": "a.txt"})),
            ("read_file", json!({"path": "../escape"})),
        ]),
        calls(&[("git_commit", json!({"message": "two"})), ("done", json!({"summary": "ok"}))]),
    ])
    .await;
    let bus = embedded();
    let mut sub = results(&bus).await;
    let agent = Agent::start(config(&repo, &server, ToolMode::Tools), &bus);
    publish(&bus, &task("demo", "demo-6", "llm", &[])).await;
    let r = final_result(&mut sub).await;
    agent.stop().await;
    assert_eq!(r.kind, ResultKind::Completed, "{r:?}");
    assert_eq!(repo.show("main", "a.txt").as_deref(), Some("two\n"));
    assert_eq!(r.result.context["llm_turns"], "2", "two replies did six actions");
    assert_eq!(action_names(&r), ["write_file", "edit_file", "read_file", "read_file", "git_commit", "done"]);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let m = requests[1].messages();
    let tail = &m[m.len() - 5..];
    let ids: Vec<&Value> = tail[0]["tool_calls"].as_array().unwrap().iter().map(|c| &c["id"]).collect();
    assert_eq!(ids.len(), 4);
    for (i, answer) in tail[1..].iter().enumerate() {
        assert_eq!(answer["role"], "tool");
        assert_eq!(&answer["tool_call_id"], ids[i], "each call is answered, in order");
    }
    let text = |i: usize| tail[i]["content"].as_str().unwrap().to_owned();
    assert!(text(1).contains("wrote 4 bytes to a.txt"), "{}", text(1));
    assert!(text(2).contains("edited a.txt"), "{}", text(2));
    assert!(text(3).contains("two") && !text(3).contains("one"), "the read sees the edit before it: {}", text(3));
    assert!(text(4).contains("refused"), "a failing call is answered, not fatal: {}", text(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_after_its_retry_after_then_succeeds() {
    let repo = Repo::new();
    let server = ChatServer::start(vec![
        Reply::RateLimited("1".into()),
        say(json!({"action": "done", "summary": "after the wait"})),
        // The next task: 5xx until the retries run out, then a wait longer than allowed.
        Reply::Status(503, "overloaded".into()),
        Reply::Status(502, "bad gateway".into()),
        Reply::Status(503, "overloaded".into()),
        Reply::RateLimited("3600".into()),
    ])
    .await;
    let bus = embedded();
    let mut sub = results(&bus).await;
    let mut c = config(&repo, &server, ToolMode::Text);
    c.llm.max_retries = 2;
    let agent = Agent::start(c, &bus);
    publish(&bus, &task("demo", "demo-7", "llm", &[])).await;
    let r = final_result(&mut sub).await;
    assert_eq!(r.kind, ResultKind::Completed, "{r:?}");
    assert_eq!(r.result.context["llm_retries"], "1");
    assert_eq!(r.result.context["llm_turns"], "1", "a retry is not a turn");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let waited = requests[1].at - requests[0].at;
    assert!(waited >= Duration::from_millis(950), "Retry-After: 1 was honoured, not the 20 ms backoff: {waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    publish(&bus, &task("demo", "demo-8", "llm", &[])).await;
    let r = final_result(&mut sub).await;
    assert_eq!(r.kind, ResultKind::Failed);
    assert!(
        r.result.error.contains("HTTP 503") && r.result.error.contains("gave up after 2 retries"),
        "{}",
        r.result.error
    );
    assert_eq!(server.requests().len(), 5, "bounded: one request and two retries");

    publish(&bus, &task("demo", "demo-9", "llm", &[])).await;
    let r = final_result(&mut sub).await;
    assert_eq!(r.kind, ResultKind::Failed);
    assert!(r.result.error.contains("retry after 3600s, longer than llm.retry_max_wait_secs"), "{}", r.result.error);
    assert_eq!(server.requests().len(), 6, "a wait over the bound is not attempted");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_length_finish_asks_for_a_shorter_reply_then_fails_clearly() {
    let repo = Repo::new();
    let cut = || Reply::Cut(r#"{"action":"write_file","path":"big.txt","content":"aaaaaaaa"#.into());
    let server = ChatServer::start(vec![
        cut(),
        say(json!({"action": "done", "summary": "shorter now"})),
        // The next task is cut off every time.
        cut(),
        Reply::CutCalls(vec![("write_file".into(), json!({"path": "big.txt", "content": "never"}))]),
        cut(),
    ])
    .await;
    let bus = embedded();
    let mut sub = results(&bus).await;
    let mut c = config(&repo, &server, ToolMode::Auto);
    c.llm.max_tokens = Some(64);
    let agent = Agent::start(c, &bus);
    publish(&bus, &task("demo", "demo-10", "llm", &[])).await;
    let r = final_result(&mut sub).await;
    assert_eq!(r.kind, ResultKind::Completed, "{r:?}");
    assert_eq!(action_names(&r), ["(cut off)", "done"]);
    let requests = server.requests();
    assert_eq!(requests[0].body["max_tokens"], 64);
    let ask = last(&requests[1]);
    assert!(
        ask.contains("cut off") && ask.contains("max_tokens 64") && ask.contains("nothing in it was done"),
        "{ask}"
    );

    publish(&bus, &task("demo", "demo-11", "llm", &[])).await;
    let r = final_result(&mut sub).await;
    assert_eq!(r.kind, ResultKind::Failed);
    let e = &r.result.error;
    assert!(
        e.contains("cut off at max_tokens (64)") && e.contains("3 times in a row") && e.contains("llm.max_tokens"),
        "{e}"
    );
    assert!(repo.show("main", "big.txt").is_none() && !r.result.error.contains("never"));
    // A cut-off reply's calls are not kept: no call goes unanswered in the next request.
    let requests = server.requests();
    assert!(requests[4].messages().iter().all(|m| m.get("tool_calls").is_none()), "{:?}", requests[4].body);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_falls_back_to_text_when_tools_are_rejected_and_remembers() {
    let repo = Repo::new();
    let rejected =
        || Reply::Status(400, r#"{"error":{"code":400,"message":"tools param requires --jinja flag"}}"#.into());
    let server = ChatServer::start(vec![
        rejected(),
        say(json!({"action": "git_status"})),
        say(json!({"action": "done", "summary": "in text"})),
        say(json!({"action": "done", "summary": "second task"})),
    ])
    .await;
    let bus = embedded();
    let mut sub = results(&bus).await;
    let agent = Agent::start(config(&repo, &server, ToolMode::Auto), &bus);
    publish(&bus, &task("demo", "demo-12", "llm", &[])).await;
    let r = final_result(&mut sub).await;
    assert_eq!(r.kind, ResultKind::Completed, "{r:?}");
    assert_eq!(r.result.context["llm_tool_mode"], "text");
    publish(&bus, &task("demo", "demo-13", "llm", &[])).await;
    let r = final_result(&mut sub).await;
    assert_eq!(r.kind, ResultKind::Completed, "{r:?}");
    assert_eq!(r.result.output, "second task");
    agent.stop().await;
    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(requests[0].tools().len(), 15, "auto probes with tools");
    for (i, req) in requests.iter().enumerate().skip(1) {
        assert!(req.body.get("tools").is_none(), "request {i} has no tools: the rejection is remembered");
        let system = req.messages()[0]["content"].as_str().unwrap();
        assert!(system.contains("Action protocol"), "request {i} states the text protocol");
    }

    // `tools` insists: the same rejection fails the task clearly, and text is never tried.
    let server = ChatServer::start(vec![rejected(), say(json!({"action": "done"}))]).await;
    let agent = Agent::start(config(&repo, &server, ToolMode::Tools), &bus);
    publish(&bus, &task("demo", "demo-14", "llm", &[])).await;
    let r = final_result(&mut sub).await;
    agent.stop().await;
    assert_eq!(r.kind, ResultKind::Failed);
    assert!(
        r.result.error.contains("refused native tool calls") && r.result.error.contains("--jinja"),
        "{}",
        r.result.error
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_the_context_window_older_results_are_condensed_keeping_task_plan_last_steps_and_errors() {
    let repo = Repo::new();
    let seed = repo.seed();
    for k in 0..10 {
        std::fs::write(seed.join(format!("big{k}.txt")), format!("BIG{k}-").repeat(300)).unwrap(); // 1500 chars
    }
    crate::support::git(&seed, &["add", "-A"]);
    crate::support::git(&seed, &["commit", "-q", "-m", "big files"]);
    crate::support::git(&seed, &["push", "-q", "origin", "main"]);
    let mut script = vec![calls(&[("list_files", json!({}))]), calls(&[("read_file", json!({"path": "missing.txt"}))])];
    script.extend((0..10).map(|k| calls(&[("read_file", json!({"path": format!("big{k}.txt")}))])));
    script.push(calls(&[("done", json!({"summary": "read them all"}))]));
    let server = ChatServer::start(script).await;
    let bus = embedded();
    let mut sub = results(&bus).await;
    let mut c = config(&repo, &server, ToolMode::Tools);
    c.llm.max_tokens = Some(512);
    c.llm.context_window_tokens = 6000;
    let agent = Agent::start(c, &bus);
    publish(&bus, &task("demo", "demo-cx", "llm", &[])).await;
    let r = final_result(&mut sub).await;
    assert_eq!(r.kind, ResultKind::Completed, "{r:?}");
    let condensed: usize = r.result.context["llm_condensed"].parse().unwrap();
    assert!(condensed > 0, "{:?}", r.result.context);

    let requests = server.requests();
    let last = requests.last().unwrap();
    let text = last.body.to_string();
    // The bound: 75 % of the window at 4 characters a token (the request's JSON, model and
    // max_tokens included, so the agent's estimate is a little under this).
    assert!(text.len() <= 6000 * 3 + 100, "{} chars", text.len());
    let largest: usize = requests.iter().map(|q| q.body.to_string().len()).max().unwrap();
    assert!(largest <= 6000 * 3 + 100, "every request stayed under the bound: {largest}");
    let messages = last.messages();
    assert!(messages[1]["content"].as_str().unwrap().contains("implement demo-cx"), "the task is kept");
    assert_eq!(messages[2]["tool_calls"][0]["function"]["name"], "list_files", "the plan is kept");
    assert!(text.contains("missing.txt") && text.contains("No such file"), "the error is kept whole: {text}");
    for k in 4..10 {
        assert!(text.contains(&format!("BIG{k}-").repeat(300)), "the last six steps are whole (big{k})");
    }
    assert!(!text.contains(&"BIG0-".repeat(300)), "the oldest result went");
    assert!(text.contains("[condensed] read_file big0.txt: ok, 1500 chars of output"), "{text}");
    // Each whole result adds its 1500 characters until the threshold; then condensing shrinks
    // the request (without it the last one would be over 23,000 characters).
    let sizes: Vec<usize> = requests.iter().map(|q| q.body.to_string().len()).collect();
    assert!(sizes[9] - sizes[3] >= 6 * 1500, "{sizes:?}");
    assert!(sizes[10] < sizes[9], "{sizes:?}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reports_carry_the_latest_steps_redacted() {
    let repo = Repo::new();
    let server = ChatServer::start(vec![
        say(json!({"action": "run_command", "command": "true # password=hunter2-not-kept"})),
        say(json!({"action": "run_command", "command": "sleep 2"})),
        say(json!({"action": "done", "summary": "slept"})),
    ])
    .await;
    let bus = embedded();
    let mut sub = results(&bus).await;
    let mut c = config(&repo, &server, ToolMode::Text);
    c.progress_interval = Duration::from_millis(200);
    let agent = Agent::start(c, &bus);
    publish(&bus, &task("demo", "demo-steps", "llm", &[])).await;
    let progress = loop {
        let p = crate::support::next_of(&mut sub, &[ResultKind::Progress]).await;
        if p.result.context.get("llm_steps").is_some_and(|s| s.contains("run_command")) {
            break p;
        }
    };
    let steps: Value = serde_json::from_str(&progress.result.context["llm_steps"]).unwrap();
    assert_eq!(steps["turn"], 2, "during the second turn's command: {steps}");
    assert_eq!(steps["tokens"], 110, "{steps}");
    let first = &steps["steps"][0];
    assert_eq!((&first["step"], &first["action"], &first["ok"]), (&json!(1), &json!("run_command"), &json!(true)));
    assert_eq!(first["detail"], "true # password=<redacted>", "{steps}");
    assert!(!progress.result.context["llm_steps"].contains("hunter2"));
    let r = final_result(&mut sub).await;
    assert_eq!(r.kind, ResultKind::Completed, "{r:?}");
    let conversation: Vec<Value> = serde_json::from_str(&r.result.context["llm_conversation"]).unwrap();
    assert!(!r.result.context["llm_conversation"].contains("hunter2"), "{conversation:?}");
    assert_eq!(conversation.last().unwrap()["content"], "finished: slept");
    agent.stop().await;
}
