//! CPU clock frequencies (collector "cpufreq"): `/sys/devices/system/cpu/cpuN/cpufreq/*` in
//! kHz, reported in hertz as node_exporter 1.5 reports them — `node_cpu_frequency_hertz` and
//! its min/max, and `node_cpu_scaling_frequency_hertz` and its min/max, each `{cpu}`. Only
//! the files a CPU has are reported: virtual machines commonly have no cpufreq at all, and
//! `cpuinfo_cur_freq` is readable by root only. No cpufreq is not a failure.
//!
//! The CPU folders are listed once a minute ([`RESCAN`]), not every cycle, and the files
//! found are kept open and read again: a CPU brought online or a cpufreq driver loaded shows
//! within a minute, and a file that stops answering (a CPU taken offline) is left out from
//! that cycle and makes the next cycle list the folders again.

use super::{CollectError, Collector, Roots, Sink, Source, num, parse_error};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How often the CPU folders are listed again.
pub const RESCAN: Duration = Duration::from_secs(60);

/// File in the cpufreq folder → metric.
const FILES: [(&str, &str); 6] = [
    ("cpuinfo_cur_freq", "node_cpu_frequency_hertz"),
    ("cpuinfo_max_freq", "node_cpu_frequency_max_hertz"),
    ("cpuinfo_min_freq", "node_cpu_frequency_min_hertz"),
    ("scaling_cur_freq", "node_cpu_scaling_frequency_hertz"),
    ("scaling_max_freq", "node_cpu_scaling_frequency_max_hertz"),
    ("scaling_min_freq", "node_cpu_scaling_frequency_min_hertz"),
];

/// A cpufreq file's kHz as hertz.
pub fn parse_khz(text: &str) -> Result<f64, String> {
    let khz: u64 = num(text.trim(), "frequency in kHz")?;
    Ok(khz as f64 * 1000.0)
}

/// The CPU number of a `cpuN` folder name; `cpufreq`, `cpuidle` and the like are not CPUs.
pub fn cpu_number(dir_name: &str) -> Option<&str> {
    dir_name
        .strip_prefix("cpu")
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Collector "cpufreq".
pub struct CpufreqCollector {
    dir: PathBuf,
    buf: String,
    /// Every readable cpufreq file: its CPU number, metric and kept-open handle, in CPU order.
    files: Vec<(String, &'static str, Source)>,
    /// When the folders were last listed; `None` asks for a listing at the next cycle.
    scanned: Option<Instant>,
}

impl CpufreqCollector {
    pub fn new(roots: &Roots) -> Self {
        CpufreqCollector {
            dir: roots.sys.join("devices/system/cpu"),
            buf: String::new(),
            files: Vec::new(),
            scanned: None,
        }
    }

    /// Lists the CPU folders and opens each cpufreq file there is.
    fn scan(&mut self) -> Result<(), CollectError> {
        self.files.clear();
        let io = |source| CollectError::Io {
            path: self.dir.display().to_string(),
            source,
        };
        let mut cpus = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io)? {
            let name = entry.map_err(io)?.file_name();
            if let Some(n) = name.to_str().and_then(cpu_number) {
                cpus.push(n.to_string());
            }
        }
        cpus.sort_by_key(|n| n.parse::<u32>().unwrap_or(u32::MAX));
        for cpu in cpus {
            let dir = self.dir.join(format!("cpu{cpu}/cpufreq"));
            // One lookup instead of a failed open per file where there is no cpufreq.
            if !dir.is_dir() {
                continue;
            }
            for (file, metric) in FILES {
                let mut source = Source::new(dir.join(file));
                match source.read(&mut self.buf) {
                    Ok(()) => self.files.push((cpu.clone(), metric, source)),
                    // Absent, or root-only (cpuinfo_cur_freq): not reported, as node_exporter.
                    Err(CollectError::Io { source, .. })
                        if matches!(
                            source.kind(),
                            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                        ) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

impl Collector for CpufreqCollector {
    fn name(&self) -> &'static str {
        "cpufreq"
    }

    fn collect(&mut self, _now_ms: i64, out: &mut dyn Sink) -> Result<(), CollectError> {
        if self.scanned.is_none_or(|t| t.elapsed() >= RESCAN) {
            self.scanned = None;
            self.scan()?;
            self.scanned = Some(Instant::now());
        }
        for (cpu, metric, source) in &mut self.files {
            if source.read(&mut self.buf).is_err() {
                // The CPU went away (offline): list the folders again next cycle.
                self.scanned = None;
                continue;
            }
            let hz = parse_khz(&self.buf).map_err(|m| parse_error(source, m))?;
            out.metric(metric, &[("cpu", cpu.as_str())], hz);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::render;

    #[test]
    fn khz_and_cpu_folders() {
        assert_eq!(parse_khz("2400000\n"), Ok(2.4e9));
        assert_eq!(
            parse_khz("<unknown>\n"),
            Err("frequency in kHz: \"<unknown>\" is not a number".into())
        );
        for (dir, want) in [
            ("cpu0", Some("0")),
            ("cpu17", Some("17")),
            ("cpufreq", None),
            ("cpuidle", None),
            ("cpu", None),
            ("online", None),
        ] {
            assert_eq!(cpu_number(dir), want, "{dir}");
        }
    }

    #[test]
    fn fixture_tree_with_and_without_cpufreq() {
        let sys = std::env::temp_dir().join(format!("outpost-cpufreq-{}", std::process::id()));
        let cpu = sys.join("devices/system/cpu");
        for (d, files) in [
            (
                "cpu0/cpufreq",
                &[
                    ("cpuinfo_max_freq", "3600000"),
                    ("cpuinfo_min_freq", "800000"),
                    ("scaling_cur_freq", "2400123"),
                ][..],
            ),
            ("cpu1/cpufreq", &[("scaling_cur_freq", "1000000")][..]),
            ("cpuidle", &[][..]),
        ] {
            std::fs::create_dir_all(cpu.join(d)).unwrap();
            for (f, v) in files {
                std::fs::write(cpu.join(d).join(f), format!("{v}\n")).unwrap();
            }
        }
        std::fs::create_dir_all(cpu.join("cpu2")).unwrap(); // no cpufreq folder
        let mut c = CpufreqCollector::new(&Roots {
            sys: sys.clone(),
            ..Roots::default()
        });
        let mut out = Vec::new();
        c.collect(0, &mut out).unwrap();
        assert_eq!(
            render(&out),
            [
                r#"node_cpu_frequency_max_hertz{cpu="0"} 3600000000"#,
                r#"node_cpu_frequency_min_hertz{cpu="0"} 800000000"#,
                r#"node_cpu_scaling_frequency_hertz{cpu="0"} 2400123000"#,
                r#"node_cpu_scaling_frequency_hertz{cpu="1"} 1000000000"#,
            ]
        );
        // A file that appears is read from the next listing of the folders on.
        std::fs::write(cpu.join("cpu1/cpufreq/scaling_max_freq"), "fast\n").unwrap();
        let mut again = Vec::new();
        c.collect(0, &mut again).unwrap();
        assert_eq!(render(&again), render(&out));
        c.scanned = c.scanned.and_then(|t| t.checked_sub(RESCAN));
        let e = c.collect(0, &mut Vec::new()).unwrap_err().to_string();
        assert!(
            e.contains("cpu1/cpufreq/scaling_max_freq") && e.contains("\"fast\" is not a number"),
            "{e}"
        );
        // Kept-open files give their new contents; a CPU that went away is gone from the
        // next listing of the folders.
        std::fs::write(cpu.join("cpu1/cpufreq/scaling_max_freq"), "1200000\n").unwrap();
        let mut now = Vec::new();
        c.collect(0, &mut now).unwrap();
        assert!(
            render(&now).contains(
                &r#"node_cpu_scaling_frequency_max_hertz{cpu="1"} 1200000000"#.to_string()
            ),
            "{:?}",
            render(&now)
        );
        std::fs::remove_dir_all(cpu.join("cpu1")).unwrap();
        c.scanned = c.scanned.and_then(|t| t.checked_sub(RESCAN));
        let mut gone = Vec::new();
        c.collect(0, &mut gone).unwrap();
        assert_eq!(render(&gone).len(), 3, "{:?}", render(&gone));
        std::fs::remove_dir_all(&sys).unwrap();
    }
}
