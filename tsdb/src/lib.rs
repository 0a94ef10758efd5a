//! `outpost-tsdb`: the aggregator's time-series store on RocksDB.
//!
//! - [`index`]: the postings index (label name → value → series), in memory.
//! - [`head`]: recent points in memory, rebuilt from the wal at open.
//! - [`wal`]: one record per committed batch, until compaction.
//! - `chunk_codec`: how a chunk's points are coded (byte-aligned decimal deltas of deltas
//!   for zstd to compress).
//! - [`chunks`]: compressed per-series point runs, the long-term form.
//! - [`partition`]: chunks laid out by time partition (a UTC day), so old data goes with a
//!   range delete.
//! - [`compact`]: head → chunks, wal records dropped, in one atomic write.
//! - [`maintain`]: merging a partition's chunks, retention and a size cap, statistics per
//!   partition, verifying a folder.
//! - [`rollup`]: downsampling: 5-minute and 1-hour buckets per series and day, read by
//!   long-range queries and for data older than the raw retention.
//! - [`plan`]: [`WritePlan`], what one group commit writes; [`Storage::commit`] writes it in
//!   one atomic, synced RocksDB write with the caller's metadata.
//! - [`forward`]: the forward log, what remote_write forwarding reads from a durable cursor.
//! - [`querier`]: [`Storage`] implements `outpost_promql::Queryable`.
//!
//! Out-of-order and backfilled points are welcome: chunks may overlap in time, and reads
//! merge chunks and head keeping one point per timestamp (the newest write). This crate
//! knows nothing of agents, seqs or the ingest protocol (the caller's ledger decides what to
//! write), and serves no HTTP.

mod chunk_codec;
mod chunks;
mod compact;
mod db;
mod encoding;
pub mod forward;
mod head;
mod index;
mod maintain;
pub mod partition;
mod plan;
mod querier;
pub mod rollup;
#[cfg(test)]
mod testutil;
mod wal;

pub use db::{MAX_FUTURE_MS, MetaEntry, Storage, StorageError};
pub use index::CardinalityStats;
pub use maintain::{
    DeleteReason, DeletedPartition, MERGE_AFTER_MS, MaintenanceReport, PartitionStats,
    PartitionStatus, RetentionPolicy, VerifyReport,
};
pub use plan::{SeriesSlot, WritePlan};

/// A stored series' number, stable for the life of the data folder.
pub type SeriesId = outpost_promql::SeriesRef;
