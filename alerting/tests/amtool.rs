//! Alertmanager's routing compared with the real `amtool config routes test` (Debian's
//! prometheus-alertmanager 0.25) on one configuration with nested routes, `continue`, every
//! matcher spelling and missing labels: for many label sets, the receivers chosen must be
//! the same, in the same order. And inhibition compared with a running Alertmanager: the
//! same alerts posted to it, the ones it reports inhibited are the ones Outpost mutes.
//! Configuration files validated as `amtool check-config` validates them, and the webhook
//! message a running Alertmanager posts compared with Outpost's for the same group. Silences
//! made through its API mute the alerts Outpost's silences mute. And the dispatcher over
//! time: the notifications a running Alertmanager sends a webhook for a sequence of alert
//! updates are the ones Outpost's dispatcher decides in simulated time.

mod common;

use common::alertmanager::{Alertmanager, curl, webhook_sink};
use outpost_alerting::route::{Route, RouteConfig};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::process::Command;

const CONFIG: &str = r#"route:
  receiver: default
  group_by: [alertname]
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
      continue: true
    - match: {team: db}
      receiver: db
      routes:
        - match_re: {service: "mysql|postgres"}
          receiver: db-sql
          continue: true
        - matchers: [env=prod]
          receiver: db-prod
    - matchers: ["team =~ front.*", 'env!="dev"']
      receiver: frontend
    - matchers: ['{owner="ops", region=~"eu-.*"}']
      receiver: ops-eu
      routes:
        - matchers: ['service!~"redis|"']
          receiver: ops-eu-services
    - matchers: ['region=~""', 'severity=~"warning|critical"']
      receiver: no-region
receivers:
  - name: default
  - name: pager
  - name: db
  - name: db-sql
  - name: db-prod
  - name: frontend
  - name: ops-eu
  - name: ops-eu-services
  - name: no-region
"#;

#[derive(Deserialize)]
struct Top {
    route: RouteConfig,
}

#[test]
fn routes_match_amtool() {
    if Command::new("amtool").arg("--version").output().is_err() {
        panic!("amtool is not installed: run scripts/install-deps (prometheus-alertmanager)");
    }
    let dir = std::env::temp_dir().join(format!("outpost-amtool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("am.yml");
    std::fs::write(&file, CONFIG).expect("write");
    let top: Top = serde_saphyr::from_str(CONFIG).expect("config");
    let root = Route::new_root(&top.route).expect("valid route");

    let values: [(&str, &[&str]); 6] = [
        ("severity", &["critical", "warning", ""]),
        ("team", &["db", "frontend", "ops", ""]),
        ("service", &["mysql", "redis", "api", ""]),
        ("env", &["dev", "prod", ""]),
        ("owner", &["ops", ""]),
        ("region", &["eu-west", "us-east", ""]),
    ];
    // Every 7th combination (7 shares no factor with the value counts).
    let (checked, differ) =
        common::alertmanager::amtool_route_differences(&file, &root, &values, 7);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(checked > 40, "{checked}");
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

const INHIBIT_CONFIG: &str = r#"route:
  receiver: blackhole
receivers:
  - name: blackhole
inhibit_rules:
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity=~"warning|info"']
    equal: [cluster, service]
  - source_match: {alertname: NodeDown}
    target_match_re: {alertname: ".+"}
    equal: [instance]
  - source_matchers: ['team="x"']
    target_matchers: ['team="x"']
    equal: [zone]
"#;

#[derive(Deserialize)]
struct InhibitTop {
    inhibit_rules: Vec<outpost_alerting::inhibit::InhibitRuleConfig>,
}

/// The same alerts posted to a real Alertmanager: the ones it reports inhibited are the ones
/// Outpost's rules mute.
#[test]
fn inhibition_matches_alertmanager() {
    let am = Alertmanager::start("inhibit", INHIBIT_CONFIG, &[]);
    let url = am.url.clone();

    let alerts: Vec<Vec<(&str, &str)>> = vec![
        vec![
            ("alertname", "Disk"),
            ("severity", "critical"),
            ("cluster", "a"),
            ("service", "db"),
        ],
        vec![
            ("alertname", "Disk"),
            ("severity", "warning"),
            ("cluster", "a"),
            ("service", "db"),
        ],
        vec![
            ("alertname", "Disk"),
            ("severity", "info"),
            ("cluster", "a"),
            ("service", "db"),
        ],
        vec![
            ("alertname", "Disk"),
            ("severity", "warning"),
            ("cluster", "b"),
            ("service", "db"),
        ],
        vec![
            ("alertname", "Cpu"),
            ("severity", "warning"),
            ("cluster", "a"),
        ],
        vec![
            ("alertname", "Mem"),
            ("severity", "critical"),
            ("cluster", "a"),
        ],
        vec![("alertname", "NodeDown"), ("instance", "h1")],
        vec![
            ("alertname", "Load"),
            ("instance", "h1"),
            ("severity", "page"),
        ],
        vec![("alertname", "Load"), ("instance", "h2")],
        vec![("alertname", "T1"), ("team", "x"), ("zone", "z1")],
        vec![("alertname", "T2"), ("team", "x"), ("zone", "z1")],
        vec![("alertname", "T3"), ("team", "y"), ("zone", "z1")],
    ];
    let maps: Vec<BTreeMap<String, String>> = alerts
        .iter()
        .map(|a| {
            a.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect();
    let body = serde_json::Value::Array(
        maps.iter()
            .map(|l| serde_json::json!({"labels": l, "endsAt": "2999-01-01T00:00:00Z"}))
            .collect(),
    )
    .to_string();
    curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data",
        &body,
        &format!("{url}/api/v2/alerts"),
    ]);
    // Alertmanager takes alerts in asynchronously: read until two reads agree.
    let read = || -> BTreeMap<String, bool> {
        let v: serde_json::Value =
            serde_json::from_str(&curl(&[&format!("{url}/api/v2/alerts")])).unwrap_or_default();
        v.as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let inhibited = a["status"]["inhibitedBy"]
                    .as_array()
                    .is_some_and(|x| !x.is_empty());
                (a["labels"].to_string(), inhibited)
            })
            .collect()
    };
    let mut theirs = BTreeMap::new();
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let a = read();
        if a.len() == maps.len() && a == theirs {
            break;
        }
        theirs = a;
    }
    drop(am);
    assert_eq!(theirs.len(), maps.len(), "{theirs:?}");

    let top: InhibitTop = serde_saphyr::from_str(INHIBIT_CONFIG).expect("config");
    let rules: Vec<_> = top
        .inhibit_rules
        .iter()
        .map(|c| outpost_alerting::inhibit::InhibitRule::new(c).expect("rule"))
        .collect();
    let ours: BTreeMap<String, bool> = maps
        .iter()
        .map(|l| {
            (
                serde_json::to_value(l).expect("json").to_string(),
                outpost_alerting::inhibit::inhibited(&rules, &maps, l),
            )
        })
        .collect();
    assert!(ours.values().filter(|v| **v).count() >= 3, "{ours:?}");
    assert_eq!(ours, theirs);
}

const CONFIG_OK: &str = r#"global:
  resolve_timeout: 5m
  smtp_smarthost: 'localhost:25'
  smtp_from: 'alertmanager@example.org'
  slack_api_url: 'https://hooks.slack.com/services/x'
templates: ['/etc/alertmanager/template/*.tmpl']
route:
  receiver: team-X-mails
  group_by: ['alertname', 'cluster', 'service']
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 3h
  routes:
    - matchers: [service=~"foo1|foo2|baz"]
      receiver: team-X-mails
      mute_time_intervals: [offhours]
    - match: {severity: page}
      receiver: pd
      continue: true
    - matchers: ['team="hooks"']
      receiver: hook
time_intervals:
  - name: offhours
    time_intervals:
      - weekdays: ['saturday', 'sunday']
inhibit_rules:
  - source_matchers: [severity="critical"]
    target_matchers: [severity="warning"]
    equal: [alertname]
  - source_match: {severity: critical}
    target_match: {severity: info}
receivers:
  - name: team-X-mails
    email_configs:
      - to: 'team-X+alerts@example.org'
        headers:
          Subject: 'alert'
  - name: slack
    slack_configs:
      - channel: '#alerts'
        send_resolved: true
        title: '{{ .CommonLabels.alertname }}'
  - name: pd
    pagerduty_configs:
      - routing_key: abc
        severity: critical
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:5001/
        max_alerts: 10
        http_config:
          bearer_token: x
  - name: og
    opsgenie_configs:
      - api_key: x
"#;

/// Each variant replaces one text of [`CONFIG_OK`] to break it in one way.
const BROKEN: &[(&str, &str, &str)] = &[
    ("undefined receiver", "receiver: pd\n", "receiver: nobody\n"),
    (
        "webhook without url",
        "      - url: http://127.0.0.1:5001/\n",
        "      - send_resolved: true\n",
    ),
    ("duplicate receiver", "  - name: og\n", "  - name: pd\n"),
    (
        "pagerduty without key",
        "      - routing_key: abc\n",
        "      - client: x\n",
    ),
    (
        "email without to",
        "      - to: 'team-X+alerts@example.org'\n",
        "      - require_tls: false\n",
    ),
    ("no smarthost", "  smtp_smarthost: 'localhost:25'\n", ""),
    (
        "no slack url",
        "  slack_api_url: 'https://hooks.slack.com/services/x'\n",
        "",
    ),
    (
        "undefined time interval",
        "mute_time_intervals: [offhours]",
        "mute_time_intervals: [weekends]",
    ),
    (
        "unknown route key",
        "  group_wait: 30s\n",
        "  group_wait: 30s\n  group_wiat: 1m\n",
    ),
    (
        "bad matcher",
        "matchers: ['team=\"hooks\"']",
        "matchers: ['team=~\"(\"']",
    ),
    (
        "bad duration",
        "repeat_interval: 3h",
        "repeat_interval: often",
    ),
    (
        "root matchers",
        "  group_wait: 30s\n",
        "  group_wait: 30s\n  matchers: [a=b]\n",
    ),
    (
        "slack field without value",
        "        title: '{{ .CommonLabels.alertname }}'\n",
        "        title: '{{ .CommonLabels.alertname }}'\n        fields:\n          - title: x\n",
    ),
    (
        "slack action without name or url",
        "        title: '{{ .CommonLabels.alertname }}'\n",
        "        title: '{{ .CommonLabels.alertname }}'\n        actions:\n          - type: button\n            text: t\n",
    ),
    (
        "slack url twice",
        "        title: '{{ .CommonLabels.alertname }}'\n",
        "        title: '{{ .CommonLabels.alertname }}'\n        api_url: http://x/\n        api_url_file: /f\n",
    ),
    (
        "unknown slack key",
        "        title: '{{ .CommonLabels.alertname }}'\n",
        "        title: '{{ .CommonLabels.alertname }}'\n        colour: red\n",
    ),
    (
        "pagerduty key twice",
        "      - routing_key: abc\n",
        "      - routing_key: abc\n        routing_key_file: /f\n",
    ),
    (
        "unknown pagerduty key",
        "        severity: critical\n",
        "        severity: critical\n        priority: 1\n",
    ),
    (
        "duplicate email header",
        "          Subject: 'alert'\n",
        "          Subject: 'alert'\n          subject: 'again'\n",
    ),
    (
        "time range backwards",
        "      - weekdays: ['saturday', 'sunday']\n",
        "      - times: [{start_time: '18:00', end_time: '08:00'}]\n",
    ),
    (
        "unknown weekday",
        "      - weekdays: ['saturday', 'sunday']\n",
        "      - weekdays: ['caturday']\n",
    ),
    (
        "negative then positive day",
        "      - weekdays: ['saturday', 'sunday']\n",
        "      - days_of_month: ['-3:5']\n",
    ),
    (
        "unknown location",
        "      - weekdays: ['saturday', 'sunday']\n",
        "      - location: 'Mars/Olympus'\n",
    ),
];

/// `amtool check-config` and Outpost agree on which configurations are valid; for a broken
/// one, Outpost's problems include amtool's (the same words where both say it in words;
/// for YAML-level errors, the offending key).
#[test]
fn configurations_are_validated_as_amtool_does() {
    let dir = std::env::temp_dir().join(format!("outpost-amtool-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let check = |text: &str| -> (bool, String) {
        let f = dir.join("am.yml");
        std::fs::write(&f, text).expect("write");
        let out = Command::new("amtool")
            .args(["check-config"])
            .arg(&f)
            .output()
            .expect("amtool");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (ok, text) = check(CONFIG_OK);
    assert!(ok, "amtool refuses the valid config: {text}");
    let cfg = outpost_alerting::amconfig::parse_alertmanager_config(CONFIG_OK)
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(
        text.contains(&format!("{} receivers", cfg.receivers.len())),
        "{text}"
    );
    assert!(
        text.contains(&format!("{} inhibit rules", cfg.inhibit_rules.len())),
        "{text}"
    );
    assert_eq!(cfg.receivers["og"].unsupported(), vec!["opsgenie_configs"]);

    let mut differ = Vec::new();
    for (what, from, to) in BROKEN {
        assert!(
            CONFIG_OK.contains(from),
            "{what}: {from:?} not in the config"
        );
        let broken = CONFIG_OK.replacen(from, to, 1);
        let (ok, text) = check(&broken);
        let ours = outpost_alerting::amconfig::parse_alertmanager_config(&broken);
        let theirs = text
            .split("FAILED: ")
            .nth(1)
            .unwrap_or("")
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        match (ok, ours) {
            (true, Ok(_)) => {}
            (false, Err(problems)) => {
                let all = problems.join("\n");
                let same = all.contains(&theirs)
                    || (theirs.starts_with("yaml:")
                        && text.split("field ").nth(1).is_some_and(|rest| {
                            all.contains(rest.split_whitespace().next().unwrap_or("?"))
                        }))
                    || (theirs.contains("error parsing regexp") && all.contains("matchers"))
                    || (theirs.contains("not a valid duration") && all.contains("repeat_interval"));
                if !same {
                    differ.push(format!("{what}: amtool {theirs:?}, outpost {problems:?}"));
                }
            }
            (ok, ours) => differ.push(format!(
                "{what}: amtool {} ({theirs}), outpost {ours:?}",
                if ok { "accepts" } else { "refuses" }
            )),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

/// A running Alertmanager groups three alerts under a child route and posts them to a
/// webhook served here; Outpost's message for the same alerts, route and group is the same
/// JSON, fingerprints, group key and order included. The three are posted in one request,
/// starting now, and `group_wait` is 1 s: Alertmanager takes them in one at a time, and on a
/// loaded machine it once posted the group before the third was in.
#[test]
fn webhook_message_matches_alertmanager() {
    use std::io::{Read, Write};
    let sink = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let sink_port = sink.local_addr().expect("addr").port();
    let config = format!(
        "route:\n  receiver: default\n  routes:\n    - matchers: ['team=\"db\"']\n      receiver: db.hook\n      group_by: [alertname, team]\n      group_wait: 1s\nreceivers:\n  - name: default\n  - name: db.hook\n    webhook_configs:\n      - url: http://127.0.0.1:{sink_port}/hook\n"
    );
    let am = Alertmanager::start(
        "webhook",
        &config,
        &["--web.external-url=http://am.example:9093"],
    );
    let url = am.url.clone();
    let mk = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let alerts = [
        (
            mk(&[
                ("alertname", "Down"),
                ("team", "db"),
                ("instance", "h2"),
                ("severity", "page"),
            ]),
            mk(&[("summary", "h2 is down"), ("runbook", "r")]),
        ),
        (
            mk(&[
                ("alertname", "Down"),
                ("team", "db"),
                ("instance", "h1"),
                ("severity", "page"),
                ("job", "node"),
            ]),
            mk(&[("summary", "h1 is down"), ("runbook", "r")]),
        ),
        (
            mk(&[("alertname", "Down"), ("team", "db"), ("zone", "z")]),
            mk(&[("runbook", "r")]),
        ),
    ];
    // Now, to the second, with all nine digits of a fraction: Alertmanager sends an alert
    // that started more than `group_wait` ago at once, before the rest of the request is in.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let t = chrono::DateTime::from_timestamp(now as i64, 0)
        .expect("time")
        .naive_utc();
    let starts = format!("{}T{}.123456789Z", t.date(), t.time());
    let starts = starts.as_str();
    let ends = "2999-01-01T00:00:00Z";
    let body = serde_json::Value::Array(
        alerts
            .iter()
            .map(|(l, a)| {
                serde_json::json!({"labels": l, "annotations": a, "startsAt": starts,
                    "endsAt": ends, "generatorURL": "http://prom:9090/graph"})
            })
            .collect(),
    )
    .to_string();
    curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data",
        &body,
        &format!("{url}/api/v2/alerts"),
    ]);
    sink.set_nonblocking(false).expect("blocking");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = sink.accept() {
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                let n = s.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(i) = text.find("\r\n\r\n") {
                    let len: usize = text[..i]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() >= i + 4 + len {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                        let _ = tx.send(text[i + 4..].to_string());
                        break;
                    }
                }
            }
        }
    });
    let got = rx.recv_timeout(std::time::Duration::from_secs(20));
    drop(am);
    let theirs: serde_json::Value =
        serde_json::from_str(&got.expect("Alertmanager posted nothing to the webhook"))
            .expect("json");

    let top: Top = serde_saphyr::from_str(&config).expect("config");
    let root = Route::new_root(&top.route).expect("route");
    let route = root.matches(&alerts[0].0)[0];
    assert_eq!(route.receiver, "db.hook");
    let group_labels: BTreeMap<String, String> = route
        .group_by
        .iter()
        .filter_map(|k| alerts[0].0.get(k).map(|v| (k.clone(), v.clone())))
        .collect();
    let notified: Vec<outpost_alerting::webhook::NotifiedAlert> = alerts
        .iter()
        .map(|(l, a)| outpost_alerting::webhook::NotifiedAlert {
            labels: l.clone(),
            annotations: a.clone(),
            starts_at: starts.into(),
            ends_at: ends.into(),
            generator_url: "http://prom:9090/graph".into(),
            resolved: false,
        })
        .collect();
    let ours: serde_json::Value =
        serde_json::from_str(&outpost_alerting::webhook::webhook_message(
            &route.receiver,
            &route.key,
            &group_labels,
            &notified,
            "http://am.example:9093",
            0,
        ))
        .expect("json");
    assert_eq!(
        ours, theirs,
        "\noutpost:      {ours}\nalertmanager: {theirs}"
    );
}

/// Silences made through a running Alertmanager's v2 API, and the same alerts posted: the
/// alerts it reports silenced (and by which silences) are the ones Outpost's silences
/// mute; the silences it refuses, Outpost refuses.
#[test]
fn silences_match_alertmanager() {
    use outpost_alerting::silence::{Silence, SilenceMatcher, silenced_by};
    let am = Alertmanager::start(
        "silence",
        "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
        &[],
    );
    let url = am.url.clone();
    let m = |name: &str, value: &str, is_regex: bool, is_equal: bool| SilenceMatcher {
        name: name.into(),
        value: value.into(),
        is_regex,
        is_equal,
    };
    // (matchers, starts in the future)
    let specs: Vec<(Vec<SilenceMatcher>, bool)> = vec![
        (vec![m("alertname", "Disk", false, true)], false),
        (
            vec![
                m("team", "db|web", true, true),
                m("env", "dev", false, false),
            ],
            false,
        ),
        (
            vec![
                m("severity", "page", true, false),
                m("cluster", "b", false, true),
            ],
            false,
        ),
        (
            vec![
                m("instance", "h[0-9]+", true, true),
                m("zone", "", false, true),
            ],
            false,
        ),
        (vec![m("alertname", "Cpu", false, true)], true),
        (vec![], false),
        (vec![m("team", ".*", true, true)], false),
    ];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let iso = |ms: i64| {
        // Alertmanager takes RFC 3339; seconds since the epoch are enough here.
        let out = Command::new("date")
            .args([
                "-u",
                "-d",
                &format!("@{}", ms / 1000),
                "+%Y-%m-%dT%H:%M:%SZ",
            ])
            .output()
            .expect("date");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let mut ours = Vec::new();
    let mut refused = Vec::new();
    for (i, (matchers, future)) in specs.iter().enumerate() {
        let starts = if *future {
            now + 3_600_000
        } else {
            now - 60_000
        };
        let ends = now + 7_200_000;
        let body = serde_json::json!({"matchers": matchers, "startsAt": iso(starts),
            "endsAt": iso(ends), "createdBy": "test", "comment": format!("silence {i}")})
        .to_string();
        let answer = curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            &body,
            &format!("{url}/api/v2/silences"),
        ]);
        let id = serde_json::from_str::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| v["silenceID"].as_str().map(String::from));
        let mine = Silence::new(
            id.as_deref().unwrap_or(""),
            matchers,
            starts / 1000 * 1000,
            ends / 1000 * 1000,
            "test",
            "",
        );
        match (id, mine) {
            (Some(_), Ok(s)) => ours.push(s),
            (None, Err(_)) => refused.push(i),
            (theirs, mine) => {
                panic!("silence {i}: alertmanager {theirs:?} ({answer}), outpost {mine:?}")
            }
        }
    }
    assert_eq!(refused, vec![5, 6]);

    let alerts: Vec<BTreeMap<String, String>> = [
        vec![("alertname", "Disk"), ("team", "ops")],
        vec![("alertname", "Mem"), ("team", "db"), ("env", "prod")],
        vec![("alertname", "Mem"), ("team", "db"), ("env", "dev")],
        vec![("alertname", "Mem"), ("team", "web")],
        vec![("alertname", "Net"), ("severity", "warn"), ("cluster", "b")],
        vec![("alertname", "Net"), ("severity", "page"), ("cluster", "b")],
        vec![("alertname", "Load"), ("instance", "h12")],
        vec![("alertname", "Load"), ("instance", "h12"), ("zone", "z")],
        vec![("alertname", "Cpu"), ("team", "ops")],
    ]
    .iter()
    .map(|a| {
        a.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
    .collect();
    let body = serde_json::Value::Array(
        alerts
            .iter()
            .map(|l| serde_json::json!({"labels": l, "endsAt": "2999-01-01T00:00:00Z"}))
            .collect(),
    )
    .to_string();
    curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data",
        &body,
        &format!("{url}/api/v2/alerts"),
    ]);
    let read = || -> BTreeMap<String, Vec<String>> {
        let v: serde_json::Value =
            serde_json::from_str(&curl(&[&format!("{url}/api/v2/alerts")])).unwrap_or_default();
        v.as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let mut by: Vec<String> = a["status"]["silencedBy"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect();
                by.sort();
                (a["labels"].to_string(), by)
            })
            .collect()
    };
    let mut theirs = BTreeMap::new();
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let a = read();
        if a.len() == alerts.len() && a == theirs {
            break;
        }
        theirs = a;
    }
    drop(am);
    let mine: BTreeMap<String, Vec<String>> = alerts
        .iter()
        .map(|l| {
            let mut by: Vec<String> = silenced_by(&ours, l, now)
                .into_iter()
                .map(String::from)
                .collect();
            by.sort();
            (serde_json::to_value(l).expect("json").to_string(), by)
        })
        .collect();
    assert!(
        mine.values().filter(|v| !v.is_empty()).count() >= 4,
        "{mine:?}"
    );
    assert_eq!(mine, theirs);
}

/// A running Alertmanager with short timings (wait 1 s, interval 2 s, repeat 5 s) and a
/// webhook served here; the same alert updates, at the same moments, given to Outpost's
/// dispatcher in simulated time: the same notifications, with the same alerts, firing or
/// resolved, each within half a second of Alertmanager's.
#[test]
fn notifications_match_alertmanager_over_time() {
    use outpost_alerting::dispatch::{DispatchedAlert, Dispatcher, NotificationLog};
    let sink = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let sink_port = sink.local_addr().expect("addr").port();
    let config = format!(
        "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 2s\n  repeat_interval: 5s\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: http://127.0.0.1:{sink_port}/\n        send_resolved: true\n"
    );
    let am = Alertmanager::start("timing", &config, &[]);
    let url = am.url.clone();
    let t0 = std::time::Instant::now();
    let got = webhook_sink(sink, t0);
    let wall = |d: std::time::Duration| -> String {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64
            + d.as_millis() as i64;
        let out = Command::new("date")
            .args([
                "-u",
                "-d",
                &format!("@{}.{:03}", ms / 1000, ms % 1000),
                "+%Y-%m-%dT%H:%M:%S.%3NZ",
            ])
            .output()
            .expect("date");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // (when, instance, resolved)
    let plan = [(0u64, "a", false), (2000, "b", false), (6000, "a", true)];
    let mut sim = Dispatcher::new(
        Route::new_root(
            &serde_saphyr::from_str::<Top>(&config)
                .expect("config")
                .route,
        )
        .expect("route"),
    );
    let mut posted = Vec::new();
    let mut first_start: BTreeMap<&str, String> = BTreeMap::new();
    for (at, instance, resolved) in plan {
        let target = std::time::Duration::from_millis(at);
        if let Some(wait) = target.checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
        let now = t0.elapsed();
        let ends = if resolved {
            wall(std::time::Duration::ZERO)
        } else {
            "2999-01-01T00:00:00Z".to_string()
        };
        // An update keeps the alert's start (Alertmanager refuses an end before it).
        let start = first_start
            .entry(instance)
            .or_insert_with(|| wall(std::time::Duration::ZERO))
            .clone();
        let body = serde_json::json!([{
            "labels": {"alertname": "Down", "instance": instance},
            "startsAt": start,
            "endsAt": ends,
        }])
        .to_string();
        curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            &body,
            &format!("{url}/api/v2/alerts"),
        ]);
        let ms = now.as_millis() as i64;
        posted.push((ms, instance, resolved));
    }
    std::thread::sleep(std::time::Duration::from_millis(14_000).saturating_sub(t0.elapsed()));
    drop(am);

    // The same updates in simulated time (ms since t0), flushing whenever a group is due.
    let mut log = NotificationLog::new();
    let mut ours = Vec::new();
    let mut started = BTreeMap::new();
    let mut events = posted.clone().into_iter().peekable();
    let mut t = 0i64;
    while t <= 13_500 {
        while let Some(&(at, instance, resolved)) = events.peek() {
            if at > t {
                break;
            }
            events.next();
            let start = *started.entry(instance).or_insert(at);
            sim.insert(
                DispatchedAlert {
                    labels: [("alertname", "Down"), ("instance", instance)]
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    annotations: BTreeMap::new(),
                    starts_at_ms: start,
                    ends_at_ms: if resolved { at } else { i64::MAX },
                    generator_url: String::new(),
                },
                at,
            );
        }
        for n in sim.flush_due(t, &mut log, &|_| true) {
            let mut alerts: Vec<String> = n
                .alerts
                .iter()
                .map(|a| {
                    format!(
                        "{}:{}",
                        a.labels["instance"],
                        if a.resolved(t) { "resolved" } else { "firing" }
                    )
                })
                .collect();
            alerts.sort();
            ours.push((t, alerts.join(",")));
        }
        t += 10;
    }
    let theirs: Vec<(i64, String)> = got
        .lock()
        .expect("lock")
        .iter()
        .map(|(at, body)| {
            let mut alerts: Vec<String> = body["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    format!(
                        "{}:{}",
                        a["labels"]["instance"].as_str().unwrap_or(""),
                        a["status"].as_str().unwrap_or("")
                    )
                })
                .collect();
            alerts.sort();
            (at.as_millis() as i64, alerts.join(","))
        })
        .collect();
    let contents = |v: &[(i64, String)]| v.iter().map(|(_, c)| c.clone()).collect::<Vec<_>>();
    assert_eq!(
        contents(&ours),
        contents(&theirs),
        "\noutpost:      {ours:?}\nalertmanager: {theirs:?}"
    );
    for ((a, _), (b, _)) in ours.iter().zip(&theirs) {
        assert!(
            (a - b).abs() <= 500,
            "notified at {a} ms here and {b} ms by Alertmanager\noutpost:      {ours:?}\nalertmanager: {theirs:?}"
        );
    }
    assert!(ours.len() >= 4, "{ours:?}");
}
