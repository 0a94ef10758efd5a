//! The checks registry: loads the synthetic checks named by `checks_file`, decides which
//! connected agent runs each check in each of its regions, and hands every agent its share
//! as JSON for the control stream. The file is re-read when it changes, on
//! `POST /api/v1/checks/reload` and on SIGHUP; a file with problems is refused as a whole
//! and the running checks stay.
//!
//! Assignment is rendezvous hashing over the agents connected in a region: each check goes
//! to the agent with the highest hash of (check, agent), so an agent joining or leaving
//! moves only the checks it wins or held, and every aggregator restart picks the same
//! agents again.

use outpost_promql::{MatchOp, Matcher, Queryable, StorageError};
use outpost_shared::model::METRIC_NAME;
use outpost_synthetic::CheckDef;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};

/// How often the checks file's modification time and size are compared.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Which agent runs each check in each region: check name → region → agent (None when no
/// agent of that region is connected).
pub type Assignment = BTreeMap<String, BTreeMap<String, Option<String>>>;

/// Picks, for every check and each of its locations, the connected agent of that region
/// with the highest rendezvous hash.
pub fn assign(checks: &[CheckDef], agents_by_region: &BTreeMap<String, Vec<String>>) -> Assignment {
    let mut out = Assignment::new();
    for c in checks {
        let per_region = out.entry(c.name.clone()).or_default();
        for region in &c.locations {
            let chosen = agents_by_region.get(region).and_then(|agents| {
                agents
                    .iter()
                    .max_by_key(|a| (rendezvous(&c.name, a), a.as_str()))
                    .cloned()
            });
            per_region.insert(region.clone(), chosen);
        }
    }
    out
}

/// FNV-1a of `check \0 agent`, then a 64-bit finaliser so similar names spread well.
fn rendezvous(check: &str, agent: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in check.bytes().chain([0u8]).chain(agent.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// A definition as agents get it: without `alert`, which is the aggregator's business (and
/// which agents before it would refuse as an unknown field).
pub fn for_agent(c: &CheckDef) -> CheckDef {
    CheckDef {
        alert: None,
        ..c.clone()
    }
}

/// The checks of `assignment` that `agent` runs, as the JSON array sent to it.
pub fn agent_share(checks: &[CheckDef], assignment: &Assignment, agent: &str) -> String {
    let mine: Vec<CheckDef> = checks
        .iter()
        .filter(|c| {
            assignment
                .get(&c.name)
                .is_some_and(|r| r.values().any(|a| a.as_deref() == Some(agent)))
        })
        .map(for_agent)
        .collect();
    serde_json::to_string(&mine).unwrap_or_else(|_| "[]".into())
}

/// Which agent re-runs `check`'s failure seen by `failed` in a region whose connected
/// agents are `candidates` (id, whether it takes run-check frames): another agent of the
/// region that takes them, the one with the highest rendezvous hash; when there is none,
/// `failed` itself (the re-run is then a second run from the same agent); `None` when
/// neither takes run-check frames (an older agent), and the failure counts unconfirmed.
pub fn pick_rerun<'a>(
    check: &str,
    failed: &str,
    candidates: impl IntoIterator<Item = (&'a str, bool)>,
) -> Option<String> {
    let mut same = None;
    let mut best: Option<(u64, &str)> = None;
    for (id, can) in candidates {
        if !can {
            continue;
        }
        if id == failed {
            same = Some(id);
            continue;
        }
        let key = (rendezvous(check, id), id);
        if best.is_none_or(|b| key > b) {
            best = Some(key);
        }
    }
    best.map(|(_, id)| id).or(same).map(str::to_string)
}

/// Reads and validates a checks file; every problem is listed, each prefixed by the path.
pub fn load_file(path: &Path) -> Result<Vec<CheckDef>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read the checks file: {e}", path.display()))?;
    outpost_synthetic::parse_checks_file(&text).map_err(|problems| {
        problems
            .iter()
            .map(|p| format!("{}: {p}", path.display()))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

struct Attached {
    region: String,
    conn_id: u64,
    tx: watch::Sender<Arc<str>>,
    /// One-off runs for this connection (definitions as JSON), when it takes them.
    runs: Option<mpsc::UnboundedSender<String>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    std::fs::metadata(path).ok().map(|m| Stamp {
        modified: m.modified().ok(),
        len: m.len(),
    })
}

struct Inner {
    checks: Vec<CheckDef>,
    stamp: Option<Stamp>,
    loaded_ms: i64,
    last_error: Option<String>,
    agents: HashMap<String, Attached>,
    assignment: Assignment,
}

/// A snapshot for `/api/v1/checks`.
pub struct View {
    pub file: Option<PathBuf>,
    pub loaded_ms: i64,
    pub last_error: Option<String>,
    pub checks: Vec<CheckDef>,
    pub assignment: Assignment,
    /// Regions with at least one connected agent.
    pub regions_up: BTreeMap<String, usize>,
}

/// The checks file's checks and where each runs: one connected agent per check and
/// region, moved when that agent goes away; reloaded when the file changes.
pub struct Placement {
    file: Option<PathBuf>,
    inner: Mutex<Inner>,
    gauges: Gauges,
    /// The running checks, for whoever derives something from them (the generated rules).
    published: watch::Sender<Arc<Vec<CheckDef>>>,
}

/// The placement's own metrics.
#[derive(Clone, Default)]
pub struct Gauges {
    pub checks: prometheus_client::metrics::gauge::Gauge,
    pub reload_ok: prometheus_client::metrics::gauge::Gauge,
    pub assigned: prometheus_client::metrics::gauge::Gauge,
    pub unassigned: prometheus_client::metrics::gauge::Gauge,
}

impl Placement {
    /// Loads `file` (if any). A file that cannot be read or has problems is an error here:
    /// the aggregator refuses to start on it rather than run without the checks.
    pub fn load(file: Option<PathBuf>, gauges: Gauges) -> Result<Placement, String> {
        let (checks, st) = match &file {
            Some(p) => (load_file(p)?, stamp(p)),
            None => (vec![], None),
        };
        gauges.checks.set(checks.len() as i64);
        gauges.reload_ok.set(1);
        let (published, _) = watch::channel(Arc::new(checks.clone()));
        let r = Placement {
            published,
            file,
            inner: Mutex::new(Inner {
                checks,
                stamp: st,
                loaded_ms: crate::api::now_ms(),
                last_error: None,
                agents: HashMap::new(),
                assignment: Assignment::new(),
            }),
            gauges,
        };
        r.lock().reassign(&r.gauges);
        Ok(r)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Re-reads the checks file. On success the new set replaces the old and reaches the
    /// agents at once; on failure the running set stays and the error is returned and kept.
    pub fn reload(&self) -> Result<usize, String> {
        let Some(path) = &self.file else {
            return Err(
                "no checks_file is configured; set checks_file in the aggregator's config".into(),
            );
        };
        let st = stamp(path);
        let loaded = load_file(path);
        let mut inner = self.lock();
        inner.stamp = st;
        match loaded {
            Ok(checks) => {
                let n = checks.len();
                self.published.send_replace(Arc::new(checks.clone()));
                inner.checks = checks;
                inner.loaded_ms = crate::api::now_ms();
                inner.last_error = None;
                inner.reassign(&self.gauges);
                self.gauges.checks.set(n as i64);
                self.gauges.reload_ok.set(1);
                tracing::info!(checks = n, file = %path.display(), "checks loaded");
                Ok(n)
            }
            Err(e) => {
                inner.last_error = Some(e.clone());
                self.gauges.reload_ok.set(0);
                tracing::error!("checks not reloaded, the previous set keeps running:\n{e}");
                Err(e)
            }
        }
    }

    /// Reloads when the file's modification time or size changed since the last load.
    pub fn reload_if_changed(&self) {
        let Some(path) = &self.file else { return };
        let now = stamp(path);
        if now.is_some() && now != self.lock().stamp {
            let _ = self.reload();
        }
    }

    /// The running checks now and whenever a reload changes them.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Vec<CheckDef>>> {
        self.published.subscribe()
    }

    /// Registers an agent's connection; the receiver yields its share of the checks now and
    /// whenever it changes. With `runs`, the connection takes one-off runs
    /// ([`Placement::request_rerun`]) through it.
    pub fn attach(
        &self,
        agent: &str,
        region: &str,
        conn_id: u64,
        runs: Option<mpsc::UnboundedSender<String>>,
    ) -> watch::Receiver<Arc<str>> {
        let (tx, rx) = watch::channel::<Arc<str>>(Arc::from(""));
        let mut inner = self.lock();
        inner.agents.insert(
            agent.to_string(),
            Attached {
                region: region.to_string(),
                conn_id,
                tx,
                runs,
            },
        );
        inner.reassign(&self.gauges);
        rx
    }

    /// Asks an agent of `region` to run `check` once now, after `failed` saw it fail (the
    /// choice: [`pick_rerun`]). Returns the agent asked, or `None` when no connected agent
    /// takes one-off runs or the check is unknown.
    pub fn request_rerun(&self, check: &str, region: &str, failed: &str) -> Option<String> {
        let inner = self.lock();
        let def = inner.checks.iter().find(|c| c.name == check)?;
        let chosen = pick_rerun(
            check,
            failed,
            inner
                .agents
                .iter()
                .filter(|(_, a)| a.region == region)
                .map(|(id, a)| (id.as_str(), a.runs.is_some())),
        )?;
        let json = serde_json::to_string(&for_agent(def)).ok()?;
        let sent = inner
            .agents
            .get(&chosen)
            .and_then(|a| a.runs.as_ref())
            .is_some_and(|tx| tx.send(json).is_ok());
        sent.then_some(chosen)
    }

    /// The connected agents of each region (ids, sorted).
    pub fn agents_by_region(&self) -> BTreeMap<String, Vec<String>> {
        let inner = self.lock();
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, a) in &inner.agents {
            out.entry(a.region.clone()).or_default().push(id.clone());
        }
        for v in out.values_mut() {
            v.sort();
        }
        out
    }

    /// Forgets the agent's connection if it is still the current one; its checks move to
    /// the other agents of its region.
    pub fn detach(&self, agent: &str, conn_id: u64) {
        let mut inner = self.lock();
        if inner
            .agents
            .get(agent)
            .is_some_and(|a| a.conn_id == conn_id)
        {
            inner.agents.remove(agent);
            inner.reassign(&self.gauges);
        }
    }

    pub fn view(&self) -> View {
        let inner = self.lock();
        let mut regions_up = BTreeMap::new();
        for a in inner.agents.values() {
            *regions_up.entry(a.region.clone()).or_insert(0) += 1;
        }
        View {
            file: self.file.clone(),
            loaded_ms: inner.loaded_ms,
            last_error: inner.last_error.clone(),
            checks: inner.checks.clone(),
            assignment: inner.assignment.clone(),
            regions_up,
        }
    }

    /// Watches the file for changes until `stop` turns true.
    pub fn spawn_watch(
        self: Arc<Self>,
        mut stop: watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.file.as_ref()?;
        Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(WATCH_EVERY) => {}
                    _ = stop.wait_for(|v| *v) => return,
                }
                let me = self.clone();
                let _ = tokio::task::spawn_blocking(move || me.reload_if_changed()).await;
            }
        }))
    }
}

impl Inner {
    /// Recomputes the assignment and sends each agent whose share changed its new share.
    fn reassign(&mut self, gauges: &Gauges) {
        let mut by_region: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, a) in &self.agents {
            by_region
                .entry(a.region.clone())
                .or_default()
                .push(id.clone());
        }
        let assignment = assign(&self.checks, &by_region);
        let (mut assigned, mut unassigned) = (0, 0);
        for per_region in assignment.values() {
            for a in per_region.values() {
                if a.is_some() {
                    assigned += 1;
                } else {
                    unassigned += 1;
                }
            }
        }
        gauges.assigned.set(assigned);
        gauges.unassigned.set(unassigned);
        for (id, a) in &self.agents {
            let share = agent_share(&self.checks, &assignment, id);
            a.tx.send_if_modified(|cur| {
                if **cur == *share {
                    false
                } else {
                    *cur = Arc::from(share.as_str());
                    true
                }
            });
        }
        self.assignment = assignment;
    }
}

/// The newest result of one check in one region, read back from the stored series.
#[derive(Clone, Debug, PartialEq)]
pub struct Latest {
    pub ts_ms: i64,
    pub agent: String,
    pub success: bool,
    pub duration_seconds: Option<f64>,
    pub failed_step: Option<String>,
    pub reason: Option<String>,
}

fn eq(name: &str, value: &str) -> Option<Matcher> {
    Matcher::new(name, MatchOp::Equal, value).ok()
}

/// The newest `probe_success` of `check` per region among points in `[from_ms, to_ms]`, with
/// the duration and failure reason recorded at the same instant by the same agent.
pub fn latest_results(
    src: &dyn Queryable,
    check: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<BTreeMap<String, Latest>, StorageError> {
    let mut out: BTreeMap<String, Latest> = BTreeMap::new();
    let src = src.querier(from_ms, to_ms)?;
    let Some(sel) = eq(METRIC_NAME, "probe_success").zip(eq("check", check)) else {
        return Ok(out);
    };
    for (id, labels) in src.select(&[sel.0, sel.1])? {
        let Some(p) = src.points(id, from_ms, to_ms)?.pop() else {
            continue;
        };
        let region = labels.get("region").unwrap_or("").to_string();
        if out.get(&region).is_some_and(|l| l.ts_ms >= p.ts) {
            continue;
        }
        out.insert(
            region,
            Latest {
                ts_ms: p.ts,
                agent: labels.get("agent").unwrap_or("").to_string(),
                success: p.value == 1.0,
                duration_seconds: None,
                failed_step: None,
                reason: None,
            },
        );
    }
    for (region, l) in out.iter_mut() {
        let same = |name: &str| {
            [
                eq(METRIC_NAME, name),
                eq("check", check),
                eq("region", region),
                eq("agent", &l.agent),
            ]
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default()
        };
        for (id, _) in src.select(&same("probe_duration_seconds"))? {
            if let Some(p) = src.points(id, l.ts_ms, l.ts_ms)?.pop() {
                l.duration_seconds = Some(p.value);
            }
        }
        if !l.success {
            for (id, labels) in src.select(&same("probe_failure_info"))? {
                if !src.points(id, l.ts_ms, l.ts_ms)?.is_empty() {
                    l.failed_step = labels.get("step").map(str::to_string);
                    l.reason = labels.get("reason").map(str::to_string);
                }
            }
        }
    }
    Ok(out)
}

/// How a region's view of a check stands.
pub fn region_state(connected: bool, latest: Option<&Latest>, fresh_after_ms: i64) -> &'static str {
    match latest {
        _ if !connected => "unknown",
        Some(l) if l.ts_ms >= fresh_after_ms => {
            if l.success {
                "passing"
            } else {
                "failing"
            }
        }
        _ => "pending",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks(yaml: &str) -> Vec<CheckDef> {
        outpost_synthetic::parse_checks_file(yaml).unwrap()
    }

    const TWO: &str = r#"
checks:
  - name: api
    type: http
    frequency: 30s
    url: http://127.0.0.1:1/health
    locations: [us-east, eu-central]
  - name: web
    type: http
    frequency: 1m
    url: http://127.0.0.1:1/
    locations: [us-east]
"#;

    fn regions(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(r, a)| (r.to_string(), a.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn reruns_go_to_another_agent_of_the_region_else_the_same_one() {
        let all = [("a", true), ("b", true), ("c", true)];
        let p = pick_rerun("api", "a", all).unwrap();
        assert!(p == "b" || p == "c", "{p}");
        assert_eq!(pick_rerun("api", "a", all), Some(p), "stable");
        assert_eq!(
            pick_rerun("api", "a", [("a", true), ("b", false)]).as_deref(),
            Some("a"),
            "an older agent cannot re-run; the failed one runs it again"
        );
        assert_eq!(pick_rerun("api", "a", [("a", false), ("b", false)]), None);
        assert_eq!(pick_rerun("api", "a", []), None);
    }

    #[test]
    fn agents_never_get_the_alert_settings() {
        let c = checks(
            "checks:\n  - {name: a, type: http, frequency: 1s, url: 'http://127.0.0.1:1/', locations: [r], alert: {failing_regions: 1}}\n",
        );
        assert!(c[0].alert.is_some());
        let a = assign(&c, &regions(&[("r", &["x"])]));
        let share = agent_share(&c, &a, "x");
        assert!(!share.contains("alert"), "{share}");
    }

    #[test]
    fn the_packaged_example_file_is_valid() {
        let c = checks(include_str!("../../packaging/checks.yaml"));
        assert!(c.len() >= 8, "{}", c.len());
        let kinds: std::collections::BTreeSet<&str> = c.iter().map(|c| c.kind.as_str()).collect();
        assert_eq!(kinds.len(), 6, "every type has an example: {kinds:?}");
    }

    #[test]
    fn every_location_gets_one_connected_agent_of_its_region() {
        let c = checks(TWO);
        let a = assign(
            &c,
            &regions(&[("us-east", &["e1", "e2"]), ("us-west", &["w1"])]),
        );
        let api = &a["api"];
        assert!(matches!(api["us-east"].as_deref(), Some("e1" | "e2")));
        assert_eq!(api["eu-central"], None, "no agent in eu-central");
        assert_eq!(a["web"].len(), 1);
        assert!(!a["web"].contains_key("us-west"));
    }

    #[test]
    fn losing_an_agent_moves_only_its_checks() {
        let many: String = (0..40)
            .map(|i| {
                format!(
                    "  - {{name: c{i}, type: http, frequency: 10s, url: 'http://127.0.0.1:1/', locations: [r]}}\n"
                )
            })
            .collect();
        let c = checks(&format!("checks:\n{many}"));
        let before = assign(&c, &regions(&[("r", &["a", "b", "c"])]));
        let held_by_b = before
            .values()
            .filter(|r| r["r"].as_deref() == Some("b"))
            .count();
        assert!(
            held_by_b > 0 && held_by_b < 40,
            "hashing spreads checks: b has {held_by_b}"
        );
        let after = assign(&c, &regions(&[("r", &["a", "c"])]));
        for (name, r) in &before {
            let (old, new) = (r["r"].as_deref(), after[name]["r"].as_deref());
            if old == Some("b") {
                assert!(matches!(new, Some("a" | "c")), "{name} moved off b");
            } else {
                assert_eq!(old, new, "{name} stays where it was");
            }
        }
    }

    #[test]
    fn shares_are_json_the_agent_can_read_back() {
        let c = checks(TWO);
        let a = assign(
            &c,
            &regions(&[("us-east", &["e1"]), ("eu-central", &["x"])]),
        );
        let e1: Vec<CheckDef> = serde_json::from_str(&agent_share(&c, &a, "e1")).unwrap();
        assert_eq!(
            e1.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["api", "web"]
        );
        let x: Vec<CheckDef> = serde_json::from_str(&agent_share(&c, &a, "x")).unwrap();
        assert_eq!(x, vec![c[0].clone()]);
        assert_eq!(agent_share(&c, &a, "nobody"), "[]");
    }

    #[test]
    fn attach_detach_and_reload_reach_agents() {
        let dir = std::env::temp_dir().join(format!("outpost-checks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("checks.yaml");
        std::fs::write(&path, TWO).unwrap();
        let r = Placement::load(Some(path.clone()), Gauges::default()).unwrap();
        let mut e1 = r.attach("e1", "us-east", 1, None);
        let first: Vec<CheckDef> = serde_json::from_str(&e1.borrow_and_update()).unwrap();
        assert_eq!(first.len(), 2);
        let mut e2 = r.attach("e2", "us-east", 2, None);
        // Between them, e1 and e2 hold each us-east check exactly once.
        let n = |rx: &mut watch::Receiver<Arc<str>>| {
            serde_json::from_str::<Vec<CheckDef>>(&rx.borrow_and_update())
                .unwrap()
                .len()
        };
        assert_eq!(n(&mut e1) + n(&mut e2), 2);
        r.detach("e1", 1);
        assert_eq!(n(&mut e2), 2, "e1's checks moved to e2");
        // A broken file keeps the running set and reports the problem.
        std::fs::write(&path, "checks:\n  - name: x\n").unwrap();
        let err = r.reload().unwrap_err();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
        assert_eq!(r.view().checks.len(), 2);
        assert_eq!(r.view().last_error.as_deref(), Some(err.as_str()));
        // A good one replaces it.
        std::fs::write(&path, TWO.split("  - name: web").next().unwrap()).unwrap();
        assert_eq!(r.reload().unwrap(), 1);
        assert!(e2.has_changed().unwrap());
        assert_eq!(n(&mut e2), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
