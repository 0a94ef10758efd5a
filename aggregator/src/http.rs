//! The aggregator's HTTP server: the Prometheus query API (see [`crate::api`]; its
//! `/api/v1/metadata` reads the [`crate::metadata::MetadataStore`] this router adds as a
//! request extension) plus
//! `/api/v1/agents`, `/api/v1/checks`, `/api/v1/rules`, `/api/v1/alerts`, `POST /-/reload`,
//! `/api/v1/status/buildinfo`, `/health` and `/metrics`, with bearer-token
//! authentication when a token is configured.

use crate::connections::Connections;
use crate::ledger::{AgentMeta, Ledger};
use crate::metrics::{HandlerLabel, Metrics, RequestLabels};
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use outpost_promql::Queryable;
use outpost_tsdb::Storage;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Instant;
use tracing::Instrument;

#[derive(Clone)]
pub struct AppState {
    pub storage: Arc<Storage>,
    pub ledger: Arc<Mutex<Ledger>>,
    pub checks: Arc<crate::checks::Placement>,
    pub connections: Arc<Connections>,
    pub metrics: Arc<Metrics>,
    pub token: Option<Arc<str>>,
    /// Flags and start time for the status API.
    pub start: Arc<crate::status::StartInfo>,
    /// The limits every query runs under.
    pub query: Arc<crate::api::QueryLimits>,
    /// The ingest writer, for `POST /api/v1/write`.
    pub writer: tokio::sync::mpsc::Sender<crate::ingest::WriterMsg>,
    /// The stored metric metadata, served by `/api/v1/metadata`.
    pub metadata: Arc<crate::metadata::MetadataStore>,
    /// The running alert and recording rules.
    pub rules: Arc<crate::rules::Rules>,
    /// The notification pipeline, when `[alerting] notifications` is set.
    pub notifications: Option<crate::notify::Notifications>,
    /// Asks the config reloader for a reload (`POST /-/reload`); without one, only the rule
    /// files are re-read.
    pub reload: Option<tokio::sync::mpsc::Sender<crate::reload::Request>>,
}

pub fn router(state: AppState) -> Router {
    let source: Arc<dyn Queryable> = state.storage.clone();
    let api = crate::api::query_router(source, state.query.clone()).merge(
        Router::new()
            .route("/api/v1/agents", get(agents))
            .route("/api/v1/checks", get(checks))
            .route("/api/v1/checks/reload", post(reload_checks))
            .route("/api/v1/rules", get(crate::rules_api::rules))
            .route("/api/v1/alerts", get(crate::rules_api::alerts))
            .merge(crate::notify_api::routes())
            .route(
                "/-/reload",
                post(crate::rules_api::reload).put(crate::rules_api::reload),
            )
            .route("/api/v1/status/buildinfo", get(crate::status::buildinfo))
            .route(
                "/api/v1/status/runtimeinfo",
                get(crate::status::runtimeinfo),
            )
            .route("/api/v1/status/flags", get(crate::status::flags))
            .route("/api/v1/status/tsdb", get(crate::status::tsdb))
            .route("/federate", get(crate::status::federate))
            .route(
                "/api/v1/write",
                post(crate::remote_write::receive).layer(axum::extract::DefaultBodyLimit::max(
                    crate::remote_write::MAX_DECODED_BYTES,
                )),
            )
            .with_state(state.clone()),
    );
    let api = api
        .layer(axum::Extension(state.metadata.clone()))
        .layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .with_state(state.clone())
        .merge(api)
        .layer(middleware::from_fn_with_state(state, observe))
}

async fn auth(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &s.token {
        let ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()));
        if !ok {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"status":"error","errorType":"unauthorized","error":"missing or wrong bearer token (Authorization: Bearer <token>)"}"#,
            )
                .into_response();
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn observe(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let handler = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    // Queries get their own span name so traces show them apart from other requests.
    let span = if handler.starts_with("/api/v1/query") {
        tracing::info_span!("query", http.route = %handler)
    } else {
        tracing::info_span!("http request", http.route = %handler)
    };
    let t = Instant::now();
    let resp = next.run(req).instrument(span).await;
    s.metrics
        .http_duration
        .get_or_create(&HandlerLabel {
            handler: handler.clone(),
        })
        .observe(t.elapsed().as_secs_f64());
    s.metrics
        .http_requests
        .get_or_create(&RequestLabels {
            handler,
            code: resp.status().as_u16(),
        })
        .inc();
    resp
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let m = &s.metrics;
    m.connected_agents.set(s.connections.connected() as i64);
    m.series.set(s.storage.series_count() as i64);
    m.head_points.set(s.storage.head_points() as i64);
    m.storage_bytes.set(s.storage.size_bytes() as i64);
    // The store counts since it opened, as the counter does: add what is new.
    m.samples_too_old.inc_by(
        s.storage
            .samples_too_old()
            .saturating_sub(m.samples_too_old.get()),
    );
    m.samples_too_new.inc_by(
        s.storage
            .samples_too_new()
            .saturating_sub(m.samples_too_new.get()),
    );
    m.query_cache_points.set(s.query.cache().size().1 as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-22T10:00:00.123Z`.
pub fn rfc3339(ms: i64) -> String {
    let (date, millis) = civil(ms);
    format!("{date}.{millis:03}Z")
}

/// A time as Go's `time.RFC3339Nano` prints it in UTC (as Prometheus' JSON does): `ms` since
/// the epoch plus `sub_ms_ns` nanoseconds, the fraction's trailing zeros dropped and no
/// fraction at all on a whole second (`2026-12-01T03:08:06.35983257Z`).
pub fn rfc3339_nano(ms: i64, sub_ms_ns: u32) -> String {
    let (date, millis) = civil(ms);
    let ns = millis as u64 * 1_000_000 + u64::from(sub_ms_ns % 1_000_000);
    if ns == 0 {
        return format!("{date}Z");
    }
    let frac = format!("{ns:09}");
    format!("{date}.{}Z", frac.trim_end_matches('0'))
}

/// `YYYY-MM-DDTHH:MM:SS` and the milliseconds of `ms` since the epoch (UTC).
fn civil(ms: i64) -> (String, i64) {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = outpost_shared::units::civil_from_days(days);
    let date = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    );
    (date, millis)
}

async fn agents(State(s): State<AppState>) -> impl IntoResponse {
    let mut known: std::collections::BTreeMap<String, AgentMeta> = s
        .ledger
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .agents()
        .into_iter()
        .collect();
    for id in s.connections.ids() {
        known.entry(id).or_default();
    }
    let mut items = vec![];
    for (id, meta) in known {
        let conn = s.connections.get(&id).unwrap_or_default();
        let last_seen = meta.last_seen_ms.max(conn.last_heartbeat_ms);
        items.push(serde_json::json!({
            "id": id,
            "region": if conn.region.is_empty() { meta.region.clone() } else { conn.region.clone() },
            "connected": conn.connected,
            "last_seen": rfc3339(last_seen),
            "last_seq": meta.applied_seq,
            "clock_skew_seconds": conn.clock_skew_ms as f64 / 1000.0,
            "version": conn.version,
            "batches": meta.batches,
            "samples": meta.samples,
            "gap_batches": meta.gap_batches,
            "handed_over_batches": meta.handed_over_batches,
            "gaps": meta.gaps.iter().map(|(a, b)| serde_json::json!({"from_seq": a, "to_seq": b, "batches": b - a + 1})).collect::<Vec<_>>(),
            "dropped_samples": conn.dropped_samples,
            "backlog_bytes": conn.backlog_bytes,
        }));
    }
    axum::Json(serde_json::json!({"status": "success", "data": items}))
}

/// Every check with its locations, the agent running it in each region and the latest
/// result per region. A region without a connected agent is `unknown`: its agents may still
/// be running the check, and their results arrive when they reconnect.
async fn checks(State(s): State<AppState>) -> Response {
    let view = s.checks.view();
    let now = crate::api::now_ms();
    let src = s.storage.clone();
    let checks = view.checks.clone();
    // Reads storage: off the async threads.
    let latest = tokio::task::spawn_blocking(move || {
        checks
            .iter()
            .map(|c| {
                let lookback = (c.frequency.get().as_millis() as i64 * 10).max(3_600_000);
                crate::checks::latest_results(src.as_ref(), &c.name, now - lookback, now + 60_000)
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await;
    let latest = match latest {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => return crate::api::ApiError::Internal(e.to_string()).into_response(),
        Err(e) => return crate::api::ApiError::Internal(e.to_string()).into_response(),
    };
    let mut items = vec![];
    for (c, latest) in view.checks.iter().zip(latest) {
        let interval_ms = c.frequency.get().as_millis() as i64;
        // A result older than three intervals (plus a timeout's worth) no longer describes now.
        let fresh_after = now - 3 * interval_ms - c.timeout().as_millis() as i64;
        let mut counts = std::collections::BTreeMap::<&str, usize>::new();
        let regions: Vec<_> = c
            .locations
            .iter()
            .map(|region| {
                let agent = view
                    .assignment
                    .get(&c.name)
                    .and_then(|r| r.get(region))
                    .cloned()
                    .flatten();
                let connected = view.regions_up.get(region).copied().unwrap_or(0) > 0;
                let l = latest.get(region);
                let state = crate::checks::region_state(connected, l, fresh_after);
                *counts.entry(state).or_default() += 1;
                serde_json::json!({
                    "region": region,
                    "agent": agent,
                    "state": state,
                    "latest": l.map(|l| serde_json::json!({
                        "success": l.success,
                        "time": rfc3339(l.ts_ms),
                        "agent": l.agent,
                        "duration_seconds": l.duration_seconds,
                        "failed_step": l.failed_step,
                        "reason": l.reason,
                    })),
                })
            })
            .collect();
        let def = serde_json::to_value(c).unwrap_or_default();
        items.push(serde_json::json!({
            "name": c.name,
            "type": def.get("type").cloned().unwrap_or_default(),
            "frequency": c.frequency.to_string(),
            "locations": c.locations,
            "passing_regions": counts.get("passing").copied().unwrap_or(0),
            "failing_regions": counts.get("failing").copied().unwrap_or(0),
            "unknown_regions": counts.get("unknown").copied().unwrap_or(0),
            "regions": regions,
        }));
    }
    axum::Json(serde_json::json!({
        "status": "success",
        "data": {
            "file": view.file.map(|f| f.display().to_string()),
            "loaded_at": rfc3339(view.loaded_ms),
            "last_error": view.last_error,
            "checks": items,
        }
    }))
    .into_response()
}

/// Re-reads `checks_file` now; 400 with every problem when it is refused.
async fn reload_checks(State(s): State<AppState>) -> Response {
    let r = s.checks.clone();
    match tokio::task::spawn_blocking(move || r.reload()).await {
        Ok(Ok(n)) => axum::Json(serde_json::json!({"status": "success", "data": {"checks": n}}))
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"status": "error", "errorType": "bad_data", "error": e})),
        )
            .into_response(),
        Err(e) => crate::api::ApiError::Internal(e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc_with_millis() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }
}
