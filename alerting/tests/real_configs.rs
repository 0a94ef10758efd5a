//! Alertmanager configurations of the kinds users bring (`tests/data/alertmanager/*.yml`:
//! the shape Kubernetes monitoring stacks ship by default, and a team-routed one in old and
//! new spellings with every integration Outpost sends to, templates and time intervals)
//! load unchanged, are accepted by the real `amtool check-config` (Alertmanager 0.25), and
//! route every label combination to the receivers `amtool config routes test` names.

mod common;

use outpost_alerting::amconfig::parse_alertmanager_config;
use std::path::PathBuf;
use std::process::Command;

fn files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/alertmanager");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("data dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    out.sort();
    out
}

#[test]
fn users_configurations_load_and_route_as_alertmanager_does() {
    assert!(
        Command::new("amtool").arg("--version").output().is_ok(),
        "amtool is not installed: run scripts/install-deps (prometheus-alertmanager)"
    );
    let files = files();
    assert!(files.len() >= 2, "{files:?}");
    let values: [(&str, &[&str]); 6] = [
        ("alertname", &["Watchdog", "InfoInhibitor", "HostDown", ""]),
        ("severity", &["critical", "warning", "info", ""]),
        (
            "service",
            &["foo1", "files", "database", "db-main", "web", ""],
        ),
        ("owner", &["team-X", "team-Y", ""]),
        ("team", &["frontend", ""]),
        ("namespace", &["default", ""]),
    ];
    let mut differ = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        let out = Command::new("amtool")
            .arg("check-config")
            .arg(f)
            .output()
            .expect("amtool");
        let theirs = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "amtool refuses {}: {theirs}",
            f.display()
        );
        let cfg = parse_alertmanager_config(&text)
            .unwrap_or_else(|e| panic!("{} does not load: {e:?}", f.display()));
        assert!(
            theirs.contains(&format!(" - {} receivers", cfg.receivers.len())),
            "{}: {theirs}",
            f.display()
        );
        assert!(
            theirs.contains(&format!(" - {} inhibit rules", cfg.inhibit_rules.len())),
            "{}: {theirs}",
            f.display()
        );
        for r in cfg.receivers.values() {
            assert!(r.unsupported().is_empty(), "{}: {}", f.display(), r.name);
        }
        // Every 11th combination (11 shares no factor with the value counts).
        let (checked, found) =
            common::alertmanager::amtool_route_differences(f, &cfg.route, &values, 11);
        assert!(checked > 100, "{checked}");
        differ.extend(found);
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}
