//! The result of one run of a check and its samples, with blackbox_exporter's metric names
//! where it has them.

use crate::def::CheckDef;
use outpost_shared::{Batch, Labels};
use serde::Serialize;
use std::time::Duration;

/// Longest `reason` label value in `probe_failure_info`.
pub(crate) const MAX_REASON_LEN: usize = 200;

/// One further metric of a probe: (name, extra label pairs, value).
pub type Metric = (String, Vec<(String, String)>, f64);

/// What one run of a check found. Serializes to JSON for APIs that show the last result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcome {
    /// The check's name.
    pub check: String,
    /// Whether every assertion held.
    pub success: bool,
    /// How long the run took.
    pub duration: Duration,
    /// For journeys: the name of the step that failed.
    pub failed_step: Option<String>,
    /// Why it failed: the assertion that did not hold, or the error.
    pub reason: Option<String>,
    /// Per-step results of a journey, in order; empty otherwise.
    pub steps: Vec<StepOutcome>,
    /// Further metrics: (name, extra label pairs, value), without check/region/agent.
    pub metrics: Vec<Metric>,
}

/// One step of a journey and how it went.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepOutcome {
    /// The step's name.
    pub name: String,
    /// Whether the step's assertions held.
    pub success: bool,
    /// How long the step took.
    pub duration: Duration,
}

#[cfg_attr(not(feature = "runners"), allow(dead_code))]
impl Outcome {
    pub(crate) fn new(def: &CheckDef) -> Self {
        Outcome {
            check: def.name.clone(),
            success: false,
            duration: Duration::ZERO,
            failed_step: None,
            reason: None,
            steps: Vec::new(),
            metrics: Vec::new(),
        }
    }

    pub(crate) fn failed(def: &CheckDef, reason: String) -> Self {
        let mut o = Self::new(def);
        o.reason = Some(reason);
        o
    }

    /// Records a metric without extra labels.
    pub(crate) fn metric(&mut self, name: &str, v: f64) {
        self.metrics.push((name.to_string(), Vec::new(), v));
    }

    pub(crate) fn metric_l(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        let l = labels
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        self.metrics.push((name.to_string(), l, v));
    }

    /// Sets the verdict from a result.
    pub(crate) fn finish(mut self, r: Result<(), String>) -> Self {
        match r {
            Ok(()) => self.success = true,
            Err(e) => {
                self.success = false;
                self.reason = Some(e);
            }
        }
        self
    }

    /// All samples of this outcome at `ts_ms`, each labelled `check`, the check's `labels`
    /// and `extra` (agent, region).
    pub fn to_batch(&self, def: &CheckDef, ts_ms: i64, extra: &[(String, String)]) -> Batch {
        let base: Vec<(String, String)> =
            std::iter::once(("check".to_string(), self.check.clone()))
                .chain(def.labels.iter().map(|(k, v)| (k.clone(), v.clone())))
                .chain(extra.iter().cloned())
                .collect();
        let mut b = Batch::default();
        let mut push = |name: &str, more: &[(String, String)], v: f64| {
            let labels = Labels::new(
                std::iter::once((
                    outpost_shared::model::METRIC_NAME.to_string(),
                    name.to_string(),
                ))
                .chain(base.iter().cloned())
                .chain(more.iter().cloned()),
            );
            b.push(labels, ts_ms, v);
        };
        push("probe_success", &[], if self.success { 1.0 } else { 0.0 });
        push("probe_duration_seconds", &[], self.duration.as_secs_f64());
        for (name, labels, v) in &self.metrics {
            push(name, labels, *v);
        }
        for s in &self.steps {
            let l = [("step".to_string(), s.name.clone())];
            push("probe_step_success", &l, if s.success { 1.0 } else { 0.0 });
            push("probe_step_duration_seconds", &l, s.duration.as_secs_f64());
        }
        if !self.success {
            let reason: String = self
                .reason
                .as_deref()
                .unwrap_or("unknown")
                .chars()
                .take(MAX_REASON_LEN)
                .collect();
            // Outside journeys the step is empty, which (as in Prometheus) leaves the label out.
            let l = [
                (
                    "step".to_string(),
                    self.failed_step.clone().unwrap_or_default(),
                ),
                ("reason".to_string(), reason),
            ];
            push("probe_failure_info", &l, 1.0);
        }
        b
    }
}
