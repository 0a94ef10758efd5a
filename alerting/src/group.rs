//! [`Group`]: a rule group evaluated as Prometheus 2.42's `rules.Group` does, at times the
//! caller passes in.
//!
//! One evaluation ([`Group::eval`]) runs the rules in file order at one timestamp. After
//! each rule, its samples go to the caller's `append` hook *before the next rule runs*, so
//! later rules of the group see earlier results at the same timestamp, as in Prometheus
//! where each rule commits before the next is evaluated. A series a rule wrote at its
//! previous evaluation but not at this one gets a stale marker in the same append. The
//! caller schedules evaluations at [`Group::next_eval_ms`], slotted like Prometheus'
//! `EvalTimestamp` (an offset from a hash of file and group name), so that restarts and
//! several aggregators evaluate a group at the same instants.
//!
//! [`Group::state`] and [`Group::restore`] carry alerts and the series that need stale
//! markers across a reload, matching rules by name and labels as Prometheus' `CopyState`
//! does; [`Group::restore_after_restart`] also accounts for the downtime as Prometheus'
//! `RestoreForState` does (firing alerts keep `active_at`, pending ones their progress
//! toward `for`, with a grace period and an outage tolerance).

use crate::query::QueryFn;
use crate::rule::{Alert, AlertState, EvalContext, Health, LabelMap, Rule, RuleBody, SeriesSample};
use crate::rulefile::{GroupSpec, RuleFile, RuleKind};
use crate::xxhash::xxh64;
use outpost_shared::Labels;
use outpost_shared::model::stale_nan;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Settings every group of an aggregator shares.
#[derive(Clone, Debug)]
pub struct GroupOptions {
    /// The interval of groups that set none, ms (Prometheus' `evaluation_interval`,
    /// default 1 min).
    pub default_interval_ms: i64,
    /// How long, ms, before a firing alert is sent again (Prometheus'
    /// `--rules.alert.resend-delay`, default 1 min).
    pub resend_delay_ms: i64,
    /// The aggregator's external labels, for templates.
    pub external_labels: LabelMap,
    /// The aggregator's external URL, for templates.
    pub external_url: String,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            default_interval_ms: 60_000,
            resend_delay_ms: 60_000,
            external_labels: LabelMap::new(),
            external_url: String::new(),
        }
    }
}

/// How one rule's evaluation went.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleOutcome {
    /// The rule's name.
    pub name: String,
    /// `Ok`, or `Err` with [`RuleOutcome::error`].
    pub health: Health,
    /// The query, limit or append error.
    pub error: Option<String>,
    /// Samples written, stale markers not counted.
    pub samples: usize,
}

/// An alert handed out for sending, with the rule it belongs to.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertToSend {
    /// The alerting rule's expression, for the generator URL.
    pub expr: String,
    /// The alert as it stands after this evaluation.
    pub alert: Alert,
}

/// What one group evaluation did.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalReport {
    /// The evaluation time, ms since the Unix epoch.
    pub ts_ms: i64,
    /// One entry per rule, in order.
    pub rules: Vec<RuleOutcome>,
    /// Alerts due to be sent, firing or resolved, per Prometheus' resend rules.
    pub to_send: Vec<AlertToSend>,
}

/// The hook [`Group::eval`] writes samples through, once per rule (and once more for the
/// group's leftover stale series). It must make them visible to the query function before
/// it returns; an `Err` marks the rule unhealthy and keeps its previous series for the
/// next staleness check.
pub type AppendFn<'a> = dyn FnMut(&[SeriesSample]) -> Result<(), String> + 'a;

/// Whether an alert with these labels is held: its source's data for the evaluation time
/// has not arrived (see [`Group::eval_holding`]).
pub type HeldFn<'a> = dyn Fn(&LabelMap) -> bool + 'a;

/// A rule group and the state of its rules.
#[derive(Clone, Debug)]
pub struct Group {
    file: String,
    name: String,
    interval_ms: i64,
    limit: usize,
    rules: Vec<Rule>,
    opts: GroupOptions,
    /// Series of rules no longer in the group, to mark stale at the next evaluation.
    stale_series: Vec<Labels>,
    last_eval_ms: Option<i64>,
}

/// How [`Group::restore_after_restart`] treats the time the aggregator was down, as
/// Prometheus' `--rules.alert.for-outage-tolerance` and `--rules.alert.for-grace-period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestorePolicy {
    /// After a longer outage, ms, pending and firing alerts are not restored but start
    /// over (default 1 h).
    pub outage_tolerance_ms: i64,
    /// The least time, ms, a restored pending alert still waits before firing; rules with
    /// a shorter `for` are restored as they were (default 10 min).
    pub for_grace_period_ms: i64,
}

impl Default for RestorePolicy {
    fn default() -> Self {
        RestorePolicy {
            outage_tolerance_ms: 3_600_000,
            for_grace_period_ms: 600_000,
        }
    }
}

/// A rule's state for persisting (see [`Group::state`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    /// `record` or `alert`.
    pub kind: String,
    /// The rule's name.
    pub name: String,
    /// The rule's labels as written, to match the rule on restore.
    pub labels: LabelMap,
    /// Health of the last evaluation.
    pub health: Health,
    /// Error of the last evaluation.
    pub last_error: Option<String>,
    /// Time of the last evaluation, ms.
    pub last_eval_ms: Option<i64>,
    /// The alerts of an alerting rule, resolved ones included.
    pub alerts: Vec<Alert>,
    /// The series the last evaluation wrote.
    pub series_in_previous_eval: Vec<LabelMap>,
}

/// A group's state for persisting: serialise it, and give it to [`Group::restore`] after a
/// restart or reload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    /// The rule file.
    pub file: String,
    /// The group's name.
    pub name: String,
    /// Time of the last evaluation, ms.
    pub last_eval_ms: Option<i64>,
    /// One per rule, in order.
    pub rules: Vec<RuleState>,
    /// Series still to be marked stale.
    pub stale_series: Vec<LabelMap>,
}

fn to_map(l: &Labels) -> LabelMap {
    l.iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect()
}

fn from_map(m: &LabelMap) -> Labels {
    Labels::new(m.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

impl Group {
    /// A group of `file` that has not been evaluated.
    pub fn new(file: &str, spec: GroupSpec, opts: GroupOptions) -> Self {
        Group {
            file: file.to_string(),
            name: spec.name,
            interval_ms: spec.interval_ms.unwrap_or(opts.default_interval_ms),
            limit: spec.limit,
            rules: spec.rules.into_iter().map(Rule::new).collect(),
            opts,
            stale_series: Vec::new(),
            last_eval_ms: None,
        }
    }

    /// Every group of a rule file.
    pub fn from_file(file: &RuleFile, opts: &GroupOptions) -> Vec<Group> {
        file.groups
            .iter()
            .map(|g| Group::new(&file.file, g.clone(), opts.clone()))
            .collect()
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rule file's name.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The evaluation interval, ms.
    pub fn interval_ms(&self) -> i64 {
        self.interval_ms
    }

    /// The most series or alerts a rule may produce in one evaluation (0: no limit).
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The rules and their state.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// When the group was last evaluated, ms.
    pub fn last_eval_ms(&self) -> Option<i64> {
        self.last_eval_ms
    }

    /// Prometheus' group hash: XXH64 of the label set `{file, name}` as
    /// `labels.Labels.Hash` lays it out.
    pub fn hash(&self) -> u64 {
        let mut b = Vec::new();
        for (n, v) in [("file", &self.file), ("name", &self.name)] {
            b.extend_from_slice(n.as_bytes());
            b.push(0xff);
            b.extend_from_slice(v.as_bytes());
            b.push(0xff);
        }
        xxh64(&b)
    }

    /// The slotted evaluation time at or before `start_ms` (Prometheus'
    /// `Group.EvalTimestamp`, computed in nanoseconds as Prometheus does and truncated to
    /// ms as its samples are): `base + offset`, where `offset = hash % interval`.
    pub fn eval_timestamp_ms(&self, start_ms: i64) -> i64 {
        let interval = i128::from(self.interval_ms.max(1)) * 1_000_000;
        let offset = i128::from(self.hash()) % interval;
        let adj = i128::from(start_ms) * 1_000_000 - offset;
        let base = adj - adj.rem_euclid(interval);
        ((base + offset).div_euclid(1_000_000)) as i64
    }

    /// The nanoseconds past the millisecond of every slot of this group: Prometheus keeps
    /// evaluation times in nanoseconds and shows them so (`activeAt`, `startsAt`), while
    /// samples and this crate's times are whole milliseconds.
    pub fn slot_sub_ms_ns(&self) -> u32 {
        let interval = u128::from(self.interval_ms.max(1) as u64) * 1_000_000;
        ((u128::from(self.hash()) % interval) % 1_000_000) as u32
    }

    /// When to evaluate next, after `now_ms`: one interval after the previous evaluation,
    /// or, before the first, one interval after the slot preceding `now_ms` (as
    /// Prometheus' group loop starts).
    pub fn next_eval_ms(&self, now_ms: i64) -> i64 {
        match self.last_eval_ms {
            Some(t) => t + self.interval_ms,
            None => self.eval_timestamp_ms(now_ms) + self.interval_ms,
        }
    }

    /// Evaluates every rule at `ts_ms` through `query`, writing each rule's samples and
    /// stale markers through `append` before the next rule runs.
    pub fn eval(
        &mut self,
        ts_ms: i64,
        query: &QueryFn<'_>,
        append: &mut AppendFn<'_>,
    ) -> EvalReport {
        self.eval_holding(ts_ms, query, append, None)
    }

    /// [`Group::eval`], where an active alert that the expression no longer returns is
    /// *held* (kept as it is: not resolved, not advanced, its `ALERTS` still written) while
    /// `held` says its labels belong to a source whose data is not in yet, such as an agent
    /// that is cut off. Prometheus has no such notion: without it, missing data reads as
    /// "resolved".
    pub fn eval_holding(
        &mut self,
        ts_ms: i64,
        query: &QueryFn<'_>,
        append: &mut AppendFn<'_>,
        held: Option<&HeldFn<'_>>,
    ) -> EvalReport {
        let ctx = EvalContext {
            external_labels: &self.opts.external_labels,
            external_url: &self.opts.external_url,
            limit: self.limit,
            held,
        };
        let mut report = EvalReport {
            ts_ms,
            rules: Vec::with_capacity(self.rules.len()),
            to_send: Vec::new(),
        };
        for rule in &mut self.rules {
            let mut outcome = RuleOutcome {
                name: rule.name().to_string(),
                health: Health::Ok,
                error: None,
                samples: 0,
            };
            match rule.eval(ts_ms, query, &ctx) {
                Err(e) => {
                    outcome.health = Health::Err;
                    outcome.error = Some(e);
                }
                Ok(samples) => {
                    for alert in
                        rule.take_alerts_to_send(ts_ms, self.opts.resend_delay_ms, self.interval_ms)
                    {
                        report.to_send.push(AlertToSend {
                            expr: rule.spec.expr.clone(),
                            alert,
                        });
                    }
                    outcome.samples = samples.len();
                    let returned: BTreeSet<Labels> =
                        samples.iter().map(|s| s.labels.clone()).collect();
                    let mut batch = samples;
                    for gone in rule.series_in_previous_eval.difference(&returned) {
                        batch.push(SeriesSample {
                            labels: gone.clone(),
                            ts: ts_ms,
                            value: stale_nan(),
                        });
                    }
                    match append(&batch) {
                        Ok(()) => rule.series_in_previous_eval = returned,
                        Err(e) => {
                            outcome.health = Health::Err;
                            outcome.error = Some(e);
                        }
                    }
                }
            }
            rule.health = outcome.health;
            rule.last_error = outcome.error.clone();
            report.rules.push(outcome);
        }
        if !self.stale_series.is_empty() {
            let batch: Vec<SeriesSample> = self
                .stale_series
                .iter()
                .map(|l| SeriesSample {
                    labels: l.clone(),
                    ts: ts_ms,
                    value: stale_nan(),
                })
                .collect();
            if append(&batch).is_ok() {
                self.stale_series.clear();
            }
        }
        self.last_eval_ms = Some(ts_ms);
        report
    }

    /// The state to persist: alerts, series for staleness, health and times.
    pub fn state(&self) -> GroupState {
        GroupState {
            file: self.file.clone(),
            name: self.name.clone(),
            last_eval_ms: self.last_eval_ms,
            rules: self
                .rules
                .iter()
                .map(|r| RuleState {
                    kind: match r.spec.kind {
                        RuleKind::Record(_) => "record".into(),
                        RuleKind::Alert(_) => "alert".into(),
                    },
                    name: r.name().to_string(),
                    labels: r.spec.labels.clone(),
                    health: r.health,
                    last_error: r.last_error.clone(),
                    last_eval_ms: r.last_eval_ms,
                    alerts: r.alerts().into_iter().cloned().collect(),
                    series_in_previous_eval: r.series_in_previous_eval.iter().map(to_map).collect(),
                })
                .collect(),
            stale_series: self.stale_series.iter().map(to_map).collect(),
        }
    }

    /// Takes over state saved by [`Group::state`] (before a restart, or from the group's
    /// previous version on reload). Rules are matched by kind, name and labels, the n-th
    /// duplicate with the n-th, as Prometheus' `CopyState`; the series of saved rules that
    /// no longer exist are marked stale at the next evaluation.
    pub fn restore(&mut self, state: GroupState) {
        self.last_eval_ms = state.last_eval_ms.or(self.last_eval_ms);
        let mut by_key: HashMap<(String, String, LabelMap), Vec<RuleState>> = HashMap::new();
        for r in state.rules {
            by_key
                .entry((r.kind.clone(), r.name.clone(), r.labels.clone()))
                .or_default()
                .push(r);
        }
        for list in by_key.values_mut() {
            list.reverse();
        }
        for rule in &mut self.rules {
            let kind = match rule.spec.kind {
                RuleKind::Record(_) => "record",
                RuleKind::Alert(_) => "alert",
            };
            let key = (
                kind.to_string(),
                rule.name().to_string(),
                rule.spec.labels.clone(),
            );
            let Some(saved) = by_key.get_mut(&key).and_then(Vec::pop) else {
                continue;
            };
            rule.health = saved.health;
            rule.last_error = saved.last_error;
            rule.last_eval_ms = saved.last_eval_ms;
            rule.series_in_previous_eval =
                saved.series_in_previous_eval.iter().map(from_map).collect();
            if let RuleBody::Alerting { active } = &mut rule.body {
                *active = saved
                    .alerts
                    .into_iter()
                    .map(|a| (a.labels.clone(), a))
                    .collect::<BTreeMap<_, _>>();
            }
        }
        self.stale_series = state.stale_series.iter().map(from_map).collect();
        for leftover in by_key.into_values().flatten() {
            self.stale_series
                .extend(leftover.series_in_previous_eval.iter().map(from_map));
        }
    }

    /// Takes over state saved before a restart, at `now_ms`, as [`Group::restore`], then
    /// treats the downtime as Prometheus' `RestoreForState` does: a firing alert keeps its
    /// `active_at`; a pending alert keeps the time it had spent pending (its `active_at`
    /// moves by the downtime), but fires no sooner than `for_grace_period_ms` after
    /// `now_ms`, unless the rule's `for` is shorter than the grace period; after an outage
    /// longer than `outage_tolerance_ms`, pending and firing alerts start over.
    pub fn restore_after_restart(
        &mut self,
        state: GroupState,
        now_ms: i64,
        policy: &RestorePolicy,
    ) {
        let down_at: HashMap<(String, LabelMap), Option<i64>> = state
            .rules
            .iter()
            .map(|r| ((r.name.clone(), r.labels.clone()), r.last_eval_ms))
            .collect();
        self.restore(state);
        for rule in &mut self.rules {
            let hold = rule.spec.for_ms;
            let key = (rule.name().to_string(), rule.spec.labels.clone());
            let Some(down) = down_at.get(&key).copied().flatten() else {
                continue;
            };
            let RuleBody::Alerting { active } = &mut rule.body else {
                continue;
            };
            if now_ms - down > policy.outage_tolerance_ms {
                active.retain(|_, a| a.state == AlertState::Inactive);
                continue;
            }
            if hold < policy.for_grace_period_ms {
                continue;
            }
            for a in active
                .values_mut()
                .filter(|a| a.state == AlertState::Pending)
            {
                let remaining = hold - (down - a.active_at_ms);
                if remaining <= 0 {
                    continue;
                }
                a.active_at_ms = if remaining < policy.for_grace_period_ms {
                    now_ms + policy.for_grace_period_ms - hold
                } else {
                    a.active_at_ms + (now_ms - down)
                };
            }
        }
    }
}
