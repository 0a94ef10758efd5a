//! Checks files: parsing, validation error texts, JSON round trips, effective timeouts and
//! the samples an outcome turns into.

use outpost_synthetic::{CheckDef, CheckKind, Outcome, StepOutcome, parse_checks_file};
use std::time::Duration;

const FILE: &str = r#"
checks:
  - name: homepage
    type: http
    frequency: 30s
    locations: [eu-west, us-east]
    url: https://example.org/
    labels: {team: web}
  - name: api-journey
    type: http
    frequency: 1m
    timeout: 20s
    locations: [eu-west]
    steps:
      - name: login
        method: POST
        url: https://api.example.org/login
        body: '{"user":"probe"}'
        capture: {token: {json: $.token}}
      - url: https://api.example.org/me
        headers: {Authorization: 'Bearer ${token}'}
        assert:
          status: [200, 3xx]
          json: [{path: $.id, exists: true}]
  - {name: ssh, type: tcp, frequency: 10s, locations: [eu-west], target: 'db.example.org:22', expect: '^SSH-'}
  - {name: dns, type: dns, frequency: 1m, locations: [us-east], query: example.org, record_type: MX, resolver: '9.9.9.9'}
  - {name: ping, type: icmp, frequency: 15s, locations: [eu-west], target: example.org}
  - {name: cert, type: tls, frequency: 1h, locations: [eu-west], target: 'example.org:443', min_days_left: 14}
  - {name: quic, type: http3, frequency: 1m, locations: [eu-west], url: 'https://example.org/'}
"#;

#[test]
fn a_checks_file_parses_with_every_type_and_round_trips_through_json() {
    let checks = parse_checks_file(FILE).unwrap();
    let kinds: Vec<CheckKind> = checks.iter().map(|c| c.kind).collect();
    use CheckKind::*;
    assert_eq!(kinds, vec![Http, Http, Tcp, Dns, Icmp, Tls, Http3]);
    assert_eq!(checks[0].locations, vec!["eu-west", "us-east"]);
    assert_eq!(checks[1].steps.len(), 2);
    assert_eq!(checks[1].steps[1].display_name(1), "step2");
    for c in &checks {
        let json = serde_json::to_string(c).unwrap();
        let back: CheckDef = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, c, "{json}");
    }
    // Effective timeouts: given, else the frequency capped at 10 s.
    assert_eq!(checks[0].timeout(), Duration::from_secs(10));
    assert_eq!(checks[1].timeout(), Duration::from_secs(20));
    let short =
        parse_checks_file("checks: [{name: a, type: icmp, frequency: 2s, target: h}]").unwrap();
    assert_eq!(short[0].timeout(), Duration::from_secs(2));
}

fn errors(yaml: &str) -> Vec<String> {
    parse_checks_file(yaml).unwrap_err()
}

#[test]
fn validation_names_the_entry_the_check_and_the_field() {
    let e = errors(
        r#"
checks:
  - name: api
    type: http
    frequency: 30s
    steps:
      - url: http://h/login
        capture: {token: {json: '$.a['}}
      - url: 'http://h/x/${nope}'
        capture: {both: {json: $.a, header: x}}
  - {name: api, type: tcp, frequency: 500ms, target: nohost}
  - {name: d, type: dns, frequency: 1m, query: x.org, record_type: PTR, url: 'http://x'}
  - {name: h, type: http, frequency: 10s, timeout: 20s, url: 'ftp://x/', assert: {status: ['9xx'], body_regex: '('}}
"#,
    );
    let has = |needle: &str| {
        assert!(
            e.iter().any(|x| x.contains(needle)),
            "no error containing {needle:?} in {e:#?}"
        );
    };
    has("checks[0]: check \"api\": steps[0].capture.token: json path `$.a[` is not valid");
    has(
        "checks[0]: check \"api\": steps[1].url: variable ${nope} is not captured by an earlier step",
    );
    has("checks[0]: check \"api\": steps[1].capture.both: give exactly one of json, header, regex");
    has("checks[1]: check \"api\": frequency: 500ms is too short; use at least 1s");
    has("checks[1]: check \"api\": target: \"nohost\" is not host:port");
    has("checks[1]: check \"api\": name: already used by checks[0]; names must be unique");
    has(
        "checks[2]: check \"d\": record_type: \"PTR\" is not one of A, AAAA, MX, TXT, CNAME, NS, SOA",
    );
    has("checks[2]: check \"d\": url: does not apply to a dns check");
    has("checks[3]: check \"h\": timeout: 20s is longer than the frequency 10s");
    has("checks[3]: check \"h\": url: `ftp://x/` must start with http:// or https://");
    has("checks[3]: check \"h\": assert.status: \"9xx\" is neither a status code nor a class");
    has("checks[3]: check \"h\": assert.body_regex: regex `(` is not valid");
    assert_eq!(e.len(), 12, "{e:#?}");
}

#[test]
fn missing_fields_unknown_keys_and_syntax_errors_are_reported() {
    let e = errors("checks: [{name: x, type: http, frequency: 10s}]");
    assert_eq!(
        e,
        vec!["checks[0]: check \"x\": url: is required for an http check without steps"]
    );
    let e = errors("checks: [{name: x, type: http, frequency: 10s, url: 'http://h', retries: 3}]");
    assert!(e[0].contains("unknown field `retries`"), "{e:?}");
    let e = errors("checks: [{name: x, type: smtp, frequency: 10s}]");
    assert!(e[0].contains("unknown variant `smtp`"), "{e:?}");
    let e = errors("checks: [{name: x, type: http, frequency: soon, url: 'http://h'}]");
    assert!(e[0].contains("invalid duration \"soon\""), "{e:?}");
    let e = errors("checks:\n  - {name: x, type: http\n  - [\n");
    assert!(
        e[0].contains("line 3"),
        "position of the syntax error: {e:?}"
    );
    let e = errors(
        "checks: [{name: j, type: http, frequency: 10s, headers: {x-t: '${t}'}, steps: [{url: 'http://h/'}]}]",
    );
    assert_eq!(
        e,
        vec![
            "checks[0]: check \"j\": headers.x-t: headers shared by all steps cannot use captured variables; set it in the steps that need it"
        ]
    );
    let e =
        errors("checks: [{name: x, type: dns, frequency: 10s, query: a.org, labels: {check: y}}]");
    assert_eq!(
        e,
        vec!["checks[0]: check \"x\": labels.check: is set by Outpost itself; choose another name"]
    );
}

fn sample_names(b: &outpost_shared::Batch) -> Vec<String> {
    b.series.iter().map(|s| s.labels.to_string()).collect()
}

#[test]
fn outcomes_become_labelled_samples() {
    let defs = parse_checks_file(FILE).unwrap();
    let extra = [
        ("agent".to_string(), "a1".to_string()),
        ("region".to_string(), "eu-west".to_string()),
    ];
    let ok = Outcome {
        check: "homepage".into(),
        success: true,
        duration: Duration::from_millis(250),
        failed_step: None,
        reason: None,
        steps: vec![],
        metrics: vec![
            ("probe_http_status_code".into(), vec![], 200.0),
            (
                "probe_http_duration_seconds".into(),
                vec![("phase".into(), "connect".into())],
                0.001,
            ),
        ],
    };
    let b = ok.to_batch(&defs[0], 1_000, &extra);
    assert_eq!(
        sample_names(&b),
        vec![
            r#"probe_success{agent="a1", check="homepage", region="eu-west", team="web"}"#,
            r#"probe_duration_seconds{agent="a1", check="homepage", region="eu-west", team="web"}"#,
            r#"probe_http_status_code{agent="a1", check="homepage", region="eu-west", team="web"}"#,
            r#"probe_http_duration_seconds{agent="a1", check="homepage", phase="connect", region="eu-west", team="web"}"#,
        ]
    );
    assert!(b.series.iter().all(|s| s.points[0].ts == 1_000));
    assert_eq!(b.series[0].points[0].value, 1.0);
    assert_eq!(b.series[1].points[0].value, 0.25);

    let failed = Outcome {
        check: "api-journey".into(),
        success: false,
        duration: Duration::from_millis(40),
        failed_step: Some("step2".into()),
        reason: Some(format!("status 503 is not 2xx{}", "!".repeat(300))),
        steps: vec![
            StepOutcome {
                name: "login".into(),
                success: true,
                duration: Duration::from_millis(10),
            },
            StepOutcome {
                name: "step2".into(),
                success: false,
                duration: Duration::from_millis(30),
            },
        ],
        metrics: vec![],
    };
    let b = failed.to_batch(&defs[1], 2_000, &extra);
    let names = sample_names(&b);
    assert_eq!(
        names[0],
        r#"probe_success{agent="a1", check="api-journey", region="eu-west"}"#
    );
    assert!(names.contains(&r#"probe_step_success{agent="a1", check="api-journey", region="eu-west", step="login"}"#.to_string()));
    assert!(names.contains(&r#"probe_step_duration_seconds{agent="a1", check="api-journey", region="eu-west", step="step2"}"#.to_string()));
    let info = b
        .series
        .iter()
        .find(|s| s.labels.metric_name() == Some("probe_failure_info"))
        .unwrap();
    assert_eq!(info.labels.get("step"), Some("step2"));
    let reason = info.labels.get("reason").unwrap();
    assert!(reason.starts_with("status 503 is not 2xx!"));
    assert_eq!(reason.chars().count(), 200);
    assert_eq!(b.series[0].points[0].value, 0.0);
    let step2 = b
        .series
        .iter()
        .find(|s| {
            s.labels.metric_name() == Some("probe_step_success")
                && s.labels.get("step") == Some("step2")
        })
        .unwrap();
    assert_eq!(step2.points[0].value, 0.0);
}

/// Agents keep local checks in their TOML config; the same definitions read from TOML.
#[test]
fn definitions_read_from_toml_too() {
    #[derive(serde::Deserialize)]
    struct AgentPart {
        checks: Vec<CheckDef>,
    }
    let t: AgentPart = toml::from_str(
        r#"
[[checks]]
name = "local-api"
type = "http"
frequency = "15s"
url = "http://127.0.0.1:8080/health"
assert = { status = [200, "3xx"], json = [{ path = "$.ok", equals = true }] }

[[checks]]
name = "local-dns"
type = "dns"
frequency = "1m"
query = "example.org"
resolver = "127.0.0.53"
"#,
    )
    .unwrap();
    assert_eq!(t.checks.len(), 2);
    for c in &t.checks {
        c.validate().unwrap();
        assert!(c.locations.is_empty());
    }
    let yaml = parse_checks_file(
        "checks:\n  - {name: local-api, type: http, frequency: 15s, url: 'http://127.0.0.1:8080/health', assert: {status: [200, 3xx], json: [{path: $.ok, equals: true}]}}\n",
    )
    .unwrap();
    assert_eq!(yaml[0], t.checks[0]);
}

#[test]
fn bad_alert_values_are_refused_with_the_key_named() {
    let with = |alert: &str| {
        outpost_synthetic::parse_checks_file(&format!(
            "checks:\n  - name: api\n    type: http\n    frequency: 1s\n    url: http://127.0.0.1:1/\n    locations: [a, b, c]\n    alert: {alert}\n"
        ))
    };
    let ok = with("{failing_regions: 2, for: 2m, severity: critical, degraded_ms: 800}").unwrap();
    let a = ok[0].alert.clone().unwrap();
    assert_eq!(
        (
            a.failing_regions,
            a.for_duration().as_secs(),
            a.severity(),
            a.degraded_ms
        ),
        (2, 120, "critical", Some(800))
    );
    assert_eq!(
        with("{failing_regions: 1}").unwrap()[0]
            .alert
            .as_ref()
            .unwrap()
            .severity(),
        "critical"
    );
    // (alert, text the one problem must contain)
    let cases = [
        (
            "{failing_regions: 0}",
            "alert.failing_regions: 0 is not between 1 and the number of locations (3)",
        ),
        (
            "{failing_regions: 4}",
            "alert.failing_regions: 4 is not between 1",
        ),
        ("{failing_regions: two}", "alert.failing_regions: "),
        (
            "{failing_regions: 1, for: soon}",
            "alert.for: invalid duration \"soon\"",
        ),
        (
            "{failing_regions: 1, severity: ''}",
            "alert.severity: 1 to 100 printable characters",
        ),
        ("{failing_regions: 1, severity: [a]}", "alert.severity: "),
        (
            "{failing_regions: 1, degraded_ms: 0}",
            "alert.degraded_ms: must be more than 0",
        ),
        (
            "{failing_regions: 1, degraded_ms: -5}",
            "alert.degraded_ms: ",
        ),
        (
            "{failing_regions: 1, degraded: 5}",
            "unknown field `degraded`",
        ),
        ("{for: 2m}", "missing field `failing_regions`"),
    ];
    for (alert, want) in cases {
        let p = with(alert).unwrap_err();
        assert_eq!(p.len(), 1, "{alert}: {p:?}");
        assert!(p[0].contains(want), "{alert}: {p:?}");
    }
    // Agent-local checks (no locations) cannot alert.
    let p = outpost_synthetic::parse_checks_file(
        "checks:\n  - {name: l, type: http, frequency: 1s, url: 'http://127.0.0.1:1/', alert: {failing_regions: 1}}\n",
    )
    .unwrap_err();
    assert!(
        p[0].contains("check \"l\": alert: only checks with locations"),
        "{p:?}"
    );
}
