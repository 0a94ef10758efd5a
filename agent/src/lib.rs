//! `outpost-agent`: samples the host, buffers every cycle durably, and streams batches to
//! the aggregator over mutual-TLS QUIC.
//!
//! [`run`] wires the parts: collectors ([`collect`]) feed one batch per cycle into the
//! [`buffer`]; scraped targets ([`scrape`]) and pushes ([`push`]) enter it through the
//! [`appender`], one batch per scrape or request, and so do the results of [`synthetic`] checks;
//! the [`uplink`] sends from the buffer; [`http`] serves `/health`, `/metrics` and the push
//! endpoints. Collection never waits for the network: a batch is in the buffer before it is
//! first sent.
//!
//! Every source also declares its families' type, HELP and UNIT in the [`metadata`]
//! registry, which the uplink sends to the aggregator beside the batches.
//!
//! [`reload`] applies a changed config on SIGHUP; [`check_config`] is `check-config`.
//! Logging, trace export, systemd notification, config loading and the clock come from
//! `outpost-service`, as they do for the aggregator.

pub mod appender;
pub mod buffer;
pub mod check_config;
pub mod collect;
pub mod config;
pub mod http;
pub mod metadata;
pub mod metrics;
pub mod push;
pub mod reload;
pub mod scrape;
pub mod series;
pub mod status;
pub mod synthetic;
pub mod target_labels;
pub mod textparse;
pub mod timer;
pub mod uplink;

use buffer::Buffer;
use config::Config;
use metrics::Metrics;
use outpost_service::now_ms;
use series::CycleSeries;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use uplink::{Uplink, UplinkState};

/// Time allowed after a shutdown request for in-flight batches to be acknowledged.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// The name of the per-cycle sequence metric.
pub const CYCLES_METRIC: &str = "outpost_agent_cycles_total";

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Buffer(#[from] buffer::BufferError),
    #[error("cannot listen on {addr} ([http] listen): {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("internal task failed: {0}")]
    Task(String),
    #[error("{0}")]
    Scrape(String),
}

/// Runs the agent until `shutdown` completes, then flushes and returns.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    run_with(cfg, None, shutdown).await
}

/// [`run`], reloading the config from `config_path` on SIGHUP when one is given. Components
/// that follow the config subscribe to the `watch` channel created here.
pub async fn run_with(
    cfg: Config,
    config_path: Option<std::path::PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    outpost_shared::tls::install_crypto_provider();
    let cfg = Arc::new(cfg);
    let (cfg_tx, mut cfg_rx) = watch::channel(cfg.clone());
    let buffer = {
        let c = cfg.buffer.clone();
        Arc::new(
            tokio::task::spawn_blocking(move || Buffer::open(&c))
                .await
                .map_err(|e| AgentError::Task(e.to_string()))??,
        )
    };
    let metrics = Arc::new(Metrics::new());
    metrics.observe_buffer(&buffer.stats(), now_ms());
    let state = Arc::new(UplinkState::default());
    let new_data = Arc::new(Notify::new());
    let registry = Arc::new(metadata::MetadataRegistry::new());

    let listener = tokio::net::TcpListener::bind(&cfg.http.listen)
        .await
        .map_err(|source| AgentError::Listen {
            addr: cfg.http.listen.clone(),
            source,
        })?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let appender = appender::Appender {
        buffer: buffer.clone(),
        metrics: metrics.clone(),
        new_data: new_data.clone(),
        metadata: registry.clone(),
        agent: cfg.id.clone(),
        region: cfg.region.clone(),
    };
    let scrapers =
        scrape::spawn(&cfg, appender.clone(), stop_rx.clone()).map_err(AgentError::Scrape)?;
    let (assigned, assigned_rx, runs_rx) = synthetic::Assigned::new(&cfg);
    let checks_task = synthetic::spawn(
        cfg_rx.clone(),
        assigned_rx,
        runs_rx,
        appender.clone(),
        stop_rx.clone(),
    );
    let app = http::router(http::HttpState {
        cfg: cfg.clone(),
        buffer: buffer.clone(),
        metrics: metrics.clone(),
        uplink: state.clone(),
        appender,
    });
    let mut http_stop = stop_rx.clone();
    let http_task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|v| *v).await;
            })
            .await;
    });
    let uplink = Uplink {
        cfg: cfg.clone(),
        buffer: buffer.clone(),
        metrics: metrics.clone(),
        new_data: new_data.clone(),
        state,
        assigned,
        metadata: registry.clone(),
    };
    let uplink_task = tokio::spawn(uplink.run(stop_rx, SHUTDOWN_GRACE));

    let reloader = match config_path {
        Some(p) => Some(
            reload::spawn_reloader(p, cfg_tx, metrics.reload.clone())
                .map_err(|e| AgentError::Task(format!("cannot handle SIGHUP: {e}")))?,
        ),
        None => None,
    };
    let s = buffer.stats();
    tracing::info!(
        id = %cfg.id, region = %cfg.region, interval = %cfg.collect.interval, http = %cfg.http.listen,
        buffered_batches = s.batches, cycles = s.cycles, "agent started"
    );
    outpost_service::sdnotify::ready(&format!("running; {} batches buffered", s.batches));
    let watchdog = outpost_service::sdnotify::spawn_watchdog();
    // Host collection runs on a thread of its own that sleeps until the next cycle: a cycle
    // costs that thread's wake-up and the uplink's, with no hand-off through the runtime.
    let (to_collector, orders) = std::sync::mpsc::channel();
    let (stopped_tx, mut collector_stopped) = tokio::sync::oneshot::channel::<()>();
    let collector = {
        let (cfg_rx, b, m, r, n) = (
            cfg_rx.clone(),
            buffer.clone(),
            metrics.clone(),
            registry.clone(),
            new_data.clone(),
        );
        std::thread::Builder::new()
            .name("outpost-collect".into())
            .spawn(move || {
                let _stopped = stopped_tx;
                collect_loop(&cfg_rx, &b, &m, &r, &n, &orders);
            })
            .map_err(|e| AgentError::Task(format!("cannot start the collection thread: {e}")))?
    };
    let mut interval = cfg.collect.interval;
    tokio::pin!(shutdown);
    let collector_failed = loop {
        tokio::select! {
            _ = &mut shutdown => break false,
            _ = &mut collector_stopped => break true,
            Ok(()) = cfg_rx.changed() => {
                let new = cfg_rx.borrow_and_update().collect.interval;
                if new != interval {
                    tracing::info!(from = %interval, to = %new, "collection interval changed");
                    interval = new;
                    let _ = to_collector.send(Order::Interval(new.get()));
                }
            }
        }
    };
    let _ = to_collector.send(Order::Stop);
    if collector_failed {
        tracing::error!("the collection thread stopped; the agent stops");
    } else {
        let _ = collector_stopped.await;
    }
    let _ = tokio::task::spawn_blocking(move || collector.join()).await;
    tracing::info!("shutting down: sending what is in flight");
    outpost_service::sdnotify::stopping();
    if let Some(w) = watchdog {
        w.abort();
    }
    if let Some(r) = reloader {
        r.abort();
    }
    let _ = stop_tx.send(true);
    for t in scrapers.into_iter().chain([checks_task]) {
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, t).await;
    }
    let _ = tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(2), uplink_task).await;
    let _ = http_task.await;
    let b = buffer.clone();
    let _ = tokio::task::spawn_blocking(move || b.flush()).await;
    let s = buffer.stats();
    tracing::info!(
        buffered_batches = s.batches,
        cycles = s.cycles,
        "agent stopped"
    );
    if collector_failed {
        return Err(AgentError::Task("the collection thread stopped".into()));
    }
    Ok(())
}

/// What the runtime tells the collection thread.
enum Order {
    /// The collection interval changed: the next cycle is one new interval from now.
    Interval(Duration),
    /// Finish the cycle under way, if any, and return.
    Stop,
}

/// The collection thread: a cycle at once, then one every interval until told to stop. When
/// a cycle overruns its interval, the next starts as soon as it ends and the ones after it
/// are an interval apart from there: no cycle is skipped and none run back to back to catch
/// up (as tokio's `MissedTickBehavior::Delay`). After each cycle the uplink is woken.
fn collect_loop(
    cfg_rx: &watch::Receiver<Arc<Config>>,
    buffer: &Buffer,
    metrics: &Metrics,
    registry: &metadata::MetadataRegistry,
    new_data: &Notify,
    orders: &std::sync::mpsc::Receiver<Order>,
) {
    use std::sync::mpsc::RecvTimeoutError;
    use std::time::Instant;
    let cfg = cfg_rx.borrow().clone();
    let mut collectors =
        collect::collectors(&collect::Roots::default(), |name| cfg.collect.enabled(name));
    let mut series = CycleSeries::new(&cfg.id, &cfg.region);
    let mut families = HostFamilies::default();
    let mut interval = cfg.collect.interval.get();
    let mut next = Instant::now();
    loop {
        match orders.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(Order::Interval(new)) => {
                interval = new;
                next = Instant::now() + new;
                continue;
            }
            Ok(Order::Stop) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let c = cfg_rx.borrow().clone();
        run_cycle(
            &c,
            buffer,
            metrics,
            registry,
            &mut collectors,
            &mut series,
            &mut families,
        );
        new_data.notify_one();
        // Late: the missed cycle runs at once and the ones after it keep the interval from
        // there, as tokio's `MissedTickBehavior::Delay` does.
        next = (next + interval).max(Instant::now());
    }
}

/// What the agent declares for its cycle counter.
pub fn cycles_metadata() -> outpost_shared::metadata::Metadata {
    outpost_shared::metadata::Metadata::new(
        outpost_shared::metadata::MetricType::Counter,
        "Collection cycles this agent has run; a missing value is a cycle that was lost.",
    )
}

/// The type and node_exporter's HELP of every host family among the metric `names`, and the
/// cycle counter's, one entry per family.
pub fn host_families<'a>(
    names: impl Iterator<Item = &'a str>,
) -> Vec<(String, outpost_shared::metadata::Metadata)> {
    let mut names: Vec<&str> = names.collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|n| (n.to_string(), collect::exposition::metadata(n)))
        .chain([(CYCLES_METRIC.to_string(), cycles_metadata())])
        .collect()
}

/// The host collectors' families and their metadata, kept from cycle to cycle.
#[derive(Default)]
struct HostFamilies {
    list: Vec<(String, outpost_shared::metadata::Metadata)>,
    /// The registry's generation right after `list` was last declared.
    declared: Option<u64>,
}

/// One collection cycle: collect, label, encode, buffer. Failures are logged and counted;
/// the next cycle runs regardless. Label sets and the batch's series encoding are kept in
/// `series` from cycle to cycle, and the families' metadata in `families`, made again only
/// when the series change. They are declared again whenever they changed or anything else
/// declared metadata since the last cycle, so the host's declarations stay the latest.
fn run_cycle(
    cfg: &Config,
    buffer: &Buffer,
    metrics: &Metrics,
    registry: &metadata::MetadataRegistry,
    collectors: &mut [Box<dyn collect::Collector>],
    series: &mut CycleSeries,
    families: &mut HostFamilies,
) {
    use collect::Sink;
    let started = std::time::Instant::now();
    let ts = now_ms();
    series.begin(&cfg.id, &cfg.region);
    for (name, e) in collect::collect_all(collectors, ts, series) {
        tracing::debug!(collector = name, "collector failed: {e}");
        metrics
            .collector_errors
            .get_or_create(&metrics::CollectorLabel {
                collector: name.to_string(),
            })
            .inc();
    }
    let cycle = buffer.cycles() + 1;
    series.metric(CYCLES_METRIC, &[], cycle as f64);
    if series.finish() {
        families.list = host_families(series.names());
        families.declared = None;
    }
    if families.declared != Some(registry.generation()) {
        registry.observe(families.list.iter().map(|(n, m)| (n.as_str(), m)));
        families.declared = Some(registry.generation());
    }
    let samples = series.len() as u64;
    let payload = series.encode(ts);
    match buffer.append(cycle, &payload, samples, ts) {
        Ok(Some(_)) => tracing::debug!(cycle, samples, "cycle buffered"),
        Ok(None) => tracing::warn!(
            cycle,
            samples,
            "buffer full: this cycle was dropped by the when_full policy"
        ),
        Err(e) => {
            metrics.buffer_write_errors.inc();
            tracing::debug!(cycle, "cannot buffer this cycle, it is lost: {e}");
        }
    }
    metrics.samples_collected.inc_by(samples);
    metrics
        .collect_duration
        .observe(started.elapsed().as_secs_f64());
    metrics.observe_buffer(&buffer.stats(), ts);
}

/// `outpost-agent collect`: loads the config's `[collect]` section (the aggregator's files are
/// not needed), then prints one cycle of host metrics as text exposition — once, or every
/// interval until the output is closed. Collector failures are reported on stderr.
pub fn collect_command(
    path: &std::path::Path,
    once: bool,
    out: &mut impl std::io::Write,
) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read config: {e}", path.display()))?;
    let cfg = Config::parse(&text, path).map_err(|e| e.to_string())?;
    let problems: Vec<_> = cfg
        .validate()
        .into_iter()
        .filter(|p| p.key.starts_with("collect."))
        .collect();
    if !problems.is_empty() {
        return Err(outpost_service::ConfigError {
            file: path.to_path_buf(),
            problems,
        }
        .to_string());
    }
    let mut cs = collect::collectors(&collect::Roots::default(), |name| cfg.collect.enabled(name));
    let mut samples: Vec<(outpost_shared::Labels, f64)> = Vec::with_capacity(1024);
    loop {
        let started = std::time::Instant::now();
        samples.clear();
        for (name, e) in collect::collect_all(&mut cs, now_ms(), &mut samples) {
            eprintln!("collector {name} failed: {e}");
        }
        out.write_all(collect::exposition::render(&samples).as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot write the output: {e}"))?;
        if once {
            return Ok(());
        }
        std::thread::sleep(cfg.collect.interval.get().saturating_sub(started.elapsed()));
    }
}
