//! `outpost-shared`: what the agent and the aggregator must agree on.
//!
//! - [`model`]: labels, points, series and batches.
//! - [`codec`]: the compact batch encoding (dictionary, delta-of-delta times, value codes).
//! - [`metadata`]: a metric family's type, help and unit.
//! - [`frame`]: protocol frames and their length-delimited framing on QUIC streams.
//! - [`session`]: the uplink protocol as pure client and server state machines.
//! - [`tls`]: certificate generation, loading, and rustls configs for mutual TLS.
//! - [`units`]: durations and byte sizes as written in config files.
//! - [`problem`]: one thing wrong with a configuration, tied to its key.
//! - `remote_write` (feature `remote-write`): Prometheus remote_write 1.0 messages.
//!
//! Nothing here opens sockets, reads the clock or spawns tasks; the TLS helpers read and
//! write certificate files and nothing else.

mod bits;
pub mod codec;
pub mod frame;
pub mod metadata;
pub mod model;
pub mod problem;
#[cfg(feature = "remote-write")]
pub mod remote_write;
pub mod session;
pub mod tls;
pub mod units;

pub use model::{Batch, Label, Labels, Point, SeriesPoints};
pub use problem::Problem;
