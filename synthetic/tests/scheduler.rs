//! The scheduler against a real TCP listener: spread start times, one run at a time, and
//! replacing the set of checks.

mod common;

use outpost_synthetic::{CheckDef, Outcome, Scheduler, start_offset};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

type Rx = mpsc::Receiver<(i64, Arc<CheckDef>, Outcome)>;

fn tcp(name: &str, target: std::net::SocketAddr) -> CheckDef {
    common::check(&format!(
        "{{name: {name}, type: tcp, frequency: 1s, target: '{target}'}}"
    ))
}

/// Collects runs until `until` has elapsed: name -> start timestamps.
async fn collect(rx: &mut Rx, until: Duration) -> HashMap<String, Vec<i64>> {
    let mut runs: HashMap<String, Vec<i64>> = HashMap::new();
    let end = tokio::time::Instant::now() + until;
    while let Ok(Some((ts, def, o))) = tokio::time::timeout_at(end, rx.recv()).await {
        assert!(o.success, "{o:?}");
        assert_eq!(o.check, def.name);
        runs.entry(def.name.clone()).or_default().push(ts);
    }
    runs
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_with_the_same_frequency_fire_apart_and_replacement_keeps_timing() {
    let target = common::banner_server().await;
    let f = Duration::from_secs(1);
    // Two names whose deterministic offsets are far apart (jitter adds at most 2%).
    let (a, b) = ("alpha", "beta");
    let gap = start_offset(a, f).abs_diff(start_offset(b, f));
    assert!(
        gap > Duration::from_millis(100) && gap < Duration::from_millis(900),
        "{gap:?}"
    );

    let (tx, mut rx) = mpsc::channel(64);
    let s = Scheduler::spawn(tx, now_ms);
    s.set_checks(vec![tcp(a, target), tcp(b, target)]);
    let runs = collect(&mut rx, Duration::from_millis(2600)).await;
    let (ra, rb) = (&runs[a], &runs[b]);
    assert!(ra.len() >= 2 && rb.len() >= 2, "{runs:?}");
    for x in ra {
        for y in rb {
            assert!(
                (x - y).abs() > 10,
                "alpha at {x} and beta at {y} fired together"
            );
        }
    }
    // Each check keeps its frequency.
    let step = ra[1] - ra[0];
    assert!((850..=1150).contains(&step), "alpha interval {step} ms");

    // Replace: alpha unchanged keeps its phase, beta goes, gamma starts.
    s.set_checks(vec![tcp(a, target), tcp("gamma", target)]);
    assert_eq!(s.checks(), vec!["alpha", "gamma"]);
    let later = collect(&mut rx, Duration::from_millis(2300)).await;
    assert!(!later.contains_key(b), "beta still runs: {later:?}");
    assert!(
        later.get("gamma").is_some_and(|v| !v.is_empty()),
        "{later:?}"
    );
    let phase = |t: i64| (t - ra[0]).rem_euclid(1000);
    for t in &later[a] {
        let p = phase(*t);
        assert!(
            !(100..=900).contains(&p),
            "alpha moved in its interval: {p} ms off"
        );
    }

    // Shutdown stops everything.
    s.shutdown();
    assert!(s.checks().is_empty());
    let after = collect(&mut rx, Duration::from_millis(1300)).await;
    assert!(after.is_empty(), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_overruns_skips_ticks_instead_of_overlapping() {
    let a = common::http_server().await;
    // /slow answers after 3 s; the check times out at 1 s, as long as its frequency, so each
    // run takes the whole interval and the next tick is skipped rather than run alongside.
    let d = common::check(&format!(
        "{{name: slow, type: http, frequency: 1s, timeout: 1s, url: 'http://{a}/slow'}}"
    ));
    let (tx, mut rx) = mpsc::channel(64);
    let s = Scheduler::spawn(tx, now_ms);
    s.set_checks(vec![d]);
    let mut starts = Vec::new();
    let end = tokio::time::Instant::now() + Duration::from_millis(4500);
    while let Ok(Some((ts, _, o))) = tokio::time::timeout_at(end, rx.recv()).await {
        assert_eq!(o.reason.as_deref(), Some("timed out after 1s"));
        starts.push((ts, o.duration));
    }
    assert!(starts.len() >= 2, "{starts:?}");
    for w in starts.windows(2) {
        let (t0, d0) = w[0];
        assert!(
            w[1].0 >= t0 + d0.as_millis() as i64 - 5,
            "runs overlap: {starts:?}"
        );
    }
    s.shutdown();
}
