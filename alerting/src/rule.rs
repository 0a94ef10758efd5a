//! Recording and alerting rules and their evaluation at one time, as Prometheus 2.42's
//! `rules/recording.go` and `rules/alerting.go`.
//!
//! An alert is keyed by its labels: the expression's output labels without `__name__`,
//! plus the rule's labels (templates expanded; one expanding to the empty string removes
//! the label), plus `alertname`. Its life: **pending** from the first evaluation that
//! returns it (`active_at`); **firing** once it has been returned for `for`
//! (`fired_at`); when the expression stops returning it, a pending alert is dropped and a
//! firing one becomes **inactive** (`resolved_at`), unless `keep_firing_for` keeps it
//! firing that long after it was last returned (`keep_firing_since`). Resolved alerts are
//! kept [`RESOLVED_RETENTION_MS`] so they are still sent as resolved; one that comes back
//! meanwhile starts pending again.

use crate::query::QueryFn;
use crate::rulefile::{RuleKind, RuleSpec};
use crate::template::{AlertData, Env, QuerySample, expand_alert};
use outpost_promql::Expr;
use outpost_shared::Labels;
use outpost_shared::model::METRIC_NAME;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A label set as rules handle it: name → value, sorted by name.
pub type LabelMap = BTreeMap<String, String>;

/// How long a resolved alert is kept, and sent as resolved, after it resolved (15 min,
/// Prometheus' `resolvedRetention`).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// The series name of alert state samples (Prometheus' `ALERTS`).
pub const ALERTS_METRIC: &str = "ALERTS";
/// The series name whose value is an alert's `active_at` in seconds
/// (Prometheus' `ALERTS_FOR_STATE`).
pub const ALERTS_FOR_STATE_METRIC: &str = "ALERTS_FOR_STATE";

/// One sample a rule evaluation writes: a recorded series, an `ALERTS`/`ALERTS_FOR_STATE`
/// series, or a stale marker (`value` is Prometheus' stale NaN) for a series that went away.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesSample {
    /// The series' labels, `__name__` included.
    pub labels: Labels,
    /// The evaluation time, ms since the Unix epoch.
    pub ts: i64,
    /// The value.
    pub value: f64,
}

/// An alert's state (Prometheus' `AlertState`; ordered inactive < pending < firing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Resolved; kept for [`RESOLVED_RETENTION_MS`].
    Inactive,
    /// Returned by the expression for less than `for`.
    Pending,
    /// Returned for at least `for` (or kept by `keep_firing_for`).
    Firing,
}

impl AlertState {
    /// `inactive`, `pending` or `firing`, as in `ALERTS{alertstate}` and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// Serde for an `f64` as text (`NaN`, `inf` and `-inf` included, which JSON cannot hold).
mod float_text {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|_| D::Error::custom(format!("not a number: {s:?}")))
    }
}

/// One alert of an alerting rule (Prometheus' `rules.Alert`). Times are ms since the
/// Unix epoch; `None` where Prometheus has the zero time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Its state.
    pub state: AlertState,
    /// Its identity: output labels + expanded rule labels + `alertname`.
    pub labels: LabelMap,
    /// Expanded annotations, refreshed at every evaluation that returns the alert.
    pub annotations: LabelMap,
    /// The expression's value at the last evaluation that returned the alert.
    #[serde(with = "float_text")]
    pub value: f64,
    /// When the expression first returned it (this time round).
    pub active_at_ms: i64,
    /// When it started firing.
    pub fired_at_ms: Option<i64>,
    /// When it resolved.
    pub resolved_at_ms: Option<i64>,
    /// When it was last handed out for sending.
    pub last_sent_at_ms: Option<i64>,
    /// Until when the last send is valid (`endsAt` of a firing alert sent to Alertmanager).
    pub valid_until_ms: Option<i64>,
    /// Since when `keep_firing_for` has kept it firing although the expression no longer
    /// returns it.
    pub keep_firing_since_ms: Option<i64>,
}

impl Alert {
    /// Whether it is due to be sent at `ts_ms` (Prometheus' `needsSending`): never while
    /// pending; at once after resolving; otherwise when the last send is older than
    /// `resend_delay_ms`.
    pub fn needs_sending(&self, ts_ms: i64, resend_delay_ms: i64) -> bool {
        if self.state == AlertState::Pending {
            return false;
        }
        match (self.resolved_at_ms, self.last_sent_at_ms) {
            (Some(_), None) => true,
            (Some(r), Some(s)) if r > s => true,
            (_, None) => true,
            (_, Some(s)) => s + resend_delay_ms < ts_ms,
        }
    }

    /// The `endsAt` Prometheus sends to Alertmanager: the resolution time, or
    /// `valid_until_ms` while it fires.
    pub fn ends_at_ms(&self) -> Option<i64> {
        self.resolved_at_ms.or(self.valid_until_ms)
    }
}

/// Whether a rule's last evaluation succeeded (Prometheus' `RuleHealth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not evaluated yet.
    Unknown,
    /// The last evaluation succeeded.
    Ok,
    /// The last evaluation failed; see the rule's last error.
    Err,
}

/// What a rule is, with the state its kind keeps.
#[derive(Clone, Debug)]
pub enum RuleBody {
    /// A recording rule: no state of its own.
    Recording,
    /// An alerting rule and its alerts, keyed by labels.
    Alerting {
        /// The alerts, keyed by their labels.
        active: BTreeMap<LabelMap, Alert>,
    },
}

/// A rule of a group, with its evaluation bookkeeping.
#[derive(Clone, Debug)]
pub struct Rule {
    /// The rule as written.
    pub spec: RuleSpec,
    /// Kind-specific state.
    pub body: RuleBody,
    /// How the last evaluation went.
    pub health: Health,
    /// The last evaluation's error.
    pub last_error: Option<String>,
    /// When the rule was last evaluated, ms since the Unix epoch.
    pub last_eval_ms: Option<i64>,
    /// The series written by the last successful evaluation, to mark stale those that go
    /// away (Prometheus' `seriesInPreviousEval`).
    pub series_in_previous_eval: BTreeSet<Labels>,
}

/// What rule evaluation needs besides the time and the query function.
#[derive(Clone, Copy)]
pub struct EvalContext<'a> {
    /// The aggregator's external labels (`$externalLabels`).
    pub external_labels: &'a LabelMap,
    /// The aggregator's external URL (`$externalURL`, `externalURL`, `pathPrefix`).
    pub external_url: &'a str,
    /// The group's `limit` (0 for none).
    pub limit: usize,
    /// Whether an alert the expression no longer returns is held as it is, because its
    /// source's data is not in yet ([`crate::Group::eval_holding`]).
    pub held: Option<&'a crate::group::HeldFn<'a>>,
}

impl std::fmt::Debug for EvalContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvalContext")
            .field("external_labels", self.external_labels)
            .field("external_url", &self.external_url)
            .field("limit", &self.limit)
            .field("held", &self.held.is_some())
            .finish()
    }
}

fn set_label(m: &mut LabelMap, name: &str, value: String) {
    // Prometheus' labels.Builder removes a label set to the empty string.
    if value.is_empty() {
        m.remove(name);
    } else {
        m.insert(name.to_string(), value);
    }
}

fn label_map(l: &Labels) -> LabelMap {
    l.iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect()
}

fn to_labels(m: &LabelMap) -> Labels {
    Labels::new(m.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

impl Rule {
    /// A rule that has not been evaluated yet.
    pub fn new(spec: RuleSpec) -> Self {
        let body = match spec.kind {
            RuleKind::Record(_) => RuleBody::Recording,
            RuleKind::Alert(_) => RuleBody::Alerting {
                active: BTreeMap::new(),
            },
        };
        Rule {
            spec,
            body,
            health: Health::Unknown,
            last_error: None,
            last_eval_ms: None,
            series_in_previous_eval: BTreeSet::new(),
        }
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        self.spec.name()
    }

    /// The planned expression.
    pub fn plan(&self) -> &Expr {
        &self.spec.plan
    }

    /// The alerts of an alerting rule (resolved ones included), sorted by labels; empty
    /// for a recording rule.
    pub fn alerts(&self) -> Vec<&Alert> {
        match &self.body {
            RuleBody::Alerting { active } => active.values().collect(),
            RuleBody::Recording => Vec::new(),
        }
    }

    /// The pending and firing alerts (Prometheus' `ActiveAlerts`).
    pub fn active_alerts(&self) -> Vec<&Alert> {
        self.alerts()
            .into_iter()
            .filter(|a| a.resolved_at_ms.is_none())
            .collect()
    }

    /// The highest state of any alert (`inactive` without alerts).
    pub fn alert_state(&self) -> AlertState {
        self.alerts()
            .iter()
            .map(|a| a.state)
            .max()
            .unwrap_or(AlertState::Inactive)
    }

    /// Evaluates the rule at `ts_ms`, returning the samples to write (recorded series, or
    /// `ALERTS` and `ALERTS_FOR_STATE`). Stale markers are the group's business.
    ///
    /// # Errors
    /// The query's error; `vector contains metrics with the same labelset after applying
    /// rule labels` (or `alert labels`); `exceeded limit of N with M series` (or `alerts`,
    /// in which case every alert of the rule is dropped, as Prometheus does).
    pub fn eval(
        &mut self,
        ts_ms: i64,
        query: &QueryFn<'_>,
        ctx: &EvalContext<'_>,
    ) -> Result<Vec<SeriesSample>, String> {
        self.last_eval_ms = Some(ts_ms);
        match self.body {
            RuleBody::Recording => self.eval_recording(ts_ms, query, ctx),
            RuleBody::Alerting { .. } => self.eval_alerting(ts_ms, query, ctx),
        }
    }

    fn eval_recording(
        &self,
        ts_ms: i64,
        query: &QueryFn<'_>,
        ctx: &EvalContext<'_>,
    ) -> Result<Vec<SeriesSample>, String> {
        let res = query(&self.spec.expr, ts_ms)?;
        let mut seen = BTreeSet::new();
        let mut out = Vec::with_capacity(res.len());
        for s in res {
            let mut m = label_map(&s.labels);
            set_label(&mut m, METRIC_NAME, self.name().to_string());
            for (k, v) in &self.spec.labels {
                set_label(&mut m, k, v.clone());
            }
            let labels = to_labels(&m);
            if !seen.insert(labels.clone()) {
                return Err(
                    "vector contains metrics with the same labelset after applying rule labels"
                        .into(),
                );
            }
            out.push(SeriesSample {
                labels,
                ts: ts_ms,
                value: s.point.value,
            });
        }
        if ctx.limit > 0 && out.len() > ctx.limit {
            return Err(format!(
                "exceeded limit of {} with {} series",
                ctx.limit,
                out.len()
            ));
        }
        Ok(out)
    }

    fn eval_alerting(
        &mut self,
        ts_ms: i64,
        query: &QueryFn<'_>,
        ctx: &EvalContext<'_>,
    ) -> Result<Vec<SeriesSample>, String> {
        let res = query(&self.spec.expr, ts_ms)?;
        let name = self.name().to_string();
        let template_query = |q: &str| -> Result<Vec<QuerySample>, String> {
            Ok(query(q, ts_ms)?
                .into_iter()
                .map(|s| QuerySample {
                    labels: label_map(&s.labels),
                    value: s.point.value,
                })
                .collect())
        };
        let env = Env {
            query: Some(&template_query),
            external_url: ctx.external_url,
        };
        let mut fresh: BTreeMap<LabelMap, Alert> = BTreeMap::new();
        for s in &res {
            let data = AlertData {
                labels: label_map(&s.labels),
                external_labels: ctx.external_labels.clone(),
                external_url: ctx.external_url.to_string(),
                value: s.point.value,
            };
            let expand = |text: &str| expand_alert(&name, text, &data, &env);
            let mut labels = data.labels.clone();
            labels.remove(METRIC_NAME);
            for (k, v) in &self.spec.labels {
                set_label(&mut labels, k, expand(v));
            }
            labels.insert("alertname".into(), name.clone());
            let annotations: LabelMap = self
                .spec
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), expand(v)))
                .collect();
            if fresh.contains_key(&labels) {
                return Err(
                    "vector contains metrics with the same labelset after applying alert labels"
                        .into(),
                );
            }
            fresh.insert(
                labels.clone(),
                Alert {
                    state: AlertState::Pending,
                    labels,
                    annotations,
                    value: s.point.value,
                    active_at_ms: ts_ms,
                    fired_at_ms: None,
                    resolved_at_ms: None,
                    last_sent_at_ms: None,
                    valid_until_ms: None,
                    keep_firing_since_ms: None,
                },
            );
        }
        let RuleBody::Alerting { active } = &mut self.body else {
            return Ok(Vec::new());
        };
        let returned: BTreeSet<LabelMap> = fresh.keys().cloned().collect();
        for (k, a) in fresh {
            match active.get_mut(&k) {
                Some(old) if old.state != AlertState::Inactive => {
                    old.value = a.value;
                    old.annotations = a.annotations;
                }
                _ => {
                    active.insert(k, a);
                }
            }
        }
        let (hold, keep_for) = (self.spec.for_ms, self.spec.keep_firing_for_ms);
        let mut out = Vec::new();
        let mut n_active = 0usize;
        let mut drop = Vec::new();
        for (k, a) in active.iter_mut() {
            let held = a.state != AlertState::Inactive
                && !returned.contains(k)
                && ctx.held.is_some_and(|h| h(k));
            if held {
                // No data either way: the alert stays as it is, and so do its series.
                n_active += 1;
                out.push(self_sample(&self.spec, a, ts_ms, ALERTS_METRIC, 1.0, true));
                out.push(self_sample(
                    &self.spec,
                    a,
                    ts_ms,
                    ALERTS_FOR_STATE_METRIC,
                    a.active_at_ms.div_euclid(1000) as f64,
                    false,
                ));
                continue;
            }
            if !returned.contains(k) {
                let mut keep_firing = false;
                if a.state == AlertState::Firing && keep_for > 0 {
                    let since = *a.keep_firing_since_ms.get_or_insert(ts_ms);
                    keep_firing = ts_ms - since < keep_for;
                }
                if a.state == AlertState::Pending
                    || a.resolved_at_ms
                        .is_some_and(|r| ts_ms - r > RESOLVED_RETENTION_MS)
                {
                    drop.push(k.clone());
                }
                if a.state != AlertState::Inactive && !keep_firing {
                    a.state = AlertState::Inactive;
                    a.resolved_at_ms = Some(ts_ms);
                }
                if !keep_firing {
                    continue;
                }
            } else {
                a.keep_firing_since_ms = None;
            }
            n_active += 1;
            if a.state == AlertState::Pending && ts_ms - a.active_at_ms >= hold {
                a.state = AlertState::Firing;
                a.fired_at_ms = Some(ts_ms);
            }
            out.push(self_sample(&self.spec, a, ts_ms, ALERTS_METRIC, 1.0, true));
            out.push(self_sample(
                &self.spec,
                a,
                ts_ms,
                ALERTS_FOR_STATE_METRIC,
                a.active_at_ms.div_euclid(1000) as f64,
                false,
            ));
        }
        for k in drop {
            active.remove(&k);
        }
        if ctx.limit > 0 && n_active > ctx.limit {
            active.clear();
            return Err(format!(
                "exceeded limit of {} with {n_active} alerts",
                ctx.limit
            ));
        }
        Ok(out)
    }

    /// Alerts due to be sent at `ts_ms`, marked as sent (Prometheus' `sendAlerts`):
    /// `last_sent_at_ms` becomes `ts_ms` and `valid_until_ms` `ts_ms` + 4 × the larger of
    /// `resend_delay_ms` and the group's `interval_ms`. Returns copies to hand to the
    /// notifier.
    pub fn take_alerts_to_send(
        &mut self,
        ts_ms: i64,
        resend_delay_ms: i64,
        interval_ms: i64,
    ) -> Vec<Alert> {
        let RuleBody::Alerting { active } = &mut self.body else {
            return Vec::new();
        };
        let delta = resend_delay_ms.max(interval_ms);
        let mut out = Vec::new();
        for a in active.values_mut() {
            if a.needs_sending(ts_ms, resend_delay_ms) {
                a.last_sent_at_ms = Some(ts_ms);
                a.valid_until_ms = Some(ts_ms + 4 * delta);
                out.push(a.clone());
            }
        }
        out
    }
}

/// An `ALERTS` (with `alertstate`) or `ALERTS_FOR_STATE` sample: the rule's labels as
/// written, overlaid with the alert's labels, as Prometheus builds them.
fn self_sample(
    spec: &RuleSpec,
    a: &Alert,
    ts_ms: i64,
    metric: &str,
    value: f64,
    with_state: bool,
) -> SeriesSample {
    let mut m = spec.labels.clone();
    for (k, v) in &a.labels {
        set_label(&mut m, k, v.clone());
    }
    set_label(&mut m, METRIC_NAME, metric.to_string());
    set_label(&mut m, "alertname", spec.name().to_string());
    if with_state {
        set_label(&mut m, "alertstate", a.state.as_str().to_string());
    }
    SeriesSample {
        labels: to_labels(&m),
        ts: ts_ms,
        value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_values_survive_json_including_nan_and_inf() {
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.1, -2.5e-300] {
            let a = Alert {
                state: AlertState::Firing,
                labels: LabelMap::from([("alertname".to_string(), "A".to_string())]),
                annotations: LabelMap::new(),
                value: v,
                active_at_ms: 1,
                fired_at_ms: Some(2),
                resolved_at_ms: None,
                last_sent_at_ms: Some(3),
                valid_until_ms: Some(4),
                keep_firing_since_ms: None,
            };
            let json = serde_json::to_string(&a).expect("serialise");
            let back: Alert = serde_json::from_str(&json).expect("deserialise");
            assert_eq!(back.value.to_bits(), v.to_bits(), "{json}");
            assert_eq!(back.state, AlertState::Firing);
        }
    }

    #[test]
    fn needs_sending_follows_prometheus() {
        let mut a = Alert {
            state: AlertState::Pending,
            labels: LabelMap::new(),
            annotations: LabelMap::new(),
            value: 1.0,
            active_at_ms: 0,
            fired_at_ms: None,
            resolved_at_ms: None,
            last_sent_at_ms: None,
            valid_until_ms: None,
            keep_firing_since_ms: None,
        };
        assert!(!a.needs_sending(0, 60_000));
        a.state = AlertState::Firing;
        assert!(a.needs_sending(0, 60_000));
        a.last_sent_at_ms = Some(0);
        assert!(!a.needs_sending(60_000, 60_000));
        assert!(a.needs_sending(60_001, 60_000));
        a.state = AlertState::Inactive;
        a.resolved_at_ms = Some(30_000);
        assert!(a.needs_sending(30_000, 60_000));
        a.last_sent_at_ms = Some(30_000);
        assert!(!a.needs_sending(40_000, 60_000));
    }
}
