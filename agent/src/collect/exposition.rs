//! Prometheus text exposition of collected host samples, with the `# TYPE` node_exporter
//! gives each family — for `outpost-agent collect`, and so the parity test can hold the
//! agent's families against node_exporter's. Pure: samples in, text out.

use outpost_shared::Labels;
use outpost_shared::model::METRIC_NAME;
use std::fmt::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Untyped,
}

impl MetricType {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Untyped => "untyped",
        }
    }
}

/// The type node_exporter 1.5 declares for a family the agent collects: its vmstat and
/// netstat fields are untyped, every `_total` family is a counter, every other one a gauge.
pub fn metric_type(family: &str) -> MetricType {
    if family.starts_with("node_vmstat_") || family.starts_with("node_netstat_") {
        MetricType::Untyped
    } else if family.ends_with("_total") {
        MetricType::Counter
    } else {
        MetricType::Gauge
    }
}

fn escape(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn push_value(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Renders samples grouped by family, families sorted by name, each under its `# TYPE` line;
/// within a family the samples keep their collection order.
pub fn render(samples: &[(Labels, f64)]) -> String {
    let mut order: Vec<usize> = (0..samples.len()).collect();
    order.sort_by(|&a, &b| samples[a].0.metric_name().cmp(&samples[b].0.metric_name()));
    let mut out = String::with_capacity(samples.len() * 64);
    let mut family: Option<&str> = None;
    for i in order {
        let (labels, v) = &samples[i];
        let name = labels.metric_name().unwrap_or("");
        if family != Some(name) {
            let _ = writeln!(out, "# TYPE {name} {}", metric_type(name).as_str());
            family = Some(name);
        }
        out.push_str(name);
        let mut first = true;
        for l in labels.iter().filter(|l| l.name != METRIC_NAME) {
            out.push(if first { '{' } else { ',' });
            first = false;
            out.push_str(&l.name);
            out.push_str("=\"");
            escape(&l.value, &mut out);
            out.push('"');
        }
        if !first {
            out.push('}');
        }
        out.push(' ');
        push_value(*v, &mut out);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_follow_node_exporter() {
        let cases = [
            ("node_cpu_seconds_total", MetricType::Counter),
            (
                "node_pressure_io_stalled_seconds_total",
                MetricType::Counter,
            ),
            ("node_memory_MemTotal_bytes", MetricType::Gauge),
            ("node_memory_HugePages_Total", MetricType::Gauge),
            ("node_disk_io_now", MetricType::Gauge),
            ("node_vmstat_pgfault", MetricType::Untyped),
            ("node_netstat_Tcp_CurrEstab", MetricType::Untyped),
            ("node_scrape_collector_success", MetricType::Gauge),
        ];
        for (name, want) in cases {
            assert_eq!(metric_type(name), want, "{name}");
        }
    }

    #[test]
    fn grouped_typed_and_escaped() {
        let samples = vec![
            (Labels::metric("node_load1", []), 0.5),
            (
                Labels::metric("node_cpu_seconds_total", [("cpu", "0"), ("mode", "user")]),
                12.25,
            ),
            (
                Labels::metric(
                    "node_filesystem_avail_bytes",
                    [("mountpoint", "/mnt/a \"b\"\\c\nd")],
                ),
                1e12,
            ),
            (
                Labels::metric("node_cpu_seconds_total", [("cpu", "0"), ("mode", "idle")]),
                f64::NAN,
            ),
            (Labels::metric("node_vmstat_pgfault", []), f64::INFINITY),
        ];
        assert_eq!(
            render(&samples),
            "\
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu=\"0\",mode=\"user\"} 12.25
node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} NaN
# TYPE node_filesystem_avail_bytes gauge
node_filesystem_avail_bytes{mountpoint=\"/mnt/a \\\"b\\\"\\\\c\\nd\"} 1000000000000
# TYPE node_load1 gauge
node_load1 0.5
# TYPE node_vmstat_pgfault untyped
node_vmstat_pgfault +Inf
"
        );
    }
}
