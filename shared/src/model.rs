//! The data model shared by every part of Outpost: labels, series and the batches that carry
//! their points from an agent to the aggregator.

use std::fmt;

/// The label that holds a series' metric name, as in Prometheus.
pub const METRIC_NAME: &str = "__name__";

/// One label pair.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    /// The label name.
    pub name: String,
    /// The label value.
    pub value: String,
}

/// A series' identity: label pairs sorted by name, names unique, the metric name stored as
/// `__name__` like every other label.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<Label>);

impl Labels {
    /// Builds a label set from pairs in any order. A later pair with the same name replaces an
    /// earlier one; pairs with an empty value are left out, as Prometheus treats them as absent.
    pub fn new<N, V>(pairs: impl IntoIterator<Item = (N, V)>) -> Self
    where
        N: Into<String>,
        V: Into<String>,
    {
        let mut v: Vec<Label> = Vec::new();
        for (n, val) in pairs {
            let (name, value) = (n.into(), val.into());
            match v.iter_mut().find(|l| l.name == name) {
                Some(l) => l.value = value,
                None => v.push(Label { name, value }),
            }
        }
        v.retain(|l| !l.value.is_empty());
        v.sort();
        Labels(v)
    }

    /// A metric name plus further pairs.
    pub fn metric<'a>(name: &'a str, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self::new(std::iter::once((METRIC_NAME, name)).chain(pairs))
    }

    /// Wraps pairs that are already sorted by name and unique; used by decoders that have
    /// checked this themselves.
    pub fn from_sorted(v: Vec<Label>) -> Option<Self> {
        let ok = v.windows(2).all(|w| w[0].name < w[1].name);
        ok.then_some(Labels(v))
    }

    /// The value of label `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|l| l.name.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].value.as_str())
    }

    /// The value of `__name__`, if set.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// Returns a copy with `name` set to `value` (replacing any earlier value).
    pub fn with(&self, name: &str, value: &str) -> Self {
        let mut v = self.0.clone();
        match v.binary_search_by(|l| l.name.as_str().cmp(name)) {
            Ok(i) => v[i].value = value.to_string(),
            Err(i) => v.insert(
                i,
                Label {
                    name: name.to_string(),
                    value: value.to_string(),
                },
            ),
        }
        Labels(v)
    }

    /// The pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.0.iter()
    }

    /// The pairs, sorted by name; with [`Labels::from_sorted`] a caller can add labels
    /// without copying the others.
    pub fn into_vec(self) -> Vec<Label> {
        self.0
    }

    /// How many pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for the empty label set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Labels {
    /// Prometheus' notation: `name{a="1", b="2"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = self.metric_name() {
            f.write_str(n)?;
        }
        f.write_str("{")?;
        let mut first = true;
        for l in self.0.iter().filter(|l| l.name != METRIC_NAME) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{}={:?}", l.name, l.value)?;
        }
        f.write_str("}")
    }
}

/// One point of a series: a timestamp in milliseconds since the Unix epoch and a value.
/// Equality compares the value's bits, so NaN payloads (such as Prometheus' stale marker) are
/// kept apart and a NaN equals itself.
#[derive(Clone, Copy, Debug)]
pub struct Point {
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    /// The value.
    pub value: f64,
}

impl PartialEq for Point {
    fn eq(&self, o: &Self) -> bool {
        self.ts == o.ts && self.value.to_bits() == o.value.to_bits()
    }
}
impl Eq for Point {}

/// The bit pattern Prometheus writes to mark a series stale.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// A float as Go's `strconv.FormatFloat(v, 'g', -1, 64)` (and `fmt.Sprint`), which
/// Prometheus uses in its text exposition and its query prettier: `NaN`, `+Inf`, `-Inf`;
/// otherwise the shortest digits that read back exactly, in exponent form when the decimal
/// exponent is below -4 or at least 6 (`1e+06`, `5.0976e+06`, `2.5e-05`), plain otherwise
/// (`999999`, `0.0001`).
pub fn format_go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        return format!("{v}");
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

/// Prometheus' stale marker as a float.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN)
}

/// Whether `v` is Prometheus' stale marker (its exact bits, not any NaN).
pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN
}

/// The points of one series inside a batch, in the order they were taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesPoints {
    /// The series.
    pub labels: Labels,
    /// Its points.
    pub points: Vec<Point>,
}

/// What an agent sends in one go: usually one collection cycle.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// One entry per series, in the order collected.
    pub series: Vec<SeriesPoints>,
}

impl Batch {
    /// Points in the batch.
    pub fn sample_count(&self) -> usize {
        self.series.iter().map(|s| s.points.len()).sum()
    }

    /// Adds one point, as a new series entry (series are not merged: a cycle emits each once).
    pub fn push(&mut self, labels: Labels, ts: i64, value: f64) {
        self.series.push(SeriesPoints {
            labels,
            points: vec![Point { ts, value }],
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_sorted_deduplicated_and_drop_empty_values() {
        let l = Labels::new([("b", "2"), ("a", "1"), ("b", "3"), ("c", "")]);
        let names: Vec<_> = l
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(names, vec![("a", "1"), ("b", "3")]);
        assert_eq!(l.get("b"), Some("3"));
        assert_eq!(l.get("c"), None);
    }

    #[test]
    fn display_uses_prometheus_notation() {
        let l = Labels::metric("up", [("job", "node"), ("instance", "h:1")]);
        assert_eq!(l.to_string(), r#"up{instance="h:1", job="node"}"#);
    }

    #[test]
    fn from_sorted_rejects_unsorted_or_duplicate_names() {
        let lab = |n: &str| Label {
            name: n.into(),
            value: "v".into(),
        };
        assert!(Labels::from_sorted(vec![lab("a"), lab("b")]).is_some());
        assert!(Labels::from_sorted(vec![lab("b"), lab("a")]).is_none());
        assert!(Labels::from_sorted(vec![lab("a"), lab("a")]).is_none());
    }

    #[test]
    fn points_compare_nan_by_bits() {
        let a = Point {
            ts: 1,
            value: stale_nan(),
        };
        assert_eq!(a, a);
        assert_ne!(
            a,
            Point {
                ts: 1,
                value: f64::NAN
            }
        );
    }
}
