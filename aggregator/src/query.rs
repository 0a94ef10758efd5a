//! Query evaluation: parses PromQL with `promql-parser`, keeps the subset this version can
//! evaluate (vector and matrix selectors, optionally with `offset`) and evaluates instant and
//! range queries over a [`SeriesSource`].
//!
//! Pure: no clock, no I/O of its own. The caller passes the evaluation time in milliseconds
//! since the Unix epoch; the HTTP shell in [`crate::api`] reads the clock.
//!
//! Semantics follow Prometheus: an instant vector selector takes, per series, the latest point
//! in the 5-minute lookback window `(t - 5m, t]` unless that point is a stale marker, and
//! stamps it with the evaluation time; a matrix selector `x[r]` returns the raw points in
//! `(t - r, t]`; `offset o` shifts the window to end at `t - o`. Each series' points are
//! fetched once per query, covering every step of a range query.

use crate::source::{MatchOp, Matcher, SeriesSource, SourceError};
use outpost_shared::model::{METRIC_NAME, is_stale};
use outpost_shared::{Labels, Point, SeriesPoints};
use promql_parser::label::MatchOp as AstOp;
use promql_parser::parser::{self as ast, Offset};

/// How far back an instant vector selector looks for a series' latest point.
pub const LOOKBACK_DELTA_MS: i64 = 5 * 60 * 1000;

/// The most steps a range query may have beyond its first, as in Prometheus.
pub const MAX_STEPS: i64 = 11_000;

/// The most points one query may load from storage (Prometheus' `--query.max-samples`).
pub const MAX_SAMPLES: usize = 50_000_000;

/// A parsed query this version can evaluate.
#[derive(Clone, Debug)]
pub enum Expr {
    /// `x{...} [offset o]`: an instant vector selector.
    Vector(Selector),
    /// `x{...}[r] [offset o]`: a range vector (matrix) selector.
    Matrix { selector: Selector, range_ms: i64 },
}

/// The series a selector picks and how far its window is shifted into the past.
#[derive(Clone, Debug)]
pub struct Selector {
    /// Never empty, and at least one matcher does not match the empty string.
    pub matchers: Vec<Matcher>,
    /// `offset` in milliseconds; negative for `offset -5m`.
    pub offset_ms: i64,
}

/// One sample of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: Labels,
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

/// The steps of a range query: `start_ms, start_ms + step_ms, ...` up to `end_ms` inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Steps {
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
}

impl Steps {
    /// Checks the range as Prometheus does: `end >= start`, `step > 0`, at most
    /// [`MAX_STEPS`] steps after the first.
    pub fn new(start_ms: i64, end_ms: i64, step_ms: i64) -> Result<Self, QueryError> {
        if end_ms < start_ms {
            return Err(QueryError::EndBeforeStart);
        }
        if step_ms <= 0 {
            return Err(QueryError::NonPositiveStep);
        }
        // i128: `end - start` overflows i64 for the extreme times Prometheus accepts.
        if (i128::from(end_ms) - i128::from(start_ms)) / i128::from(step_ms) > i128::from(MAX_STEPS)
        {
            return Err(QueryError::TooManySteps);
        }
        Ok(Steps {
            start_ms,
            end_ms,
            step_ms,
        })
    }

    pub fn start_ms(&self) -> i64 {
        self.start_ms
    }
    pub fn end_ms(&self) -> i64 {
        self.end_ms
    }
    pub fn step_ms(&self) -> i64 {
        self.step_ms
    }

    /// Every step time, in order.
    pub fn times(&self) -> impl Iterator<Item = i64> + use<> {
        let Steps {
            start_ms,
            end_ms,
            step_ms,
        } = *self;
        // At most MAX_STEPS + 1 items (checked in `new`), so the multiplication cannot overflow.
        let n = (i128::from(end_ms) - i128::from(start_ms)) / i128::from(step_ms);
        (0..=n as i64).map(move |i| start_ms + i * step_ms)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The text is not valid PromQL.
    #[error("parse error: {0}")]
    Parse(String),
    /// Valid PromQL that this version cannot evaluate; names the construct.
    #[error("unsupported expression: {0}; this version evaluates series selectors only")]
    Unsupported(String),
    /// A selector that would select every series.
    #[error("vector selector must contain at least one non-empty matcher")]
    EmptySelector,
    #[error("invalid regular expression {pattern:?} for label {label:?}: {reason}")]
    BadRegex {
        label: String,
        pattern: String,
        reason: String,
    },
    /// Only a series selector is accepted here (e.g. `match[]`): no range, offset or `@`.
    #[error("expected a series selector such as up{{job=\"node\"}}, got {0}")]
    NotASeriesSelector(String),
    #[error(
        "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector"
    )]
    RangeVectorInRangeQuery,
    #[error("end timestamp must not be before start time")]
    EndBeforeStart,
    #[error(
        "zero or negative query resolution step widths are not accepted. Try a positive integer"
    )]
    NonPositiveStep,
    #[error(
        "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"
    )]
    TooManySteps,
    #[error("query processing would load too many samples into memory in query execution")]
    TooManySamples,
    #[error(transparent)]
    Source(#[from] SourceError),
}

impl QueryError {
    /// True for errors caused by the query text itself (Prometheus reports them against the
    /// `query` parameter); false for range, execution and storage errors.
    pub fn is_query_text_error(&self) -> bool {
        matches!(
            self,
            QueryError::Parse(_)
                | QueryError::Unsupported(_)
                | QueryError::EmptySelector
                | QueryError::BadRegex { .. }
                | QueryError::NotASeriesSelector(_)
                | QueryError::RangeVectorInRangeQuery
        )
    }
}

/// Parses a query and keeps it only if this version can evaluate it.
pub fn parse(query: &str) -> Result<Expr, QueryError> {
    let expr = ast::parse(query).map_err(QueryError::Parse)?;
    from_ast(&expr)
}

/// Parses a plain series selector such as `up{job="node"}`, as `match[]` takes.
pub fn parse_series_selector(text: &str) -> Result<Vec<Matcher>, QueryError> {
    match parse(text)? {
        Expr::Vector(Selector {
            matchers,
            offset_ms: 0,
        }) => Ok(matchers),
        Expr::Vector(_) => Err(QueryError::NotASeriesSelector(
            "a selector with offset".into(),
        )),
        Expr::Matrix { .. } => Err(QueryError::NotASeriesSelector(
            "a range vector selector".into(),
        )),
    }
}

fn from_ast(expr: &ast::Expr) -> Result<Expr, QueryError> {
    let unsupported = |what: String| Err(QueryError::Unsupported(what));
    match expr {
        ast::Expr::VectorSelector(vs) => Ok(Expr::Vector(selector(vs)?)),
        ast::Expr::MatrixSelector(ms) => Ok(Expr::Matrix {
            selector: selector(&ms.vs)?,
            range_ms: duration_ms(ms.range),
        }),
        ast::Expr::Paren(p) => from_ast(&p.expr),
        ast::Expr::Call(c) => unsupported(format!("function call {}()", c.func.name)),
        ast::Expr::Aggregate(a) => unsupported(format!("aggregation {}()", a.op)),
        ast::Expr::Binary(b) => unsupported(format!("binary operator {}", b.op)),
        ast::Expr::Unary(_) => unsupported("unary minus".into()),
        ast::Expr::Subquery(_) => unsupported("subquery".into()),
        ast::Expr::NumberLiteral(n) => unsupported(format!("number literal {}", n.val)),
        ast::Expr::StringLiteral(s) => unsupported(format!("string literal {:?}", s.val)),
        ast::Expr::Extension(_) => unsupported("extension expression".into()),
    }
}

fn selector(vs: &ast::VectorSelector) -> Result<Selector, QueryError> {
    if vs.at.is_some() {
        return Err(QueryError::Unsupported("the @ modifier".into()));
    }
    if !vs.matchers.or_matchers.is_empty() {
        return Err(QueryError::Unsupported(
            "\"or\" between label matchers".into(),
        ));
    }
    let mut matchers = Vec::with_capacity(vs.matchers.matchers.len() + 1);
    if let Some(name) = &vs.name {
        matchers.push(new_matcher(METRIC_NAME, MatchOp::Equal, name, None)?);
    }
    for m in &vs.matchers.matchers {
        let (op, parsed) = match &m.op {
            AstOp::Equal => (MatchOp::Equal, None),
            AstOp::NotEqual => (MatchOp::NotEqual, None),
            AstOp::Re(re) => (MatchOp::Regex, Some(re.as_str())),
            AstOp::NotRe(re) => (MatchOp::NotRegex, Some(re.as_str())),
        };
        matchers.push(new_matcher(&m.name, op, &m.value, parsed)?);
    }
    if matchers.iter().all(Matcher::matches_empty) {
        return Err(QueryError::EmptySelector);
    }
    let offset_ms = match vs.offset {
        None => 0,
        Some(Offset::Pos(d)) => duration_ms(d),
        Some(Offset::Neg(d)) => -duration_ms(d),
    };
    Ok(Selector {
        matchers,
        offset_ms,
    })
}

/// `parsed` is the regex promql-parser compiled; it accepts some Go-isms (an unescaped `{`
/// that is not a repetition) that the `regex` crate rejects, so it is the fallback.
fn new_matcher(
    name: &str,
    op: MatchOp,
    value: &str,
    parsed: Option<&str>,
) -> Result<Matcher, QueryError> {
    Matcher::new(name, op, value).or_else(|e| {
        parsed
            .and_then(|p| Matcher::new(name, op, p).ok())
            .ok_or_else(|| QueryError::BadRegex {
                label: name.to_string(),
                pattern: value.to_string(),
                reason: e.to_string(),
            })
    })
}

fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Evaluates `expr` at `t_ms`.
pub fn instant_query(src: &dyn SeriesSource, expr: &Expr, t_ms: i64) -> Result<Value, QueryError> {
    instant_query_limited(src, expr, t_ms, MAX_SAMPLES)
}

/// Evaluates `expr` at every step. Only instant vector selectors are allowed.
pub fn range_query(
    src: &dyn SeriesSource,
    expr: &Expr,
    steps: &Steps,
) -> Result<Value, QueryError> {
    range_query_limited(src, expr, steps, MAX_SAMPLES)
}

fn instant_query_limited(
    src: &dyn SeriesSource,
    expr: &Expr,
    t_ms: i64,
    max_samples: usize,
) -> Result<Value, QueryError> {
    let mut loader = Loader {
        src,
        max_samples,
        loaded: 0,
    };
    match expr {
        Expr::Vector(sel) => {
            let end = t_ms.saturating_sub(sel.offset_ms);
            let series = loader.load(sel, window_start(end, LOOKBACK_DELTA_MS), end)?;
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
            let series = loader.load(selector, window_start(end, *range_ms), end)?;
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
    src: &dyn SeriesSource,
    expr: &Expr,
    steps: &Steps,
    max_samples: usize,
) -> Result<Value, QueryError> {
    let sel = match expr {
        Expr::Vector(sel) => sel,
        Expr::Matrix { .. } => return Err(QueryError::RangeVectorInRangeQuery),
    };
    let mut loader = Loader {
        src,
        max_samples,
        loaded: 0,
    };
    let first_end = steps.start_ms.saturating_sub(sel.offset_ms);
    let last_end = steps.end_ms.saturating_sub(sel.offset_ms);
    let series = loader.load(sel, window_start(first_end, LOOKBACK_DELTA_MS), last_end)?;
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

/// The first millisecond of the left-open window `(end - len, end]`.
fn window_start(end: i64, len: i64) -> i64 {
    end.saturating_sub(len).saturating_add(1)
}

/// Loads each selected series' points once, counting them against the sample limit.
struct Loader<'a> {
    src: &'a dyn SeriesSource,
    max_samples: usize,
    loaded: usize,
}

impl Loader<'_> {
    fn load(
        &mut self,
        sel: &Selector,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<(Labels, Vec<Point>)>, QueryError> {
        let series = self.src.select(&sel.matchers)?;
        let mut out = Vec::with_capacity(series.len());
        for (id, labels) in series {
            let points = self.src.points(id, start_ms, end_ms)?;
            self.loaded = self.loaded.saturating_add(points.len());
            if self.loaded > self.max_samples {
                return Err(QueryError::TooManySamples);
            }
            out.push((labels, points));
        }
        Ok(out)
    }
}

/// An in-memory [`SeriesSource`] for tests of this module and of [`crate::api`].
#[cfg(test)]
pub(crate) mod memsource {
    use crate::source::{Matcher, SeriesId, SeriesSource, SourceError};
    use outpost_shared::{Labels, Point};
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    #[derive(Default)]
    pub(crate) struct MemSource {
        series: Vec<(Labels, Vec<Point>)>,
        /// Every `points` call, to check that a query fetches each series once.
        pub(crate) fetches: Mutex<Vec<(SeriesId, i64, i64)>>,
        /// When set, every read fails with this message.
        fail: Option<String>,
    }

    impl MemSource {
        /// Points are given as `(ts, value)` and may be in any order.
        pub(crate) fn with(mut self, labels: Labels, points: &[(i64, f64)]) -> Self {
            let mut pts: Vec<Point> = points
                .iter()
                .map(|&(ts, value)| Point { ts, value })
                .collect();
            pts.sort_by_key(|p| p.ts);
            self.series.push((labels, pts));
            self
        }

        /// A source whose every read fails with `msg`.
        pub(crate) fn failing(msg: &str) -> Self {
            MemSource {
                fail: Some(msg.to_string()),
                ..MemSource::default()
            }
        }

        fn check(&self) -> Result<(), SourceError> {
            match &self.fail {
                Some(msg) => Err(SourceError(msg.clone())),
                None => Ok(()),
            }
        }
    }

    impl SeriesSource for MemSource {
        fn select(&self, matchers: &[Matcher]) -> Result<Vec<(SeriesId, Labels)>, SourceError> {
            self.check()?;
            let mut out: Vec<(SeriesId, Labels)> = self
                .series
                .iter()
                .enumerate()
                .filter(|(_, (l, _))| matchers.iter().all(|m| m.matches_labels(l)))
                .map(|(i, (l, _))| (i as SeriesId, l.clone()))
                .collect();
            out.sort_by(|a, b| a.1.cmp(&b.1));
            Ok(out)
        }

        fn points(
            &self,
            id: SeriesId,
            start_ms: i64,
            end_ms: i64,
        ) -> Result<Vec<Point>, SourceError> {
            self.check()?;
            self.fetches
                .lock()
                .expect("fetch log")
                .push((id, start_ms, end_ms));
            let pts = self
                .series
                .get(id as usize)
                .map(|s| s.1.as_slice())
                .unwrap_or_default();
            Ok(pts
                .iter()
                .copied()
                .filter(|p| start_ms <= p.ts && p.ts <= end_ms)
                .collect())
        }

        fn label_names(&self) -> Result<Vec<String>, SourceError> {
            self.check()?;
            let names: BTreeSet<String> = self
                .series
                .iter()
                .flat_map(|(l, _)| l.iter().map(|l| l.name.clone()))
                .collect();
            Ok(names.into_iter().collect())
        }

        fn label_values(&self, name: &str) -> Result<Vec<String>, SourceError> {
            self.check()?;
            let values: BTreeSet<String> = self
                .series
                .iter()
                .filter_map(|(l, _)| l.get(name).map(str::to_string))
                .collect();
            Ok(values.into_iter().collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::memsource::MemSource;
    use super::*;
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
    fn rejected_queries_name_the_problem() {
        let cases: &[(&str, &str)] = &[
            (
                "rate(up[5m])",
                "unsupported expression: function call rate(); this version evaluates series selectors only",
            ),
            (
                "sum(up)",
                "unsupported expression: aggregation sum(); this version evaluates series selectors only",
            ),
            (
                "up + up",
                "unsupported expression: binary operator +; this version evaluates series selectors only",
            ),
            (
                "-up",
                "unsupported expression: unary minus; this version evaluates series selectors only",
            ),
            (
                "up[5m:1m]",
                "unsupported expression: subquery; this version evaluates series selectors only",
            ),
            (
                "42",
                "unsupported expression: number literal 42; this version evaluates series selectors only",
            ),
            (
                r#""x""#,
                r#"unsupported expression: string literal "x"; this version evaluates series selectors only"#,
            ),
            (
                "up @ 100",
                "unsupported expression: the @ modifier; this version evaluates series selectors only",
            ),
            // promql-parser rejects these itself, with Prometheus' wording.
            (
                r#"{job=~".*"}"#,
                "parse error: vector selector must contain at least one non-empty matcher",
            ),
            (
                r#"{job=""}"#,
                "parse error: vector selector must contain at least one non-empty matcher",
            ),
        ];
        for (q, want) in cases {
            let err = parse(q).expect_err(q);
            assert_eq!(err.to_string(), *want, "{q}");
            assert!(err.is_query_text_error(), "{q}");
        }
        let err = parse("up{").expect_err("syntax");
        assert!(matches!(err, QueryError::Parse(_)), "{err}");
    }

    #[test]
    fn selectors_that_match_everything_are_rejected() {
        use promql_parser::label::{Matcher as AstMatcher, Matchers};
        let everything = [
            AstMatcher::new(AstOp::Equal, "job", ""),
            AstMatcher::new(AstOp::NotEqual, "job", "x"),
        ];
        let vs = ast::VectorSelector::new(None, Matchers::new(everything.to_vec()));
        assert!(matches!(selector(&vs), Err(QueryError::EmptySelector)));
        let named = ast::VectorSelector::new(Some("up".into()), Matchers::new(everything.to_vec()));
        assert_eq!(selector(&named).expect("named").matchers.len(), 3);
    }

    #[test]
    fn converts_matchers() {
        let Expr::Vector(sel) = parse(r#"x{a="1",b!="2",c=~"3|4",d!~"5"}"#).expect("parse") else {
            panic!("not a vector selector");
        };
        let got: Vec<(String, MatchOp, String)> = sel
            .matchers
            .iter()
            .map(|m| (m.name.clone(), m.op, m.value.clone()))
            .collect();
        let want = [
            ("__name__", MatchOp::Equal, "x"),
            ("a", MatchOp::Equal, "1"),
            ("b", MatchOp::NotEqual, "2"),
            ("c", MatchOp::Regex, "3|4"),
            ("d", MatchOp::NotRegex, "5"),
        ];
        let want: Vec<(String, MatchOp, String)> = want
            .iter()
            .map(|(n, o, v)| (n.to_string(), *o, v.to_string()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(sel.offset_ms, 0);
    }

    #[test]
    fn series_selectors_take_no_range_or_offset() {
        assert_eq!(
            parse_series_selector(r#"up{job="x"}"#)
                .expect("selector")
                .len(),
            2
        );
        let err = parse_series_selector("up[5m]").expect_err("range");
        assert_eq!(
            err.to_string(),
            r#"expected a series selector such as up{job="node"}, got a range vector selector"#
        );
        let err = parse_series_selector("up offset 5m").expect_err("offset");
        assert_eq!(
            err.to_string(),
            r#"expected a series selector such as up{job="node"}, got a selector with offset"#
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
