//! Durations as Prometheus writes them in rule files (`model.Duration` of
//! `prometheus/common`): `1h30m`, `5m`, `90s`, `500ms`, `1w`, `1y`, or `0`, held as
//! milliseconds.

use std::fmt;

/// The units of Prometheus' duration syntax, largest first, in milliseconds. A year is 365
/// days and a week 7, as in `prometheus/common/model`.
const UNITS: [(&str, i64); 7] = [
    ("y", 365 * 24 * 3_600_000),
    ("w", 7 * 24 * 3_600_000),
    ("d", 24 * 3_600_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Parses Prometheus' duration syntax into milliseconds: units `y w d h m s ms`, each at
/// most once and in that order (`1h30m`, not `30m1h`), or `0`. As `model.ParseDuration`.
///
/// # Errors
/// `empty duration string` for `""`; `not a valid duration string: "<s>"` for anything else
/// that does not match, including overflow of `i64` milliseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    if s.is_empty() {
        return Err("empty duration string".into());
    }
    if s == "0" {
        return Ok(0);
    }
    let bad = || format!("not a valid duration string: {s:?}");
    let mut rest = s;
    let mut next_unit = 0;
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let idx = UNITS[next_unit..]
            .iter()
            .position(|(u, _)| *u == unit)
            .ok_or_else(bad)?
            + next_unit;
        next_unit = idx + 1;
        total = n
            .checked_mul(UNITS[idx].1)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// A duration in milliseconds formatted as Prometheus prints one (`model.Duration.String`):
/// `0s` for zero, else each non-zero unit from years down to milliseconds (`1h30m`, `1d`,
/// `1m0s` is never produced: `1m`).
pub fn format_duration(ms: i64) -> String {
    DurationMs(ms).to_string()
}

/// Milliseconds that display in Prometheus' duration syntax; see [`format_duration`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationMs(pub i64);

impl fmt::Display for DurationMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0;
        if ms == 0 {
            return f.write_str("0s");
        }
        if ms < 0 {
            f.write_str("-")?;
            ms = ms.checked_neg().unwrap_or(i64::MAX);
        }
        for (unit, size) in UNITS {
            let n = ms / size;
            if n > 0 {
                write!(f, "{n}{unit}")?;
                ms -= n * size;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_durations() {
        for (s, ms) in [
            ("0", 0),
            ("0s", 0),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            ("1d", 86_400_000),
            ("2w", 1_209_600_000),
            ("1y", 31_536_000_000),
            ("1m30s500ms", 90_500),
        ] {
            assert_eq!(parse_duration(s), Ok(ms), "{s}");
        }
    }

    #[test]
    fn refuses_what_prometheus_refuses() {
        assert_eq!(parse_duration(""), Err("empty duration string".into()));
        for s in ["30m1h", "1.5h", "5", "5 m", "1hh", "-5m", "m", "1h1h"] {
            assert_eq!(
                parse_duration(s),
                Err(format!("not a valid duration string: {s:?}")),
                "{s}"
            );
        }
    }

    #[test]
    fn formats_as_prometheus() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(5_400_000), "1h30m");
        assert_eq!(format_duration(90_500), "1m30s500ms");
        assert_eq!(format_duration(86_400_000 + 1000), "1d1s");
    }
}
