//! Downsampling: each closed raw partition (day) is summarised per series in buckets of 5
//! minutes and of 1 hour ([`outpost_promql::rollup::Bucket`]), kept in their own
//! partitions (resolution bytes [`R5M`] and [`R1H`] of the `parts` key, one chunk per
//! series and day) with their own retention, so that long-range queries read a few
//! buckets per series and data older than the raw retention stays queryable.
//!
//! - **When.** A day is rolled up in the maintenance pass after it has been merged; its
//!   statistics remember the raw partition's write count ([`PartitionStats::writes`]) it
//!   was made from, and a day whose raw partition was written since (late points) is rolled
//!   up again from its raw chunks, so late points update the rollup. Points older than the
//!   raw retention are deleted before that and never reach a rollup.
//! - **Crash safety and idempotence.** A day's old rollups and the statistics that mark it
//!   done are deleted first (one range delete per resolution), the new chunks written in
//!   writes of a few MiB, the statistics last; only a day with statistics counts as rolled
//!   up (when the store opens too), and until then queries make its buckets from the raw
//!   points. A crash in between leaves the day not done, and the next pass makes the same
//!   buckets again from the same raw chunks.
//! - **Reads.** [`Storage::series_buckets`] reads a day's rollup chunk where the day is rolled up
//!   and makes buckets from raw points where not (today, or a day not yet rolled up), so a
//!   query sees the same buckets either way. [`Storage::points_via`] shows, for the time
//!   before the oldest raw partition, each 5-minute bucket's last point (1-hour buckets
//!   where no 5-minute one is kept).
//!
//! Chunk value (byte-aligned, as raw chunks are, so RocksDB's zstd shrinks it further):
//! `0x00`, then a kind byte:
//! - `0x01`: the day's raw points as a raw chunk ([`crate::chunk_codec`]); the buckets are
//!   made from them when read. Chosen when it is shorter than the columns: a series with a
//!   point or two per bucket.
//! - `0x03`: the bucket count (varint) and nothing else: the buckets are made from the
//!   day's raw points, still kept. Written instead of `0x01` while the raw day is kept (a
//!   copy of its points would double a sparse series' bytes for nothing) and replaced by
//!   `0x01` or `0x02`, made from those raw points, in the write before the raw day's
//!   deletion ([`Storage::keep_rollups_of_raw_day`]), so no such chunk outlives its raw day.
//! - `0x02`: the bucket count `n` (varint); the spacing of bucket starts in ms (varint, the
//!   greatest common divisor of their gaps) and the starts divided by it, as the first and
//!   then deltas (signed varints); then nine columns of `n` values, in this order: first
//!   value, last value, minimum, maximum, count, sum, reset correction, first point's
//!   offset from the bucket start (ms), last point's offset. Each column is either
//!   `0xc0 | i`, the same bits as column `i` before it (a counter's minimum is its first
//!   value and its maximum its last); or `0xa0` and the IEEE 754 bits (8 bytes, little
//!   endian) of a value every bucket has; or the raw chunks' value coding: decimal
//!   mantissas in deltas or deltas of deltas, else XORed bits.
//!
//! Chunks of the first format (starting with their non-zero bucket count, nine bit-packed
//! columns of the batch codec's point coding) still decode.

use crate::SeriesId;
use crate::db::{CF_PARTS, Storage, StorageError};
use crate::maintain::PartitionStats;
use crate::partition::{self, PARTITION_MS, RAW};
use outpost_promql::StorageError as ReadError;
use outpost_promql::rollup::{Bucket, RES_1H_MS, RES_5M_MS, buckets_of};
use outpost_shared::Point;
use outpost_shared::codec::decode_points;
use rocksdb::WriteBatch;

/// The resolution byte of 5-minute buckets.
pub(crate) const R5M: u8 = 1;
/// The resolution byte of 1-hour buckets.
pub(crate) const R1H: u8 = 2;
/// Every rollup resolution: its byte, its length (ms) and its name, finest first.
pub(crate) const ROLLUPS: [(u8, i64, &str); 2] = [(R5M, RES_5M_MS, "5m"), (R1H, RES_1H_MS, "1h")];

/// The resolution byte of a bucket length (ms), if it is one kept.
pub(crate) fn res_byte(res_ms: i64) -> Option<u8> {
    ROLLUPS.iter().find(|r| r.1 == res_ms).map(|r| r.0)
}

/// The bucket length (ms) of a rollup resolution byte; 0 for raw points.
pub(crate) fn res_ms(res: u8) -> i64 {
    ROLLUPS.iter().find(|r| r.0 == res).map_or(0, |r| r.1)
}

/// The name (`raw`, `5m`, `1h`) of a resolution byte.
pub(crate) fn res_name(res: u8) -> &'static str {
    ROLLUPS.iter().find(|r| r.0 == res).map_or("raw", |r| r.2)
}

/// The first byte of a rollup chunk of the current format; one of the older format starts
/// with its bucket count, never 0.
const V1: u8 = 0x00;
/// Kind byte: the chunk holds the day's raw points; its buckets are made from them.
const KIND_POINTS: u8 = 0x01;
/// Kind byte: the chunk holds bucket columns.
const KIND_BUCKETS: u8 = 0x02;
/// Kind byte: the buckets are made from the day's raw points, still kept; the bucket
/// count follows.
const KIND_RAW: u8 = 0x03;
/// Column tag: the column equals an earlier one (its index in the low bits) bit for bit.
const SAME_AS: u8 = 0xc0;
/// Column tag: every value of the column is the one whose IEEE 754 bits follow (8 bytes,
/// little endian).
const CONSTANT: u8 = 0xa0;
/// Bucket columns in their order in a chunk: first and last values come before the minimum
/// and maximum, which for a counter equal them.
const COLUMNS: usize = 9;

fn column(b: &Bucket, c: usize) -> f64 {
    match c {
        0 => b.first.value,
        1 => b.last.value,
        2 => b.min,
        3 => b.max,
        4 => b.count as f64,
        5 => b.sum,
        6 => b.reset_add,
        7 => (b.first.ts - b.start) as f64,
        _ => (b.last.ts - b.start) as f64,
    }
}

/// Encodes one series' day at one resolution (`buckets` made from `points`, both oldest
/// first and non-empty) as a chunk value, whichever of two forms is shorter: the bucket
/// columns, or the points themselves when they are hardly more than buckets (a series
/// sampled once an hour has one point a 1-hour bucket, and nine columns would cost more).
pub(crate) fn encode_rollup(points: &[Point], buckets: &[Bucket]) -> Vec<u8> {
    let cols = encode_buckets(buckets);
    if points.len() > 4 * buckets.len() {
        return cols;
    }
    let mut pts = Vec::with_capacity(2 + points.len() * 3);
    pts.extend_from_slice(&[V1, KIND_POINTS]);
    pts.extend_from_slice(&crate::chunk_codec::encode_chunk(points));
    if pts.len() < cols.len() { pts } else { cols }
}

/// [`encode_rollup`], but where that would copy the points, a chunk that refers to the
/// raw day's points instead (kind `0x03`): for a day whose raw points are kept.
pub(crate) fn encode_rollup_beside_raw(points: &[Point], buckets: &[Bucket]) -> Vec<u8> {
    let enc = encode_rollup(points, buckets);
    if enc.get(1) != Some(&KIND_POINTS) {
        return enc;
    }
    let mut out = vec![V1, KIND_RAW];
    crate::chunk_codec::put_uvarint(&mut out, buckets.len() as u64);
    out
}

/// The bucket count of a rollup chunk value that refers to its day's raw points (kind
/// `0x03`); `None` for any other value.
pub(crate) fn raw_ref(v: &[u8]) -> Option<u64> {
    match v {
        [V1, KIND_RAW, ..] => {
            let mut pos = 2;
            crate::chunk_codec::uvarint(v, &mut pos)
                .ok()
                .filter(|_| pos == v.len())
        }
        _ => None,
    }
}

/// Encodes buckets (oldest first, non-empty) as a chunk value of bucket columns (see the
/// module docs).
pub(crate) fn encode_buckets(b: &[Bucket]) -> Vec<u8> {
    // The spacing must divide the starts themselves, not only their differences: buckets
    // two hours apart starting at an odd hour were read back an hour early.
    let res = b
        .windows(2)
        .map(|w| w[1].start - w[0].start)
        .fold(b[0].start, gcd)
        .max(1);
    encode_buckets_spaced(b, res)
}

/// [`encode_buckets`] with the starts written as multiples of `res` (ms), rounded down.
fn encode_buckets_spaced(b: &[Bucket], res: i64) -> Vec<u8> {
    use crate::chunk_codec::{put_series, put_uvarint, put_values};
    let mut out = Vec::with_capacity(16 + b.len() * 12);
    out.extend_from_slice(&[V1, KIND_BUCKETS]);
    put_uvarint(&mut out, b.len() as u64);
    put_uvarint(&mut out, res as u64);
    let starts: Vec<i64> = b.iter().map(|x| x.start / res).collect();
    put_series(&mut out, &starts, 1);
    let cols: Vec<Vec<f64>> = (0..COLUMNS)
        .map(|c| b.iter().map(|x| column(x, c)).collect())
        .collect();
    for (c, col) in cols.iter().enumerate() {
        let same = (0..c).find(|&e| {
            cols[e]
                .iter()
                .zip(col)
                .all(|(x, y)| x.to_bits() == y.to_bits())
        });
        let constant = col.iter().all(|v| v.to_bits() == col[0].to_bits());
        match same {
            Some(e) => out.push(SAME_AS | e as u8),
            None if constant => {
                out.push(CONSTANT);
                out.extend_from_slice(&col[0].to_bits().to_le_bytes());
            }
            None => put_values(&mut out, col),
        }
    }
    out
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a.abs() } else { gcd(b, a % b) }
}

/// Decodes a rollup chunk value of resolution `res_ms` (any form but one referring to the
/// raw day's points, [`raw_ref`], whose buckets the caller makes from those points).
/// `first_start` is the first bucket's start as its key gives it (ms): bucket columns
/// written before their spacing had to divide the starts hold every start rounded down to
/// a multiple of it, and are read back moved by the remainder (the same for every bucket).
///
/// # Errors
/// The value is truncated or its columns disagree, or it refers to raw points; says which.
pub(crate) fn decode_rollup(
    v: &[u8],
    res_ms: i64,
    first_start: i64,
) -> Result<Vec<Bucket>, String> {
    use crate::chunk_codec::{read_series, read_values, uvarint};
    match v {
        [V1, KIND_POINTS, rest @ ..] => {
            let mut pts = vec![];
            crate::chunk_codec::decode_chunk(rest, &mut pts).map_err(|e| format!("points: {e}"))?;
            Ok(buckets_of(&pts, res_ms))
        }
        [V1, KIND_BUCKETS, ..] => {
            let mut pos = 2;
            let n = uvarint(v, &mut pos).map_err(|e| format!("bucket count: {e}"))? as usize;
            if n > v.len() {
                return Err("bucket count past the chunk's end".into());
            }
            let res = uvarint(v, &mut pos).map_err(|e| format!("bucket spacing: {e}"))? as i64;
            let starts = read_series(v, &mut pos, n, 1).map_err(|e| format!("starts: {e}"))?;
            let mut cols: Vec<Vec<f64>> = Vec::with_capacity(COLUMNS);
            for c in 0..COLUMNS {
                let tag = *v.get(pos).ok_or_else(|| format!("column {c} truncated"))?;
                if tag == CONSTANT {
                    let bits: [u8; 8] = v
                        .get(pos + 1..pos + 9)
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(|| format!("column {c} truncated"))?;
                    pos += 9;
                    cols.push(vec![f64::from_bits(u64::from_le_bytes(bits)); n]);
                } else if tag & SAME_AS == SAME_AS {
                    let e = usize::from(tag & !SAME_AS);
                    let col = cols
                        .get(e)
                        .filter(|_| e < c)
                        .ok_or_else(|| format!("column {c} refers to column {e}"))?
                        .clone();
                    pos += 1;
                    cols.push(col);
                } else {
                    cols.push(read_values(v, &mut pos, n).map_err(|e| format!("column {c}: {e}"))?);
                }
            }
            if pos != v.len() {
                return Err(format!("{} bytes after the last column", v.len() - pos));
            }
            let shift = if res > 0 && starts.first() == Some(&first_start.div_euclid(res)) {
                first_start.rem_euclid(res)
            } else {
                0
            };
            Ok((0..n)
                .map(|j| {
                    let start = starts[j].wrapping_mul(res).wrapping_add(shift);
                    Bucket {
                        start,
                        count: cols[4][j] as u64,
                        sum: cols[5][j],
                        min: cols[2][j],
                        max: cols[3][j],
                        first: Point {
                            ts: start + cols[7][j] as i64,
                            value: cols[0][j],
                        },
                        last: Point {
                            ts: start + cols[8][j] as i64,
                            value: cols[1][j],
                        },
                        reset_add: cols[6][j],
                    }
                })
                .collect())
        }
        [V1, KIND_RAW, ..] => Err("the buckets are to be made from the day's raw points, \
             and a rollup chunk refers to them only while they are kept"
            .into()),
        [V1, k, ..] => Err(format!("unknown rollup chunk kind {k:#04x}")),
        _ => decode_buckets_v0(v),
    }
}

/// Decodes a rollup chunk of the first format: a varint bucket count, then nine columns,
/// each the batch codec's point coding ([`decode_points`]) of (bucket start, field),
/// length-prefixed (varint): count, sum, min XOR first value, max XOR last value (bitwise),
/// first value, last value, reset correction, first point's offset from the bucket start
/// (ms), last point's offset.
///
/// # Errors
/// The value is truncated or its columns disagree; says which.
fn decode_buckets_v0(mut v: &[u8]) -> Result<Vec<Bucket>, String> {
    let n = varint(&mut v).ok_or("bucket count truncated")? as usize;
    let mut cols: Vec<Vec<Point>> = Vec::with_capacity(9);
    for i in 0..9 {
        let len = varint(&mut v).ok_or_else(|| format!("column {i} length truncated"))? as usize;
        if len > v.len() {
            return Err(format!("column {i} truncated"));
        }
        let mut col = Vec::with_capacity(n);
        decode_points(&v[..len], &mut col).map_err(|e| format!("column {i}: {e}"))?;
        if col.len() != n {
            return Err(format!("column {i} holds {} buckets, not {n}", col.len()));
        }
        v = &v[len..];
        cols.push(col);
    }
    Ok((0..n)
        .map(|j| {
            let start = cols[0][j].ts;
            Bucket {
                start,
                count: cols[0][j].value as u64,
                sum: cols[1][j].value,
                min: f64::from_bits(cols[2][j].value.to_bits() ^ cols[4][j].value.to_bits()),
                max: f64::from_bits(cols[3][j].value.to_bits() ^ cols[5][j].value.to_bits()),
                first: Point {
                    ts: start + cols[7][j].value as i64,
                    value: cols[4][j].value,
                },
                last: Point {
                    ts: start + cols[8][j].value as i64,
                    value: cols[5][j].value,
                },
                reset_add: cols[6][j].value,
            }
        })
        .collect())
}

/// Reads a LEB128 varint off the front of `v`.
pub(crate) fn varint(v: &mut &[u8]) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = v.split_first()?;
        *v = rest;
        n |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(n);
        }
    }
    None
}

impl Storage {
    /// The rollup partitions of resolution byte `res` that hold chunks.
    pub(crate) fn rollup_parts(&self, res: u8) -> Vec<i32> {
        self.rollups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(usize::from(res))
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    fn has_rollup(&self, res: u8, p: i32) -> bool {
        self.rollups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(usize::from(res))
            .is_some_and(|s| s.contains(&p))
    }

    /// Whether day `p` has a finished rollup at resolution byte `res` on disk (its
    /// statistics are written last), whether or not queries read it: a day written since
    /// it was rolled up is read from its raw points until it is rolled up again.
    pub(crate) fn rollup_on_disk(&self, res: u8, p: i32) -> Result<bool, StorageError> {
        Ok(self
            .db
            .get(PartitionStats::key(res, p))
            .map_err(|e| self.err(e))?
            .is_some())
    }

    /// Days rolled up that points were just written to: queries make their buckets from
    /// the raw points (the late ones too) until the next maintenance pass rolls them up
    /// again, so no answer, nor a cached one, misses a point acknowledged.
    pub(crate) fn rollups_out_of_date(&self, days: &std::collections::BTreeSet<i32>) {
        let any = |sets: &Vec<std::collections::BTreeSet<i32>>| {
            sets.iter().any(|set| days.iter().any(|d| set.contains(d)))
        };
        // Most commits hold today's points only: a read lock tells.
        if !any(&self.rollups.read().unwrap_or_else(|p| p.into_inner())) {
            return;
        }
        let mut r = self.rollups.write().unwrap_or_else(|p| p.into_inner());
        for set in r.iter_mut() {
            for d in days {
                set.remove(d);
            }
        }
    }

    /// Whether day `p` has rollups at every resolution byte of `kept`.
    pub(crate) fn has_rollups(&self, p: i32, kept: &[u8]) -> bool {
        kept.iter().all(|&r| self.has_rollup(r, p))
    }

    /// Whether raw partition `p` needs rolling up at the resolution bytes `kept` (those
    /// whose retention still covers it): it was written since their rollups were made, or
    /// lacks one. A resolution past its retention for that day is not asked for, so it is
    /// not made again after its retention deleted it. Never when a rollup of the day is
    /// [`PartitionStats::SEALED`]: the raw partition holds only points written after the
    /// day's deletion.
    pub(crate) fn needs_rollup(&self, p: i32, kept: &[u8]) -> Result<bool, StorageError> {
        let raw = self.partition_stats(RAW, p)?;
        for (res, _, _) in ROLLUPS {
            if self.has_rollup(res, p)
                && self.partition_stats(res, p)?.writes == PartitionStats::SEALED
            {
                return Ok(false);
            }
        }
        for &res in kept {
            if !self.has_rollup(res, p) || self.partition_stats(res, p)?.writes != raw.writes {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Makes the buckets at the resolution bytes `kept` (of [`ROLLUPS`]) of every series in
    /// raw partition `p` from its chunks, replacing what rollups of that day at those
    /// resolutions held (see the module docs for crash safety). With `beside_raw` (the raw
    /// day stays), a series whose rollup would be its points refers to them instead.
    /// Returns the raw samples read.
    ///
    /// # Errors
    /// RocksDB fails, or a chunk does not decode (named).
    pub fn rollup_partition(
        &self,
        p: i32,
        kept: &[u8],
        beside_raw: bool,
    ) -> Result<u64, StorageError> {
        let kept: Vec<(u8, i64, &str)> = ROLLUPS
            .into_iter()
            .filter(|r| kept.contains(&r.0))
            .collect();
        let _maint = self.maint.lock().unwrap_or_else(|e| e.into_inner());
        let raw = self.partition_stats(RAW, p)?;
        let cf = self.cf(CF_PARTS)?;
        // Until the day is done, queries make its buckets from raw points; its old rollups
        // go in one range delete per resolution (with the statistics that mark it done),
        // so a crash leaves it not done rather than half old, half new.
        {
            let mut r = self.rollups.write().unwrap_or_else(|e| e.into_inner());
            for &(res, _, _) in &kept {
                if let Some(s) = r.get_mut(usize::from(res)) {
                    s.remove(&p);
                }
            }
        }
        let mut wb = WriteBatch::default();
        for &(res, _, _) in &kept {
            wb.delete_range_cf(
                cf,
                partition::prefix(res, p),
                partition::prefix(res, p.saturating_add(1)),
            );
            wb.delete(PartitionStats::key(res, p));
        }
        self.db
            .write(std::mem::take(&mut wb))
            .map_err(|e| self.err(e))?;
        let mut stats = vec![PartitionStats::default(); kept.len()];
        let mut read = 0u64;
        self.each_series_chunks(p, |series, group| {
            let (pts, decoded) = self.newest_points(p, series, group)?;
            read += decoded;
            for (i, &(res, len, _)) in kept.iter().enumerate() {
                let b = buckets_of(&pts, len);
                if let (Some(a), Some(z)) = (b.first(), b.last()) {
                    wb.put_cf(
                        cf,
                        partition::chunk_key(res, series, a.start, z.start, 0),
                        if beside_raw {
                            encode_rollup_beside_raw(&pts, &b)
                        } else {
                            encode_rollup(&pts, &b)
                        },
                    );
                    stats[i].samples += b.len() as u64;
                    stats[i].chunks += 1;
                }
            }
            if wb.size_in_bytes() > 4 << 20 {
                self.db
                    .write(std::mem::take(&mut wb))
                    .map_err(|e| self.err(e))?;
            }
            Ok(())
        })?;
        for (i, &(res, _, _)) in kept.iter().enumerate() {
            let st = PartitionStats {
                merged_chunks: stats[i].chunks,
                writes: raw.writes,
                ..stats[i]
            };
            wb.put(PartitionStats::key(res, p), st.to_bytes());
        }
        self.db.write_opt(wb, &self.sync).map_err(|e| self.err(e))?;
        {
            let mut r = self.rollups.write().unwrap_or_else(|e| e.into_inner());
            for &(res, _, _) in &kept {
                if let Some(s) = r.get_mut(usize::from(res)) {
                    s.insert(p);
                }
            }
        }
        Ok(read)
    }

    /// The buckets of series `id`'s rollup chunks of `day` at resolution byte `res`, read
    /// afresh; `None` when a chunk still refers to the raw points.
    ///
    /// # Errors
    /// RocksDB fails, or a chunk does not decode.
    fn series_rollup(
        &self,
        res: u8,
        day: i32,
        id: SeriesId,
    ) -> Result<Option<Vec<Bucket>>, ReadError> {
        let cf = self.cf(CF_PARTS).map_err(|e| ReadError(e.to_string()))?;
        let mut it = self.db.raw_iterator_cf(cf);
        let prefix = partition::series_prefix(res, day, id);
        it.seek(prefix);
        let mut out = vec![];
        while let (true, Some(k), Some(v)) = (it.valid(), it.key(), it.value()) {
            if !k.starts_with(&prefix) {
                break;
            }
            if raw_ref(v).is_some() {
                return Ok(None);
            }
            let first = partition::parse(k).map_or(0, |c| c.min_ts);
            out.extend(
                decode_rollup(v, res_ms(res), first)
                    .map_err(|e| ReadError(format!("rollup of series {id}: {e}")))?,
            );
            it.next();
        }
        it.status().map_err(|e| ReadError(e.to_string()))?;
        Ok(Some(out))
    }

    /// The points of series `series` in raw partition `p`, one per timestamp (the newest
    /// write wins), oldest first; empty when it has none there.
    ///
    /// # Errors
    /// RocksDB fails, or a chunk does not decode (named).
    pub(crate) fn raw_points_of(
        &self,
        p: i32,
        series: SeriesId,
    ) -> Result<Vec<Point>, StorageError> {
        let prefix = partition::series_prefix(RAW, p, series);
        let mut it = self.db.raw_iterator_cf(self.cf(CF_PARTS)?);
        it.seek(prefix);
        let mut group = vec![];
        while let (true, Some(k), Some(v)) = (it.valid(), it.key(), it.value()) {
            if !k.starts_with(&prefix) {
                break;
            }
            let record = partition::parse(k).map_or(0, |c| c.record);
            group.push((record, k.to_vec(), v.to_vec()));
            it.next();
        }
        it.status().map_err(|e| self.err(e))?;
        Ok(self.newest_points(p, series, &mut group)?.0)
    }

    /// Replaces every rollup chunk of day `p` that refers to its raw points (kind `0x03`)
    /// with one made from them, so the raw day can go. Called before the raw day is
    /// deleted, with the maintenance lock held. Written in synced writes of a few MiB, each
    /// carrying the rollup statistics it changes (bucket counts move when late points
    /// changed the day since it was rolled up); each replacement stands on its own while
    /// the raw day is there, so a crash leaves some chunks replaced, the others still
    /// referring to the raw day, and the next deletion attempt replaces the rest. A
    /// series whose raw chunks do not decode loses its reference (logged): damage must not
    /// keep the day, and with it the retention and size cap, from going. Returns the
    /// chunks replaced.
    ///
    /// # Errors
    /// RocksDB fails; what was written before stays.
    pub(crate) fn keep_rollups_of_raw_day(&self, p: i32) -> Result<u64, StorageError> {
        let cf = self.cf(CF_PARTS)?;
        let mut replaced = 0u64;
        for (res, len, name) in ROLLUPS {
            let prefix = partition::prefix(res, p);
            let mut refs = vec![];
            let mut it = self.db.raw_iterator_cf(cf);
            it.seek(prefix);
            while let (true, Some(k), Some(v)) = (it.valid(), it.key(), it.value()) {
                if !k.starts_with(&prefix) {
                    break;
                }
                if let (Some(n), Some(c)) = (raw_ref(v), partition::parse(k)) {
                    refs.push((k.to_vec(), c.series, n));
                }
                it.next();
            }
            it.status().map_err(|e| self.err(e))?;
            let counted = self.rollup_on_disk(res, p)?;
            let mut wb = WriteBatch::default();
            // Buckets and chunks before and after, since the last write.
            let (mut before, mut after, mut dropped) = (0u64, 0u64, 0u64);
            let last = refs.len();
            for (j, (key, series, n)) in refs.into_iter().enumerate() {
                let pts = match self.raw_points_of(p, series) {
                    Ok(pts) => pts,
                    Err(StorageError::Damaged { what, .. }) => {
                        tracing::warn!(
                            resolution = name,
                            partition_start_ms = partition::partition_span(p).0,
                            series,
                            damaged = what,
                            "a rollup that referred to damaged raw points is dropped with them"
                        );
                        vec![]
                    }
                    Err(e) => return Err(e),
                };
                let b = buckets_of(&pts, len);
                wb.delete_cf(cf, key);
                if let (Some(a), Some(z)) = (b.first(), b.last()) {
                    wb.put_cf(
                        cf,
                        partition::chunk_key(res, series, a.start, z.start, 0),
                        encode_rollup(&pts, &b),
                    );
                } else {
                    dropped += 1;
                }
                before += n;
                after += b.len() as u64;
                replaced += 1;
                if j + 1 == last || wb.size_in_bytes() > 4 << 20 {
                    if counted && (before != after || dropped > 0) {
                        let mut st = self.partition_stats(res, p)?;
                        st.samples = (st.samples + after).saturating_sub(before);
                        st.chunks = st.chunks.saturating_sub(dropped);
                        st.merged_chunks = st.merged_chunks.saturating_sub(dropped);
                        wb.put(PartitionStats::key(res, p), st.to_bytes());
                    }
                    self.db
                        .write_opt(std::mem::take(&mut wb), &self.sync)
                        .map_err(|e| self.err(e))?;
                    (before, after, dropped) = (0, 0, 0);
                }
            }
        }
        Ok(replaced)
    }

    /// The buckets of length `res_ms(res)` starting in `[from, to]` (a span of day `day`)
    /// of the series `ids`, whose rollup chunks of that day referred to its raw points when
    /// a walk over them read them: made from those points; or, when the day was deleted
    /// since (its rollup chunks were made from its points in the write before), read from
    /// those chunks again. A day deleted is told by its absence from the raw partitions
    /// (reads before the oldest kept then show rollups' last points) or, before that is
    /// noted, by no raw point up to `to`. `None` when `stop` (called with the points read)
    /// ends the read.
    ///
    /// # Errors
    /// RocksDB fails, or a chunk does not decode.
    fn buckets_via_raw(
        &self,
        res: u8,
        day: i32,
        ids: &[SeriesId],
        from: i64,
        to: i64,
        stop: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Option<Vec<Vec<Bucket>>>, ReadError> {
        let len = res_ms(res);
        let Some(pts) = self.points_many(ids, from, to.saturating_add(len - 1), stop)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(ids.len());
        for (&id, p) in ids.iter().zip(&pts) {
            let gone = || {
                !self
                    .parts
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&day)
            };
            let again = if p.iter().all(|x| x.ts > to) || gone() {
                self.series_rollup(res, day, id)?
            } else {
                None
            };
            let b = again.unwrap_or_else(|| buckets_of(p, len));
            out.push(
                b.into_iter()
                    .filter(|b| b.start >= from && b.start <= to)
                    .collect(),
            );
        }
        Ok(Some(out))
    }

    /// Calls `f` with the buckets of every rollup chunk of series `id` on `day` at
    /// resolution byte `res`, read through `it`.
    ///
    /// # Errors
    /// RocksDB fails, or a chunk does not decode.
    fn each_rollup_chunk(
        it: &mut crate::chunks::ChunkCursor<'_>,
        res: u8,
        day: i32,
        id: SeriesId,
        mut f: impl FnMut(Vec<Bucket>),
    ) -> Result<(), ReadError> {
        let prefix = partition::series_prefix(res, day, id);
        it.seek(prefix);
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if !k.starts_with(&prefix) {
                break;
            }
            let first = partition::parse(k).map_or(0, |c| c.min_ts);
            f(decode_rollup(v, res_ms(res), first)
                .map_err(|e| ReadError(format!("rollup of series {id}: {e}")))?);
            it.next();
        }
        it.status().map_err(|e| ReadError(e.to_string()))
    }

    /// The buckets of length `res_ms` of series `id` starting in `[start_ms, end_ms]`,
    /// oldest first: from rollup chunks for days rolled up, made from raw points for the
    /// others. A length that is not a rollup resolution: made from raw points.
    ///
    /// # Errors
    /// RocksDB fails, or a chunk does not decode.
    pub(crate) fn series_buckets(
        &self,
        id: SeriesId,
        start_ms: i64,
        end_ms: i64,
        res_ms: i64,
    ) -> Result<Vec<Bucket>, ReadError> {
        Ok(self
            .buckets_many(&[id], start_ms, end_ms, res_ms, &mut |_| false)?
            .and_then(|mut all| all.pop())
            .unwrap_or_default())
    }

    /// [`Storage::series_buckets`] of every series in `ids`: `Some(out)` with `out[i]` the
    /// buckets of `ids[i]`, rolled-up days read in one walk over each day's keys, the
    /// others made from [`Storage::points_many`]. `stop` is called with the buckets read so
    /// far after each day; when it returns true the read ends with `Ok(None)`.
    ///
    /// # Errors
    /// RocksDB fails, or a chunk does not decode.
    pub(crate) fn buckets_many(
        &self,
        ids: &[SeriesId],
        start_ms: i64,
        end_ms: i64,
        res_ms: i64,
        stop: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Option<Vec<Vec<Bucket>>>, ReadError> {
        let mut out: Vec<Vec<Bucket>> = vec![Vec::new(); ids.len()];
        if start_ms > end_ms || res_ms <= 0 {
            return Ok(Some(out));
        }
        let Some(res) = res_byte(res_ms) else {
            let pts = self.points_many(ids, start_ms, end_ms.saturating_add(res_ms - 1), stop)?;
            return Ok(pts.map(|all| all.iter().map(|p| buckets_of(p, res_ms)).collect()));
        };
        let rolled = self.rolled_days(res, start_ms, end_ms);
        let (wanted, repeats) = crate::db::wanted_order(ids);
        let mut it: Option<crate::chunks::ChunkCursor<'_>> = None;
        let mut read = 0usize;
        let mut day = partition::partition_of(start_ms);
        let last = partition::partition_of(end_ms);
        while day <= last {
            let (d0, d1) = partition::partition_span(day);
            let (from, to) = (start_ms.max(d0), end_ms.min(d1));
            if rolled.contains(&day) {
                let it =
                    match &mut it {
                        Some(it) => it,
                        None => it.insert(self.db.raw_iterator_cf(
                            self.cf(CF_PARTS).map_err(|e| ReadError(e.to_string()))?,
                        )),
                    };
                // Series whose chunk refers to the day's raw points: made from those.
                let mut from_raw: Vec<usize> = vec![];
                crate::chunks::each_chunk_of_many(
                    it,
                    res,
                    day,
                    &wanted,
                    i64::MIN,
                    i64::MAX,
                    |i, c, v| {
                        if raw_ref(v).is_some() {
                            from_raw.push(i);
                            return Ok(());
                        }
                        let b = decode_rollup(v, res_ms, c.min_ts).map_err(|e| {
                            ReadError(format!("rollup of series {}: {e}", c.series))
                        })?;
                        let before = out[i].len();
                        out[i].extend(b.into_iter().filter(|b| b.start >= from && b.start <= to));
                        read += out[i].len() - before;
                        Ok(())
                    },
                )?;
                if !from_raw.is_empty() {
                    let raw_ids: Vec<SeriesId> = from_raw.iter().map(|&i| ids[i]).collect();
                    let Some(got) =
                        self.buckets_via_raw(res, day, &raw_ids, from, to, &mut |n| {
                            stop(read.saturating_add(n))
                        })?
                    else {
                        return Ok(None);
                    };
                    for (&i, b) in from_raw.iter().zip(got) {
                        read += b.len();
                        out[i].extend(b);
                    }
                }
                day += 1;
            } else {
                let mut end_day = day;
                while end_day < last && !rolled.contains(&(end_day + 1)) {
                    end_day += 1;
                }
                let run_end = end_ms.min(partition::partition_span(end_day).1);
                let Some(pts) =
                    self.points_many(ids, from, run_end.saturating_add(res_ms - 1), &mut |n| {
                        stop(read.saturating_add(n))
                    })?
                else {
                    return Ok(None);
                };
                for (o, p) in out.iter_mut().zip(&pts) {
                    let before = o.len();
                    o.extend(
                        buckets_of(p, res_ms)
                            .into_iter()
                            .filter(|b| b.start <= run_end),
                    );
                    read += o.len() - before;
                }
                day = end_day + 1;
            }
            if stop(read) {
                return Ok(None);
            }
        }
        for (from, to) in repeats {
            out[to] = out[from].clone();
        }
        Ok(Some(out))
    }

    /// Raw points per bucket of resolution `res_ms`, from the statistics of the days in
    /// `[start_ms, end_ms]` that are rolled up and still have raw points: their raw
    /// samples over their buckets. `None` when no such day exists or a statistic cannot
    /// be read (the engine then reads buckets, as it would without this).
    pub(crate) fn points_per_bucket(&self, start_ms: i64, end_ms: i64, res_ms: i64) -> Option<f64> {
        let res = res_byte(res_ms)?;
        let (mut points, mut buckets) = (0u64, 0u64);
        for day in self.rolled_days(res, start_ms, end_ms) {
            let raw = self.partition_stats(RAW, day).ok()?.samples;
            let rolled = self.partition_stats(res, day).ok()?.samples;
            if raw > 0 && rolled > 0 {
                points += raw;
                buckets += rolled;
            }
        }
        (buckets > 0).then(|| points as f64 / buckets as f64)
    }

    /// The days in `[start_ms, end_ms]` rolled up at resolution byte `res`.
    fn rolled_days(&self, res: u8, start_ms: i64, end_ms: i64) -> std::collections::BTreeSet<i32> {
        self.rollups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(usize::from(res))
            .map(|s| {
                s.range(partition::partition_of(start_ms)..=partition::partition_of(end_ms))
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The points rollups show for `[start_ms, end_ms]` (a span before the oldest raw
    /// partition): each 5-minute bucket's last point, or each 1-hour bucket's for days
    /// without 5-minute buckets.
    ///
    /// # Errors
    /// RocksDB fails, or a chunk does not decode.
    pub(crate) fn rollup_points(
        &self,
        id: SeriesId,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Point>, ReadError> {
        let mut out = vec![];
        if start_ms > end_ms {
            return Ok(out);
        }
        let fine: Vec<i32> = self.rollup_parts(R5M);
        let coarse: Vec<i32> = self.rollup_parts(R1H);
        let (p0, p1) = (
            partition::partition_of(start_ms),
            partition::partition_of(end_ms),
        );
        let mut days: Vec<(i32, u8)> = coarse
            .iter()
            .filter(|&&d| d >= p0 && d <= p1 && fine.binary_search(&d).is_err())
            .map(|&d| (d, R1H))
            .collect();
        days.extend(
            fine.iter()
                .filter(|&&d| d >= p0 && d <= p1)
                .map(|&d| (d, R5M)),
        );
        days.sort_unstable();
        if days.is_empty() {
            return Ok(out);
        }
        let cf = self.cf(CF_PARTS).map_err(|e| ReadError(e.to_string()))?;
        let mut it = self.db.raw_iterator_cf(cf);
        for (day, res) in days {
            Self::each_rollup_chunk(&mut it, res, day, id, |b| {
                out.extend(
                    b.iter()
                        .map(|b| b.last)
                        .filter(|p| p.ts >= start_ms && p.ts <= end_ms),
                );
            })?;
        }
        Ok(out)
    }

    /// The first ms of the oldest day rolled up at any resolution; `None` when none is.
    pub(crate) fn rollup_start_ms(&self) -> Option<i64> {
        self.rollup_starts_ms().into_iter().flatten().min()
    }

    /// Per resolution of [`ROLLUPS`], in order: the first ms of the oldest day rolled up
    /// at it; `None` when none is.
    pub(crate) fn rollup_starts_ms(&self) -> Vec<Option<i64>> {
        let rollups = self.rollups.read().unwrap_or_else(|p| p.into_inner());
        ROLLUPS
            .iter()
            .map(|r| {
                rollups
                    .get(usize::from(r.0))
                    .and_then(|days| days.first())
                    .map(|&d| partition::partition_span(d).0)
            })
            .collect()
    }

    /// The first ms of raw data kept: the oldest raw partition's start, or the head's
    /// oldest point when no partition holds chunks; `None` when there is no raw point.
    pub(crate) fn raw_start_ms(&self) -> Option<i64> {
        let part = self.oldest_partition_start();
        let head = self.head_time_range().map(|r| r.0);
        match (part, head) {
            (Some(a), Some(b)) => Some(a.min(b - b.rem_euclid(PARTITION_MS))),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first format's encoder, to show its chunks still decode.
    fn encode_buckets_v0(b: &[Bucket]) -> Vec<u8> {
        let mut out = vec![];
        crate::chunk_codec::put_uvarint(&mut out, b.len() as u64);
        let fields: [fn(&Bucket) -> f64; 9] = [
            |b| b.count as f64,
            |b| b.sum,
            |b| f64::from_bits(b.min.to_bits() ^ b.first.value.to_bits()),
            |b| f64::from_bits(b.max.to_bits() ^ b.last.value.to_bits()),
            |b| b.first.value,
            |b| b.last.value,
            |b| b.reset_add,
            |b| (b.first.ts - b.start) as f64,
            |b| (b.last.ts - b.start) as f64,
        ];
        for f in fields {
            let col: Vec<Point> = b
                .iter()
                .map(|x| Point {
                    ts: x.start,
                    value: f(x),
                })
                .collect();
            let enc = outpost_shared::codec::encode_points(&col);
            crate::chunk_codec::put_uvarint(&mut out, enc.len() as u64);
            out.extend_from_slice(&enc);
        }
        out
    }

    #[test]
    fn rollup_chunks_round_trip_in_their_shorter_form_and_older_chunks_decode() {
        // A day of a steady counter at 10 s with a reset: bucket columns, a few bytes each.
        let pts: Vec<Point> = (0..8640)
            .map(|i| Point {
                ts: 86_400_000 * 20_000 + i * 10_000 + (i % 3),
                value: if i == 4000 { 1.0 } else { (i * 7) as f64 },
            })
            .collect();
        let b = buckets_of(&pts, RES_5M_MS);
        assert_eq!(b.len(), 288);
        let enc = encode_rollup(&pts, &b);
        let enc5m = enc.clone();
        assert_eq!(&enc[..2], &[V1, KIND_BUCKETS]);
        assert_eq!(decode_rollup(&enc, RES_5M_MS, b[0].start).unwrap(), b);
        assert!(enc.len() < 288 * 8, "{} bytes for 288 buckets", enc.len());
        assert!(decode_rollup(&enc[..enc.len() - 3], RES_5M_MS, b[0].start).is_err());
        // Older chunks still decode, and were larger.
        let old = encode_buckets_v0(&b);
        assert_eq!(decode_rollup(&old, RES_5M_MS, b[0].start).unwrap(), b);
        assert!(enc.len() < old.len(), "{} against {}", enc.len(), old.len());
        // A noisy gauge with NaN and a stale marker: XORed columns, exact bits back.
        let g: Vec<Point> = (0..2000)
            .map(|i| Point {
                ts: i * 15_000,
                value: match i {
                    100 => f64::NAN,
                    200 => f64::from_bits(outpost_shared::model::STALE_NAN),
                    _ => ((i * 2654435761u64 as i64) % 1000) as f64 / 7.0,
                },
            })
            .collect();
        let gb = buckets_of(&g, RES_1H_MS);
        let back = decode_rollup(&encode_rollup(&g, &gb), RES_1H_MS, gb[0].start).unwrap();
        assert_eq!(back.len(), gb.len());
        for (x, y) in back.iter().zip(&gb) {
            assert_eq!(
                (x.start, x.count, x.first.ts, x.last.ts),
                (y.start, y.count, y.first.ts, y.last.ts)
            );
            for (u, v) in [(x.sum, y.sum), (x.min, y.min), (x.max, y.max)] {
                assert_eq!(u.to_bits(), v.to_bits());
            }
        }
        // One point an hour: the points are kept, and cost less than the columns would.
        let hourly: Vec<Point> = (0..24)
            .map(|i| Point {
                ts: 86_400_000 * 20_000 + i * 3_600_000 + 1234,
                value: (i * i) as f64 / 4.0,
            })
            .collect();
        let hb = buckets_of(&hourly, RES_1H_MS);
        let enc = encode_rollup(&hourly, &hb);
        assert_eq!(&enc[..2], &[V1, KIND_POINTS]);
        assert!(enc.len() < encode_buckets(&hb).len());
        assert_eq!(decode_rollup(&enc, RES_1H_MS, hb[0].start).unwrap(), hb);
        assert_eq!(
            decode_rollup(&enc, RES_5M_MS, hb[0].start).unwrap(),
            buckets_of(&hourly, RES_5M_MS)
        );
        // Beside a kept raw day such a chunk only refers to the raw points; columns stay.
        let beside = encode_rollup_beside_raw(&hourly, &hb);
        assert_eq!(beside, vec![V1, KIND_RAW, 24]);
        assert_eq!(raw_ref(&beside), Some(24));
        assert!(
            decode_rollup(&beside, RES_1H_MS, hb[0].start)
                .unwrap_err()
                .contains("raw points")
        );
        assert_eq!(encode_rollup_beside_raw(&pts, &b), enc5m);
        assert_eq!(raw_ref(&enc5m), None);
        assert_eq!(raw_ref(&[V1, KIND_RAW, 24, 0]), None);
        // Damage is named.
        assert!(
            decode_rollup(&[V1, 9, 1], RES_1H_MS, 0)
                .unwrap_err()
                .contains("kind")
        );
        assert!(decode_rollup(&enc[..enc.len() - 1], RES_1H_MS, hb[0].start).is_err());
    }

    /// Buckets further apart than their length, at starts that are not multiples of the
    /// distance (an hour's burst at 02:00 and 09:00), come back where they were; chunks
    /// written when the spacing only had to divide the distances (every start rounded down
    /// to a multiple of 7 h: read back 2 h early, `--verify` naming them) are read back in
    /// place from their key's first start.
    #[test]
    fn sparse_buckets_keep_their_starts() {
        let day = 86_400_000 * 20_000;
        let pts: Vec<Point> = [2, 9]
            .iter()
            .flat_map(|h| {
                (0..30).map(move |i| Point {
                    ts: day + h * 3_600_000 + i * 60_000,
                    value: (i * 3 + h) as f64,
                })
            })
            .collect();
        let b = buckets_of(&pts, RES_1H_MS);
        assert_eq!(b.len(), 2);
        let enc = encode_rollup(&pts, &b);
        assert_eq!(&enc[..2], &[V1, KIND_BUCKETS]);
        assert_eq!(decode_rollup(&enc, RES_1H_MS, b[0].start).unwrap(), b);
        assert_eq!(
            decode_rollup(&enc, RES_1H_MS, 0).unwrap(),
            b,
            "without the key"
        );
        let seven = 7 * 3_600_000;
        assert_ne!(b[0].start % seven, 0);
        let old = encode_buckets_spaced(&b, seven);
        assert_eq!(decode_rollup(&old, RES_1H_MS, b[0].start).unwrap(), b);
        // A key that disagrees otherwise is left to `verify` to name.
        let other = decode_rollup(&old, RES_1H_MS, b[0].start + seven).unwrap();
        assert_ne!(other[0].start, b[0].start + seven);
        // Through the store: rolled up, read back and verified.
        let dir = tmp_dir("rollup-sparse-buckets");
        let s = Storage::open(&dir).unwrap();
        let pts: Vec<(i64, f64)> = [2, 9]
            .iter()
            .flat_map(|h| (0..30).map(move |i| (100 * DAY + h * 3_600_000 + i * 60_000, i as f64)))
            .collect();
        write_points(&s, "burst", &pts);
        s.compact_head().unwrap();
        s.maintain(101 * DAY + 3_600_000, &RetentionPolicy::default())
            .unwrap();
        let id = s.series_id(&Labels::metric("burst", [])).unwrap();
        let raw: Vec<Point> = pts.iter().map(|&(ts, value)| Point { ts, value }).collect();
        for res in [RES_5M_MS, RES_1H_MS] {
            assert_eq!(
                s.series_buckets(id, 100 * DAY, 101 * DAY - 1, res).unwrap(),
                buckets_of(&raw, res)
            );
        }
        let problems = s.verify(|_| {}).unwrap().problems;
        assert!(problems.is_empty(), "{problems:?}");
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    use crate::RetentionPolicy;
    use crate::testutil::{tmp_dir, write_points};
    use outpost_promql::memory::MemStorage;
    use outpost_promql::{Steps, Value, parse, range_query};
    use outpost_shared::Labels;

    const DAY: i64 = PARTITION_MS;

    /// Ten days (from day 100) of a jittered 30 s counter with a reset a day and a noisy
    /// gauge, written an hour per record and compacted every 6 hours.
    fn data() -> Vec<(&'static str, Vec<(i64, f64)>)> {
        let (mut c, mut g) = (vec![], vec![]);
        let (mut x, mut v) = (7u64, 0.0);
        for i in 0..(10 * 2880) {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let ts = 100 * DAY
                + i * 30_000
                + if i % 5 == 0 {
                    0
                } else {
                    (x >> 40) as i64 % 2000
                };
            v += ((x >> 33) % 50) as f64;
            if i % 2880 == 1000 {
                v = 0.0;
            }
            c.push((ts, v));
            g.push((ts, ((x >> 20) % 10_000) as f64 / 3.0));
        }
        vec![("c_total", c), ("g", g)]
    }

    fn load(s: &Storage) {
        for (name, pts) in data() {
            for (i, hour) in pts.chunks(120).enumerate() {
                write_points(s, name, hour);
                if i % 6 == 5 {
                    s.compact_head().unwrap();
                }
            }
        }
        s.compact_head().unwrap();
    }

    fn matrix(v: Value) -> Vec<(Labels, Vec<Point>)> {
        match v {
            Value::Matrix(m) => m.into_iter().map(|s| (s.labels, s.points)).collect(),
            other => panic!("not a matrix: {other:?}"),
        }
    }

    fn assert_same(got: &[(Labels, Vec<Point>)], want: &[(Labels, Vec<Point>)], q: &str) {
        assert_eq!(got.len(), want.len(), "{q}");
        for ((gl, gp), (wl, wp)) in got.iter().zip(want) {
            assert_eq!(gl, wl, "{q}");
            assert_eq!(gp.len(), wp.len(), "{q}");
            for (a, b) in gp.iter().zip(wp) {
                assert_eq!(a.ts, b.ts, "{q}");
                let tol = 1e-9 * a.value.abs().max(b.value.abs());
                assert!(
                    (a.value - b.value).abs() <= tol,
                    "{q} at {}: {} vs {}",
                    a.ts,
                    a.value,
                    b.value
                );
            }
        }
    }

    const QUERIES: [&str; 8] = [
        "rate(c_total[1h])",
        "increase(c_total[3h])",
        "sum_over_time(g[1h])",
        "count_over_time(g[1h])",
        "avg_over_time(g[2h])",
        "min_over_time(g[1h])",
        "max_over_time(g[5m])",
        "last_over_time(g[1h])",
    ];

    /// Rollups made by maintenance answer as the raw points do, before and after the raw
    /// days are deleted; a late point updates them; making them again changes nothing.
    #[test]
    fn rollups_answer_as_the_raw_data_did_and_outlive_it() {
        let dir = tmp_dir("rollup");
        let s = Storage::open(&dir).unwrap();
        load(&s);
        let mut mem = MemStorage::default();
        for (name, pts) in data() {
            mem = mem.with(Labels::metric(name, []), &pts);
        }
        let now = 110 * DAY + 3_600_000;
        let keep_all = RetentionPolicy::default();
        let r = s.maintain(now, &keep_all).unwrap();
        assert_eq!(r.rolled_up_partitions, 10);
        assert_eq!(r.rollup_samples, 2 * 10 * 2880);
        assert!(!s.needs_rollup(105, &[R5M, R1H]).unwrap());
        assert!(s.verify(|_| {}).unwrap().problems.is_empty());
        // A point every 30 s: 120 in an hour's bucket, 10 in a 5-minute one; the rollups
        // start where the raw points do.
        assert_eq!(
            s.points_per_bucket(100 * DAY, 110 * DAY, RES_1H_MS),
            Some(120.0)
        );
        assert_eq!(
            s.points_per_bucket(100 * DAY, 110 * DAY, RES_5M_MS),
            Some(10.0)
        );
        assert_eq!(s.points_per_bucket(100 * DAY, 110 * DAY, 60_000), None);
        assert_eq!(s.rollup_start_ms(), Some(100 * DAY));
        assert_eq!(s.raw_start_ms(), Some(100 * DAY));
        let hourly = Steps::new(100 * DAY + 3 * 3_600_000, 110 * DAY, 3_600_000).unwrap();
        let five = Steps::new(100 * DAY + 3 * 3_600_000, 102 * DAY, 300_000).unwrap();
        let answers = |steps: &Steps| -> Vec<Vec<(Labels, Vec<Point>)>> {
            QUERIES
                .iter()
                .map(|q| matrix(range_query(&s, &parse(q).unwrap(), steps).unwrap()))
                .collect()
        };
        let raw_hourly: Vec<_> = QUERIES
            .iter()
            .map(|q| matrix(range_query(&mem, &parse(q).unwrap(), &hourly).unwrap()))
            .collect();
        let raw_five: Vec<_> = QUERIES
            .iter()
            .map(|q| matrix(range_query(&mem, &parse(q).unwrap(), &five).unwrap()))
            .collect();
        for (i, got) in answers(&hourly).iter().enumerate() {
            assert_same(got, &raw_hourly[i], QUERIES[i]);
        }
        // Idempotent: rolling a day up again writes the same bytes.
        let before =
            s.db.get_cf(
                s.cf(CF_PARTS).unwrap(),
                partition::chunk_key(R1H, 1, 103 * DAY, 103 * DAY + 23 * 3_600_000, 0),
            )
            .unwrap();
        s.rollup_partition(103, &[R5M, R1H], true).unwrap();
        let after =
            s.db.get_cf(
                s.cf(CF_PARTS).unwrap(),
                partition::chunk_key(R1H, 1, 103 * DAY, 103 * DAY + 23 * 3_600_000, 0),
            )
            .unwrap();
        assert!(before.is_some());
        assert_eq!(before, after);

        // Raw days past a 5-day retention go; rollups answer for them, at a 1 h step and
        // (the raw data being gone) at a 5 m step.
        let short = RetentionPolicy {
            retention_ms: Some(5 * DAY),
            ..RetentionPolicy::default()
        };
        let r = s.maintain(now, &short).unwrap();
        assert_eq!(
            r.deleted.iter().filter(|d| d.resolution == "raw").count(),
            5
        );
        assert_eq!(s.oldest_partition_start(), Some(105 * DAY));
        // Only the days with raw points left count; the rollups reach further back.
        assert_eq!(
            s.points_per_bucket(100 * DAY, 105 * DAY - 1, RES_1H_MS),
            None
        );
        assert_eq!(
            s.points_per_bucket(100 * DAY, 110 * DAY, RES_1H_MS),
            Some(120.0)
        );
        assert_eq!(s.rollup_start_ms(), Some(100 * DAY));
        drop(s);
        let s = Storage::open(&dir).unwrap();
        let answers = |steps: &Steps| -> Vec<Vec<(Labels, Vec<Point>)>> {
            QUERIES
                .iter()
                .map(|q| matrix(range_query(&s, &parse(q).unwrap(), steps).unwrap()))
                .collect()
        };
        for (i, got) in answers(&hourly).iter().enumerate() {
            assert_same(got, &raw_hourly[i], QUERIES[i]);
        }
        for (i, got) in answers(&five).iter().enumerate() {
            assert_same(got, &raw_five[i], QUERIES[i]);
        }
        // A plain selector over the deleted days shows each 5-minute bucket's last point.
        let id = s.series_id(&Labels::metric("g", [])).unwrap();
        let pts = s.points(id, 101 * DAY, 101 * DAY + 3_600_000 - 1).unwrap();
        assert_eq!(pts.len(), 12);
        // The metadata APIs find the series there too, and not before the data.
        assert!(s.has_points(id, 101 * DAY, 101 * DAY + 3_600_000).unwrap());
        assert!(!s.has_points(id, 90 * DAY, 99 * DAY).unwrap());

        // A late point in a rolled-up day that still has raw data updates its rollup.
        let count = |s: &Storage| {
            let q = parse("count_over_time(g[1h])").unwrap();
            let steps =
                Steps::new(107 * DAY + 3_600_000, 107 * DAY + 3_600_000, 3_600_000).unwrap();
            matrix(range_query(s, &q, &steps).unwrap())[0].1[0].value
        };
        // 120 points in the hour and one at its end (the window is closed at both ends).
        assert_eq!(count(&s), 121.0);
        write_points(&s, "g", &[(107 * DAY + 1_234, 5.0)]);
        s.compact_head().unwrap();
        assert!(s.needs_rollup(107, &[R5M, R1H]).unwrap());
        let r = s.maintain(now, &short).unwrap();
        assert_eq!(r.rolled_up_partitions, 1);
        assert_eq!(count(&s), 122.0);
        // And with the raw day gone, the rollup still holds it.
        let r = s
            .maintain(
                now,
                &RetentionPolicy {
                    retention_ms: Some(2 * DAY),
                    ..RetentionPolicy::default()
                },
            )
            .unwrap();
        assert!(r.deleted.iter().any(|d| d.start_ms == 107 * DAY));
        assert_eq!(count(&s), 122.0);
        assert!(s.verify(|_| {}).unwrap().problems.is_empty());

        // Rollups have their own retention.
        let r = s
            .maintain(
                now,
                &RetentionPolicy {
                    retention_5m_ms: Some(8 * DAY),
                    retention_1h_ms: Some(9 * DAY),
                    ..RetentionPolicy::default()
                },
            )
            .unwrap();
        let gone = |res: &str| r.deleted.iter().filter(|d| d.resolution == res).count();
        assert_eq!((gone("5m"), gone("1h")), (2, 1));
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A series sampled every 30 minutes (two points an hour): while its raw days are
    /// kept its rollup chunks only refer to them, a few bytes each; buckets read through
    /// them are those of the raw points, before and after the raw days go (the chunks are
    /// made from the points in the write before), and across a reopen.
    #[test]
    fn a_sparse_series_rollups_refer_to_its_raw_days_until_they_go() {
        let dir = tmp_dir("rollup-sparse");
        let s = Storage::open(&dir).unwrap();
        let pts: Vec<(i64, f64)> = (0..10 * 48)
            .map(|i| (100 * DAY + i * 1_800_000 + 7, ((i * 37) % 101) as f64 / 4.0))
            .collect();
        for day in pts.chunks(48) {
            write_points(&s, "sparse", day);
        }
        s.compact_head().unwrap();
        let now = 110 * DAY + 3_600_000;
        let r = s.maintain(now, &RetentionPolicy::default()).unwrap();
        assert_eq!(r.rolled_up_partitions, 10);
        let id = s.series_id(&Labels::metric("sparse", [])).unwrap();
        let all: Vec<Point> = pts.iter().map(|&(ts, value)| Point { ts, value }).collect();
        let chunk = |s: &Storage, res: u8, day: i64| {
            let b = buckets_of(&all, res_ms(res));
            let mine: Vec<&Bucket> = b
                .iter()
                .filter(|b| b.start >= day * DAY && b.start < (day + 1) * DAY)
                .collect();
            s.db.get_cf(
                s.cf(CF_PARTS).unwrap(),
                partition::chunk_key(res, id, mine[0].start, mine[mine.len() - 1].start, 0),
            )
            .unwrap()
            .expect("a rollup chunk")
        };
        assert_eq!(chunk(&s, R1H, 103), vec![V1, KIND_RAW, 24]);
        assert_eq!(chunk(&s, R5M, 103), vec![V1, KIND_RAW, 48]);
        let read = |s: &Storage| {
            for (res, len) in [(R5M, RES_5M_MS), (R1H, RES_1H_MS)] {
                let got = s.series_buckets(id, 100 * DAY, 110 * DAY - 1, len).unwrap();
                assert_eq!(got, buckets_of(&all, len), "{}", res_name(res));
                let many = s
                    .buckets_many(&[id, id], 101 * DAY + 1, 103 * DAY, len, &mut |_| false)
                    .unwrap()
                    .unwrap();
                let want: Vec<Bucket> = buckets_of(&all, len)
                    .into_iter()
                    .filter(|b| b.start > 101 * DAY && b.start <= 103 * DAY)
                    .collect();
                assert_eq!(many, vec![want.clone(), want], "{}", res_name(res));
            }
        };
        read(&s);
        assert!(s.verify(|_| {}).unwrap().problems.is_empty());
        // The raw days before day 105 go; their rollups now hold the points themselves.
        let r = s
            .maintain(
                now,
                &RetentionPolicy {
                    retention_ms: Some(5 * DAY),
                    ..RetentionPolicy::default()
                },
            )
            .unwrap();
        assert_eq!(
            r.deleted.iter().filter(|d| d.resolution == "raw").count(),
            5
        );
        assert_eq!(&chunk(&s, R1H, 103)[..2], &[V1, KIND_POINTS]);
        assert_eq!(chunk(&s, R1H, 107), vec![V1, KIND_RAW, 24]);
        read(&s);
        drop(s);
        let s = Storage::open(&dir).unwrap();
        read(&s);
        assert!(s.verify(|_| {}).unwrap().problems.is_empty());
        // A rollup chunk referring to a raw day that is gone is named by verify.
        s.db.put_cf(
            s.cf(CF_PARTS).unwrap(),
            partition::chunk_key(R1H, id, 102 * DAY, 102 * DAY + 23 * 3_600_000, 0),
            [V1, KIND_RAW, 24],
        )
        .unwrap();
        let problems = s.verify(|_| {}).unwrap().problems;
        assert!(
            problems
                .iter()
                .any(|p| p.contains("refers to raw points that are gone")),
            "{problems:?}"
        );
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A query reading sparse series' rollups while their raw day is deleted sees every
    /// bucket: a chunk that referred to raw points gone since the walk over the day's
    /// rollups is read again, made from them by then. (The walk's iterator, made before
    /// the deletion, still shows the chunk referring to the raw points; the deletion is
    /// made from the query's first progress call.)
    #[test]
    fn buckets_read_during_a_raw_day_deletion_are_all_there() {
        let dir = tmp_dir("rollup-race");
        let s = Storage::open(&dir).unwrap();
        let pts: Vec<(i64, f64)> = (0..3 * 48)
            .map(|i| (100 * DAY + i * 1_800_000, (i % 7) as f64))
            .collect();
        for name in ["a", "b"] {
            write_points(&s, name, &pts);
        }
        s.compact_head().unwrap();
        s.maintain(103 * DAY + 3_600_000, &RetentionPolicy::default())
            .unwrap();
        let ids: Vec<SeriesId> = ["a", "b"]
            .iter()
            .map(|n| s.series_id(&Labels::metric(n, [])).unwrap())
            .collect();
        let all: Vec<Point> = pts.iter().map(|&(ts, value)| Point { ts, value }).collect();
        let mut deleted = false;
        let got = s
            .buckets_many(&ids, 100 * DAY, 103 * DAY - 1, RES_1H_MS, &mut |_| {
                if !deleted {
                    deleted = true;
                    s.delete_partition(RAW, 101, crate::DeleteReason::Retention, false)
                        .unwrap();
                }
                false
            })
            .unwrap()
            .unwrap();
        assert!(deleted);
        assert_eq!(s.oldest_partition_start(), Some(100 * DAY));
        assert!(s.raw_points_of(101, ids[0]).unwrap().is_empty());
        let want = buckets_of(&all, RES_1H_MS);
        let starts = |b: &[Bucket]| b.iter().map(|b| b.start / 3_600_000).collect::<Vec<_>>();
        for g in &got {
            assert_eq!(starts(g), starts(&want));
            assert!(g == &want);
        }
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Buckets made for chunks a walk saw referring to raw points, once the day is deleted
    /// as the oldest kept (reads before it then show rollups' last points, not raw ones):
    /// the chunks made from the raw points before the deletion answer, for a series with
    /// two and a half points a 5-minute bucket as for one with a point every 30 minutes.
    #[test]
    fn buckets_via_raw_points_of_a_deleted_oldest_day_come_from_its_rollups() {
        let dir = tmp_dir("rollup-oldest");
        let s = Storage::open(&dir).unwrap();
        let series = [("every_30m", 1_800_000i64), ("every_2m", 120_000)];
        let mut all = vec![];
        for (name, every) in series {
            let pts: Vec<(i64, f64)> = (0..3 * DAY / every)
                .map(|i| (100 * DAY + i * every, (i % 7) as f64))
                .collect();
            write_points(&s, name, &pts);
            all.push(
                pts.iter()
                    .map(|&(ts, value)| Point { ts, value })
                    .collect::<Vec<_>>(),
            );
        }
        s.compact_head().unwrap();
        s.maintain(103 * DAY + 3_600_000, &RetentionPolicy::default())
            .unwrap();
        let ids: Vec<SeriesId> = series
            .iter()
            .map(|(n, _)| s.series_id(&Labels::metric(n, [])).unwrap())
            .collect();
        let want = |res_ms: i64| -> Vec<Vec<Bucket>> {
            all.iter()
                .map(|p| {
                    buckets_of(p, res_ms)
                        .into_iter()
                        .filter(|b| b.start < 101 * DAY)
                        .collect()
                })
                .collect()
        };
        let span = (100 * DAY, 101 * DAY - 1);
        let via = |s: &Storage, res| {
            s.buckets_via_raw(res, 100, &ids, span.0, span.1, &mut |_| false)
                .unwrap()
                .unwrap()
        };
        assert_eq!(via(&s, R5M), want(RES_5M_MS));
        s.delete_partition(RAW, 100, crate::DeleteReason::Retention, false)
            .unwrap();
        assert_eq!(s.oldest_partition_start(), Some(101 * DAY));
        assert_eq!(via(&s, R5M), want(RES_5M_MS));
        assert_eq!(via(&s, R1H), want(RES_1H_MS));
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A late point in a sparse series' day rolled up beside its raw points: verify finds
    /// no problem before the next pass makes the rollup again, and a deletion of the raw
    /// day first makes the rollup from the points as they are, statistics included.
    #[test]
    fn a_late_point_in_a_referred_raw_day_reaches_its_rollup_and_statistics() {
        let dir = tmp_dir("rollup-late-ref");
        let s = Storage::open(&dir).unwrap();
        let mut pts: Vec<(i64, f64)> = (0..3 * 48)
            .map(|i| (100 * DAY + i * 1_800_000, (i % 5) as f64))
            .collect();
        write_points(&s, "sparse", &pts);
        s.compact_head().unwrap();
        let now = 103 * DAY + 3_600_000;
        s.maintain(now, &RetentionPolicy::default()).unwrap();
        assert_eq!(s.partition_stats(R5M, 100).unwrap().samples, 48);
        // A point 15 minutes into the day: a 5-minute bucket of its own.
        write_points(&s, "sparse", &[(100 * DAY + 900_000, 9.0)]);
        s.compact_head().unwrap();
        let problems = s.verify(|_| {}).unwrap().problems;
        assert!(problems.is_empty(), "{problems:?}");
        s.delete_partition(RAW, 100, crate::DeleteReason::Retention, false)
            .unwrap();
        assert_eq!(s.partition_stats(R5M, 100).unwrap().samples, 49);
        let problems = s.verify(|_| {}).unwrap().problems;
        assert!(problems.is_empty(), "{problems:?}");
        pts.push((100 * DAY + 900_000, 9.0));
        pts.sort_by_key(|p| p.0);
        let all: Vec<Point> = pts.iter().map(|&(ts, value)| Point { ts, value }).collect();
        let id = s.series_id(&Labels::metric("sparse", [])).unwrap();
        let got = s
            .series_buckets(id, 100 * DAY, 101 * DAY - 1, RES_5M_MS)
            .unwrap();
        let want: Vec<Bucket> = buckets_of(&all, RES_5M_MS)
            .into_iter()
            .filter(|b| b.start < 101 * DAY)
            .collect();
        assert_eq!(got, want);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A raw day whose chunk of one sparse series is damaged still goes (else retention and
    /// the size cap would stop for good): that series' rollups referring to it go with it,
    /// the others are made from their points, and the statistics follow.
    #[test]
    fn a_damaged_raw_chunk_does_not_keep_its_day_from_going() {
        let dir = tmp_dir("rollup-damaged-ref");
        let s = Storage::open(&dir).unwrap();
        let pts: Vec<(i64, f64)> = (0..2 * 48)
            .map(|i| (100 * DAY + i * 1_800_000, (i % 5) as f64))
            .collect();
        for name in ["good", "bad"] {
            write_points(&s, name, &pts);
        }
        s.compact_head().unwrap();
        s.maintain(102 * DAY + 3_600_000, &RetentionPolicy::default())
            .unwrap();
        let bad = s.series_id(&Labels::metric("bad", [])).unwrap();
        let cf = s.cf(CF_PARTS).unwrap();
        let mut it = s.db.raw_iterator_cf(cf);
        it.seek(partition::series_prefix(RAW, 100, bad));
        let key = it.key().unwrap().to_vec();
        drop(it);
        assert_eq!(partition::parse(&key).unwrap().series, bad);
        s.db.put_cf(cf, &key, [0xff, 0xff, 0xff]).unwrap();
        assert_eq!(s.partition_stats(R1H, 100).unwrap().chunks, 2);
        s.delete_partition(RAW, 100, crate::DeleteReason::Retention, false)
            .unwrap();
        let st = s.partition_stats(R1H, 100).unwrap();
        assert_eq!((st.chunks, st.merged_chunks, st.samples), (1, 1, 24));
        let problems = s.verify(|_| {}).unwrap().problems;
        assert!(problems.is_empty(), "{problems:?}");
        let good = s.series_id(&Labels::metric("good", [])).unwrap();
        let all: Vec<Point> = pts.iter().map(|&(ts, value)| Point { ts, value }).collect();
        assert_eq!(
            s.series_buckets(good, 100 * DAY, 101 * DAY - 1, RES_1H_MS)
                .unwrap(),
            buckets_of(&all[..48], RES_1H_MS)
        );
        assert!(
            s.series_buckets(bad, 100 * DAY, 101 * DAY - 1, RES_1H_MS)
                .unwrap()
                .is_empty()
        );
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A late point in a rolled-up day is in the day's buckets at once: queries make them
    /// from the raw points until the next pass rolls the day up again, across a restart
    /// too (a cached answer made before that pass would miss the point for good).
    #[test]
    fn a_late_point_is_in_its_days_buckets_before_the_next_pass() {
        let dir = tmp_dir("rollup-late-at-once");
        let s = Storage::open(&dir).unwrap();
        load(&s);
        let now = 110 * DAY + 3_600_000;
        s.maintain(now, &RetentionPolicy::default()).unwrap();
        assert!(s.has_rollups(105, &[R5M, R1H]));
        let id = s.series_id(&Labels::metric("g", [])).unwrap();
        let late = Point {
            ts: 105 * DAY + 7_200_000 + 1,
            value: 99_999.0,
        };
        let want = |s: &Storage, res: i64| {
            let raw = s.points(id, 105 * DAY, 106 * DAY - 1).unwrap();
            assert!(raw.contains(&late));
            buckets_of(&raw, res)
        };
        let got =
            |s: &Storage, res: i64| s.series_buckets(id, 105 * DAY, 106 * DAY - 1, res).unwrap();
        write_points(&s, "g", &[(late.ts, late.value)]);
        for res in [RES_5M_MS, RES_1H_MS] {
            assert_eq!(got(&s, res), want(&s, res), "in the head");
        }
        drop(s);
        let s = Storage::open(&dir).unwrap();
        for res in [RES_5M_MS, RES_1H_MS] {
            assert_eq!(got(&s, res), want(&s, res), "replayed from the wal");
        }
        s.compact_head().unwrap();
        drop(s);
        let s = Storage::open(&dir).unwrap();
        assert!(!s.has_rollups(105, &[R5M]), "written since its rollup");
        for res in [RES_5M_MS, RES_1H_MS] {
            assert_eq!(got(&s, res), want(&s, res), "compacted");
        }
        let r = s.maintain(now, &RetentionPolicy::default()).unwrap();
        assert_eq!(r.rolled_up_partitions, 1);
        assert!(s.has_rollups(105, &[R5M, R1H]));
        for res in [RES_5M_MS, RES_1H_MS] {
            assert_eq!(got(&s, res), want(&s, res), "rolled up again");
        }
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A chunk that does not decode sets its day aside, named once, and the pass goes on
    /// to the other days and to the retention: it used to stop every pass there, so no day
    /// was deleted again and the disk filled.
    #[test]
    fn a_damaged_chunk_sets_its_day_aside_and_the_retention_goes_on() {
        let dir = tmp_dir("rollup-damaged-day");
        let s = Storage::open(&dir).unwrap();
        let pts: Vec<(i64, f64)> = (0..4 * 48)
            .map(|i| (100 * DAY + i * 1_800_000, (i % 5) as f64))
            .collect();
        for name in ["good", "bad"] {
            write_points(&s, name, &pts);
        }
        s.compact_head().unwrap();
        let bad = s.series_id(&Labels::metric("bad", [])).unwrap();
        let cf = s.cf(CF_PARTS).unwrap();
        for day in [100, 102] {
            let mut it = s.db.raw_iterator_cf(cf);
            it.seek(partition::series_prefix(RAW, day, bad));
            let key = it.key().unwrap().to_vec();
            drop(it);
            assert_eq!(partition::parse(&key).unwrap().series, bad);
            s.db.put_cf(cf, &key, [0xff, 0xff, 0xff]).unwrap();
        }
        // Day 100 is past the retention and rolled up before it goes; days 101 and 102 are
        // merged and rolled up; day 103 is still open.
        let policy = RetentionPolicy {
            retention_ms: Some(2 * DAY),
            ..RetentionPolicy::default()
        };
        let now = 103 * DAY + 3_600_000;
        let r = s.maintain(now, &policy).unwrap();
        assert_eq!(r.damaged.len(), 2, "{:?}", r.damaged);
        assert!(
            r.damaged
                .iter()
                .all(|d| d.contains(&format!("series {bad} in partition"))),
            "{:?}",
            r.damaged
        );
        let raw_gone: Vec<i64> = r
            .deleted
            .iter()
            .filter(|d| d.resolution == "raw")
            .map(|d| d.start_ms / DAY)
            .collect();
        assert_eq!(raw_gone, [100]);
        assert_eq!((r.merged_partitions, r.rolled_up_partitions), (1, 1));
        assert_eq!(s.rollup_parts(R1H), vec![101]);
        // Named once: the next pass leaves day 102 alone, quietly.
        let again = s.maintain(now, &policy).unwrap();
        assert!(again.damaged.is_empty(), "{:?}", again.damaged);
        assert_eq!(again.merged_partitions + again.rolled_up_partitions, 0);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Points written for a day after the size cap deleted its raw partition stay raw: the
    /// day's rollups, made from all it had, are not made again from them alone.
    #[test]
    fn late_points_for_a_deleted_raw_day_leave_its_rollups_whole() {
        let dir = tmp_dir("rollup-sealed");
        let s = Storage::open(&dir).unwrap();
        load(&s);
        let now = 110 * DAY + 3_600_000;
        s.maintain(now, &RetentionPolicy::default()).unwrap();
        let id = s.series_id(&Labels::metric("g", [])).unwrap();
        let day = |s: &Storage| {
            s.series_buckets(id, 100 * DAY, 101 * DAY - 1, RES_1H_MS)
                .unwrap()
        };
        let whole = day(&s);
        assert_eq!(whole.len(), 24);
        // One point for the day is in the head when the day goes; one comes after.
        write_points(&s, "g", &[(100 * DAY + 30_000, 12_345.0)]);
        s.delete_partition(RAW, 100, crate::DeleteReason::MaxBytes, true)
            .unwrap();
        assert_eq!(s.accepts_from_ms(), Some(101 * DAY));
        write_points(&s, "g", &[(100 * DAY + 60_000, 54_321.0), (101 * DAY, 3.0)]);
        assert_eq!(s.samples_too_old(), 1);
        s.compact_head().unwrap();
        assert_eq!(s.samples_too_old(), 2);
        assert!(!s.needs_rollup(100, &[R5M, R1H]).unwrap());
        let r = s.maintain(now, &RetentionPolicy::default()).unwrap();
        // Day 101, for its late point; not day 100.
        assert_eq!(r.rolled_up_partitions, 1);
        assert_eq!(day(&s), whole);
        // Neither point made the day a raw one again, which would have hidden the rollups
        // of the days between it and the oldest raw day from queries.
        assert_eq!(s.oldest_partition_start(), Some(101 * DAY));
        assert!(
            s.points(id, 100 * DAY, 101 * DAY - 1)
                .unwrap()
                .iter()
                .all(|p| p.value != 12_345.0 && p.value != 54_321.0)
        );
        assert!(
            s.points(id, 101 * DAY, 101 * DAY)
                .unwrap()
                .iter()
                .any(|p| p.value == 3.0)
        );
        let problems = s.verify(|_| {}).unwrap().problems;
        assert!(problems.is_empty(), "{problems:?}");
        drop(s);
        // The floor is kept with the deletion.
        let s = Storage::open(&dir).unwrap();
        assert_eq!(s.accepts_from_ms(), Some(101 * DAY));
        write_points(&s, "g", &[(100 * DAY + 90_000, 1.0)]);
        assert_eq!(s.samples_too_old(), 1);
        assert_eq!(s.head_points(), 0);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A maintenance pass with a raw retention makes commits drop points older than its
    /// horizon, as VictoriaMetrics drops samples older than its retention.
    #[test]
    fn points_older_than_the_raw_retention_are_dropped_on_arrival() {
        let dir = tmp_dir("rollup-horizon");
        let s = Storage::open(&dir).unwrap();
        assert_eq!(s.accepts_from_ms(), None);
        write_points(&s, "g", &[(DAY, 1.0)]);
        s.compact_head().unwrap();
        let policy = RetentionPolicy {
            retention_ms: Some(10 * DAY),
            ..RetentionPolicy::default()
        };
        s.maintain(20 * DAY + 5, &policy).unwrap();
        assert_eq!(s.accepts_from_ms(), Some(10 * DAY + 5));
        write_points(&s, "g", &[(10 * DAY + 4, 1.0), (10 * DAY + 5, 2.0)]);
        assert_eq!(s.samples_too_old(), 1);
        assert_eq!(s.head_points(), 1);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Points stamped more than [`crate::MAX_FUTURE_MS`] past the wall clock are dropped on
    /// arrival and counted, as VictoriaMetrics refuses them; the rest of the commit stays.
    #[test]
    fn points_too_far_ahead_of_the_clock_are_dropped_on_arrival() {
        let dir = tmp_dir("rollup-future");
        let s = Storage::open(&dir).unwrap();
        let now = crate::forward::stamp_now();
        let ahead = now + crate::MAX_FUTURE_MS - 60_000;
        let beyond = now + crate::MAX_FUTURE_MS + 60_000;
        write_points(&s, "g", &[(now, 1.0), (ahead, 2.0), (beyond, 3.0)]);
        assert_eq!(s.samples_too_new(), 1);
        assert_eq!(s.samples_too_old(), 0);
        assert_eq!(s.head_points(), 2);
        assert!(s.accepts_until_ms() >= now + crate::MAX_FUTURE_MS);
        let id = s.series_id(&Labels::metric("g", [])).unwrap();
        let values: Vec<f64> = s
            .points(id, now, i64::MAX)
            .unwrap()
            .iter()
            .map(|p| p.value)
            .collect();
        assert_eq!(values, [1.0, 2.0]);
        drop(s);
        // Nothing of it was written: the reopened head replays the two points kept.
        let s = Storage::open(&dir).unwrap();
        assert_eq!(s.head_points(), 2);
        assert_eq!(s.samples_too_new(), 0);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Days past the 5-minute retention but within the hourly one, whose raw data is still
    /// kept, are rolled up once: a pass must not make their 5-minute buckets again only for
    /// the retention to delete them (a year of backfill spent minutes so, at every pass).
    #[test]
    fn a_rollup_past_its_retention_is_not_made_again() {
        let dir = tmp_dir("rollup-churn");
        let s = Storage::open(&dir).unwrap();
        load(&s);
        let now = 110 * DAY + 3_600_000;
        let policy = RetentionPolicy {
            retention_5m_ms: Some(4 * DAY),
            ..RetentionPolicy::default()
        };
        let mut lines = vec![];
        let first = s
            .maintain_with_progress(now, &policy, &mut |m| lines.push(m.to_string()))
            .unwrap();
        assert_eq!(first.rolled_up_partitions, 10);
        assert_eq!(
            lines,
            vec![
                "10 merged and 10 rolled up; compacting the 10 days from 1970-04-11 to 1970-04-20"
            ]
        );
        let gone_5m = first
            .deleted
            .iter()
            .filter(|d| d.resolution == "5m")
            .count();
        assert_eq!(gone_5m, 0, "days past the 5-minute retention get none");
        assert_eq!(s.rollup_parts(R5M), vec![106, 107, 108, 109]);
        assert_eq!(s.rollup_parts(R1H).len(), 10);
        for _ in 0..2 {
            let again = s.maintain(now, &policy).unwrap();
            assert_eq!(again.rolled_up_partitions, 0);
            assert!(again.deleted.is_empty(), "{:?}", again.deleted);
        }
        // When the 5-minute retention moves past a day that has its buckets, they go, once.
        let later = s.maintain(now + DAY, &policy).unwrap();
        assert_eq!(later.rolled_up_partitions, 0);
        let gone: Vec<_> = later
            .deleted
            .iter()
            .map(|d| (d.resolution, d.start_ms))
            .collect();
        assert_eq!(gone, vec![("5m", 106 * DAY)]);
        assert!(s.maintain(now + DAY, &policy).unwrap().deleted.is_empty());
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
