//! The usage journal: every usage record is appended to a local file
//! before it is queued for the database, and the file is emptied whenever
//! everything in it has been written. A process that dies with records
//! still queued (`kill -9`, the OOM killer, a panic that aborts) leaves them
//! in the file; the next start reads them back and inserts those the
//! database lacks.
//!
//! An append is one `write` to the page cache (a few microseconds, no
//! fsync): it survives the process, not the machine, as SQLite's WAL with
//! `synchronous=NORMAL` does.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::usage::UsageRecord;

/// The journal file and what is known about its records.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    file: File,
    /// Records handed to the writer since the file was last emptied
    /// (whether or not their append succeeded).
    taken: u64,
    /// Of those, records the writer has put in the database.
    written: u64,
    /// An append failed and has been logged (once, until one succeeds).
    failing: bool,
}

impl Journal {
    /// Open `path` (created if missing) and read the records a previous
    /// run left in it. A line that does not parse (a write cut off by the
    /// crash itself) is skipped with a warning.
    pub(crate) fn open(path: &Path) -> std::io::Result<(Self, Vec<UsageRecord>)> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut left = Vec::new();
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice(line) {
                Ok(r) => left.push(r),
                Err(e) => tracing::warn!(journal = %path.display(), "skipping an unreadable usage journal line: {e}"),
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let state = State { file, taken: left.len() as u64, written: 0, failing: false };
        Ok((Self { path: path.to_owned(), state: Mutex::new(state) }, left))
    }

    /// Append `r`, which is about to be queued. A failed append (a full
    /// disk) is logged; the record still goes to the writer.
    pub(crate) fn append(&self, r: &UsageRecord) {
        let mut line = match serde_json::to_vec(r) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot serialise a usage record for the journal: {e}");
                Vec::new()
            }
        };
        line.push(b'\n');
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.taken += 1;
        match st.file.write_all(&line) {
            Ok(()) => st.failing = false,
            Err(e) if !st.failing => {
                st.failing = true;
                tracing::error!(journal = %self.path.display(), "cannot append to the usage journal (records are only in memory until written): {e}");
            }
            Err(_) => {}
        }
    }

    /// `n` more records are in the database. Once every record taken is,
    /// the file is emptied: nothing in it is needed any more.
    pub(crate) fn written(&self, n: usize) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.written += n as u64;
        if st.written >= st.taken {
            if let Err(e) = st.file.set_len(0) {
                // Harmless: the next start skips what the database has.
                tracing::warn!(journal = %self.path.display(), "cannot empty the usage journal: {e}");
            }
            st.taken = 0;
            st.written = 0;
        }
    }
}
