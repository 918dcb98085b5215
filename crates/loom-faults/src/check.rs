//! The checker: invariants I1–I7 of the fault suite, judged on a [`History`](crate::history) by
//! sets of ids, never by counts, so a lost bead and a duplicated one cannot cancel out. Each
//! verdict names the ids that break it.
//!
//! - **I1 no lost work**: every acked create ends closed, or blocked when it was made to fail.
//! - **I2 no phantom**: every bead the store has was asked for, and every effect, start and result
//!   names a bead the store has.
//! - **I3 one effect per close**: a closed bead was closed by exactly one dispatch, whose effect
//!   committed exactly once; no dispatch ran twice. Effects of earlier, fenced attempts are
//!   allowed and counted (`extra_attempt_effects`): the executor keys its effect by dispatch.
//! - **I4 fenced holders**: two attempts of one bead that ran at the same time never both had
//!   their results applied.
//! - **I5 bounded recovery**: every acked bead settled within `settle_within` of the last fault.
//! - **I6 expected dead letters**: the DLQ holds exactly the injected poison, and the blocked
//!   beads are exactly the always-failing ones.
//! - **I7 nothing stranded**: at the end, no bead is running without a live lease, or queued
//!   without its task on the bus.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use crate::history::{Applied, Entry, Record};

/// One invariant's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// `I1` … `I7`.
    pub name: &'static str,
    pub what: &'static str,
    pub pass: bool,
    /// The ids (beads, `bead/dispatch` pairs, message ids) that break it, sorted.
    pub offending: Vec<String>,
}

/// What the checker found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub verdicts: Vec<Verdict>,
    /// Acked beads that did not end as they should (I1's offenders).
    pub lost: usize,
    /// Beads closed more than once or with a dispatch whose effect ran more than once.
    pub duplicated: usize,
    /// Committed effects of dispatches that did not close their bead (attempts cut short by a
    /// fault and retried under a new dispatch).
    pub extra_attempt_effects: usize,
    pub acked: usize,
    pub closed: usize,
    pub blocked: usize,
}

impl Report {
    /// The names of the invariants that failed.
    pub fn failed(&self) -> Vec<&'static str> {
        self.verdicts.iter().filter(|v| !v.pass).map(|v| v.name).collect()
    }
}

/// Effects of one dispatch: when each start and commit was logged.
#[derive(Default)]
struct Effects {
    starts: Vec<u64>,
    commits: Vec<u64>,
}

/// The history indexed by id.
#[derive(Default)]
struct Index {
    requested: BTreeSet<String>,
    acked: BTreeMap<String, String>,
    expect_failure: BTreeSet<String>,
    poison: BTreeSet<String>,
    dead: BTreeMap<String, Option<String>>,
    delivered: BTreeSet<String>,
    results: BTreeMap<String, Vec<(u64, String, Applied)>>,
    effects: BTreeMap<(String, String), Effects>,
    finals: BTreeMap<String, (String, String, bool, bool)>,
    /// When each dispatch ended in the store (its result applied, or rescued).
    ended: BTreeMap<(String, String), u64>,
    last_fault: Option<u64>,
}

impl Index {
    fn new(history: &[Entry]) -> Index {
        let mut ix = Index::default();
        for Entry { t_ms, record } in history {
            let t = *t_ms;
            match record.clone() {
                Record::EnqueueRequested { key } => drop(ix.requested.insert(key)),
                Record::EnqueueAcked { key, bead } => drop(ix.acked.insert(bead, key)),
                Record::ExpectFailure { key } => drop(ix.expect_failure.insert(key)),
                Record::PoisonInjected { msg_id } => drop(ix.poison.insert(msg_id)),
                Record::DeadLettered { msg_id, bead, .. } => drop(ix.dead.insert(msg_id, bead)),
                Record::Delivered { bead, .. } => drop(ix.delivered.insert(bead)),
                Record::ResultAcked { bead, dispatch, applied } => {
                    ix.ended.entry((bead.clone(), dispatch.clone())).or_insert(t);
                    ix.results.entry(bead).or_default().push((t, dispatch, applied));
                }
                Record::EffectStarted { bead, dispatch } => {
                    ix.effects.entry((bead, dispatch)).or_default().starts.push(t)
                }
                Record::EffectCommitted { bead, dispatch } => {
                    ix.effects.entry((bead, dispatch)).or_default().commits.push(t);
                }
                Record::Final { bead, key, status, live_lease, queued_message } => {
                    ix.finals.insert(bead, (key, status, live_lease, queued_message));
                }
                Record::Fault { .. } => ix.last_fault = Some(ix.last_fault.unwrap_or(0).max(t)),
                Record::Rescued { bead, dispatch, .. } => drop(ix.ended.entry((bead, dispatch)).or_insert(t)),
                Record::Dispatched { .. } | Record::Recovered { .. } => {}
            }
        }
        ix
    }

    fn status(&self, bead: &str) -> Option<&str> {
        self.finals.get(bead).map(|(_, status, _, _)| status.as_str())
    }

    /// Acked beads that were made to fail.
    fn failing(&self) -> BTreeSet<&String> {
        self.acked.iter().filter(|(_, key)| self.expect_failure.contains(*key)).map(|(bead, _)| bead).collect()
    }

    fn with_status(&self, want: &str) -> BTreeSet<&String> {
        self.finals.iter().filter(|(_, (_, status, _, _))| status == want).map(|(bead, _)| bead).collect()
    }

    /// The dispatches whose success closed `bead`.
    fn closers(&self, bead: &str) -> Vec<&String> {
        let results = self.results.get(bead).map(Vec::as_slice).unwrap_or_default();
        results.iter().filter(|(_, _, applied)| *applied == Applied::Closed).map(|(_, d, _)| d).collect()
    }
}

/// Judges `history`; `settle_within` is I5's bound after the last fault.
pub fn check(history: &[Entry], settle_within: Duration) -> Report {
    let ix = Index::new(history);
    let (i1, i3, extra_attempt_effects, duplicated) = (lost(&ix), one_effect_per_close(&ix), extra(&ix), doubled(&ix));
    let verdicts = vec![
        verdict("I1", "acked creates ⊆ closed ∪ expected-blocked", i1.clone()),
        verdict("I2", "no phantom beads, effects or results", phantoms(&ix)),
        verdict("I3", "one closing dispatch and one committed effect per closed bead; no dispatch ran twice", i3),
        verdict("I4", "concurrent attempts of a bead never both applied", unfenced(&ix)),
        verdict("I5", "every bead settled in bounded time after the last fault", slow(&ix, settle_within)),
        verdict("I6", "DLQ = injected poison; blocked = always-failing", dead_letters(&ix)),
        verdict("I7", "nothing running without a lease or queued without a message", stranded(&ix)),
    ];
    Report {
        verdicts,
        lost: i1.len(),
        duplicated,
        extra_attempt_effects,
        acked: ix.acked.len(),
        closed: ix.with_status("closed").len(),
        blocked: ix.with_status("blocked").len(),
    }
}

fn verdict(name: &'static str, what: &'static str, offending: BTreeSet<String>) -> Verdict {
    Verdict { name, what, pass: offending.is_empty(), offending: offending.into_iter().collect() }
}

fn lost(ix: &Index) -> BTreeSet<String> {
    let failing = ix.failing();
    ix.acked
        .keys()
        .filter(|bead| match ix.status(bead) {
            Some("closed") => false,
            Some("blocked") => !failing.contains(bead),
            _ => true,
        })
        .cloned()
        .collect()
}

fn phantoms(ix: &Index) -> BTreeSet<String> {
    let stored = |bead: &String| ix.finals.contains_key(bead) || ix.acked.contains_key(bead);
    let unasked = ix.finals.iter().filter(|(_, (key, ..))| !ix.requested.contains(key)).map(|(bead, _)| bead.clone());
    let unknown = ix
        .effects
        .keys()
        .map(|(bead, _)| bead)
        .chain(ix.results.keys())
        .chain(ix.delivered.iter())
        .filter(|bead| !stored(bead))
        .cloned();
    unasked.chain(unknown).collect()
}

fn one_effect_per_close(ix: &Index) -> BTreeSet<String> {
    let mut bad = BTreeSet::new();
    for bead in ix.with_status("closed") {
        match ix.closers(bead).as_slice() {
            [dispatch] => {
                let commits = ix.effects.get(&((*bead).clone(), (*dispatch).clone())).map_or(0, |e| e.commits.len());
                if commits != 1 {
                    bad.insert(format!("{bead}/{dispatch}: {commits} committed effects"));
                }
            }
            closers => drop(bad.insert(format!("{bead}: closed by {} dispatches", closers.len()))),
        }
    }
    for ((bead, dispatch), e) in &ix.effects {
        if e.starts.len() > 1 || e.commits.len() > 1 {
            bad.insert(format!("{bead}/{dispatch}: ran {} times", e.starts.len().max(e.commits.len())));
        }
    }
    bad
}

/// Beads closed more than once or with a dispatch that ran more than once.
fn doubled(ix: &Index) -> usize {
    let mut beads: BTreeSet<&String> = ix.results.keys().filter(|bead| ix.closers(bead).len() > 1).collect();
    beads.extend(ix.effects.iter().filter(|(_, e)| e.starts.len() > 1 || e.commits.len() > 1).map(|((b, _), _)| b));
    beads.len()
}

fn extra(ix: &Index) -> usize {
    ix.effects
        .iter()
        .filter(|((bead, dispatch), e)| !e.commits.is_empty() && !ix.closers(bead).contains(&dispatch))
        .count()
}

fn unfenced(ix: &Index) -> BTreeSet<String> {
    let mut by_bead: BTreeMap<&String, Vec<(&String, u64, u64)>> = BTreeMap::new();
    for ((bead, dispatch), e) in &ix.effects {
        let start = e.starts.iter().chain(&e.commits).copied().min().unwrap_or(0);
        // An effect that never committed ran until its dispatch ended (or to the end).
        let ended = ix.ended.get(&(bead.clone(), dispatch.clone())).copied();
        let end = e.commits.iter().copied().max().or(ended).unwrap_or(u64::MAX);
        by_bead.entry(bead).or_default().push((dispatch, start, end));
    }
    let applied = |bead: &String, dispatch: &String| {
        ix.results.get(bead).is_some_and(|rs| rs.iter().any(|(_, d, _)| d == dispatch))
    };
    let mut bad = BTreeSet::new();
    for (bead, runs) in by_bead {
        for (i, (d1, s1, e1)) in runs.iter().enumerate() {
            for (d2, s2, e2) in &runs[i + 1..] {
                if s1 <= e2 && s2 <= e1 && applied(bead, d1) && applied(bead, d2) {
                    bad.insert(format!("{bead}: {d1} and {d2}"));
                }
            }
        }
    }
    bad
}

fn slow(ix: &Index, settle_within: Duration) -> BTreeSet<String> {
    let bound = ix.last_fault.unwrap_or(0) + settle_within.as_millis() as u64;
    ix.acked
        .keys()
        .filter(|bead| {
            let settled = ix.results.get(*bead).and_then(|rs| {
                rs.iter().filter(|(_, _, applied)| *applied != Applied::Retrying).map(|(t, _, _)| *t).max()
            });
            settled.is_none_or(|t| t > bound)
        })
        .cloned()
        .collect()
}

fn dead_letters(ix: &Index) -> BTreeSet<String> {
    let dead: BTreeSet<&String> = ix.dead.keys().collect();
    let poison: BTreeSet<&String> = ix.poison.iter().collect();
    let (blocked, failing) = (ix.with_status("blocked"), ix.failing());
    let mut bad = BTreeSet::new();
    bad.extend(dead.difference(&poison).map(|id| match &ix.dead[*id] {
        Some(bead) => format!("unexpected dead letter {id} (bead {bead})"),
        None => format!("unexpected dead letter {id}"),
    }));
    bad.extend(poison.difference(&dead).map(|id| format!("poison {id} not in the DLQ")));
    bad.extend(blocked.difference(&failing).map(|bead| format!("unexpectedly blocked {bead}")));
    bad.extend(failing.difference(&blocked).map(|bead| format!("always-failing {bead} not blocked")));
    bad
}

fn stranded(ix: &Index) -> BTreeSet<String> {
    ix.finals
        .iter()
        .filter(|(_, (_, status, live_lease, queued_message))| match status.as_str() {
            "in_progress" => !live_lease,
            "queued" => !queued_message,
            _ => false,
        })
        .map(|(bead, _)| bead.clone())
        .collect()
}

#[cfg(test)]
mod tests;
