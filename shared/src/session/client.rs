//! The agent's end of a session: handshake, send window, acknowledgements, heartbeats and
//! the live lane, across any number of connections.

use super::Millis;
use crate::frame::{self, Frame, Heartbeat, Hello, PROTOCOL_VERSION};
use crate::metadata::{self as meta, FamilyMetadata, Metadata};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// How a [`ClientSession`] behaves. [`ClientConfig::new`] gives the agent's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// The agent id sent in the hello; must match the client certificate's common name.
    pub agent_id: String,
    /// The agent's region, sent in the hello.
    pub region: String,
    /// The agent's version, sent in the hello.
    pub agent_version: String,
    /// Batches sent but not acknowledged, at most (counted in seqs from the last ack to the
    /// next seq to send, so skipped seqs count too). Default 256.
    pub window: u64,
    /// Bytes sent but not acknowledged (as [`BufferState::unacked_bytes`] reports them, plus
    /// what [`ClientSession::handle_sent`] added since), at most; no new batches are
    /// requested at or above it. What is in flight cannot be evicted without doubt about
    /// whether it arrived, so it must leave the buffer room to work: the agent uses half its
    /// buffer size. Default `u64::MAX`.
    pub window_bytes: u64,
    /// Interval between heartbeats, ms; the first goes out right after the welcome.
    /// A periodic heartbeat is left out while it would repeat the last one: a batch went out
    /// since (the aggregator hears the agent through it), the dropped samples are the same,
    /// the backlog moved by less than [`ClientConfig::heartbeat_backlog_slack`] bytes, and the
    /// last heartbeat is younger than [`ClientConfig::heartbeat_refresh_ms`]. Default 15 000.
    pub heartbeat_every_ms: i64,
    /// A heartbeat goes out at least this often while batches flow, ms, so the aggregator's
    /// view of the agent's clock and backlog is never older. Default 300 000.
    pub heartbeat_refresh_ms: i64,
    /// How far the backlog may move, bytes, before a heartbeat that would otherwise be left
    /// out goes out to report it. Default 65 536.
    pub heartbeat_backlog_slack: u64,
    /// How long to wait for a welcome after the hello, ms. Default 10 000.
    pub handshake_timeout_ms: i64,
    /// When more than this many batches wait for the batch stream, each new batch also goes
    /// out on the live stream. Default 8.
    pub live_after: u64,
    /// Live copies requested per [`Transmit::Live`], at most (the newest). Default 16.
    pub live_burst: u64,
    /// With an aggregator of protocol 3 or 4: the liveness interval, ms. When nothing at all
    /// was sent for one and a half such intervals, a heartbeat goes out, so the aggregator
    /// hears from the agent at least every two intervals; while batches flow, nothing extra
    /// is sent. From
    /// protocol 5 the welcome's [`frame::Welcome::alive_every_ms`] takes its place (never
    /// below [`frame::ALIVE_EVERY_MS`]). Default [`frame::ALIVE_EVERY_MS`].
    pub alive_every_ms: i64,
}

impl ClientConfig {
    /// The agent's settings for `agent_id` in `region`.
    pub fn new(
        agent_id: impl Into<String>,
        region: impl Into<String>,
        agent_version: impl Into<String>,
    ) -> ClientConfig {
        ClientConfig {
            agent_id: agent_id.into(),
            region: region.into(),
            agent_version: agent_version.into(),
            window: 256,
            window_bytes: u64::MAX,
            heartbeat_every_ms: 15_000,
            heartbeat_refresh_ms: 300_000,
            heartbeat_backlog_slack: 64 << 10,
            handshake_timeout_ms: 10_000,
            live_after: 8,
            live_burst: 16,
            alive_every_ms: frame::ALIVE_EVERY_MS,
        }
    }
}

/// What the client knows of the agent's buffer; the driver reports it with
/// [`ClientSession::handle_buffer`] whenever it may have changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BufferState {
    /// The seq the next buffered batch will get: every batch below it has been written
    /// (or dropped by the when-full policy).
    pub next_seq: u64,
    /// Bytes waiting in the buffer (sent in heartbeats).
    pub backlog_bytes: u64,
    /// Samples dropped by the when-full policy since the buffer was created (sent in
    /// heartbeats).
    pub dropped_samples: u64,
    /// Bytes of the buffered batches with seqs from [`ClientSession::acked`]` + 1` up to
    /// [`ClientSession::cursor`] (sent, not acknowledged), as the buffer counts them now:
    /// batches the when-full policy evicted while in flight no longer count.
    pub unacked_bytes: u64,
    /// The highest seq any aggregator acknowledged, as the buffer keeps it across restarts
    /// and connections to other aggregators; sent in the hello ([`Hello::acked_seq`]).
    pub acked_seq: u64,
}

/// Something the driver must send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// A frame for the control stream (hello, heartbeat, metadata).
    Control(Frame),
    /// Send buffered batches on the batch stream, in seq order: the first buffered seq at or
    /// after `from`, then the following ones, at most `max` of them. Report each with
    /// [`ClientSession::handle_sent`] (or [`ClientSession::handle_skipped`] when it cannot be
    /// read) before writing it. Fewer, or none, is fine.
    Batches {
        /// The first seq to consider.
        from: u64,
        /// How many batches at most (what the window has room for).
        max: u64,
    },
    /// Copy the buffered batches with seqs in `from..to` onto the live stream (opening it on
    /// first use). Nothing is reported back: live copies are never acknowledged.
    Live {
        /// The first seq to copy.
        from: u64,
        /// One past the last seq to copy.
        to: u64,
    },
}

/// Something the driver must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// The aggregator welcomed this agent: it has durably applied everything up to
    /// `applied_seq`, so the driver deletes those batches from the buffer (and resolves
    /// batches evicted while in flight). `skew_ms` is the agent clock minus the aggregator
    /// clock, estimated with half the round trip.
    Connected {
        /// The highest seq the aggregator has durably applied for this agent.
        applied_seq: u64,
        /// Agent clock minus aggregator clock, ms.
        skew_ms: i64,
    },
    /// Every batch up to `seq` is durable at the aggregator: delete them from the buffer.
    /// `newly` is how many seqs this ack covers that no earlier ack did.
    Acked {
        /// Every batch up to and including this seq is durable.
        seq: u64,
        /// Seqs covered for the first time by this ack.
        newly: u64,
    },
    /// The synthetic checks assigned to this agent from now on (a JSON array).
    Checks(String),
    /// Run this check (a JSON object) once, now, and record its result.
    RunCheck(String),
    /// After [`ClientSession::begin_shutdown`]: the session is done. `all_acked` is false when
    /// the grace period ended with batches unacknowledged (they stay buffered).
    Finished {
        /// Everything sent was acknowledged.
        all_acked: bool,
    },
}

/// Why a connection's session ended. The driver closes the connection and, except after a
/// refusal it cannot fix, reconnects.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The aggregator refused this agent (a refusal frame, or a welcome of another protocol
    /// version).
    #[error("aggregator refused this agent: {0}")]
    Refused(String),
    /// The aggregator broke the protocol (an unexpected frame, no welcome in time).
    #[error("protocol: {0}")]
    Protocol(String),
    /// The driver reported a batch out of order; a bug in the driver.
    #[error("batch {seq} reported sent but the batch stream is at {cursor}")]
    OutOfOrder {
        /// The seq reported.
        seq: u64,
        /// The lowest seq the batch stream could take.
        cursor: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Disconnected,
    AwaitWelcome { hello_at: Millis },
    Established,
}

/// The agent's end of the protocol. See the module docs of [`crate::session`] for the call
/// order.
#[derive(Debug)]
pub struct ClientSession {
    cfg: ClientConfig,
    state: State,
    /// Highest seq acknowledged (or welcomed) so far, over all connections.
    acked: u64,
    /// The next seq the batch stream may send.
    cursor: u64,
    /// Batches sent on this connection and not yet acknowledged: (seq, bytes).
    in_flight: VecDeque<(u64, u64)>,
    /// The buffer's last [`BufferState::unacked_bytes`] plus bytes sent since.
    in_flight_bytes: u64,
    buffer: BufferState,
    /// New batches, acks or a welcome since the last [`Transmit::Batches`].
    want_batches: bool,
    /// The first seq not yet considered for the live stream.
    live_from: u64,
    next_heartbeat: Option<Millis>,
    /// The last heartbeat handed out on this connection, and [`ClientSession::batches_sent`]
    /// then.
    last_heartbeat: Option<(Heartbeat, u64)>,
    /// Batches and live copies handed to the driver on any connection.
    batches_sent: u64,
    control: VecDeque<Frame>,
    events: VecDeque<ClientEvent>,
    /// Set by [`ClientSession::begin_shutdown`]: send nothing new, finish by this time.
    shutdown_by: Option<Millis>,
    finished: bool,
    /// The latest metadata of every family the driver reported, over all connections.
    metadata: BTreeMap<String, Metadata>,
    /// Families whose metadata this connection has not been sent yet.
    metadata_unsent: BTreeSet<String>,
    /// The version the next hello announces: ours, or an older aggregator's after it
    /// refused ours.
    hello_protocol: u16,
    /// The version this connection speaks (from the welcome).
    protocol: u16,
    /// Whether this connection keeps a liveness promise (established, protocol 3 or later).
    alive: bool,
    /// The liveness interval of this connection, ms (0 when it has none).
    alive_every_ms: i64,
    /// The latest time the driver reported ([`ClientSession::handle_clock`] and every other
    /// call that takes the time), ms.
    clock: Millis,
    /// [`ClientSession::clock`] when something (a frame, batches, live copies) was last
    /// handed to the driver: never later than the send itself.
    last_send_at: Millis,
}

impl ClientSession {
    /// A session over a buffer in `buffer` state, not connected yet.
    pub fn new(cfg: ClientConfig, buffer: BufferState) -> ClientSession {
        ClientSession {
            cfg,
            state: State::Disconnected,
            acked: 0,
            cursor: 1,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            buffer,
            want_batches: false,
            live_from: buffer.next_seq,
            next_heartbeat: None,
            last_heartbeat: None,
            batches_sent: 0,
            control: VecDeque::new(),
            events: VecDeque::new(),
            shutdown_by: None,
            finished: false,
            metadata: BTreeMap::new(),
            metadata_unsent: BTreeSet::new(),
            hello_protocol: PROTOCOL_VERSION,
            protocol: 0,
            alive: false,
            alive_every_ms: 0,
            clock: Millis::MIN,
            last_send_at: Millis::MIN,
        }
    }

    /// From now on, hellos announce version `v` (tests play an older agent with it).
    #[cfg(test)]
    pub(super) fn announce(&mut self, v: u16) {
        self.hello_protocol = v;
    }

    /// The protocol version of the current connection (0 until welcomed).
    pub fn protocol(&self) -> u16 {
        self.protocol
    }

    /// The liveness interval of the current connection, ms: the welcome's from protocol 5,
    /// [`ClientConfig::alive_every_ms`] with protocols 3 and 4; `None` with protocol 2 or
    /// before a welcome.
    pub fn alive_every_ms(&self) -> Option<i64> {
        self.alive.then_some(self.alive_every_ms)
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// Highest seq the aggregator acknowledged or welcomed, over all connections.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The next seq the batch stream may send.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Seqs sent on this connection and not yet acknowledged.
    pub fn in_flight(&self) -> impl Iterator<Item = u64> + '_ {
        self.in_flight.iter().map(|(s, _)| *s)
    }

    /// True between a welcome and the loss of its connection.
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// True when everything sent has been acknowledged.
    pub fn all_acked(&self) -> bool {
        self.acked + 1 >= self.cursor
    }

    /// A new connection is up with its control stream open: queues the hello. Anything left
    /// of a previous connection is forgotten; what it had in flight is resent after the
    /// welcome.
    pub fn handle_connected(&mut self, now: Millis) {
        self.handle_clock(now);
        self.reset_connection();
        self.state = State::AwaitWelcome { hello_at: now };
        self.control.push_back(Frame::Hello(Hello {
            protocol: self.hello_protocol,
            agent_id: self.cfg.agent_id.clone(),
            region: self.cfg.region.clone(),
            agent_version: self.cfg.agent_version.clone(),
            clock_ms: now,
            acked_seq: self.acked.max(self.buffer.acked_seq),
        }));
    }

    /// The connection is gone (closed by either side, timed out, or the aggregator
    /// restarted). Batches in flight stay buffered and are resent on the next connection.
    pub fn handle_connection_lost(&mut self) {
        self.reset_connection();
        if self.shutdown_by.is_some() {
            self.finish();
        }
    }

    fn reset_connection(&mut self) {
        self.state = State::Disconnected;
        self.metadata_unsent.clear();
        self.in_flight.clear();
        self.in_flight_bytes = 0;
        self.want_batches = false;
        self.next_heartbeat = None;
        self.last_heartbeat = None;
        self.alive = false;
        self.alive_every_ms = 0;
        self.protocol = 0;
        self.control.clear();
    }

    /// The buffer's current state. New batches make the window and the live lane look again.
    pub fn handle_buffer(&mut self, state: BufferState) {
        if let (Some((last, _)), Some(next)) = (&self.last_heartbeat, self.next_heartbeat) {
            let due = last.clock_ms + self.cfg.heartbeat_every_ms;
            if due < next && self.buffer_news(last, &state) {
                self.next_heartbeat = Some(due);
            }
        }
        if state.next_seq > self.buffer.next_seq || state.unacked_bytes < self.in_flight_bytes {
            self.want_batches = true;
        }
        if self.state == State::Established {
            self.in_flight_bytes = state.unacked_bytes;
        }
        self.buffer = state;
    }

    /// The metadata of metric families as their sources declare them now. A family seen for
    /// the first time, or whose metadata changed, goes out in the next [`Frame::Metadata`];
    /// after every welcome, all of them go out again. Unchanged entries cost nothing, so
    /// the driver may report the same family many times. Texts longer than
    /// [`meta::MAX_TEXT_BYTES`] are truncated.
    pub fn handle_metadata(&mut self, families: impl IntoIterator<Item = FamilyMetadata>) {
        for mut f in families {
            if f.family.is_empty() || f.family.len() > meta::MAX_TEXT_BYTES {
                continue;
            }
            meta::truncate_text(&mut f.meta.help);
            meta::truncate_text(&mut f.meta.unit);
            if self.metadata.get(&f.family) == Some(&f.meta) {
                continue;
            }
            if self.state == State::Established {
                self.metadata_unsent.insert(f.family.clone());
            }
            self.metadata.insert(f.family, f.meta);
        }
    }

    /// How many families' metadata the session knows.
    pub fn metadata_len(&self) -> usize {
        self.metadata.len()
    }

    /// The next metadata frame for this connection, if any family is unsent.
    fn metadata_frame(&mut self) -> Option<Frame> {
        if self.metadata_unsent.is_empty() {
            return None;
        }
        let mut families = Vec::new();
        while families.len() < meta::MAX_FAMILIES_PER_FRAME {
            let Some(family) = self.metadata_unsent.pop_first() else {
                break;
            };
            if let Some(m) = self.metadata.get(&family) {
                families.push(FamilyMetadata {
                    family,
                    meta: m.clone(),
                });
            }
        }
        (!families.is_empty()).then_some(Frame::Metadata { families })
    }

    /// A frame arrived on the control stream. An error ends this connection's session.
    pub fn handle_frame(&mut self, f: Frame, now: Millis) -> Result<(), ClientError> {
        self.handle_clock(now);
        match self.state {
            State::Disconnected => Ok(()),
            State::AwaitWelcome { hello_at } => match f {
                Frame::Welcome(w) => {
                    frame::check_version(w.protocol).map_err(ClientError::Refused)?;
                    self.protocol = w.protocol;
                    if w.protocol >= frame::ALIVE_IN_WELCOME_VERSION {
                        // An interval below the floor would only be a busier loop.
                        self.alive_every_ms =
                            i64::from(w.alive_every_ms).max(frame::ALIVE_EVERY_MS);
                    } else if w.protocol >= 3 {
                        self.alive_every_ms = self.cfg.alive_every_ms;
                    }
                    if w.protocol >= 3 {
                        self.alive = true;
                        self.last_send_at = now;
                    }
                    let skew_ms = hello_at + (now - hello_at) / 2 - w.clock_ms;
                    self.state = State::Established;
                    // What another aggregator acknowledged stays acknowledged.
                    self.acked = self.acked.max(w.applied_seq).max(self.buffer.acked_seq);
                    self.cursor = w.applied_seq + 1;
                    // Batches written from now on may go live; the backlog goes in order.
                    self.live_from = self.buffer.next_seq;
                    self.want_batches = true;
                    // A new connection may reach an aggregator that knows nothing yet.
                    self.metadata_unsent = self.metadata.keys().cloned().collect();
                    self.events.push_back(ClientEvent::Connected {
                        applied_seq: w.applied_seq,
                        skew_ms,
                    });
                    self.queue_heartbeat(now);
                    Ok(())
                }
                Frame::Refused { reason } => {
                    // An older aggregator refuses our version: speak its version next time,
                    // when we still can.
                    if let Some(v) = frame::spoken_version(&reason)
                        && frame::check_version(v).is_ok()
                        && v < self.hello_protocol
                    {
                        self.hello_protocol = v;
                    }
                    Err(self.fail(ClientError::Refused(reason)))
                }
                f => Err(self.fail(ClientError::Protocol(format!(
                    "expected welcome, got {}",
                    f.kind()
                )))),
            },
            State::Established => match f {
                Frame::Ack { seq } => {
                    self.handle_ack(seq);
                    Ok(())
                }
                Frame::Checks { json } => {
                    self.events.push_back(ClientEvent::Checks(json));
                    Ok(())
                }
                Frame::RunCheck { json } => {
                    self.events.push_back(ClientEvent::RunCheck(json));
                    Ok(())
                }
                Frame::Heartbeat(_) => Ok(()),
                Frame::Refused { reason } => Err(self.fail(ClientError::Refused(reason))),
                f => Err(self.fail(ClientError::Protocol(format!(
                    "unexpected {} frame",
                    f.kind()
                )))),
            },
        }
    }

    fn fail(&mut self, e: ClientError) -> ClientError {
        self.handle_connection_lost();
        e
    }

    /// Acks are cumulative: one at or below the last is a duplicate and changes nothing.
    fn handle_ack(&mut self, seq: u64) {
        if seq <= self.acked {
            return;
        }
        let newly = seq - self.acked;
        self.acked = seq;
        self.cursor = self.cursor.max(seq + 1);
        while let Some(&(s, b)) = self.in_flight.front() {
            if s > seq {
                break;
            }
            self.in_flight.pop_front();
            self.in_flight_bytes = self.in_flight_bytes.saturating_sub(b);
        }
        self.want_batches = true;
        self.events.push_back(ClientEvent::Acked { seq, newly });
        if self.shutdown_by.is_some() && self.all_acked() {
            self.finish();
        }
    }

    /// The driver is about to write batch `seq` of `bytes` bytes on the batch stream, as
    /// asked by [`Transmit::Batches`]. Seqs must increase.
    pub fn handle_sent(&mut self, seq: u64, bytes: u64) -> Result<(), ClientError> {
        if seq < self.cursor {
            return Err(ClientError::OutOfOrder {
                seq,
                cursor: self.cursor,
            });
        }
        self.cursor = seq + 1;
        self.last_send_at = self.clock;
        self.batches_sent += 1;
        self.in_flight.push_back((seq, bytes));
        self.in_flight_bytes += bytes;
        self.want_batches = true;
        Ok(())
    }

    /// Batch `seq` could not be read (damaged) and was removed from the buffer instead of
    /// being sent. Seqs must increase, as for [`ClientSession::handle_sent`].
    pub fn handle_skipped(&mut self, seq: u64) -> Result<(), ClientError> {
        if seq < self.cursor {
            return Err(ClientError::OutOfOrder {
                seq,
                cursor: self.cursor,
            });
        }
        self.cursor = seq + 1;
        self.want_batches = true;
        Ok(())
    }

    /// Stops sending new batches; the session finishes ([`ClientEvent::Finished`]) when
    /// everything sent is acknowledged, or at `now + grace_ms`, or at once when not
    /// connected. While batches wait for acknowledgement a heartbeat goes out, which makes
    /// an aggregator that holds acknowledgements send them.
    pub fn begin_shutdown(&mut self, now: Millis, grace_ms: i64) {
        self.handle_clock(now);
        if self.shutdown_by.is_some() {
            return;
        }
        self.shutdown_by = Some(now.saturating_add(grace_ms));
        if self.state != State::Established || self.all_acked() {
            self.finish();
        } else {
            // An aggregator may hold acknowledgements (protocol 6); a heartbeat releases
            // them, so the grace is spent on writes, not on waiting.
            self.queue_heartbeat(now);
        }
    }

    fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.events.push_back(ClientEvent::Finished {
                all_acked: self.all_acked(),
            });
        }
    }

    /// Makes a finished session ready to connect again, once its connection is lost: for a
    /// driver that ended a connection with [`ClientSession::begin_shutdown`] to move to
    /// another aggregator rather than to stop. What was acknowledged stays acknowledged.
    pub fn reopen(&mut self) {
        self.shutdown_by = None;
        self.finished = false;
    }

    /// True once [`ClientEvent::Finished`] was queued.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The next time [`ClientSession::handle_timeout`] must be called, if any.
    pub fn poll_timeout(&self) -> Option<Millis> {
        if self.finished {
            return None;
        }
        let handshake = match self.state {
            State::AwaitWelcome { hello_at } => Some(hello_at + self.cfg.handshake_timeout_ms),
            _ => None,
        };
        [
            handshake,
            self.next_heartbeat,
            self.alive_due(),
            self.shutdown_by,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Deadlines at or before `now` pass: a missing welcome ends the session with an error;
    /// a heartbeat is queued; the shutdown grace ends.
    pub fn handle_timeout(&mut self, now: Millis) -> Result<(), ClientError> {
        self.handle_clock(now);
        if let State::AwaitWelcome { hello_at } = self.state
            && now >= hello_at + self.cfg.handshake_timeout_ms
        {
            return Err(self.fail(ClientError::Protocol(format!(
                "no welcome within {}s",
                self.cfg.handshake_timeout_ms / 1000
            ))));
        }
        if self.next_heartbeat.is_some_and(|t| now >= t) {
            if self.heartbeat_says_nothing_new(now) {
                // Nothing to wake up for until the refresh, unless the buffer's state
                // changes enough (see `handle_buffer`) or the batches stop (liveness).
                self.next_heartbeat = self
                    .last_heartbeat
                    .as_ref()
                    .map(|(h, _)| (h.clock_ms + self.cfg.heartbeat_refresh_ms).max(now));
            } else {
                self.queue_heartbeat(now);
            }
        }
        if self.alive_due().is_some_and(|t| now >= t) {
            // Frames queued and not handed out yet (such as the periodic heartbeat just
            // queued) go out now and count as the send.
            if self.control.is_empty() {
                self.queue_heartbeat(now);
            }
            self.last_send_at = now;
        }
        if self.shutdown_by.is_some_and(|t| now >= t) {
            self.finish();
        }
        Ok(())
    }

    /// When a liveness heartbeat is due: one and a half intervals after the last send, so
    /// the aggregator hears from the agent at least every two intervals (the send times
    /// are never later than the sends, so the margin only grows), and data that flows at
    /// least every one and a half intervals needs none (an agent collecting every 10 s
    /// against a 7.5 s interval).
    fn alive_due(&self) -> Option<Millis> {
        self.alive.then(|| {
            self.last_send_at
                .saturating_add(self.alive_every_ms * 3 / 2)
        })
    }

    /// The driver's clock, ms since the epoch, before it asks for what to send: what goes
    /// out is counted as sent at the latest time reported. Calls that take the time report
    /// it too.
    pub fn handle_clock(&mut self, now: Millis) {
        self.clock = self.clock.max(now);
    }

    /// True when a periodic heartbeat now would tell the aggregator nothing the batches
    /// and the last heartbeat did not (see [`ClientConfig::heartbeat_every_ms`]).
    fn heartbeat_says_nothing_new(&self, now: Millis) -> bool {
        let Some((last, batches_then)) = &self.last_heartbeat else {
            return false;
        };
        self.batches_sent > *batches_then
            && now - last.clock_ms < self.cfg.heartbeat_refresh_ms
            && !self.buffer_news(last, &self.buffer)
    }

    /// True when the buffer in `state` has something to report that heartbeat `last` did
    /// not: other dropped samples, or a backlog moved by the slack or more.
    fn buffer_news(&self, last: &Heartbeat, state: &BufferState) -> bool {
        last.dropped_samples != state.dropped_samples
            || last.backlog_bytes.abs_diff(state.backlog_bytes) >= self.cfg.heartbeat_backlog_slack
    }

    fn queue_heartbeat(&mut self, now: Millis) {
        let h = Heartbeat {
            clock_ms: now,
            dropped_samples: self.buffer.dropped_samples,
            backlog_bytes: self.buffer.backlog_bytes,
        };
        self.last_heartbeat = Some((h.clone(), self.batches_sent));
        self.control.push_back(Frame::Heartbeat(h));
        self.next_heartbeat = Some(now + self.cfg.heartbeat_every_ms);
    }

    /// The next thing to send: control frames first, then metadata not yet sent on this
    /// connection, then batches for the window, then live copies. `None` when there is
    /// nothing to send until the next input.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(f) = self.control.pop_front() {
            self.last_send_at = self.clock;
            return Some(Transmit::Control(f));
        }
        if self.state != State::Established {
            return None;
        }
        if let Some(f) = self.metadata_frame() {
            self.last_send_at = self.clock;
            return Some(Transmit::Control(f));
        }
        if self.shutdown_by.is_some() {
            return None;
        }
        if std::mem::take(&mut self.want_batches) {
            let in_flight = self.cursor.saturating_sub(self.acked + 1);
            if in_flight < self.cfg.window
                && self.in_flight_bytes < self.cfg.window_bytes
                && self.cursor < self.buffer.next_seq
            {
                return Some(Transmit::Batches {
                    from: self.cursor,
                    max: self.cfg.window - in_flight,
                });
            }
        }
        let next = self.buffer.next_seq;
        if next > self.live_from {
            let from = self
                .live_from
                .max(self.cursor)
                .max(next.saturating_sub(self.cfg.live_burst));
            self.live_from = next;
            if next > from && next - self.cursor > self.cfg.live_after {
                self.last_send_at = self.clock;
                self.batches_sent += 1;
                return Some(Transmit::Live { from, to: next });
            }
        }
        None
    }

    /// The next thing the driver must act on, in the order it happened.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }
}
