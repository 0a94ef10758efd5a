//! The agent's local HTTP server: `/health` and `/metrics`.

use crate::buffer::Buffer;
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
    pub buffer: Arc<Buffer>,
    pub metrics: Arc<Metrics>,
    pub uplink: Arc<UplinkState>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn health(State(s): State<HttpState>) -> impl IntoResponse {
    let b = s.buffer.stats();
    let connected = s.uplink.connected.load(Ordering::Relaxed);
    let body = format!(
        "{{\"status\":\"ok\",\"connected\":{connected},\"buffer_batches\":{},\"buffer_bytes\":{},\"cycles\":{}}}\n",
        b.batches, b.bytes, b.cycles
    );
    ([(header::CONTENT_TYPE, "application/json")], body)
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    s.metrics.observe_buffer(&s.buffer.stats(), crate::now_ms());
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        s.metrics.encode(),
    )
}
