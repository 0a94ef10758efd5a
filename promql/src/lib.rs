//! `outpost-promql`: the PromQL engine, with Prometheus 2.42's semantics as the reference.
//!
//! - [`parse`]: PromQL text → the plan ([`Expr`]); `promql-parser` parses, this crate lowers
//!   and refuses what it cannot evaluate yet, naming the construct.
//! - [`eval`]: instant and range evaluation of a plan with Prometheus 2.42's semantics, one
//!   module per family of the language: selectors (lookback, staleness, `offset`, `@`),
//!   binary operators with vector matching, aggregations, functions of range vectors,
//!   functions of instant vectors, and subqueries. What it cannot evaluate yet (native
//!   histogram functions, functions newer than 2.42) is refused while planning.
//! - [`storage`]: the [`Queryable`]/[`Querier`] traits a store implements, and label
//!   [`Matcher`]s; [`memory`] is an in-memory store for tests.
//! - [`rollup`]: buckets of 5 minutes and 1 hour, and the functions of aligned windows
//!   they answer as the raw points would.
//! - [`steps`]: a range query's evaluation times; [`limits`]: the sample cap and the
//!   caller's cancellation; [`error`]: every failure, in Prometheus' words.
//!
//! Pure: no runtime, no clock (the time is always an argument), no I/O but through
//! [`Queryable`]. It depends on `outpost-shared` and `promql-parser` and never on tokio,
//! RocksDB or HTTP, so `cargo test -p outpost-promql` builds in seconds.

pub mod error;
pub mod eval;
pub mod limits;
pub mod memory;
pub mod parse;
pub mod rollup;
pub mod steps;
pub mod storage;

pub use error::QueryError;
pub use eval::{
    LOOKBACK_DELTA_MS, MAX_SAMPLES, Sample, Value, instant_query, instant_query_with, range_query,
    range_query_with,
};
pub use limits::{Cancel, Limits};
pub use parse::{Expr, Selector, format_query, parse, parse_series_selector};
pub use steps::{MAX_STEPS, Steps};
pub use storage::{MatchOp, Matcher, Querier, Queryable, SeriesRef, StorageError};
