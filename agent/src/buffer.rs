//! The agent's durable buffer: every batch is written here, keyed by its seq, before it is
//! first sent, and deleted only when the aggregator has acknowledged it.
//!
//! Layout (RocksDB, two column families):
//! - `batches`: key = seq (u64 big-endian) → value = samples (u32 LE) · oldest timestamp
//!   (i64 LE, ms) · self-contained codec payload.
//! - `default`: counters that must survive restarts (`next_seq`, `cycles`, `acked`,
//!   `dropped_samples`, `dropped_batches`), each u64 LE, written in the same atomic batch as
//!   the data they describe.
//!
//! The [`Ledger`] holds the bookkeeping (sizes, when-full policy, acknowledgements) as pure
//! state; [`Buffer`] applies its decisions to RocksDB.

use crate::config::{BufferConfig, WhenFull};
use rocksdb::{ColumnFamilyDescriptor, DB, Options, WriteBatch, WriteOptions};
use std::collections::BTreeMap;
use std::sync::Mutex;

const CF_BATCHES: &str = "batches";
const HEADER: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("buffer at {dir}: {source}")]
    Db {
        dir: String,
        #[source]
        source: rocksdb::Error,
    },
    #[error("buffer at {dir}: column family \"{CF_BATCHES}\" is missing; the folder is not an Outpost buffer")]
    Layout { dir: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    bytes: u64,
    samples: u64,
    oldest_ts: i64,
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
        }
    }

    /// Decides where a batch of `bytes` goes; the decision is already applied to the ledger.
    pub fn admit(&mut self, bytes: u64, samples: u64, oldest_ts: i64) -> Admit {
        if bytes > self.max_bytes || (self.policy == WhenFull::DropNewest && self.total_bytes + bytes > self.max_bytes) {
            self.dropped_batches += 1;
            self.dropped_samples += samples;
            return Admit::Reject;
        }
        let mut evicted = vec![];
        while self.total_bytes + bytes > self.max_bytes {
            let Some((seq, e)) = self.entries.pop_first() else { break };
            self.total_bytes -= e.bytes;
            self.dropped_batches += 1;
            self.dropped_samples += e.samples;
            evicted.push(seq);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.insert(seq, Entry { bytes, samples, oldest_ts });
        Admit::Store { seq, evicted }
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
}

pub struct StoredBatch {
    pub seq: u64,
    pub samples: u64,
    pub payload: Vec<u8>,
}

pub struct Buffer {
    db: DB,
    ledger: Mutex<Ledger>,
    write_opts: WriteOptions,
    dir: String,
}

fn db_options() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    // A small, steady footprint: the buffer is a queue, not a database people query.
    o.set_max_open_files(64);
    o.set_write_buffer_size(4 << 20);
    o.set_max_write_buffer_number(2);
    o.set_max_total_wal_size(32 << 20);
    o.set_keep_log_file_num(2);
    o.set_max_background_jobs(1);
    let mut bb = rocksdb::BlockBasedOptions::default();
    bb.set_block_cache(&rocksdb::Cache::new_lru_cache(2 << 20));
    o.set_block_based_table_factory(&bb);
    o
}

fn get_u64(db: &DB, key: &[u8]) -> Result<u64, rocksdb::Error> {
    Ok(db
        .get(key)?
        .and_then(|v| v.as_slice().try_into().ok().map(u64::from_le_bytes))
        .unwrap_or(0))
}

impl Buffer {
    pub fn open(cfg: &BufferConfig) -> Result<Buffer, BufferError> {
        let dir = cfg.dir.display().to_string();
        let err = |source| BufferError::Db { dir: dir.clone(), source };
        let cfs = vec![
            ColumnFamilyDescriptor::new("default", Options::default()),
            ColumnFamilyDescriptor::new(CF_BATCHES, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&db_options(), &cfg.dir, cfs).map_err(err)?;
        let mut ledger = Ledger::new(cfg.max_bytes.0, cfg.when_full);
        ledger.next_seq = get_u64(&db, b"next_seq").map_err(err)?.max(1);
        ledger.acked = get_u64(&db, b"acked").map_err(err)?;
        ledger.cycles = get_u64(&db, b"cycles").map_err(err)?;
        ledger.dropped_samples = get_u64(&db, b"dropped_samples").map_err(err)?;
        ledger.dropped_batches = get_u64(&db, b"dropped_batches").map_err(err)?;
        {
            let cf = db.cf_handle(CF_BATCHES).ok_or_else(|| BufferError::Layout { dir: dir.clone() })?;
            for item in db.iterator_cf(&cf, rocksdb::IteratorMode::Start) {
                let (k, v) = item.map_err(err)?;
                let (Ok(k), true) = (<[u8; 8]>::try_from(&k[..]), v.len() >= HEADER) else {
                    tracing::warn!(dir = %dir, "skipping a damaged buffer record");
                    continue;
                };
                let seq = u64::from_be_bytes(k);
                if seq <= ledger.acked {
                    continue;
                }
                let samples = u32::from_le_bytes(v[0..4].try_into().unwrap_or_default()) as u64;
                let oldest_ts = i64::from_le_bytes(v[4..12].try_into().unwrap_or_default());
                ledger.insert(seq, Entry { bytes: v.len() as u64, samples, oldest_ts });
                ledger.next_seq = ledger.next_seq.max(seq + 1);
            }
        }
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(cfg.sync);
        Ok(Buffer {
            db,
            ledger: Mutex::new(ledger),
            write_opts,
            dir,
        })
    }

    fn err(&self, source: rocksdb::Error) -> BufferError {
        BufferError::Db { dir: self.dir.clone(), source }
    }

    fn cf(&self) -> Result<&rocksdb::ColumnFamily, BufferError> {
        self.db.cf_handle(CF_BATCHES).ok_or_else(|| BufferError::Layout { dir: self.dir.clone() })
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Completed collection cycles, as persisted.
    pub fn cycles(&self) -> u64 {
        self.ledger().cycles
    }

    /// Stores one cycle's batch and the new cycle count in one atomic write. Returns the seq,
    /// or `None` when the when-full policy dropped the batch (the cycle still counts).
    pub fn append(&self, cycle: u64, payload: &[u8], samples: u64, oldest_ts: i64) -> Result<Option<u64>, BufferError> {
        self.append_inner(Some(cycle), payload, samples, oldest_ts)
    }

    /// Stores a batch that is not a collection cycle (a scrape, a push) under the same
    /// ledger and when-full policy; the cycle counter is left as it is.
    pub fn append_batch(&self, payload: &[u8], samples: u64, oldest_ts: i64) -> Result<Option<u64>, BufferError> {
        self.append_inner(None, payload, samples, oldest_ts)
    }

    fn append_inner(&self, cycle: Option<u64>, payload: &[u8], samples: u64, oldest_ts: i64) -> Result<Option<u64>, BufferError> {
        let cf = self.cf()?;
        let mut ledger = self.ledger();
        let before = (ledger.next_seq, ledger.dropped_samples, ledger.dropped_batches, ledger.cycles);
        let bytes = (HEADER + payload.len()) as u64;
        let admit = ledger.admit(bytes, samples, oldest_ts);
        let mut wb = WriteBatch::default();
        let seq = match &admit {
            Admit::Store { seq, evicted } => {
                for e in evicted {
                    wb.delete_cf(&cf, e.to_be_bytes());
                }
                let mut v = Vec::with_capacity(bytes as usize);
                v.extend_from_slice(&(samples as u32).to_le_bytes());
                v.extend_from_slice(&oldest_ts.to_le_bytes());
                v.extend_from_slice(payload);
                wb.put_cf(&cf, seq.to_be_bytes(), v);
                Some(*seq)
            }
            Admit::Reject => None,
        };
        if let Some(cycle) = cycle {
            ledger.cycles = cycle;
            wb.put(b"cycles", cycle.to_le_bytes());
        }
        wb.put(b"next_seq", ledger.next_seq.to_le_bytes());
        wb.put(b"dropped_samples", ledger.dropped_samples.to_le_bytes());
        wb.put(b"dropped_batches", ledger.dropped_batches.to_le_bytes());
        if let Err(e) = self.db.write_opt(wb, &self.write_opts) {
            // Undo the bookkeeping so memory matches disk; the caller reports the failure.
            ledger.next_seq = before.0;
            ledger.dropped_samples = before.1;
            ledger.dropped_batches = before.2;
            ledger.cycles = before.3;
            if let Admit::Store { seq, .. } = admit {
                if let Some(e) = ledger.entries.remove(&seq) {
                    ledger.total_bytes -= e.bytes;
                }
            }
            return Err(self.err(e));
        }
        Ok(seq)
    }

    /// Up to `max_batches` stored batches with seq ≥ `from`, oldest first, stopping after
    /// `max_bytes` (at least one is returned if any exists).
    pub fn read_from(&self, from: u64, max_batches: usize, max_bytes: usize) -> Result<Vec<StoredBatch>, BufferError> {
        let cf = self.cf()?;
        let mut out = vec![];
        let mut size = 0;
        let start = from.to_be_bytes();
        let it = self.db.iterator_cf(&cf, rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward));
        for item in it {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let (Ok(k), true) = (<[u8; 8]>::try_from(&k[..]), v.len() >= HEADER) else { continue };
            let samples = u32::from_le_bytes(v[0..4].try_into().unwrap_or_default()) as u64;
            size += v.len();
            out.push(StoredBatch {
                seq: u64::from_be_bytes(k),
                samples,
                payload: v[HEADER..].to_vec(),
            });
            if out.len() >= max_batches || size >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// Deletes every batch up to and including `seq`: the aggregator has made them durable.
    pub fn ack(&self, seq: u64) -> Result<(), BufferError> {
        let cf = self.cf()?;
        let mut ledger = self.ledger();
        let prev = ledger.acked;
        let gone = ledger.ack(seq);
        if ledger.acked == prev {
            return Ok(());
        }
        let mut wb = WriteBatch::default();
        if let (Some(first), Some(last)) = (gone.first(), gone.last()) {
            wb.delete_range_cf(&cf, first.to_be_bytes(), (last + 1).to_be_bytes());
        }
        wb.put(b"acked", ledger.acked.to_le_bytes());
        self.db.write_opt(wb, &self.write_opts).map_err(|e| self.err(e))
    }

    /// The lowest stored seq at or after `from`.
    pub fn next_at_or_after(&self, from: u64) -> Option<u64> {
        self.ledger().next_at_or_after(from)
    }

    pub fn stats(&self) -> BufferStats {
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
        }
    }

    /// Flushes memtables so a restart replays little WAL.
    pub fn flush(&self) -> Result<(), BufferError> {
        self.db.flush_wal(true).map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_shared::units::ByteSize;
    use std::collections::VecDeque;

    #[test]
    fn drop_oldest_evicts_until_the_new_batch_fits() {
        let mut l = Ledger::new(100, WhenFull::DropOldest);
        assert_eq!(l.admit(40, 4, 1), Admit::Store { seq: 1, evicted: vec![] });
        assert_eq!(l.admit(40, 4, 2), Admit::Store { seq: 2, evicted: vec![] });
        assert_eq!(l.admit(40, 4, 3), Admit::Store { seq: 3, evicted: vec![1] });
        assert_eq!((l.bytes(), l.dropped_samples, l.dropped_batches), (80, 4, 1));
        assert_eq!(l.admit(101, 9, 4), Admit::Reject);
        assert_eq!(l.dropped_samples, 13);
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
        assert_eq!((l.bytes(), l.next_at_or_after(0), l.oldest_ts()), (20, Some(4), Some(3)));
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
                } else if let Some(&(s, _)) = model.get(rng.usize(0..model.len().max(1)).min(model.len().saturating_sub(1))) {
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
            let b = Buffer::open(&cfg(&dir, 1 << 20)).unwrap();
            assert_eq!(b.append(1, &[1; 10], 2, 1).unwrap(), Some(1));
            assert_eq!(b.append_batch(&[9; 20], 3, 0).unwrap(), Some(2));
            assert_eq!(b.append(2, &[2; 10], 2, 2).unwrap(), Some(3));
            let s = b.stats();
            assert_eq!((s.batches, s.cycles, s.next_seq, s.oldest_ts), (3, 2, 4, Some(0)));
        }
        let b = Buffer::open(&cfg(&dir, 1 << 20)).unwrap();
        let s = b.stats();
        assert_eq!((s.batches, s.cycles, s.next_seq), (3, 2, 4));
        assert_eq!(b.read_from(2, 1, 1 << 20).unwrap()[0].payload, vec![9u8; 20]);
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reopening_keeps_unacked_batches_and_counters() {
        let dir = std::env::temp_dir().join(format!("outpost-buf-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let b = Buffer::open(&cfg(&dir, 1 << 20)).unwrap();
            for c in 1..=5u64 {
                assert_eq!(b.append(c, &[c as u8; 10], 2, c as i64).unwrap(), Some(c));
            }
            b.ack(2).unwrap();
        }
        let b = Buffer::open(&cfg(&dir, 1 << 20)).unwrap();
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
