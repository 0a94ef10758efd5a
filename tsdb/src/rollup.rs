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
//! - **Reads.** [`Storage::buckets`] reads a day's rollup chunk where the day is rolled up
//!   and makes buckets from raw points where not (today, or a day not yet rolled up), so a
//!   query sees the same buckets either way. [`Storage::points_via`] shows, for the time
//!   before the oldest raw partition, each 5-minute bucket's last point (1-hour buckets
//!   where no 5-minute one is kept).
//!
//! Chunk value: a varint bucket count, then nine columns, each the batch codec's point
//! coding ([`encode_points`]) of (bucket start, field) for every bucket, length-prefixed
//! (varint): count, sum, min XOR first value, max XOR last value (bitwise, so a counter's
//! are 0), first value, last value, reset correction, first point's offset from the
//! bucket start (ms), last point's offset. Constant and regular columns
//! (counts, offsets) cost a few bits per bucket.

use crate::SeriesId;
use crate::db::{CF_PARTS, Storage, StorageError};
use crate::maintain::PartitionStats;
use crate::partition::{self, PARTITION_MS, RAW};
use outpost_promql::StorageError as ReadError;
use outpost_promql::rollup::{Bucket, RES_1H_MS, RES_5M_MS, buckets_of};
use outpost_shared::Point;
use outpost_shared::codec::{decode_points, encode_points};
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

/// The name (`raw`, `5m`, `1h`) of a resolution byte.
pub(crate) fn res_name(res: u8) -> &'static str {
    ROLLUPS.iter().find(|r| r.0 == res).map_or("raw", |r| r.2)
}

/// Encodes buckets (oldest first, non-empty) as a chunk value (see the module docs).
pub(crate) fn encode_buckets(b: &[Bucket]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + b.len() * 12);
    put_varint(&mut out, b.len() as u64);
    let fields: [fn(&Bucket) -> f64; 9] = [
        |b| b.count as f64,
        |b| b.sum,
        // Bitwise XOR with the first/last value: 0 for a counter, whose minimum is its
        // first value and maximum its last, and cheap to code.
        |b| f64::from_bits(b.min.to_bits() ^ b.first.value.to_bits()),
        |b| f64::from_bits(b.max.to_bits() ^ b.last.value.to_bits()),
        |b| b.first.value,
        |b| b.last.value,
        |b| b.reset_add,
        |b| (b.first.ts - b.start) as f64,
        |b| (b.last.ts - b.start) as f64,
    ];
    let mut col: Vec<Point> = Vec::with_capacity(b.len());
    for f in fields {
        col.clear();
        col.extend(b.iter().map(|x| Point {
            ts: x.start,
            value: f(x),
        }));
        let enc = encode_points(&col);
        put_varint(&mut out, enc.len() as u64);
        out.extend_from_slice(&enc);
    }
    out
}

/// Decodes a chunk value made by [`encode_buckets`].
///
/// # Errors
/// The value is truncated or its columns disagree; says which.
pub(crate) fn decode_buckets(mut v: &[u8]) -> Result<Vec<Bucket>, String> {
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

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
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

    /// Whether day `p` has rollups at every resolution.
    pub(crate) fn has_rollups(&self, p: i32) -> bool {
        ROLLUPS.iter().all(|r| self.has_rollup(r.0, p))
    }

    /// Whether raw partition `p` needs rolling up: it was written since its rollups were
    /// made, or has none.
    pub(crate) fn needs_rollup(&self, p: i32) -> Result<bool, StorageError> {
        let raw = self.partition_stats(RAW, p)?;
        for (res, _, _) in ROLLUPS {
            if !self.has_rollup(res, p) || self.partition_stats(res, p)?.writes != raw.writes {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Makes the 5-minute and 1-hour buckets of every series in raw partition `p` from its
    /// chunks, replacing what rollups of that day held (see the module docs for crash
    /// safety). Returns the raw samples read.
    ///
    /// # Errors
    /// RocksDB fails, or a chunk does not decode (named).
    pub fn rollup_partition(&self, p: i32) -> Result<u64, StorageError> {
        let _maint = self.maint.lock().unwrap_or_else(|e| e.into_inner());
        let raw = self.partition_stats(RAW, p)?;
        let cf = self.cf(CF_PARTS)?;
        // Until the day is done, queries make its buckets from raw points; its old rollups
        // go in one range delete per resolution (with the statistics that mark it done),
        // so a crash leaves it not done rather than half old, half new.
        {
            let mut r = self.rollups.write().unwrap_or_else(|e| e.into_inner());
            for (res, _, _) in ROLLUPS {
                if let Some(s) = r.get_mut(usize::from(res)) {
                    s.remove(&p);
                }
            }
        }
        let mut wb = WriteBatch::default();
        for (res, _, _) in ROLLUPS {
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
        let mut stats = [PartitionStats::default(); 2];
        let mut read = 0u64;
        self.each_series_chunks(p, |series, group| {
            let (pts, decoded) = self.newest_points(p, series, group)?;
            read += decoded;
            for (i, (res, len, _)) in ROLLUPS.into_iter().enumerate() {
                let b = buckets_of(&pts, len);
                if let (Some(a), Some(z)) = (b.first(), b.last()) {
                    wb.put_cf(
                        cf,
                        partition::chunk_key(res, series, a.start, z.start, 0),
                        encode_buckets(&b),
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
        for (i, (res, _, _)) in ROLLUPS.into_iter().enumerate() {
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
            for (res, _, _) in ROLLUPS {
                if let Some(s) = r.get_mut(usize::from(res)) {
                    s.insert(p);
                }
            }
        }
        Ok(read)
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
            f(decode_buckets(v).map_err(|e| ReadError(format!("rollup of series {id}: {e}")))?);
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
    pub(crate) fn buckets_via<'a>(
        &'a self,
        cursor: &mut Option<(u64, crate::chunks::ChunkCursor<'a>)>,
        id: SeriesId,
        start_ms: i64,
        end_ms: i64,
        res_ms: i64,
    ) -> Result<Vec<Bucket>, ReadError> {
        let mut out = vec![];
        if start_ms > end_ms || res_ms <= 0 {
            return Ok(out);
        }
        let Some(res) = res_byte(res_ms) else {
            let pts = self.points_via(cursor, id, start_ms, end_ms.saturating_add(res_ms - 1))?;
            return Ok(buckets_of(&pts, res_ms));
        };
        let rolled: std::collections::BTreeSet<i32> = self
            .rollups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(usize::from(res))
            .map(|s| {
                s.range(partition::partition_of(start_ms)..=partition::partition_of(end_ms))
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        let mut it: Option<crate::chunks::ChunkCursor<'_>> = None;
        // Days in order: rolled-up days read their chunk, runs of other days their points.
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
                Self::each_rollup_chunk(it, res, day, id, |b| {
                    out.extend(b.into_iter().filter(|b| b.start >= from && b.start <= to));
                })?;
                day += 1;
            } else {
                // The run of days not rolled up, read as points at once.
                let mut end_day = day;
                while end_day < last && !rolled.contains(&(end_day + 1)) {
                    end_day += 1;
                }
                let run_end = end_ms.min(partition::partition_span(end_day).1);
                let pts = self.points_via(cursor, id, from, run_end.saturating_add(res_ms - 1))?;
                out.extend(
                    buckets_of(&pts, res_ms)
                        .into_iter()
                        .filter(|b| b.start <= run_end),
                );
                day = end_day + 1;
            }
        }
        Ok(out)
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

    #[test]
    fn buckets_round_trip_through_their_encoding_and_constant_columns_cost_little() {
        let pts: Vec<Point> = (0..8640)
            .map(|i| Point {
                ts: i * 10_000 + (i % 3),
                value: if i == 4000 { 1.0 } else { (i * 7) as f64 },
            })
            .collect();
        let b = buckets_of(&pts, RES_5M_MS);
        assert_eq!(b.len(), 288);
        let enc = encode_buckets(&b);
        assert_eq!(decode_buckets(&enc).unwrap(), b);
        // A day of a steady counter: a few bytes per bucket.
        assert!(enc.len() < 288 * 10, "{} bytes", enc.len());
        eprintln!("{} bytes for 288 buckets", enc.len());
        assert!(decode_buckets(&enc[..enc.len() - 3]).is_err());
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
        assert!(!s.needs_rollup(105).unwrap());
        assert!(s.verify(|_| {}).unwrap().problems.is_empty());
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
        s.rollup_partition(103).unwrap();
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
        assert!(s.needs_rollup(107).unwrap());
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
}
