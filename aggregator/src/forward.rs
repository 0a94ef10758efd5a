//! Forwarding to a distributed TSDB (`[[forward]]`): everything the store takes (agents'
//! batches, remote_write input, rule output, late and backfilled points) goes out as
//! Prometheus remote_write 1.0 (protobuf + snappy) to each destination, read from the
//! store's forward log ([`outpost_tsdb::forward`]) at a **durable cursor per destination**.
//!
//! - The cursor (the last forward-log record the destination accepted) is stored in the
//!   store's metadata (`forward/<name>`) with a synced commit after every accepted request,
//!   so a restart or `kill -9` resumes there: at most the request in flight is sent twice.
//! - A destination that is down keeps its place: the log keeps every record until every
//!   destination is past it, up to the destination's `max_pending_bytes`; beyond that its
//!   oldest records are skipped and counted as dropped (and logged).
//! - As Prometheus' remote_write specification asks: 5xx and 429 are retried with backoff
//!   (from 100 ms, doubling up to `max_backoff`, honouring `Retry-After`), other 4xx are
//!   final for that request: its samples are counted as failed and logged, and the cursor
//!   moves on.
//! - Per destination metrics: samples sent, failed, dropped, pending (records behind the
//!   cursor), and the cursor's lag (now minus the commit time of the oldest record not yet
//!   accepted), labelled `destination`.

use crate::ingest::WriterMsg;
use outpost_promql::Matcher;
use outpost_service::config::Problem;
use outpost_shared::remote_write::{self, ProtoLabel, ProtoSample, TimeSeries, WriteRequest};
use outpost_shared::units::{ByteSize, Duration as CfgDuration};
use outpost_tsdb::Storage;
use outpost_tsdb::forward::ForwardRecord;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// The metadata prefix of the destinations' cursors.
pub const CURSOR_PREFIX: &[u8] = b"forward/";

/// One `[[forward]]` destination.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// Names the destination in metrics, logs and its stored cursor; keep it when the URL
    /// changes to keep the cursor. Default: the URL's host and port.
    pub name: Option<String>,
    /// The remote_write endpoint (`http://vminsert:8480/insert/0/prometheus/api/v1/write`,
    /// `https://mimir/api/v1/push`, a Prometheus' `/api/v1/write`).
    pub url: String,
    /// Sent as `Authorization: Bearer …`.
    pub bearer_token: Option<String>,
    /// File holding the bearer token (read at start).
    pub bearer_token_file: Option<PathBuf>,
    /// HTTP basic authentication.
    pub basic_auth: Option<BasicAuth>,
    /// TLS for `https://` URLs.
    #[serde(default)]
    pub tls: ForwardTls,
    /// Labels added to every series sent (a series' own label of the same name wins, as
    /// Prometheus' external labels do).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Series selectors (`up`, `{job="node"}`): only series matching one of them are sent.
    /// Default: everything.
    #[serde(default, rename = "match")]
    pub match_selectors: Vec<String>,
    /// Samples per request, at most (a batch is never split). Default 5000.
    #[serde(default = "default_max_samples")]
    pub max_samples_per_send: usize,
    /// How much of the forward log this destination may keep waiting while it is down or
    /// slow; beyond it the oldest are dropped and counted. Default 1GiB.
    #[serde(default = "default_max_pending")]
    pub max_pending_bytes: ByteSize,
    /// The longest wait between retries. Default 5s.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: CfgDuration,
    /// Per request. Default 30s.
    #[serde(default = "default_timeout")]
    pub timeout: CfgDuration,
}

/// `basic_auth` of a destination.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// The user.
    pub username: String,
    /// The password.
    pub password: Option<String>,
    /// File holding the password (read at start).
    pub password_file: Option<PathBuf>,
}

/// `tls` of a destination.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForwardTls {
    /// CA certificates (PEM) to verify the server with, instead of the public roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Its key (PEM).
    pub key_file: Option<PathBuf>,
    /// Do not verify the server's certificate (testing only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

fn default_max_samples() -> usize {
    5000
}
fn default_max_pending() -> ByteSize {
    ByteSize(1 << 30)
}
fn default_max_backoff() -> CfgDuration {
    CfgDuration::from_secs(5)
}
fn default_timeout() -> CfgDuration {
    CfgDuration::from_secs(30)
}

impl ForwardConfig {
    /// Its name: `name`, else the URL's `host:port`.
    pub fn display_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        let rest = self
            .url
            .split_once("://")
            .map_or(self.url.as_str(), |(_, r)| r);
        let host = rest.split('/').next().unwrap_or(rest);
        host.rsplit_once('@').map_or(host, |(_, h)| h).to_string()
    }
}

/// Every problem of the `[[forward]]` list, each naming its key.
pub fn validate(list: &[ForwardConfig]) -> Vec<Problem> {
    let mut out = vec![];
    let mut names = std::collections::BTreeSet::new();
    for (i, f) in list.iter().enumerate() {
        let key = |k: &str| format!("forward[{i}].{k}");
        if !(f.url.starts_with("http://") || f.url.starts_with("https://")) || f.url.len() < 10 {
            out.push(Problem::new(
                key("url"),
                format!("{:?} is not an http:// or https:// URL such as \"http://127.0.0.1:8428/api/v1/write\"", f.url),
            ));
        }
        if !names.insert(f.display_name()) {
            out.push(Problem::new(
                key("name"),
                format!(
                    "{:?} names two destinations; give each its own name (it keys its cursor)",
                    f.display_name()
                ),
            ));
        }
        if f.bearer_token.is_some() && f.bearer_token_file.is_some() {
            out.push(Problem::new(
                key("bearer_token"),
                "set bearer_token or bearer_token_file, not both",
            ));
        }
        if (f.bearer_token.is_some() || f.bearer_token_file.is_some()) && f.basic_auth.is_some() {
            out.push(Problem::new(
                key("basic_auth"),
                "set a bearer token or basic_auth, not both",
            ));
        }
        if let Some(b) = &f.basic_auth
            && b.password.is_some() == b.password_file.is_some()
        {
            out.push(Problem::new(
                key("basic_auth"),
                "set exactly one of password and password_file",
            ));
        }
        if f.tls.cert_file.is_some() != f.tls.key_file.is_some() {
            out.push(Problem::new(
                key("tls"),
                "set both cert_file and key_file, or neither",
            ));
        }
        for m in &f.match_selectors {
            if let Err(e) = outpost_promql::parse_series_selector(m) {
                out.push(Problem::new(key("match"), format!("{m:?}: {e}")));
            }
        }
        for k in f.labels.keys() {
            if !outpost_alerting::rulefile::is_valid_label_name(k) {
                out.push(Problem::new(
                    key("labels"),
                    format!("invalid label name: {k}"),
                ));
            }
        }
        if f.max_samples_per_send == 0 {
            out.push(Problem::new(
                key("max_samples_per_send"),
                "must be at least 1",
            ));
        }
        if f.timeout.get().is_zero() {
            out.push(Problem::new(key("timeout"), "must be more than 0s"));
        }
        if let Err(e) = f.http_agent() {
            out.push(Problem::new(key("tls"), e));
        }
        if let Err(e) = f.authorization() {
            out.push(Problem::new(key("bearer_token_file"), e));
        }
    }
    out
}

impl ForwardConfig {
    /// The HTTP client, with the TLS settings.
    fn http_agent(&self) -> Result<ureq::Agent, String> {
        use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
        let mut tls = TlsConfig::builder().disable_verification(self.tls.insecure_skip_verify);
        if let Some(ca) = &self.tls.ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
            let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.to_owned()),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(format!("ca_file {}: no certificate in it", ca.display()));
            }
            tls = tls.root_certs(RootCerts::new_with_certs(&certs));
        }
        if let (Some(c), Some(k)) = (&self.tls.cert_file, &self.tls.key_file) {
            let cp = std::fs::read(c).map_err(|e| format!("cert_file {}: {e}", c.display()))?;
            let kp = std::fs::read(k).map_err(|e| format!("key_file {}: {e}", k.display()))?;
            let chain: Vec<Certificate<'static>> = ureq::tls::parse_pem(&cp)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.to_owned()),
                    _ => None,
                })
                .collect();
            let key = PrivateKey::from_pem(&kp)
                .map_err(|e| format!("key_file {}: {e}", k.display()))?
                .to_owned();
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        Ok(ureq::Agent::config_builder()
            .timeout_global(Some(self.timeout.get()))
            .http_status_as_error(false)
            .tls_config(tls.build())
            .build()
            .into())
    }

    /// The `Authorization` header's value, if any.
    fn authorization(&self) -> Result<Option<String>, String> {
        if let Some(t) = &self.bearer_token {
            return Ok(Some(format!("Bearer {t}")));
        }
        if let Some(f) = &self.bearer_token_file {
            let t = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
            return Ok(Some(format!("Bearer {}", t.trim())));
        }
        if let Some(b) = &self.basic_auth {
            let pw = match (&b.password, &b.password_file) {
                (Some(p), _) => p.clone(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .map_err(|e| format!("{}: {e}", f.display()))?
                    .trim_end_matches('\n')
                    .to_string(),
                (None, None) => String::new(),
            };
            use base64::Engine as _;
            let enc =
                base64::engine::general_purpose::STANDARD.encode(format!("{}:{pw}", b.username));
            return Ok(Some(format!("Basic {enc}")));
        }
        Ok(None)
    }
}

/// Per destination metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct DestinationLabel {
    /// The destination's name.
    pub destination: String,
}

/// The forwarders' metrics, registered by [`crate::metrics::Metrics`].
#[derive(Default)]
pub struct ForwardMetrics {
    /// Samples the destination accepted.
    pub sent: prometheus_client::metrics::family::Family<
        DestinationLabel,
        prometheus_client::metrics::counter::Counter,
    >,
    /// Samples in requests the destination refused for good (4xx).
    pub failed: prometheus_client::metrics::family::Family<
        DestinationLabel,
        prometheus_client::metrics::counter::Counter,
    >,
    /// Samples skipped because the destination's backlog passed `max_pending_bytes`.
    pub dropped: prometheus_client::metrics::family::Family<
        DestinationLabel,
        prometheus_client::metrics::counter::Counter,
    >,
    /// Requests retried (5xx, 429, network errors).
    pub retries: prometheus_client::metrics::family::Family<
        DestinationLabel,
        prometheus_client::metrics::counter::Counter,
    >,
    /// Forward-log records behind the destination's cursor.
    pub pending: prometheus_client::metrics::family::Family<
        DestinationLabel,
        prometheus_client::metrics::gauge::Gauge,
    >,
    /// Seconds since the oldest record not yet accepted was committed (0 when caught up).
    pub lag: prometheus_client::metrics::family::Family<
        DestinationLabel,
        prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>,
    >,
}

/// What [`start`] returns: the tasks to wait for at shutdown.
pub struct Forwarders {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Forwarders {
    /// Waits (up to `limit`) for the forwarders to stop after the stop signal.
    pub async fn join(self, limit: Duration) {
        for t in self.tasks {
            let _ = tokio::time::timeout(limit, t).await;
        }
    }
}

/// Starts one forwarder per destination, and the trimmer that deletes what every
/// destination has sent. Turns the store's forward log on when there is a destination
/// (and trims it whole when there is none).
///
/// # Errors
/// A destination's TLS files or token cannot be read, or the stored cursors cannot.
pub fn start(
    list: &[ForwardConfig],
    storage: Arc<Storage>,
    writer: mpsc::Sender<WriterMsg>,
    metrics: Arc<ForwardMetrics>,
    stop: watch::Receiver<bool>,
) -> Result<Forwarders, String> {
    storage.set_forwarding(!list.is_empty());
    let stored: HashMap<String, u64> = storage
        .meta(CURSOR_PREFIX)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|(k, v)| {
            let name = String::from_utf8_lossy(&k[CURSOR_PREFIX.len()..]).into_owned();
            Some((name, u64::from_le_bytes(v.get(..8)?.try_into().ok()?)))
        })
        .collect();
    if list.is_empty() {
        if let Ok(Some((_, last))) = storage.forward_bounds() {
            let _ = storage.forward_trim(last);
        }
        return Ok(Forwarders { tasks: vec![] });
    }
    // A new destination starts at the oldest record held.
    let first = storage
        .forward_bounds()
        .map_err(|e| e.to_string())?
        .map_or(0, |(f, _)| f.saturating_sub(1));
    let cursors: Arc<std::sync::Mutex<HashMap<String, u64>>> = Arc::default();
    let mut tasks = vec![];
    for f in list {
        let name = f.display_name();
        let cursor = stored.get(&name).copied().unwrap_or(first);
        cursors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), cursor);
        let matchers = f
            .match_selectors
            .iter()
            .map(|m| {
                outpost_promql::parse_series_selector(m)
                    .map_err(|e| format!("forward {name}: match {m:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let d = Destination {
            label: DestinationLabel {
                destination: name.clone(),
            },
            name: name.clone(),
            url: f.url.clone(),
            http: f.http_agent().map_err(|e| format!("forward {name}: {e}"))?,
            authorization: f
                .authorization()
                .map_err(|e| format!("forward {name}: {e}"))?,
            labels: f.labels.clone(),
            matchers,
            max_samples: f.max_samples_per_send,
            max_pending_bytes: f.max_pending_bytes.0,
            max_backoff: f.max_backoff.get(),
            cursor,
        };
        tracing::info!(destination = %name, url = %crate::metrics::redact_url(&f.url), cursor, "forwarding");
        tasks.push(tokio::spawn(d.run(
            storage.clone(),
            writer.clone(),
            metrics.clone(),
            cursors.clone(),
            stop.clone(),
        )));
    }
    tasks.push(tokio::spawn(trim_loop(storage, cursors, stop)));
    Ok(Forwarders { tasks })
}

/// Deletes, every few seconds, the records every destination has accepted.
async fn trim_loop(
    storage: Arc<Storage>,
    cursors: Arc<std::sync::Mutex<HashMap<String, u64>>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { return },
        }
        let min = cursors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .copied()
            .min();
        if let Some(m) = min.filter(|m| *m > 0) {
            let s = storage.clone();
            let _ = tokio::task::spawn_blocking(move || s.forward_trim(m)).await;
        }
    }
}

struct Destination {
    label: DestinationLabel,
    name: String,
    url: String,
    http: ureq::Agent,
    authorization: Option<String>,
    labels: BTreeMap<String, String>,
    matchers: Vec<Vec<Matcher>>,
    max_samples: usize,
    max_pending_bytes: u64,
    max_backoff: Duration,
    cursor: u64,
}

/// How a request ended.
enum Sent {
    Accepted,
    Refused(String),
    Stopped,
}

impl Destination {
    async fn run(
        mut self,
        storage: Arc<Storage>,
        writer: mpsc::Sender<WriterMsg>,
        metrics: Arc<ForwardMetrics>,
        cursors: Arc<std::sync::Mutex<HashMap<String, u64>>>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            if *stop.borrow() {
                return;
            }
            self.enforce_cap(&storage, &writer, &metrics).await;
            let (s, after, max) = (storage.clone(), self.cursor, self.max_samples);
            let recs = match tokio::task::spawn_blocking(move || s.forward_read(after, max)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::error!(destination = %self.name, "cannot read the forward log: {e}");
                    Vec::new()
                }
                Err(_) => Vec::new(),
            };
            self.observe(&storage, &metrics, recs.first());
            let Some(last) = recs.last().map(|r| r.id) else {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    r = stop.changed() => if r.is_err() || *stop.borrow() { return },
                }
                continue;
            };
            let (req, samples) = self.request(&recs);
            if samples > 0 {
                match self.send(req, &metrics, &mut stop).await {
                    Sent::Accepted => {
                        metrics
                            .sent
                            .get_or_create(&self.label)
                            .inc_by(samples as u64);
                    }
                    Sent::Refused(e) => {
                        metrics
                            .failed
                            .get_or_create(&self.label)
                            .inc_by(samples as u64);
                        tracing::error!(destination = %self.name, samples, "remote write refused, samples not sent: {e}");
                    }
                    Sent::Stopped => return,
                }
            }
            if !self.advance(last, &writer).await {
                return;
            }
            cursors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(self.name.clone(), self.cursor);
        }
    }

    /// Stores the cursor (synced) and keeps it; false when the aggregator is stopping.
    async fn advance(&mut self, to: u64, writer: &mpsc::Sender<WriterMsg>) -> bool {
        let mut key = CURSOR_PREFIX.to_vec();
        key.extend_from_slice(self.name.as_bytes());
        let (tx, rx) = oneshot::channel();
        if writer
            .send(WriterMsg::Meta(vec![(key, to.to_le_bytes().to_vec())], tx))
            .await
            .is_err()
        {
            return false;
        }
        match rx.await {
            Ok(Ok(())) => {
                self.cursor = to;
                true
            }
            Ok(Err(e)) => {
                tracing::error!(destination = %self.name, "cannot store the forward cursor: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                true
            }
            Err(_) => false,
        }
    }

    /// Pending and lag gauges.
    fn observe(&self, storage: &Storage, metrics: &ForwardMetrics, next: Option<&ForwardRecord>) {
        let pending = match storage.forward_bounds() {
            Ok(Some((_, last))) => last.saturating_sub(self.cursor),
            _ => 0,
        };
        metrics
            .pending
            .get_or_create(&self.label)
            .set(pending as i64);
        let lag = next.map_or(0.0, |r| {
            ((outpost_service::now_ms() - r.committed_ms).max(0)) as f64 / 1000.0
        });
        metrics.lag.get_or_create(&self.label).set(lag);
    }

    /// Skips (and counts) the oldest records when this destination's share of the forward
    /// log passes `max_pending_bytes`.
    async fn enforce_cap(
        &mut self,
        storage: &Arc<Storage>,
        writer: &mpsc::Sender<WriterMsg>,
        metrics: &ForwardMetrics,
    ) {
        let Ok(Some((first, last))) = storage.forward_bounds() else {
            return;
        };
        let held = last.saturating_sub(first) + 1;
        let behind = last.saturating_sub(self.cursor.max(first.saturating_sub(1)));
        let bytes = storage.forward_bytes();
        let pending_bytes = bytes.saturating_mul(behind) / held.max(1);
        if pending_bytes <= self.max_pending_bytes || behind == 0 {
            return;
        }
        // Drop the oldest tenth beyond the cap.
        let over = pending_bytes - self.max_pending_bytes + self.max_pending_bytes / 10;
        let per_record = (bytes / held.max(1)).max(1);
        let skip = (over / per_record).clamp(1, behind);
        let mut dropped = 0usize;
        let mut to = self.cursor;
        while to < self.cursor + skip {
            let (s, after) = (storage.clone(), to);
            let Ok(Ok(recs)) =
                tokio::task::spawn_blocking(move || s.forward_read(after, 10_000)).await
            else {
                return;
            };
            let Some(l) = recs.last() else { break };
            for r in &recs {
                if r.id > self.cursor + skip {
                    break;
                }
                dropped += r.points.len();
                to = r.id;
            }
            if l.id > self.cursor + skip {
                break;
            }
        }
        metrics
            .dropped
            .get_or_create(&self.label)
            .inc_by(dropped as u64);
        tracing::warn!(destination = %self.name, samples = dropped, max_pending_bytes = self.max_pending_bytes, "forward backlog over its cap: oldest samples dropped");
        let _ = self.advance(to, writer).await;
    }

    /// The request for `recs`: series grouped in order of first appearance, samples in
    /// time order, extra labels added, selectors applied. Returns the body and the number
    /// of samples in it.
    fn request(&self, recs: &[ForwardRecord]) -> (Vec<u8>, usize) {
        let mut order: Vec<Arc<outpost_shared::Labels>> = vec![];
        let mut by: HashMap<Arc<outpost_shared::Labels>, Vec<ProtoSample>> = HashMap::new();
        let mut keep: HashMap<Arc<outpost_shared::Labels>, bool> = HashMap::new();
        let mut n = 0;
        for r in recs {
            for (l, p) in &r.points {
                let ok = *keep.entry(l.clone()).or_insert_with(|| {
                    self.matchers.is_empty()
                        || self
                            .matchers
                            .iter()
                            .any(|ms| ms.iter().all(|m| m.matches(l.get(&m.name).unwrap_or(""))))
                });
                if !ok {
                    continue;
                }
                let e = by.entry(l.clone()).or_insert_with(|| {
                    order.push(l.clone());
                    vec![]
                });
                e.push(ProtoSample {
                    value: p.value,
                    timestamp: p.ts,
                });
                n += 1;
            }
        }
        let timeseries = order
            .into_iter()
            .map(|l| {
                let mut samples = by.remove(&l).unwrap_or_default();
                samples.sort_by_key(|s| s.timestamp);
                let mut labels: BTreeMap<&str, &str> = l
                    .iter()
                    .map(|x| (x.name.as_str(), x.value.as_str()))
                    .collect();
                for (k, v) in &self.labels {
                    labels.entry(k.as_str()).or_insert(v.as_str());
                }
                TimeSeries {
                    labels: labels
                        .into_iter()
                        .map(|(k, v)| ProtoLabel {
                            name: k.to_string(),
                            value: v.to_string(),
                        })
                        .collect(),
                    samples,
                }
            })
            .collect();
        let body = remote_write::encode(&WriteRequest {
            timeseries,
            metadata: vec![],
        });
        (body, n)
    }

    /// Posts until accepted, refused for good, or the aggregator stops.
    async fn send(
        &self,
        body: Vec<u8>,
        metrics: &ForwardMetrics,
        stop: &mut watch::Receiver<bool>,
    ) -> Sent {
        let body = Arc::new(body);
        let mut backoff = Duration::from_millis(100);
        loop {
            let (agent, url, body2, auth) = (
                self.http.clone(),
                self.url.clone(),
                body.clone(),
                self.authorization.clone(),
            );
            let r = tokio::task::spawn_blocking(move || {
                let mut req = agent
                    .post(&url)
                    .header("Content-Encoding", "snappy")
                    .header("Content-Type", "application/x-protobuf")
                    .header("User-Agent", concat!("Outpost/", env!("CARGO_PKG_VERSION")))
                    .header("X-Prometheus-Remote-Write-Version", "0.1.0");
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                match req.send(&body2[..]) {
                    Ok(mut resp) => {
                        let code = resp.status().as_u16();
                        let retry_after = resp
                            .headers()
                            .get("Retry-After")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<u64>().ok());
                        let text = if (200..300).contains(&code) {
                            String::new()
                        } else {
                            resp.body_mut().read_to_string().unwrap_or_default()
                        };
                        (Some(code), retry_after, text)
                    }
                    Err(e) => (None, None, e.to_string()),
                }
            })
            .await
            .unwrap_or((None, None, "the send task failed".into()));
            match r {
                (Some(c), _, _) if (200..300).contains(&c) => return Sent::Accepted,
                (Some(c), _, text) if (400..500).contains(&c) && c != 429 && c != 408 => {
                    return Sent::Refused(format!("HTTP {c}: {}", text.trim()));
                }
                (code, retry_after, text) => {
                    metrics.retries.get_or_create(&self.label).inc();
                    let wait = match retry_after {
                        Some(s) => Duration::from_secs(s)
                            .min(self.max_backoff.max(Duration::from_secs(s.min(60)))),
                        None => backoff,
                    };
                    tracing::warn!(
                        destination = %self.name,
                        "remote write failed ({}), retrying in {wait:?}",
                        code.map_or(text.clone(), |c| format!("HTTP {c}: {}", text.trim()))
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        r = stop.changed() => if r.is_err() || *stop.borrow() { return Sent::Stopped },
                    }
                    backoff = (backoff * 2).min(self.max_backoff);
                }
            }
        }
    }
}
