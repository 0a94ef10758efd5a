//! Config primitives: durations such as `1s`, `1m30s`, `500ms` and byte sizes such as
//! `256MiB`, `1GB` or a plain number of bytes. Both deserialize from TOML strings and
//! report a value they cannot read with the accepted forms. Also the UTC calendar date of a
//! day number, for the times reports print.

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use std::{fmt, str::FromStr, time::Duration as StdDuration};

/// A duration written the way Prometheus writes them: `500ms`, `10s`, `1m30s`, `2h`, `1d`,
/// `1w`, `1y` (365 days).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub StdDuration);

impl Duration {
    /// `s` seconds.
    pub fn from_secs(s: u64) -> Self {
        Duration(StdDuration::from_secs(s))
    }
    /// `ms` milliseconds.
    pub fn from_millis(ms: u64) -> Self {
        Duration(StdDuration::from_millis(ms))
    }
    /// As a standard duration.
    pub fn get(self) -> StdDuration {
        self.0
    }
}

impl FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid duration {s:?}: use numbers with units ms, s, m, h, d, w or y (365d), e.g. \"500ms\", \"1m30s\", \"2h\", \"30d\", \"1y\""
            )
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(bad());
        }
        let mut total: u128 = 0;
        let mut rest = t;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(bad());
            }
            let n: u128 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit_ms: u128 = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "w" => 604_800_000,
                // As Prometheus' durations: a year is 365 days.
                "y" => 31_536_000_000,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            total = total
                .checked_add(n.checked_mul(unit_ms).ok_or_else(bad)?)
                .ok_or_else(bad)?;
        }
        let ms = u64::try_from(total).map_err(|_| bad())?;
        Ok(Duration(StdDuration::from_millis(ms)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        let mut rest = ms;
        for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
            if rest >= size {
                write!(f, "{}{}", rest / size, unit)?;
                rest %= size;
            }
        }
        Ok(())
    }
}

/// Written back in the form it is read in (`1m30s`), so definitions round-trip through JSON.
impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A number of bytes: `1048576`, `"64KiB"`, `"256MiB"`, `"1GiB"`, `"1GB"` (SI units are powers of 1000).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid size {s:?}: use bytes or a unit, e.g. \"64KiB\", \"256MiB\", \"1GiB\", \"500MB\""
            )
        };
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = (&t[..split], t[split..].trim());
        if num.is_empty() {
            return Err(bad());
        }
        let mult: u64 = match unit {
            "" | "B" => 1,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            _ => return Err(bad()),
        };
        let n: f64 = num.parse().map_err(|_| bad())?;
        let bytes = n * mult as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(bad());
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if b >= size && b.is_multiple_of(size) {
                return write!(f, "{}{}", b / size, unit);
            }
        }
        write!(f, "{b}B")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"256MiB\" or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_prometheus_style() {
        for (s, ms) in [
            ("500ms", 500),
            ("1s", 1000),
            ("1m30s", 90_000),
            ("2h", 7_200_000),
            ("1d", 86_400_000),
            ("2w", 1_209_600_000),
            ("1y", 31_536_000_000),
            ("1y2d", 31_708_800_000),
        ] {
            assert_eq!(
                s.parse::<Duration>().unwrap(),
                Duration::from_millis(ms),
                "{s}"
            );
        }
        for s in ["", "10", "s", "1x", "-1s", "1.5s"] {
            let e = s.parse::<Duration>().unwrap_err();
            assert!(e.contains("invalid duration"), "{s}: {e}");
        }
        assert_eq!(Duration::from_millis(90_500).to_string(), "1m30s500ms");
    }

    #[test]
    fn sizes_parse_binary_and_si_units() {
        for (s, b) in [
            ("1024", 1024u64),
            ("64KiB", 65536),
            ("256MiB", 256 << 20),
            ("1GB", 1_000_000_000),
            ("1.5KiB", 1536),
        ] {
            assert_eq!(s.parse::<ByteSize>().unwrap(), ByteSize(b), "{s}");
        }
        for s in ["", "MiB", "12 parsecs", "-1"] {
            assert!(s.parse::<ByteSize>().is_err(), "{s}");
        }
        assert_eq!(ByteSize(256 << 20).to_string(), "256MiB");
    }
}

/// The UTC calendar date (year, month 1–12, day 1–31) of `days` since 1970-01-01, in the
/// proleptic Gregorian calendar (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m as u32, d as u32)
}
