//! [`Storage`] as the query engine reads it: [`Queryable`], opening a [`Querier`] over a time
//! range.

use crate::SeriesId;
use crate::db::Storage;
use outpost_promql::{Matcher, Querier, Queryable, StorageError};
use outpost_shared::{Labels, Point};

impl Queryable for Storage {
    fn querier(&self, mint_ms: i64, maxt_ms: i64) -> Result<Box<dyn Querier + '_>, StorageError> {
        Ok(Box::new(StorageQuerier {
            storage: self,
            mint_ms,
            maxt_ms,
        }))
    }
}

/// Reads [`Storage`] within `[mint_ms, maxt_ms]`.
struct StorageQuerier<'a> {
    storage: &'a Storage,
    mint_ms: i64,
    maxt_ms: i64,
}

impl Querier for StorageQuerier<'_> {
    fn select(&self, matchers: &[Matcher]) -> Result<Vec<(SeriesId, Labels)>, StorageError> {
        Ok(self.storage.select(matchers))
    }

    fn points(&self, id: SeriesId, start_ms: i64, end_ms: i64) -> Result<Vec<Point>, StorageError> {
        self.storage
            .points(id, start_ms.max(self.mint_ms), end_ms.min(self.maxt_ms))
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
