//! The ingest ledger: what the aggregator knows about each agent's batches (the highest seq
//! applied, the gaps the agent's when-full policy left, counts) and, per connection, which
//! stored series each connection-local series number means.
//!
//! Pure: no I/O, no clock. [`Ledger::plan`] turns a group of batches into a
//! [`WritePlan`] for the store plus one outcome per batch; the writer commits the plan in one
//! atomic, synced write (samples and the agents' records together) and only then calls
//! [`Ledger::committed`], so what the ledger says was applied is exactly what is durable.
//! This is where contracts 1 and 2 live: a batch is acknowledged only after the write that
//! applied it (or an earlier one) succeeded, and a seq at or below an agent's applied seq is
//! acknowledged but not written again.

use outpost_shared::codec::RawPoint;
use outpost_shared::{Labels, Point};
use outpost_tsdb::{SeriesId, SeriesSlot, WritePlan};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// Prefix of the agents' records among the store's metadata: `agent/<id>` → postcard
/// [`AgentMeta`].
pub const AGENT_PREFIX: &[u8] = b"agent/";

/// How many gap ranges are remembered per agent.
pub const MAX_GAPS: usize = 64;

/// How many live copies ahead of the batch stream a connection remembers (the newest); a
/// copy forgotten past this bound is counted in a gap if the agent evicts its batch.
pub const MAX_LIVE_AHEAD: usize = 4096;

/// What the aggregator remembers about each agent, persisted with every batch it applies.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AgentMeta {
    /// The region the agent last said it is in.
    pub region: String,
    /// The highest seq applied; lower and equal seqs are duplicates.
    pub applied_seq: u64,
    /// When a batch of this agent was last written, ms since the Unix epoch.
    pub last_seen_ms: i64,
    /// Batch seqs that never arrived (skipped by the agent's when-full policy).
    pub gap_batches: u64,
    /// Batches applied.
    pub batches: u64,
    /// Samples applied.
    pub samples: u64,
    /// The most recent runs of missing seqs, `(first, last)` inclusive, oldest first (at most
    /// [`MAX_GAPS`]; `gap_batches` counts them all).
    pub gaps: Vec<(u64, u64)>,
    /// Seqs this aggregator never received because another aggregator of the agent's
    /// `endpoints` acknowledged them (the agent failed over): handed over, not missing.
    /// Must stay the last field: records written before it existed decode without it.
    pub handed_over_batches: u64,
}

/// An [`AgentMeta`] as written before `handed_over_batches` existed.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct AgentMetaV1 {
    region: String,
    applied_seq: u64,
    last_seen_ms: i64,
    gap_batches: u64,
    batches: u64,
    samples: u64,
    gaps: Vec<(u64, u64)>,
}

impl AgentMeta {
    /// Decodes a record, of this layout or the one before `handed_over_batches`.
    fn decode(bytes: &[u8]) -> Result<AgentMeta, postcard::Error> {
        postcard::from_bytes(bytes).or_else(|e| {
            let Ok(v1) = postcard::from_bytes::<AgentMetaV1>(bytes) else {
                return Err(e);
            };
            Ok(AgentMeta {
                region: v1.region,
                applied_seq: v1.applied_seq,
                last_seen_ms: v1.last_seen_ms,
                gap_batches: v1.gap_batches,
                batches: v1.batches,
                samples: v1.samples,
                gaps: v1.gaps,
                handed_over_batches: 0,
            })
        })
    }
}

/// One batch ready to be written, with its series still in the connection's numbering.
#[derive(Clone, Debug)]
pub struct IngestRequest {
    /// The connection it came on (its series numbering).
    pub conn: u64,
    /// The agent's id (its certificate's common name).
    pub agent: Arc<str>,
    /// The agent's region.
    pub region: Arc<str>,
    /// The batch's seq.
    pub seq: u64,
    /// When it arrived, ms since the Unix epoch.
    pub now_ms: i64,
    /// Label sets of series first defined in this batch, numbered from `first_new`.
    pub first_new: u32,
    /// The label sets themselves.
    pub new_series: Vec<Labels>,
    /// The points, series in the connection's numbering.
    pub points: Vec<RawPoint>,
    /// A copy sent ahead of the backlog on the live stream: its points are stored, but the
    /// agent's seq bookkeeping waits for the same batch on the batch stream, where it is
    /// stored again (a repeated timestamp keeps one point) and acknowledged.
    pub live: bool,
    /// The hello's [`outpost_shared::frame::Hello::acked_seq`]: seqs up to it that this
    /// aggregator lacks went to another aggregator, and are not counted as gaps.
    pub acked_elsewhere: u64,
}

/// What happened to one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Written now.
    Applied,
    /// Already applied before (a resend); acknowledged, not stored again.
    Duplicate,
    /// A live copy stored ahead of its turn; not acknowledged.
    Live,
}

/// A group of batches turned into one write, waiting for it to commit.
#[derive(Debug)]
pub struct Planned {
    /// What to write, in one atomic, synced write.
    pub plan: WritePlan,
    /// One per batch, in order: the outcome once the plan commits, or why the batch is
    /// refused (refused batches write nothing but their agent's `last_seen`).
    pub outcomes: Vec<Result<IngestOutcome, String>>,
    agents: HashMap<String, AgentMeta>,
    numbering: HashMap<u64, Vec<SeriesSlot>>,
    live: HashMap<u64, LiveAhead>,
}

/// Marks the connection number of a live stream: it has its own codec context, so its own
/// series numbering; its copies count for the connection number without this bit.
pub const LIVE_CONN: u64 = 1 << 63;

/// What one connection's live copies left for its batch stream to settle.
///
/// An agent whose buffer is full can evict a batch it already copied to the live stream
/// before its batch stream reaches it. The batch stream then skips that seq, but the copy's
/// points are stored: the seq is not missing, and the agent does not count it as dropped
/// (it waits for the acknowledgement that passes it, as a batch evicted in flight does).
/// Only the connection that carried the copy knows this, so a new connection of the agent
/// starts with nothing here (and the agent counts copies it evicted before then as dropped,
/// as the new connection's gap does).
#[derive(Clone, Debug)]
struct LiveAhead {
    /// Live copies stored above the agent's applied seq: seq → samples (at most
    /// [`MAX_LIVE_AHEAD`], the newest).
    seqs: BTreeMap<u64, u64>,
    /// The first seq of the gaps this connection recorded (`u64::MAX` while none): a copy
    /// that arrives after its batch stream skipped it fills the gap, if it is one of these.
    gaps_from: u64,
}

impl Default for LiveAhead {
    fn default() -> Self {
        LiveAhead {
            seqs: BTreeMap::new(),
            gaps_from: u64::MAX,
        }
    }
}

/// One connection's series numbering and live copies.
#[derive(Debug, Default)]
struct Conn {
    ids: Vec<SeriesId>,
    live: LiveAhead,
}

/// Agents' records and connections' numbering. See the module docs.
#[derive(Debug, Default)]
pub struct Ledger {
    agents: HashMap<String, AgentMeta>,
    conns: HashMap<u64, Conn>,
}

/// The key of an agent's record.
pub fn agent_key(id: &str) -> Vec<u8> {
    let mut k = AGENT_PREFIX.to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

impl Ledger {
    /// The ledger as the store's metadata entries under [`AGENT_PREFIX`] record it.
    ///
    /// # Errors
    /// An entry that does not decode (named by its key).
    pub fn load(entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<Ledger, String> {
        let mut agents = HashMap::new();
        for (k, v) in entries {
            let Some(id) = k.strip_prefix(AGENT_PREFIX) else {
                continue;
            };
            let id = String::from_utf8_lossy(id).into_owned();
            let meta =
                AgentMeta::decode(&v).map_err(|e| format!("damaged agent record {id:?}: {e}"))?;
            agents.insert(id, meta);
        }
        Ok(Ledger {
            agents,
            conns: HashMap::new(),
        })
    }

    /// The record of agent `id`, if it ever sent a batch.
    pub fn agent(&self, id: &str) -> Option<AgentMeta> {
        self.agents.get(id).cloned()
    }

    /// Every agent's id and when a batch of it was last written (ms), in no order; reads
    /// without copying the records.
    pub fn last_seen(&self) -> impl Iterator<Item = (&str, i64)> {
        self.agents
            .iter()
            .map(|(k, v)| (k.as_str(), v.last_seen_ms))
    }

    /// Every agent's record, sorted by id.
    pub fn agents(&self) -> Vec<(String, AgentMeta)> {
        let mut v: Vec<_> = self
            .agents
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Forgets a closed connection's numbering.
    pub fn connection_closed(&mut self, conn: u64) {
        self.conns.remove(&conn);
    }

    /// Decides what a group of batches writes. `known` gives the id of a label set the store
    /// already has. Changes nothing until [`Ledger::committed`].
    pub fn plan(
        &self,
        reqs: &[IngestRequest],
        known: impl Fn(&Labels) -> Option<SeriesId>,
    ) -> Planned {
        let mut plan = WritePlan::default();
        let mut outcomes = Vec::with_capacity(reqs.len());
        let mut agents: HashMap<String, AgentMeta> = HashMap::new();
        let mut numbering: HashMap<u64, Vec<SeriesSlot>> = HashMap::new();
        let mut live: HashMap<u64, LiveAhead> = HashMap::new();
        let mut new_slots: HashMap<Labels, u32> = HashMap::new();
        let mut touched = BTreeSet::new();
        for r in reqs {
            let base: &[SeriesId] = self
                .conns
                .get(&r.conn)
                .map(|c| c.ids.as_slice())
                .unwrap_or(&[]);
            let added = numbering.entry(r.conn).or_default();
            let len = base.len() + added.len();
            if len != r.first_new as usize {
                outcomes.push(Err(format!(
                    "series numbering out of step: expected #{len}, batch defines #{}",
                    r.first_new
                )));
                continue;
            }
            for l in &r.new_series {
                let slot = match known(l) {
                    Some(id) => SeriesSlot::Existing(id),
                    None => {
                        let n = *new_slots.entry(l.clone()).or_insert_with(|| {
                            plan.new_series.push(l.clone());
                            (plan.new_series.len() - 1) as u32
                        });
                        SeriesSlot::New(n)
                    }
                };
                added.push(slot);
            }
            let meta = agents
                .entry(r.agent.to_string())
                .or_insert_with(|| self.agents.get(&*r.agent).cloned().unwrap_or_default());
            meta.last_seen_ms = r.now_ms;
            if meta.region != *r.region {
                meta.region = r.region.to_string();
            }
            touched.insert(r.agent.to_string());
            let batch_conn = r.conn & !LIVE_CONN;
            let ahead = live.entry(batch_conn).or_insert_with(|| {
                self.conns
                    .get(&batch_conn)
                    .map(|c| c.live.clone())
                    .unwrap_or_default()
            });
            // A late live copy of a seq this connection's batch stream skipped fills its gap.
            let fills = r.live
                && r.seq <= meta.applied_seq
                && r.seq >= ahead.gaps_from
                && meta.gaps.iter().any(|&(a, b)| (a..=b).contains(&r.seq));
            if r.seq <= meta.applied_seq && !fills {
                outcomes.push(Ok(IngestOutcome::Duplicate));
                continue;
            }
            let slot = |n: u32| -> Option<SeriesSlot> {
                let n = n as usize;
                match base.get(n) {
                    Some(&id) => Some(SeriesSlot::Existing(id)),
                    None => added.get(n - base.len()).copied(),
                }
            };
            let mut pts = Vec::with_capacity(r.points.len());
            let mut bad = None;
            for p in &r.points {
                match slot(p.series) {
                    Some(s) => pts.push((
                        s,
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
                outcomes.push(Err(format!(
                    "batch {} refers to undefined series #{b}",
                    r.seq
                )));
                continue;
            }
            if r.live {
                if fills {
                    fill_gap(meta, r.seq, pts.len() as u64);
                } else {
                    ahead.seqs.insert(r.seq, pts.len() as u64);
                    while ahead.seqs.len() > MAX_LIVE_AHEAD {
                        ahead.seqs.pop_first();
                    }
                }
                plan.records.push(pts);
                outcomes.push(Ok(IngestOutcome::Live));
                continue;
            }
            // Seqs up to what another aggregator acknowledged were handed over; only those
            // above it are missing (dropped by the agent's when-full policy), unless a live
            // copy of this connection stored them.
            let handed_through = r.acked_elsewhere.min(r.seq - 1);
            if handed_through > meta.applied_seq {
                meta.handed_over_batches += handed_through - meta.applied_seq;
                meta.applied_seq = handed_through;
            }
            if r.seq > meta.applied_seq + 1 {
                let mut from = meta.applied_seq + 1;
                for (&s, &n) in ahead.seqs.range(from..r.seq) {
                    if s > from {
                        record_gap(meta, from, s - 1);
                        ahead.gaps_from = ahead.gaps_from.min(from);
                    }
                    meta.batches += 1;
                    meta.samples += n;
                    from = s + 1;
                }
                if from < r.seq {
                    record_gap(meta, from, r.seq - 1);
                    ahead.gaps_from = ahead.gaps_from.min(from);
                }
            }
            ahead.seqs = ahead.seqs.split_off(&(r.seq + 1));
            meta.applied_seq = r.seq;
            meta.batches += 1;
            meta.samples += pts.len() as u64;
            plan.records.push(pts);
            outcomes.push(Ok(IngestOutcome::Applied));
        }
        for a in &touched {
            if let Some(m) = agents.get(a) {
                plan.meta
                    .push((agent_key(a), postcard::to_allocvec(m).unwrap_or_default()));
            }
        }
        Planned {
            plan,
            outcomes,
            agents,
            numbering,
            live,
        }
    }

    /// Takes in what a plan changed, once the store has committed it; `ids` are the ids the
    /// store gave `plan.new_series`. A plan that failed to commit is dropped instead, and the
    /// ledger stays as it was.
    pub fn committed(&mut self, planned: Planned, ids: &[SeriesId]) {
        for (a, m) in planned.agents {
            self.agents.insert(a, m);
        }
        for (conn, slots) in planned.numbering {
            if slots.is_empty() {
                continue;
            }
            let map = &mut self.conns.entry(conn).or_default().ids;
            map.extend(slots.into_iter().map(|s| match s {
                SeriesSlot::Existing(id) => id,
                SeriesSlot::New(n) => ids[n as usize],
            }));
        }
        for (conn, ahead) in planned.live {
            // Nothing to remember needs no entry (a live copy can commit before its batch
            // stream's first batch; an entry is made then).
            let empty = ahead.seqs.is_empty() && ahead.gaps_from == u64::MAX;
            if !empty || self.conns.contains_key(&conn) {
                self.conns.entry(conn).or_default().live = ahead;
            }
        }
    }
}

/// Records that seqs `from..=to` never came.
fn record_gap(meta: &mut AgentMeta, from: u64, to: u64) {
    meta.gap_batches += to - from + 1;
    meta.gaps.push((from, to));
    if meta.gaps.len() > MAX_GAPS {
        meta.gaps.remove(0);
    }
}

/// Takes `seq`, with `samples` samples, out of the recorded gap that holds it: a live copy
/// stored it after the batch stream had passed it.
fn fill_gap(meta: &mut AgentMeta, seq: u64, samples: u64) {
    let Some(i) = meta.gaps.iter().position(|&(a, b)| (a..=b).contains(&seq)) else {
        return;
    };
    let (a, b) = meta.gaps.remove(i);
    if seq < b {
        meta.gaps.insert(i, (seq + 1, b));
    }
    if a < seq {
        meta.gaps.insert(i, (a, seq - 1));
    }
    meta.gap_batches -= 1;
    meta.batches += 1;
    meta.samples += samples;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::apply_group;
    use outpost_promql::{MatchOp, Matcher};
    use outpost_tsdb::Storage;
    use std::sync::Mutex;

    /// The store and the ledger as the writer holds them; `agent` reads the ledger.
    struct Store {
        s: Storage,
        ledger: Mutex<Ledger>,
    }

    impl Store {
        fn open(dir: &std::path::Path) -> Store {
            let s = Storage::open(dir).unwrap();
            let ledger = Mutex::new(Ledger::load(s.meta(AGENT_PREFIX).unwrap()).unwrap());
            Store { s, ledger }
        }
        fn apply(&self, reqs: &[IngestRequest]) -> Vec<Result<IngestOutcome, String>> {
            apply_group(&self.s, &self.ledger, reqs)
        }
        fn agent(&self, id: &str) -> Option<AgentMeta> {
            self.ledger.lock().unwrap().agent(id)
        }
        fn select(&self, m: &[Matcher]) -> Result<Vec<(SeriesId, Labels)>, String> {
            Ok(self
                .s
                .select(m)
                .into_iter()
                .map(|(id, l)| (id, Labels::clone(&l)))
                .collect())
        }
        fn points(&self, id: SeriesId, a: i64, b: i64) -> Result<Vec<Point>, String> {
            self.s.points(id, a, b).map_err(|e| e.to_string())
        }
        fn compact_head(&self) -> Result<usize, String> {
            self.s.compact_head().map_err(|e| e.to_string())
        }
        fn head_points(&self) -> usize {
            self.s.head_points()
        }
        fn label_values(&self, n: &str) -> Result<Vec<String>, String> {
            Ok(self.s.label_values(n))
        }
    }

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
            acked_elsewhere: 0,
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
        let s = Store::open(&dir);
        let mut live = req(100, 5, 0, &["up"], &[(0, 50, 1.0)]);
        live.live = true;
        assert_eq!(s.apply(&[live]), vec![Ok(IngestOutcome::Live)]);
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
            s.apply(&reqs)
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
        assert_eq!(s.apply(&[late]), vec![Ok(IngestOutcome::Duplicate)]);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_seq_skipped_after_its_live_copy_was_stored_is_not_missing() {
        let dir = tmp("live-gap");
        let s = Store::open(&dir);
        let copy = |conn: u64, seq: u64, first_new: u32, new: &[&str]| {
            let mut r = req(
                conn | LIVE_CONN,
                seq,
                first_new,
                new,
                &[(0, seq as i64, 1.0)],
            );
            r.live = true;
            r
        };
        let batch = |conn: u64, seq: u64, first_new: u32, new: &[&str]| {
            req(conn, seq, first_new, new, &[(0, seq as i64, 1.0)])
        };
        // Connection 1: seqs 1 and 2 on the batch stream, 5 and 7 copied live, then the
        // agent's buffer evicts 3..=7 and the batch stream goes on at 8.
        let out = s.apply(&[
            batch(1, 1, 0, &["up"]),
            batch(1, 2, 1, &[]),
            copy(1, 5, 0, &["up"]),
            copy(1, 7, 1, &[]),
            batch(1, 8, 1, &[]),
        ]);
        assert_eq!(
            out,
            [
                Ok(IngestOutcome::Applied),
                Ok(IngestOutcome::Applied),
                Ok(IngestOutcome::Live),
                Ok(IngestOutcome::Live),
                Ok(IngestOutcome::Applied),
            ]
        );
        let m = s.agent("a1").unwrap();
        assert_eq!(
            m.gaps,
            [(3, 4), (6, 6)],
            "5 and 7 were stored from their copies"
        );
        assert_eq!((m.applied_seq, m.gap_batches), (8, 3));
        assert_eq!((m.batches, m.samples), (5, 5));
        // A copy that comes after the batch stream passed its seq fills that gap.
        assert_eq!(s.apply(&[copy(1, 6, 1, &[])]), [Ok(IngestOutcome::Live)]);
        let m = s.agent("a1").unwrap();
        assert_eq!(m.gaps, [(3, 4)]);
        assert_eq!((m.gap_batches, m.batches, m.samples), (2, 6, 6));
        // One of a seq the batch stream applied is a duplicate, and a copy of a seq in a gap
        // another connection recorded does not fill it: that agent counted it as dropped.
        assert_eq!(
            s.apply(&[copy(1, 8, 1, &[])]),
            [Ok(IngestOutcome::Duplicate)]
        );
        assert_eq!(
            s.apply(&[copy(2, 4, 0, &["up"])]),
            [Ok(IngestOutcome::Duplicate)]
        );
        // A connection that closes forgets its copies: its successor's gap counts them.
        assert_eq!(s.apply(&[copy(1, 10, 1, &[])]), [Ok(IngestOutcome::Live)]);
        s.ledger.lock().unwrap().connection_closed(1);
        assert_eq!(
            s.apply(&[batch(3, 11, 0, &["up"])]),
            [Ok(IngestOutcome::Applied)]
        );
        let m = s.agent("a1").unwrap();
        assert_eq!(m.gaps, [(3, 4), (9, 10)]);
        assert_eq!((m.gap_batches, m.batches), (4, 7));
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn seqs_another_aggregator_acknowledged_are_handed_over_not_missing() {
        let dir = tmp("handover");
        {
            let s = Store::open(&dir);
            s.apply(&[req(1, 1, 0, &["up"], &[(0, 10, 1.0)])]);
            // The agent failed over: seqs 2..=6 went elsewhere, 7..=8 were dropped unsent
            // by its when-full policy, and it is back with seq 9.
            let mut back = req(2, 9, 0, &["up"], &[(0, 90, 1.0)]);
            back.acked_elsewhere = 6;
            assert_eq!(s.apply(&[back]), vec![Ok(IngestOutcome::Applied)]);
            let m = s.agent("a1").unwrap();
            assert_eq!(
                (m.applied_seq, m.handed_over_batches, m.gap_batches, m.gaps),
                (9, 5, 2, vec![(7, 8)])
            );
            // An acked seq at or below what is applied changes nothing.
            let mut next = req(2, 10, 1, &[], &[(0, 100, 1.0)]);
            next.acked_elsewhere = 6;
            s.apply(&[next]);
            let m = s.agent("a1").unwrap();
            assert_eq!((m.handed_over_batches, m.gap_batches), (5, 2));
        }
        // The record survives a restart.
        let s = Store::open(&dir);
        assert_eq!(s.agent("a1").unwrap().handed_over_batches, 5);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn agent_records_written_before_handed_over_batches_still_load() {
        let old = postcard::to_allocvec(&AgentMetaV1 {
            region: "eu".into(),
            applied_seq: 42,
            last_seen_ms: 7,
            gap_batches: 1,
            batches: 41,
            samples: 410,
            gaps: vec![(3, 3)],
        })
        .unwrap();
        let l = Ledger::load([(agent_key("a1"), old)]).unwrap();
        let m = l.agent("a1").unwrap();
        assert_eq!(
            (m.applied_seq, m.gaps, m.handed_over_batches),
            (42, vec![(3, 3)], 0)
        );
        assert!(Ledger::load([(agent_key("a1"), vec![0xff])]).is_err());
    }

    #[test]
    fn applies_once_survives_restart_and_compaction() {
        let dir = tmp("once");
        {
            let s = Store::open(&dir);
            let r = s.apply(&[
                req(1, 1, 0, &["up", "x"], &[(0, 10, 1.0), (1, 10, 5.0)]),
                req(1, 2, 2, &[], &[(1, 20, 6.0)]),
            ]);
            assert_eq!(
                r,
                vec![Ok(IngestOutcome::Applied), Ok(IngestOutcome::Applied)]
            );
            // A resend on a new connection: numbering restarts, the seq is a duplicate.
            let r = s.apply(&[req(2, 2, 0, &["x"], &[(0, 20, 6.0)])]);
            assert_eq!(r, vec![Ok(IngestOutcome::Duplicate)]);
            assert_eq!(s.agent("a1").unwrap().applied_seq, 2);
        }
        let s = Store::open(&dir);
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
        s.apply(&[req(3, 3, 0, &["x"], &[(0, 15, 5.5), (0, 20, 7.0)])]);
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
        let s = Store::open(&dir);
        assert_eq!(s.points(x[0].0, 0, 100).unwrap(), got);
        assert_eq!(s.head_points(), 0);
        assert_eq!(s.label_values("__name__").unwrap(), vec!["up", "x"]);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn numbering_out_of_step_is_refused_without_writing() {
        let dir = tmp("step");
        let s = Store::open(&dir);
        let r = s.apply(&[req(1, 1, 5, &["up"], &[(0, 1, 1.0)])]);
        assert!(r[0].as_ref().unwrap_err().contains("out of step"));
        let r = s.apply(&[req(1, 1, 0, &["up"], &[(3, 1, 1.0)])]);
        assert!(r[0].as_ref().unwrap_err().contains("undefined series #3"));
        assert_eq!(s.agent("a1").unwrap().applied_seq, 0);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Contracts 1 and 2 checked against a model, without RocksDB: an agent produces batches,
/// sends them in groups over connections that come and go, loses acks, drops its oldest
/// batches when full, and the aggregator crashes (its ledger rebuilt from what was
/// committed) or fails writes, in any order.
#[cfg(test)]
mod model {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet, VecDeque};

    /// What a store commits, kept in memory; a commit may be made to fail.
    #[derive(Default)]
    struct MemStore {
        ids: HashMap<Labels, SeriesId>,
        points: Vec<(SeriesId, Point)>,
        meta: BTreeMap<Vec<u8>, Vec<u8>>,
    }

    impl MemStore {
        fn commit(&mut self, plan: &WritePlan, fail: bool) -> Result<Vec<SeriesId>, ()> {
            if fail {
                return Err(());
            }
            let ids: Vec<SeriesId> = plan
                .new_series
                .iter()
                .map(|l| {
                    let next = self.ids.len() as SeriesId + 1;
                    *self.ids.entry(l.clone()).or_insert(next)
                })
                .collect();
            for r in &plan.records {
                for &(s, p) in r {
                    let id = match s {
                        SeriesSlot::Existing(id) => id,
                        SeriesSlot::New(n) => ids[n as usize],
                    };
                    self.points.push((id, p));
                }
            }
            for (k, v) in &plan.meta {
                self.meta.insert(k.clone(), v.clone());
            }
            Ok(ids)
        }

        /// How many times the batch-stream copy of `seq` was written (live copies carry
        /// `seq + 0.5`).
        fn written(&self, seq: u64) -> usize {
            self.points
                .iter()
                .filter(|(_, p)| p.value == seq as f64)
                .count()
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// The agent collects a batch.
        Produce,
        /// The agent sends its oldest `n` unacked batches in one group; the write fails or
        /// not; the acks reach the agent or are lost with the connection.
        Send {
            n: usize,
            fail: bool,
            ack_lost: bool,
        },
        /// A live copy of the newest batch goes ahead of the backlog.
        Live,
        /// The buffer is full: the oldest batch is dropped unsent.
        DropOldest,
        /// The connection breaks; the agent reconnects.
        Reconnect,
        /// The aggregator is killed and restarts from what it committed.
        Crash,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Produce),
            4 => (1usize..5, prop::bool::weighted(0.15), prop::bool::weighted(0.15))
                .prop_map(|(n, fail, ack_lost)| Op::Send { n, fail, ack_lost }),
            1 => Just(Op::Live),
            1 => Just(Op::DropOldest),
            1 => Just(Op::Reconnect),
            1 => Just(Op::Crash),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn nothing_acknowledged_is_lost_and_nothing_is_stored_twice(ops in prop::collection::vec(op(), 1..80)) {
            let labels = Labels::metric("m", [("agent", "a1")]);
            let mut store = MemStore::default();
            let mut ledger = Ledger::default();
            let mut buffer: VecDeque<u64> = VecDeque::new();
            let mut next_seq = 1u64;
            let mut conn = 1u64;
            let mut defined = false;
            let mut deleted: BTreeSet<u64> = BTreeSet::new();
            let mut gaps: BTreeSet<u64> = BTreeSet::new();
            let req = |seq: u64, conn: u64, defined: &mut bool, live: bool| {
                let first = !*defined;
                *defined = true;
                IngestRequest {
                    conn,
                    agent: "a1".into(),
                    region: "eu".into(),
                    seq,
                    now_ms: 0,
                    acked_elsewhere: 0,
                    first_new: if first { 0 } else { 1 },
                    new_series: if first { vec![labels.clone()] } else { vec![] },
                    points: vec![RawPoint {
                        series: 0,
                        ts: seq as i64,
                        value: seq as f64 + if live { 0.5 } else { 0.0 },
                    }],
                    live,
                }
            };
            for op in ops {
                match op {
                    Op::Produce => {
                        buffer.push_back(next_seq);
                        next_seq += 1;
                    }
                    Op::Send { n, fail, ack_lost } => {
                        let reqs: Vec<_> = buffer
                            .iter()
                            .take(n)
                            .map(|&s| req(s, conn, &mut defined, false))
                            .collect();
                        if reqs.is_empty() {
                            continue;
                        }
                        let planned = ledger.plan(&reqs, |l| store.ids.get(l).copied());
                        match store.commit(&planned.plan, fail) {
                            Err(()) => {
                                // Nothing written, nothing acknowledged: the driver closes
                                // the connection and the agent resends on a new one.
                                ledger.connection_closed(conn);
                                conn += 1;
                                defined = false;
                            }
                            Ok(ids) => {
                                let outcomes = planned.outcomes.clone();
                                ledger.committed(planned, &ids);
                                if ack_lost {
                                    ledger.connection_closed(conn);
                                    conn += 1;
                                    defined = false;
                                    continue;
                                }
                                for (r, o) in reqs.iter().zip(outcomes) {
                                    let o = o.expect("well-formed batches are accepted");
                                    prop_assert!(matches!(o, IngestOutcome::Applied | IngestOutcome::Duplicate));
                                    // The agent deletes on ack: the batch must be durable.
                                    prop_assert_eq!(store.written(r.seq), 1, "seq {} acked", r.seq);
                                    buffer.retain(|&s| s != r.seq);
                                    deleted.insert(r.seq);
                                }
                            }
                        }
                    }
                    Op::Live => {
                        if let Some(&s) = buffer.back() {
                            let r = req(s, conn + 1_000_000, &mut false, true);
                            let planned = ledger.plan(std::slice::from_ref(&r), |l| store.ids.get(l).copied());
                            let ids = store.commit(&planned.plan, false).unwrap();
                            let o = planned.outcomes[0].clone();
                            ledger.committed(planned, &ids);
                            ledger.connection_closed(conn + 1_000_000);
                            prop_assert!(matches!(o, Ok(IngestOutcome::Live) | Ok(IngestOutcome::Duplicate)));
                        }
                    }
                    Op::DropOldest => {
                        if let Some(s) = buffer.pop_front()
                            && store.written(s) == 0
                        {
                            gaps.insert(s);
                        }
                    }
                    Op::Reconnect => {
                        ledger.connection_closed(conn);
                        conn += 1;
                        defined = false;
                    }
                    Op::Crash => {
                        ledger = Ledger::load(store.meta.clone()).unwrap();
                        conn += 1;
                        defined = false;
                    }
                }
                // Contract 2: no batch is stored twice.
                for s in 1..next_seq {
                    prop_assert!(store.written(s) <= 1, "seq {} stored twice", s);
                }
                // Contract 1: every deleted batch is durable.
                for &s in &deleted {
                    prop_assert_eq!(store.written(s), 1);
                }
                // What the ledger says was applied is what is durable, even after a crash.
                let applied = ledger.agent("a1").map(|m| m.applied_seq).unwrap_or(0);
                let durable_max = (1..next_seq).filter(|&s| store.written(s) == 1).max().unwrap_or(0);
                prop_assert_eq!(applied, durable_max);
                let reloaded = Ledger::load(store.meta.clone()).unwrap();
                prop_assert_eq!(reloaded.agent("a1"), ledger.agent("a1"));
                // Every seq below the applied one that was dropped unsent is a counted gap.
                let m = ledger.agent("a1").unwrap_or_default();
                let expected_gaps = gaps.iter().filter(|&&s| s < applied).count() as u64;
                prop_assert_eq!(m.gap_batches, expected_gaps);
            }
        }
    }
}
