//! The aggregator's time-series store on RocksDB.
//!
//! Column families:
//! - `series`: series id (u64 BE) → label set. Loaded into an in-memory inverted index at start.
//! - `wal`: record id (u64 BE) → the points of one ingested batch, as (series id, ts, value)
//!   triples. Written in the same atomic, synced write as the agent's new highest seq
//!   (`default` CF, key `agent/<id>`), so acknowledged data is durable and applied once.
//! - `chunks`: series id · max ts · min ts · record id (u64 BE each, times sign-flipped) →
//!   one series' points, encoded with the batch codec's point coding.
//!
//! Recent points live in an in-memory head (rebuilt from `wal` at start). A compactor turns
//! the head into chunks and deletes the `wal` records they came from, in one atomic write.
//! Chunks may overlap in time, so out-of-order and backfilled points land where they
//! belong; reads merge chunks and head and keep one point per timestamp (the newest write).

use crate::source::{Matcher, SeriesId, SeriesSource, SourceError};
use outpost_shared::codec::{RawPoint, decode_points, encode_points};
use outpost_shared::{Label, Labels, Point};
use rocksdb::{
    ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

const CF_SERIES: &str = "series";
const CF_WAL: &str = "wal";
const CF_CHUNKS: &str = "chunks";
const KEY_WAL_NEXT: &[u8] = b"wal_next";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage at {dir}: {source}")]
    Db {
        dir: String,
        #[source]
        source: rocksdb::Error,
    },
    #[error("storage at {dir}: damaged {what}")]
    Damaged { dir: String, what: String },
}

/// What the store remembers about each agent, persisted with every batch it applies.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AgentMeta {
    pub region: String,
    pub applied_seq: u64,
    pub last_seen_ms: i64,
    /// Batch seqs that never arrived (skipped by the agent's when-full policy).
    pub gap_batches: u64,
    pub batches: u64,
    pub samples: u64,
    /// The most recent runs of missing seqs, `(first, last)` inclusive, oldest first (at most
    /// [`MAX_GAPS`]; `gap_batches` counts them all).
    pub gaps: Vec<(u64, u64)>,
}

/// How many gap ranges are remembered per agent.
pub const MAX_GAPS: usize = 64;

/// One batch ready to be written, with its series still in the connection's numbering.
pub struct IngestRequest {
    pub conn: u64,
    pub agent: Arc<str>,
    pub region: Arc<str>,
    pub seq: u64,
    pub now_ms: i64,
    /// Label sets of series first defined in this batch, numbered from `first_new`.
    pub first_new: u32,
    pub new_series: Vec<Labels>,
    pub points: Vec<RawPoint>,
    /// A copy sent ahead of the backlog on the live stream: its points are stored, but the
    /// agent's seq bookkeeping waits for the same batch on the batch stream, where it is
    /// stored again (a repeated timestamp keeps one point) and acknowledged.
    pub live: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    Applied,
    /// Already applied before (a resend); acknowledged, not stored again.
    Duplicate,
    /// A live copy stored ahead of its turn; not acknowledged.
    Live,
}

#[derive(Default)]
struct Index {
    by_labels: HashMap<Labels, SeriesId>,
    labels: HashMap<SeriesId, Labels>,
    postings: HashMap<String, HashMap<String, Vec<SeriesId>>>,
}

impl Index {
    fn insert(&mut self, id: SeriesId, l: Labels) {
        for lab in l.iter() {
            self.postings
                .entry(lab.name.clone())
                .or_default()
                .entry(lab.value.clone())
                .or_default()
                .push(id);
        }
        self.by_labels.insert(l.clone(), id);
        self.labels.insert(id, l);
    }
}

#[derive(Default)]
struct Head {
    active: HashMap<SeriesId, Vec<Point>>,
    active_points: usize,
    frozen: Option<Arc<HashMap<SeriesId, Vec<Point>>>>,
    /// Highest wal record id whose points are in `active` or `frozen`.
    last_wal: u64,
}

/// Per-connection numbering: connection-local series number → series id.
pub type ConnMaps = HashMap<u64, Vec<SeriesId>>;

pub struct Storage {
    db: DB,
    dir: String,
    index: RwLock<Index>,
    head: RwLock<Head>,
    agents: Mutex<HashMap<String, AgentMeta>>,
    next_series: AtomicU64,
    next_wal: AtomicU64,
    sync: WriteOptions,
}

fn sortable(ts: i64) -> [u8; 8] {
    ((ts as u64) ^ (1 << 63)).to_be_bytes()
}

fn unsortable(b: &[u8]) -> i64 {
    (u64::from_be_bytes(b.try_into().unwrap_or_default()) ^ (1 << 63)) as i64
}

fn labels_to_bytes(l: &Labels) -> Vec<u8> {
    let pairs: Vec<(&str, &str)> = l
        .iter()
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .collect();
    postcard::to_allocvec(&pairs).unwrap_or_default()
}

fn labels_from_bytes(b: &[u8]) -> Option<Labels> {
    let pairs: Vec<(String, String)> = postcard::from_bytes(b).ok()?;
    Labels::from_sorted(
        pairs
            .into_iter()
            .map(|(name, value)| Label { name, value })
            .collect(),
    )
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// A wal record: count, then per point series id (varint), ts (zigzag varint delta from the
/// previous point), value (8 bytes LE).
fn encode_record(points: &[(SeriesId, Point)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + points.len() * 12);
    put_varint(&mut out, points.len() as u64);
    let mut prev = 0i64;
    for (id, p) in points {
        put_varint(&mut out, *id);
        let d = p.ts.wrapping_sub(prev);
        put_varint(&mut out, ((d << 1) ^ (d >> 63)) as u64);
        prev = p.ts;
        out.extend_from_slice(&p.value.to_bits().to_le_bytes());
    }
    out
}

fn decode_record(b: &[u8]) -> Option<Vec<(SeriesId, Point)>> {
    let mut pos = 0;
    let n = get_varint(b, &mut pos)?;
    if n > b.len() as u64 {
        return None;
    }
    let mut out = Vec::with_capacity(n as usize);
    let mut prev = 0i64;
    for _ in 0..n {
        let id = get_varint(b, &mut pos)?;
        let z = get_varint(b, &mut pos)?;
        let ts = prev.wrapping_add(((z >> 1) as i64) ^ -((z & 1) as i64));
        prev = ts;
        let v = f64::from_bits(u64::from_le_bytes(b.get(pos..pos + 8)?.try_into().ok()?));
        pos += 8;
        out.push((id, Point { ts, value: v }));
    }
    Some(out)
}

fn agent_key(id: &str) -> Vec<u8> {
    format!("agent/{id}").into_bytes()
}

impl Storage {
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
        o.set_max_background_jobs(2);
        o.set_write_buffer_size(32 << 20);
        o.set_max_total_wal_size(128 << 20);
        let cfs = [CF_SERIES, CF_WAL, CF_CHUNKS]
            .into_iter()
            .map(|n| ColumnFamilyDescriptor::new(n, Options::default()))
            .chain([ColumnFamilyDescriptor::new("default", Options::default())]);
        let db = DB::open_cf_descriptors(&o, dir, cfs).map_err(err)?;
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        let s = Storage {
            db,
            dir: d.clone(),
            index: RwLock::default(),
            head: RwLock::default(),
            agents: Mutex::default(),
            next_series: AtomicU64::new(1),
            next_wal: AtomicU64::new(1),
            sync,
        };
        s.load()?;
        Ok(s)
    }

    fn err(&self, source: rocksdb::Error) -> StorageError {
        StorageError::Db {
            dir: self.dir.clone(),
            source,
        }
    }

    fn damaged(&self, what: String) -> StorageError {
        StorageError::Damaged {
            dir: self.dir.clone(),
            what,
        }
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StorageError> {
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
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = index;

        let mut agents = HashMap::new();
        for item in self.db.prefix_iterator(b"agent/") {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let Some(id) = k.strip_prefix(b"agent/") else {
                break;
            };
            let meta: AgentMeta =
                postcard::from_bytes(&v).map_err(|_| self.damaged("agent record".into()))?;
            agents.insert(String::from_utf8_lossy(id).into_owned(), meta);
        }
        *self.agents.lock().unwrap_or_else(|p| p.into_inner()) = agents;

        let mut wal_next = self
            .db
            .get(KEY_WAL_NEXT)
            .map_err(|e| self.err(e))?
            .and_then(|v| v.as_slice().try_into().ok().map(u64::from_le_bytes))
            .unwrap_or(1);
        let mut head = Head::default();
        let mut records = 0u64;
        for item in self.db.iterator_cf(&self.cf(CF_WAL)?, IteratorMode::Start) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let id = u64::from_be_bytes(
                k[..]
                    .try_into()
                    .map_err(|_| self.damaged("wal key".into()))?,
            );
            let pts = decode_record(&v).ok_or_else(|| self.damaged(format!("wal record {id}")))?;
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
        Ok(())
    }

    pub fn agent(&self, id: &str) -> Option<AgentMeta> {
        self.agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    pub fn agents(&self) -> Vec<(String, AgentMeta)> {
        let mut v: Vec<_> = self
            .agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    pub fn series_count(&self) -> usize {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .labels
            .len()
    }

    pub fn head_points(&self) -> usize {
        let h = self.head.read().unwrap_or_else(|p| p.into_inner());
        h.active_points
            + h.frozen
                .as_ref()
                .map(|f| f.values().map(Vec::len).sum())
                .unwrap_or(0)
    }

    /// Bytes on disk and in memtables, as RocksDB reports them.
    pub fn size_bytes(&self) -> u64 {
        [
            "rocksdb.total-sst-files-size",
            "rocksdb.size-all-mem-tables",
        ]
        .iter()
        .flat_map(|p| {
            [CF_SERIES, CF_WAL, CF_CHUNKS, "default"]
                .into_iter()
                .filter_map(move |cf| {
                    let h = self.db.cf_handle(cf)?;
                    self.db.property_int_value_cf(&h, *p).ok().flatten()
                })
        })
        .sum()
    }

    /// Applies a group of batches in one synced atomic write (group commit). Returns one
    /// outcome per request, in order; on a write failure nothing is applied and every request
    /// gets the error.
    pub fn apply(
        &self,
        conns: &mut ConnMaps,
        reqs: &[IngestRequest],
    ) -> Vec<Result<IngestOutcome, String>> {
        let mut out = Vec::with_capacity(reqs.len());
        let (cf_series, cf_wal) = match (self.cf(CF_SERIES), self.cf(CF_WAL)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return reqs.iter().map(|_| Err(e.to_string())).collect(),
        };
        let mut wb = WriteBatch::default();
        let mut new_index: Vec<(SeriesId, Labels)> = vec![];
        let mut pending: HashMap<Labels, SeriesId> = HashMap::new();
        let mut head_add: Vec<(SeriesId, Point)> = vec![];
        let mut conn_len_before: HashMap<u64, usize> = HashMap::new();
        let agents_before = self
            .agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut agents = agents_before.clone();
        let mut touched = BTreeSet::new();
        let next_series_before = self.next_series.load(Ordering::Relaxed);
        let next_wal_before = self.next_wal.load(Ordering::Relaxed);
        let mut last_wal = 0;
        {
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            for r in reqs {
                let map = conns.entry(r.conn).or_default();
                conn_len_before.entry(r.conn).or_insert(map.len());
                if map.len() != r.first_new as usize {
                    out.push(Err(format!(
                        "series numbering out of step: expected #{}, batch defines #{}",
                        map.len(),
                        r.first_new
                    )));
                    continue;
                }
                for l in &r.new_series {
                    let sid = match index.by_labels.get(l).or_else(|| pending.get(l)) {
                        Some(&s) => s,
                        None => {
                            let s = self.next_series.fetch_add(1, Ordering::Relaxed);
                            wb.put_cf(&cf_series, s.to_be_bytes(), labels_to_bytes(l));
                            pending.insert(l.clone(), s);
                            new_index.push((s, l.clone()));
                            s
                        }
                    };
                    map.push(sid);
                }
                let meta = agents.entry(r.agent.to_string()).or_default();
                meta.last_seen_ms = r.now_ms;
                if meta.region != *r.region {
                    meta.region = r.region.to_string();
                }
                touched.insert(r.agent.to_string());
                if r.seq <= meta.applied_seq {
                    out.push(Ok(IngestOutcome::Duplicate));
                    continue;
                }
                let mut pts = Vec::with_capacity(r.points.len());
                let mut bad = None;
                for p in &r.points {
                    match map.get(p.series as usize) {
                        Some(&sid) => pts.push((
                            sid,
                            Point {
                                ts: p.ts,
                                value: p.value,
                            },
                        )),
                        None => {
                            bad = Some(p.series);
                            break;
                        }
                    }
                }
                if let Some(b) = bad {
                    out.push(Err(format!(
                        "batch {} refers to undefined series #{b}",
                        r.seq
                    )));
                    continue;
                }
                if r.live {
                    let wal_id = self.next_wal.fetch_add(1, Ordering::Relaxed);
                    wb.put_cf(&cf_wal, wal_id.to_be_bytes(), encode_record(&pts));
                    last_wal = wal_id;
                    head_add.extend(pts);
                    out.push(Ok(IngestOutcome::Live));
                    continue;
                }
                if r.seq > meta.applied_seq + 1 {
                    meta.gap_batches += r.seq - meta.applied_seq - 1;
                    meta.gaps.push((meta.applied_seq + 1, r.seq - 1));
                    if meta.gaps.len() > MAX_GAPS {
                        meta.gaps.remove(0);
                    }
                }
                meta.applied_seq = r.seq;
                meta.batches += 1;
                meta.samples += pts.len() as u64;
                let wal_id = self.next_wal.fetch_add(1, Ordering::Relaxed);
                wb.put_cf(&cf_wal, wal_id.to_be_bytes(), encode_record(&pts));
                last_wal = wal_id;
                head_add.extend(pts);
                out.push(Ok(IngestOutcome::Applied));
            }
        }
        for a in &touched {
            if let Some(m) = agents.get(a) {
                wb.put(agent_key(a), postcard::to_allocvec(m).unwrap_or_default());
            }
        }
        if let Err(e) = self.db.write_opt(wb, &self.sync) {
            // Nothing was written: put numbering and counters back as they were.
            self.next_series
                .store(next_series_before, Ordering::Relaxed);
            self.next_wal.store(next_wal_before, Ordering::Relaxed);
            for (c, len) in conn_len_before {
                if let Some(m) = conns.get_mut(&c) {
                    m.truncate(len);
                }
            }
            let msg = self.err(e).to_string();
            return reqs.iter().map(|_| Err(msg.clone())).collect();
        }
        *self.agents.lock().unwrap_or_else(|p| p.into_inner()) = agents;
        if !new_index.is_empty() {
            let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
            for (s, l) in new_index {
                index.insert(s, l);
            }
        }
        if !head_add.is_empty() {
            let mut head = self.head.write().unwrap_or_else(|p| p.into_inner());
            head.active_points += head_add.len();
            for (sid, p) in head_add {
                head.active.entry(sid).or_default().push(p);
            }
            head.last_wal = head.last_wal.max(last_wal);
        }
        out
    }

    /// Moves the head into chunks and drops the wal records it came from. Returns the number
    /// of points compacted.
    pub fn compact_head(&self) -> Result<usize, StorageError> {
        let (frozen, upto) = {
            let mut h = self.head.write().unwrap_or_else(|p| p.into_inner());
            if h.active.is_empty() || h.frozen.is_some() {
                return Ok(0);
            }
            let f = Arc::new(std::mem::take(&mut h.active));
            h.active_points = 0;
            h.frozen = Some(f.clone());
            (f, h.last_wal)
        };
        let cf_chunks = self.cf(CF_CHUNKS)?;
        let cf_wal = self.cf(CF_WAL)?;
        let mut wb = WriteBatch::default();
        let mut n = 0;
        for (sid, pts) in frozen.iter() {
            let mut pts = pts.clone();
            // Newest write wins for a repeated timestamp: reverse, stable sort, keep first.
            pts.reverse();
            pts.sort_by_key(|p| p.ts);
            pts.dedup_by_key(|p| p.ts);
            n += pts.len();
            let (Some(first), Some(last)) = (pts.first(), pts.last()) else {
                continue;
            };
            let mut key = Vec::with_capacity(32);
            key.extend_from_slice(&sid.to_be_bytes());
            key.extend_from_slice(&sortable(last.ts));
            key.extend_from_slice(&sortable(first.ts));
            key.extend_from_slice(&upto.to_be_bytes());
            wb.put_cf(&cf_chunks, key, encode_points(&pts));
        }
        wb.delete_range_cf(&cf_wal, 0u64.to_be_bytes(), (upto + 1).to_be_bytes());
        wb.put(KEY_WAL_NEXT, (upto + 1).to_le_bytes());
        let r = self.db.write(wb);
        let mut h = self.head.write().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = r {
            // Put the points back in front of what arrived meanwhile; the wal still has them.
            if let Some(f) = h.frozen.take() {
                let f = Arc::try_unwrap(f).unwrap_or_else(|a| (*a).clone());
                for (sid, mut pts) in f {
                    h.active_points += pts.len();
                    let e = h.active.entry(sid).or_default();
                    pts.append(e);
                    *e = pts;
                }
            }
            return Err(self.err(e));
        }
        h.frozen = None;
        Ok(n)
    }

    pub fn flush(&self) -> Result<(), StorageError> {
        self.db.flush_wal(true).map_err(|e| self.err(e))
    }
}

impl SeriesSource for Storage {
    fn select(&self, matchers: &[Matcher]) -> Result<Vec<(SeriesId, Labels)>, SourceError> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        let candidates: Box<dyn Iterator<Item = SeriesId>> = match matchers
            .iter()
            .filter(|m| m.op == crate::source::MatchOp::Equal && !m.value.is_empty())
            .filter_map(|m| {
                Some(
                    index
                        .postings
                        .get(&m.name)?
                        .get(&m.value)
                        .map(|v| v.as_slice())
                        .unwrap_or(&[]),
                )
            })
            .min_by_key(|p| p.len())
        {
            Some(p) => Box::new(p.iter().copied()),
            None if matchers
                .iter()
                .any(|m| m.op == crate::source::MatchOp::Equal && !m.value.is_empty()) =>
            {
                Box::new(std::iter::empty())
            }
            None => Box::new(index.labels.keys().copied()),
        };
        let mut out: Vec<(SeriesId, Labels)> = candidates
            .filter_map(|id| {
                let l = index.labels.get(&id)?;
                matchers
                    .iter()
                    .all(|m| m.matches_labels(l))
                    .then(|| (id, l.clone()))
            })
            .collect();
        out.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(out)
    }

    fn points(&self, id: SeriesId, start_ms: i64, end_ms: i64) -> Result<Vec<Point>, SourceError> {
        let mut v: Vec<Point> = vec![];
        {
            let h = self.head.read().unwrap_or_else(|p| p.into_inner());
            let in_range = |p: &&Point| p.ts >= start_ms && p.ts <= end_ms;
            if let Some(pts) = h.active.get(&id) {
                v.extend(pts.iter().rev().filter(in_range));
            }
            if let Some(pts) = h.frozen.as_ref().and_then(|f| f.get(&id)) {
                v.extend(pts.iter().rev().filter(in_range));
            }
        }
        let cf = self.cf(CF_CHUNKS).map_err(|e| SourceError(e.to_string()))?;
        let mut from = id.to_be_bytes().to_vec();
        from.extend_from_slice(&sortable(start_ms));
        // Chunks in key order are sorted by time, not by when they were written; a repeated
        // timestamp must resolve to the newest write, so order them by record id, newest first.
        let mut chunks: Vec<(u64, Vec<Point>)> = vec![];
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(&from, Direction::Forward))
        {
            let (k, val) = item.map_err(|e| SourceError(e.to_string()))?;
            if k.len() != 32 || k[..8] != id.to_be_bytes() {
                break;
            }
            if unsortable(&k[16..24]) > end_ms {
                continue;
            }
            let record = u64::from_be_bytes(k[24..32].try_into().unwrap_or_default());
            let mut chunk = vec![];
            decode_points(&val, &mut chunk)
                .map_err(|e| SourceError(format!("chunk of series {id}: {e}")))?;
            chunk.retain(|p| p.ts >= start_ms && p.ts <= end_ms);
            chunks.push((record, chunk));
        }
        chunks.sort_by(|a, b| b.0.cmp(&a.0));
        for (_, chunk) in chunks {
            v.extend(chunk.into_iter().rev());
        }
        // Sources were added newest first and each reversed: a stable sort then keeps the
        // newest write first for a repeated timestamp.
        v.sort_by_key(|p| p.ts);
        v.dedup_by_key(|p| p.ts);
        Ok(v)
    }

    fn label_names(&self) -> Result<Vec<String>, SourceError> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<String> = index.postings.keys().cloned().collect();
        v.sort();
        Ok(v)
    }

    fn label_values(&self, name: &str) -> Result<Vec<String>, SourceError> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<String> = index
            .postings
            .get(name)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::MatchOp;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("outpost-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn req(
        conn: u64,
        seq: u64,
        first_new: u32,
        new: &[&str],
        pts: &[(u32, i64, f64)],
    ) -> IngestRequest {
        IngestRequest {
            conn,
            agent: "a1".into(),
            region: "eu".into(),
            seq,
            now_ms: 1000,
            first_new,
            new_series: new
                .iter()
                .map(|n| Labels::metric(n, [("agent", "a1")]))
                .collect(),
            points: pts
                .iter()
                .map(|&(series, ts, value)| RawPoint { series, ts, value })
                .collect(),
            live: false,
        }
    }

    #[test]
    fn live_copies_store_points_but_leave_the_seq_to_the_batch_stream() {
        let dir = tmp("live");
        let s = Storage::open(&dir).unwrap();
        let mut conns = ConnMaps::new();
        let mut live = req(100, 5, 0, &["up"], &[(0, 50, 1.0)]);
        live.live = true;
        assert_eq!(s.apply(&mut conns, &[live]), vec![Ok(IngestOutcome::Live)]);
        let m = s.agent("a1").unwrap();
        assert_eq!((m.applied_seq, m.batches, m.gap_batches), (0, 0, 0));
        let id = s
            .select(&[Matcher::new("__name__", MatchOp::Equal, "up").unwrap()])
            .unwrap()[0]
            .0;
        assert_eq!(
            s.points(id, 0, 100).unwrap().len(),
            1,
            "visible before its turn"
        );
        // The backlog catches up: seqs 1..=5 arrive in order on the batch stream.
        let mut reqs = vec![req(1, 1, 0, &["up"], &[(0, 10, 1.0)])];
        for seq in 2..=5 {
            reqs.push(req(1, seq, 1, &[], &[(0, seq as i64 * 10, 1.0)]));
        }
        assert!(
            s.apply(&mut conns, &reqs)
                .iter()
                .all(|r| *r == Ok(IngestOutcome::Applied))
        );
        let m = s.agent("a1").unwrap();
        assert_eq!((m.applied_seq, m.batches, m.gap_batches), (5, 5, 0));
        let ts: Vec<i64> = s.points(id, 0, 100).unwrap().iter().map(|p| p.ts).collect();
        assert_eq!(
            ts,
            [10, 20, 30, 40, 50],
            "the twice-written point is there once"
        );
        s.compact_head().unwrap();
        let ts: Vec<i64> = s.points(id, 0, 100).unwrap().iter().map(|p| p.ts).collect();
        assert_eq!(ts, [10, 20, 30, 40, 50], "and once after compaction");
        // A live copy of something already applied is a duplicate.
        let mut late = req(101, 3, 0, &["up"], &[(0, 30, 1.0)]);
        late.live = true;
        assert_eq!(
            s.apply(&mut conns, &[late]),
            vec![Ok(IngestOutcome::Duplicate)]
        );
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn applies_once_survives_restart_and_compaction() {
        let dir = tmp("once");
        {
            let s = Storage::open(&dir).unwrap();
            let mut conns = ConnMaps::new();
            let r = s.apply(
                &mut conns,
                &[
                    req(1, 1, 0, &["up", "x"], &[(0, 10, 1.0), (1, 10, 5.0)]),
                    req(1, 2, 2, &[], &[(1, 20, 6.0)]),
                ],
            );
            assert_eq!(
                r,
                vec![Ok(IngestOutcome::Applied), Ok(IngestOutcome::Applied)]
            );
            // A resend on a new connection: numbering restarts, the seq is a duplicate.
            let r = s.apply(&mut conns, &[req(2, 2, 0, &["x"], &[(0, 20, 6.0)])]);
            assert_eq!(r, vec![Ok(IngestOutcome::Duplicate)]);
            assert_eq!(s.agent("a1").unwrap().applied_seq, 2);
        }
        let s = Storage::open(&dir).unwrap();
        let x = s
            .select(&[Matcher::new("__name__", MatchOp::Equal, "x").unwrap()])
            .unwrap();
        assert_eq!(x.len(), 1);
        let want = vec![Point { ts: 10, value: 5.0 }, Point { ts: 20, value: 6.0 }];
        assert_eq!(s.points(x[0].0, 0, 100).unwrap(), want);
        assert_eq!(s.compact_head().unwrap(), 3);
        assert_eq!(s.points(x[0].0, 0, 100).unwrap(), want);
        assert_eq!(s.points(x[0].0, 15, 100).unwrap(), want[1..]);
        // Late data lands between existing chunks.
        let mut conns = ConnMaps::new();
        s.apply(
            &mut conns,
            &[req(3, 3, 0, &["x"], &[(0, 15, 5.5), (0, 20, 7.0)])],
        );
        let got = s.points(x[0].0, 0, 100).unwrap();
        assert_eq!(
            got,
            vec![
                Point { ts: 10, value: 5.0 },
                Point { ts: 15, value: 5.5 },
                Point { ts: 20, value: 7.0 }
            ]
        );
        s.compact_head().unwrap();
        drop(s);
        let s = Storage::open(&dir).unwrap();
        assert_eq!(s.points(x[0].0, 0, 100).unwrap(), got);
        assert_eq!(s.head_points(), 0);
        assert_eq!(s.label_values("__name__").unwrap(), vec!["up", "x"]);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn numbering_out_of_step_is_refused_without_writing() {
        let dir = tmp("step");
        let s = Storage::open(&dir).unwrap();
        let mut conns = ConnMaps::new();
        let r = s.apply(&mut conns, &[req(1, 1, 5, &["up"], &[(0, 1, 1.0)])]);
        assert!(r[0].as_ref().unwrap_err().contains("out of step"));
        let r = s.apply(&mut conns, &[req(1, 1, 0, &["up"], &[(3, 1, 1.0)])]);
        assert!(r[0].as_ref().unwrap_err().contains("undefined series #3"));
        assert_eq!(s.agent("a1").unwrap().applied_seq, 0);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn wal_records_round_trip() {
        let pts = vec![
            (
                3,
                Point {
                    ts: -5,
                    value: f64::NAN,
                },
            ),
            (
                1,
                Point {
                    ts: i64::MAX,
                    value: -0.0,
                },
            ),
        ];
        let got = decode_record(&encode_record(&pts)).unwrap();
        assert_eq!(got, pts);
        assert!(decode_record(&[5, 1]).is_none());
    }
}
