//! `/proc/vmstat` (collector "vmstat"): the fields node_exporter 1.5 reports by default
//! (`--collector.vmstat.fields`, `^(oom_kill|pgpg|pswp|pg.*fault).*`) as `node_vmstat_<field>`.
//! node_exporter types them untyped though most are counters; so do we, for its dashboards.

use super::{CollectError, Collector, FieldFilter, Roots, Sink, Source, num, parse_error};
use regex::Regex;
use std::sync::LazyLock;

/// node_exporter 1.5's default field filter.
pub static DEFAULT_FIELDS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new("^(oom_kill|pgpg|pswp|pg.*fault).*").expect("vmstat field pattern is valid")
});

/// Appends `node_vmstat_<field>` for each `field value` line whose field `fields` matches.
pub fn parse_vmstat(
    text: &str,
    fields: &mut FieldFilter,
    out: &mut (impl Sink + ?Sized),
) -> Result<(), String> {
    let mut name = String::with_capacity(48);
    fields.begin();
    for line in text.lines() {
        let mut cols = line.split_ascii_whitespace();
        let (Some(field), Some(value)) = (cols.next(), cols.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(format!("expected \"field value\": {line:?}"));
        };
        if !fields.is_match(field) {
            continue;
        }
        let v: f64 = num(value, field)?;
        name.clear();
        name.push_str("node_vmstat_");
        name.push_str(field);
        out.metric(&name, &[], v);
    }
    Ok(())
}

/// Collector "vmstat".
pub struct VmstatCollector {
    path: Source,
    buf: String,
    fields: FieldFilter,
}

impl VmstatCollector {
    pub fn new(roots: &Roots) -> Self {
        VmstatCollector {
            path: Source::new(roots.proc.join("vmstat")),
            buf: String::new(),
            fields: FieldFilter::new(&DEFAULT_FIELDS),
        }
    }
}

impl Collector for VmstatCollector {
    fn name(&self) -> &'static str {
        "vmstat"
    }

    fn collect(&mut self, _now_ms: i64, out: &mut dyn Sink) -> Result<(), CollectError> {
        self.path.read(&mut self.buf)?;
        parse_vmstat(&self.buf, &mut self.fields, out).map_err(|m| parse_error(&self.path, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::render;

    const VMSTAT: &str = "\
nr_free_pages 3441524
nr_dirty 1276
pgpgin 6715785
pgpgout 36830376
pswpin 0
pswpout 0
pgalloc_normal 70128339
pgfault 57705529
pgmajfault 4389
pgrefill 0
oom_kill 2
numa_hit 1
";

    #[test]
    fn default_fields_only() {
        let mut out = Vec::new();
        parse_vmstat(VMSTAT, &mut FieldFilter::new(&DEFAULT_FIELDS), &mut out).unwrap();
        assert_eq!(
            render(&out),
            [
                "node_vmstat_pgpgin{} 6715785",
                "node_vmstat_pgpgout{} 36830376",
                "node_vmstat_pswpin{} 0",
                "node_vmstat_pswpout{} 0",
                "node_vmstat_pgfault{} 57705529",
                "node_vmstat_pgmajfault{} 4389",
                "node_vmstat_oom_kill{} 2",
            ]
        );
    }

    #[test]
    fn malformed_lines_are_errors() {
        let cases = [
            ("pgfault\n", "expected \"field value\": \"pgfault\""),
            ("pgfault x\n", "pgfault: \"x\" is not a number"),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse_vmstat(
                    text,
                    &mut FieldFilter::new(&DEFAULT_FIELDS),
                    &mut Vec::new()
                ),
                Err(want.to_string()),
                "{text}"
            );
        }
        // A field outside the filter is not even parsed.
        assert_eq!(
            parse_vmstat(
                "nr_dirty x\n\n",
                &mut FieldFilter::new(&DEFAULT_FIELDS),
                &mut Vec::new()
            ),
            Ok(())
        );
    }
}
