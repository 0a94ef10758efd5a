//! [`Storage`] as the query engine reads it: [`Queryable`], opening a [`Querier`] over a time
//! range.

use crate::SeriesId;
use crate::chunks::ChunkCursor;
use crate::db::Storage;
use outpost_promql::rollup::{Bucket, RollupInfo};
use outpost_promql::{Matcher, Querier, Queryable, StorageError};
use outpost_shared::{Labels, Point};
use std::sync::{Arc, Mutex};

impl Queryable for Storage {
    fn querier(&self, mint_ms: i64, maxt_ms: i64) -> Result<Box<dyn Querier + '_>, StorageError> {
        Ok(Box::new(StorageQuerier {
            storage: self,
            mint_ms,
            maxt_ms,
            cursor: Mutex::new(None),
        }))
    }
}

/// Reads [`Storage`] within `[mint_ms, maxt_ms]`, through one chunk cursor made at the
/// first read (behind a lock: the engine may read from two threads at once).
struct StorageQuerier<'a> {
    storage: &'a Storage,
    mint_ms: i64,
    maxt_ms: i64,
    cursor: Mutex<Option<(u64, ChunkCursor<'a>)>>,
}

impl Querier for StorageQuerier<'_> {
    fn select(&self, matchers: &[Matcher]) -> Result<Vec<(SeriesId, Arc<Labels>)>, StorageError> {
        Ok(self.storage.select(matchers))
    }

    fn points(&self, id: SeriesId, start_ms: i64, end_ms: i64) -> Result<Vec<Point>, StorageError> {
        self.storage.points_via(
            &mut self.cursor.lock().unwrap_or_else(|p| p.into_inner()),
            id,
            start_ms.max(self.mint_ms),
            end_ms.min(self.maxt_ms),
        )
    }

    fn rollups(&self) -> Option<RollupInfo> {
        Some(RollupInfo {
            resolutions: crate::rollup::ROLLUPS.iter().map(|r| r.1).collect(),
            raw_start_ms: self.storage.raw_start_ms(),
            start_ms: self.storage.rollup_start_ms(),
            starts_ms: self.storage.rollup_starts_ms(),
        })
    }

    fn points_per_bucket(&self, start_ms: i64, end_ms: i64, res_ms: i64) -> Option<f64> {
        self.storage
            .points_per_bucket(start_ms.max(self.mint_ms), end_ms.min(self.maxt_ms), res_ms)
    }

    fn buckets(
        &self,
        id: SeriesId,
        start_ms: i64,
        end_ms: i64,
        res_ms: i64,
    ) -> Result<Vec<Bucket>, StorageError> {
        self.storage.series_buckets(
            id,
            start_ms.max(self.mint_ms),
            end_ms.min(self.maxt_ms),
            res_ms,
        )
    }

    fn points_many(
        &self,
        ids: &[SeriesId],
        start_ms: i64,
        end_ms: i64,
        stop: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Option<Vec<Vec<Point>>>, StorageError> {
        self.storage.points_many(
            ids,
            start_ms.max(self.mint_ms),
            end_ms.min(self.maxt_ms),
            stop,
        )
    }

    fn timestamps_many(
        &self,
        ids: &[SeriesId],
        start_ms: i64,
        end_ms: i64,
        stop: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Option<Vec<Vec<i64>>>, StorageError> {
        self.storage.timestamps_many(
            ids,
            start_ms.max(self.mint_ms),
            end_ms.min(self.maxt_ms),
            stop,
        )
    }

    fn buckets_many(
        &self,
        ids: &[SeriesId],
        start_ms: i64,
        end_ms: i64,
        res_ms: i64,
        stop: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Option<Vec<Vec<Bucket>>>, StorageError> {
        self.storage.buckets_many(
            ids,
            start_ms.max(self.mint_ms),
            end_ms.min(self.maxt_ms),
            res_ms,
            stop,
        )
    }

    fn has_points(&self, id: SeriesId, start_ms: i64, end_ms: i64) -> Result<bool, StorageError> {
        self.storage
            .has_points(id, start_ms.max(self.mint_ms), end_ms.min(self.maxt_ms))
    }

    fn label_names(&self) -> Result<Vec<String>, StorageError> {
        Ok(self.storage.label_names())
    }

    fn label_values(&self, name: &str) -> Result<Vec<String>, StorageError> {
        Ok(self.storage.label_values(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{tmp_dir, write};
    use outpost_promql::MatchOp;
    use outpost_shared::model::is_stale;

    /// A query's chunk cursor is made once, then reused; a compaction that moves points
    /// from the head into chunks in the middle of a query must not hide them from it.
    #[test]
    fn a_compaction_during_a_query_hides_no_point() {
        let dir = tmp_dir("cursor");
        let s = Storage::open(&dir).unwrap();
        write(&s, "a", 1000);
        write(&s, "b", 1000);
        s.compact_head().unwrap();
        write(&s, "b", 2000);
        let q = s.querier(0, 10_000).unwrap();
        let id = |n: &str| {
            q.select(&[Matcher::new("__name__", MatchOp::Equal, n).unwrap()])
                .unwrap()[0]
                .0
        };
        // The first read makes the cursor; b's newest point is still in the head.
        assert_eq!(q.points(id("a"), 0, 10_000).unwrap().len(), 1);
        s.compact_head().unwrap();
        let b = q.points(id("b"), 0, 10_000).unwrap();
        assert_eq!(b.iter().map(|p| p.ts).collect::<Vec<_>>(), vec![1000, 2000]);
        drop(q);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Reading many series at once gives what reading each alone gives: head and chunks,
    /// overwritten points (newest write wins), rolled-up and not rolled-up days, series
    /// wanted densely (stepped over) and sparsely (sought), repeated and unknown ids.
    #[test]
    fn reading_many_series_at_once_answers_as_reading_each() {
        const DAY: i64 = crate::partition::PARTITION_MS;
        let dir = tmp_dir("many");
        let s = Storage::open(&dir).unwrap();
        let names: Vec<String> = (0..60).map(|i| format!("m{i:02}")).collect();
        for d in 100..104i64 {
            for (k, n) in names.iter().enumerate() {
                // Every third series skips a day; points every 20 minutes.
                if (k as i64 + d) % 3 == 0 {
                    continue;
                }
                let pts: Vec<(i64, f64)> = (0..72)
                    .map(|j| (d * DAY + j * 1_200_000 + k as i64, (d * 100 + j) as f64))
                    .collect();
                crate::testutil::write_points(&s, n, &pts);
            }
            s.compact_head().unwrap();
            // A rewrite of some points of the day, in a later record: one a stale marker
            // over a number, one a number over a stale marker (of a chunk of IEEE bits).
            let stale = outpost_shared::model::stale_nan();
            crate::testutil::write_points(
                &s,
                &names[7],
                &[(d * DAY + 7, -1.0), (d * DAY + 1_200_000 + 7, stale)],
            );
            crate::testutil::write_points(&s, &names[8], &[(d * DAY + 2_400_000 + 8, stale)]);
            s.compact_head().unwrap();
            crate::testutil::write_points(&s, &names[8], &[(d * DAY + 2_400_000 + 8, 5.0)]);
            s.compact_head().unwrap();
        }
        // Today's points stay in the head.
        crate::testutil::write_points(&s, &names[3], &[(104 * DAY + 5, 42.0)]);
        s.maintain(104 * DAY + 3_600_000, &crate::RetentionPolicy::default())
            .unwrap();
        // Day 102's rollups are taken away again: read from raw points.
        s.rollups.write().unwrap().iter_mut().for_each(|r| {
            r.remove(&102);
        });
        let q = s.querier(i64::MIN, i64::MAX).unwrap();
        let all = q
            .select(&[Matcher::new("__name__", MatchOp::Regex, "m.*").unwrap()])
            .unwrap();
        let ids: Vec<SeriesId> = all.iter().map(|s| s.0).collect();
        let dense: Vec<SeriesId> = ids.iter().copied().step_by(3).collect();
        let sparse: Vec<SeriesId> = ids.iter().copied().step_by(20).collect();
        let odd = vec![ids[9], ids[2], ids[9], 999_999, ids[40]];
        let (a, b) = (100 * DAY + 3_600_000, 104 * DAY + 600_000);
        for set in [&ids, &dense, &sparse, &odd] {
            let many = q.points_many(set, a, b, &mut |_| false).unwrap().unwrap();
            for (id, got) in set.iter().zip(&many) {
                assert_eq!(got, &q.points(*id, a, b).unwrap(), "series {id}");
            }
            // Times alone, values decoded only where stale markers may be: the same.
            let times = q.timestamps_many(set, a, b, &mut |_| false).unwrap();
            assert_eq!(
                times,
                Some(outpost_promql::storage::unstale_timestamps(many.clone()))
            );
            // Split by series over threads, the same.
            for threads in [2, 3, 7] {
                let split = s
                    .points_many_in(set, a, b, Some(threads), true, &mut |_| false)
                    .unwrap()
                    .unwrap();
                assert_eq!(split, many, "{threads} threads");
            }
            for res in [300_000, 3_600_000, 600_000] {
                let many = q
                    .buckets_many(set, a, b, res, &mut |_| false)
                    .unwrap()
                    .unwrap();
                for (id, got) in set.iter().zip(&many) {
                    assert_eq!(
                        got,
                        &q.buckets(*id, a, b, res).unwrap(),
                        "series {id} at {res}"
                    );
                }
            }
        }
        let one = q.points(ids[7], a, b).unwrap();
        assert!(one.iter().any(|p| p.value == -1.0), "the rewrite wins");
        let stale = one.iter().filter(|p| is_stale(p.value)).count();
        assert_eq!(
            stale, 3,
            "days 101 to 103 rewrite a point as a stale marker"
        );
        let eight = q.points(ids[8], a, b).unwrap();
        assert!(eight.iter().any(|p| p.value == 5.0));
        assert!(!eight.iter().any(|p| is_stale(p.value)));
        let times = q.timestamps_many(&ids[7..9], a, b, &mut |_| false);
        let times = times.unwrap().unwrap();
        assert_eq!(times[0].len(), one.len() - 3, "stale markers left out");
        assert_eq!(times[1].len(), eight.len());
        assert!(!q.buckets(ids[0], a, b, 3_600_000).unwrap().is_empty());
        // A limit ends the read.
        let mut calls = 0;
        let stopped = q
            .points_many(&ids, a, b, &mut |n| {
                calls += 1;
                n > 1000
            })
            .unwrap();
        assert!(stopped.is_none());
        assert!(calls < 4, "{calls} calls");
        // Over threads, the limit counts what every thread read.
        let mut seen = vec![];
        let stopped = s
            .points_many_in(&ids, a, b, Some(3), true, &mut |n| {
                seen.push(n);
                n > 1000
            })
            .unwrap();
        assert!(stopped.is_none(), "{seen:?}");
        assert!(seen.len() < 4, "{seen:?}");
        assert!(
            q.buckets_many(&ids, a, b, 3_600_000, &mut |n| n > 100)
                .unwrap()
                .is_none()
        );
        drop(q);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
