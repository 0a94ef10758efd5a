//! The engine alone against the real Prometheus 2.42: the same samples are written into a
//! Prometheus data directory (`promtool tsdb create-blocks-from openmetrics`) and into a
//! [`MemStorage`]; a Prometheus started on loopback over that directory and this crate
//! answer the corpus (`support/queries.promql`) as instant and range queries, which must
//! agree (`support::agree`): same series and labels, values equal within 1e-9 relative, NaN
//! equal to NaN, both failing where Prometheus fails. Order is compared only where PromQL
//! defines it (`sort`, `sort_desc`). The data here lacks the corpus' `s` and `late` series
//! (OpenMetrics cannot carry stale markers); `tests/tests/promql_compat.rs` sends everything
//! through remote_write to the aggregator and checks the corpus' `!` marks too.
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
    Answer, Server, agree, corpus, data, encode, from_json, http_get, installed, labels_string,
};

fn render(labels: &[(&str, String)]) -> String {
    let name = &labels.iter().find(|l| l.0 == "__name__").expect("name").1;
    let rest: Vec<String> = labels
        .iter()
        .filter(|l| l.0 != "__name__")
        .map(|(n, v)| format!("{n}=\"{v}\""))
        .collect();
    format!("{name}{{{}}}", rest.join(","))
}

/// Prometheus' answer as the engine alone would give it: errors without the HTTP API's
/// `errorType` and without its `invalid parameter "query": ` prefix.
fn engine_level(a: Answer) -> Answer {
    a.map_err(|e| {
        let msg = e.split_once(": ").map_or(e.as_str(), |(_, m)| m);
        msg.strip_prefix("invalid parameter \"query\": ")
            .unwrap_or(msg)
            .to_string()
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
    let queries = corpus();
    for query in &queries {
        let q = query.text.as_str();
        let ours_parsed = parse(q);
        for t in times {
            let path = format!(
                "/api/v1/query?query={}&time={}.{:03}",
                encode(q),
                t / 1000,
                t % 1000
            );
            let (_, body) = http_get(port, &path).expect("query");
            let prom = engine_level(from_json(
                &serde_json::from_slice(&body).expect("Prometheus answers JSON"),
            ));
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
        }
        let path = format!(
            "/api/v1/query_range?query={}&start={}&end={}&step={}",
            encode(q),
            start / 1000,
            end / 1000,
            step as f64 / 1000.0
        );
        let (_, body) = http_get(port, &path).expect("query");
        let prom = engine_level(from_json(
            &serde_json::from_slice(&body).expect("Prometheus answers JSON"),
        ));
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
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
