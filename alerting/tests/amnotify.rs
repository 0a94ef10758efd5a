//! Notifications compared with a running Alertmanager 0.25 (Debian's
//! prometheus-alertmanager): the same alerts sent to it and given to Outpost's payload
//! builders must give the same Slack messages and PagerDuty events (JSON equal) and the
//! same emails (envelope, headers but Date, Message-Id and the MIME boundary, text and
//! HTML parts; for the default HTML, which Outpost writes its own way, the same title,
//! visible text and links), with the default templates and with a template file of our
//! own; firing, partly resolved and resolved. Time intervals: the routes a running
//! Alertmanager notifies now, with intervals built around the current time, are those
//! Outpost's dispatcher notifies. And template files that do not parse are refused by
//! `amtool check-config` and by Outpost.

mod common;

use common::alertmanager::{Alertmanager, Received, SmtpSink, http_sink, post_alerts};
use outpost_alerting::amconfig::parse_alertmanager_config;
use outpost_alerting::amtemplate::load_templates;
use outpost_alerting::dispatch::{DispatchedAlert, Dispatcher, Notification, NotificationLog};
use outpost_alerting::payload::{Context, Integration, Payload, build};
use outpost_alerting::template::gofmt::format_go_layout;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn rfc3339(ms: i64) -> String {
    format_go_layout(ms * 1_000_000, "2006-01-02T15:04:05.000Z07:00")
}

fn l(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const CUSTOM_TEMPLATES: &str = r#"
{{ define "custom.title" }}{{ .Status | title }}: {{ .GroupLabels.SortedPairs.Values | join "/" }} ({{ len .Alerts.Firing }}/{{ len .Alerts }}){{ end }}
{{ define "custom.text" -}}
{{ range $i, $a := .Alerts -}}
#{{ $i }} {{ $a.Status | toUpper }} {{ $a.Labels.instance }} since {{ $a.StartsAt }} until {{ $a.EndsAt }}
  {{ range $a.Labels.SortedPairs }}{{ .Name }}={{ .Value }} {{ end }}
  fp={{ $a.Fingerprint }} src={{ $a.GeneratorURL }}
  {{ if match "^h[0-9]$" $a.Labels.instance }}numbered{{ else }}named{{ end }} {{ reReplaceAll "(.*)-(.*)" "$2.$1" $a.Labels.instance }}
{{ end -}}
common: {{ .CommonLabels.Remove (stringSlice "alertname" "severity") }} names={{ .CommonLabels.Names }} {{ .CommonAnnotations.SortedPairs }}
{{ with .Alerts.Resolved }}resolved: {{ range . }}{{ .Labels.instance }} {{ end }}{{ end }}
receiver={{ .Receiver }} url={{ .ExternalURL }} {{ toLower "MiXeD" }} {{ printf "%05.1f|%q" 3.14159 "x" }}
{{- end }}
{{ define "custom.html" }}<ul>{{ range .Alerts }}<li title="{{ .Annotations.summary }}"><a href="{{ .GeneratorURL }}&amp;x={{ .Labels.instance }}">{{ .Labels.instance }} &lt; {{ .Annotations.summary }}</a></li>{{ end }}</ul>{{ "<i>" | safeHtml }}{{ end }}
"#;

/// The receiver's integrations: each kind with its defaults and with everything set.
fn config(http: u16, smtp: u16, templates_dir: &str) -> String {
    format!(
        r##"global:
  smtp_smarthost: 127.0.0.1:{smtp}
  smtp_from: 'Alertmanager <am@example.org>'
  smtp_require_tls: false
route:
  receiver: ops.all
  group_by: [alertname]
  group_wait: 2s
  group_interval: 1s
  repeat_interval: 1h
templates: ['{templates_dir}/*.tmpl']
receivers:
  - name: ops.all
    slack_configs:
      - api_url: http://127.0.0.1:{http}/slack-default
        send_resolved: true
      - api_url: http://127.0.0.1:{http}/slack-custom
        send_resolved: true
        channel: '#ops-{{{{ .CommonLabels.severity }}}}'
        username: 'outpost'
        color: '{{{{ if eq .Status "firing" }}}}#ff0000{{{{ else }}}}#00ff00{{{{ end }}}}'
        title: '{{{{ template "custom.title" . }}}}'
        title_link: 'http://grafana/d/{{{{ .GroupLabels.alertname }}}}'
        pretext: 'pre {{{{ .Receiver }}}}'
        text: '{{{{ template "custom.text" . }}}}'
        footer: 'foot'
        fallback: 'fb {{{{ .Status }}}}'
        callback_id: 'cb-{{{{ .GroupLabels.alertname }}}}'
        icon_emoji: ':fire:'
        image_url: 'http://img/x.png'
        thumb_url: 'http://img/t.png'
        link_names: true
        short_fields: true
        mrkdwn_in: [text, title]
        fields:
          - title: severity
            value: '{{{{ .CommonLabels.severity }}}}'
          - title: count
            value: '{{{{ len .Alerts }}}}'
            short: false
        actions:
          - type: button
            text: 'Runbook {{{{ .GroupLabels.alertname }}}}'
            url: 'http://runbook/{{{{ .GroupLabels.alertname }}}}'
            style: primary
          - type: button
            text: Ack
            name: ack
            value: '{{{{ .GroupLabels.alertname }}}}'
            confirm:
              text: 'Sure?'
              title: Ack
              ok_text: 'Yes'
              dismiss_text: 'No'
    pagerduty_configs:
      - routing_key: rk-default
        url: http://127.0.0.1:{http}/pd-default
      - routing_key: '{{{{ "rk" }}}}-custom'
        url: http://127.0.0.1:{http}/pd-custom
        client: 'Outpost {{{{ .Receiver }}}}'
        client_url: 'http://outpost/{{{{ .GroupLabels.alertname }}}}'
        description: '{{{{ range .Alerts }}}}{{{{ .Annotations.long }}}}{{{{ end }}}}'
        severity: '{{{{ if eq .CommonLabels.severity "page" }}}}critical{{{{ else }}}}warning{{{{ end }}}}'
        class: 'cls'
        component: '{{{{ .CommonLabels.job }}}}'
        group: 'grp'
        details:
          firing: 'custom {{{{ len .Alerts.Firing }}}}'
          extra: '{{{{ .CommonAnnotations.runbook }}}}'
        images:
          - src: 'http://img/{{{{ .Status }}}}.png'
            alt: 'status'
            href: 'http://img'
          - src: '{{{{ if false }}}}x{{{{ end }}}}'
        links:
          - href: 'http://runbook/{{{{ .GroupLabels.alertname }}}}'
            text: 'runbook'
          - href: ''
            text: 'dropped'
    email_configs:
      - to: 'ops@example.org, "Team B" <b@example.org>'
        send_resolved: true
      - to: 'custom@example.org'
        send_resolved: true
        from: 'Outpost <outpost@example.org>'
        headers:
          subject: 'Custom {{{{ .Status }}}} ünïcode {{{{ len .Alerts }}}}'
          X-Group: '{{{{ .GroupLabels.alertname }}}}'
          reply-to: 'noreply@example.org'
        text: '{{{{ template "custom.text" . }}}}'
        html: '<h1 class="{{{{ .Status }}}}">{{{{ .CommonAnnotations.runbook }}}}</h1><a href="{{{{ .ExternalURL }}}}/#/alerts?receiver={{{{ .Receiver }}}}&amp;g={{{{ .GroupLabels.alertname | urlquery }}}}">{{{{ "<b>&" }}}}</a>{{{{ template "custom.html" . }}}}'
"##
    )
}

/// Title, visible text (tags, styles and comments removed, white space collapsed, the
/// usual entities decoded) and links of an HTML page.
fn html_essence(html: &str) -> (String, String, Vec<String>) {
    let mut s = html.to_string();
    for (open, close) in [("<!--", "-->"), ("<style", "</style>"), ("<head", "<title")] {
        while let Some(i) = s.find(open) {
            let Some(j) = s[i..].find(close) else { break };
            let keep = if close == "<title" { close } else { "" };
            s.replace_range(i..i + j + close.len(), keep);
        }
    }
    let title = s
        .split("<title>")
        .nth(1)
        .and_then(|t| t.split("</title>").next())
        .unwrap_or("")
        .to_string();
    let links: Vec<String> = s
        .split("href=\"")
        .skip(1)
        .map(|t| t.split('"').next().unwrap_or("").to_string())
        .collect();
    let mut text = String::new();
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => {
                in_tag = true;
                text.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&#43;", "+")
        .replace("&amp;", "&");
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (title, text, links)
}

/// One phase of the comparison: what Alertmanager sent, grouped by target.
struct Sent {
    http: BTreeMap<String, Vec<serde_json::Value>>,
    mail: Vec<serde_json::Value>,
}

#[test]
fn slack_pagerduty_and_email_match_alertmanager() {
    let sink = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let http_port = sink.local_addr().expect("addr").port();
    let got = http_sink(sink, Instant::now());
    let smtp = SmtpSink::start("notify");
    let tdir = std::env::temp_dir().join(format!("outpost-amnotify-tmpl-{}", std::process::id()));
    std::fs::create_dir_all(&tdir).expect("dir");
    std::fs::write(tdir.join("custom.tmpl"), CUSTOM_TEMPLATES).expect("write");
    let cfg_text = config(http_port, smtp.port, &tdir.display().to_string());
    let external = "http://am.example:9093";
    let am = Alertmanager::start(
        "notify",
        &cfg_text,
        &[&format!("--web.external-url={external}")],
    );

    let cfg = parse_alertmanager_config(&cfg_text).unwrap_or_else(|e| panic!("{e:?}"));
    let templates = load_templates(&cfg.templates, std::path::Path::new("/")).expect("templates");
    let long = "x".repeat(600);
    // Recent enough for Alertmanager to wait group_wait for both alerts.
    let start = (now_ms() - 1_000) / 1000 * 1000 + 123;
    let alerts = [
        (
            l(&[
                ("alertname", "Down"),
                ("instance", "h1"),
                ("job", "node"),
                ("severity", "page"),
                ("team", "a&b <c>"),
            ]),
            l(&[
                ("summary", "h1 <is> down & \"out\""),
                ("runbook", "http://rb/down"),
                ("long", &long),
            ]),
        ),
        (
            l(&[
                ("alertname", "Down"),
                ("instance", "db-eu"),
                ("job", "node"),
                ("severity", "page"),
                ("team", "a&b <c>"),
            ]),
            l(&[
                ("summary", "db-eu is down"),
                ("runbook", "http://rb/down"),
                ("long", &long),
            ]),
        ),
    ];
    let generator = |a: &DispatchedAlert| {
        format!(
            "http://prom:9090/graph?g0.expr=up&i={}",
            a.labels["instance"]
        )
    };
    let post = |ends: [Option<i64>; 2]| {
        let body = serde_json::Value::Array(
            alerts
                .iter()
                .zip(ends)
                .map(|((lab, ann), end)| {
                    let instance = lab["instance"].clone();
                    serde_json::json!({"labels": lab, "annotations": ann,
                        "startsAt": rfc3339(start),
                        "endsAt": end.map_or_else(|| "2999-01-01T00:00:00Z".to_string(), rfc3339),
                        "generatorURL": format!("http://prom:9090/graph?g0.expr=up&i={instance}")})
                })
                .collect(),
        );
        post_alerts(&am.url, &body.to_string());
    };
    // What Alertmanager sends for one phase: waits until every target has one more message.
    let targets = [
        "/slack-default",
        "/slack-custom",
        "/pd-default",
        "/pd-custom",
    ];
    let mut seen_http = 0;
    let mut seen_mail = 0;
    let mut collect = |phase: &str| -> Sent {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let http: Vec<Received> = got.lock().expect("lock")[seen_http..].to_vec();
            let mail = smtp.messages()[seen_mail..].to_vec();
            let all_http = targets.iter().all(|t| http.iter().any(|r| r.path == *t));
            if (all_http && mail.len() >= 2) || Instant::now() > deadline {
                // A little longer, so that nothing extra is missed.
                std::thread::sleep(Duration::from_millis(300));
                let http: Vec<Received> = got.lock().expect("lock")[seen_http..].to_vec();
                let mail = smtp.messages()[seen_mail..].to_vec();
                seen_http += http.len();
                seen_mail += mail.len();
                let mut by_path: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
                for r in http {
                    by_path
                        .entry(r.path)
                        .or_default()
                        .push(serde_json::from_str(&r.body).expect("json"));
                }
                assert!(
                    all_http && mail.len() == 2,
                    "{phase}: Alertmanager sent {:?} and {} emails\n{}",
                    by_path.keys().collect::<Vec<_>>(),
                    mail.len(),
                    am.log()
                );
                return Sent {
                    http: by_path,
                    mail,
                };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    let read_file = |p: &str| std::fs::read_to_string(p).map_err(|e| e.to_string());
    let ctx = Context {
        config: &cfg,
        templates: &templates,
        external_url: external,
        generator_url: &generator,
        read_file: &read_file,
    };
    let receiver = &cfg.receivers["ops.all"];
    let mut problems = Vec::new();
    let mut second_end = None;
    for phase in ["firing", "one resolved", "resolved"] {
        let end = Some(now_ms() - 10);
        let ends = match phase {
            "firing" => [None, None],
            "one resolved" => {
                second_end = end;
                [None, end]
            }
            _ => [end, second_end],
        };
        post(ends);
        let sent = collect(phase);
        let n = Notification {
            receiver: "ops.all".into(),
            route_key: "{}".into(),
            group_key: "{}:{alertname=\"Down\"}".into(),
            group_labels: l(&[("alertname", "Down")]),
            alerts: alerts
                .iter()
                .zip(ends)
                .map(|((lab, ann), end)| DispatchedAlert {
                    labels: lab.clone(),
                    annotations: ann.clone(),
                    starts_at_ms: start,
                    ends_at_ms: end.unwrap_or(i64::MAX),
                    generator_url: String::new(),
                })
                .collect(),
            at_ms: now_ms(),
        };
        let mut ours_http: Vec<serde_json::Value> = Vec::new();
        for (i, s) in receiver.slack_configs.iter().enumerate() {
            match build(&ctx, Integration::Slack(s), &n) {
                Ok(Payload::Http(p)) => {
                    let theirs = &sent.http[targets[i]][0];
                    let ours: serde_json::Value = serde_json::from_str(&p.body).expect("json");
                    assert!(p.url.ends_with(targets[i]), "{}", p.url);
                    if &ours != theirs {
                        problems.push(format!(
                            "{phase} {}:\n  outpost:      {ours}\n  alertmanager: {theirs}",
                            targets[i]
                        ));
                    }
                    ours_http.push(ours);
                }
                other => panic!("{other:?}"),
            }
        }
        for (i, c) in receiver.pagerduty_configs.iter().enumerate() {
            let target = targets[2 + i];
            match build(&ctx, Integration::Pagerduty(c), &n) {
                Ok(Payload::Http(p)) => {
                    let theirs = &sent.http[target][0];
                    let ours: serde_json::Value = serde_json::from_str(&p.body).expect("json");
                    assert!(p.url.ends_with(target), "{}", p.url);
                    if &ours != theirs {
                        problems.push(format!(
                            "{phase} {target}:\n  outpost:      {ours}\n  alertmanager: {theirs}"
                        ));
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        for c in &receiver.email_configs {
            let Ok(Payload::Email(m)) = build(&ctx, Integration::Email(c), &n) else {
                panic!("email");
            };
            let theirs = sent
                .mail
                .iter()
                .find(|t| {
                    t["rcpt_tos"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|x| x == m.envelope_to[0].as_str()))
                })
                .unwrap_or_else(|| panic!("{phase}: no email to {:?}", m.envelope_to));
            let envelope_to: Vec<String> = theirs["rcpt_tos"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| v.as_str().unwrap_or("").to_string())
                .collect();
            assert_eq!(m.envelope_to, envelope_to, "{phase}");
            assert_eq!(
                m.envelope_from,
                theirs["mail_from"].as_str().unwrap_or(""),
                "{phase}"
            );
            let mut their_headers: Vec<(String, String)> = theirs["headers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|h| {
                    (
                        h[0].as_str().unwrap_or("").to_string(),
                        h[1].as_str().unwrap_or("").to_string(),
                    )
                })
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "Date" | "Message-Id" | "Content-Type" | "MIME-Version"
                    )
                })
                .collect();
            their_headers.sort();
            if m.headers != their_headers {
                problems.push(format!(
                    "{phase} email headers:\n  outpost:      {:?}\n  alertmanager: {their_headers:?}",
                    m.headers
                ));
            }
            let parts: Vec<(String, String)> = theirs["parts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    (
                        p["type"].as_str().unwrap_or("").to_string(),
                        p["body"].as_str().unwrap_or("").replace("\r\n", "\n"),
                    )
                })
                .collect();
            let mut ours_parts = Vec::new();
            if let Some(t) = &m.text {
                ours_parts.push(("text/plain".to_string(), t.clone()));
            }
            if let Some(h) = &m.html {
                ours_parts.push(("text/html".to_string(), h.clone()));
            }
            let default_html = c.html.is_none();
            let same = parts.len() == ours_parts.len()
                && parts.iter().zip(&ours_parts).all(|((ta, a), (tb, b))| {
                    ta == tb
                        && if default_html && ta == "text/html" {
                            html_essence(a) == html_essence(b)
                        } else {
                            a == b
                        }
                });
            if !same {
                problems.push(format!(
                    "{phase} email parts to {:?}:\n  outpost:      {ours_parts:?}\n  alertmanager: {parts:?}\n  essence ours:   {:?}\n  essence theirs: {:?}",
                    m.envelope_to,
                    ours_parts.last().map(|p| html_essence(&p.1)),
                    parts.last().map(|p| html_essence(&p.1)),
                ));
            }
        }
        // The messages must differ between phases, or the comparison proves little.
        assert!(!ours_http.is_empty());
    }
    drop(am);
    let _ = std::fs::remove_dir_all(&tdir);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Routes with time intervals built around the current time (this year, today counted from
/// the month's end, the current hour in Tokyo, today's weekday and month by name, next
/// year, tomorrow's weekday): the receivers a running
/// Alertmanager notifies are those Outpost's dispatcher notifies at the same time.
#[test]
fn time_intervals_match_alertmanager() {
    let sink = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = sink.local_addr().expect("addr").port();
    let got = http_sink(sink, Instant::now());
    let now = now_ms();
    let year = format_go_layout(now * 1_000_000, "2006");
    let next_year = (year.parse::<i32>().expect("year") + 1).to_string();
    let day: i32 = format_go_layout(now * 1_000_000, "2").parse().expect("day");
    let month: u32 = format_go_layout(now * 1_000_000, "1")
        .parse()
        .expect("month");
    let y: i32 = year.parse().expect("year");
    let dim = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    };
    let from_end = day - dim - 1;
    // Tokyo is UTC+9 all year: the current hour there, as a one-hour window.
    let tokyo_hour = (now / 3_600_000 + 9).rem_euclid(24);
    let routes = [
        ("muted-now", "mute_time_intervals: [this-year]"),
        ("active-now", "active_time_intervals: [this-year]"),
        ("muted-later", "mute_time_intervals: [next-year]"),
        ("active-later", "active_time_intervals: [next-year]"),
        (
            "muted-today-from-end",
            "mute_time_intervals: [today-from-end]",
        ),
        ("active-tokyo-hour", "active_time_intervals: [tokyo-hour]"),
        (
            "muted-utc-as-tokyo",
            "mute_time_intervals: [tokyo-hour-in-utc]",
        ),
        (
            "active-weekday-month",
            "active_time_intervals: [weekday-month]",
        ),
        (
            "muted-other-weekday",
            "mute_time_intervals: [other-weekday]",
        ),
    ];
    let weekday = format_go_layout(now * 1_000_000, "Monday").to_lowercase();
    let month_name = format_go_layout(now * 1_000_000, "January");
    let other_weekday = format_go_layout((now + 86_400_000) * 1_000_000, "Monday").to_lowercase();
    let mut config = String::from(
        "route:\n  receiver: root\n  group_by: [alertname]\n  group_wait: 200ms\n  routes:\n",
    );
    for (name, rule) in routes {
        config.push_str(&format!(
            "    - receiver: {name}\n      matchers: [alertname=Down]\n      continue: true\n      {rule}\n"
        ));
    }
    config.push_str("receivers:\n  - name: root\n");
    for (name, _) in routes {
        config.push_str(&format!(
            "  - name: {name}\n    webhook_configs:\n      - url: http://127.0.0.1:{port}/{name}\n"
        ));
    }
    config.push_str(&format!(
        "time_intervals:\n  - name: this-year\n    time_intervals: [{{years: ['{year}']}}]\n  - name: next-year\n    time_intervals: [{{years: ['{next_year}:{}']}}]\n  - name: today-from-end\n    time_intervals: [{{days_of_month: ['{from_end}:{from_end}']}}]\n  - name: tokyo-hour\n    time_intervals:\n      - times: [{{start_time: '{:02}:00', end_time: '{:02}:00'}}]\n        location: Asia/Tokyo\n  - name: tokyo-hour-in-utc\n    time_intervals:\n      - times: [{{start_time: '{:02}:00', end_time: '{:02}:00'}}]\n",
        y + 5,
        tokyo_hour,
        tokyo_hour + 1,
        tokyo_hour,
        tokyo_hour + 1,
    ));
    config.push_str(&format!(
        "  - name: weekday-month\n    time_intervals: [{{weekdays: ['{weekday}'], months: ['{month_name}']}}]\n  - name: other-weekday\n    time_intervals: [{{weekdays: ['{other_weekday}']}}]\n"
    ));
    // The Tokyo window in UTC would match only when Tokyo and UTC hours agree (never).
    let am = Alertmanager::start("intervals", &config, &[]);
    post_alerts(
        &am.url,
        &serde_json::json!([{"labels": {"alertname": "Down", "instance": "a"},
            "startsAt": rfc3339(now), "endsAt": "2999-01-01T00:00:00Z"}])
        .to_string(),
    );
    std::thread::sleep(Duration::from_millis(3000));
    let log = am.log();
    drop(am);
    let mut theirs: Vec<String> = got
        .lock()
        .expect("lock")
        .iter()
        .map(|r| r.path.trim_start_matches('/').to_string())
        .collect();
    theirs.sort();
    theirs.dedup();

    let cfg = parse_alertmanager_config(&config).unwrap_or_else(|e| panic!("{e:?}"));
    let mut d = Dispatcher::new(cfg.route.clone()).with_time_intervals(cfg.intervals.clone());
    d.insert(
        DispatchedAlert {
            labels: l(&[("alertname", "Down"), ("instance", "a")]),
            annotations: BTreeMap::new(),
            starts_at_ms: now,
            ends_at_ms: i64::MAX,
            generator_url: String::new(),
        },
        now,
    );
    let mut nlog = NotificationLog::new();
    let mut ours: Vec<String> = d
        .flush_due(now + 200, &mut nlog, &|_| true)
        .into_iter()
        .map(|n| n.receiver)
        .collect();
    ours.sort();
    assert_eq!(ours, theirs, "\nalertmanager log:\n{log}");
    // Muted routes must be among the routes, or the comparison shows nothing.
    assert!(ours.contains(&"active-now".to_string()), "{ours:?}");
    assert!(!ours.contains(&"muted-now".to_string()), "{ours:?}");
    assert!(
        !ours.contains(&"muted-today-from-end".to_string()),
        "{ours:?}"
    );
    assert!(ours.contains(&"active-tokyo-hour".to_string()), "{ours:?}");
    assert!(
        ours.contains(&"active-weekday-month".to_string()),
        "{ours:?}"
    );
    // Muted flushes leave no entry in the log.
    assert_eq!(nlog.len(), ours.len());
}

/// Template files that do not parse: `amtool check-config` refuses the configuration and
/// Outpost's loader refuses the files with the same message.
#[test]
fn broken_template_files_are_refused_as_amtool_does() {
    let dir = std::env::temp_dir().join(format!("outpost-amtool-tmpl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut differ = Vec::new();
    for (what, text) in [
        ("unclosed define", "{{ define \"x\" }}abc"),
        (
            "unknown function",
            "{{ define \"x\" }}{{ humanize 1 }}{{ end }}",
        ),
        ("bad action", "{{ define \"x\" }}{{ .Foo | }}{{ end }}"),
        ("fine", "{{ define \"x\" }}{{ .Status | toUpper }}{{ end }}"),
    ] {
        std::fs::write(dir.join("t.tmpl"), text).expect("write");
        let cfg = format!(
            "route:\n  receiver: r\nreceivers:\n  - name: r\ntemplates: ['{}/*.tmpl']\n",
            dir.display()
        );
        std::fs::write(dir.join("am.yml"), &cfg).expect("write");
        let out = Command::new("amtool")
            .args(["check-config"])
            .arg(dir.join("am.yml"))
            .output()
            .expect("amtool");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let theirs = text
            .split("FAILED: ")
            .nth(1)
            .map(|t| t.lines().next().unwrap_or("").trim().to_string());
        let parsed = parse_alertmanager_config(&cfg).unwrap_or_else(|e| panic!("{e:?}"));
        let ours = load_templates(&parsed.templates, &dir).err();
        if ours != theirs {
            differ.push(format!("{what}: amtool {theirs:?}, outpost {ours:?}"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

/// A setting that calls a template defined nowhere: Alertmanager gives up on the
/// notification and logs why; Outpost's payload builder fails with the same words.
#[test]
fn undefined_templates_fail_as_alertmanager() {
    let config = "route:\n  receiver: r\n  group_wait: 100ms\nreceivers:\n  - name: r\n    slack_configs:\n      - api_url: http://127.0.0.1:1/x\n        title: 'A {{ template \"nope\" .Alerts.Firing }}'\n    pagerduty_configs:\n      - routing_key: k\n        url: http://127.0.0.1:1/x\n        details:\n          d: '{{ template \"nope2\" . }}'\n";
    let am = Alertmanager::start("undefined", config, &[]);
    let now = now_ms();
    post_alerts(
        &am.url,
        &serde_json::json!([{"labels": {"alertname": "X"}, "startsAt": rfc3339(now)}]).to_string(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut log = am.log();
    while !log.contains("Notify for alerts failed") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        log = am.log();
    }
    drop(am);

    let cfg = parse_alertmanager_config(config).unwrap_or_else(|e| panic!("{e:?}"));
    let templates = outpost_alerting::amtemplate::Templates::defaults();
    let generator = |_: &DispatchedAlert| String::new();
    let read_file = |_: &str| Err("no files".to_string());
    let ctx = Context {
        config: &cfg,
        templates: &templates,
        external_url: "",
        generator_url: &generator,
        read_file: &read_file,
    };
    let n = Notification {
        receiver: "r".into(),
        route_key: "{}".into(),
        group_key: "{}:{}".into(),
        group_labels: BTreeMap::new(),
        alerts: vec![DispatchedAlert {
            labels: l(&[("alertname", "X")]),
            annotations: BTreeMap::new(),
            starts_at_ms: now,
            ends_at_ms: i64::MAX,
            generator_url: String::new(),
        }],
        at_ms: now,
    };
    let r = &cfg.receivers["r"];
    for integration in [
        Integration::Slack(&r.slack_configs[0]),
        Integration::Pagerduty(&r.pagerduty_configs[0]),
    ] {
        let err = build(&ctx, integration, &n).expect_err("an undefined template must fail");
        // Alertmanager's log is logfmt: quotes and backslashes escaped.
        let logged = err.to_string().replace('\\', "\\\\").replace('"', "\\\"");
        assert!(log.contains(&logged), "{logged}\nnot in:\n{log}");
    }
}
