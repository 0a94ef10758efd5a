//! From PromQL text to the plan the evaluator runs: `promql-parser` parses; this module
//! lowers its AST into [`Expr`], refusing with [`QueryError::Unsupported`] what the
//! evaluator cannot run yet, and compiling label matchers once.
//!
//! Each family of the language (aggregations, binary operators, functions, subqueries)
//! gets its own arm in [`from_ast`] and its own module under `eval/`, so adding one is a
//! local change with its own tests.

use crate::error::QueryError;
use crate::storage::{MatchOp, Matcher};
use outpost_shared::model::METRIC_NAME;
use promql_parser::label::MatchOp as AstOp;
use promql_parser::parser::{self as ast, Offset};

/// A parsed query this version can evaluate.
#[derive(Clone, Debug)]
pub enum Expr {
    /// `x{...} [offset o]`: an instant vector selector.
    Vector(Selector),
    /// `x{...}[r] [offset o]`: a range vector (matrix) selector.
    Matrix {
        /// The series and the offset.
        selector: Selector,
        /// The range `r`, in milliseconds.
        range_ms: i64,
    },
    /// A number literal such as `42` or `Inf`.
    Number(f64),
    /// A string literal such as `"x"`.
    String(String),
    /// `-e`: unary minus (unary plus is dropped while lowering).
    Neg(Box<Expr>),
    /// `a <op> b`.
    Binary(Box<Binary>),
    /// `sum by (...) (e)` and the other aggregations.
    Aggregate(Box<Aggregate>),
    /// `e[range:step] [offset o] [@ t]`: a subquery.
    Subquery(Box<Subquery>),
    /// `f(args...)`: a function call; the name is one this version evaluates.
    Call {
        /// The function's name, as in PromQL.
        name: String,
        /// The arguments in order.
        args: Vec<Expr>,
    },
}

impl Expr {
    /// True when evaluating at step `t` reads no point newer than `t`: no `@` modifier and
    /// no negative `offset` anywhere in the expression. Then a range query's answer at `t`
    /// cannot change by a write newer than `t`, which a result cache relies on.
    pub fn reads_only_up_to_step(&self) -> bool {
        let sel_ok = |s: &Selector| s.at.is_none() && s.offset_ms >= 0;
        match self {
            Expr::Vector(s) => sel_ok(s),
            Expr::Matrix { selector, .. } => sel_ok(selector),
            Expr::Number(_) | Expr::String(_) => true,
            Expr::Neg(e) => e.reads_only_up_to_step(),
            Expr::Binary(b) => b.lhs.reads_only_up_to_step() && b.rhs.reads_only_up_to_step(),
            Expr::Aggregate(a) => {
                a.expr.reads_only_up_to_step()
                    && a.param.as_ref().is_none_or(Expr::reads_only_up_to_step)
            }
            Expr::Subquery(q) => {
                q.at.is_none() && q.offset_ms >= 0 && q.expr.reads_only_up_to_step()
            }
            Expr::Call { args, .. } => args.iter().all(Expr::reads_only_up_to_step),
        }
    }
}

/// The kind of value an expression yields, as Prometheus types them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    /// A single number.
    Scalar,
    /// A string.
    String,
    /// An instant vector.
    Vector,
    /// A range vector.
    Matrix,
}

impl Expr {
    /// What the expression yields.
    pub fn value_type(&self) -> ValueType {
        match self {
            Expr::Vector(_) | Expr::Aggregate(_) => ValueType::Vector,
            Expr::Matrix { .. } | Expr::Subquery(_) => ValueType::Matrix,
            Expr::Number(_) => ValueType::Scalar,
            Expr::String(_) => ValueType::String,
            Expr::Neg(e) => e.value_type(),
            Expr::Binary(b) => {
                if b.lhs.value_type() == ValueType::Scalar
                    && b.rhs.value_type() == ValueType::Scalar
                {
                    ValueType::Scalar
                } else {
                    ValueType::Vector
                }
            }
            Expr::Call { name, .. } => match name.as_str() {
                "time" | "scalar" | "pi" => ValueType::Scalar,
                _ => ValueType::Vector,
            },
        }
    }
}

/// A binary operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `^`
    Pow,
    /// `atan2`
    Atan2,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `<`
    Lt,
    /// `>=`
    Ge,
    /// `<=`
    Le,
    /// `and`
    And,
    /// `or`
    Or,
    /// `unless`
    Unless,
}

impl BinOp {
    /// True for `== != > < >= <=`.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq | BinOp::Ne | BinOp::Gt | BinOp::Lt | BinOp::Ge | BinOp::Le
        )
    }
    /// True for `and or unless`.
    pub fn is_set(self) -> bool {
        matches!(self, BinOp::And | BinOp::Or | BinOp::Unless)
    }
}

/// How the two sides of a vector–vector operation are matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Card {
    /// One series on each side per match group.
    OneToOne,
    /// `group_left`: many on the left, one on the right.
    ManyToOne,
    /// `group_right`: one on the left, many on the right.
    OneToMany,
    /// The set operators.
    ManyToMany,
}

/// A binary operation and its modifiers.
#[derive(Clone, Debug)]
pub struct Binary {
    /// The operator.
    pub op: BinOp,
    /// The left operand.
    pub lhs: Expr,
    /// The right operand.
    pub rhs: Expr,
    /// `bool` after a comparison.
    pub return_bool: bool,
    /// The cardinality.
    pub card: Card,
    /// True for `on(...)`, false for `ignoring(...)` or no modifier.
    pub on: bool,
    /// The labels listed in `on`/`ignoring`.
    pub matching: Vec<String>,
    /// The labels listed in `group_left`/`group_right`.
    pub include: Vec<String>,
}

/// An aggregation operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggOp {
    /// `sum`
    Sum,
    /// `avg`
    Avg,
    /// `count`
    Count,
    /// `min`
    Min,
    /// `max`
    Max,
    /// `group`
    Group,
    /// `stddev`
    Stddev,
    /// `stdvar`
    Stdvar,
    /// `topk`
    Topk,
    /// `bottomk`
    Bottomk,
    /// `quantile`
    Quantile,
    /// `count_values`
    CountValues,
}

/// An aggregation and its grouping.
#[derive(Clone, Debug)]
pub struct Aggregate {
    /// The operator.
    pub op: AggOp,
    /// The aggregated vector.
    pub expr: Expr,
    /// The parameter of `topk`, `bottomk`, `quantile` and `count_values`.
    pub param: Option<Expr>,
    /// True for `without(...)`, false for `by(...)` or no clause.
    pub without: bool,
    /// The labels listed.
    pub grouping: Vec<String>,
}

/// A subquery: `expr` evaluated every `step_ms` over `range_ms`, as a range vector.
#[derive(Clone, Debug)]
pub struct Subquery {
    /// The inner expression (an instant vector).
    pub expr: Expr,
    /// The range, ms.
    pub range_ms: i64,
    /// The resolution, ms; `None` for Prometheus' default evaluation interval (1 m).
    pub step_ms: Option<i64>,
    /// `offset` in milliseconds; negative for `offset -5m`.
    pub offset_ms: i64,
    /// The `@` modifier.
    pub at: Option<At>,
}

/// The `@` modifier: evaluate at a fixed time instead of the step's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// `@ <unix seconds>`, in ms.
    Ms(i64),
    /// `@ start()`: the range query's start (the instant query's time).
    Start,
    /// `@ end()`: the range query's end (the instant query's time).
    End,
}

impl At {
    /// The time this modifier stands for, given the query's start and end.
    pub fn resolve(self, start_ms: i64, end_ms: i64) -> i64 {
        match self {
            At::Ms(t) => t,
            At::Start => start_ms,
            At::End => end_ms,
        }
    }
}

/// The series a selector picks and how far its window is shifted into the past.
#[derive(Clone, Debug)]
pub struct Selector {
    /// Never empty, and at least one matcher does not match the empty string.
    pub matchers: Vec<Matcher>,
    /// `offset` in milliseconds; negative for `offset -5m`.
    pub offset_ms: i64,
    /// The `@` modifier, if any.
    pub at: Option<At>,
}

/// Parses a query and keeps it only if this version can evaluate it.
pub fn parse(query: &str) -> Result<Expr, QueryError> {
    check_nesting(query)?;
    register_functions();
    let expr = ast::parse(query).map_err(QueryError::Parse)?;
    from_ast(&expr)
}

/// Most operators, brackets and set keywords one query may hold: a bound on how deep its
/// expression tree can nest, which parsing, planning and evaluation walk recursively. Far
/// above what dashboards and rules write; a query beyond it is refused before parsing
/// rather than risking the program's stack.
pub const MAX_NESTING: usize = 1000;

/// Refuses a query whose tree could nest deeper than [`MAX_NESTING`]: counts, outside
/// quoted strings, every bracket, operator character and `and`/`or`/`unless`/`atan2`.
fn check_nesting(query: &str) -> Result<(), QueryError> {
    let b = query.as_bytes();
    let mut count = 0usize;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    i += if b[i] == b'\\' && c != b'`' { 2 } else { 1 };
                }
            }
            b'(' | b'[' | b'{' | b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'=' | b'!' | b'<'
            | b'>' => count += 1,
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                let word = &query[start..i];
                if ["and", "or", "unless", "atan2"]
                    .iter()
                    .any(|k| word.eq_ignore_ascii_case(k))
                {
                    count += 1;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    if count > MAX_NESTING {
        return Err(QueryError::Parse(format!(
            "query too complex: {count} operators and brackets, at most {MAX_NESTING} are accepted"
        )));
    }
    Ok(())
}

/// The query laid out as Prometheus' `/api/v1/format_query` does (its prettier: one
/// operand per line once a line would pass 100 characters, two-space indents).
///
/// # Errors
/// The query does not parse.
pub fn format_query(query: &str) -> Result<String, QueryError> {
    check_nesting(query)?;
    register_functions();
    let expr = ast::parse(query).map_err(QueryError::Parse)?;
    Ok(go_number_literals(&expr.prettify()))
}

/// Rewrites the number literals of a formatted query as Go's `fmt.Sprint` writes a float,
/// which Prometheus' prettier uses: `+Inf`, and the shortest digits with an exponent from
/// 1e+06 or below 1e-04 (`1e+09`, `5.0976e+06`, `1e-07`). Quoted strings, durations and
/// `@` times are left as they are.
fn go_number_literals(s: &str) -> String {
    use outpost_shared::model::format_go_float;
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len() + 8);
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':' || c == b'.';
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            // Copy the quoted string through its closing quote.
            let start = i;
            i += 1;
            while i < b.len() && b[i] != c {
                i += if b[i] == b'\\' && c != b'`' { 2 } else { 1 };
            }
            i = (i + 1).min(b.len());
            out.push_str(&s[start..i]);
            continue;
        }
        let boundary = i == 0 || !ident(b[i - 1]);
        if boundary && c.is_ascii_digit() {
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            let token = &s[start..i];
            let duration = i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_');
            match token.parse::<f64>() {
                Ok(v) if !duration && !out.ends_with("@ ") => out.push_str(&format_go_float(v)),
                _ => out.push_str(token),
            }
            continue;
        }
        if boundary && s[i..].starts_with("Inf") && !b.get(i + 3).is_some_and(|&c| ident(c)) {
            out.push_str(if out.ends_with('-') { "Inf" } else { "+Inf" });
            i += 3;
            continue;
        }
        let ch = s[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Parses a plain series selector such as `up{job="node"}`, as `match[]` takes.
pub fn parse_series_selector(text: &str) -> Result<Vec<Matcher>, QueryError> {
    check_nesting(text)?;
    register_functions();
    let expr = ast::parse(text).map_err(QueryError::Parse)?;
    let vs = match &expr {
        ast::Expr::VectorSelector(vs) => vs,
        ast::Expr::MatrixSelector(_) => {
            return Err(QueryError::NotASeriesSelector(
                "a range vector selector".into(),
            ));
        }
        other => return Err(QueryError::NotASeriesSelector(describe(other))),
    };
    match selector(vs)? {
        Selector {
            matchers,
            offset_ms: 0,
            at: None,
        } => Ok(matchers),
        Selector { at: Some(_), .. } => Err(QueryError::NotASeriesSelector(
            "a selector with the @ modifier".into(),
        )),
        _ => Err(QueryError::NotASeriesSelector(
            "a selector with offset".into(),
        )),
    }
}

/// Teaches `promql-parser` the functions of Prometheus 2.42 it no longer knows:
/// `holt_winters(range vector, scalar, scalar)` (renamed in Prometheus 3).
fn register_functions() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use promql_parser::parser::value::ValueType as T;
        // Fails only if the parser already knows the name, which is as good.
        let _ = ast::register_extra_functions(vec![ast::Function::new(
            "holt_winters",
            vec![T::Matrix, T::Scalar, T::Scalar],
            0,
            T::Vector,
            false,
        )]);
    });
}

/// How an AST node is named in errors.
fn describe(expr: &ast::Expr) -> String {
    match expr {
        ast::Expr::VectorSelector(_) => "a vector selector".into(),
        ast::Expr::MatrixSelector(_) => "a range vector selector".into(),
        ast::Expr::Paren(p) => describe(&p.expr),
        ast::Expr::Call(c) => format!("function call {}()", c.func.name),
        ast::Expr::Aggregate(a) => format!("aggregation {}()", a.op),
        ast::Expr::Binary(b) => format!("binary operator {}", b.op),
        ast::Expr::Unary(_) => "unary minus".into(),
        ast::Expr::Subquery(_) => "subquery".into(),
        ast::Expr::NumberLiteral(n) => format!("number literal {}", n.val),
        ast::Expr::StringLiteral(s) => format!("string literal {:?}", s.val),
        ast::Expr::Extension(_) => "extension expression".into(),
    }
}

fn from_ast(expr: &ast::Expr) -> Result<Expr, QueryError> {
    let unsupported = |what: String| Err(QueryError::Unsupported(what));
    match expr {
        ast::Expr::VectorSelector(vs) => Ok(Expr::Vector(selector(vs)?)),
        ast::Expr::MatrixSelector(ms) => Ok(Expr::Matrix {
            selector: selector(&ms.vs)?,
            range_ms: duration_ms(ms.range),
        }),
        ast::Expr::Paren(p) => from_ast(&p.expr),
        ast::Expr::NumberLiteral(n) => Ok(Expr::Number(n.val)),
        ast::Expr::StringLiteral(s) => Ok(Expr::String(s.val.clone())),
        ast::Expr::Unary(u) => Ok(Expr::Neg(Box::new(from_ast(&u.expr)?))),
        ast::Expr::Call(c) => {
            let name = c.func.name;
            if !crate::eval::is_supported_function(name) {
                return unsupported(format!("function call {name}()"));
            }
            let args = c
                .args
                .args
                .iter()
                .map(|a| from_ast(a))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Expr::Call {
                name: name.to_string(),
                args,
            })
        }
        ast::Expr::Aggregate(a) => {
            let op = match a.op.to_string().as_str() {
                "sum" => AggOp::Sum,
                "avg" => AggOp::Avg,
                "count" => AggOp::Count,
                "min" => AggOp::Min,
                "max" => AggOp::Max,
                "group" => AggOp::Group,
                "stddev" => AggOp::Stddev,
                "stdvar" => AggOp::Stdvar,
                "topk" => AggOp::Topk,
                "bottomk" => AggOp::Bottomk,
                "quantile" => AggOp::Quantile,
                "count_values" => AggOp::CountValues,
                other => return unsupported(format!("aggregation {other}()")),
            };
            let (without, grouping) = match &a.modifier {
                None => (false, Vec::new()),
                Some(ast::LabelModifier::Include(l)) => (false, l.labels.clone()),
                Some(ast::LabelModifier::Exclude(l)) => (true, l.labels.clone()),
            };
            let param = match &a.param {
                Some(p) => Some(from_ast(p)?),
                None => None,
            };
            Ok(Expr::Aggregate(Box::new(Aggregate {
                op,
                expr: from_ast(&a.expr)?,
                param,
                without,
                grouping,
            })))
        }
        ast::Expr::Binary(b) => {
            let op = match b.op.to_string().as_str() {
                "+" => BinOp::Add,
                "-" => BinOp::Sub,
                "*" => BinOp::Mul,
                "/" => BinOp::Div,
                "%" => BinOp::Mod,
                "^" => BinOp::Pow,
                "atan2" => BinOp::Atan2,
                "==" => BinOp::Eq,
                "!=" => BinOp::Ne,
                ">" => BinOp::Gt,
                "<" => BinOp::Lt,
                ">=" => BinOp::Ge,
                "<=" => BinOp::Le,
                "and" => BinOp::And,
                "or" => BinOp::Or,
                "unless" => BinOp::Unless,
                other => return unsupported(format!("binary operator {other}")),
            };
            let (mut card, mut on, mut matching, mut include, mut return_bool) =
                (Card::OneToOne, false, Vec::new(), Vec::new(), false);
            if let Some(m) = &b.modifier {
                if m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some() {
                    return unsupported("fill modifiers".into());
                }
                return_bool = m.return_bool;
                card = match &m.card {
                    ast::VectorMatchCardinality::OneToOne => Card::OneToOne,
                    ast::VectorMatchCardinality::ManyToOne(l) => {
                        include = l.labels.clone();
                        Card::ManyToOne
                    }
                    ast::VectorMatchCardinality::OneToMany(l) => {
                        include = l.labels.clone();
                        Card::OneToMany
                    }
                    ast::VectorMatchCardinality::ManyToMany => Card::ManyToMany,
                };
                match &m.matching {
                    None => {}
                    Some(ast::LabelModifier::Include(l)) => {
                        on = true;
                        matching = l.labels.clone();
                    }
                    Some(ast::LabelModifier::Exclude(l)) => matching = l.labels.clone(),
                }
            }
            if op.is_set() {
                card = Card::ManyToMany;
            }
            Ok(Expr::Binary(Box::new(Binary {
                op,
                lhs: from_ast(&b.lhs)?,
                rhs: from_ast(&b.rhs)?,
                return_bool,
                card,
                on,
                matching,
                include,
            })))
        }
        ast::Expr::Subquery(sq) => {
            let step_ms = sq.step.map(duration_ms).filter(|s| *s > 0);
            Ok(Expr::Subquery(Box::new(Subquery {
                expr: from_ast(&sq.expr)?,
                range_ms: duration_ms(sq.range),
                step_ms,
                offset_ms: offset_ms(&sq.offset),
                at: sq.at.as_ref().map(at),
            })))
        }
        ast::Expr::Extension(_) => unsupported("extension expression".into()),
    }
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => duration_ms(*d),
        Some(Offset::Neg(d)) => -duration_ms(*d),
    }
}

fn at(a: &ast::AtModifier) -> At {
    match a {
        ast::AtModifier::Start => At::Start,
        ast::AtModifier::End => At::End,
        ast::AtModifier::At(t) => At::Ms(match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => duration_ms(d),
            Err(e) => -duration_ms(e.duration()),
        }),
    }
}

fn selector(vs: &ast::VectorSelector) -> Result<Selector, QueryError> {
    if !vs.matchers.or_matchers.is_empty() {
        return Err(QueryError::Unsupported(
            "\"or\" between label matchers".into(),
        ));
    }
    let mut matchers = Vec::with_capacity(vs.matchers.matchers.len() + 1);
    if let Some(name) = &vs.name {
        matchers.push(new_matcher(METRIC_NAME, MatchOp::Equal, name, None)?);
    }
    for m in &vs.matchers.matchers {
        let (op, parsed) = match &m.op {
            AstOp::Equal => (MatchOp::Equal, None),
            AstOp::NotEqual => (MatchOp::NotEqual, None),
            AstOp::Re(re) => (MatchOp::Regex, Some(re.as_str())),
            AstOp::NotRe(re) => (MatchOp::NotRegex, Some(re.as_str())),
        };
        matchers.push(new_matcher(&m.name, op, &m.value, parsed)?);
    }
    if matchers.iter().all(Matcher::matches_empty) {
        return Err(QueryError::EmptySelector);
    }
    Ok(Selector {
        matchers,
        offset_ms: offset_ms(&vs.offset),
        at: vs.at.as_ref().map(at),
    })
}

/// `parsed` is the regex promql-parser compiled; it accepts some Go-isms (an unescaped `{`
/// that is not a repetition) that the `regex` crate rejects, so it is the fallback.
fn new_matcher(
    name: &str,
    op: MatchOp,
    value: &str,
    parsed: Option<&str>,
) -> Result<Matcher, QueryError> {
    Matcher::new(name, op, value).or_else(|e| {
        parsed
            .and_then(|p| Matcher::new(name, op, p).ok())
            .ok_or_else(|| QueryError::BadRegex {
                label: name.to_string(),
                pattern: value.to_string(),
                reason: e.to_string(),
            })
    })
}

fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn expressions_that_read_past_the_step_are_told_apart() {
        for (q, only_past) in [
            ("sum(rate(x[5m]))", true),
            ("x offset 5m", true),
            ("x offset -5m", false),
            ("x @ 100", false),
            ("rate(x[5m] @ end())", false),
            ("max_over_time(x[10m:1m] offset -1m)", false),
            ("max_over_time(x[10m:1m] @ start())", false),
            ("topk(scalar(y @ 5), x)", false),
            ("x + on() group_left y offset -1s", false),
            ("label_replace(x, \"a\", \"b\", \"c\", \"d\")", true),
        ] {
            assert_eq!(parse(q).unwrap().reads_only_up_to_step(), only_past, "{q}");
        }
    }

    #[test]
    fn deep_queries_are_refused_before_they_reach_the_stack() {
        let deep = |n: usize| format!("{}1{}", "(".repeat(n), ")".repeat(n));
        // At the limit: parsed and planned on a small stack.
        let q = deep(MAX_NESTING);
        let ok = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || parse(&q).is_ok())
            .unwrap()
            .join()
            .unwrap();
        assert!(ok);
        for q in [
            deep(MAX_NESTING + 1),
            format!("{}x", "-".repeat(100_000)),
            vec!["x"; 50_000].join(" + "),
            vec!["x"; 50_000].join(" or "),
        ] {
            let e = parse(&q).unwrap_err().to_string();
            assert!(e.starts_with("parse error: query too complex"), "{e}");
        }
        // Brackets inside strings do not count.
        let q = format!("x{{a=\"{}\"}}", "(".repeat(5000));
        assert!(parse(&q).is_ok());
    }
    use outpost_shared::model::format_go_float;

    #[test]
    fn numbers_are_written_as_go_writes_them() {
        for (v, want) in [
            (1e9, "1e+09"),
            (5_097_600.0, "5.0976e+06"),
            (999_999.0, "999999"),
            (1e-7, "1e-07"),
            (0.0001, "0.0001"),
            (0.5, "0.5"),
            (-2.5e-5, "-2.5e-05"),
            (1e300, "1e+300"),
        ] {
            assert_eq!(format_go_float(v), want);
        }
    }

    #[test]
    fn only_number_literals_are_rewritten() {
        let q = r#"x{a="1000000"} offset 5m > 1000000 or y @ 100.000 + Inf - -Inf"#;
        assert_eq!(
            format_query(q).unwrap(),
            r#"x{a="1000000"} offset 5m > 1e+06 or y @ 100.000 + +Inf - -Inf"#
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_queries_name_the_problem() {
        let cases: &[(&str, &str)] = &[
            (
                "histogram_count(up)",
                "unsupported expression: function call histogram_count(); this version cannot evaluate it yet",
            ),
            (
                "mad_over_time(up[5m])",
                "unsupported expression: function call mad_over_time(); this version cannot evaluate it yet",
            ),
            (
                "sum(sort_by_label(up, \"job\"))",
                "unsupported expression: function call sort_by_label(); this version cannot evaluate it yet",
            ),
            (
                "limitk(2, up)",
                "unsupported expression: aggregation limitk(); this version cannot evaluate it yet",
            ),
            // promql-parser rejects these itself, with Prometheus' wording.
            (
                r#"{job=~".*"}"#,
                "parse error: vector selector must contain at least one non-empty matcher",
            ),
            (
                r#"{job=""}"#,
                "parse error: vector selector must contain at least one non-empty matcher",
            ),
        ];
        for (q, want) in cases {
            let err = parse(q).expect_err(q);
            assert_eq!(err.to_string(), *want, "{q}");
            assert!(err.is_query_text_error(), "{q}");
        }
        let err = parse("up{").expect_err("syntax");
        assert!(matches!(err, QueryError::Parse(_)), "{err}");
    }

    #[test]
    fn every_family_is_planned() {
        for q in [
            "1 + -2 * (3 ^ 2)",
            r#""text""#,
            "sum by (job) (rate(up[5m])) / on(job) group_left count(up)",
            "topk(3, up) or bottomk without (instance) (1, up)",
            "holt_winters(up[10m], 0.5, 0.5)",
            r#"label_replace(up, "a", "$1", "job", "(.*)")"#,
            "histogram_quantile(0.9, sum by (le) (rate(x_bucket[5m])))",
            "quantile_over_time(0.5, up[5m]) > bool 1",
            "year()",
            "max_over_time(rate(up[5m])[30m:1m] offset 1m)",
            "up @ 100",
            "rate(up[5m] @ end())",
            "sum_over_time(up[5m:] @ start())",
        ] {
            parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        }
    }

    #[test]
    fn selectors_that_match_everything_are_rejected() {
        use promql_parser::label::{Matcher as AstMatcher, Matchers};
        let everything = [
            AstMatcher::new(AstOp::Equal, "job", ""),
            AstMatcher::new(AstOp::NotEqual, "job", "x"),
        ];
        let vs = ast::VectorSelector::new(None, Matchers::new(everything.to_vec()));
        assert!(matches!(selector(&vs), Err(QueryError::EmptySelector)));
        let named = ast::VectorSelector::new(Some("up".into()), Matchers::new(everything.to_vec()));
        assert_eq!(selector(&named).expect("named").matchers.len(), 3);
    }

    #[test]
    fn converts_matchers() {
        let Expr::Vector(sel) = parse(r#"x{a="1",b!="2",c=~"3|4",d!~"5"}"#).expect("parse") else {
            panic!("not a vector selector");
        };
        let got: Vec<(String, MatchOp, String)> = sel
            .matchers
            .iter()
            .map(|m| (m.name.clone(), m.op, m.value.clone()))
            .collect();
        let want = [
            ("__name__", MatchOp::Equal, "x"),
            ("a", MatchOp::Equal, "1"),
            ("b", MatchOp::NotEqual, "2"),
            ("c", MatchOp::Regex, "3|4"),
            ("d", MatchOp::NotRegex, "5"),
        ];
        let want: Vec<(String, MatchOp, String)> = want
            .iter()
            .map(|(n, o, v)| (n.to_string(), *o, v.to_string()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(sel.offset_ms, 0);
    }

    #[test]
    fn series_selectors_take_no_range_or_offset() {
        assert_eq!(
            parse_series_selector(r#"up{job="x"}"#)
                .expect("selector")
                .len(),
            2
        );
        let err = parse_series_selector("up[5m]").expect_err("range");
        assert_eq!(
            err.to_string(),
            r#"expected a series selector such as up{job="node"}, got a range vector selector"#
        );
        let err = parse_series_selector("rate(up[1m])").expect_err("function");
        assert_eq!(
            err.to_string(),
            r#"expected a series selector such as up{job="node"}, got function call rate()"#
        );
        let err = parse_series_selector("up offset 5m").expect_err("offset");
        assert_eq!(
            err.to_string(),
            r#"expected a series selector such as up{job="node"}, got a selector with offset"#
        );
    }
}
