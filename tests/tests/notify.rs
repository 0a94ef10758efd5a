//! The aggregator's own notifications (`[alerting] notifications = "alertmanager.yml"`),
//! against real HTTP receivers on loopback ([`outpost_tests::sink::Sink`], which honours
//! `Idempotency-Key` as PagerDuty honours `dedup_key`) and the real `amtool`:
//! - a rule's alert goes pending → firing → resolved and the receiver gets exactly one
//!   firing and one resolved notification, through a receiver that fails before it
//!   recovers, a `kill -9` after firing and a `kill -9` right after the resolve;
//! - a `kill -9` while a notification is in flight: after the restart it is sent again with
//!   the same key, and it is the only request sent twice;
//! - silences made, listed and expired with `amtool`; a silenced alert is not notified
//!   until its silence is expired; `check-config` refuses what `amtool check-config` does;
//! - escalation levels and reminders at their second, stopped by an acknowledgement, and
//!   the resolve told to every level paged; the alert's history says all of it.

use outpost_shared::remote_write::{self, ProtoLabel, ProtoSample, TimeSeries, WriteRequest};
use outpost_tests::sink::{Received, Sink};
use outpost_tests::{Aggregator, Certs, TempDir, bin, get_json, post_remote_write, run, wait_for};
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn write(agg: &Aggregator, value: f64) {
    let body = remote_write::encode(&WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![
                ProtoLabel {
                    name: "__name__".into(),
                    value: "room_temperature".into(),
                },
                ProtoLabel {
                    name: "job".into(),
                    value: "lab".into(),
                },
            ],
            samples: vec![ProtoSample {
                value,
                timestamp: now_ms(),
            }],
        }],
        metadata: vec![],
    });
    let (code, text) = post_remote_write(&agg.url("/api/v1/write"), &body, None);
    assert_eq!(code, 204, "remote write: {text}");
}

fn post(url: &str, body: &Value) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    match agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body.to_string().as_str())
    {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(e) => (0, e.to_string()),
    }
}

fn rfc3339(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = outpost_shared::units::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// Posts one alert `alertname=<name>` (plus `labels`) to the aggregator as to an
/// Alertmanager; `ends_ms` resolves it.
fn post_alert(
    agg: &Aggregator,
    name: &str,
    labels: &[(&str, &str)],
    starts_ms: i64,
    ends_ms: Option<i64>,
) {
    let mut l = serde_json::Map::new();
    l.insert("alertname".into(), name.into());
    for (k, v) in labels {
        l.insert((*k).into(), (*v).into());
    }
    let mut a =
        json!({"labels": l, "annotations": {"summary": "test"}, "startsAt": rfc3339(starts_ms)});
    if let Some(e) = ends_ms {
        a["endsAt"] = rfc3339(e).into();
    }
    let (code, text) = post(&agg.url("/api/v2/alerts"), &json!([a]));
    assert_eq!(code, 200, "post alert: {text}");
}

fn statuses(r: &[Received]) -> Vec<String> {
    r.iter()
        .map(|x| x.json()["status"].as_str().unwrap_or("?").to_string())
        .collect()
}

const RULES: &str = r#"groups:
  - name: lab
    interval: 1s
    rules:
      - alert: TooHot
        expr: room_temperature > 30
        for: 2s
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.job }} is at {{ $value }} degrees"
"#;

fn am_config(sink: &Sink) -> String {
    format!(
        r#"route:
  receiver: team
  group_by: [alertname]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
receivers:
  - name: team
    webhook_configs:
      - url: {}/team
"#,
        sink.url
    )
}

#[test]
fn notifications_arrive_once_through_failures_and_crashes() {
    let dir = TempDir::new("notify-once");
    let certs = Certs::init(&dir.path().join("certs"));
    let sink = Sink::start();
    sink.fail_next(2);
    std::fs::write(dir.path().join("rules.yml"), RULES).expect("rules");
    std::fs::write(dir.path().join("alertmanager.yml"), am_config(&sink)).expect("am");
    let tail = "[alerting]\nrule_files = [\"rules.yml\"]\nevaluation_interval = \"1s\"\nnotifications = \"alertmanager.yml\"\nexternal_url = \"http://outpost.example:9470\"\n";
    let mut agg = Aggregator::start_config(dir.path(), &certs, "", tail);

    // Pending for 2 s: nothing is sent; then firing: one notification, after two 500s.
    write(&agg, 35.0);
    let firing = wait_for(Duration::from_secs(20), || {
        write(&agg, 35.0);
        sink.accepted().first().cloned()
    })
    .unwrap_or_else(|| panic!("no notification: {:?}\n{}", sink.all(), agg.proc.logs()));
    let all = sink.all();
    assert_eq!(
        all.len(),
        3,
        "two refused attempts, then the accepted one: {all:?}"
    );
    assert_eq!(
        all.iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 500, 200]
    );
    let key = firing.header("idempotency-key").expect("key").to_string();
    assert!(
        all.iter()
            .all(|r| r.header("idempotency-key") == Some(&key)),
        "{all:?}"
    );
    assert!(
        all[1].at >= all[0].at + Duration::from_millis(900),
        "backoff: {all:?}"
    );
    let msg = firing.json();
    assert_eq!(firing.path, "/team");
    assert_eq!(msg["status"], "firing", "{msg}");
    assert_eq!(msg["version"], "4");
    assert_eq!(msg["groupKey"], "{}:{alertname=\"TooHot\"}");
    assert_eq!(msg["alerts"][0]["labels"]["severity"], "page");
    assert_eq!(
        msg["alerts"][0]["annotations"]["summary"],
        "lab is at 35 degrees"
    );
    assert_eq!(msg["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(msg["externalURL"], "http://outpost.example:9470");
    assert!(
        msg["alerts"][0]["generatorURL"]
            .as_str()
            .unwrap_or_default()
            .starts_with("http://outpost.example:9470/graph?g0.expr="),
        "{msg}"
    );
    let m = agg.metrics();
    assert!(
        m.contains("outpost_aggregator_receiver_notifications_total{receiver=\"team\",integration=\"webhook\"} 1"),
        "{m}"
    );

    // kill -9 after firing: the restarted aggregator does not notify it again.
    agg.restart();
    let before = sink.all().len();
    for _ in 0..12 {
        write(&agg, 35.0);
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        sink.all().len(),
        before,
        "sent again after a restart: {:?}",
        sink.all()
    );

    // Resolved, then kill -9 at once: the resolve still arrives, once.
    write(&agg, 20.0);
    wait_for(Duration::from_secs(10), || {
        write(&agg, 20.0);
        let v = get_json(&agg.url("/api/v1/alerts")).ok()?;
        v["data"]["alerts"].as_array()?.is_empty().then_some(())
    })
    .expect("the alert resolves");
    agg.restart();
    let resolved = wait_for(Duration::from_secs(90), || {
        write(&agg, 20.0);
        std::thread::sleep(Duration::from_millis(300));
        (sink.accepted().len() >= 2).then_some(())
    });
    assert!(
        resolved.is_some(),
        "the resolve was lost: {:?}\n{}",
        sink.all(),
        agg.proc.logs()
    );
    std::thread::sleep(Duration::from_secs(3));
    let got = sink.accepted();
    assert_eq!(statuses(&got), ["firing", "resolved"], "{got:?}");
    assert_eq!(got[1].json()["alerts"][0]["status"], "resolved");
    let sent_twice = sink.all().len() - got.len();
    assert_eq!(
        sent_twice,
        2,
        "only the two refused attempts were extra: {:?}",
        sink.all()
    );

    // The history tells it.
    let h = get_json(&agg.url("/api/v1/alerts/history")).expect("history");
    let events: Vec<&str> = h["data"][0]["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(events, ["fired", "notified", "resolved", "notified"], "{h}");
}

#[test]
fn a_crash_mid_send_resends_only_that_notification_with_its_key() {
    let dir = TempDir::new("notify-midsend");
    let certs = Certs::init(&dir.path().join("certs"));
    let sink = Sink::start();
    std::fs::write(dir.path().join("alertmanager.yml"), am_config(&sink)).expect("am");
    let tail = "[alerting]\nnotifications = \"alertmanager.yml\"\n";
    let mut agg = Aggregator::start_config(dir.path(), &certs, "", tail);
    sink.hang(true);
    post_alert(&agg, "DiskFull", &[("instance", "a")], now_ms(), None);
    wait_for(Duration::from_secs(10), || {
        (!sink.all().is_empty()).then_some(())
    })
    .unwrap_or_else(|| panic!("nothing sent:\n{}", agg.proc.logs()));
    agg.proc.kill();
    sink.hang(false);
    agg.restart();
    let got = wait_for(Duration::from_secs(15), || sink.accepted().first().cloned())
        .unwrap_or_else(|| panic!("not sent again after the restart:\n{}", agg.proc.logs()));
    let all = sink.all();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(
        all[0].header("idempotency-key"),
        got.header("idempotency-key")
    );
    assert_eq!(all[0].body, got.body, "the same notification");
    assert_eq!(got.json()["alerts"][0]["labels"]["alertname"], "DiskFull");
    // A new alert is a new notification, with a new key.
    post_alert(&agg, "DiskFull", &[("instance", "b")], now_ms(), None);
    let second = wait_for(Duration::from_secs(15), || sink.accepted().get(1).cloned())
        .unwrap_or_else(|| panic!("the second alert was not notified:\n{}", agg.proc.logs()));
    assert_ne!(
        second.header("idempotency-key"),
        got.header("idempotency-key")
    );
    assert_eq!(sink.all().len(), 3);
}

/// Runs `amtool` against `url`: (success, stdout), stderr shown on failure.
fn amtool(url: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("amtool")
        .arg(format!("--alertmanager.url={url}"))
        .args(args)
        .output()
        .expect("amtool (scripts/install-deps installs prometheus-alertmanager)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return (
            false,
            format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
        );
    }
    (true, stdout)
}

#[test]
fn silences_through_amtool_mute_until_expired() {
    let dir = TempDir::new("notify-silence");
    let certs = Certs::init(&dir.path().join("certs"));
    let sink = Sink::start();
    let am = am_config(&sink).replace("group_by: [alertname]", "group_by: [alertname, service]")
        + "inhibit_rules:\n  - source_matchers: [severity=\"critical\"]\n    target_matchers: [severity=\"warning\"]\n    equal: [service]\n";
    std::fs::write(dir.path().join("alertmanager.yml"), &am).expect("am");
    let tail = "[alerting]\nnotifications = \"alertmanager.yml\"\n";
    let agg = Aggregator::start_config(dir.path(), &certs, "", tail);
    let base = agg.url("");

    // Inhibition: the warning of a service whose critical alert fires is not notified; the
    // warning of another service is.
    post_alert(
        &agg,
        "DbDown",
        &[("severity", "critical"), ("service", "db")],
        now_ms(),
        None,
    );
    post_alert(
        &agg,
        "DbSlow",
        &[("severity", "warning"), ("service", "db")],
        now_ms(),
        None,
    );
    post_alert(
        &agg,
        "WebSlow",
        &[("severity", "warning"), ("service", "web")],
        now_ms(),
        None,
    );
    wait_for(Duration::from_secs(10), || {
        (sink.accepted().len() >= 2).then_some(())
    })
    .unwrap_or_else(|| panic!("not notified: {:?}\n{}", sink.accepted(), agg.proc.logs()));
    std::thread::sleep(Duration::from_secs(2));
    let mut names: Vec<String> = sink
        .accepted()
        .iter()
        .map(|r| {
            r.json()["alerts"][0]["labels"]["alertname"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["DbDown", "WebSlow"],
        "the inhibited warning was notified"
    );
    let (ok, out) = amtool(
        &base,
        &[
            "alert",
            "query",
            "--inhibited",
            "-o",
            "json",
            "alertname=DbSlow",
        ],
    );
    assert!(ok, "{out}");
    let slow: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(slow[0]["status"]["state"], "suppressed", "{slow}");
    assert_eq!(
        slow[0]["status"]["inhibitedBy"].as_array().map(Vec::len),
        Some(1),
        "{slow}"
    );
    let before = sink.accepted().len();

    let (ok, id) = amtool(
        &base,
        &[
            "silence",
            "add",
            "alertname=Noisy",
            "--comment=maintenance",
            "--author=ana",
            "--duration=1h",
        ],
    );
    assert!(ok, "amtool silence add: {id}");
    let id = id.trim().to_string();
    let (ok, out) = amtool(&base, &["silence", "query", "-o", "json"]);
    assert!(ok, "{out}");
    let listed: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(listed[0]["id"], id.as_str(), "{listed}");
    assert_eq!(listed[0]["createdBy"], "ana");
    assert_eq!(listed[0]["status"]["state"], "active");
    assert_eq!(
        listed[0]["matchers"][0],
        json!({"name": "alertname", "value": "Noisy", "isRegex": false, "isEqual": true})
    );

    post_alert(&agg, "Noisy", &[], now_ms(), None);
    post_alert(&agg, "Loud", &[], now_ms(), None);
    let loud = wait_for(Duration::from_secs(10), || {
        sink.accepted().get(before).cloned()
    })
    .unwrap_or_else(|| {
        panic!(
            "the unsilenced alert was not notified:\n{}",
            agg.proc.logs()
        )
    });
    assert_eq!(loud.json()["alerts"][0]["labels"]["alertname"], "Loud");
    let (ok, out) = amtool(&base, &["alert", "query", "--silenced", "-o", "json"]);
    assert!(ok, "{out}");
    let alerts: Value = serde_json::from_str(&out).expect("json");
    let noisy = alerts
        .as_array()
        .expect("alerts")
        .iter()
        .find(|a| a["labels"]["alertname"] == "Noisy")
        .unwrap_or_else(|| panic!("{alerts}"));
    assert_eq!(noisy["status"]["state"], "suppressed");
    assert_eq!(noisy["status"]["silencedBy"][0], id.as_str());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        sink.accepted().len(),
        before + 1,
        "the silenced alert was notified: {:?}",
        sink.accepted()
    );

    let (ok, out) = amtool(&base, &["silence", "expire", &id]);
    assert!(ok, "amtool silence expire: {out}");
    let noisy = wait_for(Duration::from_secs(10), || {
        sink.accepted().get(before + 1).cloned()
    })
    .unwrap_or_else(|| {
        panic!(
            "not notified once the silence expired:\n{}",
            agg.proc.logs()
        )
    });
    assert_eq!(noisy.json()["alerts"][0]["labels"]["alertname"], "Noisy");
    let (_, out) = amtool(&base, &["silence", "query", "--expired", "-o", "json"]);
    let listed: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(listed[0]["status"]["state"], "expired", "{listed}");

    // check-config refuses what amtool check-config refuses, naming it.
    let bad = am.replace("receiver: team", "receiver: nobody");
    std::fs::write(dir.path().join("alertmanager.yml"), &bad).expect("am");
    let (am_ok, am_out) = run(Command::new("amtool")
        .arg("check-config")
        .arg(dir.path().join("alertmanager.yml")));
    let (ours_ok, ours) = run(Command::new(bin("outpost-aggregator"))
        .arg("check-config")
        .arg("--config")
        .arg(&agg.config));
    assert!(!am_ok, "{am_out}");
    assert!(!ours_ok, "{ours}");
    assert!(
        ours.contains("undefined receiver \"nobody\" used in route"),
        "{ours}"
    );
    assert!(ours.contains("alerting.notifications"), "{ours}");
}

#[test]
fn escalation_pages_levels_on_time_and_stops_on_acknowledgement() {
    let dir = TempDir::new("notify-escalation");
    let certs = Certs::init(&dir.path().join("certs"));
    let sink = Sink::start();
    let am = format!(
        "route:\n  receiver: team\n  group_wait: 1s\nreceivers:\n  - name: team\n    webhook_configs:\n      - url: {u}/team\n  - name: oncall\n    webhook_configs:\n      - url: {u}/oncall\n  - name: lead\n    webhook_configs:\n      - url: {u}/lead\n  - name: boss\n    webhook_configs:\n      - url: {u}/boss\n",
        u = sink.url
    );
    std::fs::write(dir.path().join("alertmanager.yml"), am).expect("am");
    let tail = "[alerting]\nnotifications = \"alertmanager.yml\"\n[[alerting.escalation]]\nmatchers = ['severity=\"critical\"']\nreminder = \"3s\"\nlevels = [{ after = \"0s\", receiver = \"oncall\" }, { after = \"4s\", receiver = \"lead\" }, { after = \"8s\", receiver = \"boss\" }]\n";
    let agg = Aggregator::start_config(dir.path(), &certs, "", tail);
    let start = now_ms();
    post_alert(&agg, "DbDown", &[("severity", "critical")], start, None);
    post_alert(&agg, "DbSlow", &[("severity", "warning")], start, None);
    let at = |path: &str| -> Vec<Duration> {
        sink.accepted()
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.at)
            .collect()
    };
    wait_for(Duration::from_secs(15), || {
        (at("/lead").len() >= 2).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "no second lead notification: {:?}\n{}",
            sink.accepted(),
            agg.proc.logs()
        )
    });
    let fp = get_json(&agg.url("/api/v2/alerts?filter=alertname%3D%22DbDown%22")).expect("alerts")
        [0]["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_string();
    let (code, text) = post(
        &agg.url("/api/v1/alerts/acknowledge"),
        &json!({"fingerprint": fp, "by": "ana", "note": "restarting the primary"}),
    );
    assert_eq!(code, 200, "{text}");
    let (oncall, lead) = (at("/oncall"), at("/lead"));
    // Levels and reminders at their second: oncall at 0 and 3 s, lead at 4 and 7 s.
    let near =
        |d: Duration, secs: f64| (d.as_secs_f64() - oncall[0].as_secs_f64() - secs).abs() < 0.6;
    assert_eq!(oncall.len(), 2, "{oncall:?}");
    assert!(near(oncall[1], 3.0), "oncall reminder at {oncall:?}");
    assert!(
        near(lead[0], 4.0) && near(lead[1], 7.0),
        "lead at {lead:?}, oncall at {oncall:?}"
    );
    // Acknowledged: nothing more until the resolve, which every level paged hears.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        at("/boss").is_empty(),
        "boss paged after the acknowledgement"
    );
    assert_eq!(
        (at("/oncall").len(), at("/lead").len()),
        (2, 2),
        "{:?}",
        sink.accepted()
    );
    post_alert(
        &agg,
        "DbDown",
        &[("severity", "critical")],
        start,
        Some(now_ms()),
    );
    wait_for(Duration::from_secs(10), || {
        (at("/lead").len() == 3 && at("/oncall").len() == 3).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the resolve did not reach both levels: {:?}",
            sink.accepted()
        )
    });
    let last_lead = sink
        .accepted()
        .into_iter()
        .filter(|r| r.path == "/lead")
        .next_back()
        .expect("lead");
    assert_eq!(last_lead.json()["status"], "resolved");
    assert_eq!(last_lead.json()["groupLabels"]["escalation_level"], "2");
    // The warning never escalated; the route's receiver got both alerts as usual.
    assert!(
        sink.accepted()
            .iter()
            .all(|r| r.path == "/team" || r.json()["alerts"][0]["labels"]["alertname"] == "DbDown")
    );
    assert!(!at("/team").is_empty());

    let h =
        get_json(&agg.url(&format!("/api/v1/alerts/history?fingerprint={fp}"))).expect("history");
    let entry = &h["data"][0];
    assert_eq!(entry["escalation"]["acknowledged"]["by"], "ana", "{h}");
    assert_eq!(entry["escalation"]["levelsPaged"], 2, "{h}");
    let ack = entry["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == "acknowledged")
        .unwrap_or_else(|| panic!("{h}"));
    assert_eq!(ack["note"], "restarting the primary");
    let notified: Vec<&str> = entry["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "notified")
        .filter_map(|e| e["receiver"].as_str())
        .collect();
    for r in ["team", "oncall", "lead"] {
        assert!(notified.contains(&r), "{r} missing from {notified:?}");
    }
    assert!(!notified.contains(&"boss"));
}

#[allow(dead_code)]
#[path = "../../alerting/tests/common/alertmanager.rs"]
mod am_common;

/// Slack, PagerDuty and email receivers get Alertmanager's payloads (default templates):
/// firing to all three, and the resolve to PagerDuty only (Slack and email default to
/// `send_resolved: false`) with the same `dedup_key`.
#[test]
fn slack_pagerduty_and_email_receivers() {
    let dir = TempDir::new("notify-integrations");
    let certs = Certs::init(&dir.path().join("certs"));
    let sink = Sink::start();
    let smtp = am_common::SmtpSink::start("notify-integrations");
    let am = format!(
        "route:\n  receiver: all\n  group_wait: 0s\n  group_interval: 1s\nreceivers:\n  - name: all\n    slack_configs:\n      - api_url: {u}/slack\n        channel: '#ops'\n    pagerduty_configs:\n      - url: {u}/pagerduty\n        routing_key: key-1\n    email_configs:\n      - to: ops@example.org\n        from: outpost@example.org\n        smarthost: 127.0.0.1:{p}\n        require_tls: false\n",
        u = sink.url,
        p = smtp.port
    );
    std::fs::write(dir.path().join("alertmanager.yml"), am).expect("am");
    let tail = "[alerting]\nnotifications = \"alertmanager.yml\"\n";
    let agg = Aggregator::start_config(dir.path(), &certs, "", tail);
    let start = now_ms();
    post_alert(&agg, "Outage", &[("severity", "critical")], start, None);
    let by_path = |p: &str| -> Vec<Received> {
        sink.accepted()
            .into_iter()
            .filter(|r| r.path == p)
            .collect()
    };
    wait_for(Duration::from_secs(15), || {
        (!by_path("/slack").is_empty()
            && !by_path("/pagerduty").is_empty()
            && !smtp.messages().is_empty())
        .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "not every receiver got it: {:?} {:?}\n{}",
            sink.all(),
            smtp.messages(),
            agg.proc.logs()
        )
    });
    let slack = by_path("/slack")[0].json();
    assert_eq!(slack["channel"], "#ops", "{slack}");
    assert_eq!(
        slack["attachments"][0]["title"], "[FIRING:1]  (Outage critical)",
        "{slack}"
    );
    let pd = by_path("/pagerduty")[0].clone();
    let event = pd.json();
    assert_eq!(event["event_action"], "trigger", "{event}");
    assert_eq!(event["routing_key"], "key-1", "{event}");
    let dedup = event["dedup_key"].as_str().expect("dedup_key").to_string();
    assert_eq!(
        dedup.len(),
        64,
        "Alertmanager's dedup key is a SHA-256 of the group key: {dedup}"
    );
    assert!(pd.header("idempotency-key").is_some());
    let mail = &smtp.messages()[0];
    assert_eq!(mail["rcpt_tos"][0], "ops@example.org", "{mail}");
    let subject = mail["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .find(|h| h[0] == "Subject")
        .map(|h| h[1].as_str().unwrap_or("").to_string())
        .unwrap_or_default();
    assert!(subject.starts_with("[FIRING:1]"), "{subject}");

    post_alert(
        &agg,
        "Outage",
        &[("severity", "critical")],
        start,
        Some(now_ms()),
    );
    wait_for(Duration::from_secs(15), || {
        (by_path("/pagerduty").len() == 2).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "no resolve to PagerDuty: {:?}\n{}",
            sink.all(),
            agg.proc.logs()
        )
    });
    let resolve = by_path("/pagerduty")[1].json();
    assert_eq!(resolve["event_action"], "resolve", "{resolve}");
    assert_eq!(resolve["dedup_key"], dedup.as_str());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        by_path("/slack").len(),
        1,
        "Slack does not want resolved alerts by default"
    );
    assert_eq!(smtp.messages().len(), 1, "nor does email");
}
