//! The ingest side: a QUIC server that authenticates agents by client certificate, runs the
//! hello/welcome handshake, decodes batch frames, and hands batches to one writer thread
//! that group-commits them to storage. A batch is acknowledged only after its write is
//! durable; acknowledgements go back in seq order on the control stream.
//!
//! Metric metadata from the control stream goes to the same writer, which stores what
//! changed in its own synced commit (see [`crate::metadata`]).
//!
//! The protocol's checks (hello, seqs per stream) and the ack order are
//! `outpost_shared::session::ServerSession`, one per connection; this module drives it.

use crate::connections::{ConnectedAgent, Connections};
use crate::ledger::{IngestOutcome, IngestRequest, LIVE_CONN, Ledger};
use crate::metadata::MetadataStore;
use crate::metrics::Metrics;
use crate::query_cache::QueryCache;
use crate::space::Space;
use outpost_service::now_ms;
use outpost_shared::codec::Decoder;
use outpost_shared::frame::{self, Frame, close};
use outpost_shared::metadata::FamilyMetadata;
use outpost_shared::session::{
    Lane, RUN_CHECK_VERSION, Refusal, ServerConfig, ServerEvent, ServerSession, ServerTransmit,
};
use outpost_shared::{Labels, Point};
use outpost_tsdb::{SeriesId, SeriesSlot, Storage, WritePlan};
use quinn::{Connection, Endpoint, VarInt};
use rustls::pki_types::CertificateDer;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tracing::Instrument;

/// Batches queued to the writer per connection before the connection waits.
const PIPELINE: usize = 512;
const MAX_GROUP: usize = 512;
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an acknowledgement to an agent of protocol 6 or later may be held at most, so
/// one ack covers several collection cycles (`ServerConfig::hold_acks_ms`).
const HOLD_ACKS: Duration = Duration::from_secs(30);

pub type Reply = oneshot::Sender<Result<IngestOutcome, String>>;

/// Samples written with no seq bookkeeping (`POST /api/v1/write`): label sets with their
/// points, any order, late data welcome.
pub type SeriesWrite = Vec<(Labels, Vec<Point>)>;

pub enum WriterMsg {
    Batch(IngestRequest, Reply),
    /// A remote_write request; answered once its samples are durable.
    Write(SeriesWrite, oneshot::Sender<Result<(), String>>),
    /// A rule's output; answered once its samples are visible to queries, not synced: it
    /// becomes durable with the next synced commit (the group's state after it).
    RuleWrite(SeriesWrite, oneshot::Sender<Result<(), String>>),
    Closed(u64),
    /// Families' metadata that differs from what is stored.
    Metadata(Vec<FamilyMetadata>),
    /// Caller metadata entries (key, value) to store in one synced commit, such as rule
    /// groups' state; answered once durable.
    Meta(Vec<(Vec<u8>, Vec<u8>)>, oneshot::Sender<Result<(), String>>),
}

/// How often the writer tries the held batches again while the data folder is full.
const FULL_RETRY: Duration = Duration::from_secs(1);
/// How often the writer looks for new messages while the data folder is full.
const FULL_POLL: Duration = Duration::from_millis(50);
/// Points held in memory at most while the data folder is full; batches beyond are refused
/// (their connection closes; the agent keeps them and sends them again).
const MAX_HELD_POINTS: usize = 4_000_000;

/// The single writer: takes whatever is queued (up to [`MAX_GROUP`]) and commits it in one
/// synced write, so many agents share one fsync.
///
/// While the data folder is full (see [`crate::space`]) the agents' batches are held,
/// unacknowledged, and retried every [`FULL_RETRY`] together with whatever writes are
/// queued; writes that arrive between retries, caller metadata and rules' output are
/// refused with [`Space::refusal`](crate::space::Space::refusal).
pub fn spawn_writer(
    storage: Arc<Storage>,
    ledger: Arc<Mutex<Ledger>>,
    metrics: Arc<Metrics>,
    metadata: Arc<MetadataStore>,
    cache: Arc<QueryCache>,
    space: Arc<Space>,
    mut rx: mpsc::Receiver<WriterMsg>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("ingest-writer".into())
        .spawn(move || {
            let mut w = Writer {
                storage,
                ledger,
                metrics,
                cache,
                space,
                held: Group::default(),
                held_points: 0,
                last_try: Instant::now(),
            };
            let mut declared_held = Vec::new();
            loop {
                let first = if w.space.is_full() {
                    match rx.try_recv() {
                        Ok(m) => m,
                        Err(mpsc::error::TryRecvError::Empty) => {
                            std::thread::sleep(FULL_POLL);
                            w.retry_if_due();
                            continue;
                        }
                        Err(mpsc::error::TryRecvError::Disconnected) => return,
                    }
                } else {
                    match rx.blocking_recv() {
                        Some(m) => m,
                        None => return,
                    }
                };
                let mut g = Group::default();
                let mut declared = std::mem::take(&mut declared_held);
                let mut meta = Vec::new();
                let mut meta_replies = Vec::new();
                let mut next = Some(first);
                while let Some(m) = next.take() {
                    match m {
                        WriterMsg::Batch(r, tx) => {
                            g.sync = true;
                            g.reqs.push(r);
                            g.replies.push(tx);
                        }
                        WriterMsg::Write(w, tx) => {
                            g.writes.push(w);
                            g.write_replies.push(tx);
                            g.sync = true;
                        }
                        WriterMsg::RuleWrite(w, tx) => {
                            g.writes.push(w);
                            g.write_replies.push(tx);
                        }
                        WriterMsg::Closed(c) => {
                            // Commit what this connection sent before forgetting its numbering.
                            w.commit(&mut g);
                            w.forget_held(c);
                            lock(&w.ledger).connection_closed(c);
                        }
                        WriterMsg::Metadata(m) => declared.extend(m),
                        WriterMsg::Meta(m, tx) => {
                            meta.extend(m);
                            meta_replies.push(tx);
                        }
                    }
                    if g.reqs.len() + g.writes.len() < MAX_GROUP {
                        next = rx.try_recv().ok();
                    }
                }
                w.commit(&mut g);
                if w.space.is_full() {
                    // Stored once there is space again.
                    declared_held = declared;
                } else {
                    commit_metadata(&w.storage, &metadata, declared);
                }
                if !meta_replies.is_empty() {
                    let r = if w.space.is_full() {
                        w.space.refused();
                        Err(w.space.refusal())
                    } else {
                        let plan = WritePlan {
                            meta: std::mem::take(&mut meta),
                            ..Default::default()
                        };
                        let r = w
                            .storage
                            .commit(&plan)
                            .map(|_| ())
                            .map_err(|e| e.to_string());
                        if let Err(e) = &r {
                            w.space.write_failed(e);
                        }
                        r
                    };
                    for tx in meta_replies.drain(..) {
                        let _ = tx.send(r.clone());
                    }
                }
                if w.space.is_full() {
                    w.retry_if_due();
                }
            }
        })
        .unwrap_or_else(|e| panic!("cannot start the ingest writer thread: {e}"))
}

fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes a group of batches: the ledger plans, the store commits the plan in one atomic,
/// synced write, and only then does the ledger take in what was applied. Returns one outcome
/// per batch, in order; on a write failure nothing is applied and every batch gets the error.
pub fn apply_group(
    storage: &Storage,
    ledger: &Mutex<Ledger>,
    reqs: &[IngestRequest],
) -> Vec<Result<IngestOutcome, String>> {
    apply_with_writes(storage, ledger, reqs, &[], None, true).0
}

/// [`apply_group`] plus remote_write requests, all in the same synced write, then tells
/// `cache` the oldest timestamp written (before anyone is answered, so no query can see the
/// data and then find a stale cached answer). Returns the batches' outcomes and the writes'
/// common outcome. Unsynced (`sync` false) only for rules' output, which the group's synced
/// state commit makes durable.
pub fn apply_with_writes(
    storage: &Storage,
    ledger: &Mutex<Ledger>,
    reqs: &[IngestRequest],
    writes: &[SeriesWrite],
    cache: Option<&QueryCache>,
    sync: bool,
) -> (Vec<Result<IngestOutcome, String>>, Result<(), String>) {
    let mut planned = lock(ledger).plan(reqs, |l| storage.series_id(l));
    // Forwarded samples are all committed: the destination keeps what its retention allows.
    let kept = if storage.forwarding() {
        i64::MIN..=i64::MAX
    } else {
        storage.accepts_from_ms().unwrap_or(i64::MIN)..=storage.accepts_until_ms()
    };
    let (too_old, too_new) = add_writes(&mut planned.plan, writes, &kept, |l| storage.series_id(l));
    let oldest = planned
        .plan
        .records
        .iter()
        .flatten()
        .map(|(_, p)| p.ts)
        .min();
    let result = storage.commit_with(&planned.plan, sync);
    if let (Ok(_), Some(ts), Some(cache)) = (&result, oldest, cache) {
        cache.note_write(ts);
    }
    match result {
        Ok(ids) => {
            // Counted once the rest is stored: a refused write is tried again whole.
            storage.count_too_old(too_old);
            storage.count_too_new(too_new);
            let outcomes = planned.outcomes.clone();
            lock(ledger).committed(planned, &ids);
            (outcomes, Ok(()))
        }
        Err(e) => {
            let msg = e.to_string();
            (reqs.iter().map(|_| Err(msg.clone())).collect(), Err(msg))
        }
    }
}

/// Appends remote_write samples to `plan`: one wal record per request, series the store
/// lacks added after the ledger's own new series (so the ledger's slot numbers still hold).
/// A series the store lacks with no sample inside `kept` (ms: the store's
/// [`Storage::accepts_from_ms`] to [`Storage::accepts_until_ms`]) is left out, as the store
/// would drop its samples and keep only an empty series; returns the samples so left out,
/// as (older, later).
fn add_writes(
    plan: &mut WritePlan,
    writes: &[SeriesWrite],
    kept: &std::ops::RangeInclusive<i64>,
    known: impl Fn(&Labels) -> Option<SeriesId>,
) -> (u64, u64) {
    let mut added: HashMap<&Labels, u32> = HashMap::new();
    let (mut too_old, mut too_new) = (0, 0);
    for w in writes {
        let mut record = Vec::with_capacity(w.iter().map(|(_, p)| p.len()).sum());
        for (labels, points) in w {
            let slot = match known(labels) {
                Some(id) => SeriesSlot::Existing(id),
                None if !added.contains_key(labels)
                    && !points.iter().any(|p| kept.contains(&p.ts)) =>
                {
                    let old = points.iter().filter(|p| p.ts < *kept.start()).count();
                    too_old += old as u64;
                    too_new += (points.len() - old) as u64;
                    continue;
                }
                None => SeriesSlot::New(*added.entry(labels).or_insert_with(|| {
                    plan.new_series.push(labels.clone());
                    (plan.new_series.len() - 1) as u32
                })),
            };
            record.extend(points.iter().map(|&p| (slot, p)));
        }
        if !record.is_empty() {
            plan.records.push(record);
        }
    }
    (too_old, too_new)
}

/// What the writer collected for one commit.
#[derive(Default)]
struct Group {
    reqs: Vec<IngestRequest>,
    replies: Vec<Reply>,
    writes: Vec<SeriesWrite>,
    write_replies: Vec<oneshot::Sender<Result<(), String>>>,
    /// Whether the commit must be synced (anything but rules' output in it).
    sync: bool,
}

/// The writer thread's state.
struct Writer {
    storage: Arc<Storage>,
    ledger: Arc<Mutex<Ledger>>,
    metrics: Arc<Metrics>,
    cache: Arc<QueryCache>,
    space: Arc<Space>,
    /// Batches waiting, unacknowledged and in arrival order, while the data folder is full.
    held: Group,
    /// Points in `held`.
    held_points: usize,
    /// When a write was last tried.
    last_try: Instant,
}

impl Writer {
    /// Commits `g`. While the data folder is full its batches join the held ones, and the
    /// whole lot is tried once [`FULL_RETRY`] has passed since the last try; until then its
    /// writes are refused.
    fn commit(&mut self, g: &mut Group) {
        if g.reqs.is_empty() && g.writes.is_empty() {
            return;
        }
        if !self.space.is_full() {
            return self.write(g);
        }
        self.hold(g);
        if self.last_try.elapsed() < FULL_RETRY {
            let refusal = self.space.refusal();
            for tx in g.write_replies.drain(..) {
                self.space.refused();
                let _ = tx.send(Err(refusal.clone()));
            }
            g.writes.clear();
            g.sync = false;
            return;
        }
        let mut all = std::mem::take(&mut self.held);
        self.held_points = 0;
        all.writes = std::mem::take(&mut g.writes);
        all.write_replies = std::mem::take(&mut g.write_replies);
        all.sync = true;
        g.sync = false;
        self.write(&mut all);
    }

    /// Tries the held batches again if [`FULL_RETRY`] has passed since the last try.
    fn retry_if_due(&mut self) {
        if self.last_try.elapsed() < FULL_RETRY {
            return;
        }
        if self.held.reqs.is_empty() {
            // Nothing waits: try a write that changes nothing (a delete of a key never set).
            self.last_try = Instant::now();
            let probe = WritePlan {
                meta: vec![(b"storage/probe".to_vec(), vec![])],
                ..Default::default()
            };
            match self.storage.commit(&probe) {
                Ok(_) => self.space.write_succeeded(0),
                Err(e) => {
                    self.space.write_failed(&e.to_string());
                }
            }
            return;
        }
        let mut all = std::mem::take(&mut self.held);
        self.held_points = 0;
        all.sync = true;
        self.write(&mut all);
    }

    /// Moves `g`'s batches to the held ones. Live copies that define no series are dropped
    /// (the batch itself comes later); those that do are kept, the stream's later copies
    /// count on them. Past [`MAX_HELD_POINTS`] batches are refused.
    fn hold(&mut self, g: &mut Group) {
        for (r, tx) in g.reqs.drain(..).zip(g.replies.drain(..)) {
            if (r.live && r.new_series.is_empty())
                || self.held_points + r.points.len() > MAX_HELD_POINTS
            {
                if !r.live {
                    self.metrics.errors.inc();
                }
                let _ = tx.send(Err(self.space.refusal()));
                continue;
            }
            self.held_points += r.points.len();
            self.held.reqs.push(r);
            self.held.replies.push(tx);
        }
    }

    /// Refuses the held batches of connection (or live stream) `conn`, which closed.
    fn forget_held(&mut self, conn: u64) {
        if self.held.reqs.iter().all(|r| r.conn != conn) {
            return;
        }
        let held = std::mem::take(&mut self.held);
        self.held_points = 0;
        for (r, tx) in held.reqs.into_iter().zip(held.replies) {
            if r.conn == conn {
                let _ = tx.send(Err(self.space.refusal()));
            } else {
                self.held_points += r.points.len();
                self.held.reqs.push(r);
                self.held.replies.push(tx);
            }
        }
    }

    /// Writes `g` in commits of at most [`MAX_GROUP`] batches (its writes go with the
    /// first), answering each batch and write. A commit that fails for lack of space pauses
    /// ingestion: its batches and those after it are held, its writes refused.
    fn write(&mut self, g: &mut Group) {
        let held_before = g.reqs.len();
        let mut sync = g.sync;
        g.sync = false;
        loop {
            let n = g.reqs.len().min(MAX_GROUP);
            let reqs: Vec<IngestRequest> = g.reqs.drain(..n).collect();
            let replies: Vec<Reply> = g.replies.drain(..n).collect();
            let writes = std::mem::take(&mut g.writes);
            let t = Instant::now();
            self.last_try = t;
            let (results, written) = apply_with_writes(
                &self.storage,
                &self.ledger,
                &reqs,
                &writes,
                Some(&self.cache),
                sync,
            );
            sync = true;
            self.metrics
                .commit_duration
                .observe(t.elapsed().as_secs_f64());
            self.metrics
                .commit_batches
                .observe((reqs.len() + writes.len()) as f64);
            let write_replies = std::mem::take(&mut g.write_replies);
            if let Err(e) = &written
                && self.space.write_failed(e)
            {
                for tx in write_replies {
                    let _ = tx.send(Err(self.space.refusal()));
                }
                // This commit's batches and the rest wait, in order, before any held since.
                let mut held = Group {
                    reqs,
                    replies,
                    ..Group::default()
                };
                held.reqs.append(&mut g.reqs);
                held.replies.append(&mut g.replies);
                held.reqs.append(&mut self.held.reqs);
                held.replies.append(&mut self.held.replies);
                self.held_points = held.reqs.iter().map(|r| r.points.len()).sum();
                self.held = held;
                return;
            }
            if written.is_ok() {
                self.space.write_succeeded(held_before);
            }
            for tx in write_replies {
                let _ = tx.send(written.clone());
            }
            for ((r, res), tx) in reqs.into_iter().zip(results).zip(replies) {
                match &res {
                    Ok(IngestOutcome::Applied) => {
                        self.metrics.batches.inc();
                        self.metrics.samples.inc_by(r.points.len() as u64);
                    }
                    Ok(IngestOutcome::Duplicate) => {
                        self.metrics.duplicates.inc();
                    }
                    Ok(IngestOutcome::Live) => {
                        self.metrics.live_batches.inc();
                    }
                    Err(_) => {
                        self.metrics.errors.inc();
                    }
                }
                let _ = tx.send(res);
            }
            if g.reqs.is_empty() {
                return;
            }
        }
    }
}

/// Stores the families' metadata that differs from what is stored (the latest entry of a
/// family wins) in one synced commit, then serves it. A failed write is logged: agents send
/// all their metadata again on their next connection.
pub fn commit_metadata(storage: &Storage, store: &MetadataStore, declared: Vec<FamilyMetadata>) {
    if declared.is_empty() {
        return;
    }
    let mut latest = std::collections::BTreeMap::new();
    for f in declared {
        latest.insert(f.family, f.meta);
    }
    let changed = store.changed(
        latest
            .into_iter()
            .map(|(family, meta)| FamilyMetadata { family, meta })
            .collect(),
    );
    if changed.is_empty() {
        return;
    }
    let plan = outpost_tsdb::WritePlan {
        meta: MetadataStore::entries(&changed),
        ..Default::default()
    };
    match storage.commit(&plan) {
        Ok(_) => {
            tracing::debug!(families = changed.len(), "stored metric metadata");
            store.committed(changed);
        }
        Err(e) => tracing::error!(
            families = changed.len(),
            "cannot store metric metadata (agents send it again when they reconnect): {e}"
        ),
    }
}

/// Metadata key of the secret the QUIC endpoint derives stateless reset tokens from.
const RESET_SECRET_KEY: &[u8] = b"quic/reset-secret";

/// The secret the QUIC endpoint derives its stateless reset tokens and connection ids from
/// (32 random bytes), kept in the store's metadata so that it survives restarts: after a
/// crash or restart, the aggregator still recognises the connection ids it issued and
/// answers agents' packets for connections it no longer knows with resets they recognise,
/// so they reconnect at once instead of waiting out the idle timeout.
///
/// # Errors
/// The store fails, or the system's random source does.
pub fn reset_secret(storage: &outpost_tsdb::Storage) -> Result<Vec<u8>, String> {
    if let Some((_, v)) = storage
        .meta(RESET_SECRET_KEY)
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|(k, v)| k == RESET_SECRET_KEY && v.len() == 32)
    {
        return Ok(v);
    }
    let mut secret = vec![0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| "the system's random source failed".to_string())?;
    storage
        .commit(&outpost_tsdb::WritePlan {
            meta: vec![(RESET_SECRET_KEY.to_vec(), secret.clone())],
            ..Default::default()
        })
        .map_err(|e| e.to_string())?;
    Ok(secret)
}

/// The QUIC endpoint agents connect to, on `addr`, with stateless reset tokens derived from
/// `reset_secret` (see [`reset_secret`]).
///
/// # Errors
/// The TLS files do not load, or the address cannot be bound (the message names the
/// config key).
pub fn server_endpoint(
    files: &outpost_shared::tls::TlsFiles,
    addr: std::net::SocketAddr,
    reset_secret: &[u8],
) -> Result<Endpoint, String> {
    let tls = outpost_shared::tls::server_config(files).map_err(|e| e.to_string())?;
    let qsc = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(qsc));
    let mut t = outpost_service::quic::transport();
    t.max_concurrent_uni_streams(VarInt::from_u32(4));
    t.max_concurrent_bidi_streams(VarInt::from_u32(2));
    sc.transport_config(Arc::new(t));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset_secret);
    let mut ec = quinn::EndpointConfig::new(Arc::new(key));
    // Connection ids are checked against a keyed hash before a reset is sent: the key must
    // outlive the process too.
    let mut cid_key = [0u8; 8];
    for (i, b) in reset_secret.iter().enumerate() {
        cid_key[i % 8] ^= b;
    }
    let cid_key = u64::from_le_bytes(cid_key);
    // A restarted aggregator resets every agent's connection once; at quinn's default of
    // one reset per 20 ms, 1,000 agents would wait up to 20 s for theirs. Resets are
    // smaller than the packets that cause them, so they cannot amplify anything.
    ec.min_reset_interval(Duration::from_millis(1));
    ec.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
    let listen = |e: std::io::Error| format!("cannot listen on {addr}/udp ([listen] quic): {e}");
    let socket = std::net::UdpSocket::bind(addr).map_err(listen)?;
    let runtime = quinn::default_runtime().ok_or("no async runtime for QUIC")?;
    Endpoint::new(ec, Some(sc), socket, runtime).map_err(listen)
}

#[derive(Clone)]
pub struct Ingest {
    pub ledger: Arc<Mutex<Ledger>>,
    pub checks: Arc<crate::checks::Placement>,
    pub connections: Arc<Connections>,
    pub metrics: Arc<Metrics>,
    pub writer: mpsc::Sender<WriterMsg>,
    pub next_conn: Arc<AtomicU64>,
    /// The stored metric metadata, to skip writing what did not change.
    pub metadata: Arc<MetadataStore>,
    /// How often agents of protocol 5 and later must send something, ms, told in the
    /// welcome: [`frame::alive_every_for`] `[alerting] agent_down_after`.
    pub alive_every_ms: u32,
}

impl Ingest {
    pub async fn accept_loop(self, endpoint: Endpoint) {
        while let Some(incoming) = endpoint.accept().await {
            let me = self.clone();
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                let conn = match incoming.await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(%remote, "handshake failed: {e}");
                        me.metrics.refused("tls");
                        return;
                    }
                };
                me.handle(conn).await;
            });
        }
    }

    /// Sends what a refusing session queued (its refused frame), then closes the connection
    /// with the refusal's code.
    async fn refuse(
        &self,
        conn: &Connection,
        tx: &mut quinn::SendStream,
        session: &mut ServerSession,
        r: Refusal,
    ) {
        tracing::warn!(remote = %conn.remote_address(), "refusing agent: {}", r.reason);
        self.metrics.refused(r.label);
        while let Some(t) = session.poll_transmit() {
            if let ServerTransmit::Control(f) = t {
                let _ = tx.write_all(&frame::encode(&f)).await;
            }
        }
        let _ = tx.finish();
        // Give the frame a moment to leave before the close overtakes it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        conn.close(VarInt::from_u32(r.code), r.reason.as_bytes());
    }

    async fn handle(self, conn: Connection) {
        let remote = conn.remote_address();
        let cert_id = match conn
            .peer_identity()
            .and_then(|i| i.downcast::<Vec<CertificateDer<'static>>>().ok())
            .and_then(|c| c.first().map(|c| outpost_shared::tls::common_name(c)))
        {
            Some(Ok(id)) => id,
            _ => {
                self.metrics.refused("certificate");
                conn.close(
                    VarInt::from_u32(close::IDENTITY_MISMATCH),
                    b"client certificate has no usable common name",
                );
                return;
            }
        };
        let (mut tx, mut rx) = match tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi()).await {
            Ok(Ok(s)) => s,
            _ => {
                conn.close(VarInt::from_u32(close::MALFORMED), b"no control stream");
                return;
            }
        };
        let mut session = ServerSession::new(
            ServerConfig {
                hello_timeout_ms: HELLO_TIMEOUT.as_millis() as i64,
                alive_every_ms: self.alive_every_ms,
                hold_acks_ms: HOLD_ACKS.as_millis() as i64,
                ..ServerConfig::new(env!("CARGO_PKG_VERSION"))
            },
            cert_id,
            now_ms(),
        );
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, frame::read_body(&mut rx)).await {
            Ok(Ok(Some(b))) => session.handle_hello(&b).cloned(),
            Ok(Err(e)) => Err(session.handle_malformed(format!("bad hello: {e}"))),
            // No hello in time (or the stream ended before one): the deadline has passed.
            _ => {
                let deadline = session.poll_timeout().unwrap_or_else(now_ms);
                match session.handle_timeout(deadline) {
                    Err(r) => Err(r),
                    Ok(()) => Err(session.handle_malformed("no hello".into())),
                }
            }
        };
        let hello = match hello {
            Ok(h) => h,
            Err(r) => return self.refuse(&conn, &mut tx, &mut session, r).await,
        };
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        let applied = lock(&self.ledger)
            .agent(&hello.agent_id)
            .map(|m| m.applied_seq)
            .unwrap_or(0);
        session.welcome(applied, now);
        while let Some(t) = session.poll_transmit() {
            if let ServerTransmit::Control(f) = t
                && tx.write_all(&frame::encode(&f)).await.is_err()
            {
                return;
            }
        }
        let protocol = session.protocol();
        if let Some(old) = self.connections.connect(ConnectedAgent::new(
            conn_id,
            conn.clone(),
            &hello,
            protocol,
            now,
        )) {
            tracing::info!(agent = %hello.agent_id, "a new connection replaces the previous one");
            old.close(
                VarInt::from_u32(close::REPLACED),
                b"replaced by a newer connection from the same agent",
            );
        }
        self.metrics.connections.inc();
        tracing::info!(agent = %hello.agent_id, region = %hello.region, %remote, applied_seq = applied, "agent connected");

        let agent: Arc<str> = hello.agent_id.as_str().into();
        let region: Arc<str> = hello.region.as_str().into();
        let session = Arc::new(Mutex::new(session));
        let (ack_tx, ack_rx) = mpsc::channel::<Pending>(PIPELINE);
        // Agents that take one-off runs get a channel for them.
        let (runs_tx, runs_rx) = if protocol >= RUN_CHECK_VERSION {
            let (t, r) = mpsc::unbounded_channel();
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        let assigned = self
            .checks
            .attach(&hello.agent_id, &hello.region, conn_id, runs_tx);
        // A heartbeat may release held acknowledgements: the control reader wakes the acker.
        let heard = Arc::new(Notify::new());
        let acker = tokio::spawn(ack_loop(
            conn.clone(),
            tx,
            session.clone(),
            ack_rx,
            assigned,
            runs_rx,
            heard.clone(),
        ));
        let control = tokio::spawn(control_loop(
            conn.clone(),
            rx,
            session.clone(),
            self.clone(),
            agent.clone(),
            conn_id,
            heard,
        ));
        let result = self
            .read_batches(&conn, &session, conn_id, &agent, &region, ack_tx)
            .await;
        let _ = self.writer.send(WriterMsg::Closed(conn_id)).await;
        match result {
            Ok(()) => {}
            Err((code, reason)) => {
                tracing::warn!(agent = %agent, "closing connection: {reason}");
                if code == close::MALFORMED {
                    self.metrics.malformed.inc();
                }
                conn.close(VarInt::from_u32(code), reason.as_bytes());
            }
        }
        let _ = acker.await;
        control.abort();
        self.checks.detach(&agent, conn_id);
        self.connections.disconnect(&agent, conn_id, now_ms());
        tracing::info!(agent = %agent, "agent disconnected");
    }

    async fn read_batches(
        &self,
        conn: &Connection,
        session: &Shared,
        conn_id: u64,
        agent: &Arc<str>,
        region: &Arc<str>,
        acks: mpsc::Sender<Pending>,
    ) -> Result<(), (u32, String)> {
        let mut data = match conn.accept_uni().await {
            Ok(s) => s,
            Err(_) => return Ok(()),
        };
        // The agent opens a second stream for live copies when it has a backlog to send.
        let live = {
            let (me, conn, agent, region, session) = (
                self.clone(),
                conn.clone(),
                agent.clone(),
                region.clone(),
                session.clone(),
            );
            tokio::spawn(async move {
                let Ok(mut stream) = conn.accept_uni().await else {
                    return;
                };
                let live_conn = conn_id | LIVE_CONN;
                let r = me
                    .read_stream(&mut stream, &session, live_conn, &agent, &region, None)
                    .await;
                let _ = me.writer.send(WriterMsg::Closed(live_conn)).await;
                if let Err((code, reason)) = r {
                    tracing::warn!(agent = %agent, "closing connection: live stream: {reason}");
                    if code == close::MALFORMED {
                        me.metrics.malformed.inc();
                    }
                    conn.close(VarInt::from_u32(code), reason.as_bytes());
                }
            })
        };
        let r = self
            .read_stream(&mut data, session, conn_id, agent, region, Some(acks))
            .await;
        live.abort();
        let _ = self
            .writer
            .send(WriterMsg::Closed(conn_id | LIVE_CONN))
            .await;
        r
    }

    /// Reads batch frames from one stream until it ends. With `acks`, this is the batch
    /// stream: each batch's outcome is queued for acknowledgement. Without, it is the live
    /// stream: copies stored ahead of their turn, not acknowledged.
    async fn read_stream(
        &self,
        data: &mut quinn::RecvStream,
        session: &Shared,
        conn_id: u64,
        agent: &Arc<str>,
        region: &Arc<str>,
        acks: Option<mpsc::Sender<Pending>>,
    ) -> Result<(), (u32, String)> {
        let live = acks.is_none();
        let lane = if live { Lane::Live } else { Lane::Batch };
        let acked_elsewhere = locked(session).hello().map_or(0, |h| h.acked_seq);
        let mut dec = Decoder::new();
        loop {
            let body = match frame::read_body(data).await {
                Ok(Some(b)) => b,
                Ok(None) => return Ok(()),
                Err(frame::FrameError::Io(_)) => return Ok(()),
                Err(e) => return Err((close::MALFORMED, e.to_string())),
            };
            let (seq, payload, trace) = match frame::decode(&body) {
                Ok(Frame::Batch {
                    seq,
                    payload,
                    trace,
                }) => (seq, payload, trace),
                Ok(f) => {
                    return Err((
                        close::MALFORMED,
                        format!("expected a batch frame, got {}", f.kind()),
                    ));
                }
                Err(e) => return Err((close::MALFORMED, e.to_string())),
            };
            // The batch's span continues the agent's trace when the frame carries one.
            let span = tracing::info_span!("batch ingest", agent = %agent, seq, live, samples = tracing::field::Empty);
            if let Some(tc) = &trace {
                outpost_service::telemetry::continue_from(&span, tc);
            }
            let entered = span.enter();
            // Seqs must increase on each stream. Whatever the session's verdict, the batch
            // goes to the writer: it decodes against this stream's context, and the writer's
            // ledger, in the same atomic write as the samples, has the last word on
            // duplicates and gaps.
            if let Err(r) = locked(session).handle_batch(lane, seq, now_ms()) {
                return Err((r.code, r.reason));
            }
            self.connections
                .heard(agent, conn_id & !LIVE_CONN, now_ms());
            let raw = dec
                .decode_raw(&payload)
                .map_err(|e| (close::MALFORMED, format!("batch {seq}: {e}")))?;
            let new_series = raw
                .new_series
                .clone()
                .filter_map(|i| dec.labels(i).cloned())
                .collect();
            let req = IngestRequest {
                conn: conn_id,
                agent: agent.clone(),
                region: region.clone(),
                seq,
                now_ms: now_ms(),
                first_new: raw.new_series.start,
                new_series,
                points: raw.points,
                live,
                acked_elsewhere,
            };
            span.record("samples", req.points.len());
            drop(entered);
            let (tx, rx) = oneshot::channel();
            if self
                .writer
                .send(WriterMsg::Batch(req, tx))
                .instrument(span.clone())
                .await
                .is_err()
            {
                return Err((close::SHUTDOWN, "aggregator shutting down".into()));
            }
            match &acks {
                Some(acks) => {
                    if acks.send((seq, rx)).await.is_err() {
                        return Err((close::SHUTDOWN, "aggregator shutting down".into()));
                    }
                }
                // Live copies are not acknowledged; a failed one is stored with its batch.
                None => drop(rx),
            }
        }
    }
}

type Pending = (u64, oneshot::Receiver<Result<IngestOutcome, String>>);

/// A connection's session, shared by the tasks that read its streams and write its control
/// stream; never locked across an await.
type Shared = Arc<Mutex<ServerSession>>;

fn locked(s: &Mutex<ServerSession>) -> std::sync::MutexGuard<'_, ServerSession> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reports write completions to the session in seq order and sends what it says (acks,
/// coalescing those already done or held by the session, and the agent's share of the
/// synthetic checks whenever it changes); wakes when a held ack is due or a heartbeat
/// arrived.
async fn ack_loop(
    conn: Connection,
    tx: quinn::SendStream,
    session: Shared,
    rx: mpsc::Receiver<Pending>,
    assigned: watch::Receiver<Arc<str>>,
    runs: Option<mpsc::UnboundedReceiver<String>>,
    heard: Arc<Notify>,
) {
    if let Err((code, reason)) = send_control(tx, session, rx, assigned, runs, heard).await {
        tracing::error!("closing connection: {reason}");
        conn.close(VarInt::from_u32(code), reason.as_bytes());
    }
}

async fn wait(d: oneshot::Receiver<Result<IngestOutcome, String>>) -> Result<(), String> {
    match d.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("ingest writer stopped".into()),
    }
}

/// Writes the session's control frames. Its close requests are carried out by whoever got
/// the refusal: the stream readers for a batch out of step, this task for a failed write.
async fn flush(tx: &mut quinn::SendStream, session: &Shared) -> Result<(), (u32, String)> {
    loop {
        let Some(t) = locked(session).poll_transmit() else {
            return Ok(());
        };
        if let ServerTransmit::Control(f) = t {
            tx.write_all(&frame::encode(&f))
                .await
                .map_err(|e| (close::SHUTDOWN, format!("control stream: {e}")))?;
        }
    }
}

fn durable(session: &Shared, seq: u64, r: Result<(), String>) -> Result<(), (u32, String)> {
    locked(session)
        .handle_durable(seq, r)
        .map_err(|r| (r.code, r.reason))
}

async fn send_control(
    mut tx: quinn::SendStream,
    session: Shared,
    mut rx: mpsc::Receiver<Pending>,
    mut assigned: watch::Receiver<Arc<str>>,
    mut runs: Option<mpsc::UnboundedReceiver<String>>,
    heard: Arc<Notify>,
) -> Result<(), (u32, String)> {
    assigned.mark_changed();
    loop {
        // The end of a held acknowledgement's wait, if one is held.
        let held = locked(&session).poll_timeout();
        let (seq, done) = tokio::select! {
            _ = async {
                match held {
                    Some(t) => tokio::time::sleep(Duration::from_millis((t - now_ms()).max(0) as u64)).await,
                    None => std::future::pending().await,
                }
            } => {
                let r = locked(&session).handle_timeout(now_ms().max(held.unwrap_or(0)));
                r.map_err(|r| (r.code, r.reason))?;
                flush(&mut tx, &session).await?;
                continue;
            }
            _ = heard.notified() => {
                flush(&mut tx, &session).await?;
                continue;
            }
            Some(json) = async {
                match runs.as_mut() {
                    Some(r) => r.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                locked(&session).handle_run_check(json);
                flush(&mut tx, &session).await?;
                continue;
            }
            next = rx.recv() => match next {
                Some(p) => p,
                None => {
                    // The batch stream ended: what was written is acknowledged now.
                    // (When the connection is gone, the write fails; nothing to report.)
                    locked(&session).handle_batches_ended();
                    let _ = flush(&mut tx, &session).await;
                    return Ok(());
                }
            },
            Ok(()) = assigned.changed() => {
                let json = assigned.borrow_and_update().to_string();
                locked(&session).handle_checks(json);
                flush(&mut tx, &session).await?;
                continue;
            }
        };
        durable(&session, seq, wait(done).await)?;
        while let Ok((s, mut d)) = rx.try_recv() {
            match d.try_recv() {
                Ok(r) => durable(&session, s, r.map(|_| ()))?,
                Err(oneshot::error::TryRecvError::Empty) => {
                    // Not written yet: ack what we have, then wait for this one.
                    flush(&mut tx, &session).await?;
                    durable(&session, s, wait(d).await)?;
                }
                Err(oneshot::error::TryRecvError::Closed) => {
                    durable(&session, s, Err("ingest writer stopped".into()))?
                }
            }
        }
        flush(&mut tx, &session).await?;
    }
}

/// Reads the control stream after the hello: heartbeats go to the registry of connected
/// agents, metadata that changed to the writer. A frame that does not decode, or metadata
/// the session refuses, closes the connection as malformed.
async fn control_loop(
    conn: Connection,
    mut rx: quinn::RecvStream,
    session: Shared,
    ingest: Ingest,
    agent: Arc<str>,
    conn_id: u64,
    heard: Arc<Notify>,
) {
    loop {
        let f = match frame::read(&mut rx).await {
            Ok(Some(f)) => f,
            Ok(None) | Err(frame::FrameError::Io(_)) => return,
            Err(e) => {
                let r = locked(&session).handle_malformed(format!("control stream: {e}"));
                return refuse_control(&conn, &ingest, &agent, r);
            }
        };
        ingest.connections.heard(&agent, conn_id, now_ms());
        let (events, refused) = {
            let mut s = locked(&session);
            let r = s.handle_control(f);
            (
                std::iter::from_fn(|| s.poll_event()).collect::<Vec<_>>(),
                r.err(),
            )
        };
        if let Some(r) = refused {
            return refuse_control(&conn, &ingest, &agent, r);
        }
        for e in events {
            match e {
                ServerEvent::Heartbeat(h) => {
                    ingest.connections.heartbeat(&agent, conn_id, &h, now_ms());
                    heard.notify_one();
                }
                ServerEvent::Metadata(m) => {
                    let changed = ingest.metadata.changed(m);
                    if !changed.is_empty()
                        && ingest
                            .writer
                            .send(WriterMsg::Metadata(changed))
                            .await
                            .is_err()
                    {
                        return;
                    }
                }
            }
        }
    }
}

fn refuse_control(conn: &Connection, ingest: &Ingest, agent: &str, r: Refusal) {
    tracing::warn!(agent = %agent, "closing connection: {}", r.reason);
    ingest.metrics.malformed.inc();
    conn.close(VarInt::from_u32(r.code), r.reason.as_bytes());
}
