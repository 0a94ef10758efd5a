//! Rule evaluation benchmark driver for `scripts/bench-rules`: loads the same counters into
//! every server through remote_write (10k series by default, one point every 15 s from 30
//! minutes ago to 10 minutes ahead, so instant selectors find data for the whole run),
//! then, one server at a time, writes the same rule file (1,000 rules in groups of 100 by
//! default: recording rules by path and by instance, alerting rules of which about 15 %
//! fire) into the server's rule folder, reloads it, lets every group evaluate, and measures
//! over a window:
//!
//! - cycle time: the sum of the groups' last `evaluationTime` (`/api/v1/rules`), read once
//!   per interval; mean and max over the window;
//! - CPU per cycle: the server process's user + system time (`/proc/PID/stat`) over the
//!   window, divided by the cycles in it;
//! - what came out: recorded series, firing alerts, rules not healthy.
//!
//! Then it removes the rule file and reloads, so the next server is measured alone. Prints
//! JSON on stdout (one object per server), progress on stderr.

use anyhow::{Context, Result, bail};
use outpost_shared::remote_write::{self, TimeSeries, WriteRequest};
use outpost_tests::post_remote_write;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Target {
    name: String,
    url: String,
    pid: u32,
    rules_dir: PathBuf,
}

struct Args {
    targets: Vec<Target>,
    series: usize,
    rules: usize,
    interval_s: u64,
    warmup_s: u64,
    window_s: u64,
}

fn args() -> Result<Args> {
    let mut a = Args {
        targets: vec![],
        series: 10_000,
        rules: 1000,
        interval_s: 10,
        warmup_s: 25,
        window_s: 60,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            // name=url,pid,rules_dir
            "--target" => {
                let (name, rest) = v.split_once('=').context("--target name=url,pid,dir")?;
                let parts: Vec<&str> = rest.split(',').collect();
                if parts.len() != 3 {
                    bail!("--target name=url,pid,dir");
                }
                a.targets.push(Target {
                    name: name.into(),
                    url: parts[0].trim_end_matches('/').into(),
                    pid: parts[1].parse()?,
                    rules_dir: parts[2].into(),
                });
            }
            "--series" => a.series = v.parse()?,
            "--rules" => a.rules = v.parse()?,
            "--interval" => a.interval_s = v.parse()?,
            "--warmup" => a.warmup_s = v.parse()?,
            "--window" => a.window_s = v.parse()?,
            _ => bail!(
                "usage: rules-bench --target name=url,pid,rules_dir ... [--series N] [--rules N] [--interval S] [--warmup S] [--window S]"
            ),
        }
    }
    if a.targets.is_empty() || a.series < 100 || a.rules < 4 || a.interval_s == 0 {
        bail!("need a --target, --series >= 100, --rules >= 4 and --interval > 0");
    }
    Ok(a)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `bench_requests_total{instance, path}`: instances × paths = `series`; each counter
/// grows by a fixed amount per 15 s, 0 to 19, so rates range from 0 to 1.27/s.
fn data(series: usize) -> (Vec<TimeSeries>, usize) {
    let instances = (series as f64).sqrt().ceil() as usize;
    let paths = series.div_ceil(instances);
    let start = (now_ms() - 30 * 60_000) / 15_000 * 15_000;
    let points = 40 * 4;
    let mut out = Vec::with_capacity(series);
    for i in 0..instances {
        for p in 0..paths {
            if out.len() == series {
                break;
            }
            let inc = ((i * 7 + p * 3) % 20) as f64;
            let samples: Vec<(i64, f64)> = (0..points)
                .map(|k| (start + k as i64 * 15_000, inc * k as f64))
                .collect();
            let (inst, path) = (format!("i{i}"), format!("p{p}"));
            out.push(TimeSeries::new(
                &[
                    ("__name__", "bench_requests_total"),
                    ("instance", inst.as_str()),
                    ("path", path.as_str()),
                ],
                &samples,
            ));
        }
    }
    (out, paths)
}

/// The rule file: `rules` rules in groups of 100, four kinds in turn.
fn rule_file(rules: usize, paths: usize, interval_s: u64) -> String {
    let mut y = String::from("groups:\n");
    for idx in 0..rules {
        if idx % 100 == 0 {
            let _ = write!(
                y,
                "  - name: bench-{}\n    interval: {interval_s}s\n    rules:\n",
                idx / 100
            );
        }
        let p = idx % paths;
        let _ = match idx % 4 {
            0 => write!(
                y,
                "      - record: bench:path_rate5m_{idx}\n        expr: sum by (instance) (rate(bench_requests_total{{path=\"p{p}\"}}[5m]))\n"
            ),
            1 => write!(
                y,
                "      - record: bench:instance_rate5m_{idx}\n        expr: sum(rate(bench_requests_total{{instance=\"i{p}\"}}[5m]))\n"
            ),
            2 => write!(
                y,
                "      - alert: BenchHigh{idx}\n        expr: rate(bench_requests_total{{path=\"p{p}\"}}[5m]) > 1.1\n        for: 30s\n        labels:\n          severity: warning\n        annotations:\n          summary: \"{{{{ $labels.instance }}}} serves {{{{ $value | humanize }}}} req/s on {{{{ $labels.path }}}}\"\n"
            ),
            _ => write!(
                y,
                "      - alert: BenchIdle{idx}\n        expr: avg by (instance) (rate(bench_requests_total{{path=~\"p{}.\"}}[5m])) < 0\n",
                p % 10
            ),
        };
    }
    y
}

fn get(url: &str) -> Result<Value> {
    let mut r = ureq::get(url).call()?;
    Ok(serde_json::from_str(&r.body_mut().read_to_string()?)?)
}

fn reload(url: &str) -> Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent.post(&format!("{url}/-/reload")).send("")?;
    let code = r.status().as_u16();
    if code / 100 != 2 {
        bail!(
            "{url}/-/reload: HTTP {code}: {}",
            r.body_mut().read_to_string().unwrap_or_default()
        );
    }
    Ok(())
}

fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the name.
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

/// Groups' evaluation times summed, and how many groups have evaluated, how many rules are
/// unhealthy (with one error).
fn groups(url: &str) -> Result<(f64, usize, usize, Option<String>)> {
    let v = get(&format!("{url}/api/v1/rules"))?;
    let mut sum = 0.0;
    let mut evaluated = 0;
    let mut bad = 0;
    let mut err = None;
    for g in v["data"]["groups"].as_array().into_iter().flatten() {
        sum += g["evaluationTime"].as_f64().unwrap_or(0.0);
        if !g["lastEvaluation"]
            .as_str()
            .unwrap_or("0001")
            .starts_with("0001")
        {
            evaluated += 1;
        }
        for r in g["rules"].as_array().into_iter().flatten() {
            if r["health"] == "err" {
                bad += 1;
                err.get_or_insert_with(|| r["lastError"].to_string());
            }
        }
    }
    Ok((sum, evaluated, bad, err))
}

fn scalar(url: &str, q: &str) -> f64 {
    let u = format!("{url}/api/v1/query?query={}", outpost_tests::encode(q));
    get(&u)
        .ok()
        .and_then(|v| v["data"]["result"][0]["value"][1].as_str()?.parse().ok())
        .unwrap_or(0.0)
}

fn measure(t: &Target, a: &Args, yaml: &str, n_groups: usize) -> Result<Value> {
    std::fs::create_dir_all(&t.rules_dir)?;
    let file = t.rules_dir.join("bench.yml");
    std::fs::write(&file, yaml)?;
    reload(&t.url)?;
    let t0 = Instant::now();
    loop {
        let (_, evaluated, _, _) = groups(&t.url)?;
        if evaluated >= n_groups && t0.elapsed() >= Duration::from_secs(a.warmup_s) {
            break;
        }
        if t0.elapsed() > Duration::from_secs(a.warmup_s + 120) {
            bail!(
                "{}: only {evaluated} of {n_groups} groups evaluated",
                t.name
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "{}: every group evaluated; measuring {} s",
        t.name, a.window_s
    );
    let cpu0 = cpu_seconds(t.pid)?;
    let start = Instant::now();
    let mut cycles = vec![];
    while start.elapsed() < Duration::from_secs(a.window_s) {
        std::thread::sleep(Duration::from_secs(a.interval_s));
        cycles.push(groups(&t.url)?.0);
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(t.pid)? - cpu0;
    let (_, _, bad, err) = groups(&t.url)?;
    let recorded = scalar(&t.url, "count({__name__=~\"bench:.+\"})");
    let firing = scalar(&t.url, "count(ALERTS{alertstate=\"firing\"})");
    std::fs::remove_file(&file)?;
    reload(&t.url)?;
    let n = wall / a.interval_s as f64;
    let mean = cycles.iter().sum::<f64>() / cycles.len().max(1) as f64;
    let max = cycles.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "{}: cycle mean {:.3} s, max {:.3} s; CPU {:.2} s over {:.0} s ({:.3} s per cycle); {recorded} recorded series, {firing} firing alerts, {bad} unhealthy rules {}",
        t.name,
        mean,
        max,
        cpu,
        wall,
        cpu / n,
        err.clone().unwrap_or_default()
    );
    Ok(json!({
        "cycle_mean_s": mean,
        "cycle_max_s": max,
        "cpu_s": cpu,
        "window_s": wall,
        "cpu_per_cycle_s": cpu / n,
        "recorded_series": recorded,
        "firing_alerts": firing,
        "unhealthy_rules": bad,
    }))
}

fn main() -> Result<()> {
    let a = args()?;
    let (series, paths) = data(a.series);
    for t in &a.targets {
        let start = Instant::now();
        for chunk in series.chunks(200) {
            let body = remote_write::encode(&WriteRequest {
                timeseries: chunk.to_vec(),
                metadata: vec![],
            });
            let (code, text) = post_remote_write(&format!("{}/api/v1/write", t.url), &body, None);
            if code / 100 != 2 {
                bail!("{}: remote_write HTTP {code}: {text}", t.name);
            }
        }
        eprintln!(
            "{}: loaded {} series in {:.1} s",
            t.name,
            series.len(),
            start.elapsed().as_secs_f64()
        );
    }
    let yaml = rule_file(a.rules, paths, a.interval_s);
    let n_groups = a.rules.div_ceil(100);
    let mut out = serde_json::Map::new();
    out.insert(
        "setup".into(),
        json!({"series": series.len(), "rules": a.rules, "groups": n_groups, "interval_s": a.interval_s}),
    );
    for t in &a.targets {
        out.insert(t.name.clone(), measure(t, &a, &yaml, n_groups)?);
    }
    println!("{}", Value::Object(out));
    Ok(())
}
