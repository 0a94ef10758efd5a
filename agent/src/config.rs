//! The agent's TOML configuration: typed fields, unknown keys refused, and a validation pass
//! that lists every problem with the key and the file it is in.

use outpost_service::config::ConfigError;
pub use outpost_service::config::{LogConfig, LogFormat, Problem, TelemetryConfig};
use outpost_shared::tls::{TlsFiles, validate_agent_id};
use outpost_shared::units::{ByteSize, Duration};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This agent's id. Must equal the common name of its client certificate.
    pub id: String,
    /// The region this agent reports from (label `region` on every sample).
    pub region: String,
    pub aggregator: AggregatorConfig,
    pub buffer: BufferConfig,
    #[serde(default)]
    pub collect: CollectConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Local services to scrape, one `[[scrape]]` table per job.
    #[serde(default)]
    pub scrape: Vec<ScrapeConfig>,
    /// Synthetic checks this agent runs on its own, one `[[checks]]` table each, besides
    /// those the aggregator assigns to it.
    #[serde(default)]
    pub checks: Vec<outpost_synthetic::CheckDef>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    /// `host:port` QUIC addresses in order of preference; the next one is used when one
    /// fails, and the agent returns to the first when it answers again (see
    /// `failback_interval`). Each aggregator keeps its own record of what it acknowledged.
    pub endpoints: Vec<String>,
    /// The name the aggregator's certificate must carry. Default: the host of the first endpoint.
    pub server_name: Option<String>,
    /// CA certificate that signed the aggregator's certificate (PEM).
    pub ca: PathBuf,
    /// This agent's client certificate and key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// While connected to any endpoint but the first, how often the first is probed (a QUIC
    /// and TLS handshake, nothing sent). When it answers, the agent finishes what is in flight
    /// and moves back to it. Default 60s.
    #[serde(default = "default_failback_interval")]
    pub failback_interval: Duration,
}

fn default_failback_interval() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Delete the oldest batches to make room (default).
    #[default]
    DropOldest,
    /// Keep what is buffered and drop the new batch.
    DropNewest,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// Directory of the RocksDB buffer.
    pub dir: PathBuf,
    /// Upper bound of buffered batch bytes. Default 256MiB.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// What to drop when the buffer is full.
    #[serde(default)]
    pub when_full: WhenFull,
    /// fsync every write. Off (default): a crash of the agent process loses nothing; a power
    /// loss can lose the cycles the kernel had not written back yet (up to ~30 s with Linux's
    /// default writeback). On: a power loss loses nothing buffered, at one fsync per cycle.
    #[serde(default)]
    pub sync: bool,
}

fn default_max_bytes() -> ByteSize {
    ByteSize(256 << 20)
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CollectConfig {
    /// Time between collection cycles. Default 10s.
    #[serde(default = "default_interval")]
    pub interval: Duration,
    // One switch per host collector, named as node_exporter names its collectors.
    /// `node_cpu_seconds_total`, `node_cpu_guest_seconds_total` (/proc/stat). Default true.
    #[serde(default = "on")]
    pub cpu: bool,
    /// `node_cpu_frequency_*hertz`, `node_cpu_scaling_frequency_*hertz` where sysfs has cpufreq. Default true.
    #[serde(default = "on")]
    pub cpufreq: bool,
    /// `node_disk_*` (/proc/diskstats). Default true.
    #[serde(default = "on")]
    pub diskstats: bool,
    /// `node_filefd_allocated`, `node_filefd_maximum`. Default true.
    #[serde(default = "on")]
    pub filefd: bool,
    /// `node_filesystem_*` (statvfs of each mount, pseudo filesystems excluded). Default true.
    #[serde(default = "on")]
    pub filesystem: bool,
    /// `node_hwmon_temp_*celsius` where /sys/class/hwmon has sensors. Default true.
    #[serde(default = "on")]
    pub hwmon: bool,
    /// `node_load1`, `node_load5`, `node_load15`. Default true.
    #[serde(default = "on")]
    pub loadavg: bool,
    /// `node_memory_*` (all of /proc/meminfo). Default true.
    #[serde(default = "on")]
    pub meminfo: bool,
    /// `node_network_*_total` (/proc/net/dev). Default true.
    #[serde(default = "on")]
    pub netdev: bool,
    /// `node_netstat_*` (TCP/UDP/IP counters). Default true.
    #[serde(default = "on")]
    pub netstat: bool,
    /// `node_pressure_*` (pressure stall information). Default true.
    #[serde(default = "on")]
    pub pressure: bool,
    /// `node_sockstat_*` (sockets in use). Default true.
    #[serde(default = "on")]
    pub sockstat: bool,
    /// boot time, context switches, interrupts, forks, `node_procs_running`, `node_procs_blocked`. Default true.
    #[serde(default = "on")]
    pub stat: bool,
    /// `node_systemd_unit_state`, `node_systemd_units` (runs systemctl). Default off.
    #[serde(default = "off")]
    pub systemd: bool,
    /// `node_time_seconds`, clock sources. Default true.
    #[serde(default = "on")]
    pub time: bool,
    /// `node_uname_info`. Default true.
    #[serde(default = "on")]
    pub uname: bool,
    /// `node_vmstat_*` (page faults, paging, swapping, OOM kills). Default true.
    #[serde(default = "on")]
    pub vmstat: bool,
}

fn default_interval() -> Duration {
    Duration::from_secs(10)
}

fn on() -> bool {
    true
}

fn off() -> bool {
    false
}

impl CollectConfig {
    /// Whether the collector of that name (see `collect::COLLECTORS`) runs.
    pub fn enabled(&self, collector: &str) -> bool {
        match collector {
            "cpu" => self.cpu,
            "cpufreq" => self.cpufreq,
            "diskstats" => self.diskstats,
            "filefd" => self.filefd,
            "filesystem" => self.filesystem,
            "hwmon" => self.hwmon,
            "loadavg" => self.loadavg,
            "meminfo" => self.meminfo,
            "netdev" => self.netdev,
            "netstat" => self.netstat,
            "pressure" => self.pressure,
            "sockstat" => self.sockstat,
            "stat" => self.stat,
            "systemd" => self.systemd,
            "time" => self.time,
            "uname" => self.uname,
            "vmstat" => self.vmstat,
            _ => false,
        }
    }
}

impl Default for CollectConfig {
    fn default() -> Self {
        CollectConfig {
            interval: default_interval(),
            cpu: true,
            cpufreq: true,
            diskstats: true,
            filefd: true,
            filesystem: true,
            hwmon: true,
            loadavg: true,
            meminfo: true,
            netdev: true,
            netstat: true,
            pressure: true,
            sockstat: true,
            stat: true,
            systemd: false,
            time: true,
            uname: true,
            vmstat: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the local HTTP server (/health, /metrics). Default 127.0.0.1:9472.
    #[serde(default = "default_listen")]
    pub listen: String,
}

fn default_listen() -> String {
    "127.0.0.1:9472".into()
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// One `[[scrape]]` job: targets scraped like Prometheus scrapes them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    /// The `job` label of every sample of these targets. Unique among `[[scrape]]` entries.
    pub job: String,
    /// `host:port` of each target; it becomes the target's `instance` label.
    pub targets: Vec<String>,
    /// Time between scrapes of each target. Default: `[collect] interval`.
    pub interval: Option<Duration>,
    /// Time allowed for one scrape. Default: the interval, at most 10s. At most the interval.
    pub timeout: Option<Duration>,
    /// HTTP path of the exposition. Default "/metrics".
    #[serde(default = "default_metrics_path")]
    pub metrics_path: String,
    /// "http" (default) or "https".
    #[serde(default)]
    pub scheme: Scheme,
    /// File whose content (trimmed) is sent as `Authorization: Bearer <token>`; read at every
    /// scrape, so a rotated token is picked up.
    pub bearer_token_file: Option<PathBuf>,
    /// Largest response body accepted (after decompression). Default "64MiB".
    #[serde(default = "default_body_size_limit")]
    pub body_size_limit: ByteSize,
    /// Extra labels for every sample of these targets.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// TLS settings for `scheme = "https"`.
    #[serde(default)]
    pub tls: ScrapeTls,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ScrapeTls {
    /// CA certificates (PEM) to verify the targets with. Default: the public web roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for targets that require mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate. Only for testing.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

fn default_metrics_path() -> String {
    "/metrics".into()
}

fn default_body_size_limit() -> ByteSize {
    ByteSize(64 << 20)
}

/// Labels a `[[scrape]]` entry may not set: they are set by the agent.
const RESERVED_LABELS: [&str; 4] = ["job", "instance", "agent", "region"];

impl ScrapeConfig {
    pub fn interval(&self, collect: &CollectConfig) -> std::time::Duration {
        self.interval.unwrap_or(collect.interval).get()
    }

    pub fn timeout(&self, collect: &CollectConfig) -> std::time::Duration {
        let i = self.interval(collect);
        self.timeout
            .map(|t| t.get())
            .unwrap_or_else(|| i.min(std::time::Duration::from_secs(10)))
    }

    fn validate(
        &self,
        n: usize,
        collect: &CollectConfig,
        jobs: &mut Vec<String>,
        out: &mut Vec<Problem>,
    ) {
        let key = format!("scrape[{n}]");
        if self.job.is_empty() {
            out.push(Problem::new(format!("{key}.job"), "must not be empty"));
        } else if jobs.contains(&self.job) {
            out.push(Problem::new(
                format!("{key}.job"),
                format!(
                    "{:?} is used by an earlier [[scrape]] entry; job names must be unique",
                    self.job
                ),
            ));
        }
        jobs.push(self.job.clone());
        if self.targets.is_empty() {
            out.push(Problem::new(
                format!("{key}.targets"),
                "list at least one \"host:port\"",
            ));
        }
        for t in &self.targets {
            if split_host_port(t).is_none() || t.contains('/') {
                out.push(Problem::new(
                    format!("{key}.targets"),
                    format!("{t:?} is not \"host:port\" (put the path in metrics_path)"),
                ));
            }
        }
        let interval = self.interval(collect);
        if interval < std::time::Duration::from_millis(100) {
            out.push(Problem::new(
                format!("{key}.interval"),
                format!("{} is too short; use at least 100ms", Duration(interval)),
            ));
        }
        if self.timeout(collect) > interval {
            out.push(Problem::new(
                format!("{key}.timeout"),
                format!(
                    "{} is longer than the interval {}; make it at most the interval",
                    Duration(self.timeout(collect)),
                    Duration(interval)
                ),
            ));
        }
        if self.timeout(collect).is_zero() {
            out.push(Problem::new(
                format!("{key}.timeout"),
                "must be more than 0s",
            ));
        }
        if !self.metrics_path.starts_with('/') {
            out.push(Problem::new(
                format!("{key}.metrics_path"),
                format!("{:?} must start with '/'", self.metrics_path),
            ));
        }
        if let Some(p) = &self.bearer_token_file
            && let Err(e) = std::fs::read_to_string(p)
        {
            out.push(Problem::new(
                format!("{key}.bearer_token_file"),
                format!("cannot read {}: {e}", p.display()),
            ));
        }
        for name in self.labels.keys() {
            if RESERVED_LABELS.contains(&name.as_str()) || name.starts_with("__") {
                out.push(Problem::new(
                    format!("{key}.labels"),
                    format!("{name:?} is set by the agent; choose another name"),
                ));
            } else if !crate::textparse::is_label_name(name) {
                out.push(Problem::new(
                    format!("{key}.labels"),
                    format!("{name:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
                ));
            }
        }
        for (k, p) in [
            ("ca_file", &self.tls.ca_file),
            ("cert_file", &self.tls.cert_file),
            ("key_file", &self.tls.key_file),
        ] {
            if let Some(p) = p
                && let Err(e) = std::fs::File::open(p)
            {
                out.push(Problem::new(
                    format!("{key}.tls.{k}"),
                    format!("cannot open {}: {e}", p.display()),
                ));
            }
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            out.push(Problem::new(
                format!("{key}.tls"),
                "set both cert_file and key_file, or neither".to_string(),
            ));
        }
        let tls_set = self.tls.ca_file.is_some()
            || self.tls.cert_file.is_some()
            || self.tls.insecure_skip_verify;
        if tls_set && self.scheme != Scheme::Https {
            out.push(Problem::new(
                format!("{key}.tls"),
                "TLS settings need scheme = \"https\"",
            ));
        }
    }
}

impl Config {
    /// Reads, parses and validates; the error lists every problem found.
    ///
    /// # Errors
    /// The file cannot be read or parsed, or has problems ([`Config::validate`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        outpost_service::config::load_config(path, Self::parse, Self::validate)
    }

    /// Parses TOML; relative paths in the file are taken relative to the file's folder.
    ///
    /// # Errors
    /// The text is not TOML of this shape (unknown key, wrong type): one whole-file problem.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = outpost_service::config::parse_toml(text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut cfg.aggregator.ca,
            &mut cfg.aggregator.cert,
            &mut cfg.aggregator.key,
            &mut cfg.buffer.dir,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        for s in &mut cfg.scrape {
            for p in [
                &mut s.bearer_token_file,
                &mut s.tls.ca_file,
                &mut s.tls.cert_file,
                &mut s.tls.key_file,
            ]
            .into_iter()
            .flatten()
            {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        Ok(cfg)
    }

    /// Every problem, each naming its key.
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = vec![];
        if let Err(e) = validate_agent_id(&self.id) {
            out.push(Problem::new("id", e.to_string()));
        }
        if self.region.is_empty() {
            out.push(Problem::new("region", "must not be empty"));
        }
        if self.aggregator.endpoints.is_empty() {
            out.push(Problem::new(
                "aggregator.endpoints",
                "list at least one \"host:port\"",
            ));
        }
        for e in &self.aggregator.endpoints {
            if split_host_port(e).is_none() {
                out.push(Problem::new(
                    "aggregator.endpoints",
                    format!("{e:?} is not \"host:port\""),
                ));
            }
        }
        for (key, p) in [
            ("aggregator.ca", &self.aggregator.ca),
            ("aggregator.cert", &self.aggregator.cert),
            ("aggregator.key", &self.aggregator.key),
        ] {
            if let Err(e) = std::fs::File::open(p) {
                out.push(Problem::new(
                    key,
                    format!("cannot open {}: {e}", p.display()),
                ));
            }
        }
        if self.buffer.max_bytes.0 < 64 << 10 {
            out.push(Problem::new(
                "buffer.max_bytes",
                format!("{} is too small; use at least 64KiB", self.buffer.max_bytes),
            ));
        }
        if self.collect.interval.get() < std::time::Duration::from_millis(100) {
            out.push(Problem::new(
                "collect.interval",
                format!("{} is too short; use at least 100ms", self.collect.interval),
            ));
        }
        if self.http.listen.parse::<SocketAddr>().is_err() {
            out.push(Problem::new(
                "http.listen",
                format!(
                    "{:?} is not an address such as \"127.0.0.1:9472\"",
                    self.http.listen
                ),
            ));
        }
        out.extend(self.log.validate());
        out.extend(self.telemetry.validate());
        let mut jobs = vec![];
        for (n, s) in self.scrape.iter().enumerate() {
            s.validate(n, &self.collect, &mut jobs, &mut out);
        }
        let mut names = std::collections::HashSet::new();
        for (n, c) in self.checks.iter().enumerate() {
            if let Err(problems) = c.validate() {
                out.extend(
                    problems
                        .into_iter()
                        .map(|p| Problem::new(format!("checks[{n}]"), p)),
                );
            }
            if !names.insert(c.name.as_str()) {
                out.push(Problem::new(
                    format!("checks[{n}].name"),
                    format!(
                        "{:?} is used by an earlier [[checks]] entry; check names must be unique",
                        c.name
                    ),
                ));
            }
        }
        out
    }

    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            ca: self.aggregator.ca.clone(),
            cert: self.aggregator.cert.clone(),
            key: self.aggregator.key.clone(),
        }
    }

    /// The TLS server name to expect: configured, else the first endpoint's host.
    pub fn server_name(&self) -> String {
        self.aggregator.server_name.clone().unwrap_or_else(|| {
            self.aggregator
                .endpoints
                .first()
                .and_then(|e| split_host_port(e))
                .map(|(h, _)| h.to_string())
                .unwrap_or_else(|| "localhost".into())
        })
    }
}

/// `host:port` or `[v6]:port`.
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (h, p) = s.rsplit_once(':')?;
    let port = p.parse().ok()?;
    let h = h
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(h);
    (!h.is_empty()).then_some((h, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = "web-1"
region = "eu-central"
[aggregator]
endpoints = ["127.0.0.1:9471"]
ca = "ca.crt"
cert = "web-1.crt"
key = "web-1.key"
[buffer]
dir = "buf"
max_bytes = "64MiB"
[collect]
interval = "1s"
[http]
listen = "127.0.0.1:0"
"#;

    #[test]
    fn local_checks_are_toml_tables_validated_like_the_aggregators() {
        let text = format!(
            "{GOOD}\n[[checks]]\nname = \"local-health\"\ntype = \"http\"\nfrequency = \"15s\"\nurl = \"http://127.0.0.1:8080/health\"\n\n[[checks]]\nname = \"local-health\"\ntype = \"tcp\"\nfrequency = \"1m\"\n"
        );
        let c = Config::parse(&text, Path::new("agent.toml")).unwrap();
        assert_eq!(c.checks.len(), 2);
        assert_eq!(
            c.checks[0].frequency.get(),
            std::time::Duration::from_secs(15)
        );
        let p = outpost_shared::problem::lines(&c.validate());
        assert!(
            p.contains("checks[1].name: \"local-health\" is used by an earlier"),
            "{p}"
        );
        assert!(
            p.lines()
                .any(|l| l.starts_with("checks[1]: ") && l.contains("target")),
            "the tcp check without a target is reported: {p}"
        );
    }

    #[test]
    fn parses_and_resolves_relative_paths() {
        let c = Config::parse(GOOD, Path::new("/etc/outpost/agent.toml")).unwrap();
        assert_eq!(c.buffer.dir, PathBuf::from("/etc/outpost/buf"));
        assert_eq!(c.buffer.max_bytes, ByteSize(64 << 20));
        assert_eq!(c.collect.interval, Duration::from_secs(1));
        assert_eq!(c.server_name(), "127.0.0.1");
        assert_eq!(c.buffer.when_full, WhenFull::DropOldest);
    }

    #[test]
    fn unknown_keys_name_the_key_and_file() {
        let e = Config::parse(
            &GOOD.replace("[collect]", "[collect]\nintervall = \"1s\""),
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("a.toml: ") && e.contains("intervall"), "{e}");
        let e = Config::parse(
            &GOOD.replace("\"64MiB\"", "\"64 parsecs\""),
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("invalid size") && e.contains("max_bytes"), "{e}");
    }

    #[test]
    fn collectors_switch_off_one_by_one() {
        let c = Config::parse(GOOD, Path::new("a.toml")).unwrap();
        for (name, on) in crate::collect::COLLECTORS {
            assert_eq!(c.collect.enabled(name), on, "{name}");
            assert_eq!(CollectConfig::default().enabled(name), on, "{name}");
        }
        let c = Config::parse(
            &GOOD.replace("[collect]", "[collect]\nhwmon = false\nsystemd = true"),
            Path::new("a.toml"),
        )
        .unwrap();
        assert!(
            !c.collect.enabled("hwmon") && c.collect.enabled("systemd") && c.collect.enabled("cpu")
        );
        assert!(!c.collect.enabled("nfs"));
        let e = Config::parse(
            &GOOD.replace("[collect]", "[collect]\nhwmonn = false"),
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("a.toml: ") && e.contains("hwmonn"), "{e}");
        let e = Config::parse(
            &GOOD.replace("[collect]", "[collect]\nhwmon = \"no\""),
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("hwmon") && e.contains("bool"), "{e}");
    }

    #[test]
    fn packaged_example_has_every_collector_switch_at_its_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/agent.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let c = Config::parse(&text, &path).unwrap();
        for (name, on) in crate::collect::COLLECTORS {
            assert!(
                text.contains(&format!("\n{name} = {on}")),
                "packaging/agent.toml lacks {name} = {on}"
            );
            assert_eq!(c.collect.enabled(name), on, "{name}");
        }
    }

    #[test]
    fn scrape_entries_parse_with_defaults() {
        let text = format!(
            "{GOOD}\n[[scrape]]\njob = \"app\"\ntargets = [\"127.0.0.1:8080\", \"localhost:9100\"]\n\n[[scrape]]\njob = \"secure\"\ntargets = [\"[::1]:8443\"]\ninterval = \"30s\"\nmetrics_path = \"/prom\"\nscheme = \"https\"\nbearer_token_file = \"token\"\nlabels = {{ env = \"prod\" }}\n[scrape.tls]\nca_file = \"ca.pem\"\n"
        );
        let c = Config::parse(&text, Path::new("/etc/outpost/agent.toml")).unwrap();
        assert_eq!(c.scrape.len(), 2);
        let (a, b) = (&c.scrape[0], &c.scrape[1]);
        assert_eq!(
            (
                a.metrics_path.as_str(),
                a.scheme,
                a.interval(&c.collect),
                a.timeout(&c.collect)
            ),
            (
                "/metrics",
                Scheme::Http,
                std::time::Duration::from_secs(1),
                std::time::Duration::from_secs(1)
            )
        );
        assert_eq!(b.interval(&c.collect), std::time::Duration::from_secs(30));
        assert_eq!(b.timeout(&c.collect), std::time::Duration::from_secs(10));
        assert_eq!(
            b.bearer_token_file.as_deref(),
            Some(Path::new("/etc/outpost/token"))
        );
        assert_eq!(
            b.tls.ca_file.as_deref(),
            Some(Path::new("/etc/outpost/ca.pem"))
        );
        assert_eq!(b.labels.get("env").map(String::as_str), Some("prod"));
        let e = Config::parse(
            &format!("{GOOD}\n[[scrape]]\njob = \"a\"\ntargets = []\nscrape_interval = \"1s\"\n"),
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("scrape_interval"), "{e}");
    }

    /// The commented `[[scrape]]` example in packaging/agent.toml parses once uncommented.
    #[test]
    fn packaged_scrape_example_parses() {
        let pkg = include_str!("../../packaging/agent.toml");
        let start = pkg
            .find("# [[scrape]]")
            .expect("packaging/agent.toml has a [[scrape]] example");
        let example: String = pkg[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = Config::parse(
            &format!("{GOOD}\n{example}"),
            Path::new("/etc/outpost/agent.toml"),
        )
        .unwrap_or_else(|e| panic!("{e}\n{example}"));
        assert_eq!(c.scrape[0].job, "app");
        assert_eq!(c.scrape[0].targets.len(), 2);
        assert_eq!(c.scrape[0].scheme, Scheme::Https);
        assert_eq!(
            c.scrape[0].tls.key_file.as_deref(),
            Some(Path::new("/etc/outpost/app-client.key"))
        );
    }

    #[test]
    fn scrape_validation_names_each_key() {
        let text = format!(
            "{GOOD}\n[[scrape]]\njob = \"a\"\ntargets = [\"http://x:1/metrics\"]\ninterval = \"1s\"\ntimeout = \"2s\"\nmetrics_path = \"metrics\"\nbearer_token_file = \"/nonexistent/t\"\nlabels = {{ job = \"x\", \"bad-name\" = \"y\" }}\n[scrape.tls]\ncert_file = \"/nonexistent/c\"\n[[scrape]]\njob = \"a\"\ntargets = []\n"
        );
        let c = Config::parse(&text, Path::new("/nonexistent/a.toml")).unwrap();
        let p = outpost_shared::problem::lines(&c.validate());
        for needle in [
            "scrape[0].targets: \"http://x:1/metrics\" is not \"host:port\"",
            "scrape[0].timeout: 2s is longer than the interval 1s",
            "scrape[0].metrics_path: \"metrics\" must start with '/'",
            "scrape[0].bearer_token_file: cannot read /nonexistent/t",
            "scrape[0].labels: \"job\" is set by the agent",
            "scrape[0].labels: \"bad-name\" is not a label name",
            "scrape[0].tls.cert_file: cannot open",
            "scrape[0].tls: set both cert_file and key_file",
            "scrape[0].tls: TLS settings need scheme = \"https\"",
            "scrape[1].job: \"a\" is used by an earlier [[scrape]] entry",
            "scrape[1].targets: list at least one",
        ] {
            assert!(p.contains(needle), "missing {needle:?} in:\n{p}");
        }
    }

    #[test]
    fn validation_lists_every_problem() {
        let c = Config::parse(
            &GOOD
                .replace("\"web-1\"", "\"bad id\"")
                .replace("\"1s\"", "\"10ms\"")
                .replace("127.0.0.1:9471", "nohost"),
            Path::new("/nonexistent/a.toml"),
        )
        .unwrap();
        let p = outpost_shared::problem::lines(&c.validate());
        for needle in [
            "id: invalid agent id",
            "aggregator.endpoints: \"nohost\"",
            "aggregator.ca: cannot open",
            "collect.interval: 10ms is too short",
        ] {
            assert!(p.contains(needle), "missing {needle:?} in:\n{p}");
        }
    }
}
