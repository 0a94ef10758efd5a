//! Evaluation of a planned [`Expr`] at one time ([`instant_query`]) or at every step of a
//! range ([`range_query`]).
//!
//! Pure: no clock, no I/O of its own. The caller passes the evaluation time in milliseconds
//! since the Unix epoch and a [`Queryable`] to read from.
//!
//! Semantics follow Prometheus: an instant vector selector takes, per series, the latest point
//! in the 5-minute lookback window `(t - 5m, t]` unless that point is a stale marker, and
//! stamps it with the evaluation time; a matrix selector `x[r]` returns the raw points in
//! `(t - r, t]`; `offset o` shifts the window to end at `t - o`. Each series' points are
//! fetched once per query, covering every step of a range query.
//!
//! One module per family: [`selector`] today; aggregations, binary operators, range and
//! instant-vector functions and subqueries each get theirs beside it.

pub(crate) mod selector;

use crate::error::QueryError;
use crate::parse::{Expr, Selector};
use crate::steps::Steps;
use crate::storage::Queryable;
use outpost_shared::model::is_stale;
use outpost_shared::{Labels, Point, SeriesPoints};
use selector::{Loader, window_start};

/// How far back an instant vector selector looks for a series' latest point (5 min, as
/// Prometheus' default `--query.lookback-delta`).
pub const LOOKBACK_DELTA_MS: i64 = 5 * 60 * 1000;

/// The most points one query may load from storage (Prometheus' `--query.max-samples`).
pub const MAX_SAMPLES: usize = 50_000_000;

/// One sample of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The series' labels.
    pub labels: Labels,
    /// The value, stamped with the evaluation time.
    pub point: Point,
}

/// A query's result.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// One sample per series, stamped with the evaluation time.
    Vector(Vec<Sample>),
    /// Points per series; series without points are left out.
    Matrix(Vec<SeriesPoints>),
}

/// Evaluates `expr` at `t_ms`.
///
/// # Errors
/// Storage failures, or more than [`MAX_SAMPLES`] points loaded.
pub fn instant_query(src: &dyn Queryable, expr: &Expr, t_ms: i64) -> Result<Value, QueryError> {
    instant_query_limited(src, expr, t_ms, MAX_SAMPLES)
}

/// Evaluates `expr` at every step. Only instant vector selectors are allowed.
///
/// # Errors
/// A range vector expression, storage failures, or more than [`MAX_SAMPLES`] points loaded.
pub fn range_query(src: &dyn Queryable, expr: &Expr, steps: &Steps) -> Result<Value, QueryError> {
    range_query_limited(src, expr, steps, MAX_SAMPLES)
}

pub(crate) fn instant_query_limited(
    src: &dyn Queryable,
    expr: &Expr,
    t_ms: i64,
    max_samples: usize,
) -> Result<Value, QueryError> {
    match expr {
        Expr::Vector(sel) => {
            let end = t_ms.saturating_sub(sel.offset_ms);
            let start = window_start(end, LOOKBACK_DELTA_MS);
            let series = Loader::open(src, start, end, max_samples)?.load(sel, start, end)?;
            let samples = series
                .into_iter()
                .filter_map(|(labels, points)| {
                    let last = points.last().filter(|p| !is_stale(p.value))?;
                    Some(Sample {
                        labels,
                        point: Point {
                            ts: t_ms,
                            value: last.value,
                        },
                    })
                })
                .collect();
            Ok(Value::Vector(samples))
        }
        Expr::Matrix { selector, range_ms } => {
            let end = t_ms.saturating_sub(selector.offset_ms);
            let start = window_start(end, *range_ms);
            let series = Loader::open(src, start, end, max_samples)?.load(selector, start, end)?;
            let matrix = series
                .into_iter()
                .filter_map(|(labels, mut points)| {
                    points.retain(|p| !is_stale(p.value));
                    (!points.is_empty()).then_some(SeriesPoints { labels, points })
                })
                .collect();
            Ok(Value::Matrix(matrix))
        }
    }
}

fn range_query_limited(
    src: &dyn Queryable,
    expr: &Expr,
    steps: &Steps,
    max_samples: usize,
) -> Result<Value, QueryError> {
    let sel = match expr {
        Expr::Vector(sel) => sel,
        Expr::Matrix { .. } => return Err(QueryError::RangeVectorInRangeQuery),
    };
    let first_end = steps.start_ms().saturating_sub(sel.offset_ms);
    let last_end = steps.end_ms().saturating_sub(sel.offset_ms);
    let start = window_start(first_end, LOOKBACK_DELTA_MS);
    let series = Loader::open(src, start, last_end, max_samples)?.load(sel, start, last_end)?;
    let mut matrix = Vec::new();
    for (labels, points) in series {
        let mut out = Vec::new();
        // `next` only moves forward: steps and points are both in time order.
        let mut next = 0;
        for t in steps.times() {
            let end = t.saturating_sub(sel.offset_ms);
            while next < points.len() && points[next].ts <= end {
                next += 1;
            }
            let Some(p) = next.checked_sub(1).map(|i| points[i]) else {
                continue;
            };
            if p.ts > end.saturating_sub(LOOKBACK_DELTA_MS) && !is_stale(p.value) {
                out.push(Point {
                    ts: t,
                    value: p.value,
                });
            }
        }
        if !out.is_empty() {
            matrix.push(SeriesPoints {
                labels,
                points: out,
            });
        }
    }
    Ok(Value::Matrix(matrix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemStorage as MemSource;
    use crate::parse::parse;
    use crate::steps::Steps;
    use outpost_shared::model::stale_nan;

    const T: i64 = 1_700_000_000_000;
    const MIN: i64 = 60_000;

    fn up(job: &str, instance: &str) -> Labels {
        Labels::metric("up", [("job", job), ("instance", instance)])
    }

    fn source() -> MemSource {
        MemSource::default()
            // Fresh point 10s before T.
            .with(up("node", "a"), &[(T - 2 * MIN, 0.0), (T - 10_000, 1.0)])
            // Last point 6 minutes old: outside the lookback window.
            .with(up("node", "b"), &[(T - 6 * MIN, 1.0)])
            // Stale marker after a real value: the series ended.
            .with(
                up("node", "c"),
                &[(T - 2 * MIN, 1.0), (T - MIN, stale_nan())],
            )
            .with(up("db", "d"), &[(T - MIN, 0.0), (T + MIN, 5.0)])
            .with(
                Labels::metric("node_cpu_seconds_total", [("cpu", "0"), ("mode", "idle")]),
                &[(T, 10.0)],
            )
            .with(
                Labels::metric("node_cpu_seconds_total", [("cpu", "1"), ("mode", "user")]),
                &[(T, 11.0)],
            )
            .with(
                Labels::metric("node_cpu_seconds_total", [("cpu", "2"), ("mode", "user")]),
                &[(T, 12.0)],
            )
            .with(
                Labels::metric("node_cpu_seconds_total", [("mode", "user")]),
                &[(T, 13.0)],
            )
    }

    /// `name{labels} value@ts` per sample or point, for compact assertions.
    fn show(v: &Value) -> Vec<String> {
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
        }
    }

    #[test]
    fn instant_vector_selectors() {
        let src = source();
        let cases: &[(&str, i64, &[&str])] = &[
            // Lookback: b is too old, c ends in a stale marker.
            (
                "up",
                T,
                &[
                    r#"up{instance="a", job="node"} 1@0"#,
                    r#"up{instance="d", job="db"} 0@0"#,
                ],
            ),
            // Equal on a label.
            (
                r#"up{job="node"}"#,
                T,
                &[r#"up{instance="a", job="node"} 1@0"#],
            ),
            // The sample carries the evaluation time, not the point's.
            (
                r#"up{job="db"}"#,
                T + 30_000,
                &[r#"up{instance="d", job="db"} 0@30000"#],
            ),
            // Exactly 5 minutes old is outside the window (left-open).
            (r#"up{instance="b"}"#, T - MIN, &[]),
            (
                r#"up{instance="b"}"#,
                T - MIN - 1,
                &[r#"up{instance="b", job="node"} 1@-60001"#],
            ),
            // Before the stale marker, c is still live.
            (
                r#"up{instance="c"}"#,
                T - MIN - 1,
                &[r#"up{instance="c", job="node"} 1@-60001"#],
            ),
            // Offset shifts the window into the past.
            (
                r#"up{instance="d"} offset 1m"#,
                T + MIN,
                &[r#"up{instance="d", job="db"} 0@60000"#],
            ),
            (
                r#"up{instance="d"} offset -1m"#,
                T,
                &[r#"up{instance="d", job="db"} 5@0"#],
            ),
            // Not-equal, regex and negative regex; `!=` on an absent label selects the series.
            (
                r#"node_cpu_seconds_total{mode!="idle",cpu=~"0|1"}"#,
                T,
                &[r#"node_cpu_seconds_total{cpu="1", mode="user"} 11@0"#],
            ),
            (
                r#"node_cpu_seconds_total{cpu!="1"}"#,
                T,
                // Sorted by labels as Prometheus compares them: pair by pair.
                &[
                    r#"node_cpu_seconds_total{cpu="0", mode="idle"} 10@0"#,
                    r#"node_cpu_seconds_total{cpu="2", mode="user"} 12@0"#,
                    r#"node_cpu_seconds_total{mode="user"} 13@0"#,
                ],
            ),
            (
                r#"node_cpu_seconds_total{cpu!~"[01]"}"#,
                T,
                &[
                    r#"node_cpu_seconds_total{cpu="2", mode="user"} 12@0"#,
                    r#"node_cpu_seconds_total{mode="user"} 13@0"#,
                ],
            ),
            // A regex on the metric name; regexes are anchored at both ends.
            (
                r#"{__name__=~"node_.*",cpu=~"1"}"#,
                T,
                &[r#"node_cpu_seconds_total{cpu="1", mode="user"} 11@0"#],
            ),
            (r#"{__name__=~"node_cpu"}"#, T, &[]),
            // An absent label matches the empty string.
            (
                r#"node_cpu_seconds_total{cpu=""}"#,
                T,
                &[r#"node_cpu_seconds_total{mode="user"} 13@0"#],
            ),
            (r#"({job="db"})"#, T, &[r#"up{instance="d", job="db"} 0@0"#]),
            ("nothing_here", T, &[]),
        ];
        for (q, t, want) in cases {
            let expr = parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
            let got = instant_query(&src, &expr, *t).unwrap_or_else(|e| panic!("{q}: {e}"));
            assert!(matches!(got, Value::Vector(_)), "{q}");
            assert_eq!(show(&got), *want, "{q} at {}", t - T);
        }
    }

    #[test]
    fn instant_matrix_selectors() {
        let src = MemSource::default().with(
            up("node", "a"),
            &[
                (T - 3 * MIN, 1.0),
                (T - 2 * MIN, 2.0),
                (T - MIN, stale_nan()),
                (T, 4.0),
                (T + MIN, 5.0),
            ],
        );
        let cases: &[(&str, &[&str])] = &[
            // (T-3m, T]: the point at exactly T-3m is out, the stale marker is dropped.
            (
                "up[3m]",
                &[r#"up{instance="a", job="node"} [2@-120000 4@0]"#],
            ),
            ("up[1ms]", &[r#"up{instance="a", job="node"} [4@0]"#]),
            // Offset keeps the points' own timestamps.
            (
                "up[2m] offset 1m",
                &[r#"up{instance="a", job="node"} [2@-120000]"#],
            ),
            // Only a stale marker in the window: the series is left out.
            ("up[30s] offset 1m", &[]),
            ("up[10m] offset 1h", &[]),
        ];
        for (q, want) in cases {
            let expr = parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
            let got = instant_query(&src, &expr, T).unwrap_or_else(|e| panic!("{q}: {e}"));
            assert!(matches!(got, Value::Matrix(_)), "{q}");
            assert_eq!(show(&got), *want, "{q}");
        }
    }

    #[test]
    fn range_query_steps() {
        let src = MemSource::default()
            .with(
                up("node", "a"),
                &[
                    (T, 1.0),
                    (T + 30_000, 2.0),
                    (T + 2 * MIN, stale_nan()),
                    (T + 3 * MIN, 3.0),
                ],
            )
            // Its only point is 4.5 minutes before the range: visible for the first 30s.
            .with(up("node", "b"), &[(T - 270_000, 7.0)])
            .with(up("node", "c"), &[(T - 10 * MIN, 7.0)]);
        let cases: &[(&str, i64, i64, i64, &[&str])] = &[
            (
                "up",
                T,
                T + 4 * MIN,
                MIN,
                &[
                    // T+2m: the stale marker hides the series until the next real point.
                    r#"up{instance="a", job="node"} [1@0 2@60000 3@180000 3@240000]"#,
                    r#"up{instance="b", job="node"} [7@0]"#,
                ],
            ),
            (
                r#"up{instance="b"}"#,
                T,
                T + MIN,
                15_000,
                &[r#"up{instance="b", job="node"} [7@0 7@15000]"#],
            ),
            // Between points the latest one repeats; the last step may fall short of `end`.
            (
                "up{instance=\"a\"}",
                T,
                T + 50_000,
                20_000,
                &[r#"up{instance="a", job="node"} [1@0 1@20000 2@40000]"#],
            ),
            // Offset: values from a minute earlier, stamped with the step times.
            (
                r#"up{instance="a"} offset 1m"#,
                T + MIN,
                T + 2 * MIN,
                MIN,
                &[r#"up{instance="a", job="node"} [1@60000 2@120000]"#],
            ),
            // A single step when start == end.
            (
                "up{instance=\"a\"}",
                T + 3 * MIN,
                T + 3 * MIN,
                1,
                &[r#"up{instance="a", job="node"} [3@180000]"#],
            ),
            ("up{instance=\"c\"}", T, T + 4 * MIN, MIN, &[]),
        ];
        for (q, start, end, step, want) in cases {
            let expr = parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
            let steps = Steps::new(*start, *end, *step).unwrap_or_else(|e| panic!("{q}: {e}"));
            let got = range_query(&src, &expr, &steps).unwrap_or_else(|e| panic!("{q}: {e}"));
            assert_eq!(show(&got), *want, "{q}");
        }
    }

    #[test]
    fn range_query_fetches_each_series_once_including_the_lookback() {
        let src = MemSource::default()
            .with(up("node", "a"), &[(T, 1.0)])
            .with(up("node", "b"), &[(T, 2.0)]);
        let expr = parse("up offset 1m").expect("parse");
        let steps = Steps::new(T, T + 100 * MIN, 15_000).expect("steps");
        range_query(&src, &expr, &steps).expect("query");
        let fetches = src.fetches.lock().expect("fetch log").clone();
        let window = (T - MIN - LOOKBACK_DELTA_MS + 1, T + 99 * MIN);
        assert_eq!(
            fetches,
            vec![(0, window.0, window.1), (1, window.0, window.1)]
        );
    }

    #[test]
    fn range_limits() {
        let cases: &[(i64, i64, i64, Option<&str>)] = &[
            (0, 11_000_000, 1_000, None),
            (
                0,
                11_001_000,
                1_000,
                Some(
                    "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
                ),
            ),
            (
                0,
                1_000,
                0,
                Some(
                    "zero or negative query resolution step widths are not accepted. Try a positive integer",
                ),
            ),
            (
                0,
                1_000,
                -5,
                Some(
                    "zero or negative query resolution step widths are not accepted. Try a positive integer",
                ),
            ),
            (
                1_000,
                0,
                1,
                Some("end timestamp must not be before start time"),
            ),
            (
                i64::MIN,
                i64::MAX,
                1,
                Some(
                    "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
                ),
            ),
        ];
        for (start, end, step, want) in cases {
            let got = Steps::new(*start, *end, *step);
            match want {
                None => assert_eq!(got.expect("valid").times().count(), 11_001),
                Some(msg) => assert_eq!(got.expect_err("invalid").to_string(), *msg),
            }
        }
    }

    #[test]
    fn range_query_of_a_matrix_selector_is_an_error() {
        let expr = parse("up[5m]").expect("parse");
        let steps = Steps::new(T, T + MIN, 1_000).expect("steps");
        let err = range_query(&MemSource::default(), &expr, &steps).expect_err("range vector");
        assert_eq!(
            err.to_string(),
            r#"invalid expression type "range vector" for range query, must be Scalar or instant Vector"#
        );
    }

    #[test]
    fn sample_limit_is_an_execution_error() {
        let src = MemSource::default()
            .with(up("node", "a"), &[(T - 2_000, 1.0), (T - 1_000, 1.0)])
            .with(up("node", "b"), &[(T - 2_000, 1.0), (T - 1_000, 1.0)]);
        let expr = parse("up[1m]").expect("parse");
        assert!(
            matches!(instant_query_limited(&src, &expr, T, 4), Ok(Value::Matrix(m)) if m.len() == 2)
        );
        let err = instant_query_limited(&src, &expr, T, 3).expect_err("limit");
        assert!(matches!(err, QueryError::TooManySamples), "{err}");
        assert!(!err.is_query_text_error());
    }

    #[test]
    fn storage_errors_pass_through() {
        let src = MemSource::failing("disk on fire");
        let err = instant_query(&src, &parse("up").expect("parse"), T).expect_err("fails");
        assert_eq!(err.to_string(), "storage read failed: disk on fire");
    }
}
