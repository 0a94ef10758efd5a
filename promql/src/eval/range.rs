//! Evaluation over every step at once: each expression is evaluated once for the whole
//! query, series by series, into a [`Ranged`] value (per series, one optional value per
//! step), as Prometheus' `rangeEval` evaluates arguments into matrices before the node.
//!
//! - An instant vector selector walks each series' points once for all steps; a function
//!   of a range selector or of a subquery slides its window over the series' points with
//!   two indices and applies the function to each window ([`RangeFunc::apply`], shared
//!   with the step by step path; several windows at a time for the Kahan folds), counting
//!   drops in value once per series so that `rate` scans only windows with a reset.
//! - Labels are worked out once per series: the name dropped, the aggregation group, the
//!   labels of an operation with a scalar, the matching signature and result labels of
//!   vector matching.
//! - Aggregations without a parameter fold each series, as a selector or range function
//!   makes it, into one running [`Acc`] per group and step; `topk` and `bottomk` run the
//!   step by step heap over series numbers. Over many series and steps, an aggregation of
//!   a range function splits the steps between threads, each folding every series in
//!   order over its own steps, so each step folds as one thread would. `count` and `group`
//!   of a range function only ask which windows hold enough points, and read no values.
//! - A subquery's inner expression is evaluated once over every inner time the steps
//!   need, on a [`Grid`] of its own.
//! - `histogram_quantile` finds each series' histogram and bucket bound once.
//! - Anything else (`quantile`, `count_values`, label functions,
//!   `absent`...) and every step that would fail falls back to the step by step
//!   evaluation ([`Evaluator::eval`]) of that node, its arguments evaluated here first and
//!   read back step by step; errors are thus reported as the step by step path does.
//!
//! Every [`Ranged::Vector`] keeps one series per label set, each with at least one value:
//! that is where Prometheus' check that a vector holds no label set twice is made. Series
//! come in the order the step by step evaluation lists samples, except where PromQL
//! leaves it open (series that first appear at a later step).

use super::aggregate::{Acc, group_labels, is_accumulated, offer, top_k};
use super::binary::{
    scalar_binop, vector_scalar_drops_name, vector_scalar_labels, vector_scalar_value,
    vector_vector_range,
};
use super::instant_fn::{Clamp, bucket_of, bucket_quantile, unary};
use super::range_fn::{RangeFunc, SumFold, VarFold, avg_n, check_holt_winters, fold_n};
use super::selector::LoadedSeries;
use super::subquery::subquery_times;
use super::{Evaluator, LOOKBACK_DELTA_MS, LabelMap, Sample, Val, drop_name, exec_err};
use crate::error::QueryError;
use crate::parse::{AggOp, Aggregate, Binary, Expr, Selector, Subquery, ValueType};
use crate::rollup::{Resolution, RollupFunc};
use outpost_shared::model::{METRIC_NAME, is_stale};
use outpost_shared::{Labels, Point};
use std::borrow::Cow;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;

/// The evaluation times of a query: `start + i * step` for `i < len`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Grid {
    /// The first time, ms since the Unix epoch.
    pub(crate) start: i64,
    /// The distance between times, ms (positive).
    pub(crate) step: i64,
    /// How many times.
    pub(crate) len: usize,
}

impl Grid {
    /// The `i`-th time.
    pub(crate) fn time(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }

    /// Which time `t` is, if it is one.
    pub(crate) fn index(&self, t: i64) -> Option<usize> {
        let d = t.checked_sub(self.start)?;
        if d < 0 || d % self.step != 0 {
            return None;
        }
        usize::try_from(d / self.step)
            .ok()
            .filter(|&i| i < self.len)
    }

    /// Every time, in order.
    fn times(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.len).map(|i| self.time(i))
    }
}

/// One series of a [`Ranged::Vector`]: its labels and its value at each step of the
/// [`Grid`], `None` where it has no sample.
#[derive(Clone, Debug)]
pub(crate) struct StepSeries {
    pub(crate) labels: Arc<Labels>,
    pub(crate) values: Vec<Option<f64>>,
}

/// A scalar or instant vector expression's value at every step of a [`Grid`].
#[derive(Clone, Debug)]
pub(crate) enum Ranged {
    /// One number per step.
    Scalar(Vec<f64>),
    /// Series with their values per step.
    Vector(Vec<StepSeries>),
}

impl Ranged {
    /// The step by step value at step `i`.
    fn at(&self, i: usize, t: i64) -> Val {
        match self {
            Ranged::Scalar(v) => Val::Scalar(v[i]),
            Ranged::Vector(series) => Val::Vector(
                series
                    .iter()
                    .filter_map(|s| {
                        s.values[i].map(|value| Sample {
                            labels: Arc::clone(&s.labels),
                            point: Point { ts: t, value },
                        })
                    })
                    .collect(),
            ),
        }
    }
}

/// Merges series with the same labels (which the step by step evaluation would list as
/// one), failing as Prometheus does when two of them have a value at the same step; drops
/// series without any value.
pub(crate) fn unique(mut series: Vec<StepSeries>) -> Result<Vec<StepSeries>, QueryError> {
    series.retain(|s| s.values.iter().any(Option::is_some));
    if series.len() < 2 {
        return Ok(series);
    }
    let mut first: LabelMap<Arc<Labels>, usize> = LabelMap::default();
    first.reserve(series.len());
    let mut dups: Vec<(usize, usize)> = Vec::new();
    for (i, s) in series.iter().enumerate() {
        match first.get(&s.labels) {
            Some(&j) => dups.push((j, i)),
            None => {
                first.insert(Arc::clone(&s.labels), i);
            }
        }
    }
    if dups.is_empty() {
        return Ok(series);
    }
    let mut gone = vec![false; series.len()];
    for (into, from) in dups {
        let values = std::mem::take(&mut series[from].values);
        for (k, v) in values.into_iter().enumerate() {
            if let Some(v) = v {
                if series[into].values[k].is_some() {
                    return Err(exec_err(
                        "vector cannot contain metrics with the same labelset",
                    ));
                }
                series[into].values[k] = Some(v);
            }
        }
        gone[from] = true;
    }
    let mut i = 0;
    series.retain(|_| {
        i += 1;
        !gone[i - 1]
    });
    Ok(series)
}

/// Gathers step by step results into series, in order of first appearance.
struct Gather {
    len: usize,
    index: LabelMap<Arc<Labels>, usize>,
    /// By the address of a label set already seen: most steps hand back the very same
    /// shared labels, found without hashing them; `index` keeps those addresses alive.
    by_ptr: LabelMap<usize, usize>,
    /// Every label set whose address is in `by_ptr`, kept alive so that no address is
    /// reused for other labels.
    seen: Vec<Arc<Labels>>,
    series: Vec<StepSeries>,
}

impl Gather {
    fn new(len: usize) -> Self {
        Gather {
            len,
            index: LabelMap::default(),
            by_ptr: LabelMap::default(),
            seen: Vec::new(),
            series: Vec::new(),
        }
    }

    fn push(&mut self, labels: Arc<Labels>, i: usize, value: f64) {
        let ptr = Arc::as_ptr(&labels) as usize;
        let k = match self.by_ptr.get(&ptr) {
            Some(&k) => k,
            None => {
                let k = match self.index.get(&labels) {
                    Some(&k) => k,
                    None => {
                        self.index.insert(Arc::clone(&labels), self.series.len());
                        self.series.push(StepSeries {
                            labels: Arc::clone(&labels),
                            values: vec![None; self.len],
                        });
                        self.series.len() - 1
                    }
                };
                self.by_ptr.insert(ptr, k);
                self.seen.push(labels);
                k
            }
        };
        self.series[k].values[i] = Some(value);
    }
}

/// The arguments of a node that the step by step evaluation reads through
/// [`Evaluator::eval`], and that are worth evaluating over all steps first.
fn ranged_children(e: &Expr) -> Vec<&Expr> {
    let all: Vec<&Expr> = match e {
        Expr::Neg(inner) => vec![inner],
        Expr::Binary(b) => vec![&b.lhs, &b.rhs],
        Expr::Aggregate(a) => a.param.iter().chain([&a.expr]).collect(),
        // `timestamp` of a selector reads the points' own times, not the selector's value.
        Expr::Call { name, args } if name == "timestamp" => args
            .iter()
            .filter(|a| !matches!(a, Expr::Vector(_)))
            .collect(),
        Expr::Call { args, .. } => args.iter().collect(),
        _ => Vec::new(),
    };
    all.into_iter()
        .filter(|c| {
            !matches!(c, Expr::Number(_) | Expr::String(_))
                && matches!(c.value_type(), ValueType::Scalar | ValueType::Vector)
        })
        .collect()
}

/// The most inner steps a subquery is evaluated at over all steps at once; beyond, it is
/// evaluated step by step.
const MAX_INNER_STEPS: usize = 100_000;

/// Where a producer hands its series one at a time: the series' position among its
/// selector's series sorted by labels ([`LoadedSeries::pos`]), labels and a value per
/// step (or none), in a buffer reused for the next series.
type Sink<'a> = dyn FnMut(usize, &Arc<Labels>, &[Option<f64>]) -> Result<(), QueryError> + 'a;

/// A [`Sink`] told only, at each step, whether the series has a value there.
type PresenceSink<'a> = dyn FnMut(usize, &Arc<Labels>, &[bool]) -> Result<(), QueryError> + 'a;

/// Keeps every series a producer hands on, to be put back in label order.
#[derive(Default)]
struct Collected {
    series: Vec<(usize, StepSeries)>,
}

impl Collected {
    /// A [`Sink`] that keeps every series.
    fn sink(
        &mut self,
    ) -> impl FnMut(usize, &Arc<Labels>, &[Option<f64>]) -> Result<(), QueryError> + '_ {
        |pos, labels, values| {
            self.series.push((
                pos,
                StepSeries {
                    labels: Arc::clone(labels),
                    values: values.to_vec(),
                },
            ));
            Ok(())
        }
    }

    /// The series kept, in the order of their positions (a selector read in batches hands
    /// them in the store's order).
    fn sorted(mut self) -> Vec<StepSeries> {
        if !self.series.is_sorted_by_key(|s| s.0) {
            self.series.sort_unstable_by_key(|s| s.0);
        }
        self.series.into_iter().map(|s| s.1).collect()
    }
}

/// Whether the series all have the same metric name (or none has one), so that dropping
/// it keeps their label sets apart.
fn one_name(series: &[StepSeries]) -> bool {
    let first = series.first().map(|s| s.labels.metric_name());
    series.iter().all(|s| Some(s.labels.metric_name()) == first)
}

/// [`unique`] unless `distinct` says no two label sets can be alike; then only series
/// without any value are dropped.
fn unique_unless(
    distinct: bool,
    mut series: Vec<StepSeries>,
) -> Result<Vec<StepSeries>, QueryError> {
    if distinct {
        series.retain(|s| s.values.iter().any(Option::is_some));
        return Ok(series);
    }
    unique(series)
}

/// Where the series a range function slides its window over come from.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// Series at hand (a subquery's).
    Series(&'a [LoadedSeries]),
    /// A selector's, as [`Loaded::each`] hands them.
    Selector(&'a Selector),
}

/// The series a range function slides its window over, and the window at each step:
/// `[end - range_ms, end]` in the points, the function told `fn_end`.
struct Windows<'a> {
    series: Source<'a>,
    ends: Vec<i64>,
    fn_ends: Vec<i64>,
    range_ms: i64,
    /// Leave stale markers out (of stored points; a subquery's points are kept).
    skip_stale: bool,
}

/// How many windows of a series are folded side by side.
const LANES: usize = 8;

/// A function folding [`LANES`] windows side by side ([`fold_n`]).
type FoldN = fn([&[Point]; LANES]) -> [f64; LANES];

fn key(e: &Expr) -> usize {
    e as *const Expr as usize
}

/// Windows (series × steps) an aggregation of a range function must have before its steps
/// are split between threads ([`Evaluator::aggregate_range_split`]).
const SPLIT_WINDOWS: usize = 1 << 20;
/// Steps a thread takes at least.
const SPLIT_STEPS: usize = 64;

#[cfg(test)]
thread_local! {
    /// Threads this thread's queries split an aggregation's steps between, whatever its
    /// size, instead of [`split_threads`]' choice, for tests.
    pub(crate) static TEST_SPLIT: std::cell::Cell<Option<usize>> =
        const { std::cell::Cell::new(None) };
}

/// How many threads an aggregation of a range function over `series` series at `steps`
/// steps splits its steps between: one a core (at most four) when there are
/// [`SPLIT_WINDOWS`] windows or more, each thread at least [`SPLIT_STEPS`] steps.
fn split_threads(series: usize, steps: usize) -> usize {
    #[cfg(test)]
    if let Some(n) = TEST_SPLIT.with(std::cell::Cell::get) {
        return n.min(steps);
    }
    if series.saturating_mul(steps) < SPLIT_WINDOWS {
        return 1;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores.min(4).min(steps / SPLIT_STEPS)
}

/// An aggregation's groups as series are folded in ([`Evaluator::aggregate_range`]): one
/// [`Acc`] per group and step.
struct Groups<'a> {
    a: &'a Aggregate,
    /// Steps.
    len: usize,
    index: LabelMap<Labels, usize>,
    groups: Vec<Arc<Labels>>,
    /// `len` accumulators a group, by group then step.
    accs: Vec<Acc>,
    /// The first position of a series of each group: groups come out in the order their
    /// first series come in label order, however the series were handed in.
    firsts: Vec<usize>,
}

impl<'a> Groups<'a> {
    fn new(a: &'a Aggregate, len: usize) -> Self {
        Groups {
            a,
            len,
            index: LabelMap::default(),
            groups: Vec::new(),
            accs: Vec::new(),
            firsts: Vec::new(),
        }
    }

    /// The group of a series with these labels: its number, and whether it is new (then
    /// without accumulators or first position yet).
    fn find(&mut self, labels: &Labels) -> (usize, bool) {
        let key = group_labels(labels, &self.a.grouping, self.a.without);
        if let Some(&gi) = self.index.get(&key) {
            return (gi, false);
        }
        self.index.insert(key.clone(), self.groups.len());
        self.groups.push(Arc::new(key));
        (self.groups.len() - 1, true)
    }

    /// The accumulators, one a step, of the group of the series at position `pos` with
    /// these labels (a new group if it is the first of its group).
    fn of(&mut self, pos: usize, labels: &Labels) -> &mut [Acc] {
        let gi = self.number(pos, labels);
        &mut self.accs[gi * self.len..(gi + 1) * self.len]
    }

    /// The number of the group of the series at position `pos` with these labels, as
    /// [`Groups::of`] finds or makes it.
    fn number(&mut self, pos: usize, labels: &Labels) -> usize {
        let (gi, new) = self.find(labels);
        if new {
            self.firsts.push(pos);
            self.accs.resize(self.accs.len() + self.len, Acc::default());
        } else {
            self.firsts[gi] = self.firsts[gi].min(pos);
        }
        gi
    }

    /// Sets the accumulators from samples counted apart, `len` a group by group then step
    /// (`counts` shorter than the groups' steps leaves the rest as they are).
    fn set_counted(&mut self, counts: &[u32]) {
        let op = self.a.op;
        for (acc, &n) in self.accs.iter_mut().zip(counts) {
            if n > 0 {
                *acc = Acc::counted(op, n);
            }
        }
    }

    /// Every group with its value at each step, in the order of their first series; a
    /// group whose first position is `usize::MAX` (found, but no series of it had a
    /// value) is left out.
    fn into_ranged(self) -> Ranged {
        let op = self.a.op;
        let mut out: Vec<(usize, StepSeries)> = self
            .firsts
            .into_iter()
            .zip(self.groups)
            .zip(self.accs.chunks(self.len.max(1)))
            .filter(|((first, _), _)| *first != usize::MAX)
            .map(|((first, labels), accs)| {
                let values = accs
                    .iter()
                    .map(|acc| acc.is_set().then(|| acc.result(op)))
                    .collect();
                (first, StepSeries { labels, values })
            })
            .collect();
        if !out.is_sorted_by_key(|g| g.0) {
            out.sort_unstable_by_key(|g| g.0);
        }
        Ranged::Vector(out.into_iter().map(|g| g.1).collect())
    }
}

/// A range function over one series' windows at a run of steps, as
/// [`Evaluator::range_fn_each`] evaluates it: everything but the series, shared by the
/// threads that take parts of the steps.
struct WindowFn<'a> {
    func: RangeFunc,
    grid: Grid,
    /// Where each step's window ends, and the end the function is told.
    ends: &'a [i64],
    fn_ends: &'a [i64],
    range_ms: i64,
    range_s: f64,
    /// The function's scalar parameters at each step.
    p1: &'a [f64],
    p2: &'a [f64],
    /// Folds [`LANES`] windows at once, for the functions that can.
    batch: Option<FoldN>,
    counts_resets: bool,
    skip_stale: bool,
}

/// Buffers [`WindowFn::values`] reuses from one series to the next.
#[derive(Default)]
struct WindowScratch {
    /// Each step's window `pts[lo..hi]`.
    bounds: Vec<(usize, usize)>,
    /// The steps (from the run's first) whose window holds points.
    filled: Vec<usize>,
    /// How many drops in value come before each point.
    drops: Vec<u32>,
    /// The function's value at each step of the run last evaluated.
    values: Vec<Option<f64>>,
}

impl<'a> WindowFn<'a> {
    fn new(func: RangeFunc, grid: Grid, w: &'a Windows<'_>, p1: &'a [f64], p2: &'a [f64]) -> Self {
        WindowFn {
            func,
            grid,
            ends: &w.ends,
            fn_ends: &w.fn_ends,
            range_ms: w.range_ms,
            range_s: w.range_ms as f64 / 1000.0,
            p1,
            p2,
            batch: match func {
                RangeFunc::Avg => Some(avg_n),
                RangeFunc::Sum => Some(fold_n::<SumFold, LANES>),
                RangeFunc::Stdvar => Some(fold_n::<VarFold, LANES>),
                RangeFunc::Stddev => Some(|ws| fold_n::<VarFold, LANES>(ws).map(f64::sqrt)),
                _ => None,
            },
            counts_resets: matches!(func, RangeFunc::Rate | RangeFunc::Increase),
            skip_stale: w.skip_stale,
        }
    }

    /// The function over `points` (sorted by time) at each step of `steps`, into
    /// `sc.values` (`values[k]` for step `steps.start + k`); whether any step has a value.
    /// Marks the steps whose window holds points in `nonempty`, if given (by step).
    fn values(
        &self,
        points: &[Point],
        steps: Range<usize>,
        sc: &mut WindowScratch,
        mut nonempty: Option<&mut [bool]>,
    ) -> bool {
        let pts: Cow<[Point]> = if self.skip_stale && points.iter().any(|p| is_stale(p.value)) {
            Cow::Owned(
                points
                    .iter()
                    .filter(|p| !is_stale(p.value))
                    .copied()
                    .collect(),
            )
        } else {
            Cow::Borrowed(points)
        };
        sc.bounds.clear();
        sc.filled.clear();
        let (mut lo, mut hi) = (0, 0);
        for i in steps.clone() {
            let end = self.ends[i];
            let start = end.saturating_sub(self.range_ms);
            if i == steps.start {
                lo = pts.partition_point(|p| p.ts < start);
                hi = pts.partition_point(|p| p.ts <= end);
            } else {
                if lo > 0 && pts[lo - 1].ts >= start {
                    lo = pts.partition_point(|p| p.ts < start);
                }
                while lo < pts.len() && pts[lo].ts < start {
                    lo += 1;
                }
                if hi > 0 && pts[hi - 1].ts > end {
                    hi = pts.partition_point(|p| p.ts <= end);
                }
                while hi < pts.len() && pts[hi].ts <= end {
                    hi += 1;
                }
            }
            sc.bounds.push((lo, hi));
            if hi > lo {
                if let Some(n) = nonempty.as_deref_mut() {
                    n[i] = true;
                }
                sc.filled.push(i - steps.start);
            }
        }
        if sc.filled.is_empty() {
            return false;
        }
        if self.counts_resets {
            sc.drops.clear();
            sc.drops.push(0);
            for w in pts.windows(2) {
                let n = sc.drops[sc.drops.len() - 1] + u32::from(w[1].value < w[0].value);
                sc.drops.push(n);
            }
        }
        sc.values.clear();
        sc.values.resize(steps.len(), None);
        let mut rest: &[usize] = &sc.filled;
        if let Some(batch) = self.batch {
            let mut chunks = sc.filled.chunks_exact(LANES);
            for c in &mut chunks {
                let r = batch(std::array::from_fn(|k| {
                    let (lo, hi) = sc.bounds[c[k]];
                    &pts[lo..hi]
                }));
                for (&k, r) in c.iter().zip(r) {
                    sc.values[k] = Some(r);
                }
            }
            rest = chunks.remainder();
        }
        for &k in rest {
            let i = steps.start + k;
            let (lo, hi) = sc.bounds[k];
            let range_end = self.fn_ends[i];
            let may_reset = !self.counts_resets || sc.drops[hi - 1] > sc.drops[lo];
            sc.values[k] = self.func.apply(
                &pts[lo..hi],
                range_end - self.range_ms,
                range_end,
                self.range_s,
                self.grid.time(i),
                self.p1[i],
                self.p2[i],
                may_reset,
            );
        }
        sc.values.iter().any(Option::is_some)
    }
}

/// One thread's part of [`Evaluator::aggregate_range_split`]: every series (in order,
/// `group[k]` the group of `series[k]`) folded with `op` over the steps `steps`. Returns
/// the accumulators (`groups` × `steps.len()`, by group then step) and, by group, the
/// least position of a series with a value here (`usize::MAX`: none).
fn fold_steps(
    wf: &WindowFn<'_>,
    series: &[LoadedSeries],
    group: &[usize],
    groups: usize,
    op: AggOp,
    steps: Range<usize>,
    cancel: &crate::Cancel,
) -> Result<(Vec<Acc>, Vec<usize>), QueryError> {
    let w = steps.len();
    let mut accs = vec![Acc::default(); groups * w];
    let mut firsts = vec![usize::MAX; groups];
    let mut sc = WindowScratch::default();
    for (s, &gi) in series.iter().zip(group) {
        cancel.check()?;
        if !wf.values(&s.points, steps.clone(), &mut sc, None) {
            continue;
        }
        firsts[gi] = firsts[gi].min(s.pos);
        for (acc, v) in accs[gi * w..(gi + 1) * w].iter_mut().zip(&sc.values) {
            if let Some(v) = *v {
                acc.add(op, v);
            }
        }
    }
    Ok((accs, firsts))
}

impl Evaluator<'_> {
    /// The value of the scalar or instant vector expression `e` at every step of the grid.
    pub(crate) fn eval_range(&self, e: &Expr) -> Result<Ranged, QueryError> {
        self.loaded.cancel.check()?;
        match e {
            Expr::Number(n) => Ok(Ranged::Scalar(vec![*n; self.grid.get().len])),
            Expr::Vector(sel) => {
                let mut out = Collected::default();
                self.select_each(sel, &mut out.sink())?;
                Ok(Ranged::Vector(out.sorted()))
            }
            Expr::Neg(inner)
                if matches!(inner.value_type(), ValueType::Scalar | ValueType::Vector) =>
            {
                Ok(match self.eval_range(inner)? {
                    Ranged::Scalar(v) => Ranged::Scalar(v.into_iter().map(|x| -x).collect()),
                    Ranged::Vector(series) => Ranged::Vector(unique_unless(
                        one_name(&series),
                        series
                            .into_iter()
                            .map(|s| StepSeries {
                                labels: drop_name(&s.labels),
                                values: s.values.into_iter().map(|v| v.map(|x| -x)).collect(),
                            })
                            .collect(),
                    )?),
                })
            }
            Expr::Binary(b) => self.binary_range(e, b),
            Expr::Aggregate(a) if a.param.is_none() && is_accumulated(a.op) => {
                self.aggregate_range(a)
            }
            Expr::Aggregate(a) if matches!(a.op, AggOp::Topk | AggOp::Bottomk) => {
                self.topk_range(e, a)
            }
            Expr::Call { name, args } => self.call_range(e, name, args),
            _ => self.step_by_step(e, Vec::new()),
        }
    }

    /// Evaluates `e` step by step, its arguments over all steps first; `done` holds those
    /// already evaluated.
    fn step_by_step<'e>(
        &self,
        e: &'e Expr,
        mut done: Vec<(&'e Expr, Ranged)>,
    ) -> Result<Ranged, QueryError> {
        for c in ranged_children(e) {
            if !done.iter().any(|(d, _)| std::ptr::eq(*d, c)) {
                let v = self.eval_range(c)?;
                done.push((c, v));
            }
        }
        let keys: Vec<usize> = done.iter().map(|(c, _)| key(c)).collect();
        {
            let mut ranged = self.ranged.borrow_mut();
            for (c, v) in done {
                ranged.insert(key(c), Rc::new(v));
            }
        }
        let out = self.gather(e);
        let mut ranged = self.ranged.borrow_mut();
        for k in keys {
            ranged.remove(&k);
        }
        out
    }

    /// The value of `e` at every step, evaluated step by step ([`Evaluator::eval`]).
    pub(crate) fn gather(&self, e: &Expr) -> Result<Ranged, QueryError> {
        let g = self.grid.get();
        if e.value_type() == ValueType::Scalar {
            let v: Result<Vec<f64>, QueryError> =
                g.times().map(|t| Ok(self.eval(e, t)?.scalar())).collect();
            return Ok(Ranged::Scalar(v?));
        }
        let mut out = Gather::new(g.len);
        for (i, t) in g.times().enumerate() {
            match self.eval(e, t)? {
                Val::Vector(v) => {
                    for s in v {
                        out.push(s.labels, i, s.point.value);
                    }
                }
                Val::Scalar(_) | Val::Str(_) | Val::Matrix(_) => {}
            }
        }
        Ok(Ranged::Vector(out.series))
    }

    /// The value of `e` at `t` if it was evaluated over all steps and `t` is one of them.
    pub(crate) fn ranged_at(&self, e: &Expr, t: i64) -> Option<Val> {
        let v = Rc::clone(self.ranged.borrow().get(&key(e))?);
        let i = self.grid.get().index(t)?;
        Some(v.at(i, t))
    }

    /// Where a selector's window ends at each step: its `@` time or the step's, minus the
    /// offset.
    fn window_ends(&self, sel: &Selector) -> Vec<i64> {
        self.grid
            .get()
            .times()
            .map(|t| self.loaded.at(sel, t).saturating_sub(sel.offset_ms))
            .collect()
    }

    /// An instant vector selector at every step, as [`super::selector::Loaded::instant`],
    /// each series with a value handed to `sink`.
    fn select_each(&self, sel: &Selector, sink: &mut Sink<'_>) -> Result<(), QueryError> {
        let ends = self.window_ends(sel);
        let mut values = Vec::with_capacity(ends.len());
        self.loaded.each(sel, &mut |batch| {
            for s in batch {
                self.loaded.cancel.check()?;
                let points = &s.points;
                values.clear();
                let mut any = false;
                // Points at or before the current window's end.
                let mut j = 0;
                for &end in &ends {
                    let start = end.saturating_sub(LOOKBACK_DELTA_MS);
                    if j > 0 && points[j - 1].ts > end {
                        j = points.partition_point(|p| p.ts <= end);
                    }
                    while j < points.len() && points[j].ts <= end {
                        j += 1;
                    }
                    let v = match j {
                        0 => None,
                        _ => {
                            let p = points[j - 1];
                            (p.ts >= start && !is_stale(p.value)).then_some(p.value)
                        }
                    };
                    any |= v.is_some();
                    values.push(v);
                }
                if any {
                    sink(s.pos, &s.labels, &values)?;
                }
            }
            Ok(())
        })
    }

    fn scalar_range(&self, arg: Option<&Expr>, missing: f64) -> Result<Vec<f64>, QueryError> {
        Ok(match arg {
            None => vec![missing; self.grid.get().len],
            Some(e) => match self.eval_range(e)? {
                Ranged::Scalar(v) => v,
                Ranged::Vector(_) => vec![f64::NAN; self.grid.get().len],
            },
        })
    }

    fn call_range(&self, e: &Expr, name: &str, args: &[Expr]) -> Result<Ranged, QueryError> {
        if let Some(func) = RangeFunc::of(name) {
            if let Some(Expr::Matrix { selector, range_ms }) = args.get(func.matrix_arg()) {
                let mut out = Collected::default();
                if let (Some(_), Some(rf)) = (self.loaded.rollup_of(selector), RollupFunc::of(name))
                {
                    self.rollup_fn_each(
                        rf,
                        func,
                        func.keeps_name(),
                        selector,
                        *range_ms,
                        true,
                        &mut out.sink(),
                    )?;
                } else {
                    let w = self.selector_windows(selector, *range_ms);
                    self.range_fn_each(func, args, &w, true, &mut out.sink())?;
                }
                let out = out.sorted();
                let distinct = func.keeps_name() || self.loaded.one_name(selector);
                return Ok(Ranged::Vector(if distinct { out } else { unique(out)? }));
            }
            if let Some(Expr::Subquery(sq)) = args.get(func.matrix_arg())
                && let Some(series) = self.subquery_range(sq)?
            {
                let w = Windows {
                    series: Source::Series(&series),
                    ends: self.subquery_ends(sq),
                    fn_ends: self.subquery_ends(sq),
                    range_ms: sq.range_ms,
                    skip_stale: false,
                };
                let mut out = Collected::default();
                self.range_fn_each(func, args, &w, true, &mut out.sink())?;
                let out = out.sorted();
                let labels: Vec<&Arc<Labels>> = series.iter().map(|s| &s.labels).collect();
                let first = labels.first().map(|l| l.metric_name());
                let distinct =
                    func.keeps_name() || labels.iter().all(|l| Some(l.metric_name()) == first);
                return Ok(Ranged::Vector(if distinct { out } else { unique(out)? }));
            }
            return self.step_by_step(e, Vec::new());
        }
        let g = self.grid.get();
        match name {
            "time" => {
                return Ok(Ranged::Scalar(
                    g.times().map(|t| t as f64 / 1000.0).collect(),
                ));
            }
            "vector" => {
                let v = self.scalar_range(args.first(), f64::NAN)?;
                return Ok(Ranged::Vector(vec![StepSeries {
                    labels: Arc::new(Labels::default()),
                    values: v.into_iter().map(Some).collect(),
                }]));
            }
            _ => {}
        }
        if name == "histogram_quantile" {
            return self.histogram_quantile_range(args);
        }
        let Some(arg) = args.first().filter(|a| a.value_type() == ValueType::Vector) else {
            return self.step_by_step(e, Vec::new());
        };
        let f: Box<dyn Fn(f64, usize) -> Option<f64>> = if let Some(f) = unary(name) {
            Box::new(move |v, _| Some(f(v)))
        } else if matches!(name, "round" | "clamp" | "clamp_min" | "clamp_max") {
            let p1 = self.scalar_range(args.get(1), f64::NAN)?;
            let p2 = self.scalar_range(args.get(2), f64::NAN)?;
            let fs: Vec<Option<Clamp>> = p1
                .iter()
                .zip(&p2)
                .map(|(&p1, &p2)| {
                    let p1 = if name == "round" && args.len() < 2 {
                        1.0
                    } else {
                        p1
                    };
                    Clamp::of(name, p1, p2)
                })
                .collect();
            Box::new(move |v, i| fs[i].map(|c| c.apply(v)))
        } else {
            return self.step_by_step(e, Vec::new());
        };
        let Ranged::Vector(input) = self.eval_range(arg)? else {
            return Ok(Ranged::Vector(Vec::new()));
        };
        let distinct = one_name(&input);
        let out = input
            .into_iter()
            .map(|s| StepSeries {
                labels: drop_name(&s.labels),
                values: s
                    .values
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| v.and_then(|v| f(v, i)))
                    .collect(),
            })
            .collect();
        Ok(Ranged::Vector(unique_unless(distinct, out)?))
    }

    /// Where a subquery's window ends at each step: its `@` time or the step's, minus the
    /// offset.
    fn subquery_ends(&self, sq: &Subquery) -> Vec<i64> {
        let span = self.loaded.span;
        self.grid
            .get()
            .times()
            .map(|t| sq.at.map_or(t, |a| a.resolve(span.start_ms, span.end_ms)) - sq.offset_ms)
            .collect()
    }

    /// A subquery's series for every step: its inner expression evaluated once over all
    /// the inner times the steps need, as [`Evaluator::subquery`] would step by step.
    /// `None` (evaluate step by step) when those times have gaps between steps, or are
    /// too many to hold per series.
    fn subquery_range(&self, sq: &Subquery) -> Result<Option<Vec<LoadedSeries>>, QueryError> {
        let outer = self.grid.get();
        let span = self.loaded.span;
        let mut first = i64::MAX;
        let mut last = i64::MIN;
        let mut step = 1;
        for t in outer.times() {
            let (f, l, s) = subquery_times(sq, t, span);
            // The same early refusal as step by step.
            if usize::try_from((l - f) / s).unwrap_or(usize::MAX) > self.loaded.budget() {
                return Err(QueryError::TooManySamples);
            }
            (first, last, step) = (first.min(f), last.max(l), s);
        }
        // Contiguous inner times only: the windows of consecutive steps overlap or touch.
        if sq.at.is_none() && outer.len > 1 && outer.step > sq.range_ms {
            return Ok(None);
        }
        let len = if last >= first {
            usize::try_from((last - first) / step)
                .unwrap_or(usize::MAX)
                .saturating_add(1)
        } else {
            0
        };
        if len > MAX_INNER_STEPS {
            return Ok(None);
        }
        let inner = Grid {
            start: first,
            step,
            len,
        };
        let value = if len == 0 {
            Ok(Ranged::Vector(Vec::new()))
        } else {
            self.grid.set(inner);
            let v = self.eval_range(&sq.expr);
            self.grid.set(outer);
            v
        };
        let Ranged::Vector(value) = value? else {
            return Ok(Some(Vec::new()));
        };
        let mut out = Vec::with_capacity(value.len());
        let mut n = 0usize;
        for s in value {
            let points: Vec<Point> = s
                .values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    Some(Point {
                        ts: inner.time(i),
                        value: (*v)?,
                    })
                })
                .collect();
            n = n.saturating_add(points.len());
            out.push(LoadedSeries::new(out.len(), s.labels, points));
        }
        self.loaded.take(n)?;
        Ok(Some(out))
    }

    /// The windows of a range selector at every step.
    fn selector_windows<'a>(&self, sel: &'a Selector, range_ms: i64) -> Windows<'a> {
        Windows {
            series: Source::Selector(sel),
            ends: self.window_ends(sel),
            // The window the function sees: `at - offset`, unsaturated, as the step by step
            // path has it.
            fn_ends: self
                .grid
                .get()
                .times()
                .map(|t| self.loaded.at(sel, t) - sel.offset_ms)
                .collect(),
            range_ms,
            skip_stale: true,
        }
    }

    /// `histogram_quantile` of classic buckets at every step: each series' histogram and
    /// bound found once, then at each step the buckets with a value, in order, as step
    /// by step.
    fn histogram_quantile_range(&self, args: &[Expr]) -> Result<Ranged, QueryError> {
        let len = self.grid.get().len;
        let input = match args.get(1) {
            Some(a) => self.eval_range(a)?,
            None => Ranged::Vector(Vec::new()),
        };
        let q = self.scalar_range(args.first(), f64::NAN)?;
        let Ranged::Vector(input) = input else {
            return Ok(Ranged::Vector(Vec::new()));
        };
        let mut index: LabelMap<Labels, usize> = LabelMap::default();
        let mut keys: Vec<Arc<Labels>> = Vec::new();
        let member: Vec<Option<(usize, f64)>> = input
            .iter()
            .map(|s| {
                let (key, upper) = bucket_of(&s.labels)?;
                let g = *index.entry(key).or_insert_with_key(|key| {
                    keys.push(Arc::new(key.clone()));
                    keys.len() - 1
                });
                Some((g, upper))
            })
            .collect();
        let mut buckets: Vec<Vec<(f64, f64)>> = vec![Vec::new(); keys.len()];
        let mut order: Vec<usize> = Vec::new();
        let mut out_of: Vec<Option<usize>> = vec![None; keys.len()];
        let mut out: Vec<StepSeries> = Vec::new();
        for (i, &q) in q.iter().enumerate() {
            for (s, m) in input.iter().zip(&member) {
                if let (Some((g, upper)), Some(v)) = (*m, s.values[i]) {
                    if buckets[g].is_empty() {
                        order.push(g);
                    }
                    buckets[g].push((upper, v));
                }
            }
            for g in order.drain(..) {
                let value = bucket_quantile(q, std::mem::take(&mut buckets[g]));
                let o = *out_of[g].get_or_insert_with(|| {
                    out.push(StepSeries {
                        labels: Arc::clone(&keys[g]),
                        values: vec![None; len],
                    });
                    out.len() - 1
                });
                out[o].values[i] = Some(value);
            }
        }
        Ok(Ranged::Vector(out))
    }

    /// A function of a range vector at every step: per series, a window sliding over
    /// its points. Each series with a value is handed to `sink`, with its labels as the
    /// function gives them, or with the metric name still on unless `drop_name` (for an
    /// aggregation that ignores it).
    fn range_fn_each(
        &self,
        func: RangeFunc,
        args: &[Expr],
        w: &Windows<'_>,
        drop_name: bool,
        sink: &mut Sink<'_>,
    ) -> Result<(), QueryError> {
        let g = self.grid.get();
        let (p1, p2) = self.range_fn_params(func, args)?;
        let wf = WindowFn::new(func, g, w, &p1, &p2);
        let mut nonempty = vec![false; g.len];
        let mut sc = WindowScratch::default();
        let mut one = |s: &LoadedSeries| -> Result<(), QueryError> {
            self.loaded.cancel.check()?;
            if wf.values(&s.points, 0..g.len, &mut sc, Some(&mut nonempty)) {
                let labels = s.labels_for(drop_name && !func.keeps_name());
                sink(s.pos, labels, &sc.values)?;
            }
            Ok(())
        };
        match w.series {
            Source::Series(all) => all.iter().try_for_each(&mut one)?,
            Source::Selector(sel) => self
                .loaded
                .each(sel, &mut |batch| batch.iter().try_for_each(&mut one))?,
        }
        if func == RangeFunc::HoltWinters {
            for i in (0..g.len).filter(|&i| nonempty[i]) {
                check_holt_winters(p1[i], p2[i])?;
            }
        }
        Ok(())
    }

    /// A range function's scalar parameters at every step ([`RangeFunc::scalar_args`];
    /// zeros where it has none).
    fn range_fn_params(
        &self,
        func: RangeFunc,
        args: &[Expr],
    ) -> Result<(Vec<f64>, Vec<f64>), QueryError> {
        let len = self.grid.get().len;
        let (a1, a2) = func.scalar_args();
        let param = |a: Option<usize>| match a {
            Some(i) => self.scalar_range(args.get(i), f64::NAN),
            None => Ok(vec![0.0; len]),
        };
        Ok((param(a1)?, param(a2)?))
    }

    /// An aggregation of a range function over a selector read whole, its steps split
    /// between threads: each thread folds every series, in label order, into the groups'
    /// accumulators of its own steps, so that every step folds exactly what and in the
    /// order one thread would (a sum's last bits depend on the order). `None` when there
    /// are too few windows for threads to pay ([`SPLIT_WINDOWS`]), or the function is
    /// `holt_winters` (whose parameters are checked at the steps with points).
    #[allow(clippy::too_many_arguments)]
    fn aggregate_range_split(
        &self,
        a: &Aggregate,
        func: RangeFunc,
        args: &[Expr],
        sel: &Selector,
        range_ms: i64,
        drop_name: bool,
    ) -> Result<Option<Ranged>, QueryError> {
        let g = self.grid.get();
        if func == RangeFunc::HoltWinters || !self.loaded.held(sel) {
            return Ok(None);
        }
        let series = self.loaded.of(sel)?;
        let threads = split_threads(series.len(), g.len);
        if threads < 2 {
            return Ok(None);
        }
        // Every series' group, found once.
        let mut groups = Groups::new(a, g.len);
        let drop = drop_name && !func.keeps_name();
        let of: Vec<usize> = series
            .iter()
            .map(|s| groups.find(s.labels_for(drop)).0)
            .collect();
        let n = groups.groups.len();
        let (p1, p2) = self.range_fn_params(func, args)?;
        let w = self.selector_windows(sel, range_ms);
        let wf = WindowFn::new(func, g, &w, &p1, &p2);
        let per = g.len.div_ceil(threads);
        let ranges: Vec<Range<usize>> = (0..g.len)
            .step_by(per)
            .map(|i| i..(i + per).min(g.len))
            .collect();
        let cancel = &self.loaded.cancel;
        let fold = |r: Range<usize>| fold_steps(&wf, series, &of, n, a.op, r, cancel);
        let parts = std::thread::scope(|scope| {
            let rest: Vec<_> = ranges[1..]
                .iter()
                .map(|r| {
                    let (fold, r) = (&fold, r.clone());
                    scope.spawn(move || fold(r))
                })
                .collect();
            let mut parts = vec![fold(ranges[0].clone())];
            for t in rest {
                parts.push(t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            }
            parts
        });
        let parts = parts.into_iter().collect::<Result<Vec<_>, _>>()?;
        // The threads' parts put together, group by group, each group's steps in order.
        let (parts, ranges) = (&parts, &ranges);
        groups.firsts = (0..n)
            .map(|gi| parts.iter().map(|p| p.1[gi]).min().unwrap_or(usize::MAX))
            .collect();
        groups.accs = (0..n)
            .flat_map(|gi| {
                let steps = parts.iter().zip(ranges);
                steps.flat_map(move |(p, r)| &p.0[gi * r.len()..(gi + 1) * r.len()])
            })
            .copied()
            .collect();
        Ok(Some(groups.into_ranged()))
    }

    /// Which windows of a range function over `sel` have a value, all that `count` and
    /// `group` ask of it: those holding at least `min` points that are not stale markers
    /// ([`RangeFunc::min_points`]). Each series with a value at some step is handed to
    /// `sink` with, by step, whether it has one there, labelled as
    /// [`Evaluator::range_fn_each`] labels it. Series read in batches are read without
    /// their values ([`super::selector::Loaded::each_timestamps`]).
    fn presence_each(
        &self,
        min: usize,
        keeps_name: bool,
        sel: &Selector,
        range_ms: i64,
        drop_name: bool,
        sink: &mut PresenceSink<'_>,
    ) -> Result<(), QueryError> {
        // Steps move forward, so windows' ends never go back: both edges of the window
        // only move forward through a series' times.
        let ends = self.window_ends(sel);
        debug_assert!(ends.is_sorted());
        let mut has: Vec<bool> = Vec::with_capacity(ends.len());
        let mut own: Vec<i64> = Vec::new();
        self.loaded.each_timestamps(sel, &mut |batch| {
            for s in batch {
                self.loaded.cancel.check()?;
                let ts: &[i64] = if s.points.is_empty() {
                    &s.timestamps
                } else {
                    own.clear();
                    own.extend(s.points.iter().filter(|p| !is_stale(p.value)).map(|p| p.ts));
                    &own
                };
                if ts.len() < min {
                    continue;
                }
                has.clear();
                let (mut lo, mut hi, mut any) = (0usize, 0usize, false);
                for &end in &ends {
                    let start = end.saturating_sub(range_ms);
                    while hi < ts.len() && ts[hi] <= end {
                        hi += 1;
                    }
                    while lo < hi && ts[lo] < start {
                        lo += 1;
                    }
                    let here = hi - lo >= min;
                    any |= here;
                    has.push(here);
                }
                if any {
                    sink(s.pos, s.labels_for(drop_name && !keeps_name), &has)?;
                }
            }
            Ok(())
        })
    }

    /// A function rollups answer ([`crate::rollup`]) at every step, from the buckets
    /// `sel`'s series were read as (and the raw points after them, with `raw` over windows
    /// of those alone); handed to `sink` as [`Evaluator::range_fn_each`] hands them.
    #[allow(clippy::too_many_arguments)]
    fn rollup_fn_each(
        &self,
        func: RollupFunc,
        raw: RangeFunc,
        keeps_name: bool,
        sel: &Selector,
        range_ms: i64,
        drop_name: bool,
        sink: &mut Sink<'_>,
    ) -> Result<(), QueryError> {
        let ends = self.window_ends(sel);
        let rollup = self.loaded.rollup_of(sel);
        let res = rollup.map_or(Resolution::from(0), |r| r.res);
        let mut values: Vec<Option<f64>> = Vec::with_capacity(ends.len());
        let mut window: Vec<Point> = Vec::new();
        self.loaded.each(sel, &mut |batch| {
            for s in batch {
                self.loaded.cancel.check()?;
                values.clear();
                if let Some(from) = rollup.and_then(|r| r.raw_from) {
                    let mut raw_fn = |end: i64| {
                        let start = end.saturating_sub(range_ms);
                        let lo = s.points.partition_point(|p| p.ts < start);
                        let hi = s.points.partition_point(|p| p.ts <= end).max(lo);
                        window.clear();
                        window.extend(s.points[lo..hi].iter().filter(|p| !is_stale(p.value)));
                        let secs = range_ms as f64 / 1000.0;
                        raw.apply(&window, start, end, secs, end, 0.0, 0.0, true)
                    };
                    func.apply_mixed_each(
                        &s.buckets,
                        &s.points,
                        from,
                        &ends,
                        range_ms,
                        res,
                        &mut raw_fn,
                        &mut values,
                    );
                } else {
                    func.apply_each(&s.buckets, &ends, range_ms, res, &mut values);
                }
                if values.iter().any(Option::is_some) {
                    sink(s.pos, s.labels_for(drop_name && !keeps_name), &values)?;
                }
            }
            Ok(())
        })
    }

    /// `sum`, `avg`, `min`, `max`, `count`, `group`, `stddev` and `stdvar` at every step.
    /// A selector's or a range function's series are folded in as they are made.
    fn aggregate_range(&self, a: &Aggregate) -> Result<Ranged, QueryError> {
        let mut groups = Groups::new(a, self.grid.get().len);
        let mut add = |pos: usize, labels: &Arc<Labels>, values: &[Option<f64>]| {
            let op = a.op;
            for (acc, v) in groups.of(pos, labels).iter_mut().zip(values) {
                if let Some(v) = *v {
                    acc.add(op, v);
                }
            }
            Ok(())
        };
        // Grouping by `without` always leaves the name out; `by` only if not listed.
        let name_matters = !a.without && a.grouping.iter().any(|g| g == METRIC_NAME);
        match &a.expr {
            Expr::Vector(sel) => self.select_each(sel, &mut add)?,
            Expr::Call { name, args }
                if let Some(func) = RangeFunc::of(name)
                    && let Some(Expr::Matrix { selector, range_ms }) =
                        args.get(func.matrix_arg())
                    // Series that only the name told apart must be checked first.
                    && (func.keeps_name() || self.loaded.one_name(selector)) =>
            {
                let keeps = func.keeps_name();
                if let (Some(_), Some(rf)) = (self.loaded.rollup_of(selector), RollupFunc::of(name))
                {
                    self.rollup_fn_each(
                        rf,
                        func,
                        keeps,
                        selector,
                        *range_ms,
                        name_matters,
                        &mut add,
                    )?;
                } else if matches!(a.op, AggOp::Count | AggOp::Group)
                    && let Some(min) = func.min_points()
                {
                    // Only whether each step has a value: counted straight in, as whole
                    // numbers a group and step (no accumulator per series and step).
                    let len = self.grid.get().len;
                    let mut counts: Vec<u32> = Vec::new();
                    let mut count = |pos: usize, labels: &Arc<Labels>, has: &[bool]| {
                        let gi = groups.number(pos, labels);
                        if counts.len() < (gi + 1) * len {
                            counts.resize((gi + 1) * len, 0);
                        }
                        for (n, &has) in counts[gi * len..(gi + 1) * len].iter_mut().zip(has) {
                            *n += u32::from(has);
                        }
                        Ok(())
                    };
                    self.presence_each(min, keeps, selector, *range_ms, name_matters, &mut count)?;
                    groups.set_counted(&counts);
                } else if let Some(out) =
                    self.aggregate_range_split(a, func, args, selector, *range_ms, name_matters)?
                {
                    return Ok(out);
                } else {
                    let w = self.selector_windows(selector, *range_ms);
                    self.range_fn_each(func, args, &w, name_matters, &mut add)?;
                }
            }
            e => {
                if let Ranged::Vector(input) = self.eval_range(e)? {
                    for (pos, s) in input.iter().enumerate() {
                        add(pos, &s.labels, &s.values)?;
                    }
                }
            }
        }
        Ok(groups.into_ranged())
    }

    /// `topk` and `bottomk` at every step: each series' group found once, then at each step
    /// the same heap as step by step, of series numbers. A parameter out of range at some
    /// step: step by step, to fail as that does.
    fn topk_range(&self, e: &Expr, a: &Aggregate) -> Result<Ranged, QueryError> {
        let len = self.grid.get().len;
        let param = self.scalar_range(a.param.as_ref(), f64::NAN)?;
        let Ok(ks) = param
            .iter()
            .map(|&f| top_k(f))
            .collect::<Result<Vec<_>, _>>()
        else {
            return self.step_by_step(e, vec![(&a.expr, self.eval_range(&a.expr)?)]);
        };
        let Ranged::Vector(input) = self.eval_range(&a.expr)? else {
            return Ok(Ranged::Vector(Vec::new()));
        };
        let mut index: LabelMap<Labels, usize> = LabelMap::default();
        let group: Vec<usize> = input
            .iter()
            .map(|s| {
                let n = index.len();
                *index
                    .entry(group_labels(&s.labels, &a.grouping, a.without))
                    .or_insert(n)
            })
            .collect();
        let top = a.op == AggOp::Topk;
        let mut heaps: Vec<Vec<(f64, usize)>> = vec![Vec::new(); index.len()];
        let mut order: Vec<usize> = Vec::new();
        // Output series by input series, in order of first output.
        let mut out_of: Vec<Option<usize>> = vec![None; input.len()];
        let mut out: Vec<StepSeries> = Vec::new();
        for (i, k) in ks.into_iter().enumerate() {
            let Some(k) = k else { continue };
            for (n, (s, &g)) in input.iter().zip(&group).enumerate() {
                let Some(v) = s.values[i] else { continue };
                if heaps[g].is_empty() {
                    heaps[g].push((v, n));
                    order.push(g);
                } else {
                    offer(&mut heaps[g], (v, n), k, top);
                }
            }
            for g in order.drain(..) {
                let mut heap = std::mem::take(&mut heaps[g]);
                heap.sort_by(|x, y| super::by_value_nan_last(x.0, y.0, top));
                for (v, n) in heap.drain(..) {
                    let o = *out_of[n].get_or_insert_with(|| {
                        out.push(StepSeries {
                            labels: Arc::clone(&input[n].labels),
                            values: vec![None; len],
                        });
                        out.len() - 1
                    });
                    out[o].values[i] = Some(v);
                }
                heaps[g] = heap;
            }
        }
        Ok(Ranged::Vector(out))
    }

    /// A binary operator at every step; between two vectors, step by step.
    fn binary_range(&self, e: &Expr, b: &Binary) -> Result<Ranged, QueryError> {
        let operand = |x: &Expr| matches!(x.value_type(), ValueType::Scalar | ValueType::Vector);
        if !operand(&b.lhs) || !operand(&b.rhs) {
            return self.step_by_step(e, Vec::new());
        }
        let lhs = self.eval_range(&b.lhs)?;
        let rhs = self.eval_range(&b.rhs)?;
        let (vector, scalar, swap) = match (lhs, rhs) {
            (Ranged::Scalar(l), Ranged::Scalar(r)) => {
                return Ok(Ranged::Scalar(
                    l.into_iter()
                        .zip(r)
                        .map(|(l, r)| scalar_binop(b.op, l, r))
                        .collect(),
                ));
            }
            (Ranged::Vector(v), Ranged::Scalar(s)) => (v, s, false),
            (Ranged::Scalar(s), Ranged::Vector(v)) => (v, s, true),
            (Ranged::Vector(l), Ranged::Vector(r)) => {
                if let Some(out) = vector_vector_range(b, &l, &r, self.grid.get().len) {
                    return Ok(Ranged::Vector(out));
                }
                let (l, r) = (Ranged::Vector(l), Ranged::Vector(r));
                return self.step_by_step(e, vec![(&b.lhs, l), (&b.rhs, r)]);
            }
        };
        let distinct = !vector_scalar_drops_name(b) || one_name(&vector);
        let out = vector
            .into_iter()
            .map(|s| StepSeries {
                labels: vector_scalar_labels(b, &s.labels),
                values: s
                    .values
                    .into_iter()
                    .zip(&scalar)
                    .map(|(v, &x)| v.and_then(|v| vector_scalar_value(b, v, x, swap)))
                    .collect(),
            })
            .collect();
        Ok(Ranged::Vector(unique_unless(distinct, out)?))
    }
}

#[cfg(test)]
mod tests {
    use crate::eval::testing::{T, show};
    use crate::eval::{Mode, instant_query_mode, range_query_mode};
    use crate::memory::MemStorage;
    use crate::parse::parse;
    use crate::steps::Steps;
    use outpost_shared::Labels;
    use outpost_shared::model::stale_nan;

    /// Series with stale markers, gaps, counter resets, uneven intervals, NaN and ±Inf,
    /// and two metrics that have the same labels once the name is dropped.
    fn source() -> MemStorage {
        let mut src = MemStorage::default();
        for (k, inst) in ["a", "b", "c", "d"].iter().enumerate() {
            let k = k as i64;
            let pts: Vec<(i64, f64)> = (0..160)
                .filter(|i| !(40..70).contains(i) || k != 1) // a 7.5 min gap in b
                .map(|i| {
                    let ts = T + i * 15_000 + k * 1_000 + (i % 3) * 500;
                    let v = match (k, i) {
                        (2, 50) | (2, 120) => stale_nan(),
                        (3, 30) => f64::NAN,
                        (3, 31) => f64::INFINITY,
                        (3, 90) => f64::NEG_INFINITY,
                        _ if i >= 100 && k == 0 => (i - 100) as f64, // a counter reset
                        _ => (i * (k + 1) + i % 5) as f64,
                    };
                    (ts, v)
                })
                .collect();
            let job = if k % 2 == 0 { "x" } else { "y" };
            src = src.with(Labels::metric("c", [("inst", *inst), ("job", job)]), &pts);
            let g: Vec<(i64, f64)> = pts
                .iter()
                .map(|&(ts, v)| (ts, (v * 0.37 + k as f64).sin() * 10.0))
                .collect();
            src = src.with(Labels::metric("g", [("inst", *inst), ("job", job)]), &g);
        }
        for (k, le) in ["0.1", "1", "10", "+Inf"].iter().enumerate() {
            let pts: Vec<(i64, f64)> = (0..160)
                .map(|i| (T + i * 15_000, (i * (k as i64 + 1)) as f64))
                .collect();
            src = src.with(
                Labels::metric("h_bucket", [("job", "x"), ("le", *le)]),
                &pts,
            );
        }
        // Same labels as `c{inst="a"}` without the name: first half / second half, and one
        // overlapping `c{inst="b"}`.
        let first: Vec<(i64, f64)> = (0..60).map(|i| (T + i * 15_000, i as f64)).collect();
        src = src.with(
            Labels::metric("early", [("inst", "e"), ("job", "x")]),
            &first,
        );
        let second: Vec<(i64, f64)> = (80..160).map(|i| (T + i * 15_000, i as f64)).collect();
        src = src.with(
            Labels::metric("late", [("inst", "e"), ("job", "x")]),
            &second,
        );
        src
    }

    const QUERIES: &[&str] = &[
        "c",
        "g offset 3m",
        "c @ 1700001000",
        "c @ 1700001000 offset 1m",
        "c @ end()",
        "-g",
        "g * 2 + 1",
        "2 ^ g",
        "g > 2",
        "g > bool 2",
        "1 < g",
        "c / g",
        "c / on(inst) g",
        "g and g > 0",
        "g or c",
        "sum(g)",
        "sum by (job) (c)",
        "sum without (inst) (g)",
        "avg by (job) (c)",
        "count(g)",
        "min(c)",
        "max by (job) (g)",
        "group by (job) (g)",
        "stddev(g)",
        "stdvar by (job) (c)",
        "topk(2, g)",
        "bottomk(3, c)",
        "topk by (job) (1, g)",
        "bottomk without (inst) (2, g)",
        "topk(scalar(count(g)) - 2, c)",
        "topk(0, g)",
        "topk(scalar(nothing), g)",
        "topk(1e30, g)",
        "sum(topk(2, rate(c[5m])))",
        "topk(2, {__name__=~\"early|late\"})",
        "topk(1, g / 0)",
        "bottomk(1, 0 / g)",
        "quantile(0.3, g)",
        "count_values(\"v\", round(g))",
        "rate(c[5m])",
        "rate(c[1m])",
        "increase(c[10m] offset 2m)",
        "irate(c[2m])",
        "delta(g[5m])",
        "idelta(g[5m])",
        "deriv(g[5m])",
        "predict_linear(g[10m], 600)",
        "resets(c[30m])",
        "changes(g[10m])",
        "holt_winters(g[10m], 0.3, 0.6)",
        "holt_winters(g[10m], time() / 1700002000, 0.6)",
        "avg_over_time(c[5m])",
        "min_over_time(c[5m])",
        "max_over_time(c[5m])",
        "sum_over_time(c[5m])",
        "count_over_time(c[5m])",
        // Only which windows hold points: count and group read no values.
        "count(rate(c[1m]))",
        "count by (job) (last_over_time(c[20s]))",
        "group(irate(c[20s]))",
        "count(deriv(g[30s]))",
        "count(changes(c[16s]))",
        "count by (inst) (increase(c[1m] offset 2m))",
        "count by (__name__) (delta(c[45s]))",
        "count(present_over_time(c[5m] @ 1700001000))",
        "group by (inst) (count_over_time(c[14s]))",
        "count(max_over_time({__name__=~\"early|late\"}[1m]))",
        "count(quantile_over_time(0.5, c[1m]))",
        "quantile_over_time(0.75, g[5m])",
        "stddev_over_time(c[5m])",
        "stdvar_over_time(g[5m])",
        "last_over_time(c[5m])",
        "present_over_time(c[1m])",
        "absent_over_time(c[1m])",
        "rate(c[5m] @ 1700001000)",
        "rate(c[5m] @ start() offset 1m)",
        "sum by (job) (rate(c[5m]))",
        "histogram_quantile(0.9, rate(h_bucket[5m]))",
        "histogram_quantile(0.5, sum by (le) (rate(h_bucket[5m])))",
        "histogram_quantile(time() / 1700003000, h_bucket)",
        "histogram_quantile(0.3, h_bucket offset 8m)",
        "histogram_quantile(0.3, c)",
        "histogram_quantile(0.3, label_replace(h_bucket, \"le\", \"1\", \"le\", \"10\"))",
        "abs(g)",
        "round(g, 0.3)",
        "round(g)",
        "clamp(g, -1, 2)",
        "clamp(g, 2, -1)",
        "clamp_min(g, time() - 1700001000)",
        "clamp_max(g, 0)",
        "ln(c)",
        "hour(c)",
        "label_replace(g, \"x\", \"$1\", \"inst\", \"(.)\")",
        "timestamp(c)",
        "timestamp(c offset 1m)",
        "time()",
        "vector(time())",
        "scalar(sum(g))",
        "absent(nothing)",
        "max_over_time(g[10m:1m])",
        "rate(c[5m:30s])",
        "avg_over_time(rate(c[2m])[10m:])",
        "sum_over_time(g[7m:45s] offset 1m)",
        "max_over_time(g[10m:1m] @ start())",
        "max_over_time(g[10m:1m] offset 3m)",
        "rate(c[5m:1m] @ 1700001000)",
        "deriv(g[10m:30s])",
        "sum_over_time((c > 10)[3m:20s])",
        "sum by (job) (max_over_time(rate(c[1m])[5m:15s]))",
        "max_over_time(max_over_time(c[1m:20s])[3m:1m])",
        "holt_winters(g[10m:1m], 0.5, 0.5)",
        "absent_over_time(nothing[5m:1m])",
        "last_over_time({__name__=~\"early|late\"}[5m:1m])",
        "count_over_time({__name__=~\"early|late\"}[5m:1m])",
        "count_over_time({__name__=~\"c|g\"}[5m:1m])",
        "sort(max_over_time(g[10m:1m]))",
        "sort_desc(rate(c[5m]))",
        // Gaps between the steps' inner times when the step is 2 min: step by step.
        "count_over_time(c[1m:10s])",
        // Name dropped: `early` and `late` merge; `early` and `c` collide.
        "rate({__name__=~\"early|late\"}[1m])",
        "{__name__=~\"early|late\"} * 1",
        "-{__name__=~\"early|late\"}",
        "abs({__name__=~\"early|late\"})",
        "{__name__=~\"c|g\"} * 1",
        "rate({__name__=~\"c|g\"}[5m])",
        "sum by (job) ({__name__=~\"early|late\"})",
        "1 + 2 * 3",
        "time() > bool 1700001000",
        // Vector matching, and its failures at some steps or all.
        "c + ignoring(job) g",
        "c > bool on(inst) g",
        "c == g",
        "c / on(inst) group_left g",
        "c / on(job) group_left(inst) sum by (job) (g)",
        "sum by (job) (g) - on(job) group_right c",
        "g / on(job) group_left c",
        "c / on(job) g",
        "c / on(job) {__name__=~\"early|late\"}",
        "c / on(job) group_left {__name__=~\"early|late\"}",
        "{__name__=~\"early|late\"} + on(job) group_left c{inst=\"a\"}",
        "{__name__=~\"early|late\"} / ignoring(inst) group_left c{inst=\"a\"}",
        "c and on(job) g > 5",
        "c unless g > 0",
        "c or on(job) g",
        "g or c",
        "{__name__=~\"early|late\"} or c",
        "early or late",
        "early unless on(job) late",
        "(g > 0) or on(inst) (g < 0) * 2",
        "topk(3, c / on(inst) group_left g)",
    ];

    #[test]
    fn per_series_evaluation_agrees_with_step_by_step() {
        let src = source();
        let run = |q: &str,
                   f: &dyn Fn(
            &crate::parse::Expr,
            Mode,
        ) -> Result<crate::Value, crate::QueryError>| {
            let expr = parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
            [Mode::PerSeries, Mode::StepByStep].map(|m| match f(&expr, m) {
                Ok(v) => {
                    let mut lines = show(&v);
                    // PromQL orders a vector only in `sort` and `sort_desc` (Prometheus
                    // builds others from a hash map).
                    if !q.starts_with("sort") {
                        lines.sort();
                    }
                    lines
                }
                Err(e) => vec![format!("error: {e}")],
            })
        };
        let ranges = [
            (T, T + 40 * 60_000, 15_000),
            (T - 5 * 60_000, T + 45 * 60_000, 7_000),
            (T + 3 * 60_000, T + 30 * 60_000, 120_000),
            (T + 10 * 60_000, T + 10 * 60_000, 1),
        ];
        for q in QUERIES {
            // Aggregations of range functions with their steps split between threads too,
            // more threads than some runs have steps.
            for split in [None, Some(2), Some(5)] {
                super::TEST_SPLIT.with(|s| s.set(split));
                for &(start, end, step) in &ranges {
                    let steps = Steps::new(start, end, step).expect("steps");
                    let [got, want] = run(q, &|e, m| {
                        range_query_mode(&src, e, &steps, &crate::Limits::default(), m)
                    });
                    assert_eq!(got, want, "range {q} {start} {end} {step} split {split:?}");
                }
            }
            super::TEST_SPLIT.with(|s| s.set(None));
            for t in [T, T + 12 * 60_000 + 500, T + 20 * 60_000, T + 41 * 60_000] {
                let [got, want] = run(q, &|e, m| {
                    instant_query_mode(&src, e, t, &crate::Limits::default(), m)
                });
                assert_eq!(got, want, "instant {q} at {t}");
            }
        }
    }

    /// A source that keeps the largest number of series one read asked for.
    struct Widest {
        inner: MemStorage,
        widest: std::sync::atomic::AtomicUsize,
    }

    struct WidestQuerier<'a> {
        inner: Box<dyn crate::storage::Querier + 'a>,
        widest: &'a std::sync::atomic::AtomicUsize,
    }

    impl crate::storage::Queryable for Widest {
        fn querier(
            &self,
            a: i64,
            b: i64,
        ) -> Result<Box<dyn crate::storage::Querier + '_>, crate::storage::StorageError> {
            Ok(Box::new(WidestQuerier {
                inner: self.inner.querier(a, b)?,
                widest: &self.widest,
            }))
        }
    }

    impl crate::storage::Querier for WidestQuerier<'_> {
        fn select(
            &self,
            m: &[crate::storage::Matcher],
        ) -> Result<Vec<(u64, std::sync::Arc<Labels>)>, crate::storage::StorageError> {
            self.inner.select(m)
        }
        fn points(
            &self,
            id: u64,
            a: i64,
            b: i64,
        ) -> Result<Vec<outpost_shared::Point>, crate::storage::StorageError> {
            self.inner.points(id, a, b)
        }
        fn rollups(&self) -> Option<crate::rollup::RollupInfo> {
            self.inner.rollups()
        }
        fn points_many(
            &self,
            ids: &[u64],
            a: i64,
            b: i64,
            stop: &mut dyn FnMut(usize) -> bool,
        ) -> Result<Option<Vec<Vec<outpost_shared::Point>>>, crate::storage::StorageError> {
            self.widest
                .fetch_max(ids.len(), std::sync::atomic::Ordering::Relaxed);
            self.inner.points_many(ids, a, b, stop)
        }
        fn buckets_many(
            &self,
            ids: &[u64],
            a: i64,
            b: i64,
            r: i64,
            stop: &mut dyn FnMut(usize) -> bool,
        ) -> Result<Option<Vec<Vec<crate::rollup::Bucket>>>, crate::storage::StorageError> {
            self.widest
                .fetch_max(ids.len(), std::sync::atomic::Ordering::Relaxed);
            self.inner.buckets_many(ids, a, b, r, stop)
        }
        fn label_names(&self) -> Result<Vec<String>, crate::storage::StorageError> {
            self.inner.label_names()
        }
        fn label_values(&self, n: &str) -> Result<Vec<String>, crate::storage::StorageError> {
            self.inner.label_values(n)
        }
    }

    /// An aggregation over more series than a batch reads them a batch at a time, in the
    /// store's order where the fold allows it, and answers exactly as when they are read
    /// whole: the same values, bit for bit (sums fold in label order), the same series in
    /// the same order, the same sample limit; anything else that needs the series reads
    /// them whole.
    #[test]
    fn series_read_in_batches_answer_as_series_read_whole() {
        const N: usize = 700;
        const BATCH: usize = 64;
        let mut inner = MemStorage::default();
        // Ids in another order than labels: the store's order is not the label order.
        for k in 0..N {
            let i = (k * 337) % N;
            let pts: Vec<(i64, f64)> = (0..180)
                .map(|j| {
                    let ts = T + j * 60_000 + (i as i64 % 7) * 1_000;
                    // Counters with resets, and values with many significant bits, so
                    // that a sum in another order would differ in its last bits.
                    let v = if i.is_multiple_of(5) {
                        ((j % 50) * (i as i64 + 1)) as f64
                    } else {
                        (j as f64 * 0.1 + i as f64 / 3.0).sin() * 1e3
                    };
                    (ts, v)
                })
                .filter(|&(ts, _)| i % 11 != 3 || ts < T + 90 * 60_000)
                .collect();
            let labels = Labels::metric(
                "m",
                [
                    ("i", format!("{i:04}").as_str()),
                    ("g", format!("{}", i % 6).as_str()),
                ],
            );
            inner = inner.with(labels, &pts);
        }
        let src = Widest {
            // Raw points kept from a day before the first: windows before them, which
            // read buckets even off their edges, are not what this compares.
            inner: inner.with_rollups(&[300_000, 3_600_000], Some(T - 86_400_000)),
            widest: Default::default(),
        };
        let run = |q: &str, batch: usize, instant: Option<i64>, limit: usize| {
            crate::eval::selector::TEST_BATCH.with(|b| b.set(Some(batch)));
            src.widest.store(0, std::sync::atomic::Ordering::Relaxed);
            let expr = parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
            let limits = crate::Limits {
                max_samples: limit,
                ..Default::default()
            };
            let out = match instant {
                Some(t) => instant_query_mode(&src, &expr, t, &limits, Mode::PerSeries),
                None => {
                    // Hour-aligned, at an hour's step: rollups answer `rate(m[1h])`.
                    let start = T - T % 3_600_000 + 3_600_000;
                    let steps = Steps::new(start, start + 2 * 3_600_000, 3_600_000).unwrap();
                    range_query_mode(&src, &expr, &steps, &limits, Mode::PerSeries)
                }
            };
            let widest = src.widest.load(std::sync::atomic::Ordering::Relaxed);
            let lines = match out {
                Ok(v) => show(&v),
                Err(e) => vec![format!("error: {e}")],
            };
            (lines, widest)
        };
        let folded = [
            "count(last_over_time(m[10m]))",
            "count by (g) (m)",
            "group by (g) (rate(m[5m]))",
            "count(rate(m[1h]))",
            "count by (g) (max_over_time(m[1h]))",
            "count(m) / count(last_over_time(m[10m]))",
        ];
        let whole = [
            "sum by (g) (rate(m[5m]))",
            "sum(m)",
            "avg without (i) (m)",
            "max by (g) (increase(m[10m]))",
            "min(m)",
            "stddev by (g) (m)",
            "stdvar(delta(m[10m]))",
            "m",
            "rate(m[5m])",
            "topk(3, m)",
            "quantile(0.5, m)",
            "sum(m * 2)",
            "count_values(\"v\", m > 0)",
            "sum(max_over_time(m[10m:1m]))",
        ];
        let times = [None, Some(T + 30 * 60_000), Some(T + 95 * 60_000 + 500)];
        for q in folded.iter().chain(&whole) {
            for t in times {
                let (want, w_whole) = run(q, 0, t, usize::MAX);
                let (got, w_batch) = run(q, BATCH, t, usize::MAX);
                assert_eq!(got, want, "{q} at {t:?}");
                assert!(
                    want.first().is_some_and(|l| !l.starts_with("error")),
                    "{q}: {want:?}"
                );
                assert_eq!(w_whole, N, "{q} at {t:?}");
                if folded.contains(q) {
                    assert_eq!(w_batch, BATCH, "{q} at {t:?}: read in batches");
                } else {
                    assert_eq!(w_batch, N, "{q} at {t:?}: read whole");
                }
            }
        }
        // The limit counts every batch's points, not the largest batch's.
        let q = "count by (g) (rate(m[5m]))";
        let (want, _) = run(q, 0, Some(T + 30 * 60_000), usize::MAX);
        assert!(!want[0].starts_with("error"));
        // Each series has 5 or 6 points in the window [T + 25m, T + 30m]; a batch, at most
        // 6 * BATCH.
        for limit in [N * 2, N * 4] {
            assert_eq!(
                run(q, 0, Some(T + 30 * 60_000), limit).0,
                [
                    "error: query processing would load too many samples into memory in query execution"
                ],
            );
            assert_eq!(
                run(q, BATCH, Some(T + 30 * 60_000), limit).0,
                [
                    "error: query processing would load too many samples into memory in query execution"
                ],
            );
        }
        crate::eval::selector::TEST_BATCH.with(|b| b.set(None));
    }
}
