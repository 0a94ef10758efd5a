//! Go's `fmt` as templates reach it: [`sprint`] (how `{{ x }}` prints a value, `fmt.Sprint`)
//! and [`sprintf`] (`printf`, with Go's verbs, flags, width and precision and its
//! `%!verb(type=value)` forms for mismatches), plus the float formatting of `strconv` they
//! rest on (shortest `%v`, `%e`, `%f`, `%g` with Go's exponent rules), `strconv.Quote` and
//! Go's `time.Time.String`.

use super::value::Value;

/// `fmt.Sprint` of one value: floats as `%v` (`1e+06`, `0.1`, `+Inf`), maps as
/// `map[k:v ...]`, nil as `<nil>`.
pub fn sprint(v: &Value) -> String {
    match v {
        Value::Nil => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format_g(*f, None),
        Value::Str(s) | Value::Html(s) => s.clone(),
        Value::Map(m) => format_map(m),
        Value::Sample(s) => format!("&{{{} {}}}", format_map(&s.labels), format_g(s.value, None)),
        Value::Samples(v) => {
            let items: Vec<String> = v
                .iter()
                .map(|s| format!("&{{{} {}}}", format_map(&s.labels), format_g(s.value, None)))
                .collect();
            format!("[{}]", items.join(" "))
        }
        Value::Data(d) => format!(
            "{{{} {} {} {}}}",
            format_map(&d.labels),
            format_map(&d.external_labels),
            d.external_url,
            format_g(d.value, None)
        ),
        Value::Time(ns) => format_go_time(*ns),
        Value::Args(m) => {
            let items: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}:{}", sprint(v)))
                .collect();
            format!("map[{}]", items.join(" "))
        }
        Value::Strings(v) => format!("[{}]", v.join(" ")),
        Value::Kv(m) => format_map(m),
        Value::Pairs(v) => {
            let items: Vec<String> = v.iter().map(|(k, v)| format!("{{{k} {v}}}")).collect();
            format!("[{}]", items.join(" "))
        }
        Value::Pair(p) => format!("{{{} {}}}", p.0, p.1),
        Value::AmAlert(a) => format_am_alert(a),
        Value::AmAlerts(v, _) => {
            let items: Vec<String> = v.iter().map(format_am_alert).collect();
            format!("[{}]", items.join(" "))
        }
        Value::AmData(d) => {
            let alerts: Vec<String> = d.alerts.iter().map(format_am_alert).collect();
            format!(
                "&{{{} {} [{}] {} {} {} {}}}",
                d.receiver,
                d.status,
                alerts.join(" "),
                format_map(&d.group_labels),
                format_map(&d.common_labels),
                format_map(&d.common_annotations),
                d.external_url
            )
        }
    }
}

/// `fmt.Sprint` of Alertmanager's `template.Alert` (a struct: fields in order).
fn format_am_alert(a: &crate::amtemplate::NotificationAlert) -> String {
    format!(
        "{{{} {} {} {} {} {} {}}}",
        a.status,
        format_map(&a.labels),
        format_map(&a.annotations),
        format_go_time(a.starts_at_ns),
        format_go_time(a.ends_at_ns),
        a.generator_url,
        a.fingerprint
    )
}

/// `fmt.Sprint` of several values: a space between two operands when neither is a string.
pub fn sprint_all(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        let is_str = |v: &Value| matches!(v, Value::Str(_) | Value::Html(_));
        if i > 0 && !is_str(a) && !is_str(&args[i - 1]) {
            out.push(' ');
        }
        out.push_str(&sprint(a));
    }
    out
}

fn format_map(m: &std::collections::BTreeMap<String, String>) -> String {
    let items: Vec<String> = m.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("map[{}]", items.join(" "))
}

/// Flags, width and precision of one `%` directive.
#[derive(Default, Clone, Copy)]
struct Spec {
    minus: bool,
    plus: bool,
    space: bool,
    zero: bool,
    sharp: bool,
    width: Option<usize>,
    prec: Option<usize>,
}

/// `fmt.Sprintf(format, args...)` as Go prints it, including `%!d(string=x)` for a verb
/// that does not fit its operand, `%!d(MISSING)` for a missing one and
/// `%!(EXTRA type=value)` for operands left over.
pub fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut argi = 0;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&f) = chars.peek() {
            match f {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                ' ' => spec.space = true,
                '0' => spec.zero = true,
                '#' => spec.sharp = true,
                _ => break,
            }
            chars.next();
        }
        spec.width = read_num(&mut chars, args, &mut argi);
        if chars.peek() == Some(&'.') {
            chars.next();
            spec.prec = Some(read_num(&mut chars, args, &mut argi).unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(argi) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        argi += 1;
        out.push_str(&format_one(verb, spec, arg));
    }
    if argi < args.len() {
        let extra: Vec<String> = args[argi..]
            .iter()
            .map(|a| match a {
                Value::Nil => "<nil>".to_string(),
                _ => format!("{}={}", a.type_name(), sprint(a)),
            })
            .collect();
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    out
}

fn read_num(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    args: &[Value],
    argi: &mut usize,
) -> Option<usize> {
    if chars.peek() == Some(&'*') {
        chars.next();
        let n = match args.get(*argi) {
            Some(Value::Int(i)) => usize::try_from(*i).ok(),
            _ => None,
        };
        *argi += 1;
        return n;
    }
    let mut n: Option<usize> = None;
    while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
        n = Some(n.unwrap_or(0).saturating_mul(10).saturating_add(d as usize));
        chars.next();
    }
    n
}

fn bad_verb(verb: char, arg: &Value) -> String {
    match arg {
        Value::Nil => format!("%!{verb}(<nil>)"),
        _ => format!("%!{verb}({}={})", arg.type_name(), sprint(arg)),
    }
}

fn format_one(verb: char, spec: Spec, arg: &Value) -> String {
    match (arg, verb) {
        (Value::Bool(b), 't' | 'v') => pad(spec, b.to_string()),
        (Value::Int(i), _) => format_int(verb, spec, *i).unwrap_or_else(|| bad_verb(verb, arg)),
        (Value::Float(f), 'v' | 'g' | 'G' | 'e' | 'E' | 'f' | 'F') => format_float(verb, spec, *f),
        (Value::Str(s) | Value::Html(s), 's' | 'v') => {
            let s = match spec.prec {
                Some(p) => s.chars().take(p).collect(),
                None => s.clone(),
            };
            pad(spec, s)
        }
        (Value::Str(s) | Value::Html(s), 'q') => pad(spec, go_quote(s)),
        (Value::Str(s) | Value::Html(s), 'x' | 'X') => {
            // `% x` separates bytes with spaces; `#` prefixes 0x (every byte under ` `).
            let bytes: Vec<String> = s.bytes().map(|b| format!("{b:02x}")).collect();
            let mut h = match (spec.space, spec.sharp) {
                (true, true) => bytes
                    .iter()
                    .map(|b| format!("0x{b}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                (true, false) => bytes.join(" "),
                (false, true) if !bytes.is_empty() => format!("0x{}", bytes.concat()),
                _ => bytes.concat(),
            };
            if verb == 'X' {
                h = h.to_uppercase();
            }
            pad(spec, h)
        }
        (Value::Nil, 'v' | 's') => pad(spec, "<nil>".into()),
        (
            Value::Map(_)
            | Value::Sample(_)
            | Value::Samples(_)
            | Value::Data(_)
            | Value::Time(_)
            | Value::Args(_)
            | Value::Strings(_)
            | Value::Kv(_)
            | Value::Pairs(_)
            | Value::Pair(_)
            | Value::AmData(_)
            | Value::AmAlerts(..)
            | Value::AmAlert(_),
            'v' | 's',
        ) => pad(spec, sprint(arg)),
        _ => bad_verb(verb, arg),
    }
}

fn format_int(verb: char, spec: Spec, i: i64) -> Option<String> {
    let neg = i < 0;
    let u = i.unsigned_abs();
    let mut digits = match verb {
        'd' | 'v' => u.to_string(),
        'b' => format!("{u:b}"),
        'o' => format!("{u:o}"),
        'O' => format!("0o{u:o}"),
        'x' => format!("{u:x}"),
        'X' => format!("{u:X}"),
        'c' => {
            return Some(pad(
                spec,
                char::from_u32(u32::try_from(i).ok()?)?.to_string(),
            ));
        }
        'q' => {
            let c = char::from_u32(u32::try_from(i).ok()?)?;
            return Some(pad(spec, format!("'{}'", c.escape_default())));
        }
        _ => return None,
    };
    if let Some(p) = spec.prec {
        while digits.len() < p {
            digits.insert(0, '0');
        }
        if p == 0 && u == 0 {
            digits.clear();
        }
    }
    if spec.sharp {
        match verb {
            'x' => digits.insert_str(0, "0x"),
            'X' => digits.insert_str(0, "0X"),
            'o' => digits.insert(0, '0'),
            _ => {}
        }
    }
    let sign = if neg {
        "-"
    } else if spec.plus {
        "+"
    } else if spec.space {
        " "
    } else {
        ""
    };
    // Go pads integers with zeros only when no precision is given.
    let zero = spec.zero && spec.prec.is_none();
    Some(pad_number(spec, sign, digits, zero))
}

fn format_float(verb: char, spec: Spec, f: f64) -> String {
    if f.is_nan() || f.is_infinite() {
        let s = if f.is_nan() {
            if spec.plus {
                "+NaN"
            } else if spec.space {
                " NaN"
            } else {
                "NaN"
            }
        } else if f > 0.0 {
            if spec.space && !spec.plus {
                " Inf"
            } else {
                "+Inf"
            }
        } else {
            "-Inf"
        };
        return pad(spec, s.to_string());
    }
    let neg = f.is_sign_negative();
    let a = f.abs();
    let body = match verb {
        'v' | 'g' | 'G' => {
            let s = format_g(a, spec.prec);
            if verb == 'G' { s.to_uppercase() } else { s }
        }
        'e' | 'E' => {
            let s = format_e(a, spec.prec.unwrap_or(6));
            if verb == 'E' { s.to_uppercase() } else { s }
        }
        _ => format!("{:.*}", spec.prec.unwrap_or(6), a),
    };
    let sign = if neg {
        "-"
    } else if spec.plus {
        "+"
    } else if spec.space {
        " "
    } else {
        ""
    };
    pad_number(spec, sign, body, spec.zero)
}

fn pad(spec: Spec, s: String) -> String {
    let Some(w) = spec.width else { return s };
    let n = s.chars().count();
    if n >= w {
        return s;
    }
    let fill = " ".repeat(w - n);
    if spec.minus { s + &fill } else { fill + &s }
}

fn pad_number(spec: Spec, sign: &str, digits: String, zero: bool) -> String {
    let len = sign.len() + digits.len();
    match spec.width {
        Some(w) if w > len && zero && !spec.minus => {
            format!("{sign}{}{digits}", "0".repeat(w - len))
        }
        _ => pad(spec, format!("{sign}{digits}")),
    }
}

/// The decimal digits of a finite `a >= 0` without trailing zeros, and the position of the
/// decimal point (`dp`: value = 0.d1d2… × 10^dp). `sig` rounds to that many significant
/// digits (half to even on the exact binary value, as Go); `None` gives the shortest digits
/// that read back exactly.
fn decimal_digits(a: f64, sig: Option<usize>) -> (Vec<u8>, i32) {
    if a == 0.0 {
        return (Vec::new(), 0);
    }
    let s = match sig {
        Some(n) => format!("{:.*e}", n.max(1) - 1, a),
        None => format!("{a:e}"),
    };
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = e.parse().unwrap_or(0);
    let mut d: Vec<u8> = m.bytes().filter(u8::is_ascii_digit).collect();
    while d.last() == Some(&b'0') {
        d.pop();
    }
    (d, exp + 1)
}

fn fmt_f(d: &[u8], dp: i32, prec: usize) -> String {
    let mut s = String::new();
    if dp > 0 {
        for i in 0..dp as usize {
            s.push(*d.get(i).unwrap_or(&b'0') as char);
        }
    } else {
        s.push('0');
    }
    if prec > 0 {
        s.push('.');
        for i in 0..prec as i32 {
            let j = dp + i;
            let c = if j < 0 {
                b'0'
            } else {
                *d.get(j as usize).unwrap_or(&b'0')
            };
            s.push(c as char);
        }
    }
    s
}

fn fmt_e(d: &[u8], dp: i32, prec: usize) -> String {
    let mut s = String::new();
    s.push(*d.first().unwrap_or(&b'0') as char);
    if prec > 0 {
        s.push('.');
        for i in 1..=prec {
            s.push(*d.get(i).unwrap_or(&b'0') as char);
        }
    }
    let exp = if d.is_empty() { 0 } else { dp - 1 };
    let sign = if exp < 0 { '-' } else { '+' };
    s.push_str(&format!("e{sign}{:02}", exp.abs()));
    s
}

/// Go's `strconv.FormatFloat(v, 'e', -1, 64)`, as Prometheus' API shows alert
/// values: the shortest exponent form that reads back as `v`.
pub fn format_e_shortest(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let s = format!("{v:e}");
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mant}e{sign}{:02}", exp.abs())
}

/// `strconv.FormatFloat(a, 'e', prec, 64)` for finite `a >= 0`.
fn format_e(a: f64, prec: usize) -> String {
    let (d, dp) = decimal_digits(a, Some(prec + 1));
    fmt_e(&d, dp, prec)
}

/// Go's `%g` (and `%v` with `prec` `None`) of `a`, sign included for negative values:
/// exponent form when the exponent is below -4 or at least the precision (6 for the
/// shortest form), as `strconv.FormatFloat(a, 'g', prec, 64)`.
pub fn format_g(a: f64, prec: Option<usize>) -> String {
    if a.is_nan() {
        return "NaN".into();
    }
    if a.is_infinite() {
        return if a > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if a.is_sign_negative() && a != 0.0 {
        return format!("-{}", format_g(-a, prec));
    }
    let shortest = prec.is_none();
    let p = prec.map(|p| p.max(1));
    let (d, dp) = decimal_digits(a, p);
    let nd = d.len();
    let mut prec = p.unwrap_or(nd);
    let mut eprec = prec;
    if eprec > nd && nd as i32 >= dp {
        eprec = nd;
    }
    if shortest {
        eprec = 6;
    }
    let exp = dp - 1;
    if exp < -4 || exp >= eprec as i32 {
        if prec > nd {
            prec = nd;
        }
        return fmt_e(&d, dp, prec.saturating_sub(1));
    }
    if prec as i32 > dp {
        prec = nd;
    }
    fmt_f(&d, dp, (prec as i32 - dp).max(0) as usize)
}

/// `fmt.Sprintf("%.4g", v)`, the form of Prometheus' `humanize*` functions.
pub fn g4(v: f64) -> String {
    format_float(
        'g',
        Spec {
            prec: Some(4),
            ..Spec::default()
        },
        v,
    )
}

/// Go's `strconv.Quote`: double quotes, `\n \t \\ \"` and friends escaped, other
/// non-printable characters as `\x..`, `\u....` or `\U........`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `time.Time.String()` of a UTC time given in nanoseconds since the Unix epoch:
/// `2006-01-02 15:04:05.999999999 +0000 UTC`, fraction without trailing zeros.
pub fn format_go_time(ns: i64) -> String {
    let (secs, frac) = split_ns(ns);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut s = format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    );
    if frac != 0 {
        let f = format!("{frac:09}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s.push_str(" +0000 UTC");
    s
}

/// Go's `time.Time.Format(layout)` of a UTC time in nanoseconds since the Unix epoch:
/// the reference-time elements (`2006 06 01 1 Jan January 02 2 _2 002 15 03 3 04 4 05 5
/// PM pm Mon Monday MST Z07:00 -07:00 -0700 Z0700 -07 .000 .999…`) replaced, the rest kept.
pub fn format_go_layout(ns: i64, layout: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let (secs, frac) = split_ns(ns);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (h, mi, se) = (sod / 3600, sod % 3600 / 60, sod % 60);
    let yday = days - days_from_civil(y, 1, 1) + 1;
    let wd = DAYS[days.rem_euclid(7) as usize];
    let month = MONTHS[(m - 1) as usize];
    let h12 = if h % 12 == 0 { 12 } else { h % 12 };
    let mut out = String::new();
    let mut rest = layout;
    'outer: while !rest.is_empty() {
        // Fractional seconds: `.000` / `,000` (fixed) and `.999` (trailing zeros cut).
        if let Some(sep) = rest.strip_prefix(['.', ',']) {
            let n0 = sep.bytes().take_while(|b| *b == b'0').count();
            let n9 = sep.bytes().take_while(|b| *b == b'9').count();
            let n = n0.max(n9);
            if n > 0 && !sep[n..].starts_with(|c: char| c.is_ascii_digit()) {
                let digits = format!("{frac:09}");
                let digits = &digits[..n.min(9)];
                if n0 > 0 {
                    out.push_str(&rest[..1]);
                    out.push_str(digits);
                } else {
                    let t = digits.trim_end_matches('0');
                    if !t.is_empty() {
                        out.push_str(&rest[..1]);
                        out.push_str(t);
                    }
                }
                rest = &sep[n..];
                continue;
            }
        }
        let table: [(&str, String); 27] = [
            ("January", month.to_string()),
            ("Jan", month[..3].to_string()),
            ("Monday", wd.to_string()),
            ("Mon", wd[..3].to_string()),
            ("MST", "UTC".to_string()),
            ("2006", format!("{y:04}")),
            ("Z07:00", "Z".to_string()),
            ("Z0700", "Z".to_string()),
            ("Z07", "Z".to_string()),
            ("-07:00", "+00:00".to_string()),
            ("-0700", "+0000".to_string()),
            ("-07", "+00".to_string()),
            ("002", format!("{yday:03}")),
            ("01", format!("{m:02}")),
            ("02", format!("{d:02}")),
            ("_2", format!("{d:>2}")),
            ("03", format!("{h12:02}")),
            ("04", format!("{mi:02}")),
            ("05", format!("{se:02}")),
            ("06", format!("{:02}", y.rem_euclid(100))),
            ("15", format!("{h:02}")),
            ("PM", if h >= 12 { "PM" } else { "AM" }.to_string()),
            ("pm", if h >= 12 { "pm" } else { "am" }.to_string()),
            ("1", m.to_string()),
            ("2", d.to_string()),
            ("3", h12.to_string()),
            ("4", mi.to_string()),
        ];
        for (k, v) in &table {
            if let Some(r) = rest.strip_prefix(k) {
                out.push_str(v);
                rest = r;
                continue 'outer;
            }
        }
        if let Some(r) = rest.strip_prefix('5') {
            out.push_str(&se.to_string());
            rest = r;
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Seconds and nanoseconds of a time in ns since the Unix epoch; `i64::MIN` stands for
/// Go's zero time, 0001-01-01 00:00:00 UTC (out of the nanosecond range).
pub(crate) fn split_ns(ns: i64) -> (i64, i64) {
    if ns == i64::MIN {
        return (-62_135_596_800, 0);
    }
    (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

/// (year, month, day) → days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_exponent_form_as_go() {
        assert_eq!(format_e_shortest(1.0), "1e+00");
        assert_eq!(format_e_shortest(0.0), "0e+00");
        assert_eq!(format_e_shortest(1234.5), "1.2345e+03");
        assert_eq!(format_e_shortest(-0.00012), "-1.2e-04");
        assert_eq!(format_e_shortest(1e300), "1e+300");
        assert_eq!(format_e_shortest(f64::NAN), "NaN");
    }

    fn f(v: f64) -> Value {
        Value::Float(v)
    }

    #[test]
    fn sprint_floats_as_go() {
        for (v, want) in [
            (0.0, "0"),
            (1.0, "1"),
            (0.1, "0.1"),
            (1e6, "1e+06"),
            (123456.0, "123456"),
            (123456789.0, "1.23456789e+08"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (-2.5, "-2.5"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(sprint(&f(v)), want, "{v}");
        }
    }

    #[test]
    fn printf_verbs_as_go() {
        let s = |v: &str| Value::Str(v.into());
        for (fmt, args, want) in [
            ("%.2f", vec![f(1.23456)], "1.23"),
            ("%.0f", vec![f(2.5)], "2"),
            ("%.0f", vec![f(3.5)], "4"),
            ("%f", vec![f(1.0)], "1.000000"),
            ("%5.1f|", vec![f(1.23456)], "  1.2|"),
            ("%-6.1f|", vec![f(1.23456)], "1.2   |"),
            ("%06.2f", vec![f(-1.23456)], "-01.23"),
            ("%+.1f", vec![f(2.0)], "+2.0"),
            ("%e", vec![f(123456.789)], "1.234568e+05"),
            ("%.2e", vec![f(0.000123)], "1.23e-04"),
            ("%g", vec![f(100000.0)], "100000"),
            ("%g", vec![f(1000000.0)], "1e+06"),
            ("%.3g", vec![f(1234.0)], "1.23e+03"),
            ("%.4g", vec![f(0.0001234)], "0.0001234"),
            ("%v", vec![f(0.5)], "0.5"),
            ("%d", vec![Value::Int(42)], "42"),
            ("%05d", vec![Value::Int(-42)], "-0042"),
            ("%x", vec![Value::Int(255)], "ff"),
            ("%X", vec![Value::Int(255)], "FF"),
            ("%#x", vec![Value::Int(255)], "0xff"),
            ("%d", vec![f(1.5)], "%!d(float64=1.5)"),
            ("%s", vec![f(1.5)], "%!s(float64=1.5)"),
            ("%s", vec![s("abc")], "abc"),
            ("%q", vec![s("a\"b\n")], "\"a\\\"b\\n\""),
            ("%x", vec![s("hi")], "6869"),
            ("% x", vec![s("hi")], "68 69"),
            ("%#x", vec![s("hi")], "0x6869"),
            ("%10s|", vec![s("abc")], "       abc|"),
            ("%-5s|", vec![s("ab")], "ab   |"),
            ("%.2s", vec![s("abcdef")], "ab"),
            ("%v", vec![s("x")], "x"),
            ("%t", vec![Value::Bool(true)], "true"),
            ("100%%", vec![], "100%"),
            ("%d %d", vec![Value::Int(1)], "1 %!d(MISSING)"),
            ("%d", vec![Value::Int(1), s("x")], "1%!(EXTRA string=x)"),
            ("%.2f", vec![f(f64::INFINITY)], "+Inf"),
            ("%.2f", vec![f(f64::NAN)], "NaN"),
        ] {
            assert_eq!(sprintf(fmt, &args), want, "{fmt} {args:?}");
        }
    }

    #[test]
    fn g4_is_go_percent_point_4g() {
        for (v, want) in [
            (0.0, "0"),
            (1234.0, "1234"),
            (12345.0, "1.234e+04"),
            (12355.0, "1.236e+04"),
            (1.0, "1"),
            (999.95, "1000"),
            (0.5, "0.5"),
            (123.456, "123.5"),
            (1e-7, "1e-07"),
        ] {
            assert_eq!(g4(v), want, "{v}");
        }
    }

    #[test]
    fn go_time_strings() {
        assert_eq!(format_go_time(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(
            format_go_time(1_500_000_000),
            "1970-01-01 00:00:01.5 +0000 UTC"
        );
        assert_eq!(
            format_go_time(1_435_065_584_128_000_000),
            "2015-06-23 13:19:44.128 +0000 UTC"
        );
    }
}
