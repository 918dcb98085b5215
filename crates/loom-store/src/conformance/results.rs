//! Conformance cases: results kept as attempts, the beads a result discovered, the assignee of
//! a started bead, and project deletion that would unblock other projects' beads.

use std::time::Duration;

use loom_domain::{BeadId, BeadType, Priority, Status};

use super::dispatch::{ok, result};
use super::start::start;
use super::{bead, claim_req, ids, project};
use crate::{BeadFilter, Commit, Discovered, Error, Outcome, PageRequest, Report, ResultOutcome, Store, TokenUsage};

fn report(output: String) -> Report {
    Report {
        output,
        commits: vec![Commit { sha: "a1b2c3".into(), branch: "main".into() }],
        artifacts: vec!["target/report.html".into()],
        duration_ms: 1234,
        discovered: Vec::new(),
        usage: TokenUsage::default(),
        conversation: String::new(),
    }
}

fn follow_up(title: &str) -> Discovered {
    Discovered {
        title: title.into(),
        description: "found while working".into(),
        priority: Priority::try_from(1).unwrap(),
        bead_type: BeadType::Bug,
    }
}

async fn beads_of(store: &dyn Store, p: &loom_domain::ProjectId) -> Vec<loom_domain::Bead> {
    let filter = BeadFilter { project: Some(p.clone()), ..BeadFilter::default() };
    store.list_beads(&filter, &PageRequest::first(100)).await.unwrap().beads
}

pub async fn results_are_kept_as_attempts(store: &dyn Store) {
    let p = project(store, "kept").await;
    let a = bead(store, &p, "a", 1, &[]).await;
    assert!(store.list_attempts(&a.id).await.unwrap().is_empty(), "no attempt before a result");
    let (viewed, none) = store.get_bead_view(&a.id).await.unwrap();
    assert_eq!((viewed, none), (store.get_bead(&a.id).await.unwrap(), None), "a bead without attempts");
    let first = store.claim_ready(&claim_req(&p, 1)).await.unwrap().remove(0);
    let started = start(store, &first, "agent-7", Duration::from_secs(60)).await;
    let mut failure = result(&first, Outcome::Failure { error: "tests failed".into() });
    failure.agent_id = "agent-7".into();
    failure.report = Report { output: "1 failed".into(), ..Report::default() };
    assert!(matches!(store.record_result(&failure).await.unwrap(), ResultOutcome::Retrying(_)));

    let second = store.claim_ready(&claim_req(&p, 1)).await.unwrap().remove(0);
    start(store, &second, "agent-8", Duration::from_secs(60)).await;
    // An output over the limit keeps its tail: the end of a log is what explains it.
    let long = format!("{}THE END", "x".repeat(Report::OUTPUT_MAX));
    let mut success = result(&second, ok());
    success.agent_id = "agent-8".into();
    success.report = report(long);
    assert!(matches!(store.record_result(&success).await.unwrap(), ResultOutcome::Closed(_)));
    assert_eq!(store.record_result(&success).await.unwrap(), ResultOutcome::Ignored);

    let attempts = store.list_attempts(&a.id).await.unwrap();
    assert_eq!(attempts.len(), 2, "a repeated result adds no attempt: {attempts:#?}");
    let (f, s) = (&attempts[0], &attempts[1]);
    assert_eq!(
        (f.attempt, f.succeeded, f.error.as_deref(), f.output.as_str()),
        (1, false, Some("tests failed"), "1 failed")
    );
    assert_eq!(
        (f.agent_id.as_str(), &f.dispatch_id, f.started_at),
        ("agent-7", &first.dispatch_id, started.started_at)
    );
    assert_eq!((s.attempt, s.succeeded, s.error.as_deref(), s.agent_id.as_str()), (2, true, None, "agent-8"));
    assert_eq!(s.output.len(), Report::OUTPUT_MAX, "the output is bounded");
    assert!(s.output.ends_with("THE END"), "and keeps its tail");
    assert_eq!(s.commits, vec![Commit { sha: "a1b2c3".into(), branch: "main".into() }]);
    assert_eq!((s.artifacts.clone(), s.duration_ms), (vec!["target/report.html".to_owned()], 1234));
    assert!(s.started_at.is_some() && s.started_at.unwrap() <= s.finished_at);
    // The view: the bead as `get_bead` has it and the latest attempt, without its conversation.
    let (viewed, latest) = store.get_bead_view(&a.id).await.unwrap();
    assert_eq!(viewed, store.get_bead(&a.id).await.unwrap());
    let mut expected = s.clone();
    expected.conversation.clear();
    assert_eq!(latest, Some(expected), "the view shows the latest attempt");
    let missing = BeadId::parse("kept-zzzz").unwrap();
    assert!(matches!(store.list_attempts(&missing).await.unwrap_err(), Error::NotFound { .. }));
    assert!(matches!(store.get_bead_view(&missing).await.unwrap_err(), Error::NotFound { .. }));
}

pub async fn a_started_bead_is_assigned_to_its_agent(store: &dyn Store) {
    let p = project(store, "assign").await;
    let a = bead(store, &p, "a", 1, &[]).await;
    let claim = store.claim_ready(&claim_req(&p, 1)).await.unwrap().remove(0);
    assert_eq!(claim.bead.assignee.as_deref(), Some("test"), "queued: the claimer, as before");
    let running = start(store, &claim, "agent-9", Duration::from_secs(60)).await;
    assert_eq!(running.assignee.as_deref(), Some("agent-9"));
    assert_eq!(store.get_bead(&a.id).await.unwrap().assignee.as_deref(), Some("agent-9"));
    let filter = BeadFilter { assignee: Some("agent-9".into()), ..BeadFilter::default() };
    assert_eq!(ids(&store.list_beads(&filter, &PageRequest::first(10)).await.unwrap().beads), ids(&[running]));
}

pub async fn discovered_beads_are_created_once(store: &dyn Store) {
    let p = project(store, "found").await;
    let a = bead(store, &p, "a", 1, &[]).await;
    let claim = store.claim_ready(&claim_req(&p, 1)).await.unwrap().remove(0);
    let mut failed = result(&claim, Outcome::Failure { error: "gave up".into() });
    failed.report.discovered = vec![follow_up("not from a failure")];
    store.record_result(&failed).await.unwrap();
    assert_eq!(beads_of(store, &p).await.len(), 1, "a failed attempt creates nothing (its retry asks again)");

    let claim = store.claim_ready(&claim_req(&p, 1)).await.unwrap().remove(0);
    let mut success = result(&claim, ok());
    success.report.discovered = vec![follow_up("write the docs"), follow_up("fix the flaky test")];
    // Twice in one batch, then again on its own: the result is applied once.
    let outcomes = store.record_results(&[success.clone(), success.clone()]).await.unwrap();
    assert!(matches!(outcomes[..], [ResultOutcome::Closed(_), ResultOutcome::Ignored]), "{outcomes:?}");
    assert_eq!(store.record_result(&success).await.unwrap(), ResultOutcome::Ignored);

    let all = beads_of(store, &p).await;
    assert_eq!(all.len(), 3, "two follow-ups, created once: {:?}", ids(&all));
    let created: Vec<_> = all.iter().filter(|b| b.id != a.id).collect();
    assert_eq!(created.iter().map(|b| b.title.as_str()).collect::<Vec<_>>(), ["write the docs", "fix the flaky test"]);
    for b in &created {
        assert_eq!(b.context.get(crate::DISCOVERED_FROM).map(String::as_str), Some(a.id.as_str()));
        assert_eq!((b.status, b.bead_type, b.priority.get()), (Status::Open, BeadType::Bug, 1));
        assert_eq!(b.description, "found while working");
    }
    let attempts = store.list_attempts(&a.id).await.unwrap();
    assert_eq!(attempts.len(), 2);
    assert!(attempts[0].created_beads.is_empty());
    assert_eq!(attempts[1].created_beads, created.iter().map(|b| b.id.clone()).collect::<Vec<_>>());
}

pub async fn project_delete_refuses_other_projects_dependents(store: &dyn Store) {
    let lib = project(store, "lib").await;
    let app = project(store, "app").await;
    let base = bead(store, &lib, "base", 1, &[]).await;
    let user = bead(store, &app, "uses base", 1, &[&base.id]).await;
    let err = store.delete_project(&lib).await.unwrap_err();
    let Error::Conflict(message) = &err else { panic!("expected Conflict, got {err:?}") };
    for name in ["lib", "app", user.id.as_str(), base.id.as_str()] {
        assert!(message.contains(name), "the refusal names {name}: {message}");
    }
    assert_eq!(store.get_bead(&base.id).await.unwrap().status, Status::Open, "nothing was deleted");
    assert!(store.list_ready(&app, 10, chrono::Utc::now()).await.unwrap().is_empty(), "the dependant still waits");
    store.remove_dependency(&user.id, &base.id).await.unwrap();
    store.delete_project(&lib).await.unwrap();
    assert!(matches!(store.get_bead(&base.id).await.unwrap_err(), Error::NotFound { .. }));
}

pub async fn token_usage_is_kept_per_attempt_and_summed_per_project(store: &dyn Store) {
    let p = project(store, "tokens").await;
    let other = project(store, "quiet").await;
    let a = bead(store, &p, "a", 1, &[]).await;
    bead(store, &other, "idle", 1, &[]).await;
    assert!(store.token_usage(None).await.unwrap().is_empty(), "no attempt, no usage");
    let usage = |prompt, completion, cost| TokenUsage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        model: "m-1".into(),
        provider: "127.0.0.1:8000".into(),
        cost_usd: cost,
    };
    let conversation = r#"[{"role":"system","content":"S"},{"role":"assistant","content":"done"}]"#;
    let first = store.claim_ready(&claim_req(&p, 1)).await.unwrap().remove(0);
    let mut failure = result(&first, Outcome::Failure { error: "boom".into() });
    failure.report.usage = usage(1000, 200, 0.25);
    failure.report.conversation = conversation.into();
    store.record_result(&failure).await.unwrap();
    let second = store.claim_ready(&claim_req(&p, 1)).await.unwrap().remove(0);
    let mut success = result(&second, ok());
    success.report.usage = usage(500, 50, 0.5);
    store.record_result(&success).await.unwrap();
    let attempts = store.list_attempts(&a.id).await.unwrap();
    assert_eq!(attempts[0].usage, usage(1000, 200, 0.25));
    assert_eq!(attempts[0].conversation, conversation);
    assert_eq!((attempts[1].usage.total_tokens(), attempts[1].conversation.as_str()), (550, ""));
    let totals = store.token_usage(None).await.unwrap();
    assert_eq!(totals.len(), 1, "the project without attempts is left out: {totals:?}");
    let t = &totals[0];
    assert_eq!((&t.project_id, t.attempts, t.prompt_tokens, t.completion_tokens), (&p, 2, 1500, 250));
    assert!((t.cost_usd - 0.75).abs() < 1e-9, "{t:?}");
    assert_eq!(store.token_usage(Some(&p)).await.unwrap(), totals);
    assert!(store.token_usage(Some(&other)).await.unwrap().is_empty());
    // A conversation over the bound is not kept (cut JSON would not parse).
    let mut huge = Report { conversation: "x".repeat(Report::CONVERSATION_MAX + 1), ..Report::default() };
    huge = huge.bounded();
    assert!(huge.conversation.is_empty());
}
