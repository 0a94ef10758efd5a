//! Binary operators, as Prometheus 2.42's `scalarBinop`, `VectorscalarBinop`,
//! `VectorBinop`, `VectorAnd`, `VectorOr` and `VectorUnless` (`promql/engine.go`).
//!
//! - Arithmetic (`+ - * / % ^ atan2`) and comparisons (`== != > < >= <=`, filtering, or
//!   0/1 with `bool`) between scalars, a vector and a scalar, or two vectors.
//! - Vector–vector operations match series by their labels (all but `__name__`, or
//!   `on(...)`, or all but `ignoring(...)`); one-to-one unless `group_left`/`group_right`
//!   make the other side the "one", whose labels listed in the group modifier are copied.
//!   A duplicate on the "one" side is Prometheus' many-to-many error.
//! - The metric name is dropped by the arithmetic operators but `atan2`, and by `bool`
//!   comparisons; a filtering comparison keeps the left-hand sample (or the vector's, for
//!   a scalar on the left).
//! - `and`, `or`, `unless` keep whole samples by the matching signature.

use super::range::{StepSeries, unique};
use super::{LabelMap, Sample, Val, drop_name, exec_err};
use crate::error::QueryError;
use crate::parse::{BinOp, Binary, Card};
use outpost_shared::model::METRIC_NAME;
use outpost_shared::{Label, Labels, Point};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Applies `b.op` to two evaluated operands at `t`.
pub(crate) fn eval(b: &Binary, lhs: Val, rhs: Val, t: i64) -> Result<Val, QueryError> {
    match (lhs, rhs) {
        (Val::Scalar(l), Val::Scalar(r)) => Ok(Val::Scalar(scalar_binop(b.op, l, r))),
        (Val::Vector(l), Val::Scalar(r)) => Ok(Val::Vector(vector_scalar(b, l, r, false, t))),
        (Val::Scalar(l), Val::Vector(r)) => Ok(Val::Vector(vector_scalar(b, r, l, true, t))),
        (Val::Vector(l), Val::Vector(r)) => Ok(Val::Vector(match b.op {
            BinOp::And => and(b, l, r),
            BinOp::Or => or(b, l, r),
            BinOp::Unless => unless(b, l, r),
            _ => vector_vector(b, l, r, t)?,
        })),
        _ => Err(exec_err(format!(
            "binary operator {:?} between unsupported operand types",
            b.op
        ))),
    }
}

/// Whether the operator drops the metric name (Prometheus' `shouldDropMetricName`).
fn drops_name(op: BinOp) -> bool {
    matches!(
        op,
        BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Pow | BinOp::Mod
    )
}

/// `(value, keep)` as Prometheus' `vectorElemBinop`: comparisons keep the left value.
fn elem(op: BinOp, l: f64, r: f64) -> (f64, bool) {
    match op {
        BinOp::Add => (l + r, true),
        BinOp::Sub => (l - r, true),
        BinOp::Mul => (l * r, true),
        BinOp::Div => (l / r, true),
        BinOp::Pow => (l.powf(r), true),
        BinOp::Mod => (l % r, true),
        BinOp::Atan2 => (l.atan2(r), true),
        BinOp::Eq => (l, l == r),
        BinOp::Ne => (l, l != r),
        BinOp::Gt => (l, l > r),
        BinOp::Lt => (l, l < r),
        BinOp::Ge => (l, l >= r),
        BinOp::Le => (l, l <= r),
        BinOp::And | BinOp::Or | BinOp::Unless => (l, true),
    }
}

/// A binary operator between two scalars.
pub(crate) fn scalar_binop(op: BinOp, l: f64, r: f64) -> f64 {
    let (v, keep) = elem(op, l, r);
    if op.is_comparison() {
        if keep { 1.0 } else { 0.0 }
    } else {
        v
    }
}

/// The value of a vector sample `v` operated with the scalar `s` (on the left when
/// `swap`), or `None` when a comparison filters it out.
pub(crate) fn vector_scalar_value(b: &Binary, v: f64, s: f64, swap: bool) -> Option<f64> {
    let (l, r) = if swap { (s, v) } else { (v, s) };
    let (mut value, mut keep) = elem(b.op, l, r);
    if b.op.is_comparison() && swap {
        value = r;
    }
    if b.return_bool {
        value = if keep { 1.0 } else { 0.0 };
        keep = true;
    }
    keep.then_some(value)
}

/// Whether an operation between a vector and a scalar drops the metric name: arithmetic
/// and `bool` comparisons do.
pub(crate) fn vector_scalar_drops_name(b: &Binary) -> bool {
    drops_name(b.op) || b.return_bool
}

/// The labels of a vector sample operated with a scalar ([`vector_scalar_drops_name`]).
pub(crate) fn vector_scalar_labels(b: &Binary, labels: &Arc<Labels>) -> Arc<Labels> {
    if vector_scalar_drops_name(b) {
        drop_name(labels)
    } else {
        Arc::clone(labels)
    }
}

fn vector_scalar(b: &Binary, vec: Vec<Sample>, s: f64, swap: bool, t: i64) -> Vec<Sample> {
    vec.into_iter()
        .filter_map(|smp| {
            let value = vector_scalar_value(b, smp.point.value, s, swap)?;
            Some(Sample {
                labels: vector_scalar_labels(b, &smp.labels),
                point: Point { ts: t, value },
            })
        })
        .collect()
}

/// The labels a series is matched by: those listed in `on(...)`, or all but `__name__`
/// and those listed in `ignoring(...)`.
fn match_labels(b: &Binary, l: &Labels) -> Labels {
    let v: Vec<Label> = l
        .iter()
        .filter(|x| {
            if b.on {
                b.matching.contains(&x.name)
            } else {
                x.name != METRIC_NAME && !b.matching.contains(&x.name)
            }
        })
        .cloned()
        .collect();
    Labels::from_sorted(v).unwrap_or_default()
}

/// Labels as Prometheus' `labels.Labels.String()`: `{__name__="x", a="1"}`.
pub(crate) fn prom_string(l: &Labels) -> String {
    let parts: Vec<String> = l
        .iter()
        .map(|x| format!("{}={:?}", x.name, x.value))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// Prometheus' `resultMetric`: the "many" side's labels, minus the name for arithmetic,
/// reduced to the matching labels for one-to-one, plus the group modifier's labels from
/// the "one" side.
fn result_metric(b: &Binary, many: &Labels, one: &Labels) -> Labels {
    let mut v: Vec<Label> = many
        .iter()
        .filter(|x| !(drops_name(b.op) && x.name == METRIC_NAME))
        .filter(|x| {
            if b.card != Card::OneToOne {
                true
            } else if b.on {
                b.matching.contains(&x.name)
            } else {
                !b.matching.contains(&x.name)
            }
        })
        .cloned()
        .collect();
    for name in &b.include {
        v.retain(|x| &x.name != name);
        if let Some(val) = one.get(name).filter(|v| !v.is_empty()) {
            v.push(Label {
                name: name.clone(),
                value: val.to_string(),
            });
        }
    }
    v.sort();
    Labels::from_sorted(v).unwrap_or_default()
}

fn vector_vector(
    b: &Binary,
    lhs: Vec<Sample>,
    rhs: Vec<Sample>,
    t: i64,
) -> Result<Vec<Sample>, QueryError> {
    // As Prometheus: nothing can match when a side is empty, so no duplicate check either.
    if lhs.is_empty() || rhs.is_empty() {
        return Ok(vec![]);
    }
    let swapped = b.card == Card::OneToMany;
    let (many, one) = if swapped { (rhs, lhs) } else { (lhs, rhs) };
    let mut one_sigs: HashMap<Labels, &Sample> = HashMap::with_capacity(one.len());
    for rs in &one {
        let sig = match_labels(b, &rs.labels);
        if let Some(dup) = one_sigs.get(&sig) {
            let side = if swapped { "left" } else { "right" };
            return Err(exec_err(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                prom_string(&sig),
                prom_string(&rs.labels),
                prom_string(&dup.labels)
            )));
        }
        one_sigs.insert(sig, rs);
    }
    let mut matched: HashMap<Labels, HashSet<Arc<Labels>>> = HashMap::new();
    let mut out = Vec::new();
    for ls in &many {
        let sig = match_labels(b, &ls.labels);
        let Some(rs) = one_sigs.get(&sig) else {
            continue;
        };
        let (vl, vr) = if swapped {
            (rs.point.value, ls.point.value)
        } else {
            (ls.point.value, rs.point.value)
        };
        let (mut value, keep) = elem(b.op, vl, vr);
        if b.return_bool {
            value = if keep { 1.0 } else { 0.0 };
        } else if !keep {
            continue;
        }
        let mut metric = Arc::new(result_metric(b, &ls.labels, &rs.labels));
        if b.return_bool {
            metric = drop_name(&metric);
        }
        match b.card {
            Card::OneToOne => {
                if matched.insert(sig, HashSet::new()).is_some() {
                    return Err(exec_err(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                    ));
                }
            }
            _ => {
                if !matched.entry(sig).or_default().insert(metric.clone()) {
                    return Err(exec_err(
                        "multiple matches for labels: grouping labels must ensure unique matches",
                    ));
                }
            }
        }
        out.push(Sample {
            labels: metric,
            point: Point { ts: t, value },
        });
    }
    Ok(out)
}

fn and(b: &Binary, lhs: Vec<Sample>, rhs: Vec<Sample>) -> Vec<Sample> {
    let right: HashSet<Labels> = rhs.iter().map(|s| match_labels(b, &s.labels)).collect();
    lhs.into_iter()
        .filter(|s| right.contains(&match_labels(b, &s.labels)))
        .collect()
}

fn or(b: &Binary, mut lhs: Vec<Sample>, rhs: Vec<Sample>) -> Vec<Sample> {
    let left: HashSet<Labels> = lhs.iter().map(|s| match_labels(b, &s.labels)).collect();
    lhs.extend(
        rhs.into_iter()
            .filter(|s| !left.contains(&match_labels(b, &s.labels))),
    );
    lhs
}

fn unless(b: &Binary, lhs: Vec<Sample>, rhs: Vec<Sample>) -> Vec<Sample> {
    let right: HashSet<Labels> = rhs.iter().map(|s| match_labels(b, &s.labels)).collect();
    lhs.into_iter()
        .filter(|s| !right.contains(&match_labels(b, &s.labels)))
        .collect()
}

/// Each series' matching signature ([`match_labels`]) as a small number, for the left and
/// the right operand, and how many signatures there are.
fn signatures(b: &Binary, lhs: &[StepSeries], rhs: &[StepSeries]) -> [Vec<usize>; 2] {
    let mut ids: LabelMap<Labels, usize> = LabelMap::default();
    let mut sig = |s: &StepSeries| {
        let n = ids.len();
        *ids.entry(match_labels(b, &s.labels)).or_insert(n)
    };
    let l = lhs.iter().map(&mut sig).collect();
    let r = rhs.iter().map(&mut sig).collect();
    [l, r]
}

/// Which signatures have a series with a value, by signature and step.
fn presence(sigs: &[usize], series: &[StepSeries], n_sigs: usize, len: usize) -> Vec<bool> {
    let mut present = vec![false; n_sigs * len];
    for (s, &sig) in series.iter().zip(sigs) {
        let row = &mut present[sig * len..(sig + 1) * len];
        for (p, v) in row.iter_mut().zip(&s.values) {
            *p |= v.is_some();
        }
    }
    present
}

/// A binary operator between two vectors at every step of `len`, series by series: the
/// signatures and result labels are worked out once per series (or pair of series).
/// `None` when some step fails (many-to-many matching, multiple matches, or a label set
/// twice in the output): the caller then evaluates step by step, which fails as
/// Prometheus does at the first such step.
pub(crate) fn vector_vector_range(
    b: &Binary,
    lhs: &[StepSeries],
    rhs: &[StepSeries],
    len: usize,
) -> Option<Vec<StepSeries>> {
    let [lsigs, rsigs] = signatures(b, lhs, rhs);
    let n_sigs = lsigs.iter().chain(&rsigs).max().map_or(0, |m| m + 1);
    let keep_where = |sigs: &[usize], series: &[StepSeries], present: &[bool], want: bool| {
        series
            .iter()
            .zip(sigs)
            .map(|(s, &sig)| StepSeries {
                labels: Arc::clone(&s.labels),
                values: s
                    .values
                    .iter()
                    .zip(&present[sig * len..(sig + 1) * len])
                    .map(|(v, &p)| v.filter(|_| p == want))
                    .collect(),
            })
            .filter(|s| s.values.iter().any(Option::is_some))
            .collect::<Vec<_>>()
    };
    match b.op {
        BinOp::And => {
            let present = presence(&rsigs, rhs, n_sigs, len);
            return Some(keep_where(&lsigs, lhs, &present, true));
        }
        BinOp::Unless => {
            let present = presence(&rsigs, rhs, n_sigs, len);
            return Some(keep_where(&lsigs, lhs, &present, false));
        }
        BinOp::Or => {
            let present = presence(&lsigs, lhs, n_sigs, len);
            let mut out = keep_where(&lsigs, lhs, &present, true);
            out.extend(keep_where(&rsigs, rhs, &present, false));
            return unique(out).ok();
        }
        _ => {}
    }
    let swapped = b.card == Card::OneToMany;
    let (many, one, msigs, osigs) = if swapped {
        (rhs, lhs, &rsigs, &lsigs)
    } else {
        (lhs, rhs, &lsigs, &rsigs)
    };
    // The "one" side's series by signature; two with a value at the same step fail.
    let mut by_sig: Vec<Vec<usize>> = vec![Vec::new(); n_sigs];
    for (j, &sig) in osigs.iter().enumerate() {
        by_sig[sig].push(j);
    }
    for js in by_sig.iter().filter(|js| js.len() > 1) {
        let mut seen = vec![false; len];
        for &j in js {
            for (seen, v) in seen.iter_mut().zip(&one[j].values) {
                if v.is_some() && std::mem::replace(seen, true) {
                    return None;
                }
            }
        }
    }
    // One-to-one: a signature matched twice at a step fails.
    let mut matched = vec![
        false;
        if b.card == Card::OneToOne {
            n_sigs * len
        } else {
            0
        }
    ];
    let mut index: LabelMap<Arc<Labels>, usize> = LabelMap::default();
    let mut out: Vec<StepSeries> = Vec::new();
    for (ls, &sig) in many.iter().zip(msigs) {
        for &j in &by_sig[sig] {
            let rs = &one[j];
            let mut o = None;
            for (i, (lv, rv)) in ls.values.iter().zip(&rs.values).enumerate() {
                let (Some(lv), Some(rv)) = (*lv, *rv) else {
                    continue;
                };
                let (vl, vr) = if swapped { (rv, lv) } else { (lv, rv) };
                let (mut value, keep) = elem(b.op, vl, vr);
                if b.return_bool {
                    value = if keep { 1.0 } else { 0.0 };
                } else if !keep {
                    continue;
                }
                if b.card == Card::OneToOne && std::mem::replace(&mut matched[sig * len + i], true)
                {
                    return None;
                }
                let o = *o.get_or_insert_with(|| {
                    let mut metric = Arc::new(result_metric(b, &ls.labels, &rs.labels));
                    if b.return_bool {
                        metric = drop_name(&metric);
                    }
                    *index.entry(metric).or_insert_with_key(|metric| {
                        out.push(StepSeries {
                            labels: Arc::clone(metric),
                            values: vec![None; len],
                        });
                        out.len() - 1
                    })
                });
                // The same labels twice at a step: multiple matches or a duplicate set.
                if out[o].values[i].replace(value).is_some() {
                    return None;
                }
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use crate::eval::testing::{T, check_instant, instant, range};
    use crate::memory::MemStorage;
    use outpost_shared::Labels;

    fn source() -> MemStorage {
        let at = |v: f64| [(T - 10_000, v)];
        MemStorage::default()
            .with(
                Labels::metric("a", [("job", "x"), ("inst", "1")]),
                &at(10.0),
            )
            .with(
                Labels::metric("a", [("job", "x"), ("inst", "2")]),
                &at(20.0),
            )
            .with(Labels::metric("b", [("job", "x"), ("inst", "1")]), &at(2.0))
            .with(Labels::metric("b", [("job", "x"), ("inst", "2")]), &at(4.0))
            .with(Labels::metric("c", [("job", "x")]), &at(5.0))
            .with(Labels::metric("c", [("job", "y")]), &at(7.0))
            .with(
                Labels::metric("d", [("job", "x"), ("tier", "web")]),
                &at(1.0),
            )
    }

    #[test]
    fn scalar_scalar() {
        check_instant(
            &source(),
            T,
            &[
                ("1 + 2 * 3", &["scalar 7@0"]),
                ("2 ^ 3 ^ 2", &["scalar 512@0"]),
                ("(1 + 2) * -3", &["scalar -9@0"]),
                ("5 % 3", &["scalar 2@0"]),
                ("-5 % 3", &["scalar -2@0"]),
                ("5 % 0", &["scalar NaN@0"]),
                ("1 / 0", &["scalar inf@0"]),
                ("-1 / 0", &["scalar -inf@0"]),
                ("0 / 0", &["scalar NaN@0"]),
                ("1 > bool 2", &["scalar 0@0"]),
                ("2 >= bool 2", &["scalar 1@0"]),
                ("NaN == bool NaN", &["scalar 0@0"]),
                ("NaN != bool NaN", &["scalar 1@0"]),
                ("1 atan2 1", &["scalar 0.7853981633974483@0"]),
            ],
        );
    }

    #[test]
    fn vector_scalar() {
        check_instant(
            &source(),
            T,
            &[
                // Arithmetic drops the name; the sample takes the evaluation time.
                (
                    "a * 2",
                    &[r#"{inst="1", job="x"} 20@0"#, r#"{inst="2", job="x"} 40@0"#],
                ),
                (
                    "2 - a",
                    &[
                        r#"{inst="1", job="x"} -8@0"#,
                        r#"{inst="2", job="x"} -18@0"#,
                    ],
                ),
                (
                    "-a",
                    &[
                        r#"{inst="1", job="x"} -10@0"#,
                        r#"{inst="2", job="x"} -20@0"#,
                    ],
                ),
                // A filter keeps the name and the vector's value, whichever side it is on.
                ("a > 15", &[r#"a{inst="2", job="x"} 20@0"#]),
                ("15 < a", &[r#"a{inst="2", job="x"} 20@0"#]),
                ("a == 7", &[]),
                // `bool` drops the name and keeps every sample as 0 or 1.
                (
                    "a > bool 15",
                    &[r#"{inst="1", job="x"} 0@0"#, r#"{inst="2", job="x"} 1@0"#],
                ),
                (
                    "a atan2 0",
                    &[
                        r#"a{inst="1", job="x"} 1.5707963267948966@0"#,
                        r#"a{inst="2", job="x"} 1.5707963267948966@0"#,
                    ],
                ),
                ("nothing + 1", &[]),
            ],
        );
    }

    #[test]
    fn vector_vector() {
        let src = source();
        check_instant(
            &src,
            T,
            &[
                // One-to-one on all labels but the name.
                (
                    "a / b",
                    &[r#"{inst="1", job="x"} 5@0"#, r#"{inst="2", job="x"} 5@0"#],
                ),
                (
                    "a > b",
                    &[
                        r#"a{inst="1", job="x"} 10@0"#,
                        r#"a{inst="2", job="x"} 20@0"#,
                    ],
                ),
                ("a < b", &[]),
                (
                    "a < bool b",
                    &[r#"{inst="1", job="x"} 0@0"#, r#"{inst="2", job="x"} 0@0"#],
                ),
                ("a + c", &[]),
                // on(): the result keeps only the matching labels.
                ("a{inst=\"1\"} - on(job) c", &[r#"{job="x"} 5@0"#]),
                ("a{inst=\"1\"} - ignoring(inst) c", &[r#"{job="x"} 5@0"#]),
                // group_left: the many side's labels; group_right the same from the right.
                (
                    "a / on(job) group_left c",
                    &[r#"{inst="1", job="x"} 2@0"#, r#"{inst="2", job="x"} 4@0"#],
                ),
                (
                    "a + ignoring(inst) group_left c",
                    &[r#"{inst="1", job="x"} 15@0"#, r#"{inst="2", job="x"} 25@0"#],
                ),
                (
                    "c / on(job) group_right a",
                    &[
                        r#"{inst="1", job="x"} 0.5@0"#,
                        r#"{inst="2", job="x"} 0.25@0"#,
                    ],
                ),
                // A filtering comparison with group_right keeps the left value.
                (
                    "c < on(job) group_right a",
                    &[r#"a{inst="1", job="x"} 5@0"#, r#"a{inst="2", job="x"} 5@0"#],
                ),
                // Labels listed in the group modifier are copied from the "one" side.
                (
                    "a * on(job) group_left(tier) d",
                    &[
                        r#"{inst="1", job="x", tier="web"} 10@0"#,
                        r#"{inst="2", job="x", tier="web"} 20@0"#,
                    ],
                ),
                // Prometheus' errors.
                (
                    "a / on(job) c",
                    &[
                        "error: multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                    ],
                ),
                (
                    "c / on(job) a",
                    &[
                        r#"error: found duplicate series for the match group {job="x"} on the right hand-side of the operation: [{__name__="a", inst="2", job="x"}, {__name__="a", inst="1", job="x"}];many-to-many matching not allowed: matching labels must be unique on one side"#,
                    ],
                ),
                (
                    "a / on(job) group_right c",
                    &[
                        r#"error: found duplicate series for the match group {job="x"} on the left hand-side of the operation: [{__name__="a", inst="2", job="x"}, {__name__="a", inst="1", job="x"}];many-to-many matching not allowed: matching labels must be unique on one side"#,
                    ],
                ),
                (
                    r#"{__name__=~"a|b"} + on(job) group_left c"#,
                    &[
                        r#"error: multiple matches for labels: grouping labels must ensure unique matches"#,
                    ],
                ),
                (
                    r#"{__name__=~"a|b"} * 1"#,
                    &["error: vector cannot contain metrics with the same labelset"],
                ),
            ],
        );
        // Without the group modifier the result is one series per match group: fine here.
        assert_eq!(
            instant(&src, "a{inst=\"2\"} + on(job) c", T),
            [r#"{job="x"} 25@0"#]
        );
    }

    #[test]
    fn set_operators() {
        check_instant(
            &source(),
            T,
            &[
                (
                    "a and b",
                    &[
                        r#"a{inst="1", job="x"} 10@0"#,
                        r#"a{inst="2", job="x"} 20@0"#,
                    ],
                ),
                ("a and b{inst=\"1\"}", &[r#"a{inst="1", job="x"} 10@0"#]),
                (
                    "a and on(job) c",
                    &[
                        r#"a{inst="1", job="x"} 10@0"#,
                        r#"a{inst="2", job="x"} 20@0"#,
                    ],
                ),
                ("a and c", &[]),
                ("a unless b{inst=\"1\"}", &[r#"a{inst="2", job="x"} 20@0"#]),
                ("a unless on(job) c", &[]),
                (
                    "a or c",
                    &[
                        r#"a{inst="1", job="x"} 10@0"#,
                        r#"a{inst="2", job="x"} 20@0"#,
                        r#"c{job="x"} 5@0"#,
                        r#"c{job="y"} 7@0"#,
                    ],
                ),
                (
                    "a or on(job) c",
                    &[
                        r#"a{inst="1", job="x"} 10@0"#,
                        r#"a{inst="2", job="x"} 20@0"#,
                        r#"c{job="y"} 7@0"#,
                    ],
                ),
                ("nothing or b{inst=\"2\"}", &[r#"b{inst="2", job="x"} 4@0"#]),
            ],
        );
    }

    #[test]
    fn range_queries_step_binary_operators() {
        let src = MemStorage::default()
            .with(
                Labels::metric("m", [("k", "v")]),
                &[(T, 1.0), (T + 60_000, 2.0)],
            )
            .with(Labels::metric("n", [("k", "v")]), &[(T + 60_000, 10.0)]);
        assert_eq!(
            range(&src, "m + n", T, T + 120_000, 60_000),
            [r#"{k="v"} [12@60000 12@120000]"#]
        );
        assert_eq!(
            range(&src, "m * 2 > 3", T, T + 120_000, 60_000),
            [r#"{k="v"} [4@60000 4@120000]"#]
        );
        assert_eq!(
            range(&src, "1 + 1", T, T + 60_000, 60_000),
            ["{} [2@0 2@60000]"]
        );
    }
}
