//! The series of the collection cycles, kept from one cycle to the next.
//!
//! A host yields the same few hundred series every cycle, in the same order. [`CycleSeries`]
//! is the collectors' [`Sink`] for a cycle: it recognises a series it saw in the previous
//! cycle at the same position by comparing the name and pairs with the label set it kept
//! (no allocation, no hashing), and only builds and numbers the label sets of series it has
//! not seen. Every label set carries the agent's `agent` and `region` labels, added once.
//! While the list of series stays the same, the batch encoding of its strings and series is
//! reused too ([`CycleEncoder`]), so a cycle costs its values' codes.

use crate::collect::Sink;
use outpost_shared::codec::CycleEncoder;
use outpost_shared::model::METRIC_NAME;
use outpost_shared::{Label, Labels};
use std::collections::HashMap;

/// The collection cycle's series and values; see the module documentation.
pub struct CycleSeries {
    agent: String,
    region: String,
    /// Per series number: the label set as the collector gave it (without agent and region).
    keys: Vec<Labels>,
    /// Per series number: the label set with `agent` and `region`, as sent.
    full: Vec<Labels>,
    index: HashMap<Labels, u32>,
    /// The series numbers of the previous complete cycle, in order.
    prev: Vec<u32>,
    /// This cycle's series numbers and values so far.
    cur: Vec<u32>,
    values: Vec<f64>,
    encoder: CycleEncoder,
}

impl CycleSeries {
    /// An empty set whose label sets get `agent` and `region`.
    pub fn new(agent: &str, region: &str) -> CycleSeries {
        CycleSeries {
            agent: agent.to_string(),
            region: region.to_string(),
            keys: Vec::new(),
            full: Vec::new(),
            index: HashMap::new(),
            prev: Vec::new(),
            cur: Vec::new(),
            values: Vec::new(),
            encoder: CycleEncoder::new([]),
        }
    }

    /// Starts a cycle. When the agent's id or region changed, every kept label set is
    /// forgotten, as they all carry the old ones.
    pub fn begin(&mut self, agent: &str, region: &str) {
        if agent != self.agent || region != self.region {
            *self = CycleSeries::new(agent, region);
        }
        self.cur.clear();
        self.values.clear();
    }

    /// Ends a cycle; returns true when its series differ from the previous cycle's (in which
    /// case the batch encoding of the series is made again).
    pub fn finish(&mut self) -> bool {
        if self.cur == self.prev && self.encoder.len() == self.cur.len() {
            return false;
        }
        self.prev.clone_from(&self.cur);
        self.encoder = CycleEncoder::new(self.cur.iter().map(|&i| &self.full[i as usize]));
        true
    }

    /// The cycle's self-contained batch: every series at `ts` (ms since the Unix epoch).
    /// Call after [`CycleSeries::finish`].
    pub fn encode(&self, ts: i64) -> Vec<u8> {
        self.encoder.encode(ts, &self.values)
    }

    /// The metric names of the cycle's series, in order (with repeats).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.cur
            .iter()
            .filter_map(|&i| self.keys[i as usize].metric_name())
    }

    /// The cycle's samples as label sets (with agent and region) and values, in order.
    pub fn samples(&self) -> impl Iterator<Item = (&Labels, f64)> {
        self.cur
            .iter()
            .zip(&self.values)
            .map(|(&i, &v)| (&self.full[i as usize], v))
    }

    /// Series numbered so far (every series ever seen since the last identity change).
    pub fn known(&self) -> usize {
        self.keys.len()
    }

    /// The number of the series `name`/`pairs`, numbering it when it is new.
    fn number(&mut self, name: &str, pairs: &[(&str, &str)]) -> u32 {
        let key = Labels::metric(name, pairs.iter().copied());
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let i = self.keys.len() as u32;
        self.full
            .push(with_agent_region(key.clone(), &self.agent, &self.region));
        self.index.insert(key.clone(), i);
        self.keys.push(key);
        i
    }
}

impl Sink for CycleSeries {
    fn metric(&mut self, name: &str, pairs: &[(&str, &str)], value: f64) {
        let at = self.cur.len();
        let i = match self.prev.get(at) {
            Some(&i) if same(&self.keys[i as usize], name, pairs) => i,
            _ => self.number(name, pairs),
        };
        self.cur.push(i);
        self.values.push(value);
    }

    fn len(&self) -> usize {
        self.cur.len()
    }

    fn truncate(&mut self, len: usize) {
        self.cur.truncate(len);
        self.values.truncate(len);
    }
}

/// Whether `l` is exactly the label set `Labels::metric(name, pairs)` would build. Pairs
/// with a repeated name are answered false (the caller then builds the set and looks it up).
fn same(l: &Labels, name: &str, pairs: &[(&str, &str)]) -> bool {
    let mut n = 1;
    for (i, (k, v)) in pairs.iter().enumerate() {
        if v.is_empty() {
            if pairs[..i].iter().any(|(k2, _)| k2 == k) {
                return false;
            }
            continue;
        }
        if l.get(k) != Some(*v) {
            return false;
        }
        n += 1;
    }
    n == l.len() && l.metric_name() == Some(name) && !pairs.iter().any(|(k, _)| *k == METRIC_NAME)
}

/// `l` with `agent` and `region` set, moving its pairs instead of copying them.
pub fn with_agent_region(l: Labels, agent: &str, region: &str) -> Labels {
    let mut v = l.into_vec();
    for (name, value) in [("agent", agent), ("region", region)] {
        match v.binary_search_by(|p| p.name.as_str().cmp(name)) {
            Ok(i) => value.clone_into(&mut v[i].value),
            Err(i) => v.insert(
                i,
                Label {
                    name: name.to_string(),
                    value: value.to_string(),
                },
            ),
        }
    }
    Labels::from_sorted(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_shared::codec::{Decoder, Encoder};
    use outpost_shared::{Batch, Labels};

    #[test]
    fn agent_and_region_are_set_like_with_does() {
        let cases = [
            Labels::metric("node_load1", []),
            Labels::metric("node_cpu_seconds_total", [("cpu", "0"), ("mode", "idle")]),
            // Names sorting before, between and after agent/region, and an agent label to replace.
            Labels::metric(
                "x",
                [
                    ("aaa", "1"),
                    ("agent", "old"),
                    ("device", "sda"),
                    ("zone", "z"),
                ],
            ),
        ];
        for l in cases {
            let want = l.with("agent", "web-1").with("region", "eu");
            assert_eq!(with_agent_region(l, "web-1", "eu"), want);
        }
    }

    #[test]
    fn same_agrees_with_building_the_label_set() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("m", &[]),
            ("m", &[("a", "1")]),
            ("m", &[("b", "2"), ("a", "1")]),
            ("m", &[("a", "")]),
            ("m", &[("a", "1"), ("a", "2")]),
            ("m", &[("a", ""), ("a", "2")]),
            ("m", &[("a", "2"), ("a", "")]),
            ("m", &[("__name__", "n")]),
            ("n", &[("a", "1")]),
        ];
        for (n1, p1) in cases {
            let built = Labels::metric(n1, p1.iter().copied());
            for (n2, p2) in cases {
                let other = Labels::metric(n2, p2.iter().copied());
                if same(&built, n2, p2) {
                    assert_eq!(built, other, "{n1} {p1:?} vs {n2} {p2:?}");
                }
            }
            // The plain cases are recognised.
            if !p1.iter().any(|(k, v)| v.is_empty() || *k == "__name__")
                && p1
                    .iter()
                    .map(|(k, _)| k)
                    .collect::<std::collections::HashSet<_>>()
                    .len()
                    == p1.len()
            {
                assert!(same(&built, n1, p1), "{n1} {p1:?}");
            }
        }
    }

    /// Cycles through the sink encode exactly what the batch of the same samples encodes,
    /// also when series come, go and change places.
    #[test]
    fn cycles_encode_as_their_batches_do() {
        let cycles: [&[(&str, &[(&str, &str)], f64)]; 5] = [
            &[("a", &[("x", "1")], 1.0), ("b", &[], 2.0)],
            &[("a", &[("x", "1")], 1.5), ("b", &[], 2.5)],
            &[
                ("a", &[("x", "2")], 3.0),
                ("a", &[("x", "1")], 4.0),
                ("b", &[], 5.0),
            ],
            &[("b", &[], 6.0)],
            &[
                ("a", &[("x", "2")], 7.0),
                ("b", &[("region", "other")], 8.0),
            ],
        ];
        let mut s = CycleSeries::new("web-1", "eu");
        for (n, cycle) in cycles.iter().enumerate() {
            s.begin("web-1", "eu");
            for (name, pairs, v) in *cycle {
                s.metric(name, pairs, *v);
            }
            let changed = s.finish();
            assert_eq!(changed, n != 1, "cycle {n}");
            let mut b = Batch::default();
            for (name, pairs, v) in *cycle {
                let l =
                    with_agent_region(Labels::metric(name, pairs.iter().copied()), "web-1", "eu");
                b.push(l, 1000 * n as i64, *v);
            }
            let got = s.encode(1000 * n as i64);
            assert_eq!(got, Encoder::new().encode(&b), "cycle {n}");
            assert_eq!(Decoder::new().decode(&got).unwrap(), b);
        }
        assert_eq!(s.known(), 4);
        // A new identity starts afresh.
        s.begin("web-2", "eu");
        s.metric("a", &[], 1.0);
        s.finish();
        assert_eq!(s.samples().next().unwrap().0.get("agent"), Some("web-2"));
    }

    #[test]
    fn a_failed_collector_is_taken_back() {
        let mut s = CycleSeries::new("a", "r");
        s.begin("a", "r");
        s.metric("m", &[], 1.0);
        let at = s.len();
        s.metric("n", &[], 2.0);
        s.truncate(at);
        s.finish();
        assert_eq!(s.names().collect::<Vec<_>>(), ["m"]);
    }
}
