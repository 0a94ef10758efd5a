//! [`MemStorage`]: an in-memory [`Queryable`] for tests of the engine and of the programs
//! that serve it, with a log of every read and a switch that makes every read fail.

use crate::rollup::RollupInfo;
use crate::storage::{Matcher, Querier, Queryable, SeriesRef, StorageError};
use outpost_shared::{Labels, Point};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// Series held in memory, each with its points sorted by time.
#[derive(Default)]
pub struct MemStorage {
    series: Vec<(Labels, Vec<Point>)>,
    /// Every `points` call, to check that a query fetches each series once.
    pub fetches: Mutex<Vec<(SeriesRef, i64, i64)>>,
    /// When set, every read fails with this message.
    fail: Option<String>,
    /// The rollups it claims to keep (made from its points when read).
    rollups: Option<RollupInfo>,
}

impl MemStorage {
    /// Adds a series. Points are given as `(ts ms, value)` and may be in any order.
    pub fn with(mut self, labels: Labels, points: &[(i64, f64)]) -> Self {
        let mut pts: Vec<Point> = points
            .iter()
            .map(|&(ts, value)| Point { ts, value })
            .collect();
        pts.sort_by_key(|p| p.ts);
        self.series.push((labels, pts));
        self
    }

    /// The same source, claiming rollups of these resolutions (ms) and raw points from
    /// `raw_start_ms` on; its buckets are made from its points when read, so queries that
    /// the engine answers from rollups can be checked against the same queries over points.
    pub fn with_rollups(mut self, resolutions: &[i64], raw_start_ms: Option<i64>) -> Self {
        self.rollups = Some(RollupInfo {
            resolutions: resolutions.to_vec(),
            raw_start_ms,
            start_ms: None,
            starts_ms: vec![],
        });
        self
    }

    /// A source whose every read fails with `msg`.
    pub fn failing(msg: &str) -> Self {
        MemStorage {
            fail: Some(msg.to_string()),
            ..MemStorage::default()
        }
    }

    fn check(&self) -> Result<(), StorageError> {
        match &self.fail {
            Some(msg) => Err(StorageError(msg.clone())),
            None => Ok(()),
        }
    }
}

impl Queryable for MemStorage {
    fn querier(&self, mint_ms: i64, maxt_ms: i64) -> Result<Box<dyn Querier + '_>, StorageError> {
        self.check()?;
        Ok(Box::new(MemQuerier {
            store: self,
            mint_ms,
            maxt_ms,
        }))
    }
}

/// A [`Querier`] over a [`MemStorage`] within `[mint_ms, maxt_ms]`.
struct MemQuerier<'a> {
    store: &'a MemStorage,
    mint_ms: i64,
    maxt_ms: i64,
}

impl Querier for MemQuerier<'_> {
    fn rollups(&self) -> Option<RollupInfo> {
        self.store.rollups.clone()
    }

    fn select(&self, matchers: &[Matcher]) -> Result<Vec<(SeriesRef, Arc<Labels>)>, StorageError> {
        self.store.check()?;
        let mut out: Vec<(SeriesRef, Arc<Labels>)> = self
            .store
            .series
            .iter()
            .enumerate()
            .filter(|(_, (l, _))| matchers.iter().all(|m| m.matches_labels(l)))
            .map(|(i, (l, _))| (i as SeriesRef, Arc::new(l.clone())))
            .collect();
        out.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(out)
    }

    fn points(
        &self,
        id: SeriesRef,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Point>, StorageError> {
        self.store.check()?;
        let (start_ms, end_ms) = (start_ms.max(self.mint_ms), end_ms.min(self.maxt_ms));
        self.store
            .fetches
            .lock()
            .expect("fetch log")
            .push((id, start_ms, end_ms));
        let pts = self
            .store
            .series
            .get(id as usize)
            .map(|s| s.1.as_slice())
            .unwrap_or_default();
        // Most reads cover a series' first or last point: no search (and no cache misses
        // over cold points) then.
        let lo = match pts.first() {
            Some(p) if p.ts >= start_ms => 0,
            _ => pts.partition_point(|p| p.ts < start_ms),
        };
        let hi = match pts.last() {
            Some(p) if p.ts <= end_ms => pts.len(),
            _ => pts.partition_point(|p| p.ts <= end_ms),
        }
        .max(lo);
        Ok(pts[lo..hi].to_vec())
    }

    fn label_names(&self) -> Result<Vec<String>, StorageError> {
        self.store.check()?;
        let names: BTreeSet<String> = self
            .store
            .series
            .iter()
            .flat_map(|(l, _)| l.iter().map(|l| l.name.clone()))
            .collect();
        Ok(names.into_iter().collect())
    }

    fn label_values(&self, name: &str) -> Result<Vec<String>, StorageError> {
        self.store.check()?;
        let values: BTreeSet<String> = self
            .store
            .series
            .iter()
            .filter_map(|(l, _)| l.get(name).map(str::to_string))
            .collect();
        Ok(values.into_iter().collect())
    }
}
