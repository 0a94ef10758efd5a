//! An Alertmanager configuration file (`alertmanager.yml`), read and validated as
//! Alertmanager 0.25 (and `amtool check-config`) does: `global`, `route`, `inhibit_rules`,
//! `receivers`, `templates`, `time_intervals` (and the older `mute_time_intervals`).
//!
//! Receivers keep their integrations' settings. Webhook, Slack, PagerDuty and email
//! settings are read key by key (unknown keys are errors, as in Alertmanager); the other
//! integrations Alertmanager knows (`opsgenie_configs`, `victorops_configs`, …) are accepted
//! and named by [`Receiver::unsupported`], so a configuration that uses them still loads
//! and the caller can say what will not be sent. Problems use Alertmanager's wording
//! (`undefined receiver "x" used in route`).

use crate::inhibit::{InhibitRule, InhibitRuleConfig};
use crate::route::{Route, RouteConfig};
use crate::timeinterval::TimeIntervals;
use serde::Deserialize;
use serde::de::IgnoredAny;
use std::collections::{BTreeMap, BTreeSet};

/// `global:`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct GlobalConfig {
    /// How long after its last update an alert without `endsAt` is resolved.
    #[serde(default)]
    pub resolve_timeout: Option<String>,
    /// Default SMTP `from` address.
    #[serde(default)]
    pub smtp_from: Option<String>,
    /// Default SMTP server, `host:port`.
    #[serde(default)]
    pub smtp_smarthost: Option<String>,
    /// Default SMTP HELO name.
    #[serde(default)]
    pub smtp_hello: Option<String>,
    /// Default SMTP credentials.
    #[serde(default)]
    pub smtp_auth_username: Option<String>,
    /// See `smtp_auth_username`.
    #[serde(default)]
    pub smtp_auth_password: Option<String>,
    /// See `smtp_auth_username`.
    #[serde(default)]
    pub smtp_auth_password_file: Option<String>,
    /// See `smtp_auth_username`.
    #[serde(default)]
    pub smtp_auth_identity: Option<String>,
    /// See `smtp_auth_username`.
    #[serde(default)]
    pub smtp_auth_secret: Option<String>,
    /// Whether SMTP needs STARTTLS (default true).
    #[serde(default)]
    pub smtp_require_tls: Option<bool>,
    /// Default Slack webhook URL.
    #[serde(default)]
    pub slack_api_url: Option<String>,
    /// File holding the default Slack webhook URL.
    #[serde(default)]
    pub slack_api_url_file: Option<String>,
    /// PagerDuty Events API URL.
    #[serde(default)]
    pub pagerduty_url: Option<String>,
    /// Settings of integrations Outpost does not send to, and the HTTP client's.
    #[serde(flatten)]
    pub other: BTreeMap<String, IgnoredAny>,
}

/// A webhook (`webhook_configs`): Alertmanager's webhook JSON posted to `url`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Notify resolved alerts too (default true).
    #[serde(default)]
    pub send_resolved: Option<bool>,
    /// Where to post.
    #[serde(default)]
    pub url: Option<String>,
    /// File holding the URL.
    #[serde(default)]
    pub url_file: Option<String>,
    /// The most alerts per message (0: all).
    #[serde(default)]
    pub max_alerts: u64,
    /// HTTP client settings (not interpreted here).
    #[serde(default)]
    pub http_config: Option<IgnoredAny>,
}

/// A Slack message field (`slack_configs[].fields`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackField {
    /// The field's title (template, required).
    #[serde(default)]
    pub title: String,
    /// The field's value (template, required).
    #[serde(default)]
    pub value: String,
    /// Shown side by side with other short fields (else the config's `short_fields`).
    #[serde(default)]
    pub short: Option<bool>,
}

/// A confirmation dialog of a Slack action.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfirm {
    /// Dialog text (template, required).
    #[serde(default)]
    pub text: String,
    /// Dialog title (template).
    #[serde(default)]
    pub title: String,
    /// Confirm button text (template).
    #[serde(default)]
    pub ok_text: String,
    /// Dismiss button text (template).
    #[serde(default)]
    pub dismiss_text: String,
}

/// A Slack message button (`slack_configs[].actions`): a link (`url`) or a message
/// action (`name`, `value`, `confirm`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackAction {
    /// `button` (template, required).
    #[serde(default, rename = "type")]
    pub type_: String,
    /// Button text (template, required).
    #[serde(default)]
    pub text: String,
    /// Link (template); when set, `name`, `value` and `confirm` are dropped.
    #[serde(default)]
    pub url: String,
    /// `default`, `primary` or `danger` (template).
    #[serde(default)]
    pub style: String,
    /// Action name (template).
    #[serde(default)]
    pub name: String,
    /// Action value (template).
    #[serde(default)]
    pub value: String,
    /// Confirmation dialog.
    #[serde(default)]
    pub confirm: Option<SlackConfirm>,
}

/// A Slack message (`slack_configs`). Text settings are templates; an absent one takes
/// Alertmanager 0.25's default (see [`crate::payload::slack_message`]).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// Notify resolved alerts too (default false).
    #[serde(default)]
    pub send_resolved: Option<bool>,
    /// Incoming webhook URL (else the global one).
    #[serde(default)]
    pub api_url: Option<String>,
    /// File holding it.
    #[serde(default)]
    pub api_url_file: Option<String>,
    /// Channel or user.
    #[serde(default)]
    pub channel: Option<String>,
    /// Message fields (templates).
    #[serde(default)]
    pub username: Option<String>,
    /// See `username`.
    #[serde(default)]
    pub title: Option<String>,
    /// See `username`.
    #[serde(default)]
    pub title_link: Option<String>,
    /// See `username`.
    #[serde(default)]
    pub text: Option<String>,
    /// See `username`.
    #[serde(default)]
    pub color: Option<String>,
    /// See `username`.
    #[serde(default)]
    pub pretext: Option<String>,
    /// See `username`.
    #[serde(default)]
    pub footer: Option<String>,
    /// See `username`.
    #[serde(default)]
    pub fallback: Option<String>,
    /// See `username`.
    #[serde(default)]
    pub callback_id: Option<String>,
    /// See `username`.
    #[serde(default)]
    pub icon_emoji: Option<String>,
    /// See `username`.
    #[serde(default)]
    pub icon_url: Option<String>,
    /// See `username`.
    #[serde(default)]
    pub image_url: Option<String>,
    /// See `username`.
    #[serde(default)]
    pub thumb_url: Option<String>,
    /// Attachment fields.
    #[serde(default)]
    pub fields: Vec<SlackField>,
    /// Whether fields without `short` are short (default false).
    #[serde(default)]
    pub short_fields: bool,
    /// Slack's `link_names` (default false).
    #[serde(default)]
    pub link_names: bool,
    /// Which attachment fields Slack renders as markdown (default fallback, pretext, text).
    #[serde(default)]
    pub mrkdwn_in: Vec<String>,
    /// Buttons.
    #[serde(default)]
    pub actions: Vec<SlackAction>,
    /// HTTP client settings (not interpreted here).
    #[serde(default)]
    pub http_config: Option<IgnoredAny>,
}

/// A PagerDuty image (`pagerduty_configs[].images`), templates.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerdutyImage {
    /// Image URL; an image whose `src` expands to nothing is left out.
    #[serde(default)]
    pub src: String,
    /// Alternative text.
    #[serde(default)]
    pub alt: String,
    /// Link.
    #[serde(default)]
    pub href: String,
}

/// A PagerDuty link (`pagerduty_configs[].links`), templates.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerdutyLink {
    /// Target; a link whose `href` expands to nothing is left out.
    #[serde(default)]
    pub href: String,
    /// Text.
    #[serde(default)]
    pub text: String,
}

/// A PagerDuty event (`pagerduty_configs`), Events API v2 with `routing_key`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerdutyConfig {
    /// Notify resolved alerts too (default true).
    #[serde(default)]
    pub send_resolved: Option<bool>,
    /// Events API v2 integration key.
    #[serde(default)]
    pub routing_key: Option<String>,
    /// File holding it.
    #[serde(default)]
    pub routing_key_file: Option<String>,
    /// Events API v1 key.
    #[serde(default)]
    pub service_key: Option<String>,
    /// File holding it.
    #[serde(default)]
    pub service_key_file: Option<String>,
    /// The events endpoint (else the global one).
    #[serde(default)]
    pub url: Option<String>,
    /// Event fields (templates).
    #[serde(default)]
    pub client: Option<String>,
    /// See `client`.
    #[serde(default)]
    pub client_url: Option<String>,
    /// See `client`.
    #[serde(default)]
    pub description: Option<String>,
    /// See `client`.
    #[serde(default)]
    pub severity: Option<String>,
    /// See `client`.
    #[serde(default)]
    pub class: Option<String>,
    /// See `client`.
    #[serde(default)]
    pub component: Option<String>,
    /// See `client`.
    #[serde(default)]
    pub group: Option<String>,
    /// See `client` (default: the `client` template).
    #[serde(default)]
    pub source: Option<String>,
    /// Custom details (templates); Alertmanager's `firing`, `resolved`, `num_firing` and
    /// `num_resolved` are added unless given.
    #[serde(default)]
    pub details: Option<BTreeMap<String, String>>,
    /// Images.
    #[serde(default)]
    pub images: Vec<PagerdutyImage>,
    /// Links.
    #[serde(default)]
    pub links: Vec<PagerdutyLink>,
    /// HTTP client settings (not interpreted here).
    #[serde(default)]
    pub http_config: Option<IgnoredAny>,
}

/// An email (`email_configs`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// Notify resolved alerts too (default false).
    #[serde(default)]
    pub send_resolved: Option<bool>,
    /// Recipients.
    #[serde(default)]
    pub to: Option<String>,
    /// Sender (else the global one).
    #[serde(default)]
    pub from: Option<String>,
    /// SMTP server (else the global one).
    #[serde(default)]
    pub smarthost: Option<String>,
    /// HELO name.
    #[serde(default)]
    pub hello: Option<String>,
    /// SMTP credentials.
    #[serde(default)]
    pub auth_username: Option<String>,
    /// See `auth_username`.
    #[serde(default)]
    pub auth_password: Option<String>,
    /// See `auth_username`.
    #[serde(default)]
    pub auth_password_file: Option<String>,
    /// See `auth_username`.
    #[serde(default)]
    pub auth_secret: Option<String>,
    /// See `auth_username`.
    #[serde(default)]
    pub auth_identity: Option<String>,
    /// Extra headers (templates).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Bodies (templates).
    #[serde(default)]
    pub html: Option<String>,
    /// See `html`.
    #[serde(default)]
    pub text: Option<String>,
    /// STARTTLS required (else the global setting).
    #[serde(default)]
    pub require_tls: Option<bool>,
    /// TLS settings, not interpreted here.
    #[serde(default)]
    pub tls_config: Option<IgnoredAny>,
}

/// The integrations Alertmanager 0.25 knows that Outpost does not send to.
pub const UNSUPPORTED_INTEGRATIONS: &[&str] = &[
    "opsgenie_configs",
    "victorops_configs",
    "pushover_configs",
    "wechat_configs",
    "sns_configs",
    "telegram_configs",
    "webex_configs",
    "discord_configs",
    "msteams_configs",
];

/// A receiver: a name and its integrations.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Receiver {
    /// Unique name routes refer to.
    pub name: String,
    /// Webhooks.
    #[serde(default)]
    pub webhook_configs: Vec<WebhookConfig>,
    /// Slack messages.
    #[serde(default)]
    pub slack_configs: Vec<SlackConfig>,
    /// PagerDuty events.
    #[serde(default)]
    pub pagerduty_configs: Vec<PagerdutyConfig>,
    /// Emails.
    #[serde(default)]
    pub email_configs: Vec<EmailConfig>,
    /// Anything else: the integrations of [`UNSUPPORTED_INTEGRATIONS`], or unknown keys.
    #[serde(flatten)]
    pub other: BTreeMap<String, IgnoredAny>,
}

impl Receiver {
    /// The integrations this receiver uses that Outpost does not send to.
    pub fn unsupported(&self) -> Vec<&str> {
        self.other
            .keys()
            .map(String::as_str)
            .filter(|k| UNSUPPORTED_INTEGRATIONS.contains(k))
            .collect()
    }
}

pub use crate::timeinterval::NamedTimeInterval;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    global: Option<GlobalConfig>,
    #[serde(default)]
    route: Option<RouteConfig>,
    #[serde(default)]
    inhibit_rules: Vec<InhibitRuleConfig>,
    #[serde(default)]
    receivers: Vec<Receiver>,
    #[serde(default)]
    templates: Vec<String>,
    #[serde(default)]
    time_intervals: Vec<NamedTimeInterval>,
    #[serde(default)]
    mute_time_intervals: Vec<NamedTimeInterval>,
}

/// A loaded Alertmanager configuration.
#[derive(Clone, Debug)]
pub struct AlertmanagerConfig {
    /// `global:` (defaults when absent).
    pub global: GlobalConfig,
    /// The routing tree.
    pub route: Route,
    /// Inhibition rules.
    pub inhibit_rules: Vec<InhibitRule>,
    /// Receivers by name.
    pub receivers: BTreeMap<String, Receiver>,
    /// Template file patterns.
    pub templates: Vec<String>,
    /// Names of the time intervals defined.
    pub time_intervals: BTreeSet<String>,
    /// The time intervals by name (`time_intervals` and `mute_time_intervals`).
    pub intervals: TimeIntervals,
}

fn route_names<'a>(r: &'a RouteConfig, out: &mut Vec<(&'a str, &'a [String], &'a [String])>) {
    out.push((
        r.receiver.as_deref().unwrap_or(""),
        &r.mute_time_intervals,
        &r.active_time_intervals,
    ));
    for c in &r.routes {
        route_names(c, out);
    }
}

/// Go's `textproto.CanonicalMIMEHeaderKey`: the first letter and every letter after a
/// hyphen upper-cased, the rest lower-cased (a key with a space or other invalid byte is
/// left as it is).
pub fn canonical_header(k: &str) -> String {
    if !k
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        return k.to_string();
    }
    let mut upper = true;
    k.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// Reads and validates an Alertmanager configuration.
///
/// # Errors
/// Every problem found, in Alertmanager's words (the YAML error alone when the file does
/// not parse).
pub fn parse_alertmanager_config(text: &str) -> Result<AlertmanagerConfig, Vec<String>> {
    let f: FileConfig = serde_saphyr::from_str(text).map_err(|e| vec![format!("yaml: {e}")])?;
    let mut problems = Vec::new();
    let global = f.global.unwrap_or_default();
    if global.slack_api_url.is_some() && global.slack_api_url_file.is_some() {
        problems
            .push("at most one of slack_api_url & slack_api_url_file must be configured".into());
    }
    if global.smtp_auth_password.is_some() && global.smtp_auth_password_file.is_some() {
        problems.push(
            "at most one of smtp_auth_password & smtp_auth_password_file must be configured".into(),
        );
    }
    let mut receivers = BTreeMap::new();
    for r in &f.receivers {
        if r.name.is_empty() {
            problems.push("missing name in receiver".to_string());
        }
        if receivers.insert(r.name.clone(), r.clone()).is_some() {
            problems.push(format!(
                "notification config name {:?} is not unique",
                r.name
            ));
        }
        for k in r.other.keys() {
            if !UNSUPPORTED_INTEGRATIONS.contains(&k.as_str()) {
                problems.push(format!("receiver {:?}: field {k} not found", r.name));
            }
        }
        for w in &r.webhook_configs {
            if w.url.is_none() && w.url_file.is_none() {
                problems.push("missing URL in webhook config".into());
            }
        }
        for s in &r.slack_configs {
            if s.api_url.is_some() && s.api_url_file.is_some() {
                problems.push("at most one of api_url & api_url_file must be configured".into());
            }
            for f in &s.fields {
                if f.title.is_empty() {
                    problems.push("missing title in Slack field configuration".into());
                }
                if f.value.is_empty() {
                    problems.push("missing value in Slack field configuration".into());
                }
            }
            for a in &s.actions {
                if a.type_.is_empty() {
                    problems.push("missing type in Slack action configuration".into());
                }
                if a.text.is_empty() {
                    problems.push("missing text in Slack action configuration".into());
                }
                if a.url.is_empty() && a.name.is_empty() {
                    problems.push("missing name or url in Slack action configuration".into());
                }
                if a.confirm.as_ref().is_some_and(|c| c.text.is_empty()) {
                    problems.push("missing text in Slack confirmation configuration".into());
                }
            }
            if s.api_url.is_none()
                && s.api_url_file.is_none()
                && global.slack_api_url.is_none()
                && global.slack_api_url_file.is_none()
            {
                problems.push("no global Slack API URL set either inline or in a file".into());
            }
        }
        for p in &r.pagerduty_configs {
            if p.routing_key.is_none()
                && p.routing_key_file.is_none()
                && p.service_key.is_none()
                && p.service_key_file.is_none()
            {
                problems.push("missing service or routing key in PagerDuty config".into());
            }
            if p.routing_key.is_some() && p.routing_key_file.is_some() {
                problems.push(
                    "at most one of routing_key & routing_key_file must be configured".into(),
                );
            }
            if p.service_key.is_some() && p.service_key_file.is_some() {
                problems.push(
                    "at most one of service_key & service_key_file must be configured".into(),
                );
            }
        }
        for e in &r.email_configs {
            if e.to.as_deref().unwrap_or("").is_empty() {
                problems.push("missing to address in email config".into());
            }
            if e.smarthost.is_none() && global.smtp_smarthost.is_none() {
                problems.push("no global SMTP smarthost set".into());
            }
            if e.from.is_none() && global.smtp_from.is_none() {
                problems.push("no global SMTP from set".into());
            }
            let mut seen = BTreeSet::new();
            for h in e.headers.keys() {
                let canonical = canonical_header(h);
                if !seen.insert(canonical.clone()) {
                    problems.push(format!("duplicate header {canonical:?} in email config"));
                }
            }
        }
    }
    let mut time_intervals = BTreeSet::new();
    let mut intervals = TimeIntervals::new();
    for t in f.mute_time_intervals.iter().chain(&f.time_intervals) {
        if t.name.is_empty() {
            problems.push("missing name in time interval".into());
        }
        if !time_intervals.insert(t.name.clone()) {
            problems.push(format!("time interval {:?} is not unique", t.name));
        }
        intervals.insert(t.name.clone(), t.time_intervals.clone());
    }
    let route = match &f.route {
        None => {
            problems.push("no routes provided".into());
            None
        }
        Some(rc) => {
            if !rc.mute_time_intervals.is_empty() {
                problems.push("root route must not have any mute time intervals".into());
            }
            if !rc.active_time_intervals.is_empty() {
                problems.push("root route must not have any active time intervals".into());
            }
            let mut names = Vec::new();
            route_names(rc, &mut names);
            for (recv, mute, active) in names {
                if !recv.is_empty() && !receivers.contains_key(recv) {
                    problems.push(format!("undefined receiver {recv:?} used in route"));
                }
                for t in mute.iter().chain(active) {
                    if !time_intervals.contains(t) {
                        problems.push(format!("undefined time interval {t:?} used in route"));
                    }
                }
            }
            match Route::new_root(rc) {
                Ok(r) => Some(r),
                Err(ps) => {
                    problems.extend(ps);
                    None
                }
            }
        }
    };
    let mut inhibit_rules = Vec::new();
    for (i, c) in f.inhibit_rules.iter().enumerate() {
        match InhibitRule::new(c) {
            Ok(r) => inhibit_rules.push(r),
            Err(e) => problems.push(format!("inhibit_rules[{i}]: {e}")),
        }
    }
    match route {
        Some(route) if problems.is_empty() => Ok(AlertmanagerConfig {
            global,
            route,
            inhibit_rules,
            receivers,
            templates: f.templates,
            time_intervals,
            intervals,
        }),
        _ => Err(problems),
    }
}
