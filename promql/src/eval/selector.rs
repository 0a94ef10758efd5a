//! Series selectors: loading each selected series' points once per query, within the
//! sample limit, and taking an instant vector or a range vector out of them at each step.
//!
//! As Prometheus 2.42's `vectorSelectorSingle` and `matrixIterSlice`: an instant selector
//! takes the latest point in `[t - o - 5m, t - o]` unless it is a stale marker; a range
//! selector takes every point in `[t - o - r, t - o]` but stale markers. Both windows are
//! closed at both ends in Prometheus 2. With `@`, the window ends at the `@` time (minus
//! the offset) whatever the step.

use crate::error::QueryError;
use crate::eval::subquery::subquery_times;
use crate::eval::{LOOKBACK_DELTA_MS, RangeSeries, Sample, drop_name};
use crate::parse::{Expr, Selector};
use crate::rollup::{Bucket, MIN_POINTS_PER_BUCKET, RES_1H_MS, RollupFunc, RollupInfo};
use crate::storage::{Querier, Queryable, SeriesRef};
use outpost_shared::model::is_stale;
use outpost_shared::{Labels, Point};
use std::cell::{Cell, OnceCell};
use std::collections::HashMap;
use std::sync::Arc;

/// One loaded series: its labels, the same without the metric name (made when first
/// needed), its points, and where the previous step's window started and ended in them.
pub(crate) struct LoadedSeries {
    pub(crate) labels: Arc<Labels>,
    dropped: OnceCell<Arc<Labels>>,
    pub(crate) points: Vec<Point>,
    /// The series' rollup buckets when its selector is read from rollups (then `points`
    /// is empty), oldest first.
    pub(crate) buckets: Vec<Bucket>,
    hints: [Cell<usize>; 2],
}

impl LoadedSeries {
    /// A series with these labels and points (sorted by time).
    pub(crate) fn new(labels: Arc<Labels>, points: Vec<Point>) -> Self {
        LoadedSeries {
            labels,
            dropped: OnceCell::new(),
            points,
            buckets: Vec::new(),
            hints: [Cell::new(0), Cell::new(0)],
        }
    }

    /// The labels without the metric name.
    pub(crate) fn dropped(&self) -> &Arc<Labels> {
        self.dropped.get_or_init(|| drop_name(&self.labels))
    }
}

/// The series one selector selects, and whether they all have the same metric name (or
/// none has one), so that dropping it cannot make two of them alike.
struct Selected {
    series: Vec<LoadedSeries>,
    one_name: bool,
    /// The rollup resolution (ms) its series' buckets have, when read from rollups.
    rollup: Option<i64>,
}

/// One selector of a plan and what it needs: the window `[start, end]` of points, and for
/// the range argument of a function rollups answer (outside subqueries) the range.
struct Need<'e> {
    sel: &'e Selector,
    start: i64,
    end: i64,
    rollup_range: Option<i64>,
}

/// The first index whose point is at or after `ts` (`after`: strictly after), starting
/// from the previous step's answer: steps move forward, so this is usually a short walk
/// through memory already in cache rather than a binary search of cold points.
fn seek(points: &[Point], hint: &Cell<usize>, ts: i64, after: bool) -> usize {
    let before = |p: &Point| if after { p.ts <= ts } else { p.ts < ts };
    let mut i = hint.get().min(points.len());
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
    hint.set(i);
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
fn selectors<'e>(e: &'e Expr, span: (i64, i64), q: QuerySpan, top: bool, out: &mut Vec<Need<'e>>) {
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
        });
    };
    match e {
        Expr::Vector(s) => push(s, LOOKBACK_DELTA_MS, false),
        Expr::Matrix { selector, range_ms } => push(selector, *range_ms, false),
        Expr::Number(_) | Expr::String(_) => {}
        Expr::Neg(e) => selectors(e, span, q, top, out),
        Expr::Binary(b) => {
            selectors(&b.lhs, span, q, top, out);
            selectors(&b.rhs, span, q, top, out);
        }
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                selectors(p, span, q, top, out);
            }
            selectors(&a.expr, span, q, top, out);
        }
        Expr::Call { name, args } => {
            if RollupFunc::of(name).is_some()
                && let [Expr::Matrix { selector, range_ms }] = args.as_slice()
            {
                push(selector, *range_ms, true);
            } else {
                args.iter().for_each(|a| selectors(a, span, q, top, out));
            }
        }
        Expr::Subquery(sq) => {
            let (first, _, _) = subquery_times(sq, span.0, q);
            let (_, last, _) = subquery_times(sq, span.1, q);
            selectors(&sq.expr, (first, last), q, false, out);
        }
    }
}

/// The rollup resolution to read `need` from, if any: the window's length and every end
/// are multiples of it, and either the query's step is at least an hour (a long-range
/// graph: the coarsest such resolution whose buckets summarise at least
/// [`MIN_POINTS_PER_BUCKET`] points, or whose density the store cannot tell) or a window
/// begins before the oldest raw point kept and rollups reach further back (the finest such
/// resolution).
fn rollup_resolution(
    need: &Need<'_>,
    info: &RollupInfo,
    span: QuerySpan,
    step_ms: i64,
    querier: &dyn Querier,
) -> Option<i64> {
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
    match (long_step, before_raw) {
        (true, false) => coarsest(&dense),
        // Raw points cannot answer a window that begins before them.
        (true, true) => coarsest(&dense).or_else(|| coarsest(&|_| true)),
        (false, true) => info.resolutions.iter().copied().find(|&r| aligned(r)),
        (false, false) => None,
    }
}

/// The series of every selector of a plan, loaded once for all its evaluation times.
pub(crate) struct Loaded {
    /// Keyed by the selector's address in the plan, which outlives the evaluation.
    series: HashMap<usize, Selected>,
    /// The query's span, for `@ start()` and `@ end()`.
    pub(crate) span: QuerySpan,
    /// The sample limit; subqueries count their inner points against what is left of it.
    pub(crate) budget: usize,
    /// The caller's stop flag, checked between series and steps.
    pub(crate) cancel: crate::Cancel,
}

fn key(sel: &Selector) -> usize {
    sel as *const Selector as usize
}

impl Loaded {
    /// Loads what `expr` needs to be evaluated at times in `[first_ms, last_ms]`, counting
    /// points against `limits.max_samples` and stopping when `limits.cancel` is raised.
    pub(crate) fn load(
        src: &dyn Queryable,
        expr: &Expr,
        first_ms: i64,
        last_ms: i64,
        step_ms: i64,
        limits: &crate::Limits,
    ) -> Result<Self, QueryError> {
        let max_samples = limits.max_samples;
        let cancel = limits.cancel.clone();
        let span = QuerySpan {
            start_ms: first_ms,
            end_ms: last_ms,
        };
        let mut needs = Vec::new();
        selectors(expr, (first_ms, last_ms), span, true, &mut needs);
        let mut series = HashMap::new();
        let (Some(mint), Some(maxt)) = (
            needs.iter().map(|w| w.start).min(),
            needs.iter().map(|w| w.end).max(),
        ) else {
            return Ok(Loaded {
                series,
                span,
                budget: max_samples,
                cancel,
            });
        };
        let querier = src.querier(mint, maxt)?;
        let info = querier.rollups();
        let mut loaded = 0usize;
        for need in needs {
            let rollup = info
                .as_ref()
                .and_then(|i| rollup_resolution(&need, i, span, step_ms, querier.as_ref()));
            let selected = querier.select(&need.sel.matchers)?;
            let ids: Vec<SeriesRef> = selected.iter().map(|s| s.0).collect();
            let budget = max_samples.saturating_sub(loaded);
            let mut stop = |read: usize| read > budget || cancel.check().is_err();
            // Every series of the selector in one read: a store walks its partitions once.
            let out: Option<Vec<LoadedSeries>> = match rollup {
                Some(res) => querier
                    .buckets_many(&ids, need.start, need.end, res, &mut stop)?
                    .map(|all| {
                        selected
                            .into_iter()
                            .zip(all)
                            .map(|((_, labels), buckets)| {
                                loaded = loaded.saturating_add(buckets.len());
                                let mut s = LoadedSeries::new(labels, Vec::new());
                                s.buckets = buckets;
                                s
                            })
                            .collect()
                    }),
                None => querier
                    .points_many(&ids, need.start, need.end, &mut stop)?
                    .map(|all| {
                        selected
                            .into_iter()
                            .zip(all)
                            .map(|((_, labels), points)| {
                                loaded = loaded.saturating_add(points.len());
                                LoadedSeries::new(labels, points)
                            })
                            .collect()
                    }),
            };
            let Some(out) = out else {
                cancel.check()?;
                return Err(QueryError::TooManySamples);
            };
            if loaded > max_samples {
                return Err(QueryError::TooManySamples);
            }
            let first = out.first().map(|s| s.labels.metric_name());
            let one_name = out.iter().all(|s| Some(s.labels.metric_name()) == first);
            series.insert(
                key(need.sel),
                Selected {
                    series: out,
                    one_name,
                    rollup,
                },
            );
        }
        Ok(Loaded {
            series,
            span,
            budget: max_samples - loaded,
            cancel,
        })
    }

    /// The rollup resolution (ms) `sel`'s series were read at, if read from rollups
    /// ([`LoadedSeries::buckets`]).
    pub(crate) fn rollup_of(&self, sel: &Selector) -> Option<i64> {
        self.series.get(&key(sel)).and_then(|s| s.rollup)
    }

    /// The time a selector is evaluated at for step `t`: its `@` time, or `t`.
    pub(crate) fn at(&self, sel: &Selector, t: i64) -> i64 {
        sel.at
            .map_or(t, |a| a.resolve(self.span.start_ms, self.span.end_ms))
    }

    /// The series `sel` selects, as loaded.
    pub(crate) fn of(&self, sel: &Selector) -> &[LoadedSeries] {
        self.series
            .get(&key(sel))
            .map_or(&[], |s| s.series.as_slice())
    }

    /// Whether the series `sel` selects all have the same metric name, or none.
    pub(crate) fn one_name(&self, sel: &Selector) -> bool {
        self.series.get(&key(sel)).is_none_or(|s| s.one_name)
    }

    /// The instant vector `sel` selects at `t`: stamped with `t`, or with each point's own
    /// time when `own_ts` (as Prometheus' `timestamp()` of a selector sees them).
    pub(crate) fn instant(&self, sel: &Selector, t: i64, own_ts: bool) -> Vec<Sample> {
        let end = self.at(sel, t).saturating_sub(sel.offset_ms);
        let start = end.saturating_sub(LOOKBACK_DELTA_MS);
        self.of(sel)
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
            .collect()
    }

    /// The range vector `sel[range_ms]` at `t`; series without points are left out.
    pub(crate) fn matrix(&self, sel: &Selector, range_ms: i64, t: i64) -> Vec<RangeSeries> {
        let end = self.at(sel, t).saturating_sub(sel.offset_ms);
        let start = end.saturating_sub(range_ms);
        self.of(sel)
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
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::seek;
    use outpost_shared::Point;
    use std::cell::Cell;

    #[test]
    fn seek_agrees_with_a_binary_search_whichever_way_steps_go() {
        let points: Vec<Point> = (0..100)
            .map(|i| Point {
                ts: i * 10,
                value: 0.0,
            })
            .collect();
        let hint = Cell::new(0);
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
        assert_eq!(seek(&[], &Cell::new(3), 5, true), 0);
    }
}
