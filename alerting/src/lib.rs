//! `outpost-alerting`: Prometheus rule files and their evaluation, as Prometheus 2.42 does it.
//!
//! - [`duration`]: Prometheus' duration syntax (`1h30m`).
//! - [`rulefile`]: Prometheus rule files, read and validated as `promtool check rules` does.
//! - [`template`]: Go's `text/template` with Prometheus' functions, for alert labels and
//!   annotations.
//!
//! Pure: no runtime, no clock (every evaluation takes the time as an argument), no I/O;
//! series are read only through a query function the caller passes in. It depends on
//! `outpost-shared` and `outpost-promql`, never on tokio, RocksDB or HTTP.

pub mod duration;
pub mod rulefile;
pub mod template;
