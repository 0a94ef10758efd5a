//! The HTTP/1.1 client behind `http` checks and journey steps: hyper's connection API over a
//! tokio TCP stream (TLS with tokio-rustls), so each phase can be timed as blackbox_exporter
//! does (resolve, connect, tls, processing, transfer), and redirects are followed by hand.
//! Addresses are chosen by [`crate::addr`]; bodies are decoded per `Content-Encoding`
//! ([`crate::coding`]) before assertions see them.

use crate::assert::{Response, check_response};
use crate::def::{CheckDef, DEFAULT_MAX_BODY, HttpAssert, IpProtocol, MAX_REDIRECTS};
use crate::outcome::Outcome;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::timeout_at;

pub(crate) const USER_AGENT: &str = concat!("Outpost-Synthetic/", env!("CARGO_PKG_VERSION"));

/// An I/O error in the words people search for: "connect: connection refused".
pub(crate) fn io_err(ctx: &str, e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused | ConnectionReset | ConnectionAborted | TimedOut | AddrNotAvailable
        | HostUnreachable | NetworkUnreachable | UnexpectedEof | BrokenPipe => {
            format!("{ctx}: {}", e.kind())
        }
        _ => format!("{ctx}: {e}"),
    }
}

/// One request to make.
pub(crate) struct Req<'a> {
    pub method: &'a str,
    pub url: String,
    pub headers: Vec<(&'a str, String)>,
    pub body: Option<String>,
}

/// Time spent in each phase, summed over redirects.
#[derive(Default, Debug, Clone, Copy)]
pub(crate) struct Phases {
    pub resolve: Duration,
    pub connect: Duration,
    pub tls: Duration,
    pub processing: Duration,
    pub transfer: Duration,
}

/// A response as the assertions and the metrics need it.
pub(crate) struct Fetched {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body with its content codings undone.
    pub body: Vec<u8>,
    pub content_length: Option<u64>,
    pub version: f64,
    pub redirects: usize,
    pub tls: bool,
    /// The TLS version of the last connection, as `probe_tls_version_info` names it.
    pub tls_version: Option<&'static str>,
    /// Unix time of each presented certificate's notAfter (last connection).
    pub cert_expiries: Vec<i64>,
    /// The address family of the last connection.
    pub ip_protocol: IpProtocol,
    /// Why the body could not be decoded per its `Content-Encoding`; fails the check
    /// before any assertion runs.
    pub decode_error: Option<String>,
    pub phases: Phases,
    pub duration: Duration,
}

impl Fetched {
    pub(crate) fn response(&self) -> Response<'_> {
        Response {
            status: self.status,
            headers: &self.headers,
            body: &self.body,
            duration: self.duration,
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Target {
    https: bool,
    host: String,
    port: u16,
    authority: String,
    path: String,
}

fn target(url: &str) -> Result<Target, String> {
    let u: http::Uri = url
        .parse()
        .map_err(|e| format!("url `{url}` is not valid: {e}"))?;
    let https = match u.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(format!(
                "url `{url}`: only http:// and https:// are supported"
            ));
        }
    };
    let host = u.host().ok_or_else(|| format!("url `{url}` has no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = u.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = u
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let path = u
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    Ok(Target {
        https,
        host,
        port,
        authority,
        path,
    })
}

/// Resolves a redirect's Location against the URL it came from.
pub(crate) fn join_location(base: &str, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return loc.to_string();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("http", base));
    if let Some(l) = loc.strip_prefix("//") {
        return format!("{scheme}://{l}");
    }
    let (auth, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if loc.starts_with('/') {
        return format!("{scheme}://{auth}{loc}");
    }
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    format!("{scheme}://{auth}{dir}{loc}")
}

/// Reads a body up to `max` bytes: the bytes, and whether there was more.
async fn read_body(
    mut rb: hyper::body::Incoming,
    max: u64,
) -> Result<(Vec<u8>, bool), hyper::Error> {
    let mut data = Vec::new();
    loop {
        match rb.frame().await {
            None => return Ok((data, false)),
            Some(Err(e)) => return Err(e),
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    let room = (max - data.len() as u64) as usize;
                    data.extend_from_slice(&d[..d.len().min(room)]);
                    if d.len() > room || (data.len() as u64 == max && !rb.is_end_stream()) {
                        return Ok((data, true));
                    }
                }
            }
        }
    }
}

/// Undoes the content codings of a response body (see [`crate::coding`]): the decoded body
/// and, when it is not valid in its coding, the reason.
pub(crate) fn decode_body(
    headers: &http::HeaderMap,
    raw: Vec<u8>,
    truncated: bool,
    max: u64,
) -> (Vec<u8>, Option<String>) {
    let enc: Vec<&str> = headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if enc.is_empty() {
        return (raw, None);
    }
    match crate::coding::decode(&enc.join(", "), raw, truncated, max) {
        Ok(b) => (b, None),
        Err(e) => (Vec::new(), Some(e)),
    }
}

/// Makes the request, following redirects unless told not to.
pub(crate) async fn fetch(def: &CheckDef, req: Req<'_>, max_body: u64) -> Result<Fetched, String> {
    let start = Instant::now();
    let follow = def.follow_redirects.unwrap_or(true);
    let mut ph = Phases::default();
    let mut url = req.url;
    let mut method = req.method.to_string();
    let mut body = req.body;
    let mut redirects = 0;
    loop {
        let t = target(&url)?;
        let c = crate::addr::connect(def, &t.host, t.port).await?;
        ph.resolve += c.resolve;
        ph.connect += c.connect;
        let ip_protocol = IpProtocol::of(c.addr.ip());
        let tcp = c.stream;
        let mut cert_expiries = Vec::new();
        let mut tls_version = None;
        let io: Box<dyn Io> = if t.https {
            let t2 = Instant::now();
            let cfg = crate::tls::client_config(def.tls.as_ref(), &[b"http/1.1"])?;
            let name = crate::tls::server_name(def.tls.as_ref(), &t.host)?;
            let s = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .map_err(|e| crate::tls::handshake_error(&e))?;
            ph.tls += t2.elapsed();
            let conn = s.get_ref().1;
            cert_expiries = crate::tls::expiries(conn.peer_certificates().unwrap_or_default());
            tls_version = Some(crate::tls::version_name(conn.protocol_version()));
            Box::new(s)
        } else {
            Box::new(tcp)
        };
        let t3 = Instant::now();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("http: {e}"))?;
        let conn_task = tokio::spawn(conn);
        let mut b = http::Request::builder()
            .method(method.as_str())
            .uri(t.path.as_str())
            .header(http::header::HOST, t.authority.as_str())
            .header(http::header::USER_AGENT, USER_AGENT);
        for (n, v) in &req.headers {
            b = b.header(*n, v.as_str());
        }
        let request = b
            .body(Full::new(Bytes::from(body.clone().unwrap_or_default())))
            .map_err(|e| format!("request: {e}"))?;
        let resp = sender.send_request(request).await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                conn_task.abort();
                return Err(format!("http: {e}"));
            }
        };
        ph.processing += t3.elapsed();
        let status = resp.status().as_u16();
        let version = match resp.version() {
            http::Version::HTTP_10 => 1.0,
            http::Version::HTTP_2 => 2.0,
            _ => 1.1,
        };
        let (headers, content_length) = header_list(resp.headers());
        let location = resp
            .headers()
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let redirect =
            follow && matches!(status, 301 | 302 | 303 | 307 | 308) && location.is_some();
        let t4 = Instant::now();
        let (mut data, mut decode_error) = (Vec::new(), None);
        if !redirect {
            let (parts, rb) = resp.into_parts();
            let (raw, truncated) = match read_body(rb, max_body).await {
                Ok(r) => r,
                Err(e) => {
                    conn_task.abort();
                    return Err(format!("reading body: {e}"));
                }
            };
            (data, decode_error) = decode_body(&parts.headers, raw, truncated, max_body);
        }
        ph.transfer += t4.elapsed();
        conn_task.abort();
        if redirect {
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                return Err(format!("more than {MAX_REDIRECTS} redirects"));
            }
            url = join_location(&url, location.as_deref().unwrap_or("/"));
            if status == 303 || (matches!(status, 301 | 302) && method == "POST") {
                method = "GET".into();
                body = None;
            }
            continue;
        }
        return Ok(Fetched {
            status,
            headers,
            body: data,
            content_length,
            version,
            redirects,
            tls: t.https,
            tls_version,
            cert_expiries,
            ip_protocol,
            decode_error,
            phases: ph,
            duration: start.elapsed(),
        });
    }
}

/// Records blackbox's http metrics for a response.
pub(crate) fn record(o: &mut Outcome, f: &Fetched) {
    let p = &f.phases;
    for (phase, d) in [
        ("resolve", p.resolve),
        ("connect", p.connect),
        ("tls", p.tls),
        ("processing", p.processing),
        ("transfer", p.transfer),
    ] {
        o.metric_l(
            "probe_http_duration_seconds",
            &[("phase", phase)],
            d.as_secs_f64(),
        );
    }
    o.metric("probe_dns_lookup_time_seconds", p.resolve.as_secs_f64());
    o.metric("probe_http_status_code", f64::from(f.status));
    o.metric(
        "probe_http_content_length",
        f.content_length.map_or(-1.0, |n| n as f64),
    );
    o.metric("probe_http_uncompressed_body_length", f.body.len() as f64);
    o.metric("probe_http_redirects", f.redirects as f64);
    o.metric("probe_http_ssl", if f.tls { 1.0 } else { 0.0 });
    o.metric("probe_http_version", f.version);
    o.metric("probe_ip_protocol", f.ip_protocol.number());
    if let Some(v) = f.tls_version {
        o.metric_l("probe_tls_version_info", &[("version", v)], 1.0);
    }
    crate::tls::expiry_metrics(o, &f.cert_expiries);
}

/// Headers of the check followed by those of the step (a step's header replaces the check's).
pub(crate) fn merged_headers<'a>(
    check: &'a BTreeMap<String, String>,
    step: &'a BTreeMap<String, String>,
) -> Vec<(&'a str, &'a String)> {
    let mut v: Vec<(&str, &String)> = check
        .iter()
        .filter(|(k, _)| !step.keys().any(|s| s.eq_ignore_ascii_case(k)))
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    v.extend(step.iter().map(|(k, v)| (k.as_str(), v)));
    v
}

pub(crate) fn evaluate(o: &mut Outcome, a: Option<&HttpAssert>, f: &Fetched) -> Result<(), String> {
    if let Some(e) = &f.decode_error {
        return Err(e.clone());
    }
    let (verdict, res) = check_response(a, &f.response());
    let regex_used = a.is_some_and(|a| a.body_regex.is_some() || a.body_not_regex.is_some());
    if regex_used {
        o.metric(
            "probe_failed_due_to_regex",
            if verdict.failed_due_to_regex {
                1.0
            } else {
                0.0
            },
        );
    }
    res
}

pub(crate) async fn run_check(def: &CheckDef, deadline: tokio::time::Instant) -> Outcome {
    let mut o = Outcome::new(def);
    let req = Req {
        method: def.method.as_deref().unwrap_or("GET"),
        url: def.url.clone().unwrap_or_default(),
        headers: def
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect(),
        body: def.body.clone(),
    };
    let max = def.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY);
    let r = match timeout_at(deadline, fetch(def, req, max)).await {
        Err(_) => Err(crate::timeout_reason(def)),
        Ok(Err(e)) => Err(e),
        Ok(Ok(f)) => {
            record(&mut o, &f);
            evaluate(&mut o, def.assert.as_ref(), &f)
        }
    };
    o.finish(r)
}

/// A response's headers as (name, value) pairs, and its Content-Length when it has one.
pub(crate) fn header_list(h: &http::HeaderMap) -> (Vec<(String, String)>, Option<u64>) {
    let list = h
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let length = h
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (list, length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_locations_resolve_like_a_browser() {
        let b = "http://h:8/a/b?x=1";
        assert_eq!(join_location(b, "https://o/p"), "https://o/p");
        assert_eq!(join_location(b, "//o/p"), "http://o/p");
        assert_eq!(join_location(b, "/root"), "http://h:8/root");
        assert_eq!(join_location(b, "c"), "http://h:8/a/c");
        assert_eq!(join_location("http://h", "c"), "http://h/c");
    }

    #[test]
    fn io_errors_read_like_the_documented_reasons() {
        let e = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(io_err("connect", &e), "connect: connection refused");
    }
}
