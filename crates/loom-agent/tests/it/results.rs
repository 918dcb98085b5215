//! What a user sees of a finished bead, end to end (control plane + real agent + PostgreSQL +
//! NATS): the result kept and shown (`GET /beads/{id}`, `GET /beads/{id}/attempts`), the
//! assignee of a started bead, the project's commands reaching shell and LLM beads, and the
//! follow-up beads an LLM's `create_bead` asks for, created once even when the result comes twice.

use std::time::{Duration, Instant};

use loom_agent::ApiKey;
use loom_bus::{Outgoing, ResultData, ResultKind, ResultMessage, ResultMetadata, ResultStatus, TraceContext};
use loom_domain::{AgentId, BeadId};
use serde_json::{Value, json};

use crate::support::{ChatServer, say};
use crate::system::{Own, System, fast_control_plane};

const KEY: &str = "sk-results-test-4242";

/// Sets the project's `build`, `test` and `lint` commands and a note.
async fn project_commands(s: &System) {
    let body = json!({
        "git_repo": s.repo.remote,
        "context": { "build": "make build", "test": "make test", "lint": "make lint", "notes": "use tabs" },
    });
    let (status, v) = s.call(reqwest::Method::PUT, "/api/v1/projects/deliver", Some(body)).await;
    assert!(status.is_success(), "{status} {v}");
}

/// `GET {path}` until `done` holds (or a minute passed); returns the last answer.
async fn wait_get(s: &System, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, v) = s.call(reqwest::Method::GET, path, None).await;
        assert!(status.is_success(), "GET {path}: {status} {v}");
        if done(&v) || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_bead_keeps_its_result_and_sees_the_project_commands() {
    let s = System::start(Own::default(), fast_control_plane()).await;
    project_commands(&s).await;
    let agent = s.agent("result-agent", 1);
    let command = "echo \"build=$LOOM_BUILD test=$LOOM_TEST lint=$LOOM_LINT\" && echo done > RESULT.txt";
    let body = json!({ "project_id": "deliver", "title": "report", "context": { "command": command } });
    let (_, created) = s.call(reqwest::Method::POST, "/api/v1/beads", Some(body)).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let shown = wait_get(&s, &format!("/api/v1/beads/{id}"), |b| b["status"] == "closed").await;
    assert_eq!(shown["status"], "closed", "{shown:#}");
    assert_eq!(shown["assignee"], "result-agent", "a started bead is assigned to its agent");
    let r = &shown["latest_result"];
    assert_eq!((&r["status"], &r["attempt"], &r["agent_id"]), (&json!("success"), &json!(1), &json!("result-agent")));
    assert!(
        r["output"].as_str().unwrap().contains("build=make build test=make test lint=make lint"),
        "the command saw the project's commands: {r:#}"
    );
    let pushed = s.repo.log("main");
    assert_eq!(r["commits"].as_array().unwrap().len(), 1, "{r:#}");
    assert_eq!(r["commits"][0]["branch"], "main");
    assert!(pushed[0].starts_with(&format!("{id}: report")), "{pushed:?}");
    assert!(r["duration_ms"].as_u64().unwrap() > 0 && r["started_at"].is_string() && r["finished_at"].is_string());
    let attempts = wait_get(&s, &format!("/api/v1/beads/{id}/attempts"), |_| true).await;
    assert_eq!(attempts.as_array().unwrap().len(), 1, "{attempts:#}");
    assert_eq!(attempts[0], *r, "the latest result is the last attempt");
    let (status, _) = s.call(reqwest::Method::GET, "/api/v1/beads/deliver-zzzz/attempts", None).await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    agent.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_bead_sees_the_project_commands_and_its_follow_ups_are_created_once() {
    let server = ChatServer::start(vec![
        say(json!({"action": "create_bead", "title": "document the flag", "priority": 1, "type": "chore"})),
        say(json!({"action": "create_bead", "title": "test the flag", "description": "edge cases"})),
        say(json!({"action": "done", "summary": "nothing to change; two follow-ups"})),
    ])
    .await;
    let s = System::start(Own::default(), fast_control_plane()).await;
    project_commands(&s).await;
    let mut config = s.agent_config("llm-agent", 1);
    config.llm.base_url = server.url.clone();
    config.llm.api_key = Some(ApiKey::new(KEY));
    let agent = loom_agent_run(config, &s);
    let body = json!({ "project_id": "deliver", "title": "add a flag", "context": { "executor": "llm" } });
    let (_, created) = s.call(reqwest::Method::POST, "/api/v1/beads", Some(body)).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let shown = wait_get(&s, &format!("/api/v1/beads/{id}"), |b| b["status"] == "closed").await;
    assert_eq!(shown["status"], "closed", "{shown:#}");

    let first = server.requests()[0].body["messages"][1]["content"].as_str().unwrap().to_owned();
    for line in ["- build: make build", "- test: make test", "- lint: make lint", "- notes: use tabs"] {
        assert!(first.contains(line), "the LLM's task names the project's {line:?}: {first}");
    }
    let follow_ups = || async {
        let all = s.beads().await;
        all.into_iter().filter(|b| b.id.as_str() != id).collect::<Vec<_>>()
    };
    let created = follow_ups().await;
    let titles: Vec<&str> = created.iter().map(|b| b.title.as_str()).collect();
    assert_eq!(titles, ["document the flag", "test the flag"]);
    assert!(created.iter().all(|b| b.context["discovered_from"] == id), "{created:#?}");
    assert_eq!((created[0].priority.get(), created[0].bead_type.as_str()), (1, "chore"));
    assert_eq!((created[1].priority.get(), created[1].description.as_str()), (2, "edge cases"));
    let r = &shown["latest_result"];
    let ids: Vec<&str> = created.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(r["created_beads"], json!(ids), "{r:#}");
    assert_eq!(r["output"], "nothing to change; two follow-ups");

    // The same result again, past JetStream's dedupe window (as after a redelivery): ignored.
    let duplicate = result_like(&id, r);
    let out = s.bus.result(&duplicate, &TraceContext::default()).unwrap();
    s.bus.publish(Outgoing::raw(out.subject(), "a-later-copy", out.payload().clone())).await.unwrap();
    // The control plane acks a result only after the store applied (or ignored) it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !results_settled(&s).await {
        assert!(Instant::now() < deadline, "the duplicate result was never settled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(follow_ups().await.len(), 2, "a repeated result creates nothing new");
    let attempts = wait_get(&s, &format!("/api/v1/beads/{id}/attempts"), |_| true).await;
    assert_eq!(attempts.as_array().unwrap().len(), 1, "nor a second attempt: {attempts:#}");
    agent.stop().await;
    s.stop().await;
}

fn loom_agent_run(config: loom_agent::AgentConfig, s: &System) -> crate::support::Agent {
    crate::support::Agent::start(config, &s.bus)
}

/// A copy of the result the agent published for `bead` (as its attempt shows it), with the
/// follow-ups it asked for.
fn result_like(bead: &str, attempt: &Value) -> ResultMessage {
    let asked = json!([
        {"title": "document the flag", "description": "", "priority": 1, "type": "chore"},
        {"title": "test the flag", "description": "edge cases", "priority": 2, "type": "task"},
    ]);
    ResultMessage {
        kind: ResultKind::Completed,
        project_id: loom_domain::ProjectId::parse("deliver").unwrap(),
        bead_id: BeadId::parse(bead).unwrap(),
        agent_id: AgentId::parse("llm-agent").unwrap(),
        result: ResultData {
            status: ResultStatus::Success,
            output: attempt["output"].as_str().unwrap().to_owned(),
            error: String::new(),
            commits: Vec::new(),
            branch: String::new(),
            artifacts: Vec::new(),
            duration: 5,
            context: [("created_beads".to_owned(), asked.to_string())].into(),
        },
        correlation_id: String::new(),
        timestamp: chrono::Utc::now(),
        metadata: ResultMetadata {
            dispatch_id: loom_domain::DispatchId::parse(attempt["dispatch_id"].as_str().unwrap()).unwrap(),
            attempt: 1,
        },
    }
}

/// Whether the control plane's result consumer has nothing left to deliver or to ack.
async fn results_settled(s: &System) -> bool {
    let health = s.bus.health().await;
    let results = health.consumers.iter().find(|c| c.consumer.contains("results"));
    results.is_some_and(|c| c.num_pending == 0 && c.num_ack_pending == 0)
}
