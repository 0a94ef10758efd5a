//! The scheduler: runs a changing set of checks, each on its frequency. A check's first run
//! is spread over the interval by a deterministic offset (a hash of its name) plus a little
//! random jitter, so checks with the same frequency do not fire together. A check never runs
//! twice at once: a run that overruns skips the ticks it missed.

use crate::def::CheckDef;
use crate::outcome::Outcome;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::Sender;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// Share of the interval the random jitter may add to the name's offset.
const JITTER_FRACTION: f64 = 0.02;

/// FNV-1a plus a mixer: stable across builds and processes, unlike std's hasher.
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV leaves the high bits poorly mixed for names that differ in their last bytes;
    // finish with splitmix64's mixer.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Where in its interval a check first runs, as a fraction in [0, 1) from its name.
pub fn start_offset(name: &str, frequency: Duration) -> Duration {
    let frac = (fnv1a(name) >> 11) as f64 / (1u64 << 53) as f64;
    frequency.mul_f64(frac)
}

struct Running {
    def: Arc<CheckDef>,
    task: JoinHandle<()>,
}

/// Runs checks on their frequencies and sends each outcome to the receiver it was spawned with.
pub struct Scheduler {
    out: Sender<(i64, Arc<CheckDef>, Outcome)>,
    running: Mutex<HashMap<String, Running>>,
    runtime: tokio::runtime::Handle,
    clock: Clock,
}

/// The wall clock, ms since the Unix epoch; the program passes its own (one clock per
/// program, read in one place).
pub type Clock = fn() -> i64;

async fn check_loop(def: Arc<CheckDef>, out: Sender<(i64, Arc<CheckDef>, Outcome)>, now_ms: Clock) {
    let every = def.frequency.get();
    let jitter = every.mul_f64(JITTER_FRACTION * fastrand::f64());
    let first = Instant::now() + start_offset(&def.name, every) + jitter;
    let mut ticks = tokio::time::interval_at(first, every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        let ts = now_ms();
        let o = crate::run(&def).await;
        if out.send((ts, def.clone(), o)).await.is_err() {
            return; // nobody listens any more
        }
    }
}

impl Scheduler {
    /// Starts an empty scheduler on the current tokio runtime (call it from inside one);
    /// `out` receives (start of the run in ms since the epoch by `clock`, the definition, its
    /// outcome).
    /// Runs wait while `out` is full, so a slow receiver delays checks instead of piling up.
    pub fn spawn(out: Sender<(i64, Arc<CheckDef>, Outcome)>, clock: Clock) -> Scheduler {
        Scheduler {
            clock,
            out,
            running: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Replaces the set of checks: unchanged definitions keep running on their timing, changed
    /// and new ones start, removed ones stop.
    pub fn set_checks(&self, checks: Vec<CheckDef>) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut next: HashMap<String, Running> = HashMap::with_capacity(checks.len());
        for c in checks {
            if next.contains_key(&c.name) {
                continue; // duplicate names are rejected by validation; first one wins
            }
            match running.remove(&c.name) {
                Some(r) if *r.def == c => {
                    next.insert(c.name.clone(), r);
                }
                old => {
                    if let Some(r) = old {
                        r.task.abort();
                    }
                    let def = Arc::new(c);
                    let task =
                        self.runtime
                            .spawn(check_loop(def.clone(), self.out.clone(), self.clock));
                    next.insert(def.name.clone(), Running { def, task });
                }
            }
        }
        for (_, r) in running.drain() {
            r.task.abort();
        }
        *running = next;
    }

    /// Runs `def` once, now, beside the scheduled checks (whether or not it is one of
    /// them); its outcome goes to the receiver like every other.
    pub fn run_once(&self, def: CheckDef) {
        let (out, now_ms) = (self.out.clone(), self.clock);
        self.runtime.spawn(async move {
            let def = Arc::new(def);
            let ts = now_ms();
            let o = crate::run(&def).await;
            let _ = out.send((ts, def, o)).await;
        });
    }

    /// Names of the checks now scheduled, sorted.
    pub fn checks(&self) -> Vec<String> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<String> = running.keys().cloned().collect();
        v.sort();
        v
    }

    /// Stops every check.
    pub fn shutdown(&self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for (_, r) in running.drain() {
            r.task.abort();
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_stable_and_spread() {
        let f = Duration::from_secs(60);
        assert_eq!(start_offset("api", f), start_offset("api", f));
        let offs: Vec<Duration> = (0..100)
            .map(|i| start_offset(&format!("check-{i}"), f))
            .collect();
        assert!(offs.iter().all(|o| *o < f));
        // 100 names land in at least 40 of 60 one-second slots.
        let mut slots: Vec<u64> = offs.iter().map(|o| o.as_secs()).collect();
        slots.sort();
        slots.dedup();
        assert!(slots.len() >= 40, "offsets bunch up: {slots:?}");
    }
}
