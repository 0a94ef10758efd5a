//! Configuration reload on SIGHUP for the aggregator: the file is re-read and validated; a
//! config with problems is refused as a whole (every problem logged, the running config
//! kept). `[log] level`, `[alerting]` (rule files, intervals, Alertmanagers, external
//! labels and URL, the notifications file's content and escalation policies) and the checks file's content apply at once; the other keys bind sockets, open storage or load
//! TLS material at start, so a change to them is logged as needing a restart. The outcome
//! goes to `outpost_aggregator_config_last_reload_successful` and
//! `outpost_aggregator_config_last_reload_success_timestamp_seconds`. `POST /-/reload`
//! asks for the same reload over HTTP.

use crate::config::Config;
use outpost_service::logging;
use outpost_service::metrics::ReloadGauges;
use outpost_service::sdnotify;
use std::path::PathBuf;

/// Keys of `new` that differ from `old` and only take effect after a restart.
pub fn restart_keys(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = vec![];
    let mut note = |changed: bool, key| {
        if changed {
            out.push(key);
        }
    };
    note(old.data_dir != new.data_dir, "data_dir");
    note(old.listen != new.listen, "listen");
    note(old.tls != new.tls, "tls");
    note(old.api != new.api, "api");
    note(old.log.format != new.log.format, "log.format");
    note(old.telemetry != new.telemetry, "telemetry.otlp_endpoint");
    note(old.checks_file != new.checks_file, "checks_file");
    note(old.forward != new.forward, "forward");
    note(old.storage != new.storage, "storage");
    note(old.query != new.query, "query");
    note(
        old.alerting.notifications.is_some() != new.alerting.notifications.is_some(),
        "alerting.notifications",
    );
    note(
        old.alerting.agent_down_after != new.alerting.agent_down_after,
        "alerting.agent_down_after",
    );
    out
}

/// A reload asked for over HTTP (`POST /-/reload`), answered with its outcome.
pub type Request = tokio::sync::oneshot::Sender<Result<(), String>>;

/// Registers for SIGHUP now and reloads `path` on each one, and on each request from
/// `requests`.
pub fn spawn(
    path: PathBuf,
    initial: Config,
    gauges: ReloadGauges,
    checks: std::sync::Arc<crate::checks::Placement>,
    rules: std::sync::Arc<crate::rules::Rules>,
    notifications: Option<crate::notify::Notifications>,
    mut requests: tokio::sync::mpsc::Receiver<Request>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        let mut running = initial;
        loop {
            let reply = tokio::select! {
                s = hup.recv() => {
                    if s.is_none() {
                        return;
                    }
                    tracing::info!(config = %path.display(), "SIGHUP: reloading the configuration");
                    None
                }
                r = requests.recv() => {
                    let Some(r) = r else { return };
                    tracing::info!(config = %path.display(), "reload requested over HTTP: reloading the configuration");
                    Some(r)
                }
            };
            sdnotify::reloading();
            let outcome = reload_once(
                &path,
                &mut running,
                &gauges,
                &checks,
                &rules,
                notifications.as_ref(),
            )
            .await;
            if let Some(r) = reply {
                let _ = r.send(outcome);
            }
            sdnotify::ready("running");
        }
    }))
}

/// One reload: the file, then the checks file and the rule files it names.
async fn reload_once(
    path: &std::path::Path,
    running: &mut Config,
    gauges: &ReloadGauges,
    checks: &std::sync::Arc<crate::checks::Placement>,
    rules: &crate::rules::Rules,
    notifications: Option<&crate::notify::Notifications>,
) -> Result<(), String> {
    let new = match Config::load(path) {
        Err(e) => {
            gauges.failed();
            e.log_refused_reload();
            return Err(e.to_string());
        }
        Ok(new) => new,
    };
    let restart = restart_keys(running, &new);
    for key in &restart {
        tracing::warn!(
            key,
            "config reload: {key} changed; it takes effect after a restart, the running value stays until then"
        );
    }
    if new.log.level != running.log.level && logging::reload_level(new.log.level.as_deref()) {
        running.log.level = new.log.level.clone();
    }
    // The checks file is re-read too (its own errors keep the running checks).
    let checks_ok = match checks.file() {
        Some(_) => {
            let c = checks.clone();
            matches!(
                tokio::task::spawn_blocking(move || c.reload()).await,
                Ok(Ok(_))
            )
        }
        None => true,
    };
    // So are the rule files, with the new [alerting] settings.
    let rules_ok = rules
        .reload(Some(crate::rules::Settings::from_config(&new)))
        .await;
    if rules_ok.is_ok() {
        // The notifications file was validated with the config; it is read again here.
        if let (Some(n), Ok(Some(setup))) = (notifications, crate::notify::load(&new.alerting)) {
            n.reload(setup).await;
        }
        running.alerting = new.alerting.clone();
    }
    match (checks_ok, rules_ok) {
        (true, Ok(_)) => {
            tracing::info!(needs_restart = ?restart, "configuration reloaded");
            gauges.succeeded(outpost_service::now_ms());
            Ok(())
        }
        (false, _) => {
            gauges.failed();
            Err("the checks file was refused".into())
        }
        (true, Err(e)) => {
            gauges.failed();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str =
        "data_dir = \"d\"\n[tls]\nca = \"c\"\ncert = \"a\"\nkey = \"k\"\n[log]\nlevel = \"info\"\n";

    #[test]
    fn only_log_level_applies_live() {
        let p = Path::new("/etc/outpost/aggregator.toml");
        let old = Config::parse(BASE, p).unwrap();
        let new = Config::parse(&BASE.replace("\"info\"", "\"debug\""), p).unwrap();
        assert!(restart_keys(&old, &new).is_empty());
        let new = Config::parse(
            &BASE
                .replace("\"d\"", "\"e\"")
                .replace("[log]", "[listen]\nhttp = \"127.0.0.1:1\"\n[log]"),
            p,
        )
        .unwrap();
        assert_eq!(restart_keys(&old, &new), vec!["data_dir", "listen"]);
        // The store's policy and the query engine's limits are read at start.
        let new = Config::parse(
            &BASE.replace(
                "[log]",
                "[storage]\nretention = \"20d\"\n[query]\ntimeout = \"1m\"\n[log]",
            ),
            p,
        )
        .unwrap();
        assert_eq!(restart_keys(&old, &new), vec!["storage", "query"]);
    }
}
