//! Parser of the Prometheus text exposition format (0.0.4) and OpenMetrics 1.0 text.
//!
//! Pure: it takes a `&str` and hands each sample to a callback, borrowing names and label
//! values from the input (a label value is copied only when it holds escapes). It is strict
//! the way Prometheus is: any malformed line fails the whole exposition with an error naming
//! the line and the problem, so a scrape never stores half of a broken page.
//!
//! Accepted: `# HELP`/`# TYPE` (and OpenMetrics' `# UNIT`) lines, other comments (text format
//! only), label values with `\\`, `\"` and `\n` escapes, quoted metric and label names
//! (`{"my.metric", "a.b"="c"}`), `NaN`/`+Inf`/`-Inf` values, timestamps (milliseconds in
//! the text format, seconds with fractions in OpenMetrics), OpenMetrics exemplars (skipped),
//! and OpenMetrics' mandatory final `# EOF`. As Prometheus does, OpenMetrics `_created`
//! series of counters, histograms and summaries are not returned as samples.

use outpost_shared::metadata::{FamilyMetadata, Metadata, MetricType};
use std::borrow::Cow;

/// Which grammar to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text exposition format 0.0.4 (`text/plain; version=0.0.4`).
    Text,
    /// OpenMetrics 1.0 text (`application/openmetrics-text`).
    OpenMetrics,
}

impl Format {
    /// The format a `Content-Type` header announces; anything but OpenMetrics is read as text,
    /// as Prometheus does.
    pub fn from_content_type(ct: &str) -> Format {
        if ct
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("application/openmetrics-text")
        {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }
}

/// A label pair as it appears in the input.
pub type LabelPair<'a> = (Cow<'a, str>, Cow<'a, str>);

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a, 'l> {
    pub name: Cow<'a, str>,
    /// In input order; names are unique.
    pub labels: &'l [LabelPair<'a>],
    pub value: f64,
    /// Milliseconds since the Unix epoch, when the line carries a timestamp.
    pub timestamp_ms: Option<i64>,
}

/// The first problem found, with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {msg}")]
pub struct ParseError {
    pub line: usize,
    pub msg: String,
}

/// A sample with its own strings, for callers that keep samples past the input's lifetime.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedSample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    Unknown,
}

fn kind(s: &str, format: Format) -> Option<Kind> {
    Some(match (s, format) {
        ("counter", _) => Kind::Counter,
        ("gauge", _) => Kind::Gauge,
        ("histogram", _) => Kind::Histogram,
        ("summary", _) => Kind::Summary,
        ("untyped", Format::Text) => Kind::Unknown,
        ("unknown" | "gaugehistogram" | "info" | "stateset", Format::OpenMetrics) => match s {
            "unknown" => Kind::Unknown,
            "gaugehistogram" => Kind::GaugeHistogram,
            "info" => Kind::Info,
            _ => Kind::StateSet,
        },
        _ => return None,
    })
}

/// Parses a whole exposition and collects owned samples.
pub fn parse(text: &str, format: Format) -> Result<Vec<OwnedSample>, ParseError> {
    let mut out = vec![];
    parse_each(text, format, |s| {
        out.push(OwnedSample {
            name: s.name.to_string(),
            labels: s
                .labels
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            value: s.value,
            timestamp_ms: s.timestamp_ms,
        })
    })?;
    Ok(out)
}

impl Kind {
    fn metric_type(self) -> MetricType {
        match self {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
            Kind::GaugeHistogram => MetricType::GaugeHistogram,
            Kind::Summary => MetricType::Summary,
            Kind::Info => MetricType::Info,
            Kind::StateSet => MetricType::StateSet,
            Kind::Unknown => MetricType::Unknown,
        }
    }
}

/// Parses a whole exposition, calling `on_sample` for each sample in order. Returns the
/// number of samples. On error, samples before the bad line have already been handed over:
/// callers that must not keep partial results collect first and commit only on `Ok`.
pub fn parse_each<'a>(
    text: &'a str,
    format: Format,
    on_sample: impl FnMut(&Sample<'a, '_>),
) -> Result<usize, ParseError> {
    parse_inner(text, format, None, on_sample)
}

/// [`parse_each`], also collecting what the exposition declares about its families in
/// `metadata`: one entry per family named by a `# HELP`, `# TYPE` or `# UNIT` line, in
/// order of first mention, with the HELP text unescaped. A family declared with HELP only
/// has type [`MetricType::Unknown`], as in Prometheus (so has the text format's `untyped`).
/// When a family is declared twice, the later line wins.
pub fn parse_each_with_metadata<'a>(
    text: &'a str,
    format: Format,
    metadata: &mut Vec<FamilyMetadata>,
    on_sample: impl FnMut(&Sample<'a, '_>),
) -> Result<usize, ParseError> {
    parse_inner(text, format, Some(metadata), on_sample)
}

/// The entry of `family` in `out`, added when new; `index` maps names to positions.
fn family_entry<'o>(
    out: &'o mut Vec<FamilyMetadata>,
    index: &mut std::collections::HashMap<String, usize>,
    family: &str,
) -> &'o mut Metadata {
    let i = *index.entry(family.to_string()).or_insert_with(|| {
        out.push(FamilyMetadata {
            family: family.to_string(),
            meta: Metadata::default(),
        });
        out.len() - 1
    });
    &mut out[i].meta
}

/// A `# HELP` text without its escapes: `\\` and `\n`, and in OpenMetrics also `\"`.
fn unescape_help(s: &str, format: Format) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if format == Format::OpenMetrics => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn parse_inner<'a>(
    text: &'a str,
    format: Format,
    mut metadata: Option<&mut Vec<FamilyMetadata>>,
    mut on_sample: impl FnMut(&Sample<'a, '_>),
) -> Result<usize, ParseError> {
    let mut meta_index = std::collections::HashMap::new();
    let mut labels: Vec<LabelPair<'a>> = Vec::with_capacity(8);
    let mut family: Option<(&'a str, Kind)> = None;
    let mut count = 0;
    let mut eof = false;
    let mut lineno = 0;
    let mut rest = text;
    while !rest.is_empty() {
        lineno += 1;
        let (line, next) = match rest.find('\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        rest = next;
        let err = |msg: String| ParseError { line: lineno, msg };
        if eof {
            return Err(err(
                "content after \"# EOF\"; it must be the last line".into()
            ));
        }
        let line = line.strip_suffix('\r').unwrap_or(line);
        let line = if format == Format::Text {
            line.trim_start_matches([' ', '\t'])
        } else {
            line
        };
        if line.is_empty() {
            if format == Format::OpenMetrics {
                return Err(err("empty line; OpenMetrics allows none".into()));
            }
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            match parse_comment(comment, format).map_err(err)? {
                Comment::Eof => eof = true,
                Comment::Type(name, k) => {
                    family = Some((name, k));
                    if let Some(out) = metadata.as_deref_mut() {
                        family_entry(out, &mut meta_index, name).kind = k.metric_type();
                    }
                }
                Comment::Help(name, text) => {
                    if let Some(out) = metadata.as_deref_mut() {
                        family_entry(out, &mut meta_index, name).help = unescape_help(text, format);
                    }
                }
                Comment::Unit(name, unit) => {
                    if let Some(out) = metadata.as_deref_mut() {
                        family_entry(out, &mut meta_index, name).unit = unit.to_string();
                    }
                }
                Comment::Other => {}
            }
            continue;
        }
        labels.clear();
        let (name, value, timestamp_ms) = parse_sample(line, format, &mut labels).map_err(err)?;
        if format == Format::OpenMetrics
            && let Some((fam, k)) = family
            && matches!(
                k,
                Kind::Counter | Kind::Histogram | Kind::Summary | Kind::GaugeHistogram
            )
            && name.strip_suffix("_created") == Some(fam)
        {
            continue;
        }
        count += 1;
        on_sample(&Sample {
            name,
            labels: &labels,
            value,
            timestamp_ms,
        });
    }
    if format == Format::OpenMetrics && !eof {
        return Err(ParseError {
            line: lineno.max(1),
            msg: "missing \"# EOF\": an OpenMetrics exposition must end with it (truncated response?)".into(),
        });
    }
    Ok(count)
}

enum Comment<'a> {
    Eof,
    Type(&'a str, Kind),
    /// A family's HELP text, still escaped.
    Help(&'a str, &'a str),
    Unit(&'a str, &'a str),
    Other,
}

fn parse_comment(c: &str, format: Format) -> Result<Comment<'_>, String> {
    if format == Format::OpenMetrics && c == " EOF" {
        return Ok(Comment::Eof);
    }
    let body = c.trim_start_matches([' ', '\t']);
    let (word, rest) = split_blank(body);
    if !matches!(word, "HELP" | "TYPE" | "UNIT") || (format == Format::Text && word == "UNIT") {
        return match format {
            Format::Text => Ok(Comment::Other),
            Format::OpenMetrics => Err(format!(
                "unknown comment \"#{}\"; OpenMetrics allows only HELP, TYPE, UNIT and EOF",
                truncate(c)
            )),
        };
    }
    let (name, rest) = split_blank(rest.trim_start_matches([' ', '\t']));
    if !is_metric_name(name) {
        return Err(format!(
            "# {word} needs a metric name, got {:?}",
            truncate(name)
        ));
    }
    if word == "TYPE" {
        let t = rest.trim_matches([' ', '\t']);
        let k = kind(t, format)
            .ok_or_else(|| format!("# TYPE {name}: unknown type {:?}", truncate(t)))?;
        return Ok(Comment::Type(name, k));
    }
    if word == "HELP" {
        return Ok(Comment::Help(name, rest.trim_start_matches([' ', '\t'])));
    }
    Ok(Comment::Unit(name, rest.trim_matches([' ', '\t'])))
}

fn split_blank(s: &str) -> (&str, &str) {
    match s.find([' ', '\t']) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(60) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn is_name_start(b: u8, colon: bool) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || (colon && b == b':')
}

fn is_name_char(b: u8, colon: bool) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || (colon && b == b':')
}

pub fn is_metric_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && is_name_start(b[0], true) && b[1..].iter().all(|&c| is_name_char(c, true))
}

pub fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && is_name_start(b[0], false) && b[1..].iter().all(|&c| is_name_char(c, false))
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

struct Cursor<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }
    fn skip_blanks(&mut self) {
        while self.peek().is_some_and(is_blank) {
            self.i += 1;
        }
    }
    fn ident(&mut self, colon: bool) -> &'a str {
        let b = self.s.as_bytes();
        let start = self.i;
        if b.get(self.i).is_some_and(|&c| is_name_start(c, colon)) {
            self.i += 1;
            while b.get(self.i).is_some_and(|&c| is_name_char(c, colon)) {
                self.i += 1;
            }
        }
        &self.s[start..self.i]
    }
    /// A double-quoted string starting at the cursor, escapes resolved.
    fn quoted(&mut self) -> Result<Cow<'a, str>, String> {
        let b = self.s.as_bytes();
        debug_assert_eq!(b.get(self.i), Some(&b'"'));
        self.i += 1;
        let start = self.i;
        let mut owned: Option<String> = None;
        let mut seg = start;
        loop {
            match b.get(self.i) {
                None => return Err("unterminated quoted string (missing closing '\"')".into()),
                Some(b'"') => {
                    let out = match owned {
                        None => Cow::Borrowed(&self.s[start..self.i]),
                        Some(mut o) => {
                            o.push_str(&self.s[seg..self.i]);
                            Cow::Owned(o)
                        }
                    };
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    let o = owned.get_or_insert_with(String::new);
                    o.push_str(&self.s[seg..self.i]);
                    match b.get(self.i + 1) {
                        Some(b'\\') => o.push('\\'),
                        Some(b'"') => o.push('"'),
                        Some(b'n') => o.push('\n'),
                        Some(&c) => {
                            let shown = if c.is_ascii_graphic() {
                                (c as char).to_string()
                            } else {
                                format!("\\x{c:02x}")
                            };
                            return Err(format!(
                                "invalid escape \"\\{shown}\" in a quoted string; only \\\\, \\\" and \\n are allowed"
                            ));
                        }
                        None => {
                            return Err("unterminated quoted string (missing closing '\"')".into());
                        }
                    }
                    self.i += 2;
                    seg = self.i;
                }
                Some(_) => self.i += 1,
            }
        }
    }
    fn token(&mut self) -> &'a str {
        let b = self.s.as_bytes();
        let start = self.i;
        while b.get(self.i).is_some_and(|&c| !is_blank(c)) {
            self.i += 1;
        }
        &self.s[start..self.i]
    }
}

type SampleLine<'a> = (Cow<'a, str>, f64, Option<i64>);

fn parse_sample<'a>(
    line: &'a str,
    format: Format,
    labels: &mut Vec<LabelPair<'a>>,
) -> Result<SampleLine<'a>, String> {
    let text = format == Format::Text;
    let mut c = Cursor { s: line, i: 0 };
    let mut name: Option<Cow<'a, str>> = None;
    let id = c.ident(true);
    if !id.is_empty() {
        name = Some(Cow::Borrowed(id));
        if text {
            // Blanks may separate the name from '{'; otherwise they lead to the value.
            let at = c.i;
            c.skip_blanks();
            if c.peek() != Some(b'{') {
                c.i = at;
            }
        }
    }
    if c.peek() == Some(b'{') {
        c.i += 1;
        if let Err(e) = parse_labels(&mut c, format, &mut name, labels) {
            return Err(match &name {
                Some(n) => format!("{n}: {e}"),
                None => e,
            });
        }
    }
    let name = match name {
        Some(n) => n,
        None => {
            return Err(format!(
                "expected a metric name at the start of {:?}",
                truncate(line)
            ));
        }
    };
    if !c.peek().is_some_and(is_blank) {
        return Err(match c.peek() {
            None => format!("{name}: missing value"),
            Some(_) => format!(
                "{name}: unexpected {:?} after the metric name; expected a blank and a value",
                truncate(&line[c.i..])
            ),
        });
    }
    if text {
        c.skip_blanks();
    } else {
        c.i += 1;
    }
    let v = c.token();
    let value = parse_value(v).ok_or_else(|| format!("{name}: invalid value {:?}", truncate(v)))?;
    let mut timestamp_ms = None;
    if c.peek().is_some_and(is_blank) {
        if text {
            c.skip_blanks();
        } else {
            c.i += 1;
        }
        if c.peek().is_some_and(|b| b != b'#') {
            let t = c.token();
            timestamp_ms = Some(
                parse_timestamp(t, format)
                    .ok_or_else(|| format!("{name}: invalid timestamp {:?}", truncate(t)))?,
            );
            if c.peek().is_some_and(is_blank) {
                if text {
                    c.skip_blanks();
                } else {
                    c.i += 1;
                }
            }
        }
        if c.peek() == Some(b'#') {
            if text {
                return Err(format!(
                    "{name}: unexpected '#' after the value; exemplars need OpenMetrics"
                ));
            }
            check_exemplar(&line[c.i..]).map_err(|e| format!("{name}: {e}"))?;
            c.i = line.len();
        }
    }
    if c.i != line.len() {
        return Err(format!(
            "{name}: unexpected {:?} at the end of the line",
            truncate(&line[c.i..])
        ));
    }
    Ok((name, value, timestamp_ms))
}

fn parse_labels<'a>(
    c: &mut Cursor<'a>,
    format: Format,
    name: &mut Option<Cow<'a, str>>,
    labels: &mut Vec<LabelPair<'a>>,
) -> Result<(), String> {
    let text = format == Format::Text;
    let mut first = true;
    loop {
        if text {
            c.skip_blanks();
        }
        if c.peek() == Some(b'}') {
            c.i += 1;
            return Ok(());
        }
        let lname: Cow<'a, str> = match c.peek() {
            Some(b'"') => {
                let q = c.quoted()?;
                if text {
                    c.skip_blanks();
                }
                if c.peek() != Some(b'=') {
                    if !first || name.is_some() {
                        return Err(format!(
                            "quoted metric name {q:?} must come first and only when no name precedes '{{'"
                        ));
                    }
                    *name = Some(q);
                    first = false;
                    after_item(c, text)?;
                    continue;
                }
                q
            }
            _ => {
                let id = c.ident(false);
                if id.is_empty() {
                    return Err(format!(
                        "expected a label name at {:?}",
                        truncate(&c.s[c.i..])
                    ));
                }
                Cow::Borrowed(id)
            }
        };
        first = false;
        if text {
            c.skip_blanks();
        }
        if c.peek() != Some(b'=') {
            return Err(format!(
                "label {lname:?}: expected '=' at {:?}",
                truncate(&c.s[c.i..])
            ));
        }
        c.i += 1;
        if text {
            c.skip_blanks();
        }
        if c.peek() != Some(b'"') {
            return Err(format!("label {lname:?}: the value must be double-quoted"));
        }
        let v = c.quoted().map_err(|e| format!("label {lname:?}: {e}"))?;
        if labels.iter().any(|(n, _)| *n == lname) {
            return Err(format!("label {lname:?} appears twice"));
        }
        labels.push((lname, v));
        after_item(c, text)?;
    }
}

/// After a label item: `,` (maybe followed by `}`) or `}`.
fn after_item(c: &mut Cursor<'_>, text: bool) -> Result<(), String> {
    if text {
        c.skip_blanks();
    }
    match c.peek() {
        Some(b',') => {
            c.i += 1;
            Ok(())
        }
        Some(b'}') => Ok(()),
        None => Err("unterminated label set (missing '}')".into()),
        Some(_) => Err(format!(
            "expected ',' or '}}' at {:?}",
            truncate(&c.s[c.i..])
        )),
    }
}

/// An OpenMetrics exemplar: `# {labels} value [timestamp]`. Checked, then dropped.
fn check_exemplar(s: &str) -> Result<(), String> {
    let rest = s
        .strip_prefix("# {")
        .ok_or("an exemplar must look like \"# {labels} value\"")?;
    let mut c = Cursor { s: rest, i: 0 };
    let mut name = Some(Cow::Borrowed(""));
    let mut labels = vec![];
    parse_labels(&mut c, Format::OpenMetrics, &mut name, &mut labels)
        .map_err(|e| format!("exemplar: {e}"))?;
    let tail = &rest[c.i..];
    let mut parts = tail
        .strip_prefix(' ')
        .ok_or("exemplar: expected a value after its labels")?
        .split(' ');
    let v = parts.next().unwrap_or("");
    parse_value(v).ok_or_else(|| format!("exemplar: invalid value {v:?}"))?;
    if let Some(t) = parts.next() {
        parse_timestamp(t, Format::OpenMetrics)
            .ok_or_else(|| format!("exemplar: invalid timestamp {t:?}"))?;
    }
    if parts.next().is_some() {
        return Err("exemplar: unexpected text after its timestamp".into());
    }
    Ok(())
}

/// A float as Prometheus writes them, including `NaN`, `+Inf`, `-Inf`.
pub fn parse_value(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    // Rust's parser also takes "infinity" and "nan" in any case, as Go's does; it does not
    // take an empty string, "0x" floats or underscores, which Prometheus rejects as well.
    if b.is_empty()
        || !(b[0].is_ascii_digit()
            || matches!(b[0], b'+' | b'-' | b'.' | b'N' | b'n' | b'I' | b'i'))
    {
        return None;
    }
    s.parse::<f64>().ok()
}

fn parse_timestamp(s: &str, format: Format) -> Option<i64> {
    match format {
        Format::Text => s.parse::<i64>().ok(),
        Format::OpenMetrics => {
            if let Ok(secs) = s.parse::<i64>() {
                return secs.checked_mul(1000);
            }
            let f = parse_value(s)?;
            (f.is_finite() && f.abs() < 9.2e15).then(|| (f * 1000.0).round() as i64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(line: &str, f: Format) -> OwnedSample {
        let text = if f == Format::OpenMetrics {
            format!("{line}\n# EOF\n")
        } else {
            format!("{line}\n")
        };
        let mut v = parse(&text, f).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert_eq!(v.len(), 1, "{line:?}");
        v.remove(0)
    }

    fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn sample_lines_table() {
        use Format::*;
        let nan = f64::NAN;
        type Case<'a> = (
            &'a str,
            Format,
            &'a str,
            Vec<(String, String)>,
            f64,
            Option<i64>,
        );
        let cases: &[Case<'_>] = &[
            ("up 1", Text, "up", l(&[]), 1.0, None),
            ("up{} 0", Text, "up", l(&[]), 0.0, None),
            (
                "a_b:c{x=\"1\",y=\"two\"} 3.5 1700000000123",
                Text,
                "a_b:c",
                l(&[("x", "1"), ("y", "two")]),
                3.5,
                Some(1_700_000_000_123),
            ),
            ("m{x=\"1\",} 2", Text, "m", l(&[("x", "1")]), 2.0, None),
            (
                "  m { x = \"1\" , y=\"2\" }   7  \t",
                Text,
                "m",
                l(&[("x", "1"), ("y", "2")]),
                7.0,
                None,
            ),
            (
                r#"m{p="C:\\dir\"q\"\nx"} 1"#,
                Text,
                "m",
                l(&[("p", "C:\\dir\"q\"\nx")]),
                1.0,
                None,
            ),
            (
                "m{u=\"ünï ☃ }{,=\"} 1",
                Text,
                "m",
                l(&[("u", "ünï ☃ }{,=")]),
                1.0,
                None,
            ),
            ("m +Inf", Text, "m", l(&[]), f64::INFINITY, None),
            ("m -Inf", Text, "m", l(&[]), f64::NEG_INFINITY, None),
            ("m NaN", Text, "m", l(&[]), nan, None),
            ("m 1e-3", Text, "m", l(&[]), 0.001, None),
            ("m -0.5 -12", Text, "m", l(&[]), -0.5, Some(-12)),
            (
                "h_bucket{le=\"+Inf\"} 12",
                Text,
                "h_bucket",
                l(&[("le", "+Inf")]),
                12.0,
                None,
            ),
            (
                r#"{"my.metric","a.b"="c"} 4"#,
                Text,
                "my.metric",
                l(&[("a.b", "c")]),
                4.0,
                None,
            ),
            (
                "m{a=\"1\"} 2 1700000000.5",
                OpenMetrics,
                "m",
                l(&[("a", "1")]),
                2.0,
                Some(1_700_000_000_500),
            ),
            (
                "m 2 1700000000",
                OpenMetrics,
                "m",
                l(&[]),
                2.0,
                Some(1_700_000_000_000),
            ),
            (
                "c_total 5 # {trace_id=\"abc\"} 1.0 1700000000.1",
                OpenMetrics,
                "c_total",
                l(&[]),
                5.0,
                None,
            ),
            (
                "c_total{a=\"b\"} 5 1700000001 # {trace_id=\"abc\"} 1",
                OpenMetrics,
                "c_total",
                l(&[("a", "b")]),
                5.0,
                Some(1_700_000_001_000),
            ),
        ];
        for (line, f, name, labels, value, ts) in cases {
            let s = one(line, *f);
            assert_eq!(&s.name, name, "{line:?}");
            assert_eq!(&s.labels, labels, "{line:?}");
            assert!(
                s.value.to_bits() == value.to_bits() || (s.value.is_nan() && value.is_nan()),
                "{line:?}: {}",
                s.value
            );
            assert_eq!(s.timestamp_ms, *ts, "{line:?}");
        }
    }

    #[test]
    fn malformed_lines_name_the_line_and_problem() {
        use Format::*;
        let cases: &[(&str, Format, &str)] = &[
            (
                "ok 1\nm{a=\"1\" 2\n",
                Text,
                "line 2: m: expected ',' or '}' at \"2\"",
            ),
            ("m{a=\"1\" 2\n", Text, "expected ',' or '}'"),
            ("m{a=1} 2\n", Text, "must be double-quoted"),
            ("m{a=\"x} 2\n", Text, "unterminated quoted string"),
            ("m{a=\"\\t\"} 2\n", Text, "invalid escape \"\\t\""),
            ("m{a=\"1\",a=\"2\"} 2\n", Text, "label \"a\" appears twice"),
            ("m\n", Text, "m: missing value"),
            ("m abc\n", Text, "m: invalid value \"abc\""),
            ("m 1 1.5\n", Text, "invalid timestamp \"1.5\""),
            ("m 1 2 3\n", Text, "unexpected \"3\" at the end"),
            ("9m 1\n", Text, "expected a metric name"),
            ("m{9=\"a\"} 1\n", Text, "expected a label name"),
            ("# TYPE m bogus\n", Text, "unknown type \"bogus\""),
            ("# TYPE 1m gauge\n", Text, "needs a metric name"),
            ("m 1 # {a=\"b\"} 1\n", Text, "exemplars need OpenMetrics"),
            ("m 1\n", OpenMetrics, "missing \"# EOF\""),
            (
                "m 1\n# EOF\nm 2\n",
                OpenMetrics,
                "line 3: content after \"# EOF\"",
            ),
            ("m 1\n\n# EOF\n", OpenMetrics, "line 2: empty line"),
            ("m  1\n# EOF\n", OpenMetrics, "invalid value \"\""),
            ("# random comment\n# EOF\n", OpenMetrics, "unknown comment"),
            (
                "m 1 # {a=\"b\"}\n# EOF\n",
                OpenMetrics,
                "exemplar: expected a value",
            ),
            (
                "# TYPE m untyped\n# EOF\n",
                OpenMetrics,
                "unknown type \"untyped\"",
            ),
        ];
        for (text, f, needle) in cases {
            let e = parse(text, *f).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e:?} lacks {needle:?}");
        }
    }

    #[test]
    fn comments_types_and_blank_lines() {
        let text = "# HELP h A histogram.\n# TYPE h histogram\n\n# just a comment\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 3\nh_sum 0.7\nh_count 3\n";
        let v = parse(text, Format::Text).unwrap();
        assert_eq!(
            v.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["h_bucket", "h_bucket", "h_sum", "h_count"]
        );
    }

    #[test]
    fn openmetrics_created_series_are_skipped_and_summaries_kept() {
        let text = "# TYPE c counter\n# HELP c Requests.\nc_total 4\nc_created 1700000000.0\n# TYPE s summary\n# UNIT s seconds\ns{quantile=\"0.5\"} 0.2\ns_sum 1.5\ns_count 7\ns_created 1700000000\n# TYPE g gauge\ng_created 3\n# EOF\n";
        let v = parse(text, Format::OpenMetrics).unwrap();
        let names: Vec<_> = v.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["c_total", "s", "s_sum", "s_count", "g_created"]);
        assert_eq!(v[1].labels, l(&[("quantile", "0.5")]));
        // In the text format `_created` is an ordinary series, as Prometheus reads it.
        assert_eq!(
            parse("# TYPE c counter\nc_created 1\n", Format::Text)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn eof_may_end_without_newline_and_crlf_is_accepted() {
        assert_eq!(parse("a 1\r\n# EOF", Format::OpenMetrics).unwrap().len(), 1);
        assert_eq!(parse("a 1\r\nb 2", Format::Text).unwrap().len(), 2);
        assert_eq!(parse("", Format::Text).unwrap().len(), 0);
    }

    #[test]
    fn content_type_picks_the_grammar() {
        assert_eq!(
            Format::from_content_type("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::from_content_type("text/plain; version=0.0.4"),
            Format::Text
        );
        assert_eq!(Format::from_content_type(""), Format::Text);
    }

    #[test]
    fn escape_free_values_are_borrowed() {
        let text = "m{a=\"plain\",b=\"esc\\\\\"} 1\n";
        parse_each(text, Format::Text, |s| {
            assert!(matches!(s.labels[0].1, Cow::Borrowed("plain")));
            assert!(matches!(&s.labels[1].1, Cow::Owned(v) if v == "esc\\"));
        })
        .unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn arbitrary_input_never_panics(s in "\\PC{0,200}", om in any::<bool>()) {
            let f = if om { Format::OpenMetrics } else { Format::Text };
            let _ = parse(&s, f);
        }

        #[test]
        fn exposition_like_input_never_panics(s in "[a-z_{}=\",# \\\\\n.0-9+EINaf-]{0,120}", om in any::<bool>()) {
            let f = if om { Format::OpenMetrics } else { Format::Text };
            let _ = parse(&s, f);
        }

        #[test]
        fn escaped_values_round_trip(v in "\\PC{0,40}") {
            let esc = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let s = one(&format!("m{{a=\"{esc}\"}} 1"), Format::Text);
            prop_assert_eq!(&s.labels[0].1, &v);
        }
    }

    #[test]
    fn declared_metadata_is_collected_per_family() {
        let meta = |text: &str, f: Format| {
            let mut out = vec![];
            parse_each_with_metadata(text, f, &mut out, |_| {}).unwrap();
            out.into_iter()
                .map(|m| (m.family, m.meta.kind.as_str(), m.meta.help, m.meta.unit))
                .collect::<Vec<_>>()
        };
        let text = "# HELP req_total Requests served.\n# TYPE req_total counter\nreq_total 1\n\
                    # TYPE temp untyped\ntemp 3\n# HELP esc A \\\\ and\\nnewline \\\"kept\\\"\n\
                    # a comment\n# HELP only_help   Text with  spaces \nonly_help 1\nno_meta 2\n";
        let s = |x: &str| x.to_string();
        assert_eq!(
            meta(text, Format::Text),
            [
                (s("req_total"), "counter", s("Requests served."), s("")),
                (s("temp"), "unknown", s(""), s("")),
                (
                    s("esc"),
                    "unknown",
                    s("A \\ and\nnewline \\\"kept\\\""),
                    s("")
                ),
                (s("only_help"), "unknown", s("Text with  spaces "), s("")),
            ]
        );
        let om = "# TYPE http_request_duration_seconds histogram\n\
                  # UNIT http_request_duration_seconds seconds\n\
                  # HELP http_request_duration_seconds Latency \\\"p\\\"\n\
                  http_request_duration_seconds_bucket{le=\"+Inf\"} 1\n\
                  http_request_duration_seconds_count 1\nhttp_request_duration_seconds_sum 1\n\
                  # TYPE build info\nbuild_info{v=\"1\"} 1\n# TYPE jobs counter\n# HELP jobs Jobs.\n\
                  jobs_total 3\n# EOF\n";
        assert_eq!(
            meta(om, Format::OpenMetrics),
            [
                (
                    s("http_request_duration_seconds"),
                    "histogram",
                    s("Latency \"p\""),
                    s("seconds")
                ),
                (s("build"), "info", s(""), s("")),
                (s("jobs"), "counter", s("Jobs."), s("")),
            ]
        );
        // A later declaration of the same family wins.
        assert_eq!(
            meta("# TYPE m gauge\n# TYPE m counter\nm 1\n", Format::Text),
            [(s("m"), "counter", s(""), s(""))]
        );
        // Parsing without metadata is unchanged.
        assert_eq!(parse_each(text, Format::Text, |_| {}), Ok(4));
    }
}
