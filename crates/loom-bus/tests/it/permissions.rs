//! `deploy/nats/`: a nats-server of the test's own, started with `nats-server.conf` rendered by
//! `render.sh` for projects `p` and `q`. The control plane's user works end to end; agent-p's user
//! pulls its own task and publishes `loom.results.p`, and nothing else: its publishes on another
//! project's results or on `loom.tasks.>` are refused by the server (nothing lands in a stream),
//! and it cannot pull project q's consumer.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use loom_bus::{
    Bus, BusConfig, ConsumeOptions, Credentials, Outgoing, ResultData, ResultKind, ResultMessage, ResultMetadata,
    ResultStatus, TaskMessage, TraceContext,
};
use loom_domain::{AgentId, ProjectId};
use loom_faults::NatsServer;

use crate::support::{task, within};

const CP_PASSWORD: &str = "cp-secret-1";
const EVENTS_PASSWORD: &str = "events-secret-1";

async fn server(dir: &Path) -> NatsServer {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nats");
    let out = std::process::Command::new("sh")
        .arg(deploy.join("render.sh"))
        .args(["p:agent-p-secret", "q:agent-q-secret"])
        .output()
        .unwrap();
    assert!(out.status.success(), "render.sh: {}", String::from_utf8_lossy(&out.stderr));
    let config = dir.join("nats-server.conf");
    std::fs::write(&config, &out.stdout).unwrap();
    let env = [("NATS_CONTROL_PLANE_PASSWORD", CP_PASSWORD), ("NATS_EVENTS_PASSWORD", EVENTS_PASSWORD)];
    NatsServer::start_with_config(&config, &env).await.unwrap()
}

fn config(server: &NatsServer, user: &str, password: &str) -> BusConfig {
    BusConfig {
        url: server.url(),
        credentials: Credentials::UserPassword { user: user.into(), password: password.into() },
        ack_wait: Duration::from_secs(2),
        ..BusConfig::default()
    }
}

/// agent-{project}: verifies tasks, signs none, replies on its own inbox.
async fn agent(server: &NatsServer, project: &str) -> Bus {
    let mut c = config(server, &format!("agent-{project}"), &format!("agent-{project}-secret"));
    c.inbox_prefix = format!("_INBOX.agent-{project}");
    c.task_signing_key = None;
    Bus::connect(c).await.unwrap()
}

fn result_for(task: &TaskMessage, project: &str) -> ResultMessage {
    ResultMessage {
        kind: ResultKind::Completed,
        project_id: ProjectId::parse(project).unwrap(),
        bead_id: task.bead_id.clone(),
        agent_id: AgentId::parse("agent-1").unwrap(),
        result: ResultData {
            status: ResultStatus::Success,
            output: "done".into(),
            error: String::new(),
            commits: vec![],
            branch: String::new(),
            artifacts: vec![],
            duration: 1,
            context: Default::default(),
        },
        correlation_id: String::new(),
        timestamp: Utc::now(),
        metadata: ResultMetadata { dispatch_id: task.metadata.dispatch_id.clone(), attempt: 1 },
    }
}

fn for_project(n: u64, project: &str) -> TaskMessage {
    let mut t = task(n);
    t.project_id = ProjectId::parse(project).unwrap();
    t.bead_id = loom_domain::BeadId::parse(&format!("{project}-{n}")).unwrap();
    t
}

/// Messages in each stream, read with the control plane's user.
async fn counts(server: &NatsServer) -> [u64; 2] {
    let client = async_nats::ConnectOptions::with_user_and_password("control-plane".into(), CP_PASSWORD.into())
        .connect(server.url())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let mut out = [0; 2];
    for (i, name) in ["LOOM_TASKS", "LOOM_RESULTS"].into_iter().enumerate() {
        out[i] = js.get_stream(name).await.unwrap().info().await.unwrap().state.messages;
    }
    out
}

/// A publish the server must refuse: it is never acknowledged as stored.
async fn refused(bus: &Bus, msg: Outgoing) {
    let subject = msg.subject().to_owned();
    let outcome = within(4, bus.publish(msg)).await;
    assert!(!matches!(outcome, Some(Ok(_))), "publish on {subject} was accepted: {outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_is_held_to_its_subjects() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let trace = TraceContext::default();
    let (p, q) = (ProjectId::parse("p").unwrap(), ProjectId::parse("q").unwrap());

    let anonymous = Bus::connect(BusConfig { url: server.url(), ..BusConfig::default() }).await;
    assert!(anonymous.is_err(), "the server has users: an anonymous client is refused");
    let wrong = Bus::connect(config(&server, "agent-p", "agent-q-secret")).await;
    assert!(wrong.is_err(), "a wrong password is refused");

    let cp = Bus::connect(config(&server, "control-plane", CP_PASSWORD)).await.unwrap();
    cp.provision().await.unwrap();
    drop(cp.consume_tasks(&q, None, ConsumeOptions::default()).await.unwrap());
    let (task_p, task_q) = (for_project(1, "p"), for_project(2, "q"));
    for t in [&task_p, &task_q] {
        cp.publish(cp.task(t, &trace).unwrap()).await.unwrap();
    }
    assert_eq!(counts(&server).await, [2, 0]);

    // agent-p: provisioning checks (read-only), registers, pulls its task, reports, acks.
    let agent_p = agent(&server, "p").await;
    agent_p.provision().await.expect("an agent's provisioning only reads what the control plane made");
    let record = loom_bus::AgentRecord {
        agent_id: AgentId::parse("agent-1").unwrap(),
        project_id: p.clone(),
        role: String::new(),
        instance: "test".into(),
        status: loom_domain::AgentStatus::Idle,
        current_bead: None,
        capacity: 1,
        last_heartbeat: Utc::now(),
    };
    agent_p.register_agent(&record).await.unwrap();
    let mut tasks = agent_p.consume_tasks(&p, None, ConsumeOptions::default()).await.unwrap();
    let got = within(10, tasks.next()).await.flatten().expect("agent-p pulls its task");
    assert_eq!(got.message, task_p);
    agent_p.publish(agent_p.result(&result_for(&task_p, "p"), &trace).unwrap()).await.unwrap();
    got.delivery.ack().await.unwrap();
    assert_eq!(counts(&server).await, [1, 1], "p's task is done, its result stored, q's task waits");

    // What agent-p's user may not do.
    refused(&agent_p, agent_p.result(&result_for(&task_q, "q"), &trace).unwrap()).await;
    let forged = Outgoing::raw(cp.subjects().tasks(&p, None), "forged-1", serde_json::to_vec(&task_p).unwrap());
    refused(&agent_p, forged).await;
    let forged = Outgoing::raw(cp.subjects().tasks(&q, None), "forged-2", serde_json::to_vec(&task_q).unwrap());
    refused(&agent_p, forged).await;
    let pulled = within(5, agent_p.consume_tasks(&q, None, ConsumeOptions::default())).await;
    // Refused at consumer info (a permissions violation: no reply) — or, were it bound, empty.
    if let Some(Ok(mut sub)) = pulled {
        assert!(within(3, sub.next()).await.flatten().is_none(), "agent-p received project q's task");
    }
    // Nor by asking the JetStream API for q's next message directly.
    let raw = async_nats::ConnectOptions::with_user_and_password("agent-p".into(), "agent-p-secret".into())
        .custom_inbox_prefix("_INBOX.agent-p")
        .request_timeout(Some(Duration::from_secs(2)))
        .connect(server.url())
        .await
        .unwrap();
    let next = raw.request("$JS.API.CONSUMER.MSG.NEXT.LOOM_TASKS.agents-q", "{\"batch\":1}".into()).await;
    assert!(next.is_err(), "agent-p pulled from agents-q: {next:?}");
    assert_eq!(counts(&server).await, [1, 1], "nothing agent-p was refused landed in a stream");

    // The events reader may not publish tasks either.
    let events = Bus::connect(config(&server, "events", EVENTS_PASSWORD)).await.unwrap();
    refused(&events, Outgoing::raw(cp.subjects().tasks(&q, None), "forged-3", b"{}".to_vec())).await;

    // The control plane: takes the result; agent-q still gets its task.
    let mut results = cp.consume_results(ConsumeOptions::default()).await.unwrap();
    let r = within(10, results.next()).await.flatten().expect("the control plane consumes results");
    assert_eq!(r.message.metadata.dispatch_id, task_p.metadata.dispatch_id);
    r.delivery.ack().await.unwrap();
    let agent_q = agent(&server, "q").await;
    let mut tasks_q = agent_q.consume_tasks(&q, None, ConsumeOptions::default()).await.unwrap();
    let got = within(10, tasks_q.next()).await.flatten().expect("agent-q pulls its own task");
    assert_eq!(got.message, task_q, "q's task was never taken by agent-p");
    got.delivery.ack().await.unwrap();
    assert_eq!(counts(&server).await, [0, 0]);
}
