//! Synthetic checks defined once on the aggregator and run from three regions: real agents,
//! real local HTTP, TCP and DNS servers, results read back through `/api/v1/checks` and
//! the query API.
//!
//! The HTTP server answers `/health` with 503 to the us-west agent only (it finds the
//! connecting process through /proc), so one check fails from exactly one region.

use outpost_tests::proxy::{Faults, UdpProxy};
use outpost_tests::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The inode of the client socket whose local port is `port` (from /proc/net/tcp).
fn client_socket_inode(port: u16) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let want = format!(":{port:04X}");
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 9 && f[1].ends_with(&want)).then(|| f[9].to_string())
    })
}

/// Whether process `pid` holds socket `inode`.
fn process_holds(pid: u32, inode: &str) -> bool {
    let link = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy() == link))
        })
        .unwrap_or(false)
}

fn respond(s: &mut TcpStream, status: &str, body: &str) {
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A small HTTP/1.1 server: `/health` (503 for the process `blocked` names), `/login`
/// (a token), `/orders` (needs `Authorization: Bearer abc123`).
fn http_server(blocked: Arc<AtomicU32>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let blocked = blocked.clone();
            std::thread::spawn(move || {
                let mut s = s;
                let peer = s.peer_addr().map(|a| a.port()).unwrap_or(0);
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    return;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut auth = String::new();
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    let lower = h.to_ascii_lowercase();
                    if lower.starts_with("authorization:") {
                        auth = h["authorization:".len()..].trim().to_string();
                    }
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                let _ = r.read_exact(&mut body);
                match path.as_str() {
                    "/health" => {
                        let pid = blocked.load(Ordering::Relaxed);
                        let from_blocked = pid != 0
                            && client_socket_inode(peer).is_some_and(|i| process_holds(pid, &i));
                        if from_blocked {
                            respond(&mut s, "503 Service Unavailable", r#"{"status":"down"}"#)
                        } else {
                            respond(&mut s, "200 OK", r#"{"status":"up"}"#)
                        }
                    }
                    "/login" => respond(&mut s, "200 OK", r#"{"token":"abc123"}"#),
                    "/orders" if auth == "Bearer abc123" => {
                        respond(&mut s, "200 OK", r#"{"orders":[{"id":7}]}"#)
                    }
                    "/orders" => respond(&mut s, "401 Unauthorized", r#"{"error":"no token"}"#),
                    _ => respond(&mut s, "404 Not Found", "{}"),
                }
            });
        }
    });
    port
}

/// A TCP service that greets with a banner.
fn tcp_banner_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.write_all(b"220 outpost-test ready\r\n");
        }
    });
    port
}

/// A DNS responder on UDP: `svc.test.` A → 127.0.0.7, anything else NXDOMAIN.
fn dns_server() -> u16 {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let q = &buf[..n];
            if n < 12 {
                continue;
            }
            // The question: labels up to the root, then type and class.
            let mut i = 12;
            let mut name = vec![];
            while i < n && q[i] != 0 {
                let l = q[i] as usize;
                name.push(String::from_utf8_lossy(&q[i + 1..(i + 1 + l).min(n)]).to_lowercase());
                i += 1 + l;
            }
            let qend = (i + 5).min(n);
            let qtype = if i + 3 <= n {
                u16::from_be_bytes([q[i + 1], q[i + 2]])
            } else {
                0
            };
            let known = name.join(".") == "svc.test";
            let mut out = vec![];
            out.extend_from_slice(&q[0..2]);
            let rcode = if known { 0 } else { 3 };
            out.extend_from_slice(&[0x81 | (q[2] & 0x01), 0x80 | rcode]);
            out.extend_from_slice(&[0, 1]);
            let answers: u16 = if known && qtype == 1 { 1 } else { 0 };
            out.extend_from_slice(&answers.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0]);
            out.extend_from_slice(&q[12..qend]);
            if answers == 1 {
                out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 7]);
            }
            let _ = sock.send_to(&out, from);
        }
    });
    port
}

fn checks_view(agg: &Aggregator) -> Vec<Value> {
    get_json(&agg.url("/api/v1/checks"))
        .ok()
        .and_then(|v| v["data"]["checks"].as_array().cloned())
        .unwrap_or_default()
}

fn check<'a>(all: &'a [Value], name: &str) -> Option<&'a Value> {
    all.iter().find(|c| c["name"] == name)
}

fn region<'a>(c: &'a Value, region: &str) -> Option<&'a Value> {
    c["regions"]
        .as_array()?
        .iter()
        .find(|r| r["region"] == region)
}

fn state(all: &[Value], name: &str, r: &str) -> String {
    check(all, name)
        .and_then(|c| region(c, r))
        .and_then(|r| r["state"].as_str())
        .unwrap_or("")
        .to_string()
}

fn checks_yaml(http: u16, tcp: u16, dns: u16, extra: &str) -> String {
    format!(
        r#"checks:
  - name: health
    type: http
    frequency: 1s
    url: http://127.0.0.1:{http}/health
    locations: [us-east, us-west, eu-central]
  - name: orders-journey
    type: http
    frequency: 2s
    locations: [eu-central]
    steps:
      - name: login
        url: http://127.0.0.1:{http}/login
        method: POST
        body: '{{"user":"probe"}}'
        capture:
          token: {{ json: "$.token" }}
      - name: orders
        url: http://127.0.0.1:{http}/orders
        headers:
          Authorization: "Bearer ${{token}}"
        assert:
          json:
            - path: "$.orders[0].id"
              equals: 7
  - name: orders-without-token
    type: http
    frequency: 2s
    locations: [eu-central]
    steps:
      - name: login
        url: http://127.0.0.1:{http}/login
        method: POST
      - name: orders
        url: http://127.0.0.1:{http}/orders
  - name: banner
    type: tcp
    frequency: 2s
    target: 127.0.0.1:{tcp}
    expect: "^220 "
    locations: [us-east]
  - name: svc-dns
    type: dns
    frequency: 2s
    resolver: 127.0.0.1:{dns}
    query: svc.test
    record_type: A
    expect_answers: [127.0.0.7]
    locations: [us-west]
{extra}"#
    )
}

#[test]
fn checks_run_per_region_fail_where_they_fail_and_move_when_an_agent_dies() {
    let dir = TempDir::new("synthetic");
    let certs = Certs::init(&dir.path().join("pki"));
    let blocked = Arc::new(AtomicU32::new(0));
    let (http, tcp, dns) = (
        http_server(blocked.clone()),
        tcp_banner_server(),
        dns_server(),
    );
    let file = dir.path().join("checks.yaml");
    std::fs::write(&file, checks_yaml(http, tcp, dns, "")).unwrap();
    // A killed agent is noticed after 4 s of silence.
    let agg = Aggregator::start_config(
        dir.path(),
        &certs,
        &format!("checks_file = \"{}\"\n", file.display()),
        "[alerting]\nagent_down_after = \"4s\"\n",
    );
    // us-west's agent reaches the aggregator through a proxy the test can cut.
    let proxy = UdpProxy::start(agg.quic.parse().unwrap());
    let mut agents = vec![];
    for (id, r) in [
        ("east-1", "us-east"),
        ("east-2", "us-east"),
        ("west-1", "us-west"),
        ("central-1", "eu-central"),
    ] {
        let mut spec = AgentSpec::new(id, &certs);
        spec.region = r;
        spec.interval = "5s";
        if r == "us-west" {
            spec.endpoint = Some(proxy.listen.to_string());
        }
        agents.push(Agent::start(dir.path(), &agg, &spec));
    }
    blocked.store(agents[2].proc.pid(), Ordering::Relaxed);

    // Every region reports; health fails from us-west only.
    let settled = wait_for(Duration::from_secs(40), || {
        let all = checks_view(&agg);
        let want = [
            ("health", "us-east", "passing"),
            ("health", "eu-central", "passing"),
            ("health", "us-west", "failing"),
            ("orders-journey", "eu-central", "passing"),
            ("orders-without-token", "eu-central", "failing"),
            ("banner", "us-east", "passing"),
            ("svc-dns", "us-west", "passing"),
        ];
        want.iter()
            .all(|(c, r, s)| state(&all, c, r) == *s)
            .then_some(all)
    });
    let all = settled.unwrap_or_else(|| {
        panic!(
            "checks did not settle: {}",
            serde_json::to_string_pretty(&checks_view(&agg)).unwrap()
        )
    });
    let health = check(&all, "health").unwrap();
    assert_eq!(health["failing_regions"], 1, "{health}");
    assert_eq!(health["passing_regions"], 2, "{health}");
    let west = region(health, "us-west").unwrap();
    assert_eq!(west["agent"], "west-1");
    assert!(
        west["latest"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("503"),
        "the reason names the status: {west}"
    );
    // The journey fails at its second step, for the right reason, and says which step.
    let bad = region(check(&all, "orders-without-token").unwrap(), "eu-central").unwrap();
    assert_eq!(bad["latest"]["failed_step"], "orders", "{bad}");
    assert!(
        bad["latest"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("401"),
        "{bad}"
    );
    let steps = agg.query("probe_step_success{check=\"orders-without-token\"}");
    let step = |name: &str| {
        steps
            .iter()
            .find(|s| s["metric"]["step"] == name)
            .and_then(|s| sample_value(&s["value"]))
    };
    assert_eq!(step("login"), Some(1.0), "{steps:?}");
    assert_eq!(step("orders"), Some(0.0), "{steps:?}");
    // Results are series labelled with check, region and agent.
    let series = agg.query("probe_success{check=\"health\"}");
    let mut regions: Vec<String> = series
        .iter()
        .map(|s| s["metric"]["region"].as_str().unwrap_or("").to_string())
        .collect();
    regions.sort();
    regions.dedup();
    assert_eq!(regions, ["eu-central", "us-east", "us-west"], "{series:?}");
    assert!(series.iter().all(|s| s["metric"]["agent"].is_string()));
    let http_code = agg.query("probe_http_status_code{check=\"health\",region=\"us-west\"}");
    assert_eq!(
        sample_value(&http_code[0]["value"]),
        Some(503.0),
        "{http_code:?}"
    );
    let dns_ok = agg.query("probe_dns_answer_rrs{check=\"svc-dns\"}");
    assert_eq!(sample_value(&dns_ok[0]["value"]), Some(1.0), "{dns_ok:?}");

    // One check per region: exactly one us-east agent records health.
    let holder = region(health, "us-east").unwrap()["agent"]
        .as_str()
        .unwrap()
        .to_string();
    let per_agent = agg.query("probe_success{check=\"health\",region=\"us-east\"}[3s]");
    let recent: Vec<&str> = per_agent
        .iter()
        .map(|s| s["metric"]["agent"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(recent, [holder.as_str()], "only the assigned agent runs it");

    // Kill the us-east holder and cut us-west off at the same moment.
    let partition_start = now_ms();
    let idx = if holder == "east-1" { 0 } else { 1 };
    agents[idx].proc.kill();
    proxy.set(Faults::blackhole());
    let other = if idx == 0 { "east-2" } else { "east-1" };
    // The aggregator notices the killed agent when its connection times out; from then on
    // the check must run on the other us-east agent within two of its 1 s intervals.
    let reassigned = wait_for(Duration::from_secs(60), || {
        let all = checks_view(&agg);
        (region(check(&all, "health")?, "us-east")?["agent"] == other).then(Instant::now)
    });
    let reassigned = reassigned.unwrap_or_else(|| {
        panic!(
            "health was not reassigned to {other}: {}",
            serde_json::to_string_pretty(&checks_view(&agg)).unwrap()
        )
    });
    let first_result = wait_for(Duration::from_secs(10), || {
        let all = checks_view(&agg);
        (region(check(&all, "health")?, "us-east")?["latest"]["agent"] == other).then(Instant::now)
    })
    .expect("the new us-east agent reports health");
    let took = first_result.duration_since(reassigned);
    assert!(
        took < Duration::from_millis(2_000 + 1_000),
        "first result {took:?} after the move (two intervals plus polling)"
    );
    let moved = wait_for(Duration::from_secs(60), || {
        let all = checks_view(&agg);
        let h = check(&all, "health")?.clone();
        (region(&h, "us-west")?["state"] == "unknown").then_some(h)
    });
    let h = moved.unwrap_or_else(|| {
        panic!(
            "us-west is not shown as unknown while cut off: {}",
            serde_json::to_string_pretty(&checks_view(&agg)).unwrap()
        )
    });
    assert_eq!(
        h["failing_regions"], 0,
        "a cut-off region is not failing: {h}"
    );
    assert_eq!(h["unknown_regions"], 1, "{h}");

    // Heal: us-west's results recorded during the partition arrive and fill the gap.
    std::thread::sleep(Duration::from_secs(3));
    let partition_end = now_ms();
    proxy.set(Faults::pass());
    let filled = wait_for(Duration::from_secs(60), || {
        let q = format!(
            "probe_success{{check=\"health\",region=\"us-west\"}}[{}s]",
            (now_ms() - partition_start) / 1000 + 2
        );
        let r = agg.query(&q);
        let ts: Vec<i64> = r
            .first()?
            .get("values")?
            .as_array()?
            .iter()
            .map(|p| (p[0].as_f64().unwrap_or(0.0) * 1000.0) as i64)
            .filter(|t| *t >= partition_start && *t <= partition_end)
            .collect();
        // 1 s checks over the whole partition: no hole longer than 2.5 s.
        let span = partition_end - partition_start;
        let holes = ts.windows(2).all(|w| w[1] - w[0] < 2_500);
        (holes && ts.len() as i64 >= span / 1000 - 3).then_some(ts.len())
    });
    assert!(
        filled.is_some(),
        "us-west's results from the partition did not arrive:\n{}",
        agents[2].proc.logs()
    );
    let back = wait_for(Duration::from_secs(20), || {
        (state(&checks_view(&agg), "health", "us-west") == "failing").then_some(())
    });
    assert!(back.is_some(), "us-west is reported again after healing");

    // A changed file reaches the agents without restarts.
    std::fs::write(
        &file,
        checks_yaml(
            http,
            tcp,
            dns,
            &format!(
                "  - name: added-later\n    type: http\n    frequency: 1s\n    url: http://127.0.0.1:{http}/login\n    locations: [eu-central]\n"
            ),
        ),
    )
    .unwrap();
    let added = wait_for(Duration::from_secs(20), || {
        (state(&checks_view(&agg), "added-later", "eu-central") == "passing").then_some(())
    });
    assert!(added.is_some(), "the new check ran without restarts");
    let (code, body) = post(&agg.url("/api/v1/checks/reload"), "");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"checks\":6"), "{body}");
    // A broken file is refused with the problem named, and the running checks stay.
    std::fs::write(&file, "checks:\n  - name: broken\n    type: http\n").unwrap();
    let (code, body) = post(&agg.url("/api/v1/checks/reload"), "");
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("checks.yaml: line ") && body.contains(": missing field `frequency`"),
        "the error names the file, the place and the problem: {body}"
    );
    assert_eq!(checks_view(&agg).len(), 6);
    assert!(
        metric_value(
            &agg.metrics(),
            "outpost_aggregator_checks_last_reload_successful"
        ) == Some(0.0)
    );
}

use outpost_service::now_ms;

fn post(url: &str, body: &str) -> (u16, String) {
    let agent = ureq::Agent::new_with_config(
        ureq::config::Config::builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build(),
    );
    match agent.post(url).send(body) {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(e) => (0, e.to_string()),
    }
}
