//! Prometheus text exposition of collected host samples, with the `# HELP` and `# TYPE` lines
//! node_exporter gives each family — for `outpost-agent collect`, and so the parity test can
//! hold the agent's families against node_exporter's. [`metadata`] is the same declaration
//! as the agent sends it to the aggregator. Pure: samples in, text out.

use super::help;
use outpost_shared::Labels;
use outpost_shared::metadata::Metadata;
pub use outpost_shared::metadata::MetricType;
use outpost_shared::model::METRIC_NAME;
use std::fmt::Write;

/// The type node_exporter 1.5 declares for a family the agent collects: its vmstat and
/// netstat fields are untyped ([`MetricType::Unknown`]), every `_total` family is a counter,
/// every other one a gauge.
pub fn metric_type(family: &str) -> MetricType {
    if family.starts_with("node_vmstat_") || family.starts_with("node_netstat_") {
        MetricType::Unknown
    } else if family.ends_with("_total") {
        MetricType::Counter
    } else {
        MetricType::Gauge
    }
}

/// The type as the text format writes it: `untyped` for [`MetricType::Unknown`].
pub fn text_type(t: MetricType) -> &'static str {
    match t {
        MetricType::Unknown => "untyped",
        t => t.as_str(),
    }
}

/// What the agent declares for a host family: node_exporter's type and HELP text (empty
/// for a family node_exporter does not describe, such as the agent's own cycle counter).
pub fn metadata(family: &str) -> Metadata {
    Metadata::new(metric_type(family), help::help(family).unwrap_or_default())
}

/// A HELP text as the text format escapes it: backslash and newline.
fn escape_help(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
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

/// Renders samples grouped by family, families sorted by name, each under its `# HELP` (when
/// node_exporter has one) and `# TYPE` lines, as node_exporter writes them; within a family
/// the samples keep their collection order.
pub fn render(samples: &[(Labels, f64)]) -> String {
    let mut order: Vec<usize> = (0..samples.len()).collect();
    order.sort_by(|&a, &b| samples[a].0.metric_name().cmp(&samples[b].0.metric_name()));
    let mut out = String::with_capacity(samples.len() * 64);
    let mut family: Option<&str> = None;
    for i in order {
        let (labels, v) = &samples[i];
        let name = labels.metric_name().unwrap_or("");
        if family != Some(name) {
            let meta = metadata(name);
            if !meta.help.is_empty() {
                let _ = write!(out, "# HELP {name} ");
                escape_help(&meta.help, &mut out);
                out.push('\n');
            }
            let _ = writeln!(out, "# TYPE {name} {}", text_type(meta.kind));
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
            ("node_vmstat_pgfault", MetricType::Unknown),
            ("node_netstat_Tcp_CurrEstab", MetricType::Unknown),
            ("node_scrape_collector_success", MetricType::Gauge),
        ];
        for (name, want) in cases {
            assert_eq!(metric_type(name), want, "{name}");
        }
    }

    #[test]
    fn help_texts_are_escaped() {
        let mut out = String::new();
        escape_help("a\\b\nc \"d\"", &mut out);
        assert_eq!(out, "a\\\\b\\nc \"d\"");
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
            (Labels::metric("outpost_own", []), 1.0),
        ];
        assert_eq!(
            render(&samples),
            "\
# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu=\"0\",mode=\"user\"} 12.25
node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} NaN
# HELP node_filesystem_avail_bytes Filesystem space available to non-root users in bytes.
# TYPE node_filesystem_avail_bytes gauge
node_filesystem_avail_bytes{mountpoint=\"/mnt/a \\\"b\\\"\\\\c\\nd\"} 1000000000000
# HELP node_load1 1m load average.
# TYPE node_load1 gauge
node_load1 0.5
# HELP node_vmstat_pgfault /proc/vmstat information field pgfault.
# TYPE node_vmstat_pgfault untyped
node_vmstat_pgfault +Inf
# TYPE outpost_own gauge
outpost_own 1
"
        );
    }
}
