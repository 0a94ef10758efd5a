//! The functions a template can call: Go's `text/template` builtins (`and or not len index
//! print printf println html js urlquery eq ne lt le gt ge`) and those Prometheus 2.42 adds
//! in `template/template.go` (`query first label value strvalue reReplaceAll safeHtml match
//! title toUpper toLower graphLink tableLink sortByLabel stripPort stripDomain humanize
//! humanize1024 humanizeDuration humanizePercentage humanizeTimestamp toTime pathPrefix
//! externalURL parseDuration args`), with their argument checks and error texts.

use super::gofmt::{format_g, format_go_time, g4, sprint, sprint_all, sprintf};
use super::value::{QuerySample, Value};
use super::{Dialect, Env};
use crate::duration::parse_duration;
use std::rc::Rc;

/// Every function name a template may use; others are refused while parsing, as Go does.
const FUNCTIONS: &[&str] = &[
    "and",
    "or",
    "not",
    "len",
    "index",
    "print",
    "printf",
    "println",
    "html",
    "js",
    "urlquery",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "query",
    "first",
    "label",
    "value",
    "strvalue",
    "reReplaceAll",
    "safeHtml",
    "match",
    "title",
    "toUpper",
    "toLower",
    "graphLink",
    "tableLink",
    "sortByLabel",
    "stripPort",
    "stripDomain",
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "toTime",
    "pathPrefix",
    "externalURL",
    "parseDuration",
    "args",
];

/// Go's builtins, which every dialect has.
const BUILTINS: usize = 17;

/// The functions Alertmanager 0.25 adds to Go's builtins (`template.DefaultFuncs`).
const AM_FUNCTIONS: &[&str] = &[
    "toUpper",
    "toLower",
    "title",
    "join",
    "match",
    "safeHtml",
    "reReplaceAll",
    "stringSlice",
];

/// Whether `name` is a function templates of `dialect` can call.
pub(crate) fn is_function(name: &str, dialect: Dialect) -> bool {
    match dialect {
        Dialect::Prometheus => FUNCTIONS.contains(&name),
        Dialect::Alertmanager => {
            FUNCTIONS[..BUILTINS].contains(&name) || AM_FUNCTIONS.contains(&name)
        }
    }
}

/// Whether parameter `i` of function `name` is declared `string` in Go, so that a
/// constant of another type is refused before the call (`expected string; found 5`).
pub(crate) fn string_param(name: &str, i: usize) -> bool {
    match name {
        "printf" | "label" | "sortByLabel" => i == 0,
        "reReplaceAll" => i < 3,
        "match" => i < 2,
        "join" => i == 0,
        "safeHtml" | "title" | "toUpper" | "toLower" | "graphLink" | "tableLink" | "stripPort"
        | "stripDomain" | "parseDuration" | "query" => i == 0,
        _ => false,
    }
}

/// Why a call failed: the arguments did not fit (Go reports these as they are), or the
/// function itself returned an error (Go prefixes `error calling <name>: `).
#[derive(Debug)]
pub(crate) enum FnError {
    /// Wrong number or type of arguments.
    Args(String),
    /// The function's own error.
    Call(String),
}

fn arity(name: &str, args: &[Value], n: usize) -> Result<(), FnError> {
    if args.len() == n {
        Ok(())
    } else {
        Err(FnError::Args(format!(
            "wrong number of args for {name}: want {n} got {}",
            args.len()
        )))
    }
}

fn wrong_type(want: &str, got: &Value) -> FnError {
    FnError::Args(format!(
        "wrong type for value; expected {want}; got {}",
        got.type_name()
    ))
}

fn string_arg(v: &Value) -> Result<&str, FnError> {
    v.as_str().ok_or_else(|| wrong_type("string", v))
}

fn sample_arg(v: &Value) -> Result<Option<&Rc<QuerySample>>, FnError> {
    match v {
        Value::Sample(s) => Ok(Some(s)),
        Value::Nil => Ok(None),
        _ => Err(wrong_type("*template.sample", v)),
    }
}

fn samples_arg(v: &Value) -> Result<Vec<Rc<QuerySample>>, FnError> {
    match v {
        Value::Samples(s) => Ok(s.as_ref().clone()),
        Value::Nil => Ok(Vec::new()),
        _ => Err(wrong_type("template.queryResult", v)),
    }
}

const NIL_DEREF: &str = "runtime error: invalid memory address or nil pointer dereference";

/// Go's `strconv.ParseFloat(s, 64)`, with its error texts.
pub(crate) fn go_parse_float(s: &str) -> Result<f64, String> {
    let syntax = || {
        format!(
            "strconv.ParseFloat: parsing {}: invalid syntax",
            super::gofmt::go_quote(s)
        )
    };
    let t = s.strip_prefix(['+', '-']).unwrap_or(s);
    let lower = t.to_ascii_lowercase();
    let special = matches!(lower.as_str(), "inf" | "infinity" | "nan");
    if !special && !t.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return Err(syntax());
    }
    let v: f64 = s.parse().map_err(|_| syntax())?;
    if v.is_infinite() && !special {
        return Err(format!(
            "strconv.ParseFloat: parsing {}: value out of range",
            super::gofmt::go_quote(s)
        ));
    }
    Ok(v)
}

/// Prometheus' `convertToFloat`: float64, int and numeric strings.
fn to_float(v: &Value) -> Result<f64, FnError> {
    match v {
        Value::Float(f) => Ok(*f),
        Value::Int(i) => Ok(*i as f64),
        Value::Str(s) => go_parse_float(s).map_err(FnError::Call),
        Value::Nil => Err(FnError::Call("can't convert <nil> to float".into())),
        _ => Err(FnError::Call(format!(
            "can't convert {} to float",
            v.type_name()
        ))),
    }
}

/// Calls `name` with evaluated `args` (`and` and `or` are evaluated lazily by the caller).
pub(crate) fn call(
    name: &str,
    args: Vec<Value>,
    env: &Env<'_>,
    dialect: Dialect,
) -> Result<Value, FnError> {
    let one = |args: &[Value]| arity(name, args, 1);
    if dialect == Dialect::Alertmanager {
        match name {
            "title" => {
                one(&args)?;
                return Ok(Value::Str(title_cased(string_arg(&args[0])?)));
            }
            "join" => {
                arity(name, &args, 2)?;
                let sep = string_arg(&args[0])?;
                return match &args[1] {
                    Value::Strings(v) => Ok(Value::Str(v.join(sep))),
                    Value::Nil => Ok(Value::Str(String::new())),
                    other => Err(wrong_type("[]string", other)),
                };
            }
            "stringSlice" => {
                let v: Result<Vec<String>, FnError> = args
                    .iter()
                    .map(|a| string_arg(a).map(str::to_string))
                    .collect();
                return Ok(Value::Strings(Rc::new(v?)));
            }
            _ => {}
        }
    }
    match name {
        "not" => {
            one(&args)?;
            Ok(Value::Bool(!args[0].truth()))
        }
        "len" => {
            one(&args)?;
            match &args[0] {
                Value::Str(s) | Value::Html(s) => Ok(Value::Int(s.len() as i64)),
                Value::Map(m) => Ok(Value::Int(m.len() as i64)),
                Value::Args(m) => Ok(Value::Int(m.len() as i64)),
                Value::Samples(v) => Ok(Value::Int(v.len() as i64)),
                Value::Strings(v) => Ok(Value::Int(v.len() as i64)),
                Value::Kv(m) => Ok(Value::Int(m.len() as i64)),
                Value::Pairs(v) => Ok(Value::Int(v.len() as i64)),
                Value::AmAlerts(v, _) => Ok(Value::Int(v.len() as i64)),
                v => Err(FnError::Call(format!("len of type {}", v.type_name()))),
            }
        }
        "index" => index(args),
        "print" => Ok(Value::Str(sprint_all(&args))),
        "println" => {
            let parts: Vec<String> = args.iter().map(sprint).collect();
            Ok(Value::Str(parts.join(" ") + "\n"))
        }
        "printf" => {
            let Some(first) = args.first() else {
                return Err(FnError::Args(
                    "wrong number of args for printf: want at least 1 got 0".into(),
                ));
            };
            let f = string_arg(first)?;
            Ok(Value::Str(sprintf(f, &args[1..])))
        }
        "html" => Ok(Value::Str(html_escape(&eval_args(&args)))),
        "js" => Ok(Value::Str(js_escape(&eval_args(&args)))),
        "urlquery" => Ok(Value::Str(query_escape(&eval_args(&args)))),
        "eq" | "ne" | "lt" | "le" | "gt" | "ge" => compare(name, &args),
        "query" => {
            one(&args)?;
            let q = string_arg(&args[0])?;
            let f = env
                .query
                .ok_or_else(|| FnError::Call("no query engine available".into()))?;
            let res = f(q).map_err(FnError::Call)?;
            Ok(Value::Samples(Rc::new(
                res.into_iter().map(Rc::new).collect(),
            )))
        }
        "first" => {
            one(&args)?;
            samples_arg(&args[0])?
                .first()
                .cloned()
                .map(Value::Sample)
                .ok_or_else(|| FnError::Call("first() called on vector with no elements".into()))
        }
        "label" => {
            arity(name, &args, 2)?;
            let l = string_arg(&args[0])?;
            let s = sample_arg(&args[1])?.ok_or_else(|| FnError::Call(NIL_DEREF.into()))?;
            Ok(Value::Str(s.labels.get(l).cloned().unwrap_or_default()))
        }
        "value" => {
            one(&args)?;
            let s = sample_arg(&args[0])?.ok_or_else(|| FnError::Call(NIL_DEREF.into()))?;
            Ok(Value::Float(s.value))
        }
        "strvalue" => {
            one(&args)?;
            let s = sample_arg(&args[0])?.ok_or_else(|| FnError::Call(NIL_DEREF.into()))?;
            Ok(Value::Str(
                s.labels.get("__value__").cloned().unwrap_or_default(),
            ))
        }
        "reReplaceAll" => {
            arity(name, &args, 3)?;
            let re = compile(string_arg(&args[0])?)?;
            let (repl, text) = (string_arg(&args[1])?, string_arg(&args[2])?);
            Ok(Value::Str(re.replace_all(text, repl).into_owned()))
        }
        "match" => {
            arity(name, &args, 2)?;
            let pat = string_arg(&args[0])?;
            let re = regex::Regex::new(pat).map_err(|e| FnError::Call(regex_error(&e)))?;
            Ok(Value::Bool(re.is_match(string_arg(&args[1])?)))
        }
        "safeHtml" => {
            one(&args)?;
            Ok(Value::Html(string_arg(&args[0])?.to_string()))
        }
        "title" => {
            one(&args)?;
            Ok(Value::Str(title(string_arg(&args[0])?)))
        }
        "toUpper" => {
            one(&args)?;
            Ok(Value::Str(string_arg(&args[0])?.to_uppercase()))
        }
        "toLower" => {
            one(&args)?;
            Ok(Value::Str(string_arg(&args[0])?.to_lowercase()))
        }
        "graphLink" | "tableLink" => {
            one(&args)?;
            let tab = if name == "graphLink" { 0 } else { 1 };
            Ok(Value::Str(format!(
                "/graph?g0.expr={}&g0.tab={tab}",
                query_escape(string_arg(&args[0])?)
            )))
        }
        "sortByLabel" => {
            arity(name, &args, 2)?;
            let l = string_arg(&args[0])?.to_string();
            let mut v = samples_arg(&args[1])?;
            v.sort_by(|a, b| a.labels.get(&l).cmp(&b.labels.get(&l)));
            Ok(Value::Samples(Rc::new(v)))
        }
        "stripPort" => {
            one(&args)?;
            let hp = string_arg(&args[0])?;
            Ok(Value::Str(match split_host_port(hp) {
                Some((h, _)) => h.to_string(),
                None => hp.to_string(),
            }))
        }
        "stripDomain" => {
            one(&args)?;
            let hp = string_arg(&args[0])?;
            let (host, port) = split_host_port(hp).unwrap_or((hp, ""));
            if host.parse::<std::net::IpAddr>().is_ok() {
                return Ok(Value::Str(hp.to_string()));
            }
            let host = host.split('.').next().unwrap_or_default();
            Ok(Value::Str(if port.is_empty() {
                host.to_string()
            } else if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            }))
        }
        "humanize" => {
            one(&args)?;
            Ok(Value::Str(humanize(to_float(&args[0])?)))
        }
        "humanize1024" => {
            one(&args)?;
            Ok(Value::Str(humanize1024(to_float(&args[0])?)))
        }
        "humanizeDuration" => {
            one(&args)?;
            Ok(Value::Str(humanize_duration(to_float(&args[0])?)))
        }
        "humanizePercentage" => {
            one(&args)?;
            Ok(Value::Str(format!("{}%", g4(to_float(&args[0])? * 100.0))))
        }
        "humanizeTimestamp" => {
            one(&args)?;
            let v = to_float(&args[0])?;
            if v.is_nan() || v.is_infinite() {
                return Ok(Value::Str(g4(v)));
            }
            Ok(Value::Str(format_go_time(float_to_time(v)?)))
        }
        "toTime" => {
            one(&args)?;
            let v = to_float(&args[0])?;
            if v.is_nan() || v.is_infinite() {
                return Err(FnError::Call("value is NaN or Inf".into()));
            }
            Ok(Value::Time(float_to_time(v)?))
        }
        "pathPrefix" => {
            arity(name, &args, 0)?;
            Ok(Value::Str(url_path(env.external_url).to_string()))
        }
        "externalURL" => {
            arity(name, &args, 0)?;
            Ok(Value::Str(env.external_url.to_string()))
        }
        "args" => Ok(Value::Args(Rc::new(
            args.into_iter()
                .enumerate()
                .map(|(i, a)| (format!("arg{i}"), a))
                .collect(),
        ))),
        "parseDuration" => {
            one(&args)?;
            let ms = parse_duration(string_arg(&args[0])?).map_err(FnError::Call)?;
            Ok(Value::Float(ms as f64 / 1000.0))
        }
        _ => Err(FnError::Call(format!("function {name:?} not defined"))),
    }
}

/// Prometheus' `floatToTime`: seconds → nanoseconds, truncated to milliseconds as
/// `model.TimeFromUnixNano` does.
fn float_to_time(v: f64) -> Result<i64, FnError> {
    let ns = v * 1e9;
    if ns > i64::MAX as f64 || ns < i64::MIN as f64 {
        return Err(FnError::Call(format!(
            "{} cannot be represented as a nanoseconds timestamp since it overflows int64",
            format_g(v, None)
        )));
    }
    let ms = (ns as i64) / 1_000_000;
    Ok(ms * 1_000_000)
}

fn compile(pat: &str) -> Result<regex::Regex, FnError> {
    regex::Regex::new(pat).map_err(|e| {
        FnError::Call(format!(
            "regexp: Compile({}): {}",
            go_backquote(pat),
            regex_error(&e)
        ))
    })
}

fn go_backquote(s: &str) -> String {
    if s.contains('`') {
        super::gofmt::go_quote(s)
    } else {
        format!("`{s}`")
    }
}

fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text
        .lines()
        .rev()
        .find(|l| l.starts_with("error: "))
        .unwrap_or(&text);
    format!(
        "error parsing regexp: {}",
        last.trim_start_matches("error: ")
    )
}

fn index(args: Vec<Value>) -> Result<Value, FnError> {
    let mut it = args.into_iter();
    let Some(mut item) = it.next() else {
        return Err(FnError::Args(
            "wrong number of args for index: want at least 1 got 0".into(),
        ));
    };
    for idx in it {
        item = match (&item, &idx) {
            (Value::Map(m) | Value::Kv(m), Value::Str(k)) => {
                Value::Str(m.get(k).cloned().unwrap_or_default())
            }
            (Value::Strings(v), Value::Int(i)) => {
                match usize::try_from(*i).ok().and_then(|i| v.get(i)) {
                    Some(s) => Value::Str(s.clone()),
                    None => return Err(FnError::Call(format!("index out of range: {i}"))),
                }
            }
            (Value::AmAlerts(v, _), Value::Int(i)) => {
                match usize::try_from(*i).ok().and_then(|i| v.get(i)) {
                    Some(a) => Value::AmAlert(Rc::new(a.clone())),
                    None => return Err(FnError::Call(format!("index out of range: {i}"))),
                }
            }
            (Value::Args(m), Value::Str(k)) => m.get(k).cloned().unwrap_or(Value::Nil),
            (Value::Map(_) | Value::Kv(_) | Value::Args(_), _) => {
                return Err(FnError::Call(format!(
                    "value has type {}; should be string",
                    idx.type_name()
                )));
            }
            (Value::Samples(v), Value::Int(i)) => {
                match usize::try_from(*i).ok().and_then(|i| v.get(i)) {
                    Some(s) => Value::Sample(s.clone()),
                    None => return Err(FnError::Call(format!("index out of range: {i}"))),
                }
            }
            (Value::Str(s), Value::Int(i)) => {
                match usize::try_from(*i).ok().and_then(|i| s.as_bytes().get(i)) {
                    Some(b) => Value::Int(i64::from(*b)),
                    None => return Err(FnError::Call(format!("index out of range: {i}"))),
                }
            }
            (Value::Nil, _) => return Err(FnError::Call("index of untyped nil".into())),
            _ => {
                return Err(FnError::Call(format!(
                    "can't index item of type {}",
                    item.type_name()
                )));
            }
        };
    }
    Ok(item)
}

/// Go's `evalArgs`: a single string as it is, anything else through `fmt.Sprint`.
fn eval_args(args: &[Value]) -> String {
    match args {
        [Value::Str(s)] => s.clone(),
        _ => sprint_all(args),
    }
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Kind {
    Bool,
    Int,
    Float,
    Str,
    Invalid,
}

fn kind(v: &Value) -> Kind {
    match v {
        Value::Bool(_) => Kind::Bool,
        Value::Int(_) => Kind::Int,
        Value::Float(_) => Kind::Float,
        Value::Str(_) | Value::Html(_) => Kind::Str,
        _ => Kind::Invalid,
    }
}

fn basic_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Float(x), Value::Float(y)) => x == y,
        (Value::Str(x) | Value::Html(x), Value::Str(y) | Value::Html(y)) => x == y,
        (Value::Nil, Value::Nil) => true,
        _ => false,
    }
}

fn less(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x < y,
        (Value::Float(x), Value::Float(y)) => x < y,
        (Value::Str(x) | Value::Html(x), Value::Str(y) | Value::Html(y)) => x < y,
        _ => false,
    }
}

const BAD_COMPARISON: &str = "incompatible types for comparison";
const BAD_COMPARISON_TYPE: &str = "invalid type for comparison";

/// Go 1.19's `eq` (true when the first argument equals any other), `ne`, `lt`, `le`, `gt`,
/// `ge`: basic kinds only, both of the same kind.
fn compare(name: &str, args: &[Value]) -> Result<Value, FnError> {
    if name == "eq" {
        let Some((a, rest)) = args.split_first() else {
            return Err(FnError::Args(
                "wrong number of args for eq: want at least 1 got 0".into(),
            ));
        };
        if rest.is_empty() {
            return Err(FnError::Call("missing argument for comparison".into()));
        }
        let k1 = kind(a);
        for b in rest {
            let k2 = kind(b);
            if k1 != k2 {
                if !matches!(a, Value::Nil) && !matches!(b, Value::Nil) {
                    return Err(FnError::Call(BAD_COMPARISON.into()));
                }
                continue;
            }
            if k1 == Kind::Invalid && !(matches!(a, Value::Nil) && matches!(b, Value::Nil)) {
                return Err(FnError::Call(format!(
                    "non-comparable types {}: {}, {}: {}",
                    sprint(a),
                    a.type_name(),
                    b.type_name(),
                    sprint(b)
                )));
            }
            if basic_eq(a, b) {
                return Ok(Value::Bool(true));
            }
        }
        return Ok(Value::Bool(false));
    }
    arity(name, args, 2)?;
    let (a, b) = (&args[0], &args[1]);
    if name == "ne" {
        return match compare("eq", args)? {
            Value::Bool(t) => Ok(Value::Bool(!t)),
            v => Ok(v),
        };
    }
    let (k1, k2) = (kind(a), kind(b));
    if k1 == Kind::Invalid || k2 == Kind::Invalid {
        return Err(FnError::Call(BAD_COMPARISON_TYPE.into()));
    }
    if k1 != k2 {
        return Err(FnError::Call(BAD_COMPARISON.into()));
    }
    if k1 == Kind::Bool {
        return Err(FnError::Call(BAD_COMPARISON_TYPE.into()));
    }
    let lt = less(a, b);
    let eq = basic_eq(a, b);
    Ok(Value::Bool(match name {
        "lt" => lt,
        "le" => lt || eq,
        "gt" => !lt && !eq,
        _ => !lt,
    }))
}

/// Prometheus' `humanize`: SI prefixes (k M G … for ≥ 1, m u n … for < 1), `%.4g`.
pub(crate) fn humanize(mut v: f64) -> String {
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return g4(v);
    }
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    format!("{}{prefix}", g4(v))
}

/// Prometheus' `humanize1024`: binary prefixes (ki Mi Gi …) above 1, `%.4g`.
pub(crate) fn humanize1024(mut v: f64) -> String {
    if v.abs() <= 1.0 || v.is_nan() || v.is_infinite() {
        return g4(v);
    }
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", g4(v))
}

/// Prometheus' `humanizeDuration`: seconds as `1d 2h 3m 4s`, `1m 0s`, `5.5s`, `500ms`.
pub(crate) fn humanize_duration(mut v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return g4(v);
    }
    if v == 0.0 {
        return format!("{}s", g4(v));
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        v = v.abs();
        let d = v as i64;
        let (secs, mins, hours, days) = (d % 60, d / 60 % 60, d / 3600 % 24, d / 86_400);
        return if days != 0 {
            format!("{sign}{days}d {hours}h {mins}m {secs}s")
        } else if hours != 0 {
            format!("{sign}{hours}h {mins}m {secs}s")
        } else if mins != 0 {
            format!("{sign}{mins}m {secs}s")
        } else {
            format!("{sign}{}s", g4(v))
        };
    }
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", g4(v))
}

/// Alertmanager's `title` (`cases.Title(language.AmericanEnglish)`): the first letter of
/// every word upper-cased and the rest of the word lower-cased; a word is a run of letters,
/// digits and apostrophes. (Unicode's full word-break rules are not reproduced.)
fn title_cased(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_word = false;
    for c in s.chars() {
        let word_char = c.is_alphanumeric() || c == '\'' || c == '\u{2019}';
        if word_char && !in_word {
            out.extend(c.to_uppercase());
        } else if word_char {
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
        in_word = word_char;
    }
    out
}

/// Go's `strings.Title`: the first letter of every word upper-cased.
fn title(s: &str) -> String {
    let sep = |c: char| {
        if c.is_ascii() {
            !(c.is_ascii_alphanumeric() || c == '_')
        } else if c.is_alphanumeric() {
            false
        } else {
            c.is_whitespace()
        }
    };
    let mut prev = ' ';
    s.chars()
        .flat_map(|c| {
            let up = sep(prev);
            prev = c;
            let v: Vec<char> = if up {
                c.to_uppercase().collect()
            } else {
                vec![c]
            };
            v
        })
        .collect()
}

/// Go's `net.SplitHostPort`; `None` where Go returns an error.
fn split_host_port(hp: &str) -> Option<(&str, &str)> {
    let i = hp.rfind(':')?;
    let (host, j, k) = if hp.starts_with('[') {
        let end = hp.find(']')?;
        if end + 1 != i {
            return None;
        }
        (&hp[1..end], 1, end + 1)
    } else {
        let host = &hp[..i];
        if host.contains(':') {
            return None;
        }
        (host, 0, 0)
    };
    if hp[j..].contains('[') || hp[k..].contains(']') {
        return None;
    }
    Some((host, &hp[i + 1..]))
}

/// Go's `url.QueryEscape` (the template function `urlquery`, and Prometheus' alert links).
pub fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Go's `template.HTMLEscapeString`.
fn html_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Go's `template.JSEscapeString`.
fn js_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The path of a URL such as `https://host:9470/prefix` (`/prefix`), for `pathPrefix`.
fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("");
    path.split(['?', '#']).next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humanize_as_prometheus() {
        for (v, want) in [
            (0.0, "0"),
            (1.0, "1"),
            (1234.0, "1.234k"),
            (1234567.0, "1.235M"),
            (0.0123, "12.3m"),
            (0.000001, "1u"),
            (-1500.0, "-1.5k"),
            (1e30, "1e+06Y"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
        ] {
            assert_eq!(humanize(v), want, "{v}");
        }
        assert_eq!(humanize1024(1024.0), "1ki");
        assert_eq!(humanize1024(1.0), "1");
        assert_eq!(humanize1024(1_073_741_824.0 * 1.5), "1.5Gi");
        assert_eq!(humanize1024(0.5), "0.5");
    }

    #[test]
    fn humanize_duration_as_prometheus() {
        for (v, want) in [
            (0.0, "0s"),
            (1.0, "1s"),
            (60.0, "1m 0s"),
            (3600.0, "1h 0m 0s"),
            (86400.0 * 2.0 + 3661.0, "2d 1h 1m 1s"),
            (59.5, "59.5s"),
            (0.1, "100ms"),
            (0.000_001, "1us"),
            (-65.0, "-1m 5s"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(humanize_duration(v), want, "{v}");
        }
    }

    #[test]
    fn small_go_functions() {
        assert_eq!(title("hello wORLD foo_bar x-y"), "Hello WORLD Foo_bar X-Y");
        assert_eq!(split_host_port("host:9100"), Some(("host", "9100")));
        assert_eq!(split_host_port("[::1]:9100"), Some(("::1", "9100")));
        assert_eq!(split_host_port("host"), None);
        assert_eq!(split_host_port("::1"), None);
        assert_eq!(query_escape("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
        assert_eq!(url_path("http://x:9470/outpost/"), "/outpost/");
        assert_eq!(url_path("http://x:9470"), "");
        assert_eq!(go_parse_float("1e3"), Ok(1000.0));
        assert_eq!(
            go_parse_float("x"),
            Err("strconv.ParseFloat: parsing \"x\": invalid syntax".into())
        );
        assert_eq!(
            go_parse_float("1e400"),
            Err("strconv.ParseFloat: parsing \"1e400\": value out of range".into())
        );
    }
}
