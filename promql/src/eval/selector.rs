//! Series selectors: loading each selected series' points once per query, within the
//! sample limit, and the window arithmetic every selector shares.

use super::Selector;
use crate::error::QueryError;
use crate::storage::{Querier, Queryable};
use outpost_shared::{Labels, Point};

/// The first millisecond of the left-open window `(end - len, end]`.
pub(crate) fn window_start(end: i64, len: i64) -> i64 {
    end.saturating_sub(len).saturating_add(1)
}

/// Loads each selected series' points once, counting them against the sample limit.
pub(crate) struct Loader<'a> {
    querier: Box<dyn Querier + 'a>,
    max_samples: usize,
    loaded: usize,
}

impl<'a> Loader<'a> {
    /// A loader reading `src` within `[mint_ms, maxt_ms]`.
    pub(crate) fn open(
        src: &'a dyn Queryable,
        mint_ms: i64,
        maxt_ms: i64,
        max_samples: usize,
    ) -> Result<Self, QueryError> {
        Ok(Loader {
            querier: src.querier(mint_ms, maxt_ms)?,
            max_samples,
            loaded: 0,
        })
    }

    pub(crate) fn load(
        &mut self,
        sel: &Selector,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<(Labels, Vec<Point>)>, QueryError> {
        let series = self.querier.select(&sel.matchers)?;
        let mut out = Vec::with_capacity(series.len());
        for (id, labels) in series {
            let points = self.querier.points(id, start_ms, end_ms)?;
            self.loaded = self.loaded.saturating_add(points.len());
            if self.loaded > self.max_samples {
                return Err(QueryError::TooManySamples);
            }
            out.push((labels, points));
        }
        Ok(out)
    }
}
