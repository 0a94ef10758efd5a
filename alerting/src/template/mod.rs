//! Prometheus' template language: Go's `text/template` with Prometheus 2.42's functions,
//! written for Outpost (no Rust crate implements it).
//!
//! - [`lex`] and [`parse`]: text → tree, refusing unknown functions and variables as Go's
//!   parser does; [`exec`]: the tree over a [`Value`] with `missingkey=zero`.
//! - [`funcs`]: Go's builtins and Prometheus' functions; [`gofmt`]: Go's `fmt` and
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
mod lex;
mod parse;
mod value;

pub use funcs::query_escape;
pub use value::{AlertData, QuerySample, Value};

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
        let tree = parse::parse(text).map_err(|(pos, msg)| {
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
        let mut ex = exec::Exec {
            tree: &self.tree,
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
