//! The cycle's wall clock and the kernel's clock sources (collector "time"):
//! `node_time_seconds`, and from `/sys/devices/system/clocksource/clocksourceN/`
//! `node_time_clocksource_available_info{clocksource,device}` and
//! `node_time_clocksource_current_info{clocksource,device}`, as node_exporter 1.5 reports them.
//! node_exporter's `node_time_zone_offset_seconds` is not reported (see docs/METRICS.md).

use super::{CollectError, Collector, Roots, Sink, read_into};
use std::path::PathBuf;

/// Appends the clock source series of device `device` from the two files' contents.
pub fn clocksource_samples(
    device: &str,
    available: &str,
    current: &str,
    out: &mut (impl Sink + ?Sized),
) {
    for cs in available.split_ascii_whitespace() {
        let l = [("clocksource", cs), ("device", device)];
        out.metric("node_time_clocksource_available_info", &l, 1.0);
    }
    if let Some(cs) = current.split_ascii_whitespace().next() {
        let l = [("clocksource", cs), ("device", device)];
        out.metric("node_time_clocksource_current_info", &l, 1.0);
    }
}

/// Collector "time"; reports the `now_ms` it is given, so it reads no clock itself.
pub struct TimeCollector {
    clocksources: PathBuf,
    available: String,
    current: String,
}

impl TimeCollector {
    pub fn new(roots: &Roots) -> Self {
        TimeCollector {
            clocksources: roots.sys.join("devices/system/clocksource"),
            available: String::new(),
            current: String::new(),
        }
    }
}

impl Collector for TimeCollector {
    fn name(&self) -> &'static str {
        "time"
    }

    fn collect(&mut self, now_ms: i64, out: &mut dyn Sink) -> Result<(), CollectError> {
        out.metric("node_time_seconds", &[], now_ms as f64 / 1000.0);
        // Hosts without clock sources in sysfs (containers with a masked /sys) report none.
        let Ok(entries) = std::fs::read_dir(&self.clocksources) else {
            return Ok(());
        };
        let mut devices: Vec<String> = entries
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_prefix("clocksource")
                    .map(String::from)
            })
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .collect();
        devices.sort();
        for device in &devices {
            let dir = self.clocksources.join(format!("clocksource{device}"));
            read_into(&dir.join("available_clocksource"), &mut self.available)?;
            read_into(&dir.join("current_clocksource"), &mut self.current)?;
            clocksource_samples(device, &self.available, &self.current, out);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::render;

    #[test]
    fn seconds_from_the_given_milliseconds() {
        let mut c = TimeCollector::new(&Roots {
            sys: PathBuf::from("/nonexistent/outpost-test"),
            ..Roots::default()
        });
        for (now_ms, want) in [
            (1_700_000_000_123, "node_time_seconds{} 1700000000.123"),
            (0, "node_time_seconds{} 0"),
        ] {
            let mut out = Vec::new();
            c.collect(now_ms, &mut out).unwrap();
            assert_eq!(render(&out), [want]);
        }
    }

    #[test]
    fn clock_sources() {
        let mut out = Vec::new();
        clocksource_samples("0", "kvm-clock tsc acpi_pm \n", "tsc\n", &mut out);
        assert_eq!(
            render(&out),
            [
                r#"node_time_clocksource_available_info{clocksource="kvm-clock", device="0"} 1"#,
                r#"node_time_clocksource_available_info{clocksource="tsc", device="0"} 1"#,
                r#"node_time_clocksource_available_info{clocksource="acpi_pm", device="0"} 1"#,
                r#"node_time_clocksource_current_info{clocksource="tsc", device="0"} 1"#,
            ]
        );
    }
}
