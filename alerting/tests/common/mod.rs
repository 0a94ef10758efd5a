//! A store for rule tests: series that rule output is appended to, read back through the
//! PromQL engine over `MemStorage`, and promtool's series notation for input.

#![allow(dead_code, unreachable_pub)]

pub mod alertmanager;

use outpost_alerting::{SeriesSample, engine_query};
use outpost_promql::memory::MemStorage;
use outpost_promql::{MatchOp, Sample, parse_series_selector};
use outpost_shared::Labels;
use outpost_shared::model::stale_nan;
use std::cell::RefCell;
use std::collections::BTreeMap;

/// Series by labels, points by time (a later write at the same time wins).
#[derive(Default)]
pub struct Store {
    pub series: RefCell<BTreeMap<Labels, BTreeMap<i64, f64>>>,
}

impl Store {
    pub fn add(&self, labels: Labels, ts: i64, value: f64) {
        self.series
            .borrow_mut()
            .entry(labels)
            .or_default()
            .insert(ts, value);
    }

    fn mem(&self) -> MemStorage {
        let mut m = MemStorage::default();
        for (l, pts) in self.series.borrow().iter() {
            let pts: Vec<(i64, f64)> = pts.iter().map(|(t, v)| (*t, *v)).collect();
            m = m.with(l.clone(), &pts);
        }
        m
    }

    /// Evaluates `expr` at `t_ms` over everything written so far.
    pub fn query(&self, expr: &str, t_ms: i64) -> Result<Vec<Sample>, String> {
        let m = self.mem();
        let q = engine_query(&m);
        q(expr, t_ms)
    }

    pub fn append(&self, samples: &[SeriesSample]) -> Result<(), String> {
        for s in samples {
            self.add(s.labels.clone(), s.ts, s.value);
        }
        Ok(())
    }

    /// Loads a series in promtool's notation (`up{job="a"}`, `1 2 _ stale 0+1x3`), one
    /// value every `step_ms` from 0.
    pub fn load(&self, series: &str, values: &str, step_ms: i64) {
        let labels = series_labels(series);
        for (i, v) in expand_values(values).into_iter().enumerate() {
            if let Some(v) = v {
                self.add(labels.clone(), i as i64 * step_ms, v);
            }
        }
    }
}

/// The labels of a series written as a selector with `=` matchers only.
pub fn series_labels(s: &str) -> Labels {
    let ms = parse_series_selector(s).expect("series selector");
    Labels::new(ms.into_iter().map(|m| {
        assert_eq!(m.op, MatchOp::Equal, "{s}");
        (m.name, m.value)
    }))
}

/// promtool's value notation: numbers, `_` (missing), `stale`, `a+bxn` / `a-bxn` / `axn`
/// (n + 1 values).
pub fn expand_values(s: &str) -> Vec<Option<f64>> {
    let mut out = Vec::new();
    for tok in s.split_whitespace() {
        match tok {
            "_" => out.push(None),
            "stale" => out.push(Some(stale_nan())),
            t => match t.split_once('x') {
                Some((start, n)) => {
                    let n: usize = n.parse().expect("repeat count");
                    let (a, b) = match start[1..].find(['+', '-']) {
                        Some(i) => {
                            let (a, b) = start.split_at(i + 1);
                            (
                                a.parse::<f64>().expect("start"),
                                b.parse::<f64>().expect("step"),
                            )
                        }
                        None => (start.parse::<f64>().expect("start"), 0.0),
                    };
                    for k in 0..=n {
                        out.push(Some(a + b * k as f64));
                    }
                }
                None => out.push(Some(t.parse().expect("value"))),
            },
        }
    }
    out
}

#[test]
fn expands_promtool_notation() {
    assert_eq!(
        expand_values("1 _ 0+2x2 5-1x1 3x1"),
        vec![
            Some(1.0),
            None,
            Some(0.0),
            Some(2.0),
            Some(4.0),
            Some(5.0),
            Some(4.0),
            Some(3.0),
            Some(3.0)
        ]
    );
}
