//! `outpost-aggregator rules replay`: rules evaluated over data already stored, to try a
//! rule before enabling it or to fill a new recording rule's past.
//!
//! It works against a running aggregator, through its HTTP API, as `promtool tsdb
//! create-blocks-from rules` works against a running Prometheus: every group is evaluated
//! at each of its slots from `--from` to `--to` (Prometheus' slotting, so the timestamps are
//! those live evaluation would have used), each rule's query an instant query at the slot.
//! The recording rules' samples (stale markers included) are written back through
//! `/api/v1/write` before the next rule runs, so, unlike promtool, later rules of a group
//! see earlier ones' output. `ALERTS` and `ALERTS_FOR_STATE` are not written; the alerts
//! that would have been pending and firing are printed, with when each started, fired and
//! resolved. With `--dry-run` nothing is written.
//!
//! Replayed series land beside live ones: a timestamp written twice keeps one point, so
//! replaying a range a rule already covered rewrites the same points.

use crate::api::parse_time;
use crate::http::rfc3339;
use outpost_alerting::rule::{ALERTS_FOR_STATE_METRIC, ALERTS_METRIC, LabelMap};
use outpost_alerting::rulefile::RuleKind;
use outpost_alerting::{AlertState, Group, GroupOptions, SeriesSample};
use outpost_promql::Sample;
use outpost_shared::remote_write::{self, TimeSeries, WriteRequest};
use outpost_shared::{Labels, Point};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to replay, and where.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// The aggregator's HTTP base URL (`http://127.0.0.1:9470`).
    pub url: String,
    /// Bearer token for the aggregator's API, if it asks for one.
    pub token: Option<String>,
    /// Rule files (globs allowed).
    pub rules: Vec<String>,
    /// First and last evaluation time, ms since the Unix epoch (inclusive).
    pub from_ms: i64,
    pub to_ms: i64,
    /// Interval of groups that set none, ms.
    pub eval_interval_ms: i64,
    /// Evaluate and print, write nothing.
    pub dry_run: bool,
    /// `$externalLabels` and `$externalURL` for templates.
    pub external_labels: LabelMap,
    pub external_url: String,
}

/// Parses `--from`/`--to`: RFC 3339 or Unix seconds, as the query API takes times.
///
/// # Errors
/// The text is neither.
pub fn parse_when(s: &str) -> Result<i64, String> {
    parse_time(s)
}

/// One alert's course over the replay.
#[derive(Clone, Debug, Default)]
struct Course {
    active_at: Option<i64>,
    fired_at: Option<i64>,
    resolved_at: Option<i64>,
}

struct Client {
    agent: ureq::Agent,
    url: String,
    token: Option<String>,
}

impl Client {
    fn new(url: &str, token: Option<String>) -> Client {
        Client {
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(120)))
                .http_status_as_error(false)
                .build()
                .into(),
            url: url.trim_end_matches('/').to_string(),
            token,
        }
    }

    fn auth<B>(&self, r: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => r.header("Authorization", &format!("Bearer {t}")),
            None => r,
        }
    }

    /// An instant query at `t_ms`, as the rule engine's query function: a vector, or a
    /// scalar as one unlabelled sample.
    fn query(&self, q: &str, t_ms: i64) -> Result<Vec<Sample>, String> {
        let time = format!("{}.{:03}", t_ms.div_euclid(1000), t_ms.rem_euclid(1000));
        let mut resp = self
            .auth(self.agent.post(&format!("{}/api/v1/query", self.url)))
            .send_form([("query", q), ("time", time.as_str())])
            .map_err(|e| format!("cannot reach {}: {e}", self.url))?;
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("{}: {e}", self.url))?;
        let body: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a query answer: {e}", self.url))?;
        if body["status"] != "success" {
            return Err(body["error"].as_str().unwrap_or("query failed").to_string());
        }
        let value = |v: &Value| -> f64 {
            v.as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        let data = &body["data"];
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    let labels = s["metric"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()));
                    Sample {
                        labels: Arc::new(Labels::new(labels)),
                        point: Point {
                            ts: t_ms,
                            value: value(&s["value"][1]),
                        },
                    }
                })
                .collect()),
            Some("scalar") => Ok(vec![Sample {
                labels: Arc::new(Labels::default()),
                point: Point {
                    ts: t_ms,
                    value: value(&data["result"][1]),
                },
            }]),
            _ => Err("rule result is not a vector or scalar".into()),
        }
    }

    /// Writes samples through remote_write; returns once the aggregator has them.
    fn write(&self, samples: &[SeriesSample]) -> Result<(), String> {
        let timeseries = samples
            .iter()
            .map(|s| {
                let labels: Vec<(&str, &str)> = s
                    .labels
                    .iter()
                    .map(|l| (l.name.as_str(), l.value.as_str()))
                    .collect();
                TimeSeries::new(&labels, &[(s.ts, s.value)])
            })
            .collect();
        let body = remote_write::encode(&WriteRequest {
            timeseries,
            metadata: vec![],
        });
        let mut resp = self
            .auth(self.agent.post(&format!("{}/api/v1/write", self.url)))
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .send(&body[..])
            .map_err(|e| format!("cannot reach {}: {e}", self.url))?;
        let code = resp.status().as_u16();
        if (200..300).contains(&code) {
            Ok(())
        } else {
            Err(format!(
                "writing recorded samples: HTTP {code}: {}",
                resp.body_mut().read_to_string().unwrap_or_default().trim()
            ))
        }
    }
}

/// The slots of `g` from `from_ms` to `to_ms`, inclusive, each rounded to the nearest
/// millisecond as promtool's range queries round them (live evaluation truncates).
fn slots(g: &Group, from_ms: i64, to_ms: i64) -> impl Iterator<Item = i64> {
    let step = g.interval_ms().max(1);
    let round_up = i64::from(g.slot_sub_ms_ns() >= 500_000);
    let mut t = g.eval_timestamp_ms(from_ms) + round_up;
    if t < from_ms {
        t += step;
    }
    (0..)
        .map(move |k| t + k * step)
        .take_while(move |&t| t <= to_ms)
}

/// Whether PromQL text `expr` names metric `name` (as a whole word: not inside a longer
/// name).
fn mentions(expr: &str, name: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    expr.match_indices(name).any(|(i, _)| {
        let before = expr[..i].chars().next_back();
        let after = expr[i + name.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

fn label_text(l: &LabelMap) -> String {
    let name = l.get("alertname").cloned().unwrap_or_default();
    let rest: Vec<String> = l
        .iter()
        .filter(|(k, _)| *k != "alertname")
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{name}{{{}}}", rest.join(", "))
}

/// Replays every group; writes the report to `out` and progress to stderr.
///
/// # Errors
/// The rule files have problems, the aggregator cannot be reached, or a write is refused.
/// A rule whose query fails is reported and the replay goes on.
pub fn run(opts: &ReplayOptions, out: &mut dyn Write) -> Result<(), String> {
    if opts.to_ms < opts.from_ms {
        return Err(format!(
            "--to ({}) is before --from ({})",
            rfc3339(opts.to_ms),
            rfc3339(opts.from_ms)
        ));
    }
    if !(opts.url.starts_with("http://") || opts.url.starts_with("https://")) {
        return Err(format!(
            "--url {:?}: give the aggregator's URL with its scheme, such as http://127.0.0.1:9470",
            opts.url
        ));
    }
    let files = crate::rules::load_files(&opts.rules).map_err(|p| p.join("\n"))?;
    if files.is_empty() {
        return Err(format!("no rule file matches {}", opts.rules.join(", ")));
    }
    let gopts = GroupOptions {
        default_interval_ms: opts.eval_interval_ms,
        external_labels: opts.external_labels.clone(),
        external_url: opts.external_url.clone(),
        ..GroupOptions::default()
    };
    let client = Client::new(&opts.url, opts.token.clone());
    // Fails early, with the address, when the aggregator is not there.
    client.query("vector(1)", opts.from_ms)?;
    let w = |out: &mut dyn Write, s: String| {
        let _ = writeln!(out, "{s}");
    };
    let mut courses: BTreeMap<(String, LabelMap), Vec<Course>> = BTreeMap::new();
    let groups: Vec<Group> = files
        .iter()
        .flat_map(|f| Group::from_file(f, &gopts))
        .collect();
    let total: usize = groups
        .iter()
        .map(|g| slots(g, opts.from_ms, opts.to_ms).count() * g.rules().len())
        .sum();
    if total > 100_000 {
        eprintln!(
            "this replay evaluates {total} rule queries, each an HTTP request to {}; narrow --from/--to or raise --eval-interval for a shorter run",
            opts.url
        );
    }
    if opts.dry_run {
        // What a dry run cannot show: rules reading series that earlier rules of this replay
        // record read what the store holds instead.
        let recorded: Vec<String> = groups
            .iter()
            .flat_map(|g| g.rules())
            .filter_map(|r| match &r.spec.kind {
                RuleKind::Record(n) => Some(n.clone()),
                RuleKind::Alert(_) => None,
            })
            .collect();
        for g in &groups {
            for r in g.rules() {
                if let Some(n) = recorded.iter().find(|n| mentions(&r.spec.expr, n)) {
                    w(
                        out,
                        format!(
                            "note: dry run: {:?} reads {n}, which this replay records but a dry run does not write; its results come from what the store already holds",
                            r.name()
                        ),
                    );
                }
            }
        }
    }
    let mut last_progress = Instant::now();
    {
        for mut group in groups {
            let times: Vec<i64> = slots(&group, opts.from_ms, opts.to_ms).collect();
            let n_rules = group.rules().len();
            let mut written = vec![0usize; n_rules];
            let mut first_error: Vec<Option<String>> = vec![None; n_rules];
            let mut write_error = None;
            for (k, &ts) in times.iter().enumerate() {
                let mut append = |batch: &[SeriesSample]| -> Result<(), String> {
                    let keep: Vec<SeriesSample> = batch
                        .iter()
                        .filter(|s| {
                            !matches!(
                                s.labels.metric_name(),
                                Some(ALERTS_METRIC | ALERTS_FOR_STATE_METRIC)
                            )
                        })
                        .cloned()
                        .collect();
                    if keep.is_empty() || opts.dry_run {
                        return Ok(());
                    }
                    client.write(&keep).inspect_err(|e| {
                        write_error.get_or_insert_with(|| e.clone());
                    })
                };
                let report = group.eval(ts, &|q, t| client.query(q, t), &mut append);
                if let Some(e) = write_error.take() {
                    return Err(e);
                }
                for (i, r) in report.rules.iter().enumerate() {
                    if let Some(e) = &r.error {
                        first_error[i].get_or_insert_with(|| format!("at {}: {e}", rfc3339(ts)));
                    } else if matches!(group.rules()[i].spec.kind, RuleKind::Record(_)) {
                        written[i] += r.samples;
                    }
                }
                for rule in group.rules() {
                    let RuleKind::Alert(name) = &rule.spec.kind else {
                        continue;
                    };
                    for a in rule.alerts() {
                        let list = courses.entry((name.clone(), a.labels.clone())).or_default();
                        if a.state == AlertState::Inactive {
                            if let Some(c) = list.last_mut().filter(|c| c.resolved_at.is_none()) {
                                c.resolved_at = a.resolved_at_ms;
                            }
                            continue;
                        }
                        if list
                            .last()
                            .is_none_or(|c| c.active_at != Some(a.active_at_ms))
                        {
                            list.push(Course {
                                active_at: Some(a.active_at_ms),
                                ..Course::default()
                            });
                        }
                        if let Some(c) = list.last_mut() {
                            c.fired_at = a.fired_at_ms;
                        }
                    }
                }
                if last_progress.elapsed() >= Duration::from_secs(5) {
                    last_progress = Instant::now();
                    eprintln!(
                        "replaying group {:?}: {}/{} evaluations ({}%), at {}",
                        group.name(),
                        k + 1,
                        times.len(),
                        (k + 1) * 100 / times.len().max(1),
                        rfc3339(ts)
                    );
                }
            }
            if times.is_empty() {
                w(
                    out,
                    format!(
                        "group {:?} ({}): no evaluation from {} to {} (its interval is {}s)",
                        group.name(),
                        group.file(),
                        rfc3339(opts.from_ms),
                        rfc3339(opts.to_ms),
                        group.interval_ms() as f64 / 1000.0
                    ),
                );
                continue;
            }
            w(
                out,
                format!(
                    "group {:?} ({}): {} evaluations every {}s from {} to {}",
                    group.name(),
                    group.file(),
                    times.len(),
                    group.interval_ms() as f64 / 1000.0,
                    times.first().map(|&t| rfc3339(t)).unwrap_or_default(),
                    times.last().map(|&t| rfc3339(t)).unwrap_or_default(),
                ),
            );
            for (i, rule) in group.rules().iter().enumerate() {
                let line = match &rule.spec.kind {
                    RuleKind::Record(name) => format!(
                        "  record {name}: {} samples {}",
                        written[i],
                        if opts.dry_run {
                            "(dry run: not written)"
                        } else {
                            "written"
                        }
                    ),
                    RuleKind::Alert(name) => {
                        let n: usize = courses
                            .iter()
                            .filter(|((r, _), _)| r == name)
                            .map(|(_, list)| list.len())
                            .sum();
                        format!("  alert {name}: {n} alerts")
                    }
                };
                w(out, line);
                if let Some(e) = &first_error[i] {
                    w(out, format!("    first error {e}"));
                }
            }
        }
    }
    let mut rows: Vec<(&LabelMap, &Course)> = courses
        .iter()
        .flat_map(|((_, l), list)| list.iter().map(move |c| (l, c)))
        .collect();
    rows.sort_by_key(|(l, c)| (c.active_at, (*l).clone()));
    w(out, format!("alerts: {}", rows.len()));
    for (labels, c) in rows {
        let when = |t: Option<i64>| t.map(rfc3339).unwrap_or_else(|| "-".into());
        w(
            out,
            format!(
                "  {}  pending {}  firing {}  resolved {}",
                label_text(labels),
                when(c.active_at),
                when(c.fired_at),
                when(c.resolved_at)
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::mentions;

    #[test]
    fn names_are_found_as_whole_words() {
        assert!(mentions("job:req:rate5m > 1", "job:req:rate5m"));
        assert!(mentions(
            "sum(rate(x[5m])) / ignoring(a) job:req",
            "job:req"
        ));
        assert!(!mentions("job:req:rate5m > 1", "job:req"));
        assert!(!mentions("my_up == 0", "up"));
        assert!(mentions("up{job=\"a\"} == 0", "up"));
    }
}
