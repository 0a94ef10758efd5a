//! The uplink: one QUIC connection (mutual TLS) to the aggregator at a time. It sends the
//! oldest unacknowledged batches first with a window of several in flight, deletes batches
//! from the buffer only when the aggregator acknowledges them, and reconnects with
//! exponential backoff and jitter, moving to the next endpoint after a failure.
//!
//! Streams: a bidirectional control stream (hello/welcome, heartbeats and metadata out, acks and check
//! assignments in), a unidirectional batch stream whose payloads share one codec context,
//! and, while a backlog drains, a second unidirectional stream of higher priority carrying
//! copies of the newest batches. The aggregator stores those copies at once and
//! acknowledges each batch only when it arrives in order on the batch stream, so the seq
//! bookkeeping (exactly once, gaps) stays the batch stream's alone.
//!
//! The protocol's logic (handshake, window, acks, heartbeats, the live lane, the shutdown
//! grace) is `outpost_shared::session::ClientSession`; this module drives it: control frames
//! and deadlines in, frames and buffered batches out, acknowledged batches deleted.

use crate::buffer::{Buffer, BufferStats, StoredBatch};
use crate::config::Config;
use crate::metadata::MetadataRegistry;
use crate::metrics::Metrics;
use crate::status::{DrainMeter, Status};
use outpost_service::now_ms;
use outpost_service::quic::transport;
use outpost_shared::codec::Transcoder;
use outpost_shared::frame::{self, Frame, close};
use outpost_shared::session::{
    BufferState, ClientConfig, ClientError, ClientEvent, ClientSession, Transmit,
};
use quinn::{Connection, Endpoint, VarInt};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};
use tracing::Instrument;

/// How long the agent's side of a connection may hear nothing before it sends a QUIC
/// keep-alive (the aggregator's is [`outpost_service::quic::KEEP_ALIVE`], 10 s; the idle
/// timeout is 30 s on both). Longer than the aggregator's: QUIC restarts this timer on every
/// packet received, and with a 10 s collection interval the aggregator's acknowledgement of a
/// batch arrives a few milliseconds after a 10 s timer, started by the previous one, expires,
/// so a 10 s keep-alive cost a ping and its acknowledgement most cycles. The batches and the
/// session's liveness heartbeats keep the link busy in any case.
pub const KEEP_ALIVE: Duration = Duration::from_secs(20);
/// Batches written but not yet acknowledged, at most.
pub const WINDOW: u64 = 256;
const HEARTBEAT_EVERY: Duration = Duration::from_secs(15);
/// How often draining progress is logged while a backlog is sent.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// A backlog of more batches than this is "draining" (logged with progress).
const DRAINING_ABOVE: u64 = 30;
/// When more batches than this wait to be sent, each new batch also goes out at once on the
/// live stream, so current data does not wait for the backlog.
pub const LIVE_AFTER: u64 = 8;
/// Live batches sent per wake-up, at most (the newest ones).
const LIVE_BURST: u64 = 16;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// When moving back to the first endpoint, how long to wait for the batches in flight to be
/// acknowledged; what is not is sent again to the first endpoint.
const MOVE_GRACE: Duration = Duration::from_secs(5);

/// Delay before reconnect attempt `attempt` (0-based): exponential from `base`, capped at
/// `max`, scaled by a jitter factor in [0.5, 1.0) so a fleet does not reconnect in step.
pub fn backoff(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = base.saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX));
    exp.min(max).mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// What the rest of the agent can see of the uplink.
#[derive(Default)]
pub struct UplinkState {
    pub connected: AtomicBool,
    pub endpoint: Mutex<Option<String>>,
    pub last_error: Mutex<Option<String>>,
    /// Agent clock minus aggregator clock at the last handshake, ms.
    pub clock_skew_ms: AtomicI64,
    /// Highest seq the aggregator acknowledged.
    pub acked_seq: AtomicU64,
    /// Acknowledged batches over time, for the drain rate.
    pub drain: Mutex<DrainMeter>,
}

impl UplinkState {
    /// The running agent's status: connection, backlog, drain rate and time to drain.
    pub fn status(&self, cfg: &Config, b: &BufferStats) -> Status {
        let rate = self
            .drain
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rate(std::time::Instant::now());
        let mut s = Status::from_stats(&cfg.id, &cfg.region, b).with_rate(rate);
        s.running = true;
        s.connected = self.connected.load(Ordering::Relaxed);
        s.aggregator = self
            .endpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        s.last_error = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        s
    }

    fn record_acked(&self, total: u64) {
        self.drain
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(std::time::Instant::now(), total);
    }

    fn set_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("connect: {0}")]
    Connect(String),
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("stream write: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("aggregator refused this agent: {0}")]
    Refused(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("buffer: {0}")]
    Buffer(#[from] crate::buffer::BufferError),
}

impl From<ClientError> for SessionError {
    fn from(e: ClientError) -> SessionError {
        match e {
            ClientError::Refused(r) => SessionError::Refused(r),
            ClientError::Protocol(m) => SessionError::Protocol(m),
            e => SessionError::Protocol(e.to_string()),
        }
    }
}

pub struct Uplink {
    pub cfg: Arc<Config>,
    pub buffer: Arc<Buffer>,
    pub metrics: Arc<Metrics>,
    /// Signalled when a new batch is buffered.
    pub new_data: Arc<Notify>,
    pub state: Arc<UplinkState>,
    /// Receives the synthetic checks the aggregator assigns to this agent.
    pub assigned: crate::synthetic::Assigned,
    /// The families' metadata, sent when new or changed and again on every connection.
    pub metadata: Arc<MetadataRegistry>,
}

impl Uplink {
    /// Runs until `shutdown` turns true; then drains what is in flight for up to `grace`.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>, grace: Duration) {
        let client_cfg = match self.client_config() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("uplink cannot start: {e}");
                self.state.set_error(e);
                return;
            }
        };
        let mut endpoint = match client_endpoint() {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("uplink cannot open a UDP socket: {e}");
                return;
            }
        };
        endpoint.set_default_client_config(client_cfg);
        let mut attempt: u32 = 0;
        let mut idx = 0usize;
        let endpoints = self.cfg.aggregator.endpoints.clone();
        // One session across connections: what was acknowledged stays acknowledged.
        let mut session = ClientSession::new(
            self.session_config(),
            self.buffer_state(&self.buffer.stats(), None),
        );
        while !*shutdown.borrow() {
            let target = &endpoints[idx % endpoints.len()];
            if attempt > 0 {
                self.metrics.uplink_reconnects.inc();
            }
            let mut established = false;
            // On any endpoint but the first, a probe watches for the first to come back.
            let back = Arc::new(Notify::new());
            let _probe = (!idx.is_multiple_of(endpoints.len())).then(|| {
                AbortOnDrop(tokio::spawn(probe_until_up(
                    endpoint.clone(),
                    endpoints[0].clone(),
                    self.cfg.server_name(),
                    self.cfg.aggregator.failback_interval.get(),
                    back.clone(),
                )))
            });
            let result = self
                .session(
                    &endpoint,
                    &mut session,
                    target,
                    &mut shutdown,
                    Ends { grace, back: &back },
                    &mut established,
                )
                .await;
            self.state.connected.store(false, Ordering::Relaxed);
            self.metrics.uplink_connected.set(0);
            match result {
                Ok(Ended::Shutdown) => break,
                Ok(Ended::MovingBack) => {
                    tracing::info!(from = %target, to = %endpoints[0], "the first endpoint answers again: moving back to it");
                    self.metrics.uplink_failbacks.inc();
                    session.reopen();
                    idx = 0;
                    attempt = 0;
                    continue;
                }
                Err(e) => {
                    let msg = format!("{target}: {e}");
                    match &e {
                        SessionError::Refused(_) => tracing::error!("{msg}"),
                        _ => tracing::warn!("{msg}"),
                    }
                    self.state.set_error(msg);
                }
            }
            if established {
                attempt = 0;
            } else {
                idx += 1;
            }
            let delay = backoff(
                attempt,
                Duration::from_millis(200),
                Duration::from_secs(30),
                fastrand::f64(),
            );
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => {}
            }
        }
        endpoint.wait_idle().await;
    }

    fn client_config(&self) -> Result<quinn::ClientConfig, String> {
        let tls =
            outpost_shared::tls::client_config(&self.cfg.tls_files()).map_err(|e| e.to_string())?;
        let qc =
            quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
        let mut cc = quinn::ClientConfig::new(Arc::new(qc));
        let mut t = transport();
        t.keep_alive_interval(Some(KEEP_ALIVE));
        cc.transport_config(Arc::new(t));
        Ok(cc)
    }

    async fn session(
        &self,
        endpoint: &Endpoint,
        session: &mut ClientSession,
        target: &str,
        shutdown: &mut watch::Receiver<bool>,
        ends: Ends<'_>,
        established: &mut bool,
    ) -> Result<Ended, SessionError> {
        let conn = connect(endpoint, target, &self.cfg.server_name()).await?;
        let r = self
            .drive(&conn, session, shutdown, ends, established)
            .await;
        session.handle_connection_lost();
        self.account_bytes(&conn, &mut (0, 0));
        match &r {
            Ok(Ended::Shutdown) => {
                conn.close(VarInt::from_u32(close::SHUTDOWN), b"agent shutting down")
            }
            Ok(Ended::MovingBack) => conn.close(
                VarInt::from_u32(close::NORMAL),
                b"agent moves back to its first endpoint",
            ),
            Err(SessionError::Protocol(m)) => {
                conn.close(VarInt::from_u32(close::MALFORMED), m.as_bytes())
            }
            Err(_) => conn.close(VarInt::from_u32(close::NORMAL), b""),
        }
        r
    }

    fn account_bytes(&self, conn: &Connection, last: &mut (u64, u64)) {
        let s = conn.stats();
        let (tx, rx) = (s.udp_tx.bytes, s.udp_rx.bytes);
        self.metrics
            .uplink_bytes_sent
            .inc_by(tx.saturating_sub(last.0));
        self.metrics
            .uplink_bytes_received
            .inc_by(rx.saturating_sub(last.1));
        *last = (tx, rx);
    }

    /// The session's settings: the agent's window, heartbeat and live-lane constants.
    fn session_config(&self) -> ClientConfig {
        ClientConfig {
            window: WINDOW,
            window_bytes: self.cfg.buffer.max_bytes.0 / 2,
            heartbeat_every_ms: HEARTBEAT_EVERY.as_millis() as i64,
            handshake_timeout_ms: HANDSHAKE_TIMEOUT.as_millis() as i64,
            live_after: LIVE_AFTER,
            live_burst: LIVE_BURST,
            ..ClientConfig::new(&self.cfg.id, &self.cfg.region, env!("CARGO_PKG_VERSION"))
        }
    }

    /// The buffer as `session` needs to know it (its unacknowledged bytes counted as the
    /// buffer holds them now).
    /// `s` is the buffer's [`Buffer::stats`], read by the caller.
    fn buffer_state(&self, s: &BufferStats, session: Option<&ClientSession>) -> BufferState {
        BufferState {
            next_seq: s.next_seq,
            backlog_bytes: s.bytes,
            dropped_samples: s.dropped_samples,
            acked_seq: s.acked,
            unacked_bytes: session
                .map(|c| self.buffer.bytes_between(c.acked() + 1, c.cursor()))
                .unwrap_or(0),
        }
    }

    /// Drives `session` over one connection: control frames and the session's deadlines in,
    /// frames and buffered batches out, acknowledged batches deleted from the buffer.
    async fn drive(
        &self,
        conn: &Connection,
        session: &mut ClientSession,
        shutdown: &mut watch::Receiver<bool>,
        ends: Ends<'_>,
        established: &mut bool,
    ) -> Result<Ended, SessionError> {
        let (mut ctl_tx, ctl_rx) = conn.open_bi().await?;
        session.handle_buffer(self.buffer_state(&self.buffer.stats(), Some(session)));
        session.handle_connected(now_ms());
        // Control frames are read on their own task so a half-read frame is never abandoned.
        let (frames_tx, mut frames) = mpsc::channel(64);
        let _reader = AbortOnDrop(tokio::spawn(read_control(ctl_rx, frames_tx)));
        let mut data: Option<quinn::SendStream> = None;
        let mut enc = Transcoder::new();
        let mut live = Live {
            stream: None,
            enc: Transcoder::new(),
        };
        let mut bytes_seen = (0, 0);
        // The session's next deadline (usually the liveness heartbeat, which each batch
        // pushes back), on a timer that wakes only when it expires.
        let mut timer = crate::timer::FdTimer::new(std::time::Instant::now()).ok();
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        // Ticks missed while nothing drained are not made up in a burst.
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        progress.tick().await;
        let mut was_draining = false;
        let mut shutting_down = false;
        let mut moving_back = false;
        // The registry's generation the session has taken in; every connection starts by
        // handing it all (the session skips what it already has).
        let mut meta_seen = 0u64;
        loop {
            session.handle_clock(now_ms());
            let stats = self.buffer.stats();
            session.handle_buffer(self.buffer_state(&stats, Some(session)));
            let (declared, generation) = self.metadata.changed_since(meta_seen);
            meta_seen = generation;
            session.handle_metadata(declared);
            while let Some(e) = session.poll_event() {
                match e {
                    ClientEvent::Connected {
                        applied_seq,
                        skew_ms,
                    } => {
                        self.state.clock_skew_ms.store(skew_ms, Ordering::Relaxed);
                        self.metrics.clock_skew.set(skew_ms as f64 / 1000.0);
                        let b = self.buffer.clone();
                        tokio::task::spawn_blocking(move || b.session_started(applied_seq))
                            .await
                            .map_err(|e| SessionError::Protocol(format!("buffer task: {e}")))??;
                        self.state
                            .acked_seq
                            .fetch_max(applied_seq, Ordering::Relaxed);
                        *established = true;
                        self.state.connected.store(true, Ordering::Relaxed);
                        *self
                            .state
                            .endpoint
                            .lock()
                            .unwrap_or_else(|p| p.into_inner()) =
                            Some(conn.remote_address().to_string());
                        self.metrics.uplink_connected.set(1);
                        tracing::info!(
                            aggregator = %conn.remote_address(),
                            applied_seq,
                            protocol = session.protocol(),
                            alive_every_ms = session.alive_every_ms(),
                            "connected"
                        );
                        // An aggregator that knows the codec's compact flags gets them.
                        let compact = session.protocol() >= frame::COMPACT_VERSION;
                        enc.set_compact(compact);
                        live.enc.set_compact(compact);
                        data = Some(conn.open_uni().await?);
                    }
                    ClientEvent::Acked { seq, newly } => {
                        // Usually only bookkeeping; a backlog's acknowledgement writes.
                        if !self.buffer.ack_deferred(seq) {
                            let b = self.buffer.clone();
                            if let Ok(Err(e)) =
                                tokio::task::spawn_blocking(move || b.ack(seq)).await
                            {
                                return Err(SessionError::Buffer(e));
                            }
                        }
                        self.metrics.batches_acked.inc_by(newly);
                        self.state.acked_seq.fetch_max(seq, Ordering::Relaxed);
                        self.state.record_acked(self.metrics.batches_acked.get());
                    }
                    ClientEvent::Checks(json) => {
                        let a = self.assigned.clone();
                        let _ = tokio::task::spawn_blocking(move || a.receive(&json)).await;
                    }
                    ClientEvent::RunCheck(json) => self.assigned.run_once(&json),
                    ClientEvent::Finished { all_acked } => {
                        if moving_back {
                            if !all_acked {
                                tracing::warn!(
                                    "moving back with batches unacknowledged; they are resent to the first endpoint"
                                );
                            }
                            return Ok(Ended::MovingBack);
                        }
                        if !all_acked {
                            tracing::warn!(
                                "shutting down with batches unacknowledged; they stay buffered and are resent next time"
                            );
                        }
                        return Ok(Ended::Shutdown);
                    }
                }
            }
            while let Some(t) = session.poll_transmit() {
                match t {
                    Transmit::Control(f) => ctl_tx.write_all(&frame::encode(&f)).await?,
                    Transmit::Batches { from, max } => {
                        if let Some(d) = &mut data {
                            self.send_batches(session, d, &mut enc, from, max).await?;
                        }
                    }
                    Transmit::Live { from, to } => {
                        self.send_live(conn, &mut live, from, to).await?
                    }
                }
            }
            self.account_bytes(conn, &mut bytes_seen);
            let deadline = session.poll_timeout();
            // The progress log runs only around a drain: no wake-up between steady cycles.
            // (The backlog as this pass began; the tick itself reads it again.)
            let draining = was_draining || stats.batches > DRAINING_ABOVE;
            tokio::select! {
                _ = self.new_data.notified() => {}
                _ = self.metadata.changed.notified() => {}
                r = frames.recv() => match r {
                    Some(Ok(f)) => {
                        session.handle_buffer(self.buffer_state(&self.buffer.stats(), Some(session)));
                        session.handle_frame(f, now_ms())?;
                    }
                    Some(Err(e)) => {
                        // A refusal closes the connection right after the frame; prefer its reason.
                        if !session.is_established()
                            && let Some(quinn::ConnectionError::ApplicationClosed(c)) = conn.close_reason()
                        {
                            let reason = String::from_utf8_lossy(&c.reason).into_owned();
                            // The session learns of it too (an older aggregator's version).
                            let _ = session.handle_frame(
                                outpost_shared::frame::Frame::Refused { reason: reason.clone() },
                                now_ms(),
                            );
                            return Err(SessionError::Refused(reason));
                        }
                        return Err(e);
                    }
                    None => return Err(SessionError::Protocol("control reader stopped".into())),
                },
                _ = sleep_until_ms(deadline, &mut timer) => session.handle_timeout(now_ms())?,
                _ = progress.tick(), if draining => {
                    let s = self.buffer.stats();
                    if s.batches > DRAINING_ABOVE {
                        let st = self.state.status(&self.cfg, &s);
                        tracing::info!(
                            backlog_batches = s.batches, backlog_bytes = s.bytes,
                            rate = format!("{:.1}/s", st.drain_batches_per_second),
                            eta = st.drain_eta_seconds.map(|e| format!("{e:.0}s")).unwrap_or_else(|| "unknown".into()),
                            "draining the backlog"
                        );
                        was_draining = true;
                    } else if was_draining {
                        tracing::info!("backlog drained");
                        was_draining = false;
                    }
                }
                _ = shutdown.changed(), if !shutting_down => {
                    shutting_down = true;
                    moving_back = false;
                    session.begin_shutdown(now_ms(), ends.grace.as_millis() as i64);
                }
                _ = ends.back.notified(), if !shutting_down && *established => {
                    shutting_down = true;
                    moving_back = true;
                    session.begin_shutdown(now_ms(), MOVE_GRACE.as_millis() as i64);
                }
            }
        }
    }

    /// Copies the buffered batches with seqs in `from..to` to the live stream, opening it on
    /// first use.
    async fn send_live(
        &self,
        conn: &Connection,
        live: &mut Live,
        from: u64,
        to: u64,
    ) -> Result<(), SessionError> {
        let batches = self.read(from, (to - from) as usize).await?;
        for sb in batches.into_iter().filter(|b| b.seq < to) {
            // Marked before it is coded and sent: a batch evicted since the read was counted
            // as dropped and must not reach the aggregator (nor the live coder's context);
            // one evicted after this waits for the acknowledgement that passes it.
            if !self.buffer.mark_live(sb.seq) {
                continue;
            }
            let Ok(payload) = live.enc.transcode(&sb.payload) else {
                continue; // The batch stream reports and skips it.
            };
            let stream = match &mut live.stream {
                Some(s) => s,
                None => {
                    let s = conn.open_uni().await?;
                    // Ahead of the batch stream whenever both have data to send.
                    let _ = s.set_priority(1);
                    live.stream.insert(s)
                }
            };
            stream
                .write_all(&frame::encode(&Frame::Batch {
                    seq: sb.seq,
                    payload,
                    trace: None,
                }))
                .await?;
            self.metrics.batches_sent_live.inc();
        }
        Ok(())
    }

    /// Up to `max` buffered batches from `from` on (at most 1 MiB of self-contained batches;
    /// with 4 MiB a drain's reads raised the agent's peak RSS by about 3 MiB, and an hour of
    /// 1,000 series still drains in a quarter of a second): from memory when they were stored
    /// a moment ago, else read from RocksDB on the blocking pool.
    async fn read(&self, from: u64, max: usize) -> Result<Vec<StoredBatch>, SessionError> {
        const MAX_BYTES: usize = 1 << 20;
        if let Some(b) = self.buffer.read_recent(from, max, MAX_BYTES) {
            return Ok(b);
        }
        let b = self.buffer.clone();
        Ok(
            tokio::task::spawn_blocking(move || b.read_from(from, max, MAX_BYTES))
                .await
                .map_err(|e| SessionError::Protocol(format!("buffer read task: {e}")))??,
        )
    }

    /// Writes up to `max` buffered batches from the first at or after `from` on the batch
    /// stream, reporting each to the session.
    async fn send_batches(
        &self,
        session: &mut ClientSession,
        data: &mut quinn::SendStream,
        enc: &mut Transcoder,
        from: u64,
        max: u64,
    ) -> Result<(), SessionError> {
        let Some(next) = self.buffer.next_at_or_after(from) else {
            return Ok(());
        };
        let batches = self.read(next, max as usize).await?;
        for sb in batches {
            // Stored batches are self-contained; the stream's context names each series once.
            let span = tracing::info_span!("batch send", seq = sb.seq, samples = sb.samples);
            let payload = match span.in_scope(|| enc.transcode(&sb.payload)) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(seq = sb.seq, "buffered batch does not decode: {e}");
                    session.handle_skipped(sb.seq)?;
                    let b = self.buffer.clone();
                    let _ = tokio::task::spawn_blocking(move || b.skip_damaged(sb.seq)).await;
                    continue;
                }
            };
            session.handle_sent(sb.seq, self.buffer.bytes_between(sb.seq, sb.seq + 1))?;
            let trace = outpost_service::telemetry::context_of(&span);
            self.buffer.mark_sent(sb.seq);
            data.write_all(&frame::encode(&Frame::Batch {
                seq: sb.seq,
                payload,
                trace,
            }))
            .instrument(span)
            .await?;
            self.metrics.batches_sent.inc();
            self.metrics.samples_sent.inc_by(sb.samples);
        }
        Ok(())
    }
}

/// Reads control frames until the stream ends or fails; the failure is the last message.
/// How a connection ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The agent is shutting down.
    Shutdown,
    /// The first endpoint answers again: the agent moves back to it.
    MovingBack,
}

/// What ends a connection cleanly: the shutdown signal (with its grace) or the first
/// endpoint answering again.
#[derive(Clone, Copy)]
struct Ends<'a> {
    grace: Duration,
    back: &'a Notify,
}

/// A client endpoint on a wildcard UDP port whose connections time with
/// [`crate::timer::FdTimer`]s.
fn client_endpoint() -> std::io::Result<Endpoint> {
    let socket = std::net::UdpSocket::bind(std::net::SocketAddr::from(([0, 0, 0, 0], 0)))?;
    Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(crate::timer::QuicRuntime),
    )
}

/// Resolves `target` and completes a QUIC and TLS handshake with it.
async fn connect(
    endpoint: &Endpoint,
    target: &str,
    server_name: &str,
) -> Result<Connection, SessionError> {
    let addr = tokio::net::lookup_host(target)
        .await
        .map_err(|e| SessionError::Connect(format!("cannot resolve: {e}")))?
        .next()
        .ok_or_else(|| SessionError::Connect("name resolves to no address".into()))?;
    let connecting = endpoint
        .connect(addr, server_name)
        .map_err(|e| SessionError::Connect(e.to_string()))?;
    Ok(tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting)
        .await
        .map_err(|_| SessionError::Connect("handshake timed out".into()))??)
}

/// Every `every`, tries a handshake with `first`; when one succeeds, closes that probe
/// connection, wakes `back` and ends.
async fn probe_until_up(
    endpoint: Endpoint,
    first: String,
    server_name: String,
    every: Duration,
    back: Arc<Notify>,
) {
    loop {
        tokio::time::sleep(every).await;
        match connect(&endpoint, &first, &server_name).await {
            Ok(conn) => {
                conn.close(VarInt::from_u32(close::NORMAL), b"probe");
                back.notify_one();
                return;
            }
            Err(e) => tracing::debug!(endpoint = %first, "first endpoint still unreachable: {e}"),
        }
    }
}

async fn read_control(mut rx: quinn::RecvStream, tx: mpsc::Sender<Result<Frame, SessionError>>) {
    loop {
        let r = match frame::read(&mut rx).await {
            Ok(Some(f)) => Ok(f),
            Ok(None) => Err(SessionError::Protocol(
                "aggregator closed the control stream".into(),
            )),
            Err(e) => Err(SessionError::Protocol(e.to_string())),
        };
        let end = r.is_err();
        if tx.send(r).await.is_err() || end {
            return;
        }
    }
}

/// Aborts a task when dropped, on every way out of a session.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sleeps until `deadline` (ms since the Unix epoch), or forever without one; on `timer`
/// when there is one (a session's deadline moves every cycle; see [`crate::timer`]).
async fn sleep_until_ms(deadline: Option<i64>, timer: &mut Option<crate::timer::FdTimer>) {
    let Some(d) = deadline else {
        return std::future::pending().await;
    };
    let wait = Duration::from_millis((d - now_ms()).max(0) as u64);
    match timer {
        Some(t) => {
            // The armed deadline is kept when it is at most a millisecond later (the clocks
            // are read anew every pass): no re-arming on every pass.
            let at = std::time::Instant::now() + wait;
            if t.deadline() < at || t.deadline() > at + Duration::from_millis(1) {
                t.set(at);
            }
            t.expired().await
        }
        None => tokio::time::sleep(wait).await,
    }
}

/// The live stream of a connection, opened on first use, with its own codec context.
struct Live {
    stream: Option<quinn::SendStream>,
    enc: Transcoder,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let b = |a, j| backoff(a, Duration::from_millis(200), Duration::from_secs(30), j);
        assert_eq!(b(0, 1.0), Duration::from_millis(200));
        assert_eq!(b(0, 0.0), Duration::from_millis(100));
        assert_eq!(b(3, 1.0), Duration::from_millis(1600));
        assert_eq!(b(10, 1.0), Duration::from_secs(30));
        assert_eq!(b(u32::MAX, 0.0), Duration::from_secs(15));
    }
}
