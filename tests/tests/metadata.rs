//! End to end: metric metadata (type, HELP, UNIT) travels from a real agent — its host
//! collectors, a scraped page and pushes — to a real aggregator, which serves it at
//! `/api/v1/metadata` in Prometheus' shape and keeps it across a restart.

use outpost_tests::*;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A tiny HTTP server answering every request with the current `body`.
fn serve(content_type: &'static str, body: Arc<Mutex<String>>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let body = body.lock().unwrap().clone();
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = c.write_all(resp.as_bytes());
        }
    });
    addr
}

fn post(url: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    match agent
        .post(url)
        .header("Content-Type", content_type)
        .send(body)
    {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(e) => (0, e.to_string()),
    }
}

/// `/api/v1/metadata` with `query` (already encoded), as JSON.
fn metadata(agg: &Aggregator, query: &str) -> Value {
    get_json(&agg.url(&format!("/api/v1/metadata{query}"))).unwrap_or(Value::Null)
}

/// Waits until every family in `want` has exactly that metadata entry.
fn wait_metadata(agg: &Aggregator, want: &[(&str, Value)]) -> Value {
    let got = wait_for(Duration::from_secs(30), || {
        let m = metadata(agg, "");
        want.iter()
            .all(|(family, entry)| m["data"][family] == json!([entry]))
            .then_some(m)
    });
    got.unwrap_or_else(|| {
        let m = metadata(agg, "");
        let have: Vec<(&str, &Value)> = want.iter().map(|(f, _)| (*f, &m["data"][f])).collect();
        panic!(
            "metadata never arrived: want {want:?}, have {have:?}\nstatus {}\n{}",
            m["status"],
            agg.proc.logs()
        )
    })
}

const PAGE: &str = "# HELP app_requests_total Requests served, by code.\n# TYPE app_requests_total counter\napp_requests_total{code=\"200\"} 7\n# HELP app_temperature Board temperature.\n# TYPE app_temperature gauge\napp_temperature 21.5\nno_metadata 1\n";
const OM_PAGE: &str = "# TYPE om_payload gauge\n# UNIT om_payload bytes\n# HELP om_payload Size of the last payload.\nom_payload 512\n# EOF\n";

fn entry(kind: &str, help: &str, unit: &str) -> Value {
    json!({"type": kind, "help": help, "unit": unit})
}

#[test]
fn metadata_travels_from_agent_to_aggregator_and_survives_a_restart() {
    let tmp = TempDir::new("metadata");
    let certs = Certs::init(&tmp.path().join("certs"));
    let mut agg = Aggregator::start(tmp.path(), &certs);
    let page = Arc::new(Mutex::new(PAGE.to_string()));
    let text = serve("text/plain; version=0.0.4", page.clone());
    let om = serve(
        "application/openmetrics-text; version=1.0.0",
        Arc::new(Mutex::new(OM_PAGE.to_string())),
    );
    let extra = format!(
        "[[scrape]]\njob = \"app\"\ntargets = [\"{text}\"]\ninterval = \"1s\"\n\n[[scrape]]\njob = \"om\"\ntargets = [\"{om}\"]\ninterval = \"1s\"\n"
    );
    let spec = AgentSpec {
        extra: &extra,
        ..AgentSpec::new("web-1", &certs)
    };
    let mut agent = Agent::start(tmp.path(), &agg, &spec);

    // A text push and an OTLP push, each declaring its families.
    let (code, body) = post(
        &agent.url("/metrics/job/nightly"),
        "text/plain; version=0.0.4",
        b"# HELP backup_age_seconds Age of the last backup.\n# TYPE backup_age_seconds gauge\nbackup_age_seconds 12\n",
    );
    assert_eq!(code, 200, "{body}");
    let otlp = r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}}]},
        "scopeMetrics":[{"metrics":[{"name":"http.server.duration","unit":"ms","description":"Duration of HTTP requests.",
        "histogram":{"aggregationTemporality":2,"dataPoints":[{"count":"1","sum":3,"bucketCounts":["1","0"],"explicitBounds":[5]}]}}]}]}]}"#;
    let (code, body) = post(
        &agent.url("/v1/metrics"),
        "application/json",
        otlp.as_bytes(),
    );
    assert_eq!(code, 200, "{body}");

    let want = [
        (
            "node_cpu_seconds_total",
            entry("counter", "Seconds the CPUs spent in each mode.", ""),
        ),
        ("node_load1", entry("gauge", "1m load average.", "")),
        (
            "node_vmstat_pgfault",
            entry("unknown", "/proc/vmstat information field pgfault.", ""),
        ),
        (
            "app_requests_total",
            entry("counter", "Requests served, by code.", ""),
        ),
        ("app_temperature", entry("gauge", "Board temperature.", "")),
        (
            "om_payload",
            entry("gauge", "Size of the last payload.", "bytes"),
        ),
        (
            "backup_age_seconds",
            entry("gauge", "Age of the last backup.", ""),
        ),
        (
            "http_server_duration_milliseconds",
            entry("histogram", "Duration of HTTP requests.", "milliseconds"),
        ),
    ];
    let all = wait_metadata(&agg, &want);
    assert_eq!(all["status"], "success");
    // Families ingested without metadata are absent, as in Prometheus.
    let stored = wait_for(Duration::from_secs(20), || {
        (!agg.query("no_metadata").is_empty()).then_some(())
    });
    assert!(stored.is_some(), "the sample itself is stored");
    assert!(all["data"].get("no_metadata").is_none(), "{all}");

    // Prometheus' parameters: metric, limit (families, in name order here), limit_per_metric.
    assert_eq!(
        metadata(&agg, "?metric=node_load1"),
        json!({"status": "success", "data": {"node_load1": [entry("gauge", "1m load average.", "")]}})
    );
    assert_eq!(
        metadata(&agg, "?metric=nope"),
        json!({"status": "success", "data": {}})
    );
    let two = metadata(&agg, "?limit=2&limit_per_metric=1");
    assert_eq!(two["data"].as_object().map(|o| o.len()), Some(2), "{two}");
    assert_eq!(
        metadata(&agg, "?limit=0"),
        json!({"status": "success", "data": {}})
    );
    let (code, body) = get_status(&agg.url("/api/v1/metadata?limit=many"), None);
    assert_eq!(code, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"status": "error", "errorType": "bad_data", "error": "limit must be a number"})
    );
    let (code, body) = post(
        &agg.url("/api/v1/metadata"),
        "application/x-www-form-urlencoded",
        b"metric=app_temperature",
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"status": "success", "data": {"app_temperature": [entry("gauge", "Board temperature.", "")]}})
    );

    // The aggregator restarts while the agent is down: what it serves came from its store.
    agent.proc.kill();
    agg.restart();
    let after = metadata(&agg, "");
    for (family, e) in &want {
        assert_eq!(
            after["data"][family],
            json!([e]),
            "{family} after a restart"
        );
    }

    // A changed declaration replaces the stored one once the agent is back.
    *page.lock().unwrap() = PAGE.replace("Board temperature.", "Board temperature, in °C.");
    agent.restart();
    wait_metadata(
        &agg,
        &[(
            "app_temperature",
            entry("gauge", "Board temperature, in °C.", ""),
        )],
    );
}
