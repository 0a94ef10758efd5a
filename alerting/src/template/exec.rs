//! Execution of a parsed template over a data value, as Go's `text/template` executes with
//! `missingkey=zero` (Prometheus' option): a missing label prints as the empty string.

use super::funcs::{FnError, call, string_param};
use super::gofmt::{format_g, format_go_time, sprint};
use super::parse::{Arg, BranchKind, Cmd, Node, Pipe, Tree};
use super::value::Value;
use super::{Dialect, Env};
use std::collections::HashMap;
use std::rc::Rc;

/// How deep `template` calls may nest before execution stops (Go allows 100000; a
/// lower bound keeps the native stack safe).
const MAX_DEPTH: usize = 1000;

/// An execution failure, located at a command of the template.
#[derive(Debug)]
pub(crate) struct ExecError {
    pub(crate) pos: Option<usize>,
    /// The command as written, shown by Go as `at <...>`.
    pub(crate) context: String,
    /// The template being executed (a `define`d name inside a `template` call).
    pub(crate) executing: String,
    pub(crate) msg: String,
}

enum Flow {
    Normal,
    Break,
    Continue,
}

pub(crate) struct Exec<'a> {
    pub(crate) tree: &'a Tree,
    /// Named templates of the set this template was added to (looked up after its own).
    pub(crate) shared: Option<&'a HashMap<String, Vec<Node>>>,
    /// `html/template`'s escaping of every printed value (see [`super::html`]).
    pub(crate) html: bool,
    pub(crate) env: &'a Env<'a>,
    pub(crate) name: String,
    pub(crate) vars: Vec<(String, Value)>,
    pub(crate) out: String,
    pub(crate) depth: usize,
}

type R<T> = Result<T, ExecError>;

impl Exec<'_> {
    fn err(&self, cmd: Option<&Cmd>, msg: String) -> ExecError {
        ExecError {
            pos: cmd.map(|c| c.pos),
            context: cmd.map(|c| c.text.clone()).unwrap_or_default(),
            executing: self.name.clone(),
            msg,
        }
    }

    pub(crate) fn run(&mut self, nodes: &[Node], dot: &Value) -> R<()> {
        match self.list(nodes, dot)? {
            Flow::Normal => Ok(()),
            _ => Err(self.err(None, "break or continue outside range".into())),
        }
    }

    fn list(&mut self, nodes: &[Node], dot: &Value) -> R<Flow> {
        for n in nodes {
            match self.node(n, dot)? {
                Flow::Normal => {}
                f => return Ok(f),
            }
        }
        Ok(Flow::Normal)
    }

    fn node(&mut self, n: &Node, dot: &Value) -> R<Flow> {
        match n {
            Node::Text(t) if self.html => {
                let t = super::html::strip_comments(t);
                self.out.push_str(&t);
            }
            Node::Text(t) => self.out.push_str(t),
            Node::Action(p) => {
                let v = self.pipe(p, dot)?;
                if p.vars.is_empty() {
                    let s = self.printable(&v);
                    if self.html {
                        let escaped_by_pipe = p.cmds.last().is_some_and(
                            |c| matches!(c.args.first(), Some(Arg::Func(f)) if f == "urlquery"),
                        );
                        let s = super::html::escape(&self.out, &s, &v, escaped_by_pipe);
                        self.out.push_str(&s);
                    } else {
                        self.out.push_str(&s);
                    }
                }
            }
            Node::Break => return Ok(Flow::Break),
            Node::Continue => return Ok(Flow::Continue),
            Node::Branch {
                kind,
                pipe,
                body,
                else_body,
            } => {
                let mark = self.vars.len();
                let r = self.branch(*kind, pipe, body, else_body, dot);
                self.vars.truncate(mark);
                return r;
            }
            Node::Template { name, pipe, pos } => {
                let arg = match pipe {
                    Some(p) => self.pipe(p, dot)?,
                    None => Value::Nil,
                };
                let found = self
                    .tree
                    .defines
                    .get(name)
                    .or_else(|| self.shared.and_then(|d| d.get(name)));
                let Some(body) = found else {
                    let quoted = super::gofmt::go_quote(name);
                    let (context, msg) = if self.tree.dialect == Dialect::Alertmanager {
                        (
                            format!(
                                "{{{{template {quoted}{}}}}}",
                                pipe.as_ref().map_or(String::new(), |p| {
                                    let cmds: Vec<&str> =
                                        p.cmds.iter().map(|c| c.text.as_str()).collect();
                                    format!(" {}", cmds.join(" | "))
                                })
                            ),
                            format!("template {quoted} not defined"),
                        )
                    } else {
                        (
                            format!("template {quoted}"),
                            format!(
                                "template: no template {quoted} associated with template {}",
                                super::gofmt::go_quote(&self.name)
                            ),
                        )
                    };
                    return Err(ExecError {
                        pos: Some(*pos),
                        context,
                        executing: self.name.clone(),
                        msg,
                    });
                };
                if self.depth >= MAX_DEPTH {
                    return Err(self.err(
                        None,
                        format!("exceeded maximum template depth ({MAX_DEPTH})"),
                    ));
                }
                let saved_vars = std::mem::replace(&mut self.vars, vec![("$".into(), arg.clone())]);
                let saved_name = std::mem::replace(&mut self.name, name.clone());
                self.depth += 1;
                let r = self.run(body, &arg);
                self.depth -= 1;
                self.vars = saved_vars;
                self.name = saved_name;
                r?;
            }
        }
        Ok(Flow::Normal)
    }

    fn branch(
        &mut self,
        kind: BranchKind,
        pipe: &Pipe,
        body: &[Node],
        else_body: &[Node],
        dot: &Value,
    ) -> R<Flow> {
        if kind != BranchKind::Range {
            let v = self.pipe(pipe, dot)?;
            return if v.truth() {
                let d = if kind == BranchKind::With {
                    v
                } else {
                    dot.clone()
                };
                self.list(body, &d)
            } else {
                self.list(else_body, dot)
            };
        }
        // `range` declares its variables per element rather than to the pipeline's value.
        let bare = Pipe {
            vars: Vec::new(),
            assign: false,
            ..pipe.clone()
        };
        let v = self.pipe(&bare, dot)?;
        let items: Vec<(Value, Value)> = match &v {
            Value::Samples(s) => s
                .iter()
                .enumerate()
                .map(|(i, s)| (Value::Int(i as i64), Value::Sample(s.clone())))
                .collect(),
            Value::Map(m) => m
                .iter()
                .map(|(k, v)| (Value::Str(k.clone()), Value::Str(v.clone())))
                .collect(),
            Value::Args(m) => m
                .iter()
                .map(|(k, v)| (Value::Str(k.clone()), v.clone()))
                .collect(),
            Value::Kv(m) => m
                .iter()
                .map(|(k, v)| (Value::Str(k.clone()), Value::Str(v.clone())))
                .collect(),
            Value::Strings(v) => v
                .iter()
                .enumerate()
                .map(|(i, s)| (Value::Int(i as i64), Value::Str(s.clone())))
                .collect(),
            Value::Pairs(v) => v
                .iter()
                .enumerate()
                .map(|(i, p)| (Value::Int(i as i64), Value::Pair(Rc::new(p.clone()))))
                .collect(),
            Value::AmAlerts(v, _) => v
                .iter()
                .enumerate()
                .map(|(i, a)| (Value::Int(i as i64), Value::AmAlert(Rc::new(a.clone()))))
                .collect(),
            Value::Nil => Vec::new(),
            other => {
                return Err(self.err(
                    pipe.cmds.first(),
                    format!("range can't iterate over {}", sprint(other)),
                ));
            }
        };
        if items.is_empty() {
            return self.list(else_body, dot);
        }
        let mark = self.vars.len();
        for (k, elem) in items {
            self.vars.truncate(mark);
            match pipe.vars.as_slice() {
                [x] => self.set_var(x, elem.clone(), pipe.assign),
                [i, x] => {
                    self.set_var(i, k, pipe.assign);
                    self.set_var(x, elem.clone(), pipe.assign);
                }
                _ => {}
            }
            match self.list(body, &elem)? {
                Flow::Break => break,
                Flow::Normal | Flow::Continue => {}
            }
        }
        Ok(Flow::Normal)
    }

    fn set_var(&mut self, name: &str, v: Value, assign: bool) {
        if let Some(slot) = self
            .vars
            .iter_mut()
            .rev()
            .find(|(n, _)| assign && n == name)
        {
            slot.1 = v;
            return;
        }
        self.vars.push((name.to_string(), v));
    }

    /// How Go prints an action's value: `<no value>` for nil, pointers followed.
    fn printable(&self, v: &Value) -> String {
        match v {
            Value::Nil => "<no value>".into(),
            Value::Sample(s) => {
                let inner = sprint(&Value::Map(Rc::new(s.labels.clone())));
                format!("{{{inner} {}}}", format_g(s.value, None))
            }
            v => sprint(v),
        }
    }

    fn pipe(&mut self, p: &Pipe, dot: &Value) -> R<Value> {
        let mut v: Option<Value> = None;
        for c in &p.cmds {
            v = Some(self.cmd(c, dot, v)?);
        }
        let v = v.unwrap_or(Value::Nil);
        for name in &p.vars {
            self.set_var(name, v.clone(), p.assign);
        }
        Ok(v)
    }

    fn cmd(&mut self, c: &Cmd, dot: &Value, fin: Option<Value>) -> R<Value> {
        let first = &c.args[0];
        if let Arg::Func(name) = first {
            if name == "and" || name == "or" {
                return self.and_or(name, c, dot, fin);
            }
            let mut args = Vec::with_capacity(c.args.len());
            for (i, a) in c.args[1..].iter().enumerate() {
                if string_param(name, i) {
                    self.check_string_constant(a, &c.spans[i + 1])?;
                }
                args.push(self.arg(a, dot, c)?);
            }
            if let Some(f) = fin {
                args.push(f);
            }
            return call(name, args, self.env, self.tree.dialect).map_err(|e| match e {
                FnError::Args(m) => self.err(Some(c), m),
                FnError::Call(m) => self.err(Some(c), format!("error calling {name}: {m}")),
            });
        }
        if matches!(first, Arg::Nil) {
            return Err(self.err(Some(c), "nil is not a command".into()));
        }
        // A field chain ending in a method, given arguments: `.CommonLabels.Remove .Names`.
        if c.args.len() > 1 || fin.is_some() {
            let (recv, chain) = match first {
                Arg::Field(chain) => (Some(dot.clone()), chain.as_slice()),
                Arg::Var(name, chain) if !chain.is_empty() => (
                    self.vars
                        .iter()
                        .rev()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.clone()),
                    chain.as_slice(),
                ),
                Arg::Pipe(p, chain) if !chain.is_empty() => {
                    let mark = self.vars.len();
                    let v = self.pipe(p, dot);
                    self.vars.truncate(mark);
                    (Some(v?), chain.as_slice())
                }
                _ => (None, &[][..]),
            };
            if let (Some(recv), Some((method, path))) = (recv, chain.split_last()) {
                let recv = self.fields(recv, path, c)?;
                let mut args = Vec::with_capacity(c.args.len());
                for a in &c.args[1..] {
                    args.push(self.arg(a, dot, c)?);
                }
                if let Some(f) = fin {
                    args.push(f);
                }
                if let Some(r) = method_call(&recv, method, &args) {
                    return r.map_err(|m| self.err(Some(c), m));
                }
                return Err(self.err(
                    Some(c),
                    format!(
                        "can't give argument to non-function {}",
                        c.text.split_whitespace().next().unwrap_or("")
                    ),
                ));
            }
        }
        if c.args.len() > 1 || fin.is_some() {
            return Err(self.err(
                Some(c),
                format!(
                    "can't give argument to non-function {}",
                    c.text.split_whitespace().next().unwrap_or("")
                ),
            ));
        }
        self.arg(first, dot, c)
    }

    /// Go checks constants against a `string` parameter before calling: a number, bool or
    /// nil is refused at the argument.
    fn check_string_constant(&self, a: &Arg, span: &(usize, String)) -> R<()> {
        let msg = match a {
            Arg::Int(_) | Arg::Float(_) | Arg::Bool(_) => {
                format!("expected string; found {}", span.1)
            }
            Arg::Nil => "cannot assign nil to string".to_string(),
            _ => return Ok(()),
        };
        Err(ExecError {
            pos: Some(span.0),
            context: span.1.clone(),
            executing: self.name.clone(),
            msg,
        })
    }

    fn and_or(&mut self, name: &str, c: &Cmd, dot: &Value, fin: Option<Value>) -> R<Value> {
        let n = c.args.len() - 1 + usize::from(fin.is_some());
        if n == 0 {
            return Err(self.err(
                Some(c),
                format!("wrong number of args for {name}: want at least 1 got 0"),
            ));
        }
        let mut last = Value::Nil;
        let mut fin = fin;
        for i in 0..n {
            last = match c.args.get(i + 1) {
                Some(a) => self.arg(a, dot, c)?,
                None => fin.take().unwrap_or(Value::Nil),
            };
            let stop = if name == "and" {
                !last.truth()
            } else {
                last.truth()
            };
            if stop {
                return Ok(last);
            }
        }
        Ok(last)
    }

    fn arg(&mut self, a: &Arg, dot: &Value, c: &Cmd) -> R<Value> {
        match a {
            Arg::Dot => Ok(dot.clone()),
            Arg::Nil => Ok(Value::Nil),
            Arg::Bool(b) => Ok(Value::Bool(*b)),
            Arg::Int(i) => Ok(Value::Int(*i)),
            Arg::Float(f) => Ok(Value::Float(*f)),
            Arg::Str(s) => Ok(Value::Str(s.clone())),
            Arg::Field(chain) => self.fields(dot.clone(), chain, c),
            Arg::Var(name, chain) => {
                let v = self
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| self.err(Some(c), format!("undefined variable: {name}")))?;
                self.fields(v, chain, c)
            }
            Arg::Pipe(p, chain) => {
                let mark = self.vars.len();
                let v = self.pipe(p, dot);
                self.vars.truncate(mark);
                self.fields(v?, chain, c)
            }
            Arg::Func(name) => {
                if name == "and" || name == "or" {
                    return Err(self.err(
                        Some(c),
                        format!("wrong number of args for {name}: want at least 1 got 0"),
                    ));
                }
                call(name, Vec::new(), self.env, self.tree.dialect).map_err(|e| match e {
                    FnError::Args(m) => self.err(Some(c), m),
                    FnError::Call(m) => self.err(Some(c), format!("error calling {name}: {m}")),
                })
            }
        }
    }

    fn fields(&self, mut v: Value, chain: &[String], c: &Cmd) -> R<Value> {
        for f in chain {
            v = match (&v, f.as_str()) {
                (Value::Nil, _) => Value::Nil,
                (Value::Map(m), k) => Value::Str(m.get(k).cloned().unwrap_or_default()),
                // A missing key of a map of interfaces is nil (`missingkey=zero`).
                (Value::Args(m), k) => m.get(k).cloned().unwrap_or(Value::Nil),
                (Value::Data(d), "Labels") => Value::Map(Rc::new(d.labels.clone())),
                (Value::Data(d), "ExternalLabels") => {
                    Value::Map(Rc::new(d.external_labels.clone()))
                }
                (Value::Data(d), "ExternalURL") => Value::Str(d.external_url.clone()),
                (Value::Data(d), "Value") => Value::Float(d.value),
                (Value::Sample(s), "Labels") => Value::Map(Rc::new(s.labels.clone())),
                (Value::Sample(s), "Value") => Value::Float(s.value),
                (
                    v @ (Value::Kv(_) | Value::Pairs(_) | Value::AmAlerts(..) | Value::Time(_)),
                    f,
                ) if method_call(v, f, &[]).is_some() => method_call(v, f, &[])
                    .unwrap_or(Ok(Value::Nil))
                    .map_err(|m| self.err(Some(c), m))?,
                (Value::Kv(m), k) => Value::Str(m.get(k).cloned().unwrap_or_default()),
                (Value::Pair(p), "Name") => Value::Str(p.0.clone()),
                (Value::Pair(p), "Value") => Value::Str(p.1.clone()),
                (Value::AmData(d), f) if d.field(f).is_some() => d.field(f).unwrap_or(Value::Nil),
                (Value::AmAlert(a), f) if a.field(f).is_some() => a.field(f).unwrap_or(Value::Nil),
                _ => {
                    return Err(self.err(
                        Some(c),
                        format!("can't evaluate field {f} in type {}", v.type_name()),
                    ));
                }
            };
        }
        Ok(v)
    }
}

/// A method of Alertmanager's template types (and of `time.Time`) called with `args`:
/// `None` when `recv` has no method `name`, else the result or Go's error text.
fn method_call(recv: &Value, name: &str, args: &[Value]) -> Option<Result<Value, String>> {
    let want = |n: usize| -> Result<(), String> {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!(
                "wrong number of args for {name}: want {n} got {}",
                args.len()
            ))
        }
    };
    let r = match (recv, name) {
        (Value::Kv(m), "SortedPairs") => want(0).map(|()| Value::Pairs(Rc::new(sorted_pairs(m)))),
        (Value::Kv(m), "Names") => want(0)
            .map(|()| Value::Strings(Rc::new(sorted_pairs(m).into_iter().map(|p| p.0).collect()))),
        (Value::Kv(m), "Values") => want(0)
            .map(|()| Value::Strings(Rc::new(sorted_pairs(m).into_iter().map(|p| p.1).collect()))),
        (Value::Kv(m), "Remove") => want(1).and_then(|()| match &args[0] {
            Value::Strings(keys) => Ok(Value::Kv(Rc::new(
                m.iter()
                    .filter(|(k, _)| !keys.contains(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ))),
            Value::Nil => Ok(Value::Kv(m.clone())),
            other => Err(format!(
                "wrong type for value; expected []string; got {}",
                other.type_name()
            )),
        }),
        (Value::Pairs(v), "Names") => {
            want(0).map(|()| Value::Strings(Rc::new(v.iter().map(|p| p.0.clone()).collect())))
        }
        (Value::Pairs(v), "Values") => {
            want(0).map(|()| Value::Strings(Rc::new(v.iter().map(|p| p.1.clone()).collect())))
        }
        (Value::AmAlerts(v, true), "Firing" | "Resolved") => want(0).map(|()| {
            let status = if name == "Firing" {
                "firing"
            } else {
                "resolved"
            };
            Value::AmAlerts(
                Rc::new(v.iter().filter(|a| a.status == status).cloned().collect()),
                false,
            )
        }),
        (Value::Time(ns), "Unix") => want(0).map(|()| Value::Int(super::gofmt::split_ns(*ns).0)),
        (Value::Time(ns), "UnixNano") => want(0).map(|()| Value::Int(*ns)),
        (Value::Time(ns), "UTC" | "Local") => want(0).map(|()| Value::Time(*ns)),
        (Value::Time(ns), "String") => want(0).map(|()| Value::Str(format_go_time(*ns))),
        (Value::Time(ns), "Format") => want(1).and_then(|()| match &args[0] {
            Value::Str(layout) => Ok(Value::Str(super::gofmt::format_go_layout(*ns, layout))),
            other => Err(format!(
                "wrong type for value; expected string; got {}",
                other.type_name()
            )),
        }),
        _ => return None,
    };
    Some(r)
}

/// Alertmanager's `KV.SortedPairs`: `alertname` first, then the other names in order.
pub(crate) fn sorted_pairs(
    m: &std::collections::BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(m.len());
    if let Some(v) = m.get("alertname") {
        out.push(("alertname".into(), v.clone()));
    }
    out.extend(
        m.iter()
            .filter(|(k, _)| k.as_str() != "alertname")
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    out
}
