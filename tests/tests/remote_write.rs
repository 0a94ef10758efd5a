//! `POST /api/v1/write`: a real Prometheus remote-writes into the aggregator and every
//! sample it stored itself is queryable there; malformed bodies are refused with a reason
//! and store nothing; the bearer-token rule holds; outcomes are counted on `/metrics`.

use outpost_shared::remote_write::{self, TimeSeries, WriteRequest};
use outpost_tests::{
    Aggregator, Certs, TempDir, encode, free_tcp_port, get_json, metric_value, post_remote_write,
    start_prometheus, wait_for,
};
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TOKEN: &str = "s3cret-token";

fn start(dir: &TempDir) -> Aggregator {
    let certs = Certs::init(&dir.path().join("pki"));
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token");
    Aggregator::start_config(
        dir.path(),
        &certs,
        "",
        &format!("[api]\nbearer_token_file = \"{}\"\n", token.display()),
    )
}

fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries::new(labels, samples)
}

fn post(url: &str, body: &[u8], token: Option<&str>) -> (u16, String) {
    post_remote_write(url, body, token)
}

fn query(agg: &Aggregator, q: &str, time_s: f64) -> Vec<Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!(
        "{}?query={}&time={time_s}",
        agg.url("/api/v1/query"),
        encode(q)
    );
    let mut r = agent
        .get(&url)
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .call()
        .expect("query");
    let v: Value = r.body_mut().read_json().expect("json");
    assert_eq!(v["status"], "success", "{q}: {v}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

fn metrics(agg: &Aggregator) -> String {
    agg.metrics()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

#[test]
fn malformed_bodies_are_refused_and_store_nothing() {
    let dir = TempDir::new("rw-malformed");
    let agg = start(&dir);
    let url = agg.url("/api/v1/write");
    let t = now_ms() - 60_000;
    let good = series(&[("__name__", "rw_good"), ("k", "v")], &[(t, 1.0)]);

    let (code, text) = post(&url, b"definitely not snappy", Some(TOKEN));
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("not snappy-compressed"), "{text}");

    let junk = snap::raw::Encoder::new()
        .compress_vec(&[0x0a, 0xff, 0xff, 0xff, 0x01])
        .expect("snappy");
    let (code, text) = post(&url, &junk, Some(TOKEN));
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("not a remote_write WriteRequest"), "{text}");

    // One good series and one without a metric name: the whole request is refused.
    let mixed = remote_write::encode(&WriteRequest {
        timeseries: vec![good.clone(), series(&[("job", "x")], &[(t, 2.0)])],
        metadata: vec![],
    });
    let (code, text) = post(&url, &mixed, Some(TOKEN));
    assert_eq!(code, 400, "{text}");
    assert_eq!(text.trim(), "series #1: no metric name (__name__ label)");
    let repeated = remote_write::encode(&WriteRequest {
        timeseries: vec![series(
            &[("__name__", "rw_good"), ("a", "1"), ("a", "2")],
            &[(t, 2.0)],
        )],
        metadata: vec![],
    });
    let (code, text) = post(&url, &repeated, Some(TOKEN));
    assert_eq!(code, 400);
    assert_eq!(text.trim(), "series #0: label name \"a\" repeated");

    // The token rule is the rest of the API's.
    let body = remote_write::encode(&WriteRequest {
        timeseries: vec![good],
        metadata: vec![],
    });
    assert_eq!(post(&url, &body, None).0, 401);
    assert_eq!(post(&url, &body, Some("wrong")).0, 401);

    let at = (t as f64) / 1000.0;
    assert!(
        query(&agg, "rw_good", at).is_empty(),
        "a refused request stored something"
    );
    let m = metrics(&agg);
    let count = |outcome: &str| {
        metric_value(
            &m,
            &format!("outpost_aggregator_remote_write_requests_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(count("bad_request"), Some(4.0), "{m}");
    assert_eq!(count("stored"), Some(0.0));

    // And the good request alone lands.
    assert_eq!(post(&url, &body, Some(TOKEN)).0, 204);
    let r = query(&agg, "rw_good", at);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["value"][1], "1");
    let m = metrics(&agg);
    assert_eq!(
        metric_value(
            &m,
            "outpost_aggregator_remote_write_requests_total{outcome=\"stored\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&m, "outpost_aggregator_remote_write_samples_total"),
        Some(1.0)
    );
}

#[test]
fn late_samples_and_stale_markers_land_where_they_belong() {
    let dir = TempDir::new("rw-late");
    let agg = start(&dir);
    let url = agg.url("/api/v1/write");
    let base = (now_ms() - 3_600_000) / 60_000 * 60_000;
    let at = |i: i64| base + i * 10_000;
    let send = |pts: &[(i64, f64)]| {
        let body = remote_write::encode(&WriteRequest {
            timeseries: vec![series(&[("__name__", "rw_late")], pts)],
            metadata: vec![],
        });
        assert_eq!(post(&url, &body, Some(TOKEN)).0, 204);
    };
    // Newest first, then the older ones: both land, in time order.
    send(&[(at(10), 10.0), (at(11), 11.0)]);
    send(&[(at(2), 2.0), (at(5), 5.0)]);
    // A stale marker ends the series for instant queries.
    send(&[(at(12), f64::from_bits(0x7ff0_0000_0000_0002))]);
    let r = query(&agg, "rw_late[1h]", (at(12) as f64) / 1000.0);
    let values: Vec<String> = r[0]["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|p| p[1].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(values, ["2", "5", "10", "11"]);
    assert_eq!(
        query(&agg, "rw_late", (at(11) as f64) / 1000.0 + 1.0).len(),
        1
    );
    assert!(
        query(&agg, "rw_late", (at(12) as f64) / 1000.0 + 1.0).is_empty(),
        "the stale marker was not honoured"
    );
}

/// `(ms, value)` pairs of a `[range]` answer's first series.
fn points(result: &[Value]) -> Vec<(i64, String)> {
    result
        .first()
        .and_then(|s| s["values"].as_array())
        .map(|v| {
            v.iter()
                .map(|p| {
                    (
                        (p[0].as_f64().unwrap_or(0.0) * 1000.0).round() as i64,
                        p[1].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_real_prometheus_remote_writes_into_outpost() {
    let dir = TempDir::new("rw-prometheus");
    let agg = start(&dir);
    let prom_port = free_tcp_port();
    let token_file = dir.path().join("token");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  external_labels:\n    replica: r1\n\
             scrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['127.0.0.1:{prom_port}']\n\
             remote_write:\n  - url: {url}\n    authorization:\n      credentials_file: {token}\n    \
             queue_config:\n      batch_send_deadline: 1s\n      min_backoff: 100ms\n    \
             metadata_config:\n      send_interval: 1s\n",
            url = agg.url("/api/v1/write"),
            token = token_file.display()
        ),
    )
    .expect("config");
    let _prom = start_prometheus(dir.path(), &config, prom_port, &[]);
    let prom = |q: &str| -> Vec<Value> {
        get_json(&format!(
            "http://127.0.0.1:{prom_port}/api/v1/query?query={}",
            encode(q)
        ))
        .ok()
        .and_then(|v| v["data"]["result"].as_array().cloned())
        .unwrap_or_default()
    };
    // Ten scrapes in Prometheus' own store.
    let own = wait_for(Duration::from_secs(60), || {
        let pts = points(&prom("up{job=\"self\"}[1m]"));
        (pts.len() >= 10).then_some(pts)
    })
    .expect("prometheus did not scrape itself 10 times");
    let last = own.last().map(|p| p.0).unwrap_or(0);
    // Each of them reaches the aggregator, with the external label, value for value.
    let q = "up{job=\"self\", replica=\"r1\"}[1m]";
    let ours = wait_for(Duration::from_secs(60), || {
        let pts = points(&query(&agg, q, (last as f64) / 1000.0));
        pts.iter().any(|p| p.0 == last).then_some(pts)
    })
    .unwrap_or_else(|| {
        panic!(
            "the aggregator never got the sample at {last}:\n{}",
            agg.proc.logs()
        )
    });
    let first = own[0].0;
    let ours: Vec<(i64, String)> = ours.into_iter().filter(|p| p.0 >= first).collect();
    assert_eq!(ours, own);
    // Many families arrive, not only `up`.
    let families = query(
        &agg,
        "count(count by (__name__) ({replica=\"r1\"}))",
        (last as f64) / 1000.0,
    );
    let n: f64 = families[0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    assert!(n > 100.0, "only {n} metric families arrived");
    assert!(
        metric_value(
            &metrics(&agg),
            "outpost_aggregator_remote_write_requests_total{outcome=\"stored\"}"
        )
        .is_some_and(|v| v >= 1.0)
    );
    // The metadata Prometheus sends lands in /api/v1/metadata, as Prometheus itself has it.
    let path = "/api/v1/metadata?metric=prometheus_http_requests_total";
    let theirs = get_json(&format!("http://127.0.0.1:{prom_port}{path}")).expect("metadata");
    assert_eq!(
        theirs["data"]["prometheus_http_requests_total"][0]["type"],
        "counter"
    );
    let ours = wait_for(Duration::from_secs(30), || {
        let v = get_authorized(&agg.url(path));
        (v["data"] != serde_json::json!({})).then_some(v)
    })
    .expect("no metadata arrived");
    assert_eq!(ours["data"], theirs["data"]);
}

fn get_authorized(url: &str) -> Value {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    agent
        .get(url)
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_json().ok())
        .unwrap_or_default()
}
