//! The agent's system collectors: host metrics read from `/proc` and `statvfs`, named, labelled
//! and scaled exactly as prometheus-node-exporter 1.5 on Linux names them, so existing
//! dashboards and rules work unchanged.
//!
//! Each collector lives in its own file and splits into a pure parser over the file's text
//! (`parse_*`, unit-tested against fixtures) and a thin [`Collector`] that reads the file into a
//! reused buffer. [`collect_all`] runs a set of collectors and adds node_exporter's per-collector
//! `node_scrape_collector_*` series. Collectors add no `agent`/`region` labels and no
//! timestamps: the caller does.

mod cpu;
mod cpufreq;
mod diskstats;
pub mod exposition;
mod filefd;
mod filesystem;
pub mod help;
mod hwmon;
mod loadavg;
mod meminfo;
mod netdev;
mod netstat;
mod pressure;
mod sockstat;
mod systemd;
mod time;
mod uname;
mod vmstat;

pub use cpu::{CpuCollector, StatCollector};
pub use cpufreq::CpufreqCollector;
pub use diskstats::DiskstatsCollector;
pub use filefd::FilefdCollector;
pub use filesystem::FilesystemCollector;
pub use hwmon::HwmonCollector;
pub use loadavg::LoadavgCollector;
pub use meminfo::MeminfoCollector;
pub use netdev::NetdevCollector;
pub use netstat::NetstatCollector;
pub use pressure::PressureCollector;
pub use sockstat::SockstatCollector;
pub use systemd::SystemdCollector;
pub use time::TimeCollector;
pub use uname::UnameCollector;
pub use vmstat::VmstatCollector;

use outpost_shared::Labels;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}: {msg}")]
    Parse { path: String, msg: String },
    /// What the collector reads does not exist on this host (no systemd, no sensors).
    #[error("{0}")]
    Unavailable(String),
}

/// Where collectors put their samples: a metric name, label pairs and a value at a time, so
/// a sink that keeps each series' label set from cycle to cycle (the agent's
/// [`crate::series::CycleSeries`]) builds none for a series it has seen. A plain
/// `Vec<(Labels, f64)>` is a sink too (for `collect --once` and tests).
pub trait Sink {
    /// Appends one sample of metric `name` with the label `pairs` (any order; a pair with an
    /// empty value is left out and a repeated name takes the later value, as in
    /// [`Labels::new`]).
    fn metric(&mut self, name: &str, pairs: &[(&str, &str)], value: f64);
    /// Samples appended so far.
    fn len(&self) -> usize;
    /// True when nothing was appended.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Takes back every sample after the first `len`.
    fn truncate(&mut self, len: usize);
}

impl Sink for Vec<(Labels, f64)> {
    fn metric(&mut self, name: &str, pairs: &[(&str, &str)], value: f64) {
        self.push((Labels::metric(name, pairs.iter().copied()), value));
    }
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn truncate(&mut self, len: usize) {
        Vec::truncate(self, len);
    }
}

pub trait Collector: Send {
    /// Short name as node_exporter's collector names it: "cpu", "meminfo", "loadavg",
    /// "filesystem", "diskstats", "netdev", "stat", "time", ...
    fn name(&self) -> &'static str;
    /// Appends (labels, value) pairs. `now_ms` is the cycle's wall clock (ms since epoch) for
    /// collectors that need it (time).
    fn collect(&mut self, now_ms: i64, out: &mut dyn Sink) -> Result<(), CollectError>;
}

/// Paths the collectors read, so tests can point them at fixture trees.
#[derive(Clone, Debug)]
pub struct Roots {
    pub proc: PathBuf,
    pub sys: PathBuf,
    pub rootfs: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            proc: PathBuf::from("/proc"),
            sys: PathBuf::from("/sys"),
            rootfs: PathBuf::from("/"),
        }
    }
}

/// Every collector the agent has, by node_exporter's collector name, alphabetical, with
/// whether it runs when `[collect]` does not mention it. As in node_exporter, systemd is off
/// by default (it costs two `systemctl` runs per cycle).
pub const COLLECTORS: [(&str, bool); 17] = [
    ("cpu", true),
    ("cpufreq", true),
    ("diskstats", true),
    ("filefd", true),
    ("filesystem", true),
    ("hwmon", true),
    ("loadavg", true),
    ("meminfo", true),
    ("netdev", true),
    ("netstat", true),
    ("pressure", true),
    ("sockstat", true),
    ("stat", true),
    ("systemd", false),
    ("time", true),
    ("uname", true),
    ("vmstat", true),
];

/// Builds the collector of that name (one of [`COLLECTORS`]).
pub fn build(name: &str, roots: &Roots) -> Option<Box<dyn Collector>> {
    Some(match name {
        "cpu" => Box::new(CpuCollector::new(roots)),
        "cpufreq" => Box::new(CpufreqCollector::new(roots)),
        "diskstats" => Box::new(DiskstatsCollector::new(roots)),
        "filefd" => Box::new(FilefdCollector::new(roots)),
        "filesystem" => Box::new(FilesystemCollector::new(roots)),
        "hwmon" => Box::new(HwmonCollector::new(roots)),
        "loadavg" => Box::new(LoadavgCollector::new(roots)),
        "meminfo" => Box::new(MeminfoCollector::new(roots)),
        "netdev" => Box::new(NetdevCollector::new(roots)),
        "netstat" => Box::new(NetstatCollector::new(roots)),
        "pressure" => Box::new(PressureCollector::new(roots)),
        "sockstat" => Box::new(SockstatCollector::new(roots)),
        "stat" => Box::new(StatCollector::new(roots)),
        "systemd" => Box::new(SystemdCollector::new(roots)),
        "time" => Box::new(TimeCollector::new(roots)),
        "uname" => Box::new(UnameCollector),
        "vmstat" => Box::new(VmstatCollector::new(roots)),
        _ => return None,
    })
}

/// The collectors `enabled` selects, in [`COLLECTORS`] order.
pub fn collectors(roots: &Roots, enabled: impl Fn(&str) -> bool) -> Vec<Box<dyn Collector>> {
    COLLECTORS
        .iter()
        .filter(|(name, _)| enabled(name))
        .filter_map(|(name, _)| build(name, roots))
        .collect()
}

/// The default set (see [`COLLECTORS`]).
pub fn system_collectors(roots: &Roots) -> Vec<Box<dyn Collector>> {
    collectors(roots, |name| {
        COLLECTORS.iter().any(|(n, on)| *n == name && *on)
    })
}

/// Runs every collector; a failing one does not stop the others, and the samples it appended
/// before failing are taken back out, so a series set is either whole or absent. Also appends,
/// per collector, `node_scrape_collector_success{collector}` (1/0) and
/// `node_scrape_collector_duration_seconds{collector}`, in whole microseconds (node_exporter
/// gives nanoseconds; below a microsecond the figure is timer noise, and those random digits
/// would cost about four bytes per collector per cycle in the buffer and on the wire).
/// Returns the errors for logging.
pub fn collect_all(
    cs: &mut [Box<dyn Collector>],
    now_ms: i64,
    out: &mut dyn Sink,
) -> Vec<(&'static str, CollectError)> {
    let mut errors = Vec::new();
    for c in cs.iter_mut() {
        let name = c.name();
        let start = out.len();
        let began = Instant::now();
        let result = c.collect(now_ms, out);
        let took = began.elapsed().as_micros() as f64 / 1e6;
        let success = match result {
            Ok(()) => 1.0,
            Err(e) => {
                out.truncate(start);
                errors.push((name, e));
                0.0
            }
        };
        let label = [("collector", name)];
        out.metric("node_scrape_collector_duration_seconds", &label, took);
        out.metric("node_scrape_collector_success", &label, success);
    }
    errors
}

/// A field filter (a node_exporter `--collector.<name>.fields` pattern) that remembers its
/// answers by position: a kernel file lists the same fields in the same order every cycle,
/// so after the first cycle each field costs a comparison with the name seen at its place
/// instead of a regex search. A field at a place where another was seen is matched afresh.
pub struct FieldFilter {
    pattern: &'static regex::Regex,
    seen: Vec<(String, bool)>,
    at: usize,
}

impl FieldFilter {
    /// A filter of `pattern` with nothing remembered.
    pub fn new(pattern: &'static regex::Regex) -> FieldFilter {
        FieldFilter {
            pattern,
            seen: Vec::new(),
            at: 0,
        }
    }

    /// Starts a pass over the files' fields, from the first place.
    pub fn begin(&mut self) {
        self.at = 0;
    }

    /// Whether `field`, the next field of this pass, matches the pattern.
    pub fn is_match(&mut self, field: &str) -> bool {
        let at = self.at;
        self.at += 1;
        match self.seen.get_mut(at) {
            Some((name, m)) if name == field => *m,
            Some((name, m)) => {
                field.clone_into(name);
                *m = self.pattern.is_match(field);
                *m
            }
            None => {
                let m = self.pattern.is_match(field);
                self.seen.push((field.to_string(), m));
                m
            }
        }
    }
}

/// A kernel-generated file (under /proc or /sys) read again every cycle. The handle stays
/// open and is read again from offset 0, which makes the kernel generate fresh contents,
/// without the path lookup of an open and close per file per cycle. After an error the file
/// is opened afresh next time.
pub(crate) struct Source {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl Source {
    pub(crate) fn new(path: PathBuf) -> Source {
        Source { path, file: None }
    }

    /// Reads the whole file into `buf` (cleared first, its allocation reused).
    pub(crate) fn read(&mut self, buf: &mut String) -> Result<(), CollectError> {
        let mut bytes = std::mem::take(buf).into_bytes();
        self.read_bytes(&mut bytes)?;
        match String::from_utf8(bytes) {
            Ok(s) => {
                *buf = s;
                Ok(())
            }
            Err(e) => {
                *buf = String::from_utf8_lossy(e.as_bytes()).into_owned();
                Err(CollectError::Io {
                    path: self.path.display().to_string(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"),
                })
            }
        }
    }

    /// The open handle, when the last read succeeded (for `poll`).
    pub(crate) fn file(&self) -> Option<&std::fs::File> {
        self.file.as_ref()
    }

    /// Reads the whole file as bytes, for files that carry names (interfaces, devices),
    /// which the kernel does not require to be UTF-8.
    pub(crate) fn read_bytes(&mut self, buf: &mut Vec<u8>) -> Result<(), CollectError> {
        buf.clear();
        let r = match self.file.as_ref() {
            Some(f) => read_all_at(f, buf),
            None => std::fs::File::open(&self.path).and_then(|f| {
                let n = read_all_at(&f, buf)?;
                self.file = Some(f);
                Ok(n)
            }),
        };
        r.map(|_| ()).map_err(|source| {
            self.file = None;
            CollectError::Io {
                path: self.path.display().to_string(),
                source,
            }
        })
    }
}

/// Reads `f` from offset 0 to its end into `buf` with positioned reads: no seek and no
/// `fstat` for a size hint (kernel files report size 0 or 4096 whatever they hold), so a
/// kept-open file costs its reads alone. Returns the bytes read.
fn read_all_at(f: &std::fs::File, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut off = 0usize;
    loop {
        // Read into the allocation's spare room (at least 4 KiB, doubling as the file grows).
        let want = (buf.capacity() - buf.len()).max(4096);
        buf.resize(off + want, 0);
        match f.read_at(&mut buf[off..], off as u64) {
            Ok(0) => {
                buf.truncate(off);
                return Ok(off);
            }
            Ok(n) => {
                off += n;
                buf.truncate(off);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => buf.truncate(off),
            Err(e) => {
                buf.truncate(off);
                return Err(e);
            }
        }
    }
}

impl std::ops::Deref for Source {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

/// Reads a whole file into `buf` (cleared first), reusing its allocation from cycle to cycle.
fn read_into(path: &Path, buf: &mut String) -> Result<(), CollectError> {
    buf.clear();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(buf))
        .map(|_| ())
        .map_err(|source| CollectError::Io {
            path: path.display().to_string(),
            source,
        })
}

fn parse_error(path: &Path, msg: String) -> CollectError {
    CollectError::Parse {
        path: path.display().to_string(),
        msg,
    }
}

/// Parses one whitespace-separated numeric field of a /proc file, naming it in the error.
fn num<T: std::str::FromStr>(field: &str, what: &str) -> Result<T, String> {
    field
        .parse()
        .map_err(|_| format!("{what}: {field:?} is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finds the one value of the series with exactly these labels.
    pub(crate) fn value(out: &[(Labels, f64)], name: &str, pairs: &[(&str, &str)]) -> Option<f64> {
        let want = Labels::metric(name, pairs.iter().copied());
        let found: Vec<f64> = out
            .iter()
            .filter(|(l, _)| *l == want)
            .map(|(_, v)| *v)
            .collect();
        assert!(found.len() <= 1, "{want} appears {} times", found.len());
        found.first().copied()
    }

    /// Renders samples as `name{labels} value` lines, for exact whole-output comparisons.
    pub(crate) fn render(out: &[(Labels, f64)]) -> Vec<String> {
        out.iter().map(|(l, v)| format!("{l} {v}")).collect()
    }

    #[test]
    fn real_machine_yields_memory_cpu_and_load() {
        let mut cs = system_collectors(&Roots::default());
        let mut out = Vec::new();
        let errors = collect_all(&mut cs, 1_700_000_000_123, &mut out);
        // Only collectors whose source this host lacks may fail.
        let absent = |c: &str| match c {
            "hwmon" => !Path::new("/sys/class/hwmon").exists(),
            "pressure" => !Path::new("/proc/pressure").exists(),
            _ => false,
        };
        assert!(errors.iter().all(|(c, _)| absent(c)), "errors: {errors:?}");

        let mem = value(&out, "node_memory_MemTotal_bytes", &[]).unwrap_or(0.0);
        assert!(mem > 0.0, "MemTotal {mem}");
        let cpu_series = out
            .iter()
            .filter(|(l, _)| l.metric_name() == Some("node_cpu_seconds_total"))
            .count();
        assert!(cpu_series >= 8, "{cpu_series} cpu series");
        assert!(value(&out, "node_load1", &[]).is_some_and(|v| v >= 0.0));
        assert_eq!(
            value(&out, "node_time_seconds", &[]),
            Some(1_700_000_000.123)
        );
        assert!(value(&out, "node_boot_time_seconds", &[]).is_some_and(|v| v > 1e9));
        for c in &cs {
            let l = [("collector", c.name())];
            let want = if absent(c.name()) { 0.0 } else { 1.0 };
            assert_eq!(value(&out, "node_scrape_collector_success", &l), Some(want));
            let took = value(&out, "node_scrape_collector_duration_seconds", &l).unwrap();
            // Whole microseconds: the codec's six-decimal form gives back the same bits.
            let micros = (took * 1e6).round();
            assert_eq!((micros / 1e6).to_bits(), took.to_bits(), "{took}");
        }
    }

    #[test]
    fn failing_collector_reports_zero_and_others_still_run() {
        let missing = Roots {
            proc: PathBuf::from("/nonexistent/outpost-test/proc"),
            ..Roots::default()
        };
        let mut cs: Vec<Box<dyn Collector>> = vec![
            Box::new(LoadavgCollector::new(&Roots::default())),
            Box::new(MeminfoCollector::new(&missing)),
            Box::new(TimeCollector::new(&Roots::default())),
        ];
        let mut out = Vec::new();
        let errors = collect_all(&mut cs, 0, &mut out);

        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, "meminfo");
        assert!(
            matches!(&errors[0].1, CollectError::Io { path, .. } if path == "/nonexistent/outpost-test/proc/meminfo"),
            "{:?}",
            errors[0].1
        );
        let success = |c: &str| value(&out, "node_scrape_collector_success", &[("collector", c)]);
        assert_eq!(success("meminfo"), Some(0.0));
        assert_eq!(success("loadavg"), Some(1.0));
        assert_eq!(success("time"), Some(1.0));
        assert!(value(&out, "node_load1", &[]).is_some());
        assert!(
            out.iter()
                .all(|(l, _)| !l.metric_name().unwrap_or("").starts_with("node_memory_"))
        );
    }

    #[test]
    fn a_source_reads_fresh_contents_through_its_open_handle() {
        let path = std::env::temp_dir().join(format!("outpost-source-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut src = Source::new(path.clone());
        let mut buf = String::new();
        let e = src.read(&mut buf).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("reading {}: ", path.display())),
            "{e}"
        );
        std::fs::write(&path, "first\n").unwrap();
        src.read(&mut buf).unwrap();
        assert_eq!(buf, "first\n");
        std::fs::write(&path, "second, longer\n").unwrap(); // same inode, rewritten
        src.read(&mut buf).unwrap();
        assert_eq!(buf, "second, longer\n");
        std::fs::remove_file(&path).unwrap();

        // A kernel-generated file: every read through the kept handle is a fresh, whole one.
        let mut stat = Source::new(PathBuf::from("/proc/self/stat"));
        for _ in 0..3 {
            stat.read(&mut buf).unwrap();
            assert!(
                buf.starts_with(&format!("{} (", std::process::id())) && buf.ends_with('\n'),
                "{buf}"
            );
        }
    }

    /// A fixture tree with one malformed file: only the collector reading it fails.
    #[test]
    fn a_broken_file_fails_only_its_collector() {
        let dir = std::env::temp_dir().join(format!("outpost-broken-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sys/fs")).unwrap();
        for (f, text) in [
            ("loadavg", "0.50 0.40 0.30 1/2 3\n"),
            ("meminfo", "MemTotal 1 kB\n"),
            ("sys/fs/file-nr", "1 0 2\n"),
            ("vmstat", "pgfault 5\n"),
        ] {
            std::fs::write(dir.join(f), text).unwrap();
        }
        let roots = Roots {
            proc: dir.clone(),
            ..Roots::default()
        };
        let mut cs = collectors(&roots, |n| {
            matches!(n, "filefd" | "loadavg" | "meminfo" | "vmstat")
        });
        let mut out = Vec::new();
        let errors = collect_all(&mut cs, 0, &mut out);
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            errors[0].1.to_string(),
            format!(
                "parsing {}: no ':' after the field name: \"MemTotal 1 kB\"",
                dir.join("meminfo").display()
            )
        );
        let success = |c: &str| value(&out, "node_scrape_collector_success", &[("collector", c)]);
        assert_eq!(
            [
                success("filefd"),
                success("loadavg"),
                success("meminfo"),
                success("vmstat")
            ],
            [Some(1.0), Some(1.0), Some(0.0), Some(1.0)]
        );
        assert_eq!(value(&out, "node_load1", &[]), Some(0.5));
        assert_eq!(value(&out, "node_filefd_maximum", &[]), Some(2.0));
        assert_eq!(value(&out, "node_vmstat_pgfault", &[]), Some(5.0));
        assert_eq!(value(&out, "node_memory_MemTotal_bytes", &[]), None);
    }

    #[test]
    fn every_listed_collector_can_be_built_under_its_name() {
        for (name, _) in COLLECTORS {
            let c =
                build(name, &Roots::default()).unwrap_or_else(|| panic!("{name} cannot be built"));
            assert_eq!(c.name(), name);
        }
        assert!(build("nfs", &Roots::default()).is_none());
        let names: Vec<&str> = system_collectors(&Roots::default())
            .iter()
            .map(|c| c.name())
            .collect();
        assert!(
            !names.contains(&"systemd")
                && names.contains(&"hwmon")
                && names.len() == COLLECTORS.len() - 1
        );
    }

    #[test]
    fn a_field_filter_answers_as_its_pattern_when_fields_move() {
        static P: std::sync::LazyLock<regex::Regex> =
            std::sync::LazyLock::new(|| regex::Regex::new("^pg.*fault$").unwrap());
        let mut f = FieldFilter::new(&P);
        let passes: [&[&str]; 4] = [
            &["pgfault", "nr_dirty", "pgmajfault"],
            &["pgfault", "nr_dirty", "pgmajfault"],
            &["nr_dirty", "pgfault"],
            &["nr_dirty", "pgfault", "pgmajfault", "pgfaults"],
        ];
        for fields in passes {
            f.begin();
            for field in fields {
                assert_eq!(
                    f.is_match(field),
                    P.is_match(field),
                    "{field} in {fields:?}"
                );
            }
        }
    }

    /// A collector that appends a series and then fails must leave nothing of itself behind.
    #[test]
    fn partial_output_of_a_failed_collector_is_removed() {
        struct Half;
        impl Collector for Half {
            fn name(&self) -> &'static str {
                "half"
            }
            fn collect(&mut self, _: i64, out: &mut dyn Sink) -> Result<(), CollectError> {
                out.metric("node_half", &[], 1.0);
                Err(CollectError::Parse {
                    path: "x".into(),
                    msg: "broken".into(),
                })
            }
        }
        let mut cs: Vec<Box<dyn Collector>> = vec![Box::new(Half)];
        let mut out = Vec::new();
        let errors = collect_all(&mut cs, 0, &mut out);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].1.to_string(), "parsing x: broken");
        let names: Vec<_> = out.iter().filter_map(|(l, _)| l.metric_name()).collect();
        assert_eq!(
            names,
            [
                "node_scrape_collector_duration_seconds",
                "node_scrape_collector_success"
            ]
        );
    }
}
