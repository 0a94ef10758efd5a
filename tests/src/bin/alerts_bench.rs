//! Alert latency benchmark driver for `scripts/bench-alerts`: the time from the sample that
//! breaches a rule to the webhook receiving the notification.
//!
//! Each trial writes `bench_breach{trial="<n>"} 1` through remote_write to every target at
//! the same moment (each target's own clock start taken just before its write) and keeps
//! writing it every second; the targets' alerting rules (`bench_breach > 0`) fire and their
//! notifications reach the webhook sink served here on `--sink-port`, each target posting to
//! its own path (`/<target>`). A trial's latency for a target is the first notification
//! carrying that trial's alert minus the write. Trials start every `--every-ms`; each is
//! a new alert in a new group (`group_by: [alertname, trial]`).
//!
//! Prints JSON on stdout: per target the trials notified, p50, p99 and max latency in
//! seconds; progress on stderr.

use anyhow::{Context, Result, bail};
use outpost_shared::remote_write::{self, ProtoLabel, ProtoSample, TimeSeries, WriteRequest};
use outpost_tests::post_remote_write;
use outpost_tests::sink::Sink;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Target {
    /// Its name, and the sink path its webhook posts to (`/<name>`).
    name: String,
    /// Its remote_write URL.
    write_url: String,
    /// The alert name its rule fires.
    alertname: String,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn write(url: &str, trial: usize) -> Result<()> {
    let body = remote_write::encode(&WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![
                ProtoLabel {
                    name: "__name__".into(),
                    value: "bench_breach".into(),
                },
                ProtoLabel {
                    name: "trial".into(),
                    value: trial.to_string(),
                },
            ],
            samples: vec![ProtoSample {
                value: 1.0,
                timestamp: now_ms(),
            }],
        }],
        metadata: vec![],
    });
    let (code, text) = post_remote_write(url, &body, None);
    if code != 204 && code != 200 {
        bail!("{url}: HTTP {code}: {text}");
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() -> Result<()> {
    let mut targets = vec![];
    let (mut trials, mut every_ms, mut timeout_s, mut sink_port) = (30usize, 2000u64, 150u64, 0u16);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut v = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            // name=write_url,alertname
            "--target" => {
                let s = v()?;
                let (name, rest) = s.split_once('=').context("--target name=url,alertname")?;
                let (url, alert) = rest
                    .rsplit_once(',')
                    .context("--target name=url,alertname")?;
                targets.push(Target {
                    name: name.into(),
                    write_url: url.into(),
                    alertname: alert.into(),
                });
            }
            "--trials" => trials = v()?.parse()?,
            "--every-ms" => every_ms = v()?.parse()?,
            "--timeout" => timeout_s = v()?.parse()?,
            "--sink-port" => sink_port = v()?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    if targets.is_empty() || sink_port == 0 {
        bail!(
            "usage: alerts-bench --sink-port P --target name=write_url,alertname ... [--trials N] [--every-ms MS] [--timeout S]"
        );
    }
    let sink = Sink::start_on(sink_port);
    let mut started: BTreeMap<(String, usize), Instant> = BTreeMap::new();
    let begin = Instant::now();
    let mut next_trial = 0usize;
    let deadline_after_last = Duration::from_secs(timeout_s);
    let mut last_start = begin;
    loop {
        // Start the trials that are due.
        while next_trial < trials
            && begin.elapsed() >= Duration::from_millis(every_ms * next_trial as u64)
        {
            for t in &targets {
                started.insert((t.name.clone(), next_trial), Instant::now());
                write(&t.write_url, next_trial)?;
            }
            eprintln!("trial {next_trial} written");
            last_start = Instant::now();
            next_trial += 1;
        }
        // Keep every trial's series fresh.
        for trial in 0..next_trial {
            for t in &targets {
                write(&t.write_url, trial)?;
            }
        }
        let got = latencies(&sink, &targets, &started);
        let done: usize = got.values().map(Vec::len).sum();
        if next_trial == trials && done == trials * targets.len() {
            break;
        }
        if next_trial == trials && last_start.elapsed() > deadline_after_last {
            eprintln!(
                "timed out with {done} of {} notifications",
                trials * targets.len()
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(1000.min(every_ms)));
    }
    let got = latencies(&sink, &targets, &started);
    let mut out = serde_json::Map::new();
    for t in &targets {
        let mut l = got.get(&t.name).cloned().unwrap_or_default();
        l.sort_by(f64::total_cmp);
        out.insert(
            t.name.clone(),
            json!({
                "notified": l.len(),
                "trials": trials,
                "p50_s": percentile(&l, 0.5),
                "p99_s": percentile(&l, 0.99),
                "max_s": l.last().copied().unwrap_or(f64::NAN),
            }),
        );
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}

/// Per target, the latency of every trial notified so far, s.
fn latencies(
    sink: &Sink,
    targets: &[Target],
    started: &BTreeMap<(String, usize), Instant>,
) -> BTreeMap<String, Vec<f64>> {
    let mut first: BTreeMap<(String, usize), Duration> = BTreeMap::new();
    for r in sink.all() {
        let name = r.path.trim_start_matches('/').to_string();
        let Some(t) = targets.iter().find(|t| t.name == name) else {
            continue;
        };
        for a in r.json()["alerts"].as_array().into_iter().flatten() {
            if a["labels"]["alertname"] != t.alertname.as_str() || a["status"] != "firing" {
                continue;
            }
            let Some(trial) = a["labels"]["trial"].as_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            first.entry((name.clone(), trial)).or_insert(r.at);
        }
    }
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for ((name, trial), at) in first {
        if let Some(s) = started.get(&(name.clone(), trial)) {
            let arrived = sink.started_at() + at;
            out.entry(name)
                .or_default()
                .push(arrived.saturating_duration_since(*s).as_secs_f64());
        }
    }
    out
}
