//! TLS for every runner (client configs with the ring provider, cached per option set) and
//! the `tls` check: handshake, chain validity, certificate expiry, `min_days_left`.

use crate::def::{CheckDef, TlsOptions};
use crate::outcome::Outcome;
use crate::validate::host_port;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tokio::time::timeout_at;

type Key = (bool, Option<String>, Vec<Vec<u8>>);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static P: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The system's trust anchors (Debian's ca-certificates), or Mozilla's bundled set when the
/// system has none.
fn system_roots() -> Result<RootCertStore, String> {
    static R: OnceLock<RootCertStore> = OnceLock::new();
    Ok(R.get_or_init(|| {
        let mut store = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for c in found.certs {
            let _ = store.add(c);
        }
        if store.is_empty() {
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        store
    })
    .clone())
}

/// Accepts any certificate; the handshake signatures are still checked.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client config for these options and ALPN protocols, built once and shared.
pub(crate) fn client_config(
    opts: Option<&TlsOptions>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, String> {
    static CACHE: OnceLock<Mutex<HashMap<Key, Arc<ClientConfig>>>> = OnceLock::new();
    let def = TlsOptions::default();
    let o = opts.unwrap_or(&def);
    let key: Key = (
        o.insecure_skip_verify,
        o.ca_file.clone(),
        alpn.iter().map(|a| a.to_vec()).collect(),
    );
    let cache = CACHE.get_or_init(Default::default);
    if let Some(c) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(c.clone());
    }
    let p = provider();
    let b = ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let mut cfg = if o.insecure_skip_verify {
        b.dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(p)))
            .with_no_client_auth()
    } else {
        let roots = match &o.ca_file {
            Some(f) => outpost_shared::tls::load_roots(std::path::Path::new(f))
                .map_err(|e| format!("tls.ca_file: {e}"))?,
            None => system_roots()?,
        };
        b.with_root_certificates(roots).with_no_client_auth()
    };
    cfg.alpn_protocols = key.2.clone();
    let cfg = Arc::new(cfg);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, cfg.clone());
    Ok(cfg)
}

/// The name to verify: the configured `server_name`, else the host.
pub(crate) fn server_name(
    opts: Option<&TlsOptions>,
    host: &str,
) -> Result<ServerName<'static>, String> {
    let n = opts.and_then(|o| o.server_name.clone()).unwrap_or_else(|| {
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string()
    });
    ServerName::try_from(n.clone()).map_err(|e| format!("tls: server name {n:?}: {e}"))
}

/// Unix time of each certificate's notAfter.
pub(crate) fn expiries(chain: &[CertificateDer<'_>]) -> Vec<i64> {
    chain
        .iter()
        .filter_map(|c| x509_parser::parse_x509_certificate(c.as_ref()).ok())
        .map(|(_, c)| c.validity().not_after.timestamp())
        .collect()
}

/// Records blackbox's certificate metrics for the notAfter times of a presented chain:
/// earliest expiry of any certificate, and the same for the chain as presented (which the
/// handshake verified unless verification is off). Returns the earliest; records nothing
/// for an empty chain.
pub(crate) fn expiry_metrics(o: &mut Outcome, expiries: &[i64]) -> Option<i64> {
    let earliest = expiries.iter().copied().min()?;
    o.metric("probe_ssl_earliest_cert_expiry", earliest as f64);
    o.metric(
        "probe_ssl_last_chain_expiry_timestamp_seconds",
        earliest as f64,
    );
    Some(earliest)
}

/// [`expiry_metrics`] for a presented chain.
pub(crate) fn cert_metrics(o: &mut Outcome, chain: &[CertificateDer<'_>]) -> Option<i64> {
    expiry_metrics(o, &expiries(chain))
}

/// The `version` label of `probe_tls_version_info` for a negotiated protocol version, as
/// blackbox_exporter writes it ("TLS 1.3").
pub(crate) fn version_name(v: Option<rustls::ProtocolVersion>) -> &'static str {
    match v {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2",
        _ => "unknown",
    }
}

/// Records `probe_tls_version_info` and the certificate metrics of an established client
/// connection; returns the earliest expiry.
pub(crate) fn session_metrics(o: &mut Outcome, c: &rustls::ClientConnection) -> Option<i64> {
    o.metric_l(
        "probe_tls_version_info",
        &[("version", version_name(c.protocol_version()))],
        1.0,
    );
    cert_metrics(o, c.peer_certificates().unwrap_or_default())
}

/// Describes a handshake failure the way a reader can act on.
pub(crate) fn handshake_error(e: &std::io::Error) -> String {
    format!("tls handshake: {e}")
}

pub(crate) async fn run(def: &CheckDef, deadline: tokio::time::Instant) -> Outcome {
    let mut o = Outcome::new(def);
    let r = probe(def, deadline, &mut o).await;
    o.finish(r)
}

async fn probe(
    def: &CheckDef,
    deadline: tokio::time::Instant,
    o: &mut Outcome,
) -> Result<(), String> {
    let target = def.target.as_deref().unwrap_or_default();
    let (host, port) = host_port(target)?;
    let cfg = client_config(def.tls.as_ref(), &[])?;
    let name = server_name(def.tls.as_ref(), host)?;
    let to = || crate::timeout_reason(def);
    let c = timeout_at(deadline, crate::addr::connect(def, host, port))
        .await
        .map_err(|_| to())??;
    o.metric("probe_dns_lookup_time_seconds", c.resolve.as_secs_f64());
    o.metric(
        "probe_ip_protocol",
        crate::def::IpProtocol::of(c.addr.ip()).number(),
    );
    o.metric_l(
        "probe_tls_duration_seconds",
        &[("phase", "connect")],
        c.connect.as_secs_f64(),
    );
    let tcp = c.stream;
    let t1 = Instant::now();
    let conn = timeout_at(
        deadline,
        tokio_rustls::TlsConnector::from(cfg).connect(name, tcp),
    )
    .await
    .map_err(|_| to())?
    .map_err(|e| handshake_error(&e))?;
    o.metric_l(
        "probe_tls_duration_seconds",
        &[("phase", "tls")],
        t1.elapsed().as_secs_f64(),
    );
    let (_, c) = conn.get_ref();
    let earliest = session_metrics(o, c).ok_or("tls: the server sent no certificate")?;
    if let Some(min) = def.min_days_left {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let days = (earliest - now) as f64 / 86_400.0;
        if days < f64::from(min) {
            return Err(format!(
                "certificate expires in {days:.1} days, fewer than min_days_left {min}"
            ));
        }
    }
    Ok(())
}
