//! Outpost's rule evaluation against the real Prometheus: for rule files and input
//! series, our evaluator runs over `MemStorage`; its firing alerts (labels and expanded
//! annotations) and the series it wrote (`ALERTS`, `ALERTS_FOR_STATE`, recorded series,
//! stale markers) become the expectations of a `promtool test rules` file, and promtool
//! 2.42 must agree. On disagreement promtool's output shows expected (ours) against got
//! (Prometheus').
//!
//! Skipped, with a message, where `promtool` is not installed.

mod common;

use common::Store;
use outpost_alerting::{AlertState, Group, GroupOptions, Health, parse_rule_file};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::Command;

const MIN: i64 = 60_000;

struct Case {
    name: &'static str,
    rules: &'static str,
    /// Input series: selector and promtool values, one value per `interval`.
    series: &'static [(&'static str, &'static str)],
    interval_ms: i64,
    external_labels: &'static [(&'static str, &'static str)],
    external_url: &'static str,
    /// Alert checks: every alert name at every one of these times.
    alert_times_ms: Vec<i64>,
    alertnames: &'static [&'static str],
    /// PromQL checks over the series written, at these times.
    exprs: &'static [&'static str],
    expr_times_ms: Vec<i64>,
}

fn promtool_available() -> bool {
    Command::new("promtool").arg("--version").output().is_ok()
}

fn duration(ms: i64) -> String {
    outpost_alerting::duration::format_duration(ms)
}

/// Runs our evaluator over the case and returns promtool's test file (as JSON, which is
/// YAML) with our results as its expectations.
fn expectations(case: &Case) -> Value {
    let file = parse_rule_file("rules.yml", case.rules).unwrap_or_else(|ps| {
        panic!(
            "{}",
            ps.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    let opts = GroupOptions {
        default_interval_ms: case.interval_ms,
        external_labels: case
            .external_labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        external_url: case.external_url.to_string(),
        ..GroupOptions::default()
    };
    let mut groups = Group::from_file(&file, &opts);
    let store = Store::default();
    for (s, v) in case.series {
        store.load(s, v, case.interval_ms);
    }
    // promtool evaluates every group at every evaluation interval from 0 to the last
    // checked time, and checks alerts after the evaluation at or before each time.
    let eval_interval = MIN;
    let maxt = case
        .alert_times_ms
        .iter()
        .chain(&case.expr_times_ms)
        .copied()
        .max()
        .unwrap_or(0);
    let mut alert_tests = Vec::new();
    let mut ts = 0;
    while ts <= maxt {
        for g in &mut groups {
            let report = g.eval(ts, &|q, t| store.query(q, t), &mut |s| store.append(s));
            for r in &report.rules {
                assert_eq!(r.health, Health::Ok, "{} at {ts}: {:?}", r.name, r.error);
            }
        }
        for &t in &case.alert_times_ms {
            if !(ts <= t && t < ts + eval_interval) {
                continue;
            }
            for name in case.alertnames {
                let mut exp = Vec::new();
                for g in &groups {
                    for r in g.rules().iter().filter(|r| r.name() == *name) {
                        for a in r.active_alerts() {
                            if a.state != AlertState::Firing {
                                continue;
                            }
                            let mut labels = a.labels.clone();
                            labels.remove("alertname");
                            exp.push(
                                json!({"exp_labels": labels, "exp_annotations": a.annotations}),
                            );
                        }
                    }
                }
                alert_tests
                    .push(json!({"eval_time": duration(t), "alertname": name, "exp_alerts": exp}));
            }
        }
        ts += eval_interval;
    }
    // Every alert name checked must fire at some checked time, or the case proves little.
    for name in case.alertnames {
        let fired = alert_tests.iter().any(|t| {
            t["alertname"] == *name && t["exp_alerts"].as_array().is_some_and(|a| !a.is_empty())
        });
        assert!(
            fired,
            "{}: {name} never fires at the checked times",
            case.name
        );
    }
    let mut promql_tests = Vec::new();
    for expr in case.exprs {
        for &t in &case.expr_times_ms {
            let got = store.query(expr, t).expect("query");
            let samples: Vec<Value> = got
                .iter()
                .map(|s| json!({"labels": s.labels.to_string(), "value": s.point.value}))
                .collect();
            promql_tests
                .push(json!({"expr": expr, "eval_time": duration(t), "exp_samples": samples}));
        }
    }
    let input: Vec<Value> = case
        .series
        .iter()
        .map(|(s, v)| json!({"series": s, "values": v}))
        .collect();
    let external: BTreeMap<&str, &str> = case.external_labels.iter().copied().collect();
    // Without an order promtool evaluates groups in random order; ours is file order.
    let order: Vec<&str> = file.groups.iter().map(|g| g.name.as_str()).collect();
    json!({
        "rule_files": ["rules.yml"],
        "group_eval_order": order,
        "evaluation_interval": duration(eval_interval),
        "tests": [{
            "interval": duration(case.interval_ms),
            "external_labels": external,
            "external_url": case.external_url,
            "input_series": input,
            "alert_rule_test": alert_tests,
            "promql_expr_test": promql_tests,
        }],
    })
}

fn check_with_promtool(case: &Case) {
    if !promtool_available() {
        eprintln!("promtool not installed; skipping {}", case.name);
        return;
    }
    let test = expectations(case);
    let dir = std::env::temp_dir().join(format!(
        "outpost-alerting-promtool-{}-{}",
        case.name,
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("rules.yml"), case.rules).expect("rules");
    let text = serde_json::to_string_pretty(&test).expect("json");
    std::fs::write(dir.join("test.yml"), &text).expect("test file");
    let out = Command::new("promtool")
        .arg("test")
        .arg("rules")
        .arg("test.yml")
        .current_dir(&dir)
        .output()
        .expect("run promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool disagrees with Outpost on {} (files in {}):\n{report}",
        case.name,
        dir.display()
    );
    assert!(report.contains("SUCCESS"), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn minutes(range: std::ops::RangeInclusive<i64>) -> Vec<i64> {
    range.map(|m| m * MIN).collect()
}

#[test]
fn alert_lifecycle_matches_promtool() {
    check_with_promtool(&Case {
        name: "lifecycle",
        rules: r#"
groups:
  - name: lifecycle
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: JobDown
        expr: job:up:sum == 0
        for: 3m
        labels:
          severity: page
          team: '{{ $labels.job }}-team'
        annotations:
          summary: '{{ $labels.job }} down: {{ $value }} ({{ humanize $value }})'
      - alert: InstanceDown
        expr: up == 0
        for: 2m
        keep_firing_for: 3m
        labels:
          severity: warning
          dropped: '{{ if false }}x{{ end }}'
        annotations:
          description: >-
            {{ $labels.instance }} of {{ $labels.job }} ({{ $labels.instance | stripPort }})
            is down; {{ printf "%.2f" $value }}; cluster {{ $externalLabels.cluster }}
  - name: second
    rules:
      - alert: ApiHalfDown
        expr: job:up:sum{job="api"} < 2
        for: 1m
        annotations:
          value: '{{ $value }} of {{ with query "count(up{job=\"api\"})" }}{{ . | first | value }}{{ end }}'
"#,
        series: &[
            (
                r#"up{job="api",instance="a:9100"}"#,
                "1 1 0 0 0 0 1 0 0 0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
            ),
            (
                r#"up{job="api",instance="b:9100"}"#,
                "1 1 0 0 0 0 0 0 0 0 0 0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1",
            ),
            (r#"up{job="db",instance="c:5432"}"#, "1x26"),
        ],
        interval_ms: MIN,
        external_labels: &[("cluster", "eu1")],
        external_url: "http://outpost.example:9470",
        alert_times_ms: minutes(0..=25),
        alertnames: &["JobDown", "InstanceDown", "ApiHalfDown"],
        exprs: &["ALERTS", "ALERTS_FOR_STATE", "job:up:sum"],
        expr_times_ms: vec![
            0,
            2 * MIN,
            3 * MIN,
            5 * MIN,
            6 * MIN,
            7 * MIN,
            12 * MIN,
            14 * MIN,
            17 * MIN,
            25 * MIN,
        ],
    });
}

#[test]
fn template_functions_match_promtool() {
    check_with_promtool(&Case {
        name: "templates",
        rules: r#"
groups:
  - name: templates
    rules:
      - alert: Templates
        expr: node_load1 > 0
        labels:
          load: '{{ if gt $value 2.0 }}high{{ else }}normal{{ end }}'
        annotations:
          humanize: '{{ humanize $value }} {{ humanize 0.000123 }} {{ humanize 1234567890 }} {{ humanize 0 }} {{ humanize -1500 }} {{ humanize "2048" }}'
          h1024: '{{ humanize1024 $value }} {{ humanize1024 1048576 }} {{ humanize1024 0.5 }} {{ humanize1024 123456789 }}'
          duration: '{{ humanizeDuration 0.0012 }} {{ humanizeDuration 59.9 }} {{ humanizeDuration 3601 }} {{ humanizeDuration 90061 }} {{ humanizeDuration 0 }} {{ humanizeDuration -75 }}'
          percentage: '{{ humanizePercentage 0.5 }} {{ humanizePercentage 1.23456 }} {{ humanizePercentage $value }}'
          timestamp: '{{ humanizeTimestamp 1435065584.128 }} {{ humanizeTimestamp 0 }} {{ humanizeTimestamp 1700000000 }}'
          printf: '{{ printf "%.2f|%5.1f|%-6s|%q|%x|%X|%d|%e|%g|%v|%s|%05.1f|%+d|%8.3e|%t" $value 3.14159 "ab" "q\"" 255 "hi" 42 123456.789 0.000012345 $value "str" 2.5 7 1234.5678 true }}'
          printf_bad: '{{ printf "%d %s %d" $value 1 }}|{{ printf "%d" 1 2 }}'
          strings: '{{ title "hello world-wide" }} {{ toUpper "abc" }} {{ toLower "ABC" }} {{ reReplaceAll "(a+)" "<$1>" "caaat" }} {{ match "^a" "abc" }} {{ "a b&c/d" | urlquery }} {{ stripPort "[::1]:80" }} {{ stripPort "host" }} {{ safeHtml "<b>" }}'
          control: '{{ range $i, $e := query "sort(node_load1)" }}{{ $i }}={{ $e.Labels.instance }}:{{ $e.Value }};{{ end }} {{ with query "nope" }}x{{ else }}none{{ end }} {{ len $labels }} {{ index $labels "instance" }} {{ and 1 0 }} {{ or 0 "" "z" }} {{ not 0 }}'
          compare: '{{ eq $labels.instance "h1:9100" }} {{ ne 1 2 }} {{ lt 1 2 }} {{ le "a" "b" }} {{ ge 2.5 2.5 }} {{ eq 1 2 3 1 }}'
          query: '{{ with query "sum(node_load1)" }}{{ . | first | value | printf "%.3f" }}{{ end }} {{ range query "node_load1" | sortByLabel "instance" }}{{ label "instance" . }} {{ end }}'
          define: '{{ define "x" }}[{{ . }}]{{ end }}{{ template "x" $labels.instance }}{{ template "x" 42 }}'
          # promtool gives rules no external URL object, so `pathPrefix` and `externalURL`
          # fail there; unit tests cover them.
          url: '{{ $externalURL }}'
          parse: '{{ parseDuration "1h30m" }} {{ parseDuration "500ms" }}'
          numbers: '{{ $value }} {{ .Value }} {{ 1e6 }} {{ 123456789.0 }} {{ 0.1 }} {{ 100000.0 }} {{ 1e-5 }} {{ 0x1F }} {{ -3 }}'
          trim: "{{- \"a\" -}}   \n   {{- \"b\" }} {{/* comment */}}c"
          vars: '{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }} {{ range $k, $v := $labels }}{{ $k }}={{ $v }},{{ end }}'
          err_humanize: '{{ humanize "abc" }}'
          err_first: '{{ first (query "nope") }}'
          err_compare: '{{ gt $value 1 }}'
          err_field: '{{ .Nope }}'
          err_type: '{{ toUpper 5 }}'
"#,
        series: &[
            (r#"node_load1{instance="h1:9100"}"#, "1.5+0.25x10"),
            (r#"node_load1{instance="h2:9100"}"#, "0.0001+0x10"),
        ],
        interval_ms: MIN,
        external_labels: &[("cluster", "eu1")],
        external_url: "https://outpost.example/prefix",
        alert_times_ms: vec![0, 5 * MIN],
        alertnames: &["Templates"],
        exprs: &[],
        expr_times_ms: vec![],
    });
}

/// `promtool check rules` and [`parse_rule_file`] find the same problems in the same
/// places (promtool's expression errors carry a position inside the expression that
/// Outpost's parser does not give, so messages are compared up to the first `: ` after
/// the rule).
#[test]
fn validation_matches_promtool_check_rules() {
    if !promtool_available() {
        eprintln!("promtool not installed; skipping");
        return;
    }
    let bad = r#"groups:
  - name: a
    rules:
      - record: bad-name
        expr: up
        for: 5m
      - alert: X
        record: y
        expr: up
      - alert: Y
        expr: sum(
        labels:
          "bad-label": x
        annotations:
          s: "{{ nosuch }}"
          t: "{{ if }}"
  - name: a
    rules: []
  - name: zero
    interval: 0s
    rules: []
"#;
    let dir = std::env::temp_dir().join(format!("outpost-alerting-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("bad.yml"), bad).expect("write");
    let out = Command::new("promtool")
        .args(["check", "rules", "bad.yml"])
        .current_dir(&dir)
        .output()
        .expect("run promtool");
    let _ = std::fs::remove_dir_all(&dir);
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let head = |line: &str| -> String {
        // Drop promtool's second position ("8:17: 7:16: ") and what follows an
        // expression error's own position.
        let l = regex::Regex::new(r"^(bad\.yml: \d+:\d+: )\d+:\d+: ")
            .expect("re")
            .replace(line, "$1");
        match l.find("could not parse expression: ") {
            Some(i) => l[..i + "could not parse expression".len()].to_string(),
            None => l.to_string(),
        }
    };
    let mut theirs: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("bad.yml: "))
        .map(head)
        .collect();
    // Where promtool has no position (label and template problems) Outpost names the
    // rule's line; compare those without it.
    let pos = regex::Regex::new(r"^bad\.yml: \d+:\d+: ").expect("re");
    let mut ours: Vec<String> = parse_rule_file("bad.yml", bad)
        .expect_err("invalid")
        .iter()
        .map(|p| head(&p.to_string()))
        .map(|l| {
            if theirs.contains(&l) {
                l
            } else {
                pos.replace(&l, "bad.yml: ").to_string()
            }
        })
        .collect();
    theirs.sort();
    ours.sort();
    assert_eq!(ours, theirs, "promtool said:\n{text}");
    for name in [
        "node.rules.yml",
        "kube-prometheus.rules.yml",
        "outpost.rules.yml",
    ] {
        let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new("promtool")
            .args(["check", "rules", &path])
            .output()
            .expect("promtool");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn node_mixin_sample_file_matches_promtool() {
    check_with_promtool(&Case {
        name: "node-mixin",
        rules: include_str!("data/node.rules.yml"),
        series: &[
            (
                r#"node_cpu_seconds_total{job="node",instance="h1",cpu="0",mode="idle"}"#,
                "0+30x130",
            ),
            (
                r#"node_cpu_seconds_total{job="node",instance="h1",cpu="0",mode="user"}"#,
                "0+25x130",
            ),
            // Rates of 0.5 and 0.75: their average is exact in any order of addition.
            (
                r#"node_cpu_seconds_total{job="node",instance="h1",cpu="1",mode="idle"}"#,
                "0+45x130",
            ),
            (
                r#"node_cpu_seconds_total{job="node",instance="h1",cpu="1",mode="user"}"#,
                "0+5x130",
            ),
            (r#"node_load1{job="node",instance="h1"}"#, "5x130"),
            (
                r#"node_memory_MemAvailable_bytes{job="node",instance="h1"}"#,
                "50x130",
            ),
            (
                r#"node_memory_MemTotal_bytes{job="node",instance="h1"}"#,
                "1000x130",
            ),
            (
                r#"node_filesystem_avail_bytes{job="node",instance="h1",device="/dev/sda1",fstype="ext4",mountpoint="/"}"#,
                "200-2x130",
            ),
            (
                r#"node_filesystem_size_bytes{job="node",instance="h1",device="/dev/sda1",fstype="ext4",mountpoint="/"}"#,
                "1000x130",
            ),
            (
                r#"node_filesystem_readonly{job="node",instance="h1",device="/dev/sda1",fstype="ext4",mountpoint="/"}"#,
                "0x130",
            ),
            (
                r#"node_nf_conntrack_entries{job="node",instance="h1"}"#,
                "800x130",
            ),
            (
                r#"node_nf_conntrack_entries_limit{job="node",instance="h1"}"#,
                "1000x130",
            ),
            (
                r#"node_timex_offset_seconds{job="node",instance="h1"}"#,
                "0.06x130",
            ),
        ],
        interval_ms: MIN,
        external_labels: &[],
        external_url: "",
        alert_times_ms: vec![
            0,
            10 * MIN,
            16 * MIN,
            60 * MIN,
            111 * MIN,
            112 * MIN,
            130 * MIN,
        ],
        alertnames: &[
            "NodeFilesystemSpaceFillingUp",
            "NodeFilesystemAlmostOutOfSpace",
            "NodeHighNumberConntrackEntriesUsed",
            "NodeClockSkewDetected",
            "NodeMemoryHighUtilization",
            "NodeSystemSaturation",
        ],
        exprs: &[
            "instance:node_num_cpu:sum",
            "instance:node_cpu_utilisation:rate5m",
            "instance:node_load1_per_cpu:ratio",
            "instance:node_memory_utilisation:ratio",
            "ALERTS_FOR_STATE",
        ],
        expr_times_ms: vec![0, 5 * MIN, 30 * MIN, 130 * MIN],
    });
}

#[test]
fn kube_prometheus_sample_file_matches_promtool() {
    check_with_promtool(&Case {
        name: "kube-prometheus",
        rules: include_str!("data/kube-prometheus.rules.yml"),
        series: &[
            (
                r#"up{job="api",namespace="prod",service="api",instance="1"}"#,
                "1 1 0x30",
            ),
            (
                r#"up{job="api",namespace="prod",service="api",instance="2"}"#,
                "1x32",
            ),
            (
                r#"up{job="api",namespace="prod",service="api",instance="3"}"#,
                "1x32",
            ),
            (
                r#"prometheus_rule_evaluation_failures_total{job="prometheus-k8s",namespace="monitoring",pod="prometheus-k8s-0"}"#,
                "0x10 0+2x21",
            ),
            (
                r#"prometheus_notifications_errors_total{job="prometheus-k8s",namespace="monitoring",pod="prometheus-k8s-0",alertmanager="http://am:9093"}"#,
                "0+1x32",
            ),
            (
                r#"prometheus_notifications_sent_total{job="prometheus-k8s",namespace="monitoring",pod="prometheus-k8s-0",alertmanager="http://am:9093"}"#,
                "0+30x32",
            ),
        ],
        interval_ms: MIN,
        external_labels: &[],
        external_url: "",
        alert_times_ms: vec![
            0,
            11 * MIN,
            12 * MIN,
            20 * MIN,
            26 * MIN,
            27 * MIN,
            32 * MIN,
        ],
        alertnames: &[
            "TargetDown",
            "Watchdog",
            "PrometheusRuleFailures",
            "PrometheusErrorSendingAlertsToSomeAlertmanagers",
        ],
        exprs: &["ALERTS"],
        expr_times_ms: vec![12 * MIN, 32 * MIN],
    });
}

#[test]
fn outpost_sample_file_matches_promtool() {
    check_with_promtool(&Case {
        name: "outpost",
        rules: include_str!("data/outpost.rules.yml"),
        series: &[
            // promtool creates input series in random order and averages them in that
            // order, so averages of thirds differ in the last bit from run to run: the
            // recorded averages are not compared exactly, and no evaluation lands on the
            // 0.5 threshold.
            (r#"probe_success{check="web",region="ap"}"#, "1x32"),
            (r#"probe_success{check="web",region="eu"}"#, "1 1 0x20 1x10"),
            (
                r#"probe_success{check="web",region="us"}"#,
                "1 1 1 1 0x18 1x10",
            ),
            (
                r#"probe_duration_seconds{check="web",region="eu"}"#,
                "0.5 0.5 2.5x10 3661x10 0.2x10",
            ),
            (
                r#"outpost_agent_buffer_bytes{job="agent",instance="db-1.example.org:9472"}"#,
                "100+100x32",
            ),
            (
                r#"outpost_agent_buffer_max_bytes{job="agent",instance="db-1.example.org:9472"}"#,
                "2000x32",
            ),
        ],
        interval_ms: MIN,
        external_labels: &[("cluster", "eu1")],
        external_url: "http://outpost.example:9470",
        alert_times_ms: minutes(0..=32),
        alertnames: &["ProbeFailing", "ProbeSlow", "AgentBufferFilling"],
        exprs: &["ALERTS", "ALERTS_FOR_STATE"],
        expr_times_ms: vec![3 * MIN, 10 * MIN, 24 * MIN, 30 * MIN],
    });
}

#[test]
fn go_formatting_edge_cases_match_promtool() {
    check_with_promtool(&Case {
        name: "formatting",
        rules: r#"
groups:
  - name: formatting
    rules:
      - alert: Formatting
        expr: metric
        annotations:
          humanize: '{{ humanize 999.9999 }} {{ humanize 1e-30 }} {{ humanize -0.001 }} {{ humanize 1e27 }} {{ humanize 1000 }} {{ humanize 0.999 }} {{ humanize 12345.678 }}'
          humanize1024: '{{ humanize1024 1023 }} {{ humanize1024 5.5e12 }} {{ humanize1024 -2048 }} {{ humanize1024 1 }} {{ humanize1024 1e30 }}'
          duration: '{{ humanizeDuration 0.5 }} {{ humanizeDuration 86400 }} {{ humanizeDuration 1.5 }} {{ humanizeDuration -0.5 }} {{ humanizeDuration 0.000000002 }} {{ humanizeDuration 59.99999 }} {{ humanizeDuration "3600" }}'
          percentage: '{{ humanizePercentage 0 }} {{ humanizePercentage 0.0000123 }} {{ humanizePercentage -0.25 }} {{ humanizePercentage 12.3456 }}'
          timestamp: '{{ humanizeTimestamp -1.5 }} {{ humanizeTimestamp 1.0005 }} {{ humanizeTimestamp 253402300799 }} {{ humanizeTimestamp "86400.25" }}'
          floats: '{{ printf "%.0f %.0f %.0f %.1f %.2f %.3f" 0.5 1.5 2.5 0.05 1.005 2.0005 }}'
          g: '{{ printf "%g %g %g %g %.10g %.3g %.1g %G %.0g" 1e21 1e20 100000.0 1000000.0 0.3333333333333333 1234567.0 0.05 1e-7 15.0 }}'
          e: '{{ printf "%e %E %.0e %.3e %+.2e %12.4e|%-12.2e|" 0.0 123.456 5.5 -0.00012345 1.0 6.02214076e23 1.5 }}'
          widths: '{{ printf "%8.3f|%-8.2f|%08.3f|%+08.2f|% .2f|%+.1f|%5.1f" 3.5 -2.25 -3.5 2.25 1.0 -0.04 99.99 }}'
          ints: '{{ printf "%d|%5d|%-5d|%05d|%x|%X|%#x|%o|%#o|%b|%c|% d|%+d|%.3d|%q" 42 42 42 -42 255 255 255 8 8 5 65 5 5 7 65 }}'
          strings: '{{ printf "%s|%10s|%-10s|%.3s|%q|%x|%X|% x|%v" "abc" "abc" "abc" "abcdef" "tab\there" "hi" "hi" "hi" "v" }}'
          values: '{{ printf "%v|%s|%d" $labels $labels.instance true }} {{ printf "%v %v" 1 "a" }} {{ printf "%6.2v|%v" 3.14159 1e-7 }}'
          specials: '{{ $i := (query "vector(+Inf)" | first | value) }}{{ $n := (query "vector(NaN)" | first | value) }}{{ $m := (query "vector(-Inf)" | first | value) }}{{ printf "%f|%v|%6.1f|%e|%g|%+f|%d|%-6f|" $i $n $i $m $n $i $i $m }} {{ humanize $i }} {{ humanize $m }} {{ humanize1024 $n }} {{ humanizeDuration $i }} {{ humanizePercentage $n }} {{ humanizeTimestamp $i }} {{ $i }} {{ $n }}'
          value: '{{ $value }} {{ printf "%.2f" $value }} {{ $value | humanize }}'
          print: '{{ print 1 2 }} {{ print "a" "b" }} {{ print 1 "a" 2 }} {{ print 1.5 2.5 }} {{ println "x" 1 }}{{ print nil }} {{ print true false }}'
          args: '{{ define "pair" }}{{ .arg0 }}={{ .arg1 }}{{ .arg2 }}{{ end }}{{ template "pair" (args "k" 1.5) }} {{ len (args 1 2 3) }} {{ args "x" 2 }} {{ range args "p" "q" }}{{ . }}{{ end }}'
          escapes: '{{ html "<a href=\"x\">&</a>" }} {{ js "it''s <b>" }} {{ urlquery "a/b?c=d e" }} {{ "x\u00e9\n" | printf "%q" }}'
"#,
        series: &[
            (r#"metric{instance="a:1"}"#, "1234567.891x5"),
            (r#"metric{instance="b:2"}"#, "0.000123x5"),
            (r#"metric{instance="c:3"}"#, "-42x5"),
        ],
        interval_ms: MIN,
        external_labels: &[],
        external_url: "",
        alert_times_ms: vec![0],
        alertnames: &["Formatting"],
        exprs: &[],
        expr_times_ms: vec![],
    });
}

/// Template parse errors, as `promtool check rules` reports them for annotations.
#[test]
fn template_parse_errors_match_promtool() {
    if !promtool_available() {
        eprintln!("promtool not installed; skipping");
        return;
    }
    let templates = [
        "{{ end }}",
        "{{ if true }}x",
        "{{ else }}",
        "{{ $x }}",
        "{{ foo 1 }}",
        "{{ \"unterminated }}",
        "{{ (1 }}",
        "{{ 1) }}",
        "{{ }}",
        "{{ nil }}",
        "{{ range }}{{ end }}",
        "{{ template }}",
        "{{ define \"x\" }}",
        "{{ break }}",
        "{{ .Foo | 3 }}",
        "{{ # }}",
        "{{ $x := }}",
        "{{/* unclosed }}",
        "line1\n{{ foo }}",
        "{{ if 1 }}{{ else }}{{ else }}{{ end }}",
        "{{ with $x := 1 }}{{ end }}{{ $x }}",
        "{{ 1 2 }}",
        "{{ .A.B.C ",
        "{{ printf \"%d\" 1 | }}",
        "{{ 'ab' }}",
        "{{ 1e }}",
    ];
    let mut yaml = String::from(
        "groups:\n  - name: g\n    rules:\n      - alert: T\n        expr: up\n        annotations:\n",
    );
    for (i, t) in templates.iter().enumerate() {
        yaml.push_str(&format!(
            "          a{i:02}: {}\n",
            serde_json::to_string(t).expect("json")
        ));
    }
    let dir = std::env::temp_dir().join(format!("outpost-alerting-tparse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("t.yml"), &yaml).expect("write");
    let out = Command::new("promtool")
        .args(["check", "rules", "t.yml"])
        .current_dir(&dir)
        .output()
        .expect("run promtool");
    let _ = std::fs::remove_dir_all(&dir);
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let strip = |l: &str| l.split_once("\"T\": ").map(|(_, m)| m.to_string());
    let mut theirs: Vec<String> = text.lines().filter_map(strip).collect();
    let mut ours: Vec<String> = parse_rule_file("t.yml", &yaml)
        .expect_err("invalid")
        .iter()
        .filter_map(|p| strip(&p.to_string()))
        .collect();
    theirs.sort();
    ours.sort();
    let diff: Vec<String> = theirs
        .iter()
        .zip(&ours)
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("promtool: {a}\noutpost:  {b}"))
        .collect();
    assert!(
        diff.is_empty() && theirs.len() == ours.len(),
        "{} vs {} problems\n{}",
        theirs.len(),
        ours.len(),
        diff.join("\n")
    );
}
