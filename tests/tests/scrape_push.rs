//! End to end: the agent scrapes real local HTTP servers (`[[scrape]]`) and takes pushes
//! (Pushgateway-style text, OTLP/HTTP protobuf and JSON); everything is queried back at a real
//! aggregator with the labels Prometheus would give it.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use outpost_tests::*;
use prost::Message;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A tiny HTTP server answering every request with `body`; it records each request's head.
struct Exposition {
    addr: String,
    requests: Arc<Mutex<Vec<String>>>,
}

fn serve(content_type: &'static str, body: String) -> Exposition {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let requests = Arc::new(Mutex::new(vec![]));
    let rec = requests.clone();
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
            rec.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head).into_owned());
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = c.write_all(resp.as_bytes());
        }
    });
    Exposition { addr, requests }
}

fn one(agg: &Aggregator, q: &str) -> Option<(serde_json::Value, f64)> {
    let r = agg.query(q);
    let s = r.first()?;
    Some((s["metric"].clone(), sample_value(&s["value"])?))
}

fn wait_one(agg: &Aggregator, q: &str) -> (serde_json::Value, f64) {
    wait_for(Duration::from_secs(20), || one(agg, q))
        .unwrap_or_else(|| panic!("{q} never arrived at the aggregator"))
}

fn post(url: &str, content_type: &str, body: &[u8]) -> (u16, Vec<u8>) {
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
            r.body_mut().read_to_vec().unwrap_or_default(),
        ),
        Err(e) => (0, e.to_string().into_bytes()),
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

const TEXT_PAGE: &str = r#"# HELP app_requests_total Requests served.
# TYPE app_requests_total counter
app_requests_total{code="200",path="/a \"quoted\" \\ path"} 1027
app_requests_total{code="500",job="inner"} 3
# TYPE app_temperature gauge
app_temperature NaN
# TYPE app_latency_seconds histogram
app_latency_seconds_bucket{le="0.1"} 5
app_latency_seconds_bucket{le="+Inf"} 9
app_latency_seconds_sum 2.5
app_latency_seconds_count 9
"#;

const OM_PAGE: &str = "# TYPE om_jobs counter\n# HELP om_jobs Jobs run.\nom_jobs_total{kind=\"x\"} 42 # {trace_id=\"abc\"} 1.0\nom_jobs_created{kind=\"x\"} 1700000000.0\n# TYPE om_size gauge\n# UNIT om_size bytes\nom_size +Inf\n# EOF\n";

#[test]
fn scraped_targets_arrive_with_prometheus_labels() {
    let tmp = TempDir::new("scrape");
    let certs = Certs::init(&tmp.path().join("certs"));
    let agg = Aggregator::start(tmp.path(), &certs);
    let text = serve(
        "text/plain; version=0.0.4; charset=utf-8",
        TEXT_PAGE.to_string(),
    );
    let om = serve(
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        OM_PAGE.to_string(),
    );
    let down = format!("127.0.0.1:{}", free_tcp_port());
    let token = tmp.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let extra = format!(
        "[[scrape]]\njob = \"app\"\ntargets = [\"{}\", \"{down}\"]\ninterval = \"1s\"\nbearer_token_file = \"{}\"\nlabels = {{ env = \"test\" }}\n\n[[scrape]]\njob = \"om\"\ntargets = [\"{}\"]\ninterval = \"1s\"\nmetrics_path = \"/custom\"\n",
        text.addr,
        token.display(),
        om.addr
    );
    let _agent = Agent::start(
        tmp.path(),
        &agg,
        &AgentSpec {
            extra: &extra,
            ..AgentSpec::new("web-1", &certs)
        },
    );

    let (m, v) = wait_one(&agg, "app_requests_total{code=\"200\"}");
    assert_eq!(v, 1027.0);
    assert_eq!(
        m,
        serde_json::json!({"__name__": "app_requests_total", "code": "200", "path": "/a \"quoted\" \\ path", "job": "app",
            "instance": text.addr, "env": "test", "agent": "web-1", "region": "test-region"})
    );
    // honor_labels false: the page's own job is kept as exported_job.
    let (m, v) = wait_one(&agg, "app_requests_total{code=\"500\"}");
    assert_eq!(
        (m["job"].as_str(), m["exported_job"].as_str(), v),
        (Some("app"), Some("inner"), 3.0)
    );
    let (_, v) = wait_one(&agg, "app_latency_seconds_bucket{le=\"+Inf\"}");
    assert_eq!(v, 9.0);
    let r = agg.query("app_temperature");
    assert_eq!(
        r.first().map(|s| s["value"][1].clone()),
        Some(serde_json::json!("NaN")),
        "{r:?}"
    );

    // up, scrape_duration_seconds and scrape_samples_scraped per target.
    let (_, up) = wait_one(
        &agg,
        &format!("up{{job=\"app\",instance=\"{}\"}}", text.addr),
    );
    assert_eq!(up, 1.0);
    let (m, up) = wait_one(&agg, &format!("up{{job=\"app\",instance=\"{down}\"}}"));
    assert_eq!(up, 0.0);
    assert_eq!(
        (m["agent"].as_str(), m["env"].as_str()),
        (Some("web-1"), Some("test"))
    );
    let (_, n) = wait_one(
        &agg,
        &format!("scrape_samples_scraped{{instance=\"{}\"}}", text.addr),
    );
    assert_eq!(n, 7.0);
    let (_, d) = wait_one(
        &agg,
        &format!("scrape_duration_seconds{{instance=\"{}\"}}", text.addr),
    );
    assert!(d > 0.0 && d < 1.0, "{d}");

    // OpenMetrics: exemplar skipped, _created not stored, path honoured.
    let (m, v) = wait_one(&agg, "om_jobs_total");
    assert_eq!(
        (
            m["job"].as_str(),
            m["instance"].as_str(),
            m["kind"].as_str(),
            v
        ),
        (Some("om"), Some(om.addr.as_str()), Some("x"), 42.0)
    );
    assert!(
        agg.query("om_jobs_created").is_empty(),
        "OpenMetrics _created series are not samples"
    );
    let (_, v) = wait_one(&agg, "om_size");
    assert_eq!(v, f64::INFINITY);
    let (_, n) = wait_one(&agg, "scrape_samples_scraped{job=\"om\"}");
    assert_eq!(n, 2.0);

    // The requests were Prometheus-like.
    let reqs = text.requests.lock().unwrap().clone();
    let first = reqs.first().expect("the text target was scraped");
    assert!(first.starts_with("GET /metrics HTTP/1.1"), "{first}");
    assert!(
        first.contains("Authorization: Bearer s3cret")
            || first.contains("authorization: Bearer s3cret"),
        "{first}"
    );
    assert!(
        first
            .to_ascii_lowercase()
            .contains("accept: application/openmetrics-text;version=1.0.0"),
        "{first}"
    );
    assert!(
        om.requests
            .lock()
            .unwrap()
            .first()
            .unwrap()
            .starts_with("GET /custom HTTP/1.1")
    );
    // Scrapes repeat on the interval.
    assert!(
        wait_for(Duration::from_secs(10), || (text
            .requests
            .lock()
            .unwrap()
            .len()
            >= 3)
            .then_some(()))
        .is_some()
    );
}

#[test]
fn pushed_text_and_otlp_arrive_and_bad_payloads_are_refused() {
    let tmp = TempDir::new("push");
    let certs = Certs::init(&tmp.path().join("certs"));
    let agg = Aggregator::start(tmp.path(), &certs);
    let agent = Agent::start(tmp.path(), &agg, &AgentSpec::new("web-1", &certs));

    // Pushgateway convention, with a further label and an @base64 value holding a '/'.
    let (code, body) = post(
        &agent.url("/metrics/job/nightly/instance/host-1/path@base64/L3Zhci9iYWNrdXA"),
        "text/plain; version=0.0.4",
        b"# TYPE backup_last_success_seconds gauge\nbackup_last_success_seconds 1700000000\nbackup_files{kind=\"db\"} 12\n",
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let (m, v) = wait_one(&agg, "backup_files");
    assert_eq!(v, 12.0);
    assert_eq!(
        m,
        serde_json::json!({"__name__": "backup_files", "kind": "db", "job": "nightly", "instance": "host-1", "path": "/var/backup",
            "agent": "web-1", "region": "test-region"})
    );
    assert_eq!(
        wait_one(&agg, "backup_last_success_seconds{job=\"nightly\"}").1,
        1_700_000_000.0
    );

    // A bad payload: 400 naming the line, and nothing of that request is stored (its first
    // line was fine).
    let (code, body) = post(
        &agent.url("/metrics/job/broken"),
        "text/plain",
        b"broken_ok 1\nbroken_bad{x=\"1\" 2\n",
    );
    let msg = String::from_utf8_lossy(&body);
    assert_eq!(code, 400, "{msg}");
    assert!(
        msg.contains("cannot parse the pushed exposition: line 2: broken_bad: expected ',' or '}'"),
        "{msg}"
    );
    let (code, body) = post(&agent.url("/metrics/instance/x"), "text/plain", b"m 1\n");
    assert_eq!(code, 400);
    assert!(String::from_utf8_lossy(&body).contains("must start with /metrics/job/<job>"));
    let (code, body) = post(
        &agent.url("/metrics/job/stamped"),
        "text/plain",
        b"stamped_ok 1\nstamped 2 1700000000000\n",
    );
    assert_eq!(code, 400);
    assert!(
        String::from_utf8_lossy(&body).contains("sample stamped carries a timestamp"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (code, body) = post(
        &agent.url("/metrics/job/broken/instance/i1"),
        "text/plain",
        b"broken_ok{instance=\"i2\"} 1\n",
    );
    assert_eq!(code, 400);
    assert!(
        String::from_utf8_lossy(&body)
            .contains("has label instance=\"i2\" but the path sets instance=\"i1\""),
        "{}",
        String::from_utf8_lossy(&body)
    );

    // OTLP protobuf: a counter, a histogram, resource attributes to job/instance/target_info.
    let now = now_nanos();
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    };
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "checkout"),
                    kv("service.instance.id", "pod-7"),
                    kv("deployment.environment", "prod"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    Metric {
                        name: "http.server.requests".into(),
                        unit: "{request}".into(),
                        data: Some(metric::Data::Sum(Sum {
                            data_points: vec![NumberDataPoint {
                                attributes: vec![kv("http.method", "GET")],
                                time_unix_nano: now,
                                value: Some(number_data_point::Value::AsInt(314)),
                                ..Default::default()
                            }],
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "http.server.duration".into(),
                        unit: "s".into(),
                        data: Some(metric::Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                time_unix_nano: now,
                                count: 6,
                                sum: Some(1.5),
                                bucket_counts: vec![1, 2, 3],
                                explicit_bounds: vec![0.1, 0.5],
                                ..Default::default()
                            }],
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let (code, body) = post(
        &agent.url("/v1/metrics"),
        "application/x-protobuf",
        &req.encode_to_vec(),
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let (m, v) = wait_one(&agg, "http_server_requests_total");
    assert_eq!(v, 314.0);
    assert_eq!(
        m,
        serde_json::json!({"__name__": "http_server_requests_total", "http_method": "GET", "job": "checkout", "instance": "pod-7",
            "agent": "web-1", "region": "test-region"})
    );
    let buckets: Vec<(String, f64)> = {
        wait_one(&agg, "http_server_duration_seconds_count");
        let mut b: Vec<(String, f64)> = agg
            .query("http_server_duration_seconds_bucket")
            .iter()
            .map(|s| {
                (
                    s["metric"]["le"].as_str().unwrap_or("").to_string(),
                    sample_value(&s["value"]).unwrap_or(-1.0),
                )
            })
            .collect();
        b.sort_by(|a, b| a.1.total_cmp(&b.1));
        b
    };
    assert_eq!(
        buckets,
        vec![
            ("0.1".to_string(), 1.0),
            ("0.5".to_string(), 3.0),
            ("+Inf".to_string(), 6.0)
        ]
    );
    assert_eq!(wait_one(&agg, "http_server_duration_seconds_sum").1, 1.5);
    let (m, v) = wait_one(&agg, "target_info");
    assert_eq!(
        (m["deployment_environment"].as_str(), m["job"].as_str(), v),
        (Some("prod"), Some("checkout"), 1.0)
    );

    // OTLP JSON, as the specification writes it (64-bit integers as strings).
    let json = format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"billing"}}}}]}},
        "scopeMetrics":[{{"scope":{{"name":"lib"}},"metrics":[{{"name":"queue.depth","unit":"1","gauge":{{"dataPoints":[
        {{"asDouble":0.25,"timeUnixNano":"{now}","attributes":[{{"key":"queue","value":{{"stringValue":"q1"}}}}]}}]}}}},
        {{"name":"jobs.done","sum":{{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{{"asInt":"77","timeUnixNano":"{now}"}}]}}}}]}}]}}]}}"#
    );
    let (code, body) = post(
        &agent.url("/v1/metrics"),
        "application/json",
        json.as_bytes(),
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(String::from_utf8_lossy(&body), "{}");
    let (m, v) = wait_one(&agg, "queue_depth_ratio");
    assert_eq!(
        (m["job"].as_str(), m["queue"].as_str(), v),
        (Some("billing"), Some("q1"), 0.25)
    );
    assert_eq!(wait_one(&agg, "jobs_done_total{job=\"billing\"}").1, 77.0);

    // Bad OTLP: broken JSON, delta temporality, garbage protobuf — 400 with the reason.
    let (code, body) = post(
        &agent.url("/v1/metrics"),
        "application/json",
        b"{\"resourceMetrics\": [",
    );
    assert_eq!(code, 400);
    assert!(
        String::from_utf8_lossy(&body).contains("invalid OTLP JSON"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let delta = json
        .replace(
            "\"aggregationTemporality\":2",
            "\"aggregationTemporality\":1",
        )
        .replace("billing", "delta-svc");
    let (code, body) = post(
        &agent.url("/v1/metrics"),
        "application/json",
        delta.as_bytes(),
    );
    let msg = String::from_utf8_lossy(&body);
    assert_eq!(code, 400, "{msg}");
    let refusal: serde_json::Value =
        serde_json::from_str(&msg).unwrap_or_else(|e| panic!("{e}: {msg}"));
    assert_eq!(refusal["code"], 3, "{msg}");
    assert!(
        refusal["message"]
            .as_str()
            .unwrap_or("")
            .contains("metric \"jobs.done\" uses delta aggregation temporality"),
        "{msg}"
    );
    let (code, body) = post(
        &agent.url("/v1/metrics"),
        "application/x-protobuf",
        &[0x0a, 0xff, 0xff, 0x01],
    );
    assert_eq!(code, 400);
    assert!(
        String::from_utf8_lossy(&body).contains("invalid OTLP protobuf"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (code, _) = post(&agent.url("/v1/metrics"), "text/plain", b"x");
    assert_eq!(code, 415);

    // Nothing of the refused requests was stored, while later good data still flows.
    let (code, _) = post(
        &agent.url("/metrics/job/after"),
        "text/plain",
        b"after_marker 1\n",
    );
    assert_eq!(code, 200);
    wait_one(&agg, "after_marker");
    for q in [
        "broken_ok",
        "broken_bad",
        "{job=\"broken\"}",
        "{job=\"stamped\"}",
        "{job=\"delta-svc\"}",
        "queue_depth_ratio{job=\"delta-svc\"}",
    ] {
        assert!(agg.query(q).is_empty(), "{q} must not be stored");
    }
    let m = agent.metrics();
    assert_eq!(
        metric_value(
            &m,
            "outpost_agent_push_requests_total{format=\"text\",code=\"400\"}"
        ),
        Some(4.0),
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "outpost_agent_push_requests_total{format=\"text\",code=\"200\"}"
        ),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "outpost_agent_samples_received_total{source=\"push_text\"}"
        ),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "outpost_agent_push_requests_total{format=\"otlp_json\",code=\"200\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert!(
        metric_value(
            &m,
            "outpost_agent_samples_received_total{source=\"push_otlp\"}"
        )
        .unwrap_or(0.0)
            >= 8.0,
        "{m}"
    );
}

/// A series repeated within one exposition: a text push and an OTLP push are refused whole
/// with 400 naming the series; a scrape keeps the first sample, as Prometheus does, and counts
/// and logs the rest.
#[test]
fn repeated_series_are_refused_in_pushes_and_counted_in_scrapes() {
    let tmp = TempDir::new("repeats");
    let certs = Certs::init(&tmp.path().join("certs"));
    let agg = Aggregator::start(tmp.path(), &certs);
    // Per scrape: dup{l="a"} three times more than once, rep twice: 3 repeats.
    let page = serve(
        "text/plain; version=0.0.4",
        "# TYPE dup counter\ndup{l=\"a\"} 42\ndup{l=\"b\"} 7\ndup{l=\"a\"} 43\ndup{l=\"a\"} 44\nrep 1\nrep 2\n"
            .to_string(),
    );
    let extra = format!(
        "[[scrape]]\njob = \"dups\"\ntargets = [\"{}\"]\ninterval = \"1s\"\n",
        page.addr
    );
    let agent = Agent::start(
        tmp.path(),
        &agg,
        &AgentSpec {
            extra: &extra,
            ..AgentSpec::new("web-1", &certs)
        },
    );

    // Text push, as the Pushgateway refuses it.
    let (code, body) = post(
        &agent.url("/metrics/job/x"),
        "text/plain; version=0.0.4",
        b"# TYPE m counter\nm{l=\"a\"} 42\nm{l=\"a\"} 43\nother 1\n",
    );
    assert_eq!(
        (code, String::from_utf8_lossy(&body).into_owned()),
        (
            400,
            "series m{agent=\"web-1\", job=\"x\", l=\"a\", region=\"test-region\"} appears more than once in this push; each series may be pushed once per request, so nothing of it was stored\n".to_string()
        )
    );

    // OTLP: two points of one series at one time.
    let now = now_nanos();
    let json = format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"svc"}}}}]}},
        "scopeMetrics":[{{"metrics":[{{"name":"queue.depth","gauge":{{"dataPoints":[
        {{"asDouble":1,"timeUnixNano":"{now}","attributes":[{{"key":"q","value":{{"stringValue":"a"}}}}]}},
        {{"asDouble":2,"timeUnixNano":"{now}","attributes":[{{"key":"q","value":{{"stringValue":"a"}}}}]}}]}}}}]}}]}}]}}"#
    );
    let (code, body) = post(
        &agent.url("/v1/metrics"),
        "application/json",
        json.as_bytes(),
    );
    let msg = String::from_utf8_lossy(&body);
    assert_eq!(code, 400, "{msg}");
    let refusal: serde_json::Value = serde_json::from_str(&msg).unwrap();
    assert_eq!(
        refusal["message"],
        "series queue_depth{agent=\"web-1\", job=\"svc\", q=\"a\", region=\"test-region\"} appears more than once in this push; each series may be pushed once per request, so nothing of it was stored"
    );

    // The scrape keeps the first sample of each repeated series.
    assert_eq!(wait_one(&agg, "dup{job=\"dups\",l=\"a\"}").1, 42.0);
    assert_eq!(wait_one(&agg, "rep{job=\"dups\"}").1, 1.0);
    assert_eq!(wait_one(&agg, "dup{job=\"dups\",l=\"b\"}").1, 7.0);
    let name = format!(
        "outpost_agent_scrape_duplicate_samples_total{{job=\"dups\",instance=\"{}\"}}",
        page.addr
    );
    let counted = wait_for(Duration::from_secs(10), || {
        metric_value(&agent.metrics(), &name)
    })
    .unwrap_or_else(|| panic!("{name} missing:\n{}", agent.metrics()));
    assert!(counted >= 3.0 && counted % 3.0 == 0.0, "{name} = {counted}");
    assert!(
        agent.proc.logs().contains(
            "the page repeats series; kept the first sample of each, first repeated: dup{agent=\"web-1\", instance="
        ),
        "{}",
        agent.proc.logs()
    );

    // Nothing of the refused pushes was stored, while later pushes flow.
    let (code, _) = post(
        &agent.url("/metrics/job/after"),
        "text/plain",
        b"after_repeats 1\n",
    );
    assert_eq!(code, 200);
    wait_one(&agg, "after_repeats");
    for q in ["m", "other", "queue_depth"] {
        assert!(agg.query(q).is_empty(), "{q} must not be stored");
    }
}
