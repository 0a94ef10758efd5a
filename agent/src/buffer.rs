//! The agent's durable buffer: every batch is written here, keyed by its seq, before it is
//! first sent, and deleted only when the aggregator has acknowledged it.
//!
//! Layout (RocksDB, two column families):
//! - `batches`: key = seq (u64 big-endian) → value = samples (u32 LE) · oldest timestamp
//!   (i64 LE, ms) · cycle (u64 LE, 0 for batches that are not collection cycles) · position
//!   in its group (u32 LE) · codec payload.
//! - `default`: counters that must survive restarts (`next_seq`, `first`, `cycles`, `acked`,
//!   `dropped_samples`, `dropped_batches`, `damaged_batches`, `group_from`), each u64 LE,
//!   written in the same atomic batch as the data they describe.
//!
//! Batches are stored in groups of consecutive seqs: the first of a group (position 0) is
//! self-contained, each later one is coded against the context the batches before it in the
//! group left (so a series' labels are stored once a group, and its values as changes). A
//! batch continues the group of the batch before it only while that one is still held
//! (unacknowledged): a connected agent, whose batches are acknowledged as they go, stores
//! self-contained batches as before, and a backlog is stored in groups. Acknowledged batches
//! stay on disk while a later batch of their group is held, as its context; eviction removes
//! whole groups. Reading a group's batch decodes the group from its start and hands it out
//! self-contained. Batches below `group_from` were stored before groups existed (a 20-byte
//! header, self-contained).
//!
//! Invariant: every seq in `[max(first, acked + 1), next_seq)` is stored (batches refused by
//! the `drop_newest` policy never get a seq). So at start, a seq in that range that cannot be
//! read was damaged on disk: it is counted (`damaged_batches`), and the aggregator sees the
//! same seqs missing. Damage never stops the agent: RocksDB skips a damaged log tail, a folder
//! RocksDB refuses is repaired, the whole records are copied into a fresh folder that
//! replaces the damaged one, and only if even repair fails is the folder set aside.
//!
//! A write that fails (disk full) loses that cycle, counted; the database is closed and
//! reopened at the next write, so buffering resumes by itself once there is space again.
//!
//! The [`Ledger`] holds the bookkeeping (sizes, when-full policy, acknowledgements) as pure
//! state; [`Buffer`] applies its decisions to RocksDB.

use crate::config::{BufferConfig, WhenFull};
use outpost_shared::codec::{Transcoder, Unchainer};
use rocksdb::{ColumnFamilyDescriptor, DB, Options, WriteBatch, WriteOptions};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};

const CF_BATCHES: &str = "batches";
/// Header of a batch stored before `group_from`: samples · oldest timestamp · cycle.
const HEADER_V1: usize = 20;
/// Header of a batch stored at or after `group_from`: as [`HEADER_V1`], then the batch's
/// position in its group (u32 LE).
const HEADER: usize = 24;
/// When a group ends. A group is what a damaged batch can take with it, what eviction
/// removes at once, and what must be decoded to read its last batch; longer groups store
/// labels and full values more rarely, but leave RocksDB's zstd less to compress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupLimit {
    /// Samples a group holds at most: the next batch starts a group once the group has this
    /// many. 64,000 (64 batches of 1,000 series) gave the smallest table files on the
    /// benchmark's data (1.67 B/sample, against 1.74 for 32 batches and 1.73 for 128;
    /// docs/BUFFER.md); smaller batches make longer groups.
    pub samples: u64,
    /// Batches a group holds at most, however small they are.
    pub batches: u32,
    /// Stored bytes a group holds at most: a quarter of `[buffer] max_bytes`, so that
    /// eviction when the buffer is full never takes most of it at once.
    pub bytes: u64,
}

impl GroupLimit {
    /// Samples a group holds at most, by default.
    pub const SAMPLES: u64 = 64_000;
    /// Batches a group holds at most, by default.
    pub const BATCHES: u32 = 1024;

    /// The limits for a buffer of at most `max_bytes`.
    pub fn for_buffer(max_bytes: u64) -> Self {
        GroupLimit {
            samples: Self::SAMPLES,
            batches: Self::BATCHES,
            bytes: (max_bytes / 4).max(1),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("buffer at {dir}: {source}")]
    Db {
        dir: String,
        #[source]
        source: rocksdb::Error,
    },
    #[error(
        "buffer at {dir}: column family \"{CF_BATCHES}\" is missing; the folder is not an Outpost buffer"
    )]
    Layout { dir: String },
    #[error(
        "buffer at {dir} is in use by another process (is another agent running with this [buffer] dir?): {source}"
    )]
    Locked {
        dir: String,
        #[source]
        source: rocksdb::Error,
    },
    #[error("buffer at {dir}: cannot {what}: {source}")]
    Io {
        dir: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("buffer at {dir} cannot take writes: {reason}")]
    Unavailable { dir: String, reason: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    bytes: u64,
    samples: u64,
    oldest_ts: i64,
    /// The seq of the first batch of this batch's group (its own seq for a group's first).
    key: u64,
    /// Copied to the live stream of the current connection, ahead of the batch stream: if
    /// it is evicted before the batch stream sends it, the copy may still have been stored.
    live: bool,
}

/// What to do with a new batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Store it under `seq`, after deleting `evicted` (oldest first) to make room.
    Store { seq: u64, evicted: Vec<u64> },
    /// Drop it: the buffer is full and the policy keeps older data (or it can never fit).
    Reject,
}

/// Pure bookkeeping of what the buffer holds.
#[derive(Debug)]
pub struct Ledger {
    entries: BTreeMap<u64, Entry>,
    total_bytes: u64,
    max_bytes: u64,
    policy: WhenFull,
    pub next_seq: u64,
    pub acked: u64,
    pub cycles: u64,
    pub dropped_samples: u64,
    pub dropped_batches: u64,
    /// Batches evicted after they were copied to the live stream and before the batch
    /// stream sent them, since the buffer opened.
    pub evicted_live: u64,
    /// What the last [`Ledger::admit`] evicted, for [`Ledger::undo_admit`].
    last_evicted: Vec<(u64, Entry)>,
    /// Highest seq handed to a connection. An evicted batch at or below it may still reach
    /// the aggregator, so it is not counted as dropped yet: it waits in `pending_drops` until
    /// an acknowledgement shows it arrived or a new session shows it did not.
    sent_upto: u64,
    pub pending_drops: BTreeMap<u64, u64>,
    /// Lowest seq that may still be on disk: batches below it are deleted or being deleted.
    /// Batches in `disk_from..` below the first held one are acknowledged but kept as the
    /// context of a held batch of their group.
    pub disk_from: u64,
}

impl Ledger {
    pub fn new(max_bytes: u64, policy: WhenFull) -> Self {
        Ledger {
            entries: BTreeMap::new(),
            total_bytes: 0,
            max_bytes,
            policy,
            next_seq: 1,
            acked: 0,
            cycles: 0,
            dropped_samples: 0,
            dropped_batches: 0,
            evicted_live: 0,
            last_evicted: vec![],
            sent_upto: 0,
            pending_drops: BTreeMap::new(),
            disk_from: 1,
        }
    }

    /// Decides where a batch of `bytes` goes; the decision is already applied to the ledger.
    pub fn admit(&mut self, bytes: u64, samples: u64, oldest_ts: i64) -> Admit {
        if bytes > self.max_bytes
            || (self.policy == WhenFull::DropNewest && self.total_bytes + bytes > self.max_bytes)
        {
            self.dropped_batches += 1;
            self.dropped_samples += samples;
            return Admit::Reject;
        }
        let mut evicted = vec![];
        self.last_evicted.clear();
        // Whole groups go: a group's later batches cannot be read without its earlier ones.
        let mut group = None;
        while self.total_bytes + bytes > self.max_bytes
            || group.is_some_and(|k| {
                self.entries
                    .first_key_value()
                    .is_some_and(|(_, e)| e.key == k)
            })
        {
            let Some((seq, e)) = self.entries.pop_first() else {
                break;
            };
            group = Some(e.key);
            self.total_bytes -= e.bytes;
            if seq <= self.sent_upto || e.live {
                if seq > self.sent_upto {
                    self.evicted_live += 1;
                }
                self.pending_drops.insert(seq, e.samples);
            } else {
                self.dropped_batches += 1;
                self.dropped_samples += e.samples;
            }
            evicted.push(seq);
            self.last_evicted.push((seq, e));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.insert(
            seq,
            Entry {
                bytes,
                samples,
                oldest_ts,
                key: seq,
                live: false,
            },
        );
        Admit::Store { seq, evicted }
    }

    /// Records that held batch `seq` was stored as part of the group that starts at `key`,
    /// taking `bytes` (the ledger counted what [`Ledger::admit`] was told).
    pub fn stored_as(&mut self, seq: u64, key: u64, bytes: u64) {
        if let Some(e) = self.entries.get_mut(&seq) {
            self.total_bytes = self.total_bytes - e.bytes + bytes;
            e.bytes = bytes;
            e.key = key;
        }
    }

    /// The group `seq` belongs to, when it is held.
    pub fn key_of(&self, seq: u64) -> Option<u64> {
        self.entries.get(&seq).map(|e| e.key)
    }

    /// Seqs on disk that nothing needs any more (acknowledged or evicted, and no held
    /// batch's context): `disk_from` up to the first held batch's group, or up to `next_seq`
    /// when nothing is held; never past `acked + 1`, so the marks of batches counted as
    /// damaged stay until they are acknowledged. They are taken off the ledger's books: the
    /// caller deletes them.
    pub fn release(&mut self) -> std::ops::Range<u64> {
        let upto = self.release_bound(self.acked, self.acked + 1);
        let from = self.disk_from;
        self.disk_from = self.disk_from.max(upto);
        from..self.disk_from
    }

    /// Where [`Ledger::release`] would stop once everything up to `acked` is acknowledged,
    /// the first batch then held being the first at or after `held_from`.
    fn release_bound(&self, acked: u64, held_from: u64) -> u64 {
        let held = self
            .entries
            .range(held_from..)
            .next()
            .map_or(self.next_seq, |(_, e)| e.key);
        held.min(self.disk_from.max(acked + 1))
    }

    /// Records that batches up to `seq` were handed to a connection.
    pub fn mark_sent(&mut self, seq: u64) {
        self.sent_upto = self.sent_upto.max(seq);
    }

    /// Records that held batch `seq` was copied to the live stream. The aggregator stores the
    /// copy's points at once; if the batch is evicted before the batch stream sends it, the
    /// aggregator does not count the seq as missing, so the agent waits for the
    /// acknowledgement that passes it before deciding whether it was dropped, as for a batch
    /// evicted in flight. Returns false when `seq` is no longer held: it was evicted and
    /// counted as dropped, so it must not be copied either.
    pub fn mark_live(&mut self, seq: u64) -> bool {
        match self.entries.get_mut(&seq) {
            Some(e) => {
                e.live = true;
                true
            }
            None => false,
        }
    }

    /// A new session began and the aggregator has applied everything up to `applied`: pending
    /// drops above it can no longer arrive, so they are dropped for good. Returns them. Live
    /// copies belong to the connection that carried them: held batches lose their mark.
    pub fn resolve_pending(&mut self, applied: u64) -> Vec<u64> {
        for e in self.entries.values_mut() {
            e.live = false;
        }
        self.pending_drops.retain(|s, _| *s > applied);
        let gone = std::mem::take(&mut self.pending_drops);
        for samples in gone.values() {
            self.dropped_batches += 1;
            self.dropped_samples += samples;
        }
        self.sent_upto = applied;
        gone.into_keys().collect()
    }

    /// Bytes of held batches with seq in `from..to`.
    pub fn bytes_between(&self, from: u64, to: u64) -> u64 {
        if from >= to {
            return 0;
        }
        self.entries.range(from..to).map(|(_, e)| e.bytes).sum()
    }

    /// Takes back the last [`Ledger::admit`] (its write failed). Counters are restored by the caller.
    pub fn undo_admit(&mut self, a: &Admit) {
        if let Admit::Store { seq, .. } = a {
            self.remove(*seq);
            for (s, e) in std::mem::take(&mut self.last_evicted) {
                self.pending_drops.remove(&s);
                self.insert(s, e);
            }
        }
    }

    /// Forgets one batch; returns whether it was held.
    pub fn remove(&mut self, seq: u64) -> bool {
        match self.entries.remove(&seq) {
            Some(e) => {
                self.total_bytes -= e.bytes;
                true
            }
            None => false,
        }
    }

    fn insert(&mut self, seq: u64, e: Entry) {
        self.total_bytes += e.bytes;
        self.entries.insert(seq, e);
    }

    /// Forgets everything up to `seq`; returns the seqs that were held, for deletion.
    pub fn ack(&mut self, seq: u64) -> Vec<u64> {
        if seq <= self.acked {
            return vec![];
        }
        self.acked = seq;
        // Evicted while in flight, and acknowledged: it arrived after all.
        self.pending_drops.retain(|s, _| *s > seq);
        let keep = self.entries.split_off(&(seq + 1));
        let gone = std::mem::replace(&mut self.entries, keep);
        self.total_bytes -= gone.values().map(|e| e.bytes).sum::<u64>();
        gone.into_keys().collect()
    }

    /// The lowest held seq at or after `from`.
    pub fn next_at_or_after(&self, from: u64) -> Option<u64> {
        self.entries.range(from..).next().map(|(s, _)| *s)
    }

    pub fn batches(&self) -> usize {
        self.entries.len()
    }

    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    pub fn oldest_ts(&self) -> Option<i64> {
        self.entries.values().map(|e| e.oldest_ts).min()
    }
}

/// The group the last stored batch belongs to, which the next batch may continue.
struct Chain {
    /// The group's first seq.
    key: u64,
    /// The last seq stored in it, and its position.
    last: u64,
    pos: u32,
    /// Samples and stored bytes (headers included) the group holds so far.
    samples: u64,
    bytes: u64,
    /// Codes batches against the group's context once a second batch joins the group (the
    /// first is stored as it came). Kept from group to group: a connected agent starts a
    /// group at every acknowledgement (every two or three cycles at a 1 s interval, as the
    /// aggregator holds acknowledgements), and a group of cycles with the series of the last
    /// group reuses its string and series maps ([`Transcoder::continue_from`]).
    coder: Option<Transcoder>,
    /// Whether `coder` codes against this group (it may still hold the last group's).
    coding: bool,
}

/// Where reading left off in a group, so the next read of the same group continues there
/// instead of decoding the group from its start again.
struct GroupReader {
    key: u64,
    /// The seq after the last one decoded.
    next: u64,
    un: Unchainer,
}

/// A snapshot for metrics and status.
#[derive(Clone, Debug, Default)]
pub struct BufferStats {
    pub batches: u64,
    pub bytes: u64,
    pub oldest_ts: Option<i64>,
    pub next_seq: u64,
    pub acked: u64,
    pub cycles: u64,
    pub dropped_samples: u64,
    pub dropped_batches: u64,
    /// Batches found damaged on disk and skipped, since the buffer was created.
    pub damaged_batches: u64,
    /// Batches evicted after they were copied to the live stream and before the batch
    /// stream sent them, since the buffer opened (see [`Ledger::mark_live`]).
    pub evicted_live_batches: u64,
    /// Cycles that could not be written (disk full, I/O errors), since this process started.
    pub lost_cycles: u64,
    pub lost_samples: u64,
    /// The last write error while it persists (e.g. "No space left on device").
    pub write_error: Option<String>,
}

pub struct StoredBatch {
    pub seq: u64,
    pub samples: u64,
    pub payload: Vec<u8>,
}

/// What opening found and did, for the log and the status command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// RocksDB could not open the folder as it was and repaired it.
    pub repaired: bool,
    /// The folder was rewritten from the records that were still whole.
    pub rebuilt: bool,
    /// Batches expected but missing or unreadable; they were skipped.
    pub damaged_batches: u64,
    /// The folder could not be opened even after repair and was set aside; this is its new name.
    pub set_aside: Option<String>,
}

#[derive(Default)]
struct WriteHealth {
    error: Option<String>,
    lost_cycles: u64,
    lost_samples: u64,
}

pub struct Buffer {
    db: RwLock<Option<DB>>,
    ledger: Mutex<Ledger>,
    write_opts: WriteOptions,
    path: PathBuf,
    dir: String,
    health: Mutex<WriteHealth>,
    recovery: Recovery,
    damaged: AtomicU64,
    /// The batches stored last (seq, samples, self-contained payload as it was given), kept
    /// until acknowledged, evicted or pushed out by newer ones, so sending a batch just
    /// written does not read it back from RocksDB. At most [`RECENT_BATCHES`] and
    /// [`RECENT_BYTES`].
    recent: Mutex<VecDeque<(u64, u64, Vec<u8>)>>,
    /// Acknowledgements applied to the ledger but not yet written; see [`Buffer::ack_deferred`].
    deferred: Mutex<DeferredAck>,
    /// First seq stored with a group position in its header (see [`parse_header`]).
    group_from: u64,
    /// The group the next batch may continue; `None` after a restart or a failed write.
    chain: Mutex<Option<Chain>>,
    /// When a group ends.
    group_limit: GroupLimit,
    /// Where the last read from disk left off in its group.
    reader: Mutex<Option<GroupReader>>,
    /// Seqs counted as damaged when the buffer was opened. Those above the persisted
    /// `acked` may still have reached the aggregator (their acknowledgement was lost with
    /// the connection): the first session's welcome settles them (see
    /// [`Buffer::session_started`]).
    damaged_at_open: Mutex<Vec<std::ops::Range<u64>>>,
}

/// Batches kept in memory after they are stored (see `Buffer::recent`): a few cycles.
const RECENT_BATCHES: usize = 8;
/// Bytes kept in memory after they are stored, at most.
const RECENT_BYTES: usize = 256 << 10;
/// Deferred acknowledgements write themselves once they delete this many batches.
const DEFERRED_DELETES_AT_MOST: usize = 256;

/// Acknowledgement writes that ride on the buffer's next write (see [`Buffer::ack_deferred`]).
#[derive(Default)]
struct DeferredAck {
    /// Seqs to delete from `batches` (see [`Ledger::release`]).
    deletes: Vec<std::ops::Range<u64>>,
    /// The `acked` counter to persist, when it moved.
    acked: Option<u64>,
}

/// Deletes the batches of `range`: one by one when they are few, else with a range delete
/// (see [`Buffer::ack`] for why).
fn delete_batches(wb: &mut WriteBatch, cf: &rocksdb::ColumnFamily, range: std::ops::Range<u64>) {
    if range.end.saturating_sub(range.start) as usize <= POINT_DELETES_AT_MOST {
        for s in range {
            wb.delete_cf(cf, s.to_be_bytes());
        }
    } else if !range.is_empty() {
        wb.delete_range_cf(cf, range.start.to_be_bytes(), range.end.to_be_bytes());
    }
}

impl DeferredAck {
    /// Seqs waiting to be deleted.
    fn count(&self) -> usize {
        self.deletes
            .iter()
            .map(|r| (r.end - r.start) as usize)
            .sum()
    }

    /// Adds the deferred writes to `wb`, leaving nothing deferred.
    fn drain_into(&mut self, wb: &mut WriteBatch, cf: &rocksdb::ColumnFamily) -> DeferredAck {
        for r in &self.deletes {
            delete_batches(wb, cf, r.clone());
        }
        if let Some(a) = self.acked {
            wb.put(b"acked", a.to_le_bytes());
        }
        std::mem::take(self)
    }

    /// Defers `earlier` again (its write failed), keeping whatever was deferred since.
    fn restore(&mut self, earlier: DeferredAck) {
        self.deletes.extend(earlier.deletes);
        self.acked = self.acked.max(earlier.acked);
    }
}

/// Memtable size of the `batches` column family: what the buffer holds in memory before
/// writing a table file. Deleted (acknowledged) batches stay in the memtable until it is
/// written, so this bounds the memory the queue takes whatever it holds: an hour of 1 s
/// cycles (about 30 MiB) lives in table files, not in memory. A connected agent stores
/// self-contained batches (about 3 KB a cycle of 300 series) and deletes them as they are
/// acknowledged: its memtable fills at that pace whatever the queue holds, so its size is
/// memory every streaming agent reaches sooner or later (2 MiB before: 10 minutes at 1 s,
/// under 2 hours at 10 s). Writing one costs a table file of deletion markers. A backlog
/// is written in more, smaller table files than with 2 MiB: an hour of 1,000 series takes
/// 1.74 B/sample in table files instead of 1.67 (`drain-fill`, docs/BENCHMARKS.md).
const BATCHES_MEMTABLE: usize = 512 << 10;
/// Memtable size of the `default` column family (the counters, about 80 bytes a cycle). At
/// 64 KiB an hour's backlog of 100 series flushed one more table file of counters, 1.80
/// instead of 1.77 B/sample.
const COUNTERS_MEMTABLE: usize = 256 << 10;
/// One block cache for both column families: the blocks of batches read back for sending.
const BLOCK_CACHE: usize = 1 << 20;

fn db_options() -> Options {
    // No preallocation of log and table files (RocksDB reserves 1.1 × the largest memtable
    // for each log): a small queue does not need it, and on a full disk a write then fails
    // when it needs space, not minutes later when the reserved room runs out.
    let mut o = Options::default()
        .get_options_from_string("allow_fallocate=false")
        .unwrap_or_default();
    o.create_if_missing(true);
    // RocksDB's own log (`LOG` in the folder) keeps warnings and errors only.
    o.set_log_level(rocksdb::LogLevel::Warn);
    o.create_missing_column_families(true);
    // A small, steady footprint: the buffer is a queue, not a database people query.
    o.set_max_open_files(32);
    o.set_write_buffer_size(COUNTERS_MEMTABLE);
    o.set_max_write_buffer_number(2);
    o.set_db_write_buffer_size(2 * BATCHES_MEMTABLE + 2 * COUNTERS_MEMTABLE);
    o.set_max_total_wal_size(32 << 20);
    o.set_keep_log_file_num(2);
    // One flush and one compaction thread, no statistics dumps (and their timer thread).
    o.set_max_background_jobs(1);
    o.set_stats_dump_period_sec(0);
    o.set_stats_persist_period_sec(0);
    // A damaged log tail or record is skipped, not fatal: what is whole is kept.
    o.set_wal_recovery_mode(rocksdb::DBRecoveryMode::SkipAnyCorruptedRecord);
    o.set_block_based_table_factory(&table_options(4 << 10));
    o
}

/// Table options with the one small block cache, `block_size` bytes per block.
fn table_options(block_size: usize) -> rocksdb::BlockBasedOptions {
    static CACHE: std::sync::OnceLock<rocksdb::Cache> = std::sync::OnceLock::new();
    let mut bb = rocksdb::BlockBasedOptions::default();
    bb.set_block_size(block_size);
    bb.set_block_cache(CACHE.get_or_init(|| rocksdb::Cache::new_lru_cache(BLOCK_CACHE)));
    // Index blocks live in the cache too, so open table files cost no memory of their own.
    bb.set_cache_index_and_filter_blocks(true);
    bb
}

/// Options of the `default` column family (the counters). `Options::default()` here would
/// give it RocksDB's 64 MiB memtable whatever the database-wide options say.
fn counters_options() -> Options {
    let mut o = Options::default();
    o.set_write_buffer_size(COUNTERS_MEMTABLE);
    o.set_max_write_buffer_number(2);
    o.set_block_based_table_factory(&table_options(4 << 10));
    o
}

/// Batches are compressed with zstd in 256 KiB blocks once they leave the memtable (that is,
/// only when a backlog builds up): a self-contained batch repeats its label dictionary, which
/// compresses away across the batches of a block (about a dozen of 1,000 series). A damaged
/// block loses the batches in it.
fn batches_options() -> Options {
    let mut o = Options::default();
    o.set_compression_type(rocksdb::DBCompressionType::Zstd);
    o.set_write_buffer_size(BATCHES_MEMTABLE);
    o.set_max_write_buffer_number(2);
    o.set_block_based_table_factory(&table_options(256 << 10));
    o
}

fn cf_descriptors() -> Vec<ColumnFamilyDescriptor> {
    vec![
        ColumnFamilyDescriptor::new("default", counters_options()),
        ColumnFamilyDescriptor::new(CF_BATCHES, batches_options()),
    ]
}

fn get_u64(db: &DB, key: &[u8]) -> Option<u64> {
    db.get(key)
        .ok()
        .flatten()
        .and_then(|v| v.as_slice().try_into().ok().map(u64::from_le_bytes))
}

/// Key of a batch evicted while in flight (`default` CF) → its samples (u64 LE).
fn pending_key(seq: u64) -> Vec<u8> {
    let mut k = b"pending/".to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn is_lock_error(e: &rocksdb::Error) -> bool {
    let m = e.to_string();
    m.contains("LOCK") || m.contains("lock")
}

/// Header of a stored batch: samples (u32 LE) · oldest timestamp (i64 LE, ms) · cycle (u64
/// LE) · position in its group (u32 LE).
fn header(samples: u64, oldest_ts: i64, cycle: u64, pos: u32) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0..4].copy_from_slice(&(samples.min(u32::MAX as u64) as u32).to_le_bytes());
    h[4..12].copy_from_slice(&oldest_ts.to_le_bytes());
    h[12..20].copy_from_slice(&cycle.to_le_bytes());
    h[20..24].copy_from_slice(&pos.to_le_bytes());
    h
}

struct Header {
    samples: u64,
    oldest_ts: i64,
    cycle: u64,
    /// Position in the group (0 for a self-contained batch).
    pos: u32,
    /// Header bytes: the payload starts here.
    len: usize,
}

/// The header of the batch stored as `v` under `seq`; batches below `group_from` have the
/// 20-byte header of a buffer made before groups (and are self-contained).
fn parse_header(v: &[u8], seq: u64, group_from: u64) -> Option<Header> {
    let len = if seq < group_from { HEADER_V1 } else { HEADER };
    (v.len() >= len).then(|| Header {
        samples: u32::from_le_bytes(v[0..4].try_into().unwrap_or_default()) as u64,
        oldest_ts: i64::from_le_bytes(v[4..12].try_into().unwrap_or_default()),
        cycle: u64::from_le_bytes(v[12..20].try_into().unwrap_or_default()),
        pos: if len == HEADER {
            u32::from_le_bytes(v[20..24].try_into().unwrap_or_default())
        } else {
            0
        },
        len,
    })
}

/// An acknowledgement of at most this many batches deletes them one by one rather than
/// with a range delete (see [`Buffer::ack`]).
const POINT_DELETES_AT_MOST: usize = 64;

/// Probing past an unreadable stretch stops after this many seqs with nothing readable,
/// beyond the highest seq the counters promise.
const PROBE_LIMIT: u64 = 1 << 16;

/// Visits every readable record of `batches` in seq order. An unreadable stretch (a damaged
/// block or table) does not end the scan: the seqs after it are probed one by one until a
/// readable one is found, and iteration resumes there. Returns whether anything was unreadable.
fn scan(
    db: &DB,
    cf: &rocksdb::ColumnFamily,
    promised_end: u64,
    mut f: impl FnMut(u64, &[u8]),
) -> bool {
    let mut from = 0u64;
    let mut damaged = false;
    'resume: loop {
        let mut last = None;
        let key = from.to_be_bytes();
        for item in db.iterator_cf(
            cf,
            rocksdb::IteratorMode::From(&key, rocksdb::Direction::Forward),
        ) {
            match item {
                Ok((k, v)) => match <[u8; 8]>::try_from(&k[..]) {
                    Ok(k) => {
                        let seq = u64::from_be_bytes(k);
                        last = Some(seq);
                        f(seq, &v);
                    }
                    Err(_) => damaged = true,
                },
                Err(_) => {
                    damaged = true;
                    let mut s = last.map_or(from, |l| l + 1);
                    let limit = promised_end.max(s).saturating_add(PROBE_LIMIT);
                    while s < limit {
                        match db.get_cf(cf, s.to_be_bytes()) {
                            Ok(Some(v)) => {
                                f(s, &v);
                                from = s + 1;
                                continue 'resume;
                            }
                            Ok(None) | Err(_) => s += 1,
                        }
                    }
                    return damaged;
                }
            }
        }
        return damaged;
    }
}

/// Opens the RocksDB folder; when RocksDB refuses it as damaged, repairs it and tries again;
/// when even that fails, sets the folder aside and starts an empty one, so a damaged buffer
/// never keeps the agent from starting.
fn open_db(path: &Path, dir: &str, recovery: &mut Recovery) -> Result<DB, BufferError> {
    let opts = db_options();
    match DB::open_cf_descriptors(&opts, path, cf_descriptors()) {
        Ok(db) => return Ok(db),
        Err(e) if is_lock_error(&e) => {
            return Err(BufferError::Locked {
                dir: dir.into(),
                source: e,
            });
        }
        Err(e) => tracing::warn!(dir, "buffer cannot be opened as it is ({e}); repairing it"),
    }
    recovery.repaired = true;
    if let Err(e) = DB::repair(&opts, path) {
        tracing::warn!(dir, "repair failed: {e}");
    }
    match DB::open_cf_descriptors(&opts, path, cf_descriptors()) {
        Ok(db) => return Ok(db),
        Err(e) => tracing::error!(
            dir,
            "buffer cannot be opened even after repair ({e}); setting it aside"
        ),
    }
    let aside = format!("{dir}.unreadable-{}", std::process::id());
    let _ = std::fs::remove_dir_all(&aside);
    std::fs::rename(path, &aside).map_err(|e| BufferError::Io {
        dir: dir.into(),
        what: "set the damaged buffer aside",
        source: e,
    })?;
    recovery.set_aside = Some(aside);
    DB::open_cf_descriptors(&opts, path, cf_descriptors()).map_err(|source| BufferError::Db {
        dir: dir.into(),
        source,
    })
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

impl Buffer {
    /// Opens (or creates) the buffer in `cfg.dir`, mending what a crash or damage left; see
    /// [`Recovery`] for what it reports.
    pub fn open(cfg: &BufferConfig) -> Result<Buffer, BufferError> {
        Self::open_with(cfg, GroupLimit::for_buffer(cfg.max_bytes.0))
    }

    /// [`Buffer::open`] with groups ending at `group_limit` instead of the default.
    pub fn open_with(cfg: &BufferConfig, group_limit: GroupLimit) -> Result<Buffer, BufferError> {
        let path = cfg.dir.clone();
        let dir = path.display().to_string();
        let rebuild_path = sibling(&path, ".rebuild");
        let old_path = sibling(&path, ".old");
        // A rebuild that was interrupted: finish the swap, or throw the half-made copy away.
        if rebuild_path.exists() {
            if path.exists() {
                let _ = std::fs::remove_dir_all(&rebuild_path);
            } else {
                std::fs::rename(&rebuild_path, &path).map_err(|e| BufferError::Io {
                    dir: dir.clone(),
                    what: "finish an interrupted rebuild",
                    source: e,
                })?;
            }
        }
        let _ = std::fs::remove_dir_all(&old_path);

        let mut recovery = Recovery::default();
        let mut db = open_db(&path, &dir, &mut recovery)?;
        let mut ledger = Ledger::new(cfg.max_bytes.0, cfg.when_full);
        let counters = |db: &DB| {
            (
                get_u64(db, b"next_seq"),
                get_u64(db, b"acked").unwrap_or(0),
                get_u64(db, b"first").unwrap_or(0),
                get_u64(db, b"cycles").unwrap_or(0),
            )
        };
        let (next_seq, acked, first, cycles) = counters(&db);
        // Missing in a folder made before groups: every batch in it has the old header.
        let stored_group_from = get_u64(&db, b"group_from");
        let group_from = stored_group_from.unwrap_or(u64::MAX);
        ledger.acked = acked;
        ledger.cycles = cycles;
        ledger.dropped_samples = get_u64(&db, b"dropped_samples").unwrap_or(0);
        ledger.dropped_batches = get_u64(&db, b"dropped_batches").unwrap_or(0);
        let mut damaged_before = get_u64(&db, b"damaged_batches").unwrap_or(0);
        for item in db.prefix_iterator(b"pending/") {
            let Ok((k, v)) = item else { break };
            let (Some(seq), Ok(samples)) = (
                k.strip_prefix(b"pending/")
                    .and_then(|s| <[u8; 8]>::try_from(s).ok()),
                <[u8; 8]>::try_from(&v[..]),
            ) else {
                break;
            };
            ledger
                .pending_drops
                .insert(u64::from_be_bytes(seq), u64::from_le_bytes(samples));
        }
        let live_from = first.max(acked + 1);

        let (found, marked, unreadable) = {
            let cf = db
                .cf_handle(CF_BATCHES)
                .ok_or_else(|| BufferError::Layout { dir: dir.clone() })?;
            let mut found: BTreeMap<u64, Entry> = BTreeMap::new();
            // Acknowledged or evicted batches still on disk, with their group positions: the
            // context of held batches of their groups, or left over.
            let mut below: BTreeMap<u64, u32> = BTreeMap::new();
            let mut bad_records = 0u64;
            // Seqs already counted as damaged (an empty value marks them).
            let mut marked: Vec<u64> = vec![];
            let unreadable = scan(&db, cf, next_seq.unwrap_or(0), |seq, v| match parse_header(
                v, seq, group_from,
            ) {
                _ if v.is_empty() => {
                    if seq >= live_from {
                        marked.push(seq);
                    }
                }
                Some(h) if seq < live_from => {
                    below.insert(seq, h.pos);
                }
                Some(h) => {
                    ledger.cycles = ledger.cycles.max(h.cycle);
                    found.insert(
                        seq,
                        Entry {
                            bytes: v.len() as u64,
                            samples: h.samples,
                            oldest_ts: h.oldest_ts,
                            key: seq - u64::from(h.pos).min(seq),
                            live: false,
                        },
                    );
                }
                None if seq < live_from => {}
                None => bad_records += 1,
            });
            // A batch past its group's first can be read only if every batch before it in the
            // group can: one that follows a missing or broken one is damaged too.
            let mut whole: BTreeMap<u64, u32> = BTreeMap::new();
            let readable = |whole: &BTreeMap<u64, u32>, seq: u64, pos: u32| {
                pos == 0 || whole.get(&(seq - 1)) == Some(&(pos - 1))
            };
            for (&seq, &pos) in &below {
                if readable(&whole, seq, pos) {
                    whole.insert(seq, pos);
                }
            }
            let mut broken = 0u64;
            found.retain(|&seq, e| {
                let pos = (seq - e.key) as u32;
                let ok = readable(&whole, seq, pos);
                if ok {
                    whole.insert(seq, pos);
                } else {
                    broken += 1;
                }
                ok
            });
            // Everything below the first held batch's group is deleted.
            let keep_from = found.values().next().map_or(live_from, |e| e.key);
            if below.range(..keep_from).next().is_some() {
                let mut wb = WriteBatch::default();
                wb.delete_range_cf(cf, 0u64.to_be_bytes(), keep_from.to_be_bytes());
                // Best effort: they are skipped at every open anyway.
                if let Err(e) = db.write(wb) {
                    tracing::warn!(dir, "cannot delete acknowledged batches: {e}");
                }
            }
            ledger.disk_from = keep_from;
            (found, marked, unreadable || bad_records > 0 || broken > 0)
        };
        // Every seq in [live_from, next_seq) was stored; one that cannot be read now is damaged.
        let max_found = found.keys().next_back().copied();
        let end = next_seq
            .unwrap_or(0)
            .max(max_found.map_or(0, |m| m + 1))
            .max(1);
        let start = if next_seq.is_some() {
            live_from
        } else {
            found.keys().next().copied().unwrap_or(live_from)
        };
        // Seqs the invariant promises that are neither whole nor counted before.
        let mut accounted: Vec<u64> = found
            .keys()
            .copied()
            .chain(marked.iter().copied())
            .filter(|s| (start..end).contains(s))
            .collect();
        accounted.sort_unstable();
        let damaged = end
            .saturating_sub(start)
            .saturating_sub(accounted.len() as u64);
        let mut damaged_at_open: Vec<std::ops::Range<u64>> = vec![];
        let mut at = start;
        for &seq in accounted.iter().chain([end].iter()) {
            if seq > at {
                damaged_at_open.push(at..seq);
            }
            at = at.max(seq + 1);
        }
        ledger.next_seq = end.max(acked + 1);
        let group_from = match stored_group_from {
            Some(g) => g,
            None => {
                // From here on batches carry their group position.
                let g = ledger.next_seq;
                db.put(b"group_from", g.to_le_bytes())
                    .map_err(|source| BufferError::Db {
                        dir: dir.clone(),
                        source,
                    })?;
                g
            }
        };
        for (seq, e) in &found {
            ledger.insert(*seq, *e);
        }
        if damaged > 0 || unreadable || recovery.repaired {
            damaged_before += damaged;
            recovery.damaged_batches = damaged;
            tracing::warn!(
                dir,
                damaged_batches = damaged,
                kept_batches = found.len(),
                "the buffer was damaged: every whole batch is kept, the damaged ones are skipped and counted"
            );
            db = rebuild(
                db,
                &path,
                &rebuild_path,
                &old_path,
                &dir,
                &ledger,
                damaged_before,
                group_from,
                marked
                    .into_iter()
                    .chain(damaged_at_open.iter().flat_map(|r| r.clone())),
            )?;
            recovery.rebuilt = true;
        }
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(cfg.sync);
        let b = Buffer {
            db: RwLock::new(Some(db)),
            ledger: Mutex::new(ledger),
            write_opts,
            path,
            dir,
            health: Mutex::default(),
            recovery,
            damaged: AtomicU64::new(0),
            recent: Mutex::default(),
            deferred: Mutex::default(),
            group_from,
            chain: Mutex::default(),
            group_limit,
            reader: Mutex::default(),
            damaged_at_open: Mutex::new(damaged_at_open),
        };
        b.damaged.store(damaged_before, Ordering::Relaxed);
        Ok(b)
    }

    /// Reads a buffer that no process has open, without changing it (for `status`).
    pub fn inspect(cfg: &BufferConfig) -> Result<BufferStats, BufferError> {
        let dir = cfg.dir.display().to_string();
        let db =
            DB::open_cf_descriptors_read_only(&db_options(), &cfg.dir, cf_descriptors(), false)
                .map_err(|source| BufferError::Db {
                    dir: dir.clone(),
                    source,
                })?;
        let cf = db
            .cf_handle(CF_BATCHES)
            .ok_or_else(|| BufferError::Layout { dir: dir.clone() })?;
        let acked = get_u64(&db, b"acked").unwrap_or(0);
        let live_from = get_u64(&db, b"first").unwrap_or(0).max(acked + 1);
        let mut s = BufferStats {
            next_seq: get_u64(&db, b"next_seq").unwrap_or(1),
            acked,
            cycles: get_u64(&db, b"cycles").unwrap_or(0),
            dropped_samples: get_u64(&db, b"dropped_samples").unwrap_or(0),
            dropped_batches: get_u64(&db, b"dropped_batches").unwrap_or(0),
            damaged_batches: get_u64(&db, b"damaged_batches").unwrap_or(0),
            ..BufferStats::default()
        };
        let next_seq = s.next_seq;
        let group_from = get_u64(&db, b"group_from").unwrap_or(u64::MAX);
        scan(&db, cf, next_seq, |seq, v| {
            if seq < live_from {
                return;
            }
            if let Some(h) = parse_header(v, seq, group_from) {
                s.batches += 1;
                s.bytes += v.len() as u64;
                s.cycles = s.cycles.max(h.cycle);
                s.oldest_ts = Some(s.oldest_ts.map_or(h.oldest_ts, |o| o.min(h.oldest_ts)));
            }
        });
        Ok(s)
    }

    /// What opening found and did.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    fn err(&self, source: rocksdb::Error) -> BufferError {
        BufferError::Db {
            dir: self.dir.clone(),
            source,
        }
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn health(&self) -> MutexGuard<'_, WriteHealth> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn recent(&self) -> MutexGuard<'_, VecDeque<(u64, u64, Vec<u8>)>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn deferred(&self) -> MutexGuard<'_, DeferredAck> {
        self.deferred.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn chain(&self) -> MutexGuard<'_, Option<Chain>> {
        self.chain.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reader(&self) -> MutexGuard<'_, Option<GroupReader>> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the open database. After a failed write the database is closed and opened
    /// again (RocksDB stops taking writes after an I/O error such as a full disk); until that
    /// succeeds, every call reports the last error.
    fn with_db<T>(
        &self,
        f: impl FnOnce(&DB, &rocksdb::ColumnFamily) -> Result<T, BufferError>,
    ) -> Result<T, BufferError> {
        if self.health().error.is_some() {
            self.reopen();
        }
        let g = self.db.read().unwrap_or_else(|p| p.into_inner());
        let Some(db) = g.as_ref() else {
            let reason = self.health().error.clone().unwrap_or_default();
            return Err(BufferError::Unavailable {
                dir: self.dir.clone(),
                reason,
            });
        };
        let cf = db
            .cf_handle(CF_BATCHES)
            .ok_or_else(|| BufferError::Layout {
                dir: self.dir.clone(),
            })?;
        f(db, cf)
    }

    fn reopen(&self) {
        let mut g = self.db.write().unwrap_or_else(|p| p.into_inner());
        *g = None;
        match DB::open_cf_descriptors(&db_options(), &self.path, cf_descriptors()) {
            Ok(db) => {
                *g = Some(db);
                let mut h = self.health();
                if let Some(e) = h.error.take() {
                    tracing::info!(dir = %self.dir, lost_cycles = h.lost_cycles, "buffer writes work again (after: {e})");
                }
            }
            Err(e) => {
                self.health().error = Some(e.to_string());
            }
        }
    }

    fn write_failed(&self, e: &rocksdb::Error) {
        let mut h = self.health();
        if h.error.is_none() {
            tracing::error!(dir = %self.dir, "buffer write failed: {e}; cycles are lost until writes work again (retried every cycle)");
        }
        h.error = Some(e.to_string());
    }

    /// Completed collection cycles, as persisted.
    pub fn cycles(&self) -> u64 {
        self.ledger().cycles
    }

    /// Stores one cycle's batch and the new cycle count in one atomic write. Returns the seq,
    /// or `None` when the when-full policy dropped the batch. The cycle counts either way, and
    /// also when the write fails, so a lost cycle shows as a gap in the cycle series.
    pub fn append(
        &self,
        cycle: u64,
        payload: &[u8],
        samples: u64,
        oldest_ts: i64,
    ) -> Result<Option<u64>, BufferError> {
        {
            // Counted before the write, which may not even be tried (database closed).
            let mut l = self.ledger();
            l.cycles = l.cycles.max(cycle);
        }
        let r = self.store(Some(cycle), payload, samples, oldest_ts);
        if r.is_err() {
            let mut h = self.health();
            h.lost_cycles += 1;
            h.lost_samples += samples;
        }
        r
    }

    /// Stores a batch that is not a collection cycle (scraped or pushed samples), under the
    /// same when-full policy.
    pub fn append_batch(
        &self,
        payload: &[u8],
        samples: u64,
        oldest_ts: i64,
    ) -> Result<Option<u64>, BufferError> {
        let r = self.store(None, payload, samples, oldest_ts);
        if r.is_err() {
            self.health().lost_samples += samples;
        }
        r
    }

    fn store(
        &self,
        cycle: Option<u64>,
        payload: &[u8],
        samples: u64,
        oldest_ts: i64,
    ) -> Result<Option<u64>, BufferError> {
        self.with_db(|db, cf| {
            let mut ledger = self.ledger();
            if let Some(c) = cycle {
                ledger.cycles = ledger.cycles.max(c);
            }
            let before = (
                ledger.next_seq,
                ledger.dropped_samples,
                ledger.dropped_batches,
                ledger.disk_from,
            );
            // Coded against the group before it is admitted, so the when-full policy weighs
            // what is stored.
            let mut chain = self.chain();
            let mut coded =
                self.continue_group(&mut chain, &ledger, ledger.next_seq, payload, samples);
            let size = |coded: &Option<(u64, u32, Vec<u8>)>| {
                (HEADER + coded.as_ref().map_or(payload.len(), |c| c.2.len())) as u64
            };
            let mut admit = ledger.admit(size(&coded), samples, oldest_ts);
            if let (Some((key, ..)), Admit::Store { seq, .. }) = (&coded, &admit)
                && ledger.key_of(seq - 1) != Some(*key)
            {
                // Making room evicted the group it was coded against: store it as it came.
                ledger.undo_admit(&admit);
                (
                    ledger.next_seq,
                    ledger.dropped_samples,
                    ledger.dropped_batches,
                    ledger.disk_from,
                ) = before;
                coded = None;
                admit = ledger.admit(size(&coded), samples, oldest_ts);
            }
            if coded.is_some() && admit == Admit::Reject {
                // The group's context took in a batch that is not stored.
                *chain = None;
            }
            let mut wb = WriteBatch::default();
            let seq = match &admit {
                Admit::Store { seq, evicted } => {
                    if let Some(last) = evicted.last() {
                        wb.delete_range_cf(cf, 0u64.to_be_bytes(), (last + 1).to_be_bytes());
                        wb.put(b"first", (last + 1).to_le_bytes());
                        ledger.disk_from = ledger.disk_from.max(last + 1);
                    }
                    for e in evicted {
                        if let Some(samples) = ledger.pending_drops.get(e) {
                            wb.put(pending_key(*e), samples.to_le_bytes());
                        }
                    }
                    let (key, pos, body) = match &coded {
                        Some((key, pos, delta)) => (*key, *pos, &delta[..]),
                        None => (*seq, 0, payload),
                    };
                    let mut v = Vec::with_capacity(HEADER + body.len());
                    v.extend_from_slice(&header(samples, oldest_ts, cycle.unwrap_or(0), pos));
                    v.extend_from_slice(body);
                    ledger.stored_as(*seq, key, v.len() as u64);
                    wb.put_cf(cf, seq.to_be_bytes(), &v);
                    if coded.is_none() {
                        // The last group's coder is kept: the next group's context is made
                        // from it (see `continue_group`).
                        let coder = chain.take().and_then(|c| c.coder);
                        *chain = Some(Chain {
                            key: *seq,
                            last: *seq,
                            pos: 0,
                            samples,
                            bytes: v.len() as u64,
                            coder,
                            coding: false,
                        });
                    }
                    Some(*seq)
                }
                Admit::Reject => None,
            };
            wb.put(b"next_seq", ledger.next_seq.to_le_bytes());
            wb.put(b"cycles", ledger.cycles.to_le_bytes());
            wb.put(b"dropped_samples", ledger.dropped_samples.to_le_bytes());
            wb.put(b"dropped_batches", ledger.dropped_batches.to_le_bytes());
            let deferred = self.deferred().drain_into(&mut wb, cf);
            if let Err(e) = db.write_opt(wb, &self.write_opts) {
                self.deferred().restore(deferred);
                // The group's context took in a batch that is not on disk: the next batch
                // starts a group of its own.
                *chain = None;
                // Undo the bookkeeping so memory matches disk; the caller reports the failure.
                ledger.undo_admit(&admit);
                (
                    ledger.next_seq,
                    ledger.dropped_samples,
                    ledger.dropped_batches,
                    ledger.disk_from,
                ) = before;
                drop(ledger);
                self.write_failed(&e);
                return Err(self.err(e));
            }
            let mut recent = self.recent();
            if let Admit::Store {
                evicted: ref ev, ..
            } = admit
                && let Some(&last) = ev.last()
            {
                recent.retain(|(s, ..)| *s > last);
            }
            drop(chain);
            Ok(seq.inspect(|&seq| {
                recent.push_back((seq, samples, payload.to_vec()));
                let mut bytes: usize = recent.iter().map(|(.., v)| v.len()).sum();
                while recent.len() > RECENT_BATCHES || (bytes > RECENT_BYTES && recent.len() > 1) {
                    if let Some((.., v)) = recent.pop_front() {
                        bytes -= v.len();
                    }
                }
            }))
        })
    }

    /// Codes `payload` (self-contained), to be stored as `seq`, against the group the batch
    /// before it belongs to, when that batch is still held and the group has room: returns
    /// the group's first seq, the batch's position in it and the coded batch. `None` when the
    /// batch starts a group (it is then stored as it came). Updates `chain` for a coded batch
    /// of `samples` samples.
    fn continue_group(
        &self,
        chain: &mut Option<Chain>,
        ledger: &Ledger,
        seq: u64,
        payload: &[u8],
        samples: u64,
    ) -> Option<(u64, u32, Vec<u8>)> {
        let c = chain.as_mut()?;
        let limit = &self.group_limit;
        if c.last + 1 != seq
            || c.pos + 1 >= limit.batches
            || c.samples >= limit.samples
            || c.bytes >= limit.bytes
            || ledger.key_of(seq - 1) != Some(c.key)
        {
            return None;
        }
        if !c.coding {
            // The group's first batch was stored as it came: it is the last one stored.
            let recent = self.recent();
            let (.., key_payload) = recent.iter().rev().find(|(s, ..)| *s == c.key)?;
            match &mut c.coder {
                Some(t) => t.continue_from(key_payload).ok()?,
                None => c.coder = Some(Transcoder::continuing(key_payload).ok()?),
            }
            c.coding = true;
        }
        let coded = c.coder.as_mut()?.transcode(payload).ok()?;
        c.last = seq;
        c.pos += 1;
        c.samples += samples;
        c.bytes += (HEADER + coded.len()) as u64;
        Some((c.key, c.pos, coded))
    }

    /// The batches [`Buffer::read_from`] would return, when every one of them is among the
    /// batches kept in memory since they were stored; `None` when any must be read from disk.
    /// Never touches RocksDB, so it can run on the async runtime.
    pub fn read_recent(
        &self,
        from: u64,
        max_batches: usize,
        max_bytes: usize,
    ) -> Option<Vec<StoredBatch>> {
        let ledger = self.ledger();
        let recent = self.recent();
        let mut out = vec![];
        let mut size = 0;
        for (&seq, _) in ledger.entries.range(from..).take(max_batches.max(1)) {
            let (_, samples, v) = recent.iter().find(|(s, ..)| *s == seq)?;
            size += v.len();
            out.push(StoredBatch {
                seq,
                samples: *samples,
                payload: v.clone(),
            });
            if size >= max_bytes {
                break;
            }
        }
        Some(out)
    }

    /// Up to `max_batches` stored batches with seq ≥ `from`, oldest first, stopping after
    /// `max_bytes` (at least one is returned if any exists), read from RocksDB (try
    /// [`Buffer::read_recent`] first). A batch that can no longer be read is skipped,
    /// counted as damaged and deleted.
    pub fn read_from(
        &self,
        from: u64,
        max_batches: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredBatch>, BufferError> {
        self.with_db(|db, cf| {
            // (seq, its group's first seq), and whether the batch after the last one listed
            // continues its group.
            let (wanted, continued): (Vec<(u64, u64)>, bool) = {
                let ledger = self.ledger();
                let mut it = ledger.entries.range(from..).map(|(s, e)| (*s, e.key));
                let wanted: Vec<(u64, u64)> = it.by_ref().take(max_batches.max(1)).collect();
                (wanted, it.next().is_some_and(|(s, k)| k < s))
            };
            let Some(&(first, first_key)) = wanted.first() else {
                return Ok(vec![]);
            };
            let mut reader = self.reader();
            if !reader
                .as_ref()
                .is_some_and(|r| r.key == first_key && r.next == first)
            {
                // Decode the group's batches before `first` (acknowledged ones included).
                *reader = None;
                if first_key < first {
                    let mut r = GroupReader {
                        key: first_key,
                        next: first_key,
                        un: Unchainer::new(),
                    };
                    let keys: Vec<[u8; 8]> = (first_key..first).map(|s| s.to_be_bytes()).collect();
                    for (s, v) in (first_key..first).zip(db.batched_multi_get_cf(cf, &keys, false))
                    {
                        let Ok(Some(v)) = v else { break };
                        let Some(h) = parse_header(&v, s, self.group_from) else {
                            break;
                        };
                        if r.un.unchain(&v[h.len..]).is_err() {
                            break;
                        }
                        r.next = s + 1;
                    }
                    if r.next == first {
                        *reader = Some(r);
                    }
                }
            }
            let mut out = vec![];
            let mut size = 0;
            let mut damaged = vec![];
            let keys: Vec<[u8; 8]> = wanted.iter().map(|(s, _)| s.to_be_bytes()).collect();
            let values = db.batched_multi_get_cf(cf, &keys, false);
            for (i, (&(seq, key), r)) in wanted.iter().zip(values).enumerate() {
                let v = match r {
                    Ok(Some(v)) => v,
                    Ok(None) => continue, // acknowledged or evicted meanwhile
                    Err(_) => {
                        damaged.push(seq);
                        continue;
                    }
                };
                let Some(h) = parse_header(&v, seq, self.group_from)
                    .filter(|h| seq - u64::from(h.pos).min(seq) == key)
                else {
                    damaged.push(seq);
                    continue;
                };
                let body = &v[h.len..];
                let payload = if h.pos == 0 {
                    // Self-contained as stored. Decoded only when the next batch needs it.
                    let next_continues = wanted
                        .get(i + 1)
                        .map_or(continued, |&(s, k)| k == seq && s == seq + 1);
                    *reader = None;
                    if next_continues {
                        let mut un = Unchainer::new();
                        if un.unchain(body).is_ok() {
                            *reader = Some(GroupReader {
                                key: seq,
                                next: seq + 1,
                                un,
                            });
                        }
                    }
                    body.to_vec()
                } else {
                    let unchained = reader
                        .as_mut()
                        .filter(|r| r.key == key && r.next == seq)
                        .map(|r| r.un.unchain(body));
                    match unchained {
                        Some(Ok(p)) => {
                            if let Some(r) = reader.as_mut() {
                                r.next = seq + 1;
                            }
                            p
                        }
                        _ => {
                            *reader = None;
                            damaged.push(seq);
                            continue;
                        }
                    }
                };
                size += payload.len();
                out.push(StoredBatch {
                    seq,
                    samples: h.samples,
                    payload,
                });
                if size >= max_bytes {
                    break;
                }
            }
            drop(reader);
            for seq in damaged {
                self.skip_damaged(seq);
            }
            Ok(out)
        })
    }

    /// Forgets a batch that cannot be read or decoded, and the held batches after it in its
    /// group (they are coded against it): counted, logged, and replaced on disk by an empty
    /// value that marks them as counted.
    pub fn skip_damaged(&self, seq: u64) {
        let (key, gone): (u64, Vec<u64>) = {
            let mut ledger = self.ledger();
            let Some(key) = ledger.key_of(seq) else {
                return;
            };
            let gone: Vec<u64> = ledger
                .entries
                .range(seq..)
                .take_while(|(s, e)| **s == seq || e.key == key)
                .map(|(s, _)| *s)
                .collect();
            for s in &gone {
                ledger.remove(*s);
            }
            (key, gone)
        };
        self.recent().retain(|(s, ..)| !gone.contains(s));
        {
            let mut reader = self.reader();
            if reader.as_ref().is_some_and(|r| r.key == key) {
                *reader = None;
            }
        }
        let n = gone.len() as u64;
        let total = self.damaged.fetch_add(n, Ordering::Relaxed) + n;
        tracing::error!(dir = %self.dir, seq, batches = n, damaged_batches = total, "skipping a damaged buffered batch and the rest of its group");
        let _ = self.with_db(|db, cf| {
            // An empty value marks each as counted, so a restart does not count it again.
            let mut wb = WriteBatch::default();
            for s in &gone {
                wb.put_cf(cf, s.to_be_bytes(), []);
            }
            wb.put(b"damaged_batches", total.to_le_bytes());
            db.write_opt(wb, &self.write_opts).map_err(|e| self.err(e))
        });
    }

    /// Deletes every batch up to and including `seq`: the aggregator has made them durable.
    ///
    /// An ack usually covers a batch or two: those are deleted one by one. A range delete
    /// would cost every later read of the memtable (RocksDB re-fragments all of a memtable's
    /// range tombstones on the first read after each new one: with a batch acknowledged
    /// every second, that was 7 % of a connected agent's CPU, in the read of the next batch
    /// to send). More batches at once (a backlog) take one range delete.
    pub fn ack(&self, seq: u64) -> Result<(), BufferError> {
        self.with_db(|db, cf| {
            let mut ledger = self.ledger();
            let prev = ledger.acked;
            // Pending drops are on disk exactly as in the ledger.
            let pending = ledger.pending_drops.range(..=seq).next().is_some();
            ledger.ack(seq);
            if ledger.acked == prev {
                return Ok(());
            }
            self.recent().retain(|(s, ..)| *s > seq);
            let mut wb = WriteBatch::default();
            let deferred = self.deferred().drain_into(&mut wb, cf);
            delete_batches(&mut wb, cf, ledger.release());
            if pending {
                wb.delete_range(pending_key(0), pending_key(ledger.acked + 1));
            }
            wb.put(b"acked", ledger.acked.to_le_bytes());
            if ledger.next_seq <= ledger.acked {
                // The aggregator has seqs this buffer never stored (it was restored from an
                // older copy or lost its tail): continue above them, or new batches would be
                // taken for resends and skipped.
                tracing::warn!(dir = %self.dir, acked = ledger.acked, next_seq = ledger.next_seq, "the aggregator is ahead of this buffer; continuing after its last seq");
                ledger.next_seq = ledger.acked + 1;
                wb.put(b"next_seq", ledger.next_seq.to_le_bytes());
            }
            drop(ledger);
            db.write_opt(wb, &self.write_opts).map_err(|e| {
                self.deferred().restore(deferred);
                self.write_failed(&e);
                self.err(e)
            })
        })
    }

    /// [`Buffer::ack`] without a write of its own, for the common acknowledgement of a batch
    /// or two: the ledger forgets the batches at once (their bytes are free for new ones and
    /// they are never sent again), and their deletes and the `acked` counter are written with
    /// the buffer's next write (the next cycle's batch, any other acknowledgement, or
    /// [`Buffer::flush`]). Returns false, doing nothing, when the acknowledgement needs its
    /// own write: a range delete of a backlog, pending drops to settle, or too much deferred.
    ///
    /// A crash before that write loses no data: the batches reappear at the next start and
    /// are offered again, and the aggregator's welcome (the highest seq it applied)
    /// acknowledges them before any is sent. Never touches RocksDB, so it can run on the
    /// async runtime.
    pub fn ack_deferred(&self, seq: u64) -> bool {
        let mut ledger = self.ledger();
        if seq <= ledger.acked {
            return true;
        }
        let mut deferred = self.deferred();
        // What the acknowledgement would release: up to the group of the first batch it
        // leaves held.
        let upto = ledger.release_bound(seq, seq + 1);
        let count = upto.saturating_sub(ledger.disk_from) as usize;
        if count > POINT_DELETES_AT_MOST
            || deferred.count() + count > DEFERRED_DELETES_AT_MOST
            || ledger.pending_drops.range(..=seq).next().is_some()
            || ledger.next_seq <= seq
        {
            return false;
        }
        ledger.ack(seq);
        let release = ledger.release();
        if !release.is_empty() {
            deferred.deletes.push(release);
        }
        deferred.acked = Some(ledger.acked);
        drop(deferred);
        drop(ledger);
        self.recent().retain(|(s, ..)| *s > seq);
        true
    }

    /// The lowest stored seq at or after `from`.
    pub fn next_at_or_after(&self, from: u64) -> Option<u64> {
        self.ledger().next_at_or_after(from)
    }

    /// See [`Ledger::mark_sent`].
    pub fn mark_sent(&self, seq: u64) {
        self.ledger().mark_sent(seq);
    }

    /// See [`Ledger::mark_live`].
    pub fn mark_live(&self, seq: u64) -> bool {
        self.ledger().mark_live(seq)
    }

    /// A session began: acknowledges up to `applied` and counts batches evicted while in
    /// flight that did not arrive as dropped (see [`Ledger::resolve_pending`]).
    pub fn session_started(&self, applied: u64) -> Result<(), BufferError> {
        self.ack(applied)?;
        self.settle_damaged(applied)?;
        self.with_db(|db, _| {
            let mut ledger = self.ledger();
            let gone = ledger.resolve_pending(applied);
            if gone.is_empty() {
                return Ok(());
            }
            tracing::warn!(dir = %self.dir, batches = gone.len(), "batches evicted while in flight did not arrive: counted as dropped");
            let mut wb = WriteBatch::default();
            wb.delete_range(pending_key(0), pending_key(u64::MAX));
            wb.put(b"dropped_samples", ledger.dropped_samples.to_le_bytes());
            wb.put(b"dropped_batches", ledger.dropped_batches.to_le_bytes());
            drop(ledger);
            db.write_opt(wb, &self.write_opts).map_err(|e| self.err(e))
        })
    }

    /// Batches counted as damaged at open that the aggregator has applied after all (sent
    /// before the buffer was damaged, their acknowledgement lost): no longer counted, so the
    /// count stays the seqs the aggregator lists as gaps.
    fn settle_damaged(&self, applied: u64) -> Result<(), BufferError> {
        let arrived: u64 = {
            let mut d = self
                .damaged_at_open
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let n = d
                .iter()
                .map(|r| r.end.min(applied + 1).saturating_sub(r.start))
                .sum();
            d.retain_mut(|r| {
                r.start = r.start.max(applied + 1);
                !r.is_empty()
            });
            n
        };
        if arrived == 0 {
            return Ok(());
        }
        let total = self
            .damaged
            .fetch_sub(arrived, Ordering::Relaxed)
            .saturating_sub(arrived);
        tracing::info!(dir = %self.dir, batches = arrived, damaged_batches = total, "batches counted as damaged had reached the aggregator before the damage; no longer counted");
        self.with_db(|db, _| {
            db.put_opt(b"damaged_batches", total.to_le_bytes(), &self.write_opts)
                .map_err(|e| self.err(e))
        })
    }

    /// Bytes of held batches with seq in `from..to` (what is in flight).
    pub fn bytes_between(&self, from: u64, to: u64) -> u64 {
        self.ledger().bytes_between(from, to)
    }

    pub fn stats(&self) -> BufferStats {
        let (lost_cycles, lost_samples, write_error) = {
            let h = self.health();
            (h.lost_cycles, h.lost_samples, h.error.clone())
        };
        let l = self.ledger();
        BufferStats {
            batches: l.batches() as u64,
            bytes: l.bytes(),
            oldest_ts: l.oldest_ts(),
            next_seq: l.next_seq,
            acked: l.acked,
            cycles: l.cycles,
            dropped_samples: l.dropped_samples,
            dropped_batches: l.dropped_batches,
            damaged_batches: self.damaged.load(Ordering::Relaxed),
            evicted_live_batches: l.evicted_live,
            lost_cycles,
            lost_samples,
            write_error,
        }
    }

    /// Writes memtables to table files, so a restart replays little log.
    pub fn flush(&self) -> Result<(), BufferError> {
        self.with_db(|db, cf| {
            self.write_deferred(db, cf)?;
            db.flush_wal(true).map_err(|e| self.err(e))?;
            db.flush_cf(cf).map_err(|e| self.err(e))?;
            db.flush().map_err(|e| self.err(e))
        })
    }

    /// Writes the deferred acknowledgements (see [`Buffer::ack_deferred`]) on their own;
    /// when the write fails they stay deferred.
    fn write_deferred(&self, db: &DB, cf: &rocksdb::ColumnFamily) -> Result<(), BufferError> {
        let mut wb = WriteBatch::default();
        let deferred = self.deferred().drain_into(&mut wb, cf);
        if wb.is_empty() {
            return Ok(());
        }
        db.write_opt(wb, &self.write_opts).map_err(|e| {
            self.deferred().restore(deferred);
            self.err(e)
        })
    }
}

impl Drop for Buffer {
    /// Writes the deferred acknowledgements, so a buffer closed cleanly opens without the
    /// batches it had acknowledged.
    fn drop(&mut self) {
        let _ = self.with_db(|db, cf| self.write_deferred(db, cf));
    }
}

/// Copies every whole batch and the counters into a fresh folder and swaps it in, so no
/// damaged block is left for reads or compactions to trip on.
#[allow(clippy::too_many_arguments)]
fn rebuild(
    db: DB,
    path: &Path,
    rebuild_path: &Path,
    old_path: &Path,
    dir: &str,
    ledger: &Ledger,
    damaged: u64,
    group_from: u64,
    markers: impl Iterator<Item = u64>,
) -> Result<DB, BufferError> {
    let io = |what: &'static str| {
        move |source| BufferError::Io {
            dir: dir.to_string(),
            what,
            source,
        }
    };
    let dberr = |source| BufferError::Db {
        dir: dir.to_string(),
        source,
    };
    let _ = std::fs::remove_dir_all(rebuild_path);
    {
        let new = DB::open_cf_descriptors(&db_options(), rebuild_path, cf_descriptors())
            .map_err(dberr)?;
        let (Some(cf_old), Some(cf_new)) = (db.cf_handle(CF_BATCHES), new.cf_handle(CF_BATCHES))
        else {
            return Err(BufferError::Layout { dir: dir.into() });
        };
        let mut wb = WriteBatch::default();
        let mut failed = None;
        // The held batches, and the acknowledged ones before them in their group.
        let context_upto = ledger.entries.keys().next().copied().unwrap_or(0);
        scan(&db, cf_old, ledger.next_seq, |seq, v| {
            let context = (ledger.disk_from..context_upto).contains(&seq);
            if failed.is_some() || !(context || ledger.entries.contains_key(&seq)) {
                return;
            }
            wb.put_cf(cf_new, seq.to_be_bytes(), v);
            if wb.len() >= 256
                && let Err(e) = new.write(std::mem::take(&mut wb))
            {
                failed = Some(e);
            }
        });
        if let Some(e) = failed {
            return Err(dberr(e));
        }
        for seq in markers {
            wb.put_cf(cf_new, seq.to_be_bytes(), []);
            if wb.len() >= 4096 {
                new.write(std::mem::take(&mut wb)).map_err(dberr)?;
            }
        }
        let first = ledger
            .entries
            .keys()
            .next()
            .copied()
            .unwrap_or(ledger.next_seq);
        for (k, v) in [
            (&b"next_seq"[..], ledger.next_seq),
            (b"acked", ledger.acked),
            (b"first", first),
            (b"cycles", ledger.cycles),
            (b"dropped_samples", ledger.dropped_samples),
            (b"dropped_batches", ledger.dropped_batches),
            (b"damaged_batches", damaged),
            (b"group_from", group_from),
        ] {
            wb.put(k, v.to_le_bytes());
        }
        for (seq, samples) in &ledger.pending_drops {
            wb.put(pending_key(*seq), samples.to_le_bytes());
        }
        new.write(wb).map_err(dberr)?;
        new.flush_wal(true).map_err(dberr)?;
        new.flush_cf(cf_new).map_err(dberr)?;
        new.flush().map_err(dberr)?;
    }
    drop(db);
    std::fs::rename(path, old_path).map_err(io("move the damaged buffer away"))?;
    std::fs::rename(rebuild_path, path).map_err(io("put the rebuilt buffer in place"))?;
    let _ = std::fs::remove_dir_all(old_path);
    DB::open_cf_descriptors(&db_options(), path, cf_descriptors()).map_err(dberr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_shared::units::ByteSize;
    use std::collections::VecDeque;

    #[test]
    fn drop_oldest_evicts_until_the_new_batch_fits() {
        let mut l = Ledger::new(100, WhenFull::DropOldest);
        assert_eq!(
            l.admit(40, 4, 1),
            Admit::Store {
                seq: 1,
                evicted: vec![]
            }
        );
        assert_eq!(
            l.admit(40, 4, 2),
            Admit::Store {
                seq: 2,
                evicted: vec![]
            }
        );
        assert_eq!(
            l.admit(40, 4, 3),
            Admit::Store {
                seq: 3,
                evicted: vec![1]
            }
        );
        assert_eq!(
            (l.bytes(), l.dropped_samples, l.dropped_batches),
            (80, 4, 1)
        );
        assert_eq!(l.admit(101, 9, 4), Admit::Reject);
        assert_eq!(l.dropped_samples, 13);
    }

    #[test]
    fn evicting_a_batch_in_flight_counts_it_only_if_it_never_arrives() {
        let mut l = Ledger::new(100, WhenFull::DropOldest);
        for i in 0..3 {
            l.admit(30, 10, i);
        }
        l.mark_sent(3);
        // 1 and 2 were in flight when evicted: undecided.
        assert_eq!(
            l.admit(60, 10, 5),
            Admit::Store {
                seq: 4,
                evicted: vec![1, 2]
            }
        );
        assert_eq!((l.dropped_batches, l.pending_drops.len()), (0, 2));
        // 1 was acknowledged: it arrived. A new session says the aggregator has nothing after 1.
        l.ack(1);
        assert_eq!(l.resolve_pending(1), vec![2]);
        assert_eq!(
            (l.dropped_batches, l.dropped_samples, l.pending_drops.len()),
            (1, 10, 0)
        );
        // No longer in flight after the new session: counted at once.
        assert_eq!(
            l.admit(60, 7, 6),
            Admit::Store {
                seq: 5,
                evicted: vec![3, 4]
            }
        );
        assert_eq!(
            (l.dropped_batches, l.dropped_samples, l.pending_drops.len()),
            (3, 30, 0)
        );
    }

    #[test]
    fn evicting_a_batch_copied_live_waits_for_the_ack_that_passes_it() {
        let mut l = Ledger::new(100, WhenFull::DropOldest);
        for i in 0..3 {
            l.admit(30, 10, i);
        }
        // 1 was sent on the batch stream; 3 was copied to the live stream; 2 was neither.
        l.mark_sent(1);
        assert!(l.mark_live(3));
        assert_eq!(
            l.admit(100, 10, 5),
            Admit::Store {
                seq: 4,
                evicted: vec![1, 2, 3]
            }
        );
        assert_eq!((l.dropped_batches, l.dropped_samples), (1, 10), "2 is lost");
        assert_eq!(l.evicted_live, 1);
        // 2, counted as dropped, may not be copied live afterwards.
        assert!(!l.mark_live(2), "an evicted batch is not marked");
        assert_eq!(l.pending_drops.keys().copied().collect::<Vec<_>>(), [1, 3]);
        // The batch stream goes on at 4; its acknowledgement says 1 and 3 were stored.
        l.ack(4);
        assert_eq!((l.dropped_batches, l.pending_drops.len()), (1, 0));

        // A copy the connection carried, evicted: the next connection's aggregator knows
        // nothing of it, so it is dropped unless applied.
        assert!(!l.mark_live(5), "not held yet: no effect");
        l.admit(30, 10, 6);
        assert!(l.mark_live(5));
        l.admit(30, 10, 7);
        assert_eq!(l.resolve_pending(4), Vec::<u64>::new());
        // The mark went with the old connection: eviction now counts 5 at once.
        assert_eq!(
            l.admit(80, 10, 8),
            Admit::Store {
                seq: 7,
                evicted: vec![5, 6]
            }
        );
        assert_eq!((l.dropped_batches, l.pending_drops.len()), (3, 0));
        l.mark_live(7);
        l.admit(100, 10, 9);
        assert_eq!(l.resolve_pending(4), vec![7], "never applied: dropped");
        assert_eq!((l.dropped_batches, l.evicted_live), (4, 2));
    }

    #[test]
    fn drop_newest_keeps_what_is_buffered() {
        let mut l = Ledger::new(100, WhenFull::DropNewest);
        l.admit(60, 1, 1);
        assert_eq!(l.admit(60, 5, 2), Admit::Reject);
        assert_eq!((l.batches(), l.dropped_samples, l.next_seq), (1, 5, 2));
    }

    #[test]
    fn acks_release_bytes_and_ignore_old_seqs() {
        let mut l = Ledger::new(1000, WhenFull::DropOldest);
        for i in 0..5 {
            l.admit(10, 1, i);
        }
        assert_eq!(l.ack(3), vec![1, 2, 3]);
        assert_eq!(l.ack(2), Vec::<u64>::new());
        assert_eq!(
            (l.bytes(), l.next_at_or_after(0), l.oldest_ts()),
            (20, Some(4), Some(3))
        );
    }

    /// The ledger against a plain queue model, over random operations.
    #[test]
    fn ledger_matches_a_queue_model() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let max = rng.u64(50..500);
            let mut l = Ledger::new(max, WhenFull::DropOldest);
            let mut model: VecDeque<(u64, u64)> = VecDeque::new();
            let mut dropped = 0;
            for _ in 0..100 {
                if rng.bool() {
                    let b = rng.u64(1..120);
                    let seq = l.next_seq;
                    match l.admit(b, 1, 0) {
                        Admit::Store { .. } => {
                            while model.iter().map(|e| e.1).sum::<u64>() + b > max {
                                model.pop_front();
                                dropped += 1;
                            }
                            model.push_back((seq, b));
                        }
                        Admit::Reject => {
                            assert!(b > max);
                            dropped += 1;
                        }
                    }
                } else if let Some(&(s, _)) = model.get(
                    rng.usize(0..model.len().max(1))
                        .min(model.len().saturating_sub(1)),
                ) {
                    l.ack(s);
                    while model.front().is_some_and(|e| e.0 <= s) {
                        model.pop_front();
                    }
                }
                assert_eq!(l.bytes(), model.iter().map(|e| e.1).sum::<u64>());
                assert_eq!(l.batches(), model.len());
                assert_eq!(l.dropped_batches, dropped);
            }
        }
    }

    /// Opens a buffer whose groups end after 64 of [`cycles`]' batches (50 samples each)
    /// and at no byte size.
    fn open(dir: &std::path::Path, max: u64) -> Buffer {
        Buffer::open_with(
            &cfg(dir, max),
            GroupLimit {
                samples: 64 * 50,
                batches: GroupLimit::BATCHES,
                bytes: u64::MAX,
            },
        )
        .unwrap()
    }

    fn cfg(dir: &std::path::Path, max: u64) -> BufferConfig {
        BufferConfig {
            dir: dir.to_path_buf(),
            max_bytes: ByteSize(max),
            when_full: WhenFull::DropOldest,
            sync: false,
        }
    }

    #[test]
    fn non_cycle_batches_share_the_ledger_but_not_the_cycle_count() {
        let dir = std::env::temp_dir().join(format!("outpost-buf-batch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let b = open(&dir, 1 << 20);
            assert_eq!(b.append(1, &[1; 10], 2, 1).unwrap(), Some(1));
            assert_eq!(b.append_batch(&[9; 20], 3, 0).unwrap(), Some(2));
            assert_eq!(b.append(2, &[2; 10], 2, 2).unwrap(), Some(3));
            let s = b.stats();
            assert_eq!(
                (s.batches, s.cycles, s.next_seq, s.oldest_ts),
                (3, 2, 4, Some(0))
            );
        }
        let b = open(&dir, 1 << 20);
        let s = b.stats();
        assert_eq!((s.batches, s.cycles, s.next_seq), (3, 2, 4));
        assert_eq!(
            b.read_from(2, 1, 1 << 20).unwrap()[0].payload,
            vec![9u8; 20]
        );
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The seqs of the batches on disk, read with RocksDB directly.
    fn keys_on_disk(dir: &std::path::Path) -> Vec<u64> {
        let db = DB::open_cf_descriptors(&db_options(), dir, cf_descriptors()).unwrap();
        let cf = db.cf_handle(CF_BATCHES).unwrap();
        db.iterator_cf(cf, rocksdb::IteratorMode::Start)
            .map(|kv| u64::from_be_bytes(kv.unwrap().0[..].try_into().unwrap()))
            .collect()
    }

    #[test]
    fn acks_delete_exactly_the_acknowledged_batches() {
        let dir = std::env::temp_dir().join(format!("outpost-buf-ack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let b = open(&dir, 1 << 20);
            for c in 1..=100u64 {
                b.append(c, &[c as u8; 10], 2, c as i64).unwrap();
            }
            // One by one (a batch or two per ack), then a backlog at once (a range).
            b.ack(1).unwrap();
            b.ack(3).unwrap();
            assert_eq!(b.read_from(0, 1, 1 << 20).unwrap()[0].seq, 4);
            b.ack(90).unwrap();
            assert_eq!(b.read_from(0, 1, 1 << 20).unwrap()[0].seq, 91);
        }
        assert_eq!(keys_on_disk(&dir), (91..=100).collect::<Vec<_>>());
        // A batch below the acknowledged seq that is still there (nothing deletes it
        // otherwise) is deleted at the next open, and never offered again.
        {
            let db = DB::open_cf_descriptors(&db_options(), &dir, cf_descriptors()).unwrap();
            let cf = db.cf_handle(CF_BATCHES).unwrap();
            db.put_cf(cf, 7u64.to_be_bytes(), [0u8; HEADER + 4])
                .unwrap();
        }
        let b = open(&dir, 1 << 20);
        assert_eq!(b.read_from(0, 1, 1 << 20).unwrap()[0].seq, 91);
        assert_eq!(b.stats().batches, 10);
        drop(b);
        assert_eq!(keys_on_disk(&dir), (91..=100).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Collection cycles of 50 series (gauges that wander, counters that grow, constants),
    /// self-contained as the agent makes them, with the batches they encode.
    fn cycles(n: u64) -> Vec<(outpost_shared::Batch, Vec<u8>)> {
        use outpost_shared::{Batch, Labels, codec::Encoder};
        let labels: Vec<Labels> = (0..50)
            .map(|i| {
                Labels::new([
                    ("__name__", format!("node_metric_{}", i % 7)),
                    ("instance", "host-1:9100".into()),
                    ("cpu", i.to_string()),
                ])
            })
            .collect();
        let mut rng = fastrand::Rng::with_seed(11);
        (1..=n)
            .map(|c| {
                let mut b = Batch::default();
                for (i, l) in labels.iter().enumerate() {
                    let v = match i % 3 {
                        0 => (rng.f64() * 1000.0).round() / 100.0,
                        1 => (c * (i as u64 + 1) * 17) as f64,
                        _ => 42.0,
                    };
                    b.push(l.clone(), 1_700_000_000_000 + c as i64 * 10_000, v);
                }
                let payload = Encoder::new().encode(&b);
                (b, payload)
            })
            .collect()
    }

    /// Appends every cycle of `cyc` to `b`, cycle number and seq counting from 1.
    fn append_all(b: &Buffer, cyc: &[(outpost_shared::Batch, Vec<u8>)]) {
        for (c, (batch, payload)) in cyc.iter().enumerate() {
            let c = c as u64 + 1;
            let seq = b
                .append(c, payload, batch.sample_count() as u64, 0)
                .unwrap();
            assert_eq!(seq, Some(c));
        }
    }

    fn decoded(batches: &[StoredBatch]) -> Vec<(u64, outpost_shared::Batch)> {
        batches
            .iter()
            .map(|b| {
                let batch = outpost_shared::codec::Decoder::new()
                    .decode(&b.payload)
                    .unwrap_or_else(|e| panic!("batch {} is not self-contained: {e}", b.seq));
                (b.seq, batch)
            })
            .collect()
    }

    #[test]
    fn a_backlog_is_stored_in_groups_and_read_back_self_contained() {
        let dir = std::env::temp_dir().join(format!("outpost-buf-groups-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cyc = cycles(150);
        let want = |r: std::ops::RangeInclusive<u64>| {
            r.map(|s| (s, cyc[s as usize - 1].0.clone()))
                .collect::<Vec<_>>()
        };
        let alone: u64 = cyc.iter().map(|(_, p)| (HEADER + p.len()) as u64).sum();
        {
            let b = open(&dir, 1 << 30);
            append_all(&b, &cyc);
            // Groups of 64 batches: the first of each stored as it came, the rest coded
            // against it, in a fraction of the self-contained bytes.
            {
                let l = b.ledger();
                for s in 1..=150u64 {
                    let key = 1 + (s - 1) / 64 * 64;
                    assert_eq!(l.key_of(s), Some(key), "seq {s}");
                }
            }
            let stored = b.stats().bytes;
            assert!(
                stored * 4 < alone,
                "{stored} bytes stored against {alone} self-contained"
            );
            // Read back from disk, from the start and from the middle of a group (which
            // decodes the group from its first batch), in pieces that continue each other.
            assert_eq!(
                decoded(&b.read_from(1, 150, 1 << 30).unwrap()),
                want(1..=150)
            );
            assert_eq!(
                decoded(&b.read_from(70, 5, 1 << 30).unwrap()),
                want(70..=74)
            );
            assert_eq!(
                decoded(&b.read_from(75, 60, 1 << 30).unwrap()),
                want(75..=134)
            );
            // What the uplink sends next comes from memory, as given.
            let mem = b.read_recent(150, 1, 1 << 30).unwrap();
            assert_eq!(mem[0].payload, cyc[149].1);
            // Acknowledged batches stay on disk while a later batch of their group is held.
            b.ack(70).unwrap();
            assert_eq!(b.stats().batches, 80);
            b.crash();
        }
        assert_eq!(keys_on_disk(&dir), (65..=150).collect::<Vec<_>>());
        {
            // After a crash the context is still there: the rest reads back whole.
            let b = open(&dir, 1 << 30);
            assert_eq!(b.stats().damaged_batches, 0);
            assert_eq!(
                decoded(&b.read_from(0, 150, 1 << 30).unwrap()),
                want(71..=150)
            );
            // Once a group is acknowledged to its end, it goes.
            b.ack(128).unwrap();
            // The context a group was coded in is gone with the process: the next batch
            // starts a group of its own.
            let next = cycles(151).pop().unwrap();
            b.append(151, &next.1, 50, 0).unwrap();
            assert_eq!(b.ledger().key_of(151), Some(151));
            assert_eq!(
                decoded(&b.read_from(151, 1, 1 << 30).unwrap()),
                vec![(151, next.0)]
            );
        }
        assert_eq!(keys_on_disk(&dir), (129..=151).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_connected_agent_stores_every_batch_as_it_came() {
        let dir = std::env::temp_dir().join(format!("outpost-buf-alone-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cyc = cycles(5);
        {
            let b = open(&dir, 1 << 30);
            for (c, (_, payload)) in cyc.iter().enumerate() {
                let seq = b.append(c as u64 + 1, payload, 50, 0).unwrap().unwrap();
                assert_eq!(b.ledger().key_of(seq), Some(seq));
                if seq < 5 {
                    assert!(b.ack_deferred(seq));
                }
            }
            b.crash();
        }
        // Batch 5, never acknowledged, is on disk exactly as given.
        let db = DB::open_cf_descriptors(&db_options(), &dir, cf_descriptors()).unwrap();
        let v = db
            .get_cf(db.cf_handle(CF_BATCHES).unwrap(), 5u64.to_be_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(&v[HEADER..], &cyc[4].1[..]);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_batch_takes_the_rest_of_its_group_and_only_that() {
        let dir = std::env::temp_dir().join(format!("outpost-buf-gdamage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cyc = cycles(200);
        {
            let b = open(&dir, 1 << 30);
            append_all(&b, &cyc);
        }
        {
            // Batch 80 is lost and batch 140's codes are garbled (its header intact).
            let db = DB::open_cf_descriptors(&db_options(), &dir, cf_descriptors()).unwrap();
            let cf = db.cf_handle(CF_BATCHES).unwrap();
            db.delete_cf(cf, 80u64.to_be_bytes()).unwrap();
            let mut v = db.get_cf(cf, 140u64.to_be_bytes()).unwrap().unwrap();
            for byte in &mut v[HEADER..] {
                *byte = 0xff;
            }
            db.put_cf(cf, 140u64.to_be_bytes(), &v).unwrap();
        }
        let b = open(&dir, 1 << 30);
        // At open: 80 is missing, so 81..=128 (coded against it) cannot be read either.
        assert_eq!(b.recovery().damaged_batches, 49);
        let seqs: Vec<u64> = decoded(&b.read_from(0, 200, 1 << 30).unwrap())
            .into_iter()
            .map(|(s, batch)| {
                assert_eq!(batch, cyc[s as usize - 1].0);
                s
            })
            .collect();
        // When read: 140 does not decode, so 141..=192 go with it; the next group is whole.
        let expect: Vec<u64> = (1..=79).chain(129..=139).chain(193..=200).collect();
        assert_eq!(seqs, expect);
        assert_eq!(b.stats().damaged_batches, 49 + 53);
        assert_eq!(b.stats().batches, expect.len() as u64);
        // The aggregator's welcome says it has everything up to 100: 80..=100, counted as
        // damaged at open, had arrived before the damage, so they are no longer counted.
        b.session_started(100).unwrap();
        assert_eq!(b.stats().damaged_batches, 49 + 53 - 21);
        drop(b);
        let b = open(&dir, 1 << 30);
        assert_eq!(b.stats().damaged_batches, 49 + 53 - 21);
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn eviction_takes_whole_groups_and_counts_every_batch() {
        let dir = std::env::temp_dir().join(format!("outpost-buf-gevict-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cyc = cycles(400);
        let b = open(&dir, 16 << 10);
        append_all(&b, &cyc);
        let st = b.stats();
        let first = b.next_at_or_after(0).unwrap();
        // What is left starts at a group's first batch; everything before it was evicted,
        // counted batch by batch.
        assert_eq!(b.ledger().key_of(first), Some(first));
        assert!(first > 1 + 64, "{first}");
        assert_eq!(st.dropped_batches, first - 1);
        assert_eq!(st.dropped_samples, (first - 1) * 50);
        assert_eq!(st.batches, 400 - (first - 1));
        assert!(st.bytes <= 16 << 10);
        let got = decoded(&b.read_from(0, 400, 1 << 30).unwrap());
        assert_eq!(got.len() as u64, st.batches);
        for (s, batch) in got {
            assert_eq!(batch, cyc[s as usize - 1].0);
        }
        drop(b);
        assert_eq!(keys_on_disk(&dir).first(), Some(&first));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn groups_end_at_a_sample_count_so_small_batches_make_longer_groups() {
        let dir = std::env::temp_dir().join(format!("outpost-buf-glen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cyc = cycles(300);
        let b = Buffer::open_with(
            &cfg(&dir, 1 << 30),
            GroupLimit {
                samples: 100 * 50,
                ..GroupLimit::for_buffer(1 << 30)
            },
        )
        .unwrap();
        append_all(&b, &cyc);
        {
            let l = b.ledger();
            for s in 1..=300u64 {
                assert_eq!(l.key_of(s), Some(1 + (s - 1) / 100 * 100), "seq {s}");
            }
        }
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
        // The default: 64,000 samples, so 300 batches of 50 share one group.
        let b = Buffer::open(&cfg(&dir, 1 << 30)).unwrap();
        append_all(&b, &cyc);
        assert!((1..=300u64).all(|s| b.ledger().key_of(s) == Some(1)));
        assert_eq!(decoded(&b.read_from(250, 50, 1 << 30).unwrap()).len(), 50);
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_full_buffer_evicts_at_most_a_quarter_of_itself_at_a_time() {
        let dir = std::env::temp_dir().join(format!("outpost-buf-gbytes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cyc = cycles(2000);
        let max = 64 << 10;
        let b = Buffer::open(&cfg(&dir, max)).unwrap();
        let mut held = vec![];
        for (i, (_, payload)) in cyc.iter().enumerate() {
            b.append(i as u64 + 1, payload, 50, 1).unwrap();
            held.push(b.stats().bytes);
        }
        let st = b.stats();
        assert!(st.dropped_batches > 0, "the buffer filled");
        // Groups hold a quarter of the buffer (the batch that passes it included), so an
        // eviction never empties the buffer: once full, it always holds most of its size.
        let biggest = cyc
            .iter()
            .map(|(_, p)| (HEADER + p.len()) as u64)
            .max()
            .unwrap();
        let mut sizes: BTreeMap<u64, u64> = BTreeMap::new();
        for e in b.ledger().entries.values() {
            *sizes.entry(e.key).or_default() += e.bytes;
        }
        assert!(sizes.len() > 2, "{sizes:?}");
        assert!(sizes.values().all(|&g| g < max / 4 + biggest), "{sizes:?}");
        let full_at = held.iter().position(|&h| h + biggest > max).unwrap();
        assert!(
            held[full_at..]
                .iter()
                .all(|&h| h + max / 4 + 2 * biggest > max),
            "{:?}",
            &held[full_at..]
        );
        assert_eq!(
            decoded(&b.read_from(0, 2000, 1 << 30).unwrap()).len() as u64,
            st.batches
        );
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_buffer_made_before_groups_is_read_and_continued() {
        let dir = std::env::temp_dir().join(format!("outpost-buf-v1-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cyc = cycles(10);
        {
            // As an older agent left it: 20-byte headers, no `group_from`.
            let db = DB::open_cf_descriptors(&db_options(), &dir, cf_descriptors()).unwrap();
            let cf = db.cf_handle(CF_BATCHES).unwrap();
            for s in 1..=5u64 {
                let mut v = header(50, 0, s, 0)[..HEADER_V1].to_vec();
                v.extend_from_slice(&cyc[s as usize - 1].1);
                db.put_cf(cf, s.to_be_bytes(), &v).unwrap();
            }
            db.put(b"next_seq", 6u64.to_le_bytes()).unwrap();
            db.put(b"cycles", 5u64.to_le_bytes()).unwrap();
        }
        {
            let b = open(&dir, 1 << 30);
            assert_eq!((b.stats().batches, b.stats().damaged_batches), (5, 0));
            for s in 6..=10u64 {
                b.append(s, &cyc[s as usize - 1].1, 50, 0).unwrap();
            }
        }
        let b = open(&dir, 1 << 30);
        let got = decoded(&b.read_from(0, 10, 1 << 30).unwrap());
        let want: Vec<_> = (1..=10u64)
            .map(|s| (s, cyc[s as usize - 1].0.clone()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(b.ledger().key_of(10), Some(6));
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    }

    impl Buffer {
        /// Closes the database without the writes a clean close makes, as `kill -9` would.
        fn crash(self) {
            drop(self.db.write().unwrap().take());
        }
    }

    #[test]
    fn recent_batches_come_from_memory_and_deferred_acks_ride_on_the_next_write() {
        let dir = std::env::temp_dir().join(format!("outpost-buf-recent-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let seqs = |v: &[StoredBatch]| v.iter().map(|b| b.seq).collect::<Vec<_>>();
        {
            let b = open(&dir, 1 << 20);
            for c in 1..=10u64 {
                b.append(c, &[c as u8; 10], 2, c as i64).unwrap();
            }
            // The last RECENT_BATCHES are in memory; older ones only on disk.
            assert!(b.read_recent(1, 10, 1 << 20).is_none());
            let mem = b.read_recent(3, 10, 1 << 20).unwrap();
            assert_eq!(seqs(&mem), (3..=10).collect::<Vec<_>>());
            assert_eq!((mem[0].payload.clone(), mem[0].samples), (vec![3u8; 10], 2));
            assert_eq!(seqs(&b.read_recent(9, 10, 10).unwrap()), vec![9]);
            assert_eq!(
                seqs(&b.read_from(1, 10, 1 << 20).unwrap()),
                (1..=10).collect::<Vec<_>>()
            );
            // Deferred: the ledger forgets at once, the disk with the next write.
            assert!(b.ack_deferred(4));
            assert_eq!((b.stats().batches, b.stats().acked), (6, 4));
            assert_eq!(seqs(&b.read_from(0, 1, 1 << 20).unwrap()), vec![5]);
            b.append(11, &[11; 10], 2, 11).unwrap();
            // A backlog's acknowledgement needs its own write.
            for c in 12..=100u64 {
                b.append(c, &[c as u8; 10], 2, c as i64).unwrap();
            }
            assert!(!b.ack_deferred(90));
            b.ack(90).unwrap();
            assert!(b.ack_deferred(91));
            b.crash();
        }
        // Batch 91's ack was never written: it is offered again after the crash, until the
        // aggregator's welcome says it has it.
        assert_eq!(keys_on_disk(&dir), (91..=100).collect::<Vec<_>>());
        {
            let b = open(&dir, 1 << 20);
            assert_eq!((b.stats().batches, b.stats().acked), (10, 90));
            b.session_started(91).unwrap();
            assert_eq!(seqs(&b.read_from(0, 1, 1 << 20).unwrap()), vec![92]);
            assert!(b.ack_deferred(93));
        }
        // A clean close writes what was deferred.
        assert_eq!(keys_on_disk(&dir), (94..=100).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reopening_keeps_unacked_batches_and_counters() {
        let dir = std::env::temp_dir().join(format!("outpost-buf-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let b = open(&dir, 1 << 20);
            for c in 1..=5u64 {
                assert_eq!(b.append(c, &[c as u8; 10], 2, c as i64).unwrap(), Some(c));
            }
            b.ack(2).unwrap();
        }
        let b = open(&dir, 1 << 20);
        let s = b.stats();
        assert_eq!((s.batches, s.acked, s.next_seq, s.cycles), (3, 2, 6, 5));
        let got = b.read_from(0, 10, 1 << 20).unwrap();
        assert_eq!(got.iter().map(|g| g.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(got[0].payload, vec![3u8; 10]);
        assert_eq!(b.read_from(4, 1, 1 << 20).unwrap()[0].seq, 4);
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
