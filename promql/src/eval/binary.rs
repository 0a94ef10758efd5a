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

use super::{Sample, Val, drop_name, exec_err};
use crate::error::QueryError;
use crate::parse::{BinOp, Binary, Card};
use outpost_shared::model::METRIC_NAME;
use outpost_shared::{Label, Labels, Point};
use std::collections::{HashMap, HashSet};

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

fn scalar_binop(op: BinOp, l: f64, r: f64) -> f64 {
    let (v, keep) = elem(op, l, r);
    if op.is_comparison() {
        if keep { 1.0 } else { 0.0 }
    } else {
        v
    }
}

fn vector_scalar(b: &Binary, vec: Vec<Sample>, s: f64, swap: bool, t: i64) -> Vec<Sample> {
    vec.into_iter()
        .filter_map(|smp| {
            let (l, r) = if swap {
                (s, smp.point.value)
            } else {
                (smp.point.value, s)
            };
            let (mut value, mut keep) = elem(b.op, l, r);
            if b.op.is_comparison() && swap {
                value = r;
            }
            if b.return_bool {
                value = if keep { 1.0 } else { 0.0 };
                keep = true;
            }
            keep.then(|| Sample {
                labels: if drops_name(b.op) || b.return_bool {
                    drop_name(&smp.labels)
                } else {
                    smp.labels
                },
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
    let mut matched: HashMap<Labels, HashSet<Labels>> = HashMap::new();
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
        let mut metric = result_metric(b, &ls.labels, &rs.labels);
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
