//! [`Steps`]: the evaluation times of a range query.

use crate::error::QueryError;

/// The most steps a range query may have beyond its first, as in Prometheus.
pub const MAX_STEPS: i64 = 11_000;

/// The steps of a range query: `start_ms, start_ms + step_ms, ...` up to `end_ms` inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Steps {
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
}

impl Steps {
    /// Checks the range as Prometheus does: `end >= start`, `step > 0`, at most
    /// [`MAX_STEPS`] steps after the first.
    pub fn new(start_ms: i64, end_ms: i64, step_ms: i64) -> Result<Self, QueryError> {
        if end_ms < start_ms {
            return Err(QueryError::EndBeforeStart);
        }
        if step_ms <= 0 {
            return Err(QueryError::NonPositiveStep);
        }
        // i128: `end - start` overflows i64 for the extreme times Prometheus accepts.
        if (i128::from(end_ms) - i128::from(start_ms)) / i128::from(step_ms) > i128::from(MAX_STEPS)
        {
            return Err(QueryError::TooManySteps);
        }
        Ok(Steps {
            start_ms,
            end_ms,
            step_ms,
        })
    }

    /// The first step, ms since the Unix epoch.
    pub fn start_ms(&self) -> i64 {
        self.start_ms
    }
    /// The last possible step (inclusive), ms since the Unix epoch.
    pub fn end_ms(&self) -> i64 {
        self.end_ms
    }
    /// The distance between steps, ms.
    pub fn step_ms(&self) -> i64 {
        self.step_ms
    }

    /// Every step time, in order.
    pub fn times(&self) -> impl Iterator<Item = i64> + use<> {
        let Steps {
            start_ms,
            end_ms,
            step_ms,
        } = *self;
        // At most MAX_STEPS + 1 items (checked in `new`), so the multiplication cannot overflow.
        let n = (i128::from(end_ms) - i128::from(start_ms)) / i128::from(step_ms);
        (0..=n as i64).map(move |i| start_ms + i * step_ms)
    }
}
