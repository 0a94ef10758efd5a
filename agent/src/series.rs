//! The series of the collection cycles, kept from one cycle to the next.
//!
//! A host yields the same few hundred series every cycle, in the same order. [`CycleSeries`]
//! is the collectors' [`Sink`] for a cycle: it recognises a series it saw in the previous
//! cycle at the same position by comparing the name and pairs with those it was first given
//! for that series (byte comparisons in order: no allocation, no hashing, no label lookups),
//! and only builds and numbers the label sets of series it has not seen. Every label set
//! carries the agent's `agent` and `region` labels, added once.
//! While the list of series stays the same, the batch encoding of its strings and series is
//! reused too ([`CycleEncoder`]), so a cycle costs its values' codes.

use crate::collect::Sink;
use outpost_shared::codec::CycleEncoder;
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
    /// Per series number: the name and pairs it was first given, as [`given`] writes them.
    given: Vec<Vec<u8>>,
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
            given: Vec::new(),
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
        self.given.push(given(name, pairs));
        self.index.insert(key.clone(), i);
        self.keys.push(key);
        i
    }
}

impl Sink for CycleSeries {
    fn metric(&mut self, name: &str, pairs: &[(&str, &str)], value: f64) {
        let at = self.cur.len();
        let i = match self.prev.get(at) {
            Some(&i) if same_input(&self.given[i as usize], name, pairs) => i,
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

/// `name` and `pairs` as one byte string: each piece as its length (u32 LE) and bytes.
fn given(name: &str, pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + name.len() + pairs.len() * 24);
    for piece in std::iter::once(name).chain(pairs.iter().flat_map(|(k, v)| [*k, *v])) {
        out.extend_from_slice(&(piece.len() as u32).to_le_bytes());
        out.extend_from_slice(piece.as_bytes());
    }
    out
}

/// Whether `name` and `pairs` are exactly what [`given`] wrote into `g` (so they build the
/// same label set), compared piece by piece without building anything.
fn same_input(g: &[u8], name: &str, pairs: &[(&str, &str)]) -> bool {
    let mut rest = g;
    let mut take = |piece: &str| {
        let b = piece.as_bytes();
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return false;
        };
        if u32::from_le_bytes(*len) as usize != b.len() || !tail.starts_with(b) {
            return false;
        }
        rest = &tail[b.len()..];
        true
    };
    take(name) && pairs.iter().all(|(k, v)| take(k) && take(v)) && rest.is_empty()
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
    fn the_same_input_is_recognised_and_nothing_else() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("m", &[]),
            ("m", &[("a", "1")]),
            ("m", &[("a", "1"), ("b", "2")]),
            ("m", &[("b", "2"), ("a", "1")]),
            ("m", &[("a", "")]),
            ("m", &[("a", "1"), ("a", "2")]),
            ("m", &[("a1", "")]),
            ("m", &[("a", "1\u{0}")]),
            ("ma", &[]),
            ("m", &[("", "a")]),
            ("n", &[("a", "1")]),
        ];
        for (i, (n1, p1)) in cases.iter().enumerate() {
            let g = given(n1, p1);
            for (j, (n2, p2)) in cases.iter().enumerate() {
                assert_eq!(same_input(&g, n2, p2), i == j, "{n1} {p1:?} vs {n2} {p2:?}");
            }
        }
    }

    /// A series first numbered from other pairs (same label set, another order) is still
    /// found, through its label set.
    #[test]
    fn the_same_label_set_from_other_pairs_is_one_series() {
        let mut s = CycleSeries::new("a", "r");
        for order in [[("x", "1"), ("y", "2")], [("y", "2"), ("x", "1")]] {
            s.begin("a", "r");
            s.metric("m", &order, 1.0);
            s.finish();
        }
        assert_eq!(s.known(), 1);
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
