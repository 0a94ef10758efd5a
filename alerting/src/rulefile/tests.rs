//! Rule file reading and `promtool check rules`-style validation.

use super::*;

fn problems(yaml: &str) -> Vec<String> {
    match parse_rule_file("rules.yml", yaml) {
        Ok(_) => Vec::new(),
        Err(ps) => ps.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn reads_a_valid_file() {
    let yaml = r#"
groups:
  - name: node
    interval: 30s
    limit: 5
    rules:
      - record: instance:up:sum
        expr: sum by (instance) (up)
        labels:
          source: rules
      - alert: HostDown
        expr: |
          up
            == 0
        for: 1h30m
        keep_firing_for: 5m
        labels:
          severity: page
          priority: 1
        annotations:
          summary: "{{ $labels.instance }} down, value {{ printf \"%.2f\" $value }}"
"#;
    let f = parse_rule_file("rules.yml", yaml).expect("valid");
    let g = &f.groups[0];
    assert_eq!(
        (g.name.as_str(), g.interval_ms, g.limit),
        ("node", Some(30_000), 5)
    );
    assert_eq!(g.rules[0].kind, RuleKind::Record("instance:up:sum".into()));
    assert_eq!(g.rules[1].kind, RuleKind::Alert("HostDown".into()));
    assert_eq!(g.rules[1].expr, "up\n  == 0\n");
    assert_eq!(
        (g.rules[1].for_ms, g.rules[1].keep_firing_for_ms),
        (5_400_000, 300_000)
    );
    assert_eq!(g.rules[1].labels["priority"], "1");
    assert_eq!(g.rules[1].line, 11);
}

#[test]
fn reports_every_problem_with_its_place() {
    let yaml = r#"groups:
  - name: a
    rules:
      - record: bad-name
        expr: up
        for: 5m
      - alert: X
        record: y
        expr: up
      - expr: up
      - alert: Y
        expr: sum(
        labels:
          "bad-label": x
        annotations:
          s: "{{ nosuch }}"
      - alert: Z
        expr: up
        for: 5 minutes
  - name: a
    interval: 1x
    rules: []
"#;
    assert_eq!(
        problems(yaml),
        vec![
            "rules.yml: 4:17: group \"a\", rule 1, \"bad-name\": invalid field 'for' in recording rule",
            "rules.yml: 4:17: group \"a\", rule 1, \"bad-name\": invalid recording rule name: bad-name",
            "rules.yml: 8:17: group \"a\", rule 2, \"X\": only one of 'record' and 'alert' must be set",
            "rules.yml: 10:9: group \"a\", rule 3, \"\": one of 'record' or 'alert' must be set",
            "rules.yml: 12:15: group \"a\", rule 4, \"Y\": could not parse expression: parse error: unclosed left parenthesis",
            "rules.yml: 11:9: group \"a\", rule 4, \"Y\": invalid label name: bad-label",
            "rules.yml: 11:9: group \"a\", rule 4, \"Y\": annotation \"s\": template: __alert_Y:1: function \"nosuch\" not defined",
            "rules.yml: 19:14: group \"a\", rule 5, \"Z\": for: not a valid duration string: \"5 minutes\"",
            "rules.yml: 20:5: groupname: \"a\" is repeated in the same file",
            "rules.yml: 21:15: group \"a\", interval: not a valid duration string: \"1x\"",
        ]
    );
}

#[test]
fn reports_yaml_errors_and_unknown_keys() {
    let p = problems("groups:\n  - name: a\n    rulez: []\n");
    assert_eq!(p.len(), 1);
    assert!(p[0].starts_with("rules.yml: 3:"), "{p:?}");
    assert!(p[0].contains("rulez"), "{p:?}");
    let p = problems("groups: [\n");
    assert_eq!(p.len(), 1, "{p:?}");
}

#[test]
fn sample_files_load_unchanged() {
    for name in [
        "node.rules.yml",
        "kube-prometheus.rules.yml",
        "outpost.rules.yml",
    ] {
        let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("sample file");
        if let Err(ps) = parse_rule_file(name, &text) {
            panic!(
                "{name}: {}",
                ps.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

#[test]
fn scalars_of_any_yaml_type_read_as_text() {
    let yaml = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: 1\n        for: 0\n        labels:\n          priority: 2\n          critical: true\n          ratio: 0.50\n";
    let f = parse_rule_file("r.yml", yaml).expect("valid");
    let r = &f.groups[0].rules[0];
    assert_eq!((r.expr.as_str(), r.for_ms), ("1", 0));
    assert_eq!(r.labels["priority"], "2");
    assert_eq!(r.labels["critical"], "true");
    assert_eq!(r.labels["ratio"], "0.50");
}

#[test]
fn empty_file_has_no_groups() {
    assert!(
        parse_rule_file("r.yml", "")
            .expect("valid")
            .groups
            .is_empty()
    );
    assert!(
        parse_rule_file("r.yml", "groups: []\n")
            .expect("valid")
            .groups
            .is_empty()
    );
}
