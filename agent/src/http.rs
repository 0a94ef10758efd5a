//! The agent's local HTTP server: `/health`, `/status` (what `outpost-agent status` prints)
//! and `/metrics`.

use crate::buffer::Buffer;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::uplink::UplinkState;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::Ordering;

#[derive(Clone)]
pub struct HttpState {
    pub cfg: Arc<Config>,
    pub buffer: Arc<Buffer>,
    pub metrics: Arc<Metrics>,
    pub uplink: Arc<UplinkState>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
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
    ([(header::CONTENT_TYPE, "application/json")], format!("{body}\n"))
}

async fn status(State(s): State<HttpState>) -> impl IntoResponse {
    let st = s.uplink.status(&s.cfg, &s.buffer.stats());
    ([(header::CONTENT_TYPE, "application/json")], serde_json::to_string(&st).unwrap_or_default())
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    s.metrics.observe_buffer(&s.buffer.stats(), crate::now_ms());
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        s.metrics.encode(),
    )
}
