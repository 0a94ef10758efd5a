//! `dns` checks: one query over UDP (TCP when the answer is truncated) to a chosen resolver,
//! the response code and the expected answers checked. Messages are encoded and decoded with
//! hickory-proto.

use crate::def::CheckDef;
use crate::http::io_err;
use crate::outcome::Outcome;
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The first `nameserver` of a resolv.conf text.
pub(crate) fn first_nameserver(resolv_conf: &str) -> Option<String> {
    resolv_conf.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some("nameserver"))
            .then(|| w.next().map(str::to_string))
            .flatten()
    })
}

/// The response code's name as written in checks (`NOERROR`, `NXDOMAIN`, ...).
pub(crate) fn rcode_name(code: u16) -> String {
    match code {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE{n}"),
    }
}

/// Canonical text of an answer for comparing with `expect_answers`.
fn norm(s: &str) -> String {
    s.trim().trim_end_matches('.').to_ascii_lowercase()
}

async fn resolver_addr(def: &CheckDef) -> Result<SocketAddr, String> {
    let r = match &def.resolver {
        Some(r) => r.clone(),
        None => {
            let text = std::fs::read_to_string("/etc/resolv.conf")
                .map_err(|e| format!("no resolver given and /etc/resolv.conf unreadable: {e}"))?;
            first_nameserver(&text).ok_or(
                "no resolver given and /etc/resolv.conf names no nameserver; set `resolver`",
            )?
        }
    };
    if let Ok(ip) = r.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    if let Ok(sa) = r.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let (h, p) = match crate::validate::host_port(&r) {
        Ok((h, p)) => (h.to_string(), p),
        Err(_) => (r.clone(), 53),
    };
    let addrs = crate::addr::resolve(def, &h, p).await?;
    Ok(addrs[0])
}

pub(crate) async fn run(def: &CheckDef, deadline: tokio::time::Instant) -> Outcome {
    crate::probe_until(def, deadline, probe).await
}

async fn exchange_udp(server: SocketAddr, q: &[u8], id: u16) -> Result<Vec<u8>, String> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().unwrap_or_else(|_| unreachable!())
    } else {
        "[::]:0".parse().unwrap_or_else(|_| unreachable!())
    };
    let sock = UdpSocket::bind(bind)
        .await
        .map_err(|e| io_err("udp bind", &e))?;
    sock.connect(server)
        .await
        .map_err(|e| io_err("udp connect", &e))?;
    sock.send(q).await.map_err(|e| io_err("send query", &e))?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = sock
            .recv(&mut buf)
            .await
            .map_err(|e| io_err("receive answer", &e))?;
        // Ignore stray datagrams that are not the answer to this query.
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn exchange_tcp(server: SocketAddr, q: &[u8]) -> Result<Vec<u8>, String> {
    let mut s = TcpStream::connect(server)
        .await
        .map_err(|e| io_err("tcp connect", &e))?;
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(q);
    s.write_all(&framed)
        .await
        .map_err(|e| io_err("send query", &e))?;
    let len = s
        .read_u16()
        .await
        .map_err(|e| io_err("receive answer", &e))?;
    let mut buf = vec![0u8; usize::from(len)];
    s.read_exact(&mut buf)
        .await
        .map_err(|e| io_err("receive answer", &e))?;
    Ok(buf)
}

async fn probe(def: &CheckDef, o: &mut Outcome) -> Result<(), String> {
    let rtype_s = def
        .record_type
        .as_deref()
        .unwrap_or("A")
        .to_ascii_uppercase();
    let rtype = RecordType::from_str(&rtype_s).map_err(|e| format!("record_type: {e}"))?;
    let qname = def.query.as_deref().unwrap_or_default();
    let name = Name::from_utf8(qname).map_err(|e| format!("query {qname:?}: {e}"))?;
    let server = resolver_addr(def).await?;
    o.metric(
        "probe_ip_protocol",
        crate::def::IpProtocol::of(server.ip()).number(),
    );
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(name, rtype));
    let id = msg.metadata.id;
    let q = msg.to_vec().map_err(|e| format!("encode query: {e}"))?;
    let t0 = Instant::now();
    let mut raw = exchange_udp(server, &q, id).await?;
    let mut resp = Message::from_vec(&raw).map_err(|e| format!("decode answer: {e}"))?;
    if resp.metadata.truncation {
        raw = exchange_tcp(server, &q).await?;
        resp = Message::from_vec(&raw).map_err(|e| format!("decode answer over tcp: {e}"))?;
    }
    o.metric("probe_dns_lookup_time_seconds", t0.elapsed().as_secs_f64());
    o.metric("probe_dns_query_succeeded", 1.0);
    o.metric("probe_dns_answer_rrs", resp.answers.len() as f64);
    o.metric("probe_dns_authority_rrs", resp.authorities.len() as f64);
    o.metric("probe_dns_additional_rrs", resp.additionals.len() as f64);
    let rcode = rcode_name(u16::from(resp.metadata.response_code));
    let want = def
        .expect_rcode
        .as_deref()
        .unwrap_or("NOERROR")
        .to_ascii_uppercase();
    if rcode != want {
        return Err(format!("response code {rcode}, expected {want}"));
    }
    let answers: Vec<String> = resp
        .answers
        .iter()
        .filter(|r| r.record_type() == rtype)
        .map(|r| norm(&r.data.to_string()))
        .collect();
    for e in &def.expect_answers {
        if !answers.contains(&norm(e)) {
            return Err(format!(
                "answer {e:?} not among the {rtype_s} answers [{}]",
                answers.join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_first_nameserver() {
        let t = "# generated\nsearch lan\nnameserver 10.0.0.2\nnameserver 1.1.1.1\n";
        assert_eq!(first_nameserver(t).as_deref(), Some("10.0.0.2"));
        assert_eq!(first_nameserver("search x\n"), None);
        assert_eq!(rcode_name(3), "NXDOMAIN");
    }
}
