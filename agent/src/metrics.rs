//! The agent's own metrics, served on `/metrics`. Counters that must survive restarts
//! (cycles, dropped samples) are read from the buffer's persisted totals.

use crate::buffer::BufferStats;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CollectorLabel {
    pub collector: String,
}

/// Where scraped or pushed samples came from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

/// A push request's format and the HTTP status it was answered with.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushLabel {
    pub format: String,
    pub code: String,
}

/// A scrape target: its job and instance, as on the samples it yields.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScrapeTargetLabels {
    pub job: String,
    pub instance: String,
}

/// A synthetic check and how one run of it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckRunLabels {
    pub check: String,
    pub result: String,
}

pub struct Metrics {
    registry: Registry,
    pub cycles: Counter,
    pub collect_duration: Histogram,
    pub collector_errors: Family<CollectorLabel, Counter>,
    pub samples_collected: Counter,
    pub buffer_bytes: Gauge,
    pub buffer_batches: Gauge,
    pub buffer_oldest_age: Gauge<f64, AtomicU64>,
    pub buffer_dropped_samples: Counter,
    pub buffer_dropped_batches: Counter,
    pub buffer_write_errors: Counter,
    pub buffer_damaged_batches: Counter,
    pub buffer_evicted_live_batches: Counter,
    pub buffer_write_failing: Gauge,
    pub batches_sent: Counter,
    pub batches_sent_live: Counter,
    pub samples_sent: Counter,
    pub batches_acked: Counter,
    pub uplink_connected: Gauge,
    pub uplink_reconnects: Counter,
    pub uplink_failbacks: Counter,
    pub uplink_bytes_sent: Counter,
    pub uplink_bytes_received: Counter,
    pub clock_skew: Gauge<f64, AtomicU64>,
    pub reload: outpost_service::metrics::ReloadGauges,
    pub process: outpost_service::metrics::ProcessInfo,
    pub samples_received: Family<SourceLabel, Counter>,
    pub push_requests: Family<PushLabel, Counter>,
    pub scrape_duplicate_samples: Family<ScrapeTargetLabels, Counter>,
    pub checks_running: Gauge,
    pub check_runs: Family<CheckRunLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("outpost_agent");
        let m = Metrics {
            registry: Registry::default(),
            cycles: Counter::default(),
            collect_duration: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
            collector_errors: Family::default(),
            samples_collected: Counter::default(),
            buffer_bytes: Gauge::default(),
            buffer_batches: Gauge::default(),
            buffer_oldest_age: Gauge::default(),
            buffer_dropped_samples: Counter::default(),
            buffer_dropped_batches: Counter::default(),
            buffer_write_errors: Counter::default(),
            buffer_damaged_batches: Counter::default(),
            buffer_evicted_live_batches: Counter::default(),
            buffer_write_failing: Gauge::default(),
            batches_sent: Counter::default(),
            batches_sent_live: Counter::default(),
            samples_sent: Counter::default(),
            batches_acked: Counter::default(),
            uplink_connected: Gauge::default(),
            uplink_reconnects: Counter::default(),
            uplink_failbacks: Counter::default(),
            uplink_bytes_sent: Counter::default(),
            uplink_bytes_received: Counter::default(),
            clock_skew: Gauge::default(),
            reload: Default::default(),
            process: Default::default(),
            samples_received: Family::default(),
            push_requests: Family::default(),
            scrape_duplicate_samples: Family::default(),
            checks_running: Gauge::default(),
            check_runs: Family::default(),
        };
        r.register(
            "cycles",
            "Completed collection cycles since the buffer was created",
            m.cycles.clone(),
        );
        r.register_with_unit(
            "collect_duration",
            "Time to collect and buffer one cycle",
            Unit::Seconds,
            m.collect_duration.clone(),
        );
        r.register(
            "collector_errors",
            "Collection failures by collector",
            m.collector_errors.clone(),
        );
        r.register(
            "samples_collected",
            "Samples collected",
            m.samples_collected.clone(),
        );
        r.register_with_unit(
            "buffer",
            "Bytes waiting in the buffer",
            Unit::Bytes,
            m.buffer_bytes.clone(),
        );
        r.register(
            "buffer_batches",
            "Batches waiting in the buffer",
            m.buffer_batches.clone(),
        );
        r.register_with_unit(
            "buffer_oldest_age",
            "Age of the oldest buffered sample",
            Unit::Seconds,
            m.buffer_oldest_age.clone(),
        );
        r.register(
            "buffer_dropped_samples",
            "Samples dropped by the buffer's when-full policy",
            m.buffer_dropped_samples.clone(),
        );
        r.register(
            "buffer_dropped_batches",
            "Batches dropped by the buffer's when-full policy",
            m.buffer_dropped_batches.clone(),
        );
        r.register(
            "buffer_evicted_live_batches",
            "Batches evicted after their live copy was sent and before the backlog reached them; dropped only if the copy did not arrive",
            m.buffer_evicted_live_batches.clone(),
        );
        r.register(
            "buffer_write_errors",
            "Failed buffer writes (e.g. disk full); those cycles are lost",
            m.buffer_write_errors.clone(),
        );
        r.register(
            "buffer_damaged_batches",
            "Buffered batches found damaged on disk and skipped",
            m.buffer_damaged_batches.clone(),
        );
        r.register(
            "buffer_write_failing",
            "1 while buffer writes fail (e.g. disk full); collected cycles are being lost",
            m.buffer_write_failing.clone(),
        );
        r.register(
            "batches_sent",
            "Batches written to the aggregator connection (resends included)",
            m.batches_sent.clone(),
        );
        r.register(
            "batches_sent_live",
            "Copies of new batches sent on the live stream while a backlog drains",
            m.batches_sent_live.clone(),
        );
        r.register(
            "samples_sent",
            "Samples written to the aggregator connection (resends included)",
            m.samples_sent.clone(),
        );
        r.register(
            "batches_acked",
            "Batches the aggregator acknowledged as durable",
            m.batches_acked.clone(),
        );
        r.register(
            "uplink_connected",
            "1 while a session with the aggregator is established",
            m.uplink_connected.clone(),
        );
        r.register(
            "uplink_reconnects",
            "Connection attempts after the first",
            m.uplink_reconnects.clone(),
        );
        r.register(
            "uplink_failbacks",
            "Moves back to the first of several endpoints once it answered again",
            m.uplink_failbacks.clone(),
        );
        r.register_with_unit(
            "uplink_sent",
            "UDP bytes sent to the aggregator",
            Unit::Bytes,
            m.uplink_bytes_sent.clone(),
        );
        r.register_with_unit(
            "uplink_received",
            "UDP bytes received from the aggregator",
            Unit::Bytes,
            m.uplink_bytes_received.clone(),
        );
        r.register_with_unit(
            "clock_skew",
            "Agent clock minus aggregator clock at the last handshake",
            Unit::Seconds,
            m.clock_skew.clone(),
        );
        m.reload.register(&mut r);
        let now = outpost_service::now_ms();
        m.process.register(&mut r, "agent", now);
        m.reload.succeeded(now);
        r.register(
            "samples_received",
            "Scraped and pushed samples put in the buffer, by source",
            m.samples_received.clone(),
        );
        r.register(
            "push_requests",
            "Push requests by format and HTTP status code",
            m.push_requests.clone(),
        );
        r.register(
            "scrape_duplicate_samples",
            "Scraped samples dropped because their series already had a sample at that timestamp in the same scrape (the first is kept)",
            m.scrape_duplicate_samples.clone(),
        );
        r.register(
            "checks_running",
            "Synthetic checks this agent runs: its local ones plus those assigned to it",
            m.checks_running.clone(),
        );
        r.register(
            "check_runs",
            "Synthetic check runs by check and result (success or failure)",
            m.check_runs.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// Brings buffer gauges and persisted totals up to date.
    pub fn observe_buffer(&self, s: &BufferStats, now_ms: i64) {
        self.buffer_bytes.set(s.bytes as i64);
        self.buffer_batches.set(s.batches as i64);
        self.buffer_oldest_age.set(
            s.oldest_ts
                .map(|t| (now_ms - t).max(0) as f64 / 1000.0)
                .unwrap_or(0.0),
        );
        advance(&self.cycles, s.cycles);
        advance(&self.buffer_dropped_samples, s.dropped_samples);
        advance(&self.buffer_dropped_batches, s.dropped_batches);
        advance(&self.buffer_damaged_batches, s.damaged_batches);
        advance(&self.buffer_evicted_live_batches, s.evicted_live_batches);
        self.buffer_write_failing
            .set(i64::from(s.write_error.is_some()));
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Moves a counter forward to a persisted total (never back).
pub fn advance(c: &Counter, total: u64) {
    let cur = c.get();
    if total > cur {
        c.inc_by(total - cur);
    }
}
