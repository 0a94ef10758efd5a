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
}

/// The series a selector picks and how far its window is shifted into the past.
#[derive(Clone, Debug)]
pub struct Selector {
    /// Never empty, and at least one matcher does not match the empty string.
    pub matchers: Vec<Matcher>,
    /// `offset` in milliseconds; negative for `offset -5m`.
    pub offset_ms: i64,
}

/// Parses a query and keeps it only if this version can evaluate it.
pub fn parse(query: &str) -> Result<Expr, QueryError> {
    let expr = ast::parse(query).map_err(QueryError::Parse)?;
    from_ast(&expr)
}

/// Parses a plain series selector such as `up{job="node"}`, as `match[]` takes.
pub fn parse_series_selector(text: &str) -> Result<Vec<Matcher>, QueryError> {
    match parse(text)? {
        Expr::Vector(Selector {
            matchers,
            offset_ms: 0,
        }) => Ok(matchers),
        Expr::Vector(_) => Err(QueryError::NotASeriesSelector(
            "a selector with offset".into(),
        )),
        Expr::Matrix { .. } => Err(QueryError::NotASeriesSelector(
            "a range vector selector".into(),
        )),
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
        ast::Expr::Call(c) => unsupported(format!("function call {}()", c.func.name)),
        ast::Expr::Aggregate(a) => unsupported(format!("aggregation {}()", a.op)),
        ast::Expr::Binary(b) => unsupported(format!("binary operator {}", b.op)),
        ast::Expr::Unary(_) => unsupported("unary minus".into()),
        ast::Expr::Subquery(_) => unsupported("subquery".into()),
        ast::Expr::NumberLiteral(n) => unsupported(format!("number literal {}", n.val)),
        ast::Expr::StringLiteral(s) => unsupported(format!("string literal {:?}", s.val)),
        ast::Expr::Extension(_) => unsupported("extension expression".into()),
    }
}

fn selector(vs: &ast::VectorSelector) -> Result<Selector, QueryError> {
    if vs.at.is_some() {
        return Err(QueryError::Unsupported("the @ modifier".into()));
    }
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
    let offset_ms = match vs.offset {
        None => 0,
        Some(Offset::Pos(d)) => duration_ms(d),
        Some(Offset::Neg(d)) => -duration_ms(d),
    };
    Ok(Selector {
        matchers,
        offset_ms,
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
mod tests {
    use super::*;

    #[test]
    fn rejected_queries_name_the_problem() {
        let cases: &[(&str, &str)] = &[
            (
                "rate(up[5m])",
                "unsupported expression: function call rate(); this version evaluates series selectors only",
            ),
            (
                "sum(up)",
                "unsupported expression: aggregation sum(); this version evaluates series selectors only",
            ),
            (
                "up + up",
                "unsupported expression: binary operator +; this version evaluates series selectors only",
            ),
            (
                "-up",
                "unsupported expression: unary minus; this version evaluates series selectors only",
            ),
            (
                "up[5m:1m]",
                "unsupported expression: subquery; this version evaluates series selectors only",
            ),
            (
                "42",
                "unsupported expression: number literal 42; this version evaluates series selectors only",
            ),
            (
                r#""x""#,
                r#"unsupported expression: string literal "x"; this version evaluates series selectors only"#,
            ),
            (
                "up @ 100",
                "unsupported expression: the @ modifier; this version evaluates series selectors only",
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
        let err = parse_series_selector("up offset 5m").expect_err("offset");
        assert_eq!(
            err.to_string(),
            r#"expected a series selector such as up{job="node"}, got a selector with offset"#
        );
    }
}
