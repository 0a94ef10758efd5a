//! Synthetic checks on the agent: the ones the aggregator assigns over the control stream
//! plus the local `[[checks]]` of the config, run by the `outpost-synthetic` scheduler. Each
//! outcome becomes one batch through the [`Appender`], so results recorded during a partition
//! wait in the buffer like every other sample.
//!
//! The last assignment is kept in `assigned-checks.json` beside the buffer directory, so an
//! agent restarted while cut off from the aggregator goes on running its checks.

use crate::appender::{Appender, Source, Stored};
use crate::config::Config;
use outpost_synthetic::{CheckDef, Outcome, Scheduler};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The file that keeps the last assignment, beside the buffer directory.
pub fn assignment_file(cfg: &Config) -> PathBuf {
    let dir = &cfg.buffer.dir;
    dir.parent()
        .unwrap_or(Path::new("."))
        .join("assigned-checks.json")
}

/// Reads a saved assignment; a missing or unreadable file is an empty one (logged).
pub fn load_assignment(path: &Path) -> Vec<CheckDef> {
    match std::fs::read_to_string(path) {
        Ok(text) => match parse_assignment(&text) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(file = %path.display(), "ignoring the saved check assignment: {e}");
                vec![]
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => {
            tracing::warn!(file = %path.display(), "cannot read the saved check assignment: {e}");
            vec![]
        }
    }
}

/// Parses the JSON array of a `checks` frame and validates every definition.
pub fn parse_assignment(json: &str) -> Result<Vec<CheckDef>, String> {
    let checks: Vec<CheckDef> =
        serde_json::from_str(json).map_err(|e| format!("not a list of checks: {e}"))?;
    let problems: Vec<String> = checks
        .iter()
        .filter_map(|c| c.validate().err())
        .flatten()
        .collect();
    if problems.is_empty() {
        Ok(checks)
    } else {
        Err(problems.join("; "))
    }
}

/// Saves an assignment atomically (write to a temporary file, then rename).
fn save_assignment(path: &Path, json: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}

/// Where the uplink puts each assignment it receives, and each request to run a check
/// once.
#[derive(Clone)]
pub struct Assigned {
    tx: Arc<watch::Sender<Arc<Vec<CheckDef>>>>,
    runs: mpsc::UnboundedSender<CheckDef>,
    file: PathBuf,
}

/// Checks to run once, now (re-runs the aggregator asks for).
pub type RunOnce = mpsc::UnboundedReceiver<CheckDef>;

impl Assigned {
    /// The saved assignment, the receiver of every new one, and the receiver of one-off runs.
    pub fn new(cfg: &Config) -> (Assigned, watch::Receiver<Arc<Vec<CheckDef>>>, RunOnce) {
        let file = assignment_file(cfg);
        let (tx, rx) = watch::channel(Arc::new(load_assignment(&file)));
        let (runs, runs_rx) = mpsc::unbounded_channel();
        (
            Assigned {
                tx: Arc::new(tx),
                runs,
                file,
            },
            rx,
            runs_rx,
        )
    }

    /// Takes the JSON of a `run-check` frame (one definition) and runs it once; one that
    /// does not parse or validate is refused (logged).
    pub fn run_once(&self, json: &str) {
        let parsed = serde_json::from_str::<CheckDef>(json)
            .map_err(|e| format!("not a check: {e}"))
            .and_then(|c| c.validate().map(|()| c).map_err(|p| p.join("; ")));
        match parsed {
            Ok(c) => {
                tracing::info!(check = %c.name, "re-running a check at the aggregator's request");
                let _ = self.runs.send(c);
            }
            Err(e) => tracing::error!("refusing a check re-run from the aggregator: {e}"),
        }
    }

    /// Takes the JSON of a `checks` frame. A set that does not parse is refused (logged) and
    /// the running set stays.
    pub fn receive(&self, json: &str) {
        match parse_assignment(json) {
            Ok(checks) => {
                let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
                tracing::info!(checks = ?names, "check assignment received");
                if let Err(e) = save_assignment(&self.file, json) {
                    tracing::warn!(file = %self.file.display(), "cannot save the check assignment (it still runs): {e}");
                }
                self.tx.send_replace(Arc::new(checks));
            }
            Err(e) => {
                tracing::error!("refusing a check assignment from the aggregator: {e}");
            }
        }
    }
}

/// Local checks plus assigned ones; an assigned check replaces a local one of the same name.
pub fn merge(local: &[CheckDef], assigned: &[CheckDef]) -> Vec<CheckDef> {
    let mut out: Vec<CheckDef> = local
        .iter()
        .filter(|l| {
            let shadowed = assigned.iter().any(|a| a.name == l.name);
            if shadowed {
                tracing::warn!(check = %l.name, "an assigned check replaces the local check of the same name");
            }
            !shadowed
        })
        .cloned()
        .collect();
    out.extend(assigned.iter().cloned());
    out
}

/// Runs the checks until `stop` turns true.
pub fn spawn(
    mut cfg: watch::Receiver<Arc<Config>>,
    mut assigned: watch::Receiver<Arc<Vec<CheckDef>>>,
    mut runs: RunOnce,
    appender: Appender,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let (out_tx, mut out_rx) = mpsc::channel::<(i64, Arc<CheckDef>, Outcome)>(256);
        let scheduler = Scheduler::spawn(out_tx, outpost_service::now_ms);
        let mut running = merge(&cfg.borrow().checks, &assigned.borrow());
        scheduler.set_checks(running.clone());
        appender.metrics.checks_running.set(running.len() as i64);
        let extra = appender.agent_labels();
        loop {
            tokio::select! {
                _ = async { let _ = stop.wait_for(|v| *v).await; } => break,
                Ok(()) = cfg.changed() => {}
                Ok(()) = assigned.changed() => {}
                Some(def) = runs.recv() => {
                    scheduler.run_once(def);
                    continue;
                }
                Some((ts, def, outcome)) = out_rx.recv() => {
                    record(&appender, &def, ts, &outcome, &extra).await;
                    continue;
                }
            }
            let now = merge(
                &cfg.borrow_and_update().checks,
                &assigned.borrow_and_update(),
            );
            if now != running {
                running = now;
                appender.metrics.checks_running.set(running.len() as i64);
                scheduler.set_checks(running.clone());
            }
        }
        scheduler.shutdown();
    })
}

async fn record(
    appender: &Appender,
    def: &CheckDef,
    ts: i64,
    o: &Outcome,
    extra: &[(String, String)],
) {
    let result = if o.success { "success" } else { "failure" };
    appender
        .metrics
        .check_runs
        .get_or_create(&crate::metrics::CheckRunLabels {
            check: def.name.clone(),
            result: result.into(),
        })
        .inc();
    if !o.success {
        tracing::debug!(check = %def.name, step = ?o.failed_step, reason = ?o.reason, "check failed");
    }
    let batch = o.to_batch(def, ts, extra);
    let s = appender.clone();
    match tokio::task::spawn_blocking(move || s.store(&batch, Source::Check)).await {
        Ok(Ok(Stored::Seq(_) | Stored::Empty)) => {}
        Ok(Ok(Stored::Dropped)) => {
            tracing::warn!(check = %def.name, "buffer full: this check result was dropped by the when_full policy")
        }
        Ok(Err(e)) => tracing::warn!(check = %def.name, "cannot buffer this check result: {e}"),
        Err(e) => tracing::error!("check result task failed: {e}"),
    }
}
