//! The ingest side: a QUIC server that authenticates agents by client certificate, runs the
//! hello/welcome handshake, decodes batch frames, and hands batches to one writer thread
//! that group-commits them to storage. A batch is acknowledged only after its write is
//! durable; acknowledgements go back in seq order on the control stream.

use crate::ledger::{IngestOutcome, IngestRequest, Ledger};
use crate::live::{Live, LiveAgent};
use crate::metrics::Metrics;
use outpost_service::now_ms;
use outpost_shared::codec::Decoder;
use outpost_shared::frame::{self, Frame, PROTOCOL_VERSION, Welcome, close};
use outpost_tsdb::Storage;
use quinn::{Connection, Endpoint, VarInt};
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

/// Batches queued to the writer per connection before the connection waits.
const PIPELINE: usize = 512;
const MAX_GROUP: usize = 512;
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub type Reply = oneshot::Sender<Result<IngestOutcome, String>>;

pub enum WriterMsg {
    Batch(IngestRequest, Reply),
    Closed(u64),
}

/// The single writer: takes whatever is queued (up to [`MAX_GROUP`]) and commits it in one
/// synced write, so many agents share one fsync.
pub fn spawn_writer(
    storage: Arc<Storage>,
    ledger: Arc<Mutex<Ledger>>,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<WriterMsg>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("ingest-writer".into())
        .spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                let mut reqs = Vec::new();
                let mut replies = Vec::new();
                let mut next = Some(first);
                while let Some(m) = next.take() {
                    match m {
                        WriterMsg::Batch(r, tx) => {
                            reqs.push(r);
                            replies.push(tx);
                        }
                        WriterMsg::Closed(c) => {
                            // Commit what this connection sent before forgetting its numbering.
                            commit(&storage, &ledger, &metrics, &mut reqs, &mut replies);
                            lock(&ledger).connection_closed(c);
                        }
                    }
                    if reqs.len() < MAX_GROUP {
                        next = rx.try_recv().ok();
                    }
                }
                commit(&storage, &ledger, &metrics, &mut reqs, &mut replies);
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
    let planned = lock(ledger).plan(reqs, |l| storage.series_id(l));
    match storage.commit(&planned.plan) {
        Ok(ids) => {
            let outcomes = planned.outcomes.clone();
            lock(ledger).committed(planned, &ids);
            outcomes
        }
        Err(e) => {
            let msg = e.to_string();
            reqs.iter().map(|_| Err(msg.clone())).collect()
        }
    }
}

fn commit(
    storage: &Storage,
    ledger: &Mutex<Ledger>,
    metrics: &Metrics,
    reqs: &mut Vec<IngestRequest>,
    replies: &mut Vec<Reply>,
) {
    if reqs.is_empty() {
        return;
    }
    let t = Instant::now();
    let results = apply_group(storage, ledger, reqs);
    metrics.commit_duration.observe(t.elapsed().as_secs_f64());
    metrics.commit_batches.observe(reqs.len() as f64);
    for ((r, res), tx) in reqs.drain(..).zip(results).zip(replies.drain(..)) {
        match &res {
            Ok(IngestOutcome::Applied) => {
                metrics.batches.inc();
                metrics.samples.inc_by(r.points.len() as u64);
            }
            Ok(IngestOutcome::Duplicate) => {
                metrics.duplicates.inc();
            }
            Ok(IngestOutcome::Live) => {
                metrics.live_batches.inc();
            }
            Err(_) => {
                metrics.errors.inc();
            }
        }
        let _ = tx.send(res);
    }
}

pub fn server_endpoint(
    files: &outpost_shared::tls::TlsFiles,
    addr: std::net::SocketAddr,
) -> Result<Endpoint, String> {
    let tls = outpost_shared::tls::server_config(files).map_err(|e| e.to_string())?;
    let qsc = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(qsc));
    let mut t = outpost_service::quic::transport();
    t.max_concurrent_uni_streams(VarInt::from_u32(4));
    t.max_concurrent_bidi_streams(VarInt::from_u32(2));
    sc.transport_config(Arc::new(t));
    Endpoint::server(sc, addr)
        .map_err(|e| format!("cannot listen on {addr}/udp ([listen] quic): {e}"))
}

#[derive(Clone)]
pub struct Ingest {
    pub ledger: Arc<Mutex<Ledger>>,
    pub checks: Arc<crate::checks::Registry>,
    pub live: Arc<Live>,
    pub metrics: Arc<Metrics>,
    pub writer: mpsc::Sender<WriterMsg>,
    pub next_conn: Arc<AtomicU64>,
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

    async fn refuse(
        &self,
        conn: &Connection,
        tx: &mut quinn::SendStream,
        code: u32,
        reason: &str,
        label: &str,
    ) {
        tracing::warn!(remote = %conn.remote_address(), "refusing agent: {reason}");
        self.metrics.refused(label);
        let _ = tx
            .write_all(&frame::encode(&Frame::Refused {
                reason: reason.to_string(),
            }))
            .await;
        let _ = tx.finish();
        // Give the frame a moment to leave before the close overtakes it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        conn.close(VarInt::from_u32(code), reason.as_bytes());
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
        let body = match tokio::time::timeout(HELLO_TIMEOUT, frame::read_body(&mut rx)).await {
            Ok(Ok(Some(b))) => b,
            Ok(Err(e)) => {
                return self
                    .refuse(
                        &conn,
                        &mut tx,
                        close::MALFORMED,
                        &format!("bad hello: {e}"),
                        "malformed",
                    )
                    .await;
            }
            _ => {
                return self
                    .refuse(
                        &conn,
                        &mut tx,
                        close::MALFORMED,
                        "no hello within 10s",
                        "malformed",
                    )
                    .await;
            }
        };
        if let Some(v) = frame::peek_hello_version(&body)
            && let Err(reason) = frame::check_version(v)
        {
            return self
                .refuse(&conn, &mut tx, close::VERSION_MISMATCH, &reason, "version")
                .await;
        }
        let hello = match frame::decode(&body) {
            Ok(Frame::Hello(h)) => h,
            Ok(f) => {
                return self
                    .refuse(
                        &conn,
                        &mut tx,
                        close::MALFORMED,
                        &format!("expected hello, got {}", f.kind()),
                        "malformed",
                    )
                    .await;
            }
            Err(e) => {
                return self
                    .refuse(
                        &conn,
                        &mut tx,
                        close::MALFORMED,
                        &format!("bad hello: {e}"),
                        "malformed",
                    )
                    .await;
            }
        };
        if hello.agent_id != cert_id {
            let reason = format!(
                "hello claims agent id {:?} but the client certificate is for {:?}",
                hello.agent_id, cert_id
            );
            return self
                .refuse(
                    &conn,
                    &mut tx,
                    close::IDENTITY_MISMATCH,
                    &reason,
                    "identity",
                )
                .await;
        }
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        let applied = lock(&self.ledger)
            .agent(&hello.agent_id)
            .map(|m| m.applied_seq)
            .unwrap_or(0);
        let welcome = Frame::Welcome(Welcome {
            protocol: PROTOCOL_VERSION,
            aggregator_version: env!("CARGO_PKG_VERSION").into(),
            clock_ms: now,
            applied_seq: applied,
        });
        if tx.write_all(&frame::encode(&welcome)).await.is_err() {
            return;
        }
        if let Some(old) = self
            .live
            .connect(LiveAgent::new(conn_id, conn.clone(), &hello, now))
        {
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
        let (ack_tx, ack_rx) = mpsc::channel::<Pending>(PIPELINE);
        let assigned = self.checks.attach(&hello.agent_id, &hello.region, conn_id);
        let acker = tokio::spawn(ack_loop(conn.clone(), tx, ack_rx, assigned));
        let control = tokio::spawn(control_loop(rx, self.live.clone(), agent.clone(), conn_id));
        let result = self
            .read_batches(&conn, conn_id, &agent, &region, ack_tx)
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
        self.live.disconnect(&agent, conn_id, now_ms());
        tracing::info!(agent = %agent, "agent disconnected");
    }

    async fn read_batches(
        &self,
        conn: &Connection,
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
            let (me, conn, agent, region) =
                (self.clone(), conn.clone(), agent.clone(), region.clone());
            tokio::spawn(async move {
                let Ok(mut stream) = conn.accept_uni().await else {
                    return;
                };
                let live_conn = conn_id | LIVE_CONN;
                let r = me
                    .read_stream(&mut stream, live_conn, &agent, &region, None)
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
            .read_stream(&mut data, conn_id, agent, region, Some(acks))
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
        conn_id: u64,
        agent: &Arc<str>,
        region: &Arc<str>,
        acks: Option<mpsc::Sender<Pending>>,
    ) -> Result<(), (u32, String)> {
        let live = acks.is_none();
        let mut dec = Decoder::new();
        let mut last_seq = 0u64;
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
            if seq <= last_seq {
                return Err((
                    close::MALFORMED,
                    format!("batch seq {seq} after {last_seq}: seqs must increase"),
                ));
            }
            last_seq = seq;
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

/// Marks the connection number of a live stream: it has its own codec context, so its
/// own series numbering at the writer.
const LIVE_CONN: u64 = 1 << 63;

type Pending = (u64, oneshot::Receiver<Result<IngestOutcome, String>>);

/// Sends acks in seq order as writes complete, coalescing those already done, and the
/// agent's share of the synthetic checks whenever it changes.
async fn ack_loop(
    conn: Connection,
    tx: quinn::SendStream,
    rx: mpsc::Receiver<Pending>,
    assigned: watch::Receiver<Arc<str>>,
) {
    if let Err(reason) = send_control(tx, rx, assigned).await {
        tracing::error!("closing connection: {reason}");
        conn.close(VarInt::from_u32(close::SHUTDOWN), reason.as_bytes());
    }
}

async fn wait(d: oneshot::Receiver<Result<IngestOutcome, String>>) -> Result<(), String> {
    match d.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("batch not stored: {e}")),
        Err(_) => Err("ingest writer stopped".into()),
    }
}

async fn send_control(
    mut tx: quinn::SendStream,
    mut rx: mpsc::Receiver<Pending>,
    mut assigned: watch::Receiver<Arc<str>>,
) -> Result<(), String> {
    let write_err = |e: quinn::WriteError| format!("control stream: {e}");
    assigned.mark_changed();
    loop {
        let (mut seq, done) = tokio::select! {
            next = rx.recv() => match next {
                Some(p) => p,
                None => return Ok(()),
            },
            Ok(()) = assigned.changed() => {
                let json = assigned.borrow_and_update().to_string();
                tx.write_all(&frame::encode(&Frame::Checks { json }))
                    .await
                    .map_err(write_err)?;
                continue;
            }
        };
        wait(done).await?;
        while let Ok((s, mut d)) = rx.try_recv() {
            match d.try_recv() {
                Ok(Ok(_)) => seq = s,
                Ok(Err(e)) => return Err(format!("batch {s} not stored: {e}")),
                Err(_) => {
                    // Not written yet: ack what we have, then wait for this one.
                    tx.write_all(&frame::encode(&Frame::Ack { seq }))
                        .await
                        .map_err(write_err)?;
                    wait(d).await?;
                    seq = s;
                }
            }
        }
        tx.write_all(&frame::encode(&Frame::Ack { seq }))
            .await
            .map_err(write_err)?;
    }
}

async fn control_loop(mut rx: quinn::RecvStream, live: Arc<Live>, agent: Arc<str>, conn_id: u64) {
    while let Ok(Some(f)) = frame::read(&mut rx).await {
        if let Frame::Heartbeat(h) = f {
            live.heartbeat(&agent, conn_id, &h, now_ms());
        }
    }
}
