//! Install and operate: the systemd units verify clean, the Debian packages hold what they
//! should, `check-config` lists every problem at once, and both programs' `/metrics`
//! follow Prometheus' naming conventions and cover what an operator alerts on.

use outpost_tests::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `systemd-analyze verify` checks that ExecStart= binaries exist and are executable. The
/// units name their installed path, /usr/bin/outpost-*, which a build machine does not
/// have; so the test verifies copies in a temporary folder in which only that path is
/// replaced by the binary just built. Every other line is verified as shipped. verify
/// exits 0 on many warnings (unknown keys, bad values), so any output at all fails.
#[test]
fn systemd_units_verify_without_a_warning() {
    let tmp = TempDir::new("units");
    let mut files = vec![];
    for unit in ["outpost-agent.service", "outpost-aggregator.service"] {
        let text = std::fs::read_to_string(repo().join("systemd").join(unit)).unwrap();
        for key in [
            "Type=notify",
            "WatchdogSec=",
            "Restart=on-failure",
            "StateDirectory=",
            "ConfigurationDirectory=outpost",
            "User=",
            "ProtectSystem=strict",
            "ProtectHome=",
            "PrivateTmp=yes",
            "NoNewPrivileges=yes",
            "CapabilityBoundingSet=",
            "ExecReload=/bin/kill -HUP $MAINPID",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(key)),
                "{unit} lacks {key}"
            );
        }
        let program = unit.trim_end_matches(".service");
        let text = text.replace(
            &format!("/usr/bin/{program}"),
            &bin(program).display().to_string(),
        );
        let f = tmp.path().join(unit);
        std::fs::write(&f, text).unwrap();
        files.push(f);
    }
    let agent = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        agent.contains("CapabilityBoundingSet=CAP_NET_RAW\n"),
        "the agent keeps only CAP_NET_RAW"
    );
    let agg = std::fs::read_to_string(&files[1]).unwrap();
    assert!(
        agg.contains("CapabilityBoundingSet=\n"),
        "the aggregator keeps no capability"
    );

    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&files)
        .output()
        .unwrap_or_else(|e| panic!("systemd-analyze not found ({e}); scripts/install-deps installs the `systemd` package"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify:\n{text}"
    );

    // And the check is real: an unknown key makes it talk.
    std::fs::write(
        &files[0],
        agent.replace("PrivateTmp=yes", "PrivateTmp=yes\nProtectEverything=yes"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&files[0])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unknown key 'ProtectEverything'"));
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let (ok, out) = run(Command::new("dpkg-deb").args(args).arg(deb));
    assert!(ok, "dpkg-deb {args:?} {}: {out}", deb.display());
    out
}

/// Builds both packages with `scripts/package --no-build` (cargo-deb, installed by the
/// script when missing) from the release binaries, and reads them back with dpkg-deb.
#[test]
fn debian_packages_hold_binary_unit_config_and_maintainer_scripts() {
    let tmp = TempDir::new("deb");
    let (ok, out) = run(Command::new(repo().join("scripts/package"))
        .arg("--no-build")
        .arg(tmp.path()));
    assert!(ok, "scripts/package failed:\n{out}");
    for (pkg, config) in [
        ("outpost-agent", "agent.toml"),
        ("outpost-aggregator", "aggregator.toml"),
    ] {
        let deb = std::fs::read_dir(tmp.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb"))
            })
            .unwrap_or_else(|| panic!("no {pkg}_*.deb in:\n{out}"));

        let contents = dpkg_deb(&["-c"], &deb);
        let entry = |path: &str| {
            contents
                .lines()
                .find(|l| l.ends_with(path))
                .unwrap_or_else(|| panic!("{pkg} lacks {path}:\n{contents}"))
        };
        assert!(
            entry(&format!("./usr/bin/{pkg}")).starts_with("-rwxr-xr-x 0/0"),
            "{contents}"
        );
        assert!(entry(&format!("./lib/systemd/system/{pkg}.service")).starts_with("-rw-r--r--"));
        entry(&format!("./etc/outpost/{config}"));
        if pkg == "outpost-aggregator" {
            entry("./usr/share/doc/outpost-aggregator/examples/checks.yaml");
        }
        entry(&format!("./usr/share/doc/{pkg}/README.md"));

        let fields = |f: &str| {
            dpkg_deb(&["-f"], &deb)
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{f}: ")).map(str::to_string))
                .unwrap_or_default()
        };
        assert_eq!(fields("Package"), pkg);
        assert!(
            fields("Version").starts_with(&format!("{}-", env!("CARGO_PKG_VERSION"))),
            "Version: {}",
            fields("Version")
        );
        assert_eq!(fields("Architecture"), dpkg_arch());
        let depends = fields("Depends");
        assert!(
            depends.contains("adduser") && depends.contains("libc6"),
            "Depends: {depends}"
        );
        assert!(
            !fields("Description").contains("generated from Rust crate"),
            "{pkg} has no description"
        );

        let info = dpkg_deb(&["-I"], &deb);
        for script in ["postinst", "prerm", "postrm"] {
            assert!(
                info.contains(&format!(" {script} ")),
                "{pkg} has no {script}:\n{info}"
            );
        }
        assert!(
            info.contains(" conffiles "),
            "{pkg} marks no conffiles:\n{info}"
        );
        let ctl = tmp.path().join(format!("{pkg}-control"));
        let (ok, out) = run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&ctl));
        assert!(ok, "{out}");
        assert_eq!(
            std::fs::read_to_string(ctl.join("conffiles"))
                .unwrap()
                .trim(),
            format!("/etc/outpost/{config}")
        );
        let postinst = std::fs::read_to_string(ctl.join("postinst")).unwrap();
        assert!(
            postinst.contains("adduser --system --group")
                && postinst.contains(&format!("NAME={pkg}")),
            "{postinst}"
        );
        assert!(
            postinst.contains("install -d -o \"$NAME\" -g \"$NAME\" -m 0750 \"/var/lib/$NAME\""),
            "{postinst}"
        );
        for script in ["postinst", "prerm", "postrm"] {
            let (ok, out) = run(Command::new("sh").arg("-n").arg(ctl.join(script)));
            assert!(ok, "{pkg} {script} is not valid sh: {out}");
        }

        // The shipped default config is the documented example and names /var/lib/<pkg>.
        let dir = tmp.path().join(format!("{pkg}-root"));
        let (ok, out) = run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir));
        assert!(ok, "{out}");
        let shipped = std::fs::read_to_string(dir.join("etc/outpost").join(config)).unwrap();
        assert_eq!(
            shipped,
            std::fs::read_to_string(repo().join("packaging").join(config)).unwrap()
        );
        assert!(
            shipped.contains(&format!("/var/lib/{pkg}")),
            "{config} keeps data outside /var/lib/{pkg}"
        );
        let unit =
            std::fs::read_to_string(dir.join(format!("lib/systemd/system/{pkg}.service"))).unwrap();
        assert_eq!(
            unit,
            std::fs::read_to_string(repo().join("systemd").join(format!("{pkg}.service"))).unwrap()
        );
        // The packaged binary is the one built, and runs.
        let (ok, out) = run(Command::new(dir.join("usr/bin").join(pkg)).arg("--version"));
        assert!(ok && out.contains(env!("CARGO_PKG_VERSION")), "{out}");
    }
}

fn dpkg_arch() -> String {
    run(Command::new("dpkg").arg("--print-architecture"))
        .1
        .trim()
        .to_string()
}

/// One config with many problems: all of them come out in one run, each naming file and key.
#[test]
fn check_config_lists_every_problem_at_once() {
    let tmp = TempDir::new("check-all");
    let certs = Certs::init(&tmp.path().join("certs"));
    let (crt, _key) = certs.agent("web-1");
    let garbage = tmp.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").unwrap();
    let not_a_dir = tmp.path().join("file");
    std::fs::write(&not_a_dir, "x").unwrap();
    let f = tmp.path().join("agent.toml");
    std::fs::write(
        &f,
        format!(
            "id = \"web-2\"\nregion = \"r\"\n[aggregator]\nendpoints = [\"aggregator.example:9471\", \"no-port\"]\nca = \"{garbage}\"\ncert = \"{crt}\"\nkey = \"{wrong_key}\"\n[buffer]\ndir = \"{buf}\"\n[http]\nlisten = \"localhost:x\"\n[log]\nlevel = \"[[[\"\n[telemetry]\notlp_endpoint = \"https://collector:4318\"\n",
            garbage = garbage.display(),
            crt = crt.display(),
            wrong_key = certs.dir.join("aggregator.key").display(),
            buf = not_a_dir.join("buf").display(),
        ),
    )
    .unwrap();
    let (ok, out) = run(Command::new(bin("outpost-agent"))
        .args(["check-config", "--config"])
        .arg(&f));
    assert!(!ok, "{out}");
    let expected = [
        "aggregator.endpoints: \"no-port\" is not \"host:port\"",
        "http.listen: \"localhost:x\" is not an address",
        "log.level: \"[[[\" is not a log filter",
        "telemetry.otlp_endpoint: \"https://collector:4318\": https is not supported",
        "aggregator.ca: ",
        "no certificate found",
        "aggregator.key: ",
        "do not form a usable pair",
        "aggregator.cert: ",
        "is issued to \"web-1\" but id is \"web-2\"",
        "buffer.dir: ",
        "is not a folder",
    ];
    for needle in expected {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 8, "one line per problem:\n{out}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with(&format!("{}: ", f.display()))),
        "every line names the file:\n{out}"
    );

    let g = tmp.path().join("aggregator.toml");
    std::fs::write(
        &g,
        format!(
            "data_dir = \"{data}\"\n[listen]\nquic = \"0.0.0.0:99999\"\nhttp = \"0.0.0.0:9470\"\n[tls]\nca = \"{ca}\"\ncert = \"{crt}\"\nkey = \"/nonexistent/aggregator.key\"\n[api]\nbearer_token_file = \"{empty}\"\n",
            data = not_a_dir.display(),
            ca = certs.ca().display(),
            crt = garbage.display(),
            empty = not_a_dir.display(),
        ),
    )
    .unwrap();
    std::fs::write(&not_a_dir, "").unwrap();
    let (ok, out) = run(Command::new(bin("outpost-aggregator"))
        .args(["check-config", "--config"])
        .arg(&g));
    assert!(!ok, "{out}");
    for needle in [
        "listen.quic: \"0.0.0.0:99999\" is not an address",
        "tls.key: cannot open /nonexistent/aggregator.key",
        "api.bearer_token_file: ",
        "is empty",
        "tls.cert: ",
        "no certificate found",
        "data_dir: ",
        "exists and is not a folder",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    assert_eq!(out.lines().count(), 5, "one line per problem:\n{out}");
}

/// One metric family from a text exposition.
#[derive(Default, Debug)]
struct Family {
    kind: String,
    help: String,
    unit: Option<String>,
    samples: Vec<String>,
}

/// Parses the Prometheus/OpenMetrics text format into families keyed by name.
fn parse_exposition(text: &str) -> BTreeMap<String, Family> {
    let mut fams: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, val) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            let f = fams.entry(name.to_string()).or_default();
            match kw {
                "TYPE" => f.kind = val.to_string(),
                "HELP" => f.help = val.to_string(),
                "UNIT" => f.unit = Some(val.to_string()),
                "EOF" => {}
                other => panic!("unknown comment {other:?} in {line:?}"),
            }
        } else if !line.trim().is_empty() {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let fam = fams
                .keys()
                .filter(|f| name.starts_with(f.as_str()))
                .max_by_key(|f| f.len())
                .cloned()
                .unwrap_or_else(|| panic!("sample {line:?} before its # TYPE"));
            fams.get_mut(&fam).unwrap().samples.push(name);
        }
    }
    fams
}

fn check_conventions(prefix: &str, text: &str, required: &[(&str, &str)]) {
    let fams = parse_exposition(text);
    assert!(
        text.trim_end().ends_with("# EOF"),
        "exposition ends with # EOF"
    );
    for (name, f) in &fams {
        if name.is_empty() {
            continue;
        }
        assert!(name.starts_with(prefix), "{name} lacks the {prefix} prefix");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{name} is not snake_case"
        );
        assert!(!f.help.trim().is_empty(), "{name} has no HELP");
        assert!(
            ["counter", "gauge", "histogram", "info", "summary"].contains(&f.kind.as_str()),
            "{name}: type {:?}",
            f.kind
        );
        if let Some(u) = &f.unit {
            assert!(
                name.ends_with(&format!("_{u}")),
                "{name} does not end in its unit {u}"
            );
        }
        let words: Vec<&str> = name[prefix.len()..].split('_').collect();
        if words
            .iter()
            .any(|w| ["duration", "age", "time", "timestamp", "latency"].contains(w))
        {
            assert!(
                name.ends_with("_seconds"),
                "{name} measures time but does not end in _seconds"
            );
        }
        match f.kind.as_str() {
            "counter" => {
                assert!(
                    !name.ends_with("_total"),
                    "{name}: the family name carries no _total, its samples do"
                );
                assert!(
                    f.samples
                        .iter()
                        .all(|s| s.ends_with("_total") || s.ends_with("_created")),
                    "{name}: counter samples must end in _total: {:?}",
                    f.samples
                );
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    assert!(
                        f.samples.iter().any(|s| s.ends_with(suffix)),
                        "{name} has no {suffix}"
                    );
                }
            }
            "gauge" => assert!(!name.ends_with("_total"), "gauge {name} ends in _total"),
            _ => {}
        }
    }
    for (name, kind) in required {
        let f = fams.get(*name).unwrap_or_else(|| {
            panic!("missing {name}; have {:?}", fams.keys().collect::<Vec<_>>())
        });
        assert_eq!(&f.kind, kind, "{name}");
    }
}

#[test]
fn both_metrics_endpoints_follow_prometheus_conventions() {
    let tmp = TempDir::new("conventions");
    let certs = Certs::init(&tmp.path().join("certs"));
    let agg = Aggregator::start(tmp.path(), &certs);
    let agent = Agent::start(tmp.path(), &agg, &AgentSpec::new("conv-1", &certs));
    assert!(
        wait_for(Duration::from_secs(20), || metric_value(
            &agent.metrics(),
            "outpost_agent_batches_acked_total"
        )
        .filter(|&v| v >= 2.0))
        .is_some()
    );
    // A query so the latency histogram has a handler series.
    let _ = agg.query("up");

    let a = agent.metrics();
    check_conventions(
        "outpost_agent_",
        &a,
        &[
            ("outpost_agent_cycles", "counter"),
            ("outpost_agent_collect_duration_seconds", "histogram"),
            ("outpost_agent_buffer_bytes", "gauge"),
            ("outpost_agent_buffer_batches", "gauge"),
            ("outpost_agent_buffer_oldest_age_seconds", "gauge"),
            ("outpost_agent_buffer_dropped_samples", "counter"),
            ("outpost_agent_batches_acked", "counter"),
            ("outpost_agent_uplink_connected", "gauge"),
            ("outpost_agent_uplink_reconnects", "counter"),
            ("outpost_agent_config_last_reload_successful", "gauge"),
            (
                "outpost_agent_config_last_reload_success_timestamp_seconds",
                "gauge",
            ),
            ("outpost_agent_build_info", "gauge"),
            ("outpost_agent_start_time_seconds", "gauge"),
        ],
    );
    assert_eq!(
        metric_value(&a, "outpost_agent_uplink_connected "),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &a,
            &format!(
                "outpost_agent_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0)
    );

    let g = agg.metrics();
    check_conventions(
        "outpost_aggregator_",
        &g,
        &[
            ("outpost_aggregator_ingest_samples", "counter"),
            ("outpost_aggregator_ingest_batches", "counter"),
            ("outpost_aggregator_ingest_errors", "counter"),
            ("outpost_aggregator_ingest_malformed_frames", "counter"),
            (
                "outpost_aggregator_ingest_commit_duration_seconds",
                "histogram",
            ),
            ("outpost_aggregator_connected_agents", "gauge"),
            ("outpost_aggregator_connections_refused", "counter"),
            ("outpost_aggregator_storage_bytes", "gauge"),
            ("outpost_aggregator_storage_series", "gauge"),
            (
                "outpost_aggregator_http_request_duration_seconds",
                "histogram",
            ),
            ("outpost_aggregator_http_requests", "counter"),
            ("outpost_aggregator_config_last_reload_successful", "gauge"),
            (
                "outpost_aggregator_config_last_reload_success_timestamp_seconds",
                "gauge",
            ),
            ("outpost_aggregator_build_info", "gauge"),
            ("outpost_aggregator_start_time_seconds", "gauge"),
        ],
    );
    assert_eq!(
        metric_value(&g, "outpost_aggregator_connected_agents "),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &g,
            "outpost_aggregator_connections_refused_total{reason=\"identity\"}"
        ),
        Some(0.0),
        "refusal reasons start at 0"
    );
    for reason in ["retention", "max_bytes"] {
        assert_eq!(
            metric_value(
                &g,
                &format!(
                    "outpost_aggregator_storage_partitions_deleted_total{{reason=\"{reason}\"}}"
                )
            ),
            Some(0.0),
            "deletions by {reason} start at 0"
        );
    }
    assert!(metric_value(&g, "outpost_aggregator_ingest_samples_total ").is_some_and(|v| v > 0.0));
    assert!(metric_value(&g, "outpost_aggregator_storage_bytes ").is_some_and(|v| v > 0.0));
    assert!(
        metric_value(
            &g,
            "outpost_aggregator_http_request_duration_seconds_count{handler=\"/api/v1/query\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "query latency is observed per handler:\n{g}"
    );
    assert!(
        g.contains(
            "outpost_aggregator_http_requests_total{handler=\"/api/v1/query\",code=\"200\"}"
        ),
        "{g}"
    );
}

#[test]
fn parse_exposition_groups_samples_by_family() {
    let f = parse_exposition(
        "# HELP a_b x\n# TYPE a_b counter\na_b_total 1\n# HELP a_b_c y\n# TYPE a_b_c gauge\na_b_c 2\n# EOF\n",
    );
    assert_eq!(f["a_b"].samples, vec!["a_b_total"]);
    assert_eq!(f["a_b_c"].samples, vec!["a_b_c"]);
    assert_eq!(f["a_b_c"].kind, "gauge");
}
