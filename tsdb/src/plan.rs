//! [`WritePlan`]: everything one group commit writes, decided by the caller and committed by
//! [`crate::Storage::commit`] in one atomic, synced RocksDB write: new series, one wal record
//! per batch, and the caller's own metadata (the aggregator's per-agent seq ledger), so that
//! samples and the bookkeeping that says they were applied are durable together or not at all.

use crate::SeriesId;
use outpost_shared::{Labels, Point};

/// Which series a planned point belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SeriesSlot {
    /// A series the store already has.
    Existing(SeriesId),
    /// The `n`th label set of [`WritePlan::new_series`]; its id is known after the commit.
    New(u32),
}

/// One group commit.
#[derive(Clone, Debug, Default)]
pub struct WritePlan {
    /// Label sets the store may not have yet, each once. A set that exists by commit time
    /// keeps its id; the others get the next free ids.
    pub new_series: Vec<Labels>,
    /// One wal record per batch: its points, in the batch's order.
    pub records: Vec<Vec<(SeriesSlot, Point)>>,
    /// Caller metadata to put in the same write: (key, value) in the default column family.
    /// Keys must not collide with the store's own (`wal_next`). An empty value deletes the
    /// key.
    pub meta: Vec<(Vec<u8>, Vec<u8>)>,
}

impl WritePlan {
    /// True when committing would write nothing.
    pub fn is_empty(&self) -> bool {
        self.new_series.is_empty() && self.records.is_empty() && self.meta.is_empty()
    }
}
