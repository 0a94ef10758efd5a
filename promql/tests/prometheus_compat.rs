//! End-to-end comparison with the real Prometheus 2.42: the same samples are written into
//! a Prometheus data directory (`promtool tsdb create-blocks-from openmetrics`) and into a
//! [`MemStorage`]; a Prometheus started on loopback over that directory and this crate
//! answer the same instant and range queries, which must agree: same series and labels,
//! values equal within 1e-9 relative, NaN equal to NaN, both failing where Prometheus
//! fails. Order is compared only where PromQL defines it (`sort`, `sort_desc`).
//!
//! Needs `prometheus` and `promtool` from Debian's `prometheus` package (2.42), which
//! `scripts/install-deps` installs; without them the test fails saying so.

#[path = "support/mod.rs"]
mod support;

use outpost_promql::memory::MemStorage;
use outpost_promql::{Steps, Value, instant_query, parse, range_query};
use outpost_shared::Labels;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{
    Answer, Server, agree, corpus, encode, from_json, http_get, installed, labels_string,
};

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
        Ok(Value::String { ts, value }) => Ok(vec![(
            format!("string {}", serde_json::Value::String(value)),
            vec![(ts, 0.0)],
        )]),
    }
}

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
    // Queries whose `!` mark in the corpus disagrees with what Prometheus did.
    let mut marks = Vec::new();
    let queries = corpus();
    for query in &queries {
        let q = query.text.as_str();
        let ours_parsed = parse(q);
        let mut refused = false;
        for t in times {
            let path = format!(
                "/api/v1/query?query={}&time={}.{:03}",
                encode(q),
                t / 1000,
                t % 1000
            );
            let (_, body) = http_get(port, &path).expect("query");
            let prom = from_json(&serde_json::from_slice(&body).expect("Prometheus answers JSON"));
            let ours = match &ours_parsed {
                Ok(expr) => from_outpost(instant_query(&mem, expr, t)),
                Err(e) => Err(e.to_string()),
            };
            if !agree(support::ordered(q), &prom, &ours) {
                failures.push(format!(
                    "line {}: {q} at {t}\n  prometheus: {prom:?}\n  outpost:    {ours:?}",
                    query.line
                ));
            }
            refused |= prom.is_err();
        }
        let path = format!(
            "/api/v1/query_range?query={}&start={}&end={}&step={}",
            encode(q),
            start / 1000,
            end / 1000,
            step as f64 / 1000.0
        );
        let (_, body) = http_get(port, &path).expect("query");
        let prom = from_json(&serde_json::from_slice(&body).expect("Prometheus answers JSON"));
        refused |= prom.is_err();
        if refused != query.fails {
            marks.push(format!(
                "line {}: {q}: prometheus refused it: {refused}",
                query.line
            ));
        }
        let steps = Steps::new(start, end, step).expect("steps");
        let ours = match &ours_parsed {
            Ok(expr) => from_outpost(range_query(&mem, expr, &steps)),
            Err(e) => Err(e.to_string()),
        };
        if !agree(false, &prom, &ours) {
            failures.push(format!(
                "line {}: range {q}\n  prometheus: {prom:?}\n  outpost:    {ours:?}",
                query.line
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        queries.len() >= 300,
        "the corpus has {} queries",
        queries.len()
    );
    assert!(
        marks.is_empty(),
        "queries whose `!` mark is wrong:\n{}",
        marks.join("\n")
    );
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
