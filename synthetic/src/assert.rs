//! Pure evaluation of HTTP assertions, journey captures and `${var}` substitution. No I/O:
//! the runners hand in what they received.

use crate::def::{Capture, HttpAssert, OneOrMany, StatusPattern};
use regex::Regex;
use serde_json_path::JsonPath;
use std::collections::BTreeMap;
use std::time::Duration;

/// What an HTTP response looked like, as far as assertions care.
pub struct Response<'a> {
    /// The HTTP status code.
    pub status: u16,
    /// Header names in lower case.
    pub headers: &'a [(String, String)],
    /// The body, decoded per `Content-Encoding`.
    pub body: &'a [u8],
    /// How long the request took.
    pub duration: Duration,
}

impl Response<'_> {
    /// The first value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Does `code` match the pattern? A class is `1xx`..`5xx`.
pub fn status_matches(p: &StatusPattern, code: u16) -> bool {
    match p {
        StatusPattern::Code(c) => *c == code,
        StatusPattern::Class(s) => parse_class(s).is_some_and(|d| code / 100 == d),
    }
}

/// `"2xx"` -> 2.
pub fn parse_class(s: &str) -> Option<u16> {
    let b = s.as_bytes();
    if b.len() == 3 && (b'1'..=b'5').contains(&b[0]) && b[1..].eq_ignore_ascii_case(b"xx") {
        Some(u16::from(b[0] - b'0'))
    } else {
        None
    }
}

fn describe(ps: &[StatusPattern]) -> String {
    ps.iter()
        .map(|p| match p {
            StatusPattern::Code(c) => c.to_string(),
            StatusPattern::Class(s) => s.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks the status against the accepted patterns (default 2xx).
pub fn check_status(status: Option<&OneOrMany<StatusPattern>>, code: u16) -> Result<(), String> {
    match status {
        None if (200..300).contains(&code) => Ok(()),
        None => Err(format!("status {code} is not 2xx")),
        Some(ps) if ps.as_slice().iter().any(|p| status_matches(p, code)) => Ok(()),
        Some(ps) => Err(format!(
            "status {code} is not one of {}",
            describe(ps.as_slice())
        )),
    }
}

fn regex(re: &str) -> Result<Regex, String> {
    Regex::new(re).map_err(|e| format!("regex `{re}` is not valid: {e}"))
}

/// Parses a JSON path, with the error the checks file should show.
pub fn json_path(p: &str) -> Result<JsonPath, String> {
    JsonPath::parse(p).map_err(|e| format!("json path `{p}` is not valid: {e}"))
}

/// The outcome of the body assertions beside the verdict, for `probe_failed_due_to_regex`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// True when the failure came from a regular expression that does not compile.
    pub failed_due_to_regex: bool,
}

/// Evaluates every assertion in order; the first that fails is the error.
pub fn check_response(a: Option<&HttpAssert>, r: &Response<'_>) -> (Verdict, Result<(), String>) {
    let mut v = Verdict::default();
    let res = (|| {
        let Some(a) = a else {
            return check_status(None, r.status);
        };
        check_status(a.status.as_ref(), r.status)?;
        for h in &a.headers {
            let re = regex(&h.regex)?;
            match r.header(&h.name) {
                None => return Err(format!("header {} is missing", h.name)),
                Some(val) if !re.is_match(val) => {
                    return Err(format!(
                        "header {} value {val:?} does not match regex `{}`",
                        h.name, h.regex
                    ));
                }
                Some(_) => {}
            }
        }
        let body = String::from_utf8_lossy(r.body);
        if let Some(s) = &a.body_contains
            && !body.contains(s.as_str())
        {
            return Err(format!("body does not contain {s:?}"));
        }
        if let Some(re) = &a.body_regex
            && !regex(re)?.is_match(&body)
        {
            v.failed_due_to_regex = true;
            return Err(format!("body does not match regex `{re}`"));
        }
        if let Some(re) = &a.body_not_regex
            && regex(re)?.is_match(&body)
        {
            v.failed_due_to_regex = true;
            return Err(format!("body matches regex `{re}`"));
        }
        if !a.json.is_empty() {
            let doc: serde_json::Value = serde_json::from_slice(r.body)
                .map_err(|e| format!("body is not JSON ({e}) but JSON assertions are set"))?;
            for j in &a.json {
                let path = json_path(&j.path)?;
                let found = path.query(&doc).first().cloned();
                match (&j.equals, j.exists, found) {
                    (Some(want), _, Some(got)) if *want != got => {
                        return Err(format!("json {} is {got}, expected {want}", j.path));
                    }
                    (Some(want), _, None) => {
                        return Err(format!("json {} is missing, expected {want}", j.path));
                    }
                    (None, Some(false), Some(got)) => {
                        return Err(format!("json {} exists ({got}) but should not", j.path));
                    }
                    (None, None | Some(true), None) => {
                        return Err(format!("json {} is missing", j.path));
                    }
                    _ => {}
                }
            }
        }
        if let Some(max) = a.max_duration
            && r.duration > max.get()
        {
            return Err(format!(
                "response took {:.3}s, more than max_duration {max}",
                r.duration.as_secs_f64()
            ));
        }
        Ok(())
    })();
    (v, res)
}

/// Extracts a captured variable's value from a response.
pub fn capture(var: &str, c: &Capture, r: &Response<'_>) -> Result<String, String> {
    if let Some(p) = &c.json {
        let doc: serde_json::Value = serde_json::from_slice(r.body)
            .map_err(|e| format!("capture {var}: body is not JSON: {e}"))?;
        let path = json_path(p)?;
        return match path.query(&doc).first() {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(v) => Ok(v.to_string()),
            None => Err(format!("capture {var}: json path {p} matched nothing")),
        };
    }
    if let Some(h) = &c.header {
        return r
            .header(h)
            .map(str::to_string)
            .ok_or_else(|| format!("capture {var}: header {h} is missing"));
    }
    if let Some(re) = &c.regex {
        let body = String::from_utf8_lossy(r.body);
        return regex(re)?
            .captures(&body)
            .and_then(|m| m.get(1))
            .map(|m| m.as_str().to_string())
            .ok_or_else(|| format!("capture {var}: regex `{re}` did not match the body"));
    }
    Err(format!("capture {var}: no source given"))
}

/// The names of the `${var}` references in `s`, in order.
pub fn variables(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        match after.find('}') {
            Some(j) => {
                out.push(&after[..j]);
                rest = &after[j + 1..];
            }
            None => break,
        }
    }
    out
}

/// Replaces every `${var}`; an unknown variable is an error naming it.
pub fn substitute(s: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(j) = after.find('}') else {
            out.push_str(&rest[i..]);
            return Ok(out);
        };
        let name = &after[..j];
        match vars.get(name) {
            Some(v) => out.push_str(v),
            None => return Err(format!("variable ${{{name}}} is not defined")),
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::def::{HeaderAssert, JsonAssert};

    fn resp<'a>(status: u16, headers: &'a [(String, String)], body: &'a [u8]) -> Response<'a> {
        Response {
            status,
            headers,
            body,
            duration: Duration::from_millis(5),
        }
    }

    #[test]
    fn status_default_is_2xx_and_classes_and_codes_match() {
        assert!(check_status(None, 204).is_ok());
        assert_eq!(
            check_status(None, 503).unwrap_err(),
            "status 503 is not 2xx"
        );
        let ps = OneOrMany::Many(vec![
            StatusPattern::Code(301),
            StatusPattern::Class("4xx".into()),
        ]);
        assert!(check_status(Some(&ps), 301).is_ok());
        assert!(check_status(Some(&ps), 404).is_ok());
        assert_eq!(
            check_status(Some(&ps), 200).unwrap_err(),
            "status 200 is not one of 301, 4xx"
        );
        assert_eq!(parse_class("2XX"), Some(2));
        assert_eq!(parse_class("6xx"), None);
    }

    #[test]
    fn every_assertion_kind_passes_and_fails_with_its_reason() {
        let headers = vec![("content-type".to_string(), "application/json".to_string())];
        let body = br#"{"status":"ok","items":[{"id":7}],"n":3}"#;
        let r = resp(200, &headers, body);
        let mut a = HttpAssert {
            headers: vec![HeaderAssert {
                name: "Content-Type".into(),
                regex: "json$".into(),
            }],
            body_contains: Some("items".into()),
            body_regex: Some(r#""status":"ok""#.into()),
            body_not_regex: Some("error".into()),
            json: vec![
                JsonAssert {
                    path: "$.items[0].id".into(),
                    equals: Some(serde_json::json!(7)),
                    exists: None,
                },
                JsonAssert {
                    path: "$.missing".into(),
                    equals: None,
                    exists: Some(false),
                },
            ],
            max_duration: Some(outpost_shared::units::Duration::from_secs(1)),
            ..Default::default()
        };
        assert_eq!(check_response(Some(&a), &r).1, Ok(()));

        let fail = |a: &HttpAssert| check_response(Some(a), &r);
        let mut b = a.clone();
        b.headers[0].regex = "^text/".into();
        assert_eq!(
            fail(&b).1.unwrap_err(),
            "header Content-Type value \"application/json\" does not match regex `^text/`"
        );
        b = a.clone();
        b.headers[0].name = "x-absent".into();
        assert_eq!(fail(&b).1.unwrap_err(), "header x-absent is missing");
        b = a.clone();
        b.body_contains = Some("nope".into());
        assert_eq!(fail(&b).1.unwrap_err(), "body does not contain \"nope\"");
        b = a.clone();
        b.body_regex = Some("^ok$".into());
        let (v, res) = fail(&b);
        assert_eq!(res.unwrap_err(), "body does not match regex `^ok$`");
        assert!(v.failed_due_to_regex);
        b = a.clone();
        b.body_not_regex = Some("items".into());
        assert_eq!(fail(&b).1.unwrap_err(), "body matches regex `items`");
        b = a.clone();
        b.json[0].equals = Some(serde_json::json!(8));
        assert_eq!(
            fail(&b).1.unwrap_err(),
            "json $.items[0].id is 7, expected 8"
        );
        b = a.clone();
        b.json[1].exists = None;
        assert_eq!(fail(&b).1.unwrap_err(), "json $.missing is missing");
        b = a.clone();
        b.json[1].path = "$.n".into();
        assert_eq!(
            fail(&b).1.unwrap_err(),
            "json $.n exists (3) but should not"
        );
        b = a.clone();
        b.max_duration = Some(outpost_shared::units::Duration::from_millis(1));
        assert_eq!(
            fail(&b).1.unwrap_err(),
            "response took 0.005s, more than max_duration 1ms"
        );
        a.status = Some(OneOrMany::One(StatusPattern::Code(201)));
        assert_eq!(fail(&a).1.unwrap_err(), "status 200 is not one of 201");
    }

    #[test]
    fn captures_come_from_json_headers_and_regex_groups() {
        let headers = vec![("x-session".to_string(), "s-42".to_string())];
        let r = resp(200, &headers, br#"{"token":"abc","id":5} id=99"#.as_slice());
        let json = Capture {
            json: Some("$.token".into()),
            ..Default::default()
        };
        // The body is not pure JSON: a JSON capture says so.
        assert!(capture("t", &json, &r).unwrap_err().contains("not JSON"));
        let r2 = resp(200, &headers, br#"{"token":"abc","id":5}"#.as_slice());
        assert_eq!(capture("t", &json, &r2).unwrap(), "abc");
        let num = Capture {
            json: Some("$.id".into()),
            ..Default::default()
        };
        assert_eq!(capture("i", &num, &r2).unwrap(), "5");
        let hdr = Capture {
            header: Some("X-Session".into()),
            ..Default::default()
        };
        assert_eq!(capture("s", &hdr, &r).unwrap(), "s-42");
        let re = Capture {
            regex: Some(r"id=(\d+)".into()),
            ..Default::default()
        };
        assert_eq!(capture("n", &re, &r).unwrap(), "99");
        let miss = Capture {
            json: Some("$.nope".into()),
            ..Default::default()
        };
        assert_eq!(
            capture("x", &miss, &r2).unwrap_err(),
            "capture x: json path $.nope matched nothing"
        );
    }

    #[test]
    fn substitution_replaces_known_and_names_unknown_variables() {
        let vars = BTreeMap::from([("id".to_string(), "7".to_string())]);
        assert_eq!(
            substitute("/items/${id}?x=${id}", &vars).unwrap(),
            "/items/7?x=7"
        );
        assert_eq!(
            substitute("/a/${nope}", &vars).unwrap_err(),
            "variable ${nope} is not defined"
        );
        assert_eq!(substitute("cost: $5 {x}", &vars).unwrap(), "cost: $5 {x}");
        assert_eq!(variables("${a}/x/${b}"), vec!["a", "b"]);
    }
}
