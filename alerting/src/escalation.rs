//! Escalation, which Alertmanager does not have: an alert that matches a policy is
//! notified to the policy's levels in turn (say on-call at 0 min, the team lead at 15 min,
//! leadership at 30 min after it started firing), with reminders to the level reached while
//! nobody acknowledges it. An acknowledgement (who, and a note) stops further levels and
//! reminders; so does the resolve, which is notified to every level that was paged.
//!
//! Pure: the caller passes the time to every call, sends what [`Escalations::due`] returns,
//! and persists [`Escalation`] records (they are what must survive restarts; each step's
//! key is derived from them, so a step re-sent after a restart carries the same key).

use crate::route::matches_all;
use crate::rule::LabelMap;
use crate::webhook::fingerprint;
use outpost_promql::Matcher;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One level of a policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Level {
    /// How long after the alert started firing this level is paged, ms.
    pub after_ms: i64,
    /// The receiver (of the Alertmanager configuration) paged.
    pub receiver: String,
}

/// An escalation policy: which alerts, which levels, how often to remind.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The alerts it applies to: all of these match (the first matching policy wins).
    pub matchers: Vec<Matcher>,
    /// Levels in order of `after_ms` (ascending).
    pub levels: Vec<Level>,
    /// While unacknowledged, the level reached is reminded this often, ms (0: never).
    pub reminder_ms: i64,
}

impl Policy {
    /// A policy, with its levels checked.
    ///
    /// # Errors
    /// No level, a negative delay, or delays that do not grow.
    pub fn new(
        matchers: Vec<Matcher>,
        levels: Vec<Level>,
        reminder_ms: i64,
    ) -> Result<Policy, String> {
        if levels.is_empty() {
            return Err("an escalation needs at least one level".into());
        }
        if levels.iter().any(|l| l.after_ms < 0) || reminder_ms < 0 {
            return Err("delays must not be negative".into());
        }
        if levels.windows(2).any(|w| w[1].after_ms <= w[0].after_ms) {
            return Err("levels' delays must grow from one level to the next".into());
        }
        Ok(Policy {
            matchers,
            levels,
            reminder_ms,
        })
    }
}

/// Who acknowledged an alert, when and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// Who.
    pub by: String,
    /// Their note.
    pub note: String,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
}

/// One alert's escalation: persisted by the caller, keyed by [`Escalation::fingerprint`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    /// The alert's fingerprint.
    pub fingerprint: u64,
    /// The alert's labels.
    pub labels: LabelMap,
    /// The policy's index.
    pub policy: usize,
    /// When the alert started firing, ms.
    pub started_ms: i64,
    /// Levels paged so far (0 = none).
    pub paged: usize,
    /// Reminders sent to the level reached.
    pub reminders: u32,
    /// When the last page or reminder was sent, ms.
    pub last_sent_ms: i64,
    /// The acknowledgement, if any.
    pub ack: Option<Ack>,
    /// When it resolved, ms; the record is finished once the resolve is notified.
    pub resolved_ms: Option<i64>,
    /// Whether the resolve was handed out.
    pub resolve_sent: bool,
}

/// What is to be sent.
#[derive(Clone, Debug, PartialEq)]
pub enum StepKind {
    /// A level is paged for the first time.
    Page,
    /// The level reached is reminded.
    Reminder,
    /// The alert resolved: every level paged is told.
    Resolved,
}

/// A notification the caller sends to `receiver`.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The alert's fingerprint.
    pub fingerprint: u64,
    /// The alert's labels.
    pub labels: LabelMap,
    /// What it is.
    pub kind: StepKind,
    /// The level (0-based) it is for.
    pub level: usize,
    /// The receiver to notify.
    pub receiver: String,
    /// Stable across retries and restarts: `esc-<fingerprint>-<started>-<level>-<kind>[-n]`.
    pub key: String,
}

/// Every policy and every alert's escalation.
#[derive(Clone, Debug, Default)]
pub struct Escalations {
    policies: Vec<Policy>,
    states: BTreeMap<u64, Escalation>,
}

impl Escalations {
    /// Escalations under `policies`, resuming the persisted `states` (records whose
    /// policy no longer exists are dropped).
    pub fn new(policies: Vec<Policy>, states: Vec<Escalation>) -> Escalations {
        let n = policies.len();
        Escalations {
            policies,
            states: states
                .into_iter()
                .filter(|s| s.policy < n)
                .map(|s| (s.fingerprint, s))
                .collect(),
        }
    }

    /// The policies in force.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// Replaces the policies (a reload); escalations whose policy is gone are dropped.
    pub fn set_policies(&mut self, policies: Vec<Policy>) {
        let n = policies.len();
        self.policies = policies;
        self.states.retain(|_, s| s.policy < n);
    }

    /// The escalation of alert `fp`, if one runs or ran.
    pub fn get(&self, fp: u64) -> Option<&Escalation> {
        self.states.get(&fp)
    }

    /// Every escalation, by fingerprint.
    pub fn all(&self) -> impl Iterator<Item = &Escalation> {
        self.states.values()
    }

    /// Takes in an alert's state: a firing alert matching a policy starts an escalation
    /// (timed from `starts_at_ms`); a resolved one ends its escalation. Returns the record
    /// changed, to persist.
    pub fn observe(
        &mut self,
        labels: &LabelMap,
        starts_at_ms: i64,
        resolved: bool,
        now_ms: i64,
    ) -> Option<Escalation> {
        let fp = fingerprint(labels);
        match self.states.get_mut(&fp) {
            Some(s) if s.resolved_ms.is_none() => {
                if resolved {
                    s.resolved_ms = Some(now_ms);
                    return Some(s.clone());
                }
                None
            }
            // A finished record is replaced when the alert fires again.
            Some(s) if resolved || s.started_ms == starts_at_ms => None,
            _ if resolved => None,
            _ => {
                let policy = self
                    .policies
                    .iter()
                    .position(|p| matches_all(&p.matchers, labels))?;
                let s = Escalation {
                    fingerprint: fp,
                    labels: labels.clone(),
                    policy,
                    started_ms: starts_at_ms,
                    paged: 0,
                    reminders: 0,
                    last_sent_ms: 0,
                    ack: None,
                    resolved_ms: None,
                    resolve_sent: false,
                };
                self.states.insert(fp, s.clone());
                Some(s)
            }
        }
    }

    /// Acknowledges alert `fp`: no further level or reminder.
    ///
    /// # Errors
    /// No escalation runs for it, or it already resolved.
    pub fn ack(
        &mut self,
        fp: u64,
        by: &str,
        note: &str,
        now_ms: i64,
    ) -> Result<Escalation, String> {
        let s = self
            .states
            .get_mut(&fp)
            .ok_or_else(|| format!("no escalation for alert {fp:016x}"))?;
        if s.resolved_ms.is_some() {
            return Err(format!("alert {fp:016x} is resolved"));
        }
        s.ack = Some(Ack {
            by: by.to_string(),
            note: note.to_string(),
            at_ms: now_ms,
        });
        Ok(s.clone())
    }

    /// When the next step is due, ms.
    pub fn next_due_ms(&self) -> Option<i64> {
        self.states.values().filter_map(|s| self.due_at(s)).min()
    }

    fn due_at(&self, s: &Escalation) -> Option<i64> {
        let p = &self.policies[s.policy];
        if s.resolved_ms.is_some() {
            return (!s.resolve_sent).then_some(s.resolved_ms.unwrap_or(0));
        }
        if s.ack.is_some() {
            return None;
        }
        let next_level = p.levels.get(s.paged).map(|l| s.started_ms + l.after_ms);
        let reminder = (s.paged > 0 && p.reminder_ms > 0).then(|| s.last_sent_ms + p.reminder_ms);
        match (next_level, reminder) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The steps due at `now_ms`, with the records they change (to persist before sending).
    /// `muted` tells whether an alert is silenced or inhibited now: a muted alert is not
    /// paged or reminded (its levels wait), but its resolve is still told.
    pub fn due(
        &mut self,
        now_ms: i64,
        muted: &dyn Fn(&LabelMap) -> bool,
    ) -> (Vec<Step>, Vec<Escalation>) {
        let mut steps = Vec::new();
        let mut changed = Vec::new();
        let fps: Vec<u64> = self
            .states
            .values()
            .filter(|s| self.due_at(s).is_some_and(|t| t <= now_ms))
            .map(|s| s.fingerprint)
            .collect();
        for fp in fps {
            let Some(s) = self.states.get_mut(&fp) else {
                continue;
            };
            let p = &self.policies[s.policy];
            let key =
                |level: usize, kind: &str| format!("esc-{fp:016x}-{}-{level}-{kind}", s.started_ms);
            if s.resolved_ms.is_some() {
                for level in 0..s.paged {
                    steps.push(Step {
                        fingerprint: fp,
                        labels: s.labels.clone(),
                        kind: StepKind::Resolved,
                        level,
                        receiver: p.levels[level].receiver.clone(),
                        key: key(level, "resolved"),
                    });
                }
                s.resolve_sent = true;
                changed.push(s.clone());
                continue;
            }
            if muted(&s.labels) {
                continue;
            }
            // Every level whose time has come is paged (a late start pages them at once).
            let mut paged_now = false;
            while let Some(l) = p.levels.get(s.paged) {
                if s.started_ms + l.after_ms > now_ms {
                    break;
                }
                steps.push(Step {
                    fingerprint: fp,
                    labels: s.labels.clone(),
                    kind: StepKind::Page,
                    level: s.paged,
                    receiver: l.receiver.clone(),
                    key: key(s.paged, "page"),
                });
                s.paged += 1;
                s.reminders = 0;
                paged_now = true;
            }
            if paged_now {
                s.last_sent_ms = now_ms;
            } else if s.paged > 0 && p.reminder_ms > 0 && s.last_sent_ms + p.reminder_ms <= now_ms {
                let level = s.paged - 1;
                s.reminders += 1;
                steps.push(Step {
                    fingerprint: fp,
                    labels: s.labels.clone(),
                    kind: StepKind::Reminder,
                    level,
                    receiver: p.levels[level].receiver.clone(),
                    key: format!("{}-{}", key(level, "reminder"), s.reminders),
                });
                s.last_sent_ms = now_ms;
            } else {
                continue;
            }
            changed.push(s.clone());
        }
        (steps, changed)
    }

    /// Forgets finished escalations that resolved before `before_ms`; returns their
    /// fingerprints (to delete from storage).
    pub fn forget_resolved_before(&mut self, before_ms: i64) -> Vec<u64> {
        let gone: Vec<u64> = self
            .states
            .values()
            .filter(|s| s.resolve_sent && s.resolved_ms.is_some_and(|t| t < before_ms))
            .map(|s| s.fingerprint)
            .collect();
        for fp in &gone {
            self.states.remove(fp);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::parse_matchers;

    const M: i64 = 60_000;

    fn policy() -> Policy {
        Policy::new(
            parse_matchers("severity=\"critical\"").unwrap(),
            vec![
                Level {
                    after_ms: 0,
                    receiver: "oncall".into(),
                },
                Level {
                    after_ms: 15 * M,
                    receiver: "lead".into(),
                },
                Level {
                    after_ms: 30 * M,
                    receiver: "leadership".into(),
                },
            ],
            5 * M,
        )
        .unwrap()
    }

    fn labels(sev: &str) -> LabelMap {
        [("alertname", "Down"), ("severity", sev)]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(e: &mut Escalations, from: i64, to: i64) -> Vec<(i64, String, StepKind)> {
        let mut out = vec![];
        let mut t = from;
        while t <= to {
            for s in e.due(t, &|_| false).0 {
                out.push((t / 1000, s.receiver, s.kind));
            }
            t += 1000;
        }
        out
    }

    /// Levels at 0, 15 and 30 minutes to the second, reminders every 5 minutes to the level
    /// reached, and nothing after the acknowledgement but the resolve.
    #[test]
    fn levels_reminders_ack_and_resolve() {
        let mut e = Escalations::new(vec![policy()], vec![]);
        assert!(e.observe(&labels("warning"), 0, false, 0).is_none());
        e.observe(&labels("critical"), 0, false, 0).unwrap();
        let got = run(&mut e, 0, 31 * M);
        let want: Vec<(i64, String, StepKind)> = vec![
            (0, "oncall".into(), StepKind::Page),
            (300, "oncall".into(), StepKind::Reminder),
            (600, "oncall".into(), StepKind::Reminder),
            (900, "lead".into(), StepKind::Page),
            (1200, "lead".into(), StepKind::Reminder),
            (1500, "lead".into(), StepKind::Reminder),
            (1800, "leadership".into(), StepKind::Page),
        ];
        assert_eq!(got, want);
        let fp = fingerprint(&labels("critical"));
        e.ack(fp, "ana", "on it", 31 * M).unwrap();
        assert!(run(&mut e, 31 * M, 60 * M).is_empty());
        assert_eq!(e.next_due_ms(), None);
        e.observe(&labels("critical"), 0, true, 60 * M).unwrap();
        let (steps, changed) = e.due(60 * M, &|_| false);
        let told: Vec<&str> = steps.iter().map(|s| s.receiver.as_str()).collect();
        assert_eq!(told, ["oncall", "lead", "leadership"]);
        assert!(steps.iter().all(|s| s.kind == StepKind::Resolved));
        assert!(changed[0].resolve_sent);
        assert!(e.ack(fp, "ana", "late", 61 * M).is_err());
        assert_eq!(e.forget_resolved_before(61 * M), vec![fp]);
    }

    /// A resolve before the second level stops the escalation there; keys are stable for
    /// the same record, so a step re-sent after a restart is recognisable.
    #[test]
    fn resolve_stops_and_keys_are_stable() {
        let mut e = Escalations::new(vec![policy()], vec![]);
        e.observe(&labels("critical"), 1000, false, 1000);
        let (first, changed) = e.due(1000, &|_| false);
        assert_eq!(first.len(), 1);
        // A restart resumes from the persisted record.
        let mut again = Escalations::new(vec![policy()], changed);
        assert!(again.due(2000, &|_| false).0.is_empty());
        again.observe(&labels("critical"), 1000, true, 10 * M);
        let (steps, _) = again.due(10 * M, &|_| false);
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].receiver, "oncall");
        assert!(run(&mut again, 10 * M, 40 * M).is_empty());
        assert_ne!(first[0].key, steps[0].key);
        assert!(first[0].key.starts_with("esc-"));
    }

    /// A muted (silenced) alert is not paged; its levels are paged once it is unmuted.
    #[test]
    fn muted_alerts_wait() {
        let mut e = Escalations::new(vec![policy()], vec![]);
        e.observe(&labels("critical"), 0, false, 0);
        assert!(e.due(16 * M, &|_| true).0.is_empty());
        let (steps, _) = e.due(17 * M, &|_| false);
        let told: Vec<&str> = steps.iter().map(|s| s.receiver.as_str()).collect();
        assert_eq!(told, ["oncall", "lead"]);
    }

    #[test]
    fn bad_policies_are_refused() {
        assert!(Policy::new(vec![], vec![], 0).is_err());
        let l = |after_ms| Level {
            after_ms,
            receiver: "r".into(),
        };
        assert!(Policy::new(vec![], vec![l(10), l(10)], 0).is_err());
        assert!(Policy::new(vec![], vec![l(-1)], 0).is_err());
    }
}
