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

use super::{LabelMap, Sample, Val, exec_err};
use crate::error::QueryError;
use crate::parse::{AggOp, Aggregate};
use outpost_shared::model::METRIC_NAME;
use outpost_shared::{Label, Labels, Point};
use std::sync::Arc;

struct Group {
    labels: Labels,
    acc: Acc,
    heap: Vec<Sample>,
}

/// The running state of one group at one step for `sum`, `avg`, `min`, `max`, `count`,
/// `group`, `stddev`, `stdvar` and `count_values` (Prometheus' `groupedAggregation`);
/// `count == 0` before the first sample.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Acc {
    value: f64,
    mean: f64,
    count: f64,
}

impl Acc {
    /// The state after the group's first sample `v`.
    pub(crate) fn first(op: AggOp, v: f64) -> Self {
        Acc {
            value: match op {
                AggOp::Stddev | AggOp::Stdvar => 0.0,
                AggOp::Group => 1.0,
                _ => v,
            },
            mean: v,
            count: 1.0,
        }
    }

    /// Adds the sample `v`: the first one (see [`Acc::first`]) or a later one.
    pub(crate) fn add(&mut self, op: AggOp, v: f64) {
        if self.count == 0.0 {
            *self = Acc::first(op, v);
            return;
        }
        match op {
            AggOp::Sum => self.value += v,
            AggOp::Avg => {
                self.count += 1.0;
                if self.mean.is_infinite() {
                    if v.is_infinite() && (self.mean > 0.0) == (v > 0.0) {
                        return;
                    }
                    if !v.is_infinite() && !v.is_nan() {
                        return;
                    }
                }
                self.mean += v / self.count - self.mean / self.count;
            }
            AggOp::Max => {
                if self.value < v || self.value.is_nan() {
                    self.value = v;
                }
            }
            AggOp::Min => {
                if self.value > v || self.value.is_nan() {
                    self.value = v;
                }
            }
            AggOp::Count | AggOp::CountValues => self.count += 1.0,
            AggOp::Stddev | AggOp::Stdvar => {
                self.count += 1.0;
                let delta = v - self.mean;
                self.mean += delta / self.count;
                self.value += delta * (v - self.mean);
            }
            AggOp::Group | AggOp::Topk | AggOp::Bottomk | AggOp::Quantile => {}
        }
    }

    /// The state of a `count` or `group` after `n` samples (`n` > 0), whatever their
    /// values.
    pub(crate) fn counted(op: AggOp, n: u32) -> Self {
        Acc {
            count: f64::from(n),
            ..Acc::first(op, 1.0)
        }
    }

    /// Whether a sample was added.
    pub(crate) fn is_set(&self) -> bool {
        self.count != 0.0
    }

    /// The group's value.
    pub(crate) fn result(&self, op: AggOp) -> f64 {
        match op {
            AggOp::Avg => self.mean,
            AggOp::Count | AggOp::CountValues => self.count,
            AggOp::Stdvar => self.value / self.count,
            AggOp::Stddev => (self.value / self.count).sqrt(),
            _ => self.value,
        }
    }
}

/// Whether [`Acc`] computes `op` (no parameter, no per-sample heap).
pub(crate) fn is_accumulated(op: AggOp) -> bool {
    matches!(
        op,
        AggOp::Sum
            | AggOp::Avg
            | AggOp::Max
            | AggOp::Min
            | AggOp::Count
            | AggOp::Group
            | AggOp::Stddev
            | AggOp::Stdvar
    )
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
        match top_k(param.as_ref().map_or(f64::NAN, Val::scalar))? {
            Some(n) => k = n,
            None => return Ok(Vec::new()),
        }
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
    let mut index: LabelMap<Labels, usize> = LabelMap::default();
    let mut groups: Vec<Group> = Vec::new();
    for s in input {
        let v = s.point.value;
        let key = if a.op == AggOp::CountValues {
            let metric = s.labels.with(&value_label, &go_float(v));
            group_labels(&metric, &grouping, a.without)
        } else {
            group_labels(&s.labels, &grouping, a.without)
        };
        let Some(&gi) = index.get(&key) else {
            index.insert(key.clone(), groups.len());
            groups.push(Group {
                labels: key,
                acc: Acc::first(a.op, v),
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
            AggOp::Topk | AggOp::Bottomk => offer(&mut g.heap, s, k, a.op == AggOp::Topk),
            AggOp::Quantile => g.heap.push(s),
            op => g.acc.add(op, v),
        }
    }
    let mut out = Vec::with_capacity(groups.len());
    for mut g in groups {
        let value = match a.op {
            AggOp::Quantile => {
                let vals: Vec<f64> = g.heap.iter().map(|s| s.point.value).collect();
                quantile(q, vals)
            }
            AggOp::Topk | AggOp::Bottomk => {
                // Both heaps keep the sample that goes last on top; Prometheus sorts them in
                // reverse: descending for topk, ascending for bottomk, NaN last.
                let desc = a.op == AggOp::Topk;
                g.heap
                    .sort_by(|x, y| super::by_value_nan_last(x.point.value, y.point.value, desc));
                out.extend(g.heap.into_iter().map(|s| Sample {
                    labels: s.labels,
                    point: Point {
                        ts: t,
                        value: s.point.value,
                    },
                }));
                continue;
            }
            op => g.acc.result(op),
        };
        out.push(Sample {
            labels: Arc::new(g.labels),
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

/// Something `topk` and `bottomk` rank by its value.
pub(crate) trait Ranked {
    /// The value ranked by.
    fn rank_value(&self) -> f64;
}

impl Ranked for Sample {
    fn rank_value(&self) -> f64 {
        self.point.value
    }
}

impl Ranked for (f64, usize) {
    fn rank_value(&self) -> f64 {
        self.0
    }
}

/// Prometheus' `vectorByValueHeap.Less`: NaN first, then ascending.
fn less_by_value<T: Ranked>(a: &T, b: &T) -> bool {
    a.rank_value().is_nan() || a.rank_value() < b.rank_value()
}

/// Prometheus' `vectorByReverseValueHeap.Less`: NaN first, then descending.
fn greater_by_value<T: Ranked>(a: &T, b: &T) -> bool {
    a.rank_value().is_nan() || a.rank_value() > b.rank_value()
}

/// Offers `s` to a `topk` (`top`) or `bottomk` group's heap of at most `k` that already
/// holds its first sample, as Prometheus' `aggregation` does.
pub(crate) fn offer<T: Ranked>(heap: &mut Vec<T>, s: T, k: usize, top: bool) {
    let less = if top {
        less_by_value::<T>
    } else {
        greater_by_value::<T>
    };
    let (head, v) = (heap[0].rank_value(), s.rank_value());
    let beats = if top { head < v } else { head > v };
    if heap.len() < k || beats || head.is_nan() {
        if heap.len() == k {
            if k == 1 {
                heap[0] = s;
                return;
            }
            heap_pop(heap, less);
        }
        heap_push(heap, s, less);
    }
}

/// The `k` of `topk`/`bottomk` from its parameter: `Ok(None)` when below 1 (no output).
///
/// # Errors
/// Prometheus' error for a parameter outside the range of an `int64`.
pub(crate) fn top_k(f: f64) -> Result<Option<usize>, QueryError> {
    if !(f >= i64::MIN as f64 && f <= i64::MAX as f64) {
        return Err(exec_err(format!(
            "Scalar value {} overflows int64",
            go_float(f)
        )));
    }
    let ki = f as i64;
    if ki < 1 {
        return Ok(None);
    }
    Ok(Some(usize::try_from(ki).unwrap_or(usize::MAX)))
}

/// Go's `container/heap.Push`.
fn heap_push<T>(h: &mut Vec<T>, s: T, less: fn(&T, &T) -> bool) {
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
fn heap_pop<T>(h: &mut Vec<T>, less: fn(&T, &T) -> bool) {
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

#[cfg(test)]
mod tests {
    use crate::eval::testing::{T, check_instant, range};
    use crate::memory::MemStorage;
    use outpost_shared::Labels;

    fn source() -> MemStorage {
        let at = |v: f64| [(T - 10_000, v)];
        MemStorage::default()
            .with(Labels::metric("x", [("job", "a"), ("i", "1")]), &at(1.0))
            .with(Labels::metric("x", [("job", "a"), ("i", "2")]), &at(2.0))
            .with(Labels::metric("x", [("job", "a"), ("i", "3")]), &at(3.0))
            .with(Labels::metric("x", [("job", "b"), ("i", "4")]), &at(10.0))
            .with(Labels::metric("y", [("i", "1")]), &at(f64::NAN))
            .with(Labels::metric("y", [("i", "2")]), &at(1.0))
            .with(Labels::metric("y", [("i", "3")]), &at(f64::INFINITY))
            .with(Labels::metric("z", [("i", "1")]), &at(0.5))
            .with(Labels::metric("z", [("i", "2")]), &at(0.5))
            .with(Labels::metric("z", [("i", "3")]), &at(f64::NEG_INFINITY))
    }

    #[test]
    fn aggregations() {
        check_instant(
            &source(),
            T,
            &[
                ("sum(x)", &["{} 16@0"]),
                (
                    "sum by (job) (x)",
                    &[r#"{job="a"} 6@0"#, r#"{job="b"} 10@0"#],
                ),
                (
                    "sum without (i) (x)",
                    &[r#"{job="a"} 6@0"#, r#"{job="b"} 10@0"#],
                ),
                // `by` may keep the name; `without` never does.
                ("sum by (__name__) (x)", &["x{} 16@0"]),
                ("sum without () (x{i=\"1\"})", &[r#"{i="1", job="a"} 1@0"#]),
                ("sum(nothing)", &[]),
                (
                    "avg by (job) (x)",
                    &[r#"{job="a"} 2@0"#, r#"{job="b"} 10@0"#],
                ),
                (
                    "count without (i) (x)",
                    &[r#"{job="a"} 3@0"#, r#"{job="b"} 1@0"#],
                ),
                (
                    "min by (job) (x)",
                    &[r#"{job="a"} 1@0"#, r#"{job="b"} 10@0"#],
                ),
                ("max(x)", &["{} 10@0"]),
                (
                    "group by (job) (x)",
                    &[r#"{job="a"} 1@0"#, r#"{job="b"} 1@0"#],
                ),
                // Population variance of 1, 2, 3: 2/3.
                (
                    "stdvar by (job) (x)",
                    &[r#"{job="a"} 0.6666666666666666@0"#, r#"{job="b"} 0@0"#],
                ),
                (
                    "stddev by (job) (x)",
                    &[r#"{job="a"} 0.816496580927726@0"#, r#"{job="b"} 0@0"#],
                ),
                // NaN and Inf: min/max skip a NaN, sum and avg take Inf.
                ("max(y)", &["{} inf@0"]),
                ("min(y)", &["{} 1@0"]),
                ("sum(y)", &["{} NaN@0"]),
                ("avg(y{i!=\"1\"})", &["{} inf@0"]),
                ("avg(y{i!=\"1\"} or z)", &["{} inf@0"]),
                (r#"avg({__name__=~"y|z", i="3"})"#, &["{} NaN@0"]),
                ("avg(z)", &["{} -inf@0"]),
                // topk/bottomk keep whole samples, in order; NaN goes last.
                (
                    "topk(2, x)",
                    &[r#"x{i="4", job="b"} 10@0"#, r#"x{i="3", job="a"} 3@0"#],
                ),
                (
                    "bottomk by (job) (1, x)",
                    &[r#"x{i="1", job="a"} 1@0"#, r#"x{i="4", job="b"} 10@0"#],
                ),
                ("topk(0, x)", &[]),
                (
                    "topk(3, y)",
                    &[r#"y{i="3"} inf@0"#, r#"y{i="2"} 1@0"#, r#"y{i="1"} NaN@0"#],
                ),
                ("bottomk(1, y)", &[r#"y{i="2"} 1@0"#]),
                ("topk(NaN, x)", &["error: Scalar value NaN overflows int64"]),
                // quantile: linear interpolation between ranks.
                ("quantile(0.5, x)", &["{} 2.5@0"]),
                (
                    "quantile by (job) (0.25, x)",
                    &[r#"{job="a"} 1.5@0"#, r#"{job="b"} 10@0"#],
                ),
                ("quantile(1, x)", &["{} 10@0"]),
                ("quantile(-1, x)", &["{} -inf@0"]),
                ("quantile(2, x)", &["{} inf@0"]),
                // count_values: one series per distinct value, in a new label.
                (
                    "count_values(\"v\", z)",
                    &[r#"{v="0.5"} 2@0"#, r#"{v="-Inf"} 1@0"#],
                ),
                (
                    "count_values without (i) (\"v\", x)",
                    &[
                        r#"{job="a", v="1"} 1@0"#,
                        r#"{job="a", v="2"} 1@0"#,
                        r#"{job="a", v="3"} 1@0"#,
                        r#"{job="b", v="10"} 1@0"#,
                    ],
                ),
                (
                    "count_values(\"1x\", x)",
                    &[r#"error: invalid label name "1x""#],
                ),
                // Aggregations of expressions.
                ("sum(x * 2) / count(x)", &["{} 8@0"]),
            ],
        );
    }

    #[test]
    fn range_queries_aggregate_each_step() {
        let src = MemStorage::default()
            .with(
                Labels::metric("m", [("k", "1")]),
                &[(T, 1.0), (T + 60_000, 2.0)],
            )
            .with(Labels::metric("m", [("k", "2")]), &[(T + 60_000, 10.0)]);
        assert_eq!(
            range(&src, "sum(m)", T, T + 120_000, 60_000),
            ["{} [1@0 12@60000 12@120000]"]
        );
        assert_eq!(
            range(&src, "topk(1, m)", T, T + 120_000, 60_000),
            [r#"m{k="1"} [1@0]"#, r#"m{k="2"} [10@60000 10@120000]"#]
        );
    }
}
