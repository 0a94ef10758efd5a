//! docs/CHECKS.md against the runners: the Results table says which metrics each type of
//! check emits. A run of every type against real servers on loopback must emit every metric
//! the table lists for that type, and nothing the table does not list for it.

mod common;

use common::*;
use outpost_synthetic::{CheckDef, Outcome, run};
use std::collections::{BTreeMap, BTreeSet};

/// One run per type of check (and a failed run), as the table's types name them.
const SCENARIOS: &[&str] = &[
    "http",
    "https",
    "http3",
    "tcp",
    "tcp with TLS",
    "tls",
    "dns",
    "icmp",
    "journey",
    "failed",
];

/// What a word of the table's "types" column covers.
fn scenarios_of(types_word: &str) -> Option<&'static [&'static str]> {
    Some(match types_word {
        "all" => &SCENARIOS[..SCENARIOS.len() - 1],
        "http" => &["http", "https"],
        "http3" => &["http3"],
        "https" => &["https"],
        "tls" => &["tls"],
        "tcp with TLS" => &["tcp with TLS"],
        "dns" => &["dns"],
        "icmp" => &["icmp"],
        "journeys" => &["journey"],
        "any failed run" => &["failed"],
        _ => return None,
    })
}

/// The Results table: metric names (without labels) -> the scenarios that must emit them.
fn documented() -> BTreeMap<String, BTreeSet<&'static str>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/CHECKS.md");
    let doc = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let table = doc
        .split("| metric | types |")
        .nth(1)
        .unwrap_or_else(|| panic!("{path} has no `| metric | types |` table"));
    let mut out: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    for line in table.lines().skip(2) {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        let [_, metrics, types, _] = cols[..] else {
            break;
        };
        // "all (every type ...)", "any failed run: why ...": the words before the comment.
        let types = types.split(['(', ':']).next().unwrap_or_default();
        let mut covered = BTreeSet::new();
        for word in types.split(',').map(str::trim) {
            let s = scenarios_of(word).unwrap_or_else(|| {
                panic!("{path}: type {word:?} in the Results table is unknown to this test")
            });
            covered.extend(s.iter().copied());
        }
        for name in metrics.split('`').skip(1).step_by(2) {
            let name = name.split('{').next().unwrap_or_default().to_string();
            out.entry(name).or_default().extend(covered.iter().copied());
        }
    }
    assert!(out.len() > 20, "{path}: only {} metrics found", out.len());
    out
}

/// Every metric name in the samples of an outcome.
fn emitted(def: &CheckDef, o: &Outcome) -> BTreeSet<String> {
    o.to_batch(def, 0, &[])
        .series
        .iter()
        .filter_map(|s| s.labels.metric_name().map(str::to_string))
        .collect()
}

const PING_RANGE: &str = "/proc/sys/net/ipv4/ping_group_range";

/// Runs a check with ping sockets allowed to every group where this process may allow it,
/// restoring the setting afterwards.
async fn run_allowing_ping(def: &CheckDef) -> Outcome {
    let orig = std::fs::read_to_string(PING_RANGE).ok();
    let widened = orig.is_some() && std::fs::write(PING_RANGE, "0 2147483647").is_ok();
    let o = run(def).await;
    if let (true, Some(orig)) = (widened, orig) {
        std::fs::write(PING_RANGE, orig.trim()).expect("restore ping_group_range");
    }
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_metric_is_emitted_by_its_check_type() {
    let h = http_server().await;
    let (s, ca) = https_server().await;
    let (q, q_ca) = h3_server().await;
    let b = banner_server().await;
    let d = dns_server().await;
    let ca = ca.display();
    let defs: Vec<(&str, String)> = vec![
        (
            "http",
            format!(
                "{{name: http, type: http, frequency: 10s, url: 'http://{h}/ok', assert: {{body_regex: ok}}}}"
            ),
        ),
        (
            "https",
            format!(
                "{{name: https, type: http, frequency: 10s, url: 'https://localhost:{}/ok', \
                 tls: {{ca_file: '{ca}'}}, assert: {{body_regex: ok}}}}",
                s.port()
            ),
        ),
        (
            "http3",
            format!(
                "{{name: h3, type: http3, frequency: 10s, url: 'https://localhost:{}/ok', \
                 tls: {{ca_file: '{}'}}, assert: {{body_regex: ok}}, preferred_ip_protocol: ip4}}",
                q.port(),
                q_ca.display()
            ),
        ),
        (
            "tcp",
            format!(
                "{{name: tcp, type: tcp, frequency: 10s, target: 'localhost:{}'}}",
                b.port()
            ),
        ),
        (
            "tcp with TLS",
            format!(
                "{{name: tcps, type: tcp, frequency: 10s, target: 'localhost:{}', tls: {{ca_file: '{ca}'}}}}",
                s.port()
            ),
        ),
        (
            "tls",
            format!(
                "{{name: tls, type: tls, frequency: 10s, target: 'localhost:{}', tls: {{ca_file: '{ca}'}}}}",
                s.port()
            ),
        ),
        (
            "dns",
            format!("{{name: dns, type: dns, frequency: 10s, query: ok.test, resolver: '{d}'}}"),
        ),
        (
            "icmp",
            "{name: icmp, type: icmp, frequency: 10s, timeout: 2s, target: 127.0.0.1}".into(),
        ),
        (
            "journey",
            format!(
                "{{name: j, type: http, frequency: 10s, steps: [{{name: a, url: 'http://{h}/ok'}}, {{url: 'http://{h}/json'}}]}}"
            ),
        ),
        (
            "failed",
            format!("{{name: f, type: http, frequency: 10s, url: 'http://{h}/fail'}}"),
        ),
    ];
    assert_eq!(
        defs.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        SCENARIOS,
        "one run per scenario"
    );

    let doc = documented();
    let mut problems = Vec::new();
    for (scenario, yaml) in &defs {
        let def = check(yaml);
        let o = if *scenario == "icmp" {
            let o = run_allowing_ping(&def).await;
            if o.reason
                .as_deref()
                .is_some_and(|r| r.contains("ping_group_range"))
            {
                println!("icmp exempt: this process may not open ping sockets here");
                continue;
            }
            o
        } else {
            run(&def).await
        };
        assert_eq!(o.success, *scenario != "failed", "{scenario}: {o:?}");
        let got = emitted(&def, &o);
        for (name, scenarios) in &doc {
            let listed = scenarios.contains(scenario);
            let is = got.contains(name);
            if listed && !is {
                problems.push(format!(
                    "{scenario}: CHECKS.md lists {name}, the run emits none"
                ));
            }
        }
        for name in &got {
            // A failed http run still has its http metrics.
            let allowed = |s: &BTreeSet<&str>| {
                s.contains(scenario) || (*scenario == "failed" && s.contains("http"))
            };
            if !doc.get(name).is_some_and(allowed) {
                problems.push(format!(
                    "{scenario}: emits {name}, CHECKS.md does not list it"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
