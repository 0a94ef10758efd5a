//! Evaluation of a planned [`Expr`] at one time ([`instant_query`]) or at every step of a
//! range ([`range_query`]).
//!
//! Pure: no clock, no I/O of its own. The caller passes the evaluation time in milliseconds
//! since the Unix epoch and a [`Queryable`] to read from.
//!
//! Semantics follow Prometheus 2.42's `promql/engine.go`: an instant vector selector takes,
//! per series, the latest point in the 5-minute lookback window `[t - 5m, t]` unless that
//! point is a stale marker, and stamps it with the evaluation time; a matrix selector `x[r]`
//! returns the raw points in `[t - r, t]` (both windows closed, as in Prometheus 2);
//! `offset o` shifts the window to end at `t - o`.
//! Every selector's series are fetched once per query, covering every step of a range query
//! (`selector`). Then each expression is evaluated once for all steps, series by series
//! (`range`): a selector walks each series' points once, a function of a range vector
//! slides its window over them, an aggregation folds series into per-group, per-step
//! accumulators, labels are worked out once per series. An instant query is the same with
//! a single step. What has no such evaluation is evaluated step by step as Prometheus'
//! `rangeEval` does (`Evaluator::eval`), its arguments evaluated for all steps first and
//! read back at each step; the step-by-step path is also the reference the per-series one
//! is tested against, and each family's arithmetic is shared by both.
//!
//! One module per family: [`selector`] (with `@` and the subquery step alignment),
//! [`binary`] operators, [`aggregate`]s, [`range_fn`] (functions of a range vector or a
//! subquery) and [`instant_fn`] (functions of instant vectors and scalars). A subquery's
//! inner expression is evaluated once over all the inner times the steps need (step by
//! step, each inner result cached for the next outer step, where those times have gaps).

pub(crate) mod aggregate;
pub(crate) mod binary;
pub(crate) mod instant_fn;
pub(crate) mod range;
pub(crate) mod range_fn;
pub(crate) mod selector;
pub(crate) mod subquery;
#[cfg(test)]
pub(crate) mod testing;

use crate::error::QueryError;
use crate::parse::{Expr, ValueType};
use crate::steps::Steps;
use crate::storage::Queryable;
use outpost_shared::model::METRIC_NAME;
use outpost_shared::{Labels, Point, SeriesPoints};
use range::Ranged;
use selector::Loaded;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;
use std::sync::Arc;

/// The order Prometheus gives samples by value in `sort`, `sort_desc`, `topk` and `bottomk`:
/// ascending (or descending when `desc`), NaN last either way.
pub(crate) fn by_value_nan_last(x: f64, y: f64, desc: bool) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ if desc => y.partial_cmp(&x).unwrap_or(Ordering::Equal),
        _ => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
    }
}

/// How far back an instant vector selector looks for a series' latest point (5 min, as
/// Prometheus' default `--query.lookback-delta`).
pub const LOOKBACK_DELTA_MS: i64 = 5 * 60 * 1000;

/// The most points one query may load from storage (Prometheus' `--query.max-samples`).
pub const MAX_SAMPLES: usize = 50_000_000;

/// One sample of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The series' labels, shared: evaluation steps hand the same set from step to step.
    pub labels: Arc<Labels>,
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
    /// A single number at the evaluation time (an instant query of a scalar expression).
    Scalar(Point),
    /// A string at the evaluation time (an instant query of a string literal).
    String {
        /// The evaluation time, ms since the Unix epoch.
        ts: i64,
        /// The string.
        value: String,
    },
}

/// Whether this version evaluates the function `name` (used while planning).
pub fn is_supported_function(name: &str) -> bool {
    range_fn::FUNCTIONS.contains(&name) || instant_fn::FUNCTIONS.contains(&name)
}

/// One series of a range vector during evaluation: its labels, the same without the
/// metric name (computed once per series, as most functions drop it), and its points.
#[derive(Clone, Debug)]
pub(crate) struct RangeSeries {
    pub(crate) labels: Arc<Labels>,
    pub(crate) dropped: Arc<Labels>,
    pub(crate) points: Vec<Point>,
}

/// An intermediate value during evaluation at one step.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    Scalar(f64),
    Str(String),
    Vector(Vec<Sample>),
    Matrix(Vec<RangeSeries>),
}

/// FNV-1a: a fast hash for label sets, which come from the store, not from the query.
#[derive(Default)]
pub(crate) struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// A hash map keyed by label sets, with [`Fnv`].
pub(crate) type LabelMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

impl Val {
    fn into_vector(self) -> Vec<Sample> {
        match self {
            Val::Vector(v) => v,
            _ => Vec::new(),
        }
    }
    fn scalar(&self) -> f64 {
        match self {
            Val::Scalar(v) => *v,
            _ => f64::NAN,
        }
    }
}

/// An error while evaluating, in Prometheus' words.
pub(crate) fn exec_err(msg: impl Into<String>) -> QueryError {
    QueryError::Execution(msg.into())
}

/// `labels` without `__name__`, as Prometheus' `dropMetricName`.
pub(crate) fn drop_name(labels: &Arc<Labels>) -> Arc<Labels> {
    if labels.metric_name().is_none() {
        return Arc::clone(labels);
    }
    Arc::new(
        Labels::from_sorted(
            labels
                .iter()
                .filter(|l| l.name != METRIC_NAME)
                .cloned()
                .collect(),
        )
        .unwrap_or_default(),
    )
}

/// Prometheus' check after every function call, operator and unary minus.
fn check_unique(v: &[Sample]) -> Result<(), QueryError> {
    if v.len() < 2 {
        return Ok(());
    }
    let mut seen: LabelMap<&Labels, ()> = LabelMap::default();
    seen.reserve(v.len());
    for s in v {
        if seen.insert(&s.labels, ()).is_some() {
            return Err(exec_err(
                "vector cannot contain metrics with the same labelset",
            ));
        }
    }
    Ok(())
}

/// Subqueries' inner results by (subquery address, inner time).
pub(crate) type InnerCache = RefCell<HashMap<(usize, i64), Rc<Vec<Sample>>>>;

/// Evaluates one plan over the series a [`Loaded`] holds.
pub(crate) struct Evaluator<'q> {
    pub(crate) loaded: Loaded<'q>,
    /// Subqueries' inner results by (subquery address, inner time): consecutive steps of a
    /// range query share most inner times, which are aligned to the epoch.
    pub(crate) inner: InnerCache,
    /// The evaluation times: the query's, or a subquery's inner times while its inner
    /// expression is evaluated over all of them.
    pub(crate) grid: std::cell::Cell<range::Grid>,
    /// Expressions evaluated over every step of [`Evaluator::grid`], by address, while a
    /// node that uses them is evaluated step by step.
    pub(crate) ranged: RefCell<LabelMap<usize, Rc<range::Ranged>>>,
}

impl<'q> Evaluator<'q> {
    /// The value of `e` at `t`.
    pub(crate) fn eval(&self, e: &Expr, t: i64) -> Result<Val, QueryError> {
        self.loaded.cancel.check()?;
        if !self.ranged.borrow().is_empty()
            && let Some(v) = self.ranged_at(e, t)
        {
            return Ok(v);
        }
        match e {
            Expr::Number(n) => Ok(Val::Scalar(*n)),
            Expr::String(s) => Ok(Val::Str(s.clone())),
            Expr::Vector(sel) => Ok(Val::Vector(self.loaded.instant(sel, t, false)?)),
            Expr::Matrix { selector, range_ms } => {
                Ok(Val::Matrix(self.loaded.matrix(selector, *range_ms, t)?))
            }
            Expr::Neg(inner) => match self.eval(inner, t)? {
                Val::Scalar(v) => Ok(Val::Scalar(-v)),
                Val::Vector(v) => {
                    let out: Vec<Sample> = v
                        .into_iter()
                        .map(|s| Sample {
                            labels: drop_name(&s.labels),
                            point: Point {
                                ts: t,
                                value: -s.point.value,
                            },
                        })
                        .collect();
                    check_unique(&out)?;
                    Ok(Val::Vector(out))
                }
                other => Ok(other),
            },
            Expr::Binary(b) => {
                let lhs = self.eval(&b.lhs, t)?;
                let rhs = self.eval(&b.rhs, t)?;
                let out = binary::eval(b, lhs, rhs, t)?;
                if let Val::Vector(v) = &out {
                    check_unique(v)?;
                }
                Ok(out)
            }
            Expr::Aggregate(a) => {
                let param = match &a.param {
                    Some(p) => Some(self.eval(p, t)?),
                    None => None,
                };
                let input = self.eval(&a.expr, t)?.into_vector();
                Ok(Val::Vector(aggregate::eval(a, input, param, t)?))
            }
            Expr::Subquery(sq) => Ok(Val::Matrix(self.subquery(sq, t)?)),
            Expr::Call { name, args } => {
                let out = if range_fn::FUNCTIONS.contains(&name.as_str()) {
                    range_fn::call(self, name, args, t)?
                } else {
                    instant_fn::call(self, name, args, t)?
                };
                if let Val::Vector(v) = &out {
                    check_unique(v)?;
                }
                Ok(out)
            }
        }
    }

    /// The value of a scalar argument at `t`.
    pub(crate) fn eval_scalar(&self, e: &Expr, t: i64) -> Result<f64, QueryError> {
        Ok(self.eval(e, t)?.scalar())
    }

    /// The loaded series of every selector.
    pub(crate) fn loaded(&self) -> &Loaded<'q> {
        &self.loaded
    }

    fn new(loaded: Loaded<'q>, grid: range::Grid) -> Self {
        Evaluator {
            loaded,
            inner: RefCell::new(HashMap::new()),
            grid: std::cell::Cell::new(grid),
            ranged: RefCell::new(LabelMap::default()),
        }
    }
}

/// Evaluates `expr` at `t_ms`.
///
/// # Errors
/// Storage failures, more than [`MAX_SAMPLES`] points loaded, or Prometheus' execution
/// errors (e.g. many-to-many matching).
pub fn instant_query(src: &dyn Queryable, expr: &Expr, t_ms: i64) -> Result<Value, QueryError> {
    instant_query_limited(src, expr, t_ms, MAX_SAMPLES)
}

/// Evaluates `expr` at every step. Range vector and string expressions are refused, as
/// Prometheus refuses them.
///
/// # Errors
/// A range vector or string expression, storage failures, more than [`MAX_SAMPLES`] points
/// loaded, or Prometheus' execution errors.
pub fn range_query(src: &dyn Queryable, expr: &Expr, steps: &Steps) -> Result<Value, QueryError> {
    range_query_limited(src, expr, steps, MAX_SAMPLES)
}

/// [`instant_query`] within `limits`.
///
/// # Errors
/// As [`instant_query`], with `limits.max_samples` as the cap, and
/// [`QueryError::Timeout`] once `limits.cancel` is raised.
pub fn instant_query_with(
    src: &dyn Queryable,
    expr: &Expr,
    t_ms: i64,
    limits: &crate::Limits,
) -> Result<Value, QueryError> {
    instant_query_mode(src, expr, t_ms, limits, Mode::PerSeries)
}

/// [`range_query`] within `limits`.
///
/// # Errors
/// As [`range_query`], with `limits.max_samples` as the cap, and [`QueryError::Timeout`]
/// once `limits.cancel` is raised.
pub fn range_query_with(
    src: &dyn Queryable,
    expr: &Expr,
    steps: &Steps,
    limits: &crate::Limits,
) -> Result<Value, QueryError> {
    range_query_mode(src, expr, steps, limits, Mode::PerSeries)
}

/// How a query is evaluated: over all steps at once where the evaluator can (the
/// default), or strictly step by step (the reference the former is tested against).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    PerSeries,
    #[cfg(test)]
    StepByStep,
}

pub(crate) fn instant_query_limited(
    src: &dyn Queryable,
    expr: &Expr,
    t_ms: i64,
    max_samples: usize,
) -> Result<Value, QueryError> {
    let limits = crate::Limits {
        max_samples,
        ..Default::default()
    };
    instant_query_mode(src, expr, t_ms, &limits, Mode::PerSeries)
}

pub(crate) fn instant_query_mode(
    src: &dyn Queryable,
    expr: &Expr,
    t_ms: i64,
    limits: &crate::Limits,
    mode: Mode,
) -> Result<Value, QueryError> {
    let grid = range::Grid {
        start: t_ms,
        step: 1,
        len: 1,
    };
    let ev = Evaluator::new(Loaded::load(src, expr, t_ms, t_ms, 0, limits)?, grid);
    if matches!(expr.value_type(), ValueType::Scalar | ValueType::Vector) {
        let ranged = ev.eval_mode(expr, mode)?;
        drop(ev);
        return Ok(match ranged {
            Ranged::Scalar(v) => Value::Scalar(Point {
                ts: t_ms,
                value: v[0],
            }),
            Ranged::Vector(series) => Value::Vector(
                series
                    .into_iter()
                    .filter_map(|s| {
                        Some(Sample {
                            point: Point {
                                ts: t_ms,
                                value: s.values[0]?,
                            },
                            labels: s.labels,
                        })
                    })
                    .collect(),
            ),
        });
    }
    Ok(match ev.eval(expr, t_ms)? {
        Val::Scalar(value) => Value::Scalar(Point { ts: t_ms, value }),
        Val::Str(value) => Value::String { ts: t_ms, value },
        Val::Vector(v) => Value::Vector(v),
        Val::Matrix(m) => Value::Matrix(
            m.into_iter()
                .map(|s| SeriesPoints {
                    labels: Arc::unwrap_or_clone(s.labels),
                    points: s.points,
                })
                .collect(),
        ),
    })
}

fn range_query_limited(
    src: &dyn Queryable,
    expr: &Expr,
    steps: &Steps,
    max_samples: usize,
) -> Result<Value, QueryError> {
    let limits = crate::Limits {
        max_samples,
        ..Default::default()
    };
    range_query_mode(src, expr, steps, &limits, Mode::PerSeries)
}

pub(crate) fn range_query_mode(
    src: &dyn Queryable,
    expr: &Expr,
    steps: &Steps,
    limits: &crate::Limits,
    mode: Mode,
) -> Result<Value, QueryError> {
    match expr.value_type() {
        ValueType::Matrix => return Err(QueryError::RangeVectorInRangeQuery),
        ValueType::String => return Err(QueryError::StringInRangeQuery),
        _ => {}
    }
    let grid = range::Grid {
        start: steps.start_ms(),
        step: steps.step_ms(),
        len: steps.times().count(),
    };
    let ev = Evaluator::new(
        Loaded::load(
            src,
            expr,
            steps.start_ms(),
            steps.end_ms(),
            steps.step_ms(),
            limits,
        )?,
        grid,
    );
    let ranged = ev.eval_mode(expr, mode)?;
    // The loaded series share their labels with the result: dropped first, the result's
    // labels are moved out rather than copied.
    drop(ev);
    let points = |values: Vec<Option<f64>>| -> Vec<Point> {
        values
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| {
                Some(Point {
                    ts: grid.time(i),
                    value: v?,
                })
            })
            .collect()
    };
    let mut matrix: Vec<SeriesPoints> = match ranged {
        Ranged::Scalar(v) => vec![SeriesPoints {
            labels: Labels::default(),
            points: points(v.into_iter().map(Some).collect()),
        }],
        Ranged::Vector(series) => series
            .into_iter()
            .map(|s| SeriesPoints {
                labels: Arc::unwrap_or_clone(s.labels),
                points: points(s.values),
            })
            .filter(|s| !s.points.is_empty())
            .collect(),
    };
    matrix.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(Value::Matrix(matrix))
}

impl Evaluator<'_> {
    fn eval_mode(&self, e: &Expr, mode: Mode) -> Result<Ranged, QueryError> {
        match mode {
            Mode::PerSeries => self.eval_range(e),
            #[cfg(test)]
            Mode::StepByStep => self.gather(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::show;
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
            // Exactly 5 minutes old is inside the window (closed, as in Prometheus 2);
            // a millisecond more is out.
            (r#"up{instance="b"}"#, T - MIN + 1, &[]),
            (
                r#"up{instance="b"}"#,
                T - MIN,
                &[r#"up{instance="b", job="node"} 1@-60000"#],
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
            // [T-3m, T]: the point at exactly T-3m is in, the stale marker is dropped.
            (
                "up[3m]",
                &[r#"up{instance="a", job="node"} [1@-180000 2@-120000 4@0]"#],
            ),
            (
                "up[179999ms]",
                &[r#"up{instance="a", job="node"} [2@-120000 4@0]"#],
            ),
            ("up[1ms]", &[r#"up{instance="a", job="node"} [4@0]"#]),
            // Offset keeps the points' own timestamps.
            (
                "up[2m] offset 1m",
                &[r#"up{instance="a", job="node"} [1@-180000 2@-120000]"#],
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
            // Its only point is 4.5 minutes before the range: visible through T+30s.
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
                &[r#"up{instance="b", job="node"} [7@0 7@15000 7@30000]"#],
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
        let window = (T - MIN - LOOKBACK_DELTA_MS, T + 99 * MIN);
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
    fn a_raised_cancel_flag_stops_the_query() {
        let src = MemSource::default().with(up("node", "a"), &[(T - 2_000, 1.0)]);
        let limits = crate::Limits::default();
        for q in [
            "up",
            "sum(rate(up[5m]))",
            "label_replace(up, \"a\", \"b\", \"\", \"\")",
        ] {
            let expr = parse(q).expect("parse");
            let steps = Steps::new(T - MIN, T, 1_000).expect("steps");
            assert!(instant_query_with(&src, &expr, T, &limits).is_ok());
            assert!(range_query_with(&src, &expr, &steps, &limits).is_ok());
        }
        limits.cancel.cancel();
        for q in [
            "up",
            "sum(rate(up[5m]))",
            "label_replace(up, \"a\", \"b\", \"\", \"\")",
            "1",
        ] {
            let expr = parse(q).expect("parse");
            let steps = Steps::new(T - MIN, T, 1_000).expect("steps");
            let err = instant_query_with(&src, &expr, T, &limits).expect_err(q);
            assert!(matches!(err, QueryError::Timeout), "{q}: {err}");
            let err = range_query_with(&src, &expr, &steps, &limits).expect_err(q);
            assert_eq!(err.to_string(), "query timed out in expression evaluation");
        }
    }

    #[test]
    fn storage_errors_pass_through() {
        let src = MemSource::failing("disk on fire");
        let err = instant_query(&src, &parse("up").expect("parse"), T).expect_err("fails");
        assert_eq!(err.to_string(), "storage read failed: disk on fire");
    }
}
