//! The postings index: every series' label set, and for each label name and value the
//! series that carry it. Held in memory, rebuilt from the `series` column family at open.

use crate::SeriesId;
use outpost_promql::{MatchOp, Matcher};
use outpost_shared::Labels;
use std::collections::HashMap;
use std::sync::Arc;

/// The in-memory inverted index.
#[derive(Default)]
pub(crate) struct Index {
    /// Series id by label set.
    pub(crate) by_labels: HashMap<Labels, SeriesId>,
    /// Label set by series id, shared with query results.
    pub(crate) labels: HashMap<SeriesId, Arc<Labels>>,
    /// Postings: label name → value → series ids, ascending.
    pub(crate) postings: HashMap<String, HashMap<String, Vec<SeriesId>>>,
}

impl Index {
    /// Adds a series to every posting list of its labels.
    pub(crate) fn insert(&mut self, id: SeriesId, l: Labels) {
        for lab in l.iter() {
            self.postings
                .entry(lab.name.clone())
                .or_default()
                .entry(lab.value.clone())
                .or_default();
            let ids = self
                .postings
                .get_mut(&lab.name)
                .and_then(|v| v.get_mut(&lab.value))
                .expect("just inserted");
            // Ids are handed out in ascending order; keep the list sorted regardless.
            match ids.last() {
                Some(&last) if last >= id => {
                    if let Err(at) = ids.binary_search(&id) {
                        ids.insert(at, id);
                    }
                }
                _ => ids.push(id),
            }
        }
        self.by_labels.insert(l.clone(), id);
        self.labels.insert(id, Arc::new(l));
    }

    /// The series a matcher can select, from the postings, when it needs a value (an
    /// equality with a non-empty value, or a regular expression that does not match the
    /// empty string, as Prometheus' `PostingsForMatchers` narrows): the posting list of
    /// the value, or the union of those of the values it matches, ascending. `None` when
    /// the postings cannot narrow it (every series is a candidate).
    fn postings_for(&self, m: &Matcher) -> Option<std::borrow::Cow<'_, [SeriesId]>> {
        use std::borrow::Cow;
        match m.op {
            MatchOp::Equal if !m.value.is_empty() => Some(
                self.postings
                    .get(&m.name)
                    .and_then(|vals| vals.get(&m.value))
                    .map_or(Cow::Borrowed(&[][..]), |v| Cow::Borrowed(v.as_slice())),
            ),
            MatchOp::Regex if !m.matches_empty() => {
                let Some(vals) = self.postings.get(&m.name) else {
                    return Some(Cow::Borrowed(&[]));
                };
                let mut lists: Vec<&[SeriesId]> = vals
                    .iter()
                    .filter(|(v, _)| m.matches(v))
                    .map(|(_, ids)| ids.as_slice())
                    .collect();
                if lists.len() == 1 {
                    return lists.pop().map(Cow::Borrowed);
                }
                let mut ids: Vec<SeriesId> = lists.concat();
                ids.sort_unstable();
                ids.dedup();
                Some(Cow::Owned(ids))
            }
            _ => None,
        }
    }

    /// Every series whose labels satisfy all matchers, sorted by labels.
    ///
    /// The matchers the postings can answer are intersected there (smallest list first);
    /// only the others are checked against each candidate's labels.
    pub(crate) fn select(&self, matchers: &[Matcher]) -> Vec<(SeriesId, Arc<Labels>)> {
        let mut lists = Vec::new();
        let mut rest = Vec::new();
        for m in matchers {
            match self.postings_for(m) {
                Some(l) => lists.push(l),
                None => rest.push(m),
            }
        }
        lists.sort_by_key(|l| l.len());
        let keep = |id: SeriesId| {
            let l = self.labels.get(&id)?;
            rest.iter()
                .all(|m| m.matches_labels(l))
                .then(|| (id, l.clone()))
        };
        let mut out: Vec<(SeriesId, Arc<Labels>)> = match lists.split_first() {
            Some((first, others)) => first
                .iter()
                .copied()
                .filter(|id| others.iter().all(|o| o.binary_search(id).is_ok()))
                .filter_map(keep)
                .collect(),
            None => self.labels.keys().copied().filter_map(keep).collect(),
        };
        out.sort_by(|a, b| a.1.cmp(&b.1));
        out
    }

    /// Cardinality statistics with the `top` largest entries of each list, computed as
    /// Prometheus' head postings statistics (`/api/v1/status/tsdb`).
    pub(crate) fn stats(&self, top: usize) -> CardinalityStats {
        let mut by_metric = vec![];
        let mut values_by_name = vec![];
        let mut bytes_by_name = vec![];
        let mut by_pair = vec![];
        let mut pairs = 0;
        for (name, values) in &self.postings {
            values_by_name.push((name.clone(), values.len() as u64));
            let mut bytes = 0u64;
            for (value, ids) in values {
                let n = ids.len() as u64;
                pairs += 1;
                bytes += value.len() as u64 * n;
                if name == outpost_shared::model::METRIC_NAME {
                    by_metric.push((value.clone(), n));
                }
                by_pair.push((format!("{name}={value}"), n));
            }
            bytes_by_name.push((name.clone(), bytes));
        }
        let top_n = |mut v: Vec<(String, u64)>| {
            v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            v.truncate(top);
            v
        };
        CardinalityStats {
            series: self.labels.len() as u64,
            label_pairs: pairs,
            series_by_metric_name: top_n(by_metric),
            values_by_label_name: top_n(values_by_name),
            bytes_by_label_name: top_n(bytes_by_name),
            series_by_label_pair: top_n(by_pair),
        }
    }

    /// All label names in use, sorted.
    pub(crate) fn label_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.postings.keys().cloned().collect();
        v.sort();
        v
    }

    /// All values of one label name, sorted.
    pub(crate) fn label_values(&self, name: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .postings
            .get(name)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// The index's cardinality, as Prometheus' `/api/v1/status/tsdb` reports its head: totals,
/// and lists of `(name, count)` with the largest first (ties by name).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CardinalityStats {
    /// Series stored.
    pub series: u64,
    /// Distinct `name=value` label pairs.
    pub label_pairs: u64,
    /// Series per metric name.
    pub series_by_metric_name: Vec<(String, u64)>,
    /// Distinct values per label name.
    pub values_by_label_name: Vec<(String, u64)>,
    /// Bytes of label values per label name: each value's length times the series carrying
    /// it.
    pub bytes_by_label_name: Vec<(String, u64)>,
    /// Series per `name=value` pair.
    pub series_by_label_pair: Vec<(String, u64)>,
}
