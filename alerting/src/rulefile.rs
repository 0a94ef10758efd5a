//! Rule files in Prometheus' format, read with `serde-saphyr` and checked as
//! `promtool check rules` checks them (Prometheus 2.42's `model/rulefmt`), every problem
//! named with file, line, group and rule.
//!
//! ```yaml
//! groups:
//!   - name: node
//!     interval: 30s          # optional; the caller's default otherwise
//!     limit: 10              # optional; 0 means no limit
//!     rules:
//!       - record: instance:node_cpu:rate5m
//!         expr: sum by (instance) (rate(node_cpu_seconds_total{mode!="idle"}[5m]))
//!       - alert: HostDown
//!         expr: up == 0
//!         for: 5m
//!         keep_firing_for: 10m
//!         labels: { severity: page }
//!         annotations: { summary: "{{ $labels.instance }} is down" }
//! ```

use crate::duration::parse_duration;
use crate::template::check_alert_template;
use outpost_promql::Expr;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// A rule file that passed validation: its groups in file order.
#[derive(Clone, Debug)]
pub struct RuleFile {
    /// The file name as given to [`parse_rule_file`] (used in group identity and hashes).
    pub file: String,
    /// The groups, in file order.
    pub groups: Vec<GroupSpec>,
}

/// One group of a rule file.
#[derive(Clone, Debug)]
pub struct GroupSpec {
    /// The group's name, unique within its file.
    pub name: String,
    /// The evaluation interval in milliseconds, if the file sets one (the caller's global
    /// default otherwise, as Prometheus' `evaluation_interval`).
    pub interval_ms: Option<i64>,
    /// The most series a recording rule and the most alerts an alerting rule of this group
    /// may produce in one evaluation; 0 for no limit (Prometheus' `limit`).
    pub limit: usize,
    /// The rules, in the order they are evaluated.
    pub rules: Vec<RuleSpec>,
}

/// What a rule is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleKind {
    /// `record: <metric name>`.
    Record(String),
    /// `alert: <alert name>`.
    Alert(String),
}

/// One rule as written, with its expression planned.
#[derive(Clone, Debug)]
pub struct RuleSpec {
    /// Recording or alerting, with its name.
    pub kind: RuleKind,
    /// The expression as written (Prometheus' rules API shows it like this).
    pub expr: String,
    /// The planned expression.
    pub plan: Expr,
    /// `for`: how long, in milliseconds, an alert stays pending before it fires; 0 for
    /// recording rules.
    pub for_ms: i64,
    /// `keep_firing_for`: how long, in milliseconds, a firing alert keeps firing after its
    /// expression stops returning it; 0 for recording rules.
    pub keep_firing_for_ms: i64,
    /// Labels added to every output series or alert (templates, for alerting rules).
    pub labels: BTreeMap<String, String>,
    /// Annotations of every alert (templates); empty for recording rules.
    pub annotations: BTreeMap<String, String>,
    /// The rule's line in the file (1-based), for messages.
    pub line: usize,
}

impl RuleSpec {
    /// The rule's name: the recorded metric or the alert name.
    pub fn name(&self) -> &str {
        match &self.kind {
            RuleKind::Record(n) | RuleKind::Alert(n) => n,
        }
    }
}

/// One thing wrong with a rule file, with as much of its place as is known. Displays as
/// `file: line:col: group "g", rule 2, "Name": message`, as `promtool check rules` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleProblem {
    /// The file name.
    pub file: String,
    /// 1-based line and column of the offending node, when known.
    pub line: Option<(usize, usize)>,
    /// The group's name, for problems inside a group.
    pub group: Option<String>,
    /// The rule's 1-based index in its group and its name (empty when it has none), for
    /// problems with a rule.
    pub rule: Option<(usize, String)>,
    /// What is wrong, in Prometheus' words where it has them.
    pub message: String,
}

impl fmt::Display for RuleProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file)?;
        if let Some((l, c)) = self.line {
            write!(f, "{l}:{c}: ")?;
        }
        if let Some(g) = &self.group {
            write!(f, "group {g:?}, ")?;
        }
        if let Some((i, n)) = &self.rule {
            write!(f, "rule {i}, {n:?}: ")?;
        }
        f.write_str(&self.message)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    groups: Vec<Spanned<RawGroup>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    #[serde(default)]
    name: String,
    interval: Option<Spanned<String>>,
    #[serde(default)]
    limit: i64,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    record: Option<Spanned<String>>,
    alert: Option<Spanned<String>>,
    expr: Option<Spanned<String>>,
    #[serde(rename = "for")]
    for_: Option<Spanned<String>>,
    keep_firing_for: Option<Spanned<String>>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

fn loc<T>(s: &Spanned<T>) -> Option<(usize, usize)> {
    let l = s.referenced.line() as usize;
    (l > 0).then_some((l, s.referenced.column() as usize))
}

/// Prometheus' metric name syntax: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_valid_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// Prometheus' label name syntax: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// Reads and validates a rule file. `file` names it in problems.
///
/// # Errors
/// Every problem found, in file order: YAML that does not parse or has unknown keys (one
/// problem with the parser's position), empty or repeated group names, bad `interval`,
/// negative `limit`, and per rule: both or neither of `record`/`alert`, a missing or
/// unparsable `expr`, a bad or misplaced `for`/`keep_firing_for`, annotations on a
/// recording rule, an invalid recorded metric name, invalid label or annotation names, and
/// label or annotation templates that do not parse.
pub fn parse_rule_file(file: &str, yaml: &str) -> Result<RuleFile, Vec<RuleProblem>> {
    let problem =
        |line, group: Option<&str>, rule: Option<(usize, &str)>, message: String| RuleProblem {
            file: file.to_string(),
            line,
            group: group.map(str::to_string),
            rule: rule.map(|(i, n)| (i, n.to_string())),
            message,
        };
    let raw: RawFile = if yaml.trim().is_empty() {
        RawFile { groups: Vec::new() }
    } else {
        serde_saphyr::from_str(yaml).map_err(|e| {
            let line = e
                .location()
                .map(|l| (l.line() as usize, l.column() as usize));
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            vec![problem(
                line,
                None,
                None,
                first.strip_prefix("error: ").unwrap_or(first).to_string(),
            )]
        })?
    };
    let mut problems = Vec::new();
    let mut seen: HashMap<String, ()> = HashMap::new();
    let mut groups = Vec::new();
    for g in raw.groups {
        let gl = loc(&g);
        let g = g.value;
        let gname = g.name.as_str();
        if gname.is_empty() {
            problems.push(problem(
                gl,
                None,
                None,
                "Groupname must not be empty".into(),
            ));
        }
        if seen.insert(g.name.clone(), ()).is_some() {
            problems.push(problem(
                gl,
                None,
                None,
                format!("groupname: \"{gname}\" is repeated in the same file"),
            ));
        }
        let interval_ms = match &g.interval {
            None => None,
            Some(i) => match parse_duration(&i.value) {
                // As Prometheus: a zero interval means the default one.
                Ok(0) => None,
                Ok(ms) => Some(ms),
                Err(e) => {
                    problems.push(problem(loc(i), Some(gname), None, format!("interval: {e}")));
                    None
                }
            },
        };
        if g.limit < 0 {
            problems.push(problem(
                gl,
                Some(gname),
                None,
                format!("limit: must not be negative, got {}", g.limit),
            ));
        }
        let mut rules = Vec::new();
        for (i, r) in g.rules.into_iter().enumerate() {
            let rl = loc(&r);
            let r = r.value;
            let name = r
                .alert
                .as_ref()
                .filter(|a| !a.value.is_empty())
                .or(r.record.as_ref())
                .map(|s| s.value.clone())
                .unwrap_or_default();
            let mut rp = |line: Option<(usize, usize)>, msg: String| {
                problems.push(problem(line.or(rl), Some(gname), Some((i + 1, &name)), msg));
            };
            let record = r.record.as_ref().filter(|s| !s.value.is_empty());
            let alert = r.alert.as_ref().filter(|s| !s.value.is_empty());
            let kind = match (record, alert) {
                (Some(rec), Some(_)) => {
                    rp(
                        loc(rec),
                        "only one of 'record' and 'alert' must be set".into(),
                    );
                    None
                }
                (None, None) => {
                    rp(
                        r.record.as_ref().and_then(loc),
                        "one of 'record' or 'alert' must be set".into(),
                    );
                    None
                }
                (Some(rec), None) => Some(RuleKind::Record(rec.value.clone())),
                (None, Some(a)) => Some(RuleKind::Alert(a.value.clone())),
            };
            let expr_text = r.expr.as_ref().map(|e| e.value.clone()).unwrap_or_default();
            let plan = match &r.expr {
                Some(e) if !e.value.trim().is_empty() => match outpost_promql::parse(&e.value) {
                    Ok(p) => Some(p),
                    Err(err) => {
                        rp(loc(e), format!("could not parse expression: {err}"));
                        None
                    }
                },
                _ => {
                    rp(
                        r.expr.as_ref().and_then(loc),
                        "field 'expr' must be set in rule".into(),
                    );
                    None
                }
            };
            let mut dur = |field: &str, v: &Option<Spanned<String>>| -> i64 {
                match v {
                    None => 0,
                    Some(s) => match parse_duration(&s.value) {
                        Ok(ms) => ms,
                        Err(e) => {
                            rp(loc(s), format!("{field}: {e}"));
                            0
                        }
                    },
                }
            };
            let for_ms = dur("for", &r.for_);
            let keep_ms = dur("keep_firing_for", &r.keep_firing_for);
            if let Some(rec) = record {
                if !r.annotations.is_empty() {
                    rp(
                        loc(rec),
                        "invalid field 'annotations' in recording rule".into(),
                    );
                }
                if for_ms != 0 {
                    rp(loc(rec), "invalid field 'for' in recording rule".into());
                }
                if keep_ms != 0 {
                    rp(
                        loc(rec),
                        "invalid field 'keep_firing_for' in recording rule".into(),
                    );
                }
                if !is_valid_metric_name(&rec.value) {
                    rp(
                        loc(rec),
                        format!("invalid recording rule name: {}", rec.value),
                    );
                }
            }
            for k in r.labels.keys() {
                if !is_valid_label_name(k) || k == "__name__" {
                    rp(None, format!("invalid label name: {k}"));
                }
            }
            for k in r.annotations.keys() {
                if !is_valid_label_name(k) {
                    rp(None, format!("invalid annotation name: {k}"));
                }
            }
            if let Some(a) = alert {
                for (what, map) in [("label", &r.labels), ("annotation", &r.annotations)] {
                    for (k, v) in map {
                        if let Err(e) = check_alert_template(&a.value, v) {
                            rp(None, format!("{what} {k:?}: {e}"));
                        }
                    }
                }
            }
            if let (Some(kind), Some(plan)) = (kind, plan) {
                rules.push(RuleSpec {
                    kind,
                    expr: expr_text,
                    plan,
                    for_ms,
                    keep_firing_for_ms: keep_ms,
                    labels: r.labels,
                    annotations: r.annotations,
                    line: rl.map(|l| l.0).unwrap_or(0),
                });
            }
        }
        groups.push(GroupSpec {
            name: g.name,
            interval_ms,
            limit: usize::try_from(g.limit).unwrap_or(0),
            rules,
        });
    }
    if problems.is_empty() {
        Ok(RuleFile {
            file: file.to_string(),
            groups,
        })
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests;
