//! The aggregator's end of one connection: the hello checks, seq checks per stream, and
//! acknowledgements in seq order of what the driver wrote durably.

use super::{Lane, Millis};
use crate::frame::{self, Frame, Heartbeat, Hello, PROTOCOL_VERSION, Welcome, close};

/// The first protocol version whose agents take [`Frame::RunCheck`] and keep a liveness
/// promise ([`frame::ALIVE_EVERY_MS`]; from protocol 5 the welcome's interval).
pub const RUN_CHECK_VERSION: u16 = 3;
use crate::metadata::{self, FamilyMetadata};
use std::collections::{HashSet, VecDeque};

/// How a [`ServerSession`] behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Sent in the welcome.
    pub aggregator_version: String,
    /// How long a connection may take to send its hello, ms. Default 10 000.
    pub hello_timeout_ms: i64,
    /// How often the aggregator must hear from the agent, ms, sent in the welcome to agents
    /// of protocol 5 and later (older ones keep [`frame::ALIVE_EVERY_MS`]); the aggregator
    /// asks for [`frame::alive_every_for`] its silence threshold. Default
    /// [`frame::ALIVE_EVERY_MS`].
    pub alive_every_ms: u32,
    /// Acknowledgements to agents of protocol [`HOLD_ACKS_VERSION`] and later may wait up to
    /// this long, ms, after the oldest batch they cover arrived, and never longer than two and
    /// a half times the time between the agent's last two batches; 0 acknowledges every
    /// write at once. See [`ServerSession::poll_transmit`]. Default 0.
    pub hold_acks_ms: i64,
    /// A held acknowledgement goes out at once when it covers this many batches. Default 3.
    pub hold_acks_batches: usize,
}

/// The first protocol version whose agents ask for their acknowledgements (with a heartbeat)
/// before they stop or move, so the aggregator may hold them ([`ServerConfig::hold_acks_ms`]).
pub const HOLD_ACKS_VERSION: u16 = 6;

impl ServerConfig {
    /// The aggregator's settings.
    pub fn new(aggregator_version: impl Into<String>) -> ServerConfig {
        ServerConfig {
            aggregator_version: aggregator_version.into(),
            hello_timeout_ms: 10_000,
            alive_every_ms: frame::ALIVE_EVERY_MS as u32,
            hold_acks_ms: 0,
            hold_acks_batches: 3,
        }
    }
}

/// Why the server ends a connection: the close code (one of [`frame::close`]), the reason
/// (sent to the agent and logged), and a short label for the refusal metric (`version`,
/// `identity`, `malformed`, `storage`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    /// The QUIC application close code.
    pub code: u32,
    /// Why, in words for the agent's log and ours.
    pub reason: String,
    /// The refusal metric's label.
    pub label: &'static str,
}

impl Refusal {
    fn malformed(reason: String) -> Refusal {
        Refusal {
            code: close::MALFORMED,
            reason,
            label: "malformed",
        }
    }
}

/// What the driver does with a batch frame that passed the seq checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The next seq: apply it durably, then report it with
    /// [`ServerSession::handle_durable`].
    Next,
    /// Seqs `from..=to` never came (the agent's when-full policy dropped them): count the
    /// gap, apply this batch, report it.
    Gap {
        /// The first missing seq.
        from: u64,
        /// The last missing seq.
        to: u64,
    },
    /// Already applied (a resend after a lost ack): do not store it again, but report it
    /// with [`ServerSession::handle_durable`] so it is acknowledged in its turn.
    Duplicate,
    /// A live copy: store its points now; it is never acknowledged and does not move the
    /// agent's applied seq. Nothing to report.
    Live,
}

/// Something the driver must send, or do to the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerTransmit {
    /// A frame for the control stream (welcome, refusal, ack, checks).
    Control(Frame),
    /// Close the connection with this code and reason (after sending the frames before it).
    Close {
        /// The QUIC application close code.
        code: u32,
        /// The close reason.
        reason: String,
    },
}

/// Something the driver must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEvent {
    /// A heartbeat from the agent (its clock, backlog and dropped samples).
    Heartbeat(Heartbeat),
    /// Metric families' metadata as the agent's sources declare it now: store it as each
    /// family's latest. Checked: names non-empty and unique, texts within
    /// [`metadata::MAX_TEXT_BYTES`].
    Metadata(Vec<FamilyMetadata>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    AwaitHello { since: Millis },
    AwaitApplied,
    Established,
    Closed,
}

/// The aggregator's end of one connection, from its hello to its close. A new connection
/// (or a restarted aggregator) gets a new session, welcomed with the durable applied seq.
#[derive(Debug)]
pub struct ServerSession {
    cfg: ServerConfig,
    cert_id: String,
    state: State,
    hello: Option<Hello>,
    /// Highest seq reported durable (or welcomed).
    applied: u64,
    /// Highest seq handed to the driver to apply on the batch stream (or welcomed).
    accepted: u64,
    last_batch: u64,
    last_live: u64,
    /// Batch-stream seqs waiting for their durable write or their acknowledgement, in
    /// arrival order: seq, whether the write completed, when the batch arrived.
    pending: VecDeque<(u64, bool, Millis)>,
    /// When the last batch-stream batch arrived, and the time between the last two.
    last_batch_at: Option<Millis>,
    batch_gap: Option<Millis>,
    /// The latest time the driver reported.
    now: Millis,
    /// Set by a heartbeat or the batch stream's end: acknowledge everything written, at once,
    /// until nothing waits.
    release: bool,
    out: VecDeque<ServerTransmit>,
    events: VecDeque<ServerEvent>,
}

impl ServerSession {
    /// A connection whose client certificate names agent `cert_id` came up at `now`.
    pub fn new(cfg: ServerConfig, cert_id: impl Into<String>, now: Millis) -> ServerSession {
        ServerSession {
            cfg,
            cert_id: cert_id.into(),
            state: State::AwaitHello { since: now },
            hello: None,
            applied: 0,
            accepted: 0,
            last_batch: 0,
            last_live: 0,
            pending: VecDeque::new(),
            last_batch_at: None,
            batch_gap: None,
            now,
            release: false,
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The hello, once accepted.
    pub fn hello(&self) -> Option<&Hello> {
        self.hello.as_ref()
    }

    /// The protocol version this connection speaks: the lower of the agent's and ours
    /// (0 before the hello).
    pub fn protocol(&self) -> u16 {
        self.hello
            .as_ref()
            .map_or(0, |h| h.protocol.min(PROTOCOL_VERSION))
    }

    /// Highest seq reported durable on this connection, or welcomed.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// True once the session refused or closed the connection.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The body of the first control-stream frame (without its length prefix). The
    /// protocol version is read before the rest, so a peer of another version is refused
    /// clearly. On success the driver looks up the agent's durable applied seq and calls
    /// [`ServerSession::welcome`]; on a refusal, a refused frame and a close are queued.
    pub fn handle_hello(&mut self, body: &[u8]) -> Result<&Hello, Refusal> {
        if !matches!(self.state, State::AwaitHello { .. }) {
            return Err(self.refuse(Refusal::malformed("a second hello".into())));
        }
        if let Some(v) = frame::peek_hello_version(body)
            && let Err(reason) = frame::check_version(v)
        {
            return Err(self.refuse(Refusal {
                code: close::VERSION_MISMATCH,
                reason,
                label: "version",
            }));
        }
        let hello = match frame::decode(body) {
            Ok(Frame::Hello(h)) => h,
            Ok(f) => {
                return Err(self.refuse(Refusal::malformed(format!(
                    "expected hello, got {}",
                    f.kind()
                ))));
            }
            Err(e) => return Err(self.refuse(Refusal::malformed(format!("bad hello: {e}")))),
        };
        if hello.agent_id != self.cert_id {
            let reason = format!(
                "hello claims agent id {:?} but the client certificate is for {:?}",
                hello.agent_id, self.cert_id
            );
            return Err(self.refuse(Refusal {
                code: close::IDENTITY_MISMATCH,
                reason,
                label: "identity",
            }));
        }
        self.state = State::AwaitApplied;
        Ok(self.hello.insert(hello))
    }

    /// Queues the refused frame and the close; the session accepts nothing more.
    fn refuse(&mut self, r: Refusal) -> Refusal {
        if self.state != State::Closed {
            if self.state != State::Established {
                self.out.push_back(ServerTransmit::Control(Frame::Refused {
                    reason: r.reason.clone(),
                }));
            }
            self.out.push_back(ServerTransmit::Close {
                code: r.code,
                reason: r.reason.clone(),
            });
            self.state = State::Closed;
        }
        r
    }

    /// A stream carried something that is not a valid frame where one was due (`reason`
    /// says what): ends the connection with [`close::MALFORMED`], with a refused frame first
    /// while no welcome was sent.
    pub fn handle_malformed(&mut self, reason: String) -> Refusal {
        self.refuse(Refusal::malformed(reason))
    }

    /// Welcomes the agent whose hello was accepted: `applied_seq` is the highest seq its
    /// storage has durably applied for this agent.
    pub fn welcome(&mut self, applied_seq: u64, now: Millis) {
        if self.state != State::AwaitApplied {
            return;
        }
        self.state = State::Established;
        self.applied = applied_seq;
        self.accepted = applied_seq;
        self.out
            .push_back(ServerTransmit::Control(Frame::Welcome(Welcome {
                // An older agent accepts only its own version in the welcome.
                protocol: self.protocol(),
                aggregator_version: self.cfg.aggregator_version.clone(),
                clock_ms: now,
                applied_seq,
                // Left out of the welcome of an agent older than protocol 5 (see
                // `frame::encode`): it keeps its fixed interval.
                alive_every_ms: self.cfg.alive_every_ms,
            })));
    }

    /// A frame on the control stream after the hello. Heartbeats become
    /// [`ServerEvent::Heartbeat`] and metadata [`ServerEvent::Metadata`]; anything else is
    /// ignored. A metadata frame with an empty or repeated family name, a text longer than
    /// [`metadata::MAX_TEXT_BYTES`] or more than [`metadata::MAX_FAMILIES_PER_FRAME`]
    /// families ends the connection with [`close::MALFORMED`], and none of it is taken.
    pub fn handle_control(&mut self, f: Frame) -> Result<(), Refusal> {
        if self.state != State::Established {
            return Ok(());
        }
        match f {
            Frame::Heartbeat(h) => {
                // The agent may be about to stop or move: what is written goes out now.
                self.release = true;
                self.events.push_back(ServerEvent::Heartbeat(h));
            }
            Frame::Metadata { families } => {
                if families.len() > metadata::MAX_FAMILIES_PER_FRAME {
                    return Err(self.refuse(Refusal::malformed(format!(
                        "metadata frame with {} families; at most {} are allowed",
                        families.len(),
                        metadata::MAX_FAMILIES_PER_FRAME
                    ))));
                }
                let mut seen = HashSet::with_capacity(families.len());
                for f in &families {
                    if let Err(e) = metadata::validate(f) {
                        return Err(self.refuse(Refusal::malformed(e)));
                    }
                    if !seen.insert(f.family.as_str()) {
                        let reason = format!("metadata frame names family {:?} twice", f.family);
                        return Err(self.refuse(Refusal::malformed(reason)));
                    }
                }
                if !families.is_empty() {
                    self.events.push_back(ServerEvent::Metadata(families));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A batch frame with `seq` arrived on `lane` ([`Lane::Batch`] or [`Lane::Live`]) at
    /// `now`. Seqs must increase on each stream; a frame out of step (or before the welcome,
    /// or on the control lane) ends the connection with [`close::MALFORMED`].
    pub fn handle_batch(&mut self, lane: Lane, seq: u64, now: Millis) -> Result<Verdict, Refusal> {
        if self.state != State::Established {
            return Err(self.refuse(Refusal::malformed("a batch before the welcome".into())));
        }
        let last = match lane {
            Lane::Batch => &mut self.last_batch,
            Lane::Live => &mut self.last_live,
            Lane::Control => {
                return Err(self.refuse(Refusal::malformed(
                    "a batch frame on the control stream".into(),
                )));
            }
        };
        if seq <= *last {
            let reason = format!("batch seq {seq} after {last}: seqs must increase");
            return Err(self.refuse(Refusal::malformed(reason)));
        }
        *last = seq;
        if lane == Lane::Live {
            return Ok(Verdict::Live);
        }
        self.now = self.now.max(now);
        if let Some(last) = self.last_batch_at {
            self.batch_gap = Some((now - last).max(0));
        }
        self.last_batch_at = Some(now);
        self.pending.push_back((seq, false, now));
        let verdict = if seq <= self.accepted {
            Verdict::Duplicate
        } else if seq > self.accepted + 1 {
            Verdict::Gap {
                from: self.accepted + 1,
                to: seq - 1,
            }
        } else {
            Verdict::Next
        };
        self.accepted = self.accepted.max(seq);
        Ok(verdict)
    }

    /// The durable write of batch-stream batch `seq` finished: `Ok` when it is in a synced
    /// write (or was a duplicate), `Err` with the storage's message when it failed, which
    /// ends the connection with [`close::SHUTDOWN`] (the agent resends it elsewhere or
    /// later). Acks go out in seq order, coalesced: one ack covers every batch written
    /// before it was polled.
    pub fn handle_durable(&mut self, seq: u64, result: Result<(), String>) -> Result<(), Refusal> {
        if let Err(e) = result {
            return Err(self.refuse(Refusal {
                code: close::SHUTDOWN,
                reason: format!("batch {seq} not stored: {e}"),
                label: "storage",
            }));
        }
        if let Some(p) = self.pending.iter_mut().find(|(s, _, _)| *s == seq) {
            p.1 = true;
        }
        Ok(())
    }

    /// The batch stream ended (the agent finished it, or the connection is going): what is
    /// written is acknowledged at once.
    pub fn handle_batches_ended(&mut self) {
        self.release = true;
    }

    /// Until when the acknowledgement of the written batches at the head of the queue may
    /// wait, when it may (see [`ServerSession::poll_transmit`]).
    fn ack_held_until(&self) -> Option<Millis> {
        if self.cfg.hold_acks_ms <= 0 || self.release || self.protocol() < HOLD_ACKS_VERSION {
            return None;
        }
        let written = self.pending.iter().take_while(|p| p.1).count();
        if written == 0 || written >= self.cfg.hold_acks_batches {
            return None;
        }
        // Batches that come one after another, or the first of a connection: no wait. Two
        // and a half gaps let a third batch at a steady pace come before the hold ends.
        let hold = (self.batch_gap? * 5 / 2).min(self.cfg.hold_acks_ms);
        Some(self.pending.front()?.2 + hold).filter(|&t| t > self.now)
    }

    /// The agent's share of the synthetic checks changed (or it just connected): queues a
    /// checks frame with `json`, a JSON array of check definitions.
    pub fn handle_checks(&mut self, json: String) {
        if self.state == State::Established {
            self.out
                .push_back(ServerTransmit::Control(Frame::Checks { json }));
        }
    }

    /// Asks the agent to run one check once, now (`json`: one check definition). Queued
    /// only when the connection is established and speaks [`RUN_CHECK_VERSION`] or later;
    /// returns whether it was.
    pub fn handle_run_check(&mut self, json: String) -> bool {
        if self.state != State::Established || self.protocol() < RUN_CHECK_VERSION {
            return false;
        }
        self.out
            .push_back(ServerTransmit::Control(Frame::RunCheck { json }));
        true
    }

    /// Closes the connection for `code` (e.g. [`close::REPLACED`], [`close::SHUTDOWN`]).
    pub fn close(&mut self, code: u32, reason: impl Into<String>) {
        if self.state != State::Closed {
            self.out.push_back(ServerTransmit::Close {
                code,
                reason: reason.into(),
            });
            self.state = State::Closed;
        }
    }

    /// The hello deadline, while waiting for the hello; then the end of an acknowledgement's
    /// hold, while one is held.
    pub fn poll_timeout(&self) -> Option<Millis> {
        match self.state {
            State::AwaitHello { since } => Some(since + self.cfg.hello_timeout_ms),
            State::Established => self.ack_held_until(),
            _ => None,
        }
    }

    /// Deadlines at or before `now` pass: no hello in time refuses the connection; a held
    /// acknowledgement is due.
    pub fn handle_timeout(&mut self, now: Millis) -> Result<(), Refusal> {
        self.now = self.now.max(now);
        if let State::AwaitHello { since } = self.state
            && now >= since + self.cfg.hello_timeout_ms
        {
            let reason = format!("no hello within {}s", self.cfg.hello_timeout_ms / 1000);
            return Err(self.refuse(Refusal::malformed(reason)));
        }
        Ok(())
    }

    /// The next thing to send: queued control frames (and a close), then one ack for every
    /// batch at the head of the queue whose write is durable.
    ///
    /// With [`ServerConfig::hold_acks_ms`] and an agent of [`HOLD_ACKS_VERSION`] or later,
    /// that ack may wait: while it would cover fewer than
    /// [`ServerConfig::hold_acks_batches`] batches, until the oldest of them arrived two and
    /// a half times the agent's last gap between batches ago (at most `hold_acks_ms`); the
    /// driver calls [`ServerSession::handle_timeout`] at [`ServerSession::poll_timeout`]. Every ack
    /// is a packet the agent must acknowledge in turn, so an agent collecting every 10 s
    /// gets one ack per three batches instead of one per batch. Batches that come one after
    /// another (a backlog) and the first batch of a connection are not held; a heartbeat or
    /// the end of the batch stream releases everything written.
    pub fn poll_transmit(&mut self) -> Option<ServerTransmit> {
        if let Some(t) = self.out.pop_front() {
            return Some(t);
        }
        if self.state != State::Established || self.ack_held_until().is_some() {
            return None;
        }
        let mut upto = None;
        while let Some(&(seq, true, _)) = self.pending.front() {
            self.pending.pop_front();
            upto = Some(seq);
        }
        if self.pending.is_empty() {
            self.release = false;
        }
        let seq = upto?;
        self.applied = self.applied.max(seq);
        Some(ServerTransmit::Control(Frame::Ack { seq }))
    }

    /// The next thing the driver must act on.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }
}
