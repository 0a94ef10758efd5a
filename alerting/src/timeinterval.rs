//! Alertmanager 0.25's time intervals (`time_intervals:` and the older
//! `mute_time_intervals:`): when a route's `mute_time_intervals` silence it and its
//! `active_time_intervals` let it speak. Read and validated with Alertmanager's rules and
//! messages; evaluated as its `timeinterval.ContainsTime` (each field a list of ranges, an
//! absent field matching everything, all present fields having to match; times of day are
//! `[start, end)` minutes; negative days of the month count from its end; `location`
//! through the IANA database of `chrono-tz`, UTC when absent).

use chrono::{Datelike, TimeZone, Timelike};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// One `time_intervals` entry: every present field must match.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TimeInterval {
    /// Minutes of the day, `[start, end)`, 0–1440.
    pub times: Option<Vec<(u32, u32)>>,
    /// Days of the week, inclusive, Sunday = 0.
    pub weekdays: Option<Vec<(u32, u32)>>,
    /// Days of the month, inclusive; negative counts from the month's end (-1: last day).
    pub days_of_month: Option<Vec<(i32, i32)>>,
    /// Months, inclusive, January = 1.
    pub months: Option<Vec<(u32, u32)>>,
    /// Years, inclusive.
    pub years: Option<Vec<(i32, i32)>>,
    /// The time zone the fields are read in (UTC when absent).
    pub location: Option<chrono_tz::Tz>,
}

/// A named list of intervals (`time_intervals: [{name, time_intervals: [...]}]`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedTimeInterval {
    /// The name routes refer to.
    pub name: String,
    /// The intervals; the name is in effect when any of them contains the time.
    #[serde(default)]
    pub time_intervals: Vec<TimeInterval>,
}

/// Time intervals by name, as routes look them up.
pub type TimeIntervals = BTreeMap<String, Vec<TimeInterval>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeRange {
    #[serde(default)]
    start_time: String,
    #[serde(default)]
    end_time: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterval {
    #[serde(default)]
    times: Option<Vec<RawTimeRange>>,
    #[serde(default)]
    weekdays: Option<Vec<String>>,
    #[serde(default)]
    days_of_month: Option<Vec<String>>,
    #[serde(default)]
    months: Option<Vec<String>>,
    #[serde(default)]
    years: Option<Vec<String>>,
    #[serde(default)]
    location: Option<String>,
}

const WEEKDAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];
const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// `HH:MM` (00:00–23:59, or 24:00) → minutes, with Alertmanager's message.
fn parse_minutes(s: &str) -> Result<u32, String> {
    let bad = || format!("couldn't parse timestamp {s}, invalid format");
    if s == "24:00" {
        return Ok(1440);
    }
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 || !(h.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// `a` or `a:b` (lower-cased) with members read by `member`.
fn range<T: Copy>(s: &str, member: impl Fn(&str) -> Result<T, String>) -> Result<(T, T), String> {
    let s = s.to_lowercase();
    match s.split_once(':') {
        Some((a, b)) => {
            if b.contains(':') {
                return Err(format!("couldn't parse range {s}, invalid format"));
            }
            Ok((member(a)?, member(b)?))
        }
        None => {
            let v = member(&s)?;
            Ok((v, v))
        }
    }
}

/// Go's `strconv.Atoi` error text.
fn atoi(s: &str) -> Result<i32, String> {
    s.parse::<i32>()
        .map_err(|_| format!("strconv.Atoi: parsing {s:?}: invalid syntax"))
}

impl TimeInterval {
    fn from_raw(r: RawInterval) -> Result<TimeInterval, String> {
        let times = r
            .times
            .map(|ts| {
                ts.into_iter()
                    .map(|t| {
                        if t.start_time.is_empty() || t.end_time.is_empty() {
                            return Err("both start and end times must be provided".to_string());
                        }
                        let (a, b) = (parse_minutes(&t.start_time)?, parse_minutes(&t.end_time)?);
                        if a >= b {
                            return Err(
                                "start time cannot be equal or greater than end time".to_string()
                            );
                        }
                        Ok((a, b))
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            .transpose()?;
        let weekdays = r
            .weekdays
            .map(|ws| {
                ws.iter()
                    .map(|w| {
                        let (a, b) = range(w, |m| {
                            WEEKDAYS
                                .iter()
                                .position(|d| *d == m)
                                .map(|i| i as u32)
                                .ok_or_else(|| format!("{m} is not a valid weekday"))
                        })?;
                        if a > b {
                            return Err("start day cannot be before end day".to_string());
                        }
                        Ok((a, b))
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            .transpose()?;
        let days_of_month = r
            .days_of_month
            .map(|ds| {
                ds.iter()
                    .map(|d| {
                        let (a, b) = range(d, atoi)?;
                        for v in [a, b] {
                            if v == 0 || !(-31..=31).contains(&v) {
                                return Err(format!(
                                    "{v} is not a valid day of the month: out of range"
                                ));
                            }
                        }
                        if a < 0 && b > 0 {
                            return Err(
                                "end day must be negative if start day is negative".to_string()
                            );
                        }
                        let check = |v: i32| if v < 0 { 28 + v } else { v };
                        if check(a) > check(b) {
                            return Err(format!("end day {b} is always before start day {a}"));
                        }
                        Ok((a, b))
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            .transpose()?;
        let months = r
            .months
            .map(|ms| {
                ms.iter()
                    .map(|m| {
                        let (a, b) = range(m, |s| {
                            MONTHS
                                .iter()
                                .position(|n| *n == s)
                                .map(|i| i as i32 + 1)
                                .map_or_else(
                                    || {
                                        s.parse::<i32>()
                                            .map_err(|_| format!("{s} is not a valid month"))
                                    },
                                    Ok,
                                )
                        })?;
                        if a > b {
                            let name = |v: i32| {
                                MONTHS
                                    .get((v - 1) as usize)
                                    .copied()
                                    .unwrap_or("")
                                    .to_string()
                            };
                            return Err(format!(
                                "end month {} is before start month {}",
                                name(b),
                                name(a)
                            ));
                        }
                        Ok((a.max(0) as u32, b.max(0) as u32))
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            .transpose()?;
        let years = r
            .years
            .map(|ys| {
                ys.iter()
                    .map(|y| {
                        let (a, b) = range(y, atoi)?;
                        if a > b {
                            return Err(format!("end year {b} is before start year {a}"));
                        }
                        Ok((a, b))
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            .transpose()?;
        let location = r
            .location
            .map(|l| {
                if l.is_empty() || l == "UTC" {
                    return Ok(chrono_tz::UTC);
                }
                l.parse::<chrono_tz::Tz>()
                    .map_err(|_| format!("unknown time zone {l}"))
            })
            .transpose()?;
        Ok(TimeInterval {
            times,
            weekdays,
            days_of_month,
            months,
            years,
            location,
        })
    }

    /// Whether the interval contains the instant `t_ms` (ms since the Unix epoch), as
    /// Alertmanager 0.25's `ContainsTime` decides.
    pub fn contains(&self, t_ms: i64) -> bool {
        let tz = self.location.unwrap_or(chrono_tz::UTC);
        let Some(t) = tz.timestamp_millis_opt(t_ms).single() else {
            return false;
        };
        if let Some(times) = &self.times {
            let m = t.hour() * 60 + t.minute();
            if !times.iter().any(|(a, b)| m >= *a && m < *b) {
                return false;
            }
        }
        if let Some(days) = &self.days_of_month {
            let dim = days_in_month(t.year(), t.month()) as i32;
            let day = t.day() as i32;
            let hit = days.iter().any(|(a, b)| {
                let begin = if *a < 0 { dim + a + 1 } else { *a };
                let end = if *b < 0 { dim + b + 1 } else { *b };
                if begin > dim {
                    return false;
                }
                let (begin, end) = (begin.clamp(-dim, dim), end.clamp(-dim, dim));
                day >= begin && day <= end
            });
            if !hit {
                return false;
            }
        }
        if let Some(months) = &self.months
            && !months.iter().any(|(a, b)| (*a..=*b).contains(&t.month()))
        {
            return false;
        }
        if let Some(wd) = &self.weekdays {
            let d = t.weekday().num_days_from_sunday();
            if !wd.iter().any(|(a, b)| (*a..=*b).contains(&d)) {
                return false;
            }
        }
        if let Some(years) = &self.years
            && !years.iter().any(|(a, b)| (*a..=*b).contains(&t.year()))
        {
            return false;
        }
        true
    }
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

impl<'de> Deserialize<'de> for TimeInterval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawInterval::deserialize(d)?;
        TimeInterval::from_raw(raw).map_err(serde::de::Error::custom)
    }
}

/// Whether any interval of the names `names` contains `t_ms` (Alertmanager's
/// `inTimeIntervals`); a name not in `intervals` contains nothing (configurations are
/// checked for undefined names when loaded).
pub fn in_intervals(intervals: &TimeIntervals, names: &[String], t_ms: i64) -> bool {
    names.iter().any(|n| {
        intervals
            .get(n)
            .is_some_and(|list| list.iter().any(|ti| ti.contains(t_ms)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ti(yaml: &str) -> Result<TimeInterval, String> {
        serde_saphyr::from_str::<TimeInterval>(yaml).map_err(|e| e.to_string())
    }

    /// 2026-12-01T10:30:00Z, a Tuesday.
    const T: i64 = 1_796_121_000_000;

    #[test]
    fn fields_as_alertmanager() {
        let yes = |y: &str| assert!(ti(y).unwrap().contains(T), "{y}");
        let no = |y: &str| assert!(!ti(y).unwrap().contains(T), "{y}");
        yes("times: [{start_time: '10:00', end_time: '11:00'}]");
        no("times: [{start_time: '10:31', end_time: '24:00'}]");
        no("times: [{start_time: '09:00', end_time: '10:30'}]");
        yes("weekdays: ['monday:wednesday']");
        no("weekdays: [saturday, sunday]");
        yes("days_of_month: ['1']");
        yes("days_of_month: ['-31:-31']");
        no("days_of_month: ['-1']");
        yes("months: ['december']");
        yes("months: ['11:12']");
        no("months: ['1:11']");
        yes("years: ['2026:2030']");
        no("years: ['2025']");
        // 10:30 UTC is 19:30 in Tokyo.
        yes("times: [{start_time: '19:00', end_time: '20:00'}]\nlocation: Asia/Tokyo");
        no("times: [{start_time: '10:00', end_time: '11:00'}]\nlocation: Asia/Tokyo");
        yes("{}");
    }

    #[test]
    fn refusals_name_the_problem() {
        for (y, msg) in [
            (
                "times: [{start_time: '11:00', end_time: '10:00'}]",
                "start time cannot be equal or greater than end time",
            ),
            (
                "times: [{start_time: '25:00', end_time: '26:00'}]",
                "couldn't parse timestamp 25:00, invalid format",
            ),
            (
                "times: [{start_time: '10:00'}]",
                "both start and end times must be provided",
            ),
            ("weekdays: [funday]", "funday is not a valid weekday"),
            (
                "weekdays: ['friday:monday']",
                "start day cannot be before end day",
            ),
            (
                "days_of_month: ['0']",
                "0 is not a valid day of the month: out of range",
            ),
            (
                "days_of_month: ['-3:5']",
                "end day must be negative if start day is negative",
            ),
            (
                "months: ['march:january']",
                "end month january is before start month march",
            ),
            (
                "years: ['2030:2020']",
                "end year 2020 is before start year 2030",
            ),
            ("location: Mars/Base", "unknown time zone Mars/Base"),
        ] {
            let e = ti(y).unwrap_err();
            assert!(e.contains(msg), "{y}: {e}");
        }
    }
}
