//! OTLP/HTTP metrics (`POST /v1/metrics`, protobuf or JSON) to Outpost series, mapped the way
//! Prometheus' OTLP receiver maps them (its default `UnderscoreEscapingWithSuffixes`):
//!
//! - names: characters other than letters and digits become `_` (runs collapsed), the unit is
//!   appended in words (`By` → `bytes`, `s` → `seconds`, `{...}` annotations dropped, `a/b` →
//!   `a_per_b`), monotonic sums end in `_total`, gauges of unit `1` in `_ratio`;
//! - attribute keys: invalid characters become `_`, a leading digit gets `key_`;
//! - resource `service.name` (with `service.namespace/` in front when set) → `job`,
//!   `service.instance.id` → `instance`, the other resource attributes → one `target_info`
//!   series;
//! - gauge → gauge; monotonic cumulative sum → counter; non-monotonic sum → gauge;
//!   histogram → `_bucket{le}` (cumulative) / `_sum` / `_count`; exponential histogram →
//!   the same classic buckets at its bucket boundaries; summary → `{quantile}` / `_sum` /
//!   `_count`; a point flagged "no recorded value" → Prometheus' stale marker.
//!
//! Delta temporality is refused (400) rather than converted: Outpost stores cumulative series,
//! and converting needs per-series state across requests that a restart would lose. Senders
//! set `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=cumulative`.
//!
//! Pure: [`decode`] reads bytes, [`to_batch`] converts; a request is converted whole or
//! refused whole.

use crate::target_labels;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogramDataPoint, metric::Data, number_data_point,
};
use outpost_shared::Batch;
use outpost_shared::metadata::{FamilyMetadata, Metadata, MetricType};
use outpost_shared::model::stale_nan;
use prost::Message;

/// How the body is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// From a `Content-Type`; `None` for anything OTLP/HTTP does not define.
    pub fn from_content_type(ct: &str) -> Option<Encoding> {
        let mime = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
            "application/json" => Some(Encoding::Json),
            _ => None,
        }
    }
}

pub fn decode(body: &[u8], enc: Encoding) -> Result<ExportMetricsServiceRequest, String> {
    match enc {
        Encoding::Protobuf => ExportMetricsServiceRequest::decode(body)
            .map_err(|e| format!("invalid OTLP protobuf: {e}")),
        Encoding::Json => {
            serde_json::from_slice(body).map_err(|e| format!("invalid OTLP JSON: {e}"))
        }
    }
}

/// A `google.rpc.Status` with code INVALID_ARGUMENT (3) and `message`, protobuf-encoded, as
/// OTLP/HTTP answers a bad request.
pub fn status_protobuf(message: &str) -> Vec<u8> {
    let mut out = vec![0x08, 3, 0x12];
    let mut len = message.len();
    while len >= 0x80 {
        out.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(message.as_bytes());
    out
}

fn any_to_string(v: &AnyValue) -> String {
    match &v.value {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        // An index into a string table, which only the profiles signal carries.
        Some(any_value::Value::StringValueStrindex(_)) => String::new(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => format_float(*d),
        Some(any_value::Value::BytesValue(b)) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(b)
        }
        Some(any_value::Value::ArrayValue(a)) => {
            let items: Vec<serde_json::Value> = a.values.iter().map(any_to_json).collect();
            serde_json::Value::Array(items).to_string()
        }
        Some(any_value::Value::KvlistValue(kv)) => {
            let m: serde_json::Map<String, serde_json::Value> = kv
                .values
                .iter()
                .map(|k| {
                    (
                        k.key.clone(),
                        k.value.as_ref().map(any_to_json).unwrap_or_default(),
                    )
                })
                .collect();
            serde_json::Value::Object(m).to_string()
        }
    }
}

fn any_to_json(v: &AnyValue) -> serde_json::Value {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => serde_json::Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        None => serde_json::Value::Null,
        _ => serde_json::Value::String(any_to_string(v)),
    }
}

/// Floats as Prometheus prints bounds and quantiles: shortest form, `+Inf`/`-Inf`/`NaN`.
pub fn format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f == f64::INFINITY {
        "+Inf".into()
    } else if f == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{f}")
    }
}

/// An attribute key as a label name.
pub fn label_name(key: &str) -> String {
    let mut s: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.as_bytes().first().is_some_and(|b| b.is_ascii_digit()) {
        s.insert_str(0, "key_");
    } else if s.starts_with('_') && !s.starts_with("__") {
        s.insert_str(0, "key");
    }
    s
}

fn unit_word(u: &str) -> Option<&'static str> {
    Some(match u {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        _ => return None,
    })
}

fn per_unit_word(u: &str) -> Option<&'static str> {
    Some(match u {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        _ => return None,
    })
}

fn tokens(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
}

/// What kind of Prometheus series a metric becomes, for its name's suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    Gauge,
    Counter,
    Other,
}

/// The Prometheus name of an OTLP metric.
pub fn metric_name(name: &str, unit: &str, kind: NameKind) -> String {
    let mut t: Vec<String> = tokens(name).map(str::to_string).collect();
    // Annotations in braces carry no unit.
    let mut unit = unit.to_string();
    while let (Some(a), Some(b)) = (unit.find('{'), unit.find('}')) {
        if b < a {
            break;
        }
        unit.replace_range(a..=b, "");
    }
    let (main, per) = match unit.split_once('/') {
        Some((m, p)) => (m.trim().to_string(), p.trim().to_string()),
        None => (unit.trim().to_string(), String::new()),
    };
    let has = |t: &[String], w: &str| t.iter().any(|x| x == w);
    if !main.is_empty() && main != "1" {
        let word = unit_word(&main)
            .map(str::to_string)
            .unwrap_or_else(|| tokens(&main).collect::<Vec<_>>().join("_"));
        for w in tokens(&word).map(str::to_string).collect::<Vec<_>>() {
            if !has(&t, &w) {
                t.push(w);
            }
        }
    }
    if !per.is_empty() {
        let word = per_unit_word(&per)
            .map(str::to_string)
            .unwrap_or_else(|| tokens(&per).collect::<Vec<_>>().join("_"));
        if !(word.is_empty() || (t.len() >= 2 && t[t.len() - 2] == "per" && t[t.len() - 1] == word))
        {
            t.push("per".into());
            t.extend(tokens(&word).map(str::to_string));
        }
    }
    match kind {
        NameKind::Counter => {
            t.retain(|w| w != "total");
            t.push("total".into());
        }
        NameKind::Gauge if main == "1" && !has(&t, "ratio") => t.push("ratio".into()),
        _ => {}
    }
    let mut s = t.join("_");
    if s.as_bytes().first().is_some_and(|b| b.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// An OTLP unit in the words [`metric_name`] appends to the name (`ms` → `milliseconds`,
/// `By/s` → `bytes_per_second`); empty for `1` and for annotations alone.
pub fn unit_words(unit: &str) -> String {
    let mut unit = unit.to_string();
    while let (Some(a), Some(b)) = (unit.find('{'), unit.find('}')) {
        if b < a {
            break;
        }
        unit.replace_range(a..=b, "");
    }
    let (main, per) = match unit.split_once('/') {
        Some((m, p)) => (m.trim().to_string(), p.trim().to_string()),
        None => (unit.trim().to_string(), String::new()),
    };
    let mut words: Vec<String> = vec![];
    if !main.is_empty() && main != "1" {
        let word = unit_word(&main)
            .map(str::to_string)
            .unwrap_or_else(|| tokens(&main).collect::<Vec<_>>().join("_"));
        words.extend(tokens(&word).map(str::to_string));
    }
    if !per.is_empty() {
        let word = per_unit_word(&per)
            .map(str::to_string)
            .unwrap_or_else(|| tokens(&per).collect::<Vec<_>>().join("_"));
        if !word.is_empty() {
            words.push("per".into());
            words.extend(tokens(&word).map(str::to_string));
        }
    }
    words.join("_")
}

/// What a request declares about its metrics, one entry per family as [`to_batch`] names
/// it: gauges and non-monotonic sums are gauges, monotonic sums counters, (exponential)
/// histograms histograms and summaries summaries; the description is the HELP text and
/// the unit [`unit_words`]. Metrics without data are left out.
pub fn metadata(req: &ExportMetricsServiceRequest) -> Vec<FamilyMetadata> {
    let mut out: Vec<FamilyMetadata> = vec![];
    let mut seen = std::collections::HashMap::new();
    for m in req
        .resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
    {
        let (kind, name_kind) = match &m.data {
            Some(Data::Gauge(_)) => (MetricType::Gauge, NameKind::Gauge),
            Some(Data::Sum(s)) if s.is_monotonic => (MetricType::Counter, NameKind::Counter),
            Some(Data::Sum(_)) => (MetricType::Gauge, NameKind::Gauge),
            Some(Data::Histogram(_) | Data::ExponentialHistogram(_)) => {
                (MetricType::Histogram, NameKind::Other)
            }
            Some(Data::Summary(_)) => (MetricType::Summary, NameKind::Other),
            None => continue,
        };
        if m.name.is_empty() {
            continue;
        }
        let family = metric_name(&m.name, &m.unit, name_kind);
        let meta = Metadata {
            kind,
            help: m.description.clone(),
            unit: unit_words(&m.unit),
        };
        // The same metric in several resources or scopes: the last one wins.
        match seen.get(&family) {
            Some(&i) => out[i] = FamilyMetadata { family, meta },
            None => {
                seen.insert(family.clone(), out.len());
                out.push(FamilyMetadata { family, meta });
            }
        }
    }
    out
}

fn ts_ms(nanos: u64, now_ms: i64) -> i64 {
    if nanos == 0 {
        now_ms
    } else {
        (nanos / 1_000_000) as i64
    }
}

const NO_RECORDED_VALUE: u32 = 1;

fn check_temporality(name: &str, t: i32) -> Result<(), String> {
    match AggregationTemporality::try_from(t) {
        Ok(AggregationTemporality::Cumulative) => Ok(()),
        Ok(AggregationTemporality::Delta) => Err(format!(
            "metric {name:?} uses delta aggregation temporality; Outpost stores cumulative series only: configure the exporter for cumulative temporality (OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=cumulative)"
        )),
        _ => Err(format!(
            "metric {name:?} has no aggregation temporality; set it to cumulative (2)"
        )),
    }
}

struct Out<'a> {
    batch: Batch,
    target: &'a [(String, String)],
}

impl Out<'_> {
    fn push(
        &mut self,
        name: &str,
        attrs: &[(String, String)],
        extra: Option<(&str, String)>,
        ts: i64,
        v: f64,
    ) {
        let it = attrs
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .chain(extra.as_ref().map(|(a, b)| (*a, b.as_str())));
        let labels = target_labels::attach(name, it, self.target);
        self.batch.push(labels, ts, v);
    }
}

fn attrs(kv: &[KeyValue]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(kv.len());
    for k in kv {
        let n = label_name(&k.key);
        let v = k.value.as_ref().map(any_to_string).unwrap_or_default();
        // Two keys that normalise to one name: values joined, as Prometheus does.
        match out.iter_mut().find(|(x, _)| *x == n) {
            Some((_, old)) => {
                old.push(';');
                old.push_str(&v);
            }
            None => out.push((n, v)),
        }
    }
    out.sort();
    out
}

/// Converts a whole request. `agent_labels` are this agent's `agent` and `region`; points
/// without a time get `now_ms`.
pub fn to_batch(
    req: &ExportMetricsServiceRequest,
    agent_labels: &[(String, String)],
    now_ms: i64,
) -> Result<Batch, String> {
    let mut batch = Batch::default();
    for rm in &req.resource_metrics {
        let res_attrs: &[KeyValue] = rm
            .resource
            .as_ref()
            .map(|r| &r.attributes[..])
            .unwrap_or(&[]);
        let get = |k: &str| {
            res_attrs
                .iter()
                .find(|a| a.key == k)
                .and_then(|a| a.value.as_ref())
                .map(any_to_string)
                .filter(|s| !s.is_empty())
        };
        let job = match (get("service.namespace"), get("service.name")) {
            (Some(ns), Some(n)) => Some(format!("{ns}/{n}")),
            (None, Some(n)) => Some(n),
            _ => None,
        };
        let instance = get("service.instance.id");
        let mut target: Vec<(String, String)> = vec![];
        if let Some(j) = job {
            target.push(("job".into(), j));
        }
        if let Some(i) = instance {
            target.push(("instance".into(), i));
        }
        target.extend(agent_labels.iter().cloned());
        let mut out = Out {
            batch: std::mem::take(&mut batch),
            target: &target,
        };
        let mut latest = 0i64;
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let Some(data) = &m.data else {
                    return Err(format!(
                        "metric {:?} has no data (gauge, sum, histogram, exponential histogram or summary)",
                        m.name
                    ));
                };
                if m.name.is_empty() {
                    return Err("a metric has an empty name".into());
                }
                match data {
                    Data::Gauge(g) => {
                        let name = metric_name(&m.name, &m.unit, NameKind::Gauge);
                        for p in &g.data_points {
                            let ts = ts_ms(p.time_unix_nano, now_ms);
                            latest = latest.max(ts);
                            out.push(
                                &name,
                                &attrs(&p.attributes),
                                None,
                                ts,
                                number(&m.name, p.flags, &p.value)?,
                            );
                        }
                    }
                    Data::Sum(s) => {
                        check_temporality(&m.name, s.aggregation_temporality)?;
                        let kind = if s.is_monotonic {
                            NameKind::Counter
                        } else {
                            NameKind::Gauge
                        };
                        let name = metric_name(&m.name, &m.unit, kind);
                        for p in &s.data_points {
                            let ts = ts_ms(p.time_unix_nano, now_ms);
                            latest = latest.max(ts);
                            out.push(
                                &name,
                                &attrs(&p.attributes),
                                None,
                                ts,
                                number(&m.name, p.flags, &p.value)?,
                            );
                        }
                    }
                    Data::Histogram(h) => {
                        check_temporality(&m.name, h.aggregation_temporality)?;
                        let base = metric_name(&m.name, &m.unit, NameKind::Other);
                        for p in &h.data_points {
                            let ts = ts_ms(p.time_unix_nano, now_ms);
                            latest = latest.max(ts);
                            let stale = p.flags & NO_RECORDED_VALUE != 0;
                            let val = |v: f64| if stale { stale_nan() } else { v };
                            if !p.bucket_counts.is_empty()
                                && p.bucket_counts.len() != p.explicit_bounds.len() + 1
                            {
                                return Err(format!(
                                    "histogram {:?}: {} bucket counts for {} bounds; there must be one more count than bounds",
                                    m.name,
                                    p.bucket_counts.len(),
                                    p.explicit_bounds.len()
                                ));
                            }
                            let a = attrs(&p.attributes);
                            let mut cum = 0u64;
                            for (i, c) in p
                                .bucket_counts
                                .iter()
                                .enumerate()
                                .take(p.explicit_bounds.len())
                            {
                                cum += c;
                                out.push(
                                    &format!("{base}_bucket"),
                                    &a,
                                    Some(("le", format_float(p.explicit_bounds[i]))),
                                    ts,
                                    val(cum as f64),
                                );
                            }
                            out.push(
                                &format!("{base}_bucket"),
                                &a,
                                Some(("le", "+Inf".into())),
                                ts,
                                val(p.count as f64),
                            );
                            if let Some(sum) = p.sum {
                                out.push(&format!("{base}_sum"), &a, None, ts, val(sum));
                            }
                            out.push(&format!("{base}_count"), &a, None, ts, val(p.count as f64));
                        }
                    }
                    Data::ExponentialHistogram(h) => {
                        check_temporality(&m.name, h.aggregation_temporality)?;
                        let base = metric_name(&m.name, &m.unit, NameKind::Other);
                        for p in &h.data_points {
                            let ts = ts_ms(p.time_unix_nano, now_ms);
                            latest = latest.max(ts);
                            let stale = p.flags & NO_RECORDED_VALUE != 0;
                            let val = |v: f64| if stale { stale_nan() } else { v };
                            let a = attrs(&p.attributes);
                            for (le, c) in exponential_buckets(p)
                                .map_err(|e| format!("exponential histogram {:?}: {e}", m.name))?
                            {
                                out.push(
                                    &format!("{base}_bucket"),
                                    &a,
                                    Some(("le", format_float(le))),
                                    ts,
                                    val(c as f64),
                                );
                            }
                            out.push(
                                &format!("{base}_bucket"),
                                &a,
                                Some(("le", "+Inf".into())),
                                ts,
                                val(p.count as f64),
                            );
                            if let Some(sum) = p.sum {
                                out.push(&format!("{base}_sum"), &a, None, ts, val(sum));
                            }
                            out.push(&format!("{base}_count"), &a, None, ts, val(p.count as f64));
                        }
                    }
                    Data::Summary(s) => {
                        let base = metric_name(&m.name, &m.unit, NameKind::Other);
                        for p in &s.data_points {
                            let ts = ts_ms(p.time_unix_nano, now_ms);
                            latest = latest.max(ts);
                            let stale = p.flags & NO_RECORDED_VALUE != 0;
                            let val = |v: f64| if stale { stale_nan() } else { v };
                            let a = attrs(&p.attributes);
                            for q in &p.quantile_values {
                                out.push(
                                    &base,
                                    &a,
                                    Some(("quantile", format_float(q.quantile))),
                                    ts,
                                    val(q.value),
                                );
                            }
                            out.push(&format!("{base}_sum"), &a, None, ts, val(p.sum));
                            out.push(&format!("{base}_count"), &a, None, ts, val(p.count as f64));
                        }
                    }
                }
            }
        }
        let info: Vec<KeyValue> = res_attrs
            .iter()
            .filter(|a| {
                !matches!(
                    a.key.as_str(),
                    "service.name" | "service.namespace" | "service.instance.id"
                )
            })
            .cloned()
            .collect();
        if !info.is_empty() && latest > 0 {
            out.push("target_info", &attrs(&info), None, latest, 1.0);
        }
        batch = out.batch;
    }
    // A resource split over several blocks yields the same target_info sample for each;
    // that repeat carries no second value, so one is kept. Any other repeat is refused.
    let mut infos = super::repeated(&batch)
        .into_iter()
        .filter(|&i| batch.series[i].labels.metric_name() == Some("target_info"))
        .peekable();
    if infos.peek().is_some() {
        let again: std::collections::HashSet<usize> = infos.collect();
        let mut i = 0;
        batch.series.retain(|_| {
            i += 1;
            !again.contains(&(i - 1))
        });
    }
    super::refuse_repeats(&batch)?;
    Ok(batch)
}

fn number(name: &str, flags: u32, v: &Option<number_data_point::Value>) -> Result<f64, String> {
    if flags & NO_RECORDED_VALUE != 0 {
        return Ok(stale_nan());
    }
    match v {
        Some(number_data_point::Value::AsDouble(d)) => Ok(*d),
        Some(number_data_point::Value::AsInt(i)) => Ok(*i as f64),
        None => Err(format!(
            "metric {name:?}: a data point has no value (asDouble or asInt)"
        )),
    }
}

/// Classic cumulative buckets `(upper bound, count)` of an exponential histogram point, from
/// the most negative bucket up; the `+Inf` bucket is left to the caller.
pub fn exponential_buckets(p: &ExponentialHistogramDataPoint) -> Result<Vec<(f64, u64)>, String> {
    if !(-10..=20).contains(&p.scale) {
        return Err(format!("scale {} is outside -10..=20", p.scale));
    }
    let base = 2f64.powf(2f64.powi(-p.scale));
    let mut out = vec![];
    let mut cum = 0u64;
    if let Some(neg) = &p.negative {
        // Negative bucket at index i holds values in [-base^(i+1), -base^i); its upper bound is -base^i.
        for (k, c) in neg.bucket_counts.iter().enumerate().rev() {
            cum += c;
            let i = neg.offset as i64 + k as i64;
            out.push((-base.powf(i as f64), cum));
        }
    }
    cum += p.zero_count;
    out.push((p.zero_threshold, cum));
    if let Some(pos) = &p.positive {
        for (k, c) in pos.bucket_counts.iter().enumerate() {
            cum += c;
            let i = pos.offset as i64 + k as i64;
            out.push((base.powf((i + 1) as f64), cum));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_otlp_translation() {
        let cases: &[(&str, &str, NameKind, &str)] = &[
            (
                "http.server.request.duration",
                "s",
                NameKind::Other,
                "http_server_request_duration_seconds",
            ),
            (
                "http.server.requests",
                "{request}",
                NameKind::Counter,
                "http_server_requests_total",
            ),
            (
                "system.memory.usage",
                "By",
                NameKind::Gauge,
                "system_memory_usage_bytes",
            ),
            (
                "queue_bytes_total",
                "By",
                NameKind::Counter,
                "queue_bytes_total",
            ),
            (
                "cpu.utilization",
                "1",
                NameKind::Gauge,
                "cpu_utilization_ratio",
            ),
            (
                "throughput",
                "By/s",
                NameKind::Gauge,
                "throughput_bytes_per_second",
            ),
            ("requests", "", NameKind::Counter, "requests_total"),
            ("total.requests", "", NameKind::Counter, "requests_total"),
            ("temp", "Cel", NameKind::Gauge, "temp_celsius"),
            ("weird..name--x", "", NameKind::Gauge, "weird_name_x"),
            ("2xx.count", "", NameKind::Gauge, "_2xx_count"),
            ("latency", "ms", NameKind::Other, "latency_milliseconds"),
        ];
        for (n, u, k, want) in cases {
            assert_eq!(metric_name(n, u, *k), *want, "{n} [{u}]");
        }
    }

    #[test]
    fn metadata_names_types_help_and_units() {
        let json = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
            {"name":"http.server.duration","unit":"ms","description":"Duration of HTTP requests.",
             "histogram":{"aggregationTemporality":2,"dataPoints":[]}},
            {"name":"requests","unit":"{request}","description":"Requests.",
             "sum":{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[]}},
            {"name":"net.io","unit":"By/s","gauge":{"dataPoints":[]}},
            {"name":"cpu.utilization","unit":"1","description":"CPU.","gauge":{"dataPoints":[]}},
            {"name":"nodata"}
          ]}]}]}"#;
        let req = decode(json.as_bytes(), Encoding::Json).unwrap();
        let got: Vec<String> = metadata(&req)
            .into_iter()
            .map(|m| {
                format!(
                    "{} {} {:?} {:?}",
                    m.family,
                    m.meta.kind.as_str(),
                    m.meta.help,
                    m.meta.unit
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                r#"http_server_duration_milliseconds histogram "Duration of HTTP requests." "milliseconds""#,
                r#"requests_total counter "Requests." """#,
                r#"net_io_bytes_per_second gauge "" "bytes_per_second""#,
                r#"cpu_utilization_ratio gauge "CPU." """#,
            ]
        );
    }

    #[test]
    fn label_names_are_sanitised() {
        assert_eq!(label_name("http.method"), "http_method");
        assert_eq!(label_name("1st"), "key_1st");
        assert_eq!(label_name("_private"), "key_private");
        assert_eq!(label_name("__reserved"), "__reserved");
    }

    #[test]
    fn exponential_buckets_cover_both_signs() {
        use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
        let p = ExponentialHistogramDataPoint {
            scale: 0,
            count: 10,
            zero_count: 1,
            negative: Some(Buckets {
                offset: 0,
                bucket_counts: vec![2],
            }),
            positive: Some(Buckets {
                offset: 1,
                bucket_counts: vec![3, 4],
            }),
            ..Default::default()
        };
        // scale 0: base 2. Negative index 0: [-2, -1). Positive 1: (2, 4], 2: (4, 8].
        assert_eq!(
            exponential_buckets(&p).unwrap(),
            vec![(-1.0, 2), (0.0, 3), (4.0, 6), (8.0, 10)]
        );
    }

    fn conv(json: &str) -> Result<Vec<String>, String> {
        let req = decode(json.as_bytes(), Encoding::Json)?;
        let b = to_batch(&req, &[("agent".into(), "a1".into())], 5_000)?;
        Ok(b.series
            .iter()
            .map(|s| format!("{} {} @{}", s.labels, s.points[0].value, s.points[0].ts))
            .collect())
    }

    #[test]
    fn json_requests_convert_whole() {
        let json = r#"{"resourceMetrics":[{"resource":{"attributes":[
            {"key":"service.name","value":{"stringValue":"api"}},{"key":"service.namespace","value":{"stringValue":"shop"}},
            {"key":"host.cores","value":{"intValue":"4"}}]},
          "scopeMetrics":[{"metrics":[
            {"name":"rpc.latency","unit":"ms","summary":{"dataPoints":[{"timeUnixNano":"7000000","count":"3","sum":12.5,
               "quantileValues":[{"quantile":0.5,"value":4}]}]}},
            {"name":"inflight","sum":{"aggregationTemporality":2,"isMonotonic":false,"dataPoints":[{"asInt":"2","flags":1}]}}
          ]}]}]}"#;
        let got = conv(json).unwrap();
        assert_eq!(
            got[..4],
            [
                r#"rpc_latency_milliseconds{agent="a1", job="shop/api", quantile="0.5"} 4 @7"#,
                r#"rpc_latency_milliseconds_sum{agent="a1", job="shop/api"} 12.5 @7"#,
                r#"rpc_latency_milliseconds_count{agent="a1", job="shop/api"} 3 @7"#,
                r#"inflight{agent="a1", job="shop/api"} NaN @5000"#,
            ]
        );
        assert_eq!(
            got[4],
            r#"target_info{agent="a1", host_cores="4", job="shop/api"} 1 @5000"#
        );
        let req = decode(json.as_bytes(), Encoding::Json).unwrap();
        let declared: Vec<(String, &str, String, String)> = metadata(&req)
            .into_iter()
            .map(|m| (m.family, m.meta.kind.as_str(), m.meta.help, m.meta.unit))
            .collect();
        assert_eq!(
            declared,
            [
                (
                    "rpc_latency_milliseconds".to_string(),
                    "summary",
                    String::new(),
                    "milliseconds".to_string()
                ),
                (
                    "inflight".to_string(),
                    "gauge",
                    String::new(),
                    String::new()
                ),
            ]
        );
        let b = to_batch(&req, &[], 5_000).unwrap();
        assert!(
            outpost_shared::model::is_stale(b.series[3].points[0].value),
            "no recorded value is a stale marker"
        );
    }

    #[test]
    fn bad_requests_name_the_metric() {
        let delta = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"ok","gauge":{"dataPoints":[{"asDouble":1}]}},
            {"name":"reqs","sum":{"aggregationTemporality":1,"isMonotonic":true,"dataPoints":[{"asInt":"1"}]}}]}]}]}"#;
        assert!(
            conv(delta)
                .unwrap_err()
                .contains("metric \"reqs\" uses delta aggregation temporality")
        );
        let unspecified = delta.replace("\"aggregationTemporality\":1,", "");
        assert!(
            conv(&unspecified)
                .unwrap_err()
                .contains("metric \"reqs\" has no aggregation temporality")
        );
        let buckets = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"h","histogram":{"aggregationTemporality":2,
            "dataPoints":[{"count":"2","bucketCounts":["1","1"],"explicitBounds":[1,2]}]}}]}]}]}"#;
        assert!(
            conv(buckets)
                .unwrap_err()
                .contains("2 bucket counts for 2 bounds")
        );
        let novalue = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"g","gauge":{"dataPoints":[{}]}}]}]}]}"#;
        assert!(conv(novalue).unwrap_err().contains("has no value"));
        assert!(
            conv("{\"resourceMetrics\":7}")
                .unwrap_err()
                .starts_with("invalid OTLP JSON")
        );
        assert!(
            decode(&[0xff, 0xff], Encoding::Protobuf)
                .unwrap_err()
                .starts_with("invalid OTLP protobuf")
        );
    }

    #[test]
    fn a_series_repeated_in_one_request_is_refused_whole() {
        let point = |v: &str, ts: &str| {
            format!(
                r#"{{"asDouble":{v},"timeUnixNano":"{ts}","attributes":[{{"key":"l","value":{{"stringValue":"a"}}}}]}}"#
            )
        };
        let req = |points: &[String]| {
            format!(
                r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"api"}}}}]}},
                "scopeMetrics":[{{"metrics":[{{"name":"m","gauge":{{"dataPoints":[{}]}}}}]}}]}}]}}"#,
                points.join(",")
            )
        };
        let cases: &[(&[String], Result<usize, &str>)] = &[
            (&[point("42", "7000000")], Ok(1)),
            // The same series at two times is a history, not a repeat.
            (&[point("42", "7000000"), point("43", "8000000")], Ok(2)),
            (
                &[point("42", "7000000"), point("43", "7000000")],
                Err(
                    r#"series m{agent="a1", job="api", l="a"} appears more than once in this push"#,
                ),
            ),
            (
                &[point("42", "7000000"), point("42", "7000000")],
                Err(r#"series m{agent="a1", job="api", l="a"} appears more than once"#),
            ),
        ];
        for (points, want) in cases {
            let got = conv(&req(points));
            match want {
                Ok(n) => assert_eq!(got.map(|v| v.len()), Ok(*n), "{points:?}"),
                Err(needle) => {
                    let e = got.unwrap_err();
                    assert!(e.contains(needle), "{points:?}: {e}");
                }
            }
        }
        // One resource in two blocks: its target_info is one sample, not a repeat.
        let block = r#"{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}},
            {"key":"host.name","value":{"stringValue":"h"}}]},
            "scopeMetrics":[{"metrics":[{"name":"NAME","gauge":{"dataPoints":[{"asDouble":1,"timeUnixNano":"7000000"}]}}]}]}"#;
        let two = format!(
            r#"{{"resourceMetrics":[{},{}]}}"#,
            block.replace("NAME", "a"),
            block.replace("NAME", "b")
        );
        let got = conv(&two).unwrap();
        assert_eq!(
            got.iter().filter(|s| s.starts_with("target_info")).count(),
            1,
            "{got:?}"
        );
    }

    #[test]
    fn status_carries_the_message() {
        let s = status_protobuf(&"x".repeat(200));
        assert_eq!(&s[..5], &[0x08, 3, 0x12, 0xc8, 0x01]);
        assert_eq!(s.len(), 205);
    }

    #[test]
    fn content_types() {
        assert_eq!(
            Encoding::from_content_type("application/x-protobuf"),
            Some(Encoding::Protobuf)
        );
        assert_eq!(
            Encoding::from_content_type("application/json; charset=utf-8"),
            Some(Encoding::Json)
        );
        assert_eq!(Encoding::from_content_type("text/plain"), None);
    }
}
