//! Pressure stall information (collector "pressure"): `/proc/pressure/{cpu,io,memory}` as
//! node_exporter 1.5 reports them, the `total=` microseconds of the `some` line as
//! `node_pressure_<resource>_waiting_seconds_total` and of the `full` line (io and memory) as
//! `node_pressure_<resource>_stalled_seconds_total`. Kernels without PSI (before 4.20, or
//! built without CONFIG_PSI) have no /proc/pressure: the collector then fails, and reports
//! `node_scrape_collector_success{collector="pressure"} 0`, as node_exporter does.

use super::{CollectError, Collector, Roots, Sink, Source, num, parse_error};

/// The resources, and whether node_exporter 1.5 reports their `full` line.
const RESOURCES: [(&str, bool); 3] = [("cpu", false), ("io", true), ("memory", true)];

/// The `total=` of the `some` and `full` lines, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stall {
    pub some: u64,
    pub full: Option<u64>,
}

/// Parses one pressure file: `some avg10=0.00 avg60=0.00 avg300=0.00 total=123` and, except
/// for cpu on older kernels, a `full ...` line of the same form.
pub fn parse_pressure(text: &str) -> Result<Stall, String> {
    let (mut some, mut full) = (None, None);
    for line in text.lines() {
        let mut cols = line.split_ascii_whitespace();
        let slot = match cols.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            Some(other) => return Err(format!("unknown line kind {other:?}")),
            None => continue,
        };
        let total = cols
            .find_map(|c| c.strip_prefix("total="))
            .ok_or_else(|| format!("no total= in {line:?}"))?;
        *slot = Some(num(total, line)?);
    }
    let some = some.ok_or("no \"some\" line")?;
    Ok(Stall { some, full })
}

/// Appends one resource's series.
pub fn pressure_samples(
    resource: &str,
    with_full: bool,
    s: &Stall,
    out: &mut (impl Sink + ?Sized),
) {
    let waiting = format!("node_pressure_{resource}_waiting_seconds_total");
    out.metric(&waiting, &[], s.some as f64 / 1e6);
    if let (true, Some(full)) = (with_full, s.full) {
        let stalled = format!("node_pressure_{resource}_stalled_seconds_total");
        out.metric(&stalled, &[], full as f64 / 1e6);
    }
}

/// Collector "pressure".
pub struct PressureCollector {
    files: Vec<(&'static str, bool, Source)>,
    buf: String,
}

impl PressureCollector {
    pub fn new(roots: &Roots) -> Self {
        let dir = roots.proc.join("pressure");
        let files = RESOURCES
            .iter()
            .map(|&(r, full)| (r, full, Source::new(dir.join(r))))
            .collect();
        PressureCollector {
            files,
            buf: String::new(),
        }
    }
}

impl Collector for PressureCollector {
    fn name(&self) -> &'static str {
        "pressure"
    }

    fn collect(&mut self, _now_ms: i64, out: &mut dyn Sink) -> Result<(), CollectError> {
        for (resource, with_full, src) in &mut self.files {
            src.read(&mut self.buf)?;
            let s = parse_pressure(&self.buf).map_err(|m| parse_error(src, m))?;
            pressure_samples(resource, *with_full, &s, out);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::render;

    #[test]
    fn some_and_full_totals() {
        let cases: &[(&str, Result<Stall, &str>)] = &[
            (
                "some avg10=0.00 avg60=0.12 avg300=0.05 total=76144382\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=9757429\n",
                Ok(Stall {
                    some: 76144382,
                    full: Some(9757429),
                }),
            ),
            (
                "some avg10=1.00 avg60=0.00 avg300=0.00 total=5\n",
                Ok(Stall {
                    some: 5,
                    full: None,
                }),
            ),
            (
                "full avg10=0.00 avg60=0.00 avg300=0.00 total=5\n",
                Err("no \"some\" line"),
            ),
            ("some avg10=0.00\n", Err("no total= in \"some avg10=0.00\"")),
            ("some total=x\n", Err("some total=x: \"x\" is not a number")),
            ("partial total=1\n", Err("unknown line kind \"partial\"")),
        ];
        for (text, want) in cases {
            assert_eq!(parse_pressure(text), want.map_err(String::from), "{text}");
        }
    }

    #[test]
    fn collector_reads_the_three_files_and_fails_without_psi() {
        let dir = std::env::temp_dir().join(format!("outpost-psi-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("pressure")).unwrap();
        let line = |t| {
            format!(
                "some avg10=0.00 avg60=0.00 avg300=0.00 total={t}\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=1000000\n"
            )
        };
        for (f, t) in [("cpu", 2500000), ("io", 3000000), ("memory", 0)] {
            std::fs::write(dir.join("pressure").join(f), line(t)).unwrap();
        }
        let mut c = PressureCollector::new(&Roots {
            proc: dir.clone(),
            ..Roots::default()
        });
        let mut out = Vec::new();
        c.collect(0, &mut out).unwrap();
        assert_eq!(
            render(&out),
            [
                "node_pressure_cpu_waiting_seconds_total{} 2.5",
                "node_pressure_io_waiting_seconds_total{} 3",
                "node_pressure_io_stalled_seconds_total{} 1",
                "node_pressure_memory_waiting_seconds_total{} 0",
                "node_pressure_memory_stalled_seconds_total{} 1",
            ]
        );
        std::fs::remove_dir_all(dir.join("pressure")).unwrap();
        let mut c = PressureCollector::new(&Roots {
            proc: dir.clone(),
            ..Roots::default()
        });
        let e = c.collect(0, &mut Vec::new()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("reading {}", dir.join("pressure/cpu").display())),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
