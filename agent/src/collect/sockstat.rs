//! Socket usage (collector "sockstat"): `/proc/net/sockstat` and `/proc/net/sockstat6` as
//! `node_sockstat_<PROTO>_<field>` gauges, `node_sockstat_sockets_used`, and for each `mem`
//! field (in pages) also `node_sockstat_<PROTO>_mem_bytes`, as node_exporter 1.5 reports them.
//! A missing sockstat6 (IPv6 disabled) is skipped, as node_exporter skips it.

use super::{CollectError, Collector, Roots, Sink, Source, num, parse_error};

/// Parses lines of `PROTO: field value field value ...`; `page_size` turns `mem` into bytes.
pub fn parse_sockstat(
    text: &str,
    page_size: u64,
    out: &mut (impl Sink + ?Sized),
) -> Result<(), String> {
    let mut name = String::with_capacity(48);
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let (proto, rest) = line
            .split_once(':')
            .ok_or_else(|| format!("no \"PROTO:\" prefix: {line:?}"))?;
        let cols: Vec<&str> = rest.split_ascii_whitespace().collect();
        if !cols.len().is_multiple_of(2) {
            return Err(format!("odd number of columns after {proto}: {line:?}"));
        }
        for pair in cols.chunks_exact(2) {
            let (field, value) = (pair[0], pair[1]);
            let v: u64 = num(value, line)?;
            name.clear();
            name.push_str("node_sockstat_");
            if proto == "sockets" {
                // "sockets: used N" is the one line not named after a protocol.
                name.push_str("sockets_");
            } else {
                name.push_str(proto);
                name.push('_');
            }
            name.push_str(field);
            out.metric(&name, &[], v as f64);
            if field == "mem" {
                name.push_str("_bytes");
                out.metric(&name, &[], (v * page_size) as f64);
            }
        }
    }
    Ok(())
}

/// Collector "sockstat".
pub struct SockstatCollector {
    v4: Source,
    v6: Source,
    page_size: u64,
    buf: String,
}

impl SockstatCollector {
    pub fn new(roots: &Roots) -> Self {
        SockstatCollector {
            v4: Source::new(roots.proc.join("net/sockstat")),
            v6: Source::new(roots.proc.join("net/sockstat6")),
            page_size: rustix::param::page_size() as u64,
            buf: String::new(),
        }
    }
}

impl Collector for SockstatCollector {
    fn name(&self) -> &'static str {
        "sockstat"
    }

    fn collect(&mut self, _now_ms: i64, out: &mut dyn Sink) -> Result<(), CollectError> {
        self.v4.read(&mut self.buf)?;
        parse_sockstat(&self.buf, self.page_size, out).map_err(|m| parse_error(&self.v4, m))?;
        match self.v6.read(&mut self.buf) {
            Ok(()) => {
                parse_sockstat(&self.buf, self.page_size, out).map_err(|m| parse_error(&self.v6, m))
            }
            Err(CollectError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::render;

    #[test]
    fn v4_and_v6_tables() {
        const V4: &str = "\
sockets: used 26
TCP: inuse 6 orphan 0 tw 2 alloc 6 mem 438
UDP: inuse 1 mem 3
UDPLITE: inuse 0
RAW: inuse 0
FRAG: inuse 0 memory 0
";
        const V6: &str = "TCP6: inuse 1\nUDP6: inuse 0\nFRAG6: inuse 0 memory 0\n";
        let mut out = Vec::new();
        parse_sockstat(V4, 4096, &mut out).unwrap();
        parse_sockstat(V6, 4096, &mut out).unwrap();
        assert_eq!(
            render(&out),
            [
                "node_sockstat_sockets_used{} 26",
                "node_sockstat_TCP_inuse{} 6",
                "node_sockstat_TCP_orphan{} 0",
                "node_sockstat_TCP_tw{} 2",
                "node_sockstat_TCP_alloc{} 6",
                "node_sockstat_TCP_mem{} 438",
                "node_sockstat_TCP_mem_bytes{} 1794048",
                "node_sockstat_UDP_inuse{} 1",
                "node_sockstat_UDP_mem{} 3",
                "node_sockstat_UDP_mem_bytes{} 12288",
                "node_sockstat_UDPLITE_inuse{} 0",
                "node_sockstat_RAW_inuse{} 0",
                "node_sockstat_FRAG_inuse{} 0",
                "node_sockstat_FRAG_memory{} 0",
                "node_sockstat_TCP6_inuse{} 1",
                "node_sockstat_UDP6_inuse{} 0",
                "node_sockstat_FRAG6_inuse{} 0",
                "node_sockstat_FRAG6_memory{} 0",
            ]
        );
    }

    #[test]
    fn malformed_lines_are_errors() {
        let cases = [
            ("TCP inuse 1\n", "no \"PROTO:\" prefix: \"TCP inuse 1\""),
            (
                "TCP: inuse\n",
                "odd number of columns after TCP: \"TCP: inuse\"",
            ),
            ("TCP: inuse -1\n", "TCP: inuse -1: \"-1\" is not a number"),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse_sockstat(text, 4096, &mut Vec::new()),
                Err(want.to_string()),
                "{text}"
            );
        }
    }
}
