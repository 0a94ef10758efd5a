//! Self-metrics every Outpost program exposes on `/metrics`, under its own prefix
//! (`outpost_agent_`, `outpost_aggregator_`): whether the last config reload worked, named
//! like Prometheus' own (`*_config_last_reload_successful`,
//! `*_config_last_reload_success_timestamp_seconds`), `build_info` and `start_time_seconds`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// Whether the last reload worked, and when the config was last loaded successfully.
#[derive(Clone, Default, Debug)]
pub struct ReloadGauges {
    /// 1 when the last reload attempt succeeded, 0 when it was refused.
    pub successful: Gauge,
    /// Unix time in seconds of the last successful load (at start or on SIGHUP).
    pub success_timestamp: Gauge<f64, AtomicU64>,
}

impl ReloadGauges {
    /// Registers `config_last_reload_successful` and
    /// `config_last_reload_success_timestamp_seconds` in `r`.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "config_last_reload_successful",
            "Whether the last configuration reload attempt was successful (1) or not (0)",
            self.successful.clone(),
        );
        r.register_with_unit(
            "config_last_reload_success_timestamp",
            "Unix time of the last successful configuration load (at start or on SIGHUP)",
            Unit::Seconds,
            self.success_timestamp.clone(),
        );
    }

    /// Records a successful load at `now_ms` (ms since the Unix epoch).
    pub fn succeeded(&self, now_ms: i64) {
        self.successful.set(1);
        self.success_timestamp.set(now_ms as f64 / 1000.0);
    }

    /// Records a refused reload; the timestamp keeps the last success.
    pub fn failed(&self) {
        self.successful.set(0);
    }
}

/// The `version` label of `build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// The workspace version the program was built from.
    pub version: String,
}

/// `build_info` (always 1, its `version` label says which build runs) and
/// `start_time_seconds`, as every Prometheus exporter has them.
#[derive(Clone, Default, Debug)]
pub struct ProcessInfo {
    /// `build_info{version}`.
    pub build_info: Family<BuildLabels, Gauge>,
    /// Unix time in seconds the program started.
    pub start_time: Gauge<f64, AtomicU64>,
}

impl ProcessInfo {
    /// Registers both in `r`, sets `build_info` to 1 and `start_time` to `now_ms`. `program`
    /// names the program in the help text ("agent", "aggregator").
    pub fn register(&self, r: &mut Registry, program: &str, now_ms: i64) {
        r.register(
            "build_info",
            "Always 1; the version label says which build runs",
            self.build_info.clone(),
        );
        self.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        r.register_with_unit(
            "start_time",
            format!("Unix time the {program} started"),
            Unit::Seconds,
            self.start_time.clone(),
        );
        self.start_time.set(now_ms as f64 / 1000.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_as_exposed() {
        let mut r = Registry::with_prefix("outpost_x");
        let reload = ReloadGauges::default();
        reload.register(&mut r);
        ProcessInfo::default().register(&mut r, "x", 1_500);
        reload.succeeded(2_000);
        reload.failed();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        for line in [
            "outpost_x_config_last_reload_successful 0",
            "outpost_x_config_last_reload_success_timestamp_seconds 2.0",
            &format!(
                "outpost_x_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            ),
            "outpost_x_start_time_seconds 1.5",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
        }
    }
}
