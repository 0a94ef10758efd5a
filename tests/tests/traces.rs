//! OpenTelemetry export, end to end: both programs send spans over OTLP/HTTP (protobuf) to a
//! small receiver on loopback, and the aggregator's batch ingest span continues the trace
//! of the agent's batch send span through the context carried in the batch frame.
//!
//! This file holds one test because it sets process environment variables, which the
//! started programs inherit.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use outpost_tests::*;
use prost::Message;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
struct Span {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
}

type Shared<T> = Arc<Mutex<Vec<T>>>;

/// Accepts OTLP/HTTP posts, decodes them and keeps every span and each request's
/// "METHOD path content-type". Returns the base URL and both lists.
fn start_receiver() -> (String, Shared<Span>, Shared<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let spans = Arc::new(Mutex::new(Vec::new()));
    let paths = Arc::new(Mutex::new(Vec::new()));
    let (s, p) = (spans.clone(), paths.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (s, p) = (s.clone(), p.clone());
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                // One request after another on a kept-alive connection.
                loop {
                    let mut request_line = String::new();
                    if r.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut len = 0usize;
                    let mut content_type = String::new();
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        let (k, v) = h.split_once(':').unwrap_or((h, ""));
                        match k.to_ascii_lowercase().as_str() {
                            "content-length" => len = v.trim().parse().unwrap_or(0),
                            "content-type" => content_type = v.trim().to_string(),
                            _ => {}
                        }
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    p.lock().unwrap().push(format!(
                        "{} {content_type}",
                        request_line
                            .split_whitespace()
                            .take(2)
                            .collect::<Vec<_>>()
                            .join(" ")
                    ));
                    if let Ok(req) = ExportTraceServiceRequest::decode(&body[..]) {
                        let mut out = s.lock().unwrap();
                        for rs in req.resource_spans {
                            let service = rs
                                .resource
                                .iter()
                                .flat_map(|r| r.attributes.iter())
                                .find(|kv| kv.key == "service.name")
                                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                                    AnyValue::StringValue(v) => Some(v.clone()),
                                    _ => None,
                                })
                                .unwrap_or_default();
                            for ss in rs.scope_spans {
                                for sp in ss.spans {
                                    out.push(Span {
                                        service: service.clone(),
                                        name: sp.name,
                                        trace_id: sp.trace_id,
                                        span_id: sp.span_id,
                                        parent_span_id: sp.parent_span_id,
                                    });
                                }
                            }
                        }
                    }
                    let _ = w.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n");
                }
            });
        }
    });
    (format!("http://{addr}"), spans, paths)
}

#[test]
fn spans_reach_an_otlp_receiver_and_the_batch_trace_crosses_the_wire() {
    let (endpoint, spans, paths) = start_receiver();
    // SAFETY: the only test in this binary; set before any program starts.
    unsafe {
        std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
        // Export every 200 ms instead of every 5 s, so the test waits little.
        std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "200");
    }
    let tmp = TempDir::new("traces");
    let certs = Certs::init(&tmp.path().join("certs"));
    let agg = Aggregator::start(tmp.path(), &certs);
    let _agent = Agent::start(tmp.path(), &agg, &AgentSpec::new("trace-1", &certs));

    // A batch's trace: the agent's send span is the parent of the aggregator's ingest span.
    let linked = wait_for(Duration::from_secs(30), || {
        let s = spans.lock().unwrap();
        s.iter()
            .filter(|a| a.service == "outpost-aggregator" && a.name == "batch ingest")
            .find_map(|ing| {
                s.iter()
                    .find(|snd| {
                        snd.service == "outpost-agent"
                            && snd.name == "batch send"
                            && snd.trace_id == ing.trace_id
                            && snd.span_id == ing.parent_span_id
                    })
                    .map(|snd| (snd.clone(), ing.clone()))
            })
    });
    let (send, ingest) = linked.unwrap_or_else(|| {
        let s = spans.lock().unwrap();
        panic!(
            "no ingest span continuing an agent's send span; received: {:?}\nrequests: {:?}",
            s.iter().map(|s| (&s.service, &s.name)).collect::<Vec<_>>(),
            paths.lock().unwrap()
        )
    });
    assert_eq!(send.trace_id.len(), 16);
    assert!(send.trace_id.iter().any(|b| *b != 0));
    assert!(
        send.parent_span_id.is_empty(),
        "the send span starts the trace"
    );
    assert_ne!(ingest.span_id, send.span_id);

    // Queries get spans too.
    assert!(!agg.query("outpost_agent_cycles_total").is_empty());
    let query = wait_for(Duration::from_secs(10), || {
        spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.service == "outpost-aggregator" && s.name == "query")
            .cloned()
    });
    assert!(query.is_some(), "no query span received");
    let p = paths.lock().unwrap();
    assert!(
        p.iter()
            .all(|r| r == "POST /v1/traces application/x-protobuf"),
        "{p:?}"
    );
}
