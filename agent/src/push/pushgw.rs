//! Prometheus text pushed with Pushgateway's path convention:
//! `/metrics/job/<job>{/<label>/<value>}`, where a name may end in `@base64` to say its value
//! is base64url-encoded (so it can hold `/`; a lone `=` is the empty value). The path's labels
//! (the grouping key) go on every sample; a sample may repeat one with the same value but not
//! contradict it, and may not carry a timestamp, and a series may appear only once — all
//! refused whole, as Pushgateway refuses them.
//! Pure: the raw path and body come in, a batch or an error message goes out.

use crate::target_labels;
use crate::textparse::{self, Format};
use base64::Engine;
use outpost_shared::Batch;
use outpost_shared::metadata::FamilyMetadata;

fn unhex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|&c| unhex(c)),
                b.get(i + 2).and_then(|&c| unhex(c)),
            ) else {
                return Err(format!("invalid percent-encoding in {s:?}"));
            };
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once percent-decoded"))
}

fn base64_value(s: &str) -> Result<String, String> {
    if s.is_empty() || s == "=" {
        return Ok(String::new());
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bytes = engine
        .decode(s)
        .map_err(|e| format!("{s:?} is not base64url: {e}"))?;
    String::from_utf8(bytes).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

/// The grouping labels of a push path, given what follows `/metrics/` (still
/// percent-encoded), e.g. `job/batch/instance@base64/aG9zdC8x`.
pub fn grouping(path: &str) -> Result<Vec<(String, String)>, String> {
    let path = path.strip_suffix('/').unwrap_or(path);
    let segs: Vec<&str> = path.split('/').collect();
    if !segs.len().is_multiple_of(2) {
        return Err(format!(
            "label {:?} in the path has no value; the path is /metrics/job/<job>{{/<label>/<value>}}",
            segs[segs.len() - 1]
        ));
    }
    let mut out: Vec<(String, String)> = vec![];
    for pair in segs.chunks(2) {
        let raw_name = percent_decode(pair[0])?;
        let (name, b64) = match raw_name.strip_suffix("@base64") {
            Some(n) => (n.to_string(), true),
            None => (raw_name, false),
        };
        if out.is_empty() && name != "job" {
            return Err("the path must start with /metrics/job/<job>".into());
        }
        if !textparse::is_label_name(&name) || name.starts_with("__") {
            return Err(format!("{name:?} in the path is not a valid label name"));
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(format!("label {name:?} appears twice in the path"));
        }
        let value = if b64 {
            base64_value(pair[1])?
        } else {
            percent_decode(pair[1])?
        };
        if name == "job" && value.is_empty() {
            return Err("the job in the path must not be empty".into());
        }
        out.push((name, value));
    }
    if out.is_empty() {
        return Err("the path must start with /metrics/job/<job>".into());
    }
    Ok(out)
}

/// Converts a pushed exposition: every sample at `ts`, with the grouping labels and
/// `agent_labels` attached; also what the exposition declares about its families.
pub fn to_batch(
    body: &str,
    format: Format,
    group: &[(String, String)],
    agent_labels: &[(String, String)],
    ts: i64,
) -> Result<(Batch, Vec<FamilyMetadata>), String> {
    let mut target: Vec<(String, String)> = group
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .cloned()
        .collect();
    target.extend(agent_labels.iter().cloned());
    let mut batch = Batch::default();
    let mut problem: Option<String> = None;
    let mut metadata = Vec::new();
    textparse::parse_each_with_metadata(body, format, &mut metadata, |s| {
        if problem.is_some() {
            return;
        }
        if s.timestamp_ms.is_some() {
            problem = Some(format!("sample {} carries a timestamp; pushed samples must not (they are stamped on arrival)", s.name));
            return;
        }
        for (n, v) in s.labels {
            let (n, v): (&str, &str) = (n, v);
            if let Some((_, gv)) = group.iter().find(|(g, _)| g == n)
                && gv != v
            {
                problem = Some(format!("sample {} has label {n}={v:?} but the path sets {n}={gv:?}; remove one of them", s.name));
                return;
            }
        }
        let own = s.labels.iter().map(|(n, v)| -> (&str, &str) { (n, v) }).filter(|(n, _)| !group.iter().any(|(g, _)| g == n));
        batch.push(target_labels::attach(&s.name, own, &target), ts, s.value);
    })
    .map_err(|e| format!("cannot parse the pushed exposition: {e}"))?;
    if let Some(p) = problem {
        return Err(p);
    }
    super::refuse_repeats(&batch)?;
    Ok((batch, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn grouping_paths_table() {
        let ok: &[(&str, Vec<(String, String)>)] = &[
            ("job/batch", g(&[("job", "batch")])),
            ("job/batch/", g(&[("job", "batch")])),
            (
                "job/batch/instance/host-1",
                g(&[("job", "batch"), ("instance", "host-1")]),
            ),
            (
                "job/a%20b/instance/x/env/prod",
                g(&[("job", "a b"), ("instance", "x"), ("env", "prod")]),
            ),
            (
                "job@base64/L3Zhci90bXA/instance@base64/aG9zdC8x",
                g(&[("job", "/var/tmp"), ("instance", "host/1")]),
            ),
            ("job/j/path@base64/=", g(&[("job", "j"), ("path", "")])),
            (
                "job/j/path@base64/L3Zhci90bXA=",
                g(&[("job", "j"), ("path", "/var/tmp")]),
            ),
        ];
        for (p, want) in ok {
            assert_eq!(
                &grouping(p).unwrap_or_else(|e| panic!("{p}: {e}")),
                want,
                "{p}"
            );
        }
        let bad: &[(&str, &str)] = &[
            ("job", "has no value"),
            ("instance/x", "must start with /metrics/job/<job>"),
            ("job/", "has no value"),
            ("job/j/instance", "\"instance\" in the path has no value"),
            (
                "job/j/bad-name/x",
                "\"bad-name\" in the path is not a valid label name",
            ),
            ("job/j/x/1/x/2", "label \"x\" appears twice"),
            ("job@base64/!!!", "is not base64url"),
            ("job/%zz", "invalid percent-encoding"),
            ("job@base64/=", "job in the path must not be empty"),
        ];
        for (p, needle) in bad {
            let e = grouping(p).unwrap_err();
            assert!(e.contains(needle), "{p}: {e}");
        }
    }

    #[test]
    fn pushed_samples_get_grouping_and_agent_labels() {
        let body = "# TYPE done gauge\ndone{step=\"a\"} 1\ndone{step=\"b\",job=\"batch\"} 2\n";
        let b = to_batch(
            body,
            Format::Text,
            &g(&[("job", "batch"), ("instance", "h1")]),
            &g(&[("agent", "web-1")]),
            42,
        )
        .unwrap();
        assert_eq!(
            b.1.iter()
                .map(|m| (m.family.as_str(), m.meta.kind.as_str()))
                .collect::<Vec<_>>(),
            [("done", "gauge")]
        );
        let b = b.0;
        let got: Vec<String> = b
            .series
            .iter()
            .map(|s| format!("{} {} @{}", s.labels, s.points[0].value, s.points[0].ts))
            .collect();
        assert_eq!(
            got,
            [
                r#"done{agent="web-1", instance="h1", job="batch", step="a"} 1 @42"#,
                r#"done{agent="web-1", instance="h1", job="batch", step="b"} 2 @42"#,
            ]
        );
    }

    #[test]
    fn contradictions_timestamps_and_syntax_errors_are_refused() {
        let grp = g(&[("job", "batch")]);
        let e = to_batch("m{job=\"other\"} 1\n", Format::Text, &grp, &[], 1).unwrap_err();
        assert!(
            e.contains("has label job=\"other\" but the path sets job=\"batch\""),
            "{e}"
        );
        let e = to_batch("m 1 1700000000000\n", Format::Text, &grp, &[], 1).unwrap_err();
        assert!(e.contains("carries a timestamp"), "{e}");
        // A series repeated, also when the path supplies a label one line spells out.
        let repeats = [
            "# TYPE m counter\nm{l=\"a\"} 42\nm{l=\"a\"} 43\n",
            "m{l=\"a\"} 42\nm{l=\"b\"} 1\nm{l=\"a\"} 42\n",
            "m{l=\"a\"} 42\nm{job=\"batch\",l=\"a\"} 43\n",
        ];
        for body in repeats {
            let e = to_batch(body, Format::Text, &grp, &[], 1).unwrap_err();
            assert_eq!(
                e,
                "series m{job=\"batch\", l=\"a\"} appears more than once in this push; each series may be pushed once per request, so nothing of it was stored",
                "{body}"
            );
        }
        let ok = to_batch(
            "m{l=\"a\"} 1\nm{l=\"b\"} 1\nn{l=\"a\"} 1\n",
            Format::Text,
            &grp,
            &[],
            1,
        );
        assert_eq!(ok.map(|b| b.0.series.len()), Ok(3));
        let e = to_batch("m 1\nm{ 2\n", Format::Text, &grp, &[], 1).unwrap_err();
        assert!(
            e.starts_with("cannot parse the pushed exposition: line 2:"),
            "{e}"
        );
    }
}
