//! What each integration of an Alertmanager receiver sends for one notification, built
//! as Alertmanager 0.25's notifiers build it, without sending: the webhook JSON
//! (`notify/webhook`), the Slack incoming-webhook message (`notify/slack`), the PagerDuty
//! event (`notify/pagerduty`, Events API v2 with `routing_key`, v1 with `service_key`)
//! and the email (`notify/email`: envelope, headers, text and HTML parts).
//!
//! Entry point: [`build`] with a [`Context`] (configuration, template set, external URL,
//! the alerts' source links, and how to read `*_file` settings), an [`Integration`] of a
//! receiver and a [`Notification`] from the dispatcher. Templates in settings are
//! expanded in the context's [`Templates`]; settings left out take Alertmanager's
//! defaults.

use crate::amconfig::{
    AlertmanagerConfig, EmailConfig, PagerdutyConfig, Receiver, SlackConfig, WebhookConfig,
    canonical_header,
};
use crate::amtemplate::{NotificationData, Templates};
use crate::dispatch::{DispatchedAlert, Notification};
use crate::template::TemplateError;
use crate::template::gofmt::format_go_layout;
use crate::webhook::{NotifiedAlert, webhook_message};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// Alertmanager's default PagerDuty Events API v2 URL (`global.pagerduty_url`).
pub const DEFAULT_PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// The PagerDuty Events API v1 URL Alertmanager posts `service_key` events to.
pub const PAGERDUTY_V1_URL: &str =
    "https://events.pagerduty.com/generic/2010-04-15/create_event.json";
/// The most runes of a Slack title, a PagerDuty summary or v1 description.
pub const MAX_TITLE_RUNES: usize = 1024;
/// The largest PagerDuty event, bytes; a larger one loses its custom details.
pub const MAX_PAGERDUTY_EVENT_BYTES: usize = 512_000;

/// Everything a payload is built from besides the integration and the notification.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// The loaded configuration (globals: Slack URL, PagerDuty URL, SMTP defaults).
    pub config: &'a AlertmanagerConfig,
    /// The template set (defaults and the `templates:` files).
    pub templates: &'a Templates,
    /// The URL the aggregator's alerts are reached under (`.ExternalURL`).
    pub external_url: &'a str,
    /// Each alert's source link (`.GeneratorURL`).
    pub generator_url: &'a dyn Fn(&DispatchedAlert) -> String,
    /// Reads a `*_file` setting's file (`api_url_file`, `routing_key_file`, …); the
    /// content is trimmed of surrounding white space, as Alertmanager does.
    pub read_file: &'a dyn Fn(&str) -> Result<String, String>,
}

/// One integration of a receiver.
#[derive(Clone, Copy, Debug)]
pub enum Integration<'a> {
    /// `webhook_configs[i]`.
    Webhook(&'a WebhookConfig),
    /// `slack_configs[i]`.
    Slack(&'a SlackConfig),
    /// `pagerduty_configs[i]`.
    Pagerduty(&'a PagerdutyConfig),
    /// `email_configs[i]`.
    Email(&'a EmailConfig),
}

impl Integration<'_> {
    /// Alertmanager's name of the integration kind: `webhook`, `email`, `pagerduty`,
    /// `slack` (as in its logs and notification log, `slack[0]`).
    pub fn kind(&self) -> &'static str {
        match self {
            Integration::Webhook(_) => "webhook",
            Integration::Email(_) => "email",
            Integration::Pagerduty(_) => "pagerduty",
            Integration::Slack(_) => "slack",
        }
    }

    /// Whether resolved alerts are sent: the setting's `send_resolved`, else
    /// Alertmanager 0.25's default (webhook and PagerDuty yes, Slack and email no).
    pub fn send_resolved(&self) -> bool {
        match self {
            Integration::Webhook(c) => c.send_resolved.unwrap_or(true),
            Integration::Pagerduty(c) => c.send_resolved.unwrap_or(true),
            Integration::Slack(c) => c.send_resolved.unwrap_or(false),
            Integration::Email(c) => c.send_resolved.unwrap_or(false),
        }
    }
}

/// A receiver's integrations in the order Alertmanager 0.25 builds them (webhooks,
/// emails, PagerDuty, Slack), each with its index among those of its kind. Alertmanager
/// keeps one notification log entry per group and integration (`slack[1]`), so that
/// `send_resolved` and deduplication apply per integration.
pub fn integrations(r: &Receiver) -> Vec<(usize, Integration<'_>)> {
    let mut out = Vec::new();
    out.extend(
        r.webhook_configs
            .iter()
            .map(Integration::Webhook)
            .enumerate(),
    );
    out.extend(r.email_configs.iter().map(Integration::Email).enumerate());
    out.extend(
        r.pagerduty_configs
            .iter()
            .map(Integration::Pagerduty)
            .enumerate(),
    );
    out.extend(r.slack_configs.iter().map(Integration::Slack).enumerate());
    out
}

/// An HTTP POST to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpPost {
    /// Where.
    pub url: String,
    /// Headers besides those of the HTTP client (`Content-Type`).
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: String,
}

/// An email to send through SMTP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmailMessage {
    /// The SMTP server, `host:port`.
    pub smarthost: String,
    /// The HELO name (default `localhost`).
    pub hello: String,
    /// Whether STARTTLS is required (default true).
    pub require_tls: bool,
    /// The envelope sender (the one address of `from`).
    pub envelope_from: String,
    /// The envelope recipients (the addresses of `to`).
    pub envelope_to: Vec<String>,
    /// SMTP AUTH user name (empty: no authentication).
    pub auth_username: String,
    /// The headers from `headers` (with `Subject`, `To` and `From` defaults), expanded,
    /// names canonical (`Subject`), values Q-encoded where needed, sorted by name.
    pub headers: Vec<(String, String)>,
    /// The text part, when `text` is set.
    pub text: Option<String>,
    /// The HTML part, when `html` is set (default: `email.default.html`).
    pub html: Option<String>,
}

impl EmailMessage {
    /// The message as Alertmanager writes it after `DATA`: the headers, then
    /// `Message-Id` (unless among the headers), `Date`, the multipart `Content-Type`
    /// and `MIME-Version`, then the text and HTML parts in quoted-printable, lines ended
    /// by CRLF. `date` is RFC 1123 with numeric zone (`Mon, 02 Jan 2006 15:04:05 -0700`),
    /// `message_id` as `<unique@host>`, `boundary` a MIME boundary not in the parts.
    pub fn to_mime(&self, date: &str, message_id: &str, boundary: &str) -> String {
        let mut out = String::new();
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        if !self.headers.iter().any(|(k, _)| k == "Message-Id") {
            out.push_str(&format!("Message-Id: {message_id}\r\n"));
        }
        out.push_str(&format!("Date: {date}\r\n"));
        out.push_str(&format!(
            "Content-Type: multipart/alternative;  boundary={boundary}\r\n"
        ));
        out.push_str("MIME-Version: 1.0\r\n\r\n");
        for (ct, body) in [("text/plain", &self.text), ("text/html", &self.html)] {
            if let Some(body) = body {
                out.push_str(&format!("--{boundary}\r\n"));
                out.push_str("Content-Transfer-Encoding: quoted-printable\r\n");
                out.push_str(&format!("Content-Type: {ct}; charset=UTF-8\r\n\r\n"));
                out.push_str(&quoted_printable(body));
                out.push_str("\r\n");
            }
        }
        out.push_str(&format!("--{boundary}--\r\n"));
        out
    }
}

/// What an integration sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// A JSON POST (webhook, Slack, PagerDuty).
    Http(HttpPost),
    /// An email.
    Email(EmailMessage),
}

/// Why a payload could not be built; Alertmanager gives up on such a notification
/// without retrying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayloadError {
    /// A template failed: what Alertmanager says first (empty for Slack), then Go's
    /// error; displayed as Alertmanager words it (`"d": failed to template "...": ...`).
    Template(String, TemplateError),
    /// A `*_file` setting could not be read.
    File(String),
    /// A setting is unusable (`routing key cannot be empty`, an address list that does
    /// not parse, …).
    Invalid(String),
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadError::Template(what, e) if what.is_empty() => write!(f, "{e}"),
            PayloadError::Template(what, e) => write!(f, "{what}: {e}"),
            PayloadError::File(e) | PayloadError::Invalid(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for PayloadError {}

/// Builds what `integration` sends for `n` (see the module documentation).
///
/// # Errors
/// [`PayloadError`]: a template that fails, a file that cannot be read, a setting that
/// is unusable.
pub fn build(
    ctx: &Context<'_>,
    integration: Integration<'_>,
    n: &Notification,
) -> Result<Payload, PayloadError> {
    let data = NotificationData::new(n, ctx.external_url, ctx.generator_url);
    match integration {
        Integration::Webhook(c) => webhook_post(ctx, c, n).map(Payload::Http),
        Integration::Slack(c) => slack_message(ctx, c, &data).map(Payload::Http),
        Integration::Pagerduty(c) => {
            pagerduty_event(ctx, c, &data, &n.group_key).map(Payload::Http)
        }
        Integration::Email(c) => email_message(ctx, c, &data).map(Payload::Email),
    }
}

/// Go's `time.RFC3339Nano` of a time in ms.
fn rfc3339(ms: i64) -> String {
    format_go_layout(
        ms.saturating_mul(1_000_000),
        "2006-01-02T15:04:05.999999999Z07:00",
    )
}

fn read(ctx: &Context<'_>, path: &str) -> Result<String, PayloadError> {
    (ctx.read_file)(path)
        .map(|s| s.trim().to_string())
        .map_err(PayloadError::File)
}

fn json_post(url: String, body: &impl Serialize) -> Result<HttpPost, PayloadError> {
    let body = serde_json::to_string(body)
        .map_err(|e| PayloadError::Invalid(format!("encoding JSON: {e}")))?;
    Ok(HttpPost {
        url,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body,
    })
}

/// The webhook POST (Alertmanager's webhook JSON, see [`crate::webhook`]).
///
/// # Errors
/// `url_file` unreadable; no URL.
pub fn webhook_post(
    ctx: &Context<'_>,
    c: &WebhookConfig,
    n: &Notification,
) -> Result<HttpPost, PayloadError> {
    let url = match (&c.url, &c.url_file) {
        (Some(u), _) => u.clone(),
        (None, Some(f)) => read(ctx, f)?,
        (None, None) => {
            return Err(PayloadError::Invalid(
                "missing URL in webhook config".into(),
            ));
        }
    };
    let alerts: Vec<NotifiedAlert> = n
        .alerts
        .iter()
        .map(|a| NotifiedAlert {
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            starts_at: rfc3339(a.starts_at_ms),
            ends_at: rfc3339(a.ends_at_ms),
            generator_url: (ctx.generator_url)(a),
            resolved: a.resolved(n.at_ms),
        })
        .collect();
    Ok(HttpPost {
        url,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: webhook_message(
            &n.receiver,
            &n.route_key,
            &n.group_labels,
            &alerts,
            ctx.external_url,
            usize::try_from(c.max_alerts).unwrap_or(usize::MAX),
        ),
    })
}

/// Expands the templates of one integration's settings; a failure carries the words
/// Alertmanager's notifier puts before the template error (`context`).
struct Expander<'a> {
    templates: &'a Templates,
    data: &'a NotificationData,
    context: &'static str,
}

impl Expander<'_> {
    /// Expands `text` (the setting named `_field`, for reading).
    fn text(&self, _field: &str, text: &str) -> Result<String, PayloadError> {
        self.text_as(self.context, text)
    }

    /// Expands `text`, a failure introduced by `what`.
    fn text_as(&self, what: &str, text: &str) -> Result<String, PayloadError> {
        self.templates
            .execute_text(text, self.data)
            .map_err(|e| PayloadError::Template(what.to_string(), e))
    }

    fn opt(
        &self,
        field: &str,
        text: &Option<String>,
        default: &str,
    ) -> Result<String, PayloadError> {
        self.text(field, text.as_deref().unwrap_or(default))
    }
}

/// Alertmanager's `TruncateInRunes`: at most `n` runes, the last one `…` when cut.
pub fn truncate_runes(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    if n <= 3 {
        return s.chars().take(n).collect();
    }
    let mut out: String = s.chars().take(n - 1).collect();
    out.push('…');
    out
}

#[derive(Serialize)]
struct SlackFieldJson {
    #[serde(skip_serializing_if = "String::is_empty")]
    title: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    value: String,
    short: bool,
}

#[derive(Serialize)]
struct SlackConfirmJson {
    #[serde(skip_serializing_if = "String::is_empty")]
    text: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    title: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    ok_text: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    dismiss_text: String,
}

#[derive(Serialize)]
struct SlackActionJson {
    #[serde(rename = "type", skip_serializing_if = "String::is_empty")]
    type_: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    text: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    url: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    style: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    confirm: Option<SlackConfirmJson>,
}

#[derive(Serialize)]
struct SlackAttachmentJson {
    #[serde(skip_serializing_if = "String::is_empty")]
    title: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    title_link: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pretext: String,
    text: String,
    fallback: String,
    callback_id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    fields: Vec<SlackFieldJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    actions: Vec<SlackActionJson>,
    #[serde(skip_serializing_if = "String::is_empty")]
    image_url: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    thumb_url: String,
    footer: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    color: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mrkdwn_in: Vec<String>,
}

#[derive(Serialize)]
struct SlackMessageJson {
    #[serde(skip_serializing_if = "String::is_empty")]
    channel: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    username: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    icon_emoji: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    icon_url: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    link_names: bool,
    attachments: Vec<SlackAttachmentJson>,
}

/// The Slack incoming-webhook POST, as Alertmanager 0.25's `slack` notifier builds it: one
/// attachment; unset texts take the defaults (`slack.default.*`, color `danger` while
/// firing else `good`), the title cut to [`MAX_TITLE_RUNES`], `mrkdwn_in` by default
/// `fallback, pretext, text`; the URL is `api_url`, `api_url_file` or the global one.
///
/// # Errors
/// A template that fails; an unreadable URL file; no URL.
pub fn slack_message(
    ctx: &Context<'_>,
    c: &SlackConfig,
    data: &NotificationData,
) -> Result<HttpPost, PayloadError> {
    let x = Expander {
        templates: ctx.templates,
        data,
        context: "",
    };
    let d = |name: &str| format!("{{{{ template \"slack.default.{name}\" . }}}}");
    let mut fields = Vec::with_capacity(c.fields.len());
    for f in &c.fields {
        fields.push(SlackFieldJson {
            title: x.text("fields.title", &f.title)?,
            value: x.text("fields.value", &f.value)?,
            short: f.short.unwrap_or(c.short_fields),
        });
    }
    let mut actions = Vec::with_capacity(c.actions.len());
    for a in &c.actions {
        // A link button drops the message-action settings, as Alertmanager's config does.
        let link = !a.url.is_empty();
        let confirm = match (&a.confirm, link) {
            (Some(cf), false) => Some(SlackConfirmJson {
                text: x.text("actions.confirm.text", &cf.text)?,
                title: x.text("actions.confirm.title", &cf.title)?,
                ok_text: x.text("actions.confirm.ok_text", &cf.ok_text)?,
                dismiss_text: x.text("actions.confirm.dismiss_text", &cf.dismiss_text)?,
            }),
            _ => None,
        };
        actions.push(SlackActionJson {
            type_: x.text("actions.type", &a.type_)?,
            text: x.text("actions.text", &a.text)?,
            url: x.text("actions.url", &a.url)?,
            style: x.text("actions.style", &a.style)?,
            name: if link {
                String::new()
            } else {
                x.text("actions.name", &a.name)?
            },
            value: if link {
                String::new()
            } else {
                x.text("actions.value", &a.value)?
            },
            confirm,
        });
    }
    let attachment = SlackAttachmentJson {
        title: truncate_runes(&x.opt("title", &c.title, &d("title"))?, MAX_TITLE_RUNES),
        title_link: x.opt("title_link", &c.title_link, &d("titlelink"))?,
        pretext: x.opt("pretext", &c.pretext, &d("pretext"))?,
        text: x.opt("text", &c.text, &d("text"))?,
        fallback: x.opt("fallback", &c.fallback, &d("fallback"))?,
        callback_id: x.opt("callback_id", &c.callback_id, &d("callbackid"))?,
        fields,
        actions,
        image_url: x.opt("image_url", &c.image_url, "")?,
        thumb_url: x.opt("thumb_url", &c.thumb_url, "")?,
        footer: x.opt("footer", &c.footer, &d("footer"))?,
        color: x.opt(
            "color",
            &c.color,
            "{{ if .Alerts.Firing }}danger{{ else }}good{{ end }}",
        )?,
        mrkdwn_in: if c.mrkdwn_in.is_empty() {
            vec!["fallback".into(), "pretext".into(), "text".into()]
        } else {
            c.mrkdwn_in.clone()
        },
    };
    let msg = SlackMessageJson {
        channel: x.opt("channel", &c.channel, "")?,
        username: x.opt("username", &c.username, &d("username"))?,
        icon_emoji: x.opt("icon_emoji", &c.icon_emoji, &d("iconemoji"))?,
        icon_url: x.opt("icon_url", &c.icon_url, &d("iconurl"))?,
        link_names: c.link_names,
        attachments: vec![attachment],
    };
    let g = &ctx.config.global;
    let url = match (
        &c.api_url,
        &c.api_url_file,
        &g.slack_api_url,
        &g.slack_api_url_file,
    ) {
        (Some(u), ..) => u.clone(),
        (None, Some(f), ..) => read(ctx, f)?,
        (None, None, Some(u), _) => u.clone(),
        (None, None, None, Some(f)) => read(ctx, f)?,
        _ => {
            return Err(PayloadError::Invalid(
                "no global Slack API URL set either inline or in a file".into(),
            ));
        }
    };
    json_post(url, &msg)
}

#[derive(Serialize)]
struct PagerdutyImageJson {
    src: String,
    alt: String,
    href: String,
}

#[derive(Serialize)]
struct PagerdutyLinkJson {
    href: String,
    text: String,
}

#[derive(Serialize)]
struct PagerdutyPayloadJson {
    summary: String,
    source: String,
    severity: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    class: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    component: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    group: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    custom_details: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct PagerdutyMessageJson {
    #[serde(skip_serializing_if = "String::is_empty")]
    routing_key: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    service_key: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    dedup_key: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    incident_key: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    event_type: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    description: String,
    event_action: String,
    payload: Option<PagerdutyPayloadJson>,
    #[serde(skip_serializing_if = "String::is_empty")]
    client: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    client_url: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    details: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    images: Vec<PagerdutyImageJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    links: Vec<PagerdutyLinkJson>,
}

/// Alertmanager's PagerDuty deduplication key: the SHA-256 of the group key, in hex.
pub fn dedup_key(group_key: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(group_key.as_bytes());
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// The custom details a PagerDuty config sends: its `details`, plus Alertmanager's four
/// defaults (`firing`, `resolved`, `num_firing`, `num_resolved`) where not given.
fn pagerduty_details(c: &PagerdutyConfig) -> BTreeMap<String, String> {
    let mut d = c.details.clone().unwrap_or_default();
    for (k, v) in [
        (
            "firing",
            r#"{{ template "pagerduty.default.instances" .Alerts.Firing }}"#,
        ),
        (
            "resolved",
            r#"{{ template "pagerduty.default.instances" .Alerts.Resolved }}"#,
        ),
        ("num_firing", "{{ len .Alerts.Firing }}"),
        ("num_resolved", "{{ len .Alerts.Resolved }}"),
    ] {
        d.entry(k.to_string()).or_insert_with(|| v.to_string());
    }
    d
}

/// The PagerDuty event POST, as Alertmanager 0.25's `pagerduty` notifier builds it:
/// `trigger` while any alert fires, else `resolve`; `dedup_key` (v1: `incident_key`) is
/// [`dedup_key`] of `group_key`; unset texts take the defaults (`pagerduty.default.*`,
/// severity `error`, source = the client template); the summary cut to
/// [`MAX_TITLE_RUNES`]; images without `src` and links without `href` left out; an event
/// over [`MAX_PAGERDUTY_EVENT_BYTES`] has its custom details replaced by an `error`
/// entry. With `routing_key` (Events API v2) it goes to `url` or the global
/// `pagerduty_url`; with `service_key` (v1) to [`PAGERDUTY_V1_URL`].
///
/// # Errors
/// A template that fails; an unreadable key file; a key that expands to nothing.
pub fn pagerduty_event(
    ctx: &Context<'_>,
    c: &PagerdutyConfig,
    data: &NotificationData,
    group_key: &str,
) -> Result<HttpPost, PayloadError> {
    let v1 = c.routing_key.is_none()
        && c.routing_key_file.is_none()
        && (c.service_key.is_some() || c.service_key_file.is_some());
    let x = Expander {
        templates: ctx.templates,
        data,
        context: if v1 {
            "failed to template PagerDuty v1 message"
        } else {
            "failed to template PagerDuty v2 message"
        },
    };
    let trigger = data.firing();
    let mut details = BTreeMap::new();
    for (k, v) in pagerduty_details(c) {
        let e = x.text_as(&format!("{k:?}: failed to template {v:?}"), &v)?;
        details.insert(k, e);
    }
    let client_t = c
        .client
        .clone()
        .unwrap_or_else(|| r#"{{ template "pagerduty.default.client" . }}"#.into());
    let client_url_t = c
        .client_url
        .clone()
        .unwrap_or_else(|| r#"{{ template "pagerduty.default.clientURL" . }}"#.into());
    let description_t = c
        .description
        .clone()
        .unwrap_or_else(|| r#"{{ template "pagerduty.default.description" .}}"#.into());
    let mut msg = if v1 {
        let key = match (&c.service_key, &c.service_key_file) {
            (Some(k), _) => k.clone(),
            (None, Some(f)) => read(ctx, f)?,
            _ => String::new(),
        };
        let key = x.text("service_key", &key)?;
        if key.is_empty() {
            return Err(PayloadError::Invalid("service key cannot be empty".into()));
        }
        PagerdutyMessageJson {
            routing_key: String::new(),
            service_key: key,
            dedup_key: String::new(),
            incident_key: dedup_key(group_key),
            event_type: if trigger { "trigger" } else { "resolve" }.into(),
            description: truncate_runes(&x.text("description", &description_t)?, MAX_TITLE_RUNES),
            event_action: String::new(),
            payload: None,
            client: if trigger {
                x.text("client", &client_t)?
            } else {
                String::new()
            },
            client_url: if trigger {
                x.text("client_url", &client_url_t)?
            } else {
                String::new()
            },
            details,
            images: Vec::new(),
            links: Vec::new(),
        }
    } else {
        let key = match (&c.routing_key, &c.routing_key_file) {
            (Some(k), _) => k.clone(),
            (None, Some(f)) => read(ctx, f)?,
            _ => String::new(),
        };
        let mut images = Vec::new();
        for i in &c.images {
            let img = PagerdutyImageJson {
                src: x.text("images.src", &i.src)?,
                alt: x.text("images.alt", &i.alt)?,
                href: x.text("images.href", &i.href)?,
            };
            if !img.src.is_empty() {
                images.push(img);
            }
        }
        let mut links = Vec::new();
        for l in &c.links {
            let link = PagerdutyLinkJson {
                href: x.text("links.href", &l.href)?,
                text: x.text("links.text", &l.text)?,
            };
            if !link.href.is_empty() {
                links.push(link);
            }
        }
        let source_t = c.source.clone().unwrap_or_else(|| client_t.clone());
        let m = PagerdutyMessageJson {
            client: x.text("client", &client_t)?,
            client_url: x.text("client_url", &client_url_t)?,
            routing_key: x.text("routing_key", &key)?,
            service_key: String::new(),
            dedup_key: dedup_key(group_key),
            incident_key: String::new(),
            event_type: String::new(),
            description: String::new(),
            event_action: if trigger { "trigger" } else { "resolve" }.into(),
            payload: Some(PagerdutyPayloadJson {
                summary: truncate_runes(&x.text("description", &description_t)?, MAX_TITLE_RUNES),
                source: x.text("source", &source_t)?,
                severity: x.opt("severity", &c.severity, "error")?,
                class: x.opt("class", &c.class, "")?,
                component: x.opt("component", &c.component, "")?,
                group: x.opt("group", &c.group, "")?,
                custom_details: details,
            }),
            details: BTreeMap::new(),
            images,
            links,
        };
        if m.routing_key.is_empty() {
            return Err(PayloadError::Invalid("routing key cannot be empty".into()));
        }
        m
    };
    let url = if v1 {
        PAGERDUTY_V1_URL.to_string()
    } else {
        c.url
            .clone()
            .or_else(|| ctx.config.global.pagerduty_url.clone())
            .unwrap_or_else(|| DEFAULT_PAGERDUTY_URL.to_string())
    };
    let mut post = json_post(url.clone(), &msg)?;
    // Go's encoder ends the body with a newline: the limit counts it.
    if post.body.len() + 1 > MAX_PAGERDUTY_EVENT_BYTES {
        let error = BTreeMap::from([(
            "error".to_string(),
            "Custom details have been removed because the original event exceeds the maximum size of 512kB"
                .to_string(),
        )]);
        match &mut msg.payload {
            Some(p) if !v1 => p.custom_details = error,
            _ => msg.details = error,
        }
        post = json_post(url, &msg)?;
    }
    Ok(post)
}

/// The addresses of an RFC 5322 address list (`a@x, "B" <b@y>`), as Go's
/// `mail.ParseAddressList` yields them (display names dropped).
fn parse_addresses(list: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut angle = false;
    for c in list.chars().chain(std::iter::once(',')) {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            '<' if !quoted => {
                angle = true;
                cur.push(c);
            }
            '>' if !quoted => {
                angle = false;
                cur.push(c);
            }
            ',' if !quoted && !angle => {
                let part = cur.trim();
                if !part.is_empty() {
                    let addr = match (part.rfind('<'), part.rfind('>')) {
                        (Some(a), Some(b)) if a < b => part[a + 1..b].trim().to_string(),
                        _ => part.to_string(),
                    };
                    if !addr.contains('@') || addr.contains(char::is_whitespace) {
                        return Err(format!("mail: missing @ in addr-spec: {part:?}"));
                    }
                    out.push(addr);
                }
                cur.clear();
            }
            c => cur.push(c),
        }
    }
    if out.is_empty() {
        return Err("mail: no address".into());
    }
    Ok(out)
}

/// Go's `mime.QEncoding.Encode("utf-8", s)`: `s` itself when it is printable ASCII,
/// else encoded words of at most 75 bytes (`=?utf-8?q?...?=`, space as `_`).
pub fn q_encode(s: &str) -> String {
    if s.bytes().all(|b| (b' '..=b'~').contains(&b) || b == b'\t') {
        return s.to_string();
    }
    const PREFIX: &str = "=?utf-8?q?";
    let max = 75 - PREFIX.len() - 2;
    let mut words = Vec::new();
    let mut cur = String::new();
    for c in s.chars() {
        let mut enc = String::new();
        let mut buf = [0u8; 4];
        for b in c.encode_utf8(&mut buf).bytes() {
            if b == b' ' {
                enc.push('_');
            } else if (b'!'..=b'~').contains(&b) && b != b'=' && b != b'?' && b != b'_' {
                enc.push(b as char);
            } else {
                enc.push_str(&format!("={b:02X}"));
            }
        }
        if cur.len() + enc.len() > max {
            words.push(std::mem::take(&mut cur));
        }
        cur.push_str(&enc);
    }
    words.push(cur);
    words
        .iter()
        .map(|w| format!("{PREFIX}{w}?="))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quoted-printable as Go's `mime/quotedprintable.Writer` writes text: lines end in CRLF,
/// at most 76 characters with soft breaks (`=`), `=` and bytes outside printable ASCII
/// encoded, white space before a line end encoded.
pub fn quoted_printable(s: &str) -> String {
    let mut out = String::new();
    let lines: Vec<&str> = s.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let bytes = line.as_bytes();
        let mut len = 0;
        for (j, &b) in bytes.iter().enumerate() {
            let last = j + 1 == bytes.len();
            let enc =
                if (b == b' ' || b == b'\t') && !last || (b'!'..=b'~').contains(&b) && b != b'=' {
                    (b as char).to_string()
                } else {
                    format!("={b:02X}")
                };
            if len + enc.len() > 75 {
                out.push_str("=\r\n");
                len = 0;
            }
            out.push_str(&enc);
            len += enc.len();
        }
        if i + 1 < lines.len() {
            out.push_str("\r\n");
        }
    }
    out
}

/// The email, as Alertmanager 0.25's `email` notifier builds it: headers from `headers`
/// with `Subject` (default `email.default.subject`), `To` and `From` (the settings)
/// added when absent, every value expanded and Q-encoded; the text part when `text` is
/// set, the HTML part (default `email.default.html`, expanded with HTML escaping);
/// `from`, `smarthost` and `hello` defaulting to the globals.
///
/// # Errors
/// A template that fails; `from` not exactly one address; `to` not an address list.
pub fn email_message(
    ctx: &Context<'_>,
    c: &EmailConfig,
    data: &NotificationData,
) -> Result<EmailMessage, PayloadError> {
    let x = Expander {
        templates: ctx.templates,
        data,
        context: "",
    };
    let g = &ctx.config.global;
    let from_t = c
        .from
        .clone()
        .or_else(|| g.smtp_from.clone())
        .unwrap_or_default();
    let to_t = c.to.clone().unwrap_or_default();
    let from = x.text_as("execute 'from' template", &from_t)?;
    let to = x.text_as("execute 'to' template", &to_t)?;
    let from_addrs = parse_addresses(&from)
        .map_err(|e| PayloadError::Invalid(format!("parse 'from' addresses: {e}")))?;
    if from_addrs.len() != 1 {
        return Err(PayloadError::Invalid(format!(
            "must be exactly one 'from' address (got: {})",
            from_addrs.len()
        )));
    }
    let to_addrs = parse_addresses(&to)
        .map_err(|e| PayloadError::Invalid(format!("parse 'to' addresses: {e}")))?;
    let mut templates: BTreeMap<String, String> = c
        .headers
        .iter()
        .map(|(k, v)| (canonical_header(k), v.clone()))
        .collect();
    templates
        .entry("Subject".into())
        .or_insert_with(|| r#"{{ template "email.default.subject" . }}"#.into());
    templates.entry("To".into()).or_insert(to_t);
    templates.entry("From".into()).or_insert(from_t);
    let mut headers = Vec::with_capacity(templates.len());
    for (k, t) in &templates {
        let v = x.text_as(&format!("execute {k:?} header template"), t)?;
        headers.push((k.clone(), q_encode(&v)));
    }
    let text = match c.text.as_deref() {
        Some(t) if !t.is_empty() => Some(x.text_as("execute text template", t)?),
        _ => None,
    };
    let html_t = c
        .html
        .clone()
        .unwrap_or_else(|| r#"{{ template "email.default.html" . }}"#.into());
    let html = if html_t.is_empty() {
        None
    } else {
        Some(
            ctx.templates
                .execute_html(&html_t, data)
                .map_err(|e| PayloadError::Template("execute html template".into(), e))?,
        )
    };
    Ok(EmailMessage {
        smarthost: c
            .smarthost
            .clone()
            .or_else(|| g.smtp_smarthost.clone())
            .unwrap_or_default(),
        hello: c
            .hello
            .clone()
            .or_else(|| g.smtp_hello.clone())
            .unwrap_or_else(|| "localhost".into()),
        require_tls: c.require_tls.or(g.smtp_require_tls).unwrap_or(true),
        envelope_from: from_addrs[0].clone(),
        envelope_to: to_addrs,
        auth_username: c
            .auth_username
            .clone()
            .or_else(|| g.smtp_auth_username.clone())
            .unwrap_or_default(),
        headers,
        text,
        html,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_encodings_as_go() {
        assert_eq!(q_encode("[FIRING:1] Down "), "[FIRING:1] Down ");
        assert_eq!(q_encode("café bar"), "=?utf-8?q?caf=C3=A9_bar?=");
        assert_eq!(quoted_printable("a=b\nc \n"), "a=3Db\r\nc=20\r\n");
        assert_eq!(truncate_runes("abcdef", 4), "abc…");
        assert_eq!(truncate_runes("abc", 4), "abc");
        assert_eq!(
            parse_addresses("a@x, \"B, b\" <b@y>").unwrap(),
            vec!["a@x".to_string(), "b@y".to_string()]
        );
        assert_eq!(dedup_key("{}:{alertname=\"Down\"}").len(), 64);
    }

    #[test]
    fn mime_message_layout() {
        let m = EmailMessage {
            smarthost: "x:25".into(),
            hello: "localhost".into(),
            require_tls: false,
            envelope_from: "a@x".into(),
            envelope_to: vec!["b@y".into()],
            auth_username: String::new(),
            headers: vec![("Subject".into(), "s".into()), ("To".into(), "b@y".into())],
            text: Some("t=1".into()),
            html: Some("<p>h</p>".into()),
        };
        let want = [
            "Subject: s",
            "To: b@y",
            "Message-Id: <1@h>",
            "Date: Tue, 01 Dec 2026 06:00:00 +0000",
            "Content-Type: multipart/alternative;  boundary=B",
            "MIME-Version: 1.0",
            "",
            "--B",
            "Content-Transfer-Encoding: quoted-printable",
            "Content-Type: text/plain; charset=UTF-8",
            "",
            "t=3D1",
            "--B",
            "Content-Transfer-Encoding: quoted-printable",
            "Content-Type: text/html; charset=UTF-8",
            "",
            "<p>h</p>",
            "--B--",
            "",
        ]
        .join("\r\n");
        assert_eq!(
            m.to_mime("Tue, 01 Dec 2026 06:00:00 +0000", "<1@h>", "B"),
            want
        );
        let long = "a".repeat(100);
        let qp = quoted_printable(&long);
        assert!(qp.lines().all(|l| l.len() <= 76), "{qp}");
        assert_eq!(qp.replace("=\r\n", ""), long);
    }

    /// An event over PagerDuty's size limit loses its custom details, as Alertmanager's.
    #[test]
    fn oversized_pagerduty_event_drops_details() {
        let cfg = crate::amconfig::parse_alertmanager_config(
            "route:\n  receiver: p\nreceivers:\n  - name: p\n    pagerduty_configs:\n      - routing_key: k\n",
        )
        .unwrap();
        let templates = Templates::defaults();
        let generator = |_: &DispatchedAlert| String::new();
        let read = |_: &str| Err("no files".to_string());
        let ctx = Context {
            config: &cfg,
            templates: &templates,
            external_url: "http://am",
            generator_url: &generator,
            read_file: &read,
        };
        let big = "y".repeat(MAX_PAGERDUTY_EVENT_BYTES);
        let n = Notification {
            receiver: "p".into(),
            route_key: "{}".into(),
            group_key: "{}:{}".into(),
            group_labels: BTreeMap::new(),
            alerts: vec![DispatchedAlert {
                labels: BTreeMap::from([("alertname".to_string(), "A".to_string())]),
                annotations: BTreeMap::from([("big".to_string(), big)]),
                starts_at_ms: 0,
                ends_at_ms: i64::MAX,
                generator_url: String::new(),
            }],
            at_ms: 1,
        };
        let c = &cfg.receivers["p"].pagerduty_configs[0];
        let Ok(Payload::Http(p)) = build(&ctx, Integration::Pagerduty(c), &n) else {
            panic!("no event");
        };
        assert_eq!(p.url, DEFAULT_PAGERDUTY_URL);
        let v: serde_json::Value = serde_json::from_str(&p.body).unwrap();
        assert_eq!(
            v["payload"]["custom_details"],
            serde_json::json!({"error": "Custom details have been removed because the original event exceeds the maximum size of 512kB"})
        );
        assert_eq!(v["payload"]["summary"], "[FIRING:1]  (A)");
    }
}
