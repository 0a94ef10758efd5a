//! `icmp` checks: one echo request over an unprivileged ping socket (SOCK_DGRAM with
//! IPPROTO_ICMP / IPPROTO_ICMPV6), which Linux allows to groups in
//! `net.ipv4.ping_group_range`. Where the kernel refuses, the error says how to allow it.

use crate::def::CheckDef;
use crate::outcome::Outcome;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;
use tokio::net::UdpSocket;

/// What to do when the kernel refuses a ping socket.
pub(crate) const PING_SOCKET_DENIED: &str = "icmp: the kernel refused an unprivileged ping socket; \
allow this process's group with `sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"` \
(or the group id range of the service user), or give the process CAP_NET_RAW";

/// An echo request with this id, sequence and payload (the kernel fills in the checksum
/// and, for ping sockets, the id).
pub(crate) fn echo_request(v6: bool, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(payload);
    if !v6 {
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// The Internet checksum (RFC 1071).
pub(crate) fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from(c[0]) << 8
        };
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Is `p` an echo reply with this sequence number?
pub(crate) fn is_reply(v6: bool, p: &[u8], seq: u16) -> bool {
    p.len() >= 8 && p[0] == if v6 { 129 } else { 0 } && u16::from_be_bytes([p[6], p[7]]) == seq
}

/// Opens a ping socket; EACCES/EPERM become [`PING_SOCKET_DENIED`].
pub(crate) fn ping_socket(v6: bool) -> Result<Socket, String> {
    let (d, p) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    Socket::new(d, Type::DGRAM, Some(p)).map_err(|e| match e.raw_os_error() {
        Some(13) | Some(1) => format!("{PING_SOCKET_DENIED} ({e})"),
        _ => format!("icmp: cannot open a ping socket: {e}"),
    })
}

pub(crate) async fn run(def: &CheckDef, deadline: tokio::time::Instant) -> Outcome {
    crate::probe_until(def, deadline, probe).await
}

async fn probe(def: &CheckDef, o: &mut Outcome) -> Result<(), String> {
    let target = def.target.as_deref().unwrap_or_default();
    let t0 = Instant::now();
    let ip: IpAddr = match target.parse() {
        Ok(ip) => ip,
        Err(_) => crate::addr::resolve(def, target, 0).await?[0].ip(),
    };
    o.metric("probe_dns_lookup_time_seconds", t0.elapsed().as_secs_f64());
    o.metric("probe_ip_protocol", if ip.is_ipv4() { 4.0 } else { 6.0 });
    let v6 = ip.is_ipv6();
    let s = ping_socket(v6)?;
    s.set_nonblocking(true).map_err(|e| format!("icmp: {e}"))?;
    let sock =
        UdpSocket::from_std(std::net::UdpSocket::from(s)).map_err(|e| format!("icmp: {e}"))?;
    sock.connect(SocketAddr::new(ip, 0))
        .await
        .map_err(|e| crate::http::io_err("icmp connect", &e))?;
    let seq = fastrand::u16(..);
    let req = echo_request(v6, 0, seq, b"outpost-synthetic");
    let t1 = Instant::now();
    sock.send(&req)
        .await
        .map_err(|e| crate::http::io_err("icmp send", &e))?;
    let mut buf = [0u8; 1500];
    loop {
        let n = sock
            .recv(&mut buf)
            .await
            .map_err(|e| crate::http::io_err("icmp receive", &e))?;
        if is_reply(v6, &buf[..n], seq) {
            break;
        }
    }
    o.metric_l(
        "probe_icmp_duration_seconds",
        &[("phase", "rtt")],
        t1.elapsed().as_secs_f64(),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_requests_carry_a_valid_checksum_and_replies_are_recognised() {
        let p = echo_request(false, 7, 9, b"abc");
        assert_eq!(p[0], 8);
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
        let mut reply = p.clone();
        reply[0] = 0;
        assert!(is_reply(false, &reply, 9));
        assert!(!is_reply(false, &reply, 10));
        assert!(!is_reply(false, &p, 9));
    }
}
