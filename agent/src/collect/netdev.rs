//! `/proc/net/dev` (collector "netdev"): per interface, loopback included as node_exporter
//! includes it, `node_network_{receive,transmit}_*_total{device}`. Interface names are the
//! kernel's bytes (any but `/`, `:` and whitespace, not necessarily UTF-8); only the `device`
//! label value is made valid UTF-8, as node_exporter does.

use super::{CollectError, Collector, Roots, Sink, Source, num, parse_error};

/// The sixteen columns after `<iface>:`, in kernel order.
const COLUMNS: [&str; 16] = [
    "node_network_receive_bytes_total",
    "node_network_receive_packets_total",
    "node_network_receive_errs_total",
    "node_network_receive_drop_total",
    "node_network_receive_fifo_total",
    "node_network_receive_frame_total",
    "node_network_receive_compressed_total",
    "node_network_receive_multicast_total",
    "node_network_transmit_bytes_total",
    "node_network_transmit_packets_total",
    "node_network_transmit_errs_total",
    "node_network_transmit_drop_total",
    "node_network_transmit_fifo_total",
    "node_network_transmit_colls_total",
    "node_network_transmit_carrier_total",
    "node_network_transmit_compressed_total",
];

/// Appends the counters of every interface; the two header lines have no `:` and are skipped.
pub fn parse_net_dev(text: &[u8], out: &mut (impl Sink + ?Sized)) -> Result<(), String> {
    let mut values = [0u64; 16];
    for raw in text.split(|&b| b == b'\n') {
        // Interface names cannot contain ':' (the kernel's dev_valid_name), and large counters
        // may touch it ("eth0:123"), so split there rather than on whitespace.
        let Some(colon) = raw.iter().position(|&b| b == b':') else {
            continue;
        };
        let line = String::from_utf8_lossy(raw);
        let device = String::from_utf8_lossy(raw[..colon].trim_ascii());
        let mut n = 0;
        for field in raw[colon + 1..]
            .split(u8::is_ascii_whitespace)
            .filter(|f| !f.is_empty())
        {
            let slot = values
                .get_mut(n)
                .ok_or_else(|| format!("more than 16 columns: {line:?}"))?;
            *slot = num(&String::from_utf8_lossy(field), &line)?;
            n += 1;
        }
        if n != values.len() {
            return Err(format!("{n} columns instead of 16: {line:?}"));
        }
        for (name, v) in COLUMNS.iter().zip(values) {
            out.metric(name, &[("device", &*device)], v as f64);
        }
    }
    Ok(())
}

/// Collector "netdev".
pub struct NetdevCollector {
    path: Source,
    buf: Vec<u8>,
}

impl NetdevCollector {
    pub fn new(roots: &Roots) -> Self {
        NetdevCollector {
            path: Source::new(roots.proc.join("net/dev")),
            buf: Vec::new(),
        }
    }
}

impl Collector for NetdevCollector {
    fn name(&self) -> &'static str {
        "netdev"
    }

    fn collect(&mut self, _now_ms: i64, out: &mut dyn Sink) -> Result<(), CollectError> {
        self.path.read_bytes(&mut self.buf)?;
        parse_net_dev(&self.buf, out).map_err(|m| parse_error(&self.path, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::render;

    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    3193      29    0    0    0     0          0         0     3193      29    0    0    0     0       0          0
  eth0:4294967296 1024    1    2    3     4          5         6     2048      16    7    8    9    10      11         12
";

    #[test]
    fn sixteen_counters_per_interface_loopback_included() {
        let mut out = Vec::new();
        parse_net_dev(NET_DEV.as_bytes(), &mut out).unwrap();
        assert_eq!(out.len(), 32);
        assert_eq!(
            render(&out)[16..],
            [
                r#"node_network_receive_bytes_total{device="eth0"} 4294967296"#,
                r#"node_network_receive_packets_total{device="eth0"} 1024"#,
                r#"node_network_receive_errs_total{device="eth0"} 1"#,
                r#"node_network_receive_drop_total{device="eth0"} 2"#,
                r#"node_network_receive_fifo_total{device="eth0"} 3"#,
                r#"node_network_receive_frame_total{device="eth0"} 4"#,
                r#"node_network_receive_compressed_total{device="eth0"} 5"#,
                r#"node_network_receive_multicast_total{device="eth0"} 6"#,
                r#"node_network_transmit_bytes_total{device="eth0"} 2048"#,
                r#"node_network_transmit_packets_total{device="eth0"} 16"#,
                r#"node_network_transmit_errs_total{device="eth0"} 7"#,
                r#"node_network_transmit_drop_total{device="eth0"} 8"#,
                r#"node_network_transmit_fifo_total{device="eth0"} 9"#,
                r#"node_network_transmit_colls_total{device="eth0"} 10"#,
                r#"node_network_transmit_carrier_total{device="eth0"} 11"#,
                r#"node_network_transmit_compressed_total{device="eth0"} 12"#,
            ]
        );
        assert_eq!(
            render(&out)[0],
            r#"node_network_receive_bytes_total{device="lo"} 3193"#
        );
    }

    #[test]
    fn interface_names_that_are_not_utf8_are_reported() {
        let text = b"  caf\xe9: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n";
        let mut out = Vec::new();
        parse_net_dev(text, &mut out).unwrap();
        assert_eq!(out.len(), 16);
        assert_eq!(
            render(&out)[15],
            "node_network_transmit_compressed_total{device=\"caf\u{fffd}\"} 16"
        );
    }

    #[test]
    fn malformed_lines_are_errors() {
        let cases = [
            ("lo: 1 2 3\n", "3 columns instead of 16: \"lo: 1 2 3\""),
            (
                "lo: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n",
                "more than 16 columns: \"lo: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\"",
            ),
            (
                "lo: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 x\n",
                "lo: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 x: \"x\" is not a number",
            ),
        ];
        for (text, want) in cases {
            let mut out = Vec::new();
            assert_eq!(
                parse_net_dev(text.as_bytes(), &mut out),
                Err(want.to_string()),
                "{text}"
            );
            assert!(out.is_empty());
        }
    }
}
