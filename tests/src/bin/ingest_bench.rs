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
use outpost_shared::session::{BufferState, ClientConfig, ClientEvent, ClientSession};
use outpost_shared::tls::install_crypto_provider;
use outpost_shared::{Batch, Labels, Point, SeriesPoints};
use outpost_tests::sim::{self, Encoded, Link, Opts, clk_tck, cpu_s, rss_kb, sys_busy};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
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

const USAGE: &str = "usage: ingest-bench --file vm_import.jsonl --quic 127.0.0.1:PORT --pid AGG_PID --certs DIR \
[--http 127.0.0.1:PORT] [--window 256] [--host-label instance] [--server-name localhost] [--max-seconds 600]";

fn parse_args() -> Result<Args> {
    let mut o = Opts::from_env(USAGE)?;
    let quic: SocketAddr = o.require("quic")?;
    if !quic.ip().is_loopback() {
        bail!("--quic must be a loopback address");
    }
    let http = o.take("http");
    if let Some(h) = &http
        && !(h.starts_with("127.") || h.starts_with("localhost"))
    {
        bail!("--http must be a loopback address");
    }
    let a = Args {
        file: o.require::<PathBuf>("file")?,
        quic,
        pid: o.require("pid")?,
        certs: o
            .take("certs")
            .context("--certs is required (a folder with ca.crt and ca.key)")?
            .into(),
        http,
        window: o.parse("window")?.unwrap_or(256),
        host_label: o.take("host-label").unwrap_or_else(|| "instance".into()),
        server_name: o.take("server-name").unwrap_or_else(|| "localhost".into()),
        max_seconds: o.parse("max-seconds")?.unwrap_or(600),
    };
    o.finish()?;
    if a.window == 0 {
        bail!("--window must be at least 1");
    }
    Ok(a)
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

/// One agent's session, driven by the agent's own [`ClientSession`] over a [`Link`]:
/// hello/welcome, all batches with a window, heartbeats, until all are acknowledged. Returns
/// the connection's UDP bytes sent and received.
async fn run_host(
    cfg: quinn::ClientConfig,
    addr: SocketAddr,
    server_name: String,
    id: String,
    frames: Vec<Vec<u8>>,
    window: u64,
) -> Result<(u64, u64)> {
    let ep = sim::client_endpoint()?;
    let conn = sim::connect(&ep, cfg, addr, &server_name, Duration::from_secs(10)).await?;
    let last = frames.len() as u64;
    let mut source = Encoded(frames);
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
    let mut link = Link::open(conn, &mut session).await?;
    let result: Result<()> = async {
        loop {
            link.transmit(&mut session, &mut source).await?;
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
            link.wait(&mut session, std::future::pending::<()>()).await?;
        }
    }
    .await;
    result.with_context(|| id.clone())?;
    let s = link.connection().stats();
    link.close(close::SHUTDOWN, b"benchmark done");
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
        .map(|h| sim::quic_client(&a.certs, &h.id))
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
            "server_rss_kb_after": rss_kb(&pid),
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
