//! Keeping the store small and bounded: merging a partition's chunks, deleting partitions
//! past the retention or beyond a size cap, statistics per partition, and verifying a data
//! folder.
//!
//! - **Merge.** Head compaction writes a chunk per series every few seconds; merging
//!   rewrites each series' chunks of a partition as one (newest write wins for a repeated
//!   timestamp). Each series is one atomic write: the chunks read are deleted by exact key
//!   and the merged chunk put, so a crash leaves either the old chunks or the merged one,
//!   with the same points, and a chunk compacted meanwhile is kept.
//! - **Retention.** A partition whose last ms is older than `now - retention` is deleted
//!   with one range delete (and its statistics in the same write), then the range is
//!   compacted so RocksDB returns the space to the file system. A crash in between leaves
//!   the range deleted; the space comes back at RocksDB's next compaction.
//! - **Size cap.** While the store is larger than `max_bytes`, the oldest days are
//!   deleted the same way, whatever their resolution (a day's rollups before its raw
//!   points), never today's or the newest raw day: ingestion keeps working.
//!
//! Statistics per partition live in the default column family under `pstat/` + the
//! partition's 5-byte key prefix: samples (u64 LE), chunks (u64 LE), chunks right after the
//! last merge (u64 LE). They are updated in the same write as the chunks they count.

use crate::chunk_codec::{chunk_len, decode_chunk, encode_chunk};
use crate::db::{CF_CHUNKS, CF_PARTS, CF_SERIES, CF_WAL, KEY_RAW_FLOOR, Storage, StorageError};
use crate::partition::{self, RAW};
use crate::rollup::{R1H, R5M, ROLLUPS, decode_rollup, raw_ref, res_ms, res_name};
use crate::wal;
use outpost_promql::rollup::buckets_of;
use outpost_shared::Point;
use outpost_shared::codec::decode_points;
use rocksdb::{IteratorMode, WriteBatch};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

/// Counts kept per partition (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionStats {
    /// Samples in the partition's chunks. Exact after a merge; before, a timestamp written
    /// twice (late data, a resend) is counted twice.
    pub samples: u64,
    /// Chunks in the partition.
    pub chunks: u64,
    /// Chunks right after the last merge; fewer than `chunks` means it needs one.
    pub merged_chunks: u64,
    /// Raw partitions: how many compactions have added chunks to it (bumped by every one,
    /// never lowered). Rollup partitions: the raw partition's count they were made from;
    /// [`PartitionStats::SEALED`] once that raw day is deleted.
    pub writes: u64,
}

impl PartitionStats {
    /// `writes` of a rollup partition whose raw day was deleted (by retention or the size
    /// cap): it summarises all that day had. Points written for the day afterwards make a
    /// raw partition of their own, kept and deleted as any, and never a rollup that would
    /// replace the whole day's buckets with theirs alone.
    pub const SEALED: u64 = u64::MAX;

    /// What every statistics key begins with.
    pub(crate) const PREFIX: &[u8] = b"pstat/";

    pub(crate) fn key(res: u8, p: i32) -> Vec<u8> {
        let mut k = Self::PREFIX.to_vec();
        k.extend_from_slice(&partition::prefix(res, p));
        k
    }

    pub(crate) fn to_bytes(self) -> Vec<u8> {
        let mut v = Vec::with_capacity(32);
        for x in [self.samples, self.chunks, self.merged_chunks, self.writes] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v
    }

    fn from_bytes(b: &[u8]) -> Option<PartitionStats> {
        let n = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                b.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        Some(PartitionStats {
            samples: n(0)?,
            chunks: n(1)?,
            merged_chunks: n(2)?,
            // Absent in statistics written before rollups.
            writes: n(3).unwrap_or(0),
        })
    }
}

/// What to keep: see [`Storage::maintain`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Raw partitions whose last ms is older than this (ms) are deleted; `None` keeps all.
    pub retention_ms: Option<i64>,
    /// The store's size cap in bytes ([`Storage::size_bytes`]); `None` for none.
    pub max_bytes: Option<u64>,
    /// 5-minute rollup partitions whose last ms is older than this (ms) are deleted;
    /// `None` keeps all.
    pub retention_5m_ms: Option<i64>,
    /// 1-hour rollup partitions whose last ms is older than this (ms) are deleted.
    pub retention_1h_ms: Option<i64>,
}

/// Why a partition was deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    /// Older than the retention.
    Retention,
    /// The store was over its size cap.
    MaxBytes,
}

impl DeleteReason {
    /// The reason as a metric label value: `retention` or `max_bytes`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeleteReason::Retention => "retention",
            DeleteReason::MaxBytes => "max_bytes",
        }
    }
}

/// One deleted partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeletedPartition {
    /// `raw`, `5m` or `1h`.
    pub resolution: &'static str,
    /// Its first and last ms.
    pub start_ms: i64,
    /// Its last ms.
    pub end_ms: i64,
    /// What its statistics said it held.
    pub stats: PartitionStats,
    /// Its approximate size on disk before deletion, bytes.
    pub bytes: u64,
    /// Why.
    pub reason: DeleteReason,
}

/// What one [`Storage::maintain`] pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Partitions merged, and their chunks before and after.
    pub merged_partitions: u64,
    /// Chunks read by the merges.
    pub chunks_before: u64,
    /// Chunks written by the merges.
    pub chunks_after: u64,
    /// Raw partitions rolled up (5-minute and 1-hour buckets made or remade).
    pub rolled_up_partitions: u64,
    /// Raw samples read to make them.
    pub rollup_samples: u64,
    /// Partitions deleted, oldest first.
    pub deleted: Vec<DeletedPartition>,
    /// Raw days found this pass with a chunk that does not decode, each as the error that
    /// names it: left unmerged and without new rollups until the store is opened again,
    /// while the pass goes on to the retention and the size cap.
    pub damaged: Vec<String>,
}

/// One partition as `/api/v1/status/tsdb` and `outpost-aggregator tsdb` show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionStatus {
    /// `raw`, `5m` or `1h`.
    pub resolution: &'static str,
    /// First ms of the partition.
    pub start_ms: i64,
    /// Last ms of the partition.
    pub end_ms: i64,
    /// Its statistics.
    pub stats: PartitionStats,
    /// Approximate bytes on disk (RocksDB's estimate for the key range, compressed).
    pub bytes: u64,
}

/// What [`Storage::verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Series in the index.
    pub series: u64,
    /// Raw chunks read and decoded.
    pub chunks: u64,
    /// Rollup chunks read and decoded.
    pub rollup_chunks: u64,
    /// Samples in them.
    pub samples: u64,
    /// Wal records read and decoded.
    pub wal_records: u64,
    /// Places where chunks could not be read from the files at all (a block whose
    /// checksum does not match, say), each also in `problems`; the partitions after each
    /// were read on.
    pub unreadable: u64,
    /// Every problem found, each naming what is wrong and where; empty when the folder is
    /// sound.
    pub problems: Vec<String>,
}

/// Series of one partition being rewritten by a merge, written together
/// ([`Storage::merge_partition`]).
#[derive(Default)]
struct MergeRun {
    /// The first and last series of the run.
    first: Option<crate::SeriesId>,
    last: Option<crate::SeriesId>,
    /// Each series' one chunk (key, value), in key order.
    chunks: Vec<(Vec<u8>, Vec<u8>)>,
    /// Bytes in `chunks`.
    bytes: usize,
    /// Whether a series of the run had more than one chunk.
    changed: bool,
    /// Default column family entries to put in the same write.
    extra: Vec<(Vec<u8>, Vec<u8>)>,
}

impl MergeRun {
    fn put(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.bytes += k.len() + v.len();
        self.chunks.push((k, v));
    }
}

/// At most this many problems are listed (the count goes on).
const MAX_PROBLEMS: usize = 100;

/// A partition is merged once it has been closed this long (ms): late points of the last
/// minutes still land before the merge, and the open day is not rewritten again and again.
/// Points arriving later make it merge again, rewriting only the series they touch.
pub const MERGE_AFTER_MS: i64 = 10 * 60_000;

/// Bytes of a log's files, past its live records', at which a maintenance pass compacts
/// its deleted records away ([`Storage::settle_log`]).
const LOG_SETTLE_BYTES: u64 = 1 << 20;

impl Storage {
    /// The statistics of partition `p` at resolution `res` (zero when it has none).
    ///
    /// # Errors
    /// RocksDB fails to read.
    pub(crate) fn partition_stats(&self, res: u8, p: i32) -> Result<PartitionStats, StorageError> {
        Ok(self
            .db
            .get(PartitionStats::key(res, p))
            .map_err(|e| self.err(e))?
            .and_then(|v| PartitionStats::from_bytes(&v))
            .unwrap_or_default())
    }

    /// The first ms of the oldest raw partition holding chunks, if any (no I/O).
    pub fn oldest_partition_start(&self) -> Option<i64> {
        self.parts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .first()
            .map(|&p| partition::partition_span(p).0)
    }

    /// Compacts the keys `[from, to)` of `cf` down to its last level, where zstd applies,
    /// dropping what was deleted or merged away. Forced: by default RocksDB leaves a span
    /// alone whose data all sits in one level, which for a small store is level 0,
    /// uncompressed (a few hosts' days would stay there for good).
    fn settle(&self, cf: &impl rocksdb::AsColumnFamilyRef, from: &[u8], to: &[u8]) {
        let mut o = rocksdb::CompactOptions::default();
        // Files this compaction writes are not compacted again.
        o.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::ForceOptimized);
        self.db.compact_range_cf_opt(cf, Some(from), Some(to), &o);
    }

    /// Compacts away the records of a log column family (`wal`, `forward`) below `next`
    /// (all deleted) once its files hold [`LOG_SETTLE_BYTES`] more than the records from
    /// `next` on. Both logs are trimmed with one range delete, but RocksDB only frees the
    /// files when it compacts them, which for a small store may be never (a few MiB a
    /// host, on disk for good and counted against the size cap).
    fn settle_log(&self, name: &str, next: u64) -> Result<(), StorageError> {
        let cf = self.cf(name)?;
        // Files of the current tree only: files an old version still holds go when it is
        // released, and compacting again would not free them sooner.
        let files = self
            .db
            .property_int_value_cf(cf, "rocksdb.live-sst-files-size")
            .map_err(|e| self.err(e))?
            .unwrap_or(0);
        if files < LOG_SETTLE_BYTES {
            return Ok(());
        }
        let (from, to) = (0u64.to_be_bytes(), next.to_be_bytes());
        let live = self
            .db
            .get_approximate_sizes_cf(cf, &[rocksdb::Range::new(&to, &u64::MAX.to_be_bytes())])
            .first()
            .copied()
            .unwrap_or(0);
        if files.saturating_sub(live) >= LOG_SETTLE_BYTES {
            self.settle(cf, &from, &to);
        }
        Ok(())
    }

    /// [`Storage::settle_log`] for the wal (records below the first not yet in chunks) and
    /// the forward log (records below the oldest kept). A failure is logged: the pass goes on.
    fn settle_logs(&self) {
        let forward_next = self
            .forward_bounds()
            .map(|b| Some(b.map_or(u64::MAX, |(first, _)| first)));
        for (name, next) in [
            (CF_WAL, self.wal_next()),
            (crate::db::CF_FORWARD, forward_next),
        ] {
            let done = match next {
                Ok(Some(next)) => self.settle_log(name, next),
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = done {
                tracing::warn!(column_family = name, error = %e, "could not compact the log's deleted records away");
            }
        }
    }

    /// Every partition holding chunks, raw first then each rollup resolution, oldest first,
    /// with its statistics and size.
    ///
    /// # Errors
    /// RocksDB fails to read.
    pub fn partitions(&self) -> Result<Vec<PartitionStatus>, StorageError> {
        let mut all: Vec<(u8, i32)> = self
            .parts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|&p| (RAW, p))
            .collect();
        for (res, _, _) in ROLLUPS {
            all.extend(self.rollup_parts(res).into_iter().map(|p| (res, p)));
        }
        let sizes = self.partition_sizes(all.iter().copied())?;
        let mut out = vec![];
        for (i, &(res, p)) in all.iter().enumerate() {
            let (start_ms, end_ms) = partition::partition_span(p);
            out.push(PartitionStatus {
                resolution: res_name(res),
                start_ms,
                end_ms,
                stats: self.partition_stats(res, p)?,
                bytes: sizes.get(i).copied().unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// One maintenance pass at wall time `now_ms`:
    /// 1. merges every raw partition closed for [`MERGE_AFTER_MS`] that gained chunks since
    ///    its last merge, and rolls up every such partition written since its rollups were
    ///    made ([`crate::rollup`]), a partition past the retention only if it has none;
    /// 2. deletes raw partitions past `policy.retention_ms` and rollup partitions past
    ///    their resolution's retention;
    /// 3. compacts away the files of wal records already in chunks and of forward records
    ///    already forwarded, once they are worth it;
    /// 4. while the store is over `policy.max_bytes`, deletes the oldest days first,
    ///    whatever their resolution, never today's or the newest raw day
    ///    ([`Storage::fit_under`]).
    ///
    /// Deletions are logged.
    ///
    /// # Errors
    /// RocksDB fails; what was done before stays done.
    pub fn maintain(
        &self,
        now_ms: i64,
        policy: &RetentionPolicy,
    ) -> Result<MaintenanceReport, StorageError> {
        self.maintain_with_progress(now_ms, policy, &mut |_| {})
    }

    /// [`Storage::maintain`], telling `progress` what it is doing in a line of text: every
    /// 30 days checked, and before each compaction and run of deletions (after a backfill a
    /// pass can take minutes, most of them in RocksDB's compactions).
    ///
    /// # Errors
    /// RocksDB fails; what was done before stays done.
    pub fn maintain_with_progress(
        &self,
        now_ms: i64,
        policy: &RetentionPolicy,
        progress: &mut dyn FnMut(&str),
    ) -> Result<MaintenanceReport, StorageError> {
        let mut report = MaintenanceReport::default();
        let horizon = |r: Option<i64>| r.map_or(i64::MIN, |r| now_ms.saturating_sub(r));
        let raw_horizon = horizon(policy.retention_ms);
        self.retention_floor
            .fetch_max(raw_horizon, Ordering::Relaxed);
        let closed_before = now_ms.saturating_sub(MERGE_AFTER_MS);
        let mut touched: Option<(i32, i32)> = None;
        let raw_parts = self.parts_of(RAW);
        for (i, &p) in raw_parts.iter().enumerate() {
            if i > 0 && i % 30 == 0 {
                progress(&format!(
                    "{i} of {} days checked: {} merged, {} rolled up",
                    raw_parts.len(),
                    report.merged_partitions,
                    report.rolled_up_partitions
                ));
            }
            let (_, end) = partition::partition_span(p);
            if end >= closed_before {
                continue;
            }
            if self.is_set_aside(p) {
                continue;
            }
            let expiring = end < raw_horizon;
            let st = self.partition_stats(RAW, p)?;
            let merged = !expiring && st.chunks > st.merged_chunks;
            if merged {
                match self.merge_partition(p) {
                    Ok((before, after)) => {
                        report.merged_partitions += 1;
                        report.chunks_before += before;
                        report.chunks_after += after;
                    }
                    Err(e) => {
                        // Series merged before the damaged one are rewritten: settle them.
                        widen(&mut touched, p);
                        self.set_aside(p, e, &mut report)?;
                        continue;
                    }
                }
            }
            // A day about to leave the raw retention is rolled up first unless it already
            // was: points that arrived for it since are older than the retention and go
            // with it (remaking its buckets from them alone would lose the rest). Only the
            // resolutions whose retention still covers the day are made: one past it would
            // be deleted by the retention below and made again at every pass.
            let kept: Vec<u8> = [(R5M, policy.retention_5m_ms), (R1H, policy.retention_1h_ms)]
                .into_iter()
                .filter(|&(_, r)| end >= horizon(r))
                .map(|(res, _)| res)
                .collect();
            if !kept.is_empty()
                && self.needs_rollup(p, &kept)?
                && (!expiring || !self.has_rollups(p, &kept))
            {
                match self.rollup_partition(p, &kept, !expiring) {
                    Ok(n) => {
                        report.rollup_samples += n;
                        report.rolled_up_partitions += 1;
                    }
                    Err(e) => self.set_aside(p, e, &mut report)?,
                }
                widen(&mut touched, p);
            }
            if merged {
                widen(&mut touched, p);
            }
        }
        // Closed days merged or rolled up are done changing: one compaction of their span
        // returns the space of the chunks merged away and settles the new ones where zstd
        // applies (one for the whole span, not one a day, which would rewrite the same
        // files again and again after a backfill).
        if let Some((a, b)) = touched {
            progress(&format!(
                "{} merged and {} rolled up; compacting the {} days from {} to {}",
                report.merged_partitions,
                report.rolled_up_partitions,
                b - a + 1,
                day_name(a),
                day_name(b)
            ));
            let cf = self.cf(CF_PARTS)?;
            for res in [RAW, R5M, R1H] {
                self.settle(
                    cf,
                    &partition::prefix(res, a),
                    &partition::prefix(res, b.saturating_add(1)),
                );
            }
        }
        // Rollups past their retention go before raw days do: a raw day's deletion first
        // makes the rollups that refer to its points from them, and one about to be
        // deleted need not be.
        for (res, retention) in [
            (R5M, policy.retention_5m_ms),
            (R1H, policy.retention_1h_ms),
            (RAW, policy.retention_ms),
        ] {
            let h = horizon(retention);
            // Rollup days as found on disk, so a day whose rollup was cut short goes too.
            let parts: Vec<i32> = if res == RAW {
                self.parts_of(res)
            } else {
                self.scan_partitions(res)?.into_iter().collect()
            };
            let mut gone: Option<(i32, i32)> = None;
            for p in parts {
                if partition::partition_span(p).1 >= h {
                    break;
                }
                report.deleted.push(self.delete_partition(
                    res,
                    p,
                    DeleteReason::Retention,
                    false,
                )?);
                widen(&mut gone, p);
            }
            // One compaction returns the space of every day deleted: one a day would
            // rewrite the same files once per day (minutes for a year's backlog).
            if let Some((a, b)) = gone {
                progress(&format!(
                    "deleted {} {} days past their retention ({} to {}); compacting them",
                    b - a + 1,
                    res_name(res),
                    day_name(a),
                    day_name(b)
                ));
                self.settle(
                    self.cf(CF_PARTS)?,
                    &partition::prefix(res, a),
                    &partition::prefix(res, b.saturating_add(1)),
                );
            }
        }
        // Before the size cap is checked: records already in chunks or forwarded must not
        // count against it.
        self.settle_logs();
        if let Some(cap) = policy.max_bytes {
            self.fit_under(cap, now_ms, &mut report)?;
        }
        Ok(report)
    }

    /// Deletes the oldest days until the store takes at most `cap` bytes
    /// ([`Storage::size_bytes`]): oldest time ranges first, whatever their resolution, and
    /// a day's rollups before its raw points (deleted after, they would be made from them
    /// first only to go). Raw days from today on (a sample stamped a day ahead must not make
    /// today the oldest day to go) and the newest raw day are where ingestion writes: never
    /// deleted. Deletes as many days at a time as their approximate sizes say the store is
    /// over, then compacts their span once (one compaction a day would rewrite the same
    /// files again and again), and measures again.
    ///
    /// # Errors
    /// RocksDB fails; the days deleted before stay deleted.
    fn fit_under(
        &self,
        cap: u64,
        now_ms: i64,
        report: &mut MaintenanceReport,
    ) -> Result<(), StorageError> {
        let today = partition::partition_of(now_ms);
        loop {
            let size = self.size_bytes();
            if size <= cap {
                return Ok(());
            }
            // (day, coarsest first, resolution)
            let mut days: Vec<(i32, u8, u8)> = vec![];
            for (rank, res) in [(0u8, R1H), (1, R5M), (2, RAW)] {
                let parts = self.parts_of(res);
                let keep = usize::from(res == RAW);
                days.extend(
                    parts[..parts.len().saturating_sub(keep)]
                        .iter()
                        .filter(|&&p| res != RAW || p < today)
                        .map(|&p| (p, rank, res)),
                );
            }
            if days.is_empty() {
                return Ok(());
            }
            days.sort_unstable();
            let sizes = self.partition_sizes(days.iter().map(|&(p, _, res)| (res, p)))?;
            let over = size - cap;
            let (mut take, mut freed) = (0usize, 0u64);
            while take < days.len() && (take == 0 || freed < over) {
                freed = freed.saturating_add(sizes.get(take).copied().unwrap_or(0));
                take += 1;
            }
            let mut spans: BTreeMap<u8, Option<(i32, i32)>> = BTreeMap::new();
            for &(p, _, res) in &days[..take] {
                report.deleted.push(self.delete_partition(
                    res,
                    p,
                    DeleteReason::MaxBytes,
                    false,
                )?);
                widen(spans.entry(res).or_default(), p);
            }
            let cf = self.cf(CF_PARTS)?;
            for (res, (a, b)) in spans.into_iter().filter_map(|(r, s)| Some((r, s?))) {
                self.settle(
                    cf,
                    &partition::prefix(res, a),
                    &partition::prefix(res, b.saturating_add(1)),
                );
            }
        }
    }

    /// The approximate size on disk (bytes, RocksDB's estimate from its files) of each
    /// partition `(resolution, day)` given, in order.
    ///
    /// # Errors
    /// The chunks' column family is missing.
    fn partition_sizes(
        &self,
        parts: impl Iterator<Item = (u8, i32)>,
    ) -> Result<Vec<u64>, StorageError> {
        let cf = self.cf(CF_PARTS)?;
        let ranges: Vec<([u8; 5], [u8; 5])> = parts
            .map(|(res, p)| {
                (
                    partition::prefix(res, p),
                    partition::prefix(res, p.saturating_add(1)),
                )
            })
            .collect();
        Ok(self.db.get_approximate_sizes_cf(
            cf,
            &ranges
                .iter()
                .map(|(a, b)| rocksdb::Range::new(a, b))
                .collect::<Vec<_>>(),
        ))
    }

    /// The partitions of resolution byte `res` holding chunks, oldest first.
    fn parts_of(&self, res: u8) -> Vec<i32> {
        if res == RAW {
            self.parts
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .copied()
                .collect()
        } else {
            self.rollup_parts(res)
        }
    }

    /// Whether raw day `p` was found with a chunk that does not decode since the store
    /// opened: maintenance leaves it as it is (no merge, no rollup) until a restart.
    fn is_set_aside(&self, p: i32) -> bool {
        self.damaged_days
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&p)
    }

    /// Sets raw day `p` aside after its merge or rollup failed with `e`, so that one
    /// damaged chunk does not stop every later pass before the retention and the size cap
    /// (the disk would fill): named in the log and in `report.damaged`, once.
    ///
    /// # Errors
    /// `e` itself when it is not a damaged record (a failed write, a full disk): the pass
    /// stops there, to be tried again.
    fn set_aside(
        &self,
        p: i32,
        e: StorageError,
        report: &mut MaintenanceReport,
    ) -> Result<(), StorageError> {
        let StorageError::Damaged { .. } = e else {
            return Err(e);
        };
        tracing::error!(
            partition_start_ms = partition::partition_span(p).0,
            "{e}; the day is left unmerged and not rolled up (its retention still applies); \
             `outpost-aggregator tsdb --verify` lists every damaged chunk"
        );
        self.damaged_days
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p);
        report.damaged.push(e.to_string());
        Ok(())
    }

    /// Deletes partition `p` of resolution byte `res` (raw, or a rollup resolution of
    /// [`crate::rollup`]): one range delete, with its statistics, in one write; then, if
    /// `compact`, compacts its range so the space returns to the file system (else the
    /// caller compacts a span of deleted partitions at once).
    ///
    /// # Errors
    /// RocksDB fails; a failed write deletes nothing.
    pub(crate) fn delete_partition(
        &self,
        res: u8,
        p: i32,
        reason: DeleteReason,
        compact: bool,
    ) -> Result<DeletedPartition, StorageError> {
        let _maint = self.maint.lock().unwrap_or_else(|e| e.into_inner());
        let cf = self.cf(CF_PARTS)?;
        let (from, to) = (
            partition::prefix(res, p),
            partition::prefix(res, p.saturating_add(1)),
        );
        let bytes = self
            .partition_sizes(std::iter::once((res, p)))?
            .first()
            .copied()
            .unwrap_or(0);
        let stats = self.partition_stats(res, p)?;
        if res == RAW {
            let kept = self.keep_rollups_of_raw_day(p)?;
            if kept > 0 {
                tracing::info!(
                    partition_start_ms = partition::partition_span(p).0,
                    chunks = kept,
                    "rollup chunks made from a raw day before its deletion"
                );
            }
        }
        let mut wb = WriteBatch::default();
        wb.delete_range_cf(cf, from, to);
        wb.delete(PartitionStats::key(res, p));
        // Later points for the day or before it are dropped on arrival.
        let floor = partition::partition_span(p)
            .1
            .saturating_add(1)
            .max(self.deleted_before.load(Ordering::Relaxed));
        // The day's finished rollups, sealed with a raw day's deletion.
        let mut sealed = vec![];
        if res == RAW {
            wb.put(KEY_RAW_FLOOR, floor.to_le_bytes());
            for (r, _, _) in ROLLUPS {
                if self.rollup_on_disk(r, p)? {
                    let st = PartitionStats {
                        writes: PartitionStats::SEALED,
                        ..self.partition_stats(r, p)?
                    };
                    wb.put(PartitionStats::key(r, p), st.to_bytes());
                    sealed.push(r);
                }
            }
        }
        self.db.write_opt(wb, &self.sync).map_err(|e| self.err(e))?;
        if res == RAW {
            self.deleted_before.store(floor, Ordering::Relaxed);
            self.parts
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&p);
            // Rollups last written before a late point are read again: all there is now.
            let mut sets = self.rollups.write().unwrap_or_else(|e| e.into_inner());
            for r in sealed {
                if let Some(set) = sets.get_mut(usize::from(r)) {
                    set.insert(p);
                }
            }
        } else if let Some(set) = self
            .rollups
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(usize::from(res))
        {
            set.remove(&p);
        }
        let (start_ms, end_ms) = partition::partition_span(p);
        tracing::info!(
            reason = reason.as_str(),
            resolution = res_name(res),
            day = %day_name(p),
            partition_start_ms = start_ms,
            samples = stats.samples,
            chunks = stats.chunks,
            bytes,
            "deleted a time partition"
        );
        if compact {
            self.settle(cf, &from, &to);
        }
        Ok(DeletedPartition {
            resolution: res_name(res),
            start_ms,
            end_ms,
            stats,
            bytes,
            reason,
        })
    }

    /// Rewrites each series' chunks of raw partition `p` as one chunk. Returns the chunks
    /// before and after.
    ///
    /// Series are rewritten in runs of a few MiB, each run one write: a range delete over
    /// the run's series, then every series' chunk (merged, or the one it had). Runs where no
    /// series had more than one chunk are not written. A range delete leaves one tombstone
    /// where deleting each small chunk would leave hundreds per series for RocksDB to carry
    /// through its compactions. No chunk is written meanwhile: compaction waits on the same
    /// lock.
    ///
    /// # Errors
    /// RocksDB fails, or a chunk does not decode (named); runs written before stay merged.
    pub fn merge_partition(&self, p: i32) -> Result<(u64, u64), StorageError> {
        let _maint = self.maint.lock().unwrap_or_else(|e| e.into_inner());
        let (mut before, mut after, mut samples) = (0u64, 0u64, 0u64);
        let mut run = MergeRun::default();
        self.each_series_chunks(p, |series, group| {
            before += group.len() as u64;
            samples += self.merge_series(p, series, group, &mut run)?;
            after += 1;
            if run.bytes > 4 << 20 {
                self.write_run(p, &mut run, false)?;
            }
            Ok(())
        })?;
        run.extra.push((
            PartitionStats::key(RAW, p),
            PartitionStats {
                samples,
                chunks: after,
                merged_chunks: after,
                writes: self.partition_stats(RAW, p)?.writes,
            }
            .to_bytes(),
        ));
        // The last run carries the statistics: written (synced) even when nothing changed.
        run.changed = true;
        self.write_run(p, &mut run, true)?;
        Ok((before, after))
    }

    /// Calls `f` with each series of raw partition `p` and its chunks there, as
    /// `(record, key, value)` in key order (emptied by `f` or not, it is cleared after).
    ///
    /// # Errors
    /// RocksDB fails, a key is not a chunk key, or `f` fails.
    pub(crate) fn each_series_chunks(
        &self,
        p: i32,
        mut f: impl FnMut(
            crate::SeriesId,
            &mut Vec<(u64, Vec<u8>, Vec<u8>)>,
        ) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let prefix = partition::prefix(RAW, p);
        let mut it = self.db.raw_iterator_cf(self.cf(CF_PARTS)?);
        it.seek(prefix);
        let mut group: Vec<(u64, Vec<u8>, Vec<u8>)> = vec![];
        let mut group_series = None;
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if !k.starts_with(&prefix) {
                break;
            }
            let c = partition::parse(k)
                .ok_or_else(|| self.damaged(format!("chunk key in partition {p}")))?;
            if group_series != Some(c.series) {
                if let Some(series) = group_series {
                    f(series, &mut group)?;
                    group.clear();
                }
                group_series = Some(c.series);
            }
            group.push((c.record, k.to_vec(), v.to_vec()));
            it.next();
        }
        it.status().map_err(|e| self.err(e))?;
        if let Some(series) = group_series {
            f(series, &mut group)?;
        }
        Ok(())
    }

    /// The points of series `series`' chunks `group` (of partition `p`), sorted by time,
    /// one per timestamp: the newest write (highest record) wins. Also returns how many
    /// points the chunks held before that.
    ///
    /// # Errors
    /// A chunk does not decode (named).
    pub(crate) fn newest_points(
        &self,
        p: i32,
        series: crate::SeriesId,
        group: &mut [(u64, Vec<u8>, Vec<u8>)],
    ) -> Result<(Vec<Point>, u64), StorageError> {
        // Newest write first, then a stable sort by time keeps it for a repeated ts.
        group.sort_by_key(|g| std::cmp::Reverse(g.0));
        let mut pts: Vec<Point> = vec![];
        for (_, _, v) in group.iter() {
            decode_chunk(v, &mut pts).map_err(|e| {
                self.damaged(format!("chunk of series {series} in partition {p}: {e}"))
            })?;
        }
        let decoded = pts.len() as u64;
        pts.sort_by_key(|x| x.ts);
        pts.dedup_by_key(|x| x.ts);
        Ok((pts, decoded))
    }

    /// Adds series `series`' chunks of partition `p` (`group`, emptied) to `run` as one
    /// chunk; returns its samples.
    fn merge_series(
        &self,
        p: i32,
        series: crate::SeriesId,
        group: &mut Vec<(u64, Vec<u8>, Vec<u8>)>,
        run: &mut MergeRun,
    ) -> Result<u64, StorageError> {
        run.first.get_or_insert(series);
        run.last = Some(series);
        if group.len() == 1 {
            // A chunk starts with its point count (a varint).
            let n = match chunk_len(&group[0].2) {
                Some(n) => n,
                None => self.newest_points(p, series, group)?.1,
            };
            let (_, k, v) = group.pop().unwrap_or_default();
            run.put(k, v);
            return Ok(n);
        }
        let record = group.iter().map(|g| g.0).max().unwrap_or(0);
        let (pts, _) = self.newest_points(p, series, group)?;
        if let (Some(a), Some(b)) = (pts.first(), pts.last()) {
            run.put(
                partition::chunk_key(RAW, series, a.ts, b.ts, record),
                encode_chunk(&pts),
            );
        }
        run.changed = true;
        Ok(pts.len() as u64)
    }

    /// Writes `run` if any of its series changed: a range delete over its series, then
    /// their chunks (and what else its batch holds); then starts a new run.
    fn write_run(&self, p: i32, run: &mut MergeRun, sync: bool) -> Result<(), StorageError> {
        let run = std::mem::take(run);
        if !run.changed {
            return Ok(());
        }
        let cf = self.cf(CF_PARTS)?;
        let mut wb = WriteBatch::default();
        if let (Some(first), Some(last)) = (run.first, run.last) {
            wb.delete_range_cf(
                cf,
                partition::series_prefix(RAW, p, first),
                partition::series_prefix(RAW, p, last + 1),
            );
            for (k, v) in &run.chunks {
                wb.put_cf(cf, k, v);
            }
        }
        // Statistics go after the chunks, in the same write.
        for (k, v) in &run.extra {
            wb.put(k, v);
        }
        if sync {
            self.db.write_opt(wb, &self.sync)
        } else {
            self.db.write(wb)
        }
        .map_err(|e| self.err(e))
    }

    /// Moves chunks of the layout before time partitions (`chunks` column family) into
    /// partitions, in writes of a few MiB each (chunk by chunk deleted with its
    /// replacement, so an interrupted move goes on at the next open). Logs progress.
    ///
    /// # Errors
    /// RocksDB fails, or a chunk does not decode.
    pub(crate) fn migrate_unpartitioned(&self) -> Result<(), StorageError> {
        let Some(old) = self.db.cf_handle(CF_CHUNKS) else {
            return Ok(());
        };
        let mut it = self.db.raw_iterator_cf(old);
        it.seek_to_first();
        if !it.valid() {
            return Ok(());
        }
        tracing::info!("moving chunks into time partitions (once, after an upgrade)");
        let parts = self.cf(CF_PARTS)?;
        let mut wb = WriteBatch::default();
        let mut added: BTreeMap<i32, PartitionStats> = BTreeMap::new();
        let mut moved = 0u64;
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            // Old key: series id · max ts · min ts · record (8 bytes each).
            if k.len() != 32 {
                return Err(self.damaged(format!("old chunk key of {} bytes", k.len())));
            }
            let series = u64::from_be_bytes(k[..8].try_into().unwrap_or_default());
            let record = u64::from_be_bytes(k[24..32].try_into().unwrap_or_default());
            let mut pts = vec![];
            decode_points(v, &mut pts)
                .map_err(|e| self.damaged(format!("old chunk of series {series}: {e}")))?;
            for run in
                pts.chunk_by(|a, b| partition::partition_of(a.ts) == partition::partition_of(b.ts))
            {
                let first = run[0].ts;
                wb.put_cf(
                    parts,
                    partition::chunk_key(RAW, series, first, run[run.len() - 1].ts, record),
                    encode_chunk(run),
                );
                let st = added.entry(partition::partition_of(first)).or_default();
                st.samples += run.len() as u64;
                st.chunks += 1;
            }
            wb.delete_cf(old, k);
            moved += 1;
            if wb.size_in_bytes() > 4 << 20 {
                self.write_migrated(&mut wb, &mut added)?;
                tracing::info!(chunks = moved, "moving chunks into time partitions");
            }
            it.next();
        }
        it.status().map_err(|e| self.err(e))?;
        self.write_migrated(&mut wb, &mut added)?;
        drop(it);
        self.db.compact_range_cf(old, None::<&[u8]>, None::<&[u8]>);
        *self.parts.write().unwrap_or_else(|p| p.into_inner()) = self.scan_partitions(RAW)?;
        tracing::info!(chunks = moved, "chunks moved into time partitions");
        Ok(())
    }

    fn write_migrated(
        &self,
        wb: &mut WriteBatch,
        added: &mut BTreeMap<i32, PartitionStats>,
    ) -> Result<(), StorageError> {
        for (&p, add) in added.iter() {
            let mut st = self.partition_stats(RAW, p)?;
            st.samples += add.samples;
            st.chunks += add.chunks;
            st.writes += 1;
            wb.put(PartitionStats::key(RAW, p), st.to_bytes());
        }
        added.clear();
        self.db
            .write_opt(std::mem::take(wb), &self.sync)
            .map_err(|e| self.err(e))
    }

    /// Reads the whole folder: every label set, wal record and chunk decodes; every chunk
    /// belongs to a known series, lies in its key's partition and matches its key's times;
    /// partition statistics agree with the chunks (their chunk counts; sample counts once
    /// merged). Calls `progress` with the chunks read so far every 100,000 chunks.
    ///
    /// A block of chunks that cannot be read (RocksDB reports a checksum mismatch, say) is
    /// a problem naming its resolution, day and the last series read before it; the check
    /// goes on with the next partition that has statistics.
    ///
    /// # Errors
    /// RocksDB fails to read the index or the wal (damage to chunks is reported in
    /// [`VerifyReport::problems`] instead).
    pub fn verify(&self, mut progress: impl FnMut(u64)) -> Result<VerifyReport, StorageError> {
        let mut r = VerifyReport::default();
        let problem = |r: &mut VerifyReport, p: String| {
            if r.problems.len() < MAX_PROBLEMS {
                r.problems.push(p);
            }
        };
        let mut known = std::collections::HashSet::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_SERIES)?, IteratorMode::Start)
        {
            let (k, v) = item.map_err(|e| self.err(e))?;
            r.series += 1;
            match <[u8; 8]>::try_from(&k[..]) {
                Ok(b) => {
                    known.insert(u64::from_be_bytes(b));
                }
                Err(_) => problem(&mut r, format!("series key of {} bytes", k.len())),
            }
            if crate::encoding::labels_from_bytes(&v).is_none() {
                problem(
                    &mut r,
                    format!("label set of series key {k:?} does not decode"),
                );
            }
        }
        for item in self.db.iterator_cf(self.cf(CF_WAL)?, IteratorMode::Start) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            r.wal_records += 1;
            match wal::decode_record(&v) {
                Some(pts) => {
                    if let Some((s, _)) = pts.iter().find(|(s, _)| !known.contains(s)) {
                        problem(
                            &mut r,
                            format!("wal record {k:?} refers to unknown series {s}"),
                        );
                    }
                }
                None => problem(&mut r, format!("wal record {k:?} does not decode")),
            }
        }
        let mut counted: BTreeMap<(u8, i32), PartitionStats> = BTreeMap::new();
        // Per rollup partition: made from its raw day as written now.
        let mut rolled_from: BTreeMap<(u8, i32), bool> = BTreeMap::new();
        let mut read = 0u64;
        let mut it = self.db.raw_iterator_cf(self.cf(CF_PARTS)?);
        it.seek_to_first();
        // The partition being read, and the last series read whole in it.
        let mut at: Option<(u8, i32, Option<crate::SeriesId>)> = None;
        loop {
            if !it.valid() {
                let Err(e) = it.status() else { break };
                // A block that cannot be read (a checksum that does not match, a file cut
                // short): named by day and series, and the next partition read on. Before
                // any key was read, it is in the first partition.
                if at.is_none() {
                    at = self
                        .stats_partition_from(0, i32::MIN)?
                        .map(|(res, p)| (res, p, None));
                }
                let place = match at {
                    Some((res, p, Some(s))) => {
                        format!("{} day {} after series {s}", res_name(res), day_name(p))
                    }
                    Some((res, p, None)) => format!("{} day {}", res_name(res), day_name(p)),
                    None => "the first partition".to_string(),
                };
                problem(
                    &mut r,
                    format!(
                        "chunks of {place} cannot be read ({e}); queries over that day fail \
                         until the folder is restored from a copy"
                    ),
                );
                r.unreadable += 1;
                // On with the partition after it that has statistics.
                let Some((ar, ap, _)) = at else { break };
                let Some(after) = ap.checked_add(1) else {
                    break;
                };
                let Some((res, p)) = self.stats_partition_from(ar, after)? else {
                    break;
                };
                at = Some((res, p, None));
                it.seek(partition::prefix(res, p));
                continue;
            }
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            let (k, v) = (k.to_vec(), v.to_vec());
            it.next();
            read += 1;
            if read.is_multiple_of(100_000) {
                progress(read);
            }
            let Some(c) = partition::parse(&k) else {
                problem(&mut r, format!("chunk key {k:?} is not a chunk key"));
                continue;
            };
            at = Some((c.res, c.part, Some(c.series)));
            let what = if c.res == RAW {
                "chunk"
            } else {
                "rollup chunk"
            };
            if c.res != RAW {
                r.rollup_chunks += 1;
            }
            let st = counted.entry((c.res, c.part)).or_default();
            st.chunks += 1;
            // A chunk's first and last times: its points', or its buckets' starts.
            let (n, span) = if c.res == RAW {
                let mut pts = vec![];
                if let Err(e) = decode_chunk(&v, &mut pts) {
                    problem(
                        &mut r,
                        format!("chunk of series {} in partition {}: {e}", c.series, c.part),
                    );
                    continue;
                }
                (
                    pts.len(),
                    pts.first().zip(pts.last()).map(|(a, b)| (a.ts, b.ts)),
                )
            } else if let Some(n) = raw_ref(&v) {
                // Refers to the day's raw points: they must be there and make its buckets.
                let pts = match self.raw_points_of(c.part, c.series) {
                    Ok(pts) if !pts.is_empty() => pts,
                    Ok(_) => {
                        problem(
                            &mut r,
                            format!(
                                "{} rollup chunk of series {} in partition {} refers to raw \
                                 points that are gone",
                                res_name(c.res),
                                c.series,
                                c.part
                            ),
                        );
                        continue;
                    }
                    Err(e) => {
                        problem(&mut r, e.to_string());
                        continue;
                    }
                };
                // Points written since the day was rolled up may make other buckets,
                // until the next pass makes them again: then only the count written is
                // checked against the statistics.
                let fresh = *rolled_from.entry((c.res, c.part)).or_insert_with(|| {
                    let written = |res| self.partition_stats(res, c.part).map(|s| s.writes);
                    matches!((written(c.res), written(RAW)), (Ok(a), Ok(b)) if a == b)
                });
                if !fresh {
                    st.samples += n;
                    continue;
                }
                let b = buckets_of(&pts, res_ms(c.res));
                if b.len() as u64 != n {
                    problem(
                        &mut r,
                        format!(
                            "{} rollup chunk of series {} in partition {} counts {n} buckets, \
                             its raw points make {}",
                            res_name(c.res),
                            c.series,
                            c.part,
                            b.len()
                        ),
                    );
                }
                (
                    b.len(),
                    b.first().zip(b.last()).map(|(a, z)| (a.start, z.start)),
                )
            } else {
                match decode_rollup(&v, res_ms(c.res), c.min_ts) {
                    Ok(b) => (
                        b.len(),
                        b.first().zip(b.last()).map(|(a, z)| (a.start, z.start)),
                    ),
                    Err(e) => {
                        problem(
                            &mut r,
                            format!(
                                "{} rollup chunk of series {} in partition {}: {e}",
                                res_name(c.res),
                                c.series,
                                c.part
                            ),
                        );
                        continue;
                    }
                }
            };
            if c.res == RAW {
                r.samples += n as u64;
                r.chunks += 1;
            }
            st.samples += n as u64;
            if !known.contains(&c.series) {
                problem(&mut r, format!("{what} of unknown series {}", c.series));
            }
            let Some((a, b)) = span else {
                problem(&mut r, format!("empty {what} of series {}", c.series));
                continue;
            };
            if a != c.min_ts || b != c.max_ts {
                problem(
                    &mut r,
                    format!(
                        "{what} of series {} holds {a}..{b} ms, its key says {}..{}",
                        c.series, c.min_ts, c.max_ts
                    ),
                );
            }
            if partition::partition_of(a) != c.part || partition::partition_of(b) != c.part {
                problem(
                    &mut r,
                    format!(
                        "{what} of series {} crosses out of its partition {}",
                        c.series, c.part
                    ),
                );
            }
        }
        for (&(res, p), c) in &counted {
            let st = self.partition_stats(res, p)?;
            let name = res_name(res);
            if st.chunks != c.chunks {
                problem(
                    &mut r,
                    format!(
                        "{name} partition {p}: statistics count {} chunks, {} found",
                        st.chunks, c.chunks
                    ),
                );
            } else if st.chunks == st.merged_chunks && st.samples != c.samples {
                problem(
                    &mut r,
                    format!(
                        "{name} partition {p}: statistics count {} samples, {} found",
                        st.samples, c.samples
                    ),
                );
            }
        }
        Ok(r)
    }
}

/// Widens the span of days `span` (first, last) to take in day `p`.
fn widen(span: &mut Option<(i32, i32)>, p: i32) {
    *span = Some(span.map_or((p, p), |(a, b)| (a.min(p), b.max(p))));
}

/// Partition `p`'s day as `YYYY-MM-DD` (UTC), for progress lines and problems.
pub(crate) fn day_name(p: i32) -> String {
    let (y, m, d) = outpost_shared::units::civil_from_days(i64::from(p));
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::PARTITION_MS;
    use crate::testutil::{all_points, tmp_dir, write, write_points};
    use outpost_shared::codec::encode_points;

    const DAY: i64 = PARTITION_MS;

    /// The raw partitions, as [`Storage::partitions`] lists them.
    fn raw_parts(s: &Storage) -> Vec<PartitionStatus> {
        s.partitions()
            .unwrap()
            .into_iter()
            .filter(|p| p.resolution == "raw")
            .collect()
    }

    /// A value in `[0, 10486)` with two decimals that neither the chunk coding nor zstd can
    /// shrink much (splitmix64's finalizer of `k`).
    fn noise(k: u64) -> f64 {
        let mut x = k.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((x ^ (x >> 31)) >> 44) as f64 / 100.0
    }

    /// Ten days of one point a minute for `name`, compacted every hour (as the head is
    /// compacted every few seconds, a partition ends up with many chunks per series).
    /// Values are noisy, so that compressed files still hold about what the days hold.
    fn ten_days(s: &Storage, name: &str, day0: i64) -> u64 {
        let mut n = 0;
        for hour in 0..240 {
            let pts: Vec<(i64, f64)> = (0..60)
                .map(|m| {
                    let ts = day0 * DAY + hour * 3_600_000 + m * 60_000;
                    (ts, noise((hour * 60 + m) as u64))
                })
                .collect();
            n += pts.len() as u64;
            write_points(s, name, &pts);
            s.compact_head().unwrap();
        }
        n
    }

    /// [`ten_days`], merged and flushed to files.
    fn merged_ten_days(s: &Storage, name: &str, day0: i64) {
        ten_days(s, name, day0);
        s.maintain((day0 + 11) * DAY, &RetentionPolicy::default())
            .unwrap();
        s.db.flush_cf(s.cf(CF_PARTS).unwrap()).unwrap();
    }

    #[test]
    fn merging_keeps_every_point_and_leaves_one_chunk_per_series_and_day() {
        let dir = tmp_dir("merge");
        let s = Storage::open(&dir).unwrap();
        let n = ten_days(&s, "m", 100);
        // A late point rewrites one already there; the newest write wins before and after.
        write(&s, "m", 103 * DAY + 60_000);
        s.compact_head().unwrap();
        let before = all_points(&s, "m");
        assert_eq!(before.len() as u64, n);
        let parts = raw_parts(&s);
        assert_eq!(parts.len(), 10);
        assert_eq!(parts[3].stats.chunks, 25);
        // The last day is open until its end plus the grace: not merged yet.
        let r = s.maintain(110 * DAY, &RetentionPolicy::default()).unwrap();
        assert_eq!(
            (r.merged_partitions, r.chunks_before, r.chunks_after),
            (9, 217, 9)
        );
        let r = s
            .maintain(110 * DAY + MERGE_AFTER_MS, &RetentionPolicy::default())
            .unwrap();
        assert_eq!(
            (r.merged_partitions, r.chunks_before, r.chunks_after),
            (1, 24, 1)
        );
        assert_eq!(all_points(&s, "m"), before);
        assert_eq!(before[3 * 1440 + 1].value, 1.0, "the late write won");
        let parts = raw_parts(&s);
        assert!(
            parts
                .iter()
                .all(|p| p.stats.chunks == 1 && p.stats.samples == 1440)
        );
        // Nothing new: nothing to merge.
        let r = s.maintain(200 * DAY, &RetentionPolicy::default()).unwrap();
        assert_eq!(r.merged_partitions, 0);
        let v = s.verify(|_| {}).unwrap();
        assert_eq!((v.chunks, v.samples, v.problems.len()), (10, n, 0), "{v:?}");
        drop(s);
        let s = Storage::open(&dir).unwrap();
        assert_eq!(all_points(&s, "m"), before, "after reopening");
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Bytes of the files of column family `cf` in the current tree (not those an older
    /// version, held by a reader, still keeps).
    fn cf_file_bytes(s: &Storage, cf: &str) -> u64 {
        s.db.property_int_value_cf(s.cf(cf).unwrap(), "rocksdb.live-sst-files-size")
            .unwrap()
            .unwrap_or(0)
    }

    #[test]
    fn a_small_store_settles_its_days_in_compressed_files() {
        let dir = tmp_dir("settle-small");
        let s = Storage::open(&dir).unwrap();
        // Forty series with the same day of values: their chunks differ only in their
        // keys, which zstd sees through and the chunk coding does not.
        let pts: Vec<(i64, f64)> = (0..1440)
            .map(|m| (20 * DAY + m * 60_000, ((m * 2654435761) % 100_000) as f64))
            .collect();
        for i in 0..40 {
            write_points(&s, &format!("s{i}"), &pts);
        }
        s.compact_head().unwrap();
        s.maintain(22 * DAY, &RetentionPolicy::default()).unwrap();
        let mut values = 0;
        let mut it = s.db.raw_iterator_cf(s.cf(CF_PARTS).unwrap());
        it.seek(partition::prefix(RAW, 20));
        while let Some(v) = it.value().filter(|_| it.key().is_some_and(|k| k[0] == RAW)) {
            values += v.len() as u64;
            it.next();
        }
        let files = cf_file_bytes(&s, CF_PARTS);
        let level0 =
            s.db.property_int_value_cf(s.cf(CF_PARTS).unwrap(), "rocksdb.num-files-at-level0")
                .unwrap();
        assert_eq!(level0, Some(0));
        assert!(
            files * 4 < values,
            "{files} bytes of files for {values} bytes of raw chunks"
        );
        drop(it);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn wal_records_moved_into_chunks_leave_the_disk() {
        let dir = tmp_dir("settle-wal");
        let s = Storage::open(&dir).unwrap();
        let pts = |from: i64| -> Vec<(i64, f64)> {
            (0..1000)
                .map(|m| {
                    (
                        20 * DAY + (from + m) * 1000,
                        (m * 7919 % 1000) as f64 / 10.0,
                    )
                })
                .collect()
        };
        for i in 0..600 {
            write_points(&s, &format!("s{i}"), &pts(0));
        }
        // In files before the head is compacted (a flush after the range delete would
        // leave the deleted records out).
        s.db.flush_cf(s.cf(CF_WAL).unwrap()).unwrap();
        s.compact_head().unwrap();
        // Records still in the head stay, wherever their file is.
        write_points(&s, "s0", &pts(1000));
        s.db.flush_cf(s.cf(CF_WAL).unwrap()).unwrap();
        let before = cf_file_bytes(&s, CF_WAL);
        assert!(before >= LOG_SETTLE_BYTES, "{before} bytes of wal files");
        s.maintain(20 * DAY + 3_600_000, &RetentionPolicy::default())
            .unwrap();
        let after = cf_file_bytes(&s, CF_WAL);
        assert!(
            after < before / 20,
            "{after} bytes of wal files, {before} before"
        );
        drop(s);
        let s = Storage::open(&dir).unwrap();
        assert_eq!(all_points(&s, "s0").len(), 2000);
        assert_eq!(all_points(&s, "s599").len(), 1000);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn retention_deletes_whole_days_and_returns_the_space() {
        let dir = tmp_dir("retention");
        let s = Storage::open(&dir).unwrap();
        merged_ten_days(&s, "r", 100);
        // Rollups first (a pass keeping everything), compacted, so what follows measures
        // the deletion alone.
        s.maintain(110 * DAY - 1, &RetentionPolicy::default())
            .unwrap();
        let cf = s.cf(CF_PARTS).unwrap();
        s.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        let size_before = cf_file_bytes(&s, CF_PARTS);
        // The bytes of the raw days that go, keys and values (RocksDB's own estimate of a
        // span's size is in whole blocks, larger than these days).
        let old_raw = |s: &Storage| {
            let (a, b) = (partition::prefix(RAW, 100), partition::prefix(RAW, 105));
            let mut it = s.db.raw_iterator_cf(s.cf(CF_PARTS).unwrap());
            let mut n = 0;
            it.seek(a);
            while let (Some(k), Some(v)) = (it.key(), it.value())
                && k < &b[..]
            {
                n += k.len() + v.len();
                it.next();
            }
            n as u64
        };
        let old_before = old_raw(&s);
        assert!(old_before > 5 * 1440, "{old_before} bytes");
        // At the end of day 109, with a retention of 4 days: days up to 104 go (day 105's
        // last ms is within the horizon).
        let now = 110 * DAY - 1;
        let r = s
            .maintain(
                now,
                &RetentionPolicy {
                    retention_ms: Some(4 * DAY + 1),
                    max_bytes: None,
                    ..Default::default()
                },
            )
            .unwrap();
        let gone: Vec<i64> = r.deleted.iter().map(|d| d.start_ms / DAY).collect();
        assert_eq!(gone, vec![100, 101, 102, 103, 104]);
        assert!(
            r.deleted
                .iter()
                .all(|d| d.reason == DeleteReason::Retention && d.stats.samples == 1440)
        );
        // The deleted days were rolled up first: each 5-minute bucket's last point shows.
        let pts = all_points(&s, "r");
        let raw = pts.partition_point(|p| p.ts < 105 * DAY);
        assert_eq!((raw, pts.len() - raw), (5 * 288, 5 * 1440));
        assert_eq!(pts[raw].ts, 105 * DAY);
        // Gone from reads and from the files: the files shrank by a good part of what
        // the days held (compressed; a range delete alone would have grown them).
        let size_after = cf_file_bytes(&s, CF_PARTS);
        assert!(
            old_raw(&s) == 0 && size_after + old_before / 4 < size_before,
            "space returned: days held {old_before} bytes, files {size_before} → {size_after}"
        );
        drop(s);
        let s = Storage::open(&dir).unwrap();
        assert_eq!(all_points(&s, "r").len(), 5 * 288 + 5 * 1440);
        let raw = |s: &Storage| {
            s.partitions()
                .unwrap()
                .into_iter()
                .filter(|p| p.resolution == "raw")
                .count()
        };
        assert_eq!(raw(&s), 5);
        assert!(s.verify(|_| {}).unwrap().problems.is_empty());
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_size_cap_deletes_the_oldest_days_but_never_the_newest() {
        let dir = tmp_dir("cap");
        let s = Storage::open(&dir).unwrap();
        merged_ten_days(&s, "c", 100);
        let cap = RetentionPolicy {
            retention_ms: None,
            max_bytes: Some(1),
            ..Default::default()
        };
        let r = s.maintain(109 * DAY + 3_600_000, &cap).unwrap();
        // The oldest days first, each day's rollups before its raw points; every day but
        // the newest raw one.
        let got: Vec<(i64, &str)> = r
            .deleted
            .iter()
            .map(|d| (d.start_ms / DAY, d.resolution))
            .collect();
        let mut want: Vec<(i64, &str)> = (100..110)
            .flat_map(|d| [(d, "1h"), (d, "5m"), (d, "raw")])
            .collect();
        want.pop();
        assert_eq!(got, want);
        assert!(r.deleted.iter().all(|d| d.reason == DeleteReason::MaxBytes));
        let parts = raw_parts(&s);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].start_ms, 109 * DAY);
        // Writing goes on.
        write(&s, "c", 110 * DAY);
        assert_eq!(all_points(&s, "c").len(), 1441);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A cap that half the store fits under: the oldest days go at every resolution
    /// (oldest time ranges first), the newest stay at every resolution, and the store ends
    /// under the cap.
    #[test]
    fn the_size_cap_deletes_the_oldest_time_ranges_at_every_resolution() {
        let dir = tmp_dir("cap-half");
        let s = Storage::open(&dir).unwrap();
        for k in 0..8 {
            merged_ten_days(&s, &format!("c{k}"), 100);
        }
        // Half of what the days take (the rest of the store, write buffers and the
        // index, is not days).
        let before = s.size_bytes();
        let days: u64 = s.partitions().unwrap().iter().map(|p| p.bytes).sum();
        let limit = before - days / 2;
        let cap = RetentionPolicy {
            retention_ms: None,
            max_bytes: Some(limit),
            ..Default::default()
        };
        let r = s.maintain(109 * DAY + 3_600_000, &cap).unwrap();
        assert!(s.size_bytes() <= limit, "{} > {limit}", s.size_bytes());
        let rank = |res: &str| ["1h", "5m", "raw"].iter().position(|&r| r == res).unwrap();
        let gone: Vec<(i64, usize)> = r
            .deleted
            .iter()
            .map(|d| (d.start_ms / DAY, rank(d.resolution)))
            .collect();
        let kept: Vec<(i64, usize)> = s
            .partitions()
            .unwrap()
            .iter()
            .map(|p| (p.start_ms / DAY, rank(p.resolution)))
            .collect();
        assert!(!gone.is_empty() && !kept.is_empty());
        let newest_gone = gone.iter().max().unwrap();
        let oldest_kept = kept.iter().min().unwrap();
        assert!(newest_gone < oldest_kept, "{gone:?} / {kept:?}");
        // Every resolution keeps the newest days.
        for res in 0..3 {
            assert!(kept.contains(&(109, res)), "{kept:?}");
        }
        assert!(s.verify(|_| {}).unwrap().problems.is_empty());
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The size the cap is held to is what the folder's tables and write-ahead logs take on
    /// disk: points not yet flushed count by their log, not by the write buffers' arenas.
    #[test]
    fn the_size_counts_the_write_ahead_log_on_disk() {
        let dir = tmp_dir("size-log");
        let s = Storage::open(&dir).unwrap();
        let pts: Vec<(i64, f64)> = (0..20_000).map(|i| (i * 1000, noise(i as u64))).collect();
        write_points(&s, "w", &pts);
        let on_disk = |ext: &str| -> u64 {
            std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == ext))
                .map(|p| std::fs::metadata(p).unwrap().len())
                .sum()
        };
        let logs = on_disk("log");
        assert!(logs > 100_000, "{logs} bytes of log");
        assert_eq!(s.size_bytes(), on_disk("sst") + logs);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A sample stamped days ahead makes a raw day newer than today's: the cap still keeps
    /// today's (it used to delete it as the oldest but one, and the floor it left behind
    /// dropped every sample of the days before the stray one).
    #[test]
    fn the_size_cap_keeps_today_beside_a_day_ahead() {
        let dir = tmp_dir("cap-ahead");
        let s = Storage::open(&dir).unwrap();
        merged_ten_days(&s, "c", 100);
        write(&s, "c", 115 * DAY);
        s.compact_head().unwrap();
        let cap = RetentionPolicy {
            retention_ms: None,
            max_bytes: Some(1),
            ..Default::default()
        };
        let r = s.maintain(109 * DAY + 3_600_000, &cap).unwrap();
        let raw: Vec<i64> = r
            .deleted
            .iter()
            .filter(|d| d.resolution == "raw")
            .map(|d| d.start_ms / DAY)
            .collect();
        assert_eq!(raw, (100..109).collect::<Vec<i64>>());
        let kept: Vec<i64> = raw_parts(&s).iter().map(|p| p.start_ms / DAY).collect();
        assert_eq!(kept, [109, 115]);
        assert_eq!(s.accepts_from_ms(), Some(109 * DAY));
        write(&s, "c", 109 * DAY + 7_200_000);
        assert_eq!(s.samples_too_old(), 0);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn chunks_of_the_layout_before_partitions_move_at_open() {
        let dir = tmp_dir("migrate");
        let s = Storage::open(&dir).unwrap();
        write(&s, "old", 5 * DAY);
        let id = s
            .series_id(&outpost_shared::Labels::metric("old", []))
            .unwrap();
        // A chunk as the earlier layout wrote it: series · max · min · record, spanning two
        // days.
        let pts = [
            Point {
                ts: 2 * DAY - 10,
                value: 1.0,
            },
            Point {
                ts: 2 * DAY + 10,
                value: 2.0,
            },
        ];
        let mut k = id.to_be_bytes().to_vec();
        k.extend_from_slice(&crate::encoding::sortable(pts[1].ts));
        k.extend_from_slice(&crate::encoding::sortable(pts[0].ts));
        k.extend_from_slice(&1u64.to_be_bytes());
        s.db.put_cf(s.cf(CF_CHUNKS).unwrap(), k, encode_points(&pts))
            .unwrap();
        drop(s);
        let s = Storage::open(&dir).unwrap();
        let got = all_points(&s, "old");
        assert_eq!(got.len(), 3);
        assert_eq!(&got[..2], &pts);
        assert_eq!(raw_parts(&s).len(), 2, "split at the day's end");
        let mut it = s.db.raw_iterator_cf(s.cf(CF_CHUNKS).unwrap());
        it.seek_to_first();
        assert!(!it.valid(), "the old column family is empty");
        drop(it);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A block of the chunk files whose bytes were damaged on disk, at the start of the
    /// largest table file (where a day's first key is) or in its middle: the folder still
    /// opens, `verify` names the day it could not read and reads the other days on, and a
    /// read of the damaged day fails with RocksDB's message while the others answer.
    #[test]
    fn verify_reads_on_past_a_block_that_cannot_be_read() {
        for at_start in [true, false] {
            let dir = tmp_dir("verify-block");
            let s = Storage::open(&dir).unwrap();
            let day0 = 100;
            for k in 0..40u64 {
                let pts: Vec<(i64, f64)> = (0..14_400)
                    .map(|m| (day0 * DAY + m * 60_000, noise(k * 100_000 + m as u64)))
                    .collect();
                write_points(&s, &format!("m{k}"), &pts);
            }
            s.compact_head().unwrap();
            s.maintain((day0 + 11) * DAY, &RetentionPolicy::default())
                .unwrap();
            s.db.flush_cf(s.cf(CF_PARTS).unwrap()).unwrap();
            let whole = s.verify(|_| {}).unwrap();
            assert!(whole.problems.is_empty(), "{:?}", whole.problems);
            assert_eq!(whole.chunks, 400);
            let days = raw_parts(&s).len();
            drop(s);
            let sst = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "sst"))
                .max_by_key(|p| std::fs::metadata(p).unwrap().len())
                .unwrap();
            let mut bytes = std::fs::read(&sst).unwrap();
            let at = if at_start { 100 } else { bytes.len() / 2 };
            for b in &mut bytes[at..at + 64] {
                *b ^= 0x5a;
            }
            std::fs::write(&sst, &bytes).unwrap();
            let case = if at_start {
                "at the start"
            } else {
                "in the middle"
            };
            let s = Storage::open(&dir).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(raw_parts(&s).len(), days, "{case}: every day still listed");
            let v = s.verify(|_| {}).unwrap();
            assert!(v.unreadable >= 1, "{case}: {:?}", v.problems);
            assert!(
                v.problems[0].starts_with("chunks of ")
                    && v.problems[0].contains(" day 1970-04-")
                    && v.problems[0].contains("cannot be read (Corruption"),
                "{case}: {:?}",
                v.problems
            );
            // Read on past it: most days are whole.
            let (all, got) = (
                whole.chunks + whole.rollup_chunks,
                v.chunks + v.rollup_chunks,
            );
            assert!(got >= all / 2 && got < all, "{case}: {got} of {all} chunks");
            // A day no problem names answers whole; reading every day fails and says why.
            let ids: Vec<crate::SeriesId> = (0..40)
                .map(|k| {
                    s.series_id(&outpost_shared::Labels::metric(&format!("m{k}"), []))
                        .unwrap()
                })
                .collect();
            let sound = (day0..day0 + 10)
                .find(|&d| {
                    let name = format!(" day {}", day_name(d as i32));
                    !v.problems.iter().any(|p| p.contains(&name))
                })
                .unwrap();
            let read = |a: i64, b: i64| s.points_many(&ids, a, b, &mut |_| false);
            let day = read(sound * DAY, sound * DAY + DAY - 1).unwrap().unwrap();
            assert_eq!(day.iter().map(Vec::len).sum::<usize>(), 40 * 1440, "{case}");
            let (start, end) = (day0 * DAY, (day0 + 10) * DAY);
            let all = if v.problems[0].starts_with("chunks of raw ") {
                read(start, end).map(|_| ())
            } else {
                let res = if v.problems[0].starts_with("chunks of 5m ") {
                    R5M
                } else {
                    R1H
                };
                s.buckets_many(&ids, start, end, res_ms(res), &mut |_| false)
                    .map(|_| ())
            };
            let e = all.unwrap_err();
            assert!(e.to_string().contains("Corruption"), "{case}: {e}");
            drop(s);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn verify_names_a_damaged_chunk_and_a_chunk_of_an_unknown_series() {
        let dir = tmp_dir("verify");
        let s = Storage::open(&dir).unwrap();
        write(&s, "v", 1000);
        s.compact_head().unwrap();
        let cf = s.cf(CF_PARTS).unwrap();
        s.db.put_cf(
            cf,
            partition::chunk_key(RAW, 1, 2000, 2000, 9),
            [0xff, 0xff],
        )
        .unwrap();
        s.db.put_cf(
            cf,
            partition::chunk_key(RAW, 77, 3000, 3000, 9),
            encode_points(&[Point {
                ts: 3000,
                value: 1.0,
            }]),
        )
        .unwrap();
        let v = s.verify(|_| {}).unwrap();
        assert_eq!(v.problems.len(), 3, "{:?}", v.problems);
        assert!(v.problems[0].contains("chunk of series 1 in partition 0"));
        assert!(v.problems[1].contains("unknown series 77"));
        assert!(
            v.problems[2].contains("statistics count 1 chunks, 3 found"),
            "{:?}",
            v.problems
        );
        drop(s);
        // Read-only, beside nothing: the same answer.
        let ro = Storage::open_read_only(&dir).unwrap();
        assert_eq!(ro.verify(|_| {}).unwrap().problems.len(), 3);
        drop(ro);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
