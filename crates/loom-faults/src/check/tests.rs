//! The checker against doctored histories: a clean run passes, and each kind of broken build
//! (a lost bead, a double effect, an unexpected dead letter, …) fails the invariant meant to
//! catch it, naming the ids.

use std::time::Duration;

use super::*;
use crate::history::Record::*;

const SETTLE: Duration = Duration::from_secs(60);

fn at(t_ms: u64, record: Record) -> Entry {
    Entry { t_ms, record }
}

fn s(v: &str) -> String {
    v.to_owned()
}

/// One bead's good life: asked, acked, dispatched, started, its effect, closed.
fn closed_bead(h: &mut Vec<Entry>, n: u64) {
    let (key, bead, dispatch) = (format!("k{n}"), format!("b-{n}"), format!("d{n}"));
    let t = n * 10;
    h.push(at(t, EnqueueRequested { key: key.clone() }));
    h.push(at(t + 1, EnqueueAcked { key: key.clone(), bead: bead.clone() }));
    h.push(at(t + 2, Dispatched { bead: bead.clone(), dispatch: dispatch.clone() }));
    h.push(at(t + 3, Delivered { bead: bead.clone(), dispatch: dispatch.clone(), agent: s("a1") }));
    h.push(at(t + 4, EffectStarted { bead: bead.clone(), dispatch: dispatch.clone() }));
    h.push(at(t + 5, EffectCommitted { bead: bead.clone(), dispatch: dispatch.clone() }));
    h.push(at(t + 6, ResultAcked { bead: bead.clone(), dispatch, applied: Applied::Closed }));
}

fn finals(h: &mut Vec<Entry>, beads: impl IntoIterator<Item = (u64, &'static str)>) {
    for (n, status) in beads {
        let record = Final {
            bead: format!("b-{n}"),
            key: format!("k{n}"),
            status: s(status),
            live_lease: false,
            queued_message: false,
        };
        h.push(at(1000, record));
    }
}

/// Beads 1–3 close; bead 9 always fails (three attempts, then blocked); one poison message is
/// injected and dead-lettered; a NATS kill at t = 15.
fn clean() -> Vec<Entry> {
    let mut h = Vec::new();
    for n in 1..=3 {
        closed_bead(&mut h, n);
    }
    h.push(at(15, Fault { fault: s("nats_kill"), target: s("nats") }));
    h.push(at(90, EnqueueRequested { key: s("k9") }));
    h.push(at(90, ExpectFailure { key: s("k9") }));
    h.push(at(91, EnqueueAcked { key: s("k9"), bead: s("b-9") }));
    for (i, applied) in [Applied::Retrying, Applied::Retrying, Applied::Blocked].into_iter().enumerate() {
        let dispatch = format!("f{i}");
        h.push(at(92 + i as u64, EffectStarted { bead: s("b-9"), dispatch: dispatch.clone() }));
        h.push(at(92 + i as u64, ResultAcked { bead: s("b-9"), dispatch, applied }));
    }
    h.push(at(95, PoisonInjected { msg_id: s("poison-1") }));
    h.push(at(96, DeadLettered { msg_id: s("poison-1"), bead: None, reason: s("malformed: not JSON") }));
    finals(&mut h, [(1, "closed"), (2, "closed"), (3, "closed"), (9, "blocked")]);
    h
}

fn verdict<'r>(report: &'r Report, name: &str) -> &'r Verdict {
    report.verdicts.iter().find(|v| v.name == name).unwrap()
}

#[test]
fn a_clean_history_passes_every_invariant() {
    let report = check(&clean(), SETTLE);
    assert_eq!(report.failed(), Vec::<&str>::new(), "{report:#?}");
    assert_eq!((report.lost, report.duplicated, report.acked, report.closed, report.blocked), (0, 0, 4, 3, 1));
}

#[test]
fn a_lost_bead_fails_i1_with_its_id() {
    let mut h = clean();
    // A broken build: bead 2's result never reached the store; it sits open forever.
    h.retain(|e| !matches!(&e.record, ResultAcked { bead, .. } | Final { bead, .. } if bead == "b-2"));
    finals(&mut h, [(2, "open")]);
    let report = check(&h, SETTLE);
    assert_eq!(verdict(&report, "I1").offending, ["b-2"]);
    assert_eq!(report.lost, 1);
    assert!(report.failed().contains(&"I1"));
}

#[test]
fn a_bead_missing_from_the_store_is_lost_too() {
    let mut h = clean();
    h.retain(|e| !matches!(&e.record, Final { bead, .. } if bead == "b-3"));
    assert_eq!(verdict(&check(&h, SETTLE), "I1").offending, ["b-3"]);
}

#[test]
fn a_double_effect_fails_i3_and_counts_as_duplicated() {
    let mut h = clean();
    // A broken build: the agent ran dispatch d2 twice (say, after a redelivery).
    h.push(at(25, EffectStarted { bead: s("b-2"), dispatch: s("d2") }));
    h.push(at(26, EffectCommitted { bead: s("b-2"), dispatch: s("d2") }));
    let report = check(&h, SETTLE);
    assert_eq!(report.failed(), ["I3"]);
    assert_eq!(report.duplicated, 1);
    let offending = &verdict(&report, "I3").offending;
    assert!(offending.iter().all(|id| id.starts_with("b-2/d2")), "{offending:?}");
}

#[test]
fn a_bead_closed_by_two_dispatches_fails_i3() {
    let mut h = clean();
    h.push(at(27, EffectStarted { bead: s("b-1"), dispatch: s("d1b") }));
    h.push(at(28, EffectCommitted { bead: s("b-1"), dispatch: s("d1b") }));
    h.push(at(29, ResultAcked { bead: s("b-1"), dispatch: s("d1b"), applied: Applied::Closed }));
    let report = check(&h, SETTLE);
    assert_eq!(verdict(&report, "I3").offending, ["b-1: closed by 2 dispatches"]);
    assert_eq!(report.duplicated, 1);
}

#[test]
fn a_close_without_its_effect_fails_i3() {
    let mut h = clean();
    h.retain(|e| !matches!(&e.record, EffectCommitted { bead, .. } if bead == "b-3"));
    assert_eq!(verdict(&check(&h, SETTLE), "I3").offending, ["b-3/d3: 0 committed effects"]);
}

#[test]
fn an_attempt_cut_short_and_retried_is_allowed_and_counted() {
    let mut h = clean();
    // Agent killed after its effect and before its result: the bead is retried as d1 (above)
    // after an earlier dispatch d0 whose effect committed but whose result was never applied.
    h.push(at(10, EffectStarted { bead: s("b-1"), dispatch: s("d0") }));
    h.push(at(11, EffectCommitted { bead: s("b-1"), dispatch: s("d0") }));
    h.push(at(12, Rescued { bead: s("b-1"), dispatch: s("d0"), reason: s("superseded") }));
    let report = check(&h, SETTLE);
    assert_eq!(report.failed(), Vec::<&str>::new(), "{report:#?}");
    assert_eq!(report.extra_attempt_effects, 1);
}

#[test]
fn an_unexpected_dead_letter_fails_i6() {
    let mut h = clean();
    // A broken build: a good task exhausted its deliveries and was dead-lettered.
    h.push(at(40, DeadLettered { msg_id: s("d3"), bead: Some(s("b-3")), reason: s("max deliveries (5) reached") }));
    let report = check(&h, SETTLE);
    assert_eq!(report.failed(), ["I6"]);
    assert_eq!(verdict(&report, "I6").offending, ["unexpected dead letter d3 (bead b-3)"]);
}

#[test]
fn poison_missing_from_the_dlq_and_a_wrongly_blocked_bead_fail_i6() {
    let mut h = clean();
    h.retain(|e| !matches!(e.record, DeadLettered { .. }));
    h.retain(|e| !matches!(&e.record, Final { bead, .. } if bead == "b-1"));
    finals(&mut h, [(1, "blocked")]);
    let report = check(&h, SETTLE);
    let offending = &verdict(&report, "I6").offending;
    assert_eq!(offending, &["poison poison-1 not in the DLQ", "unexpectedly blocked b-1"]);
    assert_eq!(verdict(&report, "I1").offending, ["b-1"], "a good bead blocked is lost work");
}

#[test]
fn a_phantom_bead_fails_i2() {
    let mut h = clean();
    finals(&mut h, [(7, "closed")]);
    h.push(at(50, EffectStarted { bead: s("b-8"), dispatch: s("d8") }));
    let offending = verdict(&check(&h, SETTLE), "I2").offending.clone();
    assert_eq!(offending, ["b-7", "b-8"]);
}

#[test]
fn two_applied_attempts_running_at_once_fail_i4() {
    let mut h = clean();
    // d1x overlaps d1 (t 14..15) and its result was applied too: the fence did not hold.
    h.push(at(14, EffectStarted { bead: s("b-1"), dispatch: s("d1x") }));
    h.push(at(20, ResultAcked { bead: s("b-1"), dispatch: s("d1x"), applied: Applied::Retrying }));
    assert_eq!(verdict(&check(&h, SETTLE), "I4").offending, ["b-1: d1 and d1x"]);
}

#[test]
fn a_bead_settling_long_after_the_last_fault_fails_i5() {
    let mut h = clean();
    h.push(at(70_000, ResultAcked { bead: s("b-3"), dispatch: s("d3"), applied: Applied::Closed }));
    h.retain(|e| {
        !matches!(&e.record, ResultAcked { bead, applied: Applied::Closed, .. } if bead == "b-3") || e.t_ms > 1000
    });
    assert_eq!(verdict(&check(&h, SETTLE), "I5").offending, ["b-3"]);
}

#[test]
fn a_running_bead_without_a_lease_fails_i7() {
    let mut h = clean();
    h.push(at(
        1000,
        Final { bead: s("b-5"), key: s("k5"), status: s("in_progress"), live_lease: false, queued_message: false },
    ));
    h.push(at(
        1000,
        Final { bead: s("b-6"), key: s("k6"), status: s("queued"), live_lease: false, queued_message: true },
    ));
    h.push(at(1000, EnqueueRequested { key: s("k5") }));
    h.push(at(1000, EnqueueRequested { key: s("k6") }));
    assert_eq!(verdict(&check(&h, SETTLE), "I7").offending, ["b-5"]);
}
