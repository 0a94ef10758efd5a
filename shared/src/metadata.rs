//! Metric metadata: what a metric family's source declares about it — its type, `# HELP`
//! text and `# UNIT` — as Prometheus keeps it per family and serves it at
//! `/api/v1/metadata`.
//!
//! Metadata travels beside the samples, not inside batches: the agent sends a family's
//! metadata on the control stream when it first sees it or it changes, and all of it again
//! on every new connection (see `docs/WIRE.md`).

use serde::{Deserialize, Serialize};

/// A metric family's type, with Prometheus' names ([`MetricType::as_str`]). The text
/// format's `untyped` is [`MetricType::Unknown`], as in Prometheus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MetricType {
    /// A monotonically increasing value.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
    /// OpenMetrics' gauge histogram.
    GaugeHistogram,
    /// Quantiles, sum and count.
    Summary,
    /// OpenMetrics' info: labels, value always 1.
    Info,
    /// OpenMetrics' state set.
    StateSet,
    /// Declared without a type, or `untyped`.
    Unknown,
}

impl MetricType {
    /// The name Prometheus' metadata API uses: `counter`, `gauge`, `histogram`,
    /// `gaugehistogram`, `summary`, `info`, `stateset` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::GaugeHistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
            MetricType::Unknown => "unknown",
        }
    }

    /// The type named `s` in either exposition format (`untyped` is [`MetricType::Unknown`]).
    pub fn parse(s: &str) -> Option<MetricType> {
        Some(match s {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "gaugehistogram" => MetricType::GaugeHistogram,
            "summary" => MetricType::Summary,
            "info" => MetricType::Info,
            "stateset" => MetricType::StateSet,
            "unknown" | "untyped" => MetricType::Unknown,
            _ => return None,
        })
    }
}

/// What a source declares about one metric family.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Metadata {
    /// The family's type; [`MetricType::Unknown`] when only HELP or UNIT was declared.
    #[serde(rename = "type")]
    pub kind: MetricType,
    /// The `# HELP` text, unescaped; empty when none was declared.
    pub help: String,
    /// The `# UNIT` (OpenMetrics) or OTLP unit; empty when none was declared.
    pub unit: String,
}

impl Metadata {
    /// Metadata of type `kind` with `help` and no unit.
    pub fn new(kind: MetricType, help: impl Into<String>) -> Metadata {
        Metadata {
            kind,
            help: help.into(),
            unit: String::new(),
        }
    }

    /// Encodes for storage (postcard); [`Metadata::decode`] reads it back.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes what [`Metadata::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Metadata, String> {
        postcard::from_bytes(bytes).map_err(|e| format!("metadata does not decode: {e}"))
    }
}

impl Default for Metadata {
    fn default() -> Metadata {
        Metadata::new(MetricType::Unknown, "")
    }
}

/// One family's metadata as it travels in a metadata frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FamilyMetadata {
    /// The metric family's name, as declared (`http_requests_total`, or an OpenMetrics
    /// counter's name without `_total`).
    pub family: String,
    /// What its source declares.
    pub meta: Metadata,
}

/// Families per metadata frame, at most; more are split over several frames.
pub const MAX_FAMILIES_PER_FRAME: usize = 1000;

/// Longest accepted family name, HELP text and unit, in bytes; longer ones are truncated by
/// the sender (at a character boundary) and refused by the receiver.
pub const MAX_TEXT_BYTES: usize = 4096;

/// Cuts `s` to at most [`MAX_TEXT_BYTES`] bytes at a character boundary.
pub fn truncate_text(s: &mut String) {
    if s.len() > MAX_TEXT_BYTES {
        let mut end = MAX_TEXT_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// Checks one received entry: a non-empty family name and texts within
/// [`MAX_TEXT_BYTES`]. The error names the problem.
pub fn validate(f: &FamilyMetadata) -> Result<(), String> {
    if f.family.is_empty() {
        return Err("metadata for a family with an empty name".into());
    }
    for (what, s) in [
        ("family name", &f.family),
        ("help", &f.meta.help),
        ("unit", &f.meta.unit),
    ] {
        if s.len() > MAX_TEXT_BYTES {
            return Err(format!(
                "metadata {what} of {} bytes exceeds {MAX_TEXT_BYTES}",
                s.len()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_have_prometheus_names() {
        for t in [
            MetricType::Counter,
            MetricType::Gauge,
            MetricType::Histogram,
            MetricType::GaugeHistogram,
            MetricType::Summary,
            MetricType::Info,
            MetricType::StateSet,
            MetricType::Unknown,
        ] {
            assert_eq!(MetricType::parse(t.as_str()), Some(t));
        }
        assert_eq!(MetricType::parse("untyped"), Some(MetricType::Unknown));
        assert_eq!(MetricType::parse("Counter"), None);
    }

    #[test]
    fn storage_encoding_round_trips_and_rejects_garbage() {
        let m = Metadata {
            kind: MetricType::Histogram,
            help: "Request latency. ✓".into(),
            unit: "seconds".into(),
        };
        assert_eq!(Metadata::decode(&m.encode()), Ok(m));
        assert!(Metadata::decode(&[200]).is_err());
        assert!(Metadata::decode(&[]).is_err());
    }

    #[test]
    fn long_texts_are_cut_at_a_character_boundary_and_refused() {
        let mut s = "é".repeat(MAX_TEXT_BYTES);
        truncate_text(&mut s);
        assert!(s.len() <= MAX_TEXT_BYTES && s.len() >= MAX_TEXT_BYTES - 1);
        let mut f = FamilyMetadata {
            family: "m".into(),
            meta: Metadata::new(MetricType::Gauge, s),
        };
        assert_eq!(validate(&f), Ok(()));
        f.meta.unit = "x".repeat(MAX_TEXT_BYTES + 1);
        assert!(validate(&f).unwrap_err().contains("unit"));
        f.family.clear();
        assert!(validate(&f).unwrap_err().contains("empty name"));
    }
}
