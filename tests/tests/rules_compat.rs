//! Rules side by side with the real Prometheus (Debian's 2.42): the same rule file and the
//! same samples, sent to both through remote_write, one step per evaluation. After every
//! evaluation `/api/v1/alerts` and `/api/v1/rules` must be the same (wall-clock timings
//! aside); at the end the `ALERTS`, `ALERTS_FOR_STATE` and recorded series (staleness
//! included), and what each sent to its own Alertmanager (0.25), must be the same too.
//!
//! The scenario walks the alerts through inactive → pending → firing → resolved, with
//! `for: 0`, a `for` longer and one shorter than the interval, `keep_firing_for`, templated
//! labels that change an alert's identity, and annotations using the template functions,
//! including one that fails to render.
//!
//! Both programs slot the group by the hash of its file and name, so with the same absolute
//! file path they evaluate at the same instants; each step's samples are written half an
//! interval before the slot that reads them.

use outpost_shared::remote_write::{self, TimeSeries, WriteRequest};
use outpost_tests::{
    Aggregator, Certs, TempDir, free_tcp_port, get_json, post_remote_write, start_alertmanager,
    start_prometheus, wait_for,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const INTERVAL_MS: i64 = 2000;

const RULES: &str = r#"groups:
  - name: compare
    interval: 2s
    rules:
      - record: room:temp:max
        expr: max by (room) (temp)
      - alert: HotNow
        expr: room:temp:max > 30
        labels:
          severity: warning
        annotations:
          summary: "{{ $labels.room }} at {{ $value | humanize }} in {{ $externalLabels.cluster }}"
          detail: '{{ printf "%.2f" $value }} {{ humanizeDuration 3661 }} {{ .Labels.room | toUpper }} {{ with query "count(temp)" }}{{ . | first | value }}{{ end }}'
      - alert: HotFor4s
        expr: room:temp:max > 30
        for: 4s
        labels:
          severity: page
      - alert: HotBriefly
        expr: room:temp:max > 30
        for: 1s
      - alert: HotKeep
        expr: room:temp:max > 30
        keep_firing_for: 5s
      - alert: HotFor4sKeep
        expr: room:temp:max > 30
        for: 4s
        keep_firing_for: 3s
      - alert: Level
        expr: temp > 0
        labels:
          level: '{{ if gt $value 30.0 }}high{{ else }}normal{{ end }}'
        annotations:
          all: '{{ range query "temp" | sortByLabel "room" }}{{ .Labels.room }}={{ .Value }};{{ end }}'
          sizes: '{{ 1536 | humanize1024 }} {{ 0.256 | humanizePercentage }} {{ 1700000000 | humanizeTimestamp }} {{ "a.b" | reReplaceAll "\\." "-" | title }}'
          broken: '{{ humanize "x" }}'
          url: '{{ $externalURL }} {{ "a b&c" | urlquery }} {{ "host:9100" | stripPort }}'
      - record: compare:done
        expr: vector(1)
"#;

/// Room a's and room b's temperature at each step.
const STEPS: &[(f64, f64)] = &[
    (20.0, 25.0),
    (20.0, 25.0),
    (35.0, 25.0),
    (35.0, 25.0),
    (35.0, 40.0),
    (35.0, 40.0),
    (20.0, 40.0),
    (20.0, 25.0),
    (20.0, 25.0),
    (20.0, 25.0),
    (35.0, 25.0),
    (20.0, 25.0),
    (20.0, 25.0),
    (20.0, 25.0),
];

/// The step after which what reached the Alertmanagers is compared while alerts fire.
const FIRING_STEP: usize = 5;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn sleep_until(t_ms: i64) {
    let d = t_ms - now_ms();
    if d > 0 {
        std::thread::sleep(Duration::from_millis(d as u64));
    }
}

/// The two programs under comparison: HTTP bases.
struct Pair<'a> {
    prom: &'a str,
    outpost: &'a str,
}

fn query(base: &str, q: &str) -> Vec<Value> {
    let url = format!("{base}/api/v1/query?query={}", outpost_tests::encode(q));
    get_json(&url)
        .ok()
        .and_then(|v| v["data"]["result"].as_array().cloned())
        .unwrap_or_default()
}

/// The timestamp, ms, of the latest `compare:done` sample: the last evaluation finished.
fn done_at(base: &str) -> Option<i64> {
    let r = query(base, "timestamp(compare:done)");
    let v = r.first()?["value"][1].as_str()?.parse::<f64>().ok()?;
    Some((v * 1000.0).round() as i64)
}

fn write(base: &str, ts: i64, a: f64, b: f64) {
    let series =
        |room: &str, v: f64| TimeSeries::new(&[("__name__", "temp"), ("room", room)], &[(ts, v)]);
    let body = remote_write::encode(&WriteRequest {
        timeseries: vec![series("a", a), series("b", b)],
        metadata: vec![],
    });
    let (code, text) = post_remote_write(&format!("{base}/api/v1/write"), &body, None);
    assert!(
        (200..300).contains(&code),
        "{base}: remote_write {code}: {text}"
    );
}

/// Removes what depends on the wall clock (evaluation times and durations).
fn strip_timings(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("evaluationTime");
            m.remove("lastEvaluation");
            for x in m.values_mut() {
                strip_timings(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_timings),
        _ => {}
    }
}

/// Where `a` and `b` first differ: a JSON path and both values.
fn first_diff(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                let (u, v) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                if let Some(d) = first_diff(u, v, &format!("{path}.{k}")) {
                    return Some(d);
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (u, v))| first_diff(u, v, &format!("{path}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{path}: outpost {a}, prometheus {b}")),
    }
}

/// Alerts in a stable order (by their labels).
fn sorted_alerts(mut v: Vec<Value>) -> Vec<Value> {
    v.sort_by_key(|a| a["labels"].to_string());
    v
}

fn alerts(base: &str) -> Vec<Value> {
    let v = get_json(&format!("{base}/api/v1/alerts")).expect("alerts");
    sorted_alerts(v["data"]["alerts"].as_array().cloned().unwrap_or_default())
}

fn rules(base: &str) -> Value {
    let mut v = get_json(&format!("{base}/api/v1/rules")).expect("rules");
    strip_timings(&mut v);
    for g in v["data"]["groups"].as_array_mut().into_iter().flatten() {
        for r in g["rules"].as_array_mut().into_iter().flatten() {
            if let Some(a) = r.get_mut("alerts") {
                *a = Value::Array(sorted_alerts(a.as_array().cloned().unwrap_or_default()));
            }
        }
    }
    v
}

/// A range query's result as `{labels → [(t, v)]}`.
fn range(base: &str, q: &str, start: i64, end: i64) -> BTreeMap<String, Vec<(String, String)>> {
    let url = format!(
        "{base}/api/v1/query_range?query={}&start={}&end={}&step={}",
        outpost_tests::encode(q),
        start as f64 / 1000.0,
        end as f64 / 1000.0,
        INTERVAL_MS as f64 / 1000.0
    );
    let v = get_json(&url).unwrap_or_else(|e| panic!("{base}: {q}: {e}"));
    let mut out = BTreeMap::new();
    for s in v["data"]["result"].as_array().into_iter().flatten() {
        let pts = s["values"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p[0].to_string(),
                    p[1].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        out.insert(s["metric"].to_string(), pts);
    }
    out
}

/// What an Alertmanager holds: each alert's labels, annotations, start, end and link.
fn am_alerts(url: &str) -> Vec<Value> {
    let v = get_json(&format!("{url}/api/v2/alerts")).unwrap_or(Value::Null);
    let mut out: Vec<Value> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            serde_json::json!({
                "labels": a["labels"],
                "annotations": a["annotations"],
                "startsAt": a["startsAt"],
                "endsAt": a["endsAt"],
                "generatorURL": a["generatorURL"],
                "state": a["status"]["state"],
            })
        })
        .collect();
    out.sort_by_key(|a| a["labels"].to_string());
    out
}

#[test]
fn rules_match_prometheus_step_by_step() {
    for (prog, arg) in [
        ("prometheus", "--version"),
        ("prometheus-alertmanager", "--version"),
    ] {
        assert!(
            Command::new(prog).arg(arg).output().is_ok(),
            "{prog} is not installed: run scripts/install-deps"
        );
    }
    let dir = TempDir::new("rules-compat");
    let rules_file = dir.path().join("compare.rules.yml");
    std::fs::write(&rules_file, RULES).expect("write rules");
    let rules_path = rules_file.canonicalize().expect("rules path");
    let external_url = "http://outpost.example:9470";

    let (_am_p, am_prom) = start_alertmanager(dir.path(), "am-prometheus");
    let (_am_o, am_outpost) = start_alertmanager(dir.path(), "am-outpost");

    let prom_port = free_tcp_port();
    let prom_cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  external_labels:\n    cluster: test\nrule_files:\n  - {}\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{}']\n",
            rules_path.display(),
            am_prom.trim_start_matches("http://")
        ),
    )
    .expect("write prometheus config");
    let prom_proc = start_prometheus(
        dir.path(),
        &prom_cfg,
        prom_port,
        &[
            "--web.enable-remote-write-receiver",
            &format!("--web.external-url={external_url}"),
        ],
    );
    let prom = format!("http://127.0.0.1:{prom_port}");
    assert!(
        wait_for(Duration::from_secs(30), || get_json(&format!(
            "{prom}/api/v1/rules"
        ))
        .ok())
        .is_some(),
        "prometheus did not start:\n{}",
        prom_proc.logs()
    );

    let certs = Certs::init(&dir.path().join("certs"));
    let tail = format!(
        "[alerting]\nagent_down_alert = false\nrule_files = [\"{}\"]\nalertmanagers = [\"{am_outpost}\"]\nexternal_labels = {{ cluster = \"test\" }}\nexternal_url = \"{external_url}\"\n",
        rules_path.display()
    );
    let agg = Aggregator::start_config(dir.path(), &certs, "", &tail);
    let outpost = agg.url("");
    let pair = Pair {
        prom: &prom,
        outpost: &outpost,
    };
    let both = [pair.prom, pair.outpost];

    // Both evaluate at the same instants.
    let first = wait_for(Duration::from_secs(20), || {
        let p = done_at(pair.prom)?;
        let o = done_at(pair.outpost)?;
        Some((p, o))
    })
    .unwrap_or_else(|| {
        panic!(
            "no evaluation seen:\n{}\n{}",
            prom_proc.logs(),
            agg.proc.logs()
        )
    });
    assert_eq!(
        (first.0 - first.1).rem_euclid(INTERVAL_MS),
        0,
        "the two do not evaluate at the same instants: {first:?}"
    );
    let mut slot = first.0.max(first.1);
    let mut slots = Vec::with_capacity(STEPS.len());

    for (step, &(a, b)) in STEPS.iter().enumerate() {
        // Half an interval before the next slot: write this step's samples.
        slot += INTERVAL_MS;
        while now_ms() > slot - INTERVAL_MS / 2 {
            slot += INTERVAL_MS;
        }
        sleep_until(slot - INTERVAL_MS / 2);
        let ts = now_ms();
        // Both at once, so one write slow to answer cannot push the other past the slot
        // (then one side would evaluate the slot without this step's samples).
        std::thread::scope(|s| {
            for base in both {
                s.spawn(move || write(base, ts, a, b));
            }
        });
        let evaluated = wait_for(Duration::from_secs(10), || {
            both.iter()
                .all(|b| done_at(b).is_some_and(|t| t >= slot))
                .then_some(())
        });
        assert!(
            evaluated.is_some(),
            "step {step}: slot {slot} not evaluated by both ({:?}, {:?})",
            done_at(pair.prom),
            done_at(pair.outpost)
        );
        slots.push(slot);
        let (pa, oa) = (alerts(pair.prom), alerts(pair.outpost));
        let (pr, or) = (rules(pair.prom), rules(pair.outpost));
        // The answers belong to this slot only if neither has evaluated the next one.
        for base in both {
            assert_eq!(
                done_at(base),
                Some(slot),
                "step {step}: {base} moved past slot {slot} while being compared"
            );
        }
        let (oa, pa) = (Value::Array(oa), Value::Array(pa));
        if let Some(d) = first_diff(&oa, &pa, "alerts") {
            panic!(
                "step {step} (a={a}, b={b}): /api/v1/alerts differ at {d}\noutpost:    {oa}\nprometheus: {pa}"
            );
        }
        if step == FIRING_STEP {
            // Everything that fires by now has been sent once: both Alertmanagers hold the
            // same alerts, with the same start, end and link.
            let mut last = (vec![], vec![]);
            let same = wait_for(Duration::from_millis(900), || {
                let p = am_alerts(&am_prom);
                let o = am_alerts(&am_outpost);
                let same = p.len() >= 4 && p == o;
                last = (p, o);
                same.then_some(())
            });
            assert!(
                same.is_some(),
                "step {step}: the Alertmanagers hold different alerts\noutpost's:    {}\nprometheus': {}",
                Value::Array(last.1.clone()),
                Value::Array(last.0.clone())
            );
        }
        if let Some(d) = first_diff(&or, &pr, "rules") {
            panic!(
                "step {step} (a={a}, b={b}): /api/v1/rules differ at {d}\noutpost:    {or}\nprometheus: {pr}"
            );
        }
    }
    let end = slot;

    // Prometheus writes no `ALERTS` in a group's first two evaluations after it starts
    // (it waits to restore `for` state from them); Outpost restores its state from its own
    // store and writes them from the first. So the series are compared from the second
    // step on, and Outpost's first-step alerts are checked on their own.
    let early = range(pair.outpost, "ALERTS", slots[0], slots[0]);
    assert_eq!(
        early.len(),
        2,
        "outpost's ALERTS at the first step: {early:?}"
    );
    let start = slots[1];

    // The series the rules wrote, staleness included, evaluated at each slot.
    for q in [
        "ALERTS",
        "ALERTS_FOR_STATE",
        "room:temp:max",
        "count by (alertstate) (ALERTS)",
    ] {
        let p = range(pair.prom, q, start, end);
        let o = range(pair.outpost, q, start, end);
        assert!(!p.is_empty(), "{q}: prometheus has nothing");
        let differ: Vec<String> = o
            .keys()
            .chain(p.keys())
            .filter(|k| o.get(*k) != p.get(*k))
            .map(|k| {
                format!(
                    "{k}\n  outpost:    {:?}\n  prometheus: {:?}",
                    o.get(k),
                    p.get(k)
                )
            })
            .collect();
        assert!(differ.is_empty(), "{q} differs:\n{}", differ.join("\n"));
    }

    // What each sent to its Alertmanager. Resolved alerts are re-sent for a while, so both
    // Alertmanagers settle on the same set.
    let mut last = (vec![], vec![]);
    let same = wait_for(Duration::from_secs(20), || {
        let p = am_alerts(&am_prom);
        let o = am_alerts(&am_outpost);
        let same = !p.is_empty() && p == o;
        last = (p, o);
        same.then_some(())
    });
    assert!(
        same.is_some(),
        "the Alertmanagers hold different alerts\noutpost's:    {}\nprometheus': {}",
        Value::Array(last.1.clone()),
        Value::Array(last.0.clone())
    );
}

const REPLAY_RULES: &str = r#"groups:
  - name: replay
    interval: 1m
    rules:
      - record: job:req:rate2m
        expr: sum by (job) (rate(req_total[2m]))
      - record: instance:req:increase5m
        expr: increase(req_total[5m])
      - record: room:temp:avg3m
        expr: avg_over_time(temp[3m])
        labels:
          source: replay
"#;

const REPLAY_ALERTS: &str = r#"groups:
  - name: replay-alerts
    interval: 1m
    rules:
      - alert: Busy
        expr: rate(req_total[2m]) > 1
        for: 5m
"#;

/// `{labels} value ts` lines, as `promtool tsdb dump` prints them, keyed by labels and time.
fn parse_dump(text: &str) -> BTreeMap<(String, i64), f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with('{')) {
        let close = line.rfind('}').expect("labels");
        let labels = line[..=close].replace(", ", ",");
        let mut rest = line[close + 1..].split_whitespace();
        let v: f64 = rest.next().expect("value").parse().expect("value");
        let t: i64 = rest.next().expect("time").parse().expect("time");
        out.insert((labels, t), v);
    }
    out
}

/// Every raw sample of `selector` in `(from, to]`, keyed as [`parse_dump`] keys them.
fn raw_samples(base: &str, selector: &str, from: i64, to: i64) -> BTreeMap<(String, i64), f64> {
    let secs = (to - from) / 1000;
    let url = format!(
        "{base}/api/v1/query?query={}&time={}",
        outpost_tests::encode(&format!("{selector}[{secs}s]")),
        to as f64 / 1000.0
    );
    let v = get_json(&url).unwrap_or_else(|e| panic!("{base}: {e}"));
    let mut out = BTreeMap::new();
    for s in v["data"]["result"].as_array().into_iter().flatten() {
        let m = s["metric"].as_object().expect("metric");
        let mut names: Vec<&String> = m.keys().collect();
        names.sort();
        let labels = format!(
            "{{{}}}",
            names
                .iter()
                .map(|k| format!("{k}={}", m[*k]))
                .collect::<Vec<_>>()
                .join(",")
        );
        for p in s["values"].as_array().into_iter().flatten() {
            let t = (p[0].as_f64().expect("time") * 1000.0).round() as i64;
            let v: f64 = p[1].as_str().expect("value").parse().expect("value");
            out.insert((labels.clone(), t), v);
        }
    }
    out
}

/// `outpost-aggregator rules replay --url outpost --from --to --rules rules [--dry-run]`,
/// times in ms (passed as Unix seconds).
fn run_replay(
    outpost: &str,
    from: i64,
    to: Option<i64>,
    rules: &Path,
    dry_run: bool,
) -> std::process::Output {
    let mut cmd = Command::new(outpost_tests::bin("outpost-aggregator"));
    cmd.args(["rules", "replay"])
        .arg(format!("--url={outpost}"))
        .arg(format!("--from={}", from / 1000))
        .arg("--rules")
        .arg(rules);
    if let Some(to) = to {
        cmd.arg(format!("--to={}", to / 1000));
    }
    if dry_run {
        cmd.arg("--dry-run");
    }
    cmd.output().expect("replay")
}

/// `rules replay` writes what `promtool tsdb create-blocks-from rules` makes from the same
/// data and rule file: the same series at the same instants with the same values; and it
/// prints the alerts an alerting rule would have raised over the range.
#[test]
fn rules_replay_matches_promtool_create_blocks_from_rules() {
    /// promtool's block length, ms.
    const BLOCK_MS: i64 = 2 * 3600 * 1000;
    assert!(
        Command::new("promtool").arg("--version").output().is_ok(),
        "promtool is not installed: run scripts/install-deps"
    );
    let dir = TempDir::new("rules-replay");
    let rules_file = dir.path().join("replay.rules.yml");
    std::fs::write(&rules_file, REPLAY_RULES).expect("write rules");
    let rules_path = rules_file.canonicalize().expect("rules path");
    let alerts_file = dir.path().join("replay.alerts.yml");
    std::fs::write(&alerts_file, REPLAY_ALERTS).expect("write rules");

    let prom_port = free_tcp_port();
    let prom_cfg = dir.path().join("prometheus.yml");
    std::fs::write(&prom_cfg, "global: {}\n").expect("write prometheus config");
    let prom_proc = start_prometheus(
        dir.path(),
        &prom_cfg,
        prom_port,
        &["--web.enable-remote-write-receiver"],
    );
    let prom = format!("http://127.0.0.1:{prom_port}");
    assert!(
        wait_for(Duration::from_secs(30), || {
            outpost_tests::get_text(&format!("{prom}/-/ready")).ok()
        })
        .is_some(),
        "prometheus did not start:\n{}",
        prom_proc.logs()
    );
    let certs = Certs::init(&dir.path().join("certs"));
    let agg = Aggregator::start_config(dir.path(), &certs, "", "");
    let outpost = agg.url("");

    // 70 minutes of data every 15 s, ending 5 minutes ago: a busy stretch for instance a
    // from minute 20 to 40, and a counter reset at minute 50.
    let mut t0 = (now_ms() - 75 * 60_000) / 15_000 * 15_000;
    // promtool 2.42 writes no block at all when --start (t0 + 10 min) falls in the last
    // evaluation interval (1 m) before a 2-hour block boundary and the group's first
    // evaluation comes after the boundary (prometheus/prometheus#19714): start earlier then.
    if (t0 + 10 * 60_000).rem_euclid(BLOCK_MS) >= BLOCK_MS - 60_000 {
        t0 -= 2 * 60_000;
    }
    let n = 70 * 4;
    let mut a = Vec::with_capacity(n);
    let mut b = Vec::with_capacity(n);
    let mut temp = Vec::with_capacity(n);
    let (mut ca, mut cb) = (0.0, 0.0);
    for k in 0..n {
        let t = t0 + k as i64 * 15_000;
        let minute = k / 4;
        ca += if (20..40).contains(&minute) {
            30.0
        } else {
            10.0
        };
        if k == 50 * 4 {
            ca = 3.0;
        }
        cb += 5.0;
        a.push((t, ca));
        b.push((t, cb));
        temp.push((t, 20.0 + (k % 7) as f64 * 0.5));
    }
    let body = remote_write::encode(&WriteRequest {
        timeseries: vec![
            TimeSeries::new(
                &[("__name__", "req_total"), ("job", "api"), ("instance", "a")],
                &a,
            ),
            TimeSeries::new(
                &[("__name__", "req_total"), ("job", "api"), ("instance", "b")],
                &b,
            ),
            TimeSeries::new(&[("__name__", "temp"), ("room", "x")], &temp),
        ],
        metadata: vec![],
    });
    for base in [prom.as_str(), outpost.as_str()] {
        let (code, text) = post_remote_write(&format!("{base}/api/v1/write"), &body, None);
        assert!((200..300).contains(&code), "{base}: {code} {text}");
    }

    let from = t0 + 10 * 60_000;
    let to = t0 + 60 * 60_000;
    let blocks = dir.path().join("promtool-blocks");
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "rules"])
        .arg(format!("--start={}", from / 1000))
        .arg(format!("--end={}", to / 1000))
        .arg(format!("--url={prom}"))
        .arg(format!("--output-dir={}", blocks.display()))
        .arg(&rules_path)
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // promtool's dump opens the folder as a database, which needs a write-ahead log.
    std::fs::create_dir_all(blocks.join("wal")).expect("mkdir wal");
    let dump = Command::new("promtool")
        .args(["tsdb", "dump"])
        .arg(&blocks)
        .output()
        .expect("promtool dump");
    let expected = parse_dump(&String::from_utf8_lossy(&dump.stdout));
    assert!(
        expected.len() > 150,
        "promtool wrote {} samples: {}{}",
        expected.len(),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&dump.stderr)
    );

    let replay = run_replay(&outpost, from, Some(to), &rules_path, false);
    let report = String::from_utf8_lossy(&replay.stdout).to_string();
    assert!(
        replay.status.success(),
        "replay failed: {report}{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let got = raw_samples(
        &outpost,
        "{__name__=~\"job:req:rate2m|instance:req:increase5m|room:temp:avg3m\"}",
        from - 60_000,
        to + 60_000,
    );
    let missing: Vec<_> = expected
        .iter()
        .filter(|(k, _)| !got.contains_key(*k))
        .take(5)
        .collect();
    // promtool queries each 2-hour block up to its last whole second (the block's end in ms,
    // minus one, truncated to seconds), so an evaluation in the last second before a block
    // boundary (e.g. at 21:59:59.456) is never written by promtool. Outpost's replay writes
    // it; those samples, and no others, may be extra.
    let skipped_by_promtool = |ts: i64| BLOCK_MS - ts.rem_euclid(BLOCK_MS) < 1000;
    let extra: Vec<_> = got
        .iter()
        .filter(|(k, _)| !expected.contains_key(*k) && !skipped_by_promtool(k.1))
        .take(5)
        .collect();
    let differ: Vec<_> = expected
        .iter()
        .filter_map(|(k, v)| got.get(k).filter(|g| *g != v).map(|g| (k, v, g)))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && differ.is_empty(),
        "replay differs from promtool ({} vs {} samples)\nmissing: {missing:?}\nextra: {extra:?}\nvalues (promtool, outpost): {differ:?}\n{report}",
        expected.len(),
        got.len()
    );
    assert!(report.contains("record job:req:rate2m: "), "{report}");

    // Alerts over the range, printed and not written.
    let dry = run_replay(&outpost, from, Some(to), &alerts_file, true);
    let text = String::from_utf8_lossy(&dry.stdout).to_string();
    assert!(
        dry.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.contains("Busy{instance=\"a\", job=\"api\"}"))
        .unwrap_or_else(|| panic!("no Busy alert for a:\n{text}"));
    assert!(text.contains("alerts: 1\n"), "{text}");
    let times: Vec<i64> = line
        .split_whitespace()
        .filter(|w| w.ends_with('Z'))
        .map(|w| {
            let v =
                get_json(&format!("{outpost}/api/v1/query?query=time()&time={w}")).expect("time");
            (v["data"]["result"][0].as_f64().expect("t") * 1000.0).round() as i64
        })
        .collect();
    assert_eq!(times.len(), 3, "{line}");
    // Busy from minute 20 (seen within a slot or two), firing 5 minutes later, resolved
    // once the 2-minute rate falls after minute 40.
    assert!(
        times[0] > t0 + 20 * 60_000 && times[0] <= t0 + 22 * 60_000,
        "{line}"
    );
    assert_eq!(times[1] - times[0], 5 * 60_000, "{line}");
    assert!(
        times[2] > t0 + 40 * 60_000 && times[2] <= t0 + 43 * 60_000,
        "{line}"
    );
    assert!(
        agg.query("ALERTS").is_empty(),
        "a replay must not write ALERTS"
    );

    // A dry run says which rules read series it does not write; a glob matching nothing is
    // an error.
    let both = dir.path().join("both.yml");
    std::fs::write(
        &both,
        "groups:\n  - name: both\n    interval: 1m\n    rules:\n      - record: job:req:rate2m\n        expr: sum by (job) (rate(req_total[2m]))\n      - alert: JobBusy\n        expr: job:req:rate2m > 100\n",
    )
    .expect("write rules");
    let dry = run_replay(&outpost, from, Some(to), &both, true);
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(
        text.contains("note: dry run: \"JobBusy\" reads job:req:rate2m"),
        "{text}"
    );
    let none = run_replay(
        &outpost,
        from,
        None,
        &dir.path().join("nothing/*.yml"),
        true,
    );
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(
        !none.status.success() && err.contains("no rule file matches"),
        "{err}"
    );
}
