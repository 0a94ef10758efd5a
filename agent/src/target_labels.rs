//! Attaching target labels to scraped and pushed samples, as Prometheus does with
//! `honor_labels: false`: a label of the sample that clashes with a target label (`job`,
//! `instance`, `agent`, `region`, static labels) is kept as `exported_<name>` (prefixed again
//! while that name is taken too), and the target's value wins. Pure.

use outpost_shared::Labels;
use outpost_shared::model::METRIC_NAME;

/// Builds a series' labels from a sample's name and own labels plus `target` labels.
pub fn attach<'a>(
    name: &str,
    sample: impl IntoIterator<Item = (&'a str, &'a str)>,
    target: &[(String, String)],
) -> Labels {
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(8 + target.len());
    pairs.push((METRIC_NAME.to_string(), name.to_string()));
    for (n, v) in sample {
        if n != METRIC_NAME {
            pairs.push((n.to_string(), v.to_string()));
        }
    }
    for (tn, _) in target {
        if let Some(i) = pairs.iter().position(|(n, v)| n == tn && !v.is_empty()) {
            let mut renamed = format!("exported_{tn}");
            while pairs.iter().any(|(n, _)| *n == renamed)
                || target.iter().any(|(n, _)| *n == renamed)
            {
                renamed.insert_str(0, "exported_");
            }
            pairs[i].0 = renamed;
        }
    }
    pairs.extend(target.iter().cloned());
    Labels::new(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn clashing_labels_become_exported() {
        let target = t(&[
            ("job", "app"),
            ("instance", "127.0.0.1:8080"),
            ("agent", "web-1"),
        ]);
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[],
                r#"m{agent="web-1", instance="127.0.0.1:8080", job="app"}"#,
            ),
            (
                &[("job", "inner")],
                r#"m{agent="web-1", exported_job="inner", instance="127.0.0.1:8080", job="app"}"#,
            ),
            (
                &[("job", "a"), ("exported_job", "b")],
                r#"m{agent="web-1", exported_exported_job="a", exported_job="b", instance="127.0.0.1:8080", job="app"}"#,
            ),
            (
                &[("agent", "x"), ("path", "/")],
                r#"m{agent="web-1", exported_agent="x", instance="127.0.0.1:8080", job="app", path="/"}"#,
            ),
            // An empty value is an absent label: nothing to keep.
            (
                &[("job", "")],
                r#"m{agent="web-1", instance="127.0.0.1:8080", job="app"}"#,
            ),
        ];
        for (sample, want) in cases {
            assert_eq!(
                attach("m", sample.iter().copied(), &target).to_string(),
                *want
            );
        }
    }

    #[test]
    fn a_name_label_in_the_sample_cannot_rename_the_series() {
        let l = attach("m", [("__name__", "other")], &t(&[("job", "j")]));
        assert_eq!(l.metric_name(), Some("m"));
    }
}
