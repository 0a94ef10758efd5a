//! Simulated agents for the load tools (`ingest-bench`, `outpost-loadgen`).
//!
//! - Certificates: [`issue_missing`] issues agents' client certificates from a CA folder (the
//!   one `outpost-aggregator certs init` writes) and leaves them there, so a later run with
//!   the same ids reuses them; [`quic_client`] loads one agent's into a QUIC client config with
//!   the uplink's transport settings.
//! - One connection of one agent: [`Link`] drives `outpost_shared::session::ClientSession`
//!   over a quinn connection as `agent/src/uplink.rs` does: a control stream (read on its own
//!   task, so a half-read frame is never abandoned), one unidirectional batch stream opened on
//!   first use, one codec context per connection. What the batch stream carries comes from a
//!   [`BatchSource`]; the caller owns the loop around [`Link::transmit`] and [`Link::wait`], so
//!   a bench that sends a fixed set of batches and a simulator that makes one per cycle share
//!   the protocol's steps. Live copies ([`Transmit::Live`]) are not sent: a simulated agent
//!   never holds a backlog long enough to need them.
//! - Readings of a process from `/proc`: CPU seconds, resident memory, machine busy time.
//! - [`Opts`]: the `--key value` command lines of the load tools.

use anyhow::{Context, Result, bail};
use outpost_service::now_ms;
use outpost_shared::codec::Encoder;
use outpost_shared::frame::{self, Frame};
use outpost_shared::session::{ClientSession, Transmit};
use outpost_shared::tls::{TlsFiles, client_config, issue_agent};
use quinn::{Connection, Endpoint, VarInt};
use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

// ---- certificates

/// The files agent `id` presents: `certs/ca.crt`, `certs/agents/<id>.crt` and `.key`.
pub fn agent_files(certs: &Path, id: &str) -> TlsFiles {
    TlsFiles {
        ca: certs.join("ca.crt"),
        cert: certs.join("agents").join(format!("{id}.crt")),
        key: certs.join("agents").join(format!("{id}.key")),
    }
}

/// Issues, on `threads` threads, the client certificate of every agent in `ids` that has none
/// under `certs` yet (a folder with `ca.crt` and `ca.key`); they stay there for later runs
/// (delete `certs/agents` when the CA changes). Returns how many were issued.
pub fn issue_missing(certs: &Path, ids: &[String], threads: usize) -> Result<usize> {
    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| {
            let f = agent_files(certs, id);
            !f.cert.exists() || !f.key.exists()
        })
        .collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.clamp(1, 64))
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(id) = missing.get(i) else {
                            return Ok(());
                        };
                        issue_agent(certs, id).with_context(|| format!("issue {id}"))?;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a certificate thread panicked"))??;
        }
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(missing.len())
}

/// A QUIC client config presenting agent `id`'s certificate from `certs` (issued first when
/// missing), trusting `certs/ca.crt`, with the uplink's transport settings
/// (`outpost_service::quic::transport`).
pub fn quic_client(certs: &Path, id: &str) -> Result<quinn::ClientConfig> {
    let files = agent_files(certs, id);
    if !files.cert.exists() || !files.key.exists() {
        issue_agent(certs, id)?;
    }
    let tls = client_config(&files)?;
    let qc = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut cc = quinn::ClientConfig::new(Arc::new(qc));
    cc.transport_config(Arc::new(outpost_service::quic::transport()));
    Ok(cc)
}

/// A client endpoint on its own loopback UDP socket (an ephemeral port); it can carry any
/// number of connections.
pub fn client_endpoint() -> Result<Endpoint> {
    Endpoint::client(([127, 0, 0, 1], 0).into()).context("bind a loopback UDP socket")
}

/// Connects `ep` to `addr` as the agent `cfg` presents, the handshake within `timeout`.
pub async fn connect(
    ep: &Endpoint,
    cfg: quinn::ClientConfig,
    addr: SocketAddr,
    server_name: &str,
    timeout: Duration,
) -> Result<Connection> {
    let connecting = ep.connect_with(cfg, addr, server_name)?;
    Ok(tokio::time::timeout(timeout, connecting)
        .await
        .context("handshake timed out")??)
}

// ---- one connection

/// Where a [`Link`] gets the batches the session asks for, by seq.
pub trait BatchSource {
    /// The whole `Batch` frame of `seq`, its payload encoded with `enc` (the connection's
    /// codec context: it must see every batch the connection sends, in seq order), or `None`
    /// when `seq` is not held (reported to the session as skipped).
    fn frame(&mut self, seq: u64, enc: &mut Encoder) -> Option<&[u8]>;
    /// One past the highest seq held.
    fn end(&self) -> u64;
}

/// Batch frames encoded in advance: element `i` is seq `i + 1`. Their payloads must come
/// from one codec context in this order, so they can go out on one connection only.
pub struct Encoded(pub Vec<Vec<u8>>);

impl BatchSource for Encoded {
    fn frame(&mut self, seq: u64, _enc: &mut Encoder) -> Option<&[u8]> {
        let i = usize::try_from(seq.checked_sub(1)?).ok()?;
        self.0.get(i).map(|f| f.as_slice())
    }
    fn end(&self) -> u64 {
        self.0.len() as u64 + 1
    }
}

/// One connection of one simulated agent. See the module docs.
pub struct Link {
    conn: Connection,
    ctl: quinn::SendStream,
    frames: mpsc::Receiver<Result<Option<Frame>, String>>,
    reader: tokio::task::JoinHandle<()>,
    data: Option<quinn::SendStream>,
    enc: Encoder,
}

impl Link {
    /// Opens the control stream on `conn` and tells `session` it is connected (which queues
    /// the hello; [`Link::transmit`] sends it).
    pub async fn open(conn: Connection, session: &mut ClientSession) -> Result<Link> {
        let (ctl, mut rx) = conn.open_bi().await?;
        session.handle_connected(now_ms());
        let (tx, frames) = mpsc::channel(64);
        let reader = tokio::spawn(async move {
            loop {
                let r = frame::read(&mut rx).await.map_err(|e| e.to_string());
                let end = !matches!(r, Ok(Some(_)));
                if tx.send(r).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Link {
            conn,
            ctl,
            frames,
            reader,
            data: None,
            enc: Encoder::new(),
        })
    }

    /// The connection.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Sends whatever `session` has to send: control frames, and the batches it asks for
    /// from `source` on the batch stream.
    pub async fn transmit(
        &mut self,
        session: &mut ClientSession,
        source: &mut impl BatchSource,
    ) -> Result<()> {
        while let Some(t) = session.poll_transmit() {
            match t {
                Transmit::Control(f) => self.ctl.write_all(&frame::encode(&f)).await?,
                Transmit::Batches { from, max } => {
                    let end = from.saturating_add(max).min(source.end());
                    for seq in from..end {
                        let Some(bytes) = source.frame(seq, &mut self.enc) else {
                            session.handle_skipped(seq)?;
                            continue;
                        };
                        session.handle_sent(seq, 0)?;
                        let stream = match &mut self.data {
                            Some(d) => d,
                            None => self.data.insert(self.conn.open_uni().await?),
                        };
                        stream.write_all(bytes).await?;
                    }
                }
                Transmit::Live { .. } => {}
            }
        }
        Ok(())
    }

    /// Waits for the next control frame, the session's next deadline or `other`, whichever
    /// comes first, and hands frames and deadlines to `session`. `Some` with `other`'s output
    /// when it came first. An error ends the connection (the aggregator closed it, refused
    /// the agent, or broke the protocol).
    pub async fn wait<F: Future>(
        &mut self,
        session: &mut ClientSession,
        other: F,
    ) -> Result<Option<F::Output>> {
        let deadline = session.poll_timeout();
        tokio::select! {
            r = self.frames.recv() => match r {
                Some(Ok(Some(f))) => session.handle_frame(f, now_ms())?,
                Some(Ok(None)) | None => bail!("aggregator closed the control stream{}", self.close_reason()),
                Some(Err(e)) => bail!("control stream: {e}{}", self.close_reason()),
            },
            _ = sleep_until_ms(deadline) => session.handle_timeout(now_ms())?,
            v = other => return Ok(Some(v)),
        }
        Ok(None)
    }

    fn close_reason(&self) -> String {
        match self.conn.close_reason() {
            Some(quinn::ConnectionError::ApplicationClosed(c)) => {
                format!(" ({})", String::from_utf8_lossy(&c.reason))
            }
            Some(e) => format!(" ({e})"),
            None => String::new(),
        }
    }

    /// Finishes the batch stream and closes the connection with `code` (one of
    /// `outpost_shared::frame::close`).
    pub fn close(&mut self, code: u32, reason: &[u8]) {
        if let Some(d) = &mut self.data {
            let _ = d.finish();
        }
        self.conn.close(VarInt::from_u32(code), reason);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Sleeps until `deadline` (ms since the Unix epoch), or forever without one.
pub async fn sleep_until_ms(deadline: Option<i64>) {
    match deadline {
        Some(d) => tokio::time::sleep(Duration::from_millis((d - now_ms()).max(0) as u64)).await,
        None => std::future::pending().await,
    }
}

// ---- /proc readings

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, else 100).
pub fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User plus system CPU of a process (`pid`, or `"self"`), all its threads, in seconds;
/// `hz` from [`clk_tck`].
pub fn cpu_s(pid: &str, hz: f64) -> Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    let rest = &s[s.rfind(')').context("stat format")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    if f.len() < 13 {
        bail!("/proc/{pid}/stat: too few fields");
    }
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    Ok(ticks as f64 / hz)
}

/// User plus system CPU of every thread of a process (`pid`, or `"self"`), seconds:
/// (thread id, thread name, seconds). Threads that end while being read are left out.
pub fn thread_cpu(pid: &str, hz: f64) -> Vec<(u64, String, f64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return vec![];
    };
    let mut out = vec![];
    for e in dir.flatten() {
        let Ok(s) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (s.find('('), s.rfind(')')) else {
            continue;
        };
        let f: Vec<&str> = s[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let tid = e.file_name().to_string_lossy().parse().unwrap_or(0);
        out.push((
            tid,
            s[open + 1..close].to_string(),
            (ticks(11) + ticks(12)) as f64 / hz,
        ));
    }
    out
}

/// Resident memory of a process (`pid`, or `"self"`), KiB (`VmRSS`); 0 when unreadable.
pub fn rss_kb(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
        })
        .unwrap_or(0)
}

/// Busy and total jiffies of the whole machine since boot (`/proc/stat`, idle and iowait
/// are not busy).
pub fn sys_busy() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 5 {
        return (0, 0);
    }
    let total: u64 = v.iter().sum();
    (total - v[3] - v[4], total)
}

// ---- command lines

/// A command line of `--key value` (or `--key=value`) options, taken one by one.
pub struct Opts(BTreeMap<String, String>);

impl Opts {
    /// The process's arguments; `-h`/`--help` prints `usage` and exits.
    pub fn from_env(usage: &str) -> Result<Opts> {
        let mut m = BTreeMap::new();
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            if a == "-h" || a == "--help" {
                println!("{usage}");
                std::process::exit(0);
            }
            let Some(key) = a.strip_prefix("--") else {
                bail!("unexpected argument {a:?} (see --help)")
            };
            let (k, v) = match key.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (
                    key.to_string(),
                    it.next()
                        .with_context(|| format!("--{key} needs a value"))?,
                ),
            };
            m.insert(k, v);
        }
        Ok(Opts(m))
    }

    /// The value of `--key`, if given.
    pub fn take(&mut self, key: &str) -> Option<String> {
        self.0.remove(key)
    }

    /// The value of `--key` parsed, if given.
    pub fn parse<T: FromStr>(&mut self, key: &str) -> Result<Option<T>>
    where
        T::Err: Display,
    {
        self.take(key)
            .map(|v| {
                v.parse::<T>()
                    .map_err(|e| anyhow::anyhow!("--{key} {v:?}: {e}"))
            })
            .transpose()
    }

    /// The value of `--key` parsed, which must be given.
    pub fn require<T: FromStr>(&mut self, key: &str) -> Result<T>
    where
        T::Err: Display,
    {
        self.parse(key)?
            .with_context(|| format!("--{key} is required (see --help)"))
    }

    /// Fails on an option nobody took.
    pub fn finish(self) -> Result<()> {
        match self.0.keys().next() {
            Some(k) => bail!("unknown option --{k} (see --help)"),
            None => Ok(()),
        }
    }
}
