//! The head: recent points in memory, per series, until compaction moves them into chunks.
//! Rebuilt from the wal at open, so it holds exactly what committed since the last
//! compaction.

use crate::SeriesId;
use outpost_shared::Point;
use std::collections::HashMap;
use std::sync::Arc;

/// Recent points, not yet in chunks.
#[derive(Default)]
pub(crate) struct Head {
    /// Points written since the last compaction started, per series, in write order.
    pub(crate) active: HashMap<SeriesId, Vec<Point>>,
    /// How many points `active` holds.
    pub(crate) active_points: usize,
    /// Points being compacted into chunks right now; still read until that commits.
    pub(crate) frozen: Option<Arc<HashMap<SeriesId, Vec<Point>>>>,
    /// Highest wal record id whose points are in `active` or `frozen`.
    pub(crate) last_wal: u64,
}

impl Head {
    /// Appends this series' head points with `start_ms <= ts <= end_ms` to `out`, newest
    /// write first (active before frozen, each reversed), so a stable sort by time then
    /// keeps the newest write first for a repeated timestamp.
    pub(crate) fn points_newest_first(
        &self,
        id: SeriesId,
        start_ms: i64,
        end_ms: i64,
        out: &mut Vec<Point>,
    ) {
        let in_range = |p: &&Point| p.ts >= start_ms && p.ts <= end_ms;
        if let Some(pts) = self.active.get(&id) {
            out.extend(pts.iter().rev().filter(in_range));
        }
        if let Some(pts) = self.frozen.as_ref().and_then(|f| f.get(&id)) {
            out.extend(pts.iter().rev().filter(in_range));
        }
    }

    /// Whether this series has a head point with `start_ms <= ts <= end_ms`.
    pub(crate) fn has_points(&self, id: SeriesId, start_ms: i64, end_ms: i64) -> bool {
        let hit = |pts: &Vec<Point>| pts.iter().any(|p| p.ts >= start_ms && p.ts <= end_ms);
        self.active.get(&id).is_some_and(hit)
            || self
                .frozen
                .as_ref()
                .and_then(|f| f.get(&id))
                .is_some_and(hit)
    }

    /// The oldest and newest timestamps in the head, if any.
    pub(crate) fn time_range(&self) -> Option<(i64, i64)> {
        let frozen = self.frozen.iter().flat_map(|f| f.values());
        self.active
            .values()
            .chain(frozen)
            .flatten()
            .fold(None, |acc, p| match acc {
                None => Some((p.ts, p.ts)),
                Some((a, b)) => Some((a.min(p.ts), b.max(p.ts))),
            })
    }

    /// Points in the head, active and frozen.
    pub(crate) fn len(&self) -> usize {
        self.active_points
            + self
                .frozen
                .as_ref()
                .map(|f| f.values().map(Vec::len).sum())
                .unwrap_or(0)
    }
}
