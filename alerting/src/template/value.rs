//! [`Value`]: what a template expression evaluates to, with the Go types Prometheus' template
//! data and functions have, so that printing, truthiness, comparison and error messages come
//! out as Go's `text/template` gives them.

use std::collections::BTreeMap;
use std::rc::Rc;

/// One element of a `query` result as templates see it (Prometheus' `template.sample`):
/// the series' labels, metric name included, and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct QuerySample {
    /// Label name → value, `__name__` included when the series has one.
    pub labels: BTreeMap<String, String>,
    /// The sample's value.
    pub value: f64,
}

/// The data an alert's labels and annotations are expanded with (Prometheus'
/// `template.AlertTemplateData`): `.Labels`, `.ExternalLabels`, `.ExternalURL`, `.Value`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AlertData {
    /// The alert's labels as the query returned them (metric name removed by the rule).
    pub labels: BTreeMap<String, String>,
    /// The aggregator's external labels.
    pub external_labels: BTreeMap<String, String>,
    /// The URL under which the aggregator is reached, as configured.
    pub external_url: String,
    /// The alert's value at this evaluation.
    pub value: f64,
}

/// A template value, typed as its Go counterpart.
#[derive(Clone, Debug)]
pub enum Value {
    /// A nil interface (a missing value, `nil`).
    Nil,
    /// `bool`.
    Bool(bool),
    /// `int` (integer constants in the template, `len`).
    Int(i64),
    /// `float64` (`$value`, `value`, `parseDuration`).
    Float(f64),
    /// `string`.
    Str(String),
    /// `html/template.HTML`, from `safeHtml`.
    Html(String),
    /// `map[string]string`: label sets.
    Map(Rc<BTreeMap<String, String>>),
    /// `*template.sample`, from `first` or ranging over a query result.
    Sample(Rc<QuerySample>),
    /// `template.queryResult`, from `query`.
    Samples(Rc<Vec<Rc<QuerySample>>>),
    /// The alert template data.
    Data(Rc<AlertData>),
    /// `*time.Time`, from `toTime`, as nanoseconds since the Unix epoch.
    Time(i64),
    /// `map[string]interface {}`, from `args`: `arg0`, `arg1`, ….
    Args(Rc<BTreeMap<String, Value>>),
    /// `[]string` (Alertmanager: `.Names`, `.Values`, `stringSlice`).
    Strings(Rc<Vec<String>>),
    /// Alertmanager's `template.KV` (label sets with `.SortedPairs`, `.Names`, `.Values`,
    /// `.Remove`).
    Kv(Rc<BTreeMap<String, String>>),
    /// Alertmanager's `template.Pairs`, from `.SortedPairs` (name, value).
    Pairs(Rc<Vec<(String, String)>>),
    /// Alertmanager's `template.Pair` (`.Name`, `.Value`).
    Pair(Rc<(String, String)>),
    /// Alertmanager's notification data (`*template.Data`).
    AmData(Rc<crate::amtemplate::NotificationData>),
    /// Alertmanager's `template.Alerts` (with `.Firing`, `.Resolved`) when the flag is
    /// true, `[]template.Alert` (what those return) when false.
    AmAlerts(Rc<Vec<crate::amtemplate::NotificationAlert>>, bool),
    /// Alertmanager's `template.Alert`.
    AmAlert(Rc<crate::amtemplate::NotificationAlert>),
}

impl Value {
    /// The Go type's name, as Go's error messages print it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::Html(_) => "template.HTML",
            Value::Map(_) => "map[string]string",
            Value::Sample(_) => "*template.sample",
            Value::Samples(_) => "template.queryResult",
            Value::Data(_) => {
                "struct { Labels map[string]string; ExternalLabels map[string]string; ExternalURL string; Value float64 }"
            }
            Value::Time(_) => "*time.Time",
            Value::Args(_) => "map[string]interface {}",
            Value::Strings(_) => "[]string",
            Value::Kv(_) => "template.KV",
            Value::Pairs(_) => "template.Pairs",
            Value::Pair(_) => "template.Pair",
            Value::AmData(_) => "*template.Data",
            Value::AmAlerts(_, true) => "template.Alerts",
            Value::AmAlerts(_, false) => "[]template.Alert",
            Value::AmAlert(_) => "template.Alert",
        }
    }

    /// Go's `text/template` truth: false, 0, nil, and empty strings, maps and slices are
    /// false; everything else is true.
    pub fn truth(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) | Value::Html(s) => !s.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::Args(m) => !m.is_empty(),
            Value::Samples(v) => !v.is_empty(),
            Value::Strings(v) => !v.is_empty(),
            Value::Kv(m) => !m.is_empty(),
            Value::Pairs(v) => !v.is_empty(),
            Value::AmAlerts(v, _) => !v.is_empty(),
            Value::Sample(_)
            | Value::Data(_)
            | Value::Time(_)
            | Value::Pair(_)
            | Value::AmData(_)
            | Value::AmAlert(_) => true,
        }
    }

    /// The string inside a `string` (not `template.HTML`), for functions taking one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}
