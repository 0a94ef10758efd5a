//! The aggregator answers PromQL as Prometheus 2.42 does, end to end: the same samples
//! (counters with a reset, gauges with a gap, classic histograms, series that go stale and
//! come back, points written late and out of order) are sent through remote_write to the
//! real `outpost-aggregator` and to Debian's `prometheus` (with its remote-write receiver
//! and an out-of-order window), the aggregator is killed with SIGKILL and restarted, and
//! then both HTTP APIs answer the corpus `promql/tests/support/queries.promql`, each query
//! at four instants and as a range query asked three times (the second and third partly or
//! wholly from the aggregator's result cache). Answers must agree (see `support::agree`); a
//! failure prints the query and both answers.

#[path = "../../promql/tests/support/mod.rs"]
mod support;

use outpost_shared::remote_write::{self, TimeSeries, WriteRequest};
use outpost_tests::{Aggregator, Certs, TempDir, free_tcp_port, post_remote_write, wait_for};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::{Answer, Series, Server, agree, corpus, encode, from_json, http_get, installed};

fn request(series: &[Series]) -> Vec<u8> {
    remote_write::encode(&WriteRequest {
        timeseries: series
            .iter()
            .map(|(labels, pts)| TimeSeries::new(labels, pts))
            .collect(),
        metadata: vec![],
    })
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"))
}

/// Queries `/api/v1/format_query` lays out differently from Prometheus, known and left:
/// the parser drops a unary plus (`+g` comes back as `g`, which means the same).
const FORMAT_DIFFERS: &[&str] = &["+g"];

fn raw(port: u16, path: &str) -> serde_json::Value {
    let (_, body) = http_get(port, path).unwrap_or_else(|| panic!("no answer to {path}"));
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e})"))
}

fn ask(port: u16, path: &str) -> Answer {
    let (_, body) = http_get(port, path).unwrap_or_else(|| panic!("no answer to {path}"));
    from_json(
        &serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!("{path}: not JSON ({e}): {}", String::from_utf8_lossy(&body))
        }),
    )
}

#[test]
fn answers_agree_with_prometheus_over_remote_write() {
    assert!(
        installed("prometheus"),
        "the reference is Debian's prometheus package: run scripts/install-deps"
    );
    let dir = TempDir::new("promql-compat");
    let certs = Certs::init(&dir.path().join("pki"));
    let mut agg = Aggregator::start(dir.path(), &certs);

    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).expect("dir");
    let config = prom_dir.join("prometheus.yml");
    std::fs::write(
        &config,
        "global: {}\nstorage:\n  tsdb:\n    out_of_order_time_window: 4h\n",
    )
    .expect("config");
    let prom_port = free_tcp_port();
    let _prom = Server(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .arg("--web.enable-remote-write-receiver")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus"),
    );
    let ready = wait_for(Duration::from_secs(60), || {
        http_get(prom_port, "/-/ready").filter(|(s, _)| *s == 200)
    });
    assert!(ready.is_some(), "prometheus did not get ready");

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    // Whole minutes, 2 h ago: within Prometheus' out-of-order window.
    let base = (now - 2 * 3600 * 1000) / 60_000 * 60_000;
    let (extra, late) = support::stale_and_late(base);
    let mut first = support::data(base);
    first.extend(extra);
    let targets = [
        format!("http://127.0.0.1:{prom_port}/api/v1/write"),
        agg.url("/api/v1/write"),
    ];
    // A few series per request, as senders shard them; the late points go last.
    for chunk in first.chunks(4).chain(late.chunks(4)) {
        let body = request(chunk);
        for url in &targets {
            let (status, text) = post_remote_write(url, &body, None);
            assert_eq!(status, 204, "{url}: {text}");
        }
    }
    // Every acknowledged sample must survive a SIGKILL: answers come from the reopened store.
    agg.restart();

    let agg_port = port_of(&agg.http);
    let times = [
        base + 20 * 60_000,
        base + 45 * 60_000 + 7_000,
        base + 85 * 60_000,
        base + 100 * 60_000,
    ];
    let (start, end, step) = (base + 10 * 60_000, base + 115 * 60_000, 67_000);
    let queries = corpus();
    assert!(
        queries.len() >= 300,
        "the corpus has {} queries",
        queries.len()
    );
    let mut failures = Vec::new();
    let mut refused = 0;
    for query in &queries {
        let q = query.text.as_str();
        let mut paths: Vec<(String, bool)> = times
            .iter()
            .map(|t| {
                (
                    format!(
                        "/api/v1/query?query={}&time={}.{:03}",
                        encode(q),
                        t / 1000,
                        t % 1000
                    ),
                    support::ordered(q),
                )
            })
            .collect();
        // The range query three times: evaluated, then answered from the result cache, then
        // one step later (a refresh: cached steps plus one evaluated).
        for (s, e) in [(start, end), (start, end), (start + step, end + step)] {
            paths.push((
                format!(
                    "/api/v1/query_range?query={}&start={}&end={}&step={}",
                    encode(q),
                    s as f64 / 1000.0,
                    e as f64 / 1000.0,
                    step as f64 / 1000.0
                ),
                false,
            ));
        }
        // The prettier's layout, as `/api/v1/format_query` gives it.
        let fq = format!("/api/v1/format_query?query={}", encode(q));
        let (prom_fmt, our_fmt) = (raw(prom_port, &fq), raw(agg_port, &fq));
        if prom_fmt["status"] == "success" && prom_fmt != our_fmt && !FORMAT_DIFFERS.contains(&q) {
            failures.push(format!(
                "line {}: {fq}\n  prometheus: {prom_fmt}\n  outpost:    {our_fmt}",
                query.line
            ));
        }
        let mut any_refused = false;
        for (path, ordered) in paths {
            let prom = ask(prom_port, &path);
            let ours = ask(agg_port, &path);
            any_refused |= prom.is_err();
            if !agree(ordered, &prom, &ours) {
                failures.push(format!(
                    "line {}: {path}\n  query:      {q}\n  prometheus: {prom:?}\n  outpost:    {ours:?}",
                    query.line
                ));
            }
        }
        if any_refused {
            refused += 1;
        }
        if any_refused != query.fails {
            failures.push(format!(
                "line {}: {q}: Prometheus refused it: {any_refused}, but the corpus says {}",
                query.line, query.fails
            ));
        }
    }
    assert!(refused > 10, "Prometheus refused only {refused} queries");
    // The metadata APIs Grafana's query editor calls answer alike.
    for m in [
        "g",
        "{job=\"a\"}",
        "{__name__=~\"h.*\"}",
        "s",
        "late",
        "nothing",
    ] {
        let m = encode(m);
        for path in [
            format!("/api/v1/series?match[]={m}"),
            format!("/api/v1/series?match[]={m}&match[]=c_total"),
            format!("/api/v1/labels?match[]={m}"),
            format!("/api/v1/label/inst/values?match[]={m}"),
            format!("/api/v1/label/__name__/values?match[]={m}"),
        ] {
            let (p, o) = (raw(prom_port, &path), raw(agg_port, &path));
            if p != o {
                failures.push(format!("{path}\n  prometheus: {p}\n  outpost:    {o}"));
            }
        }
    }
    for path in [
        "/api/v1/labels",
        "/api/v1/label/__name__/values",
        "/api/v1/label/le/values",
        "/api/v1/label/nolabel/values",
    ] {
        let (p, o) = (raw(prom_port, path), raw(agg_port, path));
        if p != o {
            failures.push(format!("{path}\n  prometheus: {p}\n  outpost:    {o}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences from Prometheus:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The data really is there: not every answer empty.
    let present = ask(
        agg_port,
        &format!("/api/v1/query?query=count(s)&time={}", times[2] / 1000),
    );
    assert_eq!(present.map(|r| r.len()), Ok(1));
}
