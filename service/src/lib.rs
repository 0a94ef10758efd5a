//! `outpost-service`: what every Outpost daemon does, whatever its job.
//!
//! - [`logging`]: the log subscriber (text or JSON, journald-aware), live level change.
//! - [`telemetry`]: OpenTelemetry trace export over OTLP/HTTP and trace-context continuation
//!   across the wire.
//! - [`sdnotify`]: systemd readiness, reload and stop notifications, and the watchdog.
//! - [`signal`]: the shutdown signal (Ctrl-C or SIGTERM).
//! - [`config`]: reading a config file and listing every problem with file and key; the
//!   `[log]` and `[telemetry]` sections both programs share.
//! - [`metrics`]: self-metrics every program exposes (reload gauges, `build_info`,
//!   `start_time`).
//! - [`clock`]: the one wall clock.
//! - [`quic`]: the QUIC transport settings both ends of the uplink must agree on.
//!
//! This crate knows nothing of collectors, buffers, storage or queries, and depends on no
//! program crate.

pub mod clock;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod quic;
pub mod sdnotify;
pub mod signal;
pub mod telemetry;

pub use clock::now_ms;
pub use config::{ConfigError, Problem};
