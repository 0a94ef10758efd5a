//! Alert and recording rules: the thin shell around `outpost-alerting`.
//!
//! One task owns every rule group. It sleeps until the next group is due (Prometheus'
//! slotting, [`Group::next_eval_ms`]), evaluates it on a blocking thread with the PromQL
//! engine over the store, and writes each rule's samples (recorded series, `ALERTS`,
//! `ALERTS_FOR_STATE`, stale markers) through the ingest writer, waiting for each commit
//! before the next rule runs, so the next rule sees them. After each evaluation the group's
//! state is stored (JSON, one metadata key per group under [`STATE_PREFIX`]) so that, after a
//! crash, a firing alert keeps its `activeAt`. Alerts due to be sent go to the
//! [`Notifier`], which posts them to every Alertmanager.
//!
//! Late and missing data, the choices made: a group is evaluated once per slot on what has
//! arrived by then, and a past slot is not evaluated again when an agent's backlog lands
//! in it later (the backlog shows in the next evaluations' windows, and in `rules replay`).
//! Missing data is not read as "resolved": an active alert whose `agent` label names an
//! agent that is cut off (not connected, silent for `cut_off_after`, or without data since
//! it reconnected) is held as it is, firing or pending, its `ALERTS` still written, for up
//! to `cut_off_hold` after the agent was last heard from; then the agent's data decides
//! again. Alerts that aggregate the agent away carry no `agent` label and are evaluated as
//! Prometheus would.
//!
//! Rule files are re-read on SIGHUP (with the rest of the config), on `POST /-/reload` and
//! when a file's modification time changes; a file with problems is refused as a whole,
//! each problem logged with file, line and reason, and the running rules are kept. State
//! carries across a reload by group and rule.

use crate::config::Config;
use crate::connections::Connections;
use crate::http::rfc3339_nano;
use crate::ingest::{SeriesWrite, WriterMsg};
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use outpost_alerting::rule::LabelMap;
use outpost_alerting::{
    AlertToSend, Group, GroupOptions, GroupState, RestorePolicy, RuleFile, SeriesSample,
    engine_query, parse_rule_file,
};
use outpost_shared::Point;
use outpost_synthetic::CheckDef;
use outpost_tsdb::Storage;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot, watch};

/// Key prefix of the groups' stored state; the file name, a NUL and the group name follow.
pub const STATE_PREFIX: &[u8] = b"alerting/";

/// How often rule files are checked for changes.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Expands `patterns` (globs allowed) and reads and validates every rule file, in pattern
/// order, each file once.
///
/// # Errors
/// Every problem, as the alerting crate words them (file, line, group, rule), and files
/// that cannot be read or patterns that are not valid globs.
pub fn load_files(patterns: &[String]) -> Result<Vec<RuleFile>, Vec<String>> {
    let mut problems = Vec::new();
    let mut out = Vec::new();
    let paths = expand(patterns)?;
    for p in paths {
        let name = p.display().to_string();
        match std::fs::read_to_string(&p) {
            Err(e) => problems.push(format!("{name}: cannot read: {e}")),
            Ok(text) => match parse_rule_file(&name, &text) {
                Ok(f) => out.push(f),
                Err(ps) => problems.extend(ps.iter().map(ToString::to_string)),
            },
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// The files `patterns` name: a glob's matches in name order; a plain path as it is (it
/// must exist).
fn expand(patterns: &[String]) -> Result<Vec<PathBuf>, Vec<String>> {
    let mut problems = Vec::new();
    let mut out: Vec<PathBuf> = Vec::new();
    for pat in patterns {
        if pat.contains(['*', '?', '[']) {
            match glob::glob(pat) {
                Err(e) => problems.push(format!("{pat}: not a valid pattern: {e}")),
                Ok(paths) => {
                    let mut found: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
                    found.sort();
                    for f in found {
                        if f.is_file() && !out.contains(&f) {
                            out.push(f);
                        }
                    }
                }
            }
        } else {
            let p = PathBuf::from(pat);
            if !p.exists() {
                problems.push(format!("{pat}: no such file"));
            } else if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// What the files matched by `patterns` are and when each last changed.
fn fingerprint(patterns: &[String]) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    expand(patterns)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let m = std::fs::metadata(&p).ok();
            let mtime = m.as_ref().and_then(|m| m.modified().ok());
            let len = m.map(|m| m.len()).unwrap_or(0);
            (p, mtime, len)
        })
        .collect()
}

/// The `[alerting]` settings rules run with.
#[derive(Clone, Debug)]
pub struct Settings {
    pub patterns: Vec<String>,
    pub opts: GroupOptions,
    pub alertmanagers: Vec<String>,
    /// How long alerts of a cut-off agent are held, ms (0: never).
    pub cut_off_hold_ms: i64,
    /// Silence, ms, after which a connected agent counts as cut off.
    pub cut_off_after_ms: i64,
    /// The `for` of the built-in `OutpostAgentDown` alert; `None` when it is disabled.
    pub agent_down_for: Option<Duration>,
}

/// Where the rules learn which agents are cut off.
#[derive(Clone)]
pub struct AgentState {
    pub connections: Arc<Connections>,
    pub ledger: Arc<Mutex<Ledger>>,
}

/// Label naming the agent a series came from; alerts carrying it can be held.
pub const AGENT_LABEL: &str = "agent";

impl AgentState {
    /// Agents whose data is not in: known to the ledger, heard from within `hold_ms` of
    /// `now_ms`, and either not connected, silent for more than `after_ms`, or without a
    /// batch written since they reconnected.
    pub fn cut_off(&self, now_ms: i64, hold_ms: i64, after_ms: i64) -> HashSet<String> {
        if hold_ms <= 0 {
            return HashSet::new();
        }
        // Only the agents heard from within the hold are copied out of the ledger.
        let recent: Vec<(String, i64)> = self
            .ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_seen()
            .filter(|&(_, seen)| now_ms - seen < hold_ms)
            .map(|(id, seen)| (id.to_string(), seen))
            .collect();
        recent
            .into_iter()
            .filter(|(id, seen)| {
                now_ms - seen > after_ms
                    || self
                        .connections
                        .connected_since(id)
                        .is_none_or(|since| *seen < since)
            })
            .map(|(id, _)| id)
            .collect()
    }
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Settings {
        let external_labels: LabelMap = cfg.alerting.external_labels.clone();
        Settings {
            patterns: cfg.alerting.rule_files.clone(),
            opts: GroupOptions {
                default_interval_ms: cfg.alerting.evaluation_interval.get().as_millis() as i64,
                external_labels,
                external_url: cfg.external_url(),
                ..GroupOptions::default()
            },
            alertmanagers: cfg.alerting.alertmanagers.clone(),
            cut_off_hold_ms: cfg.alerting.cut_off_hold.get().as_millis() as i64,
            cut_off_after_ms: cfg.alerting.cut_off_after.get().as_millis() as i64,
            agent_down_for: cfg
                .alerting
                .agent_down_alert
                .then(|| cfg.alerting.agent_down_for.get()),
        }
    }
}

/// A group as the API shows it: the group after its last evaluation, with timings.
#[derive(Clone, Debug)]
pub struct GroupView {
    pub group: Group,
    /// How long the last evaluation took, s.
    pub eval_seconds: f64,
    /// How long each rule took at the last evaluation, s.
    pub rule_seconds: Vec<f64>,
    /// When the last evaluation started (wall clock), ms.
    pub last_eval_wall_ms: Option<i64>,
    /// The slot the group is evaluated at next, ms (`None` until scheduled).
    due_ms: Option<i64>,
}

impl GroupView {
    fn new(group: Group) -> Self {
        let n = group.rules().len();
        GroupView {
            group,
            eval_seconds: 0.0,
            rule_seconds: vec![0.0; n],
            last_eval_wall_ms: None,
            due_ms: None,
        }
    }
}

type ReloadReply = oneshot::Sender<Result<usize, String>>;

/// The running rules: what the API reads, and the way to ask for a reload.
pub struct Rules {
    view: RwLock<Arc<Vec<Arc<GroupView>>>>,
    reload: mpsc::Sender<(Option<Settings>, ReloadReply)>,
}

impl Rules {
    /// The groups as of their last evaluation, in file order.
    pub fn groups(&self) -> Arc<Vec<Arc<GroupView>>> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Shows every group as it stands (after a start or reload).
    fn publish(&self, groups: &[GroupView]) {
        let all = groups.iter().cloned().map(Arc::new).collect();
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(all);
    }

    /// Shows group `i` as it stands after an evaluation; the others keep their snapshots.
    fn publish_one(&self, i: usize, group: &GroupView) {
        let mut view = self.view.write().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<Arc<GroupView>> = view.as_ref().clone();
        if let Some(slot) = all.get_mut(i) {
            *slot = Arc::new(group.clone());
        }
        *view = Arc::new(all);
    }

    /// Re-reads the rule files (with `settings`, or the running ones); returns how many
    /// groups run now.
    ///
    /// # Errors
    /// The files' problems, one a line; the running rules are kept.
    pub async fn reload(&self, settings: Option<Settings>) -> Result<usize, String> {
        let (tx, rx) = oneshot::channel();
        self.reload
            .send((settings, tx))
            .await
            .map_err(|_| "the rules are not running".to_string())?;
        rx.await
            .map_err(|_| "the rules are not running".to_string())?
    }
}

fn state_key(file: &str, name: &str) -> Vec<u8> {
    let mut k = STATE_PREFIX.to_vec();
    k.extend_from_slice(file.as_bytes());
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k
}

/// The groups of the rule files, then the generated ones (check alerts and the agent-down
/// alert, [`crate::check_alerts::rule_file`]).
fn build(
    files: &[RuleFile],
    checks: &[CheckDef],
    settings: &Settings,
) -> Result<Vec<GroupView>, String> {
    let generated = crate::check_alerts::rule_file(checks, settings.agent_down_for)?;
    Ok(files
        .iter()
        .chain(generated.as_ref())
        .flat_map(|f| Group::from_file(f, &settings.opts))
        .map(GroupView::new)
        .collect())
}

/// Loads the rule files, adds the groups generated from `checks` (and regenerates them
/// whenever `checks` changes), restores the groups' stored state and starts evaluating.
///
/// # Errors
/// The rule files have problems, or the stored state cannot be read.
pub fn start(
    storage: Arc<Storage>,
    writer: mpsc::Sender<WriterMsg>,
    agents: AgentState,
    settings: Settings,
    mut checks: watch::Receiver<Arc<Vec<CheckDef>>>,
    metrics: Arc<Metrics>,
    notifications: Option<crate::notify::Notifications>,
    stop: watch::Receiver<bool>,
) -> Result<(Arc<Rules>, tokio::task::JoinHandle<()>), String> {
    let files = load_files(&settings.patterns).map_err(|p| p.join("\n"))?;
    let defs = checks.borrow_and_update().clone();
    let mut groups = build(&files, &defs, &settings)?;
    let stored = storage.meta(STATE_PREFIX).map_err(|e| e.to_string())?;
    let mut states: BTreeMap<Vec<u8>, GroupState> = BTreeMap::new();
    for (k, v) in stored {
        match serde_json::from_slice::<GroupState>(&v) {
            Ok(s) => {
                states.insert(k, s);
            }
            Err(e) => tracing::warn!(
                key = %String::from_utf8_lossy(&k),
                "skipping stored rule group state: {e}"
            ),
        }
    }
    let now = outpost_service::now_ms();
    let mut restored = 0;
    for g in &mut groups {
        if let Some(s) = states.remove(&state_key(g.group.file(), g.group.name())) {
            g.group
                .restore_after_restart(s, now, &RestorePolicy::default());
            restored += 1;
        }
    }
    let (tx, rx) = mpsc::channel(8);
    let rules = Arc::new(Rules {
        view: RwLock::new(Arc::new(groups.iter().cloned().map(Arc::new).collect())),
        reload: tx,
    });
    let notifier = Notifier::spawn(settings.alertmanagers.clone(), metrics.clone());
    tracing::info!(groups = groups.len(), restored, "rules loaded");
    let runner = Runner {
        storage,
        writer,
        agents,
        files,
        checks,
        settings: settings.clone(),
        fingerprint: fingerprint(&settings.patterns),
        groups,
        rules: rules.clone(),
        notifier,
        notifications,
        metrics,
    };
    Ok((rules, tokio::spawn(runner.run(rx, stop))))
}

struct Runner {
    storage: Arc<Storage>,
    writer: mpsc::Sender<WriterMsg>,
    agents: AgentState,
    /// The rule files as last loaded.
    files: Vec<RuleFile>,
    /// The running checks, whose alerts are generated rules.
    checks: watch::Receiver<Arc<Vec<CheckDef>>>,
    settings: Settings,
    fingerprint: Vec<(PathBuf, Option<SystemTime>, u64)>,
    groups: Vec<GroupView>,
    rules: Arc<Rules>,
    notifier: Notifier,
    /// The aggregator's own notification pipeline, when `[alerting] notifications` is set.
    notifications: Option<crate::notify::Notifications>,
    metrics: Arc<Metrics>,
}

/// When `g` is due next, seen at `now_ms`: its next slot (before its first evaluation, the
/// slot after the one preceding `now_ms`, as Prometheus' group loop starts), or, when
/// evaluations were missed (after a restart or a stall), the latest slot not after now.
fn due_ms(g: &Group, now_ms: i64) -> i64 {
    let next = g.next_eval_ms(now_ms);
    if next + g.interval_ms() <= now_ms {
        g.eval_timestamp_ms(now_ms)
    } else {
        next
    }
}

/// Sets every group's due time that is not set yet; kept until the group is evaluated, so
/// the first slot is not moved ahead by the wait for it.
fn schedule(groups: &mut [GroupView], now_ms: i64) {
    for g in groups.iter_mut().filter(|g| g.due_ms.is_none()) {
        g.due_ms = Some(due_ms(&g.group, now_ms));
    }
}

impl Runner {
    async fn run(
        mut self,
        mut reloads: mpsc::Receiver<(Option<Settings>, ReloadReply)>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut next_watch = Instant::now() + WATCH_EVERY;
        loop {
            let now = outpost_service::now_ms();
            schedule(&mut self.groups, now);
            let next = self.groups.iter().filter_map(|g| g.due_ms).min();
            let wait = next
                .map(|n| Duration::from_millis((n - now).max(0) as u64))
                .unwrap_or(WATCH_EVERY)
                .min(next_watch.saturating_duration_since(Instant::now()));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                r = reloads.recv() => {
                    let Some((settings, reply)) = r else { return };
                    let _ = reply.send(self.reload(settings));
                    continue;
                }
                Ok(()) = self.checks.changed() => {
                    let defs = self.checks.borrow_and_update().clone();
                    let (files, settings) = (self.files.clone(), self.settings.clone());
                    match self.regroup(files, &defs, settings) {
                        Ok(n) => tracing::info!(groups = n, "the checks changed: check alerts regenerated"),
                        Err(e) => tracing::error!("the checks changed but their alerts could not be generated, the running rules are kept: {e}"),
                    }
                    continue;
                }
                _ = stop.wait_for(|v| *v) => return,
            }
            if Instant::now() >= next_watch {
                next_watch = Instant::now() + WATCH_EVERY;
                let fp = fingerprint(&self.settings.patterns);
                if fp != self.fingerprint {
                    tracing::info!("a rule file changed: reloading the rules");
                    let _ = self.reload(None);
                }
            }
            let now = outpost_service::now_ms();
            schedule(&mut self.groups, now);
            for i in 0..self.groups.len() {
                let Some(ts) = self.groups[i].due_ms.filter(|&ts| ts <= now) else {
                    continue;
                };
                if *stop.borrow() {
                    return;
                }
                self.eval(i, ts).await;
            }
        }
    }

    /// Re-reads the rule files; on success the new groups take over the old ones' state.
    fn reload(&mut self, settings: Option<Settings>) -> Result<usize, String> {
        let settings = settings.unwrap_or_else(|| self.settings.clone());
        let fp = fingerprint(&settings.patterns);
        let files = match load_files(&settings.patterns) {
            Ok(f) => f,
            Err(problems) => {
                for p in &problems {
                    tracing::error!("rule reload refused, the running rules are kept: {p}");
                }
                self.metrics.rule_reload(false);
                // Not retried until a file changes again.
                self.fingerprint = fp;
                return Err(problems.join("\n"));
            }
        };
        let defs = self.checks.borrow().clone();
        self.regroup(files, &defs, settings).inspect_err(|e| {
            tracing::error!("rule reload refused, the running rules are kept: {e}");
            self.metrics.rule_reload(false);
        })?;
        self.fingerprint = fp;
        self.metrics.rule_reload(true);
        Ok(self.groups.len())
    }

    /// Replaces the groups with those of `files` plus the generated ones; each new group
    /// takes over the state of the old group of the same file and name.
    fn regroup(
        &mut self,
        files: Vec<RuleFile>,
        checks: &[CheckDef],
        settings: Settings,
    ) -> Result<usize, String> {
        let mut groups = build(&files, checks, &settings)?;
        for g in &mut groups {
            if let Some(old) = self
                .groups
                .iter()
                .find(|o| o.group.file() == g.group.file() && o.group.name() == g.group.name())
            {
                g.group.restore(old.group.state());
                g.last_eval_wall_ms = old.last_eval_wall_ms;
                g.eval_seconds = old.eval_seconds;
                if g.group.interval_ms() == old.group.interval_ms() {
                    g.due_ms = old.due_ms;
                }
            }
        }
        if settings.alertmanagers != self.settings.alertmanagers {
            self.notifier
                .set_alertmanagers(settings.alertmanagers.clone());
        }
        let n = groups.len();
        tracing::info!(groups = n, "rules reloaded");
        self.groups = groups;
        self.files = files;
        self.settings = settings;
        // Groups that are gone leave no gauges behind; the running ones set theirs again at
        // their next evaluation.
        self.metrics.rule_group_last_duration.clear();
        self.metrics.rule_group_last_evaluation.clear();
        self.metrics.rule_group_rules.clear();
        self.rules.publish(&self.groups);
        Ok(n)
    }

    /// Evaluates group `i` at `ts`, stores its state and hands its due alerts out.
    async fn eval(&mut self, i: usize, ts: i64) {
        let mut group = self.groups[i].group.clone();
        let storage = self.storage.clone();
        let writer = self.writer.clone();
        let wall = outpost_service::now_ms();
        let mut cut_off = self.agents.cut_off(
            wall,
            self.settings.cut_off_hold_ms,
            self.settings.cut_off_after_ms,
        );
        self.metrics.rule_cut_off_agents.set(cut_off.len() as i64);
        // The generated rules are about agents being cut off: nothing of theirs is held.
        if group.file() == crate::check_alerts::GENERATED_FILE {
            cut_off.clear();
        }
        let done = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let (report, rule_seconds) = eval_group(&mut group, ts, &storage, &writer, &cut_off);
            let eval_seconds = t.elapsed().as_secs_f64();
            let stored = store_state(&group, &writer);
            (group, report, rule_seconds, eval_seconds, stored)
        })
        .await;
        let Ok((group, report, rule_seconds, eval_seconds, stored)) = done else {
            tracing::error!("rule group evaluation panicked");
            let slot = &mut self.groups[i];
            slot.due_ms = Some(ts + slot.group.interval_ms());
            return;
        };
        if let Err(e) = stored {
            tracing::error!(
                file = group.file(),
                group = group.name(),
                "cannot store the rule group's state (kept in memory): {e}"
            );
        }
        let label = crate::metrics::RuleGroupLabel {
            rule_group: format!("{};{}", group.file(), group.name()),
        };
        let m = &self.metrics;
        m.rule_group_last_duration
            .get_or_create(&label)
            .set(eval_seconds);
        m.rule_group_last_evaluation
            .get_or_create(&label)
            .set(ts as f64 / 1000.0);
        m.rule_group_rules
            .get_or_create(&label)
            .set(report.rules.len() as i64);
        m.rule_evaluations
            .get_or_create(&label)
            .inc_by(report.rules.len() as u64);
        let failures = m.rule_evaluation_failures.get_or_create(&label);
        for r in &report.rules {
            if r.error.is_some() {
                failures.inc();
                tracing::debug!(rule = %r.name, "rule evaluation failed: {}", r.error.as_deref().unwrap_or_default());
            }
        }
        if !report.to_send.is_empty() {
            let payload = alertmanager_payload(
                &report.to_send,
                &self.settings.opts.external_labels,
                &self.settings.opts.external_url,
                group.slot_sub_ms_ns(),
            );
            self.notifier.send(payload, report.to_send.len());
            if let Some(n) = &self.notifications {
                n.alerts(crate::notify::from_rules(
                    &report.to_send,
                    &self.settings.opts.external_labels,
                    &self.settings.opts.external_url,
                ));
            }
        }
        let slot = &mut self.groups[i];
        slot.group = group;
        slot.eval_seconds = eval_seconds;
        slot.rule_seconds = rule_seconds;
        slot.last_eval_wall_ms = Some(wall);
        slot.due_ms = Some(due_ms(&slot.group, outpost_service::now_ms()));
        self.rules.publish_one(i, &self.groups[i]);
    }
}

/// One evaluation on this (blocking) thread: queries through the engine, each rule's samples
/// written through the ingest writer before the next rule. Returns the report and each
/// rule's time, s.
fn eval_group(
    group: &mut Group,
    ts: i64,
    storage: &Arc<Storage>,
    writer: &mpsc::Sender<WriterMsg>,
    cut_off: &HashSet<String>,
) -> (outpost_alerting::EvalReport, Vec<f64>) {
    let engine = engine_query(storage.as_ref());
    let exprs: Vec<String> = group.rules().iter().map(|r| r.spec.expr.clone()).collect();
    // Each rule starts by querying its own expression: that marks where its time begins.
    let starts: RefCell<Vec<Instant>> = RefCell::new(Vec::with_capacity(exprs.len()));
    let next_rule = Cell::new(0usize);
    let query = |text: &str, t: i64| {
        let i = next_rule.get();
        if exprs.get(i).is_some_and(|e| e == text) {
            starts.borrow_mut().push(Instant::now());
            next_rule.set(i + 1);
        }
        engine(text, t)
    };
    let mut append = |batch: &[SeriesSample]| -> Result<(), String> {
        if batch.is_empty() {
            return Ok(());
        }
        let write: SeriesWrite = batch
            .iter()
            .map(|s| {
                (
                    s.labels.clone(),
                    vec![Point {
                        ts: s.ts,
                        value: s.value,
                    }],
                )
            })
            .collect();
        let (tx, rx) = oneshot::channel();
        writer
            .blocking_send(WriterMsg::RuleWrite(write, tx))
            .map_err(|_| "the aggregator is shutting down".to_string())?;
        rx.blocking_recv()
            .map_err(|_| "the aggregator is shutting down".to_string())?
    };
    let held = |labels: &LabelMap| labels.get(AGENT_LABEL).is_some_and(|a| cut_off.contains(a));
    let report = group.eval_holding(
        ts,
        &query,
        &mut append,
        (!cut_off.is_empty()).then_some(&held as &outpost_alerting::HeldFn<'_>),
    );
    let end = Instant::now();
    let starts = starts.into_inner();
    let mut secs = vec![0.0; exprs.len()];
    if starts.len() == exprs.len() {
        for (k, s) in starts.iter().enumerate() {
            let e = starts.get(k + 1).copied().unwrap_or(end);
            secs[k] = e.saturating_duration_since(*s).as_secs_f64();
        }
    }
    (report, secs)
}

fn store_state(group: &Group, writer: &mpsc::Sender<WriterMsg>) -> Result<(), String> {
    let json = serde_json::to_vec(&group.state()).map_err(|e| e.to_string())?;
    let (tx, rx) = oneshot::channel();
    writer
        .blocking_send(WriterMsg::Meta(
            vec![(state_key(group.file(), group.name()), json)],
            tx,
        ))
        .map_err(|_| "the aggregator is shutting down".to_string())?;
    rx.blocking_recv()
        .map_err(|_| "the aggregator is shutting down".to_string())?
}

/// The link Prometheus puts in `generatorURL`: the expression in the console's table view.
pub fn generator_url(external_url: &str, expr: &str) -> String {
    format!(
        "{}/graph?g0.expr={}&g0.tab=1",
        external_url.trim_end_matches('/'),
        outpost_alerting::template::query_escape(expr)
    )
}

/// Alerts in Alertmanager's v2 `PostableAlerts` JSON, as Prometheus' notifier sends them:
/// `startsAt` when the alert fired, `endsAt` when it resolved or until when this send is
/// valid, external labels added where the alert lacks them. `ns` is the group's
/// sub-millisecond slot offset ([`Group::slot_sub_ms_ns`]), as Prometheus' times carry it.
pub fn alertmanager_payload(
    alerts: &[AlertToSend],
    external_labels: &LabelMap,
    external_url: &str,
    ns: u32,
) -> String {
    let items: Vec<serde_json::Value> = alerts
        .iter()
        .map(|a| {
            let mut labels = a.alert.labels.clone();
            for (k, v) in external_labels {
                labels.entry(k.clone()).or_insert_with(|| v.clone());
            }
            let mut v = serde_json::json!({
                "labels": labels,
                "annotations": a.alert.annotations,
                "startsAt": rfc3339_nano(a.alert.fired_at_ms.unwrap_or(a.alert.active_at_ms), ns),
                "generatorURL": generator_url(external_url, &a.expr),
            });
            if let Some(e) = a.alert.ends_at_ms() {
                v["endsAt"] = serde_json::Value::String(rfc3339_nano(e, ns));
            }
            v
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

/// Posts alerts to every Alertmanager, one payload at a time, retrying with backoff.
pub struct Notifier {
    tx: mpsc::Sender<(Arc<String>, usize)>,
    alertmanagers: Arc<RwLock<Vec<String>>>,
    metrics: Arc<Metrics>,
}

/// Sends queued before new ones are dropped (and counted).
const NOTIFY_QUEUE: usize = 1000;
/// Attempts per payload and Alertmanager; waits between them double from the first.
const NOTIFY_ATTEMPTS: u32 = 4;
const NOTIFY_FIRST_BACKOFF: Duration = Duration::from_millis(500);
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

impl Notifier {
    fn spawn(alertmanagers: Vec<String>, metrics: Arc<Metrics>) -> Notifier {
        let (tx, mut rx) = mpsc::channel::<(Arc<String>, usize)>(NOTIFY_QUEUE);
        let ams = Arc::new(RwLock::new(alertmanagers));
        for a in ams.read().unwrap_or_else(|p| p.into_inner()).iter() {
            metrics.notification(a, 0, true);
            metrics.notification(a, 0, false);
        }
        let (list, m) = (ams.clone(), metrics.clone());
        tokio::spawn(async move {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(NOTIFY_TIMEOUT))
                .http_status_as_error(false)
                .build()
                .into();
            while let Some((body, n)) = rx.recv().await {
                let targets = list.read().unwrap_or_else(|p| p.into_inner()).clone();
                let sends = targets.into_iter().map(|am| {
                    let (agent, body, m) = (agent.clone(), body.clone(), m.clone());
                    async move {
                        let ok = post_with_retries(&agent, &am, body).await;
                        m.notification(&am, n as u64, ok);
                    }
                });
                for s in sends.collect::<Vec<_>>() {
                    s.await;
                }
            }
        });
        Notifier {
            tx,
            alertmanagers: ams,
            metrics,
        }
    }

    fn set_alertmanagers(&self, list: Vec<String>) {
        for a in &list {
            self.metrics.notification(a, 0, true);
            self.metrics.notification(a, 0, false);
        }
        *self
            .alertmanagers
            .write()
            .unwrap_or_else(|p| p.into_inner()) = list;
    }

    fn send(&self, payload: String, alerts: usize) {
        if self
            .alertmanagers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            return;
        }
        if self.tx.try_send((Arc::new(payload), alerts)).is_err() {
            self.metrics.notifications_dropped.inc_by(alerts as u64);
            tracing::warn!(alerts, "notification queue full: alerts dropped");
        }
    }
}

async fn post_with_retries(agent: &ureq::Agent, base: &str, body: Arc<String>) -> bool {
    let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
    let mut backoff = NOTIFY_FIRST_BACKOFF;
    for attempt in 1..=NOTIFY_ATTEMPTS {
        let (agent, url2, body2) = (agent.clone(), url.clone(), body.clone());
        let r = tokio::task::spawn_blocking(move || {
            match agent
                .post(&url2)
                .header("Content-Type", "application/json")
                .send(body2.as_str())
            {
                Ok(resp) if resp.status().is_success() => Ok(()),
                Ok(mut resp) => Err(format!(
                    "HTTP {}: {}",
                    resp.status().as_u16(),
                    resp.body_mut().read_to_string().unwrap_or_default().trim()
                )),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match r {
            Ok(()) => return true,
            Err(e) if attempt < NOTIFY_ATTEMPTS => {
                tracing::warn!(alertmanager = %crate::metrics::redact_url(&url), attempt, "sending alerts failed, retrying in {backoff:?}: {e}");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            Err(e) => {
                tracing::error!(alertmanager = %crate::metrics::redact_url(&url), attempt, "sending alerts failed, giving up: {e}");
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_url_escapes_as_go() {
        assert_eq!(
            generator_url("http://h:9470/", "up == 0"),
            "http://h:9470/graph?g0.expr=up+%3D%3D+0&g0.tab=1"
        );
    }

    #[test]
    fn missing_files_and_bad_rules_are_named() {
        let dir = std::env::temp_dir().join(format!("outpost-rules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("bad.yml");
        std::fs::write(
            &f,
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up ==\n",
        )
        .unwrap();
        let p = load_files(&[f.display().to_string()])
            .unwrap_err()
            .join("\n");
        assert!(
            p.contains("bad.yml: 5:") && p.contains("group \"g\", rule 1, \"A\""),
            "{p}"
        );
        let p = load_files(&[dir.join("none.yml").display().to_string()])
            .unwrap_err()
            .join("\n");
        assert!(p.contains("none.yml: no such file"), "{p}");
        assert!(
            load_files(&[dir.join("*.yaml").display().to_string()])
                .unwrap()
                .is_empty()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
