//! Prometheus' template language: Go's `text/template` with Prometheus 2.42's functions,
//! written for Outpost (no Rust crate implements it). The same engine runs Alertmanager
//! 0.25's notification templates ([`Dialect::Alertmanager`]: its functions, method calls on
//! its data such as `.CommonLabels.Remove .GroupLabels.Names`, `define`d templates shared
//! across files through [`Defines`], and `html/template`'s escaping for HTML bodies); see
//! [`crate::amtemplate`].
//!
//! - [`lex`] and [`parse`]: text → tree, refusing unknown functions and variables as Go's
//!   parser does; [`exec`]: the tree over a [`Value`] with `missingkey=zero`.
//! - [`funcs`]: Go's builtins, Prometheus' and Alertmanager's functions; `html`:
//!   `html/template`'s escaping of printed values; [`gofmt`]: Go's `fmt` and
//!   `strconv` formatting they print with.
//! - [`expand_alert`]: what Prometheus' alerting rule does with each label and annotation
//!   (`$labels`, `$externalLabels`, `$externalURL`, `$value` defined first; a failure
//!   becomes `<error expanding template: ...>` in the text rather than an error).
//!
//! Error texts follow Go's: `template: NAME:LINE: msg` while parsing,
//! `template: NAME:LINE:COL: executing "NAME" at <cmd>: msg` while executing (COL is the
//! 0-based byte column, as Go counts it).

mod exec;
mod funcs;
pub mod gofmt;
mod html;
mod lex;
mod parse;
mod value;

pub use funcs::query_escape;
pub use value::{AlertData, QuerySample, Value};

use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

/// A template's query function: a PromQL expression, evaluated at the alert's evaluation
/// time, to samples (Prometheus' `QueryFunc` as templates call it through `query`).
/// The `Err` text is what the template error shows.
pub type TemplateQuery<'a> = dyn Fn(&str) -> Result<Vec<QuerySample>, String> + 'a;

/// What a template can reach besides its data: the query function and the external URL.
#[derive(Clone, Copy, Default)]
pub struct Env<'a> {
    /// Evaluates `query "..."`; `None` makes `query` fail with `no query engine available`.
    pub query: Option<&'a TemplateQuery<'a>>,
    /// The URL the aggregator is reached under (`externalURL`, `pathPrefix`); may be empty.
    pub external_url: &'a str,
}

/// Which functions a template may call: Prometheus' (rule labels and annotations) or
/// Alertmanager's (notification templates); Go's builtins are in both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dialect {
    /// Prometheus 2.42's functions (`query`, `humanize`, …).
    #[default]
    Prometheus,
    /// Alertmanager 0.25's `DefaultFuncs` (`toUpper`, `join`, `stringSlice`, …).
    Alertmanager,
}

/// A parsing or execution failure, displayed in Go's words (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateError {}

/// A parsed template, ready to execute any number of times.
#[derive(Clone, Debug)]
pub struct Template {
    name: String,
    src: String,
    tree: parse::Tree,
}

fn line_of(src: &str, pos: usize) -> usize {
    1 + src[..pos.min(src.len())].matches('\n').count()
}

fn col_of(src: &str, pos: usize) -> usize {
    let pos = pos.min(src.len());
    match src[..pos].rfind('\n') {
        Some(nl) => pos - (nl + 1),
        None => pos,
    }
}

impl Template {
    /// Parses `text` as the template `name` (the name appears in error messages).
    ///
    /// # Errors
    /// Go's parse error text, e.g. `template: t:1: function "foo" not defined`.
    pub fn parse(name: &str, text: &str) -> Result<Self, TemplateError> {
        Self::parse_dialect(name, text, Dialect::Prometheus)
    }

    /// Parses `text` as the template `name` with the functions of `dialect`.
    ///
    /// # Errors
    /// As [`Template::parse`].
    pub fn parse_dialect(name: &str, text: &str, dialect: Dialect) -> Result<Self, TemplateError> {
        let tree = parse::parse(text, dialect).map_err(|(pos, msg)| {
            TemplateError(format!("template: {name}:{}: {msg}", line_of(text, pos)))
        })?;
        Ok(Template {
            name: name.to_string(),
            src: text.to_string(),
            tree,
        })
    }

    /// Executes the template with `data` as `.` and `$`.
    ///
    /// # Errors
    /// Go's execution error text, e.g.
    /// `template: t:1:3: executing "t" at <humanize "x">: error calling humanize: ...`.
    pub fn execute(&self, data: Value, env: &Env<'_>) -> Result<String, TemplateError> {
        self.execute_in(data, env, None, false)
    }

    /// The named templates (`{{ define "name" }}`) this template holds.
    pub fn defined_names(&self) -> Vec<&str> {
        self.tree.defines.keys().map(String::as_str).collect()
    }

    /// Executes the template as a member of the set `shared` (its own `define`s first,
    /// then the set's, as Go's `Clone` + `New("").Parse` arranges); `html` escapes every
    /// printed value as Go's `html/template` does in the usual contexts (see the
    /// `html` module: element text, quoted attributes, URL attributes).
    ///
    /// # Errors
    /// As [`Template::execute`]; a `template` call to a name defined nowhere fails with
    /// `template "name" not defined`.
    pub fn execute_with(
        &self,
        data: Value,
        env: &Env<'_>,
        shared: &Defines,
        html: bool,
    ) -> Result<String, TemplateError> {
        self.execute_in(data, env, Some(&shared.0), html)
    }

    fn execute_in(
        &self,
        data: Value,
        env: &Env<'_>,
        shared: Option<&HashMap<String, Vec<parse::Node>>>,
        html: bool,
    ) -> Result<String, TemplateError> {
        let mut ex = exec::Exec {
            tree: &self.tree,
            shared,
            html,
            env,
            name: self.name.clone(),
            vars: vec![("$".to_string(), data.clone())],
            out: String::new(),
            depth: 0,
        };
        match ex.run(&self.tree.body, &data) {
            Ok(()) => Ok(ex.out),
            Err(e) => Err(TemplateError(match e.pos {
                Some(pos) => {
                    let ctx = e.context;
                    format!(
                        "template: {}:{}:{}: executing {} at <{}>: {}",
                        self.name,
                        line_of(&self.src, pos),
                        col_of(&self.src, pos),
                        gofmt::go_quote(&e.executing),
                        ctx,
                        e.msg
                    )
                }
                None => format!("template: {}: {}", self.name, e.msg),
            })),
        }
    }
}

/// A set of named templates (`{{ define }}`s) gathered from several template files, that
/// other templates can call with `{{ template "name" . }}` (Go's associated templates).
#[derive(Clone, Debug, Default)]
pub struct Defines(HashMap<String, Vec<parse::Node>>);

impl Defines {
    /// Adds the `define`s of `t`; a name defined again replaces the earlier definition,
    /// as Go's `Parse` does.
    pub fn add(&mut self, t: &Template) {
        for (k, v) in &t.tree.defines {
            self.0.insert(k.clone(), v.clone());
        }
    }

    /// Whether `name` is defined.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// The variable definitions Prometheus puts before every alert label and annotation.
const ALERT_DEFS: &str = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}";

/// Parses an alerting rule's label or annotation as Prometheus does while loading rules
/// (`rulefmt`'s template check), for validation.
///
/// # Errors
/// Go's parse error, `template: __alert_<rule>:1: ...`, as `promtool check rules` prints it.
pub fn check_alert_template(rule_name: &str, text: &str) -> Result<(), TemplateError> {
    let name = format!("__alert_{rule_name}");
    Template::parse(&name, &format!("{ALERT_DEFS}{text}")).map(|_| ())
}

/// Expands an alerting rule's label or annotation `text` for one alert, as Prometheus'
/// `AlertingRule.Eval` does: on failure the result is
/// `<error expanding template: error parsing|executing template __alert_<rule>: ...>`.
pub fn expand_alert(rule_name: &str, text: &str, data: &AlertData, env: &Env<'_>) -> String {
    let name = format!("__alert_{rule_name}");
    let full = format!("{ALERT_DEFS}{text}");
    let res = Template::parse(&name, &full)
        .map_err(|e| format!("error parsing template {name}: {e}"))
        .and_then(|t| {
            t.execute(Value::Data(Rc::new(data.clone())), env)
                .map_err(|e| format!("error executing template {name}: {e}"))
        });
    match res {
        Ok(s) => s,
        Err(e) => format!("<error expanding template: {e}>"),
    }
}

#[cfg(test)]
mod tests;
