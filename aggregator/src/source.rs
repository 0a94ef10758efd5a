//! The read side of storage as the query engine sees it. Storage implements it; query
//! evaluation and the HTTP API depend only on this trait, so they can be tested over an
//! in-memory source.

use outpost_shared::{Labels, Point};
use regex::Regex;

/// A stored series' number, stable for the life of the data directory.
pub type SeriesId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

/// One label matcher. As in Prometheus, a label that is absent matches as the empty string,
/// and regexes are anchored at both ends.
#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    re: Option<Regex>,
}

impl Matcher {
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

#[derive(Debug, thiserror::Error)]
#[error("storage read failed: {0}")]
pub struct SourceError(pub String);

/// Read access to stored series.
pub trait SeriesSource: Send + Sync {
    /// Every series whose labels satisfy all matchers, sorted by labels.
    fn select(&self, matchers: &[Matcher]) -> Result<Vec<(SeriesId, Labels)>, SourceError>;
    /// The series' points with `start_ms <= ts <= end_ms`, sorted by time, one per timestamp.
    fn points(&self, id: SeriesId, start_ms: i64, end_ms: i64) -> Result<Vec<Point>, SourceError>;
    /// All label names in use, sorted.
    fn label_names(&self) -> Result<Vec<String>, SourceError>;
    /// All values of one label name, sorted.
    fn label_values(&self, name: &str) -> Result<Vec<String>, SourceError>;
}
