//! The agent's record of metric metadata: what the host collectors, scraped pages and pushes
//! declare about each metric family (type, HELP, UNIT), latest declaration winning.
//!
//! Sources report with [`MetadataRegistry::observe`]; the uplink takes what changed with
//! [`MetadataRegistry::changed_since`] and hands it to its session, which sends it to the
//! aggregator (see `docs/WIRE.md`). Metadata lives in memory only: it is not buffered,
//! because the session sends all of it again on every connection and the sources declare it
//! again on every cycle, scrape and push after a restart.

use outpost_shared::metadata::{FamilyMetadata, Metadata};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::Notify;

/// Families kept, at most; declarations of further new families are ignored (and counted),
/// so a pusher that invents names cannot grow the agent without bound.
pub const MAX_FAMILIES: usize = 100_000;

/// Every family's latest metadata, with a generation per change so readers can take only
/// what changed since they last looked.
#[derive(Default)]
pub struct MetadataRegistry {
    inner: Mutex<Inner>,
    /// Signalled when something changed.
    pub changed: Notify,
}

#[derive(Default)]
struct Inner {
    families: HashMap<String, (Metadata, u64)>,
    generation: u64,
    ignored: u64,
}

impl MetadataRegistry {
    /// An empty registry.
    pub fn new() -> MetadataRegistry {
        MetadataRegistry::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records what sources declare now; wakes the uplink when anything is new or changed.
    pub fn observe<'a>(&self, declared: impl IntoIterator<Item = (&'a str, &'a Metadata)>) {
        let mut changed = false;
        {
            let mut inner = self.lock();
            let Inner {
                families,
                generation,
                ignored,
            } = &mut *inner;
            for (family, meta) in declared {
                if family.is_empty() {
                    continue;
                }
                let full = families.len() >= MAX_FAMILIES;
                match families.get_mut(family) {
                    Some((m, _)) if m == meta => {}
                    Some((m, g)) => {
                        *generation += 1;
                        (*m, *g) = (meta.clone(), *generation);
                        changed = true;
                    }
                    None if full => *ignored += 1,
                    None => {
                        *generation += 1;
                        families.insert(family.to_string(), (meta.clone(), *generation));
                        changed = true;
                    }
                }
            }
        }
        if changed {
            self.changed.notify_one();
        }
    }

    /// The families new or changed after generation `seen` (0: all of them), and the
    /// generation to pass next time.
    pub fn changed_since(&self, seen: u64) -> (Vec<FamilyMetadata>, u64) {
        let inner = self.lock();
        if inner.generation <= seen {
            return (Vec::new(), inner.generation);
        }
        let out = inner
            .families
            .iter()
            .filter(|(_, (_, g))| *g > seen)
            .map(|(family, (meta, _))| FamilyMetadata {
                family: family.clone(),
                meta: meta.clone(),
            })
            .collect();
        (out, inner.generation)
    }

    /// The current generation: it moves whenever any family is new or changed.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The latest metadata of `family`.
    pub fn get(&self, family: &str) -> Option<Metadata> {
        self.lock().families.get(family).map(|(m, _)| m.clone())
    }

    /// How many families are known.
    pub fn len(&self) -> usize {
        self.lock().families.len()
    }

    /// True when no family is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Declarations of new families ignored because [`MAX_FAMILIES`] were known.
    pub fn ignored(&self) -> u64 {
        self.lock().ignored
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_shared::metadata::MetricType;

    #[test]
    fn only_new_and_changed_families_are_handed_on() {
        let r = MetadataRegistry::new();
        let gauge = Metadata::new(MetricType::Gauge, "A gauge.");
        let counter = Metadata::new(MetricType::Counter, "A counter.");
        r.observe([("a", &gauge), ("b", &counter), ("", &gauge)]);
        let (mut all, g1) = r.changed_since(0);
        all.sort_by(|x, y| x.family.cmp(&y.family));
        assert_eq!(
            all.iter().map(|f| f.family.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        // Unchanged: nothing new, and no wake-up is owed.
        r.observe([("a", &gauge)]);
        assert_eq!(r.changed_since(g1), (vec![], g1));
        r.observe([("a", &counter), ("c", &gauge)]);
        let (mut changed, g2) = r.changed_since(g1);
        changed.sort_by(|x, y| x.family.cmp(&y.family));
        assert_eq!(
            changed,
            [
                FamilyMetadata {
                    family: "a".into(),
                    meta: counter.clone()
                },
                FamilyMetadata {
                    family: "c".into(),
                    meta: gauge.clone()
                },
            ]
        );
        assert!(g2 > g1);
        assert_eq!(r.get("a"), Some(counter));
        assert_eq!(r.len(), 3);
        assert_eq!(r.changed_since(0).0.len(), 3);
    }
}
