//! Helpers shared by the evaluator's unit tests: a compact rendering of results and
//! one-line query runners.

use super::{Value, instant_query, range_query};
use crate::memory::MemStorage;
use crate::parse::parse;
use crate::steps::Steps;

/// The reference time of the tests (ms).
pub(crate) const T: i64 = 1_700_000_000_000;

/// `name{labels} value@ts` per sample or point (times relative to [`T`]), for compact
/// assertions.
pub(crate) fn show(v: &Value) -> Vec<String> {
    match v {
        Value::Vector(s) => s
            .iter()
            .map(|s| format!("{} {}@{}", s.labels, s.point.value, s.point.ts - T))
            .collect(),
        Value::Matrix(m) => m
            .iter()
            .map(|s| {
                let pts: Vec<String> = s
                    .points
                    .iter()
                    .map(|p| format!("{}@{}", p.value, p.ts - T))
                    .collect();
                format!("{} [{}]", s.labels, pts.join(" "))
            })
            .collect(),
        Value::Scalar(p) => vec![format!("scalar {}@{}", p.value, p.ts - T)],
        Value::String { ts, value } => vec![format!("string {value:?}@{}", ts - T)],
    }
}

/// An instant query at `t`, rendered by [`show`]; an error renders as `error: ...`.
pub(crate) fn instant(src: &MemStorage, q: &str, t: i64) -> Vec<String> {
    let expr = parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
    match instant_query(src, &expr, t) {
        Ok(v) => show(&v),
        Err(e) => vec![format!("error: {e}")],
    }
}

/// A range query, rendered by [`show`]; an error renders as `error: ...`.
pub(crate) fn range(src: &MemStorage, q: &str, start: i64, end: i64, step: i64) -> Vec<String> {
    let expr = parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
    let steps = Steps::new(start, end, step).expect("steps");
    match range_query(src, &expr, &steps) {
        Ok(v) => show(&v),
        Err(e) => vec![format!("error: {e}")],
    }
}

/// Runs table cases `(query, expected lines)` as instant queries at `t`.
pub(crate) fn check_instant(src: &MemStorage, t: i64, cases: &[(&str, &[&str])]) {
    for (q, want) in cases {
        assert_eq!(instant(src, q, t), *want, "{q}");
    }
}
