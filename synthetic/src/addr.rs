//! Address selection for every check that resolves a name, with blackbox_exporter's keys:
//! `preferred_ip_protocol` (`ip6` or `ip4`, default `ip6`) picks the family tried first and
//! `ip_protocol_fallback` (default true) allows the other one. Unlike blackbox_exporter,
//! which falls back only when the preferred family has no address, a connection-oriented
//! probe (http, tcp, tls) also falls back when every address of the preferred family
//! refuses or fails to connect, so a service listening on 127.0.0.1 only is reached through
//! a name that resolves to `::1` as well, as curl reaches it. `probe_ip_protocol` reports the
//! family of the address actually used.

use crate::def::{CheckDef, IpProtocol};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

impl IpProtocol {
    /// The family of an address.
    pub fn of(ip: IpAddr) -> IpProtocol {
        if ip.is_ipv4() {
            IpProtocol::Ip4
        } else {
            IpProtocol::Ip6
        }
    }

    /// `probe_ip_protocol`'s value: 4 or 6.
    pub fn number(self) -> f64 {
        match self {
            IpProtocol::Ip4 => 4.0,
            IpProtocol::Ip6 => 6.0,
        }
    }
}

/// The preferred family and whether falling back is allowed, from a check's keys.
pub fn preference(def: &CheckDef) -> (IpProtocol, bool) {
    (
        def.preferred_ip_protocol.unwrap_or(IpProtocol::Ip6),
        def.ip_protocol_fallback.unwrap_or(true),
    )
}

/// The addresses to try, in order: those of the preferred family first, then (with
/// fallback) those of the other, each family in the resolver's order. Without fallback the
/// other family is left out. Pure.
pub fn order(resolved: &[SocketAddr], preferred: IpProtocol, fallback: bool) -> Vec<SocketAddr> {
    let of = |fam: IpProtocol| {
        resolved
            .iter()
            .copied()
            .filter(move |a| IpProtocol::of(a.ip()) == fam)
    };
    let mut out: Vec<SocketAddr> = of(preferred).collect();
    if fallback {
        let other = match preferred {
            IpProtocol::Ip4 => IpProtocol::Ip6,
            IpProtocol::Ip6 => IpProtocol::Ip4,
        };
        out.extend(of(other));
    }
    out
}

/// Resolves `host` (a name, or an address taken as it is) and orders the addresses for
/// `def` ([`order`]). Errors: the lookup failed, or no address of an allowed family, e.g.
/// `resolve example.org: no ip4 address (ip_protocol_fallback is false)`.
pub(crate) async fn resolve(
    def: &CheckDef,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, String> {
    let (preferred, fallback) = preference(def);
    let all: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("resolve {host}: {e}"))?
            .collect(),
    };
    if all.is_empty() {
        return Err(format!("resolve {host}: no address"));
    }
    let ordered = order(&all, preferred, fallback);
    if ordered.is_empty() {
        let fam = match preferred {
            IpProtocol::Ip4 => "ip4",
            IpProtocol::Ip6 => "ip6",
        };
        return Err(format!(
            "resolve {host}: no {fam} address (ip_protocol_fallback is false)"
        ));
    }
    Ok(ordered)
}

/// A TCP connection made for a check: the stream, the address it reached, and the time
/// spent resolving and connecting.
pub(crate) struct Connected {
    pub stream: TcpStream,
    pub addr: SocketAddr,
    pub resolve: Duration,
    pub connect: Duration,
}

/// Resolves `host` and connects to the first address of [`resolve`]'s order that accepts
/// ([`connect_first`]). Errors: the resolution's, or [`connect_first`]'s.
pub(crate) async fn connect(def: &CheckDef, host: &str, port: u16) -> Result<Connected, String> {
    let t0 = Instant::now();
    let addrs = resolve(def, host, port).await?;
    let resolve = t0.elapsed();
    let t1 = Instant::now();
    let (stream, addr) = connect_first(&addrs).await?;
    let _ = stream.set_nodelay(true);
    Ok(Connected {
        stream,
        addr,
        resolve,
        connect: t1.elapsed(),
    })
}

/// Connects to each address in turn until one accepts. Errors: the last address's connect
/// error (`connect: connection refused`), naming every address tried when there were
/// several (`connect (tried ::1, 127.0.0.1): connection refused`).
pub async fn connect_first(addrs: &[SocketAddr]) -> Result<(TcpStream, SocketAddr), String> {
    let mut last = None;
    for &addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok((stream, addr)),
            Err(e) => last = Some(e),
        }
    }
    let e = last.unwrap_or_else(|| std::io::Error::other("no address"));
    if addrs.len() <= 1 {
        Err(crate::http::io_err("connect", &e))
    } else {
        let tried: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
        Err(crate::http::io_err(
            &format!("connect (tried {})", tried.join(", ")),
            &e,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use IpProtocol::*;

    #[test]
    fn addresses_are_ordered_by_preference_and_fallback() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let both = [
            a("[::1]:80"),
            a("127.0.0.1:80"),
            a("[::2]:80"),
            a("10.0.0.1:80"),
        ];
        let v4 = [a("127.0.0.1:80")];
        let v6 = [a("[::1]:80")];
        let cases: &[(&[SocketAddr], IpProtocol, bool, Vec<SocketAddr>)] = &[
            (
                &both,
                Ip6,
                true,
                vec![
                    a("[::1]:80"),
                    a("[::2]:80"),
                    a("127.0.0.1:80"),
                    a("10.0.0.1:80"),
                ],
            ),
            (
                &both,
                Ip4,
                true,
                vec![
                    a("127.0.0.1:80"),
                    a("10.0.0.1:80"),
                    a("[::1]:80"),
                    a("[::2]:80"),
                ],
            ),
            (&both, Ip6, false, vec![a("[::1]:80"), a("[::2]:80")]),
            (&both, Ip4, false, vec![a("127.0.0.1:80"), a("10.0.0.1:80")]),
            // Only the other family resolved: used with fallback, nothing without.
            (&v4, Ip6, true, vec![a("127.0.0.1:80")]),
            (&v4, Ip6, false, vec![]),
            (&v6, Ip4, true, vec![a("[::1]:80")]),
            (&v6, Ip4, false, vec![]),
            (&[], Ip6, true, vec![]),
        ];
        for (resolved, pref, fallback, want) in cases {
            assert_eq!(
                &order(resolved, *pref, *fallback),
                want,
                "{resolved:?} {pref:?} fallback={fallback}"
            );
        }
    }

    /// A name resolving to ::1 and 127.0.0.1 (in that order, as with ip6 preferred) and a
    /// service on 127.0.0.1 only: the IPv4 address is reached after ::1 fails.
    #[tokio::test]
    async fn the_other_family_is_tried_when_the_preferred_one_fails_to_connect() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
        let v4 = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
        let resolved = [v6, v4];
        let (_, used) = connect_first(&order(&resolved, Ip6, true)).await.unwrap();
        assert_eq!(used, v4);
        assert_eq!(IpProtocol::of(used.ip()).number(), 4.0);
        // Without fallback only ::1 is tried, and the reason says so.
        let e = connect_first(&order(&resolved, Ip6, false))
            .await
            .unwrap_err();
        assert!(e.starts_with("connect: "), "{e}");
        drop(l);
        let e = connect_first(&order(&resolved, Ip6, true))
            .await
            .unwrap_err();
        assert!(e.starts_with("connect (tried ::1, 127.0.0.1): "), "{e}");
    }
}
