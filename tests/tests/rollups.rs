//! Rollups answer as Prometheus 2.42 answers over the raw samples: three days of counters
//! (with resets) and gauges, 15 s apart with jitter (some points exactly on bucket edges),
//! are written through remote_write to the real `outpost-aggregator` and to Debian's
//! `prometheus`. The aggregator's answers at a 1 h step (read from buckets) must agree with
//! Prometheus':
//! 1. before any rollup exists (buckets made from the raw points at query time);
//! 2. after `outpost-aggregator tsdb --maintain` made the 5-minute and 1-hour rollups;
//! 3. after the raw retention deleted the raw days, at a 1 h step and, the raw data being
//!    gone, at a 5 m step too — when Prometheus still has every raw sample.

#[path = "../../promql/tests/support/mod.rs"]
mod support;

use outpost_shared::remote_write::{self, TimeSeries, WriteRequest};
use outpost_tests::*;
use std::process::Command;
use std::time::Duration;
use support::{Answer, Series, agree, from_json, http_get, installed};

const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;

/// Three days from `base` of 3 counters with a reset a day and 3 noisy gauges, 15 s apart
/// with 0–2 s of jitter (none on every fifth point).
fn data(base: i64) -> Vec<Series> {
    let n = 3 * DAY / 15_000;
    let mut out = Vec::new();
    let mut x: u64 = 99;
    for inst in 0..3 {
        let (mut c, mut g) = (Vec::new(), Vec::new());
        let mut v = 0.0;
        for i in 0..n {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let jitter = if i % 5 == 0 {
                0
            } else {
                (x >> 40) as i64 % 2000
            };
            let ts = base + i * 15_000 + jitter;
            v += ((x >> 33) % 40) as f64 + inst as f64;
            if i % 5760 == 2000 + inst * 100 {
                v = 1.0;
            }
            c.push((ts, v));
            g.push((ts, ((x >> 20) % 100_000) as f64 / 100.0 - 300.0));
        }
        let inst = format!("i{inst}");
        out.push((
            vec![("__name__", "c_total".into()), ("instance", inst.clone())],
            c,
        ));
        out.push((vec![("__name__", "g".into()), ("instance", inst)], g));
    }
    out
}

const QUERIES: &[&str] = &[
    "rate(c_total[1h])",
    "increase(c_total[2h])",
    "sum(rate(c_total[1h]))",
    "sum_over_time(g[1h])",
    "count_over_time(g[1h])",
    "avg_over_time(g[3h])",
    "min_over_time(g[1h])",
    "max_over_time(g[1h])",
    "last_over_time(g[1h])",
    "max by (instance) (max_over_time(g[5m]))",
];

fn ask(port: u16, q: &str, start: i64, end: i64, step_s: i64) -> Answer {
    let path = format!(
        "/api/v1/query_range?query={}&start={}&end={}&step={step_s}",
        support::encode(q),
        start / 1000,
        end / 1000
    );
    let (_, body) = http_get(port, &path).unwrap_or_else(|| panic!("no answer to {path}"));
    from_json(&serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{path}: {e}")))
}

/// Every query at `step_s` over `[start, end]` agrees between Prometheus and the
/// aggregator; `what` names the phase in a failure.
fn compare(prom: u16, agg: u16, start: i64, end: i64, step_s: i64, what: &str) {
    let mut failures = Vec::new();
    for q in QUERIES {
        let p = ask(prom, q, start, end, step_s);
        let o = ask(agg, q, start, end, step_s);
        assert!(
            p.as_ref().is_ok_and(|s| !s.is_empty() && s[0].1.len() > 5),
            "{q}: Prometheus has the data: {p:?}"
        );
        if !agree(false, &p, &o) {
            failures.push(format!("{q}\n  prometheus: {p:?}\n  outpost:    {o:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: {} of {} queries differ:\n{}",
        failures.len(),
        QUERIES.len(),
        failures.join("\n")
    );
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"))
}

fn tsdb(args: &[&str]) -> (bool, String) {
    run(Command::new(bin("outpost-aggregator"))
        .arg("tsdb")
        .args(args))
}

#[test]
fn rollups_answer_as_prometheus_does_over_the_raw_samples() {
    assert!(
        installed("prometheus"),
        "the reference is Debian's prometheus package: run scripts/install-deps"
    );
    let dir = TempDir::new("rollups");
    let certs = Certs::init(&dir.path().join("pki"));
    let mut agg =
        Aggregator::start_config(dir.path(), &certs, "", "[storage]\nretention = \"30d\"\n");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, "global: {}\n").expect("config");
    let prom_port = free_tcp_port();
    let _prom = start_prometheus(
        dir.path(),
        &config,
        prom_port,
        &["--web.enable-remote-write-receiver"],
    );
    assert!(
        wait_for(Duration::from_secs(60), || {
            http_get(prom_port, "/-/ready").filter(|(s, _)| *s == 200)
        })
        .is_some(),
        "prometheus did not get ready"
    );

    // Three whole days ending two days ago (closed days, inside Prometheus' default 15d).
    let today = now_ms().div_euclid(DAY) * DAY;
    let base = today - 5 * DAY;
    let series = data(base);
    // Half an hour of every series per request, in time order, as Prometheus accepts them.
    let mut t = base;
    while t < base + 3 * DAY {
        let body = remote_write::encode(&WriteRequest {
            timeseries: series
                .iter()
                .map(|(labels, pts)| {
                    let part: Vec<(i64, f64)> = pts
                        .iter()
                        .copied()
                        .filter(|p| p.0 >= t && p.0 < t + HOUR / 2)
                        .collect();
                    TimeSeries::new(labels, &part)
                })
                .collect(),
            metadata: vec![],
        });
        for url in [
            format!("http://127.0.0.1:{prom_port}/api/v1/write"),
            agg.url("/api/v1/write"),
        ] {
            let (status, text) = post_remote_write(&url, &body, None);
            assert_eq!(status, 204, "{url}: {text}");
        }
        t += HOUR / 2;
    }
    // Restarts keep the config, so the address.
    let agg_port = port_of(&agg.http);
    let (start, end) = (base + 3 * HOUR, base + 3 * DAY);

    // 1. No rollup made yet: buckets come from the raw points at query time.
    let status = get_json(&agg.url("/api/v1/status/tsdb")).expect("status");
    assert_eq!(
        status["data"]["outpostStats"]["storage"]["resolutions"]["1h"]["partitions"], 0,
        "{status}"
    );
    compare(prom_port, agg_port, start, end, 3600, "before rollups");

    // 2. Stopped, the folder is maintained offline: three days merged and rolled up.
    assert_eq!(agg.proc.terminate(Duration::from_secs(15)), Some(true));
    let cfg = agg.config.display().to_string();
    let (ok, out) = tsdb(&["--config", &cfg, "--maintain"]);
    assert!(ok, "{out}");
    let (ok, out) = tsdb(&["--config", &cfg, "--verify", "--json"]);
    assert!(ok, "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(report["resolutions"]["5m"]["partitions"], 3, "{report}");
    assert_eq!(report["resolutions"]["1h"]["partitions"], 3, "{report}");
    // 6 series, 3 days: 288 five-minute and 24 one-hour buckets a day each.
    assert_eq!(
        report["resolutions"]["5m"]["samples"],
        6 * 3 * 288,
        "{report}"
    );
    assert_eq!(
        report["resolutions"]["1h"]["samples"],
        6 * 3 * 24,
        "{report}"
    );
    assert!(
        report["verify"]["rollupChunks"].as_u64() == Some(6 * 3 * 2),
        "{report}"
    );
    agg.restart();
    compare(prom_port, agg_port, start, end, 3600, "from rollups");

    // 3. A raw retention of one day: the three days go, their rollups stay.
    let text = std::fs::read_to_string(&agg.config).expect("config");
    std::fs::write(&agg.config, text.replace("\"30d\"", "\"1d\"")).expect("config");
    agg.restart();
    let gone = wait_for(Duration::from_secs(30), || {
        let s = get_json(&agg.url("/api/v1/status/tsdb")).ok()?;
        let r = &s["data"]["outpostStats"]["storage"]["resolutions"];
        (r["raw"]["partitions"] == 0 && r["1h"]["partitions"] == 3).then_some(())
    });
    assert!(gone.is_some(), "the raw days were not deleted");
    compare(
        prom_port,
        agg_port,
        start,
        end,
        3600,
        "raw data deleted, 1h step",
    );
    compare(
        prom_port,
        agg_port,
        base + DAY,
        base + DAY + 6 * HOUR,
        300,
        "raw data deleted, 5m step",
    );
    let m = agg.metrics();
    assert!(
        metric_value(
            &m,
            "outpost_aggregator_storage_partitions_deleted_total{reason=\"retention\"}"
        )
        .unwrap_or(0.0)
            >= 3.0,
        "{m}"
    );
}
