//! Validation of check definitions: every problem, each naming the check and the field, so a
//! checks file can be fixed in one go. Pure: nothing here touches the network or files.

use crate::assert::{json_path, parse_class, variables};
use crate::def::{CheckDef, CheckKind, HttpAssert, StatusPattern, TlsOptions};
use std::collections::BTreeSet;

/// Labels the agent and the runner set themselves; a check may not set them.
const RESERVED_LABELS: &[&str] = &[
    "__name__", "check", "region", "agent", "step", "reason", "phase",
];

/// Record types a dns check may ask for.
pub const RECORD_TYPES: &[&str] = &["A", "AAAA", "MX", "TXT", "CNAME", "NS", "SOA"];
/// Response codes a dns check may expect.
pub const RCODES: &[&str] = &[
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
];

struct Errs<'a> {
    check: &'a str,
    out: Vec<String>,
}

impl Errs<'_> {
    fn push(&mut self, field: &str, msg: impl std::fmt::Display) {
        self.out
            .push(format!("check {:?}: {field}: {msg}", self.check));
    }
}

fn label_name_ok(n: &str) -> bool {
    let mut cs = n.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_url(e: &mut Errs<'_>, field: &str, url: &str, schemes: &[&str]) {
    // Variables are filled in at run time; check the shape with a stand-in.
    let mut probe = url.to_string();
    for v in variables(url) {
        probe = probe.replace(&format!("${{{v}}}"), "x");
    }
    match probe.parse::<http::Uri>() {
        Err(err) => e.push(field, format!("`{url}` is not a valid URL: {err}")),
        Ok(u) => {
            let scheme = u.scheme_str().unwrap_or("");
            if !schemes.contains(&scheme) {
                e.push(
                    field,
                    format!("`{url}` must start with {}://", schemes.join(":// or ")),
                );
            } else if u.host().is_none_or(str::is_empty) {
                e.push(field, format!("`{url}` has no host"));
            }
        }
    }
}

fn check_regex(e: &mut Errs<'_>, field: &str, re: &str) {
    if let Err(err) = regex::Regex::new(re) {
        e.push(field, format!("regex `{re}` is not valid: {err}"));
    }
}

fn check_method(e: &mut Errs<'_>, field: &str, m: &Option<String>) {
    if let Some(m) = m
        && (m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()))
    {
        e.push(
            field,
            format!("{m:?} is not an HTTP method; use e.g. GET, POST, PUT"),
        );
    }
}

fn check_headers(e: &mut Errs<'_>, field: &str, hs: &std::collections::BTreeMap<String, String>) {
    for (n, v) in hs {
        if http::HeaderName::from_bytes(n.as_bytes()).is_err() {
            e.push(&format!("{field}.{n}"), "not a valid header name");
        }
        if http::HeaderValue::from_str(v).is_err() {
            e.push(
                &format!("{field}.{n}"),
                "value has characters a header cannot carry",
            );
        }
    }
}

fn check_assert(e: &mut Errs<'_>, field: &str, a: &Option<HttpAssert>) {
    let Some(a) = a else { return };
    if let Some(s) = &a.status {
        for p in s.as_slice() {
            match p {
                StatusPattern::Code(c) if !(100..=599).contains(c) => e.push(
                    &format!("{field}.status"),
                    format!("{c} is not an HTTP status"),
                ),
                StatusPattern::Class(c) if parse_class(c).is_none() => e.push(
                    &format!("{field}.status"),
                    format!("{c:?} is neither a status code nor a class such as \"2xx\""),
                ),
                _ => {}
            }
        }
    }
    for (i, h) in a.headers.iter().enumerate() {
        if http::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
            e.push(
                &format!("{field}.headers[{i}].name"),
                "not a valid header name",
            );
        }
        check_regex(e, &format!("{field}.headers[{i}].regex"), &h.regex);
    }
    if let Some(r) = &a.body_regex {
        check_regex(e, &format!("{field}.body_regex"), r);
    }
    if let Some(r) = &a.body_not_regex {
        check_regex(e, &format!("{field}.body_not_regex"), r);
    }
    for (i, j) in a.json.iter().enumerate() {
        if let Err(err) = json_path(&j.path) {
            e.push(&format!("{field}.json[{i}].path"), err);
        }
        if j.equals.is_some() && j.exists == Some(false) {
            e.push(
                &format!("{field}.json[{i}]"),
                "`equals` with `exists: false` can never hold",
            );
        }
    }
}

fn check_tls(e: &mut Errs<'_>, t: &Option<TlsOptions>) {
    let Some(t) = t else { return };
    if t.insecure_skip_verify && t.ca_file.is_some() {
        e.push(
            "tls",
            "ca_file has no effect with insecure_skip_verify: true; remove one",
        );
    }
    if let Some(n) = &t.server_name
        && rustls::pki_types::ServerName::try_from(n.as_str()).is_err()
    {
        e.push(
            "tls.server_name",
            format!("{n:?} is not a DNS name or IP address"),
        );
    }
}

fn split_host_port(t: &str) -> Option<(&str, u16)> {
    let (h, p) = t.rsplit_once(':')?;
    let h = h
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(h);
    let p = p.parse().ok()?;
    (!h.is_empty()).then_some((h, p))
}

/// `host:port` (IPv6 in brackets) -> (host, port).
pub fn host_port(t: &str) -> Result<(&str, u16), String> {
    split_host_port(t)
        .ok_or_else(|| format!("{t:?} is not host:port (e.g. \"example.org:443\", \"[::1]:53\")"))
}

/// Every problem of `d`, each as `check "<name>": <field>: <problem>`.
pub fn problems(d: &CheckDef) -> Vec<String> {
    let mut e = Errs {
        check: &d.name,
        out: Vec::new(),
    };
    let e = &mut e;
    if d.name.trim().is_empty() {
        e.push("name", "must not be empty");
    } else if d.name.len() > 200 || d.name.chars().any(char::is_control) {
        e.push("name", "at most 200 printable characters");
    }
    if d.frequency.get() < std::time::Duration::from_secs(1) {
        e.push(
            "frequency",
            format!("{} is too short; use at least 1s", d.frequency),
        );
    }
    if let Some(t) = d.timeout {
        if t.get().is_zero() {
            e.push("timeout", "must be more than 0s");
        } else if t.get() > d.frequency.get() {
            e.push(
                "timeout",
                format!(
                    "{t} is longer than the frequency {}; a run would overlap the next",
                    d.frequency
                ),
            );
        }
    }
    for (i, l) in d.locations.iter().enumerate() {
        if l.trim().is_empty() {
            e.push(&format!("locations[{i}]"), "must not be empty");
        }
    }
    for n in d.labels.keys() {
        if !label_name_ok(n) {
            e.push(
                &format!("labels.{n}"),
                "not a valid label name (letters, digits, _)",
            );
        } else if RESERVED_LABELS.contains(&n.as_str()) {
            e.push(
                &format!("labels.{n}"),
                "is set by Outpost itself; choose another name",
            );
        }
    }

    if let Some(a) = &d.alert {
        let regions = d.locations.len() as u32;
        if regions == 0 {
            e.push(
                "alert",
                "only checks with locations (in the aggregator's checks file) can alert",
            );
        } else if a.failing_regions == 0 || a.failing_regions > regions {
            e.push(
                "alert.failing_regions",
                format!(
                    "{} is not between 1 and the number of locations ({regions})",
                    a.failing_regions
                ),
            );
        }
        if let Some(sev) = &a.severity
            && (sev.trim().is_empty() || sev.len() > 100 || sev.chars().any(char::is_control))
        {
            e.push("alert.severity", "1 to 100 printable characters");
        }
        if a.degraded_ms == Some(0) {
            e.push("alert.degraded_ms", "must be more than 0");
        }
    }

    let k = d.kind;
    let is = |ks: &[CheckKind]| ks.contains(&k);
    use CheckKind::*;
    // Fields that do not apply to this type.
    let mut not_for = |field: &str, set: bool, ok: &[CheckKind]| {
        if set && !ok.contains(&k) {
            e.push(field, format!("does not apply to a {} check", k.as_str()));
        }
    };
    not_for("url", d.url.is_some(), &[Http, Http3]);
    not_for("method", d.method.is_some(), &[Http, Http3]);
    not_for("headers", !d.headers.is_empty(), &[Http, Http3]);
    not_for("body", d.body.is_some(), &[Http, Http3]);
    not_for("follow_redirects", d.follow_redirects.is_some(), &[Http]);
    not_for("max_body_bytes", d.max_body_bytes.is_some(), &[Http, Http3]);
    not_for("assert", d.assert.is_some(), &[Http, Http3]);
    not_for("steps", !d.steps.is_empty(), &[Http]);
    not_for("tls", d.tls.is_some(), &[Http, Http3, Tcp, Tls]);
    not_for("target", d.target.is_some(), &[Tcp, Tls, Icmp]);
    not_for("send", d.send.is_some(), &[Tcp]);
    not_for("expect", d.expect.is_some(), &[Tcp]);
    not_for("min_days_left", d.min_days_left.is_some(), &[Tls]);
    not_for("query", d.query.is_some(), &[Dns]);
    not_for("record_type", d.record_type.is_some(), &[Dns]);
    not_for("resolver", d.resolver.is_some(), &[Dns]);
    not_for("expect_answers", !d.expect_answers.is_empty(), &[Dns]);
    not_for("expect_rcode", d.expect_rcode.is_some(), &[Dns]);

    if is(&[Http, Http3]) {
        check_tls(e, &d.tls);
        if d.max_body_bytes == Some(0) {
            e.push("max_body_bytes", "must be more than 0");
        }
    }
    let schemes: &[&str] = if k == Http3 {
        &["https"]
    } else {
        &["http", "https"]
    };
    if is(&[Http3]) || (k == Http && d.steps.is_empty()) {
        match &d.url {
            None => e.push(
                "url",
                format!("is required for an {} check without steps", k.as_str()),
            ),
            Some(u) => {
                if !variables(u).is_empty() {
                    e.push(
                        "url",
                        "variables (${...}) are only available in journey steps",
                    );
                }
                check_url(e, "url", u, schemes);
            }
        }
        check_method(e, "method", &d.method);
        check_headers(e, "headers", &d.headers);
        check_assert(e, "assert", &d.assert);
    }
    if k == Http && !d.steps.is_empty() {
        for (f, set) in [
            ("url", d.url.is_some()),
            ("method", d.method.is_some()),
            ("body", d.body.is_some()),
            ("assert", d.assert.is_some()),
        ] {
            if set {
                e.push(f, "give it in each step of a journey instead");
            }
        }
        check_headers(e, "headers", &d.headers);
        for (n, v) in &d.headers {
            if !variables(v).is_empty() {
                e.push(
                    &format!("headers.{n}"),
                    "headers shared by all steps cannot use captured variables; set it in the steps that need it",
                );
            }
        }
        let mut names = BTreeSet::new();
        let mut defined: BTreeSet<&str> = BTreeSet::new();
        for (i, s) in d.steps.iter().enumerate() {
            let f = format!("steps[{i}]");
            let name = s.display_name(i);
            if name.trim().is_empty() {
                e.push(&format!("{f}.name"), "must not be empty");
            } else if !names.insert(name.clone()) {
                e.push(
                    &format!("{f}.name"),
                    format!("{name:?} is used by an earlier step"),
                );
            }
            for (field, text) in std::iter::once(("url".to_string(), s.url.as_str()))
                .chain(
                    s.headers
                        .iter()
                        .map(|(n, v)| (format!("headers.{n}"), v.as_str())),
                )
                .chain(s.body.iter().map(|b| ("body".to_string(), b.as_str())))
            {
                for v in variables(text) {
                    if !defined.contains(v) {
                        e.push(
                            &format!("{f}.{field}"),
                            format!("variable ${{{v}}} is not captured by an earlier step"),
                        );
                    }
                }
            }
            check_url(e, &format!("{f}.url"), &s.url, schemes);
            check_method(e, &format!("{f}.method"), &s.method);
            check_headers(e, &format!("{f}.headers"), &s.headers);
            check_assert(e, &format!("{f}.assert"), &s.assert);
            for (var, c) in &s.capture {
                let cf = format!("{f}.capture.{var}");
                if !label_name_ok(var) {
                    e.push(&cf, "variable names are letters, digits and _");
                }
                let n = [c.json.is_some(), c.header.is_some(), c.regex.is_some()]
                    .iter()
                    .filter(|b| **b)
                    .count();
                if n != 1 {
                    e.push(&cf, "give exactly one of json, header, regex");
                }
                if let Some(p) = &c.json
                    && let Err(err) = json_path(p)
                {
                    e.push(&cf, err);
                }
                if let Some(r) = &c.regex {
                    match regex::Regex::new(r) {
                        Err(err) => e.push(&cf, format!("regex `{r}` is not valid: {err}")),
                        Ok(re) if re.captures_len() < 2 => e.push(
                            &cf,
                            format!("regex `{r}` needs a group ( ) holding the value"),
                        ),
                        Ok(_) => {}
                    }
                }
            }
            defined.extend(s.capture.keys().map(String::as_str));
        }
    }
    if is(&[Tcp, Tls]) {
        match &d.target {
            None => e.push(
                "target",
                format!("is required for a {} check (host:port)", k.as_str()),
            ),
            Some(t) => {
                if let Err(err) = host_port(t) {
                    e.push("target", err);
                }
            }
        }
        check_tls(e, &d.tls);
    }
    if k == Tcp
        && let Some(r) = &d.expect
    {
        check_regex(e, "expect", r);
    }
    if k == Icmp {
        match d.target.as_deref() {
            None | Some("") => e.push(
                "target",
                "is required for an icmp check (host name or address)",
            ),
            Some(t) if t.contains(':') && t.parse::<std::net::Ipv6Addr>().is_err() => e.push(
                "target",
                format!("{t:?}: give a host or address without a port"),
            ),
            _ => {}
        }
    }
    if k == Dns {
        match d.query.as_deref() {
            None | Some("") => e.push("query", "is required for a dns check (the name to look up)"),
            Some(q) => {
                if hickory_proto::rr::Name::from_utf8(q).is_err() {
                    e.push("query", format!("{q:?} is not a domain name"));
                }
            }
        }
        if let Some(t) = &d.record_type
            && !RECORD_TYPES.contains(&t.to_ascii_uppercase().as_str())
        {
            e.push(
                "record_type",
                format!("{t:?} is not one of {}", RECORD_TYPES.join(", ")),
            );
        }
        if let Some(r) = &d.expect_rcode
            && !RCODES.contains(&r.to_ascii_uppercase().as_str())
        {
            e.push(
                "expect_rcode",
                format!("{r:?} is not one of {}", RCODES.join(", ")),
            );
        }
        if let Some(r) = &d.resolver {
            let ok = r.parse::<std::net::IpAddr>().is_ok()
                || r.parse::<std::net::SocketAddr>().is_ok()
                || split_host_port(r).is_some()
                || (!r.is_empty() && !r.contains(':') && !r.contains('/'));
            if !ok {
                e.push(
                    "resolver",
                    format!("{r:?} is not host, address or host:port"),
                );
            }
        }
    }
    e.out.clone()
}
