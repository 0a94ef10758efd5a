//! `ingest-bench`: feeds a VictoriaMetrics import file (`vm_import.jsonl` from
//! `/work/shared/peers/gen_dataset.py`) to a running Outpost aggregator the way agents do, and
//! reports the aggregator's CPU per sample, like the peers' `post_file.py` does for VictoriaMetrics.
//!
//! Series are grouped by a host label (`instance` in gen_dataset's data); each host becomes its
//! own agent with its own client certificate (issued in-process from `--certs`' CA when
//! missing), its own UDP socket and QUIC connection. Each connection is driven by the same
//! `outpost_shared::session::ClientSession` as `agent/src/uplink.rs`, so it speaks the
//! protocol as the agent does: a control stream with hello → welcome, heartbeats every 5 s,
//! acks and check assignments coming back; one unidirectional stream of `Batch` frames whose
//! payloads share one `Encoder` context, one batch per timestamp (that host's series at that
//! time), at most `--window` batches unacknowledged. It ends when every batch is acknowledged, i.e. durably
//! written (the aggregator's group commit fsyncs).
//!
//! Batches are encoded before the clock starts (the encoder context is deterministic), so the
//! measured phase is handshakes, QUIC/TLS, and waiting for acks; the codec's client-side cost
//! is reported apart as `encode_s`.
//!
//! usage: ingest-bench --file vm_import.jsonl --quic 127.0.0.1:PORT --pid AGG_PID --certs DIR
//!        [--http 127.0.0.1:PORT] [--window 256] [--host-label instance] [--max-seconds 600]

use anyhow::{Context, Result, bail};
use outpost_shared::codec::Encoder;
use outpost_shared::frame::{self, Frame, close};
use outpost_shared::session::{BufferState, ClientConfig, ClientEvent, ClientSession, Transmit};
use outpost_shared::tls::{TlsFiles, client_config, install_crypto_provider, issue_agent};
use outpost_shared::{Batch, Labels, Point, SeriesPoints};
use quinn::{Endpoint, VarInt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    file: PathBuf,
    quic: SocketAddr,
    pid: u32,
    certs: PathBuf,
    http: Option<String>,
    window: u64,
    host_label: String,
    server_name: String,
    max_seconds: u64,
}

fn parse_args() -> Result<Args> {
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "-h" || a == "--help" {
            println!(
                "usage: ingest-bench --file vm_import.jsonl --quic 127.0.0.1:PORT --pid AGG_PID --certs DIR \
                 [--http 127.0.0.1:PORT] [--window 256] [--host-label instance] [--server-name localhost] [--max-seconds 600]"
            );
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
    let mut take = |k: &str| m.remove(k);
    let quic: SocketAddr = take("quic")
        .context("--quic is required")?
        .parse()
        .context("--quic: an IP:port")?;
    if !quic.ip().is_loopback() {
        bail!("--quic must be a loopback address");
    }
    let http = take("http");
    if let Some(h) = &http
        && !(h.starts_with("127.") || h.starts_with("localhost"))
    {
        bail!("--http must be a loopback address");
    }
    let a = Args {
        file: take("file").context("--file is required")?.into(),
        quic,
        pid: take("pid")
            .context("--pid is required")?
            .parse()
            .context("--pid")?,
        certs: take("certs")
            .context("--certs is required (a folder with ca.crt and ca.key)")?
            .into(),
        http,
        window: take("window")
            .map(|v| v.parse())
            .transpose()
            .context("--window")?
            .unwrap_or(256),
        host_label: take("host-label").unwrap_or_else(|| "instance".into()),
        server_name: take("server-name").unwrap_or_else(|| "localhost".into()),
        max_seconds: take("max-seconds")
            .map(|v| v.parse())
            .transpose()
            .context("--max-seconds")?
            .unwrap_or(600),
    };
    if let Some(k) = m.keys().next() {
        bail!("unknown option --{k} (see --help)");
    }
    if a.window == 0 {
        bail!("--window must be at least 1");
    }
    Ok(a)
}

/// Clock ticks per second for /proc/<pid>/stat times.
fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process (all its threads), in seconds.
fn cpu_s(pid: &str, hz: f64) -> Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    let rest = &s[s.rfind(')').context("stat format")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    Ok(ticks as f64 / hz)
}

fn rss_kb(pid: u32) -> u64 {
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

/// Busy and total jiffies of the whole machine.
fn sys_busy() -> (u64, u64) {
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

/// An agent id from a host label value (`host-007:9100` → `host-007-9100`).
fn agent_id(host: &str) -> String {
    let id: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    id.trim_start_matches('.').to_string()
}

struct Host {
    id: String,
    frames: Vec<Vec<u8>>,
    samples: u64,
    payload_bytes: u64,
}

/// Reads the import file and encodes, per host, one batch per timestamp on one codec context.
fn load(a: &Args) -> Result<(Vec<Host>, u64)> {
    let f = std::fs::File::open(&a.file).with_context(|| format!("open {}", a.file.display()))?;
    // host → series (labels, points by time)
    type HostSeries = Vec<(Labels, BTreeMap<i64, f64>)>;
    let mut hosts: BTreeMap<String, HostSeries> = BTreeMap::new();
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line).with_context(|| format!("line {}", n + 1))?;
        let metric = v["metric"]
            .as_object()
            .with_context(|| format!("line {}: no metric object", n + 1))?;
        let labels = Labels::new(
            metric
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())),
        );
        let host = labels
            .get(&a.host_label)
            .with_context(|| format!("line {}: no {} label", n + 1, a.host_label))?
            .to_string();
        let (vals, tss) = (v["values"].as_array(), v["timestamps"].as_array());
        let (Some(vals), Some(tss)) = (vals, tss) else {
            bail!("line {}: values/timestamps missing", n + 1)
        };
        if vals.len() != tss.len() {
            bail!(
                "line {}: {} values but {} timestamps",
                n + 1,
                vals.len(),
                tss.len()
            );
        }
        let mut pts = BTreeMap::new();
        for (v, t) in vals.iter().zip(tss) {
            let value = match v {
                Value::Number(x) => x.as_f64().context("value")?,
                Value::String(s) => s.parse().with_context(|| format!("value {s:?}"))?,
                _ => bail!("line {}: value {v} is not a number", n + 1),
            };
            pts.insert(t.as_i64().context("timestamp")?, value);
        }
        hosts.entry(host).or_default().push((labels, pts));
    }
    let mut out = vec![];
    let mut encode_s = 0.0;
    for (host, series) in hosts {
        let mut by_ts: BTreeMap<i64, Vec<(usize, f64)>> = BTreeMap::new();
        for (i, (_, pts)) in series.iter().enumerate() {
            for (&ts, &v) in pts {
                by_ts.entry(ts).or_default().push((i, v));
            }
        }
        let mut enc = Encoder::new();
        let (mut frames, mut samples, mut payload_bytes) = (vec![], 0u64, 0u64);
        for (seq, (ts, pts)) in by_ts.into_iter().enumerate() {
            let batch = Batch {
                series: pts
                    .iter()
                    .map(|&(i, value)| SeriesPoints {
                        labels: series[i].0.clone(),
                        points: vec![Point { ts, value }],
                    })
                    .collect(),
            };
            let t = Instant::now();
            let payload = enc.encode(&batch);
            encode_s += t.elapsed().as_secs_f64();
            samples += pts.len() as u64;
            payload_bytes += payload.len() as u64;
            frames.push(frame::encode(&Frame::Batch {
                seq: seq as u64 + 1,
                payload,
                trace: None,
            }));
        }
        out.push(Host {
            id: agent_id(&host),
            frames,
            samples,
            payload_bytes,
        });
    }
    Ok((out, (encode_s * 1e6) as u64))
}

fn quic_client(a: &Args, id: &str) -> Result<quinn::ClientConfig> {
    let files = TlsFiles {
        ca: a.certs.join("ca.crt"),
        cert: a.certs.join("agents").join(format!("{id}.crt")),
        key: a.certs.join("agents").join(format!("{id}.key")),
    };
    if !files.cert.exists() || !files.key.exists() {
        issue_agent(&a.certs, id)?;
    }
    let tls = client_config(&files)?;
    let qc = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut cc = quinn::ClientConfig::new(Arc::new(qc));
    cc.transport_config(Arc::new(outpost_service::quic::transport()));
    Ok(cc)
}

use outpost_service::now_ms;

/// Sleeps until `deadline` (ms since the Unix epoch), or forever without one.
async fn sleep_until_ms(deadline: Option<i64>) {
    match deadline {
        Some(d) => tokio::time::sleep(Duration::from_millis((d - now_ms()).max(0) as u64)).await,
        None => std::future::pending().await,
    }
}

/// One agent's session, driven by the agent's own [`ClientSession`]: hello/welcome, all
/// batches with a window, heartbeats, until all are acknowledged. Returns the connection's
/// UDP bytes sent and received.
async fn run_host(
    cfg: quinn::ClientConfig,
    addr: SocketAddr,
    server_name: String,
    id: String,
    frames: Vec<Vec<u8>>,
    window: u64,
) -> Result<(u64, u64)> {
    let mut ep = Endpoint::client(([127, 0, 0, 1], 0).into())?;
    ep.set_default_client_config(cfg);
    let conn = tokio::time::timeout(Duration::from_secs(10), ep.connect(addr, &server_name)?)
        .await
        .context("handshake timed out")??;
    let (mut ctl_tx, mut ctl_rx) = conn.open_bi().await?;
    let last = frames.len() as u64;
    // The whole data set is buffered before the start, as seqs 1..=last.
    let mut session = ClientSession::new(
        ClientConfig {
            window,
            heartbeat_every_ms: 5_000,
            ..ClientConfig::new(&id, "bench", env!("CARGO_PKG_VERSION"))
        },
        BufferState {
            next_seq: last + 1,
            ..BufferState::default()
        },
    );
    session.handle_connected(now_ms());
    // Control frames are read on their own task so a half-read frame is never abandoned.
    let (frames_tx, mut frames_rx) = tokio::sync::mpsc::channel(64);
    let reader = tokio::spawn(async move {
        loop {
            let r = frame::read(&mut ctl_rx).await;
            let end = !matches!(r, Ok(Some(_)));
            if frames_tx.send(r).await.is_err() || end {
                return;
            }
        }
    });
    let mut data: Option<quinn::SendStream> = None;
    let result: Result<()> = async {
        loop {
            while let Some(t) = session.poll_transmit() {
                match t {
                    Transmit::Control(f) => ctl_tx.write_all(&frame::encode(&f)).await?,
                    Transmit::Batches { from, max } => {
                        let stream = match &mut data {
                            Some(d) => d,
                            None => data.insert(conn.open_uni().await?),
                        };
                        for seq in from..from.saturating_add(max).min(last + 1) {
                            session.handle_sent(seq, 0)?;
                            stream.write_all(&frames[seq as usize - 1]).await?;
                        }
                    }
                    // Nothing is buffered after the start, so nothing goes live.
                    Transmit::Live { .. } => {}
                }
            }
            while let Some(e) = session.poll_event() {
                if let ClientEvent::Connected { applied_seq, .. } = e
                    && applied_seq != 0
                {
                    bail!(
                        "the aggregator already holds batches of this agent (applied seq {applied_seq}): start it on an empty data dir"
                    );
                }
            }
            if session.acked() >= last {
                return Ok(());
            }
            tokio::select! {
                r = frames_rx.recv() => match r {
                    Some(Ok(Some(f))) => session.handle_frame(f, now_ms())?,
                    Some(Ok(None)) | None => bail!("aggregator closed the control stream"),
                    Some(Err(e)) => bail!("control stream: {e}"),
                },
                _ = sleep_until_ms(session.poll_timeout()) => session.handle_timeout(now_ms())?,
            }
        }
    }
    .await;
    reader.abort();
    result.with_context(|| id.clone())?;
    let s = conn.stats();
    if let Some(mut d) = data {
        let _ = d.finish();
    }
    conn.close(VarInt::from_u32(close::SHUTDOWN), b"benchmark done");
    let _ = tokio::time::timeout(Duration::from_secs(2), ep.wait_idle()).await;
    Ok((s.udp_tx.bytes, s.udp_rx.bytes))
}

fn main() -> Result<()> {
    let a = parse_args()?;
    install_crypto_provider();
    let t_load = Instant::now();
    let (hosts, encode_us) = load(&a)?;
    let load_s = t_load.elapsed().as_secs_f64();
    if hosts.is_empty() {
        bail!("{} holds no series", a.file.display());
    }
    let samples: u64 = hosts.iter().map(|h| h.samples).sum();
    let batches: usize = hosts.iter().map(|h| h.frames.len()).sum();
    let payload_bytes: u64 = hosts.iter().map(|h| h.payload_bytes).sum();
    let frame_bytes: u64 = hosts
        .iter()
        .flat_map(|h| h.frames.iter())
        .map(|f| f.len() as u64)
        .sum();
    let cfgs = hosts
        .iter()
        .map(|h| quic_client(&a, &h.id))
        .collect::<Result<Vec<_>>>()?;
    let ids: Vec<String> = hosts.iter().map(|h| h.id.clone()).collect();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let hz = clk_tck();
    let pid = a.pid.to_string();
    let (c0, b0, me0, t0) = (
        cpu_s(&pid, hz)?,
        sys_busy(),
        cpu_s("self", hz)?,
        Instant::now(),
    );
    let results = rt.block_on(async {
        let tasks: Vec<_> = hosts
            .into_iter()
            .zip(cfgs)
            .map(|(h, cfg)| {
                tokio::spawn(run_host(
                    cfg,
                    a.quic,
                    a.server_name.clone(),
                    h.id,
                    h.frames,
                    a.window,
                ))
            })
            .collect();
        tokio::time::timeout(Duration::from_secs(a.max_seconds), async {
            let mut out = vec![];
            for t in tasks {
                out.push(t.await.map_err(anyhow::Error::from).and_then(|r| r));
            }
            out
        })
        .await
    });
    let wall = t0.elapsed().as_secs_f64();
    let (c1, b1, me1) = (cpu_s(&pid, hz)?, sys_busy(), cpu_s("self", hz)?);
    rt.shutdown_timeout(Duration::from_secs(2));
    let results = results.map_err(|_| {
        anyhow::anyhow!(
            "not every batch was acknowledged within --max-seconds {}",
            a.max_seconds
        )
    })?;
    let (mut tx, mut rx) = (0u64, 0u64);
    let mut errors = vec![];
    for r in results {
        match r {
            Ok((t, r)) => {
                tx += t;
                rx += r;
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        bail!(
            "{} of {} connections failed; first: {}",
            errors.len(),
            ids.len(),
            errors[0]
        );
    }
    // What the aggregator says it applied for these agents.
    let stored: Option<u64> = a.http.as_ref().and_then(|h| {
        let v = outpost_tests::get_json(&format!("http://{h}/api/v1/agents")).ok()?;
        Some(
            v["data"]
                .as_array()?
                .iter()
                .filter(|x| {
                    x["id"]
                        .as_str()
                        .is_some_and(|id| ids.iter().any(|i| i == id))
                })
                .filter_map(|x| x["samples"].as_u64())
                .sum(),
        )
    });
    if let Some(s) = stored
        && s != samples
    {
        bail!("the aggregator reports {s} samples applied for these agents, {samples} were sent");
    }
    let server = c1 - c0;
    let client = me1 - me0;
    let n = samples as f64;
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    println!(
        "{}",
        json!({
            "target": format!("outpost quic {}", a.quic),
            "hosts": ids.len(),
            "window": a.window,
            "samples": samples,
            "batches": batches,
            "samples_stored": stored,
            "wall_s": r2(wall),
            "samples_per_s": (n / wall).round(),
            "server_cpu_s": r2(server),
            "server_cpu_us_per_sample": (server * 1e6 / n * 1000.0).round() / 1000.0,
            "samples_per_server_cpu_s": (n / server.max(1e-9)).round(),
            "client_cpu_s": r2(client),
            "system_busy_cores_avg": r2((b1.0 - b0.0) as f64 / hz / wall),
            "server_rss_kb_after": rss_kb(a.pid),
            "load_s": r2(load_s),
            "encode_s": r2(encode_us as f64 / 1e6),
            "payload_bytes_per_sample": (payload_bytes as f64 / n * 1000.0).round() / 1000.0,
            "frame_bytes_per_sample": (frame_bytes as f64 / n * 1000.0).round() / 1000.0,
            "udp_bytes_per_sample": (((tx + rx) as f64) / n * 1000.0).round() / 1000.0,
            "udp_tx_bytes": tx,
            "udp_rx_bytes": rx,
        })
    );
    Ok(())
}
