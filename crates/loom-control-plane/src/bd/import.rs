//! The import pipeline: a bd JSONL stream into a project, never holding the file in memory.
//!
//! Pass one streams the input to a spool file and keeps, per issue, its line, offset and edges.
//! Then ids are settled (kept, or mapped when not valid here), the file's cycles found and an order
//! chosen in which every issue comes after what it waits on. Pass two reads the issues back in
//! that order, a batch at a time, and imports each batch in one store transaction, so at every
//! commit each imported bead's blockers and parent exist: no bead is ever ready early.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use chrono::DateTime;
use loom_api::{CycleReport, Dangling, DanglingEdge, ImportSummary, LineError, MappedId};
use loom_domain::{BeadId, BeadPrefix, BeadType, ContextMap, Priority, Project, ProjectId, Status};
use loom_store::{ImportAction, ImportBead, Store};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};

use super::format::{self, BLOCKS, EXTERNAL_KEY, Edge, Head, PARENT_CHILD};
use super::order::order;
use crate::Error;

/// Longest line read (1 MiB): a longer one is reported and skipped.
pub const MAX_LINE: usize = 1 << 20;
/// Issues imported per store transaction.
pub const BATCH: usize = 500;
/// Most bytes of lines per batch (the database service takes messages of up to 64 MiB).
const BATCH_BYTES: usize = 16 << 20;
/// Largest input (4 GiB of spool).
const MAX_INPUT: u64 = 4 << 30;
/// Ids looked up per store call.
const LOOKUP: usize = 1000;

/// One issue of the file, as pass one left it.
struct Entry {
    line: u64,
    offset: u64,
    len: usize,
    head: Head,
    /// The bead id it is imported as.
    bead: Option<BeadId>,
    fate: Fate,
}

#[derive(Clone, Debug, PartialEq)]
enum Fate {
    Pending,
    Imported,
    /// Not imported (conversion, store or cycle): edges to it are treated as dangling.
    Failed,
}

/// Imports the bd JSONL of `input` into `project` in batches of `batch` issues.
pub async fn import<R: AsyncRead + Unpin>(
    store: &dyn Store,
    project: &Project,
    input: R,
    dangling: Dangling,
    batch: usize,
) -> Result<ImportSummary, Error> {
    let mut run = Run {
        store,
        project,
        dangling,
        summary: ImportSummary::default(),
        entries: Vec::new(),
        owners: HashMap::new(),
        externals: HashMap::new(),
    };
    let spool = run.spool(input).await?;
    let index = run.index();
    run.settle_ids(&index).await?;
    let sequence = run.order(&index);
    run.import(&spool, &index, &sequence, batch.max(1)).await?;
    run.summary.errors.sort_by_key(|e| e.line);
    Ok(run.summary)
}

struct Run<'a> {
    store: &'a dyn Store,
    project: &'a Project,
    dangling: Dangling,
    summary: ImportSummary,
    entries: Vec<Entry>,
    /// The project of each id the file names that is a stored bead.
    owners: HashMap<String, ProjectId>,
    /// External-reference beads made (or being made in the current batch), by bd id.
    externals: HashMap<String, BeadId>,
}

impl Run<'_> {
    fn error(&mut self, line: u64, error: impl Into<String>) {
        self.summary.errors.push(LineError { line, error: error.into() });
    }

    /// Pass one: every line to the spool, the head of each issue kept.
    async fn spool<R: AsyncRead + Unpin>(&mut self, input: R) -> Result<std::fs::File, Error> {
        let io = |e: std::io::Error| Error::Io(format!("import spool: {e}"));
        let file = tempfile::tempfile().map_err(io)?;
        let mut writer =
            tokio::io::BufWriter::with_capacity(1 << 16, tokio::fs::File::from_std(file.try_clone().map_err(io)?));
        let mut reader = BufReader::with_capacity(1 << 16, input);
        let (mut offset, mut line) = (0u64, 0u64);
        let mut seen: HashMap<String, u64> = HashMap::new();
        let mut buf = Vec::with_capacity(4096);
        loop {
            buf.clear();
            let n = (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf).await.map_err(read_error)?;
            if n == 0 {
                break;
            }
            line += 1;
            if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
                skip_line(&mut reader).await?;
                self.error(line, format!("the line is longer than {MAX_LINE} bytes; skipped"));
                continue;
            }
            let content = trim(&buf);
            if content.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let head = match format::head(content) {
                Ok(h) => h,
                Err(e) => {
                    self.error(line, e);
                    continue;
                }
            };
            if let Some(first) = seen.get(&head.id) {
                self.error(line, format!("issue {} is already on line {first}; this line is skipped", head.id));
                continue;
            }
            seen.insert(head.id.clone(), line);
            if offset + content.len() as u64 > MAX_INPUT {
                return Err(Error::TooLarge(format!("an import reads at most {MAX_INPUT} bytes")));
            }
            writer.write_all(content).await.map_err(io)?;
            self.entries.push(Entry { line, offset, len: content.len(), head, bead: None, fate: Fate::Pending });
            offset += content.len() as u64;
        }
        self.summary.lines = line;
        writer.flush().await.map_err(io)?;
        Ok(file)
    }

    fn index(&self) -> HashMap<String, usize> {
        self.entries.iter().enumerate().map(|(i, e)| (e.head.id.clone(), i)).collect()
    }

    /// Which bead each issue becomes: its own id when that is a valid bead id no other project
    /// holds, else a stable id of this project's prefix (the same on every import).
    async fn settle_ids(&mut self, index: &HashMap<String, usize>) -> Result<(), Error> {
        let mut wanted: BTreeSet<BeadId> = BTreeSet::new();
        for e in &self.entries {
            wanted.extend(BeadId::parse(&e.head.id).ok());
            let outside = e.head.edges.iter().filter(|(t, _)| !index.contains_key(t));
            wanted.extend(outside.filter_map(|(t, _)| BeadId::parse(t).ok()));
        }
        let wanted: Vec<BeadId> = wanted.into_iter().collect();
        let mut owners = HashMap::new();
        for chunk in wanted.chunks(LOOKUP) {
            owners.extend(self.store.bead_projects(chunk).await?.into_iter().map(|(b, p)| (b.to_string(), p)));
        }
        self.owners = owners;
        for i in 0..self.entries.len() {
            let id = self.bead_id(&self.entries[i].head.id.clone());
            if id.as_str() != self.entries[i].head.id {
                let (line, from) = (self.entries[i].line, self.entries[i].head.id.clone());
                self.summary.mapped.push(MappedId { line, from, to: id.to_string() });
            }
            self.entries[i].bead = Some(id);
        }
        Ok(())
    }

    /// The bead id for bd id `id` (see [`Run::settle_ids`]).
    fn bead_id(&self, id: &str) -> BeadId {
        match BeadId::parse(id) {
            Ok(b) if self.owners.get(id).is_none_or(|p| p == &self.project.id) => b,
            _ => mapped_id(&self.project.bead_prefix, &self.project.id, id),
        }
    }

    /// Finds the file's cycles (reported, their issues not imported) and the import order.
    fn order(&mut self, index: &HashMap<String, usize>) -> Vec<usize> {
        let mut edges = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            for (target, kind) in &e.head.edges {
                if let (Some(&t), true) = (index.get(target), kind == BLOCKS || kind == PARENT_CHILD) {
                    edges.push((t, i));
                }
            }
        }
        let order = order(self.entries.len(), &edges);
        for cycle in &order.cycles {
            let issues: Vec<String> = cycle.iter().map(|&i| self.entries[i].head.id.clone()).collect();
            let lines: Vec<u64> = cycle.iter().map(|&i| self.entries[i].line).collect();
            for &i in cycle {
                self.entries[i].fate = Fate::Failed;
                let line = self.entries[i].line;
                let id = self.entries[i].head.id.clone();
                self.error(
                    line,
                    format!("issue {id} is on a dependency cycle ({}); not imported", issues.join(" -> ")),
                );
            }
            self.summary.cycles.push(CycleReport { issues, lines });
        }
        order.sequence
    }

    /// Pass two: the issues in `sequence`, `batch` per transaction.
    async fn import(
        &mut self,
        spool: &std::fs::File,
        index: &HashMap<String, usize>,
        sequence: &[usize],
        batch: usize,
    ) -> Result<(), Error> {
        let spool = Arc::new(spool.try_clone().map_err(|e| Error::Io(format!("import spool: {e}")))?);
        for chunk in self.batches(sequence, batch) {
            let chunk = &chunk[..];
            let spans: Vec<(u64, usize)> =
                chunk.iter().map(|&i| (self.entries[i].offset, self.entries[i].len)).collect();
            let file = spool.clone();
            let lines = tokio::task::spawn_blocking(move || read_spans(&file, &spans))
                .await
                .map_err(|e| Error::Io(format!("import spool: {e}")))?
                .map_err(|e| Error::Io(format!("import spool: {e}")))?;
            let mut beads = Vec::with_capacity(chunk.len());
            // The entry of each bead, `None` for an external reference.
            let mut owners: Vec<Option<usize>> = Vec::with_capacity(chunk.len());
            for (&i, bytes) in chunk.iter().zip(&lines) {
                let id = self.entries[i].bead.clone().expect("ids are settled");
                let (line, issue) = (self.entries[i].line, self.entries[i].head.id.clone());
                let mut externals = Vec::new();
                let mut edge = |target: &str, kind: &str| self.edge(index, line, &issue, target, kind, &mut externals);
                let converted = format::to_import(bytes, id, &mut edge);
                for ext in externals {
                    owners.push(None);
                    beads.push(ext);
                }
                match converted {
                    Ok(bead) => {
                        owners.push(Some(i));
                        beads.push(bead);
                    }
                    Err(e) => {
                        self.entries[i].fate = Fate::Failed;
                        self.error(line, format!("issue {issue}: {e}"));
                    }
                }
            }
            self.apply(beads, owners).await;
        }
        Ok(())
    }

    /// `sequence` cut into batches of at most `batch` issues and [`BATCH_BYTES`] of lines, so a
    /// batch of long issues still fits one database-service message.
    fn batches(&self, sequence: &[usize], batch: usize) -> Vec<Vec<usize>> {
        let mut out: Vec<Vec<usize>> = Vec::new();
        let mut bytes = 0;
        for &i in sequence {
            let len = self.entries[i].len;
            match out.last_mut() {
                Some(last) if last.len() < batch && bytes + len <= BATCH_BYTES => last.push(i),
                _ => {
                    out.push(vec![i]);
                    bytes = 0;
                }
            }
            bytes += len;
        }
        out
    }

    /// What the edge `issue → target` of type `kind` becomes; a new external reference it needs
    /// goes to `externals`.
    fn edge(
        &mut self,
        index: &HashMap<String, usize>,
        line: u64,
        issue: &str,
        target: &str,
        kind: &str,
        externals: &mut Vec<ImportBead>,
    ) -> Edge {
        let loom_kept = kind == BLOCKS || kind == PARENT_CHILD;
        match index.get(target) {
            Some(&t) if self.entries[t].fate != Fate::Failed => {
                return if loom_kept {
                    Edge::Loom(self.entries[t].bead.clone().expect("ids are settled"))
                } else {
                    Edge::Keep
                };
            }
            None if self.owners.get(target) == Some(&self.project.id) => {
                return match BeadId::parse(target) {
                    Ok(b) if loom_kept => Edge::Loom(b),
                    _ => Edge::Keep,
                };
            }
            _ => {}
        }
        let action = match self.dangling {
            Dangling::Keep => "kept",
            Dangling::Skip => "skipped",
        };
        let (issue, depends_on, kind_name) = (issue.to_owned(), target.to_owned(), kind.to_owned());
        self.summary.dangling.push(DanglingEdge { line, issue, depends_on, kind: kind_name, action: action.into() });
        match (self.dangling, loom_kept) {
            (Dangling::Skip, _) => Edge::Drop,
            (Dangling::Keep, false) => Edge::Keep,
            (Dangling::Keep, true) => {
                if let Some(id) = self.externals.get(target) {
                    return Edge::Loom(id.clone());
                }
                let id = match index.get(target) {
                    Some(&t) => self.entries[t].bead.clone().expect("ids are settled"),
                    None => self.bead_id(target),
                };
                self.externals.insert(target.to_owned(), id.clone());
                externals.push(external(id.clone(), target));
                Edge::Loom(id)
            }
        }
    }

    /// Imports one batch and books its outcome.
    async fn apply(&mut self, beads: Vec<ImportBead>, owners: Vec<Option<usize>>) {
        if beads.is_empty() {
            return;
        }
        let ids: Vec<(BeadId, Option<String>)> =
            beads.iter().map(|b| (b.id.clone(), b.context.get(EXTERNAL_KEY).cloned())).collect();
        match self.store.import_beads(&self.project.id, beads).await {
            Ok(actions) => {
                for (action, owner) in actions.into_iter().zip(owners) {
                    let Some(i) = owner else {
                        self.summary.external += u64::from(action == ImportAction::Created);
                        continue;
                    };
                    self.entries[i].fate = Fate::Imported;
                    match action {
                        ImportAction::Created => self.summary.created += 1,
                        ImportAction::Updated => self.summary.updated += 1,
                        ImportAction::Unchanged => self.summary.skipped += 1,
                        ImportAction::Refused(reason) => {
                            let line = self.entries[i].line;
                            self.error(line, reason);
                        }
                    }
                }
            }
            Err(e) => {
                let lines: Vec<u64> = owners.iter().flatten().map(|&i| self.entries[i].line).collect();
                let (first, last) =
                    (lines.iter().min().copied().unwrap_or(0), lines.iter().max().copied().unwrap_or(0));
                for &i in owners.iter().flatten() {
                    self.entries[i].fate = Fate::Failed;
                    let line = self.entries[i].line;
                    self.error(line, format!("the batch of lines {first}-{last} was not imported: {e}"));
                }
                for (_, external) in ids {
                    if let Some(bd_id) = external {
                        self.externals.remove(&bd_id);
                    }
                }
            }
        }
    }
}

/// The external-reference bead standing for bd issue `bd_id`: an open decision (never ready,
/// never dispatched) its dependants wait on until someone closes it. Its times are fixed so a
/// second import finds it unchanged.
fn external(id: BeadId, bd_id: &str) -> ImportBead {
    let mut context = ContextMap::new();
    context.insert(EXTERNAL_KEY.to_owned(), bd_id.to_owned());
    let mut title = format!("external reference: bd issue {bd_id}");
    title.truncate(loom_domain::limits::TITLE_MAX);
    ImportBead {
        id,
        title,
        description: format!(
            "Issues imported from bd depend on `{bd_id}`, which was not in the file. Close this bead when \
             that work is done; an export leaves it out and gives the edges to `{bd_id}` back."
        ),
        bead_type: BeadType::Decision,
        priority: Priority::DEFAULT,
        status: Status::Open,
        assignee: None,
        tags: Vec::new(),
        context,
        parent: None,
        blocked_by: Vec::new(),
        close_reason: None,
        created_at: DateTime::UNIX_EPOCH,
        updated_at: DateTime::UNIX_EPOCH,
        closed_at: None,
    }
}

/// The stable bead id of an issue whose bd id cannot be kept: `{prefix}-{13 base36 digits}` from
/// a hash of the project and the bd id. Its number is above any the id counter draws.
fn mapped_id(prefix: &BeadPrefix, project: &ProjectId, bd_id: &str) -> BeadId {
    // FNV-1a, 64 bits: stable across versions and machines (unlike std's hasher).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in project.as_str().bytes().chain([0]).chain(bd_id.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    BeadId::new(prefix, h | (1 << 63))
}

fn read_spans(file: &std::fs::File, spans: &[(u64, usize)]) -> std::io::Result<Vec<Vec<u8>>> {
    spans
        .iter()
        .map(|&(offset, len)| {
            let mut buf = vec![0; len];
            file.read_exact_at(&mut buf, offset)?;
            Ok(buf)
        })
        .collect()
}

/// A line without its `\n` or `\r\n`.
fn trim(buf: &[u8]) -> &[u8] {
    let buf = buf.strip_suffix(b"\n").unwrap_or(buf);
    buf.strip_suffix(b"\r").unwrap_or(buf)
}

/// Reads past the rest of an over-long line.
async fn skip_line<R: AsyncRead + Unpin>(reader: &mut BufReader<R>) -> Result<(), Error> {
    loop {
        let available = reader.fill_buf().await.map_err(read_error)?;
        if available.is_empty() {
            return Ok(());
        }
        match available.iter().position(|&b| b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = available.len();
                reader.consume(n);
            }
        }
    }
}

fn read_error(e: std::io::Error) -> Error {
    Error::BadRequest(format!("reading the import body: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ids_are_stable_valid_and_beyond_the_counter() {
        let prefix = BeadPrefix::parse("web").unwrap();
        let p = ProjectId::parse("web").unwrap();
        let a = mapped_id(&prefix, &p, "my-proj-a3f.1");
        assert_eq!(a, mapped_id(&prefix, &p, "my-proj-a3f.1"));
        assert_ne!(a, mapped_id(&prefix, &p, "my-proj-a3f.2"));
        assert_ne!(a, mapped_id(&prefix, &ProjectId::parse("other").unwrap(), "my-proj-a3f.1"));
        assert!(BeadId::parse(a.as_str()).is_ok() && a.prefix() == "web");
        let n = u64::from_str_radix(a.as_str().rsplit_once('-').unwrap().1, 36).unwrap();
        assert!(i64::try_from(n).is_err(), "the counter (a positive i64) never draws it");
    }
}
