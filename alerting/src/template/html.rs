//! What Go's `html/template` does to printed values, as Alertmanager's HTML emails are
//! executed with it, reduced to the contexts notification templates use: element text,
//! quoted attribute values, and URL attributes (`href`, `src`, …) in their three parts
//! (scheme, path, query or fragment). The context is read from the output written so far.
//! HTML comments in the template text are removed, as `html/template` removes them.
//!
//! Not reproduced: JavaScript and CSS contexts (`<script>`, `<style>`, `on*` and `style`
//! attributes), unquoted attribute values, and the refusal of templates whose branches
//! end in different contexts.

use super::value::Value;

/// `html/template`'s replacement of a printed value in element text or a quoted
/// attribute value.
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("&#34;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&#39;"),
            '+' => out.push_str("&#43;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes what a URL may not hold; `normalize` keeps `%` and the reserved
/// characters (`html/template`'s `urlNormalizer`), otherwise only unreserved characters
/// stay (`urlEscaper`).
fn url_process(s: &str, normalize: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (normalize
                && matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'&'
                        | b'*'
                        | b'+'
                        | b','
                        | b'/'
                        | b':'
                        | b';'
                        | b'='
                        | b'?'
                        | b'@'
                        | b'['
                        | b']'
                        | b'%'
                ));
        if keep {
            out.push(b as char);
        } else {
            // html/template writes lower-case hex digits (url.QueryEscape upper-case ones).
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// `html/template`'s `urlFilter`: a URL with a scheme other than http, https or mailto
/// becomes `#ZgotmplZ`.
fn url_filter(s: &str) -> String {
    if let Some(i) = s.find(':')
        && !s[..i].contains('/')
        && !matches!(
            s[..i].to_ascii_lowercase().as_str(),
            "http" | "https" | "mailto"
        )
    {
        return "#ZgotmplZ".into();
    }
    s.to_string()
}

const URL_ATTRS: &[&str] = &[
    "href",
    "src",
    "action",
    "cite",
    "background",
    "formaction",
    "poster",
    "longdesc",
    "usemap",
    "icon",
    "manifest",
    "codebase",
    "data",
];

/// The attribute whose quoted value `out` ends inside, and that value so far.
fn open_attribute(out: &str) -> Option<(String, &str)> {
    let lt = out.rfind('<')?;
    if out[lt..].contains('>') {
        return None;
    }
    let tag = &out[lt..];
    let mut quote: Option<(char, usize)> = None;
    for (i, c) in tag.char_indices() {
        match quote {
            Some((q, _)) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some((c, i)),
            None => {}
        }
    }
    let (_, start) = quote?;
    let before = tag[..start].trim_end().strip_suffix('=')?.trim_end();
    let name_start = before
        .rfind(|c: char| c.is_whitespace())
        .map_or(0, |i| i + 1);
    Some((before[name_start..].to_ascii_lowercase(), &tag[start + 1..]))
}

/// The printed form of `v` (already formatted as `s`) after `html/template`'s escaping in
/// the context `out` ends in. `escaped_by_pipe`: the pipeline ended in `urlquery`, which
/// `html/template` keeps instead of escaping a URL's query again.
pub(crate) fn escape(out: &str, s: &str, v: &Value, escaped_by_pipe: bool) -> String {
    match open_attribute(out) {
        Some((name, so_far)) if URL_ATTRS.contains(&name.as_str()) => {
            let url = if escaped_by_pipe {
                s.to_string()
            } else if so_far.contains(['?', '#']) {
                url_process(s, false)
            } else if so_far.is_empty() {
                url_process(&url_filter(s), true)
            } else {
                url_process(s, true)
            };
            html_escape(&url)
        }
        Some(_) => html_escape(s),
        None => match v {
            Value::Html(h) => h.clone(),
            _ => html_escape(s),
        },
    }
}

/// Template text without its HTML comments.
pub(crate) fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("<!--") {
        out.push_str(&rest[..i]);
        match rest[i + 4..].find("-->") {
            Some(j) => rest = &rest[i + 4 + j + 3..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts() {
        let s = |x: &str| Value::Str(x.into());
        assert_eq!(
            escape("<p>", "a<b & 'c'+", &s(""), false),
            "a&lt;b &amp; &#39;c&#39;&#43;"
        );
        assert_eq!(
            escape("<p>", "<b>", &Value::Html("<b>".into()), false),
            "<b>"
        );
        assert_eq!(
            escape("<a href=\"", "http://x/a b?q=\"1\"", &s(""), false),
            "http://x/a%20b?q=%221%22"
        );
        assert_eq!(
            escape("<a href=\"", "javascript:alert(1)", &s(""), false),
            "#ZgotmplZ"
        );
        assert_eq!(
            escape("<a href=\"http://x/?r=", "a b/c", &s(""), false),
            "a%20b%2fc"
        );
        assert_eq!(
            escape("<a href=\"http://x/?r=", "a%2Fb", &s(""), true),
            "a%2Fb"
        );
        assert_eq!(escape("<td title='", "x\"y", &s(""), false), "x&#34;y");
        assert_eq!(strip_comments("a<!-- b -->c<!--d"), "ac");
    }
}
