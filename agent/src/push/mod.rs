//! Push from local applications on the agent's HTTP listener:
//! - `POST /v1/metrics`: OTLP/HTTP metrics, protobuf or JSON ([`otlp`]);
//! - `POST`/`PUT /metrics/job/<job>{/<label>/<value>}`: Prometheus text with Pushgateway's
//!   path convention ([`pushgw`]).
//!
//! A request is converted whole, then buffered as one batch; it is answered 2xx only once that
//! batch is in the durable buffer. A bad payload gets 400 with what is wrong and leaves nothing
//! behind; a buffer that cannot take the batch gets 503 so the sender retries.
//!
//! A series may appear once per request (per timestamp, for OTLP points that carry their
//! own): a repeat is refused with 400 naming the series, as the Pushgateway refuses it,
//! since storing either value would silently lose the other. [`repeated`] finds repeats;
//! scrapes use it too, keeping the first as Prometheus does.

pub mod otlp;
pub mod pushgw;

use crate::appender::{Appender, Source, Stored};
use crate::metrics::PushLabel;
use crate::textparse::Format;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use outpost_shared::Batch;
use std::io::Read;

/// Largest request body accepted, compressed or not.
pub const MAX_BODY: usize = 32 << 20;

/// A refused push: status and a message saying what is wrong.
#[derive(Debug)]
pub struct PushError {
    pub status: StatusCode,
    pub message: String,
}

impl PushError {
    fn bad(message: impl Into<String>) -> Self {
        PushError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

/// The request body, gunzipped when `Content-Encoding: gzip`.
fn body(headers: &HeaderMap, body: &Bytes) -> Result<Vec<u8>, PushError> {
    let enc = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match enc.as_str() {
        "" | "identity" => Ok(body.to_vec()),
        "gzip" => {
            let mut out = vec![];
            flate2::read::GzDecoder::new(&body[..])
                .take(MAX_BODY as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| PushError::bad(format!("cannot gunzip the body: {e}")))?;
            if out.len() > MAX_BODY {
                return Err(PushError {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    message: format!("the body is larger than {MAX_BODY} bytes once gunzipped"),
                });
            }
            Ok(out)
        }
        other => Err(PushError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: format!(
                "Content-Encoding {other:?} is not supported; send gzip or no encoding"
            ),
        }),
    }
}

/// Indices in `batch.series` of every entry whose series (labels) already had a point at
/// the same timestamp earlier in the batch, in batch order. Empty when every series appears
/// once per timestamp.
pub fn repeated(batch: &Batch) -> Vec<usize> {
    let mut seen = std::collections::HashSet::with_capacity(batch.series.len());
    let mut out = Vec::new();
    for (i, s) in batch.series.iter().enumerate() {
        if !s.points.iter().all(|p| seen.insert((&s.labels, p.ts))) {
            out.push(i);
        }
    }
    out
}

/// Refuses a batch in which a series repeats, naming the first repeated series.
pub fn refuse_repeats(batch: &Batch) -> Result<(), String> {
    match repeated(batch).first() {
        None => Ok(()),
        Some(&i) => Err(format!(
            "series {} appears more than once in this push; each series may be pushed once per request, so nothing of it was stored",
            batch.series[i].labels
        )),
    }
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Buffers a converted batch (blocking) and maps the outcome to an error when not stored.
fn store(
    appender: &Appender,
    batch: &outpost_shared::Batch,
    source: Source,
) -> Result<usize, PushError> {
    let n = batch.sample_count();
    match appender.store(batch, source) {
        Ok(Stored::Seq(_) | Stored::Empty) => Ok(n),
        Ok(Stored::Dropped) => Err(PushError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message:
                "the agent's buffer is full and its when_full policy dropped this push; retry later"
                    .into(),
        }),
        Err(e) => Err(PushError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("cannot buffer this push: {e}; retry later"),
        }),
    }
}

fn count(appender: &Appender, format: &str, status: StatusCode) {
    appender
        .metrics
        .push_requests
        .get_or_create(&PushLabel {
            format: format.into(),
            code: status.as_str().into(),
        })
        .inc();
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PushError> + Send + 'static,
) -> Result<T, PushError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(PushError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("push task failed: {e}"),
        })
    })
}

/// `POST|PUT /metrics/job/...`: Prometheus text (or OpenMetrics) in Pushgateway's convention.
pub async fn push_text(appender: Appender, uri: Uri, headers: HeaderMap, raw: Bytes) -> Response {
    let r = async {
        let path = uri.path().strip_prefix("/metrics/").unwrap_or("");
        let group = pushgw::grouping(path).map_err(PushError::bad)?;
        let ct = content_type(&headers).to_ascii_lowercase();
        if ct.contains("protobuf") {
            return Err(PushError {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                message: "the protobuf exposition is not supported here; push the text format (Content-Type: text/plain; version=0.0.4)".into(),
            });
        }
        let format = Format::from_content_type(&ct);
        let bytes = body(&headers, &raw)?;
        let s2 = appender.clone();
        blocking(move || {
            let text = std::str::from_utf8(&bytes).map_err(|e| PushError::bad(format!("the body is not UTF-8: {e}")))?;
            let (batch, metadata) = pushgw::to_batch(text, format, &group, &s2.agent_labels(), outpost_service::now_ms()).map_err(PushError::bad)?;
            let n = store(&s2, &batch, Source::PushText)?;
            s2.metadata.observe(metadata.iter().map(|m| (m.family.as_str(), &m.meta)));
            Ok(n)
        })
        .await
    }
    .await;
    match r {
        Ok(_) => {
            count(&appender, "text", StatusCode::OK);
            StatusCode::OK.into_response()
        }
        Err(e) => {
            count(&appender, "text", e.status);
            tracing::debug!(status = %e.status, "push refused: {}", e.message);
            (
                e.status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("{}\n", e.message),
            )
                .into_response()
        }
    }
}

/// `POST /v1/metrics`: OTLP/HTTP, answered in the request's encoding as the spec asks.
pub async fn push_otlp(appender: Appender, headers: HeaderMap, raw: Bytes) -> Response {
    let enc = otlp::Encoding::from_content_type(content_type(&headers));
    let r = async {
        let Some(enc) = enc else {
            return Err(PushError {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                message: format!("Content-Type {:?} is not OTLP/HTTP; use application/x-protobuf or application/json", content_type(&headers)),
            });
        };
        let bytes = body(&headers, &raw)?;
        let s2 = appender.clone();
        blocking(move || {
            let req = otlp::decode(&bytes, enc).map_err(PushError::bad)?;
            let batch = otlp::to_batch(&req, &s2.agent_labels(), outpost_service::now_ms()).map_err(PushError::bad)?;
            let n = store(&s2, &batch, Source::PushOtlp)?;
            let metadata = otlp::metadata(&req);
            s2.metadata.observe(metadata.iter().map(|m| (m.family.as_str(), &m.meta)));
            Ok(n)
        })
        .await
    }
    .await;
    let format = match enc {
        Some(otlp::Encoding::Json) => "otlp_json",
        _ => "otlp_protobuf",
    };
    match r {
        Ok(_) => {
            count(&appender, format, StatusCode::OK);
            match enc {
                Some(otlp::Encoding::Json) => (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    "{}".to_string().into_bytes(),
                )
                    .into_response(),
                // An empty ExportMetricsServiceResponse encodes to no bytes.
                _ => (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/x-protobuf")],
                    Vec::new(),
                )
                    .into_response(),
            }
        }
        Err(e) => {
            count(&appender, format, e.status);
            tracing::debug!(status = %e.status, "OTLP push refused: {}", e.message);
            match enc {
                Some(otlp::Encoding::Protobuf) => (
                    e.status,
                    [(header::CONTENT_TYPE, "application/x-protobuf")],
                    otlp::status_protobuf(&e.message),
                )
                    .into_response(),
                _ => {
                    let body = serde_json::json!({ "code": 3, "message": e.message }).to_string();
                    (
                        e.status,
                        [(header::CONTENT_TYPE, "application/json")],
                        body.into_bytes(),
                    )
                        .into_response()
                }
            }
        }
    }
}
