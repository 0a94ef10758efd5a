//! Forwarding (`[[forward]]`) to real receivers on loopback: Debian's `victoria-metrics`
//! (`/api/v1/write`) and `prometheus` (`--web.enable-remote-write-receiver`). Samples go
//! into the aggregator through remote_write while VictoriaMetrics is down for a while and
//! the aggregator is killed with `kill -9` in the middle; afterwards both receivers hold
//! exactly the samples the aggregator holds, series by series (count and sum of every
//! series, queried through each one's PromQL API).

use outpost_shared::remote_write::{ProtoLabel, ProtoSample, TimeSeries};
use outpost_tests::{
    Aggregator, Certs, TempDir, free_tcp_port, get_json, get_text, metric_value, now_ms,
    start_prometheus, start_victoria_metrics, wait_for,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const SERIES: usize = 20;

/// Writes point `k` (at `t0 + k s`) of every series.
fn write_round(agg: &Aggregator, t0: i64, k: i64) {
    let timeseries = (0..SERIES)
        .map(|s| TimeSeries {
            labels: vec![
                ProtoLabel {
                    name: "__name__".into(),
                    value: "fwd_test".into(),
                },
                ProtoLabel {
                    name: "series".into(),
                    value: format!("s{s:02}"),
                },
            ],
            samples: vec![ProtoSample {
                value: (k * 100 + s as i64) as f64,
                timestamp: t0 + k * 1000,
            }],
        })
        .collect();
    agg.remote_write(timeseries);
}

/// Per series: (sample count, sum), through `base`'s `/api/v1/query` at `at_ms`.
fn totals(base: &str, at_ms: i64) -> BTreeMap<String, (f64, f64)> {
    let q = |expr: &str| -> Vec<Value> {
        let url = format!(
            "{base}/api/v1/query?query={}&time={}",
            outpost_tests::encode(expr),
            at_ms as f64 / 1000.0
        );
        let v = get_json(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    };
    let mut out: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for (i, expr) in [
        "count_over_time(fwd_test[1h])",
        "sum_over_time(fwd_test[1h])",
    ]
    .iter()
    .enumerate()
    {
        for s in q(expr) {
            let name = s["metric"]["series"].as_str().unwrap_or("?").to_string();
            let v: f64 = s["value"][1]
                .as_str()
                .unwrap_or("nan")
                .parse()
                .unwrap_or(f64::NAN);
            let e = out.entry(name).or_insert((0.0, 0.0));
            if i == 0 {
                e.0 = v;
            } else {
                e.1 = v;
            }
        }
    }
    out
}

#[test]
fn forwarded_samples_survive_a_receiver_outage_and_a_crash() {
    let dir = TempDir::new("forward");
    let certs = Certs::init(&dir.path().join("certs"));
    let vm_port = free_tcp_port();
    let mut vm = start_victoria_metrics(dir.path(), vm_port);
    let prom_port = free_tcp_port();
    std::fs::write(dir.path().join("prometheus.yml"), "global: {}\n").expect("prom config");
    let _prom = start_prometheus(
        dir.path(),
        &dir.path().join("prometheus.yml"),
        prom_port,
        &["--web.enable-remote-write-receiver"],
    );
    let prom = format!("http://127.0.0.1:{prom_port}");
    wait_for(Duration::from_secs(20), || {
        get_text(&format!("{prom}/-/ready")).ok()
    })
    .expect("prometheus ready");
    let vm_url = format!("http://127.0.0.1:{vm_port}");
    let tail = format!(
        "[[forward]]\nname = \"vm\"\nurl = \"{vm_url}/api/v1/write\"\nmax_samples_per_send = 50\nmax_backoff = \"500ms\"\n[[forward]]\nname = \"prom\"\nurl = \"{prom}/api/v1/write\"\nmax_samples_per_send = 50\n"
    );
    let mut agg = Aggregator::start_config(dir.path(), &certs, "", &tail);
    let t0 = now_ms() - 600_000;
    let mut k = 0;
    for _ in 0..20 {
        write_round(&agg, t0, k);
        k += 1;
    }
    // VictoriaMetrics goes away; writing goes on; the aggregator is killed in the middle.
    vm.kill();
    for _ in 0..40 {
        write_round(&agg, t0, k);
        k += 1;
    }
    std::thread::sleep(Duration::from_secs(2));
    let m = agg.metrics();
    let pending = metric_value(
        &m,
        "outpost_aggregator_forward_pending_records{destination=\"vm\"}",
    )
    .unwrap_or(0.0);
    assert!(
        pending > 0.0,
        "nothing waits for the receiver that is down:\n{m}"
    );
    agg.restart();
    for _ in 0..40 {
        write_round(&agg, t0, k);
        k += 1;
    }
    let _vm = start_victoria_metrics(dir.path(), vm_port);
    let caught_up = wait_for(Duration::from_secs(60), || {
        let m = agg.metrics();
        let p = |d: &str| {
            metric_value(
                &m,
                &format!("outpost_aggregator_forward_pending_records{{destination=\"{d}\"}}"),
            )
        };
        (p("vm") == Some(0.0) && p("prom") == Some(0.0)).then_some(())
    });
    assert!(
        caught_up.is_some(),
        "not caught up:\n{}\n{}",
        agg.metrics(),
        agg.proc.logs()
    );
    let at = t0 + k * 1000 + 1000;
    let ours = totals(&agg.url(""), at);
    assert_eq!(ours.len(), SERIES, "{ours:?}");
    assert!(ours.values().all(|(n, _)| *n == k as f64), "{ours:?}");
    let vm_got = wait_for(Duration::from_secs(30), || {
        let t = totals(&vm_url, at);
        (t == ours).then_some(t)
    });
    assert!(
        vm_got.is_some(),
        "victoria-metrics holds {:?}, the aggregator {ours:?}",
        totals(&vm_url, at)
    );
    assert_eq!(
        totals(&prom, at),
        ours,
        "prometheus differs from the aggregator"
    );
    let m = agg.metrics();
    // Resumed at the stored cursors: since the restart, Prometheus (caught up before the
    // crash) was sent the 40 rounds written since, plus at most the one request in flight
    // (50 samples, rounded up to whole batches of 20).
    let sent = |d: &str| {
        metric_value(
            &m,
            &format!("outpost_aggregator_forward_samples_sent_total{{destination=\"{d}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let after = (40 * SERIES) as f64;
    assert!(
        sent("prom") >= after && sent("prom") <= after + 60.0,
        "prometheus was sent {} samples after the restart, not {after} (+ one request)",
        sent("prom")
    );
    // A resend from an earlier point would reach Prometheus as out-of-order samples, which
    // it refuses: nothing may have failed or been dropped for either receiver.
    for d in ["prom", "vm"] {
        for what in ["failed", "dropped"] {
            let v = metric_value(
                &m,
                &format!("outpost_aggregator_forward_samples_{what}_total{{destination=\"{d}\"}}"),
            )
            .unwrap_or(0.0);
            assert_eq!(v, 0.0, "{d}: {v} samples {what}:\n{m}");
        }
    }
}
