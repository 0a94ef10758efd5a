//! The rest of Prometheus' HTTP API on a real aggregator: a real Prometheus federates from
//! `/federate`; the status endpoints answer in Prometheus' shapes with the store's numbers;
//! hostile queries get a clear error quickly while remote_write ingestion keeps being
//! acknowledged.

use outpost_shared::remote_write::{self, TimeSeries, WriteRequest};
use outpost_tests::{
    Aggregator, Certs, TempDir, encode, free_tcp_port, get_json, start_prometheus, wait_for,
};
use serde_json::Value;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn series(labels: &[(&str, String)], samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries::new(labels, samples)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn write(agg: &Aggregator, ts: Vec<TimeSeries>) -> Duration {
    let body = remote_write::encode(&WriteRequest {
        timeseries: ts,
        metadata: vec![],
    });
    let t = Instant::now();
    let r = agent()
        .post(&agg.url("/api/v1/write"))
        .header("Content-Encoding", "snappy")
        .send(&body[..])
        .expect("write");
    assert_eq!(r.status().as_u16(), 204);
    t.elapsed()
}

/// Status code and JSON body of a GET.
fn get(url: &str) -> (u16, Value) {
    let mut r = agent().get(url).call().expect("request");
    let code = r.status().as_u16();
    (code, r.body_mut().read_json().unwrap_or(Value::Null))
}

#[test]
fn a_real_prometheus_federates_from_outpost() {
    let dir = TempDir::new("federate");
    let certs = Certs::init(&dir.path().join("pki"));
    let agg = Aggregator::start(dir.path(), &certs);
    let t = now_ms() - 5_000;
    let lab = |name: &str, inst: &str| {
        vec![
            ("__name__", name.to_string()),
            ("job", "fed".to_string()),
            ("instance", inst.to_string()),
        ]
    };
    write(
        &agg,
        vec![
            series(
                &lab("fed_requests_total", "a"),
                &[(t - 1000, 41.0), (t, 42.5)],
            ),
            series(&lab("fed_requests_total", "b"), &[(t, 1e9)]),
            series(&lab("fed_temperature", "a"), &[(t, -3.25)]),
            // Gone: its last sample is a stale marker, so it is not federated.
            series(
                &lab("fed_gone", "a"),
                &[(t - 1000, 1.0), (t, f64::from_bits(0x7ff0_0000_0000_0002))],
            ),
            // Other jobs are not selected.
            series(
                &[("__name__", "other".to_string()), ("job", "x".to_string())],
                &[(t, 7.0)],
            ),
        ],
    );
    let text = ureq::get(&agg.url("/federate?match[]=%7Bjob%3D%22fed%22%7D"))
        .call()
        .expect("federate")
        .body_mut()
        .read_to_string()
        .expect("text");
    assert_eq!(
        text,
        format!(
            "# TYPE fed_requests_total untyped\n\
             fed_requests_total{{instance=\"a\",job=\"fed\"}} 42.5 {t}\n\
             fed_requests_total{{instance=\"b\",job=\"fed\"}} 1e+09 {t}\n\
             # TYPE fed_temperature untyped\n\
             fed_temperature{{instance=\"a\",job=\"fed\"}} -3.25 {t}\n"
        )
    );

    // Prometheus scrapes it as it federates from another Prometheus.
    let port = free_tcp_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: federate\n    honor_labels: true\n    \
             metrics_path: /federate\n    params:\n      'match[]': ['{{job=\"fed\"}}']\n    \
             static_configs:\n      - targets: ['{}']\n",
            agg.http
        ),
    )
    .expect("config");
    let _prom = start_prometheus(dir.path(), &config, port, &[]);
    let q = format!(
        "http://127.0.0.1:{port}/api/v1/query?query={}&time={}",
        encode("{job=\"fed\"}"),
        t as f64 / 1000.0
    );
    let got = wait_for(Duration::from_secs(60), || {
        let r = get_json(&q).ok()?;
        let r = r["data"]["result"].as_array()?.clone();
        (r.len() == 3).then_some(r)
    })
    .expect("Prometheus never held the three federated series");
    let mut seen: Vec<(String, String, String)> = got
        .iter()
        .map(|s| {
            (
                s["metric"]["__name__"].as_str().unwrap_or("").to_string(),
                s["metric"]["instance"].as_str().unwrap_or("").to_string(),
                s["value"][1].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    seen.sort();
    let want = [
        ("fed_requests_total", "a", "42.5"),
        ("fed_requests_total", "b", "1000000000"),
        ("fed_temperature", "a", "-3.25"),
    ]
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()));
    assert_eq!(seen, want);
}

#[test]
fn status_endpoints_answer_in_prometheus_shapes() {
    let dir = TempDir::new("status");
    let certs = Certs::init(&dir.path().join("pki"));
    let agg = Aggregator::start_top(dir.path(), &certs, "");
    let t = now_ms() - 10_000;
    let mut ts = vec![];
    for i in 0..30 {
        ts.push(series(
            &[("__name__", "st_big".to_string()), ("i", i.to_string())],
            &[(t, 1.0)],
        ));
    }
    for i in 0..5 {
        ts.push(series(
            &[("__name__", "st_small".to_string()), ("i", i.to_string())],
            &[(t, 1.0)],
        ));
    }
    write(&agg, ts);

    let (code, v) = get(&agg.url("/api/v1/status/tsdb"));
    assert_eq!(code, 200);
    let d = &v["data"];
    assert_eq!(d["headStats"]["numSeries"], 35);
    // __name__ has 2 values, i has 30.
    assert_eq!(d["headStats"]["numLabelPairs"], 32);
    assert_eq!(d["headStats"]["minTime"], t);
    assert_eq!(
        d["seriesCountByMetricName"],
        serde_json::json!([{"name":"st_big","value":30},{"name":"st_small","value":5}])
    );
    assert_eq!(
        d["labelValueCountByLabelName"],
        serde_json::json!([{"name":"i","value":30},{"name":"__name__","value":2}])
    );
    assert_eq!(
        d["seriesCountByLabelValuePair"][0],
        serde_json::json!({"name":"__name__=st_big","value":30})
    );
    assert_eq!(
        d["seriesCountByLabelValuePair"].as_array().map(Vec::len),
        Some(10)
    );

    let (code, v) = get(&agg.url("/api/v1/status/flags"));
    assert_eq!(code, 200);
    assert_eq!(v["data"]["query.timeout"], "120s");
    assert_eq!(v["data"]["query.max-samples"], "50000000");
    assert_eq!(v["data"]["web.listen-address"], agg.http.as_str());

    let (code, v) = get(&agg.url("/api/v1/status/runtimeinfo"));
    assert_eq!(code, 200);
    assert_eq!(v["data"]["reloadConfigSuccess"], true);
    assert!(v["data"]["goroutineCount"].as_u64().is_some_and(|n| n > 1));
    assert!(
        v["data"]["startTime"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z'))
    );

    let (code, v) = get(&agg.url("/api/v1/status/buildinfo"));
    assert_eq!(code, 200);
    assert_eq!(v["data"]["version"], env!("CARGO_PKG_VERSION"));

    let (code, v) = get(&agg.url(&format!(
        "/api/v1/query_exemplars?query=st_big&start={}&end={}",
        t / 1000 - 60,
        t / 1000 + 60
    )));
    assert_eq!((code, v["data"].clone()), (200, serde_json::json!([])));
    let (code, v) = get(&agg.url("/api/v1/query_exemplars?query=st_big(("));
    assert_eq!((code, v["errorType"].clone()), (400, "bad_data".into()));

    let (code, v) = get(&agg.url(&format!(
        "/api/v1/series?match[]=st_big&limit=4&start={}",
        t / 1000 - 60
    )));
    assert_eq!(code, 200);
    assert_eq!(v["data"].as_array().map(Vec::len), Some(4));
    assert_eq!(
        v["warnings"],
        serde_json::json!(["results truncated due to limit"])
    );
    // A window with no data selects nothing.
    let (_, v) = get(&agg.url(&format!(
        "/api/v1/series?match[]=st_big&start={}&end={}",
        t / 1000 - 3600,
        t / 1000 - 1800
    )));
    assert_eq!(v["data"], serde_json::json!([]));
    let (_, v) = get(&agg.url("/api/v1/label/i/values?match[]=st_small&limit=2"));
    assert_eq!(v["data"], serde_json::json!(["0", "1"]));
}

#[test]
fn hostile_queries_fail_fast_and_ingestion_continues() {
    let dir = TempDir::new("hostile");
    let certs = Certs::init(&dir.path().join("pki"));
    let agg = Aggregator::start_config(
        dir.path(),
        &certs,
        "",
        "[query]\ntimeout = \"3s\"\nmax_samples = 200000\nmax_concurrency = 1\nmax_queued = 2\n",
    );
    // 2,000 series × 240 points (1 h at 15 s): 480,000 samples.
    let base = (now_ms() - 3_600_000) / 60_000 * 60_000;
    for chunk in 0..20 {
        let ts = (0..100)
            .map(|k| {
                let i = chunk * 100 + k;
                let pts: Vec<(i64, f64)> = (0..240)
                    .map(|j| (base + j * 15_000, (i * j) as f64))
                    .collect();
                series(
                    &[("__name__", format!("h_{}", i % 10)), ("i", i.to_string())],
                    &pts,
                )
            })
            .collect();
        write(&agg, ts);
    }
    let q = |query: &str, extra: &str| {
        let url = format!(
            "{}?query={}{extra}",
            agg.url("/api/v1/query"),
            encode(query)
        );
        let t = Instant::now();
        let (code, v) = get(&url);
        (code, v, t.elapsed())
    };

    // Loading everything there is for ten years: over the sample cap, refused quickly.
    let (code, v, took) = q("count_over_time({__name__=~\".+\"}[10y])", "");
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["errorType"], "execution");
    assert_eq!(
        v["error"],
        "query processing would load too many samples into memory in query execution"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // A selector that matches everything, empty included: refused as Prometheus does.
    let (code, v, _) = q("{__name__=~\".*\"}", "");
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"].as_str().is_some_and(
            |e| e.contains("vector selector must contain at least one non-empty matcher")
        ),
        "{v}"
    );
    // One millisecond steps over a year.
    let url = format!(
        "{}?query=h_1&start={}&end={}&step=0.001",
        agg.url("/api/v1/query_range"),
        base / 1000 - 365 * 86_400,
        base / 1000
    );
    let (code, v) = get(&url);
    assert_eq!(code, 400);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("exceeded maximum resolution of 11,000 points")),
        "{v}"
    );
    // Nesting deeper than the engine accepts; the aggregator stays up.
    let deep = format!("{}1{}", "(".repeat(5000), ")".repeat(5000));
    let agent_ = agent();
    let mut r = agent_
        .post(&agg.url("/api/v1/query"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send(format!("query={}", encode(&deep)))
        .expect("deep");
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.body_mut().read_json().expect("json");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("query too complex")),
        "{v}"
    );
    // A regex too big to compile.
    let (code, v, _) = q("h_1{i=~\"(a{1000}){1000}\"}", "");
    assert_eq!(code, 400, "{v}");

    // A slow query is stopped at its timeout, those queued behind the one slot time out in
    // the queue or are refused, and ingestion goes on.
    let url = format!(
        "{}?query={}&start={}&end={}&step=0.33&timeout=100ms",
        agg.url("/api/v1/query_range"),
        encode("sum(quantile_over_time(0.5, h_1[1h]))"),
        base / 1000,
        base / 1000 + 3600
    );
    let handles: Vec<_> = (0..5)
        .map(|k| {
            let url = url.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20 * k));
                let t = Instant::now();
                let (code, v) = get(&url);
                (code, v, t.elapsed())
            })
        })
        .collect();
    let mut worst = Duration::ZERO;
    for k in 0..10 {
        let ts = vec![series(
            &[("__name__", "during".to_string()), ("k", k.to_string())],
            &[(now_ms(), 1.0)],
        )];
        worst = worst.max(write(&agg, ts));
    }
    assert!(
        worst < Duration::from_secs(1),
        "a write took {worst:?} during the queries"
    );
    let outcomes: Vec<(u16, String, Duration)> = handles
        .into_iter()
        .map(|h| {
            let (code, v, took) = h.join().expect("thread");
            (
                code,
                v["errorType"].as_str().unwrap_or("").to_string(),
                took,
            )
        })
        .collect();
    let timeouts = outcomes.iter().filter(|o| o.1 == "timeout").count();
    let refused = outcomes.iter().filter(|o| o.1 == "unavailable").count();
    assert!(timeouts >= 1, "{outcomes:?}");
    assert!(refused >= 1, "{outcomes:?}");
    for (code, kind, took) in &outcomes {
        assert_eq!(*code, 503, "{outcomes:?}");
        assert!(kind == "timeout" || kind == "unavailable");
        assert!(*took < Duration::from_secs(5), "{outcomes:?}");
    }
    let m = agg.metrics();
    assert!(m.contains("outpost_aggregator_queries_limited_total{reason=\"queue_full\"}"));
    // Still answering.
    let (code, _, _) = q("count(h_1)", &format!("&time={}", base / 1000 + 3600));
    assert_eq!(code, 200);
}

#[test]
fn the_seed_queries_answer_over_an_agents_host_metrics() {
    use outpost_tests::{Agent, AgentSpec};
    let dir = TempDir::new("seed-queries");
    let certs = Certs::init(&dir.path().join("pki"));
    let agg = Aggregator::start(dir.path(), &certs);
    let _agent = Agent::start(dir.path(), &agg, &AgentSpec::new("host-1", &certs));
    // Enough cycles for rate() to have two points per series.
    let ready = wait_for(Duration::from_secs(30), || {
        (agg.cycles("host-1").len() >= 4).then_some(())
    });
    assert!(ready.is_some(), "the agent's cycles never arrived");
    let end = now_ms() as f64 / 1000.0;
    for (q, min_series) in [
        ("sum(rate(node_cpu_seconds_total[5m]))", 1),
        (
            "sum by (instance) (rate(node_cpu_seconds_total{mode!=\"idle\"}[5m]))",
            1,
        ),
        (
            "node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes",
            1,
        ),
        (
            "sum(rate(node_cpu_seconds_total[5m])) + sum(rate(node_network_receive_bytes_total[5m]))",
            1,
        ),
    ] {
        let url = format!(
            "{}?query={}&start={}&end={end}&step=1",
            agg.url("/api/v1/query_range"),
            encode(q),
            end - 60.0
        );
        let (code, v) = get(&url);
        assert_eq!(code, 200, "{q}: {v}");
        let series = v["data"]["result"].as_array().cloned().unwrap_or_default();
        assert!(series.len() >= min_series, "{q}: {v}");
        let values = series[0]["values"].as_array().cloned().unwrap_or_default();
        assert!(!values.is_empty(), "{q}: {v}");
        if q.starts_with("node_memory") {
            let ratio: f64 = values[0][1]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(-1.0);
            assert!(ratio > 0.0 && ratio < 1.0, "{q}: {ratio}");
        }
    }
}

#[test]
fn cached_range_answers_follow_late_writes() {
    let dir = TempDir::new("cache-late");
    let certs = Certs::init(&dir.path().join("pki"));
    let agg = Aggregator::start(dir.path(), &certs);
    let base = (now_ms() - 3_600_000) / 60_000 * 60_000;
    let pts = |range: std::ops::Range<i64>| -> Vec<(i64, f64)> {
        range.map(|i| (base + i * 60_000, i as f64)).collect()
    };
    let lab = vec![("__name__", "late_c".to_string())];
    write(&agg, vec![series(&lab, &pts(0..30))]);
    let range = |start: i64, end: i64| {
        let url = format!(
            "{}?query={}&start={}&end={}&step=60",
            agg.url("/api/v1/query_range"),
            encode("sum_over_time(late_c[2m])"),
            start / 1000,
            end / 1000
        );
        let (code, v) = get(&url);
        assert_eq!(code, 200, "{v}");
        v["data"]["result"][0]["values"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|p| p[1].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    let (start, end) = (base + 5 * 60_000, base + 40 * 60_000);
    let first = range(start, end);
    assert_eq!(first.len(), 27, "{first:?}"); // steps 5..=31 have points in their window
    assert_eq!(first[0], "12"); // step 5: points 3, 4 and 5 in [t - 2m, t]
    // Asked again: the same answer, from the cache.
    assert_eq!(range(start, end), first);
    let hits =
        outpost_tests::metric_value(&agg.metrics(), "outpost_aggregator_query_cache_hits_total");
    assert_eq!(hits, Some(1.0));
    // A late point inside the cached window, and a newer one: both show at once.
    write(
        &agg,
        vec![series(
            &lab,
            &[
                (base + 10 * 60_000 + 30_000, 100.0),
                (base + 35 * 60_000, 35.0),
            ],
        )],
    );
    let after = range(start, end);
    assert_eq!(
        after[..6],
        first[..6],
        "steps before the late point changed"
    );
    assert_eq!(after[6], "130"); // step 11: 9 + 10 + 100 + 11
    assert_eq!(after[7], "133"); // step 12: 10 + 100 + 11 + 12
    assert_eq!(after[8], first[8]); // step 13: the late point is out of its window
    assert_eq!(after.len(), 30, "{after:?}"); // and steps 35..=37 see the new point
    assert_eq!(after[27..], ["35", "35", "35"]);
}
