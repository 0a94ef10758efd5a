//! The postings index: every series' label set, and for each label name and value the
//! series that carry it. Held in memory, rebuilt from the `series` column family at open.

use crate::SeriesId;
use outpost_promql::{MatchOp, Matcher};
use outpost_shared::Labels;
use std::collections::HashMap;

/// The in-memory inverted index.
#[derive(Default)]
pub(crate) struct Index {
    /// Series id by label set.
    pub(crate) by_labels: HashMap<Labels, SeriesId>,
    /// Label set by series id.
    pub(crate) labels: HashMap<SeriesId, Labels>,
    /// Postings: label name → value → series ids, in insertion order.
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
                .or_default()
                .push(id);
        }
        self.by_labels.insert(l.clone(), id);
        self.labels.insert(id, l);
    }

    /// Every series whose labels satisfy all matchers, sorted by labels.
    pub(crate) fn select(&self, matchers: &[Matcher]) -> Vec<(SeriesId, Labels)> {
        let index = self;
        let candidates: Box<dyn Iterator<Item = SeriesId>> = match matchers
            .iter()
            .filter(|m| m.op == MatchOp::Equal && !m.value.is_empty())
            .filter_map(|m| {
                Some(
                    index
                        .postings
                        .get(&m.name)?
                        .get(&m.value)
                        .map(|v| v.as_slice())
                        .unwrap_or(&[]),
                )
            })
            .min_by_key(|p| p.len())
        {
            Some(p) => Box::new(p.iter().copied()),
            None if matchers
                .iter()
                .any(|m| m.op == MatchOp::Equal && !m.value.is_empty()) =>
            {
                Box::new(std::iter::empty())
            }
            None => Box::new(index.labels.keys().copied()),
        };
        let mut out: Vec<(SeriesId, Labels)> = candidates
            .filter_map(|id| {
                let l = index.labels.get(&id)?;
                matchers
                    .iter()
                    .all(|m| m.matches_labels(l))
                    .then(|| (id, l.clone()))
            })
            .collect();
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
