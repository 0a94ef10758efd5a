//! Functions of a range vector, as Prometheus 2.42's `promql/functions.go`: each is
//! applied per series to the points of its window `(t - o - r, t - o]` (stale markers
//! left out), and a series with no point in the window gives no output. The output drops
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
use super::{Evaluator, Sample, Val, drop_name, exec_err};
use crate::error::QueryError;
use crate::parse::Expr;
use outpost_shared::{Labels, Point};

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

/// Evaluates the range-vector function `name` at `t`.
pub(crate) fn call(ev: &Evaluator, name: &str, args: &[Expr], t: i64) -> Result<Val, QueryError> {
    let mi = usize::from(name == "quantile_over_time");
    let Some(Expr::Matrix { selector, range_ms }) = args.get(mi) else {
        return Err(QueryError::Unsupported(format!(
            "{name}() of anything but a range vector selector"
        )));
    };
    let matrix = ev.loaded().matrix(selector, *range_ms, t);
    let range_end = t - selector.offset_ms;
    let range_start = range_end - range_ms;
    let range_s = *range_ms as f64 / 1000.0;
    if name == "absent_over_time" {
        if !matrix.is_empty() {
            return Ok(Val::Vector(Vec::new()));
        }
        return Ok(Val::Vector(vec![Sample {
            labels: super::instant_fn::absent_labels(&args[0]),
            point: Point { ts: t, value: 1.0 },
        }]));
    }
    let scalar = |i: usize| -> Result<f64, QueryError> {
        match args.get(i) {
            Some(e) => ev.eval_scalar(e, t),
            None => Ok(f64::NAN),
        }
    };
    let (p1, p2) = match name {
        "quantile_over_time" => (scalar(0)?, 0.0),
        "predict_linear" => (scalar(1)?, 0.0),
        "holt_winters" => (scalar(1)?, scalar(2)?),
        _ => (0.0, 0.0),
    };
    if name == "holt_winters" && !matrix.is_empty() {
        if p1 <= 0.0 || p1 >= 1.0 {
            return Err(exec_err(format!(
                "invalid smoothing factor. Expected: 0 < sf < 1, got: {p1:.6}"
            )));
        }
        if p2 <= 0.0 || p2 >= 1.0 {
            return Err(exec_err(format!(
                "invalid trend factor. Expected: 0 < tf < 1, got: {p2:.6}"
            )));
        }
    }
    let mut out = Vec::with_capacity(matrix.len());
    for s in matrix {
        let pts = &s.points;
        let v = match name {
            "rate" => extrapolated_rate(pts, range_start, range_end, range_s, true, true),
            "increase" => extrapolated_rate(pts, range_start, range_end, range_s, true, false),
            "delta" => extrapolated_rate(pts, range_start, range_end, range_s, false, false),
            "irate" => instant_value(pts, true),
            "idelta" => instant_value(pts, false),
            "deriv" => (pts.len() >= 2).then(|| linear_regression(pts, pts[0].ts).0),
            "predict_linear" => (pts.len() >= 2).then(|| {
                let (slope, intercept) = linear_regression(pts, t);
                slope * p1 + intercept
            }),
            "resets" => Some(pts.windows(2).filter(|w| w[1].value < w[0].value).count() as f64),
            "changes" => Some(
                pts.windows(2)
                    .filter(|w| {
                        let (a, b) = (w[0].value, w[1].value);
                        a != b && !(a.is_nan() && b.is_nan())
                    })
                    .count() as f64,
            ),
            "holt_winters" => holt_winters(pts, p1, p2),
            "avg_over_time" => Some(avg(pts)),
            "min_over_time" => Some(pts.iter().fold(pts[0].value, |m, p| {
                if p.value < m || m.is_nan() {
                    p.value
                } else {
                    m
                }
            })),
            "max_over_time" => Some(pts.iter().fold(pts[0].value, |m, p| {
                if p.value > m || m.is_nan() {
                    p.value
                } else {
                    m
                }
            })),
            "sum_over_time" => Some(sum(pts)),
            "count_over_time" => Some(pts.len() as f64),
            "quantile_over_time" => Some(quantile(p1, pts.iter().map(|p| p.value).collect())),
            "stddev_over_time" => Some(stdvar(pts).sqrt()),
            "stdvar_over_time" => Some(stdvar(pts)),
            "last_over_time" => pts.last().map(|p| p.value),
            "present_over_time" => Some(1.0),
            _ => return Err(QueryError::Unsupported(format!("function call {name}()"))),
        };
        if let Some(value) = v {
            let labels: Labels = if name == "last_over_time" {
                s.labels
            } else {
                drop_name(&s.labels)
            };
            out.push(Sample {
                labels,
                point: Point { ts: t, value },
            });
        }
    }
    Ok(Val::Vector(out))
}

/// Prometheus' `extrapolatedRate`.
fn extrapolated_rate(
    pts: &[Point],
    range_start: i64,
    range_end: i64,
    range_s: f64,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if pts.len() < 2 {
        return None;
    }
    let (first, last) = (pts[0], pts[pts.len() - 1]);
    let mut result = last.value - first.value;
    if is_counter {
        for w in pts.windows(2) {
            if w[1].value < w[0].value {
                result += w[0].value;
            }
        }
    }
    let mut to_start = (first.ts - range_start) as f64 / 1000.0;
    let to_end = (range_end - last.ts) as f64 / 1000.0;
    let sampled = (last.ts - first.ts) as f64 / 1000.0;
    let avg_between = sampled / (pts.len() - 1) as f64;
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

/// Prometheus' `avg_over_time`: an incremental Kahan mean that survives ±Inf.
fn avg(pts: &[Point]) -> f64 {
    let (mut mean, mut count, mut c) = (0.0f64, 0.0, 0.0);
    for p in pts {
        count += 1.0;
        let v = p.value;
        if mean.is_infinite() {
            if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                continue;
            }
            if !v.is_infinite() && !v.is_nan() {
                continue;
            }
        }
        (mean, c) = kahan_inc(v / count - mean / count, mean, c);
    }
    if mean.is_infinite() { mean } else { mean + c }
}

/// Prometheus' `sum_over_time`: a Kahan sum.
fn sum(pts: &[Point]) -> f64 {
    let (mut s, mut c) = (0.0f64, 0.0);
    for p in pts {
        (s, c) = kahan_inc(p.value, s, c);
    }
    if s.is_infinite() { s } else { s + c }
}

/// Prometheus' `stdvar_over_time`: Welford with Kahan sums, population variance.
fn stdvar(pts: &[Point]) -> f64 {
    let (mut count, mut mean, mut cmean, mut aux, mut caux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for p in pts {
        count += 1.0;
        let delta = p.value - (mean + cmean);
        (mean, cmean) = kahan_inc(delta / count, mean, cmean);
        (aux, caux) = kahan_inc(delta * (p.value - (mean + cmean)), aux, caux);
    }
    (aux + caux) / count
}
