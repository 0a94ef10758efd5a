//! Time partitions: every chunk belongs to one partition, a fixed span of time (a UTC day
//! for raw points), and partitions lead the chunk key so a whole partition is one contiguous
//! key range. Deleting old data is one range delete per partition, and merging a partition's
//! small chunks reads one range.
//!
//! Chunk key (37 bytes), in the `parts` column family:
//! resolution (1 byte) · partition (4 bytes, day number, sign bit flipped, big endian) ·
//! series id (u64 BE) · max ts · min ts (8 bytes each, sign bit flipped, BE) ·
//! record id (u64 BE, the newest wal record compacted into it; orders overlapping writes).
//! Within a partition a series' chunks are contiguous and sorted by their newest point.

use crate::SeriesId;
use crate::encoding::{sortable, unsortable};

/// One day in ms: the span of a raw partition.
pub const PARTITION_MS: i64 = 86_400_000;

/// The resolution byte of raw points.
pub(crate) const RAW: u8 = 0;

/// Length of a chunk key.
pub(crate) const KEY_LEN: usize = 37;

/// The partition (day number since the Unix epoch, UTC) holding `ts` (ms).
pub fn partition_of(ts: i64) -> i32 {
    ts.div_euclid(PARTITION_MS)
        .clamp(i32::MIN as i64, i32::MAX as i64) as i32
}

/// The first and last ms of partition `p`.
pub fn partition_span(p: i32) -> (i64, i64) {
    let start = p as i64 * PARTITION_MS;
    (start, start + PARTITION_MS - 1)
}

fn part_bytes(p: i32) -> [u8; 4] {
    ((p as u32) ^ (1 << 31)).to_be_bytes()
}

fn part_from(b: &[u8]) -> i32 {
    (u32::from_be_bytes(b.try_into().unwrap_or_default()) ^ (1 << 31)) as i32
}

/// The first 5 bytes of every key of partition `p` at resolution `res`.
pub(crate) fn prefix(res: u8, p: i32) -> [u8; 5] {
    let mut k = [0u8; 5];
    k[0] = res;
    k[1..].copy_from_slice(&part_bytes(p));
    k
}

/// The first 13 bytes of every key of series `id` in partition `p`.
pub(crate) fn series_prefix(res: u8, p: i32, id: SeriesId) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[..5].copy_from_slice(&prefix(res, p));
    k[5..].copy_from_slice(&id.to_be_bytes());
    k
}

/// The key of a chunk; its points must all lie in one partition (that of `min_ts`).
pub(crate) fn chunk_key(res: u8, id: SeriesId, min_ts: i64, max_ts: i64, record: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(KEY_LEN);
    k.extend_from_slice(&series_prefix(res, partition_of(min_ts), id));
    k.extend_from_slice(&sortable(max_ts));
    k.extend_from_slice(&sortable(min_ts));
    k.extend_from_slice(&record.to_be_bytes());
    k
}

/// A chunk key taken apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChunkKey {
    pub(crate) res: u8,
    pub(crate) part: i32,
    pub(crate) series: SeriesId,
    pub(crate) max_ts: i64,
    pub(crate) min_ts: i64,
    pub(crate) record: u64,
}

/// Parses a chunk key; `None` when it is not one.
pub(crate) fn parse(k: &[u8]) -> Option<ChunkKey> {
    if k.len() != KEY_LEN {
        return None;
    }
    Some(ChunkKey {
        res: k[0],
        part: part_from(&k[1..5]),
        series: u64::from_be_bytes(k[5..13].try_into().ok()?),
        max_ts: unsortable(&k[13..21]),
        min_ts: unsortable(&k[21..29]),
        record: u64::from_be_bytes(k[29..37].try_into().ok()?),
    })
}

/// The partition and resolution of a key's first 5 bytes.
pub(crate) fn parse_prefix(k: &[u8]) -> Option<(u8, i32)> {
    (k.len() >= 5).then(|| (k[0], part_from(&k[1..5])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sort_by_partition_then_series_then_time() {
        let day = PARTITION_MS;
        let k = chunk_key(RAW, 7, day * 3 + 5, day * 3 + 90, 42);
        assert_eq!(
            parse(&k),
            Some(ChunkKey {
                res: RAW,
                part: 3,
                series: 7,
                max_ts: day * 3 + 90,
                min_ts: day * 3 + 5,
                record: 42
            })
        );
        let mut keys = [
            chunk_key(RAW, 1, day * 4, day * 4, 1),
            chunk_key(RAW, 9, day * 3 + 10, day * 3 + 20, 1),
            chunk_key(RAW, 2, -day, -day + 5, 1),
            chunk_key(RAW, 9, day * 3, day * 3 + 5, 2),
        ];
        keys.sort();
        let order: Vec<(i32, u64, i64)> = keys
            .iter()
            .map(|k| parse(k).map(|c| (c.part, c.series, c.max_ts)).unwrap())
            .collect();
        assert_eq!(
            order,
            vec![
                (-1, 2, -day + 5),
                (3, 9, day * 3 + 5),
                (3, 9, day * 3 + 20),
                (4, 1, day * 4)
            ]
        );
        assert_eq!(partition_of(-1), -1);
        assert_eq!(partition_span(2), (2 * day, 3 * day - 1));
    }
}
