//! A client and a server session wired together in one thread, in simulated time: an agent
//! buffer and an aggregator storage as maps, the three streams as queues that a lost
//! connection empties.

use super::*;
use crate::frame::{self, Frame, Heartbeat, close};
use crate::metadata::{FamilyMetadata, MAX_FAMILIES_PER_FRAME, Metadata, MetricType};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

const T0: Millis = 1_700_000_000_000;
const AGENT: &str = "web-1";

/// The agent's side: a buffer of (seq → bytes), what the session asked for, and what the
/// driver did.
struct Agent {
    session: ClientSession,
    buffer: BTreeMap<u64, u64>,
    next_seq: u64,
    dropped_samples: u64,
    /// Every seq deleted from the buffer because of an ack or a welcome.
    deleted: BTreeSet<u64>,
    live_sent: Vec<u64>,
    acked_events: Vec<(u64, u64)>,
    finished: Option<bool>,
}

impl Agent {
    fn new(cfg: ClientConfig) -> Agent {
        let state = BufferState {
            next_seq: 1,
            ..BufferState::default()
        };
        Agent {
            session: ClientSession::new(cfg, state),
            buffer: BTreeMap::new(),
            next_seq: 1,
            dropped_samples: 0,
            deleted: BTreeSet::new(),
            live_sent: vec![],
            acked_events: vec![],
            finished: None,
        }
    }

    fn state(&self) -> BufferState {
        let unacked = self.session.acked() + 1..self.session.cursor().max(self.session.acked() + 1);
        BufferState {
            next_seq: self.next_seq,
            backlog_bytes: self.buffer.values().sum(),
            dropped_samples: self.dropped_samples,
            unacked_bytes: self.buffer.range(unacked).map(|(_, b)| b).sum(),
            // The buffer deletes what the session says was acknowledged, and remembers it.
            acked_seq: self.session.acked(),
        }
    }

    /// Buffers `n` new batches of 100 bytes.
    fn collect(&mut self, n: u64) {
        for _ in 0..n {
            self.buffer.insert(self.next_seq, 100);
            self.next_seq += 1;
        }
        self.session.handle_buffer(self.state());
    }

    /// The when-full policy drops the oldest unsent batch.
    fn drop_oldest_unsent(&mut self) -> Option<u64> {
        let cursor = self.session.cursor();
        let seq = *self.buffer.range(cursor..).next()?.0;
        self.buffer.remove(&seq);
        self.dropped_samples += 10;
        self.session.handle_buffer(self.state());
        Some(seq)
    }

    fn delete_upto(&mut self, seq: u64) {
        let keep = self.buffer.split_off(&(seq + 1));
        let gone = std::mem::replace(&mut self.buffer, keep);
        self.deleted.extend(gone.into_keys());
    }

    fn events(&mut self) -> Vec<ClientEvent> {
        let mut out = vec![];
        while let Some(e) = self.session.poll_event() {
            match &e {
                ClientEvent::Connected { applied_seq, .. } => self.delete_upto(*applied_seq),
                ClientEvent::Acked { seq, newly } => {
                    self.delete_upto(*seq);
                    self.acked_events.push((*seq, *newly));
                }
                ClientEvent::Finished { all_acked } => self.finished = Some(*all_acked),
                ClientEvent::Checks(_) | ClientEvent::RunCheck(_) => {}
            }
            out.push(e);
        }
        out
    }
}

/// The aggregator's side: durable storage that survives a crash, and the session of the
/// current connection that does not.
struct Aggregator {
    session: Option<ServerSession>,
    /// Durable: the highest applied seq and every seq applied, in order.
    applied_seq: u64,
    applied: Vec<u64>,
    gaps: Vec<(u64, u64)>,
    live_stored: Vec<u64>,
    /// Batch-stream seqs handed to the writer, not yet durable.
    writing: VecDeque<u64>,
    /// When false, writes wait for [`Aggregator::complete_writes`].
    write_at_once: bool,
    refusals: Vec<Refusal>,
    closes: Vec<(u32, String)>,
    heartbeats: Vec<Heartbeat>,
    /// Every metadata event, in order, over all connections.
    metadata: Vec<Vec<FamilyMetadata>>,
    /// Applied seq the next welcome reports instead of the durable one (a welcome composed
    /// while the previous connection's writes are still queued).
    stale_welcome: Option<u64>,
}

impl Aggregator {
    fn new() -> Aggregator {
        Aggregator {
            session: None,
            applied_seq: 0,
            applied: vec![],
            gaps: vec![],
            live_stored: vec![],
            writing: VecDeque::new(),
            write_at_once: true,
            refusals: vec![],
            closes: vec![],
            heartbeats: vec![],
            metadata: vec![],
            stale_welcome: None,
        }
    }

    /// The storage's own dedup, as in one atomic write: applied seq and samples together.
    fn write(&mut self, seq: u64) {
        if seq > self.applied_seq {
            if seq > self.applied_seq + 1 {
                self.gaps.push((self.applied_seq + 1, seq - 1));
            }
            self.applied_seq = seq;
            self.applied.push(seq);
        }
    }

    fn complete_writes(&mut self) {
        while let Some(seq) = self.writing.pop_front() {
            self.write(seq);
            if let Some(s) = &mut self.session {
                s.handle_durable(seq, Ok(())).unwrap();
            }
        }
    }

    /// The process dies: queued writes are lost, durable state stays.
    fn crash(&mut self) {
        self.session = None;
        self.writing.clear();
    }
}

/// Frames in flight on the three streams of the current connection.
#[derive(Default)]
struct Wire {
    up: VecDeque<(Lane, Frame)>,
    down: VecDeque<Frame>,
    up_closed: bool,
}

struct Sim {
    now: Millis,
    agent: Agent,
    agg: Aggregator,
    wire: Wire,
    connected: bool,
    cert_id: String,
    client_errors: Vec<ClientError>,
    /// The settings of every server session [`Sim::connect`] starts.
    server_cfg: ServerConfig,
}

impl Sim {
    fn new() -> Sim {
        Sim::with(ClientConfig::new(AGENT, "eu", "0.1.0"))
    }

    fn with(cfg: ClientConfig) -> Sim {
        Sim {
            now: T0,
            agent: Agent::new(cfg),
            agg: Aggregator::new(),
            wire: Wire::default(),
            connected: false,
            cert_id: AGENT.into(),
            client_errors: vec![],
            server_cfg: ServerConfig::new("0.1.0"),
        }
    }

    fn connect(&mut self) {
        self.wire = Wire::default();
        self.connected = true;
        self.agg.session = Some(ServerSession::new(
            self.server_cfg.clone(),
            self.cert_id.clone(),
            self.now,
        ));
        self.agent.session.handle_connected(self.now);
    }

    fn disconnect(&mut self) {
        self.connected = false;
        self.wire = Wire::default();
        self.agent.session.handle_connection_lost();
        self.agg.session = None;
        self.agg.writing.clear();
    }

    /// Moves frames both ways until nothing moves.
    fn run(&mut self) {
        for _ in 0..10_000 {
            if !self.step() {
                return;
            }
        }
        panic!("the simulation does not settle");
    }

    fn step(&mut self) -> bool {
        let mut moved = false;
        self.agent.session.handle_clock(self.now);
        // Client outputs.
        while let Some(t) = self.agent.session.poll_transmit() {
            moved = true;
            if !self.connected {
                continue;
            }
            match t {
                Transmit::Control(f) => self.wire.up.push_back((Lane::Control, f)),
                Transmit::Batches { from, max } => {
                    let batch: Vec<(u64, u64)> = self
                        .agent
                        .buffer
                        .range(from..)
                        .take(max as usize)
                        .map(|(s, b)| (*s, *b))
                        .collect();
                    for (seq, bytes) in batch {
                        self.agent.session.handle_sent(seq, bytes).unwrap();
                        self.wire.up.push_back((Lane::Batch, batch_frame(seq)));
                    }
                }
                Transmit::Live { from, to } => {
                    let seqs: Vec<u64> =
                        self.agent.buffer.range(from..to).map(|(s, _)| *s).collect();
                    for seq in seqs {
                        self.agent.live_sent.push(seq);
                        self.wire.up.push_back((Lane::Live, batch_frame(seq)));
                    }
                }
            }
        }
        self.agent.events();
        // Server inputs and outputs.
        while let Some((lane, f)) = self.wire.up.pop_front() {
            moved = true;
            self.server_receive(lane, f);
        }
        if self.agg.write_at_once {
            self.agg.complete_writes();
        }
        if let Some(s) = &mut self.agg.session {
            while let Some(t) = s.poll_transmit() {
                moved = true;
                match t {
                    ServerTransmit::Control(f) => self.wire.down.push_back(f),
                    ServerTransmit::Close { code, reason } => {
                        self.agg.closes.push((code, reason));
                        self.wire.up_closed = true;
                    }
                }
            }
            while let Some(e) = s.poll_event() {
                match e {
                    ServerEvent::Heartbeat(h) => self.agg.heartbeats.push(h),
                    ServerEvent::Metadata(m) => self.agg.metadata.push(m),
                }
            }
        }
        // Client inputs.
        while let Some(f) = self.wire.down.pop_front() {
            moved = true;
            // Frames cross the wire as bytes.
            let f = frame::decode(&frame::encode(&f)[4..]).unwrap();
            if let Err(e) = self.agent.session.handle_frame(f, self.now) {
                self.client_errors.push(e);
                self.connected = false;
            }
        }
        if self.wire.up_closed && self.connected {
            self.disconnect();
            moved = true;
        }
        self.agent.events();
        moved
    }

    fn server_receive(&mut self, lane: Lane, f: Frame) {
        let Some(s) = &mut self.agg.session else {
            return;
        };
        if s.is_closed() {
            return;
        }
        let r = match (lane, f) {
            (Lane::Control, f @ Frame::Hello(_)) if s.hello().is_none() => {
                match s.handle_hello(&frame::encode(&f)[4..]) {
                    Ok(_) => {
                        let applied = self
                            .agg
                            .stale_welcome
                            .take()
                            .unwrap_or(self.agg.applied_seq);
                        s.welcome(applied, self.now);
                        s.handle_checks("[]".into());
                        Ok(())
                    }
                    Err(r) => Err(r),
                }
            }
            (Lane::Control, f) => s.handle_control(f),
            (lane, Frame::Batch { seq, .. }) => match s.handle_batch(lane, seq, self.now) {
                Ok(Verdict::Live) => {
                    self.agg.live_stored.push(seq);
                    Ok(())
                }
                Ok(_) => {
                    self.agg.writing.push_back(seq);
                    Ok(())
                }
                Err(r) => Err(r),
            },
            (_, f) => panic!("unexpected {} frame", f.kind()),
        };
        if let Err(r) = r {
            self.agg.refusals.push(r);
        }
    }

    /// Advances simulated time to `t`, firing every deadline of both ends on the way.
    fn advance_to(&mut self, t: Millis) {
        self.run();
        loop {
            let agent = self.agent.session.poll_timeout();
            let agg = self.agg.session.as_ref().and_then(|s| s.poll_timeout());
            let Some(d) = agent.into_iter().chain(agg).min().filter(|d| *d <= t) else {
                break;
            };
            self.now = self.now.max(d);
            if agent.is_some_and(|a| a <= self.now)
                && let Err(e) = self.agent.session.handle_timeout(self.now)
            {
                self.client_errors.push(e);
                self.connected = false;
            }
            if agg.is_some_and(|a| a <= self.now)
                && let Some(s) = &mut self.agg.session
                && let Err(r) = s.handle_timeout(self.now)
            {
                self.agg.refusals.push(r);
            }
            self.run();
        }
        self.now = t;
        self.run();
    }
}

fn batch_frame(seq: u64) -> Frame {
    Frame::Batch {
        seq,
        payload: vec![],
        trace: None,
    }
}

#[test]
fn a_duplicate_ack_changes_nothing() {
    let mut s = Sim::new();
    s.connect();
    s.run();
    s.agent.collect(5);
    s.run();
    assert_eq!(s.agent.acked_events, vec![(5, 5)]);
    // The same ack again, and an older one: no event, nothing deleted, nothing resent.
    for seq in [5, 3] {
        s.wire.down.push_back(Frame::Ack { seq });
        s.run();
    }
    assert_eq!(s.agent.acked_events, vec![(5, 5)]);
    assert_eq!(s.agent.session.acked(), 5);
    assert_eq!(s.agent.session.poll_transmit(), None);
    assert!(s.client_errors.is_empty());
}

#[test]
fn acks_are_coalesced_and_in_seq_order() {
    let mut s = Sim::new();
    s.agg.write_at_once = false;
    s.connect();
    s.run();
    s.agent.collect(6);
    s.run();
    assert_eq!(s.agg.writing.len(), 6);
    // Three writes complete before the server looks: one ack covers them.
    let server = s.agg.session.as_mut().unwrap();
    for seq in [1, 2, 3] {
        server.handle_durable(seq, Ok(())).unwrap();
    }
    // Seq 5 is durable but 4 is not: 5 waits for 4.
    server.handle_durable(5, Ok(())).unwrap();
    let acks = drain_acks(server);
    assert_eq!(acks, vec![3]);
    server.handle_durable(4, Ok(())).unwrap();
    server.handle_durable(6, Ok(())).unwrap();
    assert_eq!(drain_acks(server), vec![6]);
}

fn drain_acks(s: &mut ServerSession) -> Vec<u64> {
    let mut acks = vec![];
    while let Some(t) = s.poll_transmit() {
        if let ServerTransmit::Control(Frame::Ack { seq }) = t {
            acks.push(seq);
        }
    }
    acks
}

#[test]
fn the_window_bounds_batches_in_flight() {
    let cfg = ClientConfig {
        window: 4,
        ..ClientConfig::new(AGENT, "eu", "0.1.0")
    };
    let mut s = Sim::with(cfg);
    s.agg.write_at_once = false;
    s.connect();
    s.run();
    s.agent.collect(10);
    s.run();
    assert_eq!(s.agg.writing, [1, 2, 3, 4]);
    s.agg.complete_writes();
    s.run();
    assert_eq!(s.agg.writing, [5, 6, 7, 8]);
    s.agg.complete_writes();
    s.run();
    s.agg.complete_writes();
    s.run();
    assert_eq!(s.agg.applied, (1..=10).collect::<Vec<_>>());
    assert!(s.agent.buffer.is_empty());
}

#[test]
fn a_reconnect_mid_window_resends_everything_unacked_once() {
    let mut s = Sim::new();
    s.agg.write_at_once = false;
    s.connect();
    s.run();
    s.agent.collect(10);
    s.run();
    // 1..=4 durable and acknowledged, 5..=7 durable but their ack is lost with the
    // connection, 8..=10 never written.
    let server = s.agg.session.as_mut().unwrap();
    for _ in 0..4 {
        let seq = s.agg.writing.pop_front().unwrap();
        s.agg.applied_seq = seq;
        s.agg.applied.push(seq);
        server.handle_durable(seq, Ok(())).unwrap();
    }
    s.run();
    assert_eq!(s.agent.session.acked(), 4);
    for _ in 0..3 {
        let seq = s.agg.writing.pop_front().unwrap();
        s.agg.write(seq);
    }
    s.disconnect();
    assert_eq!(s.agent.session.in_flight().count(), 0);
    assert_eq!(s.agent.buffer.len(), 6, "nothing unacknowledged is deleted");

    s.agg.write_at_once = true;
    s.connect();
    s.run();
    assert_eq!(s.agg.applied, (1..=10).collect::<Vec<_>>(), "each once");
    assert!(s.agent.buffer.is_empty());
    assert_eq!(s.agent.deleted, (1..=10).collect());
}

#[test]
fn a_crash_between_durable_write_and_ack_loses_nothing_and_applies_nothing_twice() {
    let mut s = Sim::new();
    s.agg.write_at_once = false;
    s.connect();
    s.run();
    s.agent.collect(5);
    s.run();
    // Written durably, then the aggregator dies before the acks leave.
    while let Some(seq) = s.agg.writing.pop_front() {
        s.agg.write(seq);
    }
    s.agg.crash();
    s.disconnect();
    assert_eq!(
        s.agent.buffer.len(),
        5,
        "unacknowledged batches stay buffered"
    );

    // The restarted aggregator welcomes with its durable applied seq: the agent deletes
    // those and resends nothing.
    s.agg.write_at_once = true;
    s.connect();
    s.run();
    assert_eq!(s.agent.buffer.len(), 0);
    assert_eq!(s.agg.applied, vec![1, 2, 3, 4, 5]);
    assert!(s.agent.acked_events.is_empty());

    // Had the welcome been composed before those writes finished (the replaced
    // connection's writes still queued), the agent resends them: the server acknowledges
    // them as duplicates and stores nothing twice.
    s.agent.collect(3);
    s.run();
    s.agg.write_at_once = false;
    s.agent.collect(2);
    s.run();
    while let Some(seq) = s.agg.writing.pop_front() {
        s.agg.write(seq);
    }
    s.agg.crash();
    s.disconnect();
    s.agg.stale_welcome = Some(8);
    s.agg.write_at_once = true;
    s.connect();
    s.run();
    assert_eq!(s.agg.applied, (1..=10).collect::<Vec<_>>());
    assert_eq!(s.agent.acked_events.last(), Some(&(10, 2)));
    assert!(s.agent.buffer.is_empty());
}

#[test]
fn the_server_classifies_resends_as_duplicates() {
    let mut s = ServerSession::new(ServerConfig::new("0.1.0"), AGENT, T0);
    let hello = frame::encode(&hello_frame(crate::frame::PROTOCOL_VERSION, AGENT));
    s.handle_hello(&hello[4..]).unwrap();
    s.welcome(3, T0);
    assert_eq!(s.handle_batch(Lane::Batch, 2, T0), Ok(Verdict::Duplicate));
    assert_eq!(s.handle_batch(Lane::Batch, 3, T0), Ok(Verdict::Duplicate));
    assert_eq!(s.handle_batch(Lane::Batch, 4, T0), Ok(Verdict::Next));
    for seq in [2, 3, 4] {
        s.handle_durable(seq, Ok(())).unwrap();
    }
    assert!(matches!(
        s.poll_transmit(),
        Some(ServerTransmit::Control(Frame::Welcome(_)))
    ));
    assert_eq!(drain_acks(&mut s), vec![4]);
}

fn hello_frame(protocol: u16, agent_id: &str) -> Frame {
    Frame::Hello(crate::frame::Hello {
        protocol,
        agent_id: agent_id.into(),
        region: "eu".into(),
        agent_version: "0.1.0".into(),
        clock_ms: T0,
        acked_seq: 0,
    })
}

#[test]
fn a_refused_hello_names_the_problem_and_closes_with_its_code() {
    // (hello protocol, hello agent id, close code, metric label, reason contains)
    let cases: &[(u16, &str, u32, &str, &str)] = &[
        (
            crate::frame::PROTOCOL_VERSION + 1,
            AGENT,
            close::VERSION_MISMATCH,
            "version",
            "protocol version mismatch",
        ),
        (
            crate::frame::PROTOCOL_VERSION,
            "db-9",
            close::IDENTITY_MISMATCH,
            "identity",
            "hello claims agent id \"db-9\" but the client certificate is for \"web-1\"",
        ),
    ];
    for &(protocol, id, code, label, reason) in cases {
        let mut s = ServerSession::new(ServerConfig::new("0.1.0"), AGENT, T0);
        let body = frame::encode(&hello_frame(protocol, id));
        let r = s.handle_hello(&body[4..]).unwrap_err();
        assert_eq!((r.code, r.label), (code, label), "{reason}");
        assert!(r.reason.contains(reason), "{}", r.reason);
        assert_eq!(
            s.poll_transmit(),
            Some(ServerTransmit::Control(Frame::Refused {
                reason: r.reason.clone()
            }))
        );
        assert_eq!(
            s.poll_transmit(),
            Some(ServerTransmit::Close {
                code,
                reason: r.reason.clone()
            })
        );
        assert!(s.is_closed());

        // The client reports the refusal with the server's reason.
        let mut c =
            ClientSession::new(ClientConfig::new(id, "eu", "0.1.0"), BufferState::default());
        c.handle_connected(T0);
        assert!(matches!(
            c.poll_transmit(),
            Some(Transmit::Control(Frame::Hello(_)))
        ));
        let e = c
            .handle_frame(
                Frame::Refused {
                    reason: r.reason.clone(),
                },
                T0 + 3,
            )
            .unwrap_err();
        assert_eq!(e, ClientError::Refused(r.reason.clone()));
        assert!(!c.is_established());
    }
}

#[test]
fn a_welcome_of_another_version_or_no_welcome_ends_the_client_session() {
    let mut c = ClientSession::new(
        ClientConfig::new(AGENT, "eu", "0.1.0"),
        BufferState::default(),
    );
    c.handle_connected(T0);
    let w = Frame::Welcome(crate::frame::Welcome {
        protocol: crate::frame::PROTOCOL_VERSION + 1,
        aggregator_version: "9".into(),
        clock_ms: T0,
        applied_seq: 0,
        alive_every_ms: 1_000,
    });
    assert!(
        matches!(c.handle_frame(w, T0), Err(ClientError::Refused(m)) if m.contains("mismatch"))
    );

    c.handle_connected(T0);
    assert_eq!(c.poll_timeout(), Some(T0 + 10_000));
    assert_eq!(c.handle_timeout(T0 + 9_999), Ok(()));
    assert_eq!(
        c.handle_timeout(T0 + 10_000),
        Err(ClientError::Protocol("no welcome within 10s".into()))
    );

    c.handle_connected(T0);
    let e = c.handle_frame(Frame::Ack { seq: 1 }, T0).unwrap_err();
    assert_eq!(e, ClientError::Protocol("expected welcome, got ack".into()));
}

#[test]
fn a_server_without_a_hello_in_time_refuses_the_connection() {
    let mut s = ServerSession::new(ServerConfig::new("0.1.0"), AGENT, T0);
    assert_eq!(s.poll_timeout(), Some(T0 + 10_000));
    let r = s.handle_timeout(T0 + 10_000).unwrap_err();
    assert_eq!(
        (r.code, r.reason.as_str()),
        (close::MALFORMED, "no hello within 10s")
    );
}

#[test]
fn checks_frames_reach_the_client_and_unexpected_frames_end_it() {
    let mut s = Sim::new();
    s.connect();
    s.run();
    let checks: Vec<_> = {
        s.wire.down.push_back(Frame::Checks {
            json: "[{\"name\":\"a\"}]".into(),
        });
        s.step();
        s.agent.events()
    };
    // The sim consumed events already; the frame itself must not be an error.
    assert!(
        s.client_errors.is_empty(),
        "{:?} {checks:?}",
        s.client_errors
    );
    s.wire.down.push_back(frame_hello_back());
    s.run();
    assert_eq!(
        s.client_errors,
        vec![ClientError::Protocol("unexpected hello frame".into())]
    );
}

fn frame_hello_back() -> Frame {
    hello_frame(crate::frame::PROTOCOL_VERSION, AGENT)
}

#[test]
fn a_backlog_with_live_data_sends_live_copies_acked_only_in_order() {
    let cfg = ClientConfig {
        window: 4,
        ..ClientConfig::new(AGENT, "eu", "0.1.0")
    };
    let mut s = Sim::with(cfg);
    s.agg.write_at_once = false;
    // An hour of backlog built while cut off.
    s.agent.collect(40);
    s.connect();
    s.run();
    assert_eq!(s.agg.writing, [1, 2, 3, 4]);
    assert!(
        s.agent.live_sent.is_empty(),
        "the backlog itself does not go live"
    );
    // New data while 36 batches wait: it goes live at once.
    s.agent.collect(1);
    s.run();
    assert_eq!(s.agent.live_sent, [41]);
    assert_eq!(s.agg.live_stored, [41]);
    s.agent.collect(2);
    s.run();
    assert_eq!(s.agent.live_sent, [41, 42, 43]);
    // Live copies are never acknowledged and do not move the applied seq.
    assert_eq!(s.agg.session.as_ref().unwrap().applied(), 0);
    assert_eq!(s.agent.session.acked(), 0);
    // The backlog drains in order; acks come only from the batch stream.
    s.agg.write_at_once = true;
    s.agg.complete_writes();
    s.run();
    assert_eq!(s.agg.applied, (1..=43).collect::<Vec<_>>());
    let acks: Vec<u64> = s.agent.acked_events.iter().map(|(seq, _)| *seq).collect();
    assert!(acks.windows(2).all(|w| w[0] < w[1]), "{acks:?}");
    assert_eq!(acks.last(), Some(&43));
    // Drained: new data no longer goes live.
    s.agent.collect(1);
    s.run();
    assert_eq!(s.agent.live_sent, [41, 42, 43]);
}

#[test]
fn live_copies_are_limited_to_the_newest_burst() {
    let mut s = Sim::new();
    s.agg.write_at_once = false;
    s.connect();
    s.run();
    s.agent.collect(300);
    s.run();
    // 256 in flight, 44 waiting: only the newest 16 of those written since go live.
    assert_eq!(s.agent.live_sent, (285..=300).collect::<Vec<_>>());
    // Seqs on the live stream out of step end the connection.
    let server = s.agg.session.as_mut().unwrap();
    let r = server.handle_batch(Lane::Live, 290, T0).unwrap_err();
    assert_eq!(r.code, close::MALFORMED);
    assert_eq!(r.reason, "batch seq 290 after 300: seqs must increase");
}

#[test]
fn a_seq_gap_from_the_when_full_policy_is_counted_not_refused() {
    let mut s = Sim::new();
    s.agent.collect(6);
    // Cut off, the buffer fills: the policy drops 1 and 2 (never sent).
    assert_eq!(s.agent.drop_oldest_unsent(), Some(1));
    assert_eq!(s.agent.drop_oldest_unsent(), Some(2));
    s.connect();
    s.run();
    assert_eq!(s.agg.gaps, vec![(1, 2)]);
    assert_eq!(s.agg.applied, vec![3, 4, 5, 6]);
    assert_eq!(s.agent.acked_events.last(), Some(&(6, 6)));
    assert!(s.agg.refusals.is_empty());
    // The heartbeat reports the dropped samples.
    assert_eq!(s.agg.heartbeats.last().map(|h| h.dropped_samples), Some(20));

    // The server's verdict names the gap.
    let mut server = ServerSession::new(ServerConfig::new("0.1.0"), AGENT, T0);
    let hello = frame::encode(&frame_hello_back());
    server.handle_hello(&hello[4..]).unwrap();
    server.welcome(6, T0);
    assert_eq!(
        server.handle_batch(Lane::Batch, 9, T0),
        Ok(Verdict::Gap { from: 7, to: 8 })
    );
    assert_eq!(server.handle_batch(Lane::Batch, 10, T0), Ok(Verdict::Next));
    // Out of step on the batch stream is refused.
    let r = server.handle_batch(Lane::Batch, 10, T0).unwrap_err();
    assert_eq!((r.code, r.label), (close::MALFORMED, "malformed"));
    assert_eq!(r.reason, "batch seq 10 after 10: seqs must increase");
    assert!(server.is_closed());
}

#[test]
fn periodic_heartbeats_report_what_changed_and_are_left_out_while_batches_say_the_rest() {
    // Only the periodic heartbeats: the liveness ones have their own test.
    let mut s = Sim::with(ClientConfig {
        heartbeat_backlog_slack: 1_000,
        ..ClientConfig::new(AGENT, "eu", "0.1.0")
    });
    s.server_cfg.alive_every_ms = 3_600_000;
    s.agg.write_at_once = false;
    s.connect();
    s.run();
    assert_eq!(heartbeat_times(&s), [0], "one right after the welcome");
    // Idle: nothing else tells the aggregator the agent is there.
    s.advance_to(T0 + 15_000);
    assert_eq!(heartbeat_times(&s), [0, 15_000]);
    // Batches went out and the backlog (300 bytes, unacknowledged) moved by less than the
    // slack: nothing new to say, and nothing to wake up for until the 5-minute refresh.
    s.agent.collect(3);
    s.run();
    s.advance_to(T0 + 30_000);
    assert_eq!(heartbeat_times(&s).len(), 2);
    assert_eq!(s.agent.session.poll_timeout(), Some(T0 + 315_000));
    // The backlog moves by the slack: reported at once, as a period has passed since the
    // last heartbeat.
    s.agent.collect(7);
    s.run();
    s.advance_to(T0 + 31_000);
    assert_eq!(
        s.agg.heartbeats[2..],
        [Heartbeat {
            clock_ms: T0 + 30_000,
            dropped_samples: 0,
            backlog_bytes: 1_000
        }]
    );
    // Dropped samples are reported even while batches flow: a period after the last
    // heartbeat.
    s.agent.collect(2);
    s.agent.drop_oldest_unsent();
    s.run();
    s.advance_to(T0 + 44_999);
    assert_eq!(heartbeat_times(&s).len(), 3);
    s.advance_to(T0 + 45_000);
    assert_eq!(heartbeat_times(&s)[3..], [45_000]);
    assert_eq!(s.agg.heartbeats[3].dropped_samples, 10);
    // Everything is acknowledged; the emptied backlog is reported a period after the last.
    s.agg.write_at_once = true;
    s.agg.complete_writes();
    s.run();
    s.agent.collect(0);
    s.advance_to(T0 + 60_000);
    assert_eq!(heartbeat_times(&s)[4..], [60_000]);
    assert_eq!(s.agg.heartbeats[4].backlog_bytes, 0);
    // A batch every 15 s and nothing else changing: the clock and backlog are still
    // reported every refresh interval (300 s by default).
    let t0 = s.now - T0;
    collect_every(&mut s, t0 + 1, Some(15_000), t0 + 610_000);
    assert_eq!(heartbeat_times(&s)[5..], [t0 + 300_000, t0 + 600_000]);
}

#[test]
fn shutdown_waits_for_acks_up_to_the_grace() {
    let mut s = Sim::new();
    s.agg.write_at_once = false;
    s.connect();
    s.run();
    s.agent.collect(3);
    s.run();
    s.agent.session.begin_shutdown(s.now, 5_000);
    s.agent.collect(2);
    s.run();
    assert_eq!(s.agg.writing, [1, 2, 3], "nothing new after shutdown began");
    s.agg.complete_writes();
    s.run();
    assert_eq!(s.agent.finished, Some(true));

    let mut s = Sim::new();
    s.agg.write_at_once = false;
    s.connect();
    s.run();
    s.agent.collect(3);
    s.run();
    s.agent.session.begin_shutdown(s.now, 5_000);
    s.advance_to(T0 + 5_000);
    assert_eq!(s.agent.finished, Some(false));
    assert_eq!(s.agent.buffer.len(), 3);
}

#[test]
fn the_byte_window_holds_back_batches() {
    let cfg = ClientConfig {
        window_bytes: 250,
        ..ClientConfig::new(AGENT, "eu", "0.1.0")
    };
    let mut c = ClientSession::new(
        cfg,
        BufferState {
            next_seq: 1,
            ..BufferState::default()
        },
    );
    c.handle_connected(T0);
    c.poll_transmit();
    let w = Frame::Welcome(crate::frame::Welcome {
        protocol: crate::frame::PROTOCOL_VERSION,
        aggregator_version: "1".into(),
        clock_ms: T0 - 1_000,
        applied_seq: 0,
        alive_every_ms: 1_000,
    });
    c.handle_frame(w, T0 + 20).unwrap();
    assert_eq!(
        c.poll_event(),
        Some(ClientEvent::Connected {
            applied_seq: 0,
            skew_ms: 1_010
        })
    );
    c.handle_buffer(BufferState {
        next_seq: 10,
        ..BufferState::default()
    });
    assert!(matches!(
        c.poll_transmit(),
        Some(Transmit::Control(Frame::Heartbeat(_)))
    ));
    assert_eq!(
        c.poll_transmit(),
        Some(Transmit::Batches { from: 1, max: 256 })
    );
    for seq in 1..=3 {
        c.handle_sent(seq, 100).unwrap();
    }
    // 300 bytes in flight ≥ 250: no more until an ack.
    assert_eq!(c.poll_transmit(), None);
    assert_eq!(
        c.handle_sent(2, 1),
        Err(ClientError::OutOfOrder { seq: 2, cursor: 4 })
    );
    // The when-full policy evicts seq 1 while in flight: its bytes no longer hold the window.
    c.handle_buffer(BufferState {
        next_seq: 10,
        unacked_bytes: 200,
        ..BufferState::default()
    });
    assert_eq!(
        c.poll_transmit(),
        Some(Transmit::Batches { from: 4, max: 253 })
    );
    c.handle_sent(4, 100).unwrap();
    assert_eq!(c.poll_transmit(), None);
    c.handle_frame(Frame::Ack { seq: 2 }, T0 + 30).unwrap();
    assert_eq!(
        c.poll_transmit(),
        Some(Transmit::Batches { from: 5, max: 254 })
    );
}

/// One step of a random schedule.
#[derive(Clone, Debug)]
enum Op {
    Collect(u8),
    DropOldest,
    Exchange,
    CompleteWrites,
    LoseConnection,
    Connect,
    CrashAggregator,
    Tick(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..20).prop_map(Op::Collect),
        1 => Just(Op::DropOldest),
        4 => Just(Op::Exchange),
        3 => Just(Op::CompleteWrites),
        1 => Just(Op::LoseConnection),
        2 => Just(Op::Connect),
        1 => Just(Op::CrashAggregator),
        1 => (1u16..20_000).prop_map(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Contracts 1 and 2 under random loss, reconnects and crashes: every batch the agent
    /// deleted was durably applied, or dropped by policy before it was ever applied (a gap);
    /// no seq is applied twice; and once the link is left alone, everything drains.
    #[test]
    fn random_schedules_lose_nothing_acknowledged_and_apply_nothing_twice(
        ops in prop::collection::vec(op(), 1..80),
        window in 1u64..12,
    ) {
        let cfg = ClientConfig { window, ..ClientConfig::new(AGENT, "eu", "0.1.0") };
        let mut s = Sim::with(cfg);
        s.agg.write_at_once = false;
        let mut dropped = BTreeSet::new();
        for op in ops {
            match op {
                Op::Collect(n) => s.agent.collect(u64::from(n)),
                Op::DropOldest => dropped.extend(s.agent.drop_oldest_unsent()),
                Op::Exchange => { s.step(); }
                Op::CompleteWrites => s.agg.complete_writes(),
                Op::LoseConnection => if s.connected { s.disconnect() },
                Op::Connect => if !s.connected { s.connect() },
                Op::CrashAggregator => { s.agg.crash(); if s.connected { s.disconnect() } },
                Op::Tick(ms) => { let t = s.now + i64::from(ms); s.advance_to(t) }
            }
            let applied: BTreeSet<u64> = s.agg.applied.iter().copied().collect();
            prop_assert_eq!(applied.len(), s.agg.applied.len(), "a seq applied twice");
            prop_assert!(s.agent.deleted.is_subset(&applied), "deleted but not durable");
            prop_assert!(applied.is_disjoint(&dropped));
        }
        // Left alone on a good link, everything buffered arrives.
        if !s.connected { s.connect(); }
        s.agg.write_at_once = true;
        s.run();
        s.agg.complete_writes();
        s.run();
        prop_assert!(s.client_errors.is_empty(), "{:?}", s.client_errors);
        prop_assert!(s.agent.buffer.is_empty(), "left buffered: {:?}", s.agent.buffer);
        let expected: Vec<u64> = (1..s.agent.next_seq).filter(|q| !dropped.contains(q)).collect();
        prop_assert_eq!(&s.agg.applied, &expected);
    }
}

#[test]
fn a_hello_that_is_not_one_is_refused_as_malformed() {
    // (first control-stream body, reason)
    let ack = frame::encode(&Frame::Ack { seq: 1 });
    let cases: &[(&[u8], &str)] = &[
        (&ack[4..], "expected hello, got ack"),
        (&[0xff, 0xff], "bad hello: malformed frame"),
    ];
    for &(body, reason) in cases {
        let mut s = ServerSession::new(ServerConfig::new("0.1.0"), AGENT, T0);
        let r = s.handle_hello(body).unwrap_err();
        assert_eq!((r.code, r.label), (close::MALFORMED, "malformed"));
        assert!(r.reason.starts_with(reason), "{}", r.reason);
        assert!(matches!(
            s.poll_transmit(),
            Some(ServerTransmit::Control(Frame::Refused { .. }))
        ));
        assert!(matches!(
            s.poll_transmit(),
            Some(ServerTransmit::Close {
                code: close::MALFORMED,
                ..
            })
        ));
    }
    // Batches before the welcome, or a batch on the control lane, are out of step too.
    let mut s = ServerSession::new(ServerConfig::new("0.1.0"), AGENT, T0);
    assert_eq!(
        s.handle_batch(Lane::Batch, 1, T0).unwrap_err().code,
        close::MALFORMED
    );
    let mut s = ServerSession::new(ServerConfig::new("0.1.0"), AGENT, T0);
    s.handle_hello(&frame::encode(&frame_hello_back())[4..])
        .unwrap();
    s.welcome(0, T0);
    assert_eq!(
        s.handle_batch(Lane::Control, 1, T0).unwrap_err().code,
        close::MALFORMED
    );
    // A write that fails closes with "shutting down": the agent resends later.
    let mut s = ServerSession::new(ServerConfig::new("0.1.0"), AGENT, T0);
    s.handle_hello(&frame::encode(&frame_hello_back())[4..])
        .unwrap();
    s.welcome(0, T0);
    assert_eq!(s.handle_batch(Lane::Batch, 1, T0), Ok(Verdict::Next));
    let r = s.handle_durable(1, Err("disk full".into())).unwrap_err();
    assert_eq!(
        (r.code, r.reason.as_str()),
        (close::SHUTDOWN, "batch 1 not stored: disk full")
    );
}

fn family(name: &str, kind: MetricType, help: &str) -> FamilyMetadata {
    FamilyMetadata {
        family: name.into(),
        meta: Metadata::new(kind, help),
    }
}

/// Every family name the aggregator received metadata for, in order, over all events.
fn names(events: &[Vec<FamilyMetadata>]) -> Vec<String> {
    events.iter().flatten().map(|f| f.family.clone()).collect()
}

#[test]
fn metadata_goes_out_when_first_seen_or_changed_and_again_after_a_reconnect() {
    let mut sim = Sim::new();
    // Known before any connection: sent right after the welcome.
    sim.agent.session.handle_metadata([
        family("node_load1", MetricType::Gauge, "1m load average."),
        family("up", MetricType::Unknown, ""),
    ]);
    sim.connect();
    sim.run();
    assert_eq!(names(&sim.agg.metadata), ["node_load1", "up"]);

    // Reported again unchanged: nothing is sent.
    sim.agent.session.handle_metadata([family(
        "node_load1",
        MetricType::Gauge,
        "1m load average.",
    )]);
    sim.run();
    assert_eq!(sim.agg.metadata.len(), 1);

    // A new family and a changed one: only those two.
    sim.agent.session.handle_metadata([
        family("node_load1", MetricType::Gauge, "1m load average."),
        family("req_total", MetricType::Counter, "Requests."),
        family("up", MetricType::Gauge, "Target up."),
    ]);
    sim.run();
    assert_eq!(sim.agg.metadata.len(), 2);
    assert_eq!(
        sim.agg.metadata[1],
        [
            family("req_total", MetricType::Counter, "Requests."),
            family("up", MetricType::Gauge, "Target up."),
        ]
    );

    // Changes while disconnected are not queued twice; the new connection gets everything,
    // latest versions only.
    sim.disconnect();
    sim.agent.session.handle_metadata([family(
        "up",
        MetricType::Gauge,
        "Whether the target is up.",
    )]);
    sim.run();
    assert_eq!(sim.agg.metadata.len(), 2);
    sim.connect();
    sim.run();
    assert_eq!(sim.agg.metadata.len(), 3);
    assert_eq!(
        sim.agg.metadata[2],
        [
            family("node_load1", MetricType::Gauge, "1m load average."),
            family("req_total", MetricType::Counter, "Requests."),
            family("up", MetricType::Gauge, "Whether the target is up."),
        ]
    );
    assert!(sim.agg.refusals.is_empty() && sim.client_errors.is_empty());
}

#[test]
fn many_families_are_split_over_frames_and_long_texts_truncated() {
    let mut sim = Sim::new();
    let n = MAX_FAMILIES_PER_FRAME * 2 + 5;
    sim.agent.session.handle_metadata(
        (0..n).map(|i| family(&format!("m{i:05}"), MetricType::Gauge, &"h".repeat(5000))),
    );
    // Empty names are never sent.
    sim.agent
        .session
        .handle_metadata([family("", MetricType::Gauge, "")]);
    assert_eq!(sim.agent.session.metadata_len(), n);
    sim.connect();
    sim.run();
    let sizes: Vec<usize> = sim.agg.metadata.iter().map(Vec::len).collect();
    assert_eq!(sizes, [MAX_FAMILIES_PER_FRAME, MAX_FAMILIES_PER_FRAME, 5]);
    assert!(
        sim.agg
            .metadata
            .iter()
            .flatten()
            .all(|f| f.meta.help.len() == crate::metadata::MAX_TEXT_BYTES)
    );
    assert!(sim.agg.refusals.is_empty());
}

#[test]
fn malformed_metadata_frames_close_the_connection_and_store_nothing() {
    let established = || {
        let mut s = ServerSession::new(ServerConfig::new("0.1.0"), AGENT, T0);
        s.handle_hello(&frame::encode(&frame_hello_back())[4..])
            .unwrap();
        s.welcome(0, T0);
        while s.poll_transmit().is_some() {}
        s
    };
    let too_long = "x".repeat(crate::metadata::MAX_TEXT_BYTES + 1);
    let cases: Vec<(Vec<FamilyMetadata>, &str)> = vec![
        (
            vec![family("", MetricType::Gauge, "h")],
            "metadata for a family with an empty name",
        ),
        (
            vec![
                family("a", MetricType::Gauge, "h"),
                family("a", MetricType::Counter, "h"),
            ],
            "metadata frame names family \"a\" twice",
        ),
        (
            vec![family("a", MetricType::Gauge, &too_long)],
            "metadata help of 4097 bytes exceeds 4096",
        ),
        (
            (0..=MAX_FAMILIES_PER_FRAME)
                .map(|i| family(&format!("m{i}"), MetricType::Gauge, ""))
                .collect(),
            "metadata frame with 1001 families; at most 1000 are allowed",
        ),
    ];
    for (families, want) in cases {
        let mut s = established();
        let r = s.handle_control(Frame::Metadata { families }).unwrap_err();
        assert_eq!((r.code, r.reason.as_str()), (close::MALFORMED, want));
        assert!(s.is_closed());
        assert_eq!(s.poll_event(), None, "{want}: nothing is taken");
        assert_eq!(
            s.poll_transmit(),
            Some(ServerTransmit::Close {
                code: close::MALFORMED,
                reason: want.into()
            })
        );
    }
    // A good frame becomes one event; an empty one none.
    let mut s = established();
    let good = vec![family("a", MetricType::Summary, "h")];
    s.handle_control(Frame::Metadata {
        families: good.clone(),
    })
    .unwrap();
    s.handle_control(Frame::Metadata { families: vec![] })
        .unwrap();
    assert_eq!(s.poll_event(), Some(ServerEvent::Metadata(good)));
    assert_eq!(s.poll_event(), None);
    // Before the welcome it is ignored, like a heartbeat.
    let mut s = ServerSession::new(ServerConfig::new("0.1.0"), AGENT, T0);
    s.handle_control(Frame::Metadata {
        families: vec![family("a", MetricType::Gauge, "h")],
    })
    .unwrap();
    assert_eq!(s.poll_event(), None);
}

/// A welcome of `protocol` asking for a heartbeat every `alive_every_ms`, as it reaches the
/// agent: through the wire encoding of its version.
fn welcome_every(protocol: u16, alive_every_ms: u32) -> Frame {
    let w = Frame::Welcome(crate::frame::Welcome {
        protocol,
        aggregator_version: "0".into(),
        clock_ms: T0,
        applied_seq: 0,
        alive_every_ms,
    });
    frame::decode(&frame::encode(&w)[4..]).unwrap()
}

fn welcome(protocol: u16) -> Frame {
    welcome_every(protocol, crate::frame::ALIVE_EVERY_MS as u32)
}

fn established_client(protocol: u16) -> ClientSession {
    established_client_with(ClientConfig::new(AGENT, "eu", "0.1.0"), welcome(protocol))
}

fn established_client_with(cfg: ClientConfig, welcome: Frame) -> ClientSession {
    let mut c = ClientSession::new(cfg, BufferState::default());
    c.handle_connected(T0);
    while c.poll_transmit().is_some() {}
    c.handle_frame(welcome, T0).unwrap();
    while c.poll_transmit().is_some() {}
    c
}

fn heartbeats(c: &mut ClientSession) -> usize {
    std::iter::from_fn(|| c.poll_transmit())
        .filter(|t| matches!(t, Transmit::Control(Frame::Heartbeat(_))))
        .count()
}

#[test]
fn a_v3_client_heartbeats_only_when_nothing_else_went_out_for_a_second() {
    // v3 and v4 aggregators say nothing of an interval (what a v5 one would have asked for
    // is not on their wire): the agent keeps a second. A v5 aggregator may ask for one.
    for (protocol, asked) in [
        (3, 7_500),
        (4, 7_500),
        (crate::frame::PROTOCOL_VERSION, 1_000),
    ] {
        let c = established_client_with(
            ClientConfig::new(AGENT, "eu", "0.1.0"),
            welcome_every(protocol, asked),
        );
        heartbeat_every_second(c);
    }
}

fn heartbeat_every_second(mut c: ClientSession) {
    let every = crate::frame::ALIVE_EVERY_MS;
    let half = every / 2;
    assert_eq!(c.alive_every_ms(), Some(every), "v{}", c.protocol());
    // The heartbeat right after the welcome was the last send; idle, a heartbeat whenever
    // one and a half intervals passed without a send.
    assert_eq!(c.poll_timeout(), Some(T0 + 3 * half));
    let mut at = vec![];
    for i in 1..=9 {
        c.handle_timeout(T0 + i * half).unwrap();
        if heartbeats(&mut c) == 1 {
            at.push(i * half);
        }
    }
    assert_eq!(at, [3 * half, 6 * half, 9 * half], "v{}", c.protocol());
    // A batch every interval: nothing extra goes out.
    for i in 10..=21 {
        if i % 2 == 0 {
            c.handle_clock(T0 + i * half);
            c.handle_buffer(BufferState {
                next_seq: i as u64,
                ..Default::default()
            });
            c.handle_sent(i as u64 - 1, 10).unwrap();
        }
        c.handle_timeout(T0 + i * half).unwrap();
        assert_eq!(heartbeats(&mut c), 0, "half {i}");
    }
    // Silence again after the batch at 20 halves: a heartbeat at 23, one and a half
    // intervals later.
    for i in 22..=24 {
        c.handle_timeout(T0 + i * half).unwrap();
        assert_eq!(heartbeats(&mut c), usize::from(i == 23), "half {i}");
    }
}

/// Times (relative to [`T0`]) of the heartbeats the aggregator of `s` received.
fn heartbeat_times(s: &Sim) -> Vec<Millis> {
    s.agg.heartbeats.iter().map(|h| h.clock_ms - T0).collect()
}

/// Runs `s` from its time to `until` (relative to [`T0`]) with a batch collected every
/// `batch_every` ms from `first_batch` on (none when `None`); returns the times (relative
/// to `T0`) at which a batch went out.
fn collect_every(
    s: &mut Sim,
    first_batch: Millis,
    batch_every: Option<Millis>,
    until: Millis,
) -> Vec<Millis> {
    let mut sent = vec![];
    let mut next = batch_every.map(|_| first_batch);
    loop {
        match next.filter(|t| *t <= until) {
            Some(t) => {
                s.advance_to(T0 + t);
                s.agent.collect(1);
                s.run();
                sent.push(t);
                next = batch_every.map(|e| t + e);
            }
            None => {
                s.advance_to(T0 + until);
                return sent;
            }
        }
    }
}

/// The longest time between two things going out (batches at `batches`, heartbeats at
/// `heartbeats`) from `from` to `to`.
fn longest_silence(batches: &[Millis], heartbeats: &[Millis], from: Millis, to: Millis) -> Millis {
    let mut t: Vec<Millis> = batches
        .iter()
        .chain(heartbeats)
        .copied()
        .filter(|t| (from..=to).contains(t))
        .collect();
    t.push(from);
    t.push(to);
    t.sort();
    t.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
}

#[test]
fn a_v5_client_heartbeats_at_the_welcomes_interval_and_not_while_batches_flow_faster() {
    // An aggregator that counts agents down after 30 s asks for 7.5 s.
    let mut s = Sim::with(ClientConfig {
        // Only the liveness heartbeats: the periodic ones have their own test.
        heartbeat_every_ms: 3_600_000,
        ..ClientConfig::new(AGENT, "eu", "0.1.0")
    });
    s.server_cfg.alive_every_ms = crate::frame::alive_every_for(30_000);
    s.connect();
    s.run();
    assert_eq!(s.agent.session.protocol(), crate::frame::PROTOCOL_VERSION);
    assert_eq!(s.agent.session.alive_every_ms(), Some(7_500));
    assert_eq!(s.agent.session.poll_timeout(), Some(T0 + 11_250));
    assert_eq!(
        heartbeat_times(&s),
        vec![0],
        "the one right after the welcome"
    );

    // Ten minutes of a batch every 10 s (more than the interval, less than one and a half):
    // not one heartbeat.
    let batches = collect_every(&mut s, 10_000, Some(10_000), 600_000);
    assert_eq!(batches.len(), 60);
    assert_eq!(heartbeat_times(&s), vec![0]);
    assert_eq!(s.agg.applied.len(), 60, "everything arrived");

    // Idle: a heartbeat one and a half intervals after the last batch (at 600 s), then
    // after every one and a half more, so never more than two intervals of silence.
    collect_every(&mut s, 0, None, 660_000);
    let hb = heartbeat_times(&s);
    assert_eq!(hb[1..], [611_250, 622_500, 633_750, 645_000, 656_250]);
    assert!(longest_silence(&batches, &hb, 0, 660_000) <= 2 * 7_500);
    assert!(s.client_errors.is_empty(), "{:?}", s.client_errors);
}

#[test]
fn at_the_default_settings_an_agent_collecting_every_10s_sends_a_heartbeat_per_5_minutes() {
    // What the agent does by default against an aggregator of each version (v5 with its
    // default 30 s threshold): collect every 10 s for ten minutes. A v4 aggregator keeps
    // the agent to a second, so six liveness heartbeats a cycle; against v5 the batches
    // keep the agent alive and nothing changes, so only the refresh of its clock and
    // backlog every 5 minutes goes out.
    for (agent_protocol, want) in [(4, 6 * 60), (crate::frame::PROTOCOL_VERSION, 2)] {
        let mut s = Sim::new();
        s.agent.session.announce(agent_protocol);
        s.server_cfg.alive_every_ms = crate::frame::alive_every_for(30_000);
        s.connect();
        s.run();
        assert_eq!(s.agent.session.protocol(), agent_protocol);
        let batches = collect_every(&mut s, 300, Some(10_000), 600_000);
        let hb = heartbeat_times(&s);
        // The first came right after the welcome.
        assert_eq!(hb.len() - 1, want, "v{agent_protocol}: {hb:?}");
        let alive = s.agent.session.alive_every_ms().unwrap();
        assert!(
            longest_silence(&batches, &hb, 0, 600_000) <= 2 * alive,
            "v{agent_protocol}"
        );
        assert_eq!(s.agg.applied.len(), 60);
    }
}

#[test]
fn a_v5_welcome_cannot_ask_for_less_than_a_second() {
    for asked in [0, 1, 999] {
        let c = established_client_with(
            ClientConfig::new(AGENT, "eu", "0.1.0"),
            welcome_every(crate::frame::PROTOCOL_VERSION, asked),
        );
        assert_eq!(
            c.alive_every_ms(),
            Some(crate::frame::ALIVE_EVERY_MS),
            "{asked}"
        );
    }
    let c = established_client_with(
        ClientConfig::new(AGENT, "eu", "0.1.0"),
        welcome_every(crate::frame::PROTOCOL_VERSION, 2_000),
    );
    assert_eq!(c.alive_every_ms(), Some(2_000));
    assert_eq!(
        established_client(2).alive_every_ms(),
        None,
        "v2 promised nothing"
    );
}

#[test]
fn a_v4_agent_gets_a_v4_welcome_from_a_v5_aggregator_and_keeps_its_second() {
    // The v5 server's welcome to a v4 agent: version 4, in v4's layout (no interval).
    #[derive(serde::Deserialize)]
    struct WelcomeV4 {
        protocol: u16,
        _aggregator_version: String,
        _clock_ms: i64,
        applied_seq: u64,
    }
    for agent_protocol in [2u16, 3, 4] {
        let mut server = ServerSession::new(
            ServerConfig {
                alive_every_ms: 7_500,
                ..ServerConfig::new("0.1.0")
            },
            AGENT,
            T0,
        );
        server
            .handle_hello(&frame::encode(&hello_frame(agent_protocol, AGENT))[4..])
            .unwrap();
        server.welcome(12, T0);
        let Some(ServerTransmit::Control(w)) = server.poll_transmit() else {
            panic!("no welcome")
        };
        let bytes = frame::encode(&w);
        assert_eq!(bytes[4], 1, "the welcome variant");
        let (old, rest) = postcard::take_from_bytes::<WelcomeV4>(&bytes[5..]).unwrap();
        assert_eq!((old.protocol, old.applied_seq), (agent_protocol, 12));
        assert!(
            rest.is_empty(),
            "v{agent_protocol}: {} bytes a v4 agent does not expect",
            rest.len()
        );
    }

    // A whole session: a v4 agent against a v5 aggregator that asks v5 agents for 7.5 s.
    let mut s = Sim::with(ClientConfig {
        heartbeat_every_ms: 3_600_000,
        ..ClientConfig::new(AGENT, "eu", "0.1.0")
    });
    s.agent.session.announce(4);
    s.server_cfg.alive_every_ms = 7_500;
    s.agent.collect(3);
    s.connect();
    s.run();
    assert_eq!(s.agent.session.protocol(), 4);
    assert_eq!(s.agg.session.as_ref().map(|s| s.protocol()), Some(4));
    assert_eq!(
        s.agent.session.alive_every_ms(),
        Some(crate::frame::ALIVE_EVERY_MS)
    );
    let batches = collect_every(&mut s, 500, Some(2_000), 10_000);
    assert_eq!(
        s.agg.applied,
        (1..=3 + batches.len() as u64).collect::<Vec<_>>()
    );
    assert!(s.agent.buffer.is_empty());
    assert!(s.client_errors.is_empty() && s.agg.refusals.is_empty());
    // Its own second: batches at 0.5, 2.5, 4.5 … s, so a heartbeat one and a half seconds
    // after each, which the v5 aggregator takes like any other.
    let hb = heartbeat_times(&s);
    assert_eq!(hb, [0, 2_000, 4_000, 6_000, 8_000, 10_000]);
    assert!(longest_silence(&batches, &hb, 0, 10_000) <= 2_000, "{hb:?}");
}

#[test]
fn a_v2_aggregator_gets_no_liveness_heartbeats_and_a_v3_agent_falls_back_to_v2() {
    let c = established_client(2);
    assert_eq!(c.protocol(), 2);
    assert_eq!(
        c.poll_timeout(),
        Some(T0 + 15_000),
        "only the periodic heartbeat"
    );

    // A v2 aggregator refuses a v3 hello in its words; the next hello speaks v2.
    let mut c = ClientSession::new(
        ClientConfig::new(AGENT, "eu", "0.1.0"),
        BufferState::default(),
    );
    c.handle_connected(T0);
    let hello_version = |c: &mut ClientSession| match c.poll_transmit() {
        Some(Transmit::Control(Frame::Hello(h))) => h.protocol,
        t => panic!("{t:?}"),
    };
    assert_eq!(hello_version(&mut c), crate::frame::PROTOCOL_VERSION);
    let reason =
        "protocol version mismatch: peer speaks v3, this build speaks v2; upgrade the older side";
    assert!(
        c.handle_frame(
            Frame::Refused {
                reason: reason.into()
            },
            T0
        )
        .is_err()
    );
    c.handle_connected(T0 + 1);
    assert_eq!(hello_version(&mut c), 2);
}

#[test]
fn run_check_frames_go_only_to_agents_that_speak_v3() {
    for (agent_version, sent) in [(2u16, false), (3, true)] {
        let mut s = ServerSession::new(ServerConfig::new("0.1.0"), AGENT, T0);
        let hello = frame::encode(&hello_frame(agent_version, AGENT));
        s.handle_hello(&hello[4..]).unwrap();
        s.welcome(0, T0);
        match s.poll_transmit() {
            Some(ServerTransmit::Control(Frame::Welcome(w))) => {
                assert_eq!(
                    w.protocol, agent_version,
                    "the welcome speaks the agent's version"
                )
            }
            t => panic!("{t:?}"),
        }
        assert_eq!(s.protocol(), agent_version);
        assert_eq!(s.handle_run_check("{}".into()), sent);
        assert_eq!(
            s.poll_transmit(),
            sent.then(|| ServerTransmit::Control(Frame::RunCheck { json: "{}".into() }))
        );
    }
    let mut c = established_client(3);
    c.handle_frame(Frame::RunCheck { json: "{}".into() }, T0)
        .unwrap();
    let events: Vec<ClientEvent> = std::iter::from_fn(|| c.poll_event()).collect();
    assert!(
        events.contains(&ClientEvent::RunCheck("{}".into())),
        "{events:?}"
    );
}

#[test]
fn the_hello_names_the_highest_seq_any_aggregator_acknowledged() {
    // The buffer remembers seq 40 acknowledged (by another aggregator, or before a restart).
    let mut c = ClientSession::new(
        ClientConfig::new(AGENT, "eu", "0.1.0"),
        BufferState {
            next_seq: 50,
            acked_seq: 40,
            ..BufferState::default()
        },
    );
    let hello_acked = |c: &mut ClientSession| match c.poll_transmit() {
        Some(Transmit::Control(Frame::Hello(h))) => h.acked_seq,
        t => panic!("{t:?}"),
    };
    c.handle_connected(T0);
    assert_eq!(hello_acked(&mut c), 40);
    // This aggregator knew only up to 30: the session resumes there, and once it acks 45
    // the next hello (to any aggregator) says 45.
    c.handle_frame(
        Frame::Welcome(crate::frame::Welcome {
            protocol: crate::frame::PROTOCOL_VERSION,
            aggregator_version: "1".into(),
            clock_ms: T0,
            applied_seq: 30,
            alive_every_ms: 1_000,
        }),
        T0 + 1,
    )
    .unwrap();
    assert_eq!(
        c.poll_event(),
        Some(ClientEvent::Connected {
            applied_seq: 30,
            skew_ms: 0
        })
    );
    c.handle_frame(Frame::Ack { seq: 45 }, T0 + 2).unwrap();
    // Only what no aggregator had acknowledged yet is new.
    assert_eq!(
        c.poll_event(),
        Some(ClientEvent::Acked { seq: 45, newly: 5 })
    );
    c.handle_connection_lost();
    c.handle_connected(T0 + 3);
    assert_eq!(hello_acked(&mut c), 45);
}

#[test]
fn acks_to_a_v6_agent_are_held_for_three_batches_and_released_by_a_heartbeat() {
    let mut s = Sim::new();
    s.server_cfg.hold_acks_ms = 30_000;
    // A 15 s liveness interval: no heartbeat (which would release what is held) before
    // 22.5 s of silence, so the hold's own end is what releases the last batches.
    s.server_cfg.alive_every_ms = crate::frame::alive_every_for(60_000);
    s.connect();
    s.run();
    // A batch every 10 s: the first is acknowledged at once (no pace known yet), then one
    // ack per three batches; the fifth and sixth wait for the hold to end (25 s after the
    // fifth arrived).
    collect_every(&mut s, 10_000, Some(10_000), 60_000);
    assert_eq!(s.agent.acked_events, [(1, 1), (4, 3)]);
    s.advance_to(T0 + 74_999);
    assert_eq!(s.agent.acked_events.len(), 2);
    s.advance_to(T0 + 75_000);
    assert_eq!(s.agent.acked_events.last(), Some(&(6, 2)));
    assert_eq!(s.agg.applied, (1..=6).collect::<Vec<_>>());

    // Stopping with a batch unacknowledged: the heartbeat the agent sends releases it.
    collect_every(&mut s, 110_000, Some(10_000), 110_000);
    assert_eq!(s.agent.acked_events.len(), 3);
    s.agent.session.begin_shutdown(s.now, 5_000);
    s.run();
    assert_eq!(s.agent.acked_events.last(), Some(&(7, 1)));
    assert_eq!(s.agent.finished, Some(true));

    // A backlog (batches one after another) is acknowledged as it is written.
    let mut s = Sim::new();
    s.server_cfg.hold_acks_ms = 30_000;
    s.agent.collect(10);
    s.connect();
    s.run();
    assert_eq!(s.agent.acked_events.last(), Some(&(10, 10)));
    assert!(s.agent.buffer.is_empty());
}

#[test]
fn acks_to_agents_older_than_v6_are_never_held() {
    let mut s = Sim::new();
    s.agent.session.announce(5);
    s.server_cfg.hold_acks_ms = 30_000;
    s.server_cfg.alive_every_ms = crate::frame::alive_every_for(30_000);
    s.connect();
    s.run();
    collect_every(&mut s, 10_000, Some(10_000), 60_000);
    assert_eq!(
        s.agent.acked_events,
        (1..=6).map(|seq| (seq, 1)).collect::<Vec<_>>()
    );
}
