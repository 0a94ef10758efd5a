//! Helpers for this crate's unit tests.

use crate::{SeriesSlot, Storage, WritePlan};
use outpost_shared::{Labels, Point};
use std::path::PathBuf;

/// A fresh, empty folder under the system's temp dir, unique to this process and `name`.
pub(crate) fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("outpost-tsdb-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Commits points `(ts ms, value)` of the series named `name` (no other labels) in one
/// record.
pub(crate) fn write_points(s: &Storage, name: &str, points: &[(i64, f64)]) {
    s.commit(&WritePlan {
        new_series: vec![Labels::metric(name, [])],
        records: vec![
            points
                .iter()
                .map(|&(ts, value)| (SeriesSlot::New(0), Point { ts, value }))
                .collect(),
        ],
        meta: vec![],
    })
    .unwrap();
}

/// Commits one point of value 1 at `ts` for the series named `name`.
pub(crate) fn write(s: &Storage, name: &str, ts: i64) {
    write_points(s, name, &[(ts, 1.0)]);
}

/// Every point of the series named `name`, from head and chunks.
pub(crate) fn all_points(s: &Storage, name: &str) -> Vec<Point> {
    let Some(id) = s.series_id(&Labels::metric(name, [])) else {
        return vec![];
    };
    s.points(id, i64::MIN, i64::MAX).unwrap()
}
