//! Aggregation operators, as Prometheus 2.42's `aggregation` (`promql/engine.go`).
//!
//! Samples are grouped by the labels listed in `by (...)` (none without a clause), or by
//! all but `__name__` and those listed in `without (...)`; groups come out in the order
//! their first sample came in. `sum`, `avg` (an incremental mean that survives ±Inf),
//! `min`/`max` (NaN only if every value is NaN), `count`, `group`, `stddev`/`stdvar`
//! (Welford, population), `quantile` (φ-quantile with linear interpolation, ±Inf outside
//! `[0, 1]`), `count_values` (the value, formatted as Go's `'f', -1`, in a new label),
//! `topk`/`bottomk` (the samples themselves, labels and all, kept in a heap exactly as
//! Prometheus does so ties resolve alike).

use super::{Sample, Val, exec_err};
use crate::error::QueryError;
use crate::parse::{AggOp, Aggregate};
use outpost_shared::model::METRIC_NAME;
use outpost_shared::{Label, Labels, Point};
use std::collections::HashMap;

struct Group {
    labels: Labels,
    value: f64,
    mean: f64,
    count: f64,
    heap: Vec<Sample>,
}

/// Aggregates `input` at `t`; `param` is the evaluated parameter for `topk`, `bottomk`,
/// `quantile` and `count_values`.
pub(crate) fn eval(
    a: &Aggregate,
    input: Vec<Sample>,
    param: Option<Val>,
    t: i64,
) -> Result<Vec<Sample>, QueryError> {
    let mut k = 0usize;
    if matches!(a.op, AggOp::Topk | AggOp::Bottomk) {
        let f = param.as_ref().map_or(f64::NAN, Val::scalar);
        if !(f >= i64::MIN as f64 && f <= i64::MAX as f64) {
            return Err(exec_err(format!(
                "Scalar value {} overflows int64",
                go_float(f)
            )));
        }
        let ki = f as i64;
        if ki < 1 {
            return Ok(Vec::new());
        }
        k = usize::try_from(ki).unwrap_or(usize::MAX);
    }
    let q = match (a.op, &param) {
        (AggOp::Quantile, Some(p)) => p.scalar(),
        _ => f64::NAN,
    };
    let mut grouping = a.grouping.clone();
    let mut value_label = String::new();
    if a.op == AggOp::CountValues {
        value_label = match &param {
            Some(Val::Str(s)) => s.clone(),
            _ => String::new(),
        };
        if !valid_label_name(&value_label) {
            return Err(exec_err(format!("invalid label name {value_label:?}")));
        }
        if !a.without {
            grouping.push(value_label.clone());
        }
    }
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    for s in input {
        let v = s.point.value;
        let metric = if a.op == AggOp::CountValues {
            s.labels.with(&value_label, &go_float(v))
        } else {
            s.labels.clone()
        };
        let key = group_labels(&metric, &grouping, a.without);
        let Some(&gi) = index.get(&key) else {
            index.insert(key.clone(), groups.len());
            groups.push(Group {
                labels: key,
                value: match a.op {
                    AggOp::Stddev | AggOp::Stdvar => 0.0,
                    AggOp::Group => 1.0,
                    _ => v,
                },
                mean: v,
                count: 1.0,
                heap: if matches!(a.op, AggOp::Topk | AggOp::Bottomk | AggOp::Quantile) {
                    vec![Sample {
                        labels: s.labels,
                        point: s.point,
                    }]
                } else {
                    Vec::new()
                },
            });
            continue;
        };
        let g = &mut groups[gi];
        match a.op {
            AggOp::Sum => g.value += v,
            AggOp::Avg => {
                g.count += 1.0;
                if g.mean.is_infinite() {
                    if v.is_infinite() && (g.mean > 0.0) == (v > 0.0) {
                        continue;
                    }
                    if !v.is_infinite() && !v.is_nan() {
                        continue;
                    }
                }
                g.mean += v / g.count - g.mean / g.count;
            }
            AggOp::Group => {}
            AggOp::Max => {
                if g.value < v || g.value.is_nan() {
                    g.value = v;
                }
            }
            AggOp::Min => {
                if g.value > v || g.value.is_nan() {
                    g.value = v;
                }
            }
            AggOp::Count | AggOp::CountValues => g.count += 1.0,
            AggOp::Stddev | AggOp::Stdvar => {
                g.count += 1.0;
                let delta = v - g.mean;
                g.mean += delta / g.count;
                g.value += delta * (v - g.mean);
            }
            AggOp::Topk | AggOp::Bottomk => {
                let top = a.op == AggOp::Topk;
                let less = if top { less_by_value } else { greater_by_value };
                let head = g.heap[0].point.value;
                let beats = if top { head < v } else { head > v };
                if g.heap.len() < k || beats || head.is_nan() {
                    if g.heap.len() == k {
                        if k == 1 {
                            g.heap[0] = s;
                            continue;
                        }
                        heap_pop(&mut g.heap, less);
                    }
                    heap_push(&mut g.heap, s, less);
                }
            }
            AggOp::Quantile => g.heap.push(s),
        }
    }
    let mut out = Vec::with_capacity(groups.len());
    for mut g in groups {
        let value = match a.op {
            AggOp::Avg => g.mean,
            AggOp::Count | AggOp::CountValues => g.count,
            AggOp::Stdvar => g.value / g.count,
            AggOp::Stddev => (g.value / g.count).sqrt(),
            AggOp::Quantile => {
                let vals: Vec<f64> = g.heap.iter().map(|s| s.point.value).collect();
                quantile(q, vals)
            }
            AggOp::Topk | AggOp::Bottomk => {
                // Both heaps keep the sample that goes last on top; Prometheus sorts them in
                // reverse: descending for topk, ascending for bottomk, NaN last.
                let desc = a.op == AggOp::Topk;
                g.heap.sort_by(|x, y| {
                    let (x, y) = (x.point.value, y.point.value);
                    match (x.is_nan(), y.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ if desc => y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal),
                        _ => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
                    }
                });
                out.extend(g.heap.into_iter().map(|s| Sample {
                    labels: s.labels,
                    point: Point {
                        ts: t,
                        value: s.point.value,
                    },
                }));
                continue;
            }
            _ => g.value,
        };
        out.push(Sample {
            labels: g.labels,
            point: Point { ts: t, value },
        });
    }
    Ok(out)
}

/// The group a series falls in: the labels listed in `by`, or all but `__name__` and
/// those listed in `without`.
pub(crate) fn group_labels(l: &Labels, grouping: &[String], without: bool) -> Labels {
    let v: Vec<Label> = l
        .iter()
        .filter(|x| {
            if without {
                x.name != METRIC_NAME && !grouping.contains(&x.name)
            } else {
                grouping.contains(&x.name)
            }
        })
        .cloned()
        .collect();
    Labels::from_sorted(v).unwrap_or_default()
}

/// Prometheus' `vectorByValueHeap.Less`: NaN first, then ascending.
fn less_by_value(a: &Sample, b: &Sample) -> bool {
    a.point.value.is_nan() || a.point.value < b.point.value
}

/// Prometheus' `vectorByReverseValueHeap.Less`: NaN first, then descending.
fn greater_by_value(a: &Sample, b: &Sample) -> bool {
    a.point.value.is_nan() || a.point.value > b.point.value
}

/// Go's `container/heap.Push`.
fn heap_push(h: &mut Vec<Sample>, s: Sample, less: fn(&Sample, &Sample) -> bool) {
    h.push(s);
    let mut j = h.len() - 1;
    while j > 0 {
        let i = (j - 1) / 2;
        if i == j || !less(&h[j], &h[i]) {
            break;
        }
        h.swap(i, j);
        j = i;
    }
}

/// Go's `container/heap.Pop`, the removed element dropped.
fn heap_pop(h: &mut Vec<Sample>, less: fn(&Sample, &Sample) -> bool) {
    let n = h.len() - 1;
    h.swap(0, n);
    let mut i = 0;
    loop {
        let j1 = 2 * i + 1;
        if j1 >= n {
            break;
        }
        let mut j = j1;
        if j1 + 1 < n && less(&h[j1 + 1], &h[j1]) {
            j = j1 + 1;
        }
        if !less(&h[j], &h[i]) {
            break;
        }
        h.swap(i, j);
        i = j;
    }
    h.pop();
}

/// Prometheus' `quantile`: the φ-quantile of `values` with linear interpolation between
/// the two closest ranks; NaN for no values or a NaN φ, ±Inf for φ outside `[0, 1]`.
pub(crate) fn quantile(q: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| {
        if a.is_nan() && !b.is_nan() {
            std::cmp::Ordering::Less
        } else if b.is_nan() && !a.is_nan() {
            std::cmp::Ordering::Greater
        } else {
            a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal)
        }
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// A float as Go's `strconv.FormatFloat(v, 'f', -1, 64)`.
pub(crate) fn go_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// Prometheus' label name rule: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub(crate) fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
