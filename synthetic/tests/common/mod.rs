#![allow(unreachable_pub)]
//! Real servers on loopback for the runner tests: a small HTTP/1.1 server (plain and TLS),
//! a DNS responder (UDP, and TCP for truncated answers), a TCP banner server and an HTTP/3
//! server, with a CA and a localhost certificate made by outpost_shared::tls.
#![allow(dead_code)]

use bytes::Bytes;
use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, MX, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use outpost_synthetic::CheckDef;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

pub fn check(yaml: &str) -> CheckDef {
    let d: CheckDef = serde_saphyr::from_str(yaml).expect("test check parses");
    if let Err(e) = d.validate() {
        panic!("test check is invalid: {e:?}");
    }
    d
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("outpost-synth-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A CA and a certificate for localhost/127.0.0.1: (dir with ca.crt, server config).
pub fn tls_server(alpn: &[&[u8]]) -> (PathBuf, rustls::ServerConfig) {
    let dir = temp_dir("ca");
    outpost_shared::tls::init_ca(&dir, &[]).unwrap();
    let certs = outpost_shared::tls::load_certs(&dir.join("aggregator.crt")).unwrap();
    let key = outpost_shared::tls::load_key(&dir.join("aggregator.key")).unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    (dir, cfg)
}

struct Req {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

async fn read_request<S: AsyncRead + Unpin>(s: &mut S) -> Option<Req> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Req {
        method,
        path,
        headers,
        body,
    })
}

fn header<'a>(r: &'a Req, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// What `/coded/<coding>` serves, once decoded.
pub const CODED_TEXT: &str = "the word to look for is marmalade, and it is here";

/// `text` in a content coding: gzip, deflate, br or zstd.
pub fn encode(coding: &str, text: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match coding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(text).unwrap();
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(text).unwrap();
            e.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                w.write_all(text).unwrap();
            }
            out
        }
        "zstd" => {
            ruzstd::encoding::compress_to_vec(text, ruzstd::encoding::CompressionLevel::Fastest)
        }
        other => panic!("no encoder for {other}"),
    }
}

/// The routes every test server answers: (status, extra headers, body).
fn route(r: &Req) -> (u16, Vec<(&'static str, String)>, Vec<u8>, Duration) {
    let json = ("content-type", "application/json".to_string());
    let none = Duration::ZERO;
    // `/coded/<coding>[/<anything>]`: CODED_TEXT in that coding; `/coded/<coding>/broken`:
    // the plain text declared as that coding.
    if let Some(rest) = r.path.strip_prefix("/coded/") {
        let (coding, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let broken = tail == "broken";
        let body = if broken {
            CODED_TEXT.as_bytes().to_vec()
        } else {
            encode(coding, CODED_TEXT.as_bytes())
        };
        return (
            200,
            vec![("content-encoding", coding.to_string())],
            body,
            none,
        );
    }
    match (r.method.as_str(), r.path.as_str()) {
        (_, "/ok") => (200, vec![], b"ok".to_vec(), none),
        (_, "/fail") => (500, vec![], b"broken".to_vec(), none),
        (_, "/json") => (
            200,
            vec![json],
            br#"{"status":"ok","items":[{"id":7}]}"#.to_vec(),
            none,
        ),
        (_, "/redirect") => (302, vec![("location", "/hop".into())], vec![], none),
        (_, "/hop") => (301, vec![("location", "ok".into())], vec![], none),
        (_, "/slow") => (200, vec![], b"late".to_vec(), Duration::from_secs(3)),
        ("POST", "/login") => {
            if String::from_utf8_lossy(&r.body).contains("\"user\":\"ann\"") {
                (
                    200,
                    vec![json, ("x-session", "s-9".into())],
                    br#"{"token":"t-123"}"#.to_vec(),
                    none,
                )
            } else {
                (403, vec![], b"who?".to_vec(), none)
            }
        }
        ("GET", "/items/t-123") => match header(r, "authorization") {
            Some("Bearer t-123") => (
                200,
                vec![json],
                br#"{"items":[{"id":"i-5"}]}"#.to_vec(),
                none,
            ),
            _ => (401, vec![], b"no".to_vec(), none),
        },
        ("GET", "/items/i-5") => (404, vec![], b"gone".to_vec(), none),
        _ => (404, vec![], b"not found".to_vec(), none),
    }
}

async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let Some(req) = read_request(&mut s).await else {
        return;
    };
    let (status, headers, body, delay) = route(&req);
    tokio::time::sleep(delay).await;
    let mut out = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&body);
    let _ = s.write_all(&bytes).await;
    let _ = s.shutdown().await;
}

/// Plain HTTP on a loopback port.
pub async fn http_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(serve_one(s));
        }
    });
    addr
}

/// HTTPS with a certificate for localhost; returns the CA file to trust.
pub async fn https_server() -> (SocketAddr, PathBuf) {
    let (dir, cfg) = tls_server(&[b"http/1.1"]);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let a = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(t) = a.accept(s).await {
                    serve_one(t).await;
                }
            });
        }
    });
    (addr, dir.join("ca.crt"))
}

/// Says "220 ready" on connect and echoes one line back in upper case.
pub async fn banner_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = s.write_all(b"220 ready\r\n").await;
                let mut buf = [0u8; 256];
                if let Ok(n) = s.read(&mut buf).await {
                    let up = String::from_utf8_lossy(&buf[..n]).to_uppercase();
                    let _ = s.write_all(up.as_bytes()).await;
                }
            });
        }
    });
    addr
}

/// A port nothing listens on.
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn dns_answer(q: &Message, truncate_udp: bool, udp: bool) -> Message {
    let mut r = Message::response(q.metadata.id, OpCode::Query);
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    let Some(query) = q.queries.first().cloned() else {
        r.metadata.response_code = ResponseCode::FormErr;
        return r;
    };
    r.add_query(query.clone());
    let name = query.name.to_ascii().to_ascii_lowercase();
    let qn = query.name.clone();
    let rec = |d: RData| Record::from_rdata(qn.clone(), 60, d);
    match (name.as_str(), query.query_type) {
        ("ok.test.", RecordType::A) => {
            r.add_answer(rec(RData::A(A::new(192, 0, 2, 1))));
            r.add_answer(rec(RData::A(A::new(192, 0, 2, 2))));
        }
        ("ok.test.", RecordType::MX) => {
            r.add_answer(rec(RData::MX(MX::new(
                10,
                Name::from_ascii("mail.ok.test.").unwrap(),
            ))));
        }
        ("big.test.", RecordType::TXT) => {
            if udp && truncate_udp {
                r.metadata.truncation = true;
            } else {
                for i in 0..30 {
                    r.add_answer(rec(RData::TXT(TXT::new(vec![format!(
                        "{i:02}-{}",
                        "x".repeat(40)
                    )]))));
                }
            }
        }
        ("ok.test.", _) | ("big.test.", _) => {}
        _ => r.metadata.response_code = ResponseCode::NXDomain,
    }
    r
}

/// A DNS server for `ok.test` (A: 192.0.2.1 and .2, MX: 10 mail.ok.test) and `big.test`
/// (TXT, truncated over UDP, whole over TCP); NXDOMAIN for anything else.
pub async fn dns_server() -> SocketAddr {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                return;
            };
            if let Ok(q) = Message::from_vec(&buf[..n]) {
                let a = dns_answer(&q, true, true).to_vec().unwrap();
                let _ = udp.send_to(&a, from).await;
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = tcp.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Ok(len) = s.read_u16().await else { return };
                let mut b = vec![0u8; usize::from(len)];
                if s.read_exact(&mut b).await.is_err() {
                    return;
                }
                if let Ok(q) = Message::from_vec(&b) {
                    let a = dns_answer(&q, true, false).to_vec().unwrap();
                    let mut out = (a.len() as u16).to_be_bytes().to_vec();
                    out.extend_from_slice(&a);
                    let _ = s.write_all(&out).await;
                }
            });
        }
    });
    addr
}

/// An HTTP/3 server: `/ok` -> 200 "h3 ok" with `x-proto: h3`, others 404.
pub async fn h3_server() -> (SocketAddr, PathBuf) {
    let (dir, cfg) = tls_server(&[b"h3"]);
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(cfg).unwrap();
    let ep = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(quic)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let addr = ep.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(inc) = ep.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = inc.await else { return };
                let Ok(mut h3c) =
                    h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(conn)).await
                else {
                    return;
                };
                while let Ok(Some(resolver)) = h3c.accept().await {
                    tokio::spawn(async move {
                        let Ok((req, mut stream)) = resolver.resolve_request().await else {
                            return;
                        };
                        let (status, body) = if req.uri().path() == "/ok" {
                            (200, "h3 ok")
                        } else {
                            (404, "no")
                        };
                        let resp = http::Response::builder()
                            .status(status)
                            .header("x-proto", "h3")
                            .body(())
                            .unwrap();
                        let _ = stream.send_response(resp).await;
                        let _ = stream.send_data(Bytes::from_static(body.as_bytes())).await;
                        let _ = stream.finish().await;
                    });
                }
            });
        }
    });
    (addr, dir.join("ca.crt"))
}

pub async fn connect_ok(addr: SocketAddr) -> bool {
    TcpStream::connect(addr).await.is_ok()
}
