//! A result cache for range queries, so a dashboard refresh computes only its new steps.
//!
//! A range query's answer at step `t` depends only on the points it reads, and for a query
//! with no `@` and no negative `offset` ([`outpost_promql::Expr::reads_only_up_to_step`])
//! those are at or before `t`. So the cache keeps, per query text, step and grid phase
//! (`start mod step`), the answer over a run of consecutive steps, and every write to the
//! store ([`QueryCache::note_write`], called by the ingest writer after each commit with the
//! oldest timestamp it wrote) cuts every cached run back to the steps before that timestamp.
//! Late and backfilled data therefore invalidate exactly what they could change, and a hit
//! answers what a fresh evaluation would.
//!
//! A query that finds part of its steps cached evaluates only the steps after the cached
//! run and merges the two by series. A race with a write landing while the query evaluates
//! is closed with epochs: a query notes the write epoch before it evaluates, and on storing
//! applies the cut of every write since (kept in a short log; older than the log, nothing is
//! stored).
//!
//! Bounded: at most `max_entries` queries and `max_points` points in all; the least recently
//! used entries go first.

use outpost_shared::{Labels, Point, SeriesPoints};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

/// Writes remembered for queries still evaluating: more than this many commits during one
/// evaluation and its result is not stored.
const WRITE_LOG: usize = 4096;

/// What identifies a cached answer: the query text, the step and the grid's phase.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// The query as sent.
    pub query: String,
    /// Step, ms.
    pub step_ms: i64,
    /// `start` modulo the step, ms: queries on the same grid share steps.
    pub phase_ms: i64,
}

impl Key {
    /// The key of a range query.
    pub fn new(query: &str, start_ms: i64, step_ms: i64) -> Key {
        Key {
            query: query.to_string(),
            step_ms,
            phase_ms: start_ms.rem_euclid(step_ms),
        }
    }
}

struct Entry {
    /// First and last step of the cached run (inclusive).
    first: i64,
    last: i64,
    series: BTreeMap<Labels, Vec<Point>>,
    points: usize,
    used: u64,
}

struct Inner {
    entries: HashMap<Key, Entry>,
    points: usize,
    tick: u64,
    /// Writes so far.
    epoch: u64,
    /// `(epoch, oldest timestamp written)` of the latest writes.
    log: VecDeque<(u64, i64)>,
}

/// The cache. See the module docs.
pub struct QueryCache {
    inner: Mutex<Inner>,
    max_entries: usize,
    max_points: usize,
}

/// What a lookup found: the cached series clipped to the request, and the last step they
/// cover (the caller evaluates the steps after it).
pub struct Hit {
    /// Cached series with their points in `[start, last]`.
    pub series: Vec<SeriesPoints>,
    /// The last cached step within the request.
    pub last: i64,
}

impl QueryCache {
    /// A cache of at most `max_entries` queries and `max_points` points.
    pub fn new(max_entries: usize, max_points: usize) -> QueryCache {
        QueryCache {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                points: 0,
                tick: 0,
                epoch: 0,
                log: VecDeque::new(),
            }),
            max_entries,
            max_points,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The write epoch now; pass it to [`QueryCache::store`] for a result evaluated after
    /// this call.
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Records a commit whose oldest point is at `min_ts` (ms): every cached step at or
    /// after it is dropped.
    pub fn note_write(&self, min_ts: i64) {
        let mut g = self.lock();
        g.epoch += 1;
        let epoch = g.epoch;
        g.log.push_back((epoch, min_ts));
        if g.log.len() > WRITE_LOG {
            g.log.pop_front();
        }
        let mut freed = 0;
        g.entries.retain(|_, e| {
            let before = e.points;
            cut(e, min_ts);
            freed += before - e.points;
            e.first <= e.last
        });
        g.points -= freed;
    }

    /// The cached part of `[start, end]` for `key`, if its run starts at or before `start`
    /// and reaches into the request.
    pub fn lookup(&self, key: &Key, start: i64, end: i64) -> Option<Hit> {
        let mut g = self.lock();
        g.tick += 1;
        let tick = g.tick;
        let e = g.entries.get_mut(key)?;
        if e.first > start || e.last < start {
            return None;
        }
        e.used = tick;
        let last = e.last.min(end);
        let series = e
            .series
            .iter()
            .filter_map(|(l, pts)| {
                let lo = pts.partition_point(|p| p.ts < start);
                let hi = pts.partition_point(|p| p.ts <= last);
                (lo < hi).then(|| SeriesPoints {
                    labels: l.clone(),
                    points: pts[lo..hi].to_vec(),
                })
            })
            .collect();
        Some(Hit { series, last })
    }

    /// Stores the answer over steps `[first, last]`, evaluated after [`QueryCache::epoch`]
    /// returned `epoch`, cut by the writes since. Replaces what `key` had.
    pub fn store(&self, key: Key, first: i64, last: i64, series: &[SeriesPoints], epoch: u64) {
        let mut g = self.lock();
        let mut e = Entry {
            first,
            last,
            series: series
                .iter()
                .map(|s| (s.labels.clone(), s.points.clone()))
                .collect(),
            points: series.iter().map(|s| s.points.len()).sum(),
            used: 0,
        };
        match g.log.front() {
            // Writes since `epoch` are no longer all known: do not store.
            Some(&(oldest, _)) if epoch + 1 < oldest => return,
            _ => {}
        }
        let cuts: Vec<i64> = g
            .log
            .iter()
            .filter(|(ep, _)| *ep > epoch)
            .map(|(_, ts)| *ts)
            .collect();
        for ts in cuts {
            cut(&mut e, ts);
        }
        if e.first > e.last || e.points > self.max_points {
            return;
        }
        g.tick += 1;
        e.used = g.tick;
        if let Some(old) = g.entries.remove(&key) {
            g.points -= old.points;
            // Runs that overlap or touch join, so windows a step apart (dashboards refreshed
            // at different moments) share one run instead of displacing each other.
            if old.first <= e.last + key.step_ms && e.first <= old.last + key.step_ms {
                join(&mut e, old);
                // Keep at most twice the request's span, the newest steps.
                let keep_from = e.last - 2 * (last - first) - key.step_ms;
                if e.first < keep_from {
                    trim_front(&mut e, keep_from);
                }
            }
        }
        if e.points > self.max_points {
            return;
        }
        g.points += e.points;
        g.entries.insert(key, e);
        // Least recently used out until within bounds.
        while g.entries.len() > self.max_entries || g.points > self.max_points {
            let Some(k) = g
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(old) = g.entries.remove(&k) {
                g.points -= old.points;
            }
        }
    }

    /// Entries and points held, for `/metrics`.
    pub fn size(&self) -> (usize, usize) {
        let g = self.lock();
        (g.entries.len(), g.points)
    }
}

/// Adds `old`'s steps to `e`; where both have a step, `e`'s (the newer evaluation) wins.
fn join(e: &mut Entry, old: Entry) {
    e.first = e.first.min(old.first);
    e.last = e.last.max(old.last);
    for (labels, pts) in old.series {
        match e.series.get_mut(&labels) {
            None => {
                e.series.insert(labels, pts);
            }
            Some(mine) => {
                let mut all: Vec<Point> = Vec::with_capacity(mine.len() + pts.len());
                all.append(mine);
                all.extend(pts);
                // Stable: `e`'s point stays first for a repeated timestamp.
                all.sort_by_key(|p| p.ts);
                all.dedup_by_key(|p| p.ts);
                *mine = all;
            }
        }
    }
    e.points = e.series.values().map(Vec::len).sum();
}

/// Drops the steps before `from` from `e`.
fn trim_front(e: &mut Entry, from: i64) {
    e.first = from;
    e.series.retain(|_, pts| {
        let drop = pts.partition_point(|p| p.ts < from);
        pts.drain(..drop);
        !pts.is_empty()
    });
    e.points = e.series.values().map(Vec::len).sum();
}

/// Drops the steps at or after `min_ts` from `e`.
fn cut(e: &mut Entry, min_ts: i64) {
    if min_ts > e.last {
        return;
    }
    let mut points = 0;
    e.series.retain(|_, pts| {
        let keep = pts.partition_point(|p| p.ts < min_ts);
        pts.truncate(keep);
        points += pts.len();
        !pts.is_empty()
    });
    e.points = points;
    // The run now ends just before `min_ts` (between two steps, perhaps): the steps it still
    // covers are exactly those before the write.
    e.last = min_ts - 1;
}

/// Merges a cached part and a freshly evaluated part (later steps) by series, sorted by
/// labels.
pub fn merge(cached: Vec<SeriesPoints>, fresh: Vec<SeriesPoints>) -> Vec<SeriesPoints> {
    let mut by: BTreeMap<Labels, Vec<Point>> = BTreeMap::new();
    for s in cached.into_iter().chain(fresh) {
        by.entry(s.labels).or_default().extend(s.points);
    }
    by.into_iter()
        .map(|(labels, points)| SeriesPoints { labels, points })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, pts: &[(i64, f64)]) -> SeriesPoints {
        SeriesPoints {
            labels: Labels::metric(name, []),
            points: pts.iter().map(|&(ts, value)| Point { ts, value }).collect(),
        }
    }

    #[test]
    fn a_refresh_reuses_the_steps_no_write_touched() {
        let c = QueryCache::new(10, 1000);
        let key = Key::new("q", 0, 10);
        let e = c.epoch();
        c.store(
            key.clone(),
            0,
            40,
            &[series(
                "a",
                &[(0, 1.0), (10, 2.0), (20, 3.0), (30, 4.0), (40, 5.0)],
            )],
            e,
        );
        // A write at 25 invalidates steps 30 and 40.
        c.note_write(25);
        let hit = c.lookup(&key, 10, 50).expect("hit");
        assert_eq!(hit.last, 24);
        assert_eq!(hit.series, vec![series("a", &[(10, 2.0), (20, 3.0)])]);
        // A different grid phase or step misses.
        assert!(c.lookup(&Key::new("q", 5, 10), 5, 45).is_none());
        assert!(c.lookup(&Key::new("q", 0, 20), 0, 40).is_none());
        // A request starting before the run misses.
        let key2 = Key::new("q", 0, 10);
        assert!(c.lookup(&key2, -10, 40).is_none());
        // A write older than every step empties it.
        c.note_write(-100);
        assert!(c.lookup(&key, 10, 50).is_none());
        assert_eq!(c.size(), (0, 0));
    }

    #[test]
    fn writes_during_an_evaluation_cut_what_is_stored() {
        let c = QueryCache::new(10, 1000);
        let key = Key::new("q", 0, 10);
        let e = c.epoch();
        // The evaluation runs; meanwhile a write lands at 15.
        c.note_write(15);
        c.store(
            key.clone(),
            0,
            30,
            &[series("a", &[(0, 1.0), (10, 2.0), (20, 3.0), (30, 4.0)])],
            e,
        );
        let hit = c.lookup(&key, 0, 30).expect("hit");
        assert_eq!(hit.last, 14);
        assert_eq!(hit.series, vec![series("a", &[(0, 1.0), (10, 2.0)])]);
        // More writes than the log holds during an evaluation: nothing is stored.
        let e = c.epoch();
        for _ in 0..WRITE_LOG + 1 {
            c.note_write(1_000_000);
        }
        c.store(Key::new("r", 0, 10), 0, 10, &[series("b", &[(0, 1.0)])], e);
        assert!(c.lookup(&Key::new("r", 0, 10), 0, 10).is_none());
    }

    #[test]
    fn bounded_by_entries_and_points_least_recently_used_first() {
        let c = QueryCache::new(2, 5);
        for q in ["a", "b"] {
            let e = c.epoch();
            c.store(
                Key::new(q, 0, 10),
                0,
                10,
                &[series(q, &[(0, 1.0), (10, 1.0)])],
                e,
            );
        }
        // Touch "a", then a third entry evicts "b".
        assert!(c.lookup(&Key::new("a", 0, 10), 0, 10).is_some());
        let e = c.epoch();
        c.store(Key::new("c", 0, 10), 0, 10, &[series("c", &[(0, 1.0)])], e);
        assert!(c.lookup(&Key::new("b", 0, 10), 0, 10).is_none());
        assert!(c.lookup(&Key::new("a", 0, 10), 0, 10).is_some());
        assert_eq!(c.size(), (2, 3));
        // Too big alone: not stored.
        let e = c.epoch();
        let big: Vec<(i64, f64)> = (0..6).map(|i| (i * 10, 1.0)).collect();
        c.store(Key::new("d", 0, 10), 0, 50, &[series("d", &big)], e);
        assert!(c.lookup(&Key::new("d", 0, 10), 0, 50).is_none());
    }

    #[test]
    fn windows_a_step_apart_share_one_run() {
        let c = QueryCache::new(10, 1000);
        let key = Key::new("q", 0, 10);
        let run = |from: i64, to: i64| -> Vec<(i64, f64)> {
            (from / 10..=to / 10).map(|i| (i * 10, i as f64)).collect()
        };
        let e = c.epoch();
        c.store(key.clone(), 100, 200, &[series("a", &run(100, 200))], e);
        let e = c.epoch();
        c.store(key.clone(), 110, 210, &[series("a", &run(110, 210))], e);
        // The earlier window is still whole.
        let hit = c.lookup(&key, 100, 200).expect("hit");
        assert_eq!(hit.last, 200);
        assert_eq!(hit.series, vec![series("a", &run(100, 200))]);
        let hit = c.lookup(&key, 110, 210).expect("hit");
        assert_eq!(hit.last, 210);
        // A run moving on for long keeps twice the window: old steps go.
        for k in 1..30 {
            let e = c.epoch();
            c.store(
                key.clone(),
                110 + k * 10,
                210 + k * 10,
                &[series("a", &run(110 + k * 10, 210 + k * 10))],
                e,
            );
        }
        assert!(c.lookup(&key, 100, 200).is_none());
        let (_, points) = c.size();
        assert!(points <= 2 * 11 + 2, "{points}");
        assert!(c.lookup(&key, 400, 500).is_some());
    }

    #[test]
    fn merge_joins_series_by_labels() {
        let m = merge(
            vec![series("a", &[(0, 1.0)]), series("b", &[(0, 2.0)])],
            vec![series("a", &[(10, 3.0)]), series("c", &[(10, 4.0)])],
        );
        assert_eq!(
            m,
            vec![
                series("a", &[(0, 1.0), (10, 3.0)]),
                series("b", &[(0, 2.0)]),
                series("c", &[(10, 4.0)])
            ]
        );
    }
}
