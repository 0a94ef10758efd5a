//! A full data folder. When the file system under `data_dir` fills, RocksDB refuses every
//! write ("No space left on device") and stops taking writes until space returns; reads
//! keep working. The ingest writer then holds the agents' batches unacknowledged (agents
//! keep buffering) and retries every second, other writes are refused with
//! [`Space::refusal`], and queries answer from what is stored. [`Space`] keeps the state of
//! such an episode: its one warning, `outpost_aggregator_storage_disk_full` and
//! `outpost_aggregator_storage_write_errors_total`.
//!
//! RocksDB takes writes again by itself: its file manager checks the free space every 5 s
//! and resumes once at least [`RESUME_FREE_BYTES`] are free (it flushes its memtables
//! first). Nothing here reopens the store.

use crate::metrics::{Metrics, ReasonLabel};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// Free bytes RocksDB waits for before it takes writes again after a full disk: its
/// default write buffer size (64 MiB), which the store's column families keep.
pub const RESUME_FREE_BYTES: u64 = 64 << 20;

/// What RocksDB's errors say when the file system is full (ENOSPC).
const NO_SPACE: &str = "No space left on device";

/// What every write refused while ingestion is paused says.
const REFUSED: &str = "is full: not stored";

/// Whether a storage error (as text) means the file system is full.
pub fn is_no_space(err: &str) -> bool {
    err.contains(NO_SPACE)
}

/// Whether `msg` is a refusal from [`Space::refusal`] or a write that failed for lack of
/// space: the caller should retry later rather than report a failure.
pub fn is_full(msg: &str) -> bool {
    msg.contains(REFUSED) || is_no_space(msg)
}

/// Free bytes for unprivileged writers on the file system holding `dir`, if it can be
/// asked.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Whether the data folder is full, with the metrics that say so; shared by the ingest
/// writer and the storage thread.
pub struct Space {
    dir: PathBuf,
    /// When the current episode began; `None` while writes succeed.
    since: Mutex<Option<Instant>>,
    disk_full: Gauge,
    write_errors: Family<ReasonLabel, Counter>,
}

impl Space {
    /// The state of the data folder `dir`, reported through `metrics`.
    pub fn new(dir: &Path, metrics: &Metrics) -> Space {
        Space {
            dir: dir.to_path_buf(),
            since: Mutex::new(None),
            disk_full: metrics.storage_disk_full.clone(),
            write_errors: metrics.storage_write_errors.clone(),
        }
    }

    fn since(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.since.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether ingestion is paused because the data folder is full.
    pub fn is_full(&self) -> bool {
        self.since().is_some()
    }

    /// A write to the store failed with `err`; counts it by reason. Returns whether it
    /// failed for lack of space; the first such failure of an episode pauses ingestion,
    /// sets the gauge and logs one warning that says what to do.
    pub fn write_failed(&self, err: &str) -> bool {
        let no_space = is_no_space(err);
        let reason = if no_space { "no_space" } else { "other" };
        self.count(reason);
        if !no_space {
            return false;
        }
        let mut since = self.since();
        if since.is_none() {
            *since = Some(Instant::now());
            self.disk_full.set(1);
            let free = free_bytes(&self.dir)
                .map_or_else(|| "unknown".to_string(), |b| format!("{} MiB", b >> 20));
            tracing::warn!(
                dir = %self.dir.display(),
                free = %free,
                "data folder {} is full: ingestion paused, agents keep buffering and nothing \
                 they sent is acknowledged until it is stored; queries still answer. Free space \
                 on its file system: ingestion resumes by itself once {} MiB are free. To keep \
                 it from filling again, set [storage] max_bytes below the file system's size \
                 or shorten [storage] retention ({err})",
                self.dir.display(),
                RESUME_FREE_BYTES >> 20,
            );
        }
        true
    }

    /// A write was refused without trying, while paused: counted as `no_space`.
    pub fn refused(&self) {
        self.count("no_space");
    }

    fn count(&self, reason: &str) {
        self.write_errors
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// A write to the store succeeded: ends an episode (logged, with the `held` batches
    /// stored after waiting) if one was on.
    pub fn write_succeeded(&self, held: usize) {
        let mut since = self.since();
        if let Some(t) = since.take() {
            self.disk_full.set(0);
            tracing::info!(
                dir = %self.dir.display(),
                paused_s = t.elapsed().as_secs(),
                held_batches = held,
                "data folder {} has space again: ingestion resumed",
                self.dir.display()
            );
        }
    }

    /// The error a write refused while paused gets.
    pub fn refusal(&self) -> String {
        format!(
            "data folder {} {REFUSED} (ingestion paused until its file system has space); \
             retry later",
            self.dir.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_episode_logs_once_sets_the_gauge_and_ends_on_success() {
        let m = Metrics::new();
        let s = Space::new(Path::new("/nonexistent"), &m);
        let enospc = "storage at /x: IO error: No space left on device: While appending to \
                      file: /x/000008.log: No space left on device";
        assert!(!s.write_failed("storage at /x: IO error: Input/output error"));
        assert!(!s.is_full());
        assert!(s.write_failed(enospc));
        assert!(s.write_failed(enospc));
        s.refused();
        assert!(s.is_full());
        assert_eq!(m.storage_disk_full.get(), 1);
        let count = |r: &str| {
            m.storage_write_errors
                .get_or_create(&ReasonLabel { reason: r.into() })
                .get()
        };
        assert_eq!((count("no_space"), count("other")), (3, 1));
        assert!(is_full(&s.refusal()));
        s.write_succeeded(4);
        assert!(!s.is_full());
        assert_eq!(m.storage_disk_full.get(), 0);
    }
}
