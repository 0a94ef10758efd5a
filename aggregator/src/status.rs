//! Prometheus' status API and federation, answered from the aggregator's own state:
//!
//! - `/api/v1/status/buildinfo`, `/runtimeinfo`, `/flags`: Prometheus 2.42's shapes, with
//!   Outpost's values (its version, its process, its configuration as flag-like keys).
//! - `/api/v1/status/tsdb`: the index's cardinality as Prometheus reports its head's
//!   (`headStats`, and the ten largest of each list).
//! - `/federate`: the newest sample of every series some `match[]` selects, within the
//!   5-minute lookback, in the Prometheus text format, so an existing Prometheus can scrape
//!   Outpost with `honor_labels: true`, as it federates from another Prometheus.

use crate::api::push_json_str;
use crate::http::{AppState, rfc3339};
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use outpost_promql::{LOOKBACK_DELTA_MS, Matcher, parse_series_selector};
use outpost_service::now_ms;
use outpost_shared::model::{METRIC_NAME, format_go_float, is_stale};
use outpost_shared::{Labels, Point};
use std::fmt::Write as _;

/// What `/status/flags` and `/status/runtimeinfo` report, fixed at start.
#[derive(Clone, Debug, Default)]
pub struct StartInfo {
    /// Flag-like settings, `(name, value)`, in the order shown.
    pub flags: Vec<(String, String)>,
    /// When the aggregator started, ms since the Unix epoch.
    pub start_ms: i64,
    /// What the store keeps (`[storage]`).
    pub retention: outpost_tsdb::RetentionPolicy,
}

/// The store's shape as `/api/v1/status/tsdb` (`outpostStats.storage`) and
/// `outpost-aggregator tsdb` report it: series, head, total samples and bytes, every time
/// partition (resolution `raw`, `5m` or `1h`; start and end as RFC 3339; samples, or
/// buckets for rollups; chunks; bytes), totals per resolution, the retentions (s), the
/// raw retention horizon (the oldest time kept at `now_ms`, RFC 3339; absent without one),
/// the oldest time a commit stores (`acceptsFrom`, RFC 3339, see
/// [`outpost_tsdb::Storage::accepts_from_ms`]) and the samples dropped as older since start,
/// the latest time a commit now stores (`acceptsUntil`, RFC 3339: the clock plus
/// [`outpost_tsdb::MAX_FUTURE_MS`]) and the samples dropped as later since start.
///
/// # Errors
/// The store fails to read.
pub fn storage_report(
    storage: &outpost_tsdb::Storage,
    policy: &outpost_tsdb::RetentionPolicy,
    now_ms: i64,
) -> Result<serde_json::Value, outpost_tsdb::StorageError> {
    let parts = storage.partitions()?;
    let (head_min, head_max) = storage.head_time_range().unwrap_or((0, 0));
    let raw = |p: &&outpost_tsdb::PartitionStatus| p.resolution == "raw";
    let samples: u64 = parts.iter().filter(raw).map(|p| p.stats.samples).sum();
    let mut resolutions = serde_json::Map::new();
    for res in ["raw", "5m", "1h"] {
        let of: Vec<&outpost_tsdb::PartitionStatus> =
            parts.iter().filter(|p| p.resolution == res).collect();
        resolutions.insert(
            res.into(),
            serde_json::json!({
                "partitions": of.len(),
                // Raw: samples; rollups: buckets.
                "samples": of.iter().map(|p| p.stats.samples).sum::<u64>(),
                "bytes": of.iter().map(|p| p.bytes).sum::<u64>(),
            }),
        );
    }
    let secs = |ms: Option<i64>| ms.map(|r| r / 1000);
    let partitions: Vec<serde_json::Value> = parts
        .iter()
        .map(|p| {
            serde_json::json!({
                "resolution": p.resolution,
                "start": rfc3339(p.start_ms),
                "end": rfc3339(p.end_ms),
                // Buckets for rollup partitions.
                "samples": p.stats.samples,
                "chunks": p.stats.chunks,
                "merged": p.stats.chunks == p.stats.merged_chunks,
                "bytes": p.bytes,
            })
        })
        .collect();
    Ok(serde_json::json!({
        "series": storage.series_count(),
        "headSamples": storage.head_points(),
        "headMinTime": head_min,
        "headMaxTime": head_max,
        "samples": samples + storage.head_points() as u64,
        "bytes": storage.size_bytes(),
        "retention": policy.retention_ms.map(|r| r / 1000),
        "retentionHorizon": policy.retention_ms.map(|r| rfc3339(now_ms - r)),
        // Older samples are dropped on arrival: the horizon of the last maintenance pass,
        // or the end of the newest raw day deleted if later.
        "acceptsFrom": storage.accepts_from_ms().map(rfc3339),
        "samplesTooOld": storage.samples_too_old(),
        // Later samples are dropped on arrival, as VictoriaMetrics drops rows more than two
        // days ahead.
        "acceptsUntil": rfc3339(storage.accepts_until_ms()),
        "samplesTooNew": storage.samples_too_new(),
        "retention5m": secs(policy.retention_5m_ms),
        "retention1h": secs(policy.retention_1h_ms),
        "maxBytes": policy.max_bytes,
        "resolutions": resolutions,
        "partitions": partitions,
    }))
}

fn json_ok(data: &str) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"status":"success","data":{data}}}"#),
    )
        .into_response()
}

/// `/api/v1/status/buildinfo`.
pub async fn buildinfo() -> Response {
    json_ok(&format!(
        r#"{{"version":"{}","revision":"","branch":"","buildUser":"","buildDate":"","goVersion":"","application":"outpost-aggregator"}}"#,
        env!("CARGO_PKG_VERSION")
    ))
}

/// `/api/v1/status/flags`: `{"name":"value",...}`.
pub async fn flags(State(s): State<AppState>) -> Response {
    let mut data = String::from("{");
    for (i, (k, v)) in s.start.flags.iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        push_json_str(&mut data, k);
        data.push(':');
        push_json_str(&mut data, v);
    }
    data.push('}');
    json_ok(&data)
}

/// Threads of this process, from `/proc/self/status` (Prometheus reports goroutines).
fn thread_count() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `/api/v1/status/runtimeinfo`, with Prometheus' keys.
pub async fn runtimeinfo(State(s): State<AppState>) -> Response {
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let reload_ok = s.metrics.reload.successful.get() == 1;
    let last_config_ms = (s.metrics.reload.success_timestamp.get() * 1000.0) as i64;
    let mut data = String::from(r#"{"startTime":"#);
    push_json_str(&mut data, &rfc3339(s.start.start_ms));
    data.push_str(r#","CWD":"#);
    push_json_str(&mut data, &cwd);
    let _ = write!(
        data,
        r#","reloadConfigSuccess":{reload_ok},"lastConfigTime":"{}","corruptionCount":0,"goroutineCount":{},"GOMAXPROCS":{},"GOMEMLIMIT":0,"GOGC":"","GODEBUG":"","storageRetention":"unlimited"}}"#,
        rfc3339(last_config_ms),
        thread_count(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    json_ok(&data)
}

fn name_values(out: &mut String, key: &str, items: &[(String, u64)]) {
    let _ = write!(out, r#""{key}":["#);
    for (i, (n, v)) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"name":"#);
        push_json_str(out, n);
        let _ = write!(out, r#","value":{v}}}"#);
    }
    out.push(']');
}

/// `/api/v1/status/tsdb`: Prometheus' head statistics over the whole store, plus
/// `outpostStats` (points in the head, bytes on disk).
pub async fn tsdb(State(s): State<AppState>) -> Response {
    let storage = s.storage.clone();
    let policy = s.start.retention;
    let built = tokio::task::spawn_blocking(move || {
        let c = storage.cardinality(10);
        let (min, max) = storage.head_time_range().unwrap_or((0, 0));
        let mut d = format!(
            r#"{{"headStats":{{"numSeries":{},"numLabelPairs":{},"chunkCount":0,"minTime":{min},"maxTime":{max}}},"#,
            c.series, c.label_pairs
        );
        name_values(&mut d, "seriesCountByMetricName", &c.series_by_metric_name);
        d.push(',');
        name_values(&mut d, "labelValueCountByLabelName", &c.values_by_label_name);
        d.push(',');
        name_values(&mut d, "memoryInBytesByLabelName", &c.bytes_by_label_name);
        d.push(',');
        name_values(&mut d, "seriesCountByLabelValuePair", &c.series_by_label_pair);
        let report = storage_report(&storage, &policy, now_ms())
            .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
        let _ = write!(
            d,
            r#","outpostStats":{{"headPoints":{},"storageBytes":{},"storage":{report}}}}}"#,
            storage.head_points(),
            storage.size_bytes()
        );
        d
    })
    .await;
    match built {
        Ok(d) => json_ok(&d),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// The federation text for `series` (each with its newest sample), sorted by metric name as
/// Prometheus sorts it, with one `# TYPE <name> untyped` line per name.
pub fn federation_text(mut series: Vec<(Labels, Point)>) -> String {
    series.sort_by(|a, b| {
        a.0.metric_name()
            .cmp(&b.0.metric_name())
            .then(a.0.cmp(&b.0))
    });
    let mut out = String::new();
    let mut last: Option<String> = None;
    for (labels, p) in &series {
        let name = labels.metric_name().unwrap_or("");
        if last.as_deref() != Some(name) {
            let _ = writeln!(out, "# TYPE {name} untyped");
            last = Some(name.to_string());
        }
        out.push_str(name);
        let rest: Vec<_> = labels.iter().filter(|l| l.name != METRIC_NAME).collect();
        if !rest.is_empty() {
            out.push('{');
            for (i, l) in rest.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let v = l
                    .value
                    .replace('\\', r"\\")
                    .replace('"', "\\\"")
                    .replace('\n', r"\n");
                let _ = write!(out, "{}=\"{v}\"", l.name);
            }
            out.push('}');
        }
        let _ = writeln!(out, " {} {}", format_go_float(p.value), p.ts);
    }
    out
}

/// `/federate?match[]=...`.
pub async fn federate(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let mut sets: Vec<Vec<Matcher>> = vec![];
    let mut pairs = vec![];
    crate::api::parse_form(q.as_deref().unwrap_or(""), &mut pairs);
    for (k, v) in pairs {
        if k != "match[]" {
            continue;
        }
        match parse_series_selector(&v) {
            Ok(m) => sets.push(m),
            Err(e) => {
                return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
            }
        }
    }
    let storage = s.storage.clone();
    let now = now_ms();
    let built = tokio::task::spawn_blocking(move || -> Result<String, String> {
        let mut seen = std::collections::BTreeMap::new();
        for m in &sets {
            for (id, labels) in storage.select(m) {
                if seen.contains_key(labels.as_ref()) {
                    continue;
                }
                let pts = storage
                    .points(id, now - LOOKBACK_DELTA_MS, now)
                    .map_err(|e| e.to_string())?;
                if let Some(p) = pts.last().filter(|p| !is_stale(p.value)) {
                    seen.insert(Labels::clone(&labels), *p);
                }
            }
        }
        Ok(federation_text(seen.into_iter().collect()))
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match built {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!("federation failed: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}
