//! Configuration reload on SIGHUP. The agent re-reads and validates its config file; a
//! config with problems is refused as a whole (every problem logged, the running config
//! kept); a good one is applied through a `tokio::sync::watch` channel of `Arc<Config>`
//! that every component can subscribe to (the collection loop follows `[collect] interval`,
//! logging follows `[log] level`). Keys that only take effect at start are logged as
//! needing a restart and keep their running value.
//! The outcome is recorded in [`ReloadGauges`] (`outpost-service`).

use crate::config::Config;
use outpost_service::logging;
use outpost_service::metrics::ReloadGauges;
use outpost_service::sdnotify;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// What a reload changes.
#[derive(Debug)]
pub struct Plan {
    /// The config to run with from now on: the new file, with restart-only keys kept at
    /// their running values.
    pub effective: Config,
    /// Keys that changed but take effect only after a restart.
    pub restart: Vec<&'static str>,
    /// Keys that changed and apply now.
    pub live: Vec<&'static str>,
}

/// Decides what of `new` a running agent that started with `old` can apply. Sections not
/// named here (added by later components) flow through to subscribers as they are.
pub fn plan(old: &Config, new: Config) -> Plan {
    let mut e = new;
    let mut restart = vec![];
    let mut keep = |changed: bool, key: &'static str| {
        if changed {
            restart.push(key);
        }
        changed
    };
    if keep(e.id != old.id, "id") {
        e.id = old.id.clone();
    }
    if keep(e.region != old.region, "region") {
        e.region = old.region.clone();
    }
    if keep(e.aggregator != old.aggregator, "aggregator") {
        e.aggregator = old.aggregator.clone();
    }
    if keep(e.buffer != old.buffer, "buffer") {
        e.buffer = old.buffer.clone();
    }
    // The collectors are built at start; their on/off switches wait for a restart.
    let mut switches = e.collect.clone();
    switches.interval = old.collect.interval;
    if keep(switches != old.collect, "collect (collector switches)") {
        let interval = e.collect.interval;
        e.collect = old.collect.clone();
        e.collect.interval = interval;
    }
    // Scrapers start with the agent; until they follow the config channel, new targets
    // wait for a restart.
    if keep(
        format!("{:?}", e.scrape) != format!("{:?}", old.scrape),
        "scrape",
    ) {
        e.scrape = old.scrape.clone();
    }
    if keep(e.http != old.http, "http.listen") {
        e.http = old.http.clone();
    }
    if keep(e.log.format != old.log.format, "log.format") {
        e.log.format = old.log.format;
    }
    if keep(e.telemetry != old.telemetry, "telemetry.otlp_endpoint") {
        e.telemetry = old.telemetry.clone();
    }
    let mut live = vec![];
    if e.collect.interval != old.collect.interval {
        live.push("collect.interval");
    }
    if e.log.level != old.log.level {
        live.push("log.level");
    }
    // The check runner follows the config channel.
    if e.checks != old.checks {
        live.push("checks");
    }
    Plan {
        effective: e,
        restart,
        live,
    }
}

/// Registers for SIGHUP now (before readiness is reported, so an early SIGHUP does not end
/// the process) and reloads `path` on each one.
pub fn spawn_reloader(
    path: PathBuf,
    tx: watch::Sender<Arc<Config>>,
    gauges: ReloadGauges,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            sdnotify::reloading();
            reload(&path, &tx, &gauges);
            sdnotify::ready("running");
        }
    }))
}

fn reload(path: &std::path::Path, tx: &watch::Sender<Arc<Config>>, gauges: &ReloadGauges) {
    tracing::info!(config = %path.display(), "SIGHUP: reloading the configuration");
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            gauges.failed();
            e.log_refused_reload();
            return;
        }
    };
    let old = tx.borrow().clone();
    let p = plan(&old, new);
    for key in &p.restart {
        tracing::warn!(
            key,
            "config reload: {key} changed; it takes effect after a restart, the running value stays until then"
        );
    }
    if p.live.contains(&"log.level") {
        logging::reload_level(p.effective.log.level.as_deref());
    }
    tracing::info!(applied = ?p.live, needs_restart = ?p.restart, "configuration reloaded");
    tx.send_replace(Arc::new(p.effective));
    gauges.succeeded(outpost_service::now_ms());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = r#"
id = "web-1"
region = "eu"
[aggregator]
endpoints = ["127.0.0.1:9471"]
ca = "ca.crt"
cert = "a.crt"
key = "a.key"
[buffer]
dir = "buf"
[collect]
interval = "1s"
[log]
level = "info"
"#;

    fn cfg(text: &str) -> Config {
        Config::parse(text, Path::new("/etc/outpost/agent.toml")).unwrap()
    }

    #[test]
    fn live_keys_apply_and_restart_keys_keep_their_running_value() {
        let old = cfg(BASE);
        let new = cfg(&BASE
            .replace("\"1s\"", "\"250ms\"")
            .replace("level = \"info\"", "level = \"debug\"\nformat = \"json\"")
            .replace("\"web-1\"", "\"web-2\"")
            .replace("dir = \"buf\"", "dir = \"other\"")
            .replace(
                "interval = \"250ms\"",
                "interval = \"250ms\"\nhwmon = false",
            ));
        let p = plan(&old, new);
        assert_eq!(p.live, vec!["collect.interval", "log.level"]);
        assert_eq!(
            p.restart,
            vec!["id", "buffer", "collect (collector switches)", "log.format"]
        );
        assert!(
            p.effective.collect.hwmon,
            "collector switches keep their running value"
        );
        assert_eq!(
            p.effective.collect.interval,
            outpost_shared::units::Duration::from_millis(250)
        );
        assert_eq!(p.effective.log.level.as_deref(), Some("debug"));
        assert_eq!(p.effective.id, "web-1");
        assert_eq!(p.effective.buffer.dir, old.buffer.dir);
        assert_eq!(p.effective.log.format, old.log.format);
    }

    #[test]
    fn local_checks_apply_at_once() {
        let with = format!(
            "{BASE}\n[[checks]]\nname = \"db\"\ntype = \"tcp\"\nfrequency = \"10s\"\ntarget = \"127.0.0.1:5432\"\n"
        );
        let p = plan(&cfg(BASE), cfg(&with));
        assert_eq!(p.live, vec!["checks"]);
        assert!(p.restart.is_empty(), "{p:?}");
        assert_eq!(p.effective.checks.len(), 1);
    }

    #[test]
    fn an_unchanged_file_changes_nothing() {
        let p = plan(&cfg(BASE), cfg(BASE));
        assert!(p.live.is_empty() && p.restart.is_empty(), "{p:?}");
    }
}
