//! `rw-size`: how many bytes the samples an Outpost aggregator holds would have cost on the
//! wire as Prometheus remote_write 1.0, encoded the way Prometheus 2.x sends them.
//!
//! It fetches every raw sample of every series matching `--match` in `(start, end]` through
//! the aggregator's query API (instant queries of a range selector, which return raw samples
//! as a matrix), then replays them in scrape order (grouped by timestamp, series in label
//! order within a scrape) into WriteRequests of at most `--batch` samples, each sample its own
//! `TimeSeries` with its full sorted label set (`__name__` included), protobuf encoded by hand
//! and compressed with snappy's block format — as `/work/shared/peers/gen_dataset.py` does.
//!
//! Prometheus' queue manager also sends a partial batch when `batch_send_deadline` (5 s by
//! default) passes; for one host scraped every 10 s that cuts a request at every scrape.
//! `rw_bytes` follows that (`--deadline-s 5`); `packed_*` ignores the deadline (every request
//! full, as for a busy Prometheus with many targets), the most favourable case for remote_write.
//! HTTP headers are not counted: only request bodies.
//!
//! usage: rw-size --url http://127.0.0.1:9470 --match '{agent="x"}' --start UNIX_S --end UNIX_S

use anyhow::{Context, Result, bail};
use outpost_tests::{encode, get_json};
use serde_json::{Value, json};
use std::collections::BTreeMap;

struct Args {
    url: String,
    selector: String,
    start: i64,
    end: i64,
    batch: usize,
    deadline_ms: i64,
    chunk_s: i64,
}

fn parse_args() -> Result<Args> {
    let mut url = None;
    let mut selector = None;
    let mut start = None;
    let mut end = None;
    let mut batch = 500usize;
    let mut deadline_s = 5.0f64;
    let mut chunk_s = 900i64;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut val = || -> Result<String> {
            inline
                .clone()
                .or_else(|| it.next())
                .with_context(|| format!("{key} needs a value"))
        };
        match key.as_str() {
            "--url" => url = Some(val()?),
            "--match" => selector = Some(val()?),
            "--start" => start = Some(val()?.parse::<f64>().context("--start: unix seconds")?),
            "--end" => end = Some(val()?.parse::<f64>().context("--end: unix seconds")?),
            "--batch" => batch = val()?.parse().context("--batch: samples per request")?,
            "--deadline-s" => deadline_s = val()?.parse().context("--deadline-s: seconds")?,
            "--chunk-s" => chunk_s = val()?.parse().context("--chunk-s: seconds per query")?,
            "-h" | "--help" => {
                println!(
                    "usage: rw-size --url http://127.0.0.1:PORT --match '{{agent=\"x\"}}' --start UNIX_S --end UNIX_S \
                     [--batch 500] [--deadline-s 5] [--chunk-s 900]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    let url = url.context("--url is required")?;
    let authority = url
        .strip_prefix("http://")
        .context("--url must start with http://")?
        .split('/')
        .next()
        .unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    if !(host == "localhost" || host == "::1" || host.starts_with("127.")) {
        bail!("--url must be a loopback address, got {url}");
    }
    let (start, end) = (
        start.context("--start is required")?,
        end.context("--end is required")?,
    );
    if end <= start {
        bail!("--end must be after --start");
    }
    if batch == 0 || chunk_s <= 0 {
        bail!("--batch and --chunk-s must be positive");
    }
    Ok(Args {
        url: url.trim_end_matches('/').to_string(),
        selector: selector.context("--match is required")?,
        start: start.floor() as i64,
        end: end.ceil() as i64,
        batch,
        deadline_ms: (deadline_s * 1000.0).round() as i64,
        chunk_s,
    })
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited protobuf field.
fn ld(out: &mut Vec<u8>, field: u8, payload: &[u8]) {
    out.push((field << 3) | 2);
    varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// The repeated `Label` fields of a `TimeSeries`, labels sorted by name.
fn encode_labels(labels: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in labels {
        let mut l = Vec::with_capacity(k.len() + v.len() + 4);
        ld(&mut l, 1, k.as_bytes());
        ld(&mut l, 2, v.as_bytes());
        ld(&mut out, 1, &l);
    }
    out
}

/// One `WriteRequest.timeseries` entry: the series' labels and one sample.
fn encode_timeseries(out: &mut Vec<u8>, labels: &[u8], ts_ms: i64, value: f64) {
    let mut smp = Vec::with_capacity(20);
    smp.push(0x09); // field 1, fixed64: value
    smp.extend_from_slice(&value.to_le_bytes());
    smp.push(0x10); // field 2, varint: timestamp
    varint(&mut smp, ts_ms as u64);
    let mut ts = Vec::with_capacity(labels.len() + smp.len() + 2);
    ts.extend_from_slice(labels);
    ld(&mut ts, 2, &smp);
    ld(out, 1, &ts);
}

fn parse_value(v: &Value) -> Result<f64> {
    let s = v.as_str().context("sample value is not a string")?;
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s.parse().with_context(|| format!("sample value {s:?}")),
    }
}

#[derive(Default)]
struct Totals {
    requests: u64,
    raw: u64,
    snappy: u64,
}

struct Sender {
    batch: usize,
    body: Vec<u8>,
    n: usize,
    first_ts: i64,
    enc: snap::raw::Encoder,
    t: Totals,
}

impl Sender {
    fn new(batch: usize) -> Sender {
        Sender {
            batch,
            body: Vec::new(),
            n: 0,
            first_ts: 0,
            enc: snap::raw::Encoder::new(),
            t: Totals::default(),
        }
    }
    fn flush(&mut self) -> Result<()> {
        if self.n == 0 {
            return Ok(());
        }
        let c = self.enc.compress_vec(&self.body).context("snappy")?;
        self.t.requests += 1;
        self.t.raw += self.body.len() as u64;
        self.t.snappy += c.len() as u64;
        self.body.clear();
        self.n = 0;
        Ok(())
    }
    /// Appends one sample; `deadline_ms` > 0 first sends a partial request whose oldest
    /// sample is older than the deadline.
    fn push(&mut self, labels: &[u8], ts: i64, v: f64, deadline_ms: i64) -> Result<()> {
        if deadline_ms > 0 && self.n > 0 && ts - self.first_ts >= deadline_ms {
            self.flush()?;
        }
        if self.n == 0 {
            self.first_ts = ts;
        }
        encode_timeseries(&mut self.body, labels, ts, v);
        self.n += 1;
        if self.n >= self.batch {
            self.flush()?;
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    let a = parse_args()?;
    // Every raw sample in (start, end], fetched in windows that tile it exactly; a sample seen
    // twice (an engine whose ranges are closed at both ends) is kept once.
    let mut series: BTreeMap<BTreeMap<String, String>, BTreeMap<i64, f64>> = BTreeMap::new();
    let mut t = a.start;
    let mut queries = 0;
    while t < a.end {
        let t1 = (t + a.chunk_s).min(a.end);
        let q = format!("{}[{}s]", a.selector, t1 - t);
        let url = format!("{}/api/v1/query?query={}&time={}", a.url, encode(&q), t1);
        let v = get_json(&url).map_err(|e| anyhow::anyhow!("GET {url}: {e}"))?;
        queries += 1;
        if v["status"] != "success" {
            bail!("query {q} at {t1} failed: {v}");
        }
        if v["data"]["resultType"] != "matrix" {
            bail!(
                "query {q} returned {} instead of a matrix",
                v["data"]["resultType"]
            );
        }
        for r in v["data"]["result"].as_array().into_iter().flatten() {
            let labels: BTreeMap<String, String> = r["metric"]
                .as_object()
                .context("result without metric")?
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let pts = series.entry(labels).or_default();
            for s in r["values"].as_array().into_iter().flatten() {
                let ts_ms = (s[0].as_f64().context("sample time")? * 1000.0).round() as i64;
                if ts_ms > a.start * 1000 && ts_ms <= a.end * 1000 {
                    pts.insert(ts_ms, parse_value(&s[1])?);
                }
            }
        }
        t = t1;
    }
    if series.values().all(|p| p.is_empty()) {
        bail!(
            "no samples match {} between {} and {}",
            a.selector,
            a.start,
            a.end
        );
    }

    // Scrape order: by timestamp, series in label order within one timestamp.
    let encoded: Vec<Vec<u8>> = series.keys().map(encode_labels).collect();
    let mut order: Vec<(i64, usize, f64)> = Vec::new();
    for (i, pts) in series.values().enumerate() {
        order.extend(pts.iter().map(|(&ts, &v)| (ts, i, v)));
    }
    order.sort_by_key(|&(ts, i, _)| (ts, i));

    let mut real = Sender::new(a.batch);
    let mut packed = Sender::new(a.batch);
    for &(ts, i, v) in &order {
        real.push(&encoded[i], ts, v, a.deadline_ms)?;
        packed.push(&encoded[i], ts, v, 0)?;
    }
    real.flush()?;
    packed.flush()?;
    let n = order.len() as f64;
    let timestamps = {
        let mut v: Vec<i64> = order.iter().map(|o| o.0).collect();
        v.dedup();
        v.len()
    };
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    println!(
        "{}",
        json!({
            "selector": a.selector,
            "start": a.start,
            "end": a.end,
            "queries": queries,
            "samples": order.len(),
            "series": series.values().filter(|p| !p.is_empty()).count(),
            "timestamps": timestamps,
            "batch": a.batch,
            "deadline_s": a.deadline_ms as f64 / 1000.0,
            "requests": real.t.requests,
            "rw_raw_bytes": real.t.raw,
            "rw_bytes": real.t.snappy,
            "rw_bytes_per_sample": r2(real.t.snappy as f64 / n),
            "packed_requests": packed.t.requests,
            "packed_rw_bytes": packed.t.snappy,
            "packed_rw_bytes_per_sample": r2(packed.t.snappy as f64 / n),
        })
    );
    Ok(())
}
