//! Turning one scrape's outcome into a batch, as Prometheus records a scrape: the exposed
//! samples with the target's labels attached (clashes kept as `exported_<name>`), each at its
//! own timestamp when it has one, else at the scrape's; plus `up`, `scrape_duration_seconds`
//! and `scrape_samples_scraped`. A page that does not parse is dropped whole (`up` = 0),
//! never stored in part. A series the page repeats (same labels and timestamp) keeps its
//! first sample, as Prometheus keeps it; the repeats are dropped and reported in
//! [`Report::duplicates`]. Pure: time and the fetched body are passed in.

use crate::target_labels;
use crate::textparse::{self, Format};
use outpost_shared::metadata::FamilyMetadata;
use outpost_shared::{Batch, Labels};

/// What the HTTP request brought back.
pub struct Fetched<'a> {
    pub body: &'a str,
    pub content_type: &'a str,
}

/// One scrape, ready to buffer.
pub struct Report {
    pub batch: Batch,
    pub up: bool,
    /// Samples taken from the page (0 when it failed).
    pub scraped: usize,
    /// Why the target is down.
    pub error: Option<String>,
    /// Samples dropped because their series already had a sample at that timestamp in this
    /// page, in page order (the first is kept, as Prometheus does).
    pub duplicates: Vec<Labels>,
    /// What the page declares about its families (`# HELP`, `# TYPE`, `# UNIT`); empty when
    /// the page was not read.
    pub metadata: Vec<FamilyMetadata>,
}

/// Builds the batch of one scrape of a target with labels `target` (job, instance, agent,
/// region, static labels), started at `ts` (ms) and lasting `duration_s` seconds.
pub fn build(
    fetched: Result<Fetched<'_>, String>,
    target: &[(String, String)],
    ts: i64,
    duration_s: f64,
) -> Report {
    let mut batch = Batch::default();
    let mut metadata = Vec::new();
    let outcome = fetched.and_then(|f| {
        let format = Format::from_content_type(f.content_type);
        textparse::parse_each_with_metadata(f.body, format, &mut metadata, |s| {
            let labels = target_labels::attach(
                &s.name,
                s.labels.iter().map(|(n, v)| -> (&str, &str) { (n, v) }),
                target,
            );
            batch.push(labels, s.timestamp_ms.unwrap_or(ts), s.value);
        })
        .map_err(|e| {
            format!(
                "cannot parse the {} exposition: {e}",
                match format {
                    Format::Text => "text",
                    Format::OpenMetrics => "OpenMetrics",
                }
            )
        })
    });
    let mut duplicates = Vec::new();
    let (up, scraped, error) = match outcome {
        Ok(n) => {
            let repeated = crate::push::repeated(&batch);
            if !repeated.is_empty() {
                let mut next = repeated.iter().copied().peekable();
                let mut i = 0;
                batch.series.retain_mut(|s| {
                    let repeat = next.next_if_eq(&i).is_some();
                    i += 1;
                    if repeat {
                        duplicates.push(std::mem::take(&mut s.labels));
                    }
                    !repeat
                });
            }
            (true, n, None)
        }
        Err(e) => {
            batch.series.clear();
            metadata.clear();
            (false, 0, Some(e))
        }
    };
    let meta = |name: &str| {
        Labels::new(
            std::iter::once(("__name__".to_string(), name.to_string()))
                .chain(target.iter().cloned()),
        )
    };
    batch.push(meta("up"), ts, if up { 1.0 } else { 0.0 });
    batch.push(meta("scrape_duration_seconds"), ts, duration_s);
    batch.push(meta("scrape_samples_scraped"), ts, scraped as f64);
    Report {
        batch,
        up,
        scraped,
        error,
        duplicates,
        metadata,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Vec<(String, String)> {
        [
            ("job", "app"),
            ("instance", "127.0.0.1:8080"),
            ("agent", "web-1"),
            ("region", "eu"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
    }

    fn find<'b>(b: &'b Batch, name: &str) -> Vec<&'b outpost_shared::model::SeriesPoints> {
        b.series
            .iter()
            .filter(|s| s.labels.metric_name() == Some(name))
            .collect()
    }

    #[test]
    fn samples_get_target_labels_and_scrape_metrics() {
        let body =
            "# TYPE req counter\nreq_total{code=\"200\",job=\"inner\"} 7\nmem 12 1700000000000\n";
        let r = build(
            Ok(Fetched {
                body,
                content_type: "text/plain; version=0.0.4",
            }),
            &target(),
            1_700_000_001_000,
            0.25,
        );
        assert!(r.up && r.error.is_none());
        assert_eq!(r.scraped, 2);
        assert_eq!(
            r.metadata,
            [FamilyMetadata {
                family: "req".into(),
                meta: outpost_shared::metadata::Metadata::new(
                    outpost_shared::metadata::MetricType::Counter,
                    ""
                ),
            }]
        );
        let req = find(&r.batch, "req_total");
        assert_eq!(
            req[0].labels.to_string(),
            r#"req_total{agent="web-1", code="200", exported_job="inner", instance="127.0.0.1:8080", job="app", region="eu"}"#
        );
        assert_eq!(
            (req[0].points[0].ts, req[0].points[0].value),
            (1_700_000_001_000, 7.0)
        );
        assert_eq!(
            find(&r.batch, "mem")[0].points[0].ts,
            1_700_000_000_000,
            "exposed timestamps are honoured"
        );
        for (name, v) in [
            ("up", 1.0),
            ("scrape_duration_seconds", 0.25),
            ("scrape_samples_scraped", 2.0),
        ] {
            let s = find(&r.batch, name);
            assert_eq!(s.len(), 1, "{name}");
            assert_eq!(
                s[0].labels.to_string(),
                format!(
                    r#"{name}{{agent="web-1", instance="127.0.0.1:8080", job="app", region="eu"}}"#
                )
            );
            assert_eq!(s[0].points[0].value, v, "{name}");
        }
    }

    #[test]
    fn repeated_series_keep_their_first_sample_and_are_reported() {
        let body = "# TYPE m counter\nm{l=\"a\"} 42\nm{l=\"b\"} 1\nm{l=\"a\"} 43\nm{l=\"a\"} 44\n\
                    t 1 1000\nt 2 2000\nt 3 1000\n";
        let r = build(
            Ok(Fetched {
                body,
                content_type: "text/plain",
            }),
            &target(),
            5_000,
            0.1,
        );
        assert!(r.up && r.error.is_none());
        assert_eq!(
            r.scraped, 7,
            "scrape_samples_scraped counts the page as it came"
        );
        let got: Vec<String> = r
            .batch
            .series
            .iter()
            .filter(|s| matches!(s.labels.metric_name(), Some("m" | "t")))
            .map(|s| {
                format!(
                    "{} {} @{}",
                    s.labels.metric_name().unwrap_or_default(),
                    s.points[0].value,
                    s.points[0].ts
                )
            })
            .collect();
        assert_eq!(got, ["m 42 @5000", "m 1 @5000", "t 1 @1000", "t 2 @2000"]);
        let dups: Vec<String> = r.duplicates.iter().map(|l| l.to_string()).collect();
        let m = r#"m{agent="web-1", instance="127.0.0.1:8080", job="app", l="a", region="eu"}"#;
        let t = r#"t{agent="web-1", instance="127.0.0.1:8080", job="app", region="eu"}"#;
        assert_eq!(dups, [m, m, t]);
    }

    #[test]
    fn a_broken_page_stores_nothing_of_it_and_reports_down() {
        let body = "good 1\nbad{ 2\n";
        let r = build(
            Ok(Fetched {
                body,
                content_type: "text/plain",
            }),
            &target(),
            5,
            0.1,
        );
        assert!(!r.up);
        assert!(
            r.error
                .as_deref()
                .unwrap()
                .contains("cannot parse the text exposition: line 2"),
            "{:?}",
            r.error
        );
        let names: Vec<_> = r
            .batch
            .series
            .iter()
            .filter_map(|s| s.labels.metric_name())
            .collect();
        assert_eq!(
            names,
            ["up", "scrape_duration_seconds", "scrape_samples_scraped"]
        );
        assert_eq!(find(&r.batch, "up")[0].points[0].value, 0.0);
        assert!(r.metadata.is_empty());
    }

    #[test]
    fn openmetrics_is_chosen_by_content_type() {
        let body = "m 1\n";
        let r = build(
            Ok(Fetched {
                body,
                content_type: "application/openmetrics-text; version=1.0.0",
            }),
            &target(),
            5,
            0.1,
        );
        assert!(
            r.error.as_deref().unwrap().contains("OpenMetrics")
                && r.error.as_deref().unwrap().contains("# EOF"),
            "{:?}",
            r.error
        );
        let r = build(Err("connection refused".into()), &target(), 5, 0.1);
        assert_eq!(
            (r.up, r.scraped, r.error.as_deref()),
            (false, 0, Some("connection refused"))
        );
    }
}
