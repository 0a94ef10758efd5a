//! Chunks: one series' points within one time partition, compressed with the batch codec's
//! point coding, in the `parts` column family under keys laid out by [`crate::partition`].
//!
//! Chunks may overlap in time (late data, backfill, head compactions a few seconds apart);
//! the record id in the key orders their writes, and merging a partition
//! ([`crate::maintain`]) rewrites each series' chunks of it as one.

use crate::SeriesId;
use crate::chunk_codec::decode_chunk_between;
use crate::encoding::sortable;
use crate::partition::{self, RAW};
use outpost_promql::StorageError as ReadError;
use outpost_shared::Point;
use rocksdb::DB;

/// A reusable cursor over the `parts` column family: one RocksDB iterator for all the reads
/// of a query, instead of one per series.
pub(crate) type ChunkCursor<'a> = rocksdb::DBRawIteratorWithThreadMode<'a, DB>;

/// Calls `f` with the parsed key and value of every chunk of resolution byte `res` of series
/// `id` in partitions `parts` whose newest point is at or after `start_ms` and oldest at or
/// before `end_ms`, until `f` returns false.
fn each_chunk(
    it: &mut ChunkCursor<'_>,
    res: u8,
    parts: &[i32],
    id: SeriesId,
    start_ms: i64,
    end_ms: i64,
    mut f: impl FnMut(partition::ChunkKey, &[u8]) -> Result<bool, ReadError>,
) -> Result<(), ReadError> {
    for &p in parts {
        let prefix = partition::series_prefix(res, p, id);
        let mut from = [0u8; 21];
        from[..13].copy_from_slice(&prefix);
        from[13..].copy_from_slice(&sortable(start_ms));
        it.seek(from);
        while it.valid() {
            let (Some(k), Some(val)) = (it.key(), it.value()) else {
                break;
            };
            if !k.starts_with(&prefix) {
                break;
            }
            if let Some(c) = partition::parse(k)
                && c.min_ts <= end_ms
                && !f(c, val)?
            {
                return Ok(());
            }
            it.next();
        }
        it.status().map_err(|e| ReadError(e.to_string()))?;
    }
    Ok(())
}

/// Keys stepped over with `next` before a walk seeks instead: a short gap between wanted
/// series is cheaper to step over than to seek across.
const STEP_BEFORE_SEEK: usize = 8;

/// Calls `f` with `wanted[k].1`, the parsed key and the value of every chunk of resolution
/// byte `res` in partition `part` of the series `wanted[k].0` (sorted by id, no repeats)
/// whose newest point is at or after `start_ms` and oldest at or before `end_ms`. Walks the
/// partition's keys in order, stepping over short gaps between wanted series and seeking
/// across long ones, so reading many series of a partition costs one seek, not one each.
///
/// # Errors
/// RocksDB fails, or `f` does.
pub(crate) fn each_chunk_of_many(
    it: &mut ChunkCursor<'_>,
    res: u8,
    part: i32,
    wanted: &[(SeriesId, usize)],
    start_ms: i64,
    end_ms: i64,
    mut f: impl FnMut(usize, partition::ChunkKey, &[u8]) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    let Some(&(first, _)) = wanted.first() else {
        return Ok(());
    };
    let part_prefix = partition::prefix(res, part);
    it.seek(partition::series_prefix(res, part, first));
    let (mut k, mut stepped) = (0usize, 0usize);
    while k < wanted.len() && it.valid() {
        let Some(key) = it.key() else { break };
        if !key.starts_with(&part_prefix) {
            break;
        }
        let Some(c) = partition::parse(key) else {
            it.next();
            continue;
        };
        let (want, idx) = wanted[k];
        if c.series < want {
            stepped += 1;
            if stepped > STEP_BEFORE_SEEK {
                it.seek(partition::series_prefix(res, part, want));
                stepped = 0;
            } else {
                it.next();
            }
            continue;
        }
        if c.series > want {
            k += 1;
            continue;
        }
        stepped = 0;
        if c.max_ts >= start_ms
            && c.min_ts <= end_ms
            && let Some(v) = it.value()
        {
            f(idx, c, v)?;
        }
        it.next();
    }
    it.status().map_err(|e| ReadError(e.to_string()))
}

/// Whether a chunk of resolution byte `res` (raw points or a rollup) of series `id` spans a
/// time overlapping `[start_ms, end_ms]`. A chunk's span is its oldest to newest point (or
/// bucket start), so this can say yes for a chunk whose points all fall around the window;
/// it reads keys only.
///
/// # Errors
/// RocksDB fails.
pub(crate) fn any_overlapping(
    it: &mut ChunkCursor<'_>,
    res: u8,
    parts: &[i32],
    id: SeriesId,
    start_ms: i64,
    end_ms: i64,
) -> Result<bool, ReadError> {
    let mut found = false;
    each_chunk(it, res, parts, id, start_ms, end_ms, |_, _| {
        found = true;
        Ok(false)
    })?;
    Ok(found)
}

/// Appends the points of series `id` with `start_ms <= ts <= end_ms` found in the raw
/// chunks of partitions `parts` to `out`, newest write first (chunks by record id, newest
/// first, each reversed), reading through `it` (a cursor over the `parts` column family).
///
/// # Errors
/// RocksDB fails, or a chunk does not decode (named by series).
pub(crate) fn read_newest_first(
    it: &mut ChunkCursor<'_>,
    parts: &[i32],
    id: SeriesId,
    start_ms: i64,
    end_ms: i64,
    out: &mut Vec<Point>,
) -> Result<(), ReadError> {
    // Chunks in key order are sorted by time, not by when they were written; a repeated
    // timestamp must resolve to the newest write, so order them by record id, newest first.
    let mut chunks: Vec<(u64, Vec<Point>)> = vec![];
    each_chunk(it, RAW, parts, id, start_ms, end_ms, |c, val| {
        let mut chunk = vec![];
        decode_chunk_between(val, start_ms, end_ms, &mut chunk)
            .map_err(|e| ReadError(format!("chunk of series {id}: {e}")))?;
        chunks.push((c.record, chunk));
        Ok(true)
    })?;
    chunks.sort_by_key(|c| std::cmp::Reverse(c.0));
    for (_, chunk) in chunks {
        out.extend(chunk.into_iter().rev());
    }
    Ok(())
}
