//! What `outpost-agent status` shows and the running agent serves on `/status`: the
//! connection, the backlog and how fast it drains. [`DrainMeter`] turns acknowledgement
//! counts into a rate over a sliding window; [`render`] prints a report for people.

use crate::buffer::BufferStats;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The window over which the drain rate is measured.
pub const RATE_WINDOW: Duration = Duration::from_secs(20);

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub id: String,
    pub region: String,
    /// Whether a running agent answered (false: read from the buffer on disk).
    pub running: bool,
    pub connected: bool,
    pub aggregator: Option<String>,
    pub last_error: Option<String>,
    pub backlog_batches: u64,
    pub backlog_bytes: u64,
    /// Unix ms of the oldest buffered sample.
    pub oldest_ms: Option<i64>,
    pub drain_batches_per_second: f64,
    /// Estimated seconds until the backlog is sent, at the current drain rate.
    pub drain_eta_seconds: Option<f64>,
    pub cycles: u64,
    pub acked_seq: u64,
    pub next_seq: u64,
    pub dropped_samples: u64,
    pub dropped_batches: u64,
    pub damaged_batches: u64,
    pub buffer_error: Option<String>,
}

impl Status {
    pub fn from_stats(id: &str, region: &str, s: &BufferStats) -> Status {
        Status {
            id: id.into(),
            region: region.into(),
            backlog_batches: s.batches,
            backlog_bytes: s.bytes,
            oldest_ms: s.oldest_ts,
            cycles: s.cycles,
            acked_seq: s.acked,
            next_seq: s.next_seq,
            dropped_samples: s.dropped_samples,
            dropped_batches: s.dropped_batches,
            damaged_batches: s.damaged_batches,
            buffer_error: s.write_error.clone(),
            ..Status::default()
        }
    }

    pub fn with_rate(mut self, batches_per_second: f64) -> Status {
        self.drain_batches_per_second = batches_per_second;
        self.drain_eta_seconds =
            (batches_per_second > 0.0).then(|| self.backlog_batches as f64 / batches_per_second);
        self
    }
}

/// Acknowledged-batch totals over time; the rate is the slope over [`RATE_WINDOW`].
#[derive(Debug, Default)]
pub struct DrainMeter {
    points: VecDeque<(Instant, u64)>,
}

impl DrainMeter {
    pub fn record(&mut self, now: Instant, total_acked: u64) {
        self.points.push_back((now, total_acked));
        while self.points.len() > 2
            && self
                .points
                .front()
                .is_some_and(|p| now.duration_since(p.0) > RATE_WINDOW)
        {
            self.points.pop_front();
        }
    }

    /// Batches per second over the window ending at `now`; 0 when nothing was acknowledged
    /// within it.
    pub fn rate(&self, now: Instant) -> f64 {
        let (Some(first), Some(last)) = (self.points.front(), self.points.back()) else {
            return 0.0;
        };
        if now.duration_since(last.0) > RATE_WINDOW {
            return 0.0;
        }
        let span = now.duration_since(first.0).as_secs_f64().max(1.0);
        (last.1 - first.1) as f64 / span
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn duration(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// The report `outpost-agent status` prints. Lines start with a fixed label, so scripts can
/// pick them out.
pub fn render(s: &Status, now_ms: i64) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| out.push_str(&format!("{label:<15}{value}\n"));
    line("agent:", format!("{} (region {})", s.id, s.region));
    line(
        "running:",
        if s.running {
            "yes".into()
        } else {
            "no (read from the buffer on disk)".into()
        },
    );
    if s.running {
        let conn = match (s.connected, &s.aggregator, &s.last_error) {
            (true, Some(a), _) => format!("connected to {a}"),
            (true, None, _) => "connected".into(),
            (false, _, Some(e)) => format!("disconnected ({e})"),
            (false, _, None) => "disconnected".into(),
        };
        line("connection:", conn);
    }
    let oldest = match s.oldest_ms {
        Some(t) => format!(
            ", oldest sample {} ago",
            duration(((now_ms - t).max(0)) as f64 / 1000.0)
        ),
        None => String::new(),
    };
    line(
        "backlog:",
        format!(
            "{} batches, {}{oldest}",
            s.backlog_batches,
            bytes(s.backlog_bytes)
        ),
    );
    if s.running {
        line(
            "drain rate:",
            format!("{:.1} batches/s", s.drain_batches_per_second),
        );
        let eta = match s.drain_eta_seconds {
            _ if s.backlog_batches == 0 => "nothing to send".into(),
            Some(e) => duration(e),
            None => "unknown (nothing acknowledged lately)".into(),
        };
        line("time to drain:", eta);
    }
    line("cycles:", s.cycles.to_string());
    line(
        "seqs:",
        format!("acknowledged up to {}, next {}", s.acked_seq, s.next_seq),
    );
    line(
        "dropped:",
        format!(
            "{} samples in {} batches (buffer full)",
            s.dropped_samples, s.dropped_batches
        ),
    );
    line("damaged:", format!("{} batches skipped", s.damaged_batches));
    if let Some(e) = &s.buffer_error {
        line("buffer error:", e.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_the_slope_over_the_window() {
        let t0 = Instant::now();
        let mut m = DrainMeter::default();
        assert_eq!(m.rate(t0), 0.0);
        for i in 0..=10u64 {
            m.record(t0 + Duration::from_secs(i), i * 50);
        }
        assert_eq!(m.rate(t0 + Duration::from_secs(10)), 50.0);
        // Old points fall out of the window; a quiet link reads 0.
        for i in 11..=40u64 {
            m.record(t0 + Duration::from_secs(i), 500);
        }
        assert_eq!(m.rate(t0 + Duration::from_secs(40)), 0.0);
        assert_eq!(m.rate(t0 + Duration::from_secs(100)), 0.0);
    }

    #[test]
    fn report_shows_backlog_rate_and_eta() {
        let s = Status {
            id: "web-1".into(),
            region: "eu".into(),
            running: true,
            connected: true,
            aggregator: Some("10.0.0.1:9471".into()),
            backlog_batches: 3600,
            backlog_bytes: 5 << 20,
            oldest_ms: Some(1_000_000),
            cycles: 4000,
            ..Status::default()
        }
        .with_rate(30.0);
        let r = render(&s, 1_000_000 + 3_600_000);
        assert!(
            r.contains("backlog:       3600 batches, 5.0 MiB, oldest sample 1h00m ago"),
            "{r}"
        );
        assert!(r.contains("drain rate:    30.0 batches/s"), "{r}");
        assert!(r.contains("time to drain: 2m00s"), "{r}");
        assert!(
            r.contains("connection:    connected to 10.0.0.1:9471"),
            "{r}"
        );
        assert!(r.contains("cycles:        4000"), "{r}");
    }
}
