//! `http3` checks: one HTTP/3 request over QUIC (quinn + h3, ALPN `h3`), timed in the same
//! phases as HTTP/1.1 where they exist (the QUIC handshake carries TLS, so it is reported as
//! `tls` and `connect` stays 0), with the same assertions.

use crate::def::IpProtocol;
use crate::def::{CheckDef, DEFAULT_MAX_BODY};
use crate::http::{Fetched, Phases, decode_body, evaluate, record};
use crate::outcome::Outcome;
use bytes::{Buf, Bytes};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::time::timeout_at;

pub(crate) async fn run(def: &CheckDef, deadline: tokio::time::Instant) -> Outcome {
    let mut o = Outcome::new(def);
    let r = match timeout_at(deadline, fetch(def)).await {
        Err(_) => Err(crate::timeout_reason(def)),
        Ok(Err(e)) => Err(e),
        Ok(Ok(f)) => {
            record(&mut o, &f);
            evaluate(&mut o, def.assert.as_ref(), &f)
        }
    };
    o.finish(r)
}

async fn fetch(def: &CheckDef) -> Result<Fetched, String> {
    let start = Instant::now();
    let url = def.url.clone().unwrap_or_default();
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("url `{url}` is not valid: {e}"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("url `{url}` has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let mut ph = Phases::default();
    let t0 = Instant::now();
    // QUIC has no connection to refuse, so only the resolution falls back.
    let addr = crate::addr::resolve(def, &host, port).await?[0];
    ph.resolve = t0.elapsed();

    let tls = crate::tls::client_config(def.tls.as_ref(), &[b"h3"])?;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| format!("http3: tls config unusable for QUIC: {e}"))?;
    let bind: SocketAddr = if addr.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let mut endpoint =
        quinn::Endpoint::client(bind).map_err(|e| crate::http::io_err("http3: udp bind", &e))?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let name = def
        .tls
        .as_ref()
        .and_then(|t| t.server_name.clone())
        .unwrap_or_else(|| host.clone());
    let t1 = Instant::now();
    let conn = endpoint
        .connect(addr, &name)
        .map_err(|e| format!("http3: connect: {e}"))?
        .await
        .map_err(|e| format!("http3: quic handshake: {e}"))?;
    ph.tls = t1.elapsed();
    let cert_expiries = conn
        .peer_identity()
        .and_then(|i| {
            i.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .map(|chain| crate::tls::expiries(&chain))
        .unwrap_or_default();

    let t2 = Instant::now();
    let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(conn.clone()))
        .await
        .map_err(|e| format!("http3: {e}"))?;
    let drive = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let result = async {
        let mut b = http::Request::builder()
            .method(def.method.as_deref().unwrap_or("GET"))
            .uri(uri.clone())
            .header(http::header::USER_AGENT, crate::http::USER_AGENT);
        for (k, v) in &def.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let req = b.body(()).map_err(|e| format!("request: {e}"))?;
        let mut stream = send
            .send_request(req)
            .await
            .map_err(|e| format!("http3: send request: {e}"))?;
        if let Some(body) = &def.body {
            stream
                .send_data(Bytes::from(body.clone()))
                .await
                .map_err(|e| format!("http3: send body: {e}"))?;
        }
        stream.finish().await.map_err(|e| format!("http3: {e}"))?;
        let resp = stream
            .recv_response()
            .await
            .map_err(|e| format!("http3: response: {e}"))?;
        ph.processing = t2.elapsed();
        let t3 = Instant::now();
        let max = def.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY);
        let mut data = Vec::new();
        let mut truncated = false;
        while !truncated {
            match stream
                .recv_data()
                .await
                .map_err(|e| format!("http3: reading body: {e}"))?
            {
                None => break,
                Some(mut chunk) => {
                    while chunk.has_remaining() {
                        if data.len() as u64 >= max {
                            truncated = true;
                            break;
                        }
                        let c = chunk.chunk();
                        let take = c.len().min((max - data.len() as u64) as usize);
                        data.extend_from_slice(&c[..take]);
                        chunk.advance(take);
                    }
                }
            }
        }
        ph.transfer = t3.elapsed();
        let (headers, content_length) = crate::http::header_list(resp.headers());
        let (body, decode_error) = decode_body(resp.headers(), data, truncated, max);
        Ok(Fetched {
            status: resp.status().as_u16(),
            headers,
            body,
            content_length,
            version: 3.0,
            redirects: 0,
            tls: true,
            // QUIC always runs TLS 1.3 (RFC 9001).
            tls_version: Some("TLS 1.3"),
            cert_expiries,
            ip_protocol: IpProtocol::of(addr.ip()),
            decode_error,
            phases: ph,
            duration: start.elapsed(),
        })
    }
    .await;
    conn.close(0u32.into(), b"done");
    drive.abort();
    endpoint.close(0u32.into(), b"done");
    result
}
