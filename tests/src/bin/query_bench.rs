//! Query benchmark driver for `scripts/bench-query`: loads the same data into every server
//! given (Outpost, Prometheus and VictoriaMetrics, all through remote_write), then times the
//! same queries on each, side by side:
//!
//! - `sum(rate(x[5m]))` over all series, a range query of the last hour at a 15 s step
//!   (cold: the first query after loading);
//! - `histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m])))`, the same range;
//! - a high-cardinality selector: an instant query of `x`, every series;
//! - a dashboard refresh 5 s later: as Grafana sends range queries with start and end
//!   aligned to the step, 5 s later is either the same window (measured as "refresh") or,
//!   every third time at a 15 s step, the window one step on ("refresh_next_step");
//! - load: refresh queries arriving at a fixed rate (open loop) for a while, their windows
//!   moving 5 s per refresh and aligned to the step as Grafana aligns them; latency is from
//!   the moment a query was due, so a server that falls behind shows it.
//!
//! Outpost's answers to the first two queries are compared with Prometheus' (values within
//! 1e-9 relative). Prints one JSON object with every figure.

use anyhow::{Context, Result, bail};
use outpost_shared::remote_write::{self, ProtoLabel, ProtoSample, TimeSeries, WriteRequest};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Args {
    targets: Vec<(String, String)>,
    series: usize,
    hist: usize,
    minutes: i64,
    qps: u64,
    load_secs: u64,
}

fn args() -> Result<Args> {
    let mut a = Args {
        targets: vec![],
        series: 10_000,
        hist: 100,
        minutes: 60,
        qps: 200,
        load_secs: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--target" => {
                let (name, url) = v.split_once('=').context("--target name=url")?;
                a.targets
                    .push((name.into(), url.trim_end_matches('/').into()));
            }
            "--series" => a.series = v.parse()?,
            "--hist" => a.hist = v.parse()?,
            "--minutes" => a.minutes = v.parse()?,
            "--qps" => a.qps = v.parse()?,
            "--load-secs" => a.load_secs = v.parse()?,
            _ => bail!("unknown argument {k}"),
        }
    }
    if a.targets.is_empty() {
        bail!(
            "usage: query-bench --target outpost=http://... [--target prometheus=...] [--series N] [--hist N] [--minutes M] [--qps Q] [--load-secs S]"
        );
    }
    Ok(a)
}

fn labels(pairs: &[(&str, String)]) -> Vec<ProtoLabel> {
    pairs
        .iter()
        .map(|(n, v)| ProtoLabel {
            name: n.to_string(),
            value: v.clone(),
        })
        .collect()
}

/// The data: `x{job, instance}` counters and `x_bucket{job, le}` classic histograms, one point
/// every 15 s over `minutes` ending at `end`; deterministic.
fn dataset(a: &Args, end: i64) -> Vec<TimeSeries> {
    let n = (a.minutes * 4) as usize + 1;
    let start = end - (n as i64 - 1) * 15_000;
    let mut out = Vec::with_capacity(a.series + a.hist * 10);
    let mut rng = fastrand::Rng::with_seed(7);
    for i in 0..a.series {
        let mut v = 0.0;
        let samples = (0..n)
            .map(|j| {
                v += rng.u32(0..100) as f64;
                ProtoSample {
                    value: v,
                    timestamp: start + j as i64 * 15_000,
                }
            })
            .collect();
        out.push(TimeSeries {
            labels: labels(&[
                ("__name__", "x".into()),
                ("job", format!("job{}", i % 20)),
                ("instance", format!("host-{i}:9100")),
            ]),
            samples,
        });
    }
    let bounds = [
        "0.005", "0.01", "0.05", "0.1", "0.5", "1", "2.5", "5", "10", "+Inf",
    ];
    for h in 0..a.hist {
        let mut counts = [0.0f64; 10];
        let mut per_bucket: Vec<Vec<ProtoSample>> =
            (0..10).map(|_| Vec::with_capacity(n)).collect();
        for j in 0..n {
            let mut cum = 0.0;
            for (b, c) in counts.iter_mut().enumerate() {
                *c += rng.u32(0..(20 - b as u32)) as f64;
                cum += *c;
                per_bucket[b].push(ProtoSample {
                    value: cum,
                    timestamp: start + j as i64 * 15_000,
                });
            }
        }
        for (b, samples) in per_bucket.into_iter().enumerate() {
            out.push(TimeSeries {
                labels: labels(&[
                    ("__name__", "x_bucket".into()),
                    ("job", format!("job{}", h % 20)),
                    ("instance", format!("host-{h}:9100")),
                    ("le", bounds[b].into()),
                ]),
                samples,
            });
        }
    }
    out
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

fn load(url: &str, data: &[TimeSeries]) -> Result<()> {
    let ag = agent();
    for chunk in data.chunks(200) {
        let body = remote_write::encode(&WriteRequest {
            timeseries: chunk.to_vec(),
            metadata: vec![],
        });
        let mut r = ag
            .post(&format!("{url}/api/v1/write"))
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .send(&body[..])?;
        let code = r.status().as_u16();
        if code / 100 != 2 {
            bail!(
                "{url}: remote_write answered {code}: {}",
                r.body_mut().read_to_string().unwrap_or_default()
            );
        }
    }
    Ok(())
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// GETs `path`; returns the time taken and the JSON.
fn get(ag: &ureq::Agent, url: &str, path: &str) -> Result<(Duration, Value)> {
    let t = Instant::now();
    let mut r = ag.get(&format!("{url}{path}")).call()?;
    let body = r.body_mut().with_config().limit(1 << 30).read_to_string()?;
    let took = t.elapsed();
    let v: Value = serde_json::from_str(&body).context("not JSON")?;
    if v["status"] != "success" {
        bail!("{path}: {v}");
    }
    Ok((took, v))
}

fn range_path(q: &str, start_ms: i64, end_ms: i64) -> String {
    format!(
        "/api/v1/query_range?query={}&start={}&end={}&step=15",
        enc(q),
        start_ms as f64 / 1000.0,
        end_ms as f64 / 1000.0
    )
}

/// Series → points of a range answer.
fn points(v: &Value) -> BTreeMap<String, Vec<(f64, f64)>> {
    let mut out = BTreeMap::new();
    for s in v["data"]["result"].as_array().cloned().unwrap_or_default() {
        let pts = s["values"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|p| {
                (
                    p[0].as_f64().unwrap_or(0.0),
                    p[1].as_str()
                        .and_then(|x| x.parse().ok())
                        .unwrap_or(f64::NAN),
                )
            })
            .collect();
        out.insert(s["metric"].to_string(), pts);
    }
    out
}

fn equal(a: &Value, b: &Value) -> bool {
    let (a, b) = (points(a), points(b));
    a.len() == b.len()
        && a.iter().zip(&b).all(|((ka, pa), (kb, pb))| {
            ka == kb
                && pa.len() == pb.len()
                && pa.iter().zip(pb).all(|(x, y)| {
                    x.0 == y.0
                        && ((x.1.is_nan() && y.1.is_nan())
                            || (x.1 - y.1).abs() <= 1e-9 * x.1.abs().max(y.1.abs()))
                })
        })
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

/// Open-loop load: `qps` refresh queries per second for `secs`, each window 5 s after the
/// previous one; returns latencies (from when each was due) and the errors.
fn load_test(url: &str, end: i64, qps: u64, secs: u64) -> (Vec<Duration>, usize) {
    let total = qps * secs;
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
    let (done_tx, done_rx) = mpsc::channel::<Option<Duration>>();
    let workers: Vec<_> = (0..64)
        .map(|_| {
            let rx = rx.clone();
            let done = done_tx.clone();
            let url = url.to_string();
            std::thread::spawn(move || {
                let ag = agent();
                loop {
                    let job = rx.lock().map(|r| r.recv()).ok().and_then(Result::ok);
                    let Some((due, path)) = job else { return };
                    let ok = get(&ag, &url, &path).is_ok();
                    let _ = done.send(ok.then(|| due.elapsed()));
                }
            })
        })
        .collect();
    drop(done_tx);
    let t0 = Instant::now();
    for i in 0..total {
        let due = t0 + Duration::from_secs_f64(i as f64 / qps as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        // Users refresh every 5 s: windows move by 5 s, 20 distinct moments in turn, aligned
        // to the 15 s step as Grafana aligns them.
        let shift = (i % 20) as i64 * 5_000 / 15_000 * 15_000;
        let path = range_path("sum(rate(x[5m]))", end - 3_600_000 + shift, end + shift);
        let _ = tx.send((due, path));
    }
    drop(tx);
    let mut lat = vec![];
    let mut errors = 0;
    for r in done_rx.iter().take(total as usize) {
        match r {
            Some(d) => lat.push(d),
            None => errors += 1,
        }
    }
    for w in workers {
        let _ = w.join();
    }
    lat.sort();
    (lat, errors)
}

fn pct(v: &[Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    ms(v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1])
}

fn main() -> Result<()> {
    let a = args()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    // Whole minutes, ending 2 minutes ago (VictoriaMetrics hides the last 30 s by default).
    let end = (now - 120_000) / 60_000 * 60_000;
    let data = dataset(&a, end);
    let samples: usize = data.iter().map(|s| s.samples.len()).sum();
    eprintln!(
        "data: {} series, {samples} samples, ending {end}",
        data.len()
    );
    for (name, url) in &a.targets {
        let t = Instant::now();
        load(url, &data).with_context(|| format!("loading {name}"))?;
        eprintln!("{name}: loaded in {:.1} s", t.elapsed().as_secs_f64());
    }
    // Wait until every server answers with every series (VictoriaMetrics indexes
    // asynchronously).
    let ag = agent();
    let want = a.series as f64;
    for (name, url) in &a.targets {
        let path = format!(
            "/api/v1/query?query={}&time={}",
            enc("count(x)"),
            end as f64 / 1000.0
        );
        let t = Instant::now();
        loop {
            let n = get(&ag, url, &path).ok().and_then(|(_, v)| {
                v["data"]["result"][0]["value"][1]
                    .as_str()?
                    .parse::<f64>()
                    .ok()
            });
            if n == Some(want) {
                break;
            }
            if t.elapsed() > Duration::from_secs(120) {
                bail!("{name} never showed {want} series (last: {n:?})");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let q1 = range_path("sum(rate(x[5m]))", end - 3_600_000, end);
    let q2 = range_path(
        "histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m])))",
        end - 3_600_000,
        end,
    );
    let q3 = format!("/api/v1/query?query=x&time={}", end as f64 / 1000.0);
    let q4 = range_path("sum(rate(x[5m]))", end - 3_600_000, end);
    let q5 = range_path("sum(rate(x[5m]))", end - 3_600_000 + 15_000, end + 15_000);
    let mut report =
        json!({"series": data.len(), "samples": samples, "qps": a.qps, "load_secs": a.load_secs});
    let mut answers: BTreeMap<String, (Value, Value)> = BTreeMap::new();
    for (name, url) in &a.targets {
        let (t1, v1) = get(&ag, url, &q1)?;
        let (t2, v2) = get(&ag, url, &q2)?;
        let (t3, v3) = get(&ag, url, &q3)?;
        let (t4, _) = get(&ag, url, &q4)?;
        let (t5, _) = get(&ag, url, &q5)?;
        let n3 = v3["data"]["result"].as_array().map_or(0, Vec::len);
        eprintln!(
            "{name}: sum(rate) cold {:.1} ms, histogram_quantile {:.1} ms, selector ({n3} series) {:.1} ms, refresh {:.1} ms, refresh one step on {:.1} ms",
            ms(t1),
            ms(t2),
            ms(t3),
            ms(t4),
            ms(t5)
        );
        let (lat, errors) = load_test(url, end, a.qps, a.load_secs);
        eprintln!(
            "{name}: load {} q/s for {} s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {errors} errors",
            a.qps,
            a.load_secs,
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            pct(&lat, 1.0)
        );
        report[name] = json!({
            "sum_rate_cold_ms": ms(t1),
            "histogram_quantile_ms": ms(t2),
            "selector_ms": ms(t3),
            "selector_series": n3,
            "refresh_ms": ms(t4),
            "refresh_next_step_ms": ms(t5),
            "load_p50_ms": pct(&lat, 0.5),
            "load_p99_ms": pct(&lat, 0.99),
            "load_max_ms": pct(&lat, 1.0),
            "load_errors": errors,
        });
        answers.insert(name.clone(), (v1, v2));
    }
    if let (Some(o), Some(p)) = (answers.get("outpost"), answers.get("prometheus")) {
        report["outpost_equals_prometheus"] = json!({
            "sum_rate": equal(&o.0, &p.0),
            "histogram_quantile": equal(&o.1, &p.1),
        });
    }
    println!("{report}");
    Ok(())
}
