//! Functions of a range vector, as Prometheus 2.42's `promql/functions.go`: each is
//! applied per series to the points of its window `[t - o - r, t - o]` (stale markers
//! left out; with `@`, the window ends at the `@` time), or to a subquery's points, and a
//! series with no point in the window gives no output. The output drops
//! the metric name, except `last_over_time`'s.
//!
//! - `rate`, `increase`, `delta`: as Prometheus' `extrapolatedRate`: the change between the
//!   first and last points (counter resets added back for `rate`/`increase`), extrapolated
//!   to the window edges when the first/last point is within 1.1 average intervals of
//!   them (else by half an interval), never extrapolating a counter below zero; `rate`
//!   divides by the range in seconds. Fewer than two points: no output.
//! - `irate`, `idelta`: the last two points (`irate` treats a drop as a reset).
//! - `deriv`, `predict_linear`: least-squares regression (Kahan sums), intercept at the
//!   first point / at the evaluation time.
//! - `resets`, `changes`, `holt_winters` (double exponential smoothing, factors in
//!   `(0, 1)`), every `*_over_time` and `absent_over_time`.

use super::aggregate::quantile;
use super::{Evaluator, Sample, Val, exec_err};
use crate::error::QueryError;
use crate::parse::Expr;
use outpost_shared::Point;
use std::sync::Arc;

/// The functions of this family.
pub(crate) const FUNCTIONS: &[&str] = &[
    "rate",
    "irate",
    "increase",
    "delta",
    "idelta",
    "deriv",
    "predict_linear",
    "resets",
    "changes",
    "holt_winters",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "quantile_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "last_over_time",
    "present_over_time",
    "absent_over_time",
];

/// A function of this family but `absent_over_time`, resolved once per query rather than
/// by name at every window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RangeFunc {
    Rate,
    Increase,
    Delta,
    Irate,
    Idelta,
    Deriv,
    PredictLinear,
    Resets,
    Changes,
    HoltWinters,
    Avg,
    Min,
    Max,
    Sum,
    Count,
    Quantile,
    Stddev,
    Stdvar,
    Last,
    Present,
}

impl RangeFunc {
    /// The function called `name`; `None` for `absent_over_time` and other names.
    pub(crate) fn of(name: &str) -> Option<Self> {
        Some(match name {
            "rate" => Self::Rate,
            "increase" => Self::Increase,
            "delta" => Self::Delta,
            "irate" => Self::Irate,
            "idelta" => Self::Idelta,
            "deriv" => Self::Deriv,
            "predict_linear" => Self::PredictLinear,
            "resets" => Self::Resets,
            "changes" => Self::Changes,
            "holt_winters" => Self::HoltWinters,
            "avg_over_time" => Self::Avg,
            "min_over_time" => Self::Min,
            "max_over_time" => Self::Max,
            "sum_over_time" => Self::Sum,
            "count_over_time" => Self::Count,
            "quantile_over_time" => Self::Quantile,
            "stddev_over_time" => Self::Stddev,
            "stdvar_over_time" => Self::Stdvar,
            "last_over_time" => Self::Last,
            "present_over_time" => Self::Present,
            _ => return None,
        })
    }

    /// Where the range vector is among the arguments.
    pub(crate) fn matrix_arg(self) -> usize {
        usize::from(self == Self::Quantile)
    }

    /// The arguments of the scalar parameters `(p1, p2)` [`RangeFunc::apply`] takes.
    pub(crate) fn scalar_args(self) -> (Option<usize>, Option<usize>) {
        match self {
            Self::Quantile => (Some(0), None),
            Self::PredictLinear => (Some(1), None),
            Self::HoltWinters => (Some(1), Some(2)),
            _ => (None, None),
        }
    }

    /// The fewest points (stale markers left out) a window must hold for the function to
    /// have a value there, when that is all its having one depends on: two for the
    /// functions of a difference (as Prometheus' `extrapolatedRate`, `instantValue` and
    /// `deriv` ask), one for the rest. `None` for those with scalar parameters
    /// (`quantile_over_time`, `predict_linear`, `holt_winters`, which may also fail on
    /// them).
    pub(crate) fn min_points(self) -> Option<usize> {
        match self {
            Self::Rate
            | Self::Increase
            | Self::Delta
            | Self::Irate
            | Self::Idelta
            | Self::Deriv => Some(2),
            Self::Resets
            | Self::Changes
            | Self::Avg
            | Self::Min
            | Self::Max
            | Self::Sum
            | Self::Count
            | Self::Stddev
            | Self::Stdvar
            | Self::Last
            | Self::Present => Some(1),
            Self::PredictLinear | Self::HoltWinters | Self::Quantile => None,
        }
    }

    /// Whether the output keeps the metric name (only `last_over_time`'s does).
    pub(crate) fn keeps_name(self) -> bool {
        self == Self::Last
    }

    /// The function's value for the points `pts` (stale markers left out, not empty) of
    /// the window `[range_start, range_end]` evaluated at `t`; `p1` and `p2` are its
    /// scalar parameters ([`RangeFunc::scalar_args`]). `None`: no output for this series.
    /// `may_reset`: whether a value in `pts` may be below the one before it (when false,
    /// `rate` and `increase` skip looking for counter resets).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn apply(
        self,
        pts: &[Point],
        range_start: i64,
        range_end: i64,
        range_s: f64,
        t: i64,
        p1: f64,
        p2: f64,
        may_reset: bool,
    ) -> Option<f64> {
        let w = Window {
            start: range_start,
            end: range_end,
            secs: range_s,
        };
        match self {
            Self::Rate => extrapolated_rate(pts, w, true, true, may_reset),
            Self::Increase => extrapolated_rate(pts, w, true, false, may_reset),
            Self::Delta => extrapolated_rate(pts, w, false, false, false),
            Self::Irate => instant_value(pts, true),
            Self::Idelta => instant_value(pts, false),
            Self::Deriv => (pts.len() >= 2).then(|| linear_regression(pts, pts[0].ts).0),
            Self::PredictLinear => (pts.len() >= 2).then(|| {
                let (slope, intercept) = linear_regression(pts, t);
                slope * p1 + intercept
            }),
            Self::Resets => Some(pts.windows(2).filter(|w| w[1].value < w[0].value).count() as f64),
            Self::Changes => Some(
                pts.windows(2)
                    .filter(|w| {
                        let (a, b) = (w[0].value, w[1].value);
                        a != b && !(a.is_nan() && b.is_nan())
                    })
                    .count() as f64,
            ),
            Self::HoltWinters => holt_winters(pts, p1, p2),
            Self::Avg => Some(fold::<AvgFold>(pts)),
            Self::Min => Some(pts.iter().fold(pts[0].value, |m, p| {
                if p.value < m || m.is_nan() {
                    p.value
                } else {
                    m
                }
            })),
            Self::Max => Some(pts.iter().fold(pts[0].value, |m, p| {
                if p.value > m || m.is_nan() {
                    p.value
                } else {
                    m
                }
            })),
            Self::Sum => Some(fold::<SumFold>(pts)),
            Self::Count => Some(pts.len() as f64),
            Self::Quantile => Some(quantile(p1, pts.iter().map(|p| p.value).collect())),
            Self::Stddev => Some(fold::<VarFold>(pts).sqrt()),
            Self::Stdvar => Some(fold::<VarFold>(pts)),
            Self::Last => pts.last().map(|p| p.value),
            Self::Present => Some(1.0),
        }
    }
}

/// `holt_winters`' check of its factors, made when the range vector is not empty.
pub(crate) fn check_holt_winters(sf: f64, tf: f64) -> Result<(), QueryError> {
    if sf <= 0.0 || sf >= 1.0 {
        return Err(exec_err(format!(
            "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:.6}"
        )));
    }
    if tf <= 0.0 || tf >= 1.0 {
        return Err(exec_err(format!(
            "invalid trend factor. Expected: 0 < tf < 1, got: {tf:.6}"
        )));
    }
    Ok(())
}

/// Evaluates the range-vector function `name` at `t`.
pub(crate) fn call(
    ev: &Evaluator<'_>,
    name: &str,
    args: &[Expr],
    t: i64,
) -> Result<Val, QueryError> {
    let func = RangeFunc::of(name);
    let mi = func.map_or(0, RangeFunc::matrix_arg);
    let span = ev.loaded().span;
    let (matrix, range_end, range_ms) = match args.get(mi) {
        Some(Expr::Matrix { selector, range_ms }) => (
            ev.loaded().matrix(selector, *range_ms, t)?,
            ev.loaded().at(selector, t) - selector.offset_ms,
            *range_ms,
        ),
        Some(Expr::Subquery(sq)) => (
            ev.subquery(sq, t)?,
            sq.at.map_or(t, |a| a.resolve(span.start_ms, span.end_ms)) - sq.offset_ms,
            sq.range_ms,
        ),
        _ => {
            return Err(QueryError::Unsupported(format!(
                "{name}() of anything but a range vector"
            )));
        }
    };
    let range_start = range_end - range_ms;
    let range_s = range_ms as f64 / 1000.0;
    let Some(func) = func else {
        if name != "absent_over_time" {
            return Err(QueryError::Unsupported(format!("function call {name}()")));
        }
        if !matrix.is_empty() {
            return Ok(Val::Vector(Vec::new()));
        }
        return Ok(Val::Vector(vec![Sample {
            labels: Arc::new(super::instant_fn::absent_labels(&args[0])),
            point: Point { ts: t, value: 1.0 },
        }]));
    };
    let scalar = |i: Option<usize>| -> Result<f64, QueryError> {
        match i.and_then(|i| args.get(i)) {
            Some(e) => ev.eval_scalar(e, t),
            None => Ok(if i.is_some() { f64::NAN } else { 0.0 }),
        }
    };
    let (a1, a2) = func.scalar_args();
    let (p1, p2) = (scalar(a1)?, scalar(a2)?);
    if func == RangeFunc::HoltWinters && !matrix.is_empty() {
        check_holt_winters(p1, p2)?;
    }
    if let (Some(Expr::Matrix { selector, range_ms }), Some(rf)) =
        (args.get(mi), crate::rollup::RollupFunc::of(name))
        && let Some(rollup) = ev.loaded().rollup_of(selector)
        // A window wholly among the raw points after the buckets reads them, below.
        && rollup.raw_from.is_none_or(|from| range_start < from)
    {
        let mut one = Vec::with_capacity(1);
        let out = ev
            .loaded()
            .of(selector)?
            .iter()
            .filter_map(|s| {
                let value = match rollup.raw_from {
                    None => rf.apply(&s.buckets, range_end, *range_ms, rollup.res)?,
                    Some(from) => {
                        one.clear();
                        rf.apply_mixed_each(
                            &s.buckets,
                            &s.points,
                            from,
                            &[range_end],
                            *range_ms,
                            rollup.res,
                            &mut |_| None,
                            &mut one,
                        );
                        one.first().copied().flatten()?
                    }
                };
                Some(Sample {
                    labels: Arc::clone(if func.keeps_name() {
                        &s.labels
                    } else {
                        s.dropped()
                    }),
                    point: Point { ts: t, value },
                })
            })
            .collect();
        return Ok(Val::Vector(out));
    }
    let mut out = Vec::with_capacity(matrix.len());
    for s in matrix {
        let v = func.apply(&s.points, range_start, range_end, range_s, t, p1, p2, true);
        if let Some(value) = v {
            out.push(Sample {
                labels: if func.keeps_name() {
                    s.labels
                } else {
                    s.dropped
                },
                point: Point { ts: t, value },
            });
        }
    }
    Ok(Val::Vector(out))
}

/// A window's edges (ms) and length (s).
#[derive(Clone, Copy, Debug)]
struct Window {
    start: i64,
    end: i64,
    secs: f64,
}

/// Prometheus' `extrapolatedRate`; `is_counter`: `rate` or `increase`, whose counter
/// resets are added back (none is looked for unless `may_reset`).
fn extrapolated_rate(
    pts: &[Point],
    w: Window,
    is_counter: bool,
    is_rate: bool,
    may_reset: bool,
) -> Option<f64> {
    let (range_start, range_end, range_s) = (w.start, w.end, w.secs);
    if pts.len() < 2 {
        return None;
    }
    let (first, last) = (pts[0], pts[pts.len() - 1]);
    let mut result = last.value - first.value;
    if is_counter && may_reset {
        for w in pts.windows(2) {
            if w[1].value < w[0].value {
                result += w[0].value;
            }
        }
    }
    extrapolate(
        first,
        last,
        pts.len(),
        result,
        range_start,
        range_end,
        range_s,
        is_counter,
        is_rate,
    )
}

/// The second half of Prometheus' `extrapolatedRate`: `result` (the change from `first` to
/// `last`, resets added back for a counter) over `count` points, extrapolated to the window
/// `[range_start, range_end]` (`range_s` seconds long) when the first/last point is within
/// 1.1 average intervals of its edge (else by half an interval), never below zero for a
/// counter; per second when `is_rate`. Shared with rollups ([`crate::rollup`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn extrapolate(
    first: Point,
    last: Point,
    count: usize,
    result: f64,
    range_start: i64,
    range_end: i64,
    range_s: f64,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    let mut to_start = (first.ts - range_start) as f64 / 1000.0;
    let to_end = (range_end - last.ts) as f64 / 1000.0;
    let sampled = (last.ts - first.ts) as f64 / 1000.0;
    let avg_between = sampled / (count - 1) as f64;
    if is_counter && result > 0.0 && first.value >= 0.0 {
        let to_zero = sampled * (first.value / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = avg_between * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        avg_between / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        avg_between / 2.0
    };
    let mut factor = interval / sampled;
    if is_rate {
        factor /= range_s;
    }
    Some(result * factor)
}

/// Prometheus' `instantValue` (`irate`, `idelta`).
fn instant_value(pts: &[Point], is_rate: bool) -> Option<f64> {
    if pts.len() < 2 {
        return None;
    }
    let (prev, last) = (pts[pts.len() - 2], pts[pts.len() - 1]);
    let mut v = if is_rate && last.value < prev.value {
        last.value
    } else {
        last.value - prev.value
    };
    let interval = last.ts - prev.ts;
    if interval == 0 {
        return None;
    }
    if is_rate {
        v /= interval as f64 / 1000.0;
    }
    Some(v)
}

/// Prometheus' `kahanSumInc` (Neumaier's variant).
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Prometheus' `linearRegression`: `(slope, intercept at intercept_ms)`.
fn linear_regression(pts: &[Point], intercept_ms: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sxy, mut cxy, mut sx2, mut cx2) = (0.0, 0.0, 0.0, 0.0);
    let init_y = pts[0].value;
    let mut const_y = true;
    for (i, p) in pts.iter().enumerate() {
        if const_y && i > 0 && p.value != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (p.ts - intercept_ms) as f64 / 1e3;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(p.value, sy, cy);
        (sxy, cxy) = kahan_inc(x * p.value, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov_xy = sxy - sx * sy / n;
    let var_x = sx2 - sx * sx / n;
    let slope = cov_xy / var_x;
    (slope, sy / n - slope * sx / n)
}

/// Prometheus' `funcHoltWinters`.
fn holt_winters(pts: &[Point], sf: f64, tf: f64) -> Option<f64> {
    if pts.len() < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0, pts[0].value);
    let mut b = pts[1].value - pts[0].value;
    for (i, p) in pts.iter().enumerate().skip(1) {
        let x = sf * p.value;
        // calcTrendValue(i-1, ...): the raw trend for the first step.
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        (s0, s1) = (s1, x + y);
    }
    Some(s1)
}

/// A function of a window's values taken one at a time, in order, so that several
/// windows can be folded side by side ([`fold_n`]) with the very same arithmetic.
pub(crate) trait Fold: Copy + Default {
    /// Takes the next value.
    fn push(&mut self, v: f64);
    /// The result so far.
    fn value(&self) -> f64;
}

/// Prometheus' `avg_over_time`: an incremental Kahan mean that survives ±Inf.
#[derive(Clone, Copy, Default)]
pub(crate) struct AvgFold {
    mean: f64,
    count: f64,
    c: f64,
}

impl Fold for AvgFold {
    fn push(&mut self, v: f64) {
        self.count += 1.0;
        if self.mean.is_infinite() {
            if v.is_infinite() && (self.mean > 0.0) == (v > 0.0) {
                return;
            }
            if !v.is_infinite() && !v.is_nan() {
                return;
            }
        }
        (self.mean, self.c) = kahan_inc(v / self.count - self.mean / self.count, self.mean, self.c);
    }
    fn value(&self) -> f64 {
        if self.mean.is_infinite() {
            self.mean
        } else {
            self.mean + self.c
        }
    }
}

/// [`AvgFold`] over `N` windows side by side, as [`fold_n`] but with the running means
/// in arrays, so that while none is infinite each step is the same few operations on
/// all of them (which the compiler does two at a time): the same arithmetic, in the same
/// order per window.
pub(crate) fn avg_n<const N: usize>(ws: [&[Point]; N]) -> [f64; N] {
    let n = ws.iter().map(|w| w.len()).min().unwrap_or(0);
    let (mut mean, mut c) = ([0.0f64; N], [0.0f64; N]);
    let mut count = 0.0;
    let mut j = 0;
    while j < n && mean.iter().all(|m| m.is_finite()) {
        count += 1.0;
        let v: [f64; N] = std::array::from_fn(|k| ws[k][j].value);
        for k in 0..N {
            let inc = v[k] / count - mean[k] / count;
            let t = mean[k] + inc;
            c[k] += if mean[k].abs() >= inc.abs() {
                (mean[k] - t) + inc
            } else {
                (inc - t) + mean[k]
            };
            mean[k] = t;
        }
        j += 1;
    }
    let mut out = [0.0; N];
    for k in 0..N {
        let mut f = AvgFold {
            mean: mean[k],
            count,
            c: c[k],
        };
        for p in &ws[k][j..] {
            f.push(p.value);
        }
        out[k] = f.value();
    }
    out
}

/// Prometheus' `sum_over_time`: a Kahan sum.
#[derive(Clone, Copy, Default)]
pub(crate) struct SumFold {
    s: f64,
    c: f64,
}

impl Fold for SumFold {
    fn push(&mut self, v: f64) {
        (self.s, self.c) = kahan_inc(v, self.s, self.c);
    }
    fn value(&self) -> f64 {
        if self.s.is_infinite() {
            self.s
        } else {
            self.s + self.c
        }
    }
}

/// Prometheus' `stdvar_over_time`: Welford with Kahan sums, population variance.
#[derive(Clone, Copy, Default)]
pub(crate) struct VarFold {
    count: f64,
    mean: f64,
    cmean: f64,
    aux: f64,
    caux: f64,
}

impl Fold for VarFold {
    fn push(&mut self, v: f64) {
        self.count += 1.0;
        let delta = v - (self.mean + self.cmean);
        (self.mean, self.cmean) = kahan_inc(delta / self.count, self.mean, self.cmean);
        (self.aux, self.caux) =
            kahan_inc(delta * (v - (self.mean + self.cmean)), self.aux, self.caux);
    }
    fn value(&self) -> f64 {
        (self.aux + self.caux) / self.count
    }
}

/// `F` over the values of `pts`.
pub(crate) fn fold<F: Fold>(pts: &[Point]) -> f64 {
    let mut f = F::default();
    for p in pts {
        f.push(p.value);
    }
    f.value()
}

/// `F` over each of `N` windows, side by side: each window's values are taken in order
/// exactly as [`fold`] takes them, but the running states do not wait on each other.
pub(crate) fn fold_n<F: Fold, const N: usize>(ws: [&[Point]; N]) -> [f64; N] {
    let mut f = [F::default(); N];
    let n = ws.iter().map(|w| w.len()).min().unwrap_or(0);
    for j in 0..n {
        for (f, w) in f.iter_mut().zip(&ws) {
            f.push(w[j].value);
        }
    }
    for (f, w) in f.iter_mut().zip(&ws) {
        for p in &w[n..] {
            f.push(p.value);
        }
    }
    f.map(|f| f.value())
}

#[cfg(test)]
mod tests {
    use super::{AvgFold, Fold, SumFold, VarFold, avg_n, fold, fold_n};
    use crate::eval::testing::{T, check_instant, range};
    use crate::memory::MemStorage;
    use outpost_shared::model::stale_nan;
    use outpost_shared::{Labels, Point};

    /// Points every 15 s at T-50s, T-35s, T-20s, T-5s.
    fn every_15s(values: [f64; 4]) -> Vec<(i64, f64)> {
        [-50_000, -35_000, -20_000, -5_000]
            .iter()
            .zip(values)
            .map(|(dt, v)| (T + dt, v))
            .collect()
    }

    fn source() -> MemStorage {
        MemStorage::default()
            .with(
                Labels::metric("c", [("k", "plain")]),
                &every_15s([10.0, 20.0, 30.0, 40.0]),
            )
            .with(
                Labels::metric("c", [("k", "reset")]),
                &every_15s([5.0, 10.0, 2.0, 6.0]),
            )
            .with(
                Labels::metric("c", [("k", "zero")]),
                &every_15s([1.0, 11.0, 21.0, 31.0]),
            )
            .with(
                Labels::metric("g", [("k", "g")]),
                &every_15s([1.0, 3.0, 2.0, 6.0]),
            )
            .with(Labels::metric("one", []), &[(T - 5_000, 1.0)])
            .with(
                Labels::metric("far", []),
                &[(T - 40_000, 1.0), (T - 30_000, 3.0)],
            )
            .with(
                Labels::metric("stale", []),
                &[
                    (T - 50_000, 1.0),
                    (T - 40_000, stale_nan()),
                    (T - 30_000, 3.0),
                ],
            )
    }

    fn same_bits<F: Fold>(windows: [&[Point]; 4]) {
        let side_by_side = fold_n::<F, 4>(windows);
        for (w, got) in windows.iter().zip(side_by_side) {
            let want = fold::<F>(w);
            // Any NaN is NaN (its sign and payload are not part of an answer).
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{w:?}: {got} != {want}"
            );
        }
    }

    #[test]
    fn folding_side_by_side_gives_the_same_bits() {
        let values = [
            1e16,
            1.0,
            -1e16,
            0.1,
            f64::INFINITY,
            3.0,
            f64::NAN,
            0.7,
            f64::NEG_INFINITY,
            2.5,
            1e-300,
            -0.0,
        ];
        let pts: Vec<Point> = values
            .iter()
            .cycle()
            .take(60)
            .enumerate()
            .map(|(i, &value)| Point {
                ts: i as i64,
                value,
            })
            .collect();
        // Windows of different lengths, overlapping, one empty.
        let ws: [&[Point]; 4] = [&pts[0..4], &pts[1..13], &pts[10..10], &pts[5..60]];
        same_bits::<AvgFold>(ws);
        same_bits::<SumFold>(ws);
        same_bits::<VarFold>(ws);
        same_avg_n(ws);
        let finite: Vec<Point> = pts
            .iter()
            .filter(|p| p.value.is_finite())
            .copied()
            .collect();
        let ws: [&[Point]; 4] = [
            &finite[0..9],
            &finite[1..10],
            &finite[2..11],
            &finite[3..30],
        ];
        same_bits::<AvgFold>(ws);
        same_bits::<SumFold>(ws);
        same_bits::<VarFold>(ws);
        same_avg_n(ws);
        let ws: [&[Point]; 4] = [&pts[0..30], &pts[2..40], &pts[20..60], &pts[7..8]];
        same_avg_n(ws);
        let ws: [&[Point]; 8] = std::array::from_fn(|k| &finite[k..k + 20]);
        same_avg_n(ws);
        let ws: [&[Point]; 8] = std::array::from_fn(|k| &pts[k * 3..k * 3 + 25]);
        same_avg_n(ws);
    }

    fn same_avg_n<const N: usize>(windows: [&[Point]; N]) {
        for (w, got) in windows.iter().zip(avg_n(windows)) {
            let want = fold::<AvgFold>(w);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{w:?}: {got} != {want}"
            );
        }
    }

    #[test]
    fn rate_family() {
        check_instant(
            &source(),
            T,
            &[
                // 30 over 45 s sampled; 10 s to the window start and 5 s to its end are
                // within 1.1 intervals, so the increase is extrapolated over the full 60 s.
                (
                    "rate(c{k=\"plain\"}[1m])",
                    &[r#"{k="plain"} 0.6666666666666666@0"#],
                ),
                ("increase(c{k=\"plain\"}[1m])", &[r#"{k="plain"} 40@0"#]),
                // A reset adds the value before it back: 6 - 5 + 10 = 11, times 60/45.
                (
                    "increase(c{k=\"reset\"}[1m])",
                    &[r#"{k="reset"} 14.666666666666666@0"#],
                ),
                // Counters do not extrapolate below zero: the zero point is 1.5 s before
                // the first sample, so 30 is extrapolated over 51.5 s of 45.
                (
                    "increase(c{k=\"zero\"}[1m])",
                    &[r#"{k="zero"} 34.33333333333333@0"#],
                ),
                // delta does not treat the drop as a reset.
                (
                    "delta(c{k=\"reset\"}[1m])",
                    &[r#"{k="reset"} 1.3333333333333333@0"#],
                ),
                // Far from both edges: extrapolated by half an interval each side.
                ("delta(far[5m])", &["{} 4@0"]),
                ("rate(far[5m])", &["{} 0.013333333333333334@0"]),
                // Fewer than two points: no output.
                ("rate(one[1m])", &[]),
                ("irate(one[1m])", &[]),
                // irate/idelta: the last two points.
                (
                    "irate(c{k=\"plain\"}[1m])",
                    &[r#"{k="plain"} 0.6666666666666666@0"#],
                ),
                (
                    "irate(c{k=\"reset\"}[1m])",
                    &[r#"{k="reset"} 0.26666666666666666@0"#],
                ),
                (
                    "irate(c{k=\"reset\"}[1m] offset 15s)",
                    &[r#"{k="reset"} 0.13333333333333333@0"#],
                ),
                (
                    "idelta(c{k=\"reset\"}[1m] offset 15s)",
                    &[r#"{k="reset"} -8@0"#],
                ),
                // Stale markers are not points.
                ("changes(stale[1m])", &["{} 1@0"]),
                ("count_over_time(stale[1m])", &["{} 2@0"]),
                // The name is dropped, the label set kept.
                (
                    "resets(c[1m])",
                    &[
                        r#"{k="plain"} 0@0"#,
                        r#"{k="reset"} 1@0"#,
                        r#"{k="zero"} 0@0"#,
                    ],
                ),
                ("changes(g[1m])", &[r#"{k="g"} 3@0"#]),
                ("changes(one[1m])", &["{} 0@0"]),
                // Linear regression: 10 per 15 s; the prediction is from T.
                (
                    "deriv(c{k=\"plain\"}[1m])",
                    &[r#"{k="plain"} 0.6666666666666666@0"#],
                ),
                (
                    "predict_linear(c{k=\"plain\"}[1m], 60)",
                    &[r#"{k="plain"} 83.33333333333333@0"#],
                ),
                ("deriv(one[1m])", &[]),
                // Double exponential smoothing of 1, 3, 2, 6 with sf = tf = 0.5.
                ("holt_winters(g[1m], 0.5, 0.5)", &[r#"{k="g"} 5.375@0"#]),
                (
                    "holt_winters(g[1m], 1, 0.5)",
                    &["error: invalid smoothing factor. Expected: 0 < sf < 1, got: 1.000000"],
                ),
                (
                    "holt_winters(g[1m], 0.5, 0)",
                    &["error: invalid trend factor. Expected: 0 < tf < 1, got: 0.000000"],
                ),
                ("holt_winters(nothing[1m], 1, 0)", &[]),
            ],
        );
    }

    #[test]
    fn over_time() {
        check_instant(
            &source(),
            T,
            &[
                ("avg_over_time(g[1m])", &[r#"{k="g"} 3@0"#]),
                ("min_over_time(g[1m])", &[r#"{k="g"} 1@0"#]),
                ("max_over_time(g[1m])", &[r#"{k="g"} 6@0"#]),
                ("sum_over_time(g[1m])", &[r#"{k="g"} 12@0"#]),
                ("count_over_time(g[1m])", &[r#"{k="g"} 4@0"#]),
                ("count_over_time(g[30s])", &[r#"{k="g"} 2@0"#]),
                // Deviations from the mean 3: 4, 0, 1, 9.
                ("stdvar_over_time(g[1m])", &[r#"{k="g"} 3.5@0"#]),
                (
                    "stddev_over_time(g[1m])",
                    &[r#"{k="g"} 1.8708286933869707@0"#],
                ),
                ("quantile_over_time(0.5, g[1m])", &[r#"{k="g"} 2.5@0"#]),
                ("quantile_over_time(0, g[1m])", &[r#"{k="g"} 1@0"#]),
                ("quantile_over_time(1.5, g[1m])", &[r#"{k="g"} inf@0"#]),
                // last_over_time keeps the name.
                ("last_over_time(g[1m])", &[r#"g{k="g"} 6@0"#]),
                ("present_over_time(g[1m])", &[r#"{k="g"} 1@0"#]),
                ("absent_over_time(g[1m])", &[]),
                ("absent_over_time(nothing[1m])", &["{} 1@0"]),
                (
                    r#"absent_over_time(nothing{job="x",i=~"a.*",k="1",k="2"}[1m])"#,
                    &[r#"{job="x"} 1@0"#],
                ),
                // The window is closed: the point at exactly T-50s is in [50s].
                ("count_over_time(g[50s])", &[r#"{k="g"} 4@0"#]),
                ("count_over_time(g[49999ms])", &[r#"{k="g"} 3@0"#]),
                ("sum_over_time(nothing[1m])", &[]),
            ],
        );
    }

    #[test]
    fn range_queries_slide_the_window() {
        let src = MemStorage::default().with(
            Labels::metric("c", []),
            &(0..10)
                .map(|i| (T + i * 10_000, i as f64))
                .collect::<Vec<_>>(),
        );
        // Each step sees the points of its own 30 s window, both ends included.
        assert_eq!(
            range(&src, "count_over_time(c[30s])", T, T + 60_000, 30_000),
            ["{} [1@0 4@30000 4@60000]"]
        );
        assert_eq!(
            range(&src, "sum(rate(c[30s]))", T, T + 60_000, 30_000),
            ["{} [0.1@30000 0.1@60000]"]
        );
        assert_eq!(
            range(&src, "c[1m]", T, T + 60_000, 30_000),
            [
                r#"error: invalid expression type "range vector" for range query, must be Scalar or instant Vector"#
            ]
        );
    }
}
