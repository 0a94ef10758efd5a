//! Alert and recording rules on a real aggregator: a recording rule's output is queryable
//! and seen by the next rule of its group; an alert goes pending → firing with `for`, shows
//! in `/api/v1/alerts` and `/api/v1/rules`, and reaches a real Alertmanager
//! (`prometheus-alertmanager`, 0.25) with its labels, external labels and `startsAt`; after
//! `kill -9` and a restart it is still firing with its original `activeAt`. A rule file with
//! problems is refused at reload (and by `check-config`), and the running rules keep running.

use outpost_shared::remote_write::{self, ProtoLabel, ProtoSample, TimeSeries, WriteRequest};
use outpost_tests::{
    Agent, AgentSpec, Aggregator, Certs, TempDir, bin, get_json, metric_value, run,
    start_alertmanager, wait_for,
};
use serde_json::Value;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// Writes one sample of `name{job}` at now; false when the aggregator does not take it.
fn write(url: &str, name: &str, job: &str, value: f64) -> bool {
    let body = remote_write::encode(&WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![
                ProtoLabel {
                    name: "__name__".into(),
                    value: name.into(),
                },
                ProtoLabel {
                    name: "job".into(),
                    value: job.into(),
                },
            ],
            samples: vec![ProtoSample {
                value,
                timestamp: now_ms(),
            }],
        }],
        metadata: vec![],
    });
    agent()
        .post(url)
        .header("Content-Encoding", "snappy")
        .send(&body[..])
        .map(|r| r.status().as_u16() == 204)
        .unwrap_or(false)
}

/// Keeps writing `room_temperature{job="lab"} 35` every 300 ms until dropped.
struct Feeder(Arc<AtomicBool>);

impl Feeder {
    fn start(url: String) -> Feeder {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                write(&url, "room_temperature", "lab", 35.0);
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        Feeder(stop)
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Milliseconds since the epoch of an RFC 3339 UTC time (`2026-12-01T00:00:01.234Z`).
fn parse_time(s: &str) -> i64 {
    let (date, time) = s.split_once('T').expect("a time");
    let d: Vec<i64> = date.split('-').map(|x| x.parse().expect("date")).collect();
    let time = time.trim_end_matches('Z');
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().expect("time")).collect();
    let frac = format!("{:0<3}", &frac[..frac.len().min(3)]);
    let ms: i64 = frac.parse().expect("fraction");
    // Days from civil (Howard Hinnant).
    let (y, m, day) = (d[0] - i64::from(d[1] <= 2), d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) * 1000) + ms
}

const RULES: &str = r#"groups:
  - name: lab
    interval: 1s
    rules:
      - record: job:room_temperature:max
        expr: max by (job) (room_temperature)
      - alert: TooHot
        expr: job:room_temperature:max > 30
        for: 2s
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.job }} is at {{ $value }} degrees"
"#;

fn too_hot(agg: &Aggregator) -> Option<Value> {
    let v = get_json(&agg.url("/api/v1/alerts")).ok()?;
    v["data"]["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["labels"]["alertname"] == "TooHot")
        .cloned()
}

fn lab_group(agg: &Aggregator) -> Option<Value> {
    let v = get_json(&agg.url("/api/v1/rules")).ok()?;
    v["data"]["groups"]
        .as_array()?
        .iter()
        .find(|g| g["name"] == "lab")
        .cloned()
}

#[test]
fn rules_record_alert_notify_and_keep_firing_across_a_crash() {
    let which = Command::new("prometheus-alertmanager")
        .arg("--version")
        .output();
    assert!(
        which.is_ok(),
        "prometheus-alertmanager is not installed: run scripts/install-deps"
    );
    let dir = TempDir::new("rules");
    let certs = Certs::init(&dir.path().join("certs"));
    let (_am, am_url) = start_alertmanager(dir.path(), "alertmanager");
    std::fs::create_dir_all(dir.path().join("rules")).expect("mkdir");
    std::fs::write(dir.path().join("rules/lab.yml"), RULES).expect("write rules");
    let tail = format!(
        "[alerting]\nrule_files = [\"rules/*.yml\"]\nevaluation_interval = \"1s\"\nalertmanagers = [\"{}\"]\nexternal_labels = {{ cluster = \"test\" }}\nexternal_url = \"http://outpost.example:9470\"\n",
        am_url
    );
    let mut agg = Aggregator::start_config(dir.path(), &certs, "", &tail);
    let feeder = Feeder::start(agg.url("/api/v1/write"));

    // The recording rule's output is queryable.
    let rec = wait_for(Duration::from_secs(15), || {
        agg.query("job:room_temperature:max")
            .into_iter()
            .find(|s| s["metric"]["job"] == "lab")
    })
    .unwrap_or_else(|| {
        panic!(
            "no recorded series: input {:?}, group {:?}\n{}\n{}",
            agg.query("room_temperature"),
            lab_group(&agg),
            agg.metrics(),
            agg.proc.logs()
        )
    });
    assert_eq!(rec["value"][1], "35", "{rec}");

    // Pending first, then firing after `for`.
    let pending = wait_for(Duration::from_secs(10), || {
        too_hot(&agg).filter(|a| a["state"] == "pending")
    })
    .unwrap_or_else(|| {
        panic!(
            "the alert never was pending: {:?}\n{}",
            lab_group(&agg),
            agg.proc.logs()
        )
    });
    let active_at = pending["activeAt"].as_str().expect("activeAt").to_string();
    let firing = wait_for(Duration::from_secs(10), || {
        too_hot(&agg).filter(|a| a["state"] == "firing")
    })
    .unwrap_or_else(|| panic!("the alert never fired:\n{}", agg.proc.logs()));
    assert_eq!(firing["activeAt"], active_at.as_str());
    assert_eq!(firing["value"], "3.5e+01");
    assert_eq!(firing["labels"]["severity"], "page");
    assert_eq!(firing["labels"]["job"], "lab");
    assert_eq!(firing["annotations"]["summary"], "lab is at 35 degrees");

    // /api/v1/rules in Prometheus' shape.
    let g = lab_group(&agg).expect("group lab");
    assert!(
        g["file"]
            .as_str()
            .unwrap_or_default()
            .ends_with("rules/lab.yml"),
        "{g}"
    );
    assert_eq!(g["interval"], 1.0);
    assert!(
        g["evaluationTime"].is_f64() && g["lastEvaluation"].is_string(),
        "{g}"
    );
    let rules = g["rules"].as_array().expect("rules");
    assert_eq!(rules[0]["type"], "recording");
    assert_eq!(rules[0]["name"], "job:room_temperature:max");
    assert_eq!(rules[0]["health"], "ok");
    assert_eq!(rules[1]["type"], "alerting");
    assert_eq!(rules[1]["state"], "firing");
    assert_eq!(rules[1]["duration"], 2.0);
    assert_eq!(rules[1]["query"], "job:room_temperature:max > 30");
    assert_eq!(rules[1]["labels"]["severity"], "page");
    assert_eq!(rules[1]["alerts"][0]["state"], "firing");
    for k in ["health", "evaluationTime", "lastEvaluation", "annotations"] {
        assert!(!rules[1][k].is_null(), "{k} missing: {}", rules[1]);
    }
    // ALERTS is written like any series.
    let alerts = agg.query("ALERTS{alertname=\"TooHot\",alertstate=\"firing\"}");
    assert_eq!(alerts.len(), 1, "{alerts:?}");

    // Alertmanager has it, with external labels and startsAt when it fired.
    let in_am = wait_for(Duration::from_secs(15), || {
        let v = get_json(&format!("{}/api/v2/alerts", am_url)).ok()?;
        v.as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == "TooHot")
            .cloned()
    })
    .unwrap_or_else(|| panic!("Alertmanager never got the alert:\n{}", agg.proc.logs()));
    assert_eq!(in_am["labels"]["severity"], "page", "{in_am}");
    assert_eq!(in_am["labels"]["job"], "lab", "{in_am}");
    assert_eq!(in_am["labels"]["cluster"], "test", "{in_am}");
    assert_eq!(in_am["status"]["state"], "active", "{in_am}");
    assert_eq!(
        in_am["annotations"]["summary"], "lab is at 35 degrees",
        "{in_am}"
    );
    assert!(
        in_am["generatorURL"]
            .as_str()
            .unwrap_or_default()
            .starts_with("http://outpost.example:9470/graph?g0.expr="),
        "{in_am}"
    );
    let starts = parse_time(in_am["startsAt"].as_str().expect("startsAt"));
    let active = parse_time(&active_at);
    assert!(
        starts >= active + 2000 && starts <= active + 4000,
        "startsAt {} is not when the alert fired (active since {active_at})",
        in_am["startsAt"]
    );
    let sent = wait_for(Duration::from_secs(5), || {
        metric_value(
            &agg.metrics(),
            &format!(
                "outpost_aggregator_notifications_sent_total{{alertmanager=\"{}\"}}",
                am_url
            ),
        )
        .filter(|v| *v >= 1.0)
    });
    assert!(sent.is_some(), "{}", agg.metrics());
    let text = agg.metrics();
    let per_group = text.lines().find(|l| {
        l.starts_with("outpost_aggregator_rule_evaluations_total{rule_group=\"")
            && l.contains("rules/lab.yml;lab\"}")
    });
    assert!(
        per_group
            .is_some_and(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) > Some(0.0)),
        "{text}"
    );
    assert!(
        text.contains("outpost_aggregator_rule_group_rules{rule_group=")
            && text.contains("outpost_aggregator_rule_group_last_duration_seconds{rule_group="),
        "{text}"
    );

    // kill -9 and restart: still firing, with its original activeAt.
    let killed_at = now_ms();
    agg.restart();
    let after = wait_for(Duration::from_secs(15), || {
        let g = lab_group(&agg)?;
        let last = parse_time(g["lastEvaluation"].as_str()?);
        (last > killed_at).then_some(())?;
        too_hot(&agg)
    })
    .unwrap_or_else(|| panic!("no alert after the restart:\n{}", agg.proc.logs()));
    assert_eq!(after["state"], "firing", "{after}");
    assert_eq!(after["activeAt"], active_at.as_str(), "{after}");
    drop(feeder);
}

#[test]
fn a_bad_rule_file_is_refused_and_the_running_rules_keep_running() {
    let dir = TempDir::new("rules-reload");
    let certs = Certs::init(&dir.path().join("certs"));
    let file = dir.path().join("rules.yml");
    std::fs::write(
        &file,
        "groups:\n  - name: ones\n    interval: 1s\n    rules:\n      - record: rec:one\n        expr: vector(1)\n",
    )
    .expect("write rules");
    let agg = Aggregator::start_config(
        dir.path(),
        &certs,
        "",
        "[alerting]\nrule_files = [\"rules.yml\"]\nevaluation_interval = \"1s\"\n",
    );
    let one = wait_for(Duration::from_secs(15), || {
        agg.query("rec:one").into_iter().next()
    });
    assert!(one.is_some(), "{}", agg.proc.logs());

    // A broken expression: refused, with file, line, group and rule named.
    std::fs::write(
        &file,
        "groups:\n  - name: ones\n    interval: 1s\n    rules:\n      - record: rec:two\n        expr: vector(2) +\n",
    )
    .expect("write rules");
    let r = agent()
        .post(&agg.url("/-/reload"))
        .send("")
        .expect("reload");
    let code = r.status().as_u16();
    let body = r.into_body().read_to_string().unwrap_or_default();
    assert_eq!(code, 500, "{body}");
    assert!(
        body.contains("rules.yml: 6:") && body.contains("group \"ones\", rule 1, \"rec:two\""),
        "{body}"
    );
    let logged = wait_for(Duration::from_secs(5), || {
        let l = agg.proc.logs();
        (l.contains("config reload failed") && l.contains("rules.yml: 6:")).then_some(())
    });
    assert!(logged.is_some(), "{}", agg.proc.logs());
    // The file watcher takes the refusal in too (within its 2 s period).
    let refused = wait_for(Duration::from_secs(6), || {
        (metric_value(
            &agg.metrics(),
            "outpost_aggregator_rules_last_reload_successful",
        ) == Some(0.0))
        .then_some(())
    });
    assert!(refused.is_some(), "{}", agg.metrics());
    let (ok, out) = run(Command::new(bin("outpost-aggregator"))
        .arg("check-config")
        .arg("--config")
        .arg(&agg.config));
    assert!(!ok, "{out}");
    assert!(
        out.contains("alerting.rule_files:") && out.contains("group \"ones\", rule 1, \"rec:two\""),
        "{out}"
    );

    // The old rule keeps being evaluated.
    let before = now_ms();
    let still = wait_for(Duration::from_secs(10), || {
        let v = get_json(&agg.url("/api/v1/rules")).ok()?;
        let g = v["data"]["groups"][0].clone();
        (g["rules"][0]["name"] == "rec:one").then_some(())?;
        (parse_time(g["lastEvaluation"].as_str()?) > before + 1000).then_some(())
    });
    assert!(still.is_some(), "{}", agg.proc.logs());
    assert!(agg.query("rec:two").is_empty());

    // A good file is taken at the next reload.
    std::fs::write(
        &file,
        "groups:\n  - name: ones\n    interval: 1s\n    rules:\n      - record: rec:two\n        expr: vector(2)\n",
    )
    .expect("write rules");
    let r = agent()
        .post(&agg.url("/-/reload"))
        .send("")
        .expect("reload");
    assert_eq!(r.status().as_u16(), 200);
    let two = wait_for(Duration::from_secs(10), || {
        agg.query("rec:two").into_iter().next()
    });
    assert!(two.is_some(), "{}", agg.proc.logs());
    assert_eq!(
        metric_value(
            &agg.metrics(),
            "outpost_aggregator_rules_last_reload_successful"
        ),
        Some(1.0)
    );
}

/// An agent that is cut off (here: killed) sends no data, so its series vanish from
/// queries once their window passes. An alert about that agent (its `agent` label) is held
/// firing, with its `activeAt`, instead of being resolved for lack of data; an alert over
/// the whole fleet, which no longer names the agent, resolves as Prometheus would. When
/// the agent is back, evaluation goes on from its data.
#[test]
fn alerts_of_a_cut_off_agent_are_held_not_resolved() {
    let dir = TempDir::new("rules-cut-off");
    let certs = Certs::init(&dir.path().join("certs"));
    std::fs::write(
        dir.path().join("host.yml"),
        "groups:\n  - name: host\n    interval: 1s\n    rules:\n      - alert: HostSeen\n        expr: max_over_time(node_load1[3s]) >= 0\n      - alert: FleetSeen\n        expr: count(max_over_time(node_load1[3s])) > 0\n",
    )
    .expect("write rules");
    let agg = Aggregator::start_config(
        dir.path(),
        &certs,
        "",
        "[alerting]\nrule_files = [\"host.yml\"]\ncut_off_hold = \"10m\"\ncut_off_after = \"2s\"\n",
    );
    let mut agent = Agent::start(dir.path(), &agg, &AgentSpec::new("cut-1", &certs));
    let firing = |name: &str| too_hot_named(&agg, name).filter(|a| a["state"] == "firing");
    let host = wait_for(Duration::from_secs(20), || firing("HostSeen"))
        .unwrap_or_else(|| panic!("HostSeen never fired:\n{}", agg.proc.logs()));
    assert_eq!(host["labels"]["agent"], "cut-1", "{host}");
    let active_at = host["activeAt"].clone();
    assert!(firing("FleetSeen").is_some(), "{}", agg.proc.logs());
    let held =
        |v: f64| metric_value(&agg.metrics(), "outpost_aggregator_rule_cut_off_agents") == Some(v);
    assert!(held(0.0), "{}", agg.metrics());

    // Cut off: the fleet alert resolves on the missing data, the host alert is held.
    agent.proc.kill();
    let fleet_gone = wait_for(Duration::from_secs(15), || {
        too_hot_named(&agg, "FleetSeen").is_none().then_some(())
    });
    assert!(fleet_gone.is_some(), "FleetSeen did not resolve");
    assert!(
        agg.query("max_over_time(node_load1[3s])").is_empty(),
        "the agent's data is still in the window"
    );
    let still = firing("HostSeen").expect("HostSeen was resolved while its agent was cut off");
    assert_eq!(still["activeAt"], active_at);
    assert!(held(1.0), "{}", agg.metrics());
    let series = agg.query("ALERTS{alertname=\"HostSeen\",alertstate=\"firing\"}");
    assert_eq!(series.len(), 1, "{series:?}");

    // Back: its data flows again and the alert goes on as it was.
    agent.restart();
    let back = wait_for(Duration::from_secs(20), || held(0.0).then_some(()));
    assert!(back.is_some(), "{}", agg.metrics());
    std::thread::sleep(Duration::from_secs(2));
    let after = firing("HostSeen").expect("HostSeen after the agent came back");
    assert_eq!(after["activeAt"], active_at);
    assert!(
        firing("FleetSeen").is_some(),
        "FleetSeen did not fire again"
    );
}

fn too_hot_named(agg: &Aggregator, name: &str) -> Option<Value> {
    let v = get_json(&agg.url("/api/v1/alerts")).ok()?;
    v["data"]["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["labels"]["alertname"] == name)
        .cloned()
}
