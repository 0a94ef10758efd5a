//! `outpost-loadgen`: many simulated agents in one process, against one running aggregator,
//! over the real wire protocol and mutual TLS. It measures what one aggregator holds:
//! connections, samples per second durably ingested (acknowledged), ack latency, the
//! aggregator's CPU per sample and memory per connected agent, and, with `--storm-marks`,
//! how long all agents take to be welcomed again after the aggregator is killed and
//! restarted. See `scripts/bench-load` and docs/BENCHMARKS.md.
//!
//! Each agent is one tokio task with its own client certificate (issued from `--certs` on
//! first use and kept there), its own QUIC connection (many connections share each of
//! `--endpoints` UDP sockets), and the agent's own `ClientSession` driven through
//! `outpost_tests::sim::Link`: hello → welcome, heartbeats and the liveness promise, a batch
//! stream with one codec context per connection, a window of unacknowledged batches. Once
//! welcomed, it makes one batch per `--interval` (its phase random within the interval):
//! `--series` node_exporter-like series, counters increasing and gauges wandering, with
//! `--churn` of them replaced by new label sets (a container's network device or pod
//! changing). Batches wait in memory until acknowledged and are sent again on the next
//! connection; a lost connection is retried with the agent's backoff (200 ms doubling to
//! 30 s, jittered).

#![recursion_limit = "256"]

use anyhow::{Context, Result, bail};
use outpost_agent::uplink::{WINDOW, backoff};
use outpost_service::now_ms;
use outpost_shared::codec::Encoder;
use outpost_shared::frame::{self, Frame, close};
use outpost_shared::session::{BufferState, ClientConfig, ClientEvent, ClientSession};
use outpost_shared::tls::install_crypto_provider;
use outpost_shared::units;
use outpost_shared::{Batch, Labels, Point, SeriesPoints};
use outpost_tests::sim::{
    self, BatchSource, Link, Opts, clk_tck, cpu_s, rss_kb, sys_busy, thread_cpu,
};
use quinn::Endpoint;
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

const USAGE: &str = "\
outpost-loadgen: N simulated agents over QUIC + mTLS against one running aggregator.

usage: outpost-loadgen --quic ADDR --certs DIR [options]

  --quic ADDR            the aggregator's QUIC address (IP:port)
  --certs DIR            CA folder (ca.crt, ca.key, as `outpost-aggregator certs init` writes);
                         agents' certificates are issued into DIR/agents on first use and reused
  --agents N             simulated agents (default 100)
  --series S             series per agent, i.e. samples per batch (default 100)
  --interval DURATION    collection interval: one batch per agent per interval (default 10s)
  --duration DURATION    measured window, after every agent is connected (default 60s)
  --ramp DURATION        connects spread evenly over this time (default 10s)
  --churn F              share of series replaced by new label sets per hour (0.1), or per
                         cycle with a suffix (0.01/cycle) (default 0.1)
  --pid PID              the aggregator's pid: its CPU (/proc/PID/stat) over the window and its
                         RSS (/proc/PID/status) before connecting and during the window
  --endpoints E          UDP sockets the connections are spread over (default 4)
  --window W             batches in flight per agent, at most (default: the agent's, 256)
  --id-prefix P          agent ids are P-00000, P-00001, ... (default sim)
  --region R             region sent in the hello (default load)
  --server-name NAME     TLS name of the aggregator (default localhost)
  --settle DURATION      after the ramp, wait at most this long for every agent's welcome
                         before measuring anyway (default 60s)
  --storm-marks DIR      reconnect storm, after the window: write DIR/ready, wait for DIR/killed
                         (ms since the epoch when the aggregator was killed; DIR/restarted: when
                         the new one answered), then time until every agent is welcomed again
  --storm-timeout DURATION  give up waiting for the storm after this long (default 180s)

Prints one JSON object on stdout, progress and a summary on stderr. Durations: 500ms, 10s, 5m.";

struct Args {
    quic: SocketAddr,
    certs: PathBuf,
    agents: usize,
    series: usize,
    interval: Duration,
    duration: Duration,
    ramp: Duration,
    /// Probability that one series is replaced in one cycle.
    churn_per_cycle: f64,
    churn_text: String,
    pid: Option<u32>,
    endpoints: usize,
    window: u64,
    id_prefix: String,
    region: String,
    server_name: String,
    settle: Duration,
    storm_marks: Option<PathBuf>,
    storm_timeout: Duration,
}

fn parse_args() -> Result<Args> {
    let mut o = Opts::from_env(USAGE)?;
    let dur = |o: &mut Opts, k: &str, d: u64| -> Result<Duration> {
        Ok(o.parse::<units::Duration>(k)?
            .map(|d| d.get())
            .unwrap_or(Duration::from_secs(d)))
    };
    let interval = dur(&mut o, "interval", 10)?;
    let churn_text = o.take("churn").unwrap_or_else(|| "0.1".into());
    let churn_per_cycle = match churn_text.strip_suffix("/cycle") {
        Some(f) => f.trim().parse::<f64>().context("--churn")?,
        None => {
            let per_hour: f64 = churn_text
                .strip_suffix("/h")
                .unwrap_or(&churn_text)
                .trim()
                .parse()
                .context("--churn: a fraction per hour (0.1) or per cycle (0.01/cycle)")?;
            per_hour * interval.as_secs_f64() / 3600.0
        }
    };
    let a = Args {
        quic: o.require("quic")?,
        certs: o
            .take("certs")
            .context("--certs is required (a folder with ca.crt and ca.key)")?
            .into(),
        agents: o.parse("agents")?.unwrap_or(100),
        series: o.parse("series")?.unwrap_or(100),
        interval,
        duration: dur(&mut o, "duration", 60)?,
        ramp: dur(&mut o, "ramp", 10)?,
        churn_per_cycle,
        churn_text,
        pid: o.parse("pid")?,
        endpoints: o.parse("endpoints")?.unwrap_or(4),
        window: o.parse("window")?.unwrap_or(WINDOW),
        id_prefix: o.take("id-prefix").unwrap_or_else(|| "sim".into()),
        region: o.take("region").unwrap_or_else(|| "load".into()),
        server_name: o.take("server-name").unwrap_or_else(|| "localhost".into()),
        settle: dur(&mut o, "settle", 60)?,
        storm_marks: o.take("storm-marks").map(PathBuf::from),
        storm_timeout: dur(&mut o, "storm-timeout", 180)?,
    };
    o.finish()?;
    if a.agents == 0 || a.series == 0 || a.endpoints == 0 || a.window == 0 {
        bail!("--agents, --series, --endpoints and --window must be at least 1");
    }
    if a.interval < Duration::from_millis(100) {
        bail!("--interval must be at least 100ms");
    }
    if !(0.0..=1.0).contains(&a.churn_per_cycle) {
        bail!("--churn: at most every series once per cycle");
    }
    Ok(a)
}

// ---- what the agents report

/// Latencies in µs: 10 µs buckets below 100 ms, 1 ms buckets below 10 s, 100 ms buckets
/// above (up to 10 min; longer ones land in the last bucket).
struct Histogram {
    buckets: Vec<AtomicU64>,
    max_us: AtomicU64,
}

const FINE: u64 = 10_000; // 10 µs × 10,000 = 100 ms
const MEDIUM: u64 = 9_900; // 1 ms buckets from 100 ms to 10 s
const COARSE: u64 = 5_900; // 100 ms buckets from 10 s to 600 s

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: (0..FINE + MEDIUM + COARSE)
                .map(|_| AtomicU64::new(0))
                .collect(),
            max_us: AtomicU64::new(0),
        }
    }
    fn record(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let i = if us < 100_000 {
            us / 10
        } else if us < 10_000_000 {
            FINE + (us - 100_000) / 1_000
        } else {
            (FINE + MEDIUM + (us - 10_000_000) / 100_000).min(FINE + MEDIUM + COARSE - 1)
        };
        self.buckets[i as usize].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }
    /// Upper bound of bucket `i`, µs.
    fn upper_us(i: u64) -> u64 {
        if i < FINE {
            (i + 1) * 10
        } else if i < FINE + MEDIUM {
            100_000 + (i - FINE + 1) * 1_000
        } else {
            10_000_000 + (i - FINE - MEDIUM + 1) * 100_000
        }
    }
    fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }
    /// The `q` quantile, ms (a bucket's upper bound, never above the maximum seen).
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                let us = Self::upper_us(i as u64).min(self.max_us.load(Ordering::Relaxed));
                return Some(us as f64 / 1000.0);
            }
        }
        None
    }
}

/// Counters every agent task adds to.
struct Stats {
    /// Acks and samples count only while this is set (the measured window).
    measuring: AtomicBool,
    connected: AtomicI64,
    ever_welcomed: AtomicU64,
    connect_attempts: AtomicU64,
    connect_failures: AtomicU64,
    disconnects: AtomicU64,
    produced_samples: AtomicU64,
    acked_samples: AtomicU64,
    acked_batches: AtomicU64,
    dropped_batches: AtomicU64,
    latency: Histogram,
    /// Per agent: when it was last welcomed and when its last connection ended, ms since
    /// the epoch (0: never).
    welcome_ms: Vec<AtomicI64>,
    lost_ms: Vec<AtomicI64>,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    fn new(agents: usize) -> Stats {
        Stats {
            measuring: AtomicBool::new(false),
            connected: AtomicI64::new(0),
            ever_welcomed: AtomicU64::new(0),
            connect_attempts: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            produced_samples: AtomicU64::new(0),
            acked_samples: AtomicU64::new(0),
            acked_batches: AtomicU64::new(0),
            dropped_batches: AtomicU64::new(0),
            latency: Histogram::new(),
            welcome_ms: (0..agents).map(|_| AtomicI64::new(0)).collect(),
            lost_ms: (0..agents).map(|_| AtomicI64::new(0)).collect(),
            errors: Mutex::new(BTreeMap::new()),
        }
    }
    fn measuring(&self) -> bool {
        self.measuring.load(Ordering::Relaxed)
    }
    /// Counts an error by its message with digits blanked, so alike errors add up.
    fn error(&self, e: &anyhow::Error) {
        let text: String = format!("{e:#}")
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .take(160)
            .collect();
        let mut m = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() < 100 || m.contains_key(&text) {
            *m.entry(text).or_default() += 1;
        }
    }
}

// ---- one simulated agent's data

/// node_exporter-like families: (name, the label that tells series apart, its value's
/// prefix, counter?). The distinguishing label is the one churn replaces.
const FAMILIES: &[(&str, &str, &str, bool)] = &[
    ("node_cpu_seconds_total", "cpu", "", true),
    ("node_network_receive_bytes_total", "device", "veth", true),
    ("node_network_transmit_bytes_total", "device", "veth", true),
    ("node_disk_written_bytes_total", "device", "nvme0n", true),
    (
        "node_filesystem_avail_bytes",
        "mountpoint",
        "/var/lib/kubelet/pods/",
        false,
    ),
    ("container_memory_working_set_bytes", "pod", "web-", false),
    ("container_cpu_usage_seconds_total", "pod", "web-", true),
    ("node_hwmon_temp_celsius", "sensor", "temp", false),
];

/// A batch made and not yet acknowledged.
struct Pending {
    seq: u64,
    ts: i64,
    values: Vec<f64>,
    /// Series whose labels were replaced after this batch was made: (index, its labels
    /// then), swapped in while this batch is encoded.
    old_labels: Vec<(usize, Labels)>,
    sent_at: Option<Instant>,
}

/// One agent's series, its batches in memory (its "buffer") and their seqs.
struct SimAgent {
    id: String,
    region: String,
    /// The current label sets with one point each; reused for every batch.
    scratch: Batch,
    counter: Vec<bool>,
    values: Vec<f64>,
    generation: Vec<u32>,
    pending: VecDeque<Pending>,
    next_seq: u64,
    acked: u64,
    churn: f64,
    rng: fastrand::Rng,
    frame: Vec<u8>,
}

/// Batches an agent keeps while it cannot send: one hour at 10 s (older ones are dropped,
/// as a full agent buffer drops its oldest).
const MAX_PENDING: usize = 360;

impl SimAgent {
    fn new(id: String, region: &str, series: usize, churn: f64, seed: u64) -> SimAgent {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut a = SimAgent {
            id,
            region: region.to_string(),
            scratch: Batch { series: vec![] },
            counter: vec![],
            values: vec![],
            generation: vec![0; series],
            pending: VecDeque::new(),
            next_seq: 1,
            acked: 0,
            churn,
            rng: fastrand::Rng::new(),
            frame: vec![],
        };
        for i in 0..series {
            let (_, _, _, counter) = FAMILIES[i % FAMILIES.len()];
            a.counter.push(counter);
            a.values.push(if counter {
                rng.f64() * 1e6
            } else {
                rng.f64() * 1e9
            });
            let labels = a.labels(i);
            a.scratch.series.push(SeriesPoints {
                labels,
                points: vec![Point { ts: 0, value: 0.0 }],
            });
        }
        a.rng = rng;
        a
    }

    fn labels(&self, i: usize) -> Labels {
        let (name, label, prefix, _) = FAMILIES[i % FAMILIES.len()];
        let n = i / FAMILIES.len();
        let value = match self.generation[i] {
            0 => format!("{prefix}{n}"),
            g => format!(
                "{prefix}{n}-{:08x}",
                (g as u64).wrapping_mul(0x9e37_79b9) as u32
            ),
        };
        Labels::new([
            ("__name__", name),
            ("agent", self.id.as_str()),
            ("region", self.region.as_str()),
            (label, value.as_str()),
        ])
    }

    /// One collection cycle at `ts`: values move, churn replaces some series, and a new
    /// batch joins the buffer (the oldest is dropped when it is full).
    fn cycle(&mut self, ts: i64, st: &Stats) {
        for i in 0..self.values.len() {
            if self.churn > 0.0 && self.rng.f64() < self.churn {
                self.generation[i] += 1;
                let mut labels = self.labels(i);
                std::mem::swap(&mut labels, &mut self.scratch.series[i].labels);
                for p in self.pending.iter_mut() {
                    if !p.old_labels.iter().any(|(j, _)| *j == i) {
                        p.old_labels.push((i, labels.clone()));
                    }
                }
                self.values[i] = 0.0;
            }
            let v = &mut self.values[i];
            if self.counter[i] {
                *v += self.rng.f64() * 1000.0;
            } else {
                *v = (*v + (self.rng.f64() - 0.5) * 1e6).max(0.0);
            }
        }
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
            st.dropped_batches.fetch_add(1, Ordering::Relaxed);
        }
        self.pending.push_back(Pending {
            seq: self.next_seq,
            ts,
            values: self.values.clone(),
            old_labels: vec![],
            sent_at: None,
        });
        self.next_seq += 1;
        if st.measuring() {
            st.produced_samples
                .fetch_add(self.values.len() as u64, Ordering::Relaxed);
        }
    }

    /// Everything up to `seq` is durable: forget it; with `sent`, count it and its latency.
    fn acked(&mut self, seq: u64, sent: bool, st: &Stats) {
        self.acked = self.acked.max(seq);
        let measuring = st.measuring();
        while self.pending.front().is_some_and(|p| p.seq <= seq) {
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            if measuring {
                st.acked_samples
                    .fetch_add(p.values.len() as u64, Ordering::Relaxed);
                st.acked_batches.fetch_add(1, Ordering::Relaxed);
                if let (true, Some(t)) = (sent, p.sent_at) {
                    st.latency.record(t.elapsed());
                }
            }
        }
    }

    /// A welcome: what the aggregator already applied is durable. On the first welcome of
    /// this process an aggregator that knows these ids from an earlier run may be further
    /// on; the seqs continue from there.
    fn welcomed(&mut self, applied_seq: u64, st: &Stats) {
        self.acked(applied_seq, false, st);
        if self.pending.is_empty() && self.next_seq <= applied_seq {
            self.next_seq = applied_seq + 1;
        }
    }

    fn buffer_state(&self) -> BufferState {
        BufferState {
            next_seq: self.next_seq,
            acked_seq: self.acked,
            ..BufferState::default()
        }
    }
}

impl BatchSource for SimAgent {
    fn frame(&mut self, seq: u64, enc: &mut Encoder) -> Option<&[u8]> {
        let first = self.pending.front()?.seq;
        let p = self
            .pending
            .get_mut(usize::try_from(seq.checked_sub(first)?).ok()?)?;
        for (s, &v) in self.scratch.series.iter_mut().zip(&p.values) {
            s.points[0] = Point { ts: p.ts, value: v };
        }
        for (i, l) in p.old_labels.iter_mut() {
            std::mem::swap(&mut self.scratch.series[*i].labels, l);
        }
        let payload = enc.encode(&self.scratch);
        for (i, l) in p.old_labels.iter_mut() {
            std::mem::swap(&mut self.scratch.series[*i].labels, l);
        }
        p.sent_at = Some(Instant::now());
        self.frame = frame::encode(&Frame::Batch {
            seq,
            payload,
            trace: None,
        });
        Some(&self.frame)
    }
    fn end(&self) -> u64 {
        self.next_seq
    }
}

// ---- one simulated agent's task

struct Plan {
    quic: SocketAddr,
    server_name: String,
    interval: Duration,
    window: u64,
}

enum Wake {
    Tick,
    Stop,
}

/// Waits for the next cycle (never before the first welcome) or the stop signal.
async fn tick_or_stop(
    ticker: &mut Option<tokio::time::Interval>,
    stop: &mut watch::Receiver<bool>,
) -> Wake {
    let tick = async {
        match ticker {
            Some(t) => {
                t.tick().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tick => Wake::Tick,
        _ = stop.wait_for(|s| *s) => Wake::Stop,
    }
}

/// One agent: connects (after `start`), keeps its session going, reconnects with the
/// agent's backoff, and makes a batch every interval once first welcomed, until `stop`.
#[allow(clippy::too_many_arguments)]
async fn run_agent(
    i: usize,
    mut agent: SimAgent,
    cfg: quinn::ClientConfig,
    ep: Endpoint,
    plan: Arc<Plan>,
    st: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
    start: tokio::time::Instant,
) {
    tokio::select! {
        _ = tokio::time::sleep_until(start) => {}
        _ = stop.wait_for(|s| *s) => return,
    }
    let mut session = ClientSession::new(
        ClientConfig {
            window: plan.window,
            ..ClientConfig::new(&agent.id, &agent.region, env!("CARGO_PKG_VERSION"))
        },
        agent.buffer_state(),
    );
    let mut ticker: Option<tokio::time::Interval> = None;
    let mut attempt = 0u32;
    loop {
        st.connect_attempts.fetch_add(1, Ordering::Relaxed);
        let mut established = false;
        let r = match sim::connect(
            &ep,
            cfg.clone(),
            plan.quic,
            &plan.server_name,
            Duration::from_secs(10),
        )
        .await
        {
            Ok(conn) => {
                let r = drive(
                    i,
                    conn,
                    &mut agent,
                    &mut session,
                    &mut ticker,
                    &mut stop,
                    &plan,
                    &st,
                    &mut established,
                )
                .await;
                session.handle_connection_lost();
                if established {
                    st.connected.fetch_sub(1, Ordering::Relaxed);
                    st.lost_ms[i].store(now_ms(), Ordering::Relaxed);
                    if st.measuring() {
                        st.disconnects.fetch_add(1, Ordering::Relaxed);
                    }
                }
                r
            }
            Err(e) => {
                st.connect_failures.fetch_add(1, Ordering::Relaxed);
                Err(e.context("connect"))
            }
        };
        match r {
            Ok(()) => return,
            Err(e) => st.error(&e),
        }
        if established {
            attempt = 0;
        }
        let delay = backoff(
            attempt,
            Duration::from_millis(200),
            Duration::from_secs(30),
            fastrand::f64(),
        );
        attempt = attempt.saturating_add(1);
        let until = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                w = tick_or_stop(&mut ticker, &mut stop) => match w {
                    Wake::Tick => agent.cycle(now_ms(), &st),
                    Wake::Stop => return,
                },
            }
        }
        session.handle_buffer(agent.buffer_state());
    }
}

/// One connection: `Ok` when stopped, an error when the connection ended otherwise.
#[allow(clippy::too_many_arguments)]
async fn drive(
    i: usize,
    conn: quinn::Connection,
    agent: &mut SimAgent,
    session: &mut ClientSession,
    ticker: &mut Option<tokio::time::Interval>,
    stop: &mut watch::Receiver<bool>,
    plan: &Plan,
    st: &Stats,
    established: &mut bool,
) -> Result<()> {
    let mut link = Link::open(conn, session).await?;
    loop {
        while let Some(e) = session.poll_event() {
            match e {
                ClientEvent::Connected { applied_seq, .. } => {
                    agent.welcomed(applied_seq, st);
                    session.handle_buffer(agent.buffer_state());
                    *established = true;
                    st.connected.fetch_add(1, Ordering::Relaxed);
                    if st.welcome_ms[i].swap(now_ms(), Ordering::Relaxed) == 0 {
                        st.ever_welcomed.fetch_add(1, Ordering::Relaxed);
                    }
                    if ticker.is_none() {
                        // Real agents are not in step: each starts at its own phase.
                        let phase = plan.interval.mul_f64(fastrand::f64());
                        let mut t = tokio::time::interval_at(
                            tokio::time::Instant::now() + phase,
                            plan.interval,
                        );
                        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        *ticker = Some(t);
                    }
                }
                ClientEvent::Acked { seq, .. } => agent.acked(seq, true, st),
                _ => {}
            }
        }
        link.transmit(session, agent).await?;
        match link.wait(session, tick_or_stop(ticker, stop)).await? {
            Some(Wake::Tick) => {
                agent.cycle(now_ms(), st);
                session.handle_buffer(agent.buffer_state());
            }
            Some(Wake::Stop) => {
                link.close(close::SHUTDOWN, b"load generator done");
                return Ok(());
            }
            None => {}
        }
    }
}

// ---- the run

/// UDP counters of the machine (`/proc/net/snmp`): InErrors, RcvbufErrors, SndbufErrors.
fn udp_errors() -> (u64, u64, u64) {
    let s = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = s.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(h), Some(v)) = (lines.next(), lines.next()) else {
        return (0, 0, 0);
    };
    let m: BTreeMap<&str, u64> = h
        .split_whitespace()
        .zip(v.split_whitespace())
        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
        .collect();
    let g = |k| m.get(k).copied().unwrap_or(0);
    (g("InErrors"), g("RcvbufErrors"), g("SndbufErrors"))
}

/// CPU per thread name between two [`thread_cpu`] readings, busiest first: name, threads,
/// cores (all its threads), the busiest single thread's cores.
fn threads_between(
    before: &[(u64, String, f64)],
    after: &[(u64, String, f64)],
    wall: f64,
) -> Value {
    let mut by_name: BTreeMap<&str, (u64, f64, f64)> = BTreeMap::new();
    for (tid, name, s1) in after {
        let s0 = before
            .iter()
            .find(|(t, _, _)| t == tid)
            .map(|x| x.2)
            .unwrap_or(0.0);
        let e = by_name.entry(name.as_str()).or_default();
        e.0 += 1;
        e.1 += s1 - s0;
        e.2 = e.2.max(s1 - s0);
    }
    let mut v: Vec<_> = by_name.into_iter().collect();
    v.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
    v.iter()
        .take(8)
        .map(|(name, (n, s, max))| {
            json!({"name": name, "threads": n, "cores": r2(s / wall), "busiest_thread_cores": r2(max / wall)})
        })
        .collect()
}

/// Reads a mark file the storm script writes: ms since the epoch.
fn read_mark(dir: &std::path::Path, name: &str) -> Option<i64> {
    std::fs::read_to_string(dir.join(name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn quantile(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The reconnect storm: waits for the kill mark, then until every agent is welcomed after
/// it (or the timeout). Returns its report.
async fn storm(a: &Args, dir: &std::path::Path, st: &Stats) -> Result<Value> {
    std::fs::write(dir.join("ready"), now_ms().to_string())
        .with_context(|| format!("write {}", dir.join("ready").display()))?;
    eprintln!(
        "storm: {} agents connected; waiting for {}",
        st.connected.load(Ordering::Relaxed),
        dir.join("killed").display()
    );
    let waited = Instant::now();
    let killed = loop {
        if let Some(k) = read_mark(dir, "killed") {
            break k;
        }
        if waited.elapsed() > Duration::from_secs(600) {
            bail!("no {} within 10 minutes", dir.join("killed").display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let n = a.agents;
    let deadline = Instant::now() + a.storm_timeout;
    let mut last_print = Instant::now();
    let attempts0 = st.connect_attempts.load(Ordering::Relaxed);
    let failures0 = st.connect_failures.load(Ordering::Relaxed);
    let back = |st: &Stats| {
        st.welcome_ms
            .iter()
            .filter(|w| w.load(Ordering::Relaxed) > killed)
            .count()
    };
    while back(st) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if last_print.elapsed() > Duration::from_secs(5) {
            last_print = Instant::now();
            let lost = st
                .lost_ms
                .iter()
                .filter(|l| l.load(Ordering::Relaxed) > killed)
                .count();
            eprintln!(
                "storm: +{:.0} s: {lost} agents noticed the loss, {} welcomed again",
                (now_ms() - killed) as f64 / 1000.0,
                back(st)
            );
        }
    }
    let restarted = read_mark(dir, "restarted");
    let mut detect: Vec<f64> = vec![];
    let mut welcome: Vec<f64> = vec![];
    let mut rejoin: Vec<f64> = vec![];
    for (w, l) in st.welcome_ms.iter().zip(&st.lost_ms) {
        let (w, l) = (w.load(Ordering::Relaxed), l.load(Ordering::Relaxed));
        if l > killed {
            detect.push((l - killed) as f64 / 1000.0);
        }
        if w > killed {
            welcome.push((w - killed) as f64 / 1000.0);
        }
        if l > killed && w > l {
            rejoin.push((w - l) as f64 / 1000.0);
        }
    }
    let all = welcome.len() == n;
    let last = welcome.iter().copied().fold(f64::NAN, f64::max);
    let after_restart = restarted.map(|r| (r - killed) as f64 / 1000.0);
    Ok(json!({
        "agents": n,
        "welcomed_again": welcome.len(),
        "all_back": all,
        "restart_ready_after_kill_s": after_restart.map(r2),
        "all_back_after_kill_s": all.then(|| r2(last)),
        "all_back_after_restart_s": all.then_some(()).and(after_restart).map(|r| r2(last - r)),
        "loss_noticed_after_kill_s": {
            "p50": quantile(&mut detect, 0.5).map(r2),
            "max": quantile(&mut detect, 1.0).map(r2),
            "agents": detect.len(),
        },
        "welcomed_after_loss_noticed_s": {
            "p50": quantile(&mut rejoin, 0.5).map(r2),
            "p99": quantile(&mut rejoin, 0.99).map(r2),
            "max": quantile(&mut rejoin, 1.0).map(r2),
        },
        "welcomed_after_kill_s": {
            "p50": quantile(&mut welcome, 0.5).map(r2),
            "p99": quantile(&mut welcome, 0.99).map(r2),
            "max": quantile(&mut welcome, 1.0).map(r2),
        },
        "connect_attempts": st.connect_attempts.load(Ordering::Relaxed) - attempts0,
        "connect_failures": st.connect_failures.load(Ordering::Relaxed) - failures0,
    }))
}

fn main() -> Result<()> {
    let a = parse_args()?;
    install_crypto_provider();
    let ids: Vec<String> = (0..a.agents)
        .map(|i| format!("{}-{i:05}", a.id_prefix))
        .collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let t = Instant::now();
    let issued = sim::issue_missing(&a.certs, &ids, threads)?;
    let cfgs = ids
        .iter()
        .map(|id| sim::quic_client(&a.certs, id))
        .collect::<Result<Vec<_>>>()?;
    eprintln!(
        "{} agents: {issued} certificates issued, {} reused, configs loaded in {:.1} s",
        a.agents,
        a.agents - issued,
        t.elapsed().as_secs_f64()
    );
    let hz = clk_tck();
    let pid = a.pid.map(|p| p.to_string());
    let agg_cpu = |pid: &Option<String>| pid.as_ref().and_then(|p| cpu_s(p, hz).ok());
    let agg_rss = |pid: &Option<String>| pid.as_ref().map(|p| rss_kb(p));
    let rss_idle = agg_rss(&pid);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let st = Arc::new(Stats::new(a.agents));
    let report = rt.block_on(async {
        let eps = (0..a.endpoints)
            .map(|_| sim::client_endpoint())
            .collect::<Result<Vec<_>>>()?;
        let plan = Arc::new(Plan {
            quic: a.quic,
            server_name: a.server_name.clone(),
            interval: a.interval,
            window: a.window,
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let t0 = tokio::time::Instant::now();
        let mut tasks = Vec::with_capacity(a.agents);
        for (i, (id, cfg)) in ids.iter().zip(cfgs).enumerate() {
            let agent = SimAgent::new(
                id.clone(),
                &a.region,
                a.series,
                a.churn_per_cycle,
                i as u64 * 7919 + 1,
            );
            let start = t0 + a.ramp.mul_f64(i as f64 / a.agents as f64);
            tasks.push(tokio::spawn(run_agent(
                i,
                agent,
                cfg,
                eps[i % eps.len()].clone(),
                plan.clone(),
                st.clone(),
                stop_rx.clone(),
                start,
            )));
        }
        // Connect: the ramp, then until every agent is welcomed (at most --settle more).
        let settle_end = t0 + a.ramp + a.settle;
        let mut last_print = Instant::now();
        loop {
            let c = st.connected.load(Ordering::Relaxed);
            let now = tokio::time::Instant::now();
            if (now >= t0 + a.ramp && c as usize >= a.agents) || now >= settle_end {
                break;
            }
            if last_print.elapsed() >= Duration::from_secs(5) {
                last_print = Instant::now();
                eprintln!(
                    "connecting: {c}/{} welcomed after {:.0} s (connect failures {})",
                    a.agents,
                    t0.elapsed().as_secs_f64(),
                    st.connect_failures.load(Ordering::Relaxed)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let connect_s = t0.elapsed().as_secs_f64();
        let connected_before = st.connected.load(Ordering::Relaxed);
        eprintln!(
            "{connected_before}/{} agents welcomed after {connect_s:.1} s; warming up for one interval",
            a.agents
        );
        // One interval for every agent's first cycles, then the window.
        tokio::time::sleep(a.interval).await;
        let (c0, me0, b0, u0) = (agg_cpu(&pid), cpu_s("self", hz)?, sys_busy(), udp_errors());
        let agg_threads0 = pid.as_deref().map(|p| thread_cpu(p, hz)).unwrap_or_default();
        let me_threads0 = thread_cpu("self", hz);
        let w0 = Instant::now();
        let w0_ms = now_ms();
        st.measuring.store(true, Ordering::Relaxed);
        let connected_start = st.connected.load(Ordering::Relaxed);
        let mut rss_peak = 0u64;
        let mut prev = (0u64, Instant::now());
        while w0.elapsed() < a.duration {
            tokio::time::sleep(Duration::from_secs(1).min(a.duration)).await;
            if let Some(r) = agg_rss(&pid) {
                rss_peak = rss_peak.max(r);
            }
            if prev.1.elapsed() >= Duration::from_secs(10) {
                let acked = st.acked_samples.load(Ordering::Relaxed);
                eprintln!(
                    "+{:>4.0} s: {} connected, {:.0} samples/s acked, ack p50 {:.1} ms p99 {:.1} ms max {:.1} ms, disconnects {}, aggregator RSS {} MiB",
                    w0.elapsed().as_secs_f64(),
                    st.connected.load(Ordering::Relaxed),
                    (acked - prev.0) as f64 / prev.1.elapsed().as_secs_f64(),
                    st.latency.quantile_ms(0.5).unwrap_or(0.0),
                    st.latency.quantile_ms(0.99).unwrap_or(0.0),
                    st.latency.max_us.load(Ordering::Relaxed) as f64 / 1000.0,
                    st.disconnects.load(Ordering::Relaxed),
                    agg_rss(&pid).unwrap_or(0) / 1024,
                );
                prev = (acked, Instant::now());
            }
        }
        st.measuring.store(false, Ordering::Relaxed);
        let wall = w0.elapsed().as_secs_f64();
        let (c1, me1, b1, u1) = (agg_cpu(&pid), cpu_s("self", hz)?, sys_busy(), udp_errors());
        let agg_threads = pid
            .as_deref()
            .map(|p| threads_between(&agg_threads0, &thread_cpu(p, hz), wall));
        let me_threads = threads_between(&me_threads0, &thread_cpu("self", hz), wall);
        let rss_end = agg_rss(&pid);
        let connected_end = st.connected.load(Ordering::Relaxed);
        // Held: connected now, and welcomed on this connection before the window began.
        let held = st
            .welcome_ms
            .iter()
            .zip(&st.lost_ms)
            .filter(|(w, l)| {
                let (w, l) = (w.load(Ordering::Relaxed), l.load(Ordering::Relaxed));
                w > 0 && w <= w0_ms && l < w
            })
            .count();
        let acked = st.acked_samples.load(Ordering::Relaxed);
        let produced = st.produced_samples.load(Ordering::Relaxed);
        let expected = a.agents as f64 * a.series as f64 / a.interval.as_secs_f64();
        let agg_cpu_s = c0.zip(c1).map(|(c0, c1)| c1 - c0);
        let rss_per_agent = rss_end.zip(rss_idle).and_then(|(e, i)| {
            (connected_end > 0).then(|| (e as f64 - i as f64) / connected_end as f64)
        });
        let lat = &st.latency;
        let storm_report = match &a.storm_marks {
            Some(dir) => Some(storm(&a, dir, &st).await?),
            None => None,
        };
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            for t in tasks {
                let _ = t.await;
            }
        })
        .await;
        for ep in &eps {
            let _ = tokio::time::timeout(Duration::from_secs(2), ep.wait_idle()).await;
        }
        let errors: BTreeMap<String, u64> = st
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok::<Value, anyhow::Error>(json!({
            "agents": a.agents,
            "series_per_agent": a.series,
            "interval_s": a.interval.as_secs_f64(),
            "duration_s": r2(wall),
            "ramp_s": a.ramp.as_secs_f64(),
            "churn": a.churn_text,
            "churn_per_cycle": a.churn_per_cycle,
            "endpoints": a.endpoints,
            "connect_s": r2(connect_s),
            "agents_welcomed_before_window": connected_before,
            "agents_ever_welcomed": st.ever_welcomed.load(Ordering::Relaxed),
            "agents_connected_window_start": connected_start,
            "agents_connected_window_end": connected_end,
            "agents_held": held,
            "agents_failed": a.agents - held,
            "disconnects_in_window": st.disconnects.load(Ordering::Relaxed),
            "connect_attempts": st.connect_attempts.load(Ordering::Relaxed),
            "connect_failures": st.connect_failures.load(Ordering::Relaxed),
            "expected_samples_per_s": expected.round(),
            "samples_per_s_produced": (produced as f64 / wall).round(),
            "samples_per_s_acked": (acked as f64 / wall).round(),
            "acked_of_expected": r2(acked as f64 / wall / expected * 100.0) / 100.0,
            "samples_acked": acked,
            "batches_acked": st.acked_batches.load(Ordering::Relaxed),
            "batches_dropped": st.dropped_batches.load(Ordering::Relaxed),
            "ack_latency_ms": {
                "count": lat.count(),
                "p50": lat.quantile_ms(0.5),
                "p90": lat.quantile_ms(0.9),
                "p99": lat.quantile_ms(0.99),
                "max": lat.count().gt(&0).then(|| lat.max_us.load(Ordering::Relaxed) as f64 / 1000.0),
            },
            "agg_pid": a.pid,
            "agg_cpu_s": agg_cpu_s.map(r2),
            "agg_cpu_cores": agg_cpu_s.map(|c| r2(c / wall)),
            "agg_cpu_s_per_1m_samples": agg_cpu_s.filter(|_| acked > 0).map(|c| r2(c * 1e6 / acked as f64)),
            "agg_rss_kb_idle": rss_idle,
            "agg_rss_kb_end": rss_end,
            "agg_rss_kb_peak": a.pid.map(|_| rss_peak),
            "agg_rss_kb_per_agent": rss_per_agent.map(r2),
            "agg_threads": agg_threads,
            "loadgen_threads": me_threads,
            "loadgen_cpu_s": r2(me1 - me0),
            "loadgen_cpu_cores": r2((me1 - me0) / wall),
            "loadgen_rss_kb": rss_kb("self"),
            "machine_busy_cores": r2((b1.0 - b0.0) as f64 / hz / wall),
            "udp_in_errors": u1.0 - u0.0,
            "udp_rcvbuf_errors": u1.1 - u0.1,
            "udp_sndbuf_errors": u1.2 - u0.2,
            "errors": errors,
            "storm": storm_report,
        }))
    })?;
    rt.shutdown_timeout(Duration::from_secs(2));
    summary(&report);
    println!("{report}");
    Ok(())
}

/// The human summary on stderr.
fn summary(j: &Value) {
    let f = |v: &Value| match v {
        Value::Null => "n/a".to_string(),
        v => v.to_string(),
    };
    eprintln!("---- outpost-loadgen");
    eprintln!(
        "agents {} x {} series every {} s, window {} s: held {} (failed {}), {} disconnects, {} connect failures",
        j["agents"],
        j["series_per_agent"],
        j["interval_s"],
        j["duration_s"],
        j["agents_held"],
        j["agents_failed"],
        j["disconnects_in_window"],
        j["connect_failures"]
    );
    eprintln!(
        "samples/s acknowledged {} of {} expected ({} produced)",
        j["samples_per_s_acked"], j["expected_samples_per_s"], j["samples_per_s_produced"]
    );
    let l = &j["ack_latency_ms"];
    eprintln!(
        "ack latency ms: p50 {} p90 {} p99 {} max {} ({} batches)",
        f(&l["p50"]),
        f(&l["p90"]),
        f(&l["p99"]),
        f(&l["max"]),
        l["count"]
    );
    eprintln!(
        "aggregator: {} cores, {} CPU s per 1M samples, RSS {} KiB (idle {} KiB, {} KiB per agent)",
        f(&j["agg_cpu_cores"]),
        f(&j["agg_cpu_s_per_1m_samples"]),
        f(&j["agg_rss_kb_end"]),
        f(&j["agg_rss_kb_idle"]),
        f(&j["agg_rss_kb_per_agent"])
    );
    eprintln!(
        "loadgen: {} cores, RSS {} KiB; machine busy {} cores; UDP receive buffer errors {}",
        j["loadgen_cpu_cores"],
        j["loadgen_rss_kb"],
        j["machine_busy_cores"],
        j["udp_rcvbuf_errors"]
    );
    for (k, who) in [
        ("agg_threads", "aggregator"),
        ("loadgen_threads", "loadgen"),
    ] {
        if let Some(t) = j[k].as_array() {
            let top: Vec<String> = t
                .iter()
                .take(5)
                .map(|t| {
                    format!(
                        "{} x{} {} (busiest {})",
                        t["name"].as_str().unwrap_or("?"),
                        t["threads"],
                        t["cores"],
                        t["busiest_thread_cores"]
                    )
                })
                .collect();
            eprintln!("{who} threads, cores: {}", top.join(", "));
        }
    }
    if let Some(e) = j["errors"].as_object()
        && !e.is_empty()
    {
        for (k, v) in e.iter().take(5) {
            eprintln!("error x{v}: {k}");
        }
    }
    let s = &j["storm"];
    if !s.is_null() {
        eprintln!(
            "storm: {} of {} agents welcomed again; all back {} s after the kill, {} s after the restart answered (restart took {} s); loss noticed p50 {} s max {} s after the kill; welcomed again p50 {} s max {} s after noticing",
            s["welcomed_again"],
            s["agents"],
            f(&s["all_back_after_kill_s"]),
            f(&s["all_back_after_restart_s"]),
            f(&s["restart_ready_after_kill_s"]),
            f(&s["loss_noticed_after_kill_s"]["p50"]),
            f(&s["loss_noticed_after_kill_s"]["max"]),
            f(&s["welcomed_after_loss_noticed_s"]["p50"]),
            f(&s["welcomed_after_loss_noticed_s"]["max"])
        );
    }
}
