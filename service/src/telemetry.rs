//! OpenTelemetry trace export for both programs: OTLP over HTTP/protobuf, switched on by
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (a full URL), `OTEL_EXPORTER_OTLP_ENDPOINT` (a base
//! URL, `/v1/traces` appended) or the config's `[telemetry] otlp_endpoint` (a base URL), in
//! that order. `tracing` spans become OpenTelemetry spans; the batch span's context travels
//! in the batch frame ([`context_of`] on the agent, [`continue_from`] on the aggregator).
//!
//! The exporter's HTTP client has no TLS (Outpost links one TLS stack, rustls with ring, and
//! the exporter's client does not use it): point it at a collector over plain HTTP, usually
//! one on the same host.

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use outpost_shared::frame::TraceContext;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Flushes and stops span export when dropped.
#[derive(Default)]
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown_with_timeout(std::time::Duration::from_secs(5))
        {
            eprintln!("trace export: final flush failed: {e}");
        }
    }
}

/// The URL spans are posted to, or `None` when export is off.
pub fn traces_url(
    traces_env: Option<&str>,
    base_env: Option<&str>,
    config: Option<&str>,
) -> Option<String> {
    fn nonempty(s: Option<&str>) -> Option<&str> {
        s.map(str::trim).filter(|s| !s.is_empty())
    }
    if let Some(u) = nonempty(traces_env) {
        return Some(u.to_string());
    }
    nonempty(base_env)
        .or(nonempty(config))
        .map(|b| format!("{}/v1/traces", b.trim_end_matches('/')))
}

/// Checks an OTLP endpoint (config key `telemetry.otlp_endpoint`).
pub fn validate_endpoint(url: &str) -> Result<(), String> {
    let rest = match url.strip_prefix("http://") {
        Some(r) => r,
        None if url.starts_with("https://") => {
            return Err(format!(
                "{url:?}: https is not supported by the exporter; send to a collector over http (e.g. one on this host)"
            ));
        }
        None => {
            return Err(format!(
                "{url:?} is not an http:// URL such as \"http://127.0.0.1:4318\""
            ));
        }
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

/// Builds the tracer when an endpoint is set. Must run outside the async runtime (the
/// exporter's blocking HTTP client owns a runtime of its own).
pub fn tracer(
    service: &'static str,
    config_endpoint: Option<&str>,
) -> Result<Option<(SdkTracer, Guard)>, String> {
    let env = |k| std::env::var(k).ok();
    let Some(url) = traces_url(
        env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").as_deref(),
        env("OTEL_EXPORTER_OTLP_ENDPOINT").as_deref(),
        config_endpoint,
    ) else {
        return Ok(None);
    };
    validate_endpoint(&url)?;
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url.clone())
        .build()
        .map_err(|e| format!("OTLP exporter for {url}: {e}"))?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer(service);
    Ok(Some((
        tracer,
        Guard {
            provider: Some(provider),
        },
    )))
}

/// The trace context of `span` for a batch frame; `None` when spans are not exported.
pub fn context_of(span: &tracing::Span) -> Option<TraceContext> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| TraceContext {
        trace_id: sc.trace_id().to_bytes(),
        span_id: sc.span_id().to_bytes(),
        flags: sc.trace_flags().to_u8(),
    })
}

/// Makes `span` a child of the sender's span carried in a frame.
pub fn continue_from(span: &tracing::Span, tc: &TraceContext) {
    let sc = SpanContext::new(
        TraceId::from_bytes(tc.trace_id),
        SpanId::from_bytes(tc.span_id),
        TraceFlags::new(tc.flags),
        true,
        TraceState::default(),
    );
    if sc.is_valid() {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_precedence() {
        assert_eq!(traces_url(None, None, None), None);
        assert_eq!(
            traces_url(None, None, Some("http://c:4318/")).as_deref(),
            Some("http://c:4318/v1/traces")
        );
        assert_eq!(
            traces_url(None, Some("http://e:4318"), Some("http://c:4318")).as_deref(),
            Some("http://e:4318/v1/traces")
        );
        assert_eq!(
            traces_url(Some("http://t/x"), Some("http://e:4318"), None).as_deref(),
            Some("http://t/x")
        );
        assert_eq!(traces_url(Some(" "), None, Some("")), None);
    }

    #[test]
    fn endpoints_must_be_plain_http() {
        assert!(validate_endpoint("http://127.0.0.1:4318").is_ok());
        assert!(
            validate_endpoint("https://c:4318")
                .unwrap_err()
                .contains("https is not supported")
        );
        assert!(
            validate_endpoint("c:4318")
                .unwrap_err()
                .contains("not an http:// URL")
        );
        assert!(
            validate_endpoint("http:///v1")
                .unwrap_err()
                .contains("no host")
        );
    }

    #[test]
    fn no_context_without_export() {
        assert_eq!(context_of(&tracing::info_span!("x")), None);
    }
}
