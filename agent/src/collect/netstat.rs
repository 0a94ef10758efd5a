//! Network protocol counters (collector "netstat"): `/proc/net/netstat` and `/proc/net/snmp`
//! (header/value line pairs per protocol) and `/proc/net/snmp6` (one `Ip6InReceives 123` per
//! line), reported as `node_netstat_<Protocol>_<Field>` for the fields node_exporter 1.5
//! selects by default (TCP established and retransmits among them). Untyped, as node_exporter
//! types them. A missing snmp6 (IPv6 disabled) is skipped, as node_exporter skips it.

use super::{CollectError, Collector, FieldFilter, Roots, Sink, Source, num, parse_error};
use regex::Regex;
use std::sync::LazyLock;

/// node_exporter 1.5's default `--collector.netstat.fields`.
pub static DEFAULT_FIELDS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        "^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)",
        "|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts)",
        "|Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)",
        "|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$"
    ))
    .expect("netstat field pattern is valid")
});

fn push(
    proto: &str,
    field: &str,
    value: &str,
    fields: &mut FieldFilter,
    key: &mut String,
    out: &mut (impl Sink + ?Sized),
) -> Result<(), String> {
    key.clear();
    key.push_str(proto);
    key.push('_');
    key.push_str(field);
    if !fields.is_match(key) {
        return Ok(());
    }
    let v: f64 = num(value, key)?;
    let name = format!("node_netstat_{key}");
    out.metric(&name, &[], v);
    Ok(())
}

/// Parses `/proc/net/netstat` or `/proc/net/snmp`: for each protocol a line of field names
/// and then a line of values, both starting with `<Protocol>:`.
pub fn parse_netstat(
    text: &str,
    fields: &mut FieldFilter,
    out: &mut (impl Sink + ?Sized),
) -> Result<(), String> {
    let mut key = String::with_capacity(48);
    fields.begin();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    while let Some(header) = lines.next() {
        let values = lines
            .next()
            .ok_or_else(|| format!("no value line after {header:?}"))?;
        let (Some((proto, names)), Some((proto2, vals))) =
            (header.split_once(':'), values.split_once(':'))
        else {
            return Err(format!("no \"Protocol:\" prefix: {header:?}"));
        };
        if proto != proto2 {
            return Err(format!(
                "header for {proto} followed by values for {proto2}"
            ));
        }
        let names: Vec<&str> = names.split_ascii_whitespace().collect();
        let vals: Vec<&str> = vals.split_ascii_whitespace().collect();
        if names.len() != vals.len() {
            return Err(format!(
                "{proto}: {} field names but {} values",
                names.len(),
                vals.len()
            ));
        }
        for (field, value) in names.into_iter().zip(vals) {
            push(proto, field, value, fields, &mut key, out)?;
        }
    }
    Ok(())
}

/// Parses `/proc/net/snmp6`: `Ip6InReceives 123`; the protocol is the name up to its `6`.
pub fn parse_snmp6(
    text: &str,
    fields: &mut FieldFilter,
    out: &mut (impl Sink + ?Sized),
) -> Result<(), String> {
    let mut key = String::with_capacity(48);
    fields.begin();
    for line in text.lines() {
        let mut cols = line.split_ascii_whitespace();
        let (Some(stat), Some(value)) = (cols.next(), cols.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(format!("expected \"name value\": {line:?}"));
        };
        // node_exporter skips lines without a '6' in the name.
        let Some(six) = stat.find('6') else { continue };
        push(
            &stat[..=six],
            &stat[six + 1..],
            value,
            fields,
            &mut key,
            out,
        )?;
    }
    Ok(())
}

/// Collector "netstat".
pub struct NetstatCollector {
    netstat: Source,
    snmp: Source,
    snmp6: Source,
    buf: String,
    /// One per file: each remembers its file's fields by place.
    fields: [FieldFilter; 3],
}

impl NetstatCollector {
    pub fn new(roots: &Roots) -> Self {
        NetstatCollector {
            netstat: Source::new(roots.proc.join("net/netstat")),
            snmp: Source::new(roots.proc.join("net/snmp")),
            snmp6: Source::new(roots.proc.join("net/snmp6")),
            buf: String::new(),
            fields: [(); 3].map(|_| FieldFilter::new(&DEFAULT_FIELDS)),
        }
    }
}

impl Collector for NetstatCollector {
    fn name(&self) -> &'static str {
        "netstat"
    }

    fn collect(&mut self, _now_ms: i64, out: &mut dyn Sink) -> Result<(), CollectError> {
        let [f_netstat, f_snmp, f_snmp6] = &mut self.fields;
        for (src, fields) in [(&mut self.netstat, f_netstat), (&mut self.snmp, f_snmp)] {
            src.read(&mut self.buf)?;
            parse_netstat(&self.buf, fields, out).map_err(|m| parse_error(src, m))?;
        }
        match self.snmp6.read(&mut self.buf) {
            Ok(()) => parse_snmp6(&self.buf, f_snmp6, out).map_err(|m| parse_error(&self.snmp6, m)),
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

    const SNMP: &str = "\
Ip: Forwarding DefaultTTL InReceives InHdrErrors
Ip: 2 64 133611 0
Tcp: RtoAlgorithm RtoMin ActiveOpens PassiveOpens AttemptFails CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts
Tcp: 1 200 27 3 0 4 5002 2784 7 0 12
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors
Udp: 47 0 0 48 0 0
";

    const NETSTAT: &str = "\
TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPTimeouts TCPSynRetrans DelayedACKs
TcpExt: 0 1 2 3 4 99
IpExt: InNoRoutes InOctets OutOctets
IpExt: 0 124047417 255574
";

    const SNMP6: &str = "\
Ip6InReceives                   \t3
Ip6InOctets                     \t128
Ip6OutOctets                    \t880
Icmp6InMsgs                     \t1
Icmp6InErrors                   \t1
Udp6InDatagrams                 \t0
UdpLite6InErrors                \t0
";

    #[test]
    fn snmp_default_fields_tcp_established_and_retransmits() {
        let mut out = Vec::new();
        parse_netstat(SNMP, &mut FieldFilter::new(&DEFAULT_FIELDS), &mut out).unwrap();
        assert_eq!(
            render(&out),
            [
                "node_netstat_Ip_Forwarding{} 2",
                "node_netstat_Tcp_ActiveOpens{} 27",
                "node_netstat_Tcp_PassiveOpens{} 3",
                "node_netstat_Tcp_CurrEstab{} 4",
                "node_netstat_Tcp_InSegs{} 5002",
                "node_netstat_Tcp_OutSegs{} 2784",
                "node_netstat_Tcp_RetransSegs{} 7",
                "node_netstat_Tcp_InErrs{} 0",
                "node_netstat_Tcp_OutRsts{} 12",
                "node_netstat_Udp_InDatagrams{} 47",
                "node_netstat_Udp_NoPorts{} 0",
                "node_netstat_Udp_InErrors{} 0",
                "node_netstat_Udp_OutDatagrams{} 48",
                "node_netstat_Udp_RcvbufErrors{} 0",
                "node_netstat_Udp_SndbufErrors{} 0",
            ]
        );
    }

    #[test]
    fn netstat_and_snmp6_default_fields() {
        let mut out = Vec::new();
        parse_netstat(NETSTAT, &mut FieldFilter::new(&DEFAULT_FIELDS), &mut out).unwrap();
        parse_snmp6(SNMP6, &mut FieldFilter::new(&DEFAULT_FIELDS), &mut out).unwrap();
        assert_eq!(
            render(&out),
            [
                "node_netstat_TcpExt_SyncookiesSent{} 0",
                "node_netstat_TcpExt_ListenOverflows{} 1",
                "node_netstat_TcpExt_ListenDrops{} 2",
                "node_netstat_TcpExt_TCPTimeouts{} 3",
                "node_netstat_TcpExt_TCPSynRetrans{} 4",
                "node_netstat_IpExt_InOctets{} 124047417",
                "node_netstat_IpExt_OutOctets{} 255574",
                "node_netstat_Ip6_InOctets{} 128",
                "node_netstat_Ip6_OutOctets{} 880",
                "node_netstat_Icmp6_InMsgs{} 1",
                "node_netstat_Icmp6_InErrors{} 1",
                "node_netstat_Udp6_InDatagrams{} 0",
                "node_netstat_UdpLite6_InErrors{} 0",
            ]
        );
    }

    #[test]
    fn malformed_tables_are_errors() {
        let cases = [
            ("Tcp: A B\n", "no value line after \"Tcp: A B\""),
            (
                "Tcp: CurrEstab\nUdp: 1\n",
                "header for Tcp followed by values for Udp",
            ),
            (
                "Tcp: CurrEstab InSegs\nTcp: 1\n",
                "Tcp: 2 field names but 1 values",
            ),
            (
                "Tcp CurrEstab\nTcp 1\n",
                "no \"Protocol:\" prefix: \"Tcp CurrEstab\"",
            ),
            (
                "Tcp: CurrEstab\nTcp: x\n",
                "Tcp_CurrEstab: \"x\" is not a number",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse_netstat(
                    text,
                    &mut FieldFilter::new(&DEFAULT_FIELDS),
                    &mut Vec::new()
                ),
                Err(want.to_string()),
                "{text}"
            );
        }
        assert_eq!(
            parse_snmp6(
                "Ip6InOctets\n",
                &mut FieldFilter::new(&DEFAULT_FIELDS),
                &mut Vec::new()
            ),
            Err("expected \"name value\": \"Ip6InOctets\"".into())
        );
    }
}
