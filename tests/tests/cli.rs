//! The command lines: config checking, certificate commands, help and version.

use outpost_tests::*;
use std::process::Command;

#[test]
fn check_config_names_the_file_and_every_bad_key() {
    let tmp = TempDir::new("check");
    let f = tmp.path().join("agent.toml");
    std::fs::write(&f, "id = \"bad id\"\nregion = \"r\"\n[aggregator]\nendpoints = [\"nohost\"]\nca = \"ca.crt\"\ncert = \"a.crt\"\nkey = \"a.key\"\n[buffer]\ndir = \"b\"\n[collect]\ninterval = \"5ms\"\n").unwrap();
    let (ok, out) = run(Command::new(bin("outpost-agent"))
        .args(["check-config", "--config"])
        .arg(&f));
    assert!(!ok);
    for needle in [
        "id: invalid agent id",
        "aggregator.endpoints: \"nohost\" is not",
        "aggregator.ca: cannot open",
        "collect.interval: 5ms is too short",
    ] {
        assert!(out.contains(needle), "missing {needle:?}:\n{out}");
    }
    assert!(out.contains(&f.display().to_string()));

    std::fs::write(&f, "id = \"a\"\nregion = \"r\"\nrgeion = \"typo\"\n").unwrap();
    let (ok, out) = run(Command::new(bin("outpost-agent"))
        .args(["check-config", "--config"])
        .arg(&f));
    assert!(
        !ok && out.contains("rgeion") && out.contains("agent.toml"),
        "{out}"
    );

    let g = tmp.path().join("aggregator.toml");
    std::fs::write(&g, "data_dir = \"d\"\n[listen]\nhttp = \"0.0.0.0:9470\"\n[tls]\nca = \"x\"\ncert = \"y\"\nkey = \"z\"\n").unwrap();
    let (ok, out) = run(Command::new(bin("outpost-aggregator"))
        .args(["check-config", "--config"])
        .arg(&g));
    assert!(
        !ok && out.contains("api.bearer_token_file") && out.contains("tls.cert: cannot open"),
        "{out}"
    );
}

#[test]
fn certs_commands_write_the_documented_files_and_configs_check_clean() {
    let tmp = TempDir::new("certs");
    let certs = Certs::init(&tmp.path().join("c"));
    for f in ["ca.crt", "ca.key", "aggregator.crt", "aggregator.key"] {
        assert!(certs.dir.join(f).exists(), "{f}");
    }
    let (crt, key) = certs.agent("web-1");
    assert!(crt.exists() && key.exists());
    let (ok, out) = run(Command::new(bin("outpost-aggregator"))
        .args(["certs", "agent", "--dir"])
        .arg(&certs.dir)
        .args(["--id", "../x"]));
    assert!(!ok && out.contains("invalid agent id"), "{out}");
    let (ok, out) = run(Command::new(bin("outpost-aggregator"))
        .args(["certs", "init", "--dir"])
        .arg(&certs.dir));
    assert!(!ok && out.contains("a CA already exists"), "{out}");

    let f = tmp.path().join("agent.toml");
    std::fs::write(
        &f,
        format!("id = \"web-1\"\nregion = \"r\"\n[aggregator]\nendpoints = [\"127.0.0.1:9471\"]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n[buffer]\ndir = \"b\"\n", certs.ca().display(), crt.display(), key.display()),
    )
    .unwrap();
    let (ok, out) = run(Command::new(bin("outpost-agent"))
        .args(["check-config", "--config"])
        .arg(&f));
    assert!(ok, "{out}");
    // A key that belongs to another certificate is caught before starting.
    let swapped = std::fs::read_to_string(&f).unwrap().replace(
        &key.display().to_string(),
        &certs.dir.join("aggregator.key").display().to_string(),
    );
    std::fs::write(&f, swapped).unwrap();
    let (ok, out) = run(Command::new(bin("outpost-agent"))
        .args(["check-config", "--config"])
        .arg(&f));
    assert!(!ok && out.contains("do not form a usable pair"), "{out}");
}

#[test]
fn packaged_example_configs_parse() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("packaging");
    for (bin_name, file) in [
        ("outpost-agent", "agent.toml"),
        ("outpost-aggregator", "aggregator.toml"),
    ] {
        let (_, out) = run(Command::new(bin(bin_name))
            .args(["check-config", "--config"])
            .arg(root.join(file)));
        // The examples name files under /etc that do not exist here: only those may be reported.
        for line in out.lines() {
            assert!(
                line.contains("cannot open") || line.contains("cannot read"),
                "{file}: unexpected problem: {line}"
            );
        }
    }
}

#[test]
fn help_and_version() {
    for b in ["outpost-agent", "outpost-aggregator"] {
        let (ok, out) = run(Command::new(bin(b)).arg("--version"));
        assert!(ok && out.contains(env!("CARGO_PKG_VERSION")), "{out}");
        let (ok, out) = run(Command::new(bin(b)).arg("--help"));
        assert!(ok && out.contains("check-config"), "{out}");
    }
}
