//! The lexer of Go's `text/template`: text outside `{{ }}`, trim markers `{{- ` and ` -}}`,
//! comments `{{/* */}}`, and the tokens inside actions. Positions are byte offsets into
//! the template text, for error messages that name a line (and column) as Go's do.

/// What a token is.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    /// Text outside actions, trim markers applied.
    Text(String),
    /// `{{`.
    Left,
    /// `}}`.
    Right,
    /// `.Name`.
    Field(String),
    /// `$name` or `$`.
    Var(String),
    /// A function name.
    Ident(String),
    /// A keyword: `if else end range with define template block break continue`.
    Keyword(&'static str),
    /// A quoted or raw string, unquoted.
    Str(String),
    /// A number as written (character constants are turned into their code point).
    Number(String),
    /// `true` or `false`.
    Bool(bool),
    /// `nil`.
    Nil,
    /// `.`.
    Dot,
    /// `|`.
    Pipe,
    /// `(`.
    LParen,
    /// `)`.
    RParen,
    /// `:=`.
    Declare,
    /// `=`.
    Assign,
    /// `,`.
    Comma,
    /// End of input.
    Eof,
}

/// One token with its byte span in the template text.
#[derive(Clone, Debug)]
pub(crate) struct Item {
    pub(crate) tok: Tok,
    pub(crate) pos: usize,
    pub(crate) end: usize,
}

const KEYWORDS: [&str; 9] = [
    "if", "else", "end", "range", "with", "define", "template", "block", "break",
];

/// A lexing failure: byte offset and Go's message.
pub(crate) type LexError = (usize, String);

/// Splits `src` into tokens.
pub(crate) fn lex(src: &str) -> Result<Vec<Item>, LexError> {
    let b = src.as_bytes();
    let mut items = Vec::new();
    let mut i = 0;
    let mut trim_next_text = false;
    while i < b.len() {
        let start = src[i..].find("{{").map(|o| i + o).unwrap_or(b.len());
        let mut text = &src[i..start];
        if trim_next_text {
            text = text.trim_start_matches([' ', '\t', '\r', '\n']);
        }
        let trim_left = src[start..].starts_with("{{-")
            && b.get(start + 3)
                .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'));
        if trim_left {
            text = text.trim_end_matches([' ', '\t', '\r', '\n']);
        }
        if !text.is_empty() {
            items.push(Item {
                tok: Tok::Text(text.to_string()),
                pos: i,
                end: start,
            });
        }
        trim_next_text = false;
        if start >= b.len() {
            break;
        }
        let mut j = start + 2;
        if trim_left {
            j += 2;
        }
        // A comment fills the whole action.
        let after_space = skip_space(b, j);
        if src[after_space..].starts_with("/*") && (after_space == j || trim_left) {
            let close = src[after_space..]
                .find("*/")
                .map(|o| after_space + o + 2)
                .ok_or((start, "unclosed comment".to_string()))?;
            let k = skip_space(b, close);
            if src[k..].starts_with("-}}") && k > close {
                trim_next_text = true;
                i = k + 3;
            } else if src[close..].starts_with("}}") {
                i = close + 2;
            } else {
                return Err((start, "comment ends before closing delimiter".into()));
            }
            continue;
        }
        items.push(Item {
            tok: Tok::Left,
            pos: start,
            end: j,
        });
        i = lex_action(src, j, &mut items, &mut trim_next_text)?;
    }
    items.push(Item {
        tok: Tok::Eof,
        pos: b.len(),
        end: b.len(),
    });
    Ok(items)
}

fn skip_space(b: &[u8], mut j: usize) -> usize {
    while j < b.len() && matches!(b[j], b' ' | b'\t' | b'\r' | b'\n') {
        j += 1;
    }
    j
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// Lexes one action from `j` (just after `{{`) through its `}}`; returns where text resumes.
fn lex_action(
    src: &str,
    mut j: usize,
    items: &mut Vec<Item>,
    trim_next: &mut bool,
) -> Result<usize, LexError> {
    let b = src.as_bytes();
    let mut depth = 0usize;
    loop {
        if j >= b.len() {
            return Err((j, "unclosed action".into()));
        }
        let c = b[j];
        if matches!(c, b' ' | b'\t' | b'\r' | b'\n') {
            let k = skip_space(b, j);
            if src[k..].starts_with("-}}") {
                items.push(Item {
                    tok: Tok::Right,
                    pos: k,
                    end: k + 3,
                });
                *trim_next = true;
                return Ok(k + 3);
            }
            j = k;
            continue;
        }
        if src[j..].starts_with("}}") {
            if depth > 0 {
                return Err((j, "unclosed left paren".into()));
            }
            items.push(Item {
                tok: Tok::Right,
                pos: j,
                end: j + 2,
            });
            return Ok(j + 2);
        }
        let start = j;
        let tok = match c {
            b'|' => {
                j += 1;
                Tok::Pipe
            }
            b'(' => {
                j += 1;
                depth += 1;
                Tok::LParen
            }
            b')' => {
                j += 1;
                // An unmatched `)` is the parser's to report, as Go's does.
                depth = depth.saturating_sub(1);
                Tok::RParen
            }
            b',' => {
                j += 1;
                Tok::Comma
            }
            b':' if b.get(j + 1) == Some(&b'=') => {
                j += 2;
                Tok::Declare
            }
            b'=' => {
                j += 1;
                Tok::Assign
            }
            b'"' => {
                let (s, end) = lex_quoted(src, j)?;
                j = end;
                Tok::Str(s)
            }
            b'`' => {
                let end = src[j + 1..]
                    .find('`')
                    .map(|o| j + 1 + o)
                    .ok_or((j, "unterminated raw quoted string".to_string()))?;
                let s = src[j + 1..end].to_string();
                j = end + 1;
                Tok::Str(s)
            }
            b'\'' => {
                let (ch, end) = lex_char(src, j)?;
                j = end;
                Tok::Number((ch as u32).to_string())
            }
            b'$' => {
                j += 1;
                while j < b.len() && is_alnum(b[j]) {
                    j += 1;
                }
                Tok::Var(src[start..j].to_string())
            }
            b'.' if b.get(j + 1).is_some_and(|c| c.is_ascii_digit()) => {
                j = lex_number(b, j);
                Tok::Number(src[start..j].to_string())
            }
            b'.' => {
                j += 1;
                if j < b.len() && is_alnum(b[j]) {
                    while j < b.len() && is_alnum(b[j]) {
                        j += 1;
                    }
                    Tok::Field(src[start + 1..j].to_string())
                } else {
                    Tok::Dot
                }
            }
            b'0'..=b'9' => {
                j = lex_number(b, j);
                Tok::Number(src[start..j].to_string())
            }
            b'+' | b'-'
                if b.get(j + 1)
                    .is_some_and(|c| c.is_ascii_digit() || *c == b'.') =>
            {
                j = lex_number(b, j + 1);
                Tok::Number(src[start..j].to_string())
            }
            c if is_alnum(c) => {
                while j < b.len() && is_alnum(b[j]) {
                    j += 1;
                }
                let w = &src[start..j];
                match w {
                    "true" => Tok::Bool(true),
                    "false" => Tok::Bool(false),
                    "nil" => Tok::Nil,
                    "continue" => Tok::Keyword("continue"),
                    _ => match KEYWORDS.iter().find(|k| **k == w) {
                        Some(k) => Tok::Keyword(k),
                        None => Tok::Ident(w.to_string()),
                    },
                }
            }
            _ => {
                let ch = src[j..].chars().next().unwrap_or('?');
                return Err((j, format!("unexpected {:?} in command", ch.to_string())));
            }
        };
        items.push(Item {
            tok,
            pos: start,
            end: j,
        });
    }
}

fn lex_number(b: &[u8], mut j: usize) -> usize {
    let hex = b.get(j) == Some(&b'0') && matches!(b.get(j + 1), Some(b'x' | b'X'));
    if hex {
        j += 2;
    }
    while j < b.len() {
        let c = b[j];
        let ok = c.is_ascii_digit()
            || c == b'.'
            || c == b'_'
            || (hex && c.is_ascii_hexdigit())
            || (!hex && matches!(c, b'e' | b'E'))
            || (hex && matches!(c, b'p' | b'P'))
            || (matches!(c, b'+' | b'-') && matches!(b[j - 1], b'e' | b'E' | b'p' | b'P'));
        if !ok {
            break;
        }
        j += 1;
    }
    j
}

fn hex_val(s: &str) -> Option<u32> {
    u32::from_str_radix(s, 16).ok()
}

/// Decodes one escape after a backslash at `src[j]`; returns the char and the next index.
fn lex_escape(src: &str, j: usize, quote: char) -> Result<(char, usize), LexError> {
    let rest = &src[j + 1..];
    let bad = || (j, "invalid syntax".to_string());
    let c = rest.chars().next().ok_or_else(bad)?;
    let simple = match c {
        'n' => Some('\n'),
        't' => Some('\t'),
        'r' => Some('\r'),
        'a' => Some('\u{7}'),
        'b' => Some('\u{8}'),
        'f' => Some('\u{c}'),
        'v' => Some('\u{b}'),
        '\\' => Some('\\'),
        c if c == quote => Some(c),
        _ => None,
    };
    if let Some(s) = simple {
        return Ok((s, j + 2));
    }
    let (len, radix) = match c {
        'x' => (2, 16),
        'u' => (4, 16),
        'U' => (8, 16),
        '0'..='7' => (3, 8),
        _ => return Err(bad()),
    };
    let digits_start = if radix == 8 { j + 1 } else { j + 2 };
    let digits = src.get(digits_start..digits_start + len).ok_or_else(bad)?;
    let v = if radix == 8 {
        u32::from_str_radix(digits, 8).ok()
    } else {
        hex_val(digits)
    }
    .ok_or_else(bad)?;
    let ch = char::from_u32(v).ok_or_else(bad)?;
    Ok((ch, digits_start + len))
}

fn lex_quoted(src: &str, j: usize) -> Result<(String, usize), LexError> {
    let mut out = String::new();
    let mut k = j + 1;
    loop {
        let c = src[k..]
            .chars()
            .next()
            .ok_or((j, "unterminated quoted string".to_string()))?;
        match c {
            '"' => return Ok((out, k + 1)),
            '\n' => return Err((j, "unterminated quoted string".into())),
            '\\' => {
                let (ch, next) = lex_escape(src, k, '"')?;
                out.push(ch);
                k = next;
            }
            c => {
                out.push(c);
                k += c.len_utf8();
            }
        }
    }
}

fn lex_char(src: &str, j: usize) -> Result<(char, usize), LexError> {
    let bad = || {
        let end = src[j + 1..].find('\'').map(|o| j + 2 + o);
        match end {
            Some(e) => (j, format!("malformed character constant: {}", &src[j..e])),
            None => (j, "unterminated character constant".to_string()),
        }
    };
    let c = src[j + 1..].chars().next().ok_or_else(bad)?;
    let (ch, next) = if c == '\\' {
        lex_escape(src, j + 1, '\'')?
    } else {
        (c, j + 1 + c.len_utf8())
    };
    if src[next..].starts_with('\'') {
        Ok((ch, next + 1))
    } else {
        Err(bad())
    }
}
