//! Chunks: one series' points over a time range, compressed with the batch codec's point
//! coding, in the `chunks` column family.
//!
//! Key: series id · max ts · min ts · wal record id (u64 big endian each, times with the sign
//! bit flipped so they sort as numbers): 32 bytes. A series' chunks are contiguous and sorted
//! by their newest point, so a read seeks to the first chunk ending at or after its start.
//! Chunks may overlap in time (late data, backfill); the record id orders their writes.

use crate::SeriesId;
use crate::encoding::{sortable, unsortable};
use outpost_promql::StorageError as ReadError;
use outpost_shared::Point;
use outpost_shared::codec::decode_points_between;
use rocksdb::{DB, Direction, IteratorMode};

/// The key of a chunk of series `id` holding points from `min_ts` to `max_ts` (ms),
/// compacted from wal records up to `record`.
pub(crate) fn key(id: SeriesId, min_ts: i64, max_ts: i64, record: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(32);
    key.extend_from_slice(&id.to_be_bytes());
    key.extend_from_slice(&sortable(max_ts));
    key.extend_from_slice(&sortable(min_ts));
    key.extend_from_slice(&record.to_be_bytes());
    key
}

/// Whether a chunk of series `id` spans a time overlapping `[start_ms, end_ms]`. A chunk's
/// span is its oldest to newest point, so this can say yes for a chunk whose points all
/// fall around the window; it reads keys only.
///
/// # Errors
/// RocksDB fails.
pub(crate) fn any_overlapping(
    db: &DB,
    cf: &rocksdb::ColumnFamily,
    id: SeriesId,
    start_ms: i64,
    end_ms: i64,
) -> Result<bool, ReadError> {
    let mut from = id.to_be_bytes().to_vec();
    from.extend_from_slice(&sortable(start_ms));
    for item in db.iterator_cf(cf, IteratorMode::From(&from, Direction::Forward)) {
        let (k, _) = item.map_err(|e| ReadError(e.to_string()))?;
        if k.len() != 32 || k[..8] != id.to_be_bytes() {
            return Ok(false);
        }
        if unsortable(&k[16..24]) <= end_ms {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A reusable cursor over the `chunks` column family: one RocksDB iterator for all the reads
/// of a query, instead of one per series.
pub(crate) type ChunkCursor<'a> = rocksdb::DBRawIteratorWithThreadMode<'a, DB>;

/// Appends the points of series `id` with `start_ms <= ts <= end_ms` found in chunks to
/// `out`, newest write first (chunks by record id, newest first, each reversed), reading
/// through `it` (a cursor over the `chunks` column family).
///
/// # Errors
/// RocksDB fails, or a chunk does not decode (named by series).
pub(crate) fn read_newest_first(
    it: &mut ChunkCursor<'_>,
    id: SeriesId,
    start_ms: i64,
    end_ms: i64,
    out: &mut Vec<Point>,
) -> Result<(), ReadError> {
    let mut from = [0u8; 16];
    from[..8].copy_from_slice(&id.to_be_bytes());
    from[8..].copy_from_slice(&sortable(start_ms));
    it.seek(from);
    // Chunks in key order are sorted by time, not by when they were written; a repeated
    // timestamp must resolve to the newest write, so order them by record id, newest first.
    let mut chunks: Vec<(u64, Vec<Point>)> = vec![];
    while it.valid() {
        let (Some(k), Some(val)) = (it.key(), it.value()) else {
            break;
        };
        if k.len() != 32 || k[..8] != id.to_be_bytes() {
            break;
        }
        if unsortable(&k[16..24]) <= end_ms {
            let record = u64::from_be_bytes(k[24..32].try_into().unwrap_or_default());
            let mut chunk = vec![];
            decode_points_between(val, start_ms, end_ms, &mut chunk)
                .map_err(|e| ReadError(format!("chunk of series {id}: {e}")))?;
            chunks.push((record, chunk));
        }
        it.next();
    }
    it.status().map_err(|e| ReadError(e.to_string()))?;
    chunks.sort_by_key(|c| std::cmp::Reverse(c.0));
    for (_, chunk) in chunks {
        out.extend(chunk.into_iter().rev());
    }
    Ok(())
}
