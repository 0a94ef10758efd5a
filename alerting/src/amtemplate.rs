//! Alertmanager 0.25's notification templates: the data a notification's texts are
//! expanded with ([`NotificationData`], Alertmanager's `template.Data`), the template set
//! they are expanded in ([`Templates`]: our default templates, then the user's files from
//! `templates:`), and the default texts every integration falls back to.
//!
//! The template language is the crate's Go `text/template` ([`crate::template`]) in its
//! Alertmanager dialect: Go's builtins plus `toUpper toLower title join match safeHtml
//! reReplaceAll stringSlice`; label sets (`.Labels`, `.GroupLabels`, …) have the methods
//! `.SortedPairs`, `.Names`, `.Values` and `.Remove`, and `.Alerts` has `.Firing` and
//! `.Resolved`. HTML bodies (email `html`) are escaped as Go's `html/template` escapes
//! them (element text and attributes; see [`Templates::execute_html`]).
//!
//! The default templates ([`DEFAULT_TEMPLATES`]) are written for Outpost and give the same
//! text as Alertmanager 0.25's `default.tmpl` for `__subject`, `__text_alert_list`,
//! `slack.default.*`, `pagerduty.default.*` and `email.default.subject`. Its
//! `email.default.html` is not reproduced byte for byte: ours is a smaller HTML page
//! carrying the same title, the same visible text in the same order (alert count and
//! group labels, "View in Alertmanager", firing then resolved alerts with their labels,
//! annotations and "Source" links, "Sent by Alertmanager") and the same links, without
//! the original's inline styles.

use crate::dispatch::{DispatchedAlert, Notification};
use crate::rule::LabelMap;
use crate::template::{Defines, Dialect, Env, Template, TemplateError, Value};
use crate::webhook::{alert_order, common, fingerprint, quote_meta};
use std::path::Path;
use std::rc::Rc;

/// Go's zero `time.Time` (`0001-01-01 00:00:00 +0000 UTC`) where times are nanoseconds
/// since the Unix epoch: a firing alert's `EndsAt` in notification data.
pub const GO_ZERO_TIME_NS: i64 = i64::MIN;

/// One alert as notification templates see it (Alertmanager's `template.Alert`).
#[derive(Clone, Debug, PartialEq)]
pub struct NotificationAlert {
    /// `firing` or `resolved`.
    pub status: String,
    /// `.Labels`.
    pub labels: LabelMap,
    /// `.Annotations`.
    pub annotations: LabelMap,
    /// `.StartsAt`, ns since the Unix epoch.
    pub starts_at_ns: i64,
    /// `.EndsAt`, ns since the Unix epoch; [`GO_ZERO_TIME_NS`] while firing.
    pub ends_at_ns: i64,
    /// `.GeneratorURL`.
    pub generator_url: String,
    /// `.Fingerprint`: the labels' fingerprint, 16 hex digits.
    pub fingerprint: String,
}

impl NotificationAlert {
    pub(crate) fn field(&self, name: &str) -> Option<Value> {
        Some(match name {
            "Status" => Value::Str(self.status.clone()),
            "Labels" => Value::Kv(Rc::new(self.labels.clone())),
            "Annotations" => Value::Kv(Rc::new(self.annotations.clone())),
            "StartsAt" => Value::Time(self.starts_at_ns),
            "EndsAt" => Value::Time(self.ends_at_ns),
            "GeneratorURL" => Value::Str(self.generator_url.clone()),
            "Fingerprint" => Value::Str(self.fingerprint.clone()),
            _ => return None,
        })
    }
}

/// The data a notification's templates are expanded with (Alertmanager's
/// `template.Data`): `.Receiver`, `.Status`, `.Alerts`, `.GroupLabels`, `.CommonLabels`,
/// `.CommonAnnotations`, `.ExternalURL`.
#[derive(Clone, Debug, PartialEq)]
pub struct NotificationData {
    /// The receiver's name as Alertmanager passes it: through Go's `regexp.QuoteMeta`.
    pub receiver: String,
    /// `firing` when any alert fires, else `resolved`.
    pub status: String,
    /// The alerts in Alertmanager's order (see [`crate::webhook::sort_alerts`]).
    pub alerts: Vec<NotificationAlert>,
    /// The group's labels.
    pub group_labels: LabelMap,
    /// Labels every alert has with the same value.
    pub common_labels: LabelMap,
    /// Annotations every alert has with the same value.
    pub common_annotations: LabelMap,
    /// The URL Alertmanager (here: the aggregator) is reached under.
    pub external_url: String,
}

impl NotificationData {
    /// The data for `n` as Alertmanager's `template.Data` builds it at the notification's
    /// time (`n.at_ms`): an alert whose end is not after it is resolved.
    /// `generator_url` gives each alert's source link (the alerting rule's graph URL).
    pub fn new(
        n: &Notification,
        external_url: &str,
        generator_url: &dyn Fn(&DispatchedAlert) -> String,
    ) -> NotificationData {
        let mut sorted: Vec<&DispatchedAlert> = n.alerts.iter().collect();
        sorted.sort_by(|a, b| alert_order(&a.labels, &b.labels));
        let labels: Vec<&LabelMap> = sorted.iter().map(|a| &a.labels).collect();
        let annotations: Vec<&LabelMap> = sorted.iter().map(|a| &a.annotations).collect();
        let alerts: Vec<NotificationAlert> = sorted
            .iter()
            .map(|a| {
                let resolved = a.resolved(n.at_ms);
                NotificationAlert {
                    status: if resolved { "resolved" } else { "firing" }.into(),
                    labels: a.labels.clone(),
                    annotations: a.annotations.clone(),
                    starts_at_ns: a.starts_at_ms.saturating_mul(1_000_000),
                    ends_at_ns: if resolved {
                        a.ends_at_ms.saturating_mul(1_000_000)
                    } else {
                        GO_ZERO_TIME_NS
                    },
                    generator_url: generator_url(a),
                    fingerprint: format!("{:016x}", fingerprint(&a.labels)),
                }
            })
            .collect();
        NotificationData {
            receiver: quote_meta(&n.receiver),
            status: if alerts.iter().any(|a| a.status == "firing") {
                "firing"
            } else {
                "resolved"
            }
            .into(),
            group_labels: n.group_labels.clone(),
            common_labels: common(&labels),
            common_annotations: common(&annotations),
            external_url: external_url.to_string(),
            alerts,
        }
    }

    /// Whether any alert fires.
    pub fn firing(&self) -> bool {
        self.status == "firing"
    }

    pub(crate) fn field(&self, name: &str) -> Option<Value> {
        Some(match name {
            "Receiver" => Value::Str(self.receiver.clone()),
            "Status" => Value::Str(self.status.clone()),
            "Alerts" => Value::AmAlerts(Rc::new(self.alerts.clone()), true),
            "GroupLabels" => Value::Kv(Rc::new(self.group_labels.clone())),
            "CommonLabels" => Value::Kv(Rc::new(self.common_labels.clone())),
            "CommonAnnotations" => Value::Kv(Rc::new(self.common_annotations.clone())),
            "ExternalURL" => Value::Str(self.external_url.clone()),
            _ => return None,
        })
    }
}

/// Outpost's default notification templates, giving the texts of Alertmanager 0.25's
/// defaults (see the module documentation for `email.default.html`).
pub const DEFAULT_TEMPLATES: &str = include_str!("amtemplate_default.tmpl");

/// A template set: the default templates and the user's template files, in which
/// configuration texts are expanded (Alertmanager's `template.Template`).
#[derive(Clone, Debug)]
pub struct Templates {
    defines: Defines,
}

impl Default for Templates {
    fn default() -> Self {
        Templates::defaults()
    }
}

impl Templates {
    /// The default templates alone.
    pub fn defaults() -> Templates {
        let mut defines = Defines::default();
        // The defaults are tested to parse; a failure would leave the set empty.
        if let Ok(t) =
            Template::parse_dialect("default.tmpl", DEFAULT_TEMPLATES, Dialect::Alertmanager)
        {
            defines.add(&t);
        }
        Templates { defines }
    }

    /// The default templates, then `files` (name, text) in order; a name defined again
    /// replaces the earlier definition, as in Alertmanager.
    ///
    /// # Errors
    /// The first file that does not parse, in Go's words with the file's name
    /// (`template: my.tmpl:3: unexpected "}" in operand`).
    pub fn with_files(files: &[(String, String)]) -> Result<Templates, TemplateError> {
        let mut t = Templates::defaults();
        for (name, text) in files {
            let parsed = Template::parse_dialect(name, text, Dialect::Alertmanager)?;
            t.defines.add(&parsed);
        }
        Ok(t)
    }

    /// Whether a template `name` is defined.
    pub fn defines(&self, name: &str) -> bool {
        self.defines.contains(name)
    }

    fn execute(
        &self,
        text: &str,
        data: &NotificationData,
        html: bool,
    ) -> Result<String, TemplateError> {
        if text.is_empty() {
            return Ok(String::new());
        }
        let t = Template::parse_dialect("", text, Dialect::Alertmanager)?;
        let env = Env {
            query: None,
            external_url: &data.external_url,
        };
        t.execute_with(
            Value::AmData(Rc::new(data.clone())),
            &env,
            &self.defines,
            html,
        )
    }

    /// Expands a configuration text (Alertmanager's `ExecuteTextString`): empty stays
    /// empty, anything else is parsed as a template of this set and executed on `data`.
    ///
    /// # Errors
    /// Go's parse or execution error, e.g. `template: :1:12: executing "" at
    /// <{{template "nope" .}}>: template "nope" not defined`.
    pub fn execute_text(
        &self,
        text: &str,
        data: &NotificationData,
    ) -> Result<String, TemplateError> {
        self.execute(text, data, false)
    }

    /// Expands an HTML text (Alertmanager's `ExecuteHTMLString`): as
    /// [`Templates::execute_text`], with printed values escaped as Go's `html/template`
    /// escapes them in element text, quoted attributes and URL attributes, and HTML
    /// comments of the template text removed.
    ///
    /// # Errors
    /// As [`Templates::execute_text`].
    pub fn execute_html(
        &self,
        text: &str,
        data: &NotificationData,
    ) -> Result<String, TemplateError> {
        self.execute(text, data, true)
    }
}

/// Reads the template files named by `patterns` (Alertmanager's `templates:`, shell globs;
/// a relative pattern is taken from `base_dir`, the configuration file's folder), in the
/// order Go's `filepath.Glob` lists them (sorted per pattern); a pattern matching nothing
/// is allowed, as in Alertmanager. Each file is named by its base name.
///
/// # Errors
/// A pattern that is not a valid glob, or a file that cannot be read, named in the text.
pub fn read_template_files(
    patterns: &[String],
    base_dir: &Path,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for p in patterns {
        let full = if Path::new(p).is_absolute() {
            p.clone()
        } else {
            base_dir.join(p).to_string_lossy().into_owned()
        };
        let paths = glob::glob(&full).map_err(|e| format!("templates: {p:?}: {e}"))?;
        let mut paths: Vec<_> = paths.filter_map(Result::ok).collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("templates: reading {}: {e}", path.display()))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push((name, text));
        }
    }
    Ok(out)
}

/// The template set of a configuration's `templates:` patterns: [`read_template_files`]
/// then [`Templates::with_files`], as Alertmanager (and `amtool check-config`) loads them.
///
/// # Errors
/// A file that cannot be read, or the first that does not parse, in Go's words
/// (`template: my.tmpl:3: ...`, as `amtool check-config` prints after `FAILED:`).
pub fn load_templates(patterns: &[String], base_dir: &Path) -> Result<Templates, String> {
    let files = read_template_files(patterns, base_dir)?;
    Templates::with_files(&files).map_err(|e| e.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> LabelMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn data() -> NotificationData {
        let n = Notification {
            receiver: "team.x".into(),
            route_key: "{}".into(),
            group_key: "{}:{alertname=\"Down\"}".into(),
            group_labels: l(&[("alertname", "Down")]),
            alerts: vec![
                DispatchedAlert {
                    labels: l(&[("alertname", "Down"), ("instance", "b"), ("zone", "z1")]),
                    annotations: l(&[("summary", "b is down")]),
                    starts_at_ms: 1_000,
                    ends_at_ms: i64::MAX,
                    generator_url: String::new(),
                },
                DispatchedAlert {
                    labels: l(&[("alertname", "Down"), ("instance", "a"), ("zone", "z1")]),
                    annotations: l(&[("summary", "a is down")]),
                    starts_at_ms: 1_000,
                    ends_at_ms: 2_000,
                    generator_url: String::new(),
                },
            ],
            at_ms: 5_000,
        };
        NotificationData::new(&n, "http://am:9093", &|a| {
            format!("http://prom/{}", a.labels["instance"])
        })
    }

    #[test]
    fn default_texts() {
        let t = Templates::defaults();
        let d = data();
        let run = |s: &str| t.execute_text(s, &d).unwrap();
        assert_eq!(
            run(r#"{{ template "__subject" . }}"#),
            "[FIRING:1] Down (z1)"
        );
        assert_eq!(
            run(r#"{{ template "slack.default.titlelink" . }}"#),
            "http://am:9093/#/alerts?receiver=team%5C.x"
        );
        assert_eq!(
            run(r#"{{ template "__text_alert_list" .Alerts.Resolved }}"#),
            "Labels:\n - alertname = Down\n - instance = a\n - zone = z1\nAnnotations:\n - summary = a is down\nSource: http://prom/a\n"
        );
        assert_eq!(run("{{ .Alerts.Firing | len }}/{{ len .Alerts }}"), "1/2");
        assert_eq!(
            run(
                r#"{{ (index .Alerts 0).StartsAt }}|{{ (index .Alerts 1).EndsAt }}|{{ (index .Alerts 0).EndsAt }}"#
            ),
            "1970-01-01 00:00:01 +0000 UTC|0001-01-01 00:00:00 +0000 UTC|1970-01-01 00:00:02 +0000 UTC"
        );
        assert_eq!(
            run(r#"{{ range .CommonLabels.SortedPairs }}{{ .Name }}={{ .Value }};{{ end }}"#),
            "alertname=Down;zone=z1;"
        );
        assert_eq!(
            run(
                r#"{{ join "," (stringSlice "a" "b") }} {{ title "hELLO wORLD" }} {{ toUpper "x" }}"#
            ),
            "a,b Hello World X"
        );
        assert_eq!(
            run(r#"{{ .CommonLabels.Remove (stringSlice "zone") }}"#),
            "map[alertname:Down]"
        );
        assert_eq!(
            run(r#"{{ (index .Alerts 0).StartsAt.Format "2006-01-02T15:04:05Z07:00" }}"#),
            "1970-01-01T00:00:01Z"
        );
        assert_eq!(run(""), "");
    }

    #[test]
    fn undefined_template_and_unknown_function_fail_as_alertmanager() {
        let t = Templates::defaults();
        let d = data();
        let e = t
            .execute_text(r#"{{ template "nope" . }}"#, &d)
            .unwrap_err();
        assert_eq!(
            e.0,
            r#"template: :1:12: executing "" at <{{template "nope" .}}>: template "nope" not defined"#
        );
        let e = t.execute_text("{{ humanize 1 }}", &d).unwrap_err();
        assert_eq!(e.0, r#"template: :1: function "humanize" not defined"#);
    }

    #[test]
    fn user_files_define_and_override() {
        let t = Templates::with_files(&[(
            "mine.tmpl".into(),
            r#"{{ define "__alertmanager" }}Outpost{{ end }}{{ define "x" }}<{{ .Status }}>{{ end }}"#
                .into(),
        )])
        .unwrap();
        let d = data();
        assert_eq!(
            t.execute_text(
                r#"{{ template "slack.default.username" . }} {{ template "x" . }}"#,
                &d
            )
            .unwrap(),
            "Outpost <firing>"
        );
        assert_eq!(
            t.execute_html(r#"<p>{{ template "x" . }}{{ "<b>" }}</p>"#, &d)
                .unwrap(),
            "<p><firing>&lt;b&gt;</p>"
        );
        let e = Templates::with_files(&[("bad.tmpl".into(), "{{ define \"y\" }}{{ .X ".into())])
            .unwrap_err();
        assert!(e.0.starts_with("template: bad.tmpl:1:"), "{e}");
    }
}
