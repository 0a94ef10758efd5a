//! `POST /api/v1/write`: Prometheus remote_write 1.0 ingestion (protobuf `WriteRequest` in a
//! snappy block), so Prometheus, vmagent, Grafana Alloy, OpenTelemetry collectors and k6 can
//! write into the same store the agents write into.
//!
//! As Prometheus' receiver (`--web.enable-remote-write-receiver`): `204 No Content` once the
//! samples are durable, `400 Bad Request` with a plain-text reason for a body that does not
//! decode or a series whose labels are unusable (and then nothing of the request is stored),
//! `500` when the store fails. Unlike Prometheus, samples older than what is already stored
//! are welcome (late data lands where it belongs; a repeated timestamp keeps the newest
//! write), and stale markers are stored as sent. Metric metadata in the request (Prometheus
//! sends it every minute) joins the agents' in `/api/v1/metadata`. The bearer-token rule is
//! the rest of the API's.

use crate::http::AppState;
use crate::ingest::{SeriesWrite, WriterMsg};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use outpost_shared::Point;
use outpost_shared::metadata::{FamilyMetadata, Metadata, MetricType, truncate_text};
use outpost_shared::remote_write::{self, DecodeError, WriteRequest};
use tokio::sync::oneshot;

/// The largest request body accepted once decompressed, in bytes (Prometheus' senders cut
/// requests at 2,000 samples by default, a few hundred KiB).
pub const MAX_DECODED_BYTES: usize = 64 << 20;

/// Turns a decoded request into series and points, refusing the whole request at the first
/// unusable series. Series without samples are left out.
///
/// # Errors
/// A series' labels are invalid (see [`remote_write::series_labels`]).
pub fn to_write(req: WriteRequest) -> Result<SeriesWrite, DecodeError> {
    let mut out = Vec::with_capacity(req.timeseries.len());
    for (i, ts) in req.timeseries.into_iter().enumerate() {
        let labels = remote_write::series_labels(i, &ts.labels)?;
        if ts.samples.is_empty() {
            continue;
        }
        let points = ts
            .samples
            .iter()
            .map(|s| Point {
                ts: s.timestamp,
                value: s.value,
            })
            .collect();
        out.push((labels, points));
    }
    Ok(out)
}

/// The request's metric metadata as the metadata store keeps it; entries without a family
/// name are skipped and over-long texts cut, as the agents' are.
pub fn to_metadata(meta: Vec<remote_write::MetricMetadata>) -> Vec<FamilyMetadata> {
    meta.into_iter()
        .filter(|m| !m.metric_family_name.is_empty())
        .map(|m| {
            let kind = MetricType::parse(m.type_name()).unwrap_or(MetricType::Unknown);
            let mut f = FamilyMetadata {
                family: m.metric_family_name,
                meta: Metadata {
                    kind,
                    help: m.help,
                    unit: m.unit,
                },
            };
            truncate_text(&mut f.family);
            truncate_text(&mut f.meta.help);
            truncate_text(&mut f.meta.unit);
            f
        })
        .collect()
}

fn text(status: StatusCode, msg: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg + "\n",
    )
        .into_response()
}

/// The handler.
pub async fn receive(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(enc) = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        && !enc.eq_ignore_ascii_case("snappy")
    {
        s.metrics.remote_write("bad_request");
        return text(
            StatusCode::BAD_REQUEST,
            format!("unsupported Content-Encoding {enc:?}: remote_write 1.0 bodies are snappy"),
        );
    }
    let decoded = tokio::task::spawn_blocking(move || {
        let mut req = remote_write::decode(&body, MAX_DECODED_BYTES)?;
        let declared = to_metadata(std::mem::take(&mut req.metadata));
        Ok::<_, DecodeError>((to_write(req)?, declared))
    })
    .await;
    let write = match decoded {
        Ok(Ok((w, declared))) => {
            // Metadata is kept as the agents' is: the latest declaration per family.
            let changed = s.metadata.changed(declared);
            if !changed.is_empty() {
                let _ = s.writer.send(WriterMsg::Metadata(changed)).await;
            }
            w
        }
        Ok(Err(e)) => {
            s.metrics.remote_write("bad_request");
            return text(StatusCode::BAD_REQUEST, e.to_string());
        }
        Err(e) => {
            s.metrics.remote_write("error");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("decoding failed: {e}"),
            );
        }
    };
    let samples: usize = write.iter().map(|(_, p)| p.len()).sum();
    if samples == 0 {
        s.metrics.remote_write("stored");
        return StatusCode::NO_CONTENT.into_response();
    }
    let (tx, rx) = oneshot::channel();
    if s.writer.send(WriterMsg::Write(write, tx)).await.is_err() {
        s.metrics.remote_write("unavailable");
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the aggregator is shutting down; retry".into(),
        );
    }
    match rx.await {
        Ok(Ok(())) => {
            s.metrics.remote_write("stored");
            s.metrics.remote_write_samples.inc_by(samples as u64);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Err(e)) if crate::space::is_full(&e) => {
            // Told once in the log by the writer; the sender retries.
            s.metrics.remote_write("unavailable");
            text(StatusCode::SERVICE_UNAVAILABLE, e)
        }
        Ok(Err(e)) => {
            s.metrics.remote_write("error");
            tracing::error!("remote_write: storing failed: {e}");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("storing failed: {e}"),
            )
        }
        Err(_) => {
            s.metrics.remote_write("unavailable");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the aggregator is shutting down; retry".into(),
            )
        }
    }
}
