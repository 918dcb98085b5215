//! The agent's durable journal, one directory per project under the work root: a marker per
//! dispatch this host started (`ran/`), and each finished dispatch's result until its delivery
//! is settled (`results/`). It is what lets an agent keep its promises across a restart: a
//! dispatch it ran or was running is never run again, and a result it could not publish (NATS
//! down) is published when it can be, without redoing the work.
//!
//! Entries survive a crash of the agent process (they are in the page cache); they are not
//! synced to disk, so a crash of the machine may lose the newest. The store's start fence still
//! keeps a dispatch from being run by two agents; the journal adds the same-host restart case.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use loom_bus::ResultMessage;
use loom_domain::DispatchId;

use crate::Error;

/// How long markers and unsettled results are kept (a redelivery comes within minutes).
const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug)]
pub(crate) struct Journal {
    ran: PathBuf,
    results: PathBuf,
}

impl Journal {
    /// Opens (creating) the journal under `dir` and forgets entries older than a week.
    pub(crate) fn open(dir: &Path) -> Result<Journal, Error> {
        let journal = Journal { ran: dir.join("ran"), results: dir.join("results") };
        for d in [&journal.ran, &journal.results] {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::io(format!("creating the agent journal {}", d.display()), e))?;
        }
        journal.prune();
        Ok(journal)
    }

    /// Records that this host starts `dispatch`; false if it already had (it ran, or was running
    /// when the agent stopped).
    pub(crate) fn begin(&self, dispatch: &DispatchId) -> Result<bool, Error> {
        let path = self.ran.join(dispatch.as_str());
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::io(format!("writing {}", path.display()), e)),
        }
    }

    /// Whether this host started `dispatch` before.
    pub(crate) fn ran(&self, dispatch: &DispatchId) -> bool {
        self.ran.join(dispatch.as_str()).exists()
    }

    /// Keeps a finished dispatch's result (written whole, then renamed into place).
    pub(crate) fn save_result(&self, result: &ResultMessage) -> Result<(), Error> {
        let name = result.metadata.dispatch_id.as_str();
        let tmp = self.results.join(format!(".{name}.tmp"));
        let body = serde_json::to_vec(result).map_err(|e| Error::Config(format!("encoding a result: {e}")))?;
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut file, &body)?;
            std::fs::rename(&tmp, self.results.join(format!("{name}.json")))
        };
        write().map_err(|e| Error::io("saving a result in the agent journal", e))
    }

    /// The kept result of `dispatch`, if its delivery is not settled yet.
    pub(crate) fn result(&self, dispatch: &DispatchId) -> Option<ResultMessage> {
        let bytes = std::fs::read(self.results.join(format!("{}.json", dispatch.as_str()))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every kept result (published again when the agent starts).
    pub(crate) fn unsettled(&self) -> Vec<ResultMessage> {
        let Ok(entries) = std::fs::read_dir(&self.results) else { return Vec::new() };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect()
    }

    /// The delivery of `dispatch` is settled: its result need not be kept.
    pub(crate) fn settled(&self, dispatch: &DispatchId) {
        let _ = std::fs::remove_file(self.results.join(format!("{}.json", dispatch.as_str())));
    }

    fn prune(&self) {
        let now = SystemTime::now();
        for dir in [&self.ran, &self.results] {
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            for e in entries.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > KEEP);
                if old {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dispatch(n: u8) -> DispatchId {
        DispatchId::parse(&format!("0190a0f0-0000-7000-8000-0000000000{n:02}")).unwrap()
    }

    #[test]
    fn a_dispatch_begins_once_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        assert!(journal.begin(&dispatch(1)).unwrap());
        assert!(!journal.begin(&dispatch(1)).unwrap());
        let reopened = Journal::open(dir.path()).unwrap();
        assert!(reopened.ran(&dispatch(1)));
        assert!(!reopened.ran(&dispatch(2)));
        assert!(!reopened.begin(&dispatch(1)).unwrap());
    }
}
