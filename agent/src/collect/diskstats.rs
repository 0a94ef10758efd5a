//! `/proc/diskstats` (collector "diskstats"): per block device I/O counters as
//! `node_disk_*{device}`, leaving out the devices node_exporter 1.5 ignores by default
//! (partitions, RAM disks, loop and floppy devices). Device names are read as bytes; only the
//! `device` label value is made valid UTF-8.

use super::{CollectError, Collector, Roots, Sink, Source, num, parse_error};

const SECTOR: f64 = 512.0;
const MS: f64 = 1000.0;

/// The columns after the device name, in kernel order, with the factor and divisor that turn
/// each into node_exporter's unit: sectors are 512 bytes whatever the device's block size
/// (Documentation/block/stat.rst), times are in milliseconds. Kernels before 4.18 stop after
/// 11 columns, before 5.5 after 15; only the columns present are reported.
const COLUMNS: [(&str, f64, f64); 17] = [
    ("node_disk_reads_completed_total", 1.0, 1.0),
    ("node_disk_reads_merged_total", 1.0, 1.0),
    ("node_disk_read_bytes_total", SECTOR, 1.0),
    ("node_disk_read_time_seconds_total", 1.0, MS),
    ("node_disk_writes_completed_total", 1.0, 1.0),
    ("node_disk_writes_merged_total", 1.0, 1.0),
    ("node_disk_written_bytes_total", SECTOR, 1.0),
    ("node_disk_write_time_seconds_total", 1.0, MS),
    ("node_disk_io_now", 1.0, 1.0),
    ("node_disk_io_time_seconds_total", 1.0, MS),
    ("node_disk_io_time_weighted_seconds_total", 1.0, MS),
    ("node_disk_discards_completed_total", 1.0, 1.0),
    ("node_disk_discards_merged_total", 1.0, 1.0),
    ("node_disk_discarded_sectors_total", 1.0, 1.0),
    ("node_disk_discard_time_seconds_total", 1.0, MS),
    ("node_disk_flush_requests_total", 1.0, 1.0),
    ("node_disk_flush_requests_time_seconds_total", 1.0, MS),
];

/// node_exporter 1.5's default `--collector.diskstats.device-exclude`,
/// `^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$`, without a regex engine.
pub fn is_ignored_device(name: &str) -> bool {
    let digit = |c: char| c.is_ascii_digit();
    let all_digits = |s: &str| !s.is_empty() && s.chars().all(digit);
    // No alternative ends in a digit, so the trailing `\d+` is exactly the trailing digits.
    let prefix = name.trim_end_matches(digit);
    if prefix.len() == name.len() {
        return false;
    }
    match prefix.as_bytes() {
        b"ram" | b"loop" | b"fd" => true,
        [b'h' | b's' | b'v', b'd', c] | [b'x', b'v', b'd', c] => c.is_ascii_lowercase(),
        _ => prefix
            .strip_prefix("nvme")
            .and_then(|p| p.strip_suffix('p'))
            .and_then(|p| p.split_once('n'))
            .is_some_and(|(ctrl, ns)| all_digits(ctrl) && all_digits(ns)),
    }
}

/// Appends the counters of every device not ignored.
pub fn parse_diskstats(text: &[u8], out: &mut (impl Sink + ?Sized)) -> Result<(), String> {
    for raw in text.split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(raw);
        let mut fields = raw
            .split(u8::is_ascii_whitespace)
            .filter(|f| !f.is_empty())
            .map(String::from_utf8_lossy);
        let (Some(_major), Some(_minor), Some(device)) =
            (fields.next(), fields.next(), fields.next())
        else {
            if raw.trim_ascii().is_empty() {
                continue;
            }
            return Err(format!("fewer than 3 columns: {line:?}"));
        };
        if is_ignored_device(&device) {
            continue;
        }
        for (field, (name, mul, div)) in fields.zip(COLUMNS) {
            let v: u64 = num(&field, &line)?;
            out.metric(name, &[("device", &*device)], v as f64 * mul / div);
        }
    }
    Ok(())
}

/// Collector "diskstats".
pub struct DiskstatsCollector {
    path: Source,
    buf: Vec<u8>,
}

impl DiskstatsCollector {
    pub fn new(roots: &Roots) -> Self {
        DiskstatsCollector {
            path: Source::new(roots.proc.join("diskstats")),
            buf: Vec::new(),
        }
    }
}

impl Collector for DiskstatsCollector {
    fn name(&self) -> &'static str {
        "diskstats"
    }

    fn collect(&mut self, _now_ms: i64, out: &mut dyn Sink) -> Result<(), CollectError> {
        self.path.read_bytes(&mut self.buf)?;
        parse_diskstats(&self.buf, out).map_err(|m| parse_error(&self.path, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::render;

    #[test]
    fn ignored_devices_match_node_exporter_defaults() {
        let cases = [
            ("sda", false),
            ("sda1", true),
            ("sdaa1", false),
            ("hdb12", true),
            ("vda", false),
            ("vda3", true),
            ("xvdf1", true),
            ("xvdf", false),
            ("nvme0n1", false),
            ("nvme0n1p2", true),
            ("nvme12n3p45", true),
            ("nvmen1p2", false),
            ("nvme0n1p", false),
            ("ram0", true),
            ("ram", false),
            ("loop7", true),
            ("fd0", true),
            ("zram0", false),
            ("dm-0", false),
            ("md127", false),
            ("sr0", false),
            ("mmcblk0p1", false),
            ("sdA1", false),
        ];
        for (name, ignored) in cases {
            assert_eq!(is_ignored_device(name), ignored, "{name}");
        }
    }

    #[test]
    fn counters_in_node_exporter_units() {
        // Kernel 5.5+ (17 columns), 4.18+ (15) and older (11), plus an ignored partition.
        const DISKSTATS: &str = "   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
 254       0 vda 12801 5575 2937218 31629 9312 24937 6976344 35866 0 13496 70038 6354 70 2803392 2108 270 434
 254       1 vda1 12000 5000 2000000 30000 9000 24000 6000000 35000 0 13000 70000 6000 70 2800000 2100 0 0
   8       0 sda 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15
   8      16 sdb 1 2 3 4 5 6 7 8 9 10 11
";
        let mut out = Vec::new();
        parse_diskstats(DISKSTATS.as_bytes(), &mut out).unwrap();
        let lines = render(&out);
        assert_eq!(
            lines[..17],
            [
                r#"node_disk_reads_completed_total{device="vda"} 12801"#,
                r#"node_disk_reads_merged_total{device="vda"} 5575"#,
                r#"node_disk_read_bytes_total{device="vda"} 1503855616"#,
                r#"node_disk_read_time_seconds_total{device="vda"} 31.629"#,
                r#"node_disk_writes_completed_total{device="vda"} 9312"#,
                r#"node_disk_writes_merged_total{device="vda"} 24937"#,
                r#"node_disk_written_bytes_total{device="vda"} 3571888128"#,
                r#"node_disk_write_time_seconds_total{device="vda"} 35.866"#,
                r#"node_disk_io_now{device="vda"} 0"#,
                r#"node_disk_io_time_seconds_total{device="vda"} 13.496"#,
                r#"node_disk_io_time_weighted_seconds_total{device="vda"} 70.038"#,
                r#"node_disk_discards_completed_total{device="vda"} 6354"#,
                r#"node_disk_discards_merged_total{device="vda"} 70"#,
                r#"node_disk_discarded_sectors_total{device="vda"} 2803392"#,
                r#"node_disk_discard_time_seconds_total{device="vda"} 2.108"#,
                r#"node_disk_flush_requests_total{device="vda"} 270"#,
                r#"node_disk_flush_requests_time_seconds_total{device="vda"} 0.434"#,
            ]
        );
        let count = |dev: &str| {
            out.iter()
                .filter(|(l, _)| l.get("device") == Some(dev))
                .count()
        };
        assert_eq!(
            [
                count("vda"),
                count("sda"),
                count("sdb"),
                count("vda1"),
                count("loop0")
            ],
            [17, 15, 11, 0, 0]
        );
        assert_eq!(
            lines.last().map(String::as_str),
            Some(r#"node_disk_io_time_weighted_seconds_total{device="sdb"} 0.011"#)
        );
    }

    #[test]
    fn malformed_lines_are_errors() {
        let cases = [
            ("   8 0\n", "fewer than 3 columns: \"   8 0\""),
            ("8 0 sda 1 -2 3\n", "8 0 sda 1 -2 3: \"-2\" is not a number"),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse_diskstats(text.as_bytes(), &mut Vec::new()),
                Err(want.to_string())
            );
        }
        assert_eq!(parse_diskstats(b"\n", &mut Vec::new()), Ok(()));
        let mut out = Vec::new();
        parse_diskstats(b"8 0 sd\xe9 1 2\n", &mut out).unwrap();
        assert_eq!(
            render(&out),
            [
                "node_disk_reads_completed_total{device=\"sd\u{fffd}\"} 1",
                "node_disk_reads_merged_total{device=\"sd\u{fffd}\"} 2",
            ]
        );
    }
}
