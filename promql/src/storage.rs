//! The read side of a time-series store as the engine sees it, in Prometheus' vocabulary:
//! a [`Queryable`] opens a [`Querier`] over a time range; the querier selects series by
//! label [`Matcher`]s, reads their points, and lists label names and values. The engine and
//! the HTTP API depend only on these traits, so they are tested over [`crate::memory`].

use crate::rollup::{Bucket, RollupInfo, buckets_of};
use outpost_shared::model::is_stale;
use outpost_shared::{Labels, Point};
use regex::Regex;
use std::sync::Arc;

/// A stored series' number, stable for the life of the data directory (Prometheus'
/// `storage.SeriesRef`).
pub type SeriesRef = u64;

/// How a [`Matcher`] compares a label's value: `=`, `!=`, `=~`, `!~` (ordered so, as
/// Prometheus and Alertmanager order matcher types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MatchOp {
    /// `=`: the value equals.
    Equal,
    /// `!=`: the value differs.
    NotEqual,
    /// `=~`: the whole value matches the regular expression.
    Regex,
    /// `!~`: the whole value does not match the regular expression.
    NotRegex,
}

impl MatchOp {
    /// The operator as written: `=`, `!=`, `=~` or `!~`.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// One label matcher. As in Prometheus, a label that is absent matches as the empty string,
/// and regexes are anchored at both ends.
#[derive(Clone, Debug)]
pub struct Matcher {
    /// The label name.
    pub name: String,
    /// The comparison.
    pub op: MatchOp,
    /// The value or, for `=~`/`!~`, the regular expression as written.
    pub value: String,
    re: Option<Regex>,
}

impl Matcher {
    /// A matcher; for `=~` and `!~`, `value` is compiled anchored (`^(?:value)$`).
    ///
    /// # Errors
    /// `value` is not a regular expression the `regex` crate accepts.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Self, regex::Error> {
        let re = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(Regex::new(&format!("^(?:{value})$"))?),
            _ => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            re,
        })
    }

    /// Whether a label value `v` satisfies the matcher.
    pub fn matches(&self, v: &str) -> bool {
        match self.op {
            MatchOp::Equal => v == self.value,
            MatchOp::NotEqual => v != self.value,
            MatchOp::Regex => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRegex => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }

    /// Whether a series with these labels is selected by this matcher.
    pub fn matches_labels(&self, l: &Labels) -> bool {
        self.matches(l.get(&self.name).unwrap_or(""))
    }

    /// True when the matcher also selects series that lack the label.
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }
}

/// Per series, the timestamps of its points that are not stale markers, in order: what
/// [`Querier::timestamps_many`] answers, made from what [`Querier::points_many`] read.
pub fn unstale_timestamps(series: Vec<Vec<Point>>) -> Vec<Vec<i64>> {
    series
        .into_iter()
        .map(|pts| {
            pts.into_iter()
                .filter(|p| !is_stale(p.value))
                .map(|p| p.ts)
                .collect()
        })
        .collect()
}

/// A read from the store failed; the message says what and where.
#[derive(Debug, thiserror::Error)]
#[error("storage read failed: {0}")]
pub struct StorageError(pub String);

/// A store that can be queried: opens [`Querier`]s over time ranges (Prometheus'
/// `storage.Queryable`).
pub trait Queryable: Send + Sync {
    /// A reader of the points with `mint_ms <= ts <= maxt_ms` (ms since the Unix epoch).
    ///
    /// # Errors
    /// The store cannot be read.
    fn querier(&self, mint_ms: i64, maxt_ms: i64) -> Result<Box<dyn Querier + '_>, StorageError>;
}

/// Reads series from a store within the time range it was opened for (Prometheus'
/// `storage.Querier`). Every method may fail with a [`StorageError`]. Shared between
/// threads: the engine reads a selector's next batch of series on a thread of its own
/// while it folds the current one.
pub trait Querier: Sync {
    /// Every series whose labels satisfy all matchers, sorted by labels (shared: a store
    /// that keeps label sets in `Arc`s hands them out without copying).
    fn select(&self, matchers: &[Matcher]) -> Result<Vec<(SeriesRef, Arc<Labels>)>, StorageError>;
    /// The series' points with `start_ms <= ts <= end_ms`, clipped to the querier's range,
    /// sorted by time, one per timestamp (the newest write wins).
    fn points(&self, id: SeriesRef, start_ms: i64, end_ms: i64)
    -> Result<Vec<Point>, StorageError>;
    /// Whether the series has data in `[start_ms, end_ms]`, for the metadata APIs' `start`
    /// and `end`. A store may answer from coarser spans (Prometheus answers by block); the
    /// default reads the points.
    fn has_points(&self, id: SeriesRef, start_ms: i64, end_ms: i64) -> Result<bool, StorageError> {
        Ok(!self.points(id, start_ms, end_ms)?.is_empty())
    }
    /// The rollups the store keeps ([`crate::rollup`]); `None` (the default): none, and the
    /// engine reads raw points only.
    fn rollups(&self) -> Option<RollupInfo> {
        None
    }
    /// How many raw points a rollup bucket of resolution `res_ms` summarises, on average,
    /// over the days in `[start_ms, end_ms]` for which the store keeps both; `None` (the
    /// default) when it cannot tell. The engine reads a long-step query's buckets only
    /// where they summarise at least [`crate::rollup::MIN_POINTS_PER_BUCKET`] points: a
    /// bucket takes five times a point's memory, so over sparse data raw points are the
    /// cheaper read.
    fn points_per_bucket(&self, _start_ms: i64, _end_ms: i64, _res_ms: i64) -> Option<f64> {
        None
    }
    /// The series' rollup buckets of resolution `res_ms` that start in
    /// `[start_ms, end_ms]`, oldest first. The default makes them from the raw points.
    ///
    /// # Errors
    /// The store cannot be read.
    fn buckets(
        &self,
        id: SeriesRef,
        start_ms: i64,
        end_ms: i64,
        res_ms: i64,
    ) -> Result<Vec<Bucket>, StorageError> {
        let pts = self.points(id, start_ms, end_ms.saturating_add(res_ms - 1))?;
        Ok(buckets_of(&pts, res_ms))
    }
    /// [`Querier::points`] of every series in `ids` at once: `Some(out)` with `out[i]` the
    /// points of `ids[i]`. A store may read them in one pass over its time partitions
    /// instead of one seek per series and partition. `stop` is called with the number of
    /// points read so far, after each series or partition; when it returns true the read
    /// ends with `Ok(None)` (a query over its sample limit, or cancelled).
    ///
    /// # Errors
    /// The store cannot be read.
    fn points_many(
        &self,
        ids: &[SeriesRef],
        start_ms: i64,
        end_ms: i64,
        stop: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Option<Vec<Vec<Point>>>, StorageError> {
        let mut out = Vec::with_capacity(ids.len());
        let mut read = 0usize;
        for &id in ids {
            let p = self.points(id, start_ms, end_ms)?;
            read = read.saturating_add(p.len());
            out.push(p);
            if stop(read) {
                return Ok(None);
            }
        }
        Ok(Some(out))
    }
    /// The timestamps of the points of every series in `ids` that are not stale markers,
    /// as [`Querier::points_many`] reads points (`stop` counts points read): for an
    /// evaluation that only asks which windows hold points (`count` or `group` of a range
    /// function). A store may skip decoding values it can tell are no stale markers; the
    /// default reads the points.
    ///
    /// # Errors
    /// The store cannot be read.
    fn timestamps_many(
        &self,
        ids: &[SeriesRef],
        start_ms: i64,
        end_ms: i64,
        stop: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Option<Vec<Vec<i64>>>, StorageError> {
        Ok(self
            .points_many(ids, start_ms, end_ms, stop)?
            .map(unstale_timestamps))
    }
    /// [`Querier::buckets`] of every series in `ids` at once, as [`Querier::points_many`]
    /// reads points (`stop` counts buckets).
    ///
    /// # Errors
    /// The store cannot be read.
    fn buckets_many(
        &self,
        ids: &[SeriesRef],
        start_ms: i64,
        end_ms: i64,
        res_ms: i64,
        stop: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Option<Vec<Vec<Bucket>>>, StorageError> {
        let mut out = Vec::with_capacity(ids.len());
        let mut read = 0usize;
        for &id in ids {
            let b = self.buckets(id, start_ms, end_ms, res_ms)?;
            read = read.saturating_add(b.len());
            out.push(b);
            if stop(read) {
                return Ok(None);
            }
        }
        Ok(Some(out))
    }
    /// All label names in use, sorted.
    fn label_names(&self) -> Result<Vec<String>, StorageError>;
    /// All values of one label name, sorted.
    fn label_values(&self, name: &str) -> Result<Vec<String>, StorageError>;
}
