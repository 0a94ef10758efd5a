//! [`Storage`] as the query engine reads it: [`Queryable`], opening a [`Querier`] over a time
//! range.

use crate::SeriesId;
use crate::chunks::ChunkCursor;
use crate::db::Storage;
use outpost_promql::rollup::{Bucket, RollupInfo};
use outpost_promql::{Matcher, Querier, Queryable, StorageError};
use outpost_shared::{Labels, Point};
use std::cell::RefCell;
use std::sync::Arc;

impl Queryable for Storage {
    fn querier(&self, mint_ms: i64, maxt_ms: i64) -> Result<Box<dyn Querier + '_>, StorageError> {
        Ok(Box::new(StorageQuerier {
            storage: self,
            mint_ms,
            maxt_ms,
            cursor: RefCell::new(None),
        }))
    }
}

/// Reads [`Storage`] within `[mint_ms, maxt_ms]`, through one chunk cursor made at the
/// first read.
struct StorageQuerier<'a> {
    storage: &'a Storage,
    mint_ms: i64,
    maxt_ms: i64,
    cursor: RefCell<Option<(u64, ChunkCursor<'a>)>>,
}

impl Querier for StorageQuerier<'_> {
    fn select(&self, matchers: &[Matcher]) -> Result<Vec<(SeriesId, Arc<Labels>)>, StorageError> {
        Ok(self.storage.select(matchers))
    }

    fn points(&self, id: SeriesId, start_ms: i64, end_ms: i64) -> Result<Vec<Point>, StorageError> {
        self.storage.points_via(
            &mut self.cursor.borrow_mut(),
            id,
            start_ms.max(self.mint_ms),
            end_ms.min(self.maxt_ms),
        )
    }

    fn rollups(&self) -> Option<RollupInfo> {
        Some(RollupInfo {
            resolutions: crate::rollup::ROLLUPS.iter().map(|r| r.1).collect(),
            raw_start_ms: self.storage.raw_start_ms(),
        })
    }

    fn buckets(
        &self,
        id: SeriesId,
        start_ms: i64,
        end_ms: i64,
        res_ms: i64,
    ) -> Result<Vec<Bucket>, StorageError> {
        self.storage.buckets_via(
            &mut self.cursor.borrow_mut(),
            id,
            start_ms.max(self.mint_ms),
            end_ms.min(self.maxt_ms),
            res_ms,
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
}
