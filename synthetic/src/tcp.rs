//! `tcp` checks: connect (optionally with TLS), optionally send a text and read until the
//! `expect` regex matches.

use crate::def::{CheckDef, IpProtocol};
use crate::http::io_err;
use crate::outcome::Outcome;
use crate::validate::host_port;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Most bytes read while waiting for `expect`.
const MAX_READ: usize = 64 * 1024;

pub(crate) async fn run(def: &CheckDef, deadline: tokio::time::Instant) -> Outcome {
    crate::probe_until(def, deadline, probe).await
}

async fn probe(def: &CheckDef, o: &mut Outcome) -> Result<(), String> {
    let (host, port) = host_port(def.target.as_deref().unwrap_or_default())?;
    let c = crate::addr::connect(def, host, port).await?;
    o.metric("probe_dns_lookup_time_seconds", c.resolve.as_secs_f64());
    o.metric("probe_ip_protocol", IpProtocol::of(c.addr.ip()).number());
    let tcp = c.stream;
    match &def.tls {
        None => exchange(def, tcp).await,
        Some(t) => {
            let cfg = crate::tls::client_config(Some(t), &[])?;
            let name = crate::tls::server_name(Some(t), host)?;
            let s = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .map_err(|e| crate::tls::handshake_error(&e))?;
            crate::tls::session_metrics(o, s.get_ref().1);
            exchange(def, s).await
        }
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    def: &CheckDef,
    mut s: S,
) -> Result<(), String> {
    if let Some(text) = &def.send {
        s.write_all(text.as_bytes())
            .await
            .map_err(|e| io_err("send", &e))?;
        s.flush().await.map_err(|e| io_err("send", &e))?;
    }
    let Some(re) = &def.expect else {
        return Ok(());
    };
    let re =
        regex::Regex::new(re).map_err(|e| format!("expect: regex `{re}` is not valid: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if re.is_match(&String::from_utf8_lossy(&buf)) {
            return Ok(());
        }
        if buf.len() >= MAX_READ {
            break;
        }
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| io_err("receive", &e))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Err(format!(
        "received {:?} does not match expect regex `{}`",
        String::from_utf8_lossy(&buf[..buf.len().min(100)]),
        re.as_str()
    ))
}
