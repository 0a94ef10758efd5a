//! The aggregator's own notification pipeline, configured by an Alertmanager configuration
//! file (`[alerting] notifications`): alerts from the rules engine (and from clients posting
//! to `/api/v2/alerts`, as to an Alertmanager) are grouped and deduplicated as Alertmanager
//! 0.25 does ([`outpost_alerting::dispatch`]), muted by silences and inhibition rules,
//! escalated by `[[alerting.escalation]]` policies, and delivered to the receivers'
//! integrations.
//!
//! Delivery is exactly once towards receivers that honour an idempotency key:
//! - Every notification gets a key when it is decided (`<group hash>-<time>-<integration>`
//!   for a group's notification, [`Step::key`] for an escalation step). The key goes out as
//!   the `Idempotency-Key` header (and as PagerDuty's `dedup_key`).
//! - The decision (the notification log's new entry, the escalation's new state) and the
//!   notification itself (the *outbox* record: key, URL, body) are stored in one synced
//!   commit *before* the first attempt. The record is deleted once the receiver accepted it
//!   (or refused it for good).
//! - After a restart (`kill -9` included) every outbox record is sent again with its key:
//!   the only notification that can reach a receiver twice is the one in flight at the
//!   crash, with the same key both times.
//! - Attempts back off from 1 s, doubling up to 1 min; a 4xx other than 408 and 429 is
//!   final (counted and logged), anything else is retried for up to [`GIVE_UP_AFTER`].
//!
//! Each alert's history (fired, notified whom and when, acknowledged by whom with their
//! note, resolved) is kept for [`HISTORY_KEEP`] after it resolves and served by
//! `/api/v1/alerts/history`.
//!
//! Stored under the store's metadata prefix `notify/`: `log/`, `outbox/`, `silence/`,
//! `esc/`, `history/`, each value JSON.

use crate::config::AlertingConfig;
use crate::ingest::WriterMsg;
use crate::metrics::Metrics;
use outpost_alerting::amconfig::{AlertmanagerConfig, Receiver, parse_alertmanager_config};
use outpost_alerting::dispatch::{
    DispatchedAlert, Dispatcher, LogEntry, MAINTENANCE_INTERVAL_MS, Notification, NotificationLog,
};
use outpost_alerting::escalation::{Escalation, Escalations, Level, Policy, Step, StepKind};
use outpost_alerting::inhibit::inhibited;
use outpost_alerting::rule::LabelMap;
use outpost_alerting::silence::{Silence, SilenceMatcher};
use outpost_alerting::webhook::fingerprint;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The metadata prefix of everything the pipeline stores.
pub const PREFIX: &[u8] = b"notify/";
/// How long a notification is retried before it is given up (counted and logged).
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(3600);
/// How long a resolved alert's history, a finished escalation and an expired silence are
/// kept (Alertmanager keeps expired silences for 5 days).
pub const HISTORY_KEEP: Duration = Duration::from_secs(5 * 24 * 3600);
/// The most alert histories kept; the oldest finished ones go first.
pub const MAX_HISTORIES: usize = 10_000;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an alert posted without `endsAt` stays firing (Alertmanager's default
/// `resolve_timeout`).
const DEFAULT_RESOLVE_TIMEOUT_MS: i64 = 5 * 60_000;

/// A loaded notifications setup: the Alertmanager configuration and the escalation
/// policies.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The configuration.
    pub am: AlertmanagerConfig,
    /// The file's text, served by `/api/v2/status`.
    pub text: String,
    /// Escalation policies, in order.
    pub policies: Vec<Policy>,
    /// `resolve_timeout`, ms.
    pub resolve_timeout_ms: i64,
    /// Alertmanager's default templates and the files of `templates:`.
    pub templates: outpost_alerting::amtemplate::Templates,
}

/// Reads `[alerting] notifications` and `[[alerting.escalation]]`. `Ok(None)` when no
/// notifications file is configured.
///
/// # Errors
/// Each problem as `(key, message)`: the file cannot be read, does not load as Alertmanager
/// would load it (its words), uses integrations Outpost does not send to, or an escalation
/// policy names an unknown receiver or has bad levels.
pub fn load(cfg: &AlertingConfig) -> Result<Option<Setup>, Vec<(&'static str, String)>> {
    let Some(path) = &cfg.notifications else {
        if cfg.escalation.is_empty() {
            return Ok(None);
        }
        return Err(vec![(
            "alerting.escalation",
            "needs alerting.notifications (an alertmanager.yml whose receivers the levels name)"
                .into(),
        )]);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![("alerting.notifications", format!("cannot read {path}: {e}"))])?;
    let am = parse_alertmanager_config(&text).map_err(|ps| {
        ps.into_iter()
            .map(|p| ("alerting.notifications", format!("{path}: {p}")))
            .collect::<Vec<_>>()
    })?;
    let mut problems = vec![];
    for r in am.receivers.values() {
        let u = r.unsupported();
        if !u.is_empty() {
            problems.push((
                "alerting.notifications",
                format!(
                    "{path}: receiver {:?} uses {}, which Outpost does not send to (supported: webhook_configs, slack_configs, pagerduty_configs, email_configs)",
                    r.name,
                    u.join(", ")
                ),
            ));
        }
    }
    let mut policies = vec![];
    for (i, e) in cfg.escalation.iter().enumerate() {
        let mut matchers = vec![];
        for m in &e.matchers {
            match outpost_alerting::route::parse_matchers(m) {
                Ok(ms) => matchers.extend(ms),
                Err(err) => {
                    problems.push(("alerting.escalation", format!("[{i}] matcher {m:?}: {err}")))
                }
            }
        }
        for l in &e.levels {
            if !am.receivers.contains_key(&l.receiver) {
                problems.push((
                    "alerting.escalation",
                    format!("[{i}] receiver {:?} is not defined in {path}", l.receiver),
                ));
            }
        }
        let levels = e
            .levels
            .iter()
            .map(|l| Level {
                after_ms: l.after.get().as_millis() as i64,
                receiver: l.receiver.clone(),
            })
            .collect();
        match Policy::new(matchers, levels, e.reminder.get().as_millis() as i64) {
            Ok(p) => policies.push(p),
            Err(err) => problems.push(("alerting.escalation", format!("[{i}]: {err}"))),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let resolve_timeout_ms = match am.global.resolve_timeout.as_deref() {
        Some(t) => outpost_alerting::duration::parse_duration(t).map_err(|e| {
            vec![(
                "alerting.notifications",
                format!("{path}: resolve_timeout: {e}"),
            )]
        })?,
        None => DEFAULT_RESOLVE_TIMEOUT_MS,
    };
    let base = std::path::Path::new(path)
        .parent()
        .unwrap_or(std::path::Path::new("."));
    let templates = outpost_alerting::amtemplate::load_templates(&am.templates, base)
        .map_err(|e| vec![("alerting.notifications", format!("{path}: {e}"))])?;
    Ok(Some(Setup {
        am,
        text,
        policies,
        resolve_timeout_ms,
        templates,
    }))
}

/// A silence as stored and served (`/api/v2/silences`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredSilence {
    /// Its id (a UUID).
    pub id: String,
    /// What it mutes.
    pub matchers: Vec<SilenceMatcher>,
    /// Active from, ms since the Unix epoch.
    pub starts_at_ms: i64,
    /// Active until (exclusive), ms.
    pub ends_at_ms: i64,
    /// Last change, ms.
    pub updated_at_ms: i64,
    /// Who made it.
    pub created_by: String,
    /// Why.
    pub comment: String,
}

impl StoredSilence {
    fn compiled(&self) -> Option<Silence> {
        Silence::new(
            &self.id,
            &self.matchers,
            self.starts_at_ms,
            self.ends_at_ms,
            &self.created_by,
            &self.comment,
        )
        .ok()
    }

    /// `active`, `pending` or `expired` at `now_ms`.
    pub fn state(&self, now_ms: i64) -> &'static str {
        if now_ms < self.starts_at_ms {
            "pending"
        } else if now_ms < self.ends_at_ms {
            "active"
        } else {
            "expired"
        }
    }
}

/// One event of an alert's history.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// `fired`, `notified`, `failed`, `acknowledged`, `note`, `resolved`.
    pub kind: String,
    /// The receiver notified (or that failed), when it is a notification.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub receiver: String,
    /// The integration (`webhook`, `slack`, `pagerduty`, `email`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub integration: String,
    /// The notification's idempotency key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// Who (acknowledgements and notes).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub by: String,
    /// The note, or what went wrong.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// An alert's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Its fingerprint (16 hex digits).
    pub fingerprint: String,
    /// Its labels.
    pub labels: LabelMap,
    /// What happened, oldest first.
    pub events: Vec<Event>,
}

/// A notification decided and not yet delivered (stored until it is).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    /// The idempotency key.
    pub key: String,
    /// The receiver's name.
    pub receiver: String,
    /// `webhook`, `slack`, `pagerduty` or `email`.
    pub integration: String,
    /// Where it goes (a URL).
    pub url: String,
    /// The body (an email: the whole message after SMTP's `DATA`).
    pub body: String,
    /// HTTP headers besides `Content-Type` and the idempotency key.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// For an email: the SMTP envelope and server.
    #[serde(default)]
    pub smtp: Option<SmtpSend>,
    /// The alerts it carries (fingerprints), for their histories.
    pub alerts: Vec<u64>,
    /// When it was decided, ms.
    pub created_ms: i64,
}

/// How an email goes out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SmtpSend {
    /// `host:port`.
    pub smarthost: String,
    /// HELO name.
    pub hello: String,
    /// STARTTLS required.
    pub require_tls: bool,
    /// Envelope sender.
    pub from: String,
    /// Envelope recipients.
    pub to: Vec<String>,
    /// SMTP AUTH user (empty: none) and password.
    pub username: String,
    /// See `username`.
    pub password: String,
}

/// An alert as the pipeline holds it (`/api/v2/alerts`).
#[derive(Clone, Debug)]
pub struct HeldAlert {
    /// The alert.
    pub alert: DispatchedAlert,
    /// Last update, ms.
    pub updated_ms: i64,
    /// Receivers of the routes it matches.
    pub receivers: Vec<String>,
    /// Whether it was firing when last looked at (for its history).
    firing: bool,
}

/// What the HTTP API and the rules engine ask of the pipeline.
pub enum Command {
    /// New or updated alerts.
    Alerts(Vec<DispatchedAlert>),
    /// The alerts held (not resolved), with their silences and inhibitors, at now.
    ListAlerts(oneshot::Sender<Vec<AlertStatus>>),
    /// Every silence.
    ListSilences(oneshot::Sender<Vec<StoredSilence>>),
    /// Creates or updates a silence; answers its id.
    PutSilence(StoredSilence, oneshot::Sender<Result<String, ApiProblem>>),
    /// Expires a silence.
    ExpireSilence(String, oneshot::Sender<Result<(), ApiProblem>>),
    /// Acknowledges an alert's escalation (fingerprint, who, note).
    Ack(u64, String, String, oneshot::Sender<Result<(), ApiProblem>>),
    /// Adds a note to an alert's history (fingerprint, who, note).
    Note(u64, String, String, oneshot::Sender<Result<(), ApiProblem>>),
    /// Alert histories (all when no fingerprint), with their escalation.
    Histories(
        Option<u64>,
        oneshot::Sender<Vec<(History, Option<Escalation>)>>,
    ),
    /// A new setup (a reload); `None` turns the pipeline's routing off.
    Reload(Box<Setup>),
    /// An outbox record was delivered (true) or given up (false, with why).
    Done(String, Result<(), String>),
}

/// An API error: a status code and a message.
#[derive(Debug)]
pub struct ApiProblem {
    /// 400, 404 or 500.
    pub status: u16,
    /// What went wrong.
    pub message: String,
}

fn problem(status: u16, message: impl Into<String>) -> ApiProblem {
    ApiProblem {
        status,
        message: message.into(),
    }
}

/// An alert with its state, as `/api/v2/alerts` serves it.
#[derive(Clone, Debug)]
pub struct AlertStatus {
    /// The alert.
    pub alert: HeldAlert,
    /// Silences muting it.
    pub silenced_by: Vec<String>,
    /// Fingerprints of the alerts inhibiting it.
    pub inhibited_by: Vec<String>,
}

/// What the API reads of the setup in force.
#[derive(Clone, Debug, Default)]
struct Info {
    text: String,
    resolve_timeout_ms: i64,
    receivers: Vec<String>,
}

impl Info {
    fn of(s: &Setup) -> Info {
        Info {
            text: s.text.clone(),
            resolve_timeout_ms: s.resolve_timeout_ms,
            receivers: s.am.receivers.keys().cloned().collect(),
        }
    }
}

/// The handle on the running pipeline.
#[derive(Clone)]
pub struct Notifications {
    tx: mpsc::Sender<Command>,
    info: Arc<std::sync::RwLock<Info>>,
}

impl Notifications {
    /// Hands alerts to the pipeline (dropped, and logged, if its queue is full).
    pub fn alerts(&self, alerts: Vec<DispatchedAlert>) {
        if let Err(e) = self.tx.try_send(Command::Alerts(alerts)) {
            tracing::warn!("notification pipeline busy, alerts dropped: {e}");
        }
    }

    /// Sends a command and waits for the answer.
    ///
    /// # Errors
    /// The pipeline has stopped.
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ApiProblem> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| problem(500, "the notification pipeline has stopped"))?;
        rx.await
            .map_err(|_| problem(500, "the notification pipeline has stopped"))
    }

    /// Replaces the setup.
    pub async fn reload(&self, setup: Setup) {
        *self.info.write().unwrap_or_else(|p| p.into_inner()) = Info::of(&setup);
        let _ = self.tx.send(Command::Reload(Box::new(setup))).await;
    }

    fn info(&self) -> Info {
        self.info.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The configuration file's text, as `/api/v2/status` shows it.
    pub fn config_text(&self) -> String {
        self.info().text
    }

    /// `resolve_timeout`, ms: how long an alert posted without `endsAt` stays firing.
    pub fn resolve_timeout_ms(&self) -> i64 {
        self.info().resolve_timeout_ms
    }

    /// The receivers' names, sorted.
    pub fn receiver_names(&self) -> Vec<String> {
        self.info().receivers
    }
}

/// Starts the pipeline: loads what the store holds (silences, the notification log,
/// escalations, histories, and the outbox, which is sent again at once).
///
/// # Errors
/// The store cannot be read or holds records that do not decode.
pub fn start(
    setup: Setup,
    storage: &outpost_tsdb::Storage,
    writer: mpsc::Sender<WriterMsg>,
    metrics: Arc<Metrics>,
    external_url: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(Notifications, tokio::task::JoinHandle<()>), String> {
    let entries = storage.meta(PREFIX).map_err(|e| e.to_string())?;
    let mut log = NotificationLog::new();
    let mut silences = BTreeMap::new();
    let mut escalations = vec![];
    let mut histories = BTreeMap::new();
    let mut outbox = BTreeMap::new();
    for (k, v) in entries {
        let key = String::from_utf8_lossy(&k[PREFIX.len()..]).into_owned();
        let bad = |e: serde_json::Error| {
            format!("stored notification state {key:?} does not decode: {e}")
        };
        if let Some(rest) = key.strip_prefix("log/") {
            let (gk, recv) = rest.split_once('\0').unwrap_or((rest, ""));
            let r: LogRecord = serde_json::from_slice(&v).map_err(bad)?;
            log.insert((gk.to_string(), recv.to_string()), r.into_entry());
        } else if key.starts_with("silence/") {
            let s: StoredSilence = serde_json::from_slice(&v).map_err(bad)?;
            silences.insert(s.id.clone(), s);
        } else if key.starts_with("esc/") {
            escalations.push(serde_json::from_slice::<Escalation>(&v).map_err(bad)?);
        } else if key.starts_with("history/") {
            let h: History = serde_json::from_slice(&v).map_err(bad)?;
            let fp = u64::from_str_radix(&h.fingerprint, 16).unwrap_or(0);
            histories.insert(fp, h);
        } else if key.starts_with("outbox/") {
            let o: Outgoing = serde_json::from_slice(&v).map_err(bad)?;
            outbox.insert(o.key.clone(), o);
        }
    }
    let (tx, rx) = mpsc::channel(1024);
    let handle = Notifications {
        tx: tx.clone(),
        info: Arc::new(std::sync::RwLock::new(Info::of(&setup))),
    };
    let http: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(SEND_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let mut p = Pipeline {
        dispatcher: Dispatcher::new(setup.am.route.clone())
            .with_time_intervals(setup.am.intervals.clone()),
        escalations: Escalations::new(setup.policies.clone(), escalations),
        setup,
        log,
        silences,
        histories,
        alerts: BTreeMap::new(),
        outbox: BTreeMap::new(),
        writer,
        metrics,
        external_url,
        tx,
        http,
        last_maintenance_ms: outpost_service::now_ms(),
    };
    tracing::info!(
        silences = p.silences.len(),
        pending = outbox.len(),
        "notification pipeline ready"
    );
    for o in outbox.into_values() {
        p.send(o);
    }
    let task = tokio::spawn(p.run(rx, stop));
    Ok((handle, task))
}

#[derive(Serialize, Deserialize)]
struct LogRecord {
    firing: Vec<u64>,
    resolved: Vec<u64>,
    at_ms: i64,
}

impl LogRecord {
    fn of(e: &LogEntry) -> LogRecord {
        LogRecord {
            firing: e.firing.iter().copied().collect(),
            resolved: e.resolved.iter().copied().collect(),
            at_ms: e.at_ms,
        }
    }

    fn into_entry(self) -> LogEntry {
        LogEntry {
            firing: self.firing.into_iter().collect(),
            resolved: self.resolved.into_iter().collect(),
            at_ms: self.at_ms,
        }
    }
}

struct Pipeline {
    setup: Setup,
    dispatcher: Dispatcher,
    escalations: Escalations,
    log: NotificationLog,
    silences: BTreeMap<String, StoredSilence>,
    histories: BTreeMap<u64, History>,
    alerts: BTreeMap<u64, HeldAlert>,
    /// Records being sent (key → record).
    outbox: BTreeMap<String, Outgoing>,
    writer: mpsc::Sender<WriterMsg>,
    metrics: Arc<Metrics>,
    external_url: String,
    tx: mpsc::Sender<Command>,
    http: ureq::Agent,
    last_maintenance_ms: i64,
}

/// Metadata writes gathered during one step, committed (synced) together.
#[derive(Default)]
struct Writes(Vec<(Vec<u8>, Vec<u8>)>);

impl Writes {
    fn put(&mut self, key: String, value: &impl Serialize) {
        let mut k = PREFIX.to_vec();
        k.extend_from_slice(key.as_bytes());
        self.0
            .push((k, serde_json::to_vec(value).unwrap_or_default()));
    }

    fn delete(&mut self, key: String) {
        let mut k = PREFIX.to_vec();
        k.extend_from_slice(key.as_bytes());
        self.0.push((k, Vec::new()));
    }
}

fn esc_key(fp: u64) -> String {
    format!("esc/{fp:016x}")
}

fn history_key(fp: u64) -> String {
    format!("history/{fp:016x}")
}

impl Pipeline {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let now = outpost_service::now_ms();
            let next = [
                self.dispatcher.next_due_ms(),
                self.escalations.next_due_ms(),
                self.next_expiry_ms(),
                Some(now + 1000),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + 1000);
            let wait = Duration::from_millis((next - now).clamp(0, 1000) as u64);
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(c) => self.handle(c).await,
                    None => return,
                },
                _ = tokio::time::sleep(wait) => {}
                r = stop.changed() => if r.is_err() || *stop.borrow() {
                    return;
                },
            }
            self.tick(outpost_service::now_ms()).await;
        }
    }

    /// When the next held alert reaches its end, ms.
    fn next_expiry_ms(&self) -> Option<i64> {
        self.alerts
            .values()
            .filter(|a| a.firing)
            .map(|a| a.alert.ends_at_ms)
            .min()
    }

    fn active_silences(&self, now_ms: i64) -> Vec<Silence> {
        self.silences
            .values()
            .filter(|s| s.state(now_ms) == "active")
            .filter_map(StoredSilence::compiled)
            .collect()
    }

    fn firing_labels(&self, now_ms: i64) -> Vec<LabelMap> {
        self.alerts
            .values()
            .filter(|a| !a.alert.resolved(now_ms))
            .map(|a| a.alert.labels.clone())
            .collect()
    }

    fn event(&mut self, w: &mut Writes, fp: u64, labels: &LabelMap, e: Event) {
        let h = self.histories.entry(fp).or_insert_with(|| History {
            fingerprint: format!("{fp:016x}"),
            labels: labels.clone(),
            events: vec![],
        });
        h.events.push(e);
        w.put(history_key(fp), &*h);
    }

    async fn commit(&self, w: Writes) -> bool {
        if w.0.is_empty() {
            return true;
        }
        let (tx, rx) = oneshot::channel();
        if self.writer.send(WriterMsg::Meta(w.0, tx)).await.is_err() {
            return false;
        }
        match rx.await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::error!("cannot store the notification state: {e}");
                false
            }
            Err(_) => false,
        }
    }

    /// Adds a person's event (`acknowledged`, `note`) to alert `fp`'s history and commits
    /// it with what `w` already holds.
    #[allow(clippy::too_many_arguments)]
    async fn store_note(
        &mut self,
        mut w: Writes,
        fp: u64,
        labels: &LabelMap,
        kind: &str,
        by: String,
        note: String,
        now: i64,
    ) -> Result<(), ApiProblem> {
        self.event(
            &mut w,
            fp,
            labels,
            Event {
                at_ms: now,
                kind: kind.into(),
                by,
                note,
                ..Default::default()
            },
        );
        if self.commit(w).await {
            Ok(())
        } else {
            Err(problem(500, format!("cannot store the {kind} event")))
        }
    }

    async fn handle(&mut self, cmd: Command) {
        let now = outpost_service::now_ms();
        match cmd {
            Command::Alerts(list) => {
                let mut w = Writes::default();
                for a in list {
                    self.take_alert(a, now, &mut w);
                }
                self.commit(w).await;
            }
            Command::ListAlerts(reply) => {
                let silences = self.active_silences(now);
                let firing = self.firing_labels(now);
                let out = self
                    .alerts
                    .values()
                    .filter(|a| !a.alert.resolved(now))
                    .map(|a| AlertStatus {
                        alert: a.clone(),
                        silenced_by: outpost_alerting::silence::silenced_by(
                            &silences,
                            &a.alert.labels,
                            now,
                        )
                        .into_iter()
                        .map(String::from)
                        .collect(),
                        inhibited_by: self
                            .setup
                            .am
                            .inhibit_rules
                            .iter()
                            .filter_map(|r| r.muted_by(&firing, &a.alert.labels))
                            .map(|l| format!("{:016x}", fingerprint(l)))
                            .collect::<BTreeSet<_>>()
                            .into_iter()
                            .collect(),
                    })
                    .collect();
                let _ = reply.send(out);
            }
            Command::ListSilences(reply) => {
                let _ = reply.send(self.silences.values().cloned().collect());
            }
            Command::PutSilence(s, reply) => {
                let r = self.put_silence(s, now).await;
                let _ = reply.send(r);
            }
            Command::ExpireSilence(id, reply) => {
                let r = match self.silences.get(&id).cloned() {
                    None => Err(problem(404, format!("silence {id} not found"))),
                    Some(s) if s.state(now) == "expired" => {
                        Err(problem(500, format!("silence {id} already expired")))
                    }
                    Some(mut s) => {
                        if s.starts_at_ms > now {
                            s.starts_at_ms = now;
                        }
                        s.ends_at_ms = now;
                        s.updated_at_ms = now;
                        let mut w = Writes::default();
                        w.put(format!("silence/{id}"), &s);
                        if self.commit(w).await {
                            self.silences.insert(id, s);
                            Ok(())
                        } else {
                            Err(problem(500, "cannot store the silence"))
                        }
                    }
                };
                self.count_silences(now);
                let _ = reply.send(r);
            }
            Command::Ack(fp, by, note, reply) => {
                let r = match self.escalations.ack(fp, &by, &note, now) {
                    Err(e) => Err(problem(404, e)),
                    Ok(esc) => {
                        let mut w = Writes::default();
                        w.put(esc_key(fp), &esc);
                        self.store_note(w, fp, &esc.labels, "acknowledged", by, note, now)
                            .await
                    }
                };
                let _ = reply.send(r);
            }
            Command::Note(fp, by, note, reply) => {
                let r = match self.histories.get(&fp).map(|h| h.labels.clone()) {
                    None => Err(problem(404, format!("no alert with fingerprint {fp:016x}"))),
                    Some(labels) => {
                        self.store_note(Writes::default(), fp, &labels, "note", by, note, now)
                            .await
                    }
                };
                let _ = reply.send(r);
            }
            Command::Histories(fp, reply) => {
                let out = self
                    .histories
                    .iter()
                    .filter(|(k, _)| fp.is_none_or(|f| f == **k))
                    .map(|(k, h)| (h.clone(), self.escalations.get(*k).cloned()))
                    .collect();
                let _ = reply.send(out);
            }
            Command::Reload(setup) => {
                // Groups start again under the new tree; the log, silences and histories
                // stay, so nothing already notified is sent again.
                self.dispatcher = Dispatcher::new(setup.am.route.clone())
                    .with_time_intervals(setup.am.intervals.clone());
                self.escalations.set_policies(setup.policies.clone());
                self.setup = *setup;
                let held: Vec<DispatchedAlert> =
                    self.alerts.values().map(|a| a.alert.clone()).collect();
                for a in held {
                    self.dispatcher.insert(a, now);
                }
                tracing::info!("notifications configuration reloaded");
            }
            Command::Done(key, result) => {
                let Some(o) = self.outbox.remove(&key) else {
                    return;
                };
                let mut w = Writes::default();
                w.delete(format!("outbox/{key}"));
                let (kind, note) = match &result {
                    Ok(()) => ("notified", String::new()),
                    Err(e) => ("failed", e.clone()),
                };
                self.metrics
                    .notification_delivery(&o.receiver, &o.integration, result.is_ok());
                for fp in &o.alerts {
                    let labels = self
                        .histories
                        .get(fp)
                        .map(|h| h.labels.clone())
                        .unwrap_or_default();
                    self.event(
                        &mut w,
                        *fp,
                        &labels,
                        Event {
                            at_ms: now,
                            kind: kind.into(),
                            receiver: o.receiver.clone(),
                            integration: o.integration.clone(),
                            key: key.clone(),
                            note: note.clone(),
                            ..Default::default()
                        },
                    );
                }
                self.commit(w).await;
                self.metrics
                    .notifications_pending
                    .set(self.outbox.len() as i64);
            }
        }
    }

    /// Takes in one alert: the store, the dispatcher, its escalation and its history.
    fn take_alert(&mut self, mut a: DispatchedAlert, now: i64, w: &mut Writes) {
        let fp = fingerprint(&a.labels);
        let receivers: Vec<String> = self
            .setup
            .am
            .route
            .matches(&a.labels)
            .into_iter()
            .map(|r| r.receiver.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let was_firing = match self.alerts.get(&fp) {
            Some(old) => {
                // The same alert still going: it keeps its start (as Alertmanager merges).
                if !old.alert.resolved(now) && old.alert.starts_at_ms < a.starts_at_ms {
                    a.starts_at_ms = old.alert.starts_at_ms;
                }
                old.firing
            }
            // Not held (a restart): its history says whether it was firing.
            None => self.histories.get(&fp).is_some_and(|h| {
                h.events
                    .iter()
                    .rev()
                    .find(|e| e.kind == "fired" || e.kind == "resolved")
                    .is_some_and(|e| e.kind == "fired")
            }),
        };
        let firing = !a.resolved(now);
        if firing && !was_firing {
            let labels = a.labels.clone();
            self.event(
                w,
                fp,
                &labels,
                Event {
                    at_ms: a.starts_at_ms,
                    kind: "fired".into(),
                    ..Default::default()
                },
            );
        }
        if !firing && was_firing {
            self.resolved(fp, &a.labels, a.ends_at_ms.min(now), w);
        }
        if let Some(e) = self
            .escalations
            .observe(&a.labels, a.starts_at_ms, !firing, now)
        {
            w.put(esc_key(fp), &e);
        }
        self.dispatcher.insert(a.clone(), now);
        self.alerts.insert(
            fp,
            HeldAlert {
                alert: a,
                updated_ms: now,
                receivers,
                firing,
            },
        );
    }

    fn resolved(&mut self, fp: u64, labels: &LabelMap, at_ms: i64, w: &mut Writes) {
        self.event(
            w,
            fp,
            labels,
            Event {
                at_ms,
                kind: "resolved".into(),
                ..Default::default()
            },
        );
        if let Some(e) = self.escalations.observe(labels, 0, true, at_ms) {
            w.put(esc_key(fp), &e);
        }
    }

    async fn put_silence(&mut self, mut s: StoredSilence, now: i64) -> Result<String, ApiProblem> {
        if s.compiled().is_none() {
            let e = Silence::new(&s.id, &s.matchers, s.starts_at_ms, s.ends_at_ms, "", "")
                .err()
                .unwrap_or_default();
            return Err(problem(400, format!("silence invalid: {e}")));
        }
        if s.ends_at_ms <= now {
            return Err(problem(
                400,
                "silence invalid: end time can't be in the past",
            ));
        }
        let mut w = Writes::default();
        if !s.id.is_empty() {
            let Some(old) = self.silences.get(&s.id).cloned() else {
                return Err(problem(404, format!("silence {} not found", s.id)));
            };
            // As Alertmanager: a silence is changed in place only while its matchers stay
            // and its start is not moved once it is active; otherwise the old one expires
            // and a new one takes its place.
            let in_place = old.matchers == s.matchers
                && match old.state(now) {
                    "active" => old.starts_at_ms == s.starts_at_ms,
                    "pending" => s.starts_at_ms >= now,
                    _ => false,
                };
            if !in_place {
                let mut expired = old.clone();
                if expired.state(now) != "expired" {
                    if expired.starts_at_ms > now {
                        expired.starts_at_ms = now;
                    }
                    expired.ends_at_ms = now;
                    expired.updated_at_ms = now;
                    w.put(format!("silence/{}", expired.id), &expired);
                    self.silences.insert(expired.id.clone(), expired);
                }
                s.id = String::new();
            }
        }
        if s.id.is_empty() {
            s.id = uuid::Uuid::new_v4().to_string();
        }
        if s.starts_at_ms < now && !self.silences.contains_key(&s.id) {
            s.starts_at_ms = now;
        }
        s.updated_at_ms = now;
        w.put(format!("silence/{}", s.id), &s);
        if !self.commit(w).await {
            return Err(problem(500, "cannot store the silence"));
        }
        let id = s.id.clone();
        self.silences.insert(id.clone(), s);
        self.count_silences(now);
        Ok(id)
    }

    fn count_silences(&self, now: i64) {
        let mut by: BTreeMap<&str, i64> = [("active", 0), ("pending", 0), ("expired", 0)].into();
        for s in self.silences.values() {
            *by.entry(s.state(now)).or_default() += 1;
        }
        for (state, n) in by {
            self.metrics.silences(state, n);
        }
    }

    /// Everything due at `now`: alerts reaching their end, group flushes, escalation steps,
    /// maintenance; decisions are stored before anything is sent.
    async fn tick(&mut self, now: i64) {
        let mut w = Writes::default();
        let ended: Vec<(u64, LabelMap, i64)> = self
            .alerts
            .iter()
            .filter(|(_, a)| a.firing && a.alert.resolved(now))
            .map(|(fp, a)| (*fp, a.alert.labels.clone(), a.alert.ends_at_ms))
            .collect();
        for (fp, labels, at) in ended {
            if let Some(a) = self.alerts.get_mut(&fp) {
                a.firing = false;
            }
            self.resolved(fp, &labels, at, &mut w);
        }
        let due = |t: Option<i64>| t.is_some_and(|t| t <= now);
        let maintenance = now - self.last_maintenance_ms >= MAINTENANCE_INTERVAL_MS;
        if !due(self.dispatcher.next_due_ms())
            && !due(self.escalations.next_due_ms())
            && !maintenance
        {
            self.commit(w).await;
            return;
        }
        let silences = self.active_silences(now);
        let firing = self.firing_labels(now);
        let rules = &self.setup.am.inhibit_rules;
        let muted_labels =
            |l: &LabelMap| silences.iter().any(|s| s.mutes(l, now)) || inhibited(rules, &firing, l);
        let receivers = &self.setup.am.receivers;
        let wants_resolved = |r: &str| receivers.get(r).is_some_and(wants_resolved);
        let notes = self
            .dispatcher
            .flush_due_muted(now, &mut self.log, &wants_resolved, &|a| {
                muted_labels(&a.labels)
            });
        let (steps, changed) = self.escalations.due(now, &muted_labels);
        // A flush stamps the entries it writes with its time.
        for (k, e) in &self.log {
            if e.at_ms == now {
                w.put(format!("log/{}\0{}", k.0, k.1), &LogRecord::of(e));
            }
        }
        for e in &changed {
            w.put(esc_key(e.fingerprint), e);
        }
        let mut out = vec![];
        for n in &notes {
            out.extend(self.render(n, &group_key_id(&n.group_key, &n.receiver, n.at_ms)));
        }
        for s in &steps {
            if let Some(n) = self.step_notification(s, now) {
                out.extend(self.render(&n, &s.key));
            }
        }
        for o in &out {
            w.put(format!("outbox/{}", o.key), o);
        }
        if maintenance {
            self.last_maintenance_ms = now;
            self.maintain(now, &mut w);
        }
        if !self.commit(w).await {
            // Not stored: nothing is sent; the decision is lost with the process, and the
            // error is in the log.
            return;
        }
        for o in out {
            self.send(o);
        }
    }

    fn maintain(&mut self, now: i64, w: &mut Writes) {
        self.dispatcher.maintain();
        let keep = HISTORY_KEEP.as_millis() as i64;
        self.alerts
            .retain(|_, a| a.firing || a.alert.ends_at_ms > now - MAINTENANCE_INTERVAL_MS);
        for fp in self.escalations.forget_resolved_before(now - keep) {
            w.delete(esc_key(fp));
        }
        let gone: Vec<String> = self
            .silences
            .values()
            .filter(|s| s.ends_at_ms < now - keep)
            .map(|s| s.id.clone())
            .collect();
        for id in gone {
            self.silences.remove(&id);
            w.delete(format!("silence/{id}"));
        }
        // Histories of alerts gone for long, and the oldest beyond the cap.
        let mut finished: Vec<(i64, u64)> = self
            .histories
            .iter()
            .filter(|(fp, _)| !self.alerts.get(fp).is_some_and(|a| a.firing))
            .map(|(fp, h)| (h.events.last().map_or(0, |e| e.at_ms), *fp))
            .collect();
        finished.sort();
        let over = self.histories.len().saturating_sub(MAX_HISTORIES);
        for (i, (last, fp)) in finished.into_iter().enumerate() {
            if i < over || last < now - keep {
                self.histories.remove(&fp);
                w.delete(history_key(fp));
            }
        }
        self.count_silences(now);
    }

    /// An escalation step as a one-alert notification to the level's receiver.
    fn step_notification(&self, s: &Step, now: i64) -> Option<Notification> {
        let held = self.alerts.get(&s.fingerprint);
        let mut alert = held.map(|h| h.alert.clone()).unwrap_or(DispatchedAlert {
            labels: s.labels.clone(),
            annotations: LabelMap::new(),
            starts_at_ms: now,
            ends_at_ms: now,
            generator_url: String::new(),
        });
        if s.kind == StepKind::Resolved && !alert.resolved(now) {
            alert.ends_at_ms = now;
        }
        let mut group_labels = s.labels.clone();
        group_labels.insert("escalation_level".into(), (s.level + 1).to_string());
        if s.kind == StepKind::Reminder {
            group_labels.insert("escalation_reminder".into(), "true".into());
        }
        Some(Notification {
            receiver: s.receiver.clone(),
            route_key: "{}/escalation".into(),
            group_key: String::new(),
            group_labels,
            alerts: vec![alert],
            at_ms: now,
        })
    }

    /// The outbox records for one notification: one per integration of its receiver, as
    /// [`outpost_alerting::payload`] builds them (an integration that does not want resolved
    /// alerts gets the firing ones only, or nothing).
    fn render(&self, n: &Notification, key: &str) -> Vec<Outgoing> {
        use outpost_alerting::payload::{self, Integration, Payload};
        let Some(r) = self.setup.am.receivers.get(&n.receiver) else {
            return vec![];
        };
        let now = n.at_ms;
        let generator_url = |a: &DispatchedAlert| a.generator_url.clone();
        let read_file = |f: &str| std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"));
        let ctx = payload::Context {
            config: &self.setup.am,
            templates: &self.setup.templates,
            external_url: &self.external_url,
            generator_url: &generator_url,
            read_file: &read_file,
        };
        let mut out = vec![];
        for (i, integration) in payload::integrations(r) {
            let kind = integration.kind();
            let mut shown = n.clone();
            if !integration.send_resolved() {
                shown.alerts.retain(|a| !a.resolved(now));
                if shown.alerts.is_empty() {
                    continue;
                }
            }
            let fps: Vec<u64> = shown
                .alerts
                .iter()
                .map(|a| fingerprint(&a.labels))
                .collect();
            let smtp_auth = match &integration {
                Integration::Email(c) => {
                    let pw = c
                        .auth_password
                        .clone()
                        .or_else(|| self.setup.am.global.smtp_auth_password.clone())
                        .or_else(|| {
                            c.auth_password_file
                                .as_ref()
                                .or(self.setup.am.global.smtp_auth_password_file.as_ref())
                                .and_then(|f| std::fs::read_to_string(f).ok())
                                .map(|p| p.trim_end_matches('\n').to_string())
                        })
                        .unwrap_or_default();
                    Some(pw)
                }
                _ => None,
            };
            let (url, body, headers, smtp) = match payload::build(&ctx, integration, &shown) {
                Ok(Payload::Http(h)) => (h.url, h.body, h.headers, None),
                Ok(Payload::Email(m)) => {
                    let id = format!("<{key}-{kind}{i}@outpost>");
                    let date = rfc1123(now);
                    let boundary = format!(
                        "{:016x}",
                        fingerprint(&[(key.to_string(), String::new())].into())
                    );
                    let mime = m.to_mime(&date, &id, &boundary);
                    let smtp = SmtpSend {
                        smarthost: m.smarthost.clone(),
                        hello: m.hello.clone(),
                        require_tls: m.require_tls,
                        from: m.envelope_from.clone(),
                        to: m.envelope_to.clone(),
                        username: m.auth_username.clone(),
                        password: smtp_auth.unwrap_or_default(),
                    };
                    (format!("smtp://{}", m.smarthost), mime, vec![], Some(smtp))
                }
                Err(e) => {
                    tracing::error!(receiver = %n.receiver, integration = kind, "cannot build the notification: {e}");
                    self.metrics.notification_delivery(&n.receiver, kind, false);
                    continue;
                }
            };
            out.push(Outgoing {
                key: format!("{key}-{kind}{i}"),
                receiver: n.receiver.clone(),
                integration: kind.into(),
                url,
                body,
                headers,
                smtp,
                alerts: fps,
                created_ms: now,
            });
        }
        out
    }

    /// Delivers one outbox record in the background; the result comes back as
    /// [`Command::Done`].
    fn send(&mut self, o: Outgoing) {
        self.outbox.insert(o.key.clone(), o.clone());
        self.metrics
            .notifications_pending
            .set(self.outbox.len() as i64);
        let (http, tx, metrics) = (self.http.clone(), self.tx.clone(), self.metrics.clone());
        tokio::spawn(async move {
            let result = deliver(&http, &o, &metrics).await;
            let _ = tx.send(Command::Done(o.key.clone(), result)).await;
        });
    }
}

/// Whether a receiver wants resolved notifications: any integration that does (webhook
/// and PagerDuty default to yes, Slack and email to no, as in Alertmanager).
fn wants_resolved(r: &Receiver) -> bool {
    r.webhook_configs
        .iter()
        .any(|c| c.send_resolved.unwrap_or(true))
        || r.pagerduty_configs
            .iter()
            .any(|c| c.send_resolved.unwrap_or(true))
        || r.slack_configs
            .iter()
            .any(|c| c.send_resolved.unwrap_or(false))
        || r.email_configs
            .iter()
            .any(|c| c.send_resolved.unwrap_or(false))
}

/// A notification's key: a hash of its group and receiver, and the decision's time.
fn group_key_id(group_key: &str, receiver: &str, at_ms: i64) -> String {
    let mut l = LabelMap::new();
    l.insert(group_key.to_string(), receiver.to_string());
    format!("{:016x}-{at_ms}", fingerprint(&l))
}

/// Posts one notification until it is accepted, refused for good, or [`GIVE_UP_AFTER`]
/// has passed since it was decided.
async fn deliver(http: &ureq::Agent, o: &Outgoing, metrics: &Metrics) -> Result<(), String> {
    let mut backoff = FIRST_BACKOFF;
    let deadline = o.created_ms + GIVE_UP_AFTER.as_millis() as i64;
    let shown = crate::metrics::redact_url(&o.url);
    loop {
        if let Some(smtp) = o.smtp.clone() {
            let body = o.body.clone();
            let r = tokio::task::spawn_blocking(move || send_email(&smtp, &body))
                .await
                .unwrap_or_else(|e| Err((true, e.to_string())));
            match r {
                Ok(()) => return Ok(()),
                Err((retry, e)) => {
                    metrics.notification_attempt_failed(&o.receiver, &o.integration);
                    if !retry || outpost_service::now_ms() + backoff.as_millis() as i64 > deadline {
                        tracing::error!(receiver = %o.receiver, smarthost = %shown, key = %o.key, "email not sent, given up: {e}");
                        return Err(e);
                    }
                    tracing::warn!(receiver = %o.receiver, smarthost = %shown, key = %o.key, "email failed, retrying in {backoff:?}: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        let (agent, url, body, key, headers) = (
            http.clone(),
            o.url.clone(),
            o.body.clone(),
            o.key.clone(),
            o.headers.clone(),
        );
        let r = tokio::task::spawn_blocking(move || {
            let mut req = agent
                .post(&url)
                .header("Content-Type", "application/json")
                .header("User-Agent", concat!("Outpost/", env!("CARGO_PKG_VERSION")))
                .header("Idempotency-Key", &key);
            for (k, v) in &headers {
                req = req.header(k, v);
            }
            match req.send(body.as_str()) {
                Ok(resp) if resp.status().is_success() => Ok(()),
                Ok(mut resp) => {
                    let code = resp.status().as_u16();
                    let text = resp.body_mut().read_to_string().unwrap_or_default();
                    let retry = code >= 500 || code == 408 || code == 429;
                    Err((retry, format!("HTTP {code}: {}", text.trim())))
                }
                Err(e) => Err((true, e.to_string())),
            }
        })
        .await
        .unwrap_or_else(|e| Err((true, e.to_string())));
        match r {
            Ok(()) => return Ok(()),
            Err((retry, e)) => {
                metrics.notification_attempt_failed(&o.receiver, &o.integration);
                if !retry {
                    tracing::error!(receiver = %o.receiver, url = %shown, key = %o.key, "notification refused, not retried: {e}");
                    return Err(e);
                }
                if outpost_service::now_ms() + backoff.as_millis() as i64 > deadline {
                    tracing::error!(receiver = %o.receiver, url = %shown, key = %o.key, "notification given up after {GIVE_UP_AFTER:?}: {e}");
                    return Err(e);
                }
                tracing::warn!(receiver = %o.receiver, url = %shown, key = %o.key, "notification failed, retrying in {backoff:?}: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The rules engine's alerts as the pipeline takes them: external labels added, firing ones
/// ending at their `valid_until` (as Prometheus sends them to Alertmanager).
pub fn from_rules(
    alerts: &[outpost_alerting::AlertToSend],
    external_labels: &LabelMap,
    external_url: &str,
) -> Vec<DispatchedAlert> {
    alerts
        .iter()
        .map(|a| {
            let mut labels = a.alert.labels.clone();
            for (k, v) in external_labels {
                labels.entry(k.clone()).or_insert_with(|| v.clone());
            }
            DispatchedAlert {
                labels,
                annotations: a.alert.annotations.clone(),
                starts_at_ms: a.alert.fired_at_ms.unwrap_or(a.alert.active_at_ms),
                ends_at_ms: a.alert.ends_at_ms().unwrap_or(i64::MAX),
                generator_url: crate::rules::generator_url(external_url, &a.expr),
            }
        })
        .collect()
}

/// A time as RFC 1123 with a numeric zone, UTC (`Mon, 02 Jan 2006 15:04:05 +0000`), as
/// email `Date:` headers are written.
fn rfc1123(ms: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let iso = crate::http::rfc3339(ms);
    let (y, m, d) = (&iso[0..4], &iso[5..7], &iso[8..10]);
    let day = DAYS[ms.div_euclid(86_400_000).rem_euclid(7) as usize];
    let month = MONTHS[m.parse::<usize>().unwrap_or(1).clamp(1, 12) - 1];
    format!("{day}, {d} {month} {y} {} +0000", &iso[11..19])
}

/// Sends one email through its smarthost (STARTTLS when required); the error says whether
/// to retry (a refusal of the message or its recipients is final).
fn send_email(s: &SmtpSend, mime: &str) -> Result<(), (bool, String)> {
    use lettre::Transport;
    use lettre::address::Envelope;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    use lettre::transport::smtp::extension::ClientId;
    let (host, port) = match s.smarthost.rsplit_once(':') {
        Some((h, p)) => (
            h.to_string(),
            p.parse::<u16>()
                .map_err(|_| (false, format!("bad smarthost {:?}", s.smarthost)))?,
        ),
        None => (s.smarthost.clone(), 25),
    };
    let mut b = lettre::SmtpTransport::builder_dangerous(&host)
        .port(port)
        .hello_name(ClientId::Domain(s.hello.clone()))
        .timeout(Some(SEND_TIMEOUT));
    if s.require_tls {
        let tls = TlsParameters::new(host.clone()).map_err(|e| (false, e.to_string()))?;
        b = b.tls(Tls::Required(tls));
    }
    if !s.username.is_empty() {
        b = b.credentials(Credentials::new(s.username.clone(), s.password.clone()));
    }
    let parse = |a: &str| {
        a.parse::<lettre::Address>()
            .map_err(|e| (false, format!("address {a:?}: {e}")))
    };
    let to =
        s.to.iter()
            .map(|a| parse(a))
            .collect::<Result<Vec<_>, _>>()?;
    let envelope = Envelope::new(Some(parse(&s.from)?), to).map_err(|e| (false, e.to_string()))?;
    b.build()
        .send_raw(&envelope, mime.as_bytes())
        .map(|_| ())
        .map_err(|e| (!e.is_permanent(), e.to_string()))
}
