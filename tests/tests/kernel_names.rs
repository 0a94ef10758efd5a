//! Names the kernel gives as bytes: a real tmpfs mounted on a directory whose name is not
//! UTF-8, collected by `outpost-agent collect --once`. In a test binary of its own, since
//! node_exporter 1.5 (which node_parity.rs runs) panics on such a mount point.

use outpost_tests::*;

fn agent_collect(dir: &std::path::Path) -> (String, String) {
    // `collect` reads only [collect]; the other required keys are placeholders.
    let cfg = dir.join("agent.toml");
    std::fs::write(
        &cfg,
        "id = \"names\"\nregion = \"test\"\n[aggregator]\nendpoints = [\"127.0.0.1:9\"]\nca = \"ca.crt\"\ncert = \"a.crt\"\nkey = \"a.key\"\n[buffer]\ndir = \"buf\"\n[collect]\ninterval = \"1s\"\n",
    )
    .unwrap();
    collect_once(&cfg)
}

/// A mount point whose name is not UTF-8 (Latin-1 "café") is a real file system with sizes:
/// `statvfs` gets the exact bytes and only the label is made valid UTF-8.
#[test]
fn a_mount_point_that_is_not_utf8_reports_its_sizes() {
    use std::os::unix::ffi::OsStrExt;
    if !is_root() {
        println!("skipped: mounting a tmpfs needs root");
        return;
    }
    let tmp = TempDir::new("nonutf8-mount");
    let dir = tmp.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9 \\x"));
    let _m = Mounted::tmpfs(&dir, "2m");

    let (text, stderr) = agent_collect(tmp.path());
    let label = format!(
        "mountpoint=\"{}\"",
        dir.to_string_lossy().replace('\\', "\\\\")
    );
    let series = |name: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(&label))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    assert_eq!(
        series("node_filesystem_device_error"),
        Some(0.0),
        "no {label} in:\n{text}\nstderr:\n{stderr}"
    );
    assert_eq!(
        series("node_filesystem_size_bytes"),
        Some(2.0 * 1024.0 * 1024.0)
    );
    assert_eq!(series("node_filesystem_readonly"), Some(0.0));
    assert!(series("node_filesystem_files").is_some_and(|f| f > 0.0));
}
