//! `outpost-shared`: what the agent and the aggregator must agree on.
//!
//! - [`model`]: labels, points, series and batches.
//! - [`units`]: durations and byte sizes as written in config files.
//!
//! Nothing here opens sockets, reads the clock or spawns tasks; the TLS helpers read
//! certificate files and nothing else.

pub mod model;
pub mod units;

pub use model::{Batch, Label, Labels, Point, SeriesPoints};
