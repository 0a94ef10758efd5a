//! Log setup shared by both programs: `RUST_LOG` wins over the configured level; text for
//! terminals and journald (no colours when not a terminal, no timestamps under journald,
//! which stamps lines itself), or one JSON object per line. The level can be changed while
//! running ([`set_level`], used by config reload), and spans go to OpenTelemetry when an
//! OTLP endpoint is set (see [`crate::telemetry`]).

use std::io::IsTerminal;
use std::sync::OnceLock;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// What [`init_with`] sets up.
pub struct LogOptions<'a> {
    /// Configured filter (`[log] level`); `RUST_LOG` overrides it.
    pub level: Option<&'a str>,
    /// One JSON object per line instead of text.
    pub json: bool,
    /// `service.name` of exported spans.
    pub service: &'static str,
    /// OTLP base URL from the config; `OTEL_EXPORTER_OTLP_ENDPOINT` overrides it.
    pub otlp_endpoint: Option<&'a str>,
}

/// Text or JSON logs without span export (the demo and tools).
pub fn init(level: Option<&str>, json: bool) {
    let _ = init_with(&LogOptions {
        level,
        json,
        service: "outpost",
        otlp_endpoint: None,
    });
}

/// Installs the global subscriber. The returned guard flushes exported spans when dropped;
/// drop it after the runtime has stopped. An exporter that cannot be built is reported
/// and logging goes on without it.
pub fn init_with(o: &LogOptions) -> crate::telemetry::Guard {
    let filter = filter(o.level);
    let (filter, handle) = reload::Layer::new(filter);
    let _ = LEVEL.set(handle);
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let ansi = std::io::stderr().is_terminal();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let fmt = match (o.json, journald) {
        (true, _) => fmt.json().boxed(),
        (false, true) => fmt.without_time().boxed(),
        (false, false) => fmt.boxed(),
    };
    let (otel, guard, problem) = match crate::telemetry::tracer(o.service, o.otlp_endpoint) {
        Ok(Some((tracer, guard))) => (
            Some(tracing_opentelemetry::layer().with_tracer(tracer)),
            guard,
            None,
        ),
        Ok(None) => (None, crate::telemetry::Guard::default(), None),
        Err(e) => (None, crate::telemetry::Guard::default(), Some(e)),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    if let Some(e) = problem {
        tracing::error!("trace export disabled: {e}");
    }
    guard
}

fn filter(level: Option<&str>) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level.unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// What [`set_level`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum LevelChange {
    /// The new level is in effect.
    Applied,
    /// `RUST_LOG` is set and keeps precedence over the config.
    OverriddenByEnv,
}

/// Applies a new `[log] level` to the running subscriber.
pub fn set_level(level: Option<&str>) -> Result<LevelChange, String> {
    if std::env::var_os("RUST_LOG").is_some() {
        return Ok(LevelChange::OverriddenByEnv);
    }
    let f = EnvFilter::try_new(level.unwrap_or("info")).map_err(|e| format!("log.level: {e}"))?;
    let h = LEVEL.get().ok_or("logging is not initialised")?;
    h.reload(f).map_err(|e| format!("log.level: {e}"))?;
    Ok(LevelChange::Applied)
}

/// Checks a `[log] level` filter without applying it.
pub fn validate_level(level: &str) -> Result<(), String> {
    EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|e| format!("{level:?} is not a log filter: {e}"))
}

/// Applies a reloaded `[log] level` and logs what happened: `RUST_LOG` keeping precedence is
/// a warning, a filter that cannot be applied an error. True when the new level is in effect.
pub fn reload_level(level: Option<&str>) -> bool {
    match set_level(level) {
        Ok(LevelChange::Applied) => true,
        Ok(LevelChange::OverriddenByEnv) => {
            tracing::warn!(
                "config reload: log.level changed, but RUST_LOG is set and takes precedence"
            );
            false
        }
        Err(e) => {
            tracing::error!("config reload: {e}");
            false
        }
    }
}
