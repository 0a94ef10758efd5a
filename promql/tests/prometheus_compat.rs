//! End-to-end comparison with the real Prometheus 2.42: the same samples are written into
//! a Prometheus data directory (`promtool tsdb create-blocks-from openmetrics`) and into a
//! [`MemStorage`]; a Prometheus started on loopback over that directory and this crate
//! answer the same instant and range queries, which must agree: same series and labels,
//! values equal within 1e-9 relative, NaN equal to NaN, both failing where Prometheus
//! fails. Order is compared only where PromQL defines it (`sort`, `sort_desc`).
//!
//! Needs `prometheus` and `promtool` from Debian's `prometheus` package (2.42), which
//! `scripts/install-deps` installs; without them the test fails saying so.

use outpost_promql::memory::MemStorage;
use outpost_promql::{Steps, Value, instant_query, parse, range_query};
use outpost_shared::Labels;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn encode(s: &str) -> String {
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

fn http_get(port: u16, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = std::str::from_utf8(&buf[9..12]).ok()?.parse().ok()?;
    Some((status, buf[split + 4..].to_vec()))
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn installed(bin: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One series of the test data: labels, and points as `(ms, value)`.
type Series = (Vec<(&'static str, String)>, Vec<(i64, f64)>);

/// The test data: counters (one with a reset, and offset by a second per instance), gauges
/// with a 10-minute gap, and a classic histogram per job.
fn data(base: i64) -> Vec<Series> {
    let mut out = Vec::new();
    let n = 360; // 90 minutes at 15 s.
    for inst in 0..3 {
        let mut v = 0.0;
        let pts = (0..n)
            .map(|i| {
                v += (i % 7 + inst) as f64;
                if inst == 1 && i == 200 {
                    v = 3.0; // a counter reset
                }
                (base + i as i64 * 15_000 + inst as i64 * 1_000, v)
            })
            .collect();
        let job = if inst == 2 { "b" } else { "a" };
        out.push((
            vec![
                ("__name__", "c_total".into()),
                ("job", job.into()),
                ("inst", inst.to_string()),
            ],
            pts,
        ));
        // A gauge with a gap of 10 minutes in the middle.
        let pts = (0..n)
            .filter(|i| !(150..190).contains(i))
            .map(|i| {
                let x = i as f64 / 10.0 + inst as f64;
                (base + i as i64 * 15_000, (x.sin() * 10.0).round() / 2.0)
            })
            .collect();
        out.push((
            vec![
                ("__name__", "g".into()),
                ("job", job.into()),
                ("inst", inst.to_string()),
            ],
            pts,
        ));
    }
    // A classic histogram per job.
    for (j, job) in ["a", "b"].iter().enumerate() {
        let bounds = ["0.1", "0.5", "1", "5", "+Inf"];
        let mut counts = [0.0; 5];
        let mut series: Vec<Vec<(i64, f64)>> = vec![Vec::new(); 5];
        for i in 0..n {
            for (b, c) in counts.iter_mut().enumerate() {
                *c += ((i * (b + 1) + j) % 5) as f64 + b as f64;
            }
            let mut cum = 0.0;
            for b in 0..5 {
                cum += counts[b];
                series[b].push((base + i as i64 * 15_000, cum));
            }
        }
        for (b, pts) in series.into_iter().enumerate() {
            out.push((
                vec![
                    ("__name__", "h_bucket".into()),
                    ("job", job.to_string()),
                    ("le", bounds[b].into()),
                ],
                pts,
            ));
        }
    }
    out
}

fn render(labels: &[(&str, String)]) -> String {
    let name = &labels.iter().find(|l| l.0 == "__name__").expect("name").1;
    let rest: Vec<String> = labels
        .iter()
        .filter(|l| l.0 != "__name__")
        .map(|(n, v)| format!("{n}=\"{v}\""))
        .collect();
    format!("{name}{{{}}}", rest.join(","))
}

/// A result as sorted lines `labels => values`, or `error`.
type Answer = Result<Vec<(String, Vec<(i64, f64)>)>, String>;

fn labels_string(pairs: impl Iterator<Item = (String, String)>) -> String {
    let m: BTreeMap<String, String> = pairs.collect();
    let v: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", v.join(", "))
}

fn from_prometheus(j: &Json) -> Answer {
    if j.get("status").and_then(Json::as_str) != Some("success") {
        return Err(j
            .get("error")
            .and_then(Json::as_str)
            .unwrap_or("?")
            .to_string());
    }
    let data = j.get("data").expect("data");
    let num = |p: &Json| -> (i64, f64) {
        let a = p.as_array().expect("a [time, value] pair");
        let ts = (a[0].as_f64().unwrap_or(0.0) * 1000.0).round() as i64;
        let v = match a[1].as_str().unwrap_or("") {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            s => s.parse().expect("value"),
        };
        (ts, v)
    };
    let result = data.get("result").expect("result");
    let metric = |s: &Json| {
        let m = s
            .get("metric")
            .and_then(Json::as_object)
            .cloned()
            .unwrap_or_default();
        labels_string(
            m.into_iter()
                .map(|(k, v)| (k, v.as_str().unwrap_or("").to_string())),
        )
    };
    let items = |r: &Json| r.as_array().cloned().unwrap_or_default();
    Ok(match data.get("resultType").and_then(Json::as_str) {
        Some("scalar") => vec![("scalar".into(), vec![num(result)])],
        Some("vector") => items(result)
            .iter()
            .map(|s| (metric(s), vec![num(s.get("value").expect("value"))]))
            .collect(),
        Some("matrix") => items(result)
            .iter()
            .map(|s| {
                (
                    metric(s),
                    items(s.get("values").expect("values"))
                        .iter()
                        .map(num)
                        .collect(),
                )
            })
            .collect(),
        other => panic!("result type {other:?}"),
    })
}

fn from_outpost(v: Result<Value, outpost_promql::QueryError>) -> Answer {
    let lab = |l: &Labels| labels_string(l.iter().map(|l| (l.name.clone(), l.value.clone())));
    match v {
        Err(e) => Err(e.to_string()),
        Ok(Value::Scalar(p)) => Ok(vec![("scalar".into(), vec![(p.ts, p.value)])]),
        Ok(Value::Vector(v)) => Ok(v
            .iter()
            .map(|s| (lab(&s.labels), vec![(s.point.ts, s.point.value)]))
            .collect()),
        Ok(Value::Matrix(m)) => Ok(m
            .iter()
            .map(|s| {
                (
                    lab(&s.labels),
                    s.points.iter().map(|p| (p.ts, p.value)).collect(),
                )
            })
            .collect()),
        Ok(Value::String { .. }) => Err("string".into()),
    }
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || ((a - b).abs() <= 1e-9 * a.abs().max(b.abs()))
}

fn agree(q: &str, prom: &Answer, ours: &Answer) -> bool {
    match (prom, ours) {
        // The same error text, as Prometheus words it.
        (Err(a), Err(b)) => a == b,
        (Ok(p), Ok(o)) => {
            let ordered = q.starts_with("sort");
            let (mut p, mut o) = (p.clone(), o.clone());
            if !ordered {
                p.sort_by(|a, b| a.0.cmp(&b.0));
                o.sort_by(|a, b| a.0.cmp(&b.0));
            }
            p.len() == o.len()
                && p.iter().zip(&o).all(|(a, b)| {
                    a.0 == b.0
                        && a.1.len() == b.1.len()
                        && a.1
                            .iter()
                            .zip(&b.1)
                            .all(|(x, y)| x.0 == y.0 && same(x.1, y.1))
                })
        }
        _ => false,
    }
}

const QUERIES: &[&str] = &[
    "c_total",
    "g offset 5m",
    "-g",
    "g * 2 + 1",
    "2 ^ g",
    "g % 3",
    "g > 2",
    "g > bool 2",
    "1 < g",
    "g == g",
    "g != bool 0",
    "c_total / g",
    "c_total / on(inst) g",
    "c_total + ignoring(job) g",
    "g / on(job) group_left sum by (job) (g)",
    "sum by (job) (g) / on(job) group_right g",
    "g / on(job) g",
    "g and g > 0",
    "g or c_total",
    "g unless g < 0",
    "g or on(job) c_total",
    "sum(g)",
    "sum by (job) (c_total)",
    "sum without (inst) (g)",
    "avg by (job) (g)",
    "count(g)",
    "min(g)",
    "max by (job) (g)",
    "group by (job) (g)",
    "stddev(g)",
    "stdvar by (job) (g)",
    "topk(2, g)",
    "bottomk by (job) (1, g)",
    "quantile(0.3, g)",
    "quantile by (job) (0.9, c_total)",
    "count_values(\"v\", g)",
    "rate(c_total[5m])",
    "rate(c_total[1m])",
    "increase(c_total[10m])",
    "irate(c_total[2m])",
    "delta(g[5m])",
    "idelta(g[5m])",
    "deriv(g[5m])",
    "predict_linear(g[10m], 600)",
    "resets(c_total[30m])",
    "changes(g[10m])",
    "holt_winters(g[10m], 0.3, 0.6)",
    "avg_over_time(g[5m])",
    "min_over_time(g[5m])",
    "max_over_time(g[5m])",
    "sum_over_time(g[5m])",
    "count_over_time(g[5m])",
    "quantile_over_time(0.75, g[5m])",
    "stddev_over_time(g[5m])",
    "stdvar_over_time(g[5m])",
    "last_over_time(g[5m])",
    "present_over_time(g[5m])",
    "absent_over_time(g[1m])",
    "absent_over_time(nothing{job=\"x\"}[1m])",
    "rate(c_total[5m] offset 10m)",
    "sum by (job) (rate(c_total[5m]))",
    "histogram_quantile(0.9, rate(h_bucket[5m]))",
    "histogram_quantile(0.5, sum by (le) (rate(h_bucket[5m])))",
    "histogram_quantile(0.99, h_bucket)",
    "abs(g)",
    "ceil(g / 3)",
    "floor(g / 3)",
    "round(g / 3)",
    "round(g, 0.3)",
    "clamp(g, -1, 2)",
    "clamp_min(g, 0)",
    "clamp_max(g, 0)",
    "exp(g)",
    "ln(g)",
    "log2(c_total)",
    "log10(c_total)",
    "sqrt(g)",
    "sgn(g)",
    "sin(g)",
    "atan(g)",
    "cosh(g)",
    "deg(g)",
    "label_replace(g, \"x\", \"$1-$2\", \"inst\", \"(.)(.*)\")",
    "label_join(g, \"x\", \"/\", \"job\", \"inst\")",
    "time()",
    "timestamp(c_total)",
    "vector(time())",
    "scalar(sum(g))",
    "sort(g)",
    "sort_desc(g)",
    "absent(g)",
    "absent(nothing{a=\"b\"})",
    "hour()",
    "day_of_week(vector(time()))",
    "minute(g * 1000)",
    "year()",
    "1 + 2 * 3",
    "time() > bool 5",
    "count_values by (job) (\"v\", round(g))",
    "sum by (le) (h_bucket)",
    "topk(1, c_total)",
    "bottomk(2, g) > 0",
    "avg(g) - on() group_right g",
    "rate(c_total[5m]) > bool on(inst) group_left avg by (inst) (irate(c_total[5m]))",
    "max_over_time(g[10m:1m])",
    "rate(c_total[5m:30s])",
    "avg_over_time(rate(c_total[2m])[10m:])",
    "sum_over_time(g[7m:45s] offset 1m)",
    "deriv(g[10m:30s])",
    "g[5m:1m] offset 2m",
    "g @ start()",
    "c_total @ end() - c_total",
    "rate(c_total[5m] @ end())",
    "max_over_time(g[10m:1m] @ start())",
    "-2 ^ 2",
    "-g ^ 2",
    "2 * -g",
    "g / 0",
    "0 / g",
    "g == bool NaN",
    "sum(g / 0)",
    "avg(g / 0)",
    "max(0 / g)",
    "count_values(\"v\", g / 3)",
    "topk(scalar(nothing), g)",
    "label_replace(g, \"x\", \"y\", \"job\", \"(\")",
    "rate(c_total[5m]) / ignoring(job) group_left irate(c_total[5m])",
    "label_replace(g, \"inst\", \"\", \"inst\", \".*\")",
];

/// Queries Prometheus answers with an error; both must fail.
const FAILING: &[&str] = &[
    "g / on(job) g",
    "topk(scalar(nothing), g)",
    "label_replace(g, \"x\", \"y\", \"job\", \"(\")",
    "label_replace(g, \"inst\", \"\", \"inst\", \".*\")",
];

#[test]
fn answers_agree_with_prometheus() {
    assert!(
        installed("prometheus") && installed("promtool"),
        "the reference is Debian's prometheus package (prometheus and promtool): run scripts/install-deps"
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    // Whole minutes, 2 h ago, within Prometheus' retention.
    let base = (now - 2 * 3600 * 1000) / 60_000 * 60_000;
    let series = data(base);

    let dir = std::env::temp_dir().join(format!("outpost-promcompat-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let mut om = String::new();
    let mut last_name = "";
    let mut mem = MemStorage::default();
    for (labels, pts) in &series {
        let name = labels
            .iter()
            .find(|l| l.0 == "__name__")
            .map(|l| l.1.as_str())
            .unwrap_or("");
        if name != last_name {
            om.push_str(&format!("# TYPE {name} gauge\n"));
            last_name = name;
        }
        let text = render(labels);
        for (ts, v) in pts {
            om.push_str(&format!("{text} {v} {}.{:03}\n", ts / 1000, ts % 1000));
        }
        let l = Labels::new(labels.iter().map(|(n, v)| (n.to_string(), v.clone())));
        mem = mem.with(l, pts);
    }
    om.push_str("# EOF\n");
    let om_path = dir.join("data.om");
    std::fs::write(&om_path, om).expect("write");
    let tsdb = dir.join("tsdb");
    let st = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om_path)
        .arg(&tsdb)
        .stdout(Stdio::null())
        .status()
        .expect("promtool");
    assert!(st.success(), "promtool failed");
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global: {}\n").expect("config");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let _server = Server(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(port, "/-/ready").is_none_or(|(s, _)| s != 200) {
        assert!(Instant::now() < deadline, "prometheus did not get ready");
        std::thread::sleep(Duration::from_millis(200));
    }

    let times = [
        base + 20 * 60_000,
        base + 45 * 60_000 + 7_000,
        base + 85 * 60_000,
    ];
    let (start, end, step) = (base + 10 * 60_000, base + 95 * 60_000, 60_000 + 7_000);
    let mut failures = Vec::new();
    let mut both_failed = Vec::new();
    for q in QUERIES {
        let expr = parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        for t in times {
            let path = format!(
                "/api/v1/query?query={}&time={}.{:03}",
                encode(q),
                t / 1000,
                t % 1000
            );
            let (_, body) = http_get(port, &path).expect("query");
            let prom =
                from_prometheus(&serde_json::from_slice(&body).expect("Prometheus answers JSON"));
            let ours = from_outpost(instant_query(&mem, &expr, t));
            if !agree(q, &prom, &ours) {
                failures.push(format!(
                    "{q} at {t}\n  prometheus: {prom:?}\n  outpost:    {ours:?}"
                ));
            }
            if prom.is_err() && !both_failed.contains(q) {
                both_failed.push(*q);
            }
        }
        let path = format!(
            "/api/v1/query_range?query={}&start={}&end={}&step={}",
            encode(q),
            start / 1000,
            end / 1000,
            step as f64 / 1000.0
        );
        let (_, body) = http_get(port, &path).expect("query");
        let prom =
            from_prometheus(&serde_json::from_slice(&body).expect("Prometheus answers JSON"));
        let steps = Steps::new(start, end, step).expect("steps");
        let ours = from_outpost(range_query(&mem, &expr, &steps));
        if !agree("range", &prom, &ours) {
            failures.push(format!(
                "range {q}\n  prometheus: {prom:?}\n  outpost:    {ours:?}"
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(both_failed, FAILING, "queries Prometheus refused");
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
