//! `/proc/loadavg` (collector "loadavg"): `node_load1`, `node_load5`, `node_load15`.

use super::{CollectError, Collector, Roots, Sink, Source, num, parse_error};

const NAMES: [&str; 3] = ["node_load1", "node_load5", "node_load15"];

/// Appends the three load averages from the first three fields.
pub fn parse_loadavg(text: &str, out: &mut (impl Sink + ?Sized)) -> Result<(), String> {
    let mut fields = text.split_ascii_whitespace();
    let mut values = [0.0; 3];
    for (v, name) in values.iter_mut().zip(NAMES) {
        *v = num(fields.next().unwrap_or(""), name)?;
    }
    for (v, name) in values.into_iter().zip(NAMES) {
        out.metric(name, &[], v);
    }
    Ok(())
}

/// Collector "loadavg".
pub struct LoadavgCollector {
    path: Source,
    buf: String,
}

impl LoadavgCollector {
    pub fn new(roots: &Roots) -> Self {
        LoadavgCollector {
            path: Source::new(roots.proc.join("loadavg")),
            buf: String::new(),
        }
    }
}

impl Collector for LoadavgCollector {
    fn name(&self) -> &'static str {
        "loadavg"
    }

    fn collect(&mut self, _now_ms: i64, out: &mut dyn Sink) -> Result<(), CollectError> {
        self.path.read(&mut self.buf)?;
        parse_loadavg(&self.buf, out).map_err(|m| parse_error(&self.path, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::render;

    #[test]
    fn three_averages_or_an_error() {
        let cases: &[(&str, Result<[&str; 3], &str>)] = &[
            (
                "2.09 1.76 0.95 3/89 7561\n",
                Ok([
                    "node_load1{} 2.09",
                    "node_load5{} 1.76",
                    "node_load15{} 0.95",
                ]),
            ),
            (
                "0.00 0.01 12.50 1/1 1\n",
                Ok(["node_load1{} 0", "node_load5{} 0.01", "node_load15{} 12.5"]),
            ),
            ("2.09 1.76\n", Err("node_load15: \"\" is not a number")),
            ("", Err("node_load1: \"\" is not a number")),
            ("2.09 x 0.95\n", Err("node_load5: \"x\" is not a number")),
        ];
        for (text, want) in cases {
            let mut out = Vec::new();
            let got = parse_loadavg(text, &mut out).map(|()| render(&out));
            let want = want
                .map(|w| w.map(String::from).to_vec())
                .map_err(String::from);
            assert_eq!(got, want, "{text:?}");
            if want.is_err() {
                assert!(out.is_empty(), "partial output for {text:?}");
            }
        }
    }
}
