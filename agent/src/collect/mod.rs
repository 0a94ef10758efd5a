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
mod diskstats;
mod filesystem;
mod loadavg;
mod meminfo;
mod netdev;
mod time;

pub use cpu::{CpuCollector, StatCollector};
pub use diskstats::DiskstatsCollector;
pub use filesystem::FilesystemCollector;
pub use loadavg::LoadavgCollector;
pub use meminfo::MeminfoCollector;
pub use netdev::NetdevCollector;
pub use time::TimeCollector;

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
}

pub trait Collector: Send {
    /// Short name as node_exporter's collector names it: "cpu", "meminfo", "loadavg",
    /// "filesystem", "diskstats", "netdev", "stat", "time", ...
    fn name(&self) -> &'static str;
    /// Appends (labels, value) pairs. `now_ms` is the cycle's wall clock (ms since epoch) for
    /// collectors that need it (time).
    fn collect(&mut self, now_ms: i64, out: &mut Vec<(Labels, f64)>) -> Result<(), CollectError>;
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

/// The default set, in a stable order (alphabetical, as node_exporter lists them).
pub fn system_collectors(roots: &Roots) -> Vec<Box<dyn Collector>> {
    vec![
        Box::new(CpuCollector::new(roots)),
        Box::new(DiskstatsCollector::new(roots)),
        Box::new(FilesystemCollector::new(roots)),
        Box::new(LoadavgCollector::new(roots)),
        Box::new(MeminfoCollector::new(roots)),
        Box::new(NetdevCollector::new(roots)),
        Box::new(StatCollector::new(roots)),
        Box::new(TimeCollector),
    ]
}

/// Runs every collector; a failing one does not stop the others, and the samples it appended
/// before failing are taken back out, so a series set is either whole or absent. Also appends,
/// per collector, `node_scrape_collector_success{collector}` (1/0) and
/// `node_scrape_collector_duration_seconds{collector}`. Returns the errors for logging.
pub fn collect_all(
    cs: &mut [Box<dyn Collector>],
    now_ms: i64,
    out: &mut Vec<(Labels, f64)>,
) -> Vec<(&'static str, CollectError)> {
    let mut errors = Vec::new();
    for c in cs.iter_mut() {
        let name = c.name();
        let start = out.len();
        let began = Instant::now();
        let result = c.collect(now_ms, out);
        let took = began.elapsed().as_secs_f64();
        let success = match result {
            Ok(()) => 1.0,
            Err(e) => {
                out.truncate(start);
                errors.push((name, e));
                0.0
            }
        };
        let label = [("collector", name)];
        out.push((
            Labels::metric("node_scrape_collector_duration_seconds", label),
            took,
        ));
        out.push((
            Labels::metric("node_scrape_collector_success", label),
            success,
        ));
    }
    errors
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
        assert!(errors.is_empty(), "errors: {errors:?}");

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
            assert_eq!(value(&out, "node_scrape_collector_success", &l), Some(1.0));
            assert!(value(&out, "node_scrape_collector_duration_seconds", &l).is_some());
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
            Box::new(TimeCollector),
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

    /// A collector that appends a series and then fails must leave nothing of itself behind.
    #[test]
    fn partial_output_of_a_failed_collector_is_removed() {
        struct Half;
        impl Collector for Half {
            fn name(&self) -> &'static str {
                "half"
            }
            fn collect(
                &mut self,
                _: i64,
                out: &mut Vec<(Labels, f64)>,
            ) -> Result<(), CollectError> {
                out.push((Labels::metric("node_half", []), 1.0));
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
