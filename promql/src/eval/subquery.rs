//! Subqueries, as Prometheus 2.42's `evalSubquery`: `e[range:step] offset o @ a` is the
//! inner instant-vector expression evaluated at every multiple of `step` (counted from the
//! Unix epoch; Prometheus' default evaluation interval of 1 m without one) in
//! `[t' - range, t']`, `t'` being the `@` time or the step's, minus the offset; each point
//! carries its inner time. Functions of a range vector take it as they take a range
//! selector, with the same window. Inner results are cached per inner time, so a range
//! query evaluates each inner step once.

use super::selector::QuerySpan;
use super::{Evaluator, LabelMap, RangeSeries, drop_name};
use crate::error::QueryError;
use crate::parse::Subquery;
use outpost_shared::{Labels, Point};
use std::rc::Rc;
use std::sync::Arc;

/// Where a subquery's inner expression is evaluated for an outer time `t`: every multiple
/// of `step` (counted from the Unix epoch, as Prometheus aligns them) in
/// `[t' - range, t']`, where `t'` is the `@` time or `t`, minus the offset.
pub(crate) fn subquery_times(sq: &Subquery, t: i64, q: QuerySpan) -> (i64, i64, i64) {
    let step = sq.step_ms.unwrap_or(DEFAULT_EVAL_INTERVAL_MS);
    let end = sq.at.map_or(t, |a| a.resolve(q.start_ms, q.end_ms)) - sq.offset_ms;
    let lo = end - sq.range_ms;
    let mut first = lo.div_euclid(step) * step;
    if first < lo {
        first += step;
    }
    (first, end, step)
}

/// Prometheus' default `evaluation_interval` (1 m), the step of a subquery without one.
pub(crate) const DEFAULT_EVAL_INTERVAL_MS: i64 = 60_000;

impl Evaluator<'_> {
    /// A subquery's range vector at `t`, as Prometheus' `evalSubquery`: the inner
    /// expression at every aligned inner step, each point stamped with its inner time.
    pub(crate) fn subquery(&self, sq: &Subquery, t: i64) -> Result<Vec<RangeSeries>, QueryError> {
        let (first, last, step) = subquery_times(sq, t, self.loaded.span);
        // A step of 1 ms over years must fail fast, not loop: each inner step makes at
        // least one point per series, so more steps than the budget cannot fit.
        if usize::try_from((last - first) / step).unwrap_or(usize::MAX) > self.loaded.budget() {
            return Err(QueryError::TooManySamples);
        }
        let mut index: LabelMap<Arc<Labels>, usize> = LabelMap::default();
        let mut out: Vec<RangeSeries> = Vec::new();
        let mut ti = first;
        while ti <= last {
            let key = (sq as *const Subquery as usize, ti);
            let cached = self.inner.borrow().get(&key).cloned();
            let v = match cached {
                Some(v) => v,
                None => {
                    let v = Rc::new(self.eval(&sq.expr, ti)?.into_vector());
                    self.loaded.take(v.len())?;
                    self.inner.borrow_mut().insert(key, Rc::clone(&v));
                    v
                }
            };
            for s in v.iter() {
                let point = Point {
                    ts: ti,
                    value: s.point.value,
                };
                match index.get(&s.labels) {
                    Some(&i) => out[i].points.push(point),
                    None => {
                        index.insert(Arc::clone(&s.labels), out.len());
                        out.push(RangeSeries {
                            labels: Arc::clone(&s.labels),
                            dropped: drop_name(&s.labels),
                            points: vec![point],
                        });
                    }
                }
            }
            ti += step;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::eval::testing::{T, check_instant, range};
    use crate::memory::MemStorage;
    use outpost_shared::Labels;

    /// `c` counts up by one every 10 s from T (aligned to 20 s, 20 s past a minute).
    fn source() -> MemStorage {
        let pts: Vec<(i64, f64)> = (0..=30).map(|i| (T + i * 10_000, i as f64)).collect();
        MemStorage::default().with(Labels::metric("c", []), &pts)
    }

    #[test]
    fn subqueries() {
        check_instant(
            &source(),
            T + 300_000,
            &[
                // Inner steps at multiples of 20 s in [t - 1m, t], both ends included.
                (
                    "c[1m:20s]",
                    &["c{} [24@240000 26@260000 28@280000 30@300000]"],
                ),
                ("max_over_time(c[1m:20s])", &["{} 30@300000"]),
                ("rate(c[1m:20s])", &["{} 0.1@300000"]),
                (
                    "c[1m:20s] offset 30s",
                    &["c{} [22@220000 24@240000 26@260000]"],
                ),
                // Without a step: Prometheus' default 1 m, aligned to whole minutes of the
                // epoch (T is 20 s past one).
                ("c[2m:]", &["c{} [22@220000 28@280000]"]),
                // Nested: rate over 30 s is 0.1 at each of the two inner steps.
                ("sum_over_time(rate(c[30s])[1m:30s])", &["{} 0.2@300000"]),
                ("absent_over_time(nothing[1m:])", &["{} 1@300000"]),
                ("count_over_time((c > 27)[1m:10s])", &["{} 3@300000"]),
            ],
        );
    }

    #[test]
    fn subqueries_count_against_the_sample_limit() {
        let src = source();
        let q = crate::parse::parse("count_over_time(c[10y:1ms])").expect("parse");
        let err = crate::eval::instant_query(&src, &q, T).expect_err("limit");
        assert!(matches!(err, crate::QueryError::TooManySamples), "{err}");
        let q = crate::parse::parse("count_over_time(c[5m:10s])").expect("parse");
        // 31 points loaded, 31 inner points: 62 fit in 62, not in 61.
        assert!(crate::eval::instant_query_limited(&src, &q, T + 300_000, 62).is_ok());
        let err = crate::eval::instant_query_limited(&src, &q, T + 300_000, 61).expect_err("limit");
        assert!(matches!(err, crate::QueryError::TooManySamples), "{err}");
    }

    #[test]
    fn at_modifier() {
        check_instant(
            &source(),
            T + 300_000,
            &[
                // The value at T+100s, stamped with the evaluation time.
                ("c @ 1700000100", &["c{} 10@300000"]),
                ("c @ 1700000100 offset 20s", &["c{} 8@300000"]),
                ("rate(c[1m] @ 1700000100)", &["{} 0.1@300000"]),
                ("timestamp(c @ 1700000105)", &["{} 1700000100@300000"]),
                ("max_over_time(c[1m:20s] @ 1700000100)", &["{} 10@300000"]),
                ("c @ start()", &["c{} 30@300000"]),
            ],
        );
        let src = source();
        let (start, end) = (T + 200_000, T + 300_000);
        assert_eq!(
            range(&src, "c @ start()", start, end, 50_000),
            ["c{} [20@200000 20@250000 20@300000]"]
        );
        assert_eq!(
            range(&src, "c @ end() - c", start, end, 50_000),
            ["{} [10@200000 5@250000 0@300000]"]
        );
        assert_eq!(
            range(
                &src,
                "max_over_time(c[30s:10s])",
                T + 100_000,
                T + 120_000,
                10_000
            ),
            ["{} [10@100000 11@110000 12@120000]"]
        );
        assert_eq!(
            range(&src, "c[1m:20s]", start, end, 50_000),
            [
                r#"error: invalid expression type "range vector" for range query, must be Scalar or instant Vector"#
            ]
        );
    }
}
