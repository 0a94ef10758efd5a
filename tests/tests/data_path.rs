//! End to end: real agent and aggregator binaries, real QUIC with mutual TLS, real RocksDB.

use outpost_shared::frame::{self, Frame, Hello, PROTOCOL_VERSION, close};
use outpost_tests::*;
use std::sync::Arc;
use std::time::Duration;

fn cycles(agg: &Aggregator, agent: &str) -> Option<f64> {
    let r = agg.query(&format!("outpost_agent_cycles_total{{agent=\"{agent}\"}}"));
    r.first().and_then(|s| sample_value(&s["value"]))
}

#[test]
fn host_metrics_flow_and_are_queryable() {
    let tmp = TempDir::new("flow");
    let certs = Certs::init(&tmp.path().join("certs"));
    let agg = Aggregator::start(tmp.path(), &certs);
    let agent = Agent::start(tmp.path(), &agg, &AgentSpec::new("web-1", &certs));

    let c = wait_for(Duration::from_secs(30), || {
        cycles(&agg, "web-1").filter(|c| *c >= 4.0)
    });
    assert!(
        c.is_some(),
        "cycle counter never reached 4 at the aggregator"
    );

    // Host metrics with node_exporter's names carry agent and region.
    let cpu = agg.query("node_cpu_seconds_total{mode=\"idle\"}");
    assert_eq!(
        cpu.len(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        "one idle series per cpu: {cpu:?}"
    );
    for s in &cpu {
        assert_eq!(s["metric"]["agent"], "web-1");
        assert_eq!(s["metric"]["region"], "test-region");
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kb: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    let mem = agg.query("node_memory_MemTotal_bytes");
    assert_eq!(mem.len(), 1);
    assert_eq!(sample_value(&mem[0]["value"]), Some(total_kb * 1024.0));
    for name in [
        "node_load1",
        "node_filesystem_size_bytes",
        "node_network_receive_bytes_total",
        "node_boot_time_seconds",
    ] {
        assert!(!agg.query(name).is_empty(), "{name} missing");
    }
    // Regex and negative matchers.
    let not_idle = agg.query("node_cpu_seconds_total{mode!=\"idle\",mode=~\"user|system\"}");
    assert_eq!(not_idle.len(), 2 * cpu.len());
    assert!(
        not_idle
            .iter()
            .all(|s| s["metric"]["mode"] == "user" || s["metric"]["mode"] == "system")
    );

    // Range query of the cycle counter: one sample per cycle, consecutive, no repeats.
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let raw = get_json(&agg.url(&format!(
        "/api/v1/query?query={}&time={end}",
        encode("outpost_agent_cycles_total{agent=\"web-1\"}[1h]")
    )))
    .unwrap();
    assert_eq!(raw["data"]["resultType"], "matrix");
    let vals: Vec<f64> = raw["data"]["result"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(sample_value)
        .collect();
    assert!(vals.len() >= 4, "{vals:?}");
    for w in vals.windows(2) {
        assert_eq!(w[1], w[0] + 1.0, "cycles must be consecutive: {vals:?}");
    }
    assert_eq!(vals[0], 1.0, "the first cycle arrived: {vals:?}");

    let range = get_json(&agg.url(&format!(
        "/api/v1/query_range?query={}&start={}&end={end}&step=1",
        encode("node_load1"),
        end - 30.0
    )))
    .unwrap();
    assert_eq!(range["status"], "success");
    assert!(
        !range["data"]["result"][0]["values"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Metadata endpoints.
    let labels = get_json(&agg.url("/api/v1/labels")).unwrap();
    for l in ["__name__", "agent", "region", "cpu", "mode"] {
        assert!(
            labels["data"].as_array().unwrap().iter().any(|v| v == l),
            "label {l} missing: {labels}"
        );
    }
    let agents = get_json(&agg.url("/api/v1/label/agent/values")).unwrap();
    assert_eq!(agents["data"], serde_json::json!(["web-1"]));
    let series = get_json(&agg.url(&format!(
        "/api/v1/series?match[]={}&match[]={}",
        encode("node_load1"),
        encode("node_load5")
    )))
    .unwrap();
    assert_eq!(series["data"].as_array().unwrap().len(), 2, "{series}");

    // The agents resource.
    let a = agg.agent("web-1").expect("web-1 listed");
    assert_eq!(a["connected"], true);
    assert_eq!(a["region"], "test-region");
    assert!(a["last_seq"].as_u64().unwrap() >= 4);
    assert!(a["clock_skew_seconds"].as_f64().unwrap().abs() < 1.0);
    assert!(a["last_seen"].as_str().unwrap().ends_with('Z'));

    // Self-observability on both sides.
    let m = agg.metrics();
    assert!(
        metric_value(&m, "outpost_aggregator_ingest_batches_total").unwrap() >= 4.0,
        "{m}"
    );
    assert_eq!(
        metric_value(&m, "outpost_aggregator_connected_agents"),
        Some(1.0)
    );
    let am = agent.metrics();
    assert!(
        metric_value(&am, "outpost_agent_batches_acked_total").unwrap() >= 4.0,
        "{am}"
    );
    assert_eq!(
        metric_value(&am, "outpost_agent_uplink_connected"),
        Some(1.0)
    );
    assert!(
        metric_value(&am, "outpost_agent_uplink_sent_bytes_total").unwrap() > 0.0,
        "{am}"
    );

    // Bad queries get Prometheus' error shape.
    let (code, body) = get_status(&agg.url("/api/v1/query?query=rate(x%5B"), None);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"errorType\":\"bad_data\""), "{body}");
}

#[test]
fn agent_with_certificate_from_another_ca_is_refused() {
    let tmp = TempDir::new("foreign-ca");
    let certs = Certs::init(&tmp.path().join("certs"));
    let foreign = Certs::init(&tmp.path().join("foreign"));
    let agg = Aggregator::start(tmp.path(), &certs);
    let (cert, key) = foreign.agent("intruder");
    let spec = AgentSpec {
        cert,
        key,
        ..AgentSpec::new("intruder", &certs)
    };
    let agent = Agent::start(tmp.path(), &agg, &spec);
    let refused = wait_for(Duration::from_secs(20), || {
        metric_value(
            &agg.metrics(),
            "outpost_aggregator_connections_refused_total{reason=\"tls\"}",
        )
        .filter(|v| *v >= 2.0)
    });
    assert!(
        refused.is_some(),
        "aggregator did not count refused handshakes:\n{}",
        agg.metrics()
    );
    assert!(agg.agent("intruder").is_none());
    assert!(agg.query("{agent=\"intruder\"}").is_empty());
    assert_eq!(
        metric_value(&agent.metrics(), "outpost_agent_uplink_connected"),
        Some(0.0)
    );
    assert_eq!(
        metric_value(&agg.metrics(), "outpost_aggregator_connections_total"),
        Some(0.0)
    );
}

#[test]
fn agent_claiming_another_id_is_refused_with_a_reason() {
    let tmp = TempDir::new("imposter");
    let certs = Certs::init(&tmp.path().join("certs"));
    let agg = Aggregator::start(tmp.path(), &certs);
    let (cert, key) = certs.agent("web-1");
    // The certificate says web-1; the config claims db-1.
    let spec = AgentSpec {
        cert,
        key,
        ..AgentSpec::new("db-1", &certs)
    };
    let agent = Agent::start(tmp.path(), &agg, &spec);
    let logged = wait_for(Duration::from_secs(20), || {
        agent
            .proc
            .logs()
            .contains("hello claims agent id \"db-1\" but the client certificate is for \"web-1\"")
            .then_some(())
    });
    assert!(
        logged.is_some(),
        "agent log does not say why it was refused:\n{}",
        agent.proc.logs()
    );
    assert!(
        metric_value(
            &agg.metrics(),
            "outpost_aggregator_connections_refused_total{reason=\"identity\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert!(agg.agent("db-1").is_none() && agg.agent("web-1").is_none());
    assert!(agg.query("{agent=\"db-1\"}").is_empty());
}

/// A raw QUIC client with a valid certificate, to send what a real agent never would.
struct RawClient {
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
}

async fn raw_connect(agg: &Aggregator, certs: &Certs, id: &str) -> RawClient {
    outpost_shared::tls::install_crypto_provider();
    let (cert, key) = certs.agent(id);
    let tls = outpost_shared::tls::client_config(&outpost_shared::tls::TlsFiles {
        ca: certs.ca(),
        cert,
        key,
    })
    .unwrap();
    let qc = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(qc)));
    let conn = ep
        .connect(agg.quic.parse().unwrap(), "localhost")
        .unwrap()
        .await
        .unwrap();
    RawClient {
        _endpoint: ep,
        conn,
    }
}

fn hello(id: &str, protocol: u16) -> Vec<u8> {
    frame::encode(&Frame::Hello(Hello {
        protocol,
        agent_id: id.into(),
        region: "r".into(),
        agent_version: "test".into(),
        clock_ms: 0,
        acked_seq: 0,
    }))
}

fn close_code(conn: &quinn::Connection) -> Option<u64> {
    match conn.close_reason()? {
        quinn::ConnectionError::ApplicationClosed(c) => Some(c.error_code.into_inner()),
        _ => None,
    }
}

#[test]
fn malformed_frame_closes_only_that_connection() {
    let tmp = TempDir::new("malformed");
    let certs = Certs::init(&tmp.path().join("certs"));
    let agg = Aggregator::start(tmp.path(), &certs);
    let _agent = Agent::start(tmp.path(), &agg, &AgentSpec::new("web-1", &certs));
    assert!(
        wait_for(Duration::from_secs(20), || cycles(&agg, "web-1")
            .filter(|c| *c >= 2.0))
        .is_some()
    );
    let sessions_before =
        metric_value(&agg.metrics(), "outpost_aggregator_connections_total").unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let code = rt.block_on(async {
        let c = raw_connect(&agg, &certs, "rogue").await;
        let (mut tx, mut rx) = c.conn.open_bi().await.unwrap();
        tx.write_all(&hello("rogue", PROTOCOL_VERSION))
            .await
            .unwrap();
        let w = frame::read(&mut rx).await.unwrap().unwrap();
        assert!(matches!(w, Frame::Welcome(_)), "{w:?}");
        let mut data = c.conn.open_uni().await.unwrap();
        // A well-framed batch whose payload is garbage.
        data.write_all(&frame::encode(&Frame::Batch {
            seq: 1,
            payload: vec![1, 0, 0xff, 0xff, 0xff],
            trace: None,
        }))
        .await
        .unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(10), c.conn.closed()).await;
        close_code(&c.conn)
    });
    assert_eq!(code, Some(close::MALFORMED as u64));
    let m = agg.metrics();
    assert_eq!(
        metric_value(&m, "outpost_aggregator_ingest_malformed_frames_total"),
        Some(1.0),
        "{m}"
    );
    assert!(
        agg.query("{agent=\"rogue\"}").is_empty(),
        "nothing of the bad batch was stored"
    );

    // The real agent's session was untouched: same session count, still delivering.
    let before = cycles(&agg, "web-1").unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || cycles(&agg, "web-1")
            .filter(|c| *c >= before + 2.0))
        .is_some()
    );
    assert_eq!(agg.agent("web-1").unwrap()["connected"], true);
    let m = agg.metrics();
    assert_eq!(
        metric_value(&m, "outpost_aggregator_connections_total"),
        Some(sessions_before + 1.0),
        "only the rogue session was added"
    );
}

#[test]
fn protocol_version_mismatch_is_refused_clearly() {
    let tmp = TempDir::new("version");
    let certs = Certs::init(&tmp.path().join("certs"));
    let agg = Aggregator::start(tmp.path(), &certs);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (reply, code) = rt.block_on(async {
        let c = raw_connect(&agg, &certs, "future").await;
        let (mut tx, mut rx) = c.conn.open_bi().await.unwrap();
        tx.write_all(&hello("future", 99)).await.unwrap();
        let reply = frame::read(&mut rx).await.ok().flatten();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.conn.closed()).await;
        (reply, close_code(&c.conn))
    });
    match reply {
        Some(Frame::Refused { reason }) => assert!(
            reason.contains("protocol version mismatch: peer speaks v99"),
            "{reason}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(code, Some(close::VERSION_MISMATCH as u64));
    assert!(agg.proc.logs().contains("protocol version mismatch"));
}

#[test]
fn a_v2_agent_is_welcomed_in_v2_and_kept_while_quiet_and_a_silent_v3_agent_is_closed() {
    let tmp = TempDir::new("versions");
    let certs = Certs::init(&tmp.path().join("certs"));
    let agg = Aggregator::start_config(
        tmp.path(),
        &certs,
        "",
        "[alerting]\nagent_down_after = \"4s\"\n",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (old_welcome, v4_welcome, new_welcome, old_code, new_code, new_silent_for) =
        rt.block_on(async {
            let old = raw_connect(&agg, &certs, "old-1").await;
            let (mut otx, mut orx) = old.conn.open_bi().await.unwrap();
            otx.write_all(&hello("old-1", 2)).await.unwrap();
            let w = frame::read_body(&mut orx).await.ok().flatten();
            // A v4 agent is welcomed in v4's layout; it leaves at once.
            let v4 = raw_connect(&agg, &certs, "v4-1").await;
            let (mut vtx, mut vrx) = v4.conn.open_bi().await.unwrap();
            vtx.write_all(&hello("v4-1", 4)).await.unwrap();
            let w4 = frame::read_body(&mut vrx).await.ok().flatten();
            v4.conn.close(quinn::VarInt::from_u32(close::NORMAL), b"");
            // A v5 peer promised to send something every interval of its welcome; this one
            // sends nothing more.
            let new = raw_connect(&agg, &certs, "new-1").await;
            let (mut ntx, mut nrx) = new.conn.open_bi().await.unwrap();
            ntx.write_all(&hello("new-1", PROTOCOL_VERSION))
                .await
                .unwrap();
            let nw = frame::read(&mut nrx).await.ok().flatten();
            let t = std::time::Instant::now();
            let _ = tokio::time::timeout(Duration::from_secs(15), new.conn.closed()).await;
            let silent_for = t.elapsed();
            (
                w,
                w4,
                nw,
                close_code(&old.conn),
                close_code(&new.conn),
                silent_for,
            )
        });
    // Welcomes of older versions are in their own layout, without the v5 interval: the
    // bytes are what the codec writes for that version (frame.rs tests that layout).
    for (body, version) in [(old_welcome, 2), (v4_welcome, 4)] {
        let body = body.unwrap_or_else(|| panic!("no welcome for v{version}"));
        match frame::decode(&body) {
            Ok(f @ Frame::Welcome(_)) => {
                if let Frame::Welcome(w) = &f {
                    assert_eq!(w.protocol, version, "welcomed in its own version");
                }
                assert_eq!(frame::encode(&f)[4..], body[..], "v{version}");
            }
            other => panic!("v{version}: expected a welcome, got {other:?}"),
        }
    }
    match new_welcome {
        // A quarter of agent_down_after.
        Some(Frame::Welcome(w)) => {
            assert_eq!((w.protocol, w.alive_every_ms), (PROTOCOL_VERSION, 1_000))
        }
        other => panic!("expected a welcome, got {other:?}"),
    }
    assert_eq!(old_code, None, "the quiet v2 agent is still connected");
    assert_eq!(new_code, Some(close::SILENT as u64));
    assert!(
        new_silent_for >= Duration::from_secs(3) && new_silent_for < Duration::from_secs(7),
        "closed after {new_silent_for:?} of silence (agent_down_after is 4s)"
    );
    assert!(
        agg.proc.logs().contains("agent is down"),
        "the aggregator says why"
    );
}

/// A stand-in for an aggregator of protocol v2 on `127.0.0.1:0`: it refuses any other
/// version with the words v2 aggregators use, welcomes v2 hellos, and records every hello's
/// version. Returns its address.
fn v2_aggregator(
    rt: &tokio::runtime::Runtime,
    certs: &Certs,
    hellos: Arc<std::sync::Mutex<Vec<u16>>>,
) -> std::net::SocketAddr {
    outpost_shared::tls::install_crypto_provider();
    let tls = outpost_shared::tls::server_config(&outpost_shared::tls::TlsFiles {
        ca: certs.ca(),
        cert: certs.dir.join("aggregator.crt"),
        key: certs.dir.join("aggregator.key"),
    })
    .unwrap();
    let qsc = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let ep = rt.block_on(async {
        quinn::Endpoint::server(
            quinn::ServerConfig::with_crypto(Arc::new(qsc)),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap()
    });
    let addr = ep.local_addr().unwrap();
    rt.spawn(async move {
        while let Some(incoming) = ep.accept().await {
            let hellos = hellos.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let Ok((mut tx, mut rx)) = conn.accept_bi().await else {
                    return;
                };
                let Ok(Some(body)) = frame::read_body(&mut rx).await else {
                    return;
                };
                let v = frame::peek_hello_version(&body).unwrap_or(0);
                hellos.lock().unwrap().push(v);
                if v != 2 {
                    let reason = format!(
                        "protocol version mismatch: peer speaks v{v}, this build speaks v2; upgrade the older side"
                    );
                    let _ = tx
                        .write_all(&frame::encode(&Frame::Refused {
                            reason: reason.clone(),
                        }))
                        .await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    conn.close(quinn::VarInt::from_u32(close::VERSION_MISMATCH), reason.as_bytes());
                    return;
                }
                let welcome = Frame::Welcome(outpost_shared::frame::Welcome {
                    protocol: 2,
                    aggregator_version: "v2".into(),
                    clock_ms: wall_ms(),
                    applied_seq: 0,
                    // Not on a v2 welcome's wire.
                    alive_every_ms: 0,
                });
                let _ = tx.write_all(&frame::encode(&welcome)).await;
                // Keep the connection until the agent goes away.
                conn.closed().await;
            });
        }
    });
    addr
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[test]
fn an_agent_refused_by_a_v2_aggregator_speaks_v2_on_its_next_connection() {
    let tmp = TempDir::new("old-aggregator");
    let certs = Certs::init(&tmp.path().join("certs"));
    // The real aggregator only gives the harness an address; the agent talks to the v2 one.
    let agg = Aggregator::start(tmp.path(), &certs);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let hellos = Arc::new(std::sync::Mutex::new(vec![]));
    let old = v2_aggregator(&rt, &certs, hellos.clone());
    let spec = AgentSpec {
        endpoint: Some(old.to_string()),
        ..AgentSpec::new("new-agent", &certs)
    };
    let agent = Agent::start(tmp.path(), &agg, &spec);
    let seen = wait_for(Duration::from_secs(15), || {
        let h = hellos.lock().unwrap().clone();
        (h.len() >= 2).then_some(h)
    })
    .unwrap_or_else(|| panic!("{:?}\n{}", hellos.lock().unwrap(), agent.proc.logs()));
    assert_eq!(
        seen[..2],
        [PROTOCOL_VERSION, 2],
        "v3 first, then v2 after the refusal"
    );
    // Welcomed in v2, the agent stays connected.
    let connected = wait_for(Duration::from_secs(10), || {
        (metric_value(&agent.metrics(), "outpost_agent_uplink_connected") == Some(1.0))
            .then_some(())
    });
    assert!(connected.is_some(), "{}", agent.proc.logs());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        hellos.lock().unwrap().len(),
        2,
        "no more connections once welcomed"
    );
}

/// The harness does not take another server on the port an aggregator could not bind for
/// the aggregator: a `/health` answered while the aggregator has exited is a failed start
/// (tests that went on against the wrong server failed far from the cause).
#[test]
fn an_aggregator_that_cannot_bind_its_port_is_not_taken_for_started() {
    use std::io::{Read, Write};
    let tmp = TempDir::new("taken-port");
    let certs = Certs::init(&tmp.path().join("certs"));
    // Another server on the port, answering every request with 200.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http = other.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut s in other.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        }
    });
    assert!(get_text(&format!("http://{http}/health")).is_ok());
    let quic = format!("127.0.0.1:{}", free_udp_port());
    let config = tmp.path().join("aggregator.toml");
    std::fs::write(
        &config,
        certs.aggregator_config(&tmp.path().join("data"), &http, &quic),
    )
    .unwrap();
    let dir = tmp.path().to_path_buf();
    let started = std::panic::catch_unwind(move || {
        Aggregator::start_with(&dir, config, http, quic);
    });
    let err = started.expect_err("started against another server");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("Address already in use"), "{msg}");
}
