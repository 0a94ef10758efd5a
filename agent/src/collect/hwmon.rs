//! Hardware monitor temperatures (collector "hwmon"): every `tempN_input` under
//! `/sys/class/hwmon/hwmon*` as `node_hwmon_temp_celsius{chip,sensor}`, with `_max` and
//! `_crit` limits where the chip has them and `node_hwmon_chip_names{chip,chip_name}`,
//! chips named the way node_exporter 1.5 names them (from the device path, so the name
//! survives module load order). Fans, voltages and power are not collected. Device paths,
//! folder names and `name` files are bytes to the kernel: they become labels through lossy
//! UTF-8 (invalid bytes as U+FFFD, which the cleaning turns into `_`), never dropped.
//!
//! A host without /sys/class/hwmon (most virtual machines and containers) makes the collector
//! fail, so `node_scrape_collector_success{collector="hwmon"}` is 0, as node_exporter reports.

use super::{CollectError, Collector, Roots, Sink, num, parse_error, read_into};
use std::path::{Path, PathBuf};

/// node_exporter's cleanMetricName: lower case, every character outside `[a-z0-9:_]` becomes
/// `_`, and leading and trailing `_` are trimmed.
pub fn clean_name(name: &str) -> String {
    let lower: String = name
        .trim_end_matches('\n')
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == ':' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    lower.trim_matches('_').to_string()
}

/// The chip label: `<bus>_<device>` from the resolved `device` link (e.g.
/// `/sys/devices/platform/coretemp.0` → `platform_coretemp_0`), else the cleaned `name` file,
/// else the hwmon folder's own name.
pub fn chip_name(
    device_path: Option<&Path>,
    name_file: Option<&str>,
    hwmon_dir: &str,
) -> Option<String> {
    if let Some(dev) = device_path {
        let dev_name = dev
            .file_name()
            .map(|n| clean_name(&n.to_string_lossy()))
            .unwrap_or_default();
        let dev_type = dev
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| clean_name(&n.to_string_lossy()))
            .unwrap_or_default();
        if !dev_type.is_empty() && !dev_name.is_empty() {
            return Some(format!("{dev_type}_{dev_name}"));
        }
        if !dev_name.is_empty() {
            return Some(dev_name);
        }
    }
    if let Some(n) = name_file.map(clean_name).filter(|n| !n.is_empty()) {
        return Some(n);
    }
    Some(clean_name(hwmon_dir)).filter(|n| !n.is_empty())
}

/// A temperature file's millidegrees Celsius as degrees.
pub fn parse_millidegrees(text: &str) -> Result<f64, String> {
    let m: i64 = num(text.trim(), "millidegrees")?;
    Ok(m as f64 / 1000.0)
}

/// The sensor of a `tempN_input` file name: `temp1`.
pub fn temp_sensor(file: &str) -> Option<&str> {
    let sensor = file.strip_suffix("_input")?;
    let n = sensor.strip_prefix("temp")?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(sensor)
}

/// Collector "hwmon".
pub struct HwmonCollector {
    class: PathBuf,
    buf: String,
}

impl HwmonCollector {
    pub fn new(roots: &Roots) -> Self {
        HwmonCollector {
            class: roots.sys.join("class/hwmon"),
            buf: String::new(),
        }
    }

    fn chip(
        &self,
        dir: &Path,
        out: &mut (impl Sink + ?Sized),
        buf: &mut String,
    ) -> Result<(), CollectError> {
        let io = |source| CollectError::Io {
            path: dir.display().to_string(),
            source,
        };
        let hwmon = dir
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let device = std::fs::canonicalize(dir.join("device")).ok();
        let name_file = std::fs::read(dir.join("name"))
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let Some(chip) = chip_name(device.as_deref(), name_file.as_deref(), &hwmon) else {
            return Ok(());
        };
        if let Some(n) = name_file
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            out.metric(
                "node_hwmon_chip_names",
                &[("chip", chip.as_str()), ("chip_name", n)],
                1.0,
            );
        }
        let mut sensors: Vec<String> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let f = entry.map_err(io)?.file_name();
            if let Some(s) = f.to_str().and_then(temp_sensor) {
                sensors.push(s.to_string());
            }
        }
        sensors.sort_by_key(|s| s[4..].parse::<u32>().unwrap_or(u32::MAX));
        for sensor in &sensors {
            for (suffix, metric) in [
                ("input", "node_hwmon_temp_celsius"),
                ("max", "node_hwmon_temp_max_celsius"),
                ("crit", "node_hwmon_temp_crit_celsius"),
            ] {
                let path = dir.join(format!("{sensor}_{suffix}"));
                match read_into(&path, buf) {
                    Ok(()) => {}
                    Err(CollectError::Io { .. }) if suffix != "input" => continue,
                    // A sensor that cannot be read right now (some return EIO/ENODATA while
                    // asleep) is left out; node_exporter leaves it out too.
                    Err(CollectError::Io { .. }) => break,
                    Err(e) => return Err(e),
                }
                let v = parse_millidegrees(buf).map_err(|m| parse_error(&path, m))?;
                out.metric(
                    metric,
                    &[("chip", chip.as_str()), ("sensor", sensor.as_str())],
                    v,
                );
            }
        }
        Ok(())
    }
}

impl Collector for HwmonCollector {
    fn name(&self) -> &'static str {
        "hwmon"
    }

    fn collect(&mut self, _now_ms: i64, out: &mut dyn Sink) -> Result<(), CollectError> {
        let io = |source| CollectError::Io {
            path: self.class.display().to_string(),
            source,
        };
        let mut dirs: Vec<PathBuf> = Vec::new();
        for entry in std::fs::read_dir(&self.class).map_err(io)? {
            dirs.push(entry.map_err(io)?.path());
        }
        dirs.sort();
        let mut buf = std::mem::take(&mut self.buf);
        let r = dirs.iter().try_for_each(|d| self.chip(d, out, &mut buf));
        self.buf = buf;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::render;

    #[test]
    fn chip_names_as_node_exporter_derives_them() {
        let p = |s: &'static str| Some(Path::new(s));
        let cases = [
            (
                p("/sys/devices/platform/coretemp.0"),
                Some("coretemp\n"),
                "hwmon1",
                Some("platform_coretemp_0"),
            ),
            (
                p("/sys/devices/pci0000:00/0000:00:18.3"),
                Some("k10temp\n"),
                "hwmon0",
                Some("pci0000:00_0000:00:18_3"),
            ),
            (None, Some("acpitz\n"), "hwmon2", Some("acpitz")),
            (None, Some("\n"), "hwmon3", Some("hwmon3")),
            (None, None, "hwmon4", Some("hwmon4")),
            (None, None, "--", None),
        ];
        for (dev, name, dir, want) in cases {
            assert_eq!(
                chip_name(dev, name, dir).as_deref(),
                want,
                "{dev:?} {name:?} {dir}"
            );
        }
        assert_eq!(clean_name("__NVMe-Composite__"), "nvme_composite");
        // A device name that is not UTF-8 still names the chip.
        use std::os::unix::ffi::OsStrExt;
        let odd = Path::new(std::ffi::OsStr::from_bytes(
            b"/sys/devices/platform/caf\xe9.0",
        ));
        assert_eq!(
            chip_name(Some(odd), Some("x\n"), "hwmon5").as_deref(),
            Some("platform_caf__0")
        );
    }

    #[test]
    fn a_name_file_that_is_not_utf8_still_names_the_chip() {
        let sys = std::env::temp_dir().join(format!("outpost-hwmon-odd-{}", std::process::id()));
        let chip = sys.join("class/hwmon/hwmon0");
        std::fs::create_dir_all(&chip).unwrap();
        std::fs::write(chip.join("name"), b"caf\xe9\n").unwrap();
        std::fs::write(chip.join("temp1_input"), b"27800\n").unwrap();
        let mut out = Vec::new();
        let r = HwmonCollector::new(&Roots {
            sys: sys.clone(),
            ..Roots::default()
        })
        .collect(0, &mut out);
        std::fs::remove_dir_all(&sys).unwrap();
        r.unwrap();
        assert_eq!(
            render(&out),
            [
                "node_hwmon_chip_names{chip=\"caf\", chip_name=\"caf\u{fffd}\"} 1",
                r#"node_hwmon_temp_celsius{chip="caf", sensor="temp1"} 27.8"#,
            ]
        );
    }

    #[test]
    fn sensors_and_values() {
        assert_eq!(temp_sensor("temp1_input"), Some("temp1"));
        assert_eq!(temp_sensor("temp12_input"), Some("temp12"));
        assert_eq!(temp_sensor("temp1_max"), None);
        assert_eq!(temp_sensor("fan1_input"), None);
        assert_eq!(temp_sensor("temp_input"), None);
        assert_eq!(parse_millidegrees("45500\n"), Ok(45.5));
        assert_eq!(parse_millidegrees("-2000\n"), Ok(-2.0));
        assert_eq!(
            parse_millidegrees("hot\n"),
            Err("millidegrees: \"hot\" is not a number".into())
        );
    }

    #[test]
    fn fixture_tree_and_a_host_without_hwmon() {
        let sys = std::env::temp_dir().join(format!("outpost-hwmon-{}", std::process::id()));
        let chip = sys.join("class/hwmon/hwmon0");
        std::fs::create_dir_all(&chip).unwrap();
        for (f, v) in [
            ("name", "acpitz"),
            ("temp1_input", "27800"),
            ("temp1_crit", "105000"),
            ("temp2_input", "30000"),
            ("fan1_input", "1200"),
        ] {
            std::fs::write(chip.join(f), format!("{v}\n")).unwrap();
        }
        let mut c = HwmonCollector::new(&Roots {
            sys: sys.clone(),
            ..Roots::default()
        });
        let mut out = Vec::new();
        c.collect(0, &mut out).unwrap();
        assert_eq!(
            render(&out),
            [
                r#"node_hwmon_chip_names{chip="acpitz", chip_name="acpitz"} 1"#,
                r#"node_hwmon_temp_celsius{chip="acpitz", sensor="temp1"} 27.8"#,
                r#"node_hwmon_temp_crit_celsius{chip="acpitz", sensor="temp1"} 105"#,
                r#"node_hwmon_temp_celsius{chip="acpitz", sensor="temp2"} 30"#,
            ]
        );
        std::fs::remove_dir_all(&sys).unwrap();
        let e = c.collect(0, &mut Vec::new()).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("reading {}", sys.join("class/hwmon").display())),
            "{e}"
        );
    }
}
