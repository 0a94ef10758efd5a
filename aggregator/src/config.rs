//! The aggregator's TOML configuration, validated with every problem listed by key.

use outpost_service::config::{ConfigError, Problem};
use outpost_shared::tls::TlsFiles;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory of the RocksDB store.
    pub data_dir: PathBuf,
    #[serde(default)]
    pub listen: ListenConfig,
    pub tls: TlsConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub query: QueryConfig,
    #[serde(default)]
    pub log: outpost_service::config::LogConfig,
    #[serde(default)]
    pub telemetry: outpost_service::config::TelemetryConfig,
    /// YAML file of synthetic checks (a top-level `checks:` list) that the aggregator assigns
    /// to agents by region. Re-read when it changes. Default: no checks.
    pub checks_file: Option<PathBuf>,
    #[serde(default)]
    pub alerting: AlertingConfig,
    /// `[[forward]]`: remote_write destinations everything stored is forwarded to, each
    /// from its own durable cursor (see [`crate::forward`]).
    #[serde(default)]
    pub forward: Vec<crate::forward::ForwardConfig>,
    #[serde(default)]
    pub storage: StorageConfig,
}

/// `[storage]`: how long samples are kept and how large the store may grow.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Raw samples older than this are deleted, a day (one time partition) at a time.
    /// Default 365d.
    #[serde(default = "default_retention")]
    pub retention: outpost_shared::units::Duration,
    /// The store's size cap (its tables and write-ahead logs on disk). Past it, the oldest
    /// days are deleted (logged and counted), oldest time ranges first whatever their
    /// resolution, never today's raw day or the newest, so ingestion goes on. Default: none.
    pub max_bytes: Option<outpost_shared::units::ByteSize>,
    /// 5-minute rollups (downsampled buckets) older than this are deleted. Default 90d:
    /// three years of them would outweigh what they save (a tenth of a year of raw 10 s
    /// samples in bucket count).
    #[serde(default = "default_retention_5m")]
    pub retention_5m: outpost_shared::units::Duration,
    /// 1-hour rollups older than this are deleted. Default 1095d.
    #[serde(default = "default_rollup_retention")]
    pub retention_1h: outpost_shared::units::Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            retention: default_retention(),
            max_bytes: None,
            retention_5m: default_retention_5m(),
            retention_1h: default_rollup_retention(),
        }
    }
}

fn default_retention_5m() -> outpost_shared::units::Duration {
    outpost_shared::units::Duration::from_secs(90 * 86_400)
}

fn default_rollup_retention() -> outpost_shared::units::Duration {
    outpost_shared::units::Duration::from_secs(3 * 365 * 86_400)
}

fn default_retention() -> outpost_shared::units::Duration {
    outpost_shared::units::Duration::from_secs(365 * 86_400)
}

/// The shortest retention `[storage]` accepts: one day, the store's time partition (as
/// VictoriaMetrics' `-retentionPeriod`, which is at least a day).
pub const MIN_RETENTION_DAYS: u64 = 1;
/// The longest retention `[storage]` accepts: 100 years, as VictoriaMetrics'.
pub const MAX_RETENTION_DAYS: u64 = 36_500;
/// The smallest `[storage] max_bytes`: the store's write buffers alone take up to 32 MiB,
/// so a smaller cap would delete every closed day at every pass.
pub const MIN_MAX_BYTES: u64 = 64 << 20;

impl StorageConfig {
    /// The store's retention policy (ms; a retention past `i64::MAX` ms, which
    /// [`StorageConfig::validate`] refuses, is kept as `i64::MAX`).
    pub fn policy(&self) -> outpost_tsdb::RetentionPolicy {
        let ms = |d: &outpost_shared::units::Duration| {
            Some(i64::try_from(d.get().as_millis()).unwrap_or(i64::MAX))
        };
        outpost_tsdb::RetentionPolicy {
            retention_ms: ms(&self.retention),
            max_bytes: self.max_bytes.map(|b| b.0),
            retention_5m_ms: ms(&self.retention_5m),
            retention_1h_ms: ms(&self.retention_1h),
        }
    }

    /// Every problem, each naming its key: a retention under a day or over 100 years, a
    /// size cap under [`MIN_MAX_BYTES`].
    fn validate(&self) -> Vec<Problem> {
        let mut out = vec![];
        for (key, d) in [
            ("storage.retention", &self.retention),
            ("storage.retention_5m", &self.retention_5m),
            ("storage.retention_1h", &self.retention_1h),
        ] {
            let days = d.get().as_secs_f64() / 86_400.0;
            if days < MIN_RETENTION_DAYS as f64 {
                out.push(Problem::new(
                    key,
                    format!(
                        "{d} is under a day: data is kept and deleted a day at a time, so use at \
                         least \"1d\" (e.g. \"30d\", \"365d\"); there is no unlimited retention"
                    ),
                ));
            } else if days > MAX_RETENTION_DAYS as f64 {
                out.push(Problem::new(
                    key,
                    format!(
                        "{} days is over 100 years; use at most \"{MAX_RETENTION_DAYS}d\"",
                        days.round()
                    ),
                ));
            }
        }
        if let Some(b) = self.max_bytes
            && b.0 < MIN_MAX_BYTES
        {
            out.push(Problem::new(
                "storage.max_bytes",
                format!(
                    "{} bytes is under 64MiB, which the store's write buffers alone may take: \
                     every closed day would be deleted at every pass; use at least \"64MiB\"",
                    b.0
                ),
            ));
        }
        out
    }
}

/// `[alerting]`: Prometheus rule files evaluated by the aggregator, and where alerts go.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertingConfig {
    /// Rule files (Prometheus' YAML format); globs allowed, relative to the config file.
    #[serde(default)]
    pub rule_files: Vec<String>,
    /// Interval of groups that set none (Prometheus' `evaluation_interval`). Default 30s.
    #[serde(default = "default_evaluation_interval")]
    pub evaluation_interval: outpost_shared::units::Duration,
    /// Alertmanager base URLs (`http://host:9093`); alerts are posted to `/api/v2/alerts`.
    #[serde(default)]
    pub alertmanagers: Vec<String>,
    /// Labels added to every alert sent, and `$externalLabels` in templates.
    #[serde(default)]
    pub external_labels: std::collections::BTreeMap<String, String>,
    /// The URL users reach the aggregator at, for alerts' `generatorURL` and templates.
    /// Default: `http://` + `listen.http`.
    pub external_url: Option<String>,
    /// How long alerts whose `agent` label names a cut-off agent are held as they are
    /// instead of being resolved for lack of data (`0s`: never held). Default 1h.
    #[serde(default = "default_cut_off_hold")]
    pub cut_off_hold: outpost_shared::units::Duration,
    /// An agent from which no batch has arrived for this long counts as cut off even while
    /// its connection looks open (a partition is only noticed by the connection's idle
    /// timeout). Keep it above the agents' collect interval. Default 30s.
    #[serde(default = "default_cut_off_after")]
    pub cut_off_after: outpost_shared::units::Duration,
    /// Whether the built-in `OutpostAgentDown` alert (`outpost_agent_up == 0`) runs.
    /// Default true.
    #[serde(default = "default_true")]
    pub agent_down_alert: bool,
    /// The `for` of `OutpostAgentDown`: how long an agent must be down before it fires.
    /// Default 30s (an agent restart does not page).
    #[serde(default = "default_agent_down_for")]
    pub agent_down_for: outpost_shared::units::Duration,
    /// An agent of protocol 3 or later that was not heard from for longer than this is down:
    /// `outpost_agent_up` turns 0, its connection is closed and its checks move. Such an
    /// agent sends something (a batch, or else a heartbeat) at least every liveness
    /// interval while connected: a quarter of this (at least 1s), told to agents of
    /// protocol 5 in the welcome; agents of protocol 3 and 4 use 1s. Older agents are
    /// noticed when their connection ends. Read at start. Default 30s: agents that collect
    /// every 10s then need no heartbeats beyond the periodic one every 15s.
    #[serde(default = "default_agent_down_after")]
    pub agent_down_after: outpost_shared::units::Duration,
    /// An Alertmanager configuration file (`alertmanager.yml`, Alertmanager 0.25's format)
    /// the aggregator notifies by itself: routes, grouping, inhibition, receivers
    /// (webhook, Slack, PagerDuty, email). Relative to the config file. Silences and alerts
    /// are served on `/api/v2/silences` and `/api/v2/alerts`.
    pub notifications: Option<String>,
    /// Escalation policies (beyond Alertmanager): alerts matching a policy page its levels
    /// in turn until acknowledged or resolved. Needs `notifications` (receivers are its).
    #[serde(default)]
    pub escalation: Vec<EscalationConfig>,
}

/// One `[[alerting.escalation]]` policy.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EscalationConfig {
    /// Alertmanager matchers (`severity="critical"`, `team=~"db|web"`) the alert's labels
    /// must all match; the first matching policy applies.
    #[serde(default)]
    pub matchers: Vec<String>,
    /// Levels: `{ after = "15m", receiver = "team-lead" }`, delays growing.
    pub levels: Vec<EscalationLevel>,
    /// While unacknowledged, the level reached is reminded this often (`0s`: never).
    /// Default 0s.
    #[serde(default = "no_reminder")]
    pub reminder: outpost_shared::units::Duration,
}

/// One level of an escalation policy.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EscalationLevel {
    /// How long after the alert started firing this level is paged.
    pub after: outpost_shared::units::Duration,
    /// The receiver of the notifications file paged.
    pub receiver: String,
}

fn no_reminder() -> outpost_shared::units::Duration {
    outpost_shared::units::Duration::from_secs(0)
}

fn default_true() -> bool {
    true
}

fn default_agent_down_for() -> outpost_shared::units::Duration {
    outpost_shared::units::Duration::from_secs(30)
}

fn default_agent_down_after() -> outpost_shared::units::Duration {
    outpost_shared::units::Duration::from_secs(30)
}

fn default_cut_off_after() -> outpost_shared::units::Duration {
    outpost_shared::units::Duration::from_secs(30)
}

fn default_cut_off_hold() -> outpost_shared::units::Duration {
    outpost_shared::units::Duration::from_secs(3600)
}

fn default_evaluation_interval() -> outpost_shared::units::Duration {
    outpost_shared::units::Duration::from_secs(30)
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            rule_files: Vec::new(),
            evaluation_interval: default_evaluation_interval(),
            alertmanagers: Vec::new(),
            external_labels: Default::default(),
            external_url: None,
            cut_off_hold: default_cut_off_hold(),
            cut_off_after: default_cut_off_after(),
            agent_down_alert: true,
            agent_down_for: default_agent_down_for(),
            agent_down_after: default_agent_down_after(),
            notifications: None,
            escalation: Vec::new(),
        }
    }
}

impl AlertingConfig {
    fn validate(&self) -> Vec<Problem> {
        let mut out = vec![];
        if self.evaluation_interval.get().is_zero() {
            out.push(Problem::new(
                "alerting.evaluation_interval",
                "must be more than 0s",
            ));
        }
        if self.cut_off_after.get().is_zero() {
            out.push(Problem::new(
                "alerting.cut_off_after",
                "must be more than 0s (above the agents' collect interval)",
            ));
        }
        let alive_every =
            std::time::Duration::from_millis(outpost_shared::frame::ALIVE_EVERY_MS.unsigned_abs());
        if self.agent_down_after.get() < 3 * alive_every {
            out.push(Problem::new(
                "alerting.agent_down_after",
                format!(
                    "{} is too short: agents may stay silent for two of their {}ms liveness intervals; use at least 3s",
                    self.agent_down_after,
                    outpost_shared::frame::ALIVE_EVERY_MS
                ),
            ));
        }
        for u in &self.alertmanagers {
            if !u.starts_with("http://") || u.len() <= "http://".len() {
                out.push(Problem::new(
                    "alerting.alertmanagers",
                    format!(
                        "{u:?} is not a URL such as \"http://127.0.0.1:9093\" (plain http only)"
                    ),
                ));
            } else if u.trim_end_matches('/').ends_with("/api/v2/alerts")
                || u.trim_end_matches('/').ends_with("/api/v1/alerts")
            {
                out.push(Problem::new(
                    "alerting.alertmanagers",
                    format!(
                        "{u:?}: give the Alertmanager's base URL (\"http://127.0.0.1:9093\"); /api/v2/alerts is added"
                    ),
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for u in &self.alertmanagers {
            if !seen.insert(u.trim_end_matches('/')) {
                out.push(Problem::new(
                    "alerting.alertmanagers",
                    format!("{u:?} is listed twice (every alert would be sent to it twice)"),
                ));
            }
        }
        for k in self.external_labels.keys() {
            if !outpost_alerting::rulefile::is_valid_label_name(k) {
                out.push(Problem::new(
                    "alerting.external_labels",
                    format!("invalid label name: {k}"),
                ));
            }
        }
        if let Some(u) = &self.external_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            out.push(Problem::new(
                "alerting.external_url",
                format!("{u:?} is not an http:// or https:// URL"),
            ));
        }
        if let Err(problems) = crate::notify::load(self) {
            out.extend(problems.into_iter().map(|(k, p)| Problem::new(k, p)));
        }
        if let Err(problems) = crate::rules::load_files(&self.rule_files) {
            out.extend(
                problems
                    .into_iter()
                    .map(|p| Problem::new("alerting.rule_files", p)),
            );
        }
        out
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// UDP address for agents' QUIC connections. Default 0.0.0.0:9471.
    #[serde(default = "default_quic")]
    pub quic: String,
    /// TCP address of the HTTP API, /metrics and /health. Default 127.0.0.1:9470.
    #[serde(default = "default_http")]
    pub http: String,
}

fn default_quic() -> String {
    "0.0.0.0:9471".into()
}
fn default_http() -> String {
    "127.0.0.1:9470".into()
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            quic: default_quic(),
            http: default_http(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA that signs agents' client certificates (PEM).
    pub ca: PathBuf,
    /// The aggregator's certificate and key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// File holding the bearer token the HTTP API requires. Mandatory when `listen.http` is
    /// not a loopback address.
    pub bearer_token_file: Option<PathBuf>,
}

/// `[query]`: limits that keep queries from starving ingestion, named and defaulted as
/// Prometheus' `--query.*` flags.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// Longest a query may run, queueing included (`--query.timeout`). Default 2m. A
    /// request's own `timeout` parameter can only shorten it.
    #[serde(default = "default_query_timeout")]
    pub timeout: outpost_shared::units::Duration,
    /// Most points one query may hold in memory at once (`--query.max-samples`).
    /// Default 50,000,000.
    #[serde(default = "default_max_samples")]
    pub max_samples: usize,
    /// Queries evaluated at once (`--query.max-concurrency`). Default 20.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Queries that may wait for a slot; beyond this, requests are refused at once with 503.
    /// Default 1,000.
    #[serde(default = "default_max_queued")]
    pub max_queued: usize,
    /// Range queries whose answers are kept for refreshes (0: no cache). Default 512.
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
    /// Points kept in all cached answers. Default 5,000,000 (about 80 MiB).
    #[serde(default = "default_cache_points")]
    pub cache_points: usize,
}

fn default_query_timeout() -> outpost_shared::units::Duration {
    outpost_shared::units::Duration::from_secs(120)
}
fn default_max_samples() -> usize {
    outpost_promql::MAX_SAMPLES
}
fn default_max_concurrency() -> usize {
    20
}
fn default_max_queued() -> usize {
    1000
}
fn default_cache_entries() -> usize {
    512
}
fn default_cache_points() -> usize {
    5_000_000
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            timeout: default_query_timeout(),
            max_samples: default_max_samples(),
            max_concurrency: default_max_concurrency(),
            max_queued: default_max_queued(),
            cache_entries: default_cache_entries(),
            cache_points: default_cache_points(),
        }
    }
}

impl QueryConfig {
    fn validate(&self) -> Vec<Problem> {
        let mut out = vec![];
        if self.timeout.get().is_zero() {
            out.push(Problem::new("query.timeout", "must be more than 0s"));
        }
        for (key, v) in [
            ("query.max_samples", self.max_samples),
            ("query.max_concurrency", self.max_concurrency),
        ] {
            if v == 0 {
                out.push(Problem::new(key, "must be at least 1"));
            }
        }
        out
    }
}

impl Config {
    /// Reads, parses and validates.
    ///
    /// # Errors
    /// The file cannot be read or parsed, or has problems ([`Config::validate`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        outpost_service::config::load_config(path, Self::parse, Self::validate)
    }

    /// Parses TOML; relative paths in the file are taken relative to the file's folder.
    ///
    /// # Errors
    /// The text is not TOML of this shape: one whole-file problem.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = outpost_service::config::parse_toml(text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut paths = vec![
            &mut cfg.data_dir,
            &mut cfg.tls.ca,
            &mut cfg.tls.cert,
            &mut cfg.tls.key,
        ];
        if let Some(t) = cfg.api.bearer_token_file.as_mut() {
            paths.push(t);
        }
        if let Some(c) = cfg.checks_file.as_mut() {
            paths.push(c);
        }
        for f in &mut cfg.forward {
            paths.extend(f.bearer_token_file.as_mut());
            paths.extend(f.basic_auth.as_mut().and_then(|b| b.password_file.as_mut()));
            paths.extend(f.tls.ca_file.as_mut());
            paths.extend(f.tls.cert_file.as_mut());
            paths.extend(f.tls.key_file.as_mut());
        }
        for p in paths {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(n) = cfg.alerting.notifications.as_mut()
            && Path::new(n.as_str()).is_relative()
        {
            *n = base.join(n.as_str()).display().to_string();
        }
        for r in &mut cfg.alerting.rule_files {
            if Path::new(r.as_str()).is_relative() {
                *r = base.join(r.as_str()).display().to_string();
            }
        }
        Ok(cfg)
    }

    /// Every problem, each naming its key.
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = vec![];
        if self.listen.quic.parse::<SocketAddr>().is_err() {
            out.push(Problem::new(
                "listen.quic",
                format!(
                    "{:?} is not an address such as \"0.0.0.0:9471\"",
                    self.listen.quic
                ),
            ));
        }
        match self.listen.http.parse::<SocketAddr>() {
            Err(_) => out.push(Problem::new("listen.http", format!("{:?} is not an address such as \"127.0.0.1:9470\"", self.listen.http))),
            Ok(a) if !a.ip().is_loopback() && self.api.bearer_token_file.is_none() => out.push(Problem::new("listen.http", format!("{a} is reachable beyond this host; set api.bearer_token_file so the API requires a token"
            ))),
            Ok(_) => {}
        }
        for (key, p) in [
            ("tls.ca", &self.tls.ca),
            ("tls.cert", &self.tls.cert),
            ("tls.key", &self.tls.key),
        ] {
            if let Err(e) = std::fs::File::open(p) {
                out.push(Problem::new(
                    key,
                    format!("cannot open {}: {e}", p.display()),
                ));
            }
        }
        if let Some(t) = &self.api.bearer_token_file {
            match std::fs::read_to_string(t) {
                Ok(s) if s.trim().is_empty() => out.push(Problem::new(
                    "api.bearer_token_file",
                    format!("{} is empty", t.display()),
                )),
                Ok(_) => {}
                Err(e) => out.push(Problem::new(
                    "api.bearer_token_file",
                    format!("cannot read {}: {e}", t.display()),
                )),
            }
        }
        if let Some(c) = &self.checks_file
            && let Err(e) = crate::checks::load_file(c)
        {
            out.extend(e.lines().map(|l| Problem::new("checks_file", l)));
        }
        out.extend(self.query.validate());
        out.extend(self.storage.validate());
        out.extend(self.alerting.validate());
        out.extend(crate::forward::validate(&self.forward));
        out.extend(self.log.validate());
        out.extend(self.telemetry.validate());
        out
    }

    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            ca: self.tls.ca.clone(),
            cert: self.tls.cert.clone(),
            key: self.tls.key.clone(),
        }
    }

    /// The settings `/api/v1/status/flags` shows, named as Prometheus' flags where one
    /// exists (`config.file`, `storage.tsdb.path`, `web.listen-address`, `query.*`); the
    /// token file's path is shown, never the token.
    pub fn flags(&self, config_file: Option<&Path>) -> Vec<(String, String)> {
        let d = |d: &outpost_shared::units::Duration| format!("{}s", d.get().as_secs_f64());
        vec![
            (
                "config.file".into(),
                config_file
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            (
                "storage.tsdb.path".into(),
                self.data_dir.display().to_string(),
            ),
            ("web.listen-address".into(), self.listen.http.clone()),
            ("listen.quic".into(), self.listen.quic.clone()),
            ("query.timeout".into(), d(&self.query.timeout)),
            (
                "query.max-samples".into(),
                self.query.max_samples.to_string(),
            ),
            (
                "query.max-concurrency".into(),
                self.query.max_concurrency.to_string(),
            ),
            ("query.max-queued".into(), self.query.max_queued.to_string()),
            (
                "query.cache-entries".into(),
                self.query.cache_entries.to_string(),
            ),
            (
                "query.cache-points".into(),
                self.query.cache_points.to_string(),
            ),
            (
                "query.lookback-delta".into(),
                format!("{}s", outpost_promql::LOOKBACK_DELTA_MS / 1000),
            ),
            (
                "api.bearer-token-file".into(),
                self.api
                    .bearer_token_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            (
                "checks-file".into(),
                self.checks_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
        ]
    }

    /// The external URL alerts link back to: `[alerting] external_url`, else
    /// `http://` + `listen.http` (an unspecified address as the host name).
    pub fn external_url(&self) -> String {
        if let Some(u) = &self.alerting.external_url {
            return u.trim_end_matches('/').to_string();
        }
        match self.listen.http.parse::<SocketAddr>() {
            Ok(a) if a.ip().is_unspecified() => {
                let host = std::env::var("HOSTNAME")
                    .ok()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "localhost".into());
                format!("http://{host}:{}", a.port())
            }
            _ => format!("http://{}", self.listen.http),
        }
    }

    /// The API token, if one is configured.
    pub fn token(&self) -> Option<String> {
        let p = self.api.bearer_token_file.as_ref()?;
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
data_dir = "data"
[listen]
quic = "127.0.0.1:9471"
http = "127.0.0.1:9470"
[tls]
ca = "ca.crt"
cert = "aggregator.crt"
key = "aggregator.key"
"#;

    #[test]
    fn relative_paths_follow_the_file() {
        let c = Config::parse(GOOD, Path::new("/etc/outpost/aggregator.toml")).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/etc/outpost/data"));
        assert_eq!(c.tls.ca, PathBuf::from("/etc/outpost/ca.crt"));
    }

    #[test]
    fn unknown_keys_and_exposed_api_without_token_are_errors() {
        let e = Config::parse(
            &GOOD.replace("[tls]", "[tls]\ncrt = \"x\""),
            Path::new("agg.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("agg.toml: ") && e.contains("crt"), "{e}");
        let c = Config::parse(
            &GOOD.replace("127.0.0.1:9470", "0.0.0.0:9470"),
            Path::new("/nonexistent/agg.toml"),
        )
        .unwrap();
        let p = outpost_shared::problem::lines(&c.validate());
        assert!(
            p.contains("listen.http: 0.0.0.0:9470 is reachable beyond this host"),
            "{p}"
        );
        assert!(p.contains("tls.ca: cannot open /nonexistent/ca.crt"), "{p}");
    }

    #[test]
    fn storage_retentions_and_size_cap_out_of_range_are_named() {
        let c = Config::parse(GOOD, Path::new("agg.toml")).unwrap();
        assert!(
            !outpost_shared::problem::lines(&c.validate()).contains("storage."),
            "defaults are fine"
        );
        assert_eq!(c.storage.policy().retention_ms, Some(365 * 86_400_000));
        let c = Config::parse(
            &format!(
                "{GOOD}[storage]\nretention = \"200000000000d\"\nretention_5m = \"12h\"\n\
                 retention_1h = \"1y\"\nmax_bytes = \"10MiB\"\n"
            ),
            Path::new("/nonexistent/agg.toml"),
        )
        .unwrap();
        // Past i64 ms it would have wrapped negative: every day, today's too, past it.
        assert_eq!(c.storage.policy().retention_ms, Some(i64::MAX));
        assert_eq!(c.storage.policy().retention_1h_ms, Some(365 * 86_400_000));
        let p = outpost_shared::problem::lines(&c.validate());
        assert!(
            p.contains("storage.retention: 200000000000 days is over 100 years"),
            "{p}"
        );
        assert!(
            p.contains("storage.retention_5m: 12h is under a day"),
            "{p}"
        );
        assert!(!p.contains("storage.retention_1h"), "{p}");
        assert!(
            p.contains("storage.max_bytes: 10485760 bytes is under 64MiB"),
            "{p}"
        );
    }

    #[test]
    fn query_limits_default_as_prometheus_and_bad_ones_are_named() {
        let c = Config::parse(GOOD, Path::new("agg.toml")).unwrap();
        assert_eq!(c.query, QueryConfig::default());
        assert_eq!(c.query.timeout.get(), std::time::Duration::from_secs(120));
        assert_eq!(c.query.max_samples, 50_000_000);
        let c = Config::parse(
            &format!("{GOOD}[query]\ntimeout = \"0s\"\nmax_concurrency = 0\nmax_samples = 10\n"),
            Path::new("/nonexistent/agg.toml"),
        )
        .unwrap();
        let p = outpost_shared::problem::lines(&c.validate());
        assert!(p.contains("query.timeout: must be more than 0s"), "{p}");
        assert!(
            p.contains("query.max_concurrency: must be at least 1"),
            "{p}"
        );
        assert!(!p.contains("query.max_samples"), "{p}");
        let e = Config::parse(
            &format!("{GOOD}[query]\ntimeuot = \"1s\"\n"),
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("timeuot"), "{e}");
    }

    #[test]
    fn alertmanager_urls_that_would_fail_are_named() {
        let c = Config::parse(
            &format!(
                "{GOOD}[alerting]\nalertmanagers = [\"http://a:9093/api/v2/alerts\", \"http://b:9093\", \"http://b:9093/\"]\ncut_off_after = \"0s\"\n"
            ),
            Path::new("/nonexistent/agg.toml"),
        )
        .unwrap();
        let p = outpost_shared::problem::lines(&c.validate());
        assert!(p.contains("give the Alertmanager's base URL"), "{p}");
        assert!(p.contains("\"http://b:9093/\" is listed twice"), "{p}");
        assert!(
            p.contains("alerting.cut_off_after: must be more than 0s"),
            "{p}"
        );
    }

    #[test]
    fn agent_down_settings_default_and_a_too_short_wait_is_named() {
        let c = Config::parse(GOOD, Path::new("agg.toml")).unwrap();
        assert!(c.alerting.agent_down_alert);
        assert_eq!(c.alerting.agent_down_for.get().as_secs(), 30);
        assert_eq!(c.alerting.agent_down_after.get().as_secs(), 30);
        let c = Config::parse(
            &format!("{GOOD}[alerting]\nagent_down_after = \"1s\"\nagent_down_alert = false\n"),
            Path::new("/nonexistent/agg.toml"),
        )
        .unwrap();
        assert!(!c.alerting.agent_down_alert);
        let p = outpost_shared::problem::lines(&c.validate());
        assert!(
            p.contains("alerting.agent_down_after: 1s is too short"),
            "{p}"
        );
        // Three of the shortest liveness intervals is enough.
        let c = Config::parse(
            &format!("{GOOD}[alerting]\nagent_down_after = \"3s\"\n"),
            Path::new("/nonexistent/agg.toml"),
        )
        .unwrap();
        let p = outpost_shared::problem::lines(&c.validate());
        assert!(!p.contains("agent_down_after"), "{p}");
    }
}
