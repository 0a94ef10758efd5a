//! Rule evaluation in simulated time: alert state transitions as Prometheus 2.42's
//! `rules/alerting.go`, recording rules feeding later rules, stale markers, limits,
//! sending bookkeeping, slotted schedule, and state that survives a restart.

mod common;

use common::Store;
use outpost_alerting::rule::{ALERTS_METRIC, RESOLVED_RETENTION_MS};
use outpost_alerting::{AlertState, Group, GroupOptions, GroupState, Health, parse_rule_file};
use outpost_shared::model::is_stale;

const MIN: i64 = 60_000;

fn group(yaml: &str) -> Group {
    let f = parse_rule_file("test.yml", yaml).expect("valid rules");
    let opts = GroupOptions {
        external_labels: [("cluster".to_string(), "eu1".to_string())].into(),
        ..GroupOptions::default()
    };
    Group::from_file(&f, &opts).remove(0)
}

fn eval(g: &mut Group, store: &Store, ts: i64) -> outpost_alerting::EvalReport {
    g.eval(ts, &|q, t| store.query(q, t), &mut |s| store.append(s))
}

fn states(g: &Group) -> Vec<(String, AlertState)> {
    g.rules()
        .iter()
        .flat_map(|r| r.alerts())
        .map(|a| (a.labels["instance"].clone(), a.state))
        .collect()
}

const DOWN: &str = r#"
groups:
  - name: g
    rules:
      - alert: Down
        expr: up == 0
        for: 2m
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.instance }} down ({{ $value }}) in {{ $externalLabels.cluster }}"
"#;

#[test]
fn pending_then_firing_then_resolved_then_forgotten() {
    let store = Store::default();
    store.load(r#"up{instance="a"}"#, "1 0 0 0 0 1 1 1", MIN);
    let mut g = group(DOWN);
    eval(&mut g, &store, 0);
    assert!(states(&g).is_empty());
    eval(&mut g, &store, MIN);
    assert_eq!(states(&g), vec![("a".into(), AlertState::Pending)]);
    let a = g.rules()[0].alerts()[0].clone();
    assert_eq!(a.active_at_ms, MIN);
    assert_eq!(a.annotations["summary"], "a down (0) in eu1");
    assert_eq!(a.labels.get("alertname").map(String::as_str), Some("Down"));
    eval(&mut g, &store, 2 * MIN);
    assert_eq!(states(&g), vec![("a".into(), AlertState::Pending)]);
    let r = eval(&mut g, &store, 3 * MIN);
    assert_eq!(states(&g), vec![("a".into(), AlertState::Firing)]);
    assert_eq!(g.rules()[0].alerts()[0].fired_at_ms, Some(3 * MIN));
    // Firing alerts are sent at once, then again after the resend delay.
    assert_eq!(r.to_send.len(), 1);
    assert_eq!(r.to_send[0].alert.valid_until_ms, Some(3 * MIN + 4 * MIN));
    assert!(eval(&mut g, &store, 4 * MIN).to_send.is_empty());
    // Resolved at 5m: sent as resolved, kept 15 minutes, then dropped.
    let r = eval(&mut g, &store, 5 * MIN);
    assert_eq!(states(&g), vec![("a".into(), AlertState::Inactive)]);
    assert_eq!(r.to_send.len(), 1);
    assert_eq!(r.to_send[0].alert.resolved_at_ms, Some(5 * MIN));
    assert_eq!(r.to_send[0].alert.ends_at_ms(), Some(5 * MIN));
    assert!(g.rules()[0].active_alerts().is_empty());
    eval(&mut g, &store, 5 * MIN + RESOLVED_RETENTION_MS);
    assert_eq!(states(&g).len(), 1);
    eval(&mut g, &store, 6 * MIN + RESOLVED_RETENTION_MS);
    assert!(states(&g).is_empty());
}

#[test]
fn pending_alert_that_goes_away_is_dropped_and_starts_over() {
    let store = Store::default();
    store.load(r#"up{instance="a"}"#, "0 1 0 0", MIN);
    let mut g = group(DOWN);
    eval(&mut g, &store, 0);
    eval(&mut g, &store, MIN);
    assert!(states(&g).is_empty());
    eval(&mut g, &store, 2 * MIN);
    assert_eq!(g.rules()[0].alerts()[0].active_at_ms, 2 * MIN);
}

#[test]
fn alerts_series_and_stale_markers() {
    let store = Store::default();
    store.load(r#"up{instance="a"}"#, "0 0 0 1", MIN);
    let mut g = group(DOWN);
    for t in 0..4 {
        eval(&mut g, &store, t * MIN);
    }
    let series = store.series.borrow();
    let alerts: Vec<(String, Vec<(i64, String)>)> = series
        .iter()
        .filter(|(l, _)| {
            l.metric_name()
                .is_some_and(|n| n.starts_with(ALERTS_METRIC))
        })
        .map(|(l, pts)| {
            (
                l.to_string(),
                pts.iter()
                    .map(|(t, v)| {
                        (
                            *t / MIN,
                            if is_stale(*v) {
                                "stale".to_string()
                            } else {
                                v.to_string()
                            },
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        alerts,
        vec![
            (
                r#"ALERTS{alertname="Down", alertstate="firing", instance="a", severity="page"}"#
                    .to_string(),
                vec![(2, "1".to_string()), (3, "stale".to_string())]
            ),
            (
                r#"ALERTS{alertname="Down", alertstate="pending", instance="a", severity="page"}"#
                    .to_string(),
                vec![
                    (0, "1".to_string()),
                    (1, "1".to_string()),
                    (2, "stale".to_string())
                ]
            ),
            (
                r#"ALERTS_FOR_STATE{alertname="Down", instance="a", severity="page"}"#.to_string(),
                vec![
                    (0, "0".to_string()),
                    (1, "0".to_string()),
                    (2, "0".to_string()),
                    (3, "stale".to_string())
                ]
            ),
        ]
    );
}

#[test]
fn keep_firing_for_holds_a_resolved_alert() {
    let store = Store::default();
    store.load(r#"up{instance="a"}"#, "0 0 1 1 1 1", MIN);
    let mut g = group(
        r#"
groups:
  - name: g
    rules:
      - alert: Down
        expr: up == 0
        keep_firing_for: 2m
"#,
    );
    let mut seen = Vec::new();
    for t in 0..6 {
        eval(&mut g, &store, t * MIN);
        seen.push(states(&g)[0].1);
    }
    use AlertState::*;
    // Fires at once (no `for`); kept firing while 2m have not passed since it went away.
    assert_eq!(
        seen,
        vec![Firing, Firing, Firing, Firing, Inactive, Inactive]
    );
    assert_eq!(g.rules()[0].alerts()[0].resolved_at_ms, Some(4 * MIN));
}

#[test]
fn recording_rules_feed_later_rules_of_the_same_evaluation() {
    let store = Store::default();
    store.load(r#"up{job="api",instance="a"}"#, "0", MIN);
    store.load(r#"up{job="api",instance="b"}"#, "0", MIN);
    let mut g = group(
        r#"
groups:
  - name: g
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
        labels:
          source: rule
      - alert: JobDown
        expr: job:up:sum == 0
"#,
    );
    let r = eval(&mut g, &store, 0);
    assert_eq!(r.rules[0].samples, 1);
    assert_eq!(states_by_job(&g), vec!["api".to_string()]);
    let alert = g.rules()[1].alerts()[0];
    assert_eq!(alert.labels.get("source").map(String::as_str), Some("rule"));
}

fn states_by_job(g: &Group) -> Vec<String> {
    g.rules()
        .iter()
        .flat_map(|r| r.alerts())
        .map(|a| a.labels["job"].clone())
        .collect()
}

#[test]
fn limits_and_duplicate_label_sets_fail_the_rule() {
    let store = Store::default();
    store.load(r#"up{instance="a"}"#, "0", MIN);
    store.load(r#"up{instance="b"}"#, "0", MIN);
    let mut g = group(
        r#"
groups:
  - name: g
    limit: 1
    rules:
      - alert: Down
        expr: up == 0
      - record: r
        expr: up
      - record: same
        expr: up
        labels:
          instance: x
"#,
    );
    let r = eval(&mut g, &store, 0);
    assert_eq!(r.rules[0].health, Health::Err);
    assert_eq!(
        r.rules[0].error.as_deref(),
        Some("exceeded limit of 1 with 2 alerts")
    );
    assert!(g.rules()[0].alerts().is_empty());
    assert_eq!(
        r.rules[1].error.as_deref(),
        Some("exceeded limit of 1 with 2 series")
    );
    assert_eq!(
        r.rules[2].error.as_deref(),
        Some("vector contains metrics with the same labelset after applying rule labels")
    );
    let r = eval(&mut g, &store, MIN);
    assert_eq!(g.rules()[0].health, Health::Err);
    assert!(r.to_send.is_empty());
}

#[test]
fn query_errors_are_reported_and_nothing_is_written() {
    let mut g = group(DOWN);
    let mut writes = 0;
    let r = g.eval(
        0,
        &|_, _| Err("storage read failed: disk".into()),
        &mut |_| {
            writes += 1;
            Ok(())
        },
    );
    assert_eq!(
        r.rules[0].error.as_deref(),
        Some("storage read failed: disk")
    );
    assert_eq!(writes, 0);
}

#[test]
fn state_round_trips_through_json_and_survives_a_restart() {
    let store = Store::default();
    store.load(r#"up{instance="a"}"#, "0 0 0 0 0 0", MIN);
    store.load(r#"up{instance="b"}"#, "1 1 1 0 0 0", MIN);
    let mut g = group(DOWN);
    for t in 0..4 {
        eval(&mut g, &store, t * MIN);
    }
    assert_eq!(
        states(&g),
        vec![
            ("a".into(), AlertState::Firing),
            ("b".into(), AlertState::Pending)
        ]
    );
    let json = serde_json::to_string(&g.state()).expect("serialise");
    let back: GroupState = serde_json::from_str(&json).expect("deserialise");
    assert_eq!(back, g.state());

    // A fresh process: the group from the file, then the saved state.
    let mut restarted = group(DOWN);
    restarted.restore(back);
    assert_eq!(restarted.next_eval_ms(0), 4 * MIN);
    eval(&mut restarted, &store, 4 * MIN);
    eval(&mut restarted, &store, 5 * MIN);
    let alerts = restarted.rules()[0].alerts();
    assert_eq!(
        (alerts[0].active_at_ms, alerts[0].fired_at_ms),
        (0, Some(2 * MIN))
    );
    // b became pending at 3m and fires at 5m, as without the restart.
    assert_eq!(
        (alerts[1].active_at_ms, alerts[1].state),
        (3 * MIN, AlertState::Firing)
    );
    assert_eq!(alerts[1].fired_at_ms, Some(5 * MIN));
    // Already sent before the restart: not sent again until the resend delay passes.
    assert_eq!(alerts[0].last_sent_at_ms, Some(4 * MIN));
}

#[test]
fn restore_marks_series_of_removed_rules_stale() {
    let store = Store::default();
    store.load(r#"up{instance="a"}"#, "1 1", MIN);
    let mut old = group(
        r#"
groups:
  - name: g
    rules:
      - record: gone
        expr: up
"#,
    );
    eval(&mut old, &store, 0);
    let mut new = group(DOWN);
    new.restore(old.state());
    eval(&mut new, &store, MIN);
    let series = store.series.borrow();
    let gone = series
        .iter()
        .find(|(l, _)| l.metric_name() == Some("gone"))
        .expect("recorded series");
    assert!(is_stale(gone.1[&MIN]));
}

#[test]
fn evaluations_are_slotted_like_prometheus() {
    let mut g = group(DOWN);
    // XXH64("file\xfftest.yml\xffname\xffg\xff") % 60s gives the group's offset.
    let first = g.next_eval_ms(1_000_000_000_000);
    let slot = g.eval_timestamp_ms(1_000_000_000_000);
    assert_eq!(first, slot + MIN);
    assert!(slot <= 1_000_000_000_000 && 1_000_000_000_000 - slot < MIN);
    // Prometheus computes the slot in nanoseconds; the sub-millisecond part of the offset
    // puts the slot just after `slot` ms, so `slot + 1` is the first ms inside it.
    assert_eq!(g.eval_timestamp_ms(slot + 1), slot);
    assert_eq!(g.eval_timestamp_ms(slot), slot - MIN);
    assert_eq!(g.eval_timestamp_ms(slot + MIN - 1), slot);
    assert_eq!(g.eval_timestamp_ms(slot + 7 * MIN + 5), slot + 7 * MIN);
    let store = Store::default();
    eval(&mut g, &store, first);
    assert_eq!(g.next_eval_ms(first + 1), first + MIN);
}

#[test]
fn slots_match_a_real_prometheus() {
    // Prometheus 2.42 loading this group from /tmp/promslot/rules.yml wrote `slot_probe` at
    // 1796083163.749, 1796083170.749, 1796083177.749: the slot's phase within 7s comes
    // from XXH64 of the file and group name.
    let yaml = "groups:\n  - name: slotted\n    interval: 7s\n    rules:\n      - record: slot_probe\n        expr: vector(1)\n";
    let f = parse_rule_file("/tmp/promslot/rules.yml", yaml).expect("valid");
    let g = Group::from_file(&f, &GroupOptions::default()).remove(0);
    for seen in [1_796_083_163_749, 1_796_083_170_749, 1_796_083_177_749] {
        assert_eq!(g.eval_timestamp_ms(seen + 1), seen);
        assert_eq!(g.eval_timestamp_ms(seen + 6_999), seen);
    }
    assert_eq!(g.next_eval_ms(1_796_083_163_750), 1_796_083_170_749);
}

const SLOW: &str = r#"
groups:
  - name: g
    rules:
      - alert: Down
        expr: up == 0
        for: 30m
"#;

/// Saves the group's state after evaluating minutes `0..=until` of all-down input.
fn saved_after(minutes: i64) -> (Store, GroupState) {
    let store = Store::default();
    store.load(r#"up{instance="a"}"#, "0x200", MIN);
    let mut g = group(SLOW);
    for t in 0..=minutes {
        eval(&mut g, &store, t * MIN);
    }
    (store, g.state())
}

#[test]
fn restart_keeps_pending_progress_across_the_downtime() {
    use outpost_alerting::RestorePolicy;
    // Pending 10 of 30 minutes at 10m, down for 20 minutes: 20 minutes still to wait.
    let (_, state) = saved_after(10);
    let mut g = group(SLOW);
    g.restore_after_restart(state, 30 * MIN, &RestorePolicy::default());
    assert_eq!(g.rules()[0].alerts()[0].active_at_ms, 20 * MIN);
    // Pending 25 of 30 minutes: fires no sooner than the 10-minute grace period.
    let (_, state) = saved_after(25);
    let mut g = group(SLOW);
    g.restore_after_restart(state, 40 * MIN, &RestorePolicy::default());
    assert_eq!(
        g.rules()[0].alerts()[0].active_at_ms,
        40 * MIN + 10 * MIN - 30 * MIN
    );
    // Firing: keeps its start.
    let (store, state) = saved_after(35);
    let mut g = group(SLOW);
    g.restore_after_restart(state, 50 * MIN, &RestorePolicy::default());
    eval(&mut g, &store, 50 * MIN);
    let a = g.rules()[0].alerts()[0];
    assert_eq!(
        (a.state, a.active_at_ms, a.fired_at_ms),
        (AlertState::Firing, 0, Some(30 * MIN))
    );
    // Down longer than the outage tolerance: start over.
    let (store, state) = saved_after(35);
    let mut g = group(SLOW);
    g.restore_after_restart(state, 35 * MIN + 61 * MIN, &RestorePolicy::default());
    assert!(g.rules()[0].alerts().is_empty());
    eval(&mut g, &store, 96 * MIN);
    assert_eq!(g.rules()[0].alerts()[0].active_at_ms, 96 * MIN);
}

#[test]
fn alerts_of_a_cut_off_source_are_held_not_resolved() {
    // Instance a's data stops after 3m (its agent is cut off); b's condition clears.
    let store = Store::default();
    store.load(r#"up{instance="a"}"#, "0 0 0 0", MIN);
    store.load(r#"up{instance="b"}"#, "0 0 0 0 1 1 1 1 1 1 1 1", MIN);
    let yaml = DOWN.replace("for: 2m", "for: 0s");
    let cut_off = std::cell::Cell::new(true);
    let held = |l: &outpost_alerting::rule::LabelMap| {
        cut_off.get() && l.get("instance").map(String::as_str) == Some("a")
    };
    let mut g = group(&yaml);
    let run = |g: &mut Group, ts: i64| {
        g.eval_holding(
            ts,
            &|q, t| store.query(q, t),
            &mut |s| store.append(s),
            Some(&held),
        )
    };
    run(&mut g, 0);
    assert_eq!(
        states(&g),
        vec![
            ("a".into(), AlertState::Firing),
            ("b".into(), AlertState::Firing)
        ]
    );
    // At 9m a's last sample (3m) is past the 5m lookback: without data, a is held firing
    // while b resolves on its data.
    let r = run(&mut g, 9 * MIN);
    assert_eq!(
        states(&g),
        vec![
            ("a".into(), AlertState::Firing),
            ("b".into(), AlertState::Inactive)
        ]
    );
    // a is re-sent as firing (so Alertmanager keeps it), b as resolved.
    let sent: Vec<(&str, AlertState)> = r
        .to_send
        .iter()
        .map(|s| (s.alert.labels["instance"].as_str(), s.alert.state))
        .collect();
    assert_eq!(
        sent,
        vec![("a", AlertState::Firing), ("b", AlertState::Inactive)]
    );
    let alerts = store
        .query(
            &format!("{ALERTS_METRIC}{{alertstate=\"firing\"}}"),
            9 * MIN,
        )
        .expect("query");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(g.rules()[0].alerts()[0].active_at_ms, 0);
    // Once the source is back and its data says so, a resolves as usual.
    cut_off.set(false);
    run(&mut g, 10 * MIN);
    assert_eq!(
        states(&g),
        vec![
            ("a".into(), AlertState::Inactive),
            ("b".into(), AlertState::Inactive)
        ]
    );
}
