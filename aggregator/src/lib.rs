//! `outpost-aggregator`: receives agents' batches over mutual-TLS QUIC, stores them in a
//! RocksDB time-series store, and answers Prometheus-style queries over HTTP.
//!
//! [`run`] wires [`ingest`] (QUIC server and the group-committing writer, which the pure
//! [`ledger`] tells what to write), the store (`outpost-tsdb`), [`http`] (API, `/metrics`,
//! `/health`; queries evaluated by `outpost-promql`), [`rules`] (alert and recording rules
//! by `outpost-alerting`, their results written through the ingest writer, alerts sent to
//! Alertmanager) and the head compactor. [`demo`] runs an
//! aggregator and a local agent together with generated certificates.

pub mod api;
pub mod check_alerts;
pub mod check_config;
pub mod checks;
pub mod config;
pub mod connections;
pub mod demo;
pub mod forward;
pub mod http;
pub mod ingest;
pub mod ledger;
pub mod metadata;
pub mod metrics;
pub mod notify;
pub mod notify_api;
pub mod query_cache;
pub mod reload;
pub mod remote_write;
pub mod replay;
pub mod rules;
pub mod rules_api;
pub mod space;
pub mod status;
pub mod tsdb_cmd;

use config::Config;
use outpost_tsdb::Storage;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// How often the compactor looks at the head.
pub const COMPACT_EVERY: Duration = Duration::from_secs(10);
/// The head is compacted into chunks this long after the last compaction (so a series
/// scraped every 10 s gets a chunk of 30 points, not one chunk a point), ...
pub const HEAD_MAX_AGE: Duration = Duration::from_secs(300);
/// ... or as soon as it holds this many points (16 bytes each in memory), or before a
/// maintenance pass when it holds points of an earlier day (backfill, late data), so they
/// are merged, rolled up and aged with their day.
pub const HEAD_MAX_POINTS: usize = 1_000_000;
/// How often partitions are merged and retention and the size cap applied.
pub const MAINTAIN_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Storage(#[from] outpost_tsdb::StorageError),
    #[error("{0}")]
    Setup(String),
}

/// Runs the aggregator until `shutdown` completes.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    run_with(cfg, None, shutdown).await
}

/// [`run`], reloading the config from `config_path` on SIGHUP when one is given.
pub async fn run_with(
    cfg: Config,
    config_path: Option<std::path::PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    outpost_shared::tls::install_crypto_provider();
    let storage = {
        let dir = cfg.data_dir.clone();
        Arc::new(
            tokio::task::spawn_blocking(move || Storage::open(&dir))
                .await
                .map_err(|e| RunError::Setup(e.to_string()))??,
        )
    };
    let ledger = Arc::new(Mutex::new(
        ledger::Ledger::load(storage.meta(ledger::AGENT_PREFIX)?)
            .map_err(|e| RunError::Setup(format!("storage at {}: {e}", cfg.data_dir.display())))?,
    ));
    let metadata = Arc::new(metadata::MetadataStore::load(
        storage.meta(metadata::PREFIX)?,
    ));
    let metrics = Arc::new(metrics::Metrics::new());
    let connections = Arc::new(connections::Connections::default());
    let checks = Arc::new(
        checks::Placement::load(cfg.checks_file.clone(), metrics.checks.clone())
            .map_err(RunError::Setup)?,
    );
    let quic_addr: SocketAddr = cfg.listen.quic.parse().map_err(|_| {
        RunError::Setup(format!(
            "listen.quic: {:?} is not an address",
            cfg.listen.quic
        ))
    })?;
    let reset_secret = ingest::reset_secret(&storage).map_err(RunError::Setup)?;
    let endpoint = ingest::server_endpoint(&cfg.tls_files(), quic_addr, &reset_secret)
        .map_err(RunError::Setup)?;
    let listener = tokio::net::TcpListener::bind(&cfg.listen.http)
        .await
        .map_err(|e| {
            RunError::Setup(format!(
                "cannot listen on {} ([listen] http): {e}",
                cfg.listen.http
            ))
        })?;

    let (writer_tx, writer_rx) = tokio::sync::mpsc::channel(4096);
    let cache = Arc::new(query_cache::QueryCache::new(
        cfg.query.cache_entries,
        cfg.query.cache_points,
    ));
    let space = Arc::new(space::Space::new(&cfg.data_dir, &metrics));
    let writer = ingest::spawn_writer(
        storage.clone(),
        ledger.clone(),
        metrics.clone(),
        metadata.clone(),
        cache.clone(),
        space.clone(),
        writer_rx,
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let compactor = spawn_compactor(
        storage.clone(),
        metrics.clone(),
        space,
        cfg.storage.policy(),
        stop_rx.clone(),
    );

    let checks_watch = checks.clone().spawn_watch(stop_rx.clone());
    let forwarders = forward::start(
        &cfg.forward,
        storage.clone(),
        writer_tx.clone(),
        metrics.forward.clone(),
        stop_rx.clone(),
    )
    .map_err(RunError::Setup)?;
    let (notifications, notify_task) = match notify::load(&cfg.alerting).map_err(|ps| {
        RunError::Setup(
            ps.into_iter()
                .map(|(k, p)| format!("{k}: {p}"))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })? {
        Some(setup) => {
            let (n, t) = notify::start(
                setup,
                &storage,
                writer_tx.clone(),
                metrics.clone(),
                cfg.external_url(),
                stop_rx.clone(),
            )
            .map_err(|e| RunError::Setup(format!("[alerting] notifications: {e}")))?;
            (Some(n), Some(t))
        }
        None => (None, None),
    };
    let (rules, rules_task) = rules::start(
        storage.clone(),
        writer_tx.clone(),
        rules::AgentState {
            connections: connections.clone(),
            ledger: ledger.clone(),
        },
        rules::Settings::from_config(&cfg),
        checks.subscribe(),
        metrics.clone(),
        notifications.clone(),
        stop_rx.clone(),
    )
    .map_err(|e| RunError::Setup(format!("[alerting] rule_files: {e}")))?;
    let check_alerts = check_alerts::spawn(
        storage.clone(),
        writer_tx.clone(),
        checks.clone(),
        connections.clone(),
        cfg.alerting.agent_down_after.get(),
        stop_rx.clone(),
    );
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
    let ingest = ingest::Ingest {
        ledger: ledger.clone(),
        checks: checks.clone(),
        connections: connections.clone(),
        metrics: metrics.clone(),
        writer: writer_tx.clone(),
        next_conn: Arc::new(AtomicU64::new(1)),
        metadata: metadata.clone(),
        alive_every_ms: outpost_shared::frame::alive_every_for(
            cfg.alerting.agent_down_after.get().as_millis() as u64,
        ),
    };
    let accept = tokio::spawn(ingest.accept_loop(endpoint.clone()));
    let app = http::router(http::AppState {
        storage: storage.clone(),
        ledger: ledger.clone(),
        checks: checks.clone(),
        connections: connections.clone(),
        metrics: metrics.clone(),
        token: cfg.token().map(Into::into),
        query: Arc::new(api::QueryLimits::new(
            &cfg.query,
            metrics.query.clone(),
            cache,
        )),
        start: Arc::new(status::StartInfo {
            flags: cfg.flags(config_path.as_deref()),
            start_ms: outpost_service::now_ms(),
            retention: cfg.storage.policy(),
        }),
        writer: writer_tx,
        metadata: metadata.clone(),
        rules: rules.clone(),
        notifications: notifications.clone(),
        reload: config_path.as_ref().map(|_| reload_tx),
    });
    let mut http_stop = stop_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|v| *v).await;
            })
            .await
    });
    let reloader = match config_path {
        Some(p) => Some(
            reload::spawn(
                p,
                cfg.clone(),
                metrics.reload.clone(),
                checks.clone(),
                rules.clone(),
                notifications.clone(),
                reload_rx,
            )
            .map_err(|e| RunError::Setup(format!("cannot handle SIGHUP: {e}")))?,
        ),
        None => None,
    };
    tracing::info!(
        quic = %endpoint.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        http = %cfg.listen.http, data_dir = %cfg.data_dir.display(),
        series = storage.series_count(), checks = checks.view().checks.len(),
        rule_groups = rules.groups().len(), "aggregator ready"
    );
    outpost_service::sdnotify::ready(&format!("running; {} series", storage.series_count()));
    let watchdog = outpost_service::sdnotify::spawn_watchdog();
    shutdown.await;
    tracing::info!("shutting down");
    outpost_service::sdnotify::stopping();
    for t in [watchdog, reloader, checks_watch].into_iter().flatten() {
        t.abort();
    }
    endpoint.close(
        quinn::VarInt::from_u32(outpost_shared::frame::close::SHUTDOWN),
        b"aggregator shutting down",
    );
    connections.close_all(
        outpost_shared::frame::close::SHUTDOWN,
        b"aggregator shutting down",
    );
    let _ = stop_tx.send(true);
    accept.abort();
    // The rules task holds a writer sender: let it finish its evaluation and drop it.
    let _ = tokio::time::timeout(Duration::from_secs(5), rules_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), check_alerts).await;
    if let Some(t) = notify_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    forwarders.join(Duration::from_secs(5)).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    // The writer ends when every connection task has dropped its sender.
    let joined = tokio::task::spawn_blocking(move || {
        let _ = writer.join();
        let _ = compactor.join();
    });
    if tokio::time::timeout(Duration::from_secs(10), joined)
        .await
        .is_err()
    {
        tracing::warn!(
            "ingest writer did not stop within 10s; acknowledged data is already durable"
        );
    }
    storage.flush()?;
    tracing::info!("aggregator stopped");
    Ok(())
}

/// The storage thread: compacts the head at start, then every [`HEAD_MAX_AGE`] or when it
/// outgrows [`HEAD_MAX_POINTS`], and maintains the store (merges, rollups, retention, size
/// cap) every [`MAINTAIN_EVERY`], starting at once. While the data
/// folder is full both fail and are tried again at their next turn, logged once through
/// `space`.
fn spawn_compactor(
    storage: Arc<Storage>,
    metrics: Arc<metrics::Metrics>,
    space: Arc<space::Space>,
    policy: outpost_tsdb::RetentionPolicy,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("head-compactor".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build();
            let Ok(rt) = rt else { return };
            rt.block_on(async {
                let mut last_maintenance: Option<std::time::Instant> = None;
                let mut last_compaction: Option<std::time::Instant> = None;
                let (mut too_old, mut too_new) = (0, 0);
                loop {
                    let dropped = storage.samples_too_old();
                    if dropped > too_old {
                        tracing::warn!(
                            samples = dropped - too_old,
                            oldest_kept = %storage
                                .accepts_from_ms()
                                .map_or_else(String::new, crate::http::rfc3339),
                            "dropped samples older than the oldest time the store keeps (the raw \
                             retention horizon or a deleted day); acknowledged all the same, as \
                             resending cannot store them"
                        );
                        too_old = dropped;
                    }
                    let dropped = storage.samples_too_new();
                    if dropped > too_new {
                        tracing::warn!(
                            samples = dropped - too_new,
                            latest_kept = %crate::http::rfc3339(storage.accepts_until_ms()),
                            "dropped samples stamped more than two days ahead of this host's \
                             clock (check the sender's clock); acknowledged all the same"
                        );
                        too_new = dropped;
                    }
                    let maintenance_due =
                        last_maintenance.is_none_or(|t| t.elapsed() >= MAINTAIN_EVERY);
                    let today = outpost_service::now_ms().div_euclid(86_400_000) * 86_400_000;
                    let old_points = storage
                        .head_time_range()
                        .is_some_and(|(min, _)| min < today);
                    let due = last_compaction.is_none_or(|t| t.elapsed() >= HEAD_MAX_AGE)
                        || storage.head_points() >= HEAD_MAX_POINTS
                        || (maintenance_due && old_points);
                    if due {
                        last_compaction = Some(std::time::Instant::now());
                        match storage.compact_head() {
                            Ok(0) => {}
                            Ok(n) => {
                                metrics.compactions.inc();
                                tracing::debug!(points = n, "compacted the head into chunks");
                            }
                            Err(e) => {
                                metrics.compaction_errors.inc();
                                storage_failed(&space, "head compaction", &e.to_string());
                            }
                        }
                    }
                    // At start (after the wal's replay is compacted), then every interval.
                    if maintenance_due {
                        maintain(&storage, &metrics, &space, &policy);
                        last_maintenance = Some(std::time::Instant::now());
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(COMPACT_EVERY) => {}
                        _ = stop.wait_for(|v| *v) => return,
                    }
                }
            })
        })
        .unwrap_or_else(|e| panic!("cannot start the compactor thread: {e}"))
}

/// One maintenance pass of the store, counted in `metrics`; failures are logged and retried
/// at the next pass.
fn maintain(
    storage: &Storage,
    metrics: &metrics::Metrics,
    space: &space::Space,
    policy: &outpost_tsdb::RetentionPolicy,
) {
    match storage.maintain(outpost_service::now_ms(), policy) {
        Ok(r) => {
            // Each logged by the store, once.
            metrics.maintenance_errors.inc_by(r.damaged.len() as u64);
            metrics.partitions_merged.inc_by(r.merged_partitions);
            metrics.partitions_rolled_up.inc_by(r.rolled_up_partitions);
            metrics.rollup_samples.inc_by(r.rollup_samples);
            if r.merged_partitions > 0 {
                tracing::debug!(
                    partitions = r.merged_partitions,
                    chunks_before = r.chunks_before,
                    chunks_after = r.chunks_after,
                    "merged partitions"
                );
            }
            for d in &r.deleted {
                let reason = metrics::ReasonLabel {
                    reason: d.reason.as_str().into(),
                };
                metrics.partitions_deleted.get_or_create(&reason).inc();
                // Rollup partitions count buckets, not samples.
                if d.resolution == "raw" {
                    metrics
                        .samples_deleted
                        .get_or_create(&reason)
                        .inc_by(d.stats.samples);
                }
            }
        }
        Err(e) => {
            metrics.maintenance_errors.inc();
            storage_failed(space, "storage maintenance", &e.to_string());
        }
    }
    metrics
        .oldest_partition
        .set(storage.oldest_partition_start().map_or(0, |ms| ms / 1000));
}

/// Logs a failed compaction or maintenance pass (`what`), which is tried again at its next
/// turn. A full data folder is told once, by `space`, which pauses ingestion until a write
/// succeeds again.
fn storage_failed(space: &space::Space, what: &str, err: &str) {
    if space.is_full() || space::is_no_space(err) {
        space.write_failed(err);
        tracing::debug!("{what} failed for lack of space (will retry): {err}");
    } else {
        tracing::error!("{what} failed (will retry): {err}");
    }
}
