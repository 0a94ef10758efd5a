//! Scraping local services (`[[scrape]]`): one task per target, each scraping on its own
//! interval (spread over the interval like Prometheus spreads targets), never overlapping
//! itself. A scrape fetches the page ([`client`]), turns it into a batch ([`report`]) and
//! hands it to the [`Appender`], which puts it in the durable buffer the uplink sends from.

pub mod client;
pub mod report;

use crate::appender::{Appender, Source, Stored};
use crate::config::Config;
use crate::metrics::ScrapeTargetLabels;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One target of one job.
struct Target {
    job: String,
    instance: String,
    labels: Vec<(String, String)>,
    interval: Duration,
    client: Arc<client::Client>,
    /// Whether repeated series on this target's page have been warned about yet.
    warned_repeats: std::sync::atomic::AtomicBool,
}

/// Starts a task per target. Returns the tasks, which end when `stop` turns true; an error
/// names the job whose client could not be built.
pub fn spawn(
    cfg: &Config,
    appender: Appender,
    stop: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, String> {
    let mut tasks = vec![];
    for s in &cfg.scrape {
        let interval = s.interval(&cfg.collect);
        let client = Arc::new(
            client::Client::new(s, s.timeout(&cfg.collect))
                .map_err(|e| format!("[[scrape]] job {:?}: {e}", s.job))?,
        );
        for t in &s.targets {
            let mut labels = vec![
                ("job".to_string(), s.job.clone()),
                ("instance".to_string(), t.clone()),
            ];
            labels.extend(s.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            labels.extend(appender.agent_labels());
            let target = Target {
                job: s.job.clone(),
                instance: t.clone(),
                labels,
                interval,
                client: client.clone(),
                warned_repeats: Default::default(),
            };
            tasks.push(tokio::spawn(run_target(
                target,
                appender.clone(),
                stop.clone(),
            )));
        }
    }
    Ok(tasks)
}

/// A stable offset within the interval, so targets do not all fire at once.
fn offset(job: &str, instance: &str, interval: Duration) -> Duration {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (job, instance).hash(&mut h);
    let ms = interval.as_millis().max(1) as u64;
    Duration::from_millis(h.finish() % ms)
}

async fn run_target(t: Target, appender: Appender, mut stop: watch::Receiver<bool>) {
    let start = tokio::time::Instant::now() + offset(&t.job, &t.instance, t.interval);
    let mut tick = tokio::time::interval_at(start, t.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let t = Arc::new(t);
    let mut was_up: Option<bool> = None;
    loop {
        tokio::select! {
            _ = stop.wait_for(|v| *v) => return,
            _ = tick.tick() => {}
        }
        let (t2, s2) = (t.clone(), appender.clone());
        match tokio::task::spawn_blocking(move || scrape_once(&t2, &s2)).await {
            Ok((up, err)) => {
                if was_up != Some(up) {
                    match &err {
                        None => {
                            tracing::info!(job = %t.job, instance = %t.instance, "scrape target is up")
                        }
                        Some(e) => {
                            tracing::warn!(job = %t.job, instance = %t.instance, "scrape target is down: {e}")
                        }
                    }
                } else if let Some(e) = &err {
                    tracing::debug!(job = %t.job, instance = %t.instance, "scrape failed: {e}");
                }
                was_up = Some(up);
            }
            Err(e) => {
                tracing::error!(job = %t.job, instance = %t.instance, "scrape task failed: {e}")
            }
        }
    }
}

/// Fetches, builds and buffers one scrape; returns whether the target was up and why not.
fn scrape_once(t: &Target, appender: &Appender) -> (bool, Option<String>) {
    let ts = outpost_service::now_ms();
    let started = Instant::now();
    let fetched = t.client.fetch(&t.instance);
    let duration = started.elapsed().as_secs_f64();
    let r = report::build(
        fetched
            .as_ref()
            .map(|r| report::Fetched {
                body: &r.body,
                content_type: &r.content_type,
            })
            .map_err(|e| e.clone()),
        &t.labels,
        ts,
        duration,
    );
    drop(fetched);
    appender
        .metadata
        .observe(r.metadata.iter().map(|m| (m.family.as_str(), &m.meta)));
    if let Some(first) = r.duplicates.first() {
        appender
            .metrics
            .scrape_duplicate_samples
            .get_or_create(&ScrapeTargetLabels {
                job: t.job.clone(),
                instance: t.instance.clone(),
            })
            .inc_by(r.duplicates.len() as u64);
        // A page that repeats series does so on every scrape: warn once, then at debug level.
        let n = r.duplicates.len();
        if t.warned_repeats
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::debug!(job = %t.job, instance = %t.instance, duplicates = n,
                "the page repeats series; kept the first sample of each, first repeated: {first}");
        } else {
            tracing::warn!(job = %t.job, instance = %t.instance, duplicates = n,
                "the page repeats series; kept the first sample of each, first repeated: {first}");
        }
    }
    match appender.store(&r.batch, Source::Scrape) {
        Ok(Stored::Seq(_) | Stored::Empty) => {}
        Ok(Stored::Dropped) => {
            tracing::warn!(job = %t.job, instance = %t.instance, "buffer full: this scrape was dropped by the when_full policy")
        }
        Err(e) => {
            tracing::error!(job = %t.job, instance = %t.instance, "cannot buffer this scrape, it is lost: {e}")
        }
    }
    (r.up, r.error)
}
