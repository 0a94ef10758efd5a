//! Check definitions as written in YAML (the aggregator's checks file, an agent's local
//! checks) and sent to agents as JSON. One flat struct for every type keeps
//! `deny_unknown_fields` working; [`crate::validate`] reports fields that do not apply to a
//! check's type.

use outpost_shared::units::Duration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The longest timeout a check gets when it names none (shorter when its frequency is).
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How much of a response body is read when a check names no `max_body_bytes`.
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;
/// Redirects followed at most.
pub const MAX_REDIRECTS: usize = 10;

/// What a check probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// One HTTP(S) request, or an API journey when `steps` is given.
    Http,
    /// A TCP connection, optionally TLS, optionally a send/expect exchange.
    Tcp,
    /// A DNS query to a chosen resolver.
    Dns,
    /// An ICMP echo over an unprivileged ping socket.
    Icmp,
    /// A TLS handshake: chain validity and days until the certificate expires.
    Tls,
    /// One HTTP/3 request over QUIC.
    Http3,
}

impl CheckKind {
    /// The name as written in check files (`http`, `tcp`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Http => "http",
            CheckKind::Tcp => "tcp",
            CheckKind::Dns => "dns",
            CheckKind::Icmp => "icmp",
            CheckKind::Tls => "tls",
            CheckKind::Http3 => "http3",
        }
    }
}

/// A check definition. Common keys: `name`, `type`, `frequency`, `timeout`, `locations`,
/// `labels`; the others belong to some types only (see the field docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckDef {
    /// Unique name; the `check` label of its samples.
    pub name: String,
    /// The check type (`type:` in the file).
    #[serde(rename = "type")]
    pub kind: CheckKind,
    /// How often the check runs from each of its locations.
    pub frequency: Duration,
    /// How long one run may take. Default: the frequency, at most 10 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Regions that run the check; empty for an agent's local checks.
    #[serde(default)]
    pub locations: Vec<String>,
    /// Extra labels on every sample of the check.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// http, http3: the URL to request (one-request checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// http, http3: request method, default GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// http, http3: request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// http, http3: request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// http: follow redirects (at most 10), default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_redirects: Option<bool>,
    /// http, http3: bytes of the body read at most (default 1 MiB); the rest is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// http, http3: assertions on the response; default a 2xx status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assert: Option<HttpAssert>,
    /// http: an API journey, ordered steps sharing variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,

    /// http, http3, tls: TLS options. tcp: present = connect with TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsOptions>,

    /// tcp, tls: `host:port`; icmp: a host name or address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// tcp: text sent after connecting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// tcp: a regex the received text must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,

    /// tls: fail when the certificate expires in fewer days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_days_left: Option<u32>,

    /// dns: the name to look up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// dns: A, AAAA, MX, TXT, CNAME, NS or SOA; default A.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_type: Option<String>,
    /// dns: `host` or `host:port` of the resolver; default the first nameserver of
    /// /etc/resolv.conf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver: Option<String>,
    /// dns: values every one of which must be among the answers (e.g. `192.0.2.1`,
    /// `10 mail.example.org.`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect_answers: Vec<String>,
    /// dns: the expected response code, default NOERROR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_rcode: Option<String>,

    /// Every type: the address family tried first when a name resolves to both, `ip6`
    /// (default, as blackbox_exporter) or `ip4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_ip_protocol: Option<IpProtocol>,
    /// Every type: whether the other family may be used when the preferred one has no
    /// address, or (http, tcp, tls) none of its addresses accepts a connection; default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_protocol_fallback: Option<bool>,

    /// Central checks only: when the aggregator alerts on this check (generated alerting
    /// rules `OutpostCheckFailing` and `OutpostCheckDegraded`). Never sent to agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertDef>,
}

/// The severity label of `OutpostCheckFailing` when `alert.severity` is not given.
pub const DEFAULT_ALERT_SEVERITY: &str = "critical";

/// `alert:` of a central check. Region states come from the aggregator (passing, degraded,
/// failing after a confirming re-run, or unknown when cut off); see `docs/CHECKS.md`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertDef {
    /// How many reachable regions must fail (or, for the degraded alert, be degraded) for
    /// the alert to be active: 1 to the number of `locations`. Unknown regions (no live
    /// agent, or stale results) count neither way.
    #[serde(deserialize_with = "de_failing_regions")]
    pub failing_regions: u32,
    /// How long the condition must hold before the alert fires (the rule's `for`); default
    /// 0s, firing at the first evaluation that sees it.
    #[serde(
        rename = "for",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_for"
    )]
    pub for_: Option<Duration>,
    /// The `severity` label of the failing alert; default `critical`. The degraded alert
    /// is always `warning`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_severity"
    )]
    pub severity: Option<String>,
    /// A region whose run passed but took longer than this, ms, is degraded; default: no
    /// degraded state.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_degraded_ms"
    )]
    pub degraded_ms: Option<u64>,
}

/// Deserializes one `alert:` value, naming its key and what it takes when it is not one.
fn de_named<'de, D, T>(d: D, key: &str, takes: &str) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d)
        .map_err(|e| serde::de::Error::custom(format!("alert.{key}: {e}; expected {takes}")))
}

fn de_failing_regions<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    de_named(
        d,
        "failing_regions",
        "a whole number from 1 to the number of locations",
    )
}

fn de_for<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_named(d, "for", "a duration such as \"2m\" or \"30s\"").map(Some)
}

fn de_severity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    de_named(d, "severity", "a label value such as \"critical\"").map(Some)
}

fn de_degraded_ms<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de_named(d, "degraded_ms", "a whole number of milliseconds above 0").map(Some)
}

impl AlertDef {
    /// The severity label of the failing alert.
    pub fn severity(&self) -> &str {
        self.severity.as_deref().unwrap_or(DEFAULT_ALERT_SEVERITY)
    }

    /// The `for` of both alerts.
    pub fn for_duration(&self) -> std::time::Duration {
        self.for_.map(Duration::get).unwrap_or_default()
    }
}

/// An IP address family, as blackbox_exporter's `preferred_ip_protocol` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpProtocol {
    /// IPv4.
    Ip4,
    /// IPv6.
    Ip6,
}

/// TLS options of http, http3, tcp and tls checks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// Accept any certificate (the handshake still has to succeed).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// PEM file of the CAs to trust instead of the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Name to send in SNI and verify the certificate for, instead of the target's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// A status pattern: a code (`200`) or a class (`"2xx"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StatusPattern {
    /// One status code, e.g. `200`.
    Code(u16),
    /// A class written `2xx`.
    Class(String),
}

/// One pattern or a list of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// A single value.
    One(T),
    /// A list of values.
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    /// The values as a slice, one or many.
    pub fn as_slice(&self) -> &[T] {
        match self {
            OneOrMany::One(t) => std::slice::from_ref(t),
            OneOrMany::Many(v) => v,
        }
    }
}

/// Assertions on an HTTP response; all must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpAssert {
    /// Accepted statuses; default `2xx`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<OneOrMany<StatusPattern>>,
    /// Headers that must be present with a value matching the regex.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderAssert>,
    /// The body must contain this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// The body must match this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_regex: Option<String>,
    /// The body must not match this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_not_regex: Option<String>,
    /// JSON path assertions on a JSON body.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub json: Vec<JsonAssert>,
    /// The response (all phases) must take at most this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<Duration>,
}

/// A header that must be present and match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderAssert {
    /// The header name (case-insensitive).
    pub name: String,
    /// A regular expression its value must match.
    pub regex: String,
}

/// `path` must select something (`exists: true`, the default when `equals` is absent),
/// nothing (`exists: false`), or a first value equal to `equals`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonAssert {
    /// A JSONPath into the body, e.g. `$.status`.
    pub path: String,
    /// The value found there must equal this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<serde_json::Value>,
    /// Whether the path must (true) or must not (false) find a value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
}

/// One request of a journey. `${var}` in `url`, `headers` and `body` is replaced by a value
/// captured in an earlier step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Defaults to `step<N>` (N counted from 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The URL; may use `${variables}` captured by earlier steps.
    pub url: String,
    /// HTTP method. Default GET (POST when `body` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Request headers; values may use captured variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Request body; may use captured variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// What the response must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assert: Option<HttpAssert>,
    /// Variable name -> where its value comes from.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capture: BTreeMap<String, Capture>,
}

impl Step {
    /// The step's name, or `step N` (1-based) when it has none.
    pub fn display_name(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("step{}", index + 1))
    }
}

/// Where a captured value comes from: exactly one of a JSON path (first match; strings
/// as they are, other values as JSON), a response header, or a regex over the body whose
/// first group is the value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capture {
    /// A JSONPath into the response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<String>,
    /// A response header name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A regular expression whose first group is captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

impl CheckDef {
    /// The effective timeout: the one given, else the frequency capped at 10 s.
    pub fn timeout(&self) -> std::time::Duration {
        match self.timeout {
            Some(t) => t.get(),
            None => self.frequency.get().min(DEFAULT_TIMEOUT),
        }
    }

    /// Every problem of this definition, each naming the check and the field.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let errs = crate::validate::problems(self);
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }
}

/// The top level of a checks file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChecksFile {
    #[serde(default)]
    checks: Vec<CheckDef>,
}

/// Parses a checks file (`checks:` list at top level) and validates every entry; duplicate
/// names are an error. On error, every problem is listed.
pub fn parse_checks_file(yaml: &str) -> Result<Vec<CheckDef>, Vec<String>> {
    // The parser's message starts with the position and the problem; the source excerpt
    // after it would not survive being prefixed line by line in logs and check-config.
    let file: ChecksFile = serde_saphyr::from_str(yaml).map_err(|e| {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default();
        vec![first.strip_prefix("error: ").unwrap_or(first).to_string()]
    })?;
    let mut errs = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, c) in file.checks.iter().enumerate() {
        if let Err(es) = c.validate() {
            errs.extend(es.into_iter().map(|e| format!("checks[{i}]: {e}")));
        }
        if let Some(first) = seen.insert(c.name.as_str(), i) {
            errs.push(format!(
                "checks[{i}]: check {:?}: name: already used by checks[{first}]; names must be unique",
                c.name
            ));
        }
    }
    if errs.is_empty() {
        Ok(file.checks)
    } else {
        Err(errs)
    }
}
