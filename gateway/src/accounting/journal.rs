//! The usage journal: every usage record is appended to a local file
//! before it is queued for the database, and forgotten once it has been
//! written. A process that dies with records still queued (`kill -9`, the
//! OOM killer, a panic that aborts) leaves them on disk; the next start
//! reads them back and inserts those the database lacks.
//!
//! The journal at `PATH` is a series of segment files `PATH.1`, `PATH.2`,
//! ...: records go to the newest, and a new one is started every
//! [`SEGMENT`] records. A segment is deleted once every record in it is
//! written (the newest is emptied instead), so a journal under steady load
//! stays a few segments long. What a segment holds is read back a segment
//! at a time ([`Journal::read`]): after a crash, and when the writer's
//! memory queue was full during an outage. `PATH.lock` holds an exclusive lock: a
//! second process given the same path runs without a journal rather than
//! deleting the first one's records.
//!
//! An append is one `write` to the page cache (a few microseconds, no
//! fsync): it survives the process, not the machine, as SQLite's WAL with
//! `synchronous=NORMAL` does.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::accounting::usage::UsageRecord;

/// Records per segment.
const SEGMENT: u64 = 10_000;

/// How many records a previous run left in each segment, oldest first.
pub(crate) type Left = std::collections::BTreeMap<u64, usize>;

/// The journal's segments and what is known about their records.
#[derive(Debug)]
pub(crate) struct Journal {
    base: PathBuf,
    /// Records per segment ([`SEGMENT`]).
    segment: u64,
    state: Mutex<State>,
    /// Held (locked) for as long as the journal is open.
    _lock: File,
}

#[derive(Debug)]
struct State {
    /// The newest segment, appended to.
    file: File,
    id: u64,
    /// Per segment still on disk: records taken, and of those written.
    counts: BTreeMap<u64, Count>,
    /// An append failed and has been logged (once, until one succeeds).
    failing: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct Count {
    taken: u64,
    written: u64,
}

impl Journal {
    /// Open the journal at `base` and count the records a previous run left
    /// in each of its segments (read them with [`Journal::read`]). `None`
    /// when another process holds it. A line that does not parse (a write
    /// cut off by the crash itself) is skipped with a warning.
    pub(crate) fn open(base: &Path) -> std::io::Result<Option<(Self, Left)>> {
        Self::open_with(base, SEGMENT)
    }

    fn open_with(base: &Path, segment: u64) -> std::io::Result<Option<(Self, Left)>> {
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(suffixed(base, "lock"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        let mut counts = BTreeMap::new();
        let mut left = Left::new();
        for (id, path) in segments(base)? {
            let n = parse(&path, true)?.len();
            if n == 0 {
                std::fs::remove_file(&path)?;
            } else {
                counts.insert(id, Count { taken: n as u64, written: 0 });
                left.insert(id, n);
            }
        }
        let id = counts.keys().next_back().map_or(1, |last| last + 1);
        let file = create(base, id)?;
        counts.insert(id, Count::default());
        let state = State { file, id, counts, failing: false };
        Ok(Some((Self { base: base.to_owned(), segment, state: Mutex::new(state), _lock: lock }, left)))
    }

    /// Append `r`, which is about to be queued; the segment that holds it.
    /// A failed append (a full disk) is logged; the record still goes to
    /// the writer.
    pub(crate) fn append(&self, r: &UsageRecord) -> u64 {
        let mut line = match serde_json::to_vec(r) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot serialise a usage record for the journal: {e}");
                Vec::new()
            }
        };
        line.push(b'\n');
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let st = &mut *guard;
        let id = st.id;
        let count = st.counts.entry(id).or_default();
        count.taken += 1;
        let full = count.taken >= self.segment;
        match st.file.write_all(&line) {
            Ok(()) => st.failing = false,
            Err(e) if !st.failing => {
                st.failing = true;
                tracing::error!(journal = %self.base.display(), "cannot append to the usage journal (records are only in memory until written): {e}");
            }
            Err(_) => {}
        }
        if full {
            match create(&self.base, id + 1) {
                Ok(file) => {
                    st.file = file;
                    st.id = id + 1;
                    st.counts.insert(id + 1, Count::default());
                }
                Err(e) => tracing::warn!(journal = %self.base.display(), "cannot start a new usage journal segment: {e}"),
            }
        }
        id
    }

    /// The records segment `id` holds now (a line still being appended is
    /// not one yet: its record reaches the writer after the append).
    pub(crate) fn read(&self, id: u64) -> std::io::Result<Vec<UsageRecord>> {
        parse(&suffixed(&self.base, &id.to_string()), false)
    }

    /// `n` more records of segment `id` are in the database. A segment all
    /// of whose records are is deleted (the newest is emptied instead).
    pub(crate) fn written(&self, id: u64, n: usize) {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let st = &mut *guard;
        let Some(count) = st.counts.get_mut(&id) else { return };
        count.written += n as u64;
        if count.written < count.taken {
            return;
        }
        // Harmless if it fails: the next start skips what the database has.
        let done = if id == st.id {
            *count = Count::default();
            st.file.set_len(0)
        } else {
            st.counts.remove(&id);
            std::fs::remove_file(suffixed(&self.base, &id.to_string()))
        };
        if let Err(e) = done {
            tracing::warn!(journal = %self.base.display(), "cannot clear a usage journal segment: {e}");
        }
    }
}

/// The records of a segment file, in order. A line that does not parse is
/// skipped (with a warning when `warn`: at start, a write the crash cut).
fn parse(path: &Path, warn: bool) -> std::io::Result<Vec<UsageRecord>> {
    let mut records = Vec::new();
    for line in std::fs::read(path)?.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice(line) {
            Ok(r) => records.push(r),
            Err(e) if warn => tracing::warn!(journal = %path.display(), "skipping an unreadable usage journal line: {e}"),
            Err(_) => {}
        }
    }
    Ok(records)
}

/// `base.suffix`.
fn suffixed(base: &Path, suffix: &str) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

fn create(base: &Path, id: u64) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(suffixed(base, &id.to_string()))
}

/// The segments of the journal at `base`, oldest first.
fn segments(base: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let dir = base.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Some(name) = base.file_name().and_then(|n| n.to_str()) else { return Ok(Vec::new()) };
    let prefix = format!("{name}.");
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let file = entry.file_name();
        if let Some(id) = file.to_str().and_then(|f| f.strip_prefix(&prefix)).and_then(|rest| rest.parse::<u64>().ok()) {
            found.push((id, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_disk(base: &Path) -> Vec<(u64, usize)> {
        segments(base)
            .unwrap_or_default()
            .into_iter()
            .map(|(id, p)| (id, std::fs::read(p).unwrap_or_default().split(|&b| b == b'\n').filter(|l| !l.is_empty()).count()))
            .collect()
    }

    /// Under steady traffic the journal never empties all at once: full
    /// segments are deleted as they are written, so it stays short; what a
    /// crash leaves is read back with its segments.
    #[test]
    fn segments_rotate_and_go_once_written() {
        let dir = std::env::temp_dir().join(format!("starling-journal-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let base = dir.join("usage.journal");
        let r = crate::accounting::usage::draft("route", None);
        {
            let (j, left) = Journal::open_with(&base, 3).expect("open").expect("not locked");
            assert!(left.is_empty());
            assert!(Journal::open_with(&base, 3).expect("open").is_none(), "a second holder is refused");
            let ids: Vec<u64> = (0..7).map(|_| j.append(&r)).collect();
            assert_eq!(ids, [1, 1, 1, 2, 2, 2, 3]);
            assert_eq!(on_disk(&base), [(1, 3), (2, 3), (3, 1)]);
            j.written(1, 3);
            j.written(2, 2);
            assert_eq!(on_disk(&base), [(2, 3), (3, 1)]);
            j.written(3, 1);
            assert_eq!(on_disk(&base), [(2, 3), (3, 0)], "the newest is emptied, not deleted");
            j.append(&r);
        }
        // A crash: what is on disk comes back, oldest first, and new records
        // go to a new segment.
        let (j, left) = Journal::open_with(&base, 3).expect("open").expect("not locked");
        assert_eq!(left.into_iter().collect::<Vec<_>>(), [(2, 3), (3, 1)]);
        assert_eq!(j.read(2).expect("read").len(), 3);
        assert_eq!(j.append(&r), 4);
        j.written(2, 3);
        j.written(3, 1);
        j.written(4, 1);
        assert_eq!(on_disk(&base), [(4, 0)]);
        drop(j);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
