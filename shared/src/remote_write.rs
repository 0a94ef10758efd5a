//! Prometheus remote_write 1.0 messages: the protobuf `WriteRequest` (from Prometheus'
//! `prompb/remote.proto` and `types.proto`, field numbers as there) in a snappy block, as
//! `POST /api/v1/write` bodies carry them (`Content-Encoding: snappy`,
//! `Content-Type: application/x-protobuf`).
//!
//! Only what remote_write 1.0 defines for float samples is kept: labels, samples and metric
//! metadata. Exemplars and native histograms (fields 3 and 4 of `TimeSeries`) are skipped by
//! the decoder as unknown fields.

use crate::model::{Label, Labels};
use prost::Message;

/// One remote_write request: series with their samples, and optional metadata.
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    /// The series, each with its samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    /// Metric family metadata (TYPE, HELP, UNIT), as Prometheus sends it every minute.
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// One series and its samples.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    /// The series' labels, `__name__` among them; Prometheus sends them sorted by name.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<ProtoLabel>,
    /// The samples, oldest first.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<ProtoSample>,
}

impl TimeSeries {
    /// A series from label pairs (any order) and `(ms, value)` samples.
    pub fn new<N: AsRef<str>, V: AsRef<str>>(labels: &[(N, V)], samples: &[(i64, f64)]) -> Self {
        TimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| ProtoLabel {
                    name: n.as_ref().to_string(),
                    value: v.as_ref().to_string(),
                })
                .collect(),
            samples: samples
                .iter()
                .map(|&(timestamp, value)| ProtoSample { value, timestamp })
                .collect(),
        }
    }
}

/// One label pair.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoLabel {
    /// The label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// One float sample.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct ProtoSample {
    /// The value; Prometheus' stale marker is the NaN with bits `0x7ff0000000000002`.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Metric family metadata.
#[derive(Clone, PartialEq, Message)]
pub struct MetricMetadata {
    /// The family's type, as Prometheus' `MetricMetadata.MetricType`: 0 unknown, 1 counter,
    /// 2 gauge, 3 histogram, 4 gauge histogram, 5 summary, 6 info, 7 stateset.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    /// The family name.
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    /// The HELP text.
    #[prost(string, tag = "4")]
    pub help: String,
    /// The UNIT.
    #[prost(string, tag = "5")]
    pub unit: String,
}

impl MetricMetadata {
    /// The type as Prometheus' HTTP API spells it (`counter`, `gauge`, …; `unknown` for
    /// anything else).
    pub fn type_name(&self) -> &'static str {
        match self.r#type {
            1 => "counter",
            2 => "gauge",
            3 => "histogram",
            4 => "gaugehistogram",
            5 => "summary",
            6 => "info",
            7 => "stateset",
            _ => "unknown",
        }
    }
}

/// Why a remote_write body was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    /// The body is not a snappy block.
    #[error("body is not snappy-compressed (block format): {0}")]
    Snappy(String),
    /// The decompressed body is not a `WriteRequest`.
    #[error("body is not a remote_write WriteRequest protobuf: {0}")]
    Protobuf(String),
    /// A series' labels are unusable.
    #[error("series #{index}: {reason}")]
    Labels {
        /// The series' position in the request, from 0.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Compresses and encodes `req` as a remote_write body.
pub fn encode(req: &WriteRequest) -> Vec<u8> {
    let raw = req.encode_to_vec();
    // A snappy encoder only fails for inputs over ~4 GiB, which no request reaches.
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
}

/// Decodes a remote_write body, at most `max_bytes` once decompressed.
///
/// # Errors
/// The body is not snappy, is larger than `max_bytes` decompressed, or is not a
/// `WriteRequest`.
pub fn decode(body: &[u8], max_bytes: usize) -> Result<WriteRequest, DecodeError> {
    let len = snap::raw::decompress_len(body).map_err(|e| DecodeError::Snappy(e.to_string()))?;
    if len > max_bytes {
        return Err(DecodeError::Snappy(format!(
            "decompressed size {len} B exceeds the limit of {max_bytes} B"
        )));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| DecodeError::Snappy(e.to_string()))?;
    WriteRequest::decode(raw.as_slice()).map_err(|e| DecodeError::Protobuf(e.to_string()))
}

/// The label set of series number `index` of a request, checked as Prometheus checks
/// ingested labels: names non-empty, matching `[a-zA-Z_][a-zA-Z0-9_]*`, each once, and a
/// metric name present. Empty values are dropped (Prometheus treats them as absent).
///
/// # Errors
/// The first problem found, naming the series by position.
pub fn series_labels(index: usize, labels: &[ProtoLabel]) -> Result<Labels, DecodeError> {
    let bad = |reason: String| DecodeError::Labels { index, reason };
    let mut v: Vec<Label> = Vec::with_capacity(labels.len());
    for l in labels {
        if !valid_label_name(&l.name) {
            return Err(bad(format!("invalid label name {:?}", l.name)));
        }
        if l.value.is_empty() {
            continue;
        }
        v.push(Label {
            name: l.name.clone(),
            value: l.value.clone(),
        });
    }
    v.sort();
    if let Some(w) = v.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(bad(format!("label name {:?} repeated", w[0].name)));
    }
    let labels = Labels::from_sorted(v).ok_or_else(|| bad("labels are not unique".into()))?;
    if labels.metric_name().is_none() {
        return Err(bad("no metric name (__name__ label)".into()));
    }
    Ok(labels)
}

/// True for a Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{is_stale, stale_nan};

    fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
        TimeSeries::new(labels, samples)
    }

    #[test]
    fn round_trip_keeps_stale_markers_bit_for_bit() {
        let req = WriteRequest {
            timeseries: vec![series(
                &[("__name__", "up"), ("job", "node")],
                &[(1000, 1.0), (2000, stale_nan()), (3000, f64::NAN)],
            )],
            metadata: vec![MetricMetadata {
                r#type: 1,
                metric_family_name: "up".into(),
                help: "h".into(),
                unit: String::new(),
            }],
        };
        let back = decode(&encode(&req), 1 << 20).unwrap();
        let s = &back.timeseries[0].samples;
        assert!(is_stale(s[1].value));
        assert!(s[2].value.is_nan() && !is_stale(s[2].value));
        assert_eq!(back.metadata[0].type_name(), "counter");
        assert_eq!(back.timeseries[0].labels, req.timeseries[0].labels);
    }

    #[test]
    fn malformed_bodies_name_the_layer_that_failed() {
        assert!(matches!(
            decode(b"not snappy at all", 1 << 20),
            Err(DecodeError::Snappy(_))
        ));
        let junk = snap::raw::Encoder::new()
            .compress_vec(&[0xff, 0xff, 0xff])
            .unwrap();
        assert!(matches!(
            decode(&junk, 1 << 20),
            Err(DecodeError::Protobuf(_))
        ));
        let big = encode(&WriteRequest {
            timeseries: vec![series(&[("__name__", "x")], &[(1, 1.0); 100])],
            metadata: vec![],
        });
        let e = decode(&big, 64).unwrap_err().to_string();
        assert!(e.contains("exceeds the limit of 64 B"), "{e}");
    }

    #[test]
    fn labels_are_checked_as_prometheus_checks_them() {
        let l = |pairs: &[(&str, &str)]| series_labels(4, &series(pairs, &[]).labels);
        let ok = l(&[("job", "a"), ("__name__", "up"), ("empty", "")]).unwrap();
        assert_eq!(ok, Labels::metric("up", [("job", "a")]));
        let err = |pairs: &[(&str, &str)]| l(pairs).unwrap_err().to_string();
        assert_eq!(
            err(&[("job", "a")]),
            "series #4: no metric name (__name__ label)"
        );
        assert_eq!(
            err(&[("__name__", "up"), ("job", "a"), ("job", "b")]),
            "series #4: label name \"job\" repeated"
        );
        assert_eq!(
            err(&[("__name__", "up"), ("1x", "a")]),
            "series #4: invalid label name \"1x\""
        );
        assert_eq!(
            err(&[("__name__", "up"), ("", "a")]),
            "series #4: invalid label name \"\""
        );
    }
}
