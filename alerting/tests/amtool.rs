//! Alertmanager's routing compared with the real `amtool config routes test` (Debian's
//! prometheus-alertmanager 0.25) on one configuration with nested routes, `continue`, every
//! matcher spelling and missing labels: for many label sets, the receivers chosen must be
//! the same, in the same order.

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
    let total: usize = values.iter().map(|(_, v)| v.len()).product();
    let mut checked = 0;
    let mut differ = Vec::new();
    // Every 7th combination (7 shares no factor with the value counts, so every value of
    // every label is visited).
    for k in (0..total).step_by(7) {
        let mut rest = k;
        let mut labels = BTreeMap::new();
        for (name, vals) in &values {
            let v = vals[rest % vals.len()];
            rest /= vals.len();
            if !v.is_empty() {
                labels.insert(name.to_string(), v.to_string());
            }
        }
        let args: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let out = Command::new("amtool")
            .args(["config", "routes", "test"])
            .arg(format!("--config.file={}", file.display()))
            .args(&args)
            .output()
            .expect("amtool");
        let theirs = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let ours: Vec<&str> = root
            .matches(&labels)
            .iter()
            .map(|r| r.receiver.as_str())
            .collect();
        let ours = ours.join(",");
        if ours != theirs {
            differ.push(format!("{args:?}: outpost {ours}, amtool {theirs}"));
        }
        checked += 1;
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(checked > 40, "{checked}");
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}
