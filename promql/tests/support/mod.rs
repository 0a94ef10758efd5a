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
