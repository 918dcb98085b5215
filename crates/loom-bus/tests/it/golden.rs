//! Golden files: the exact JSON of every message type (DESIGN.md §3), and tolerance of the
//! fields older or newer agents add.

use chrono::{DateTime, Utc};
use loom_bus::{
    EventBody, EventMessage, ResultData, ResultKind, ResultMessage, ResultMetadata, ResultStatus, TaskData, TaskKind,
    TaskMessage, TaskMetadata,
};
use loom_domain::{AgentId, BeadId, DispatchId, EventKind, ProjectId};

fn golden(name: &str) -> String {
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")).trim_end().to_owned()
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn check<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(msg: &T, file: &str) {
    let expected = golden(file);
    assert_eq!(serde_json::to_string_pretty(msg).unwrap(), expected, "{file}");
    let decoded: T = serde_json::from_str(&expected).unwrap();
    assert_eq!(&decoded, msg, "{file} decodes back");
}

fn assigned() -> TaskMessage {
    TaskMessage {
        kind: TaskKind::Assigned,
        project_id: ProjectId::parse("web-app").unwrap(),
        bead_id: BeadId::parse("web-1z3").unwrap(),
        assigned_to: "engineer".into(),
        task_data: TaskData {
            title: "Fix the login form".into(),
            description: "The submit button does nothing.".into(),
            priority: 1,
            bead_type: "bug".into(),
            context: [("test".to_owned(), "cargo test".to_owned())].into(),
            work_dir: "/var/lib/loom/web-app".into(),
            project_context: Default::default(),
        },
        correlation_id: "c-42".into(),
        timestamp: at("2024-05-01T12:00:00Z"),
        metadata: TaskMetadata {
            dispatch_id: DispatchId::parse("01HX7Z").unwrap(),
            attempt: 2,
            role: Some("engineer".into()),
            executor: "llm".into(),
        },
    }
}

#[test]
fn task_assigned() {
    check(&assigned(), "task_assigned.json");
}

#[test]
fn task_cancelled() {
    let msg = TaskMessage {
        kind: TaskKind::Cancelled,
        assigned_to: String::new(),
        task_data: TaskData::default(),
        correlation_id: "c-43".into(),
        timestamp: at("2024-05-01T12:05:00Z"),
        metadata: TaskMetadata { role: None, executor: String::new(), ..assigned().metadata },
        ..assigned()
    };
    check(&msg, "task_cancelled.json");
}

#[test]
fn result_completed() {
    let msg = ResultMessage {
        kind: ResultKind::Completed,
        project_id: ProjectId::parse("web-app").unwrap(),
        bead_id: BeadId::parse("web-1z3").unwrap(),
        agent_id: AgentId::parse("agent-host1-123-ab12").unwrap(),
        result: ResultData {
            status: ResultStatus::Success,
            output: "fixed".into(),
            error: String::new(),
            commits: vec!["9fceb02".into()],
            branch: String::new(),
            artifacts: vec![],
            duration: 1500,
            context: Default::default(),
        },
        correlation_id: "c-42".into(),
        timestamp: at("2024-05-01T12:10:00Z"),
        metadata: ResultMetadata { dispatch_id: DispatchId::parse("01HX7Z").unwrap(), attempt: 2 },
    };
    check(&msg, "result_completed.json");
}

#[test]
fn event_status_changed() {
    let msg = EventMessage {
        kind: EventKind::BeadStatusChanged,
        source: "control-plane".into(),
        project_id: Some(ProjectId::parse("web-app").unwrap()),
        entity_id: "web-1z3".into(),
        event: EventBody {
            action: "status_changed".into(),
            category: "bead".into(),
            description: "open -> in_progress".into(),
            data: serde_json::json!({"from": "open", "to": "in_progress"}),
        },
        correlation_id: "c-42".into(),
        timestamp: at("2024-05-01T12:00:01Z"),
    };
    check(&msg, "event_status_changed.json");
}

#[test]
fn unknown_fields_are_ignored_and_optional_ones_default() {
    let old_agent = r#"{"type":"task.progress","project_id":"p","bead_id":"p-1","agent_id":"a1",
        "result":{"status":"in_progress","percent":40},"timestamp":"2024-05-01T12:00:00Z",
        "metadata":{"dispatch_id":"d1","host":"x"},"extra":{"nested":true}}"#;
    let msg: ResultMessage = serde_json::from_str(old_agent).unwrap();
    assert_eq!(msg.kind, ResultKind::Progress);
    assert_eq!(msg.result.status, ResultStatus::InProgress);
    assert_eq!(msg.metadata.attempt, 0);
    assert!(msg.result.commits.is_empty());
}

#[test]
fn invalid_ids_are_refused_at_decode() {
    let bad = golden("task_assigned.json").replace("\"web-app\"", "\"web.app\"");
    let err = serde_json::from_str::<TaskMessage>(&bad).unwrap_err().to_string();
    assert!(err.contains("invalid project id"), "{err}");
}
