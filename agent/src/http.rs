//! The agent's local HTTP server: `/health`, `/status` (what `outpost-agent status` prints),
//! `/metrics`, and the push endpoints (`POST /v1/metrics`, `POST|PUT /metrics/job/...`, see
//! [`crate::push`]).

use crate::buffer::Buffer;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::sink::Sink;
use crate::uplink::UplinkState;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Uri, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use std::sync::Arc;
use std::sync::atomic::Ordering;

#[derive(Clone)]
pub struct HttpState {
    pub cfg: Arc<Config>,
    pub buffer: Arc<Buffer>,
    pub metrics: Arc<Metrics>,
    pub uplink: Arc<UplinkState>,
    pub sink: Sink,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/metrics/{*group}", post(push_text).put(push_text))
        .route("/v1/metrics", post(push_otlp))
        .layer(DefaultBodyLimit::max(crate::push::MAX_BODY))
        .with_state(state)
}

async fn health(State(s): State<HttpState>) -> impl IntoResponse {
    let b = s.buffer.stats();
    let connected = s.uplink.connected.load(Ordering::Relaxed);
    let body = serde_json::json!({
        "status": "ok",
        "connected": connected,
        "buffer_batches": b.batches,
        "buffer_bytes": b.bytes,
        "cycles": b.cycles,
        "buffer_error": b.write_error,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
}

async fn status(State(s): State<HttpState>) -> impl IntoResponse {
    let st = s.uplink.status(&s.cfg, &s.buffer.stats());
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&st).unwrap_or_default(),
    )
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    s.metrics
        .observe_buffer(&s.buffer.stats(), outpost_service::now_ms());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn push_text(
    State(s): State<HttpState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    crate::push::push_text(s.sink, uri, headers, body).await
}

async fn push_otlp(
    State(s): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    crate::push::push_otlp(s.sink, headers, body).await
}
