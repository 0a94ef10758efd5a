//! Mutual TLS for agent ↔ aggregator: certificate generation (`certs init`, `certs agent`),
//! loading PEM files, and the rustls configurations both sides use. The agent's identity is
//! the common name of its client certificate.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::frame::ALPN;

/// Why certificates or keys cannot be loaded, generated or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read, written or parsed.
    #[error("{path}: {msg}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// The files do not make a usable TLS configuration.
    #[error("{0}")]
    Config(String),
    /// rcgen could not make a certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

fn file_err(path: &Path, msg: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

/// Installs ring as the process-wide rustls crypto provider. Call once at startup; later
/// calls are harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Reads every certificate in a PEM file; a file with none is an error.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let data = std::fs::read(path)
        .map_err(|e| file_err(path, format!("cannot read certificate file: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_err(
            path,
            "no certificate found (expected a PEM \"BEGIN CERTIFICATE\" block)",
        ));
    }
    Ok(certs)
}

/// The first PEM private key in `path`.
///
/// # Errors
/// The file cannot be read or holds no private key.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let data =
        std::fs::read(path).map_err(|e| file_err(path, format!("cannot read key file: {e}")))?;
    PrivateKeyDer::from_pem_slice(&data)
        .map_err(|e| file_err(path, format!("no PEM private key found: {e}")))
}

/// Every PEM certificate in `path`, as trust anchors.
///
/// # Errors
/// The file cannot be read, holds no certificate, or one is not a usable CA.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots
            .add(c)
            .map_err(|e| file_err(path, format!("CA certificate rejected: {e}")))?;
    }
    Ok(roots)
}

/// The three files one side of a connection needs.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// CA certificate(s) that sign the other side's certificate (PEM).
    pub ca: PathBuf,
    /// This side's certificate (PEM).
    pub cert: PathBuf,
    /// This side's private key (PEM).
    pub key: PathBuf,
}

fn key_mismatch(files: &TlsFiles, e: rustls::Error) -> TlsError {
    TlsError::Config(format!(
        "{} and {} do not form a usable pair: {e}",
        files.cert.display(),
        files.key.display()
    ))
}

/// The aggregator's config: its own certificate, and client certificates required and
/// verified against the CA.
pub fn server_config(files: &TlsFiles) -> Result<rustls::ServerConfig, TlsError> {
    let roots = Arc::new(load_roots(&files.ca)?);
    let verifier = WebPkiClientVerifier::builder(roots)
        .build()
        .map_err(|e| TlsError::Config(format!("client verifier: {e}")))?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&files.cert)?, load_key(&files.key)?)
        .map_err(|e| key_mismatch(files, e))?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// The agent's config: the aggregator verified against the CA, and a client certificate.
pub fn client_config(files: &TlsFiles) -> Result<rustls::ClientConfig, TlsError> {
    let roots = load_roots(&files.ca)?;
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(load_certs(&files.cert)?, load_key(&files.key)?)
        .map_err(|e| key_mismatch(files, e))?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// The subject common name of a certificate: an agent's id.
pub fn common_name(der: &[u8]) -> Result<String, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| TlsError::Config(format!("unparsable certificate: {e}")))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| TlsError::Config("certificate has no subject common name".into()))?;
    Ok(cn.to_string())
}

/// Which end of the connection a set of [`TlsFiles`] is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// An agent.
    Client,
    /// The aggregator.
    Server,
}

/// Every problem with a set of TLS files, each prefixed with the config key (`keys` names
/// the ca, cert and key entries): PEM that does not parse, certificates outside their
/// validity at `now_secs` (Unix seconds), and a key that does not match its certificate.
/// Files that cannot be opened are left to the caller's existence check.
pub fn check_files(
    files: &TlsFiles,
    role: Role,
    keys: [&str; 3],
    now_secs: i64,
) -> Vec<crate::Problem> {
    use crate::Problem;
    let mut out = vec![];
    let readable = |p: &Path| std::fs::File::open(p).is_ok();
    fn validity(key: &str, path: &Path, der: &[u8], now_secs: i64, out: &mut Vec<Problem>) {
        match x509_parser::parse_x509_certificate(der) {
            Err(e) => out.push(Problem::new(
                key,
                format!("{}: unparsable certificate: {e}", path.display()),
            )),
            Ok((_, c)) => {
                let v = c.validity();
                if now_secs < v.not_before.timestamp() {
                    out.push(Problem::new(
                        key,
                        format!(
                            "{}: not valid before {} (check this host's clock)",
                            path.display(),
                            v.not_before
                        ),
                    ));
                }
                if now_secs > v.not_after.timestamp() {
                    out.push(Problem::new(
                        key,
                        format!(
                            "{}: expired on {}; issue a new one",
                            path.display(),
                            v.not_after
                        ),
                    ));
                }
            }
        }
    }
    if readable(&files.ca) {
        match load_roots(&files.ca) {
            Ok(_) => {
                if let Ok(certs) = load_certs(&files.ca) {
                    for c in &certs {
                        validity(keys[0], &files.ca, c, now_secs, &mut out);
                    }
                }
            }
            Err(e) => out.push(Problem::new(keys[0], e.to_string())),
        }
    }
    let certs = if readable(&files.cert) {
        match load_certs(&files.cert) {
            Ok(c) => {
                validity(keys[1], &files.cert, &c[0], now_secs, &mut out);
                Some(c)
            }
            Err(e) => {
                out.push(Problem::new(keys[1], e.to_string()));
                None
            }
        }
    } else {
        None
    };
    let key = if readable(&files.key) {
        load_key(&files.key)
            .map_err(|e| out.push(Problem::new(keys[2], e.to_string())))
            .ok()
    } else {
        None
    };
    if let (Some(certs), Some(key)) = (certs, key) {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pair = match role {
            Role::Client => rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.with_root_certificates(RootCertStore::empty())
                        .with_client_auth_cert(certs, key)
                        .map(|_| ())
                }),
            Role::Server => rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.with_no_client_auth()
                        .with_single_cert(certs, key)
                        .map(|_| ())
                }),
        };
        if let Ok(Err(e)) | Err(e) = pair {
            out.push(Problem::new(keys[2], key_mismatch(files, e).to_string()));
        }
    }
    out
}

fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), TlsError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| file_err(dir, format!("cannot create directory: {e}")))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    use std::io::Write;
    let mut f = opts
        .open(path)
        .map_err(|e| file_err(path, format!("cannot write: {e}")))?;
    f.write_all(contents.as_bytes())
        .map_err(|e| file_err(path, format!("cannot write: {e}")))
}

/// Writes `ca.crt`, `ca.key`, `aggregator.crt`, `aggregator.key` into `dir`. The
/// aggregator's certificate names localhost, 127.0.0.1, ::1 and every extra SAN.
/// Refuses to overwrite an existing CA, which would orphan every issued agent certificate.
pub fn init_ca(dir: &Path, extra_sans: &[String]) -> Result<Vec<PathBuf>, TlsError> {
    let ca_crt = dir.join("ca.crt");
    if ca_crt.exists() {
        return Err(file_err(
            &ca_crt,
            "a CA already exists here; remove it first or choose another --dir",
        ));
    }
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Outpost CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut ca_params, 3650);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let mut sans = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    sans.extend(extra_sans.iter().cloned());
    let srv_key = KeyPair::generate()?;
    let mut srv_params = CertificateParams::new(sans)?;
    srv_params
        .distinguished_name
        .push(DnType::CommonName, "outpost-aggregator");
    srv_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    set_validity(&mut srv_params, 825);
    let srv_cert = srv_params.signed_by(&srv_key, &issuer)?;

    let files = [
        (ca_crt, ca_cert.pem(), false),
        (dir.join("ca.key"), ca_key.serialize_pem(), true),
        (dir.join("aggregator.crt"), srv_cert.pem(), false),
        (dir.join("aggregator.key"), srv_key.serialize_pem(), true),
    ];
    for (p, c, private) in &files {
        write_file(p, c, *private)?;
    }
    Ok(files.into_iter().map(|(p, _, _)| p).collect())
}

/// Issues `agents/<id>.crt` and `agents/<id>.key` under `dir`, signed by `dir/ca.crt`.
pub fn issue_agent(dir: &Path, id: &str) -> Result<Vec<PathBuf>, TlsError> {
    validate_agent_id(id).map_err(TlsError::Config)?;
    let ca_crt_path = dir.join("ca.crt");
    let ca_key_path = dir.join("ca.key");
    let ca_pem = std::fs::read_to_string(&ca_crt_path)
        .map_err(|e| file_err(&ca_crt_path, format!("cannot read CA certificate ({e}); run `outpost-aggregator certs init --dir {}` first", dir.display())))?;
    let key_pem = std::fs::read_to_string(&ca_key_path)
        .map_err(|e| file_err(&ca_key_path, format!("cannot read CA key: {e}")))?;
    let ca_key = KeyPair::from_pem(&key_pem)
        .map_err(|e| file_err(&ca_key_path, format!("not a usable private key: {e}")))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, &ca_key)
        .map_err(|e| file_err(&ca_crt_path, format!("not a usable CA certificate: {e}")))?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, id);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    set_validity(&mut params, 825);
    let cert = params.signed_by(&key, &issuer)?;
    let crt = dir.join("agents").join(format!("{id}.crt"));
    let keyp = dir.join("agents").join(format!("{id}.key"));
    write_file(&crt, &cert.pem(), false)?;
    write_file(&keyp, &key.serialize_pem(), true)?;
    Ok(vec![crt, keyp])
}

/// Agent ids end up in file names, labels and certificate names: keep them plain.
pub fn validate_agent_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid agent id {id:?}: use 1-128 characters from A-Z a-z 0-9 - _ . (not starting with a dot)"
        ))
    }
}

fn set_validity(p: &mut CertificateParams, days: i64) {
    let now = rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(unix_now_secs());
    p.not_before = now - std::time::Duration::from_secs(3600);
    p.not_after = now + std::time::Duration::from_secs(days as u64 * 86_400);
}

fn unix_now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("outpost-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn generated_certificates_load_into_both_configs() {
        install_crypto_provider();
        let d = tmpdir("ok");
        init_ca(&d, &["agg.example".into()]).unwrap();
        issue_agent(&d, "web-1").unwrap();
        let srv = TlsFiles {
            ca: d.join("ca.crt"),
            cert: d.join("aggregator.crt"),
            key: d.join("aggregator.key"),
        };
        let cli = TlsFiles {
            ca: d.join("ca.crt"),
            cert: d.join("agents/web-1.crt"),
            key: d.join("agents/web-1.key"),
        };
        server_config(&srv).unwrap();
        client_config(&cli).unwrap();
        let der = load_certs(&cli.cert).unwrap();
        assert_eq!(common_name(&der[0]).unwrap(), "web-1");
        let e = init_ca(&d, &[]).unwrap_err().to_string();
        assert!(e.contains("a CA already exists"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn check_files_reports_each_problem_with_its_key() {
        let dir = tmpdir("checkfiles");
        init_ca(&dir, &[]).unwrap();
        let now = unix_now_secs() as i64;
        let keys = ["tls.ca", "tls.cert", "tls.key"];
        let good = TlsFiles {
            ca: dir.join("ca.crt"),
            cert: dir.join("aggregator.crt"),
            key: dir.join("aggregator.key"),
        };
        assert_eq!(
            check_files(&good, Role::Server, keys, now),
            Vec::<crate::Problem>::new()
        );
        let lines = |ps: Vec<crate::Problem>| ps.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        let expired = lines(check_files(&good, Role::Server, keys, now + 3651 * 86_400));
        assert!(
            expired
                .iter()
                .any(|p| p.starts_with("tls.ca: ") && p.contains("expired on")),
            "{expired:?}"
        );
        assert!(
            expired
                .iter()
                .any(|p| p.starts_with("tls.cert: ") && p.contains("expired on")),
            "{expired:?}"
        );
        std::fs::write(dir.join("garbage.pem"), "not pem").unwrap();
        let bad = TlsFiles {
            ca: dir.join("garbage.pem"),
            cert: dir.join("aggregator.crt"),
            key: dir.join("ca.key"),
        };
        let p = lines(check_files(&bad, Role::Server, keys, now));
        assert!(
            p.iter()
                .any(|p| p.starts_with("tls.ca: ") && p.contains("no certificate found")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.starts_with("tls.key: ") && p.contains("do not form a usable pair")),
            "{p:?}"
        );
        assert_eq!(p.len(), 2, "{p:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn mismatched_key_and_missing_files_name_the_problem() {
        install_crypto_provider();
        let d = tmpdir("bad");
        init_ca(&d, &[]).unwrap();
        issue_agent(&d, "a").unwrap();
        let wrong = TlsFiles {
            ca: d.join("ca.crt"),
            cert: d.join("agents/a.crt"),
            key: d.join("aggregator.key"),
        };
        let e = client_config(&wrong).unwrap_err().to_string();
        assert!(e.contains("do not form a usable pair"), "{e}");
        let missing = TlsFiles {
            ca: d.join("nope.crt"),
            cert: d.join("agents/a.crt"),
            key: d.join("agents/a.key"),
        };
        let e = client_config(&missing).unwrap_err().to_string();
        assert!(e.contains("nope.crt") && e.contains("cannot read"), "{e}");
        assert!(issue_agent(&d, "../evil").is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
