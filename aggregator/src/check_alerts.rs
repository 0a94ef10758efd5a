//! Check alerts that understand regions, and agent liveness.
//!
//! Every second the aggregator decides, for each check with an `alert:` and each of its
//! locations, how the region stands, and writes it as series the generated rules read:
//!
//! | series | value |
//! |---|---|
//! | `outpost_check_region_unknown{check,region}` | 1 when the region is cut off: no live agent of the region is connected, or its newest result is older than [`stale_after_ms`]; else 0 |
//! | `outpost_check_region_failing{check,region[,step]}` | 1 when the region's failure is counted (confirmed by a re-run), with the failing journey step; 0 when it passes; absent while unknown |
//! | `outpost_check_region_degraded{check,region}` | 1 when the newest run passed but took longer than `degraded_ms`; else 0; absent while unknown |
//! | `outpost_agent_up{agent,region}` | 1 while the agent is connected and live, 0 once it is noticed down (agents seen since the aggregator started) |
//!
//! A failure is counted only when a second run confirms it: when a region's result turns
//! from passing to failing, the aggregator asks another connected agent of the region to run
//! the check once now ([`crate::checks::pick_rerun`]; the failing agent itself when it is
//! the only one), and the region counts as failing only when that run fails too; a passing
//! re-run (or a passing next run of the first agent) keeps the flake from counting. Once
//! counted, the region stays failing until a run passes. When no agent can re-run (older
//! agents only), or the re-run brings no result within [`RERUN_WAIT_MS`] plus the check's
//! timeout, the failure counts as it is.
//!
//! The rules generated from the checks file ([`rule_file`], group `outpost-checks` of the
//! virtual file [`GENERATED_FILE`]) alert on those series; the agent-down rule (group
//! `outpost-agents`) on `outpost_agent_up`. They run in the rules engine like any rule file.
//!
//! Liveness: agents of protocol 3 and later send something at least every liveness
//! interval (a batch, or a heartbeat when nothing else went out): a quarter of
//! `agent_down_after` for agents of protocol 5, told in the welcome
//! ([`outpost_shared::frame::alive_every_for`]), a second for older ones. So the aggregator
//! counts an agent down when it has heard nothing for `agent_down_after` (30 s by default),
//! closes its connection, and its checks move to another agent of its region. While data
//! flows, this costs nothing on the wire.

use crate::checks::Placement;
use crate::connections::Connections;
use crate::ingest::{SeriesWrite, WriterMsg};
use outpost_alerting::RuleFile;
use outpost_promql::{MatchOp, Matcher, Queryable};
use outpost_shared::model::{METRIC_NAME, stale_nan};
use outpost_shared::{Labels, Point};
use outpost_synthetic::CheckDef;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// The file name the generated rules are shown under in `/api/v1/rules` (and their stored
/// state is keyed by).
pub const GENERATED_FILE: &str = "outpost:generated";
/// The generated group of check alerts.
pub const CHECKS_GROUP: &str = "outpost-checks";
/// The generated group of the agent-down alert.
pub const AGENTS_GROUP: &str = "outpost-agents";
/// How long a requested re-run may take to bring its result, beyond the check's timeout.
pub const RERUN_WAIT_MS: i64 = 5_000;
/// How often region states and `outpost_agent_up` are written.
pub const WRITE_EVERY: Duration = Duration::from_secs(1);
/// How often silent agents are looked for.
pub const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// A region whose newest result is older than this, ms, is unknown: two missed runs plus the
/// run's timeout (`2 × frequency + timeout`).
pub fn stale_after_ms(c: &CheckDef) -> i64 {
    (2 * c.frequency.get() + c.timeout()).as_millis() as i64
}

/// A string as a PromQL (and Go template) double-quoted literal.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The failing-alert expression of check `name` with `k` regions.
pub fn failing_expr(name: &str, k: u32) -> String {
    format!(
        "count by (check) (outpost_check_region_failing{{check={}}} == 1) >= {k}",
        quoted(name)
    )
}

/// The degraded-alert expression: `k` regions degraded while the check is not failing.
pub fn degraded_expr(name: &str, k: u32) -> String {
    format!(
        "(count by (check) (outpost_check_region_degraded{{check={q}}} == 1) >= {k}) unless on (check) ({f})",
        q = quoted(name),
        f = failing_expr(name, k)
    )
}

/// A template listing `series{check=name} == 1` by region, comma-separated; with `step`,
/// each region is followed by its failing step when it has one.
fn regions_template(series: &str, name: &str, step: bool) -> String {
    let q = quoted(&format!("{series}{{check={}}} == 1", quoted(name)));
    let each = if step {
        "{{ $s.Labels.region }}{{ if $s.Labels.step }} (step {{ $s.Labels.step }}){{ end }}"
    } else {
        "{{ $s.Labels.region }}"
    };
    format!(
        "{{{{ range $i, $s := query {q} | sortByLabel \"region\" }}}}{{{{ if $i }}}}, {{{{ end }}}}{each}{{{{ end }}}}"
    )
}

/// The generated rule file: `OutpostCheckFailing` (and `OutpostCheckDegraded` when
/// `degraded_ms` is set) for every check with an `alert:`, and `OutpostAgentDown` with
/// `agent_down_for` as its `for` unless it is `None` (disabled). `None` when there is no
/// rule at all.
///
/// # Errors
/// The rule problems if the generated file does not validate (a bug: inputs are validated).
pub fn rule_file(
    checks: &[CheckDef],
    agent_down_for: Option<Duration>,
) -> Result<Option<RuleFile>, String> {
    use serde_json::json;
    let mut groups = Vec::new();
    if let Some(f) = agent_down_for {
        groups.push(json!({
            "name": AGENTS_GROUP,
            "rules": [{
                "alert": "OutpostAgentDown",
                "expr": "outpost_agent_up == 0",
                "for": outpost_shared::units::Duration(f).to_string(),
                "labels": {"severity": "warning"},
                "annotations": {
                    "summary": "Agent {{ $labels.agent }} ({{ $labels.region }}) is down",
                    "description": "Nothing has arrived from agent {{ $labels.agent }} of region {{ $labels.region }} within the aggregator's agent_down_after; its checks moved to other agents of its region.",
                },
            }],
        }));
    }
    let mut rules = Vec::new();
    for c in checks {
        let Some(a) = &c.alert else { continue };
        let k = a.failing_regions;
        let for_ = outpost_shared::units::Duration(a.for_duration()).to_string();
        let unknown = regions_template("outpost_check_region_unknown", &c.name, false);
        let failing = regions_template("outpost_check_region_failing", &c.name, true);
        rules.push(json!({
            "alert": "OutpostCheckFailing",
            "expr": failing_expr(&c.name, k),
            "for": for_,
            "labels": {"severity": a.severity()},
            "annotations": {
                "summary": format!("Check {} is failing from {{{{ $value }}}} regions", quoted(&c.name)),
                "description": format!("Failing from {failing}; unknown (not counted): {unknown}."),
                "failing_regions": regions_template("outpost_check_region_failing", &c.name, false),
                "failing_steps": failing,
                "unknown_regions": unknown,
            },
        }));
        if a.degraded_ms.is_some() {
            let degraded = regions_template("outpost_check_region_degraded", &c.name, false);
            rules.push(json!({
                "alert": "OutpostCheckDegraded",
                "expr": degraded_expr(&c.name, k),
                "for": for_,
                "labels": {"severity": "warning"},
                "annotations": {
                    "summary": format!("Check {} is slow from {{{{ $value }}}} regions", quoted(&c.name)),
                    "description": format!("Passing but slower than {} ms from {degraded}; unknown (not counted): {unknown}.", a.degraded_ms.unwrap_or_default()),
                    "degraded_regions": degraded,
                    "unknown_regions": unknown,
                },
            }));
        }
    }
    if !rules.is_empty() {
        groups.push(json!({"name": CHECKS_GROUP, "rules": rules}));
    }
    if groups.is_empty() {
        return Ok(None);
    }
    // JSON is YAML: the generated file goes through the same parser and validation as
    // users' rule files.
    let text = json!({ "groups": groups }).to_string();
    outpost_alerting::parse_rule_file(GENERATED_FILE, &text)
        .map(Some)
        .map_err(|ps| {
            ps.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })
}

/// One run's result as stored: `probe_success` with the same instant's duration and
/// failing step.
#[derive(Clone, Debug, PartialEq)]
pub struct RunResult {
    /// When the run started, ms (the agent's clock).
    pub ts_ms: i64,
    /// The agent that ran it.
    pub agent: String,
    /// Whether it passed.
    pub success: bool,
    /// How long it took, s.
    pub duration_seconds: f64,
    /// The journey step that failed, if any.
    pub step: Option<String>,
}

/// How a region stands for one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegionState {
    /// Cut off: no live agent, or no fresh result.
    Unknown,
    /// The newest counted run passed in time.
    Passing,
    /// The newest counted run passed but was slower than `degraded_ms`.
    Degraded,
    /// A failure confirmed by a re-run (or counted without one, see the module docs).
    Failing {
        /// The journey step that failed, if any.
        step: Option<String>,
    },
}

#[derive(Clone, Debug)]
struct Confirm {
    failed_agent: String,
    failed_ts: i64,
    step: Option<String>,
    rerunner: String,
    asked_ms: i64,
}

/// The state of one check in one region, fed with results in time order.
#[derive(Clone, Debug)]
pub struct RegionTrack {
    counted: RegionState,
    confirm: Option<Confirm>,
    newest_ts: Option<i64>,
    /// The newest result consumed per agent, ms.
    consumed: HashMap<String, i64>,
}

impl Default for RegionTrack {
    fn default() -> Self {
        RegionTrack {
            // Shown only once a result arrived; until a failure is confirmed, not failing.
            counted: RegionState::Passing,
            confirm: None,
            newest_ts: None,
            consumed: HashMap::new(),
        }
    }
}

impl RegionTrack {
    /// Whether `r` is new (not consumed before from its agent).
    pub fn is_new(&self, r: &RunResult) -> bool {
        self.consumed.get(&r.agent).is_none_or(|&t| r.ts_ms > t)
    }

    /// Takes one new result at `now_ms`. A failure that would turn the region from
    /// not-failing to failing asks `rerun(failed agent)` for the agent that re-runs it
    /// (`None`: nobody can, and the failure counts at once).
    pub fn handle_result(
        &mut self,
        c: &CheckDef,
        r: &RunResult,
        now_ms: i64,
        rerun: &mut dyn FnMut(&str) -> Option<String>,
    ) {
        if !self.is_new(r) {
            return;
        }
        self.consumed.insert(r.agent.clone(), r.ts_ms);
        self.newest_ts = Some(self.newest_ts.map_or(r.ts_ms, |t| t.max(r.ts_ms)));
        let passed = || pass_state(c, r);
        if let Some(cf) = &self.confirm {
            let from_rerunner = r.agent == cf.rerunner && r.ts_ms > cf.failed_ts;
            if from_rerunner {
                self.counted = if r.success {
                    passed()
                } else {
                    RegionState::Failing {
                        step: r.step.clone().or_else(|| cf.step.clone()),
                    }
                };
                self.confirm = None;
            } else if r.success && r.ts_ms > cf.failed_ts {
                // The first agent passes again before the re-run answered: a flake.
                self.counted = passed();
                self.confirm = None;
            }
            return;
        }
        if r.success {
            self.counted = passed();
        } else if matches!(self.counted, RegionState::Failing { .. }) {
            self.counted = RegionState::Failing {
                step: r.step.clone(),
            };
        } else {
            match rerun(&r.agent) {
                Some(rerunner) => {
                    self.confirm = Some(Confirm {
                        failed_agent: r.agent.clone(),
                        failed_ts: r.ts_ms,
                        step: r.step.clone(),
                        rerunner,
                        asked_ms: now_ms,
                    })
                }
                None => {
                    self.counted = RegionState::Failing {
                        step: r.step.clone(),
                    }
                }
            }
        }
    }

    /// The region's state at `now_ms`: unknown when `reachable` is false or the newest
    /// result is stale; a re-run that did not answer in time counts its failure.
    pub fn state(&mut self, c: &CheckDef, reachable: bool, now_ms: i64) -> RegionState {
        if let Some(cf) = &self.confirm
            && now_ms - cf.asked_ms > RERUN_WAIT_MS + c.timeout().as_millis() as i64
        {
            tracing::warn!(check = %c.name, agent = %cf.rerunner, failed = %cf.failed_agent, "the re-run brought no result in time: the failure counts");
            self.counted = RegionState::Failing {
                step: cf.step.clone(),
            };
            self.confirm = None;
        }
        let fresh = self
            .newest_ts
            .is_some_and(|t| now_ms - t <= stale_after_ms(c));
        if !reachable || !fresh {
            return RegionState::Unknown;
        }
        self.counted.clone()
    }

    /// Whether a re-run is awaited.
    pub fn confirming(&self) -> bool {
        self.confirm.is_some()
    }
}

fn pass_state(c: &CheckDef, r: &RunResult) -> RegionState {
    let slow = c
        .alert
        .as_ref()
        .and_then(|a| a.degraded_ms)
        .is_some_and(|ms| r.duration_seconds * 1000.0 > ms as f64);
    if slow {
        RegionState::Degraded
    } else {
        RegionState::Passing
    }
}

fn eq(name: &str, value: &str) -> Option<Matcher> {
    Matcher::new(name, MatchOp::Equal, value).ok()
}

/// Every run of `check` in `region` with a point in `[from_ms, to_ms]`, oldest first.
///
/// # Errors
/// The store could not be read.
pub fn read_results(
    src: &dyn Queryable,
    check: &str,
    region: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<RunResult>, outpost_promql::StorageError> {
    let q = src.querier(from_ms, to_ms)?;
    let sel = |name: &str| -> Vec<Matcher> {
        [
            eq(METRIC_NAME, name),
            eq("check", check),
            eq("region", region),
        ]
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default()
    };
    // (agent, ts) → duration, step
    let mut durations: HashMap<(String, i64), f64> = HashMap::new();
    for (id, labels) in q.select(&sel("probe_duration_seconds"))? {
        let agent = labels.get("agent").unwrap_or("").to_string();
        for p in q.points(id, from_ms, to_ms)? {
            durations.insert((agent.clone(), p.ts), p.value);
        }
    }
    let mut steps: HashMap<(String, i64), String> = HashMap::new();
    for (id, labels) in q.select(&sel("probe_failure_info"))? {
        let agent = labels.get("agent").unwrap_or("").to_string();
        let Some(step) = labels.get("step").filter(|s| !s.is_empty()) else {
            continue;
        };
        for p in q.points(id, from_ms, to_ms)? {
            steps.insert((agent.clone(), p.ts), step.to_string());
        }
    }
    let mut out = Vec::new();
    for (id, labels) in q.select(&sel("probe_success"))? {
        let agent = labels.get("agent").unwrap_or("").to_string();
        for p in q.points(id, from_ms, to_ms)? {
            if outpost_shared::model::is_stale(p.value) {
                continue;
            }
            let key = (agent.clone(), p.ts);
            out.push(RunResult {
                ts_ms: p.ts,
                agent: agent.clone(),
                success: p.value == 1.0,
                duration_seconds: durations.get(&key).copied().unwrap_or(0.0),
                step: steps.get(&key).cloned(),
            });
        }
    }
    out.sort_by(|a, b| (a.ts_ms, &a.agent).cmp(&(b.ts_ms, &b.agent)));
    Ok(out)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

/// What was last written for one (check, region): the failing series' labels.
#[derive(Default)]
struct Written {
    failing: Option<Labels>,
    degraded: Option<Labels>,
}

/// The region states of every alerting check and the `outpost_agent_up` series.
pub struct Tracker {
    regions: BTreeMap<(String, String), RegionTrack>,
    written: BTreeMap<(String, String), Written>,
    up_written: BTreeMap<String, Labels>,
}

impl Default for Tracker {
    fn default() -> Self {
        Self::new()
    }
}

impl Tracker {
    /// Nothing tracked yet.
    pub fn new() -> Tracker {
        Tracker {
            regions: BTreeMap::new(),
            written: BTreeMap::new(),
            up_written: BTreeMap::new(),
        }
    }

    /// One round at `now_ms`: feeds every region of every alerting check its new results
    /// (`results(check, region, from_ms)`), and returns the samples to write. `reachable`
    /// says which regions have a connected agent; `rerun(check, region, failed agent)`
    /// asks for a re-run; `agents` are (id, region, up).
    pub fn round(
        &mut self,
        checks: &[CheckDef],
        now_ms: i64,
        reachable: &dyn Fn(&str) -> bool,
        results: &mut dyn FnMut(&str, &str, i64) -> Vec<RunResult>,
        rerun: &mut dyn FnMut(&str, &str, &str) -> Option<String>,
        agents: &[(String, String, bool)],
    ) -> SeriesWrite {
        let mut out: SeriesWrite = Vec::new();
        let point = |v: f64| {
            vec![Point {
                ts: now_ms,
                value: v,
            }]
        };
        let mut live = std::collections::BTreeSet::new();
        for c in checks.iter().filter(|c| c.alert.is_some()) {
            for region in &c.locations {
                let key = (c.name.clone(), region.clone());
                live.insert(key.clone());
                let track = self.regions.entry(key.clone()).or_default();
                let from = now_ms - stale_after_ms(c);
                for r in results(&c.name, region, from) {
                    track
                        .handle_result(c, &r, now_ms, &mut |failed| rerun(&c.name, region, failed));
                }
                let state = track.state(c, reachable(region), now_ms);
                let w = self.written.entry(key).or_default();
                let (failing, degraded) = match &state {
                    RegionState::Unknown => (None, None),
                    RegionState::Passing => (Some((None, 0.0)), Some(0.0)),
                    RegionState::Degraded => (Some((None, 0.0)), Some(1.0)),
                    RegionState::Failing { step } => (Some((step.as_deref(), 1.0)), Some(0.0)),
                };
                let unknown = if state == RegionState::Unknown {
                    1.0
                } else {
                    0.0
                };
                out.push((
                    labels(&[
                        (METRIC_NAME, "outpost_check_region_unknown"),
                        ("check", &c.name),
                        ("region", region),
                    ]),
                    point(unknown),
                ));
                let f_labels = failing.map(|(step, v)| {
                    let mut l = vec![
                        (METRIC_NAME, "outpost_check_region_failing"),
                        ("check", c.name.as_str()),
                        ("region", region.as_str()),
                    ];
                    if let Some(s) = step {
                        l.push(("step", s));
                    }
                    (labels(&l), v)
                });
                let d_labels = degraded.map(|v| {
                    (
                        labels(&[
                            (METRIC_NAME, "outpost_check_region_degraded"),
                            ("check", &c.name),
                            ("region", region),
                        ]),
                        v,
                    )
                });
                for (slot, next) in [(&mut w.failing, f_labels), (&mut w.degraded, d_labels)] {
                    if let Some(old) = slot.take()
                        && next.as_ref().is_none_or(|(l, _)| *l != old)
                    {
                        out.push((old, point(stale_nan())));
                    }
                    if let Some((l, v)) = next {
                        out.push((l.clone(), point(v)));
                        *slot = Some(l);
                    }
                }
            }
        }
        // Checks (or locations) no longer alerting: their series end.
        let gone: Vec<(String, String)> = self
            .written
            .keys()
            .filter(|k| !live.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            self.regions.remove(&k);
            if let Some(w) = self.written.remove(&k) {
                for l in [w.failing, w.degraded].into_iter().flatten() {
                    out.push((l, point(stale_nan())));
                }
                out.push((
                    labels(&[
                        (METRIC_NAME, "outpost_check_region_unknown"),
                        ("check", &k.0),
                        ("region", &k.1),
                    ]),
                    point(stale_nan()),
                ));
            }
        }
        for (id, region, up) in agents {
            let l = labels(&[
                (METRIC_NAME, "outpost_agent_up"),
                ("agent", id),
                ("region", region),
            ]);
            if let Some(old) = self.up_written.get(id)
                && *old != l
            {
                out.push((old.clone(), point(stale_nan())));
            }
            self.up_written.insert(id.clone(), l.clone());
            out.push((l, point(if *up { 1.0 } else { 0.0 })));
        }
        out
    }
}

/// Runs the liveness sweep and the region states until `stop` turns true.
pub fn spawn(
    storage: Arc<outpost_tsdb::Storage>,
    writer: mpsc::Sender<WriterMsg>,
    placement: Arc<Placement>,
    connections: Arc<Connections>,
    down_after: Duration,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tracker = Tracker::new();
        let mut checks = placement.subscribe();
        let mut next_write = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
                _ = stop.wait_for(|v| *v) => return,
            }
            let now = outpost_service::now_ms();
            let after = down_after.as_millis() as i64;
            for (agent, conn, silent_ms) in connections.silent(now, after) {
                tracing::warn!(%agent, silent_ms, "agent is down: nothing arrived from it within agent_down_after; closing its connection, its checks move");
                conn.close(
                    quinn::VarInt::from_u32(outpost_shared::frame::close::SILENT),
                    b"nothing arrived within agent_down_after",
                );
            }
            if tokio::time::Instant::now() < next_write {
                continue;
            }
            next_write += WRITE_EVERY;
            let defs = checks.borrow_and_update().clone();
            let by_region = placement.agents_by_region();
            let known = connections.known();
            let (st, pl) = (storage.clone(), placement.clone());
            let mut t = std::mem::take(&mut tracker);
            let done = tokio::task::spawn_blocking(move || {
                let write = t.round(
                    &defs,
                    now,
                    &|r| by_region.get(r).is_some_and(|a| !a.is_empty()),
                    &mut |check, region, from| {
                        read_results(st.as_ref(), check, region, from, now).unwrap_or_else(|e| {
                            tracing::warn!(check, region, "cannot read check results: {e}");
                            vec![]
                        })
                    },
                    &mut |check, region, failed| {
                        let asked = pl.request_rerun(check, region, failed);
                        match &asked {
                            Some(a) => tracing::info!(check, region, failed, rerun_by = %a, "a check failed: asking for a re-run before counting it"),
                            None => tracing::info!(check, region, failed, "a check failed and no agent can re-run it: the failure counts"),
                        }
                        asked
                    },
                    &known,
                );
                (t, write)
            })
            .await;
            let Ok((t, write)) = done else {
                tracing::error!("check region states: the round panicked");
                continue;
            };
            tracker = t;
            if write.is_empty() {
                continue;
            }
            let (tx, rx) = oneshot::channel();
            if writer.send(WriterMsg::RuleWrite(write, tx)).await.is_err() {
                return;
            }
            match rx.await {
                // A full data folder is told once by the writer.
                Ok(Err(e)) if crate::space::is_full(&e) => {
                    tracing::debug!("cannot write check region states: {e}")
                }
                Ok(Err(e)) => tracing::warn!("cannot write check region states: {e}"),
                _ => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(alert: &str) -> CheckDef {
        outpost_synthetic::parse_checks_file(&format!(
            "checks:\n  - {{name: api, type: http, frequency: 1s, url: 'http://127.0.0.1:1/', locations: [a, b, c], alert: {alert}}}\n"
        ))
        .unwrap()
        .remove(0)
    }

    fn run(ts: i64, agent: &str, ok: bool, secs: f64) -> RunResult {
        RunResult {
            ts_ms: ts,
            agent: agent.into(),
            success: ok,
            duration_seconds: secs,
            step: (!ok).then(|| "login".to_string()),
        }
    }

    #[test]
    fn a_failure_counts_only_when_the_rerun_fails_too() {
        let c = check("{failing_regions: 1}");
        let mut t = RegionTrack::default();
        let mut asked = vec![];
        let mut rerun = |a: &str| {
            asked.push(a.to_string());
            Some("x2".to_string())
        };
        t.handle_result(&c, &run(1000, "x1", true, 0.1), 1000, &mut rerun);
        assert_eq!(t.state(&c, true, 1000), RegionState::Passing);
        t.handle_result(&c, &run(2000, "x1", false, 0.1), 2000, &mut rerun);
        assert!(t.confirming());
        assert_eq!(t.state(&c, true, 2000), RegionState::Passing, "not yet");
        // The re-run passes: a flake.
        t.handle_result(&c, &run(2100, "x2", true, 0.1), 2200, &mut rerun);
        assert_eq!(t.state(&c, true, 2200), RegionState::Passing);
        // Next failure, and this time the re-run fails too.
        t.handle_result(&c, &run(3000, "x1", false, 0.1), 3000, &mut rerun);
        t.handle_result(&c, &run(3100, "x2", false, 0.1), 3200, &mut rerun);
        assert_eq!(
            t.state(&c, true, 3200),
            RegionState::Failing {
                step: Some("login".into())
            }
        );
        // Further failures need no re-run; a pass ends it.
        t.handle_result(&c, &run(4000, "x1", false, 0.1), 4000, &mut rerun);
        t.handle_result(&c, &run(5000, "x1", true, 0.1), 5000, &mut rerun);
        assert_eq!(t.state(&c, true, 5000), RegionState::Passing);
        assert_eq!(asked, ["x1", "x1"]);
    }

    #[test]
    fn unreachable_or_stale_regions_are_unknown_and_slow_passes_degraded() {
        let c = check("{failing_regions: 1, degraded_ms: 500}");
        let mut t = RegionTrack::default();
        let mut none = |_: &str| None;
        assert_eq!(t.state(&c, true, 0), RegionState::Unknown, "no result yet");
        t.handle_result(&c, &run(1000, "x1", true, 0.8), 1000, &mut none);
        assert_eq!(t.state(&c, true, 1000), RegionState::Degraded);
        assert_eq!(t.state(&c, false, 1000), RegionState::Unknown);
        // 2 × 1s + 1s timeout later the result is stale.
        assert_eq!(t.state(&c, true, 4000), RegionState::Degraded);
        assert_eq!(t.state(&c, true, 4001), RegionState::Unknown);
        // Nobody can re-run: the failure counts at once.
        t.handle_result(&c, &run(5000, "x1", false, 0.1), 5000, &mut none);
        assert!(matches!(
            t.state(&c, true, 5000),
            RegionState::Failing { .. }
        ));
    }

    #[test]
    fn an_unanswered_rerun_counts_the_failure() {
        let c = check("{failing_regions: 1}");
        let mut t = RegionTrack::default();
        let mut rerun = |_: &str| Some("x2".to_string());
        t.handle_result(&c, &run(1000, "x1", false, 0.1), 1000, &mut rerun);
        assert_eq!(
            t.state(&c, true, 1500),
            RegionState::Passing,
            "not counted yet"
        );
        assert!(t.confirming());
        let later = 1000 + RERUN_WAIT_MS + 1001;
        t.handle_result(&c, &run(later - 10, "x1", false, 0.1), later, &mut rerun);
        assert!(matches!(
            t.state(&c, true, later),
            RegionState::Failing { .. }
        ));
    }

    fn names(w: &SeriesWrite) -> Vec<String> {
        w.iter()
            .map(|(l, p)| {
                let v = if outpost_shared::model::is_stale(p[0].value) {
                    "stale".to_string()
                } else {
                    p[0].value.to_string()
                };
                let step = l.get("step").map(|s| format!(",{s}")).unwrap_or_default();
                format!(
                    "{}{{{}{step}}}={v}",
                    l.get(METRIC_NAME).unwrap_or(""),
                    l.get("agent").or(l.get("region")).unwrap_or("")
                )
            })
            .collect()
    }

    #[test]
    fn rounds_write_states_and_end_series_that_change_or_go_unknown() {
        let mut c = check("{failing_regions: 1}");
        c.locations = vec!["a".into()];
        let checks = [c];
        let mut t = Tracker::new();
        let agents = [("x1".to_string(), "a".to_string(), true)];
        let mut feed = vec![run(1000, "x1", false, 0.1)];
        let mut nobody = |_: &str, _: &str, _: &str| None;
        let w = t.round(
            &checks,
            1000,
            &|_| true,
            &mut |_, _, _| std::mem::take(&mut feed),
            &mut nobody,
            &agents,
        );
        assert_eq!(
            names(&w),
            [
                "outpost_check_region_unknown{a}=0",
                "outpost_check_region_failing{a,login}=1",
                "outpost_check_region_degraded{a}=0",
                "outpost_agent_up{x1}=1",
            ]
        );
        // It passes: the failing series with the step ends, one without it starts.
        let mut feed = vec![run(2000, "x1", true, 0.1)];
        let w = t.round(
            &checks,
            2000,
            &|_| true,
            &mut |_, _, _| std::mem::take(&mut feed),
            &mut nobody,
            &agents,
        );
        assert_eq!(
            names(&w)[1..3],
            [
                "outpost_check_region_failing{a,login}=stale",
                "outpost_check_region_failing{a}=0",
            ]
        );
        // The region is cut off: unknown, and its state series end.
        let down = [("x1".to_string(), "a".to_string(), false)];
        let w = t.round(
            &checks,
            2500,
            &|_| false,
            &mut |_, _, _| vec![],
            &mut nobody,
            &down,
        );
        assert_eq!(
            names(&w),
            [
                "outpost_check_region_unknown{a}=1",
                "outpost_check_region_failing{a}=stale",
                "outpost_check_region_degraded{a}=stale",
                "outpost_agent_up{x1}=0",
            ]
        );
        // The check loses its alert: its series end.
        let plain = [CheckDef {
            alert: None,
            ..checks[0].clone()
        }];
        let w = t.round(
            &plain,
            3000,
            &|_| true,
            &mut |_, _, _| vec![],
            &mut nobody,
            &[],
        );
        assert_eq!(names(&w), ["outpost_check_region_unknown{a}=stale"]);
    }

    #[test]
    fn generated_rules_validate_and_quote_names() {
        let mut c = check("{failing_regions: 2, for: 2s, severity: page, degraded_ms: 800}");
        c.name = "we\"ird\\name".into();
        let f = rule_file(&[c], Some(Duration::from_secs(5)))
            .unwrap()
            .unwrap();
        assert_eq!(f.groups.len(), 2);
        assert_eq!(f.groups[0].name, AGENTS_GROUP);
        let rules = &f.groups[1].rules;
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0].expr,
            "count by (check) (outpost_check_region_failing{check=\"we\\\"ird\\\\name\"} == 1) >= 2"
        );
        assert!(rule_file(&[], None).unwrap().is_none());
    }
}
