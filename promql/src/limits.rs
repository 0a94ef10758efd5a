//! What one query may use: a cap on the points it holds (Prometheus'
//! `--query.max-samples`) and a cancellation flag the caller raises when its deadline
//! passes (`--query.timeout`); the engine checks the flag between series and steps and stops
//! with [`crate::QueryError::Timeout`]. The engine reads no clock: the caller owns the
//! deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Limits for one query.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Most points a query reads (every batch of a selector read in batches counted, not
    /// only those held at once) plus those its subqueries make; more fails with
    /// [`crate::QueryError::TooManySamples`].
    pub max_samples: usize,
    /// Raised by the caller to stop the query.
    pub cancel: Cancel,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_samples: crate::MAX_SAMPLES,
            cancel: Cancel::default(),
        }
    }
}

/// A shared stop flag: clones see the same flag.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// Asks every holder to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// `Err(Timeout)` once cancelled, for `?` in loops.
    ///
    /// # Errors
    /// The flag is raised.
    pub fn check(&self) -> Result<(), crate::QueryError> {
        if self.is_cancelled() {
            Err(crate::QueryError::Timeout)
        } else {
            Ok(())
        }
    }
}
