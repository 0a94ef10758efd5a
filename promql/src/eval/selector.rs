//! Series selectors: loading each selected series' points once per query, within the
//! sample limit, and taking an instant vector or a range vector out of them at each step.
//!
//! As Prometheus 2.42's `vectorSelectorSingle` and `matrixIterSlice`: an instant selector
//! takes the latest point in `[t - o - 5m, t - o]` unless it is a stale marker; a range
//! selector takes every point in `[t - o - r, t - o]` but stale markers. Both windows are
//! closed at both ends in Prometheus 2. With `@`, the window ends at the `@` time (minus
//! the offset) whatever the step.
//!
//! A selector of many series that only `count` or `group` folds, one series at a time, is
//! read in batches of neighbouring series as the evaluation walks them ([`Loaded::each`]),
//! so a year of ten thousand series is never held at once.

use crate::error::QueryError;
use crate::eval::range_fn::RangeFunc;
use crate::eval::subquery::subquery_times;
use crate::eval::{LOOKBACK_DELTA_MS, RangeSeries, Sample, drop_name};
use crate::parse::{AggOp, Expr, Selector};
use crate::rollup::{Bucket, MIN_POINTS_PER_BUCKET, RES_1H_MS, Resolution, RollupFunc, RollupInfo};
use crate::storage::{Querier, Queryable, SeriesRef};
use outpost_shared::model::is_stale;
use outpost_shared::{Labels, Point};
use std::cell::{Cell, OnceCell};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// One loaded series: its labels, the same without the metric name (made when first
/// needed), its points, and where the previous step's window started and ended in them.
pub(crate) struct LoadedSeries {
    /// Where the series comes in its selector's series sorted by labels: a selector read
    /// in batches hands its series in another order, and whoever keeps them in order of
    /// appearance sorts by this.
    pub(crate) pos: usize,
    pub(crate) labels: Arc<Labels>,
    dropped: OnceLock<Arc<Labels>>,
    pub(crate) points: Vec<Point>,
    /// The series' rollup buckets when its selector is read from rollups (then `points`
    /// is empty, or holds the raw points after [`Rollup::raw_from`]), oldest first.
    pub(crate) buckets: Vec<Bucket>,
    /// When read by [`Loaded::each_timestamps`] (then `points` is empty): the times of its
    /// points that are not stale markers, oldest first.
    pub(crate) timestamps: Vec<i64>,
    hints: [AtomicUsize; 2],
}

impl LoadedSeries {
    /// A series with these labels and points (sorted by time), at position `pos` of its
    /// selector's series.
    pub(crate) fn new(pos: usize, labels: Arc<Labels>, points: Vec<Point>) -> Self {
        LoadedSeries {
            pos,
            labels,
            dropped: OnceLock::new(),
            points,
            buckets: Vec::new(),
            timestamps: Vec::new(),
            hints: [AtomicUsize::new(0), AtomicUsize::new(0)],
        }
    }

    /// The labels without the metric name.
    pub(crate) fn dropped(&self) -> &Arc<Labels> {
        self.dropped.get_or_init(|| drop_name(&self.labels))
    }

    /// The labels a function of the series hands on: without the metric name when `drop`.
    pub(crate) fn labels_for(&self, drop: bool) -> &Arc<Labels> {
        if drop { self.dropped() } else { &self.labels }
    }
}

/// The series one selector selects, and whether they all have the same metric name (or
/// none has one), so that dropping it cannot make two of them alike.
struct Selected {
    /// Every series with its points, sorted by labels: read when the plan is loaded, or,
    /// for a selector read in batches, when something needs them all at once.
    series: OnceCell<Vec<LoadedSeries>>,
    /// What to read when the points were not read with the plan.
    deferred: Option<Deferred>,
    one_name: bool,
    /// How its series were read from rollups, if they were.
    rollup: Option<Rollup>,
}

/// How a selector's series are read from rollups: as buckets of `res` (one resolution, or
/// a coarser one before the finer one's oldest day), and, for windows that begin before the
/// oldest raw day kept and end after it, as raw points from `raw_from` (ms) on
/// ([`RollupFunc::apply_mixed_each`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rollup {
    pub(crate) res: Resolution,
    pub(crate) raw_from: Option<i64>,
}

/// A selector's series whose points are read batch by batch ([`Loaded::each`]).
struct Deferred {
    /// (series, labels, position in label order), sorted by series: neighbouring ids are
    /// neighbours in the store, so that a batch is one short walk of each partition.
    series: Vec<(SeriesRef, Arc<Labels>, usize)>,
    /// The window `[start, end]` (ms) of points, as [`Need`].
    start: i64,
    end: i64,
    /// Series per batch.
    batch: usize,
}

/// One selector of a plan and what it needs: the window `[start, end]` of points, and for
/// the range argument of a function rollups answer (outside subqueries) the range.
struct Need<'e> {
    sel: &'e Selector,
    start: i64,
    end: i64,
    rollup_range: Option<i64>,
    /// Only an aggregation that may fold its series in any order reads it, one series at
    /// a time: it may be read in batches, in the store's order.
    streamed: bool,
}

/// Series a batch takes at least; over a short window more, so that a batch spans
/// [`STREAM_CHUNKS`] series-days and the store still splits its read over the cores.
const STREAM_SERIES: usize = 1024;
/// See [`STREAM_SERIES`].
const STREAM_CHUNKS: usize = 65_536;
const DAY_MS: i64 = 86_400_000;

#[cfg(test)]
thread_local! {
    /// Series per batch in this thread's queries instead of [`batch_series`]' (`Some(0)`:
    /// none read in batches), for tests.
    pub(crate) static TEST_BATCH: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Series per batch over a window of `[start, end]` ms: [`STREAM_SERIES`], or more over a
/// short window, so that a batch spans [`STREAM_CHUNKS`] series-days. A selector of no
/// more series is read whole.
fn batch_series(start: i64, end: i64) -> usize {
    #[cfg(test)]
    if let Some(n) = TEST_BATCH.with(Cell::get) {
        return if n == 0 { usize::MAX } else { n };
    }
    let days = usize::try_from(end.saturating_sub(start) / DAY_MS + 1).unwrap_or(usize::MAX);
    STREAM_SERIES.max(STREAM_CHUNKS.div_ceil(days.max(1)))
}

/// The first index whose point is at or after `ts` (`after`: strictly after), starting
/// from the previous step's answer: steps move forward, so this is usually a short walk
/// through memory already in cache rather than a binary search of cold points.
fn seek(points: &[Point], hint: &AtomicUsize, ts: i64, after: bool) -> usize {
    let before = |p: &Point| if after { p.ts <= ts } else { p.ts < ts };
    let mut i = hint.load(Ordering::Relaxed).min(points.len());
    if i > 0 && !before(&points[i - 1]) {
        i = points[..i].partition_point(before);
    } else {
        let mut walked = 0;
        while i < points.len() && before(&points[i]) {
            i += 1;
            walked += 1;
            if walked == 16 {
                i += points[i..].partition_point(before);
                break;
            }
        }
    }
    hint.store(i, Ordering::Relaxed);
    i
}

/// The first millisecond of the closed window `[end - len, end]` (Prometheus 2's windows
/// include both ends; Prometheus 3 made them left-open).
pub(crate) fn window_start(end: i64, len: i64) -> i64 {
    end.saturating_sub(len)
}

/// The query's own time span, which `@ start()` and `@ end()` refer to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct QuerySpan {
    pub(crate) start_ms: i64,
    pub(crate) end_ms: i64,
}

/// Every selector in a plan with the window `[start, end]` of points it needs when the
/// expression is evaluated at times in `span`; `top`: not inside a subquery (whose inner
/// steps are not the query's).
/// `streamed`: `e` is what an aggregation folds one series at a time, in any order.
fn selectors<'e>(
    e: &'e Expr,
    span: (i64, i64),
    q: QuerySpan,
    top: bool,
    streamed: bool,
    out: &mut Vec<Need<'e>>,
) {
    let mut push = |sel: &'e Selector, len: i64, rollup: bool| {
        let (lo, hi) = match sel.at {
            Some(a) => {
                let at = a.resolve(q.start_ms, q.end_ms);
                (at, at)
            }
            None => span,
        };
        out.push(Need {
            sel,
            start: window_start(lo.saturating_sub(sel.offset_ms), len),
            end: hi.saturating_sub(sel.offset_ms),
            rollup_range: (rollup && top).then_some(len),
            streamed: streamed && top,
        });
    };
    match e {
        Expr::Vector(s) => push(s, LOOKBACK_DELTA_MS, false),
        Expr::Matrix { selector, range_ms } => push(selector, *range_ms, false),
        Expr::Number(_) | Expr::String(_) => {}
        Expr::Neg(e) => selectors(e, span, q, top, false, out),
        Expr::Binary(b) => {
            selectors(&b.lhs, span, q, top, false, out);
            selectors(&b.rhs, span, q, top, false, out);
        }
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                selectors(p, span, q, top, false, out);
            }
            // Only `count` and `group` answer the same whatever order they fold in. The
            // others fold in label order, as Prometheus does (a sum's last bits, the sign
            // of a zero `max` keeps, depend on it); read in label order, a batch's series
            // lie all over the store and every batch decompressed most of its blocks
            // again (measured slower than one read).
            let folded = a.param.is_none() && matches!(a.op, AggOp::Count | AggOp::Group);
            selectors(&a.expr, span, q, top, folded, out);
        }
        Expr::Call { name, args } => {
            if RollupFunc::of(name).is_some()
                && let [Expr::Matrix { selector, range_ms }] = args.as_slice()
            {
                push(selector, *range_ms, true);
            } else {
                // A range function hands its series on one at a time: folded, its range
                // argument is read as it goes.
                let matrix = RangeFunc::of(name).map(|f| f.matrix_arg());
                for (i, a) in args.iter().enumerate() {
                    let through = streamed && Some(i) == matrix;
                    selectors(a, span, q, top, through, out);
                }
            }
        }
        Expr::Subquery(sq) => {
            let (first, _, _) = subquery_times(sq, span.0, q);
            let (_, last, _) = subquery_times(sq, span.1, q);
            selectors(&sq.expr, (first, last), q, false, false, out);
        }
    }
}

/// The rollup resolution to read `need` from, if any: the window's length and every end
/// are multiples of it, and either the query's step is at least an hour (a long-range
/// graph: the coarsest such resolution whose buckets summarise at least
/// [`MIN_POINTS_PER_BUCKET`] points, or whose density the store cannot tell) or a window
/// begins before the oldest raw point kept and rollups reach further back (the finest such
/// resolution that reaches back to the window's start, where one does). A window wholly
/// before the raw points whose ends are off those edges, which nothing can answer as the
/// raw samples did (they are gone), reads the finest resolution that divides its length
/// and reaches back, taken back to the bucket edge before its end
/// ([`crate::rollup::window_end`]): whole buckets, not each bucket's last point. A window
/// off the edges that begins before the raw points and ends among them reads that
/// resolution's buckets up to the oldest raw day and the raw points after it
/// ([`Rollup::raw_from`]).
fn rollup_resolution(
    need: &Need<'_>,
    info: &RollupInfo,
    span: QuerySpan,
    step_ms: i64,
    querier: &dyn Querier,
) -> Option<Rollup> {
    let range = need.rollup_range?;
    // The first window ends `range` after the earliest window start.
    let first_end = need.start.saturating_add(range);
    let aligned = |r: i64| {
        r > 0
            && range >= r
            && range % r == 0
            && first_end.rem_euclid(r) == 0
            && (need.sel.at.is_some() || span.start_ms == span.end_ms || step_ms % r == 0)
    };
    let dense = |r: i64| {
        querier
            .points_per_bucket(need.start, need.end, r)
            .is_none_or(|n| n >= MIN_POINTS_PER_BUCKET)
    };
    let long_step = step_ms >= RES_1H_MS;
    // A window that begins before the oldest raw point, where rollups know more.
    let before_raw = info
        .raw_start_ms
        .is_none_or(|s| need.start < s && info.start_ms.is_none_or(|r| r < s));
    let coarsest = |ok: &dyn Fn(i64) -> bool| {
        info.resolutions
            .iter()
            .rev()
            .copied()
            .find(|&r| aligned(r) && ok(r))
    };
    // Nothing is held before the oldest day of any resolution: a window that starts
    // earlier holds what one starting there holds.
    let oldest = info
        .starts_ms
        .iter()
        .flatten()
        .chain(info.raw_start_ms.iter())
        .min()
        .copied();
    let reach_from = oldest.map_or(need.start, |o| need.start.max(o));
    // The oldest day held at resolution `r`: `Some(None)` when none is, `None` when the
    // store cannot tell.
    let start_of = |r: i64| {
        let i = info.resolutions.iter().position(|&x| x == r)?;
        (!info.starts_ms.is_empty()).then(|| info.starts_ms.get(i).copied().flatten())
    };
    // Whether buckets of `r` reach back to the first window's start (or the store cannot
    // tell): before the raw points, a finer resolution kept for less time would read
    // only the last point of each coarser bucket where it has none.
    let reaches = |r: i64| start_of(r).is_none_or(|s| s.is_some_and(|s| s <= reach_from));
    let held = |r: i64| start_of(r).is_none_or(|s| s.is_some());
    let finest = |ok: &dyn Fn(i64) -> bool| info.resolutions.iter().copied().find(|&r| ok(r));
    // Windows off the bucket edges before the raw points: whole buckets, each window
    // ending at the edge before (a window reaching into the raw points would lose the
    // newest of them so, and reads them after the oldest raw day instead).
    let divides = |r: i64| r > 0 && range >= r && range % r == 0;
    let raw_from = info.raw_start_ms.filter(|&s| need.end >= s);
    let splits = |r: i64| raw_from.is_none_or(|s| s.rem_euclid(r) == 0);
    let plain = |fine| Rollup {
        res: Resolution { fine, coarse: None },
        raw_from: None,
    };
    // Buckets of `fine`, and where they do not reach back, of the finest coarser
    // resolution that does: each window reads the finest that reaches back to its start.
    let tiered = |fine: i64, raw_from: Option<i64>| {
        let coarse = if reaches(fine) {
            None
        } else {
            let from = start_of(fine).flatten();
            finest(&|c| c > fine && divides(c) && splits(c) && reaches(c))
                .zip(from)
                .filter(|&(c, from)| from.rem_euclid(c) == 0)
        };
        Rollup {
            res: Resolution { fine, coarse },
            raw_from,
        }
    };
    let before = || {
        finest(&|r| aligned(r) && reaches(r))
            .map(plain)
            .or_else(|| finest(&|r| aligned(r) && held(r)).map(|r| tiered(r, None)))
            .or_else(|| {
                finest(&|r| divides(r) && splits(r) && held(r)).map(|r| tiered(r, raw_from))
            })
            .or_else(|| finest(&aligned).map(plain))
    };
    match (long_step, before_raw) {
        (true, false) => coarsest(&dense).map(plain),
        // Raw points cannot answer a window that begins before them.
        (true, true) => coarsest(&|r| dense(r) && reaches(r))
            .or_else(|| coarsest(&reaches))
            .or_else(|| coarsest(&dense))
            .or_else(|| coarsest(&|_| true))
            .map(plain)
            .or_else(before),
        (false, true) => before(),
        (false, false) => None,
    }
}

/// The series of every selector of a plan, loaded once for all its evaluation times.
pub(crate) struct Loaded<'q> {
    /// Keyed by the selector's address in the plan, which outlives the evaluation.
    series: HashMap<usize, Selected>,
    /// Where selectors read in batches are read from.
    querier: Option<Box<dyn Querier + 'q>>,
    /// The query's span, for `@ start()` and `@ end()`.
    pub(crate) span: QuerySpan,
    /// The sample limit: points read and points subqueries make count against it.
    max_samples: usize,
    /// Points counted against `max_samples` so far.
    used: Cell<usize>,
    /// The caller's stop flag, checked between series and steps.
    pub(crate) cancel: crate::Cancel,
}

fn key(sel: &Selector) -> usize {
    sel as *const Selector as usize
}

/// What a read takes of each series.
#[derive(Clone, Copy)]
enum Take {
    /// Its points ([`LoadedSeries::points`]).
    Points,
    /// Its rollup buckets ([`LoadedSeries::buckets`]), and its points after
    /// [`Rollup::raw_from`] if set.
    Rollup(Rollup),
    /// The times of its points that are not stale markers
    /// ([`LoadedSeries::timestamps`]).
    Timestamps,
}

impl Take {
    fn of(rollup: Option<Rollup>) -> Self {
        rollup.map_or(Take::Points, Take::Rollup)
    }
}

/// Reads what `take` says of `series` in `[start, end]` in one call to the store, each
/// series at position `pos` of its selector's series; `Ok(None)` past `budget` points
/// (buckets, timestamps), when cancelled or when `halt` is raised.
#[allow(clippy::too_many_arguments)]
fn read(
    querier: &dyn Querier,
    series: impl ExactSizeIterator<Item = (SeriesRef, Arc<Labels>, usize)>,
    start: i64,
    end: i64,
    take: Take,
    budget: usize,
    cancel: &crate::Cancel,
    halt: &AtomicBool,
) -> Result<Option<(Vec<LoadedSeries>, usize)>, QueryError> {
    let mut ids = Vec::with_capacity(series.len());
    let mut rest = Vec::with_capacity(series.len());
    for (id, labels, pos) in series {
        ids.push(id);
        rest.push((labels, pos));
    }
    let mut stop =
        |read: usize| read > budget || cancel.check().is_err() || halt.load(Ordering::Relaxed);
    let mut n = 0usize;
    let out = match take {
        Take::Points => querier
            .points_many(&ids, start, end, &mut stop)?
            .map(|all| made(rest, all, &mut n, |s, p| s.points = p)),
        Take::Timestamps => querier
            .timestamps_many(&ids, start, end, &mut stop)?
            .map(|all| made(rest, all, &mut n, |s, t| s.timestamps = t)),
        Take::Rollup(r) => {
            let Some((buckets, read)) = read_buckets(querier, &ids, start, end, r, &mut stop)?
            else {
                return Ok(None);
            };
            match r.raw_from {
                None => Some(made(rest, buckets, &mut n, |s, b| s.buckets = b)),
                Some(from) => {
                    let mut stop = |more: usize| stop(read.saturating_add(more));
                    querier
                        .points_many(&ids, from.max(start), end, &mut stop)?
                        .map(|points| {
                            let mut out = made(rest, buckets, &mut n, |s, b| s.buckets = b);
                            for (s, p) in out.iter_mut().zip(points) {
                                n = n.saturating_add(p.len());
                                s.points = p;
                            }
                            out
                        })
                }
            }
        }
    };
    Ok(out.map(|out| (out, n)))
}

/// Each series' buckets, and how many in all.
type BucketsRead = (Vec<Vec<Bucket>>, usize);

/// The buckets of `ids` that `r` says to read in `[start, end]` (before its raw points, if
/// any), coarser ones before the finer ones begin, each series' in one list; and how many
/// were read. `None` when `stop` stopped the read.
fn read_buckets(
    querier: &dyn Querier,
    ids: &[SeriesRef],
    start: i64,
    end: i64,
    r: Rollup,
    stop: &mut dyn FnMut(usize) -> bool,
) -> Result<Option<BucketsRead>, QueryError> {
    let end = r.raw_from.map_or(end, |f| end.min(f.saturating_sub(1)));
    let total = |all: &Vec<Vec<Bucket>>| all.iter().map(Vec::len).sum::<usize>();
    let Some((coarse, from)) = r.res.coarse else {
        let got = querier.buckets_many(ids, start, end, r.res.fine, stop)?;
        return Ok(got.map(|all| {
            let n = total(&all);
            (all, n)
        }));
    };
    let Some(mut old) =
        querier.buckets_many(ids, start, end.min(from.saturating_sub(1)), coarse, stop)?
    else {
        return Ok(None);
    };
    let before = total(&old);
    let mut stop = |more: usize| stop(before.saturating_add(more));
    let Some(new) = querier.buckets_many(ids, from.max(start), end, r.res.fine, &mut stop)? else {
        return Ok(None);
    };
    for (o, n) in old.iter_mut().zip(new) {
        o.extend(n);
    }
    let n = total(&old);
    Ok(Some((old, n)))
}

/// Each series' part of what a read returned (`all[k]` for `rest[k]`: labels, position),
/// put into a [`LoadedSeries`] where `put` says, its length added to `n`.
fn made<T>(
    rest: Vec<(Arc<Labels>, usize)>,
    all: Vec<Vec<T>>,
    n: &mut usize,
    put: fn(&mut LoadedSeries, Vec<T>),
) -> Vec<LoadedSeries> {
    rest.into_iter()
        .zip(all)
        .map(|((labels, pos), got)| {
            *n = n.saturating_add(got.len());
            let mut s = LoadedSeries::new(pos, labels, Vec::new());
            put(&mut s, got);
            s
        })
        .collect()
}

impl<'q> Loaded<'q> {
    /// Loads what `expr` needs to be evaluated at times in `[first_ms, last_ms]`, counting
    /// points against `limits.max_samples` and stopping when `limits.cancel` is raised. A
    /// selector of more series than a batch takes ([`batch_series`]) that only `count` or
    /// `group` folds is not read here but by [`Loaded::each`].
    pub(crate) fn load(
        src: &'q dyn Queryable,
        expr: &Expr,
        first_ms: i64,
        last_ms: i64,
        step_ms: i64,
        limits: &crate::Limits,
    ) -> Result<Self, QueryError> {
        let span = QuerySpan {
            start_ms: first_ms,
            end_ms: last_ms,
        };
        let mut needs = Vec::new();
        selectors(expr, (first_ms, last_ms), span, true, false, &mut needs);
        let mut loaded = Loaded {
            series: HashMap::new(),
            querier: None,
            span,
            max_samples: limits.max_samples,
            used: Cell::new(0),
            cancel: limits.cancel.clone(),
        };
        let (Some(mint), Some(maxt)) = (
            needs.iter().map(|w| w.start).min(),
            needs.iter().map(|w| w.end).max(),
        ) else {
            return Ok(loaded);
        };
        // From the day's start: a window read from buckets may begin at the bucket edge
        // before its own start (see `rollup_resolution`).
        let querier = src.querier(crate::rollup::window_end(mint, DAY_MS), maxt)?;
        let info = querier.rollups();
        for need in needs {
            let rollup = info
                .as_ref()
                .and_then(|i| rollup_resolution(&need, i, span, step_ms, querier.as_ref()));
            let selected = querier.select(&need.sel.matchers)?;
            let first = selected.first().map(|s| s.1.metric_name());
            let one_name = selected.iter().all(|s| Some(s.1.metric_name()) == first);
            let all = OnceCell::new();
            // Buckets from the edge at or before the first window's start: windows off the
            // edges are read back to the edge before their end.
            let start = rollup.map_or(need.start, |r| {
                crate::rollup::window_end(need.start, r.res.coarsest())
            });
            let batch = batch_series(start, need.end);
            let deferred = if need.streamed && selected.len() > batch {
                let mut series: Vec<(SeriesRef, Arc<Labels>, usize)> = selected
                    .into_iter()
                    .enumerate()
                    .map(|(pos, (id, labels))| (id, labels, pos))
                    .collect();
                series.sort_unstable_by_key(|s| s.0);
                Some(Deferred {
                    series,
                    start,
                    end: need.end,
                    batch,
                })
            } else {
                // Every series of the selector in one read: a store walks its partitions once.
                let series = selected
                    .into_iter()
                    .enumerate()
                    .map(|(pos, (id, labels))| (id, labels, pos));
                let out = loaded.read_counted(querier.as_ref(), series, start, need.end, rollup)?;
                let _ = all.set(out);
                None
            };
            loaded.series.insert(
                key(need.sel),
                Selected {
                    series: all,
                    deferred,
                    one_name,
                    rollup,
                },
            );
        }
        loaded.querier = Some(querier);
        Ok(loaded)
    }

    /// [`read`] within what is left of the sample limit, counted against it.
    fn read_counted(
        &self,
        querier: &dyn Querier,
        series: impl ExactSizeIterator<Item = (SeriesRef, Arc<Labels>, usize)>,
        start: i64,
        end: i64,
        rollup: Option<Rollup>,
    ) -> Result<Vec<LoadedSeries>, QueryError> {
        let budget = self.budget();
        let halt = AtomicBool::new(false);
        let got = read(
            querier,
            series,
            start,
            end,
            Take::of(rollup),
            budget,
            &self.cancel,
            &halt,
        )?;
        self.counted(got)
    }

    /// What [`read`] read, counted against the sample limit.
    ///
    /// # Errors
    /// The read stopped (cancelled, or past the limit), or its points do not fit.
    fn counted(
        &self,
        got: Option<(Vec<LoadedSeries>, usize)>,
    ) -> Result<Vec<LoadedSeries>, QueryError> {
        let Some((out, n)) = got else {
            self.cancel.check()?;
            return Err(QueryError::TooManySamples);
        };
        self.take(n)?;
        Ok(out)
    }

    /// Points that may still be read or made before the query is over its sample limit.
    pub(crate) fn budget(&self) -> usize {
        self.max_samples.saturating_sub(self.used.get())
    }

    /// Counts `n` points against the sample limit.
    ///
    /// # Errors
    /// [`QueryError::TooManySamples`] when they do not fit.
    pub(crate) fn take(&self, n: usize) -> Result<(), QueryError> {
        let used = self.used.get().saturating_add(n);
        if used > self.max_samples {
            return Err(QueryError::TooManySamples);
        }
        self.used.set(used);
        Ok(())
    }

    /// How `sel`'s series were read from rollups, if they were ([`LoadedSeries::buckets`],
    /// and [`LoadedSeries::points`] after [`Rollup::raw_from`]).
    pub(crate) fn rollup_of(&self, sel: &Selector) -> Option<Rollup> {
        self.series.get(&key(sel)).and_then(|s| s.rollup)
    }

    /// The time a selector is evaluated at for step `t`: its `@` time, or `t`.
    pub(crate) fn at(&self, sel: &Selector, t: i64) -> i64 {
        sel.at
            .map_or(t, |a| a.resolve(self.span.start_ms, self.span.end_ms))
    }

    /// The series `sel` selects with their points, sorted by labels; a selector read in
    /// batches is read whole here, once.
    ///
    /// # Errors
    /// The store cannot be read, the points do not fit in the sample limit, or the query
    /// is cancelled.
    pub(crate) fn of(&self, sel: &Selector) -> Result<&[LoadedSeries], QueryError> {
        let Some(s) = self.series.get(&key(sel)) else {
            return Ok(&[]);
        };
        if let Some(all) = s.series.get() {
            return Ok(all);
        }
        let (Some(d), Some(querier)) = (&s.deferred, &self.querier) else {
            return Ok(&[]);
        };
        let mut order: Vec<&(SeriesRef, Arc<Labels>, usize)> = d.series.iter().collect();
        order.sort_unstable_by_key(|s| s.2);
        let series = order
            .into_iter()
            .map(|(id, l, pos)| (*id, Arc::clone(l), *pos));
        let out = self.read_counted(querier.as_ref(), series, d.start, d.end, s.rollup)?;
        Ok(s.series.get_or_init(|| out))
    }

    /// Hands the series `sel` selects to `f`, a batch at a time: all at once when they
    /// were read with the plan (sorted by labels), else read batch by batch in the store's
    /// order, the next batch read on a thread of its own while `f` folds the current one,
    /// which is dropped after; [`LoadedSeries::pos`] tells the label order.
    ///
    /// # Errors
    /// As [`Loaded::of`], or what `f` returns.
    pub(crate) fn each(
        &self,
        sel: &Selector,
        f: &mut dyn FnMut(&[LoadedSeries]) -> Result<(), QueryError>,
    ) -> Result<(), QueryError> {
        self.each_as(sel, false, f)
    }

    /// [`Loaded::each`] for an evaluation that only asks where points are: batches read
    /// from raw points hold [`LoadedSeries::timestamps`] only, their values not decoded
    /// where the store can tell none is a stale marker. Series held whole, or read from
    /// rollups, come as [`Loaded::each`] hands them.
    ///
    /// # Errors
    /// As [`Loaded::each`].
    pub(crate) fn each_timestamps(
        &self,
        sel: &Selector,
        f: &mut dyn FnMut(&[LoadedSeries]) -> Result<(), QueryError>,
    ) -> Result<(), QueryError> {
        self.each_as(sel, true, f)
    }

    fn each_as(
        &self,
        sel: &Selector,
        timestamps: bool,
        f: &mut dyn FnMut(&[LoadedSeries]) -> Result<(), QueryError>,
    ) -> Result<(), QueryError> {
        let Some(s) = self.series.get(&key(sel)) else {
            return Ok(());
        };
        if let Some(all) = s.series.get() {
            return f(all);
        }
        let (Some(d), Some(querier)) = (&s.deferred, &self.querier) else {
            return Ok(());
        };
        let querier: &(dyn Querier + 'q) = querier.as_ref();
        let take = match s.rollup {
            None if timestamps => Take::Timestamps,
            rollup => Take::of(rollup),
        };
        let (start, end) = (d.start, d.end);
        // Raised when the fold fails, so that the batch being read stops.
        let halt = AtomicBool::new(false);
        let (halt, cancel) = (&halt, &self.cancel);
        let read_batch = move |batch: &[(SeriesRef, Arc<Labels>, usize)], budget: usize| {
            let series = batch.iter().map(|(id, l, pos)| (*id, Arc::clone(l), *pos));
            read(querier, series, start, end, take, budget, cancel, halt)
        };
        let mut batches = d.series.chunks(d.batch.max(1));
        let Some(first) = batches.next() else {
            return Ok(());
        };
        std::thread::scope(|scope| {
            let mut got = read_batch(first, self.budget());
            loop {
                let out = self.counted(got?)?;
                // The next batch is read on another thread while this one is folded.
                let next = batches.next().map(|b| {
                    let budget = self.budget();
                    scope.spawn(move || read_batch(b, budget))
                });
                let folded = f(&out);
                drop(out);
                if folded.is_err() {
                    halt.store(true, Ordering::Relaxed);
                }
                let Some(next) = next else {
                    return folded;
                };
                got = next.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
                folded?;
                self.cancel.check()?;
            }
        })
    }

    /// Whether `sel`'s series are held whole (read with the plan, or since by
    /// [`Loaded::of`]), so that [`Loaded::of`] reads nothing.
    pub(crate) fn held(&self, sel: &Selector) -> bool {
        self.series
            .get(&key(sel))
            .is_some_and(|s| s.series.get().is_some())
    }

    /// Whether the series `sel` selects all have the same metric name, or none.
    pub(crate) fn one_name(&self, sel: &Selector) -> bool {
        self.series.get(&key(sel)).is_none_or(|s| s.one_name)
    }

    /// The instant vector `sel` selects at `t`: stamped with `t`, or with each point's own
    /// time when `own_ts` (as Prometheus' `timestamp()` of a selector sees them).
    ///
    /// # Errors
    /// As [`Loaded::of`].
    pub(crate) fn instant(
        &self,
        sel: &Selector,
        t: i64,
        own_ts: bool,
    ) -> Result<Vec<Sample>, QueryError> {
        let end = self.at(sel, t).saturating_sub(sel.offset_ms);
        let start = end.saturating_sub(LOOKBACK_DELTA_MS);
        Ok(self
            .of(sel)?
            .iter()
            .filter_map(|s| {
                let (labels, points) = (&s.labels, &s.points);
                let i = seek(points, &s.hints[1], end, true);
                let p = points[..i]
                    .last()
                    .filter(|p| p.ts >= start && !is_stale(p.value))?;
                Some(Sample {
                    labels: Arc::clone(labels),
                    point: Point {
                        ts: if own_ts { p.ts } else { t },
                        value: p.value,
                    },
                })
            })
            .collect())
    }

    /// The range vector `sel[range_ms]` at `t`; series without points are left out.
    ///
    /// # Errors
    /// As [`Loaded::of`].
    pub(crate) fn matrix(
        &self,
        sel: &Selector,
        range_ms: i64,
        t: i64,
    ) -> Result<Vec<RangeSeries>, QueryError> {
        let end = self.at(sel, t).saturating_sub(sel.offset_ms);
        let start = end.saturating_sub(range_ms);
        Ok(self
            .of(sel)?
            .iter()
            .filter_map(|s| {
                let points = &s.points;
                let lo = seek(points, &s.hints[0], start, false);
                let hi = seek(points, &s.hints[1], end, true);
                let pts: Vec<Point> = points[lo..hi.max(lo)]
                    .iter()
                    .filter(|p| !is_stale(p.value))
                    .copied()
                    .collect();
                (!pts.is_empty()).then(|| RangeSeries {
                    labels: Arc::clone(&s.labels),
                    dropped: Arc::clone(s.dropped()),
                    points: pts,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::seek;
    use outpost_shared::Point;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn seek_agrees_with_a_binary_search_whichever_way_steps_go() {
        let points: Vec<Point> = (0..100)
            .map(|i| Point {
                ts: i * 10,
                value: 0.0,
            })
            .collect();
        let hint = AtomicUsize::new(0);
        // Forward, backward, far jumps, before the first and after the last point.
        for ts in [
            0, 5, 10, 15, 300, 290, 295, 1000, -5, 999, 990, 991, 500, 20, 20, 2000,
        ] {
            for after in [false, true] {
                let want = points.partition_point(|p| if after { p.ts <= ts } else { p.ts < ts });
                assert_eq!(
                    seek(&points, &hint, ts, after),
                    want,
                    "ts {ts} after {after}"
                );
            }
        }
        assert_eq!(seek(&[], &AtomicUsize::new(3), 5, true), 0);
    }
}
