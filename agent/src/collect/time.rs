//! The cycle's wall clock (collector "time"): `node_time_seconds`.

use super::{CollectError, Collector};
use outpost_shared::Labels;

/// Collector "time"; reports the `now_ms` it is given, so it reads no clock itself.
pub struct TimeCollector;

impl Collector for TimeCollector {
    fn name(&self) -> &'static str {
        "time"
    }

    fn collect(&mut self, now_ms: i64, out: &mut Vec<(Labels, f64)>) -> Result<(), CollectError> {
        out.push((
            Labels::metric("node_time_seconds", []),
            now_ms as f64 / 1000.0,
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::render;

    #[test]
    fn seconds_from_the_given_milliseconds() {
        for (now_ms, want) in [
            (1_700_000_000_123, "node_time_seconds{} 1700000000.123"),
            (0, "node_time_seconds{} 0"),
        ] {
            let mut out = Vec::new();
            TimeCollector.collect(now_ms, &mut out).unwrap();
            assert_eq!(render(&out), [want]);
        }
    }
}
