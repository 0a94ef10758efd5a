//! What both comparisons with the real Prometheus share: the query corpus
//! (`queries.promql`), reading a Prometheus-shaped JSON answer, and the agreement rule.
//! Included by `promql/tests/prometheus_compat.rs` (the engine over an in-memory store) and
//! `tests/tests/promql_compat.rs` (the aggregator's HTTP API over data sent through
//! remote_write) with `#[path]`, so both ask exactly the same questions.

#![allow(dead_code, unreachable_pub)]

use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One query of the corpus.
pub struct Query {
    /// The PromQL text.
    pub text: String,
    /// Marked `!` in the corpus: Prometheus refuses it, at every time.
    pub fails: bool,
    /// Line number in `queries.promql`, from 1.
    pub line: usize,
}

/// The corpus: one query per line; `#` starts a comment line; a leading `! ` marks a query
/// Prometheus refuses.
pub fn corpus() -> Vec<Query> {
    include_str!("queries.promql")
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(i, l)| {
            let l = l.trim();
            let (fails, text) = match l.strip_prefix("! ") {
                Some(rest) => (true, rest),
                None => (false, l),
            };
            Query {
                text: text.to_string(),
                fails,
                line: i + 1,
            }
        })
        .collect()
}

/// Percent-encodes a query parameter.
pub fn encode(s: &str) -> String {
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

/// A plain HTTP/1.0 GET on loopback: status and body, or `None` if nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = std::str::from_utf8(&buf[9..12]).ok()?.parse().ok()?;
    Some((status, buf[split + 4..].to_vec()))
}

/// A child process killed when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// True when `bin --version` runs.
pub fn installed(bin: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A result as `(labels, [(ms, value)])` per series, or the error text.
pub type Answer = Result<Vec<(String, Vec<(i64, f64)>)>, String>;

/// Labels as one comparable string, sorted by name.
pub fn labels_string(pairs: impl Iterator<Item = (String, String)>) -> String {
    let m: BTreeMap<String, String> = pairs.collect();
    let v: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", v.join(", "))
}

/// Reads an answer of Prometheus' HTTP API (`/api/v1/query`, `/query_range`).
pub fn from_json(j: &Json) -> Answer {
    if j.get("status").and_then(Json::as_str) != Some("success") {
        let field = |k: &str| j.get(k).and_then(Json::as_str).unwrap_or("?").to_string();
        return Err(format!("{}: {}", field("errorType"), field("error")));
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
        Some("string") => {
            let a = result.as_array().expect("[time, string]");
            let ts = (a[0].as_f64().unwrap_or(0.0) * 1000.0).round() as i64;
            vec![(format!("string {}", a[1]), vec![(ts, 0.0)])]
        }
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

/// Equal within 1e-9 relative, NaN equal to NaN.
pub fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || ((a - b).abs() <= 1e-9 * a.abs().max(b.abs()))
}

/// Whether two answers agree: both refuse the query, or the same series with the same
/// points. Evaluation errors must have Prometheus' very text; for a query that does not
/// parse, both must say `parse error` (positions and wording come from different parsers).
/// Order counts only where PromQL defines it (`ordered`: `sort`, `sort_desc` at an instant).
pub fn agree(ordered: bool, prom: &Answer, ours: &Answer) -> bool {
    match (prom, ours) {
        (Err(a), Err(b)) if a.contains("parse error") => b.contains("parse error"),
        (Err(a), Err(b)) => a == b,
        (Ok(p), Ok(o)) => {
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

/// Whether the order of an instant answer is defined: the outermost call is `sort` or
/// `sort_desc`.
pub fn ordered(q: &str) -> bool {
    q.starts_with("sort(") || q.starts_with("sort_desc(")
}

/// One series of the test data: labels, and points as `(ms, value)`.
pub type Series = (Vec<(&'static str, String)>, Vec<(i64, f64)>);

/// The test data: counters (one with a reset, and offset by a second per instance), gauges
/// with a 10-minute gap, and a classic histogram per job.
pub fn data(base: i64) -> Vec<Series> {
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

/// What the end-to-end comparison adds to [`data`], sent through remote_write: `s{inst}`
/// gauges ending in Prometheus' stale marker (`inst="0"` comes back 15 minutes later,
/// `inst="1"` does not), and `late{inst}` counters whose every fourth point is sent only
/// after the newer ones. Returns (sent first, sent afterwards).
pub fn stale_and_late(base: i64) -> (Vec<Series>, Vec<Series>) {
    let stale = f64::from_bits(0x7ff0_0000_0000_0002);
    let at = |i: i64| base + i * 15_000;
    let mut first = Vec::new();
    let mut later = Vec::new();
    for inst in 0..2i64 {
        let mut pts: Vec<(i64, f64)> = Vec::new();
        for i in 0..360 {
            let v = ((i * 7 + inst * 3) % 11) as f64 - 2.0;
            match (inst, i) {
                (0, 120) | (1, 300) => pts.push((at(i), stale)),
                (0, 121..180) | (1, 301..) => {}
                _ => pts.push((at(i), v)),
            }
        }
        first.push((
            vec![("__name__", "s".into()), ("inst", inst.to_string())],
            pts,
        ));
        let labels = vec![("__name__", "late".into()), ("inst", inst.to_string())];
        let pts: Vec<(i64, f64)> = (0..360)
            .map(|i| (at(i) + inst * 500, (i * (inst + 1)) as f64 + 0.25))
            .collect();
        first.push((
            labels.clone(),
            pts.iter()
                .copied()
                .filter(|p| (p.0 - base) / 15_000 % 4 != 1)
                .collect(),
        ));
        later.push((
            labels,
            pts.iter()
                .copied()
                .filter(|p| (p.0 - base) / 15_000 % 4 == 1)
                .collect(),
        ));
    }
    (first, later)
}
