//! [`Storage`]: opening the RocksDB folder, rebuilding the index and head, committing write
//! plans, and reading series back.

use crate::encoding::{labels_from_bytes, labels_to_bytes};
use crate::head::Head;
use crate::index::Index;
use crate::partition::{self, RAW};
use crate::plan::{SeriesSlot, WritePlan};
use crate::{SeriesId, chunks, wal};
use outpost_promql::{Matcher, StorageError as ReadError};
use outpost_shared::{Labels, Point};
use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch, WriteOptions};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub(crate) const CF_SERIES: &str = "series";
pub(crate) const CF_WAL: &str = "wal";
/// Chunks of data folders written before time partitions: moved into `parts` at open.
pub(crate) const CF_CHUNKS: &str = "chunks";
pub(crate) const CF_PARTS: &str = "parts";
pub(crate) const CF_FORWARD: &str = "forward";
/// Default column family: the first wal record id not yet used, kept by compaction.
pub(crate) const KEY_WAL_NEXT: &[u8] = b"wal_next";
/// Default column family: the first ms after the newest raw day deleted (i64 LE), below
/// which commits drop points (see [`Storage::accepts_from_ms`]).
pub(crate) const KEY_RAW_FLOOR: &[u8] = b"raw_floor";

/// How far ahead of the wall clock a point may be and still be stored: 2 days, as
/// VictoriaMetrics refuses rows stamped more than 2 days past its current time. A later
/// point (a host whose clock runs days ahead, a mistyped timestamp) is dropped on arrival
/// and counted in [`Storage::samples_too_new`]; stored, it would hold a raw day open until
/// its time came.
pub const MAX_FUTURE_MS: i64 = 2 * 86_400_000;

/// One caller metadata entry: key and value, as given in [`WritePlan::meta`].
pub type MetaEntry = (Vec<u8>, Vec<u8>);

/// Why the store cannot open or write.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// RocksDB failed (I/O error, full disk, lock held by another process…).
    #[error("storage at {dir}: {source}")]
    Db {
        /// The data folder.
        dir: String,
        /// RocksDB's error.
        #[source]
        source: rocksdb::Error,
    },
    /// A record in the folder does not decode; names which.
    #[error("storage at {dir}: damaged {what}")]
    Damaged {
        /// The data folder.
        dir: String,
        /// What does not decode, e.g. "wal record 17".
        what: String,
    },
}

/// The time-series store in one RocksDB folder. Column families:
/// - `series`: series id (u64 BE) → label set; loaded into the in-memory postings index.
/// - `wal`: record id (u64 BE) → the points of one committed batch; replayed into the head.
/// - `parts`: chunks by time partition, see [`crate::partition`] and [`crate::chunks`].
/// - `chunks`: chunks of folders written before partitions; emptied into `parts` at open.
/// - `forward`: while forwarding is on, a copy of every wal record stamped with its commit
///   time, kept until every destination has sent it (see [`crate::forward`]).
/// - `default`: `wal_next`, `raw_floor`, partition statistics (`pstat/`, see [`crate::maintain`]) and the
///   caller's metadata from [`WritePlan::meta`].
pub struct Storage {
    pub(crate) db: DB,
    pub(crate) dir: String,
    pub(crate) index: RwLock<Index>,
    pub(crate) head: RwLock<Head>,
    next_series: AtomicU64,
    next_wal: AtomicU64,
    pub(crate) sync: WriteOptions,
    /// Bumped by every compaction once its chunks are written and before its points leave
    /// the head (under the head's write lock): a chunk cursor older than this may miss them.
    pub(crate) chunk_generation: AtomicU64,
    /// Whether commits also write the forward log.
    pub(crate) forwarding: AtomicBool,
    /// The raw partitions that hold chunks.
    pub(crate) parts: RwLock<BTreeSet<i32>>,
    /// By resolution byte ([`crate::rollup::ROLLUPS`]; index 0, raw, unused): the days
    /// rolled up.
    pub(crate) rollups: RwLock<Vec<BTreeSet<i32>>>,
    /// Held by compaction and maintenance: they update partition statistics.
    pub(crate) maint: Mutex<()>,
    /// The first ms after the newest raw day deleted (`i64::MIN` before any), as kept in
    /// `raw_floor`.
    pub(crate) deleted_before: AtomicI64,
    /// The raw retention horizon of the last maintenance pass (`i64::MIN` before one or
    /// without a retention).
    pub(crate) retention_floor: AtomicI64,
    /// Points dropped by commits and compactions for being older than
    /// [`Storage::accepts_from_ms`].
    too_old: AtomicU64,
    /// Points dropped by commits for being later than [`Storage::accepts_until_ms`].
    too_new: AtomicU64,
    /// Raw days whose merge or rollup found a damaged chunk since the store opened: left
    /// alone by maintenance.
    pub(crate) damaged_days: Mutex<BTreeSet<i32>>,
}

impl Storage {
    /// Opens (or creates) the store in `dir`, loads the index and replays the wal into the
    /// head.
    ///
    /// # Errors
    /// RocksDB cannot open the folder, or a record does not decode.
    pub fn open(dir: &Path) -> Result<Storage, StorageError> {
        let d = dir.display().to_string();
        let err = |source| StorageError::Db {
            dir: d.clone(),
            source,
        };
        let mut o = Options::default();
        o.create_if_missing(true);
        o.create_missing_column_families(true);
        o.set_max_open_files(512);
        o.set_keep_log_file_num(4);
        // RocksDB's info log records every flush and compaction: on a few hosts' store its
        // files (one more kept at every open) outweighed the data. Warnings and errors stay.
        o.set_log_level(rocksdb::LogLevel::Warn);
        o.set_max_background_jobs(2);
        o.set_write_buffer_size(32 << 20);
        // RocksDB keeps a log file until every column family with data in it has flushed;
        // past this size it flushes the quiet ones, so old logs do not hold the disk.
        o.set_max_total_wal_size(32 << 20);
        // The MANIFEST grows a few hundred bytes a compaction: RocksDB's default of 4 MiB
        // allocated ahead was most of a few hosts' folder on disk.
        o.set_manifest_preallocation_size(64 << 10);
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let db = DB::open_cf_descriptors(&o, dir, cf_descriptors(&cache)).map_err(err)?;
        let s = Self::from_db(db, d)?;
        s.migrate_unpartitioned()?;
        Ok(s)
    }

    /// The id of the first wal record not yet compacted into chunks (every record below it
    /// is deleted); `None` before the first head compaction.
    ///
    /// # Errors
    /// RocksDB fails to read.
    pub(crate) fn wal_next(&self) -> Result<Option<u64>, StorageError> {
        Ok(self
            .db
            .get(KEY_WAL_NEXT)
            .map_err(|e| self.err(e))?
            .and_then(|v| v.as_slice().try_into().ok().map(u64::from_le_bytes)))
    }

    /// Opens the store in `dir` for reading only, beside a running aggregator if need be:
    /// nothing is written, nothing migrated (chunks of an older layout are not read).
    ///
    /// # Errors
    /// RocksDB cannot open the folder, or a record does not decode.
    pub fn open_read_only(dir: &Path) -> Result<Storage, StorageError> {
        let d = dir.display().to_string();
        let err = |source| StorageError::Db {
            dir: d.clone(),
            source,
        };
        let o = Options::default();
        let present = DB::list_cf(&o, dir).map_err(err)?;
        if !present.iter().any(|c| c == CF_PARTS) {
            return Err(StorageError::Damaged {
                dir: d,
                what: "layout: written by an older version without time partitions; start the \
                       aggregator on it once to convert it"
                    .into(),
            });
        }
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let cfs = cf_descriptors(&cache)
            .into_iter()
            .filter(|c| present.iter().any(|p| p == c.name()));
        let db = DB::open_cf_descriptors_read_only(&o, dir, cfs, false).map_err(err)?;
        Self::from_db(db, d)
    }

    fn from_db(db: DB, d: String) -> Result<Storage, StorageError> {
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        let s = Storage {
            db,
            dir: d.clone(),
            index: RwLock::default(),
            head: RwLock::default(),
            next_series: AtomicU64::new(1),
            next_wal: AtomicU64::new(1),
            sync,
            chunk_generation: AtomicU64::new(0),
            forwarding: AtomicBool::new(false),
            parts: RwLock::default(),
            rollups: RwLock::default(),
            maint: Mutex::new(()),
            deleted_before: AtomicI64::new(i64::MIN),
            retention_floor: AtomicI64::new(i64::MIN),
            too_old: AtomicU64::new(0),
            too_new: AtomicU64::new(0),
            damaged_days: Mutex::default(),
        };
        s.load()?;
        Ok(s)
    }

    pub(crate) fn err(&self, source: rocksdb::Error) -> StorageError {
        StorageError::Db {
            dir: self.dir.clone(),
            source,
        }
    }

    pub(crate) fn damaged(&self, what: String) -> StorageError {
        StorageError::Damaged {
            dir: self.dir.clone(),
            what,
        }
    }

    pub(crate) fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StorageError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| self.damaged(format!("column family {name} missing")))
    }

    fn load(&self) -> Result<(), StorageError> {
        let mut index = Index::default();
        let mut max_sid = 0;
        for item in self
            .db
            .iterator_cf(&self.cf(CF_SERIES)?, IteratorMode::Start)
        {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let id = u64::from_be_bytes(
                k[..]
                    .try_into()
                    .map_err(|_| self.damaged("series key".into()))?,
            );
            let l = labels_from_bytes(&v)
                .ok_or_else(|| self.damaged(format!("label set of series {id}")))?;
            max_sid = max_sid.max(id);
            index.insert(id, l);
        }
        self.next_series.store(max_sid + 1, Ordering::Relaxed);
        if let Some(v) = self.db.get(KEY_RAW_FLOOR).map_err(|e| self.err(e))? {
            let floor = v
                .as_slice()
                .try_into()
                .map(i64::from_le_bytes)
                .map_err(|_| self.damaged("raw_floor".into()))?;
            self.deleted_before.store(floor, Ordering::Relaxed);
        }
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = index;

        let mut wal_next = self.wal_next()?.unwrap_or(1);
        let mut head = Head::default();
        let mut records = 0u64;
        for item in self.db.iterator_cf(&self.cf(CF_WAL)?, IteratorMode::Start) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let id = u64::from_be_bytes(
                k[..]
                    .try_into()
                    .map_err(|_| self.damaged("wal key".into()))?,
            );
            let pts =
                wal::decode_record(&v).ok_or_else(|| self.damaged(format!("wal record {id}")))?;
            for (sid, p) in pts {
                head.active.entry(sid).or_default().push(p);
                head.active_points += 1;
            }
            head.last_wal = id;
            wal_next = wal_next.max(id + 1);
            records += 1;
        }
        if records > 0 {
            tracing::info!(
                records,
                points = head.active_points,
                "replayed the ingest log into the head"
            );
        }
        self.next_wal.store(wal_next, Ordering::Relaxed);
        *self.head.write().unwrap_or_else(|p| p.into_inner()) = head;
        *self.parts.write().unwrap_or_else(|p| p.into_inner()) = self.scan_partitions(RAW)?;
        let mut rollups = vec![BTreeSet::new()];
        let raw_parts = self.parts.read().unwrap_or_else(|p| p.into_inner()).clone();
        for (res, _, _) in crate::rollup::ROLLUPS {
            // A day whose rollup was cut short has chunks but no statistics: not done. One
            // written since it was rolled up is read from its raw points until it is
            // rolled up again.
            let mut done = BTreeSet::new();
            for p in self.scan_partitions(res)? {
                if !self.rollup_on_disk(res, p)? {
                    continue;
                }
                let writes = self.partition_stats(res, p)?.writes;
                let stale = raw_parts.contains(&p)
                    && writes != crate::maintain::PartitionStats::SEALED
                    && writes != self.partition_stats(RAW, p)?.writes;
                if !stale {
                    done.insert(p);
                }
            }
            rollups.push(done);
        }
        *self.rollups.write().unwrap_or_else(|p| p.into_inner()) = rollups;
        let head_days: BTreeSet<i32> = self
            .head
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .active
            .values()
            .flatten()
            .map(|p| partition::partition_of(p.ts))
            .collect();
        self.rollups_out_of_date(&head_days);
        Ok(())
    }

    /// The partitions of resolution `res` that hold chunks: one seek per partition.
    ///
    /// Where a seek lands in a block that cannot be read (damaged on disk: a checksum
    /// that does not match), the partitions are taken from their statistics up to the next
    /// one that reads, and the damage is logged with the day it hides: the store still
    /// opens, and only queries over that day fail (`outpost-aggregator tsdb --verify` lists
    /// every such block).
    ///
    /// # Errors
    /// RocksDB fails otherwise.
    pub(crate) fn scan_partitions(&self, res: u8) -> Result<BTreeSet<i32>, StorageError> {
        let mut out = BTreeSet::new();
        let mut it = self.db.raw_iterator_cf(self.cf(CF_PARTS)?);
        let mut from = i32::MIN;
        it.seek(partition::prefix(res, from));
        loop {
            if !it.valid() {
                let Err(e) = it.status() else { break };
                // The first partition with statistics from `from` on is the one the
                // damaged block is in, or comes before it.
                let Some((_, p)) = self
                    .stats_partition_from(res, from)?
                    .filter(|&(r, _)| r == res)
                else {
                    break;
                };
                tracing::error!(
                    resolution = crate::rollup::res_name(res),
                    day = %crate::maintain::day_name(p),
                    error = %e,
                    "chunks cannot be read from the data folder's files: queries over this \
                     day will fail; run `outpost-aggregator tsdb --verify` for every damaged \
                     block, and restore the folder from a copy"
                );
                out.insert(p);
                let Some(next) = p.checked_add(1) else { break };
                from = next;
                it.seek(partition::prefix(res, from));
                continue;
            }
            let Some((r, p)) = it.key().and_then(partition::parse_prefix) else {
                break;
            };
            if r != res {
                break;
            }
            out.insert(p);
            let Some(next) = p.checked_add(1) else { break };
            from = next;
            it.seek(partition::prefix(res, from));
        }
        Ok(out)
    }

    /// The first partition (resolution, day) with statistics at or after partition `from`
    /// of resolution `res`, in key order (the same order as the chunks'): where to go on
    /// when a block of chunks cannot be read. `None` past the last.
    pub(crate) fn stats_partition_from(
        &self,
        res: u8,
        from: i32,
    ) -> Result<Option<(u8, i32)>, StorageError> {
        let mut it = self.db.raw_iterator();
        it.seek(crate::maintain::PartitionStats::key(res, from));
        let found = it.key().and_then(|k| {
            k.strip_prefix(crate::maintain::PartitionStats::PREFIX)
                .and_then(partition::parse_prefix)
        });
        it.status().map_err(|e| self.err(e))?;
        Ok(found)
    }

    /// The raw partitions holding chunks that overlap `[start_ms, end_ms]`, oldest first.
    pub(crate) fn parts_between(&self, start_ms: i64, end_ms: i64) -> Vec<i32> {
        if start_ms > end_ms {
            return vec![];
        }
        self.parts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .range(partition::partition_of(start_ms)..=partition::partition_of(end_ms))
            .copied()
            .collect()
    }

    /// The id of the series with exactly these labels, if stored.
    pub fn series_id(&self, labels: &Labels) -> Option<SeriesId> {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_labels
            .get(labels)
            .copied()
    }

    /// Commits `plan` in one atomic, synced write and makes its points readable. Returns the
    /// ids of `plan.new_series`, in order. Commits must not run concurrently (one writer).
    ///
    /// # Errors
    /// The write failed: nothing of the plan was written, and the store is as before.
    pub fn commit(&self, plan: &WritePlan) -> Result<Vec<SeriesId>, StorageError> {
        self.commit_with(plan, true)
    }

    /// [`Storage::commit`], synced or not: an unsynced commit is visible at once and
    /// becomes durable with the next synced one (RocksDB syncs its log in order), or is
    /// lost with the machine before that.
    ///
    /// # Errors
    /// The write failed; nothing of the plan is applied.
    pub fn commit_with(&self, plan: &WritePlan, sync: bool) -> Result<Vec<SeriesId>, StorageError> {
        let cf_series = self.cf(CF_SERIES)?;
        let cf_wal = self.cf(CF_WAL)?;
        let forward = self.forwarding.load(Ordering::Relaxed);
        let cf_forward = self.cf(CF_FORWARD)?;
        let stamp = crate::forward::stamp_now();
        let next_series_before = self.next_series.load(Ordering::Relaxed);
        let next_wal_before = self.next_wal.load(Ordering::Relaxed);
        let mut wb = WriteBatch::default();
        let mut ids = Vec::with_capacity(plan.new_series.len());
        let mut created: Vec<(SeriesId, Labels)> = vec![];
        {
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            let mut pending: HashMap<&Labels, SeriesId> = HashMap::new();
            for l in &plan.new_series {
                let id = match index.by_labels.get(l).or_else(|| pending.get(l)) {
                    Some(&id) => id,
                    None => {
                        let id = self.next_series.fetch_add(1, Ordering::Relaxed);
                        wb.put_cf(&cf_series, id.to_be_bytes(), labels_to_bytes(l));
                        pending.insert(l, id);
                        created.push((id, l.clone()));
                        id
                    }
                };
                ids.push(id);
            }
        }
        let resolve = |s: SeriesSlot| match s {
            SeriesSlot::Existing(id) => id,
            SeriesSlot::New(n) => ids[n as usize],
        };
        let mut head_add: Vec<(SeriesId, Point)> = vec![];
        let mut last_wal = 0;
        let floor = self.accepts_from_ms().unwrap_or(i64::MIN);
        let ceiling = stamp.saturating_add(MAX_FUTURE_MS);
        let (mut too_old, mut too_new) = (0u64, 0u64);
        for r in &plan.records {
            let pts: Vec<(SeriesId, Point)> = r.iter().map(|&(s, p)| (resolve(s), p)).collect();
            let wal_id = self.next_wal.fetch_add(1, Ordering::Relaxed);
            let record = wal::encode_record(&pts);
            if forward {
                // Forwarded whole: the destination keeps what its own retention allows.
                let mut v = Vec::with_capacity(8 + record.len());
                v.extend_from_slice(&stamp.to_le_bytes());
                v.extend_from_slice(&record);
                wb.put_cf(cf_forward, wal_id.to_be_bytes(), v);
            }
            let old = pts.iter().filter(|(_, p)| p.ts < floor).count();
            let new = pts.iter().filter(|(_, p)| p.ts > ceiling).count();
            let (record, pts) = if old + new == 0 {
                (record, pts)
            } else {
                too_old += old as u64;
                too_new += new as u64;
                let kept: Vec<(SeriesId, Point)> = pts
                    .into_iter()
                    .filter(|(_, p)| (floor..=ceiling).contains(&p.ts))
                    .collect();
                (wal::encode_record(&kept), kept)
            };
            wb.put_cf(&cf_wal, wal_id.to_be_bytes(), record);
            last_wal = wal_id;
            head_add.extend(pts);
        }
        for (k, v) in &plan.meta {
            if v.is_empty() {
                wb.delete(k);
            } else {
                wb.put(k, v);
            }
        }
        let r = if sync {
            self.db.write_opt(wb, &self.sync)
        } else {
            self.db.write(wb)
        };
        if let Err(e) = r {
            // Nothing was written: put the counters back as they were.
            self.next_series
                .store(next_series_before, Ordering::Relaxed);
            self.next_wal.store(next_wal_before, Ordering::Relaxed);
            return Err(self.err(e));
        }
        if too_old > 0 {
            self.too_old.fetch_add(too_old, Ordering::Relaxed);
        }
        if too_new > 0 {
            self.too_new.fetch_add(too_new, Ordering::Relaxed);
        }
        if !created.is_empty() {
            let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
            for (s, l) in created {
                index.insert(s, l);
            }
        }
        if !head_add.is_empty() {
            let mut days = BTreeSet::new();
            let mut last = None;
            for (_, p) in &head_add {
                let d = partition::partition_of(p.ts);
                if last != Some(d) {
                    days.insert(d);
                    last = Some(d);
                }
            }
            self.rollups_out_of_date(&days);
            let mut head = self.head.write().unwrap_or_else(|p| p.into_inner());
            head.active_points += head_add.len();
            for (sid, p) in head_add {
                head.active.entry(sid).or_default().push(p);
            }
            head.last_wal = head.last_wal.max(last_wal);
        }
        Ok(ids)
    }

    /// The oldest time (ms since the Unix epoch) a commit still stores: the later of the
    /// first ms after the newest raw day deleted (by retention or the size cap, kept across
    /// restarts) and the raw retention horizon of the last [`Storage::maintain`] pass.
    /// Older points are dropped on arrival and counted in [`Storage::samples_too_old`]
    /// (as VictoriaMetrics drops samples older than its retention): stored, they would make
    /// a raw day again behind the rollups of a deleted one. `None` while nothing bounds it.
    pub fn accepts_from_ms(&self) -> Option<i64> {
        let floor = self
            .deleted_before
            .load(Ordering::Relaxed)
            .max(self.retention_floor.load(Ordering::Relaxed));
        (floor > i64::MIN).then_some(floor)
    }

    /// Points dropped since the store opened for being older than
    /// [`Storage::accepts_from_ms`] when they were committed or compacted.
    pub fn samples_too_old(&self) -> u64 {
        self.too_old.load(Ordering::Relaxed)
    }

    /// Adds `n` to [`Storage::samples_too_old`]: points a caller left out of a plan for
    /// being older than [`Storage::accepts_from_ms`].
    pub fn count_too_old(&self, n: u64) {
        self.too_old.fetch_add(n, Ordering::Relaxed);
    }

    /// The latest time (ms since the Unix epoch) a commit now stores: the wall clock plus
    /// [`MAX_FUTURE_MS`]. Later points are dropped on arrival and counted in
    /// [`Storage::samples_too_new`].
    pub fn accepts_until_ms(&self) -> i64 {
        crate::forward::stamp_now().saturating_add(MAX_FUTURE_MS)
    }

    /// Points dropped since the store opened for being later than
    /// [`Storage::accepts_until_ms`] when they were committed.
    pub fn samples_too_new(&self) -> u64 {
        self.too_new.load(Ordering::Relaxed)
    }

    /// Adds `n` to [`Storage::samples_too_new`]: points a caller left out of a plan for
    /// being later than [`Storage::accepts_until_ms`].
    pub fn count_too_new(&self, n: u64) {
        self.too_new.fetch_add(n, Ordering::Relaxed);
    }

    /// Every caller metadata entry whose key starts with `prefix`, in key order.
    ///
    /// # Errors
    /// RocksDB fails to read.
    pub fn meta(&self, prefix: &[u8]) -> Result<Vec<MetaEntry>, StorageError> {
        let mut out = vec![];
        for item in self.db.prefix_iterator(prefix) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// How many series are stored.
    pub fn series_count(&self) -> usize {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .labels
            .len()
    }

    /// How many points wait in the head for compaction.
    pub fn head_points(&self) -> usize {
        self.head.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Bytes the store takes on disk: its tables, as RocksDB reports them, and its
    /// write-ahead log files (`*.log`: what the write buffers hold, and up to 32 MiB more
    /// until every column family in a file has flushed). The write buffers' own memory is
    /// not counted: a store of a few KiB would show a MiB of empty arenas.
    pub fn size_bytes(&self) -> u64 {
        let tables: u64 = [
            CF_SERIES, CF_WAL, CF_CHUNKS, CF_PARTS, CF_FORWARD, "default",
        ]
        .into_iter()
        .filter_map(|cf| {
            let h = self.db.cf_handle(cf)?;
            self.db
                .property_int_value_cf(&h, "rocksdb.total-sst-files-size")
                .ok()
                .flatten()
        })
        .sum();
        let logs: u64 = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        tables + logs
    }

    /// Syncs RocksDB's own log to disk.
    ///
    /// # Errors
    /// The sync failed.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.db.flush_wal(true).map_err(|e| self.err(e))
    }

    /// Every series whose labels satisfy all matchers, sorted by labels.
    pub fn select(&self, matchers: &[Matcher]) -> Vec<(SeriesId, Arc<Labels>)> {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .select(matchers)
    }

    /// The series' points with `start_ms <= ts <= end_ms`, sorted by time, one per timestamp
    /// (the newest write wins), from head and chunks.
    ///
    /// # Errors
    /// RocksDB fails, or a chunk does not decode.
    pub fn points(
        &self,
        id: SeriesId,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Point>, ReadError> {
        self.points_via(&mut None, id, start_ms, end_ms)
    }

    /// [`Storage::points`] through a chunk cursor kept in `cursor` across series (one per
    /// query), made or remade when a compaction has moved points out of the head since.
    ///
    /// # Errors
    /// RocksDB fails, or a chunk does not decode.
    pub(crate) fn points_via<'a>(
        &'a self,
        cursor: &mut Option<(u64, chunks::ChunkCursor<'a>)>,
        id: SeriesId,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Point>, ReadError> {
        let mut v: Vec<Point> = vec![];
        let generation = {
            let head = self.head.read().unwrap_or_else(|p| p.into_inner());
            head.points_newest_first(id, start_ms, end_ms, &mut v);
            self.chunk_generation.load(Ordering::Acquire)
        };
        let it = match cursor {
            Some((g, it)) if *g == generation => it,
            _ => {
                let cf = self.cf(CF_PARTS).map_err(|e| ReadError(e.to_string()))?;
                &mut cursor.insert((generation, self.db.raw_iterator_cf(cf))).1
            }
        };
        let parts = self.parts_between(start_ms, end_ms);
        chunks::read_newest_first(it, &parts, id, start_ms, end_ms, &mut v)?;
        // Before the oldest raw partition, what rollups show (after the raw points, so a
        // raw point wins a repeated timestamp).
        if let Some(raw_start) = self.oldest_partition_start()
            && start_ms < raw_start
        {
            v.extend(self.rollup_points(id, start_ms, end_ms.min(raw_start - 1))?);
        }
        // Sources were added newest first: a stable sort keeps the newest write first for a
        // repeated timestamp.
        v.sort_by_key(|p| p.ts);
        v.dedup_by_key(|p| p.ts);
        Ok(v)
    }

    /// [`Storage::points`] of every series in `ids`: `Some(out)` with `out[i]` the points
    /// of `ids[i]`, read in one walk over each partition's keys (see
    /// [`chunks::each_chunk_of_many`]) rather than one seek per series and partition. A
    /// large read is split by series into [`read_threads`] runs of neighbouring ids, each
    /// walked by a thread of its own over every partition. `stop` is called, on the
    /// calling thread, with the points read so far (by all threads) after each partition
    /// the calling thread has read; when it returns true the read ends with `Ok(None)` (the
    /// other threads stop after their current partition). Points the other threads read
    /// after the calling thread's last partition are not offered to `stop`: a caller with a
    /// limit checks what it gets.
    ///
    /// # Errors
    /// RocksDB fails, or a chunk does not decode.
    pub(crate) fn points_many(
        &self,
        ids: &[SeriesId],
        start_ms: i64,
        end_ms: i64,
        stop: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Option<Vec<Vec<Point>>>, ReadError> {
        self.points_many_in(ids, start_ms, end_ms, None, true, stop)
    }

    /// The timestamps of the points of every series in `ids` that are not stale markers,
    /// read as [`Storage::points_many`] reads points (`stop` counts points read), but
    /// without decoding the values of chunks whose value column cannot hold a stale
    /// marker (see [`crate::chunk_codec::decode_chunk_timestamps`]).
    ///
    /// # Errors
    /// RocksDB fails, or a chunk does not decode.
    pub(crate) fn timestamps_many(
        &self,
        ids: &[SeriesId],
        start_ms: i64,
        end_ms: i64,
        stop: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Option<Vec<Vec<i64>>>, ReadError> {
        let got = self.points_many_in(ids, start_ms, end_ms, None, false, stop)?;
        Ok(got.map(outpost_promql::storage::unstale_timestamps))
    }

    /// [`Storage::points_many`] with the series split into `threads` runs, or into
    /// [`read_threads`] runs when `None`; with `values` false, the values of raw chunks
    /// that cannot hold a stale marker are not decoded but 0.0 (see
    /// [`crate::chunk_codec::decode_chunk_timestamps`]).
    ///
    /// # Errors
    /// RocksDB fails, or a chunk does not decode.
    pub(crate) fn points_many_in(
        &self,
        ids: &[SeriesId],
        start_ms: i64,
        end_ms: i64,
        threads: Option<usize>,
        values: bool,
        stop: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Option<Vec<Vec<Point>>>, ReadError> {
        let mut out: Vec<Vec<Point>> = vec![Vec::new(); ids.len()];
        if start_ms > end_ms {
            return Ok(Some(out));
        }
        // The head first, then the chunks: a compaction in between moves points into
        // chunks the cursors, made after, still see.
        {
            let head = self.head.read().unwrap_or_else(|p| p.into_inner());
            for (v, &id) in out.iter_mut().zip(ids) {
                head.points_newest_first(id, start_ms, end_ms, v);
            }
        }
        let (wanted, repeats) = wanted_order(ids);
        let parts = self.parts_between(start_ms, end_ms);
        let read = AtomicUsize::new(out.iter().map(Vec::len).sum());
        let halt = AtomicBool::new(false);
        let threads = threads.unwrap_or_else(|| read_threads(wanted.len(), parts.len()));
        let per = wanted.len().div_ceil(threads.max(1)).max(1);
        let runs: Vec<&[(SeriesId, usize)]> = wanted.chunks(per).collect();
        let walk = |run: &[(SeriesId, usize)], after: &mut dyn FnMut() -> bool| {
            self.chunk_points(run, &parts, (start_ms, end_ms), values, &read, after)
        };
        let mut caller_stop = || {
            let stopped = halt.load(Ordering::Relaxed) || stop(read.load(Ordering::Relaxed));
            if stopped {
                halt.store(true, Ordering::Relaxed);
            }
            stopped
        };
        let results: Vec<Result<Option<Vec<Vec<Point>>>, ReadError>> = match runs.split_first() {
            None => vec![],
            Some((first, [])) => vec![walk(first, &mut caller_stop)],
            Some((first, rest)) => std::thread::scope(|scope| {
                let others: Vec<_> = rest
                    .iter()
                    .map(|run| {
                        let walk = &walk;
                        let halt = &halt;
                        scope.spawn(move || walk(run, &mut || halt.load(Ordering::Relaxed)))
                    })
                    .collect();
                let mut all = vec![walk(first, &mut caller_stop)];
                if !matches!(all[0], Ok(Some(_))) {
                    halt.store(true, Ordering::Relaxed);
                }
                for t in others {
                    all.push(t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
                }
                all
            }),
        };
        for (run, res) in runs.iter().zip(results) {
            let Some(pts) = res? else {
                return Ok(None);
            };
            for (&(_, i), p) in run.iter().zip(pts) {
                if out[i].is_empty() {
                    out[i] = p;
                } else {
                    out[i].extend(p);
                }
            }
        }
        if let Some(raw_start) = self.oldest_partition_start()
            && start_ms < raw_start
        {
            for (v, &id) in out.iter_mut().zip(ids) {
                v.extend(self.rollup_points(id, start_ms, end_ms.min(raw_start - 1))?);
            }
        }
        // Sources were added newest first where they overlap: a stable sort keeps the newest
        // write first for a repeated timestamp. Days read from one chunk each are in order
        // already.
        for v in &mut out {
            if !v.windows(2).all(|w| w[0].ts < w[1].ts) {
                v.sort_by_key(|p| p.ts);
                v.dedup_by_key(|p| p.ts);
            }
        }
        for (from, to) in repeats {
            out[to] = out[from].clone();
        }
        Ok(Some(out))
    }

    /// The raw chunks' points of the series of `run` (sorted by id, no repeats) in
    /// partitions `parts` with `start_ms <= ts <= end_ms`: `Some(out)` with `out[k]` those
    /// of `run[k]`, in one walk over each partition through a cursor of its own; where a
    /// series has several chunks in a partition, newest write first (as
    /// [`chunks::read_newest_first`] orders them). Adds the points read to `read` and asks
    /// `after` after each partition whether to stop (`Ok(None)`). With `values` false,
    /// values are decoded only where they may be stale markers, as
    /// [`crate::chunk_codec::decode_chunk_timestamps`] decodes them.
    fn chunk_points(
        &self,
        run: &[(SeriesId, usize)],
        parts: &[i32],
        (start_ms, end_ms): (i64, i64),
        values: bool,
        read: &AtomicUsize,
        after: &mut dyn FnMut() -> bool,
    ) -> Result<Option<Vec<Vec<Point>>>, ReadError> {
        let mut out: Vec<Vec<Point>> = vec![Vec::new(); run.len()];
        let local: Vec<(SeriesId, usize)> = run
            .iter()
            .enumerate()
            .map(|(k, &(id, _))| (id, k))
            .collect();
        let cf = self.cf(CF_PARTS).map_err(|e| ReadError(e.to_string()))?;
        let mut it = self.db.raw_iterator_cf(cf);
        // A series' chunks of a day come one after the other. The first is decoded into its
        // output in time order (a merged day has just that one); a second sends them all
        // through `overlap`, to be ordered newest write first as `points_via` orders them.
        let mut overlap: Vec<(u64, Vec<Point>)> = vec![];
        let flush = |out: &mut [Vec<Point>], overlap: &mut Vec<(u64, Vec<Point>)>, i: usize| {
            overlap.sort_by_key(|c| std::cmp::Reverse(c.0));
            for (_, pts) in overlap.drain(..) {
                out[i].extend(pts.into_iter().rev());
            }
        };
        for (k, &p) in parts.iter().enumerate() {
            let mut n = 0usize;
            // (series position, where its first chunk of the day starts in its output,
            // that chunk's record id)
            let mut cur: Option<(usize, usize, u64)> = None;
            chunks::each_chunk_of_many(&mut it, RAW, p, &local, start_ms, end_ms, |i, c, v| {
                let decode = |out: &mut Vec<Point>| {
                    if values {
                        crate::chunk_codec::decode_chunk_between(v, start_ms, end_ms, out)
                    } else {
                        crate::chunk_codec::decode_chunk_timestamps(v, start_ms, end_ms, out)
                    }
                    .map_err(|e| ReadError(format!("chunk of series {}: {e}", c.series)))
                };
                match cur {
                    Some((j, at, record)) if j == i => {
                        if overlap.is_empty() {
                            overlap.push((record, out[i].split_off(at)));
                        }
                        let mut pts = vec![];
                        decode(&mut pts)?;
                        n += pts.len();
                        overlap.push((c.record, pts));
                    }
                    _ => {
                        if let Some((j, _, _)) = cur {
                            flush(&mut out, &mut overlap, j);
                        }
                        let at = out[i].len();
                        if out[i].capacity() == 0 {
                            // Room for as many points a day in every day left, so that a
                            // long read does not copy its series over and over as they grow.
                            let day = crate::chunk_codec::chunk_len(v).unwrap_or(0) as usize;
                            let days = parts.len() - k;
                            out[i].reserve(day.saturating_mul(days).min(RESERVE_POINTS));
                        }
                        decode(&mut out[i])?;
                        n += out[i].len() - at;
                        cur = Some((i, at, c.record));
                    }
                }
                Ok(())
            })?;
            if let Some((j, _, _)) = cur {
                flush(&mut out, &mut overlap, j);
            }
            read.fetch_add(n, Ordering::Relaxed);
            if after() {
                return Ok(None);
            }
        }
        Ok(Some(out))
    }

    /// Cardinality statistics with the `top` largest entries of each list.
    pub fn cardinality(&self, top: usize) -> crate::CardinalityStats {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .stats(top)
    }

    /// The oldest and newest timestamps (ms) in the head, if it holds any point.
    pub fn head_time_range(&self) -> Option<(i64, i64)> {
        self.head
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .time_range()
    }

    /// Whether the series has any point with `start_ms <= ts <= end_ms`, found without
    /// decoding chunks (a seek to the first chunk that may hold one); before the oldest raw
    /// partition, whether a rollup bucket of it starts in that span (roughly: its chunk's
    /// span of bucket starts overlaps).
    ///
    /// # Errors
    /// RocksDB fails to read.
    pub fn has_points(&self, id: SeriesId, start_ms: i64, end_ms: i64) -> Result<bool, ReadError> {
        if self
            .head
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .has_points(id, start_ms, end_ms)
        {
            return Ok(true);
        }
        let cf = self.cf(CF_PARTS).map_err(|e| ReadError(e.to_string()))?;
        let mut it = self.db.raw_iterator_cf(cf);
        let parts = self.parts_between(start_ms, end_ms);
        if chunks::any_overlapping(&mut it, RAW, &parts, id, start_ms, end_ms)? {
            return Ok(true);
        }
        // Before the oldest raw partition, rollups tell.
        let raw_start = self.oldest_partition_start().unwrap_or(i64::MAX);
        if start_ms >= raw_start {
            return Ok(false);
        }
        let (p0, p1) = (
            partition::partition_of(start_ms),
            partition::partition_of(end_ms.min(raw_start - 1)),
        );
        for (res, _, _) in crate::rollup::ROLLUPS {
            let parts: Vec<i32> = self
                .rollup_parts(res)
                .into_iter()
                .filter(|&p| p >= p0 && p <= p1)
                .collect();
            if chunks::any_overlapping(&mut it, res, &parts, id, start_ms, end_ms)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// All label names in use, sorted.
    pub fn label_names(&self) -> Vec<String> {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .label_names()
    }

    /// All values of one label name, sorted.
    pub fn label_values(&self, name: &str) -> Vec<String> {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .label_values(name)
    }
}

/// Bytes of uncompressed `parts` blocks kept in memory, shared by every reader of a store:
/// a long-range query seeks once per series and day, and a seek into a block not cached
/// decompresses it first.
pub(crate) const BLOCK_CACHE_BYTES: usize = 256 << 20;

/// The most points made room for at once for a series being read (2 MiB of points).
const RESERVE_POINTS: usize = 1 << 17;

/// Bytes of chunks per RocksDB block of `parts` (before compression), instead of RocksDB's
/// 4 KiB: a long-range query walks every block of the days it reads, and per block it
/// pays a cache lookup and zstd's table setup, which small blocks of a few dozen day chunks
/// made a fifth of a year's query. Measured on a year of 10,000 hourly series: 64 KiB
/// blocks took a third less CPU for `count` over every series and 6 % less disk than
/// 4 KiB; a single series' read decompresses at most one such block per day. Files
/// written before keep their blocks until compaction rewrites them.
pub(crate) const PARTS_BLOCK_BYTES: usize = 64 << 10;

/// The column families of a data folder. `parts` shares `cache` for its blocks and is
/// compressed with zstd on top of the chunks' own coding (its keys share long prefixes)
/// from level 2 down, where nearly all of it settles; levels 0 and 1, rewritten most
/// often, are left uncompressed to spare compaction the CPU.
fn cf_descriptors(cache: &rocksdb::Cache) -> Vec<ColumnFamilyDescriptor> {
    [
        CF_SERIES, CF_WAL, CF_CHUNKS, CF_PARTS, CF_FORWARD, "default",
    ]
    .into_iter()
    .map(|n| {
        let mut o = Options::default();
        if n == CF_PARTS {
            use rocksdb::DBCompressionType::{None as Plain, Zstd};
            o.set_compression_per_level(&[Plain, Plain, Zstd, Zstd, Zstd, Zstd, Zstd]);
            o.set_bottommost_compression_type(Zstd);
            let mut t = rocksdb::BlockBasedOptions::default();
            t.set_block_cache(cache);
            t.set_block_size(PARTS_BLOCK_BYTES);
            o.set_block_based_table_factory(&t);
        }
        ColumnFamilyDescriptor::new(n, o)
    })
    .collect()
}

/// Chunks (series × partitions) a read must span before a second thread joins it, and
/// series each thread gets at least: below that, a thread costs more than it saves.
const CHUNKS_PER_THREAD: usize = 8192;
const SERIES_PER_THREAD: usize = 64;

/// How many threads read `series` series over `parts` partitions
/// ([`Storage::points_many`]): one per [`CHUNKS_PER_THREAD`] chunks, at most one per core
/// and at most 4, each with at least [`SERIES_PER_THREAD`] series.
pub(crate) fn read_threads(series: usize, parts: usize) -> usize {
    // Read once: the standard library asks the cgroup files each time.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    (series.saturating_mul(parts) / CHUNKS_PER_THREAD)
        .min(series / SERIES_PER_THREAD)
        .min(cores)
        .clamp(1, 4)
}

/// Series a walk over a partition reads: (id, position in the caller's list), sorted by id.
pub(crate) type Wanted = Vec<(SeriesId, usize)>;

/// `ids` as a walk over a partition wants them, each id once, and the (first position,
/// repeated position) pairs of ids listed more than once.
pub(crate) fn wanted_order(ids: &[SeriesId]) -> (Wanted, Vec<(usize, usize)>) {
    let mut wanted: Vec<(SeriesId, usize)> =
        ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    wanted.sort_unstable();
    let mut repeats = vec![];
    wanted.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            repeats.push((kept.1, later.1));
        }
        same
    });
    (wanted, repeats)
}
