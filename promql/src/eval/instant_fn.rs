//! Functions of instant vectors, scalars and strings, as Prometheus 2.42's
//! `promql/functions.go`.
//!
//! - Math, applied per sample with the metric name dropped: `abs`, `ceil`, `floor`,
//!   `round` (ties up, to a multiple of its optional argument), `clamp` (no output when
//!   `max < min`), `clamp_min`, `clamp_max`, `exp`, `ln`, `log2`, `log10`, `sqrt`, `sgn`,
//!   `sin`, `cos`, `tan`, `asin`, `acos`, `atan`, `sinh`, `cosh`, `tanh`, `asinh`,
//!   `acosh`, `atanh`, `deg`, `rad`, and `pi()`. NaN in, NaN out, as Go's `math`.
//! - Labels: `label_replace` (anchored Go-style regex, `$1`/`${name}` expansion, an empty
//!   result removes the label) and `label_join`.
//! - Time: `time()`, `timestamp()` (of a selector: the point's own time), and the date
//!   functions of the evaluation time or of each sample's value as Unix seconds, in UTC.
//! - `vector`, `scalar` (NaN unless exactly one sample), `sort`, `sort_desc` (NaN last),
//!   `absent` (labels from the selector's equality matchers), `histogram_quantile` over
//!   classic `le` buckets (Prometheus' `bucketQuantile`).

use super::aggregate::valid_label_name;
use super::{Evaluator, LabelMap, Sample, Val, drop_name, exec_err};
use crate::error::QueryError;
use crate::parse::Expr;
use crate::storage::MatchOp;
use outpost_shared::model::METRIC_NAME;
use outpost_shared::{Label, Labels, Point};
use std::sync::Arc;

/// The functions of this family.
pub(crate) const FUNCTIONS: &[&str] = &[
    "abs",
    "ceil",
    "floor",
    "round",
    "clamp",
    "clamp_min",
    "clamp_max",
    "exp",
    "ln",
    "log2",
    "log10",
    "sqrt",
    "sgn",
    "sin",
    "cos",
    "tan",
    "asin",
    "acos",
    "atan",
    "sinh",
    "cosh",
    "tanh",
    "asinh",
    "acosh",
    "atanh",
    "deg",
    "rad",
    "pi",
    "label_replace",
    "label_join",
    "time",
    "timestamp",
    "vector",
    "scalar",
    "sort",
    "sort_desc",
    "absent",
    "histogram_quantile",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "hour",
    "minute",
    "month",
    "year",
];

/// Go's `math.Max`: NaN if either is NaN.
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Go's `math.Min`: NaN if either is NaN.
fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

fn map_values(v: Vec<Sample>, t: i64, f: impl Fn(f64) -> f64) -> Vec<Sample> {
    v.into_iter()
        .map(|s| Sample {
            labels: drop_name(&s.labels),
            point: Point {
                ts: t,
                value: f(s.point.value),
            },
        })
        .collect()
}

/// The functions of one sample's value and nothing else (math, and dates of a value):
/// the output drops the metric name.
pub(crate) fn unary(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sqrt" => f64::sqrt,
        "sgn" => |v| {
            if v < 0.0 {
                -1.0
            } else if v > 0.0 {
                1.0
            } else {
                v
            }
        },
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "deg" => |v| v * 180.0 / std::f64::consts::PI,
        "rad" => |v| v * std::f64::consts::PI / 180.0,
        "day_of_month" => |v| date_part("day_of_month", go_int64(v)),
        "day_of_week" => |v| date_part("day_of_week", go_int64(v)),
        "day_of_year" => |v| date_part("day_of_year", go_int64(v)),
        "days_in_month" => |v| date_part("days_in_month", go_int64(v)),
        "hour" => |v| date_part("hour", go_int64(v)),
        "minute" => |v| date_part("minute", go_int64(v)),
        "month" => |v| date_part("month", go_int64(v)),
        "year" => |v| date_part("year", go_int64(v)),
        _ => return None,
    })
}

/// `round`, `clamp`, `clamp_min` and `clamp_max` with their scalar arguments.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Clamp {
    /// `round(v, to_nearest)`, by the inverse of `to_nearest`.
    Round(f64),
    /// `clamp(v, min, max)`.
    Both(f64, f64),
    /// `clamp_min(v, min)`.
    Min(f64),
    /// `clamp_max(v, max)`.
    Max(f64),
}

impl Clamp {
    /// The function `name` with its arguments `p1` (`round`'s to-nearest, 1 when not
    /// given; a clamp's first bound) and `p2`; `None` when `clamp`'s `max < min`, which
    /// gives no output at all.
    pub(crate) fn of(name: &str, p1: f64, p2: f64) -> Option<Self> {
        Some(match name {
            "round" => Clamp::Round(1.0 / p1),
            "clamp" if p2 < p1 => return None,
            "clamp" => Clamp::Both(p1, p2),
            "clamp_min" => Clamp::Min(p1),
            _ => Clamp::Max(p1),
        })
    }

    /// The function of one value.
    pub(crate) fn apply(self, v: f64) -> f64 {
        match self {
            Clamp::Round(inv) => (v * inv + 0.5).floor() / inv,
            Clamp::Both(min, max) => go_max(min, go_min(max, v)),
            Clamp::Min(min) => go_max(min, v),
            Clamp::Max(max) => go_min(max, v),
        }
    }
}

fn string_arg(args: &[Expr], i: usize) -> String {
    match args.get(i) {
        Some(Expr::String(s)) => s.clone(),
        _ => String::new(),
    }
}

/// Evaluates the function `name` at `t`.
pub(crate) fn call(
    ev: &Evaluator<'_>,
    name: &str,
    args: &[Expr],
    t: i64,
) -> Result<Val, QueryError> {
    let scalar = |i: usize| -> Result<f64, QueryError> {
        match args.get(i) {
            Some(e) => ev.eval_scalar(e, t),
            None => Ok(f64::NAN),
        }
    };
    match name {
        "time" => return Ok(Val::Scalar(t as f64 / 1000.0)),
        "pi" => return Ok(Val::Scalar(std::f64::consts::PI)),
        "vector" => {
            return Ok(Val::Vector(vec![Sample {
                labels: Arc::new(Labels::default()),
                point: Point {
                    ts: t,
                    value: scalar(0)?,
                },
            }]));
        }
        "timestamp" => {
            let v = match args.first() {
                Some(Expr::Vector(sel)) => ev.loaded().instant(sel, t, true)?,
                Some(e) => ev.eval(e, t)?.into_vector(),
                None => Vec::new(),
            };
            return Ok(Val::Vector(
                v.into_iter()
                    .map(|s| Sample {
                        labels: drop_name(&s.labels),
                        point: Point {
                            ts: t,
                            value: s.point.ts as f64 / 1000.0,
                        },
                    })
                    .collect(),
            ));
        }
        "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute"
        | "month" | "year"
            if args.is_empty() =>
        {
            return Ok(Val::Vector(vec![Sample {
                labels: Arc::new(Labels::default()),
                point: Point {
                    ts: t,
                    value: date_part(name, t.div_euclid(1000)),
                },
            }]));
        }
        _ => {}
    }
    let vi = usize::from(name == "histogram_quantile");
    let vec = match args.get(vi) {
        Some(e) => ev.eval(e, t)?.into_vector(),
        None => Vec::new(),
    };
    if let Some(f) = unary(name) {
        return Ok(Val::Vector(map_values(vec, t, f)));
    }
    let out = match name {
        "round" | "clamp" | "clamp_min" | "clamp_max" => {
            let (p1, p2) = (scalar(1)?, scalar(2)?);
            let p1 = if name == "round" && args.len() < 2 {
                1.0
            } else {
                p1
            };
            match Clamp::of(name, p1, p2) {
                Some(c) => map_values(vec, t, |v| c.apply(v)),
                None => Vec::new(),
            }
        }
        "scalar" => {
            let v = if vec.len() == 1 {
                vec[0].point.value
            } else {
                f64::NAN
            };
            return Ok(Val::Scalar(v));
        }
        "sort" | "sort_desc" => {
            let desc = name == "sort_desc";
            let mut vec = vec;
            vec.sort_by(|x, y| super::by_value_nan_last(x.point.value, y.point.value, desc));
            vec
        }
        "absent" => {
            if vec.is_empty() {
                vec![Sample {
                    labels: Arc::new(absent_labels(&args[0])),
                    point: Point { ts: t, value: 1.0 },
                }]
            } else {
                Vec::new()
            }
        }
        "label_replace" => label_replace(vec, args, t)?,
        "label_join" => label_join(vec, args, t)?,
        "histogram_quantile" => histogram_quantile(scalar(0)?, vec, t),
        _ => return Err(QueryError::Unsupported(format!("function call {name}()"))),
    };
    Ok(Val::Vector(out))
}

/// The labels `absent()` and `absent_over_time()` give, as Prometheus'
/// `createLabelsForAbsentFunction`: each equality matcher's label, unless the label is
/// matched more than once or otherwise.
pub(crate) fn absent_labels(e: &Expr) -> Labels {
    let sel = match e {
        Expr::Vector(s) | Expr::Matrix { selector: s, .. } => s,
        _ => return Labels::default(),
    };
    let mut out: Vec<(String, String)> = Vec::new();
    let mut has: Vec<&str> = Vec::new();
    for m in &sel.matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        out.retain(|(n, _)| n != &m.name);
        if m.op == MatchOp::Equal && !has.contains(&m.name.as_str()) {
            out.push((m.name.clone(), m.value.clone()));
            has.push(&m.name);
        }
    }
    Labels::new(out)
}

fn set_label(l: &Labels, name: &str, value: &str) -> Labels {
    let mut v: Vec<Label> = l.iter().filter(|x| x.name != name).cloned().collect();
    if !value.is_empty() {
        v.push(Label {
            name: name.to_string(),
            value: value.to_string(),
        });
        v.sort();
    }
    Labels::from_sorted(v).unwrap_or_default()
}

fn label_replace(vec: Vec<Sample>, args: &[Expr], t: i64) -> Result<Vec<Sample>, QueryError> {
    let (dst, repl, src, re) = (
        string_arg(args, 1),
        string_arg(args, 2),
        string_arg(args, 3),
        string_arg(args, 4),
    );
    let regex = regex::Regex::new(&format!("^(?:{re})$")).map_err(|_| {
        exec_err(format!(
            "invalid regular expression in label_replace(): {re}"
        ))
    })?;
    if !valid_label_name(&dst) {
        return Err(exec_err(format!(
            "invalid destination label name in label_replace(): {dst}"
        )));
    }
    Ok(vec
        .into_iter()
        .map(|s| {
            let src_val = s.labels.get(&src).unwrap_or("");
            let labels = match regex.captures(src_val) {
                None => s.labels.clone(),
                Some(caps) => {
                    let mut res = String::new();
                    caps.expand(&repl, &mut res);
                    Arc::new(set_label(&s.labels, &dst, &res))
                }
            };
            Sample {
                labels,
                point: Point {
                    ts: t,
                    value: s.point.value,
                },
            }
        })
        .collect())
}

fn label_join(vec: Vec<Sample>, args: &[Expr], t: i64) -> Result<Vec<Sample>, QueryError> {
    let (dst, sep) = (string_arg(args, 1), string_arg(args, 2));
    let srcs: Vec<String> = (3..args.len()).map(|i| string_arg(args, i)).collect();
    for s in &srcs {
        if !valid_label_name(s) {
            return Err(exec_err(format!(
                "invalid source label name in label_join(): {s}"
            )));
        }
    }
    if !valid_label_name(&dst) {
        return Err(exec_err(format!(
            "invalid destination label name in label_join(): {dst}"
        )));
    }
    Ok(vec
        .into_iter()
        .map(|s| {
            let joined: Vec<&str> = srcs.iter().map(|n| s.labels.get(n).unwrap_or("")).collect();
            Sample {
                labels: Arc::new(set_label(&s.labels, &dst, &joined.join(&sep))),
                point: Point {
                    ts: t,
                    value: s.point.value,
                },
            }
        })
        .collect())
}

/// Go's `strconv.ParseFloat` for the values `le` takes.
fn parse_go_float(s: &str) -> Option<f64> {
    match s.to_ascii_lowercase().as_str() {
        "+inf" | "inf" | "+infinity" | "infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// A bucket series' histogram (its labels but `le` and the name) and upper bound; `None`
/// for a series without a valid `le`, which `histogram_quantile` leaves out.
pub(crate) fn bucket_of(labels: &Labels) -> Option<(Labels, f64)> {
    let upper = labels.get("le").and_then(parse_go_float)?;
    let key = Labels::from_sorted(
        labels
            .iter()
            .filter(|l| l.name != "le" && l.name != METRIC_NAME)
            .cloned()
            .collect(),
    )
    .unwrap_or_default();
    Some((key, upper))
}

fn histogram_quantile(q: f64, vec: Vec<Sample>, t: i64) -> Vec<Sample> {
    let mut index: LabelMap<Labels, usize> = LabelMap::default();
    let mut groups: Vec<(Labels, Vec<(f64, f64)>)> = Vec::new();
    for s in vec {
        let Some((key, upper)) = bucket_of(&s.labels) else {
            continue;
        };
        let i = *index.entry(key.clone()).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push((upper, s.point.value));
    }
    groups
        .into_iter()
        .map(|(labels, buckets)| Sample {
            labels: Arc::new(labels),
            point: Point {
                ts: t,
                value: bucket_quantile(q, buckets),
            },
        })
        .collect()
}

/// Prometheus' `bucketQuantile`: buckets `(upper bound, cumulative count)`.
pub(crate) fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Coalesce buckets with the same upper bound.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for b in buckets {
        match merged.last_mut() {
            Some(last) if last.0 == b.0 => last.1 += b.1,
            _ => merged.push(b),
        }
    }
    // Ensure monotonic counts.
    let mut max = merged[0].1;
    for b in merged.iter_mut().skip(1) {
        if b.1 > max {
            max = b.1;
        } else if b.1 < max {
            b.1 = max;
        }
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let n = merged.len();
    let observations = merged[n - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = merged[..n - 1].partition_point(|b| b.1 < rank);
    if b == n - 1 {
        return merged[n - 2].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let (mut start, end, mut count) = (0.0, merged[b].0, merged[b].1);
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

/// A float as Go's `int64(f)` on amd64, which Prometheus' date functions apply to sample
/// values: NaN and values out of range become `i64::MIN` (Rust's `as` would saturate).
fn go_int64(v: f64) -> i64 {
    if v.is_nan() || v >= 9_223_372_036_854_775_808.0 || v < -9_223_372_036_854_775_808.0 {
        i64::MIN
    } else {
        v as i64
    }
}

/// One part of the UTC date and time of `secs` since the Unix epoch, computed as Go's
/// `time.Unix(secs, 0).UTC()` does (its "absolute" time and `absDate`), so that even
/// times outside any calendar (NaN, ±Inf, huge values) give Prometheus' numbers.
fn date_part(name: &str, secs: i64) -> f64 {
    const SECS_PER_DAY: u64 = 86_400;
    const UNIX_TO_INTERNAL: i64 = 62_135_596_800;
    const INTERNAL_TO_ABSOLUTE: i64 = 9_223_371_966_579_724_800;
    const ABSOLUTE_ZERO_YEAR: i64 = -292_277_022_399;
    const DAYS_BEFORE: [i64; 13] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365];
    // Go adds the offsets in int64 and reinterprets as uint64, wrapping silently.
    let abs = secs
        .wrapping_add(UNIX_TO_INTERNAL)
        .wrapping_add(INTERNAL_TO_ABSOLUTE) as u64;
    let mut d = abs / SECS_PER_DAY;
    let mut n = d / 146_097;
    let mut y = 400 * n;
    d -= 146_097 * n;
    n = d / 36_524;
    n -= n >> 2;
    y += 100 * n;
    d -= 36_524 * n;
    n = d / 1461;
    y += 4 * n;
    d -= 1461 * n;
    n = d / 365;
    n -= n >> 2;
    y += n;
    d -= 365 * n;
    let year = (y as i64).wrapping_add(ABSOLUTE_ZERO_YEAR);
    let yday = d as i64;
    let (month, day) = {
        let mut day = yday;
        let leap = is_leap(year);
        if leap && day == 31 + 29 - 1 {
            (2, 29)
        } else {
            if leap && day > 31 + 29 - 1 {
                day -= 1;
            }
            let mut m = (day / 31) as usize;
            let end = DAYS_BEFORE[m + 1];
            let begin = if day >= end {
                m += 1;
                end
            } else {
                DAYS_BEFORE[m]
            };
            (m as i64 + 1, day - begin + 1)
        }
    };
    let sod = (abs % SECS_PER_DAY) as i64;
    let v = match name {
        "year" => year,
        "month" => month,
        "day_of_month" => day,
        // Go counts weekdays from an absolute epoch that fell on a Monday.
        "day_of_week" => {
            ((abs.wrapping_add(SECS_PER_DAY) % (7 * SECS_PER_DAY)) / SECS_PER_DAY) as i64
        }
        "day_of_year" => yday + 1,
        "days_in_month" => match month {
            2 if is_leap(year) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        },
        "hour" => sod / 3600,
        "minute" => sod % 3600 / 60,
        _ => 0,
    };
    v as f64
}

#[cfg(test)]
mod tests {
    use crate::eval::testing::{T, check_instant, range};
    use crate::memory::MemStorage;
    use outpost_shared::Labels;

    fn source() -> MemStorage {
        let at = |v: f64| [(T - 10_000, v)];
        let bucket = |le: &'static str, v: f64| {
            (
                Labels::metric("h_bucket", [("job", "a"), ("le", le)]),
                at(v),
            )
        };
        let mut src = MemStorage::default()
            .with(Labels::metric("v", [("i", "1")]), &at(-2.5))
            .with(Labels::metric("v", [("i", "2")]), &at(2.5))
            .with(Labels::metric("v", [("i", "3")]), &at(f64::NAN))
            .with(
                Labels::metric("w", [("src", "ab"), ("x", "1"), ("y", "2")]),
                &at(8.0),
            )
            // 2000-02-29T00:00:00Z.
            .with(Labels::metric("date", []), &at(951_782_400.0))
            .with(Labels::metric("nobucket", [("le", "0.1")]), &at(1.0));
        for (le, v) in [("0.1", 2.0), ("0.5", 6.0), ("1", 8.0), ("+Inf", 10.0)] {
            let (l, p) = bucket(le, v);
            src = src.with(l, &p);
        }
        src
    }

    #[test]
    fn math() {
        check_instant(
            &source(),
            T,
            &[
                (
                    "abs(v)",
                    &[r#"{i="1"} 2.5@0"#, r#"{i="2"} 2.5@0"#, r#"{i="3"} NaN@0"#],
                ),
                ("ceil(v{i=\"1\"})", &[r#"{i="1"} -2@0"#]),
                ("floor(v{i=\"1\"})", &[r#"{i="1"} -3@0"#]),
                // Ties round up.
                ("round(v{i!=\"3\"})", &[r#"{i="1"} -2@0"#, r#"{i="2"} 3@0"#]),
                ("round(w, 5)", &[r#"{src="ab", x="1", y="2"} 10@0"#]),
                ("round(v{i=\"2\"}, 0.2)", &[r#"{i="2"} 2.6@0"#]),
                (
                    "clamp(v, -1, 1)",
                    &[r#"{i="1"} -1@0"#, r#"{i="2"} 1@0"#, r#"{i="3"} NaN@0"#],
                ),
                ("clamp(v, 1, -1)", &[]),
                (
                    "clamp_min(v{i!=\"3\"}, 0)",
                    &[r#"{i="1"} 0@0"#, r#"{i="2"} 2.5@0"#],
                ),
                (
                    "clamp_max(v{i!=\"3\"}, 0)",
                    &[r#"{i="1"} -2.5@0"#, r#"{i="2"} 0@0"#],
                ),
                ("exp(v{i=\"1\"} * 0)", &[r#"{i="1"} 1@0"#]),
                ("ln(v{i=\"1\"} * 0)", &[r#"{i="1"} -inf@0"#]),
                ("sqrt(v{i=\"1\"})", &[r#"{i="1"} NaN@0"#]),
                ("log2(w)", &[r#"{src="ab", x="1", y="2"} 3@0"#]),
                ("log10(w * 125)", &[r#"{src="ab", x="1", y="2"} 3@0"#]),
                (
                    "sgn(v)",
                    &[r#"{i="1"} -1@0"#, r#"{i="2"} 1@0"#, r#"{i="3"} NaN@0"#],
                ),
                ("sin(v{i=\"2\"} * 0)", &[r#"{i="2"} 0@0"#]),
                ("cos(v{i=\"2\"} * 0)", &[r#"{i="2"} 1@0"#]),
                ("deg(vector(pi()))", &["{} 180@0"]),
                ("rad(vector(180))", &["{} 3.141592653589793@0"]),
                ("acosh(vector(1))", &["{} 0@0"]),
                ("atanh(vector(1))", &["{} inf@0"]),
            ],
        );
    }

    #[test]
    fn labels_and_time() {
        check_instant(
            &source(),
            T,
            &[
                (
                    r#"label_replace(w, "dst", "$1-${1}x", "src", "(a)b")"#,
                    &[r#"w{dst="a-ax", src="ab", x="1", y="2"} 8@0"#],
                ),
                // No match: unchanged. An empty replacement removes the label.
                (
                    r#"label_replace(w, "dst", "$1", "src", "zz")"#,
                    &[r#"w{src="ab", x="1", y="2"} 8@0"#],
                ),
                (
                    r#"label_replace(w, "x", "", "src", ".*")"#,
                    &[r#"w{src="ab", y="2"} 8@0"#],
                ),
                (
                    r#"label_replace(w, "1x", "", "src", ".*")"#,
                    &["error: invalid destination label name in label_replace(): 1x"],
                ),
                (
                    r#"label_replace(w, "d", "", "src", "(")"#,
                    &["error: invalid regular expression in label_replace(): ("],
                ),
                (
                    r#"label_join(w, "j", "-", "x", "y", "missing")"#,
                    &[r#"w{j="1-2-", src="ab", x="1", y="2"} 8@0"#],
                ),
                (r#"label_join(w, "x", ",")"#, &[r#"w{src="ab", y="2"} 8@0"#]),
                // Two series that become one label set are an error.
                (
                    r#"label_replace(v, "i", "", "i", ".*")"#,
                    &["error: vector cannot contain metrics with the same labelset"],
                ),
                ("time()", &["scalar 1700000000@0"]),
                // timestamp() of a selector is the point's own time; of anything else, now.
                (
                    "timestamp(w)",
                    &[r#"{src="ab", x="1", y="2"} 1699999990@0"#],
                ),
                (
                    "timestamp(w * 1)",
                    &[r#"{src="ab", x="1", y="2"} 1700000000@0"#],
                ),
                ("vector(3)", &["{} 3@0"]),
                ("scalar(w)", &["scalar 8@0"]),
                ("scalar(v)", &["scalar NaN@0"]),
                ("scalar(nothing)", &["scalar NaN@0"]),
                (
                    "sort(v)",
                    &[
                        r#"v{i="1"} -2.5@0"#,
                        r#"v{i="2"} 2.5@0"#,
                        r#"v{i="3"} NaN@0"#,
                    ],
                ),
                (
                    "sort_desc(v)",
                    &[
                        r#"v{i="2"} 2.5@0"#,
                        r#"v{i="1"} -2.5@0"#,
                        r#"v{i="3"} NaN@0"#,
                    ],
                ),
                ("absent(v)", &[]),
                (
                    r#"absent(nothing{job="x", i=~"a", k="1", k="2"})"#,
                    &[r#"{job="x"} 1@0"#],
                ),
                ("absent(sum(nothing))", &["{} 1@0"]),
            ],
        );
    }

    #[test]
    fn dates() {
        // T is 2023-11-14T22:13:20Z, a Tuesday.
        check_instant(
            &source(),
            T,
            &[
                ("year()", &["{} 2023@0"]),
                ("month()", &["{} 11@0"]),
                ("day_of_month()", &["{} 14@0"]),
                ("day_of_week()", &["{} 2@0"]),
                ("day_of_year()", &["{} 318@0"]),
                ("days_in_month()", &["{} 30@0"]),
                ("hour()", &["{} 22@0"]),
                ("minute()", &["{} 13@0"]),
                ("year(vector(0))", &["{} 1970@0"]),
                ("day_of_week(vector(0))", &["{} 4@0"]),
                ("days_in_month(date)", &["{} 29@0"]),
                ("day_of_year(date)", &["{} 60@0"]),
                ("month(date)", &["{} 2@0"]),
                ("day_of_week(date)", &["{} 2@0"]),
                ("year(vector(-1))", &["{} 1969@0"]),
            ],
        );
    }

    #[test]
    fn histogram_quantile_of_classic_buckets() {
        check_instant(
            &source(),
            T,
            &[
                // Rank 5 falls in (0.1, 0.5], 3 of its 4 observations in: 0.1 + 0.4 * 3/4.
                ("histogram_quantile(0.5, h_bucket)", &[r#"{job="a"} 0.4@0"#]),
                // Rank 1 in the first bucket, interpolated from 0.
                (
                    "histogram_quantile(0.1, h_bucket)",
                    &[r#"{job="a"} 0.05@0"#],
                ),
                // In the +Inf bucket: the largest finite bound.
                ("histogram_quantile(0.99, h_bucket)", &[r#"{job="a"} 1@0"#]),
                ("histogram_quantile(-1, h_bucket)", &[r#"{job="a"} -inf@0"#]),
                ("histogram_quantile(2, h_bucket)", &[r#"{job="a"} inf@0"#]),
                // No +Inf bucket: NaN.
                ("histogram_quantile(0.5, nobucket)", &["{} NaN@0"]),
                (
                    "histogram_quantile(0.5, h_bucket{le!=\"+Inf\"})",
                    &[r#"{job="a"} NaN@0"#],
                ),
                ("histogram_quantile(0.5, w)", &[]),
                (
                    "histogram_quantile(0.5, sum by (le) (h_bucket))",
                    &["{} 0.4@0"],
                ),
            ],
        );
        let src = MemStorage::default()
            .with(
                Labels::metric("h_bucket", [("le", "1")]),
                &[(T, 1.0), (T + 60_000, 3.0)],
            )
            .with(
                Labels::metric("h_bucket", [("le", "+Inf")]),
                &[(T, 2.0), (T + 60_000, 4.0)],
            );
        assert_eq!(
            range(
                &src,
                "histogram_quantile(0.5, h_bucket)",
                T,
                T + 60_000,
                60_000
            ),
            ["{} [1@0 0.6666666666666666@60000]"]
        );
    }
}
