//! WAL checkpoints on their own thread, off the writer's commit path.
//!
//! SQLite's automatic checkpoint runs inside the COMMIT that crosses `wal_autocheckpoint`
//! pages, so every thousandth page or so one batch waited for the WAL to be copied back into
//! the database file: tens of milliseconds of tail latency on the way from a device to the
//! stream. The writer therefore turns the automatic checkpoint off and this thread runs a
//! `PASSIVE` checkpoint (which never blocks the writer or readers) every [`INTERVAL`] on its
//! own connection. That pass does the bulk of the copying; because the writer keeps appending
//! meanwhile, the writer itself finishes the job between batches after each pass that saw
//! more than [`WRITER_PASS_FRAMES`] (copying only the frames written since), so the WAL
//! restarts from its beginning at the writer's next commit.
//!
//! Bounds: a PASSIVE checkpoint cannot copy frames that a long-running reader still needs, so
//! the WAL could grow while such a reader lives. When the WAL is still over [`SOFT_LIMIT_FRAMES`]
//! after a PASSIVE pass, a `RESTART` checkpoint waits (at most the busy timeout) for readers
//! to move on. `journal_size_limit` makes SQLite shrink the file back when the WAL restarts.
//! The WAL's size is the `journal_wal_frames` gauge; failures count in
//! `journal_checkpoint_failures` and are logged once per spell, not once per tick.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use rusqlite::Connection;

use super::JournalError;
use crate::metrics::Metrics;

/// How often the WAL is copied back.
pub const INTERVAL: Duration = Duration::from_millis(250);

/// WAL frames (pages of 4 KiB) a background pass must have seen for the writer to finish the
/// job and let the WAL restart: 256 KiB. Below that an idle journal is left alone. Without the
/// restart the WAL only grows, and every page is on disk twice (WAL and database).
pub const WRITER_PASS_FRAMES: i64 = 64;

/// WAL frames past which a checkpoint waits for readers: 64 MiB (a reader that holds a
/// snapshot for long keeps the WAL from restarting).
pub const SOFT_LIMIT_FRAMES: i64 = 16_384;

/// The WAL file is truncated to this when it restarts (bytes). Small, so that space a burst
/// took (say, while the disk was full and nothing could be copied back) is given back to the
/// file system at the next restart instead of being kept for the WAL forever.
pub const WAL_SIZE_LIMIT_BYTES: i64 = 1024 * 1024;

/// How long a RESTART checkpoint waits for readers.
const BUSY_TIMEOUT: Duration = Duration::from_millis(2000);

/// What one checkpoint pass found: WAL frames, and how many of them are in the database now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub wal_frames: i64,
    pub checkpointed: i64,
}

/// Runs checkpoints for the journal at `path` until `stop` is dropped, then one last time.
pub struct Checkpointer {
    connection: Connection,
    metrics: Arc<Metrics>,
    failing: bool,
}

impl Checkpointer {
    pub fn open(path: &Path, metrics: Arc<Metrics>) -> Result<Self, JournalError> {
        let connection = Connection::open(path)?;
        connection.busy_timeout(BUSY_TIMEOUT)?;
        Ok(Checkpointer {
            connection,
            metrics,
            failing: false,
        })
    }

    /// Checkpoints every [`INTERVAL`] until the sender of `stop` is dropped.
    pub fn run(mut self, stop: Receiver<()>) {
        loop {
            match stop.recv_timeout(INTERVAL) {
                Err(RecvTimeoutError::Timeout) | Ok(()) => self.tick(),
                Err(RecvTimeoutError::Disconnected) => {
                    self.tick();
                    return;
                }
            }
        }
    }

    fn tick(&mut self) {
        match self.checkpoint() {
            Ok(pass) => {
                self.metrics.journal_wal_frames.set(pass.wal_frames);
                if self.failing {
                    self.failing = false;
                    tracing::info!(
                        wal_frames = pass.wal_frames,
                        "journal checkpoints work again"
                    );
                }
            }
            Err(error) => {
                self.metrics.journal_checkpoint_failures.inc();
                if !self.failing {
                    self.failing = true;
                    tracing::warn!(%error, "journal checkpoint failed; retrying every {INTERVAL:?} \
                        (events are safe in the WAL meanwhile)");
                }
            }
        }
    }

    /// One PASSIVE pass, followed by a RESTART pass when the WAL is over the soft limit.
    pub fn checkpoint(&self) -> Result<Pass, JournalError> {
        let pass = self.pass("PASSIVE")?;
        if pass.wal_frames - pass.checkpointed > 0 && pass.wal_frames > SOFT_LIMIT_FRAMES {
            tracing::warn!(
                wal_frames = pass.wal_frames,
                "journal WAL over its soft limit: waiting for readers to checkpoint it"
            );
            return self.pass("RESTART");
        }
        Ok(pass)
    }

    fn pass(&self, mode: &str) -> Result<Pass, JournalError> {
        run_pass(&self.connection, mode)
    }
}

/// A PASSIVE checkpoint on `connection` (the writer's own, see `Writer::let_the_wal_restart`).
pub fn passive(connection: &Connection) -> Result<Pass, JournalError> {
    run_pass(connection, "PASSIVE")
}

fn run_pass(connection: &Connection, mode: &str) -> Result<Pass, JournalError> {
    // Columns: busy (a RESTART that could not finish waiting: not an error, the next pass
    // tries again and the gauge shows the WAL growing), WAL frames, frames checkpointed.
    let (wal_frames, checkpointed): (i64, i64) =
        connection.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
            Ok((row.get(1)?, row.get(2)?))
        })?;
    Ok(Pass {
        wal_frames,
        checkpointed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::open_for_writing;

    fn fill(connection: &Connection, rows: usize) -> rusqlite::Result<()> {
        connection.execute_batch("CREATE TABLE IF NOT EXISTS filler (body BLOB)")?;
        let mut insert = connection.prepare("INSERT INTO filler (body) VALUES (zeroblob(4000))")?;
        for _ in 0..rows {
            insert.execute([])?;
        }
        Ok(())
    }

    #[test]
    fn a_pass_copies_the_wal_back_and_counts_its_frames() -> anyhow::Result<()> {
        let folder = tempfile::tempdir()?;
        let path = folder.path().join("journal.db");
        let writer = open_for_writing(&path, false)?;
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        let database_before = std::fs::metadata(&path)?.len();
        fill(&writer, 500)?;

        let checkpointer = Checkpointer::open(&path, Arc::new(Metrics::default()))?;
        let pass = checkpointer.checkpoint()?;
        assert!(pass.wal_frames >= 500, "{pass:?}");
        assert_eq!(pass.checkpointed, pass.wal_frames, "{pass:?}");
        assert!(std::fs::metadata(&path)?.len() > database_before + 500 * 4000);
        Ok(())
    }

    #[test]
    fn a_reader_holding_a_snapshot_does_not_block_a_pass() -> anyhow::Result<()> {
        let folder = tempfile::tempdir()?;
        let path = folder.path().join("journal.db");
        let writer = open_for_writing(&path, false)?;
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        fill(&writer, 10)?;
        let mut reader = Connection::open(&path)?;
        let snapshot = reader.transaction()?;
        let _: i64 = snapshot.query_row("SELECT count(*) FROM filler", [], |row| row.get(0))?;
        fill(&writer, 10)?;

        let metrics = Arc::new(Metrics::default());
        let mut checkpointer = Checkpointer::open(&path, metrics.clone())?;
        let pass = checkpointer.checkpoint()?;
        assert!(pass.checkpointed < pass.wal_frames, "{pass:?}");
        checkpointer.tick();
        assert_eq!(metrics.journal_wal_frames.get(), pass.wal_frames);
        drop(snapshot);
        let pass = checkpointer.checkpoint()?;
        assert_eq!(pass.checkpointed, pass.wal_frames, "{pass:?}");
        Ok(())
    }

    #[test]
    fn stopping_runs_a_last_pass_before_the_thread_ends() -> anyhow::Result<()> {
        let folder = tempfile::tempdir()?;
        let path = folder.path().join("journal.db");
        let writer = open_for_writing(&path, false)?;
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        fill(&writer, 50)?;
        let database_before = std::fs::metadata(&path)?.len();
        let checkpointer = Checkpointer::open(&path, Arc::new(Metrics::default()))?;
        let (stop, stopped) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || checkpointer.run(stopped));
        drop(stop);
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("checkpoint thread panicked"))?;
        assert!(std::fs::metadata(&path)?.len() >= database_before + 50 * 4000);
        Ok(())
    }
}
