//! `/proc/meminfo` (collector "meminfo"): every line as `node_memory_<Field>_bytes` when it
//! carries a `kB` unit (× 1024), else `node_memory_<Field>`, swap included.

use super::{CollectError, Collector, Roots, Sink, Source, num, parse_error};

/// Appends one series per meminfo line.
pub fn parse_meminfo(text: &str, out: &mut (impl Sink + ?Sized)) -> Result<(), String> {
    let mut name = String::with_capacity(48);
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        // Some kernels (CentOS 6) print empty lines.
        let Some(key) = fields.next() else { continue };
        let key = key
            .strip_suffix(':')
            .ok_or_else(|| format!("no ':' after the field name: {line:?}"))?;
        let v: f64 = num(fields.next().unwrap_or(""), line)?;
        let unit = fields.next();
        if fields.next().is_some() {
            return Err(format!("too many columns: {line:?}"));
        }
        name.clear();
        name.push_str("node_memory_");
        push_field(&mut name, key);
        let v = match unit {
            None => v,
            // The kernel only ever writes kB, as node_exporter presumes.
            Some(_) => {
                name.push_str("_bytes");
                v * 1024.0
            }
        };
        out.metric(&name, &[], v);
    }
    Ok(())
}

/// Appends a field name the way node_exporter rewrites it: `Active(anon)` → `Active_anon`.
fn push_field(name: &mut String, key: &str) {
    match (key.find('('), key.rfind(')')) {
        (Some(open), Some(close)) if open < close => {
            name.push_str(&key[..open]);
            name.push('_');
            name.push_str(&key[open + 1..close]);
            name.push_str(&key[close + 1..]);
        }
        _ => name.push_str(key),
    }
}

/// Collector "meminfo".
pub struct MeminfoCollector {
    path: Source,
    buf: String,
}

impl MeminfoCollector {
    pub fn new(roots: &Roots) -> Self {
        MeminfoCollector {
            path: Source::new(roots.proc.join("meminfo")),
            buf: String::new(),
        }
    }
}

impl Collector for MeminfoCollector {
    fn name(&self) -> &'static str {
        "meminfo"
    }

    fn collect(&mut self, _now_ms: i64, out: &mut dyn Sink) -> Result<(), CollectError> {
        self.path.read(&mut self.buf)?;
        parse_meminfo(&self.buf, out).map_err(|m| parse_error(&self.path, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::render;

    const MEMINFO: &str = "\
MemTotal:       24683656 kB
MemFree:        21528752 kB
MemAvailable:   23209908 kB
Active(anon):       1556 kB
Inactive(file):  1367692 kB
SwapTotal:       2097148 kB
SwapFree:              0 kB

HugePages_Total:       0
HugePages_Free:        0
Hugepagesize:       2048 kB
";

    #[test]
    fn every_line_with_bytes_or_plain_counts() {
        let mut out = Vec::new();
        parse_meminfo(MEMINFO, &mut out).unwrap();
        assert_eq!(
            render(&out),
            [
                "node_memory_MemTotal_bytes{} 25276063744",
                "node_memory_MemFree_bytes{} 22045442048",
                "node_memory_MemAvailable_bytes{} 23766945792",
                "node_memory_Active_anon_bytes{} 1593344",
                "node_memory_Inactive_file_bytes{} 1400516608",
                "node_memory_SwapTotal_bytes{} 2147479552",
                "node_memory_SwapFree_bytes{} 0",
                "node_memory_HugePages_Total{} 0",
                "node_memory_HugePages_Free{} 0",
                "node_memory_Hugepagesize_bytes{} 2097152",
            ]
        );
    }

    #[test]
    fn malformed_lines_are_errors() {
        let cases = [
            (
                "MemTotal 1 kB\n",
                "no ':' after the field name: \"MemTotal 1 kB\"",
            ),
            ("MemTotal: kB\n", "MemTotal: kB: \"kB\" is not a number"),
            ("MemTotal:\n", "MemTotal:: \"\" is not a number"),
            (
                "MemTotal: 1 kB x\n",
                "too many columns: \"MemTotal: 1 kB x\"",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse_meminfo(text, &mut Vec::new()),
                Err(want.to_string()),
                "{text}"
            );
        }
    }
}
