//! The HTTP side of scraping: one blocking HTTP client per `[[scrape]]` job (timeouts, TLS,
//! bearer token, body size limit), and the request Prometheus makes for an exposition.

use crate::config::{Scheme, ScrapeConfig};
use std::time::Duration;
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

/// What Prometheus asks for: OpenMetrics first, then the text format.
pub const ACCEPT: &str = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.1";

pub struct Client {
    agent: ureq::Agent,
    scheme: Scheme,
    path: String,
    timeout: Duration,
    token_file: Option<std::path::PathBuf>,
    limit: u64,
}

/// A response body and its `Content-Type`.
pub struct Response {
    pub body: String,
    pub content_type: String,
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

fn certs(path: &std::path::Path) -> Result<Vec<Certificate<'static>>, String> {
    let pem = read(path, "certificate file")?;
    let mut out = vec![];
    for item in ureq::tls::parse_pem(&pem) {
        if let PemItem::Certificate(c) = item.map_err(|e| format!("{}: {e}", path.display()))? {
            out.push(c);
        }
    }
    if out.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(out)
}

impl Client {
    /// Builds the client of one job; errors name the file that could not be used.
    pub fn new(cfg: &ScrapeConfig, timeout: Duration) -> Result<Client, String> {
        let mut tls = TlsConfig::builder().disable_verification(cfg.tls.insecure_skip_verify);
        if let Some(ca) = &cfg.tls.ca_file {
            tls = tls.root_certs(RootCerts::new_with_certs(&certs(ca)?));
        }
        if let (Some(cert), Some(key)) = (&cfg.tls.cert_file, &cfg.tls.key_file) {
            let key_pem = read(key, "key file")?;
            let key =
                PrivateKey::from_pem(&key_pem).map_err(|e| format!("{}: {e}", key.display()))?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&certs(cert)?, key)));
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .proxy(None)
            .user_agent(format!("outpost-agent/{}", env!("CARGO_PKG_VERSION")))
            .tls_config(tls.build())
            .build()
            .new_agent();
        Ok(Client {
            agent,
            scheme: cfg.scheme,
            path: cfg.metrics_path.clone(),
            timeout,
            token_file: cfg.bearer_token_file.clone(),
            limit: cfg.body_size_limit.0,
        })
    }

    pub fn url(&self, target: &str) -> String {
        format!("{}://{}{}", self.scheme.as_str(), target, self.path)
    }

    /// One scrape of `target` (`host:port`). Blocking, bounded by the job's timeout.
    pub fn fetch(&self, target: &str) -> Result<Response, String> {
        let url = self.url(target);
        let mut req = self.agent.get(&url).header("Accept", ACCEPT).header(
            "X-Prometheus-Scrape-Timeout-Seconds",
            format!("{}", self.timeout.as_secs_f64()),
        );
        if let Some(f) = &self.token_file {
            let token = std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read bearer_token_file {}: {e}", f.display()))?;
            req = req.header("Authorization", format!("Bearer {}", token.trim()));
        }
        let mut resp = req.call().map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("GET {url}: server returned HTTP status {status}"));
        }
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp
            .body_mut()
            .with_config()
            .limit(self.limit)
            .read_to_string()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => format!(
                    "GET {url}: body is larger than body_size_limit ({} bytes)",
                    self.limit
                ),
                e => format!("GET {url}: reading the body: {e}"),
            })?;
        Ok(Response { body, content_type })
    }
}
