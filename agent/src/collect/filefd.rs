//! `/proc/sys/fs/file-nr` (collector "filefd"): `node_filefd_allocated` and
//! `node_filefd_maximum`.

use super::{CollectError, Collector, Roots, Sink, Source, num, parse_error};

/// file-nr holds three numbers: allocated handles, free allocated handles (always 0 since
/// Linux 2.6) and the maximum.
pub fn parse_file_nr(text: &str, out: &mut (impl Sink + ?Sized)) -> Result<(), String> {
    let cols: Vec<&str> = text.split_ascii_whitespace().collect();
    let [allocated, _, maximum] = cols[..] else {
        return Err(format!(
            "{} columns instead of 3: {:?}",
            cols.len(),
            text.trim_end()
        ));
    };
    let allocated: u64 = num(allocated, "allocated")?;
    let maximum: u64 = num(maximum, "maximum")?;
    out.metric("node_filefd_allocated", &[], allocated as f64);
    out.metric("node_filefd_maximum", &[], maximum as f64);
    Ok(())
}

/// Collector "filefd".
pub struct FilefdCollector {
    path: Source,
    buf: String,
}

impl FilefdCollector {
    pub fn new(roots: &Roots) -> Self {
        FilefdCollector {
            path: Source::new(roots.proc.join("sys/fs/file-nr")),
            buf: String::new(),
        }
    }
}

impl Collector for FilefdCollector {
    fn name(&self) -> &'static str {
        "filefd"
    }

    fn collect(&mut self, _now_ms: i64, out: &mut dyn Sink) -> Result<(), CollectError> {
        self.path.read(&mut self.buf)?;
        parse_file_nr(&self.buf, out).map_err(|m| parse_error(&self.path, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::render;

    #[test]
    fn allocated_and_maximum() {
        let cases: &[(&str, Result<[&str; 2], &str>)] = &[
            (
                "844\t0\t2466170\n",
                Ok([
                    "node_filefd_allocated{} 844",
                    "node_filefd_maximum{} 2466170",
                ]),
            ),
            (
                "1024 0 1048576\n",
                Ok([
                    "node_filefd_allocated{} 1024",
                    "node_filefd_maximum{} 1048576",
                ]),
            ),
            ("844 0\n", Err("2 columns instead of 3: \"844 0\"")),
            ("x 0 1\n", Err("allocated: \"x\" is not a number")),
        ];
        for (text, want) in cases {
            let mut out = Vec::new();
            let got = parse_file_nr(text, &mut out).map(|()| render(&out));
            let want = want
                .map(|w| w.map(String::from).to_vec())
                .map_err(String::from);
            assert_eq!(got, want, "{text:?}");
        }
    }
}
