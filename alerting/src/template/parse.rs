//! The parser of Go's `text/template`: tokens from [`super::lex`] into a tree of
//! [`Node`]s, with `define`d templates collected by name. As Go's parser, it refuses
//! functions that are not defined and variables that are not in scope.

use super::Dialect;
use super::funcs::is_function;
use super::lex::{Item, Tok, lex};
use std::collections::HashMap;

/// A node of a template's body.
#[derive(Clone, Debug)]
pub(crate) enum Node {
    /// Literal text.
    Text(String),
    /// `{{ pipeline }}`: printed unless it declares variables.
    Action(Pipe),
    /// `if`, `with` or `range` with its body and optional `else` body.
    Branch {
        kind: BranchKind,
        pipe: Pipe,
        body: Vec<Node>,
        else_body: Vec<Node>,
    },
    /// `{{ template "name" pipeline }}`.
    Template {
        pos: usize,
        name: String,
        pipe: Option<Pipe>,
    },
    /// `{{ break }}` inside `range`.
    Break,
    /// `{{ continue }}` inside `range`.
    Continue,
}

/// Which control structure a [`Node::Branch`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BranchKind {
    If,
    With,
    Range,
}

/// A pipeline: optional variable declaration or assignment, then commands joined by `|`.
#[derive(Clone, Debug)]
pub(crate) struct Pipe {
    /// Variables declared (`:=`) or assigned (`=`), one or two for `range`.
    pub(crate) vars: Vec<String>,
    pub(crate) assign: bool,
    pub(crate) cmds: Vec<Cmd>,
}

/// One command of a pipeline: a function and its arguments, or a single operand.
#[derive(Clone, Debug)]
pub(crate) struct Cmd {
    pub(crate) pos: usize,
    /// The command as written, for error messages.
    pub(crate) text: String,
    pub(crate) args: Vec<Arg>,
    /// Each argument's byte offset and text, for errors Go reports at an argument.
    pub(crate) spans: Vec<(usize, String)>,
}

/// An operand.
#[derive(Clone, Debug)]
pub(crate) enum Arg {
    /// `.`.
    Dot,
    /// `.A.B`.
    Field(Vec<String>),
    /// `$x.A.B` (`$` alone is the data).
    Var(String, Vec<String>),
    /// A function name.
    Func(String),
    /// A string literal.
    Str(String),
    /// An integer constant.
    Int(i64),
    /// A floating-point constant.
    Float(f64),
    /// `true`/`false`.
    Bool(bool),
    /// `nil`.
    Nil,
    /// `(pipeline).A.B`.
    Pipe(Box<Pipe>, Vec<String>),
}

/// A parsed template and the templates it `define`s.
#[derive(Clone, Debug)]
pub(crate) struct Tree {
    pub(crate) body: Vec<Node>,
    pub(crate) defines: HashMap<String, Vec<Node>>,
    pub(crate) dialect: Dialect,
}

/// A parse failure: byte offset and Go's message.
pub(crate) type ParseError = (usize, String);

/// What ended a list of nodes: EOF (`None`), or `end`/`else` at a byte offset.
type ListEnd = Option<(usize, &'static str)>;

/// Parses `src` with the functions of `dialect`.
pub(crate) fn parse(src: &str, dialect: Dialect) -> Result<Tree, ParseError> {
    let items = lex(src)?;
    let mut p = Parser {
        src,
        items,
        i: 0,
        vars: vec!["$".to_string()],
        defines: HashMap::new(),
        range_depth: 0,
        dialect,
    };
    let (body, end) = p.list()?;
    if let Some((pos, kw)) = end {
        return Err((pos, format!("unexpected {{{{{kw}}}}}")));
    }
    Ok(Tree {
        body,
        defines: p.defines,
        dialect,
    })
}

struct Parser<'s> {
    src: &'s str,
    items: Vec<Item>,
    i: usize,
    vars: Vec<String>,
    defines: HashMap<String, Vec<Node>>,
    range_depth: usize,
    dialect: Dialect,
}

impl Parser<'_> {
    fn peek(&self) -> &Item {
        &self.items[self.i.min(self.items.len() - 1)]
    }

    fn next(&mut self) -> Item {
        let it = self.peek().clone();
        if self.i < self.items.len() {
            self.i += 1;
        }
        it
    }

    fn expect_right(&mut self, ctx: &str) -> Result<(), ParseError> {
        let it = self.next();
        match it.tok {
            Tok::Right => Ok(()),
            _ => Err((
                it.pos,
                format!("unexpected {} in {ctx}", self.describe(&it)),
            )),
        }
    }

    fn describe(&self, it: &Item) -> String {
        match &it.tok {
            Tok::Eof => "EOF".into(),
            Tok::Right => "\"}}\"".into(),
            _ => format!("{:?}", &self.src[it.pos..it.end]),
        }
    }

    /// Parses nodes up to `{{end}}`, `{{else ...}}` or EOF; returns the list and, for a
    /// keyword that ended it, its position and name (`end` or `else`).
    fn list(&mut self) -> Result<(Vec<Node>, ListEnd), ParseError> {
        let mut out = Vec::new();
        loop {
            let it = self.next();
            match it.tok {
                Tok::Eof => return Ok((out, None)),
                Tok::Text(t) => out.push(Node::Text(t)),
                Tok::Left => {
                    let kw = self.peek().clone();
                    match kw.tok {
                        Tok::Keyword("end") => {
                            self.next();
                            self.expect_right("end")?;
                            return Ok((out, Some((kw.pos, "end"))));
                        }
                        Tok::Keyword("else") => {
                            self.next();
                            return Ok((out, Some((kw.pos, "else"))));
                        }
                        Tok::Keyword(k) => {
                            self.next();
                            if let Some(n) = self.keyword(k, kw.pos)? {
                                out.push(n);
                            }
                        }
                        _ => {
                            let pipe = self.pipeline("command", true)?;
                            self.expect_right("command")?;
                            out.push(Node::Action(pipe));
                        }
                    }
                }
                _ => return Err((it.pos, format!("unexpected {}", self.describe(&it)))),
            }
        }
    }

    fn keyword(&mut self, k: &'static str, pos: usize) -> Result<Option<Node>, ParseError> {
        match k {
            "if" => self.branch(BranchKind::If).map(Some),
            "with" => self.branch(BranchKind::With).map(Some),
            "range" => {
                self.range_depth += 1;
                let r = self.branch(BranchKind::Range);
                self.range_depth -= 1;
                r.map(Some)
            }
            "break" | "continue" => {
                if self.range_depth == 0 {
                    return Err((pos, format!("{{{{{k}}}}} outside {{{{range}}}}")));
                }
                self.expect_right(k)?;
                Ok(Some(if k == "break" {
                    Node::Break
                } else {
                    Node::Continue
                }))
            }
            "template" => {
                let it = self.next();
                let Tok::Str(name) = it.tok else {
                    return Err((
                        it.pos,
                        format!("unexpected {} in template clause", self.describe(&it)),
                    ));
                };
                let pipe = if matches!(self.peek().tok, Tok::Right) {
                    None
                } else {
                    Some(self.pipeline("template clause", false)?)
                };
                self.expect_right("template clause")?;
                // Go places a template call at its name.
                Ok(Some(Node::Template {
                    pos: it.pos,
                    name,
                    pipe,
                }))
            }
            "define" | "block" => {
                let it = self.next();
                let Tok::Str(name) = it.tok else {
                    return Err((
                        it.pos,
                        format!("unexpected {} in {k} clause", self.describe(&it)),
                    ));
                };
                let pipe = if k == "block" {
                    Some(self.pipeline("block clause", false)?)
                } else {
                    None
                };
                self.expect_right(k)?;
                // A defined template sees only `$`, as Go runs it with fresh variables.
                let saved = std::mem::replace(&mut self.vars, vec!["$".to_string()]);
                let res = self.list();
                self.vars = saved;
                let (body, end) = res?;
                match end {
                    Some((_, "end")) => {}
                    Some((p, _)) => return Err((p, format!("unexpected {{{{else}}}} in {k}"))),
                    None => return Err((self.src.len(), "unexpected EOF".into())),
                }
                self.defines.insert(name.clone(), body);
                Ok(pipe.map(|pipe| Node::Template {
                    pos,
                    name,
                    pipe: Some(pipe),
                }))
            }
            _ => Err((pos, format!("unexpected {{{{{k}}}}}"))),
        }
    }

    fn branch(&mut self, kind: BranchKind) -> Result<Node, ParseError> {
        let scope = self.vars.len();
        let ctx = match kind {
            BranchKind::If => "if",
            BranchKind::With => "with",
            BranchKind::Range => "range",
        };
        let pipe = self.pipeline(ctx, true)?;
        self.expect_right(ctx)?;
        let (body, end) = self.list()?;
        let else_body = match end {
            None => return Err((self.src.len(), "unexpected EOF".into())),
            Some((_, "end")) => Vec::new(),
            Some((epos, _)) => {
                if kind == BranchKind::If && matches!(self.peek().tok, Tok::Keyword("if")) {
                    // `{{else if x}}` is `{{else}}{{if x}}...{{end}}{{end}}` sharing one end.
                    self.next();
                    vec![self.branch(BranchKind::If)?]
                } else {
                    self.expect_right("else")?;
                    let (eb, end2) = self.list()?;
                    match end2 {
                        Some((_, "end")) => eb,
                        Some((p, _)) => return Err((p, "expected end; found {{else}}".into())),
                        None => return Err((epos, "unexpected EOF".into())),
                    }
                }
            }
        };
        self.vars.truncate(scope);
        Ok(Node::Branch {
            kind,
            pipe,
            body,
            else_body,
        })
    }

    fn pipeline(&mut self, ctx: &str, allow_decl: bool) -> Result<Pipe, ParseError> {
        let pos = self.peek().pos;
        let mut vars = Vec::new();
        let mut assign = false;
        if allow_decl {
            // `$x :=`, `$x =`, or (range) `$i, $x :=`.
            let save = self.i;
            let mut names = Vec::new();
            while let Tok::Var(v) = &self.peek().tok {
                names.push(v.clone());
                self.next();
                match self.peek().tok {
                    Tok::Comma if ctx == "range" && names.len() == 1 => {
                        self.next();
                    }
                    _ => break,
                }
            }
            match self.peek().tok {
                Tok::Declare if !names.is_empty() => {
                    self.next();
                    vars = names;
                }
                Tok::Assign if !names.is_empty() => {
                    self.next();
                    for n in &names {
                        if !self.vars.contains(n) {
                            return Err((pos, format!("undefined variable {n:?}")));
                        }
                    }
                    vars = names;
                    assign = true;
                }
                _ => self.i = save,
            }
        }
        let mut cmds = Vec::new();
        loop {
            match self.peek().tok {
                Tok::Right | Tok::RParen => break,
                Tok::Eof => return Err((self.peek().pos, "unclosed action".to_string())),
                _ => {}
            }
            cmds.push(self.command()?);
            match self.peek().tok {
                Tok::Pipe => {
                    self.next();
                }
                Tok::Right | Tok::RParen => break,
                _ => {
                    let it = self.peek().clone();
                    return Err((
                        it.pos,
                        format!("unexpected {} in operand", self.describe(&it)),
                    ));
                }
            }
        }
        if cmds.is_empty() {
            return Err((pos, format!("missing value for {ctx}")));
        }
        // Every stage after the first receives the previous value: it must be callable.
        for (i, c) in cmds.iter().enumerate().skip(1) {
            if !matches!(
                c.args.first(),
                Some(Arg::Func(_) | Arg::Field(_) | Arg::Var(..) | Arg::Pipe(..))
            ) {
                return Err((
                    c.pos,
                    format!("non executable command in pipeline stage {}", i + 1),
                ));
            }
        }
        if !assign {
            self.vars.extend(vars.iter().cloned());
        }
        Ok(Pipe { vars, assign, cmds })
    }

    fn command(&mut self) -> Result<Cmd, ParseError> {
        let pos = self.peek().pos;
        let mut args = Vec::new();
        let mut spans = Vec::new();
        let mut end = pos;
        loop {
            match self.peek().tok {
                Tok::Right | Tok::RParen | Tok::Pipe | Tok::Eof => break,
                _ => {}
            }
            let start = self.peek().pos;
            let (a, e) = self.operand()?;
            args.push(a);
            spans.push((start, self.src[start..e].to_string()));
            end = e;
        }
        if args.is_empty() {
            return Err((pos, "empty command".into()));
        }
        Ok(Cmd {
            pos,
            text: self.src[pos..end].to_string(),
            args,
            spans,
        })
    }

    /// Field names directly attached to the previous token (`$x.A.B`, `(...).A`).
    fn chain(&mut self, mut end: usize) -> (Vec<String>, usize) {
        let mut fields = Vec::new();
        while let Tok::Field(f) = &self.peek().tok {
            if self.peek().pos != end {
                break;
            }
            fields.push(f.clone());
            end = self.peek().end;
            self.next();
        }
        (fields, end)
    }

    fn operand(&mut self) -> Result<(Arg, usize), ParseError> {
        let it = self.next();
        let arg = match it.tok {
            Tok::Dot => Arg::Dot,
            Tok::Field(f) => {
                let (mut rest, end) = self.chain(it.end);
                rest.insert(0, f);
                return Ok((Arg::Field(rest), end));
            }
            Tok::Var(v) => {
                if !self.vars.contains(&v) {
                    return Err((it.pos, format!("undefined variable {v:?}")));
                }
                let (rest, end) = self.chain(it.end);
                return Ok((Arg::Var(v, rest), end));
            }
            Tok::Ident(name) => {
                if !is_function(&name, self.dialect) {
                    return Err((it.pos, format!("function {name:?} not defined")));
                }
                Arg::Func(name)
            }
            Tok::Str(s) => Arg::Str(s),
            Tok::Bool(b) => Arg::Bool(b),
            Tok::Nil => Arg::Nil,
            Tok::Number(n) => {
                number(&n).ok_or((it.pos, format!("illegal number syntax: {n:?}")))?
            }
            Tok::LParen => {
                let pipe = self.pipeline("parenthesized pipeline", true)?;
                let close = self.next();
                if close.tok != Tok::RParen {
                    return Err((close.pos, "unclosed left paren".into()));
                }
                let (rest, end) = self.chain(close.end);
                return Ok((Arg::Pipe(Box::new(pipe), rest), end));
            }
            _ => {
                return Err((
                    it.pos,
                    format!("unexpected {} in operand", self.describe(&it)),
                ));
            }
        };
        Ok((arg, it.end))
    }
}

/// A numeric constant as Go's template parser reads it: an integer unless written with a
/// `.`, an exponent or `p` (hexadecimal integers and character constants are integers).
fn number(text: &str) -> Option<Arg> {
    let t = text.replace('_', "");
    let (neg, body) = match t.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, t.strip_prefix('+').unwrap_or(&t)),
    };
    let sign = if neg { -1 } else { 1 };
    if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        if !h.contains(['p', 'P', '.']) {
            return i64::from_str_radix(h, 16).ok().map(|v| Arg::Int(sign * v));
        }
        return None;
    }
    if !body.contains(['.', 'e', 'E']) {
        if let Some(o) = body.strip_prefix("0o").or_else(|| body.strip_prefix("0O")) {
            return i64::from_str_radix(o, 8).ok().map(|v| Arg::Int(sign * v));
        }
        if let Some(bn) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
            return i64::from_str_radix(bn, 2).ok().map(|v| Arg::Int(sign * v));
        }
        if body.len() > 1 && body.starts_with('0') {
            return i64::from_str_radix(&body[1..], 8)
                .ok()
                .map(|v| Arg::Int(sign * v));
        }
        return body.parse::<i64>().ok().map(|v| Arg::Int(sign * v));
    }
    t.parse::<f64>().ok().map(Arg::Float)
}
