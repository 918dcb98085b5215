//! The history of a fault run: one [`Entry`] per thing that happened, with the ids it concerns,
//! written as JSON lines. The driver records what it asked for and what it injected; the rest is
//! rebuilt after the run from the executor's side-effect log, the store's event log and the DLQ.
//! [`crate::check`] judges a history by sets of ids, never by counts.

use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One record: when (milliseconds since the run started) and what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub t_ms: u64,
    #[serde(flatten)]
    pub record: Record,
}

/// How a result the store applied left its bead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Applied {
    /// Success: the bead is closed.
    Closed,
    /// Failure with budget left: the bead is open again, to be retried.
    Retrying,
    /// Failure with the budget spent (or a dead-lettered task): the bead is blocked.
    Blocked,
}

/// What happened. `key` is the client's name for a bead it asked to create (known before the
/// store assigns the `bead` id); `dispatch` is the fencing token of one attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// The client sent a create.
    EnqueueRequested { key: String },
    /// The create returned the bead's id: from now on it must not be lost.
    EnqueueAcked { key: String, bead: String },
    /// The bead was made to fail on every attempt: it is expected to end blocked.
    ExpectFailure { key: String },
    /// A malformed message was published on a task subject: it is expected in the DLQ.
    PoisonInjected { msg_id: String },
    /// The store claimed the bead under a new dispatch (an outbox row was written).
    Dispatched { bead: String, dispatch: String },
    /// An agent reported the start of the dispatch and the fence let it run.
    Delivered { bead: String, dispatch: String, agent: String },
    /// The executor began its side effect for the dispatch.
    EffectStarted { bead: String, dispatch: String },
    /// The executor finished its side effect for the dispatch.
    EffectCommitted { bead: String, dispatch: String },
    /// The store applied the dispatch's result.
    ResultAcked { bead: String, dispatch: String, applied: Applied },
    /// The dispatch ended without a result (superseded, lease swept, handed back).
    Rescued { bead: String, dispatch: String, reason: String },
    /// A message in the DLQ; `msg_id` is its original `Nats-Msg-Id`.
    DeadLettered { msg_id: String, bead: Option<String>, reason: String },
    /// A fault was injected (`kind`: `nats_kill`, `agent_kill`, …).
    Fault { fault: String, target: String },
    /// The system answered again after a fault, `ms` after it was injected.
    Recovered { fault: String, ms: u64 },
    /// The bead as the store has it at the end. `live_lease`: its lease had not expired;
    /// `queued_message`: a task for its current dispatch was still on the bus.
    Final { bead: String, key: String, status: String, live_lease: bool, queued_message: bool },
}

/// Writes entries as JSON lines.
pub fn write_jsonl(path: &Path, entries: &[Entry]) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    let mut out = std::io::BufWriter::new(file);
    for entry in entries {
        let line = serde_json::to_string(entry).expect("a history entry serialises");
        writeln!(out, "{line}").map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    }
    out.flush().map_err(|e| Error::io(format!("write {}", path.display()), e))
}

/// Reads entries written by [`write_jsonl`]; a line that does not parse is an error naming it.
pub fn read_jsonl(path: &Path) -> Result<Vec<Entry>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let mut entries = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        if line.trim().is_empty() {
            continue;
        }
        let entry = serde_json::from_str(&line).map_err(|e| {
            Error::io(format!("{}:{}", path.display(), n + 1), std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })?;
        entries.push(entry);
    }
    Ok(entries)
}

/// The lines an executor appends to its side-effect log: `start BEAD DISPATCH` before the effect
/// and `commit BEAD DISPATCH` after it, each with the time in milliseconds since the Unix epoch
/// first (`date +%s%3N`). Lines that are torn (a process killed mid-write) are skipped.
pub fn parse_effect_log(text: &str, epoch_ms: u64) -> Vec<Entry> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (at, what, bead, dispatch) = (words.next()?, words.next()?, words.next()?, words.next()?);
            if words.next().is_some() {
                return None;
            }
            let at: u64 = at.parse().ok()?;
            let (bead, dispatch) = (bead.to_owned(), dispatch.to_owned());
            let record = match what {
                "start" => Record::EffectStarted { bead, dispatch },
                "commit" => Record::EffectCommitted { bead, dispatch },
                _ => return None,
            };
            Some(Entry { t_ms: at.saturating_sub(epoch_ms), record })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_jsonl() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let entries = vec![
            Entry { t_ms: 1, record: Record::EnqueueRequested { key: "k1".into() } },
            Entry {
                t_ms: 9,
                record: Record::ResultAcked { bead: "b-1".into(), dispatch: "d".into(), applied: Applied::Closed },
            },
            Entry {
                t_ms: 10,
                record: Record::DeadLettered { msg_id: "poison-1".into(), bead: None, reason: "malformed".into() },
            },
        ];
        write_jsonl(&path, &entries).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().next().unwrap().contains(r#""kind":"enqueue_requested""#), "{text}");
        assert_eq!(read_jsonl(&path).unwrap(), entries);
    }

    #[test]
    fn the_effect_log_is_parsed_and_torn_lines_are_skipped() {
        let log = "1005 start b-1 d1\n1010 commit b-1 d1\n1011 comm\n1012 start b-2\n";
        let entries = parse_effect_log(log, 1000);
        assert_eq!(
            entries,
            vec![
                Entry { t_ms: 5, record: Record::EffectStarted { bead: "b-1".into(), dispatch: "d1".into() } },
                Entry { t_ms: 10, record: Record::EffectCommitted { bead: "b-1".into(), dispatch: "d1".into() } },
            ]
        );
    }
}
