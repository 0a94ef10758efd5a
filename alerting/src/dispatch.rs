//! Alertmanager 0.25's dispatcher and deduplication in simulated time: alerts go to the
//! aggregation groups of the routes they match (one group per route and value of its
//! `group_by` labels); a new group is flushed after `group_wait` (at once when its first
//! alert started longer ago than that), then every `group_interval`; a flush notifies the
//! route's receiver when the notification log says so (the rules of Alertmanager's
//! `DedupStage`), and resolved alerts that were flushed leave the group.
//!
//! Pure: the caller passes the time to every call, sends what [`Dispatcher::flush_due`]
//! returns, and keeps the [`NotificationLog`] (it is what must survive restarts).

use crate::route::Route;
use crate::rule::LabelMap;
use crate::timeinterval::{TimeIntervals, in_intervals};
use crate::webhook::{fingerprint, group_key};
use std::collections::{BTreeMap, BTreeSet};

/// How often Alertmanager drops empty aggregation groups, ms.
pub const MAINTENANCE_INTERVAL_MS: i64 = 30_000;

/// An alert as the dispatcher holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct DispatchedAlert {
    /// Its labels (identity).
    pub labels: LabelMap,
    /// Its annotations.
    pub annotations: LabelMap,
    /// When it started, ms.
    pub starts_at_ms: i64,
    /// When it ends (resolved from then on), ms.
    pub ends_at_ms: i64,
    /// Where it came from (the rule's link), empty when unknown.
    pub generator_url: String,
}

impl DispatchedAlert {
    /// Resolved at `now_ms`.
    pub fn resolved(&self, now_ms: i64) -> bool {
        self.ends_at_ms <= now_ms
    }
}

/// What was last sent for one group to its receiver (Alertmanager's `nflog` entry).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogEntry {
    /// Fingerprints of the alerts firing then.
    pub firing: BTreeSet<u64>,
    /// Fingerprints of the alerts resolved then.
    pub resolved: BTreeSet<u64>,
    /// When, ms.
    pub at_ms: i64,
}

/// The notification log: per group key and receiver, the last notification.
pub type NotificationLog = BTreeMap<(String, String), LogEntry>;

/// A notification to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    /// The receiver's name.
    pub receiver: String,
    /// The route's key.
    pub route_key: String,
    /// The group's key ([`group_key`]).
    pub group_key: String,
    /// The group's labels.
    pub group_labels: LabelMap,
    /// The group's alerts, firing and resolved.
    pub alerts: Vec<DispatchedAlert>,
    /// When it was decided, ms.
    pub at_ms: i64,
}

#[derive(Clone, Debug)]
struct Group {
    receiver: String,
    route_key: String,
    labels: LabelMap,
    group_interval_ms: i64,
    repeat_interval_ms: i64,
    alerts: BTreeMap<u64, DispatchedAlert>,
    next_flush_ms: i64,
    flushed: bool,
    mute_time_intervals: Vec<String>,
    active_time_intervals: Vec<String>,
}

/// A route an alert goes to, and the alert's group labels there.
struct Target<'a> {
    index: usize,
    labels: LabelMap,
    route: &'a Route,
}

/// The place of `target` in the tree under `root`, counted in pre-order from 0.
fn preorder_index(root: &Route, target: &Route) -> usize {
    fn walk(r: &Route, target: &Route, n: &mut usize) -> bool {
        if std::ptr::eq(r, target) {
            return true;
        }
        for c in &r.routes {
            *n += 1;
            if walk(c, target, n) {
                return true;
            }
        }
        false
    }
    let mut n = 0;
    walk(root, target, &mut n);
    n
}

/// The routing tree and its aggregation groups.
#[derive(Clone, Debug)]
pub struct Dispatcher {
    route: Route,
    /// Groups by the route's place in the tree (pre-order) and the group key: sibling
    /// routes with the same key keep their own groups, as Alertmanager's do.
    groups: BTreeMap<(usize, String), Group>,
    intervals: TimeIntervals,
}

impl Dispatcher {
    /// A dispatcher over the tree rooted at `route`.
    pub fn new(route: Route) -> Dispatcher {
        Dispatcher {
            route,
            groups: BTreeMap::new(),
            intervals: TimeIntervals::new(),
        }
    }

    /// The dispatcher with the configuration's time intervals, which the routes'
    /// `mute_time_intervals` and `active_time_intervals` name (see [`Dispatcher::flush_due`]).
    pub fn with_time_intervals(mut self, intervals: TimeIntervals) -> Dispatcher {
        self.intervals = intervals;
        self
    }

    /// Takes in a new or updated alert (the same labels replace the alert in every group
    /// it is in) at `now_ms`.
    pub fn insert(&mut self, alert: DispatchedAlert, now_ms: i64) {
        let fp = fingerprint(&alert.labels);
        let root = &self.route;
        let targets: Vec<Target<'_>> = root
            .matches(&alert.labels)
            .into_iter()
            .map(|r| Target {
                index: preorder_index(root, r),
                labels: if r.group_by_all {
                    alert.labels.clone()
                } else {
                    r.group_by
                        .iter()
                        .filter_map(|k| alert.labels.get(k).map(|v| (k.clone(), v.clone())))
                        .collect()
                },
                route: r,
            })
            .collect();
        for Target {
            index,
            labels,
            route: r,
        } in targets
        {
            let (route_key, receiver, wait, interval, repeat) = (
                r.key.clone(),
                r.receiver.clone(),
                r.group_wait_ms,
                r.group_interval_ms,
                r.repeat_interval_ms,
            );
            let (mute, active) = (
                r.mute_time_intervals.clone(),
                r.active_time_intervals.clone(),
            );
            let key = (index, group_key(&route_key, &labels));
            let g = self.groups.entry(key).or_insert_with(|| Group {
                receiver,
                route_key,
                labels,
                group_interval_ms: interval,
                repeat_interval_ms: repeat,
                alerts: BTreeMap::new(),
                next_flush_ms: now_ms + wait,
                flushed: false,
                mute_time_intervals: mute,
                active_time_intervals: active,
            });
            // An alert older than the group's wait is not waited for.
            if !g.flushed && alert.starts_at_ms + wait < now_ms {
                g.next_flush_ms = g.next_flush_ms.min(now_ms);
            }
            g.alerts.insert(fp, alert.clone());
        }
    }

    /// When the next group is due to flush, ms.
    pub fn next_due_ms(&self) -> Option<i64> {
        self.groups.values().map(|g| g.next_flush_ms).min()
    }

    /// Flushes every group due at `now_ms`; returns the notifications the log says to send
    /// (and records them in `log`: call only when they will be sent). `send_resolved` tells
    /// whether a receiver wants resolved alerts.
    ///
    /// A group whose route is muted at `now_ms` (inside one of its `mute_time_intervals`,
    /// or outside all of its `active_time_intervals`) sends nothing and leaves the log as
    /// it was, as Alertmanager 0.25's time stages do at flush time; its resolved alerts
    /// still leave the group.
    pub fn flush_due(
        &mut self,
        now_ms: i64,
        log: &mut NotificationLog,
        send_resolved: &dyn Fn(&str) -> bool,
    ) -> Vec<Notification> {
        self.flush_due_muted(now_ms, log, send_resolved, &|_| false)
    }

    /// [`Dispatcher::flush_due`] with silences and inhibitions: the alerts `muted` says
    /// are muted at `now_ms` are left out before deduplication, as Alertmanager's mute
    /// stages do (a flush whose alerts are all muted sends nothing and leaves the log as
    /// it is; resolved alerts still leave the group).
    pub fn flush_due_muted(
        &mut self,
        now_ms: i64,
        log: &mut NotificationLog,
        send_resolved: &dyn Fn(&str) -> bool,
        muted: &dyn Fn(&DispatchedAlert) -> bool,
    ) -> Vec<Notification> {
        let mut out = Vec::new();
        for ((_, key), g) in self.groups.iter_mut() {
            if g.next_flush_ms > now_ms {
                continue;
            }
            if g.alerts.is_empty() {
                g.next_flush_ms = now_ms + g.group_interval_ms;
                continue;
            }
            g.flushed = true;
            g.next_flush_ms = now_ms + g.group_interval_ms;
            let shown: BTreeMap<u64, &DispatchedAlert> = g
                .alerts
                .iter()
                .filter(|(_, a)| !muted(a))
                .map(|(fp, a)| (*fp, a))
                .collect();
            if shown.is_empty() {
                g.alerts.retain(|_, a| !a.resolved(now_ms));
                continue;
            }
            let firing: BTreeSet<u64> = shown
                .iter()
                .filter(|(_, a)| !a.resolved(now_ms))
                .map(|(fp, _)| *fp)
                .collect();
            let resolved: BTreeSet<u64> = shown
                .iter()
                .filter(|(_, a)| a.resolved(now_ms))
                .map(|(fp, _)| *fp)
                .collect();
            let log_key = (key.clone(), g.receiver.clone());
            let wants_resolved = send_resolved(&g.receiver);
            let muted = in_intervals(&self.intervals, &g.mute_time_intervals, now_ms)
                || (!g.active_time_intervals.is_empty()
                    && !in_intervals(&self.intervals, &g.active_time_intervals, now_ms));
            let notify = !muted
                && match log.get(&log_key) {
                    None => !firing.is_empty(),
                    Some(e) if !firing.is_subset(&e.firing) => true,
                    Some(e) if firing.is_empty() => !e.firing.is_empty(),
                    Some(e) if wants_resolved && !resolved.is_subset(&e.resolved) => true,
                    Some(e) => e.at_ms < now_ms - g.repeat_interval_ms,
                };
            if notify {
                let alerts: Vec<DispatchedAlert> = shown
                    .values()
                    .filter(|a| wants_resolved || !a.resolved(now_ms))
                    .map(|a| (*a).clone())
                    .collect();
                log.insert(
                    log_key,
                    LogEntry {
                        firing: firing.clone(),
                        resolved: resolved.clone(),
                        at_ms: now_ms,
                    },
                );
                // A receiver that does not want resolved alerts gets nothing when all are
                // resolved; the log still forgets what was firing.
                if !alerts.is_empty() {
                    out.push(Notification {
                        receiver: g.receiver.clone(),
                        route_key: g.route_key.clone(),
                        group_key: key.clone(),
                        group_labels: g.labels.clone(),
                        alerts,
                        at_ms: now_ms,
                    });
                }
            }
            // Resolved alerts leave the group once flushed.
            g.alerts.retain(|_, a| !a.resolved(now_ms));
        }
        out
    }

    /// Drops the groups left without alerts (Alertmanager does it every
    /// [`MAINTENANCE_INTERVAL_MS`]; until then a new alert joins the flushed group and
    /// waits for its next interval, not for `group_wait`).
    pub fn maintain(&mut self) {
        self.groups.retain(|_, g| !g.alerts.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::RouteConfig;

    fn l(pairs: &[(&str, &str)]) -> LabelMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn alert(name: &str, instance: &str, start: i64, end: i64) -> DispatchedAlert {
        DispatchedAlert {
            labels: l(&[("alertname", name), ("instance", instance)]),
            annotations: LabelMap::new(),
            starts_at_ms: start,
            ends_at_ms: end,
            generator_url: String::new(),
        }
    }

    const S: i64 = 1000;
    const FOREVER: i64 = i64::MAX;

    /// Timings as Alertmanager's documentation describes them, in simulated time.
    #[test]
    fn wait_interval_repeat_and_resolve() {
        let cfg: RouteConfig = serde_saphyr::from_str(
            "receiver: r\ngroup_by: [alertname]\ngroup_wait: 30s\ngroup_interval: 5m\nrepeat_interval: 1h\n",
        )
        .unwrap();
        let mut d = Dispatcher::new(Route::new_root(&cfg).unwrap());
        let mut log = NotificationLog::new();
        let yes = |_: &str| true;
        d.insert(alert("Down", "a", 0, FOREVER), 0);
        assert!(d.flush_due(29 * S, &mut log, &yes).is_empty());
        let n = d.flush_due(30 * S, &mut log, &yes);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].group_key, "{}:{alertname=\"Down\"}");
        // A second alert joins: sent at the next interval, not before.
        d.insert(alert("Down", "b", 60 * S, FOREVER), 60 * S);
        assert_eq!(d.next_due_ms(), Some(330 * S));
        let n = d.flush_due(330 * S, &mut log, &yes);
        assert_eq!(n[0].alerts.len(), 2);
        // Nothing new: nothing until the repeat interval has passed.
        assert!(d.flush_due(630 * S, &mut log, &yes).is_empty());
        let mut t = 630 * S;
        let mut sent = None;
        while sent.is_none() {
            t += 300 * S;
            sent = d.flush_due(t, &mut log, &yes).pop().map(|n| n.at_ms);
        }
        assert!(sent.unwrap() > 330 * S + 3600 * S);
        // b resolves: sent (send_resolved), then b leaves the group.
        d.insert(alert("Down", "b", 60 * S, t + 10 * S), t + 10 * S);
        let n = d.flush_due(t + 300 * S, &mut log, &yes);
        assert_eq!(n[0].alerts.len(), 2);
        assert!(n[0].alerts.iter().any(|a| a.resolved(t + 300 * S)));
        // Without send_resolved, only the last resolve is sent, and to nobody.
        d.insert(alert("Down", "a", 0, t + 400 * S), t + 400 * S);
        let no = |_: &str| false;
        assert!(d.flush_due(t + 600 * S, &mut log, &no).is_empty());
        assert!(log.values().all(|e| e.firing.is_empty()));
        d.maintain();
        assert_eq!(d.next_due_ms(), None);
    }

    /// A muted route sends nothing and keeps its log; once the mute ends it sends; an
    /// active-only route outside its interval sends nothing.
    #[test]
    fn time_intervals_mute_at_flush_time() {
        let cfg: RouteConfig = serde_saphyr::from_str(
            "receiver: r\ngroup_wait: 0s\ngroup_interval: 1m\nroutes:\n  - receiver: m\n    mute_time_intervals: [first-hour]\n    continue: true\n  - receiver: a\n    matchers: [alertname=Down]\n    active_time_intervals: [first-hour]\n",
        )
        .unwrap();
        let first_hour: Vec<crate::timeinterval::TimeInterval> =
            serde_saphyr::from_str("- times: [{start_time: '00:00', end_time: '01:00'}]").unwrap();
        let mut d = Dispatcher::new(Route::new_root(&cfg).unwrap()).with_time_intervals(
            TimeIntervals::from([("first-hour".to_string(), first_hour)]),
        );
        let mut log = NotificationLog::new();
        let yes = |_: &str| true;
        d.insert(alert("Down", "a", 0, FOREVER), 0);
        let n = d.flush_due(0, &mut log, &yes);
        let receivers: Vec<&str> = n.iter().map(|n| n.receiver.as_str()).collect();
        assert_eq!(receivers, vec!["a"]);
        assert!(log.keys().all(|(_, r)| r == "a"));
        let n = d.flush_due(3_600 * S, &mut log, &yes);
        let receivers: Vec<&str> = n.iter().map(|n| n.receiver.as_str()).collect();
        assert_eq!(receivers, vec!["m"]);
    }

    #[test]
    fn an_old_alert_is_not_waited_for() {
        let cfg: RouteConfig = serde_saphyr::from_str("receiver: r\ngroup_wait: 30s\n").unwrap();
        let mut d = Dispatcher::new(Route::new_root(&cfg).unwrap());
        d.insert(alert("Old", "a", 0, FOREVER), 100 * S);
        assert_eq!(d.next_due_ms(), Some(100 * S));
    }

    /// A muted alert is left out of the notification and of the log; once unmuted it is
    /// new to the log and notified at the next flush.
    #[test]
    fn muted_alerts_are_left_out_before_deduplication() {
        let cfg: RouteConfig =
            serde_saphyr::from_str("receiver: r\ngroup_wait: 1s\ngroup_interval: 10s\n").unwrap();
        let mut d = Dispatcher::new(Route::new_root(&cfg).unwrap());
        let mut log = NotificationLog::new();
        let yes = |_: &str| true;
        let b_muted =
            |a: &DispatchedAlert| a.labels.get("instance").map(String::as_str) == Some("b");
        d.insert(alert("Down", "a", 0, FOREVER), 0);
        d.insert(alert("Down", "b", 0, FOREVER), 0);
        let n = d.flush_due_muted(S, &mut log, &yes, &b_muted);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].alerts.len(), 1);
        assert_eq!(log.values().next().unwrap().firing.len(), 1);
        // Everything muted: nothing sent, the log unchanged.
        let all = |_: &DispatchedAlert| true;
        assert!(d.flush_due_muted(11 * S, &mut log, &yes, &all).is_empty());
        assert_eq!(log.values().next().unwrap().at_ms, S);
        // b unmuted: it is new, so the group is notified with both.
        let n = d.flush_due_muted(21 * S, &mut log, &yes, &|_| false);
        assert_eq!(n[0].alerts.len(), 2);
    }
}
