//! Parity with node_exporter: the real `prometheus-node-exporter` (Debian package, installed
//! by scripts/install-deps) runs on loopback beside `outpost-agent collect --once`, and every
//! metric family the agent emits must exist in node_exporter's output with the same type,
//! HELP text and label names; stable gauges must agree in value; and node_exporter's families of the
//! collectors the agent has must be present in the agent's output, apart from the gaps
//! docs/METRICS.md lists.

use outpost_tests::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// node_exporter 1.5's upstream defaults, which the agent follows; Debian's package changes
/// them (it also excludes /run, /mnt, /media and the `lo` interface).
const MOUNT_POINTS_EXCLUDE: &str =
    "^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";

/// node_exporter families, of collectors the agent has, that the agent does not report; each
/// is listed as missing in docs/METRICS.md.
const KNOWN_GAPS: &[&str] = &[
    "node_disk_info",
    "node_network_receive_nohandler_total",
    // netclass (sysfs), whose families share netdev's prefix.
    "node_network_transmit_queue_length",
    "node_time_zone_offset_seconds",
];

/// The prefixes of the families of node_exporter collectors the agent has, for the reverse
/// check (node_network_ and node_cpu_ are shared with collectors the agent lacks: netclass,
/// cpu info, so only their netdev and cpu/cpufreq parts are listed).
const COVERED_PREFIXES: &[&str] = &[
    "node_memory_",
    "node_vmstat_",
    "node_netstat_",
    "node_sockstat_",
    "node_filesystem_",
    "node_disk_",
    "node_network_receive_",
    "node_network_transmit_",
    "node_pressure_",
    "node_filefd_",
    "node_load",
    "node_uname_",
    "node_time_",
    "node_cpu_seconds_total",
    "node_cpu_guest_seconds_total",
    "node_cpu_frequency_",
    "node_cpu_scaling_frequency_",
    "node_boot_time_seconds",
    "node_context_switches_total",
    "node_forks_total",
    "node_intr_total",
    "node_procs_",
    // Temperatures only: hwmon's other families (fans, voltages, alarms) are not collected.
    "node_hwmon_temp_celsius",
    "node_hwmon_temp_max_celsius",
    "node_hwmon_temp_crit_celsius",
    "node_hwmon_chip_names",
];

#[derive(Default, Debug)]
struct Family {
    ty: String,
    /// The `# HELP` text as written (escapes kept); `None` without a HELP line.
    help: Option<String>,
    /// Each distinct set of label names (labels with empty values left out, as Prometheus does).
    label_sets: BTreeSet<Vec<String>>,
    /// Rendered label pairs → value.
    samples: BTreeMap<Vec<(String, String)>, f64>,
}

/// A small text exposition reader: `# HELP` and `# TYPE` lines and `name{a="v",...} value`
/// samples.
fn parse(text: &str) -> BTreeMap<String, Family> {
    let mut fams: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            fams.entry(name.to_string()).or_default().help = Some(help.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, ty) = (it.next().unwrap_or_default(), it.next().unwrap_or_default());
            fams.entry(name.to_string()).or_default().ty = ty.to_string();
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let name = &line[..name_end];
        let mut labels = Vec::new();
        let mut rest = &line[name_end..];
        if let Some(mut r) = rest.strip_prefix('{') {
            loop {
                r = r.trim_start_matches(',');
                if let Some(after) = r.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let (lname, after) = r
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("bad labels in {line:?}"));
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => panic!("bad escape in {line:?}"),
                        },
                        Some((i, '"')) => break i,
                        Some((_, c)) => value.push(c),
                        None => panic!("unterminated label value in {line:?}"),
                    }
                };
                if !value.is_empty() {
                    labels.push((lname.to_string(), value));
                }
                r = &after[end + 1..];
            }
        }
        let v: f64 = match rest.split_whitespace().next() {
            Some("NaN") => f64::NAN,
            Some("+Inf") => f64::INFINITY,
            Some("-Inf") => f64::NEG_INFINITY,
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            None => panic!("no value in {line:?}"),
        };
        labels.sort();
        let f = fams.entry(name.to_string()).or_default();
        f.label_sets
            .insert(labels.iter().map(|(n, _)| n.clone()).collect());
        f.samples.insert(labels, v);
    }
    fams
}

fn node_exporter_binary() -> &'static str {
    let bin = "/usr/bin/prometheus-node-exporter";
    assert!(
        Path::new(bin).exists(),
        "{bin} is missing: install the Debian package prometheus-node-exporter (scripts/install-deps does)"
    );
    bin
}

/// Starts node_exporter on a free loopback port with upstream's exclusions; returns it and
/// its /metrics text.
fn start_node_exporter(dir: &Path) -> (Proc, String) {
    let addr = format!("127.0.0.1:{}", free_tcp_port());
    let ne = Proc::start(
        "node_exporter",
        dir,
        Command::new(node_exporter_binary()).args([
            format!("--web.listen-address={addr}"),
            "--web.disable-exporter-metrics".into(),
            format!("--collector.filesystem.mount-points-exclude={MOUNT_POINTS_EXCLUDE}"),
            // Upstream excludes no interface; an exclusion matching no name comes closest.
            "--collector.netdev.device-exclude=^$".into(),
            // No textfile directory: its error series are not host metrics.
            "--no-collector.textfile".into(),
        ]),
    );
    let url = format!("http://{addr}/metrics");
    let text = wait_for(Duration::from_secs(20), || {
        get_text(&url)
            .ok()
            .filter(|t| t.contains("node_scrape_collector_success"))
    });
    let text =
        text.unwrap_or_else(|| panic!("node_exporter did not answer on {url}:\n{}", ne.logs()));
    (ne, text)
}

fn agent_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    // `collect` reads only [collect]; the other required keys are placeholders.
    let cfg = dir.join("agent.toml");
    let text = format!(
        "id = \"parity\"\nregion = \"test\"\n[aggregator]\nendpoints = [\"127.0.0.1:9\"]\nca = \"ca.crt\"\ncert = \"a.crt\"\nkey = \"a.key\"\n[buffer]\ndir = \"buf\"\n[collect]\ninterval = \"1s\"\n{extra}"
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

#[test]
fn agent_families_match_node_exporter() {
    let tmp = TempDir::new("parity");
    let (_ne, ne_text) = start_node_exporter(tmp.path());
    let (agent_text, agent_err) = collect_once(&agent_config(tmp.path(), ""));
    let ne = parse(&ne_text);
    let agent = parse(&agent_text);

    // Every family the agent claims: same name, type, HELP and label names in node_exporter.
    let mut problems = Vec::new();
    for (name, f) in &agent {
        let Some(theirs) = ne.get(name) else {
            problems.push(format!("{name}: not in node_exporter's output"));
            continue;
        };
        if f.ty != theirs.ty {
            problems.push(format!(
                "{name}: type {} but node_exporter says {}",
                f.ty, theirs.ty
            ));
        }
        if f.help != theirs.help {
            problems.push(format!(
                "{name}: HELP {:?} but node_exporter says {:?}",
                f.help, theirs.help
            ));
        }
        for set in &f.label_sets {
            if !theirs.label_sets.contains(set) {
                problems.push(format!(
                    "{name}: labels {set:?}, node_exporter has {:?}",
                    theirs.label_sets
                ));
            }
        }
    }
    // node_exporter's families of collectors the agent has are in the agent's output.
    for name in ne.keys() {
        let covered = COVERED_PREFIXES.iter().any(|p| name.starts_with(p));
        if covered && !agent.contains_key(name) && !KNOWN_GAPS.contains(&name.as_str()) {
            problems.push(format!("{name}: node_exporter has it, the agent does not"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} differences:\n{}\nagent stderr:\n{agent_err}",
        problems.len(),
        problems.join("\n")
    );

    // The families the agent must have on any Linux host.
    for name in [
        "node_cpu_seconds_total",
        "node_load1",
        "node_memory_MemTotal_bytes",
        "node_memory_MemAvailable_bytes",
        "node_vmstat_pgfault",
        "node_filesystem_size_bytes",
        "node_filesystem_avail_bytes",
        "node_filesystem_files_free",
        "node_filesystem_readonly",
        "node_network_receive_bytes_total",
        "node_network_transmit_drop_total",
        "node_netstat_Tcp_CurrEstab",
        "node_netstat_Tcp_RetransSegs",
        "node_sockstat_TCP_inuse",
        "node_boot_time_seconds",
        "node_time_seconds",
        "node_procs_running",
        "node_procs_blocked",
        "node_forks_total",
        "node_filefd_allocated",
        "node_filefd_maximum",
        "node_uname_info",
        "node_scrape_collector_success",
        "node_scrape_collector_duration_seconds",
    ] {
        assert!(agent.contains_key(name), "agent lacks {name}");
    }

    // Stable gauges agree.
    let one = |fams: &BTreeMap<String, Family>, name: &str| -> f64 {
        let f = fams.get(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(f.samples.len(), 1, "{name}");
        *f.samples.values().next().unwrap()
    };
    assert_eq!(
        one(&agent, "node_memory_MemTotal_bytes"),
        one(&ne, "node_memory_MemTotal_bytes")
    );
    assert_eq!(
        one(&agent, "node_memory_SwapTotal_bytes"),
        one(&ne, "node_memory_SwapTotal_bytes")
    );
    let boot = (one(&agent, "node_boot_time_seconds") - one(&ne, "node_boot_time_seconds")).abs();
    assert!(boot <= 1.0, "boot times differ by {boot} s");
    let uname = |f: &BTreeMap<String, Family>| f["node_uname_info"].samples.keys().next().cloned();
    assert_eq!(uname(&agent), uname(&ne));
    for name in [
        "node_filesystem_size_bytes",
        "node_filesystem_files",
        "node_filesystem_readonly",
    ] {
        let (ours, theirs) = (&agent[name].samples, &ne[name].samples);
        let mounts: BTreeSet<_> = ours.keys().collect();
        assert_eq!(mounts, theirs.keys().collect(), "{name}: mounts differ");
        for (labels, v) in ours {
            assert_eq!(Some(v), theirs.get(labels), "{name} {labels:?}");
        }
        assert!(
            ours.keys()
                .any(|l| l.contains(&("mountpoint".into(), "/".into()))),
            "{name}: no / mount"
        );
    }
    let cpus = |f: &BTreeMap<String, Family>| {
        f["node_cpu_seconds_total"]
            .samples
            .keys()
            .map(|l| l[0].1.clone())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(cpus(&agent), cpus(&ne), "cpu label values");

    // Collector health: where node_exporter's same-named collector works, the agent's does too,
    // and where the host lacks a source (hwmon, pressure) both say so.
    let success = |f: &BTreeMap<String, Family>, c: &str| {
        f["node_scrape_collector_success"]
            .samples
            .get(&vec![("collector".to_string(), c.to_string())])
            .copied()
    };
    for c in [
        "cpu",
        "cpufreq",
        "diskstats",
        "filefd",
        "filesystem",
        "hwmon",
        "loadavg",
        "meminfo",
        "netdev",
        "netstat",
        "pressure",
        "sockstat",
        "stat",
        "time",
        "uname",
        "vmstat",
    ] {
        assert_eq!(
            success(&agent, c),
            success(&ne, c),
            "node_scrape_collector_success{{collector=\"{c}\"}}"
        );
    }
}

#[test]
fn collector_switches_and_an_unavailable_systemd() {
    let tmp = TempDir::new("switches");
    let systemd_runs = Path::new("/run/systemd/system").is_dir();
    let cfg = agent_config(
        tmp.path(),
        "meminfo = false\nnetstat = false\nsystemd = true\n",
    );
    let (text, err) = collect_once(&cfg);
    let fams = parse(&text);
    assert!(
        !fams
            .keys()
            .any(|n| n.starts_with("node_memory_") || n.starts_with("node_netstat_")),
        "disabled collectors still report"
    );
    let success = &fams["node_scrape_collector_success"].samples;
    let collectors: BTreeSet<String> = success.keys().map(|l| l[0].1.clone()).collect();
    assert!(
        !collectors.contains("meminfo")
            && !collectors.contains("netstat")
            && collectors.contains("cpu"),
        "{collectors:?}"
    );
    let systemd = success[&vec![("collector".to_string(), "systemd".to_string())]];
    if systemd_runs {
        assert_eq!(systemd, 1.0, "{err}");
        assert!(fams.contains_key("node_systemd_unit_state"));
    } else {
        // Reported honestly as failed, with a message saying why; the others still ran.
        assert_eq!(systemd, 0.0);
        assert!(
            err.contains("collector systemd failed: systemd is not running on this host"),
            "{err}"
        );
        assert!(!fams.contains_key("node_systemd_unit_state"));
        assert!(fams.contains_key("node_cpu_seconds_total") && fams.contains_key("node_load1"));
    }

    // A typo in a switch is refused, naming the key and the file.
    let bad = agent_config(tmp.path(), "hwmonn = false\n");
    let out = Command::new(bin("outpost-agent"))
        .args(["collect", "--once", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("agent.toml") && stderr.contains("hwmonn"),
        "{stderr}"
    );
}

/// docs/METRICS.md stays true: every family the agent emits on this host is marked "yes" in
/// its table (kernel-dependent families of meminfo, vmstat, netstat and sockstat may be absent
/// from it), and every known gap is marked "no".
#[test]
fn metrics_doc_matches_what_the_agent_emits() {
    let tmp = TempDir::new("metrics-doc");
    let (text, _) = collect_once(&agent_config(tmp.path(), ""));
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/METRICS.md");
    let doc = std::fs::read_to_string(&doc_path)
        .unwrap_or_else(|e| panic!("{}: {e}", doc_path.display()));
    let mut rows: BTreeMap<String, String> = BTreeMap::new();
    for line in doc.lines() {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        if let [_, _, fam, _, has, _] = cols[..]
            && let Some(name) = fam.strip_prefix('`').and_then(|f| f.strip_suffix('`'))
        {
            rows.insert(name.to_string(), has.to_string());
        }
    }
    assert!(
        rows.len() > 200,
        "the family table in {} has {} rows",
        doc_path.display(),
        rows.len()
    );
    let kernel_dependent = [
        "node_memory_",
        "node_vmstat_",
        "node_netstat_",
        "node_sockstat_",
    ];
    for name in parse(&text).keys() {
        match rows.get(name) {
            Some(has) => assert!(
                has.starts_with("yes"),
                "{name} is emitted but METRICS.md says {has:?}"
            ),
            None => assert!(
                kernel_dependent.iter().any(|p| name.starts_with(p)),
                "{name} is emitted but not in METRICS.md"
            ),
        }
    }
    for gap in KNOWN_GAPS {
        assert!(
            rows.get(*gap).is_some_and(|h| h.starts_with("no")),
            "{gap} should be listed as missing in METRICS.md"
        );
    }

    // And the other way round: every family the table marks "yes" is emitted, unless its
    // source is absent on this host (each exemption says which source).
    let emitted = parse(&text);
    let absent = |p: &str| !Path::new(p).exists();
    let exempt = |name: &str| -> Option<&'static str> {
        if name.starts_with("node_systemd_") {
            return Some("systemd is off by default");
        }
        if name.starts_with("node_hwmon_") && absent("/sys/class/hwmon") {
            return Some("no /sys/class/hwmon on this host");
        }
        if name.starts_with("node_cpu_")
            && name.contains("frequency")
            && absent("/sys/devices/system/cpu/cpu0/cpufreq")
        {
            return Some("no cpufreq in sysfs on this host");
        }
        if name.starts_with("node_pressure_") && absent("/proc/pressure") {
            return Some("no /proc/pressure (PSI) on this kernel");
        }
        if kernel_dependent.iter().any(|p| name.starts_with(p)) {
            return Some("the kernel decides which lines these files have");
        }
        if name.starts_with("node_disk_") {
            return Some(
                "depends on the kernel's diskstats columns and on a disk node_exporter does not exclude",
            );
        }
        None
    };
    let mut missing = Vec::new();
    for (name, has) in &rows {
        if has.starts_with("yes") && !emitted.contains_key(name) && exempt(name).is_none() {
            missing.push(name.as_str());
        }
    }
    assert!(
        missing.is_empty(),
        "METRICS.md says yes, but the agent does not emit: {missing:?}"
    );
}
