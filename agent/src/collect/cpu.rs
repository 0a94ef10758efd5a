//! `/proc/stat`, split as node_exporter splits it: per-CPU times (collector "cpu":
//! `node_cpu_seconds_total`, `node_cpu_guest_seconds_total`) and the kernel-wide counters
//! (collector "stat": context switches, interrupts, forks, boot time, running/blocked tasks).

use super::{CollectError, Collector, Roots, Sink, Source, num, parse_error};

/// The `cpuN` columns in kernel order: the eight modes, then guest and guest_nice.
const MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];
const IDLE: usize = 3;
const GUEST: usize = 8;
const GUEST_NICE: usize = 9;

/// node_exporter's limit: idle going back this far means a CPU was hot-plugged, so its
/// counters restart rather than being held at their old maxima.
const JUMP_BACK_SECONDS: u64 = 3;

/// One `cpuN` line of /proc/stat, in clock ticks; columns an old kernel lacks are 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTicks {
    pub cpu: u32,
    pub ticks: [u64; 10],
}

/// Parses the per-CPU lines (`cpu0`, `cpu1`, ...; not the `cpu` total) into `out`.
pub fn parse_cpu_ticks(text: &str, out: &mut Vec<CpuTicks>) -> Result<(), String> {
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(id) = fields
            .next()
            .and_then(|k| k.strip_prefix("cpu"))
            .filter(|id| !id.is_empty())
        else {
            continue;
        };
        let cpu = num(id, "cpu number")?;
        let mut ticks = [0u64; 10];
        let mut n = 0;
        for (slot, field) in ticks.iter_mut().zip(fields) {
            *slot = num(field, line)?;
            n += 1;
        }
        if n < 4 {
            return Err(format!("cpu line with {n} columns: {line:?}"));
        }
        out.push(CpuTicks { cpu, ticks });
    }
    if out.is_empty() {
        return Err("no per-cpu lines".into());
    }
    Ok(())
}

/// Holds every counter of `cur` at least at its value in `prev`, as node_exporter does: the
/// kernel's iowait and idle can step backwards, which `rate()` would read as a reset. A CPU
/// whose idle fell by `jump_back_ticks` or more was hot-plugged and starts afresh.
pub fn keep_monotonic(prev: &[CpuTicks], cur: &mut [CpuTicks], jump_back_ticks: u64) {
    for c in cur {
        // The kernel lists CPUs in ascending order, so `prev` is sorted.
        let Ok(i) = prev.binary_search_by_key(&c.cpu, |p| p.cpu) else {
            continue;
        };
        let p = &prev[i];
        if p.ticks[IDLE].saturating_sub(c.ticks[IDLE]) >= jump_back_ticks {
            continue;
        }
        for (now, before) in c.ticks.iter_mut().zip(p.ticks) {
            *now = (*now).max(before);
        }
    }
}

/// Appends `node_cpu_seconds_total{cpu,mode}` and `node_cpu_guest_seconds_total{cpu,mode}`.
pub fn cpu_samples(cpus: &[CpuTicks], ticks_per_second: u64, out: &mut (impl Sink + ?Sized)) {
    let hz = ticks_per_second as f64;
    for c in cpus {
        let cpu = c.cpu.to_string();
        for (mode, ticks) in MODES.iter().zip(c.ticks) {
            let l = [("cpu", cpu.as_str()), ("mode", mode)];
            out.metric("node_cpu_seconds_total", &l, ticks as f64 / hz);
        }
        for (mode, i) in [("user", GUEST), ("nice", GUEST_NICE)] {
            let l = [("cpu", cpu.as_str()), ("mode", mode)];
            let v = c.ticks[i] as f64 / hz;
            out.metric("node_cpu_guest_seconds_total", &l, v);
        }
    }
}

/// Appends the kernel-wide counters of /proc/stat that node_exporter's "stat" collector reads.
pub fn parse_stat(text: &str, out: &mut (impl Sink + ?Sized)) -> Result<(), String> {
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let name = match fields.next() {
            Some("intr") => "node_intr_total",
            Some("ctxt") => "node_context_switches_total",
            Some("processes") => "node_forks_total",
            Some("btime") => "node_boot_time_seconds",
            Some("procs_running") => "node_procs_running",
            Some("procs_blocked") => "node_procs_blocked",
            _ => continue,
        };
        // `intr` is followed by one count per interrupt; the first is their total.
        let v: u64 = num(fields.next().unwrap_or(""), line)?;
        out.metric(name, &[], v as f64);
    }
    Ok(())
}

/// Collector "cpu".
pub struct CpuCollector {
    path: Source,
    buf: String,
    ticks_per_second: u64,
    prev: Vec<CpuTicks>,
    cur: Vec<CpuTicks>,
}

impl CpuCollector {
    pub fn new(roots: &Roots) -> Self {
        let hz = rustix::param::clock_ticks_per_second();
        CpuCollector {
            path: Source::new(roots.proc.join("stat")),
            buf: String::new(),
            ticks_per_second: if hz == 0 { 100 } else { hz },
            prev: Vec::new(),
            cur: Vec::new(),
        }
    }
}

impl Collector for CpuCollector {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn collect(&mut self, _now_ms: i64, out: &mut dyn Sink) -> Result<(), CollectError> {
        self.path.read(&mut self.buf)?;
        self.cur.clear();
        parse_cpu_ticks(&self.buf, &mut self.cur).map_err(|m| parse_error(&self.path, m))?;
        keep_monotonic(
            &self.prev,
            &mut self.cur,
            JUMP_BACK_SECONDS * self.ticks_per_second,
        );
        cpu_samples(&self.cur, self.ticks_per_second, out);
        std::mem::swap(&mut self.prev, &mut self.cur);
        Ok(())
    }
}

/// Collector "stat".
pub struct StatCollector {
    path: Source,
    buf: String,
}

impl StatCollector {
    pub fn new(roots: &Roots) -> Self {
        StatCollector {
            path: Source::new(roots.proc.join("stat")),
            buf: String::new(),
        }
    }
}

impl Collector for StatCollector {
    fn name(&self) -> &'static str {
        "stat"
    }

    fn collect(&mut self, _now_ms: i64, out: &mut dyn Sink) -> Result<(), CollectError> {
        self.path.read(&mut self.buf)?;
        parse_stat(&self.buf, out).map_err(|m| parse_error(&self.path, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::render;

    const STAT: &str = "\
cpu  98930 0 9622 41448 1058 0 90 342 0 0
cpu0 49080 10 4646 21532 287 3 31 171 40 2
cpu1 49850 0 4976 19916 770 0 59 171 0 0
intr 1412318 9 10 0 0 0 0 0 0 0 0
ctxt 390583
btime 1795386925
processes 7561
procs_running 3
procs_blocked 1
softirq 159699 0 25980 4 25740 20422 0 1086 40358 0 46109
";

    #[test]
    fn cpu_seconds_and_guest_seconds_per_cpu_and_mode() {
        let mut ticks = Vec::new();
        parse_cpu_ticks(STAT, &mut ticks).unwrap();
        let mut out = Vec::new();
        cpu_samples(&ticks[..1], 100, &mut out);
        assert_eq!(
            render(&out),
            [
                r#"node_cpu_seconds_total{cpu="0", mode="user"} 490.8"#,
                r#"node_cpu_seconds_total{cpu="0", mode="nice"} 0.1"#,
                r#"node_cpu_seconds_total{cpu="0", mode="system"} 46.46"#,
                r#"node_cpu_seconds_total{cpu="0", mode="idle"} 215.32"#,
                r#"node_cpu_seconds_total{cpu="0", mode="iowait"} 2.87"#,
                r#"node_cpu_seconds_total{cpu="0", mode="irq"} 0.03"#,
                r#"node_cpu_seconds_total{cpu="0", mode="softirq"} 0.31"#,
                r#"node_cpu_seconds_total{cpu="0", mode="steal"} 1.71"#,
                r#"node_cpu_guest_seconds_total{cpu="0", mode="user"} 0.4"#,
                r#"node_cpu_guest_seconds_total{cpu="0", mode="nice"} 0.02"#,
            ]
        );
        assert_eq!(ticks.len(), 2);
        assert_eq!(ticks[1].cpu, 1);
        assert_eq!(ticks[1].ticks[0], 49850);
    }

    #[test]
    fn cpu_lines_from_old_kernels_and_broken_ones() {
        let cases: &[(&str, Result<[u64; 10], &str>)] = &[
            // 2.6.0: no steal, guest, guest_nice.
            ("cpu0 1 2 3 4 5 6 7\n", Ok([1, 2, 3, 4, 5, 6, 7, 0, 0, 0])),
            (
                "cpu0 1 2 3\n",
                Err("cpu line with 3 columns: \"cpu0 1 2 3\""),
            ),
            ("cpu0 1 x 3 4\n", Err("cpu0 1 x 3 4: \"x\" is not a number")),
            ("cpux 1 2 3 4\n", Err("cpu number: \"x\" is not a number")),
            ("cpu  1 2 3 4\nctxt 5\n", Err("no per-cpu lines")),
        ];
        for (text, want) in cases {
            let mut got = Vec::new();
            let r = parse_cpu_ticks(text, &mut got);
            match want {
                Ok(ticks) => {
                    assert_eq!(r, Ok(()), "{text}");
                    assert_eq!(
                        got,
                        [CpuTicks {
                            cpu: 0,
                            ticks: *ticks
                        }],
                        "{text}"
                    );
                }
                Err(msg) => assert_eq!(r, Err(msg.to_string()), "{text}"),
            }
        }
    }

    #[test]
    fn counters_never_step_back_unless_the_cpu_was_replugged() {
        let t = |cpu, idle, iowait| CpuTicks {
            cpu,
            ticks: [10, 0, 0, idle, iowait, 0, 0, 0, 0, 0],
        };
        // (previous, current, what is reported)
        let cases = [
            (t(0, 1000, 50), t(0, 1001, 49), t(0, 1001, 50)), // iowait dipped: held
            (t(0, 1000, 50), t(0, 999, 50), t(0, 1000, 50)),  // idle dipped a little: held
            (t(0, 1000, 50), t(0, 700, 5), t(0, 700, 5)),     // idle fell 3 s: hotplug, reset
            (t(0, 1000, 50), t(1, 7, 5), t(1, 7, 5)),         // a CPU not seen before
        ];
        for (prev, cur, want) in cases {
            let mut got = [cur];
            keep_monotonic(&[prev], &mut got, 300);
            assert_eq!(got, [want], "prev {prev:?} cur {cur:?}");
        }
    }

    #[test]
    fn stat_counters() {
        let mut out = Vec::new();
        parse_stat(STAT, &mut out).unwrap();
        assert_eq!(
            render(&out),
            [
                "node_intr_total{} 1412318",
                "node_context_switches_total{} 390583",
                "node_boot_time_seconds{} 1795386925",
                "node_forks_total{} 7561",
                "node_procs_running{} 3",
                "node_procs_blocked{} 1",
            ]
        );
        assert_eq!(
            parse_stat("ctxt\n", &mut Vec::new()),
            Err("ctxt: \"\" is not a number".into())
        );
    }

    #[test]
    fn cpu_collector_reads_a_fixture_tree() {
        let dir = std::env::temp_dir().join(format!("outpost-cpu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("stat"), STAT).unwrap();
        let roots = Roots {
            proc: dir.clone(),
            ..Roots::default()
        };
        let mut c = CpuCollector::new(&roots);
        c.ticks_per_second = 100;
        let mut out = Vec::new();
        c.collect(0, &mut out).unwrap();
        let mut s = StatCollector::new(&roots);
        s.collect(0, &mut out).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let v = |n, l: &[(&str, &str)]| crate::collect::tests::value(&out, n, l);
        assert_eq!(
            v("node_cpu_seconds_total", &[("cpu", "1"), ("mode", "idle")]),
            Some(199.16)
        );
        assert_eq!(v("node_procs_blocked", &[]), Some(1.0));
        assert_eq!(out.len(), 2 * 10 + 6);
    }
}
