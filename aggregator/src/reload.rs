//! Configuration reload on SIGHUP for the aggregator: the file is re-read and validated; a
//! config with problems is refused as a whole (every problem logged, the running config
//! kept). `[log] level` and the checks file's content apply at once; the other keys bind sockets, open storage or load
//! TLS material at start, so a change to them is logged as needing a restart. The outcome
//! goes to `outpost_aggregator_config_last_reload_successful` and
//! `outpost_aggregator_config_last_reload_success_timestamp_seconds`.

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
    out
}

/// Registers for SIGHUP now and reloads `path` on each one.
pub fn spawn(
    path: PathBuf,
    initial: Config,
    gauges: ReloadGauges,
    checks: std::sync::Arc<crate::checks::Placement>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        let mut running = initial;
        while hup.recv().await.is_some() {
            sdnotify::reloading();
            tracing::info!(config = %path.display(), "SIGHUP: reloading the configuration");
            match Config::load(&path) {
                Err(e) => {
                    gauges.failed();
                    e.log_refused_reload();
                }
                Ok(new) => {
                    let restart = restart_keys(&running, &new);
                    for key in &restart {
                        tracing::warn!(
                            key,
                            "config reload: {key} changed; it takes effect after a restart, the running value stays until then"
                        );
                    }
                    if new.log.level != running.log.level
                        && logging::reload_level(new.log.level.as_deref())
                    {
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
                    if checks_ok {
                        tracing::info!(needs_restart = ?restart, "configuration reloaded");
                        gauges.succeeded(outpost_service::now_ms());
                    } else {
                        gauges.failed();
                    }
                }
            }
            sdnotify::ready("running");
        }
    }))
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
    }
}
