//! Silences in Alertmanager 0.25's v2 API shape (`/api/v2/silences`): matchers with
//! `isRegex` and `isEqual`, an active window, who and why. An alert is silenced while an
//! active silence's matchers all match its labels (a label it lacks matches as the empty
//! string; regular expressions are anchored).

use crate::route::{matcher, matches_all};
use crate::rule::LabelMap;
use outpost_promql::{MatchOp, Matcher};
use serde::{Deserialize, Serialize};

/// One matcher as the v2 API writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SilenceMatcher {
    /// The label name.
    pub name: String,
    /// The value or regular expression.
    pub value: String,
    /// A regular expression (`=~`/`!~`) rather than a value.
    pub is_regex: bool,
    /// Matching (`=`/`=~`) rather than not matching (`!=`/`!~`); true when absent.
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

impl SilenceMatcher {
    /// The label matcher it stands for.
    ///
    /// # Errors
    /// The regular expression does not compile.
    pub fn matcher(&self) -> Result<Matcher, String> {
        let op = match (self.is_regex, self.is_equal) {
            (false, true) => MatchOp::Equal,
            (false, false) => MatchOp::NotEqual,
            (true, true) => MatchOp::Regex,
            (true, false) => MatchOp::NotRegex,
        };
        matcher(&self.name, op, &self.value)
    }
}

/// A silence: what it mutes and when.
#[derive(Clone, Debug)]
pub struct Silence {
    /// Its id.
    pub id: String,
    /// What an alert must match to be muted.
    pub matchers: Vec<Matcher>,
    /// Active from (inclusive) to (exclusive), ms since the Unix epoch.
    pub starts_at_ms: i64,
    /// See `starts_at_ms`.
    pub ends_at_ms: i64,
    /// Who made it.
    pub created_by: String,
    /// Why.
    pub comment: String,
}

impl Silence {
    /// A silence from v2 API matchers; Alertmanager's checks: at least one matcher, and
    /// not every matcher may match the empty string (a silence must not mute everything).
    ///
    /// # Errors
    /// What Alertmanager would refuse the silence for.
    pub fn new(
        id: &str,
        matchers: &[SilenceMatcher],
        starts_at_ms: i64,
        ends_at_ms: i64,
        created_by: &str,
        comment: &str,
    ) -> Result<Silence, String> {
        if matchers.is_empty() {
            return Err("at least one matcher required".into());
        }
        let ms = matchers
            .iter()
            .map(SilenceMatcher::matcher)
            .collect::<Result<Vec<_>, _>>()?;
        if ms.iter().all(|m| m.matches("")) {
            return Err("at least one matcher must not match the empty string".into());
        }
        if ends_at_ms < starts_at_ms {
            return Err("end time must not be before start time".into());
        }
        Ok(Silence {
            id: id.to_string(),
            matchers: ms,
            starts_at_ms,
            ends_at_ms,
            created_by: created_by.to_string(),
            comment: comment.to_string(),
        })
    }

    /// Whether it is in force at `now_ms`.
    pub fn active(&self, now_ms: i64) -> bool {
        self.starts_at_ms <= now_ms && now_ms < self.ends_at_ms
    }

    /// Whether it mutes an alert with `labels` at `now_ms`.
    pub fn mutes(&self, labels: &LabelMap, now_ms: i64) -> bool {
        self.active(now_ms) && matches_all(&self.matchers, labels)
    }
}

/// The ids of the silences muting an alert with `labels` at `now_ms`, in the given order.
pub fn silenced_by<'a>(silences: &'a [Silence], labels: &LabelMap, now_ms: i64) -> Vec<&'a str> {
    silences
        .iter()
        .filter(|s| s.mutes(labels, now_ms))
        .map(|s| s.id.as_str())
        .collect()
}
