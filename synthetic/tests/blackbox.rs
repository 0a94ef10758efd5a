//! Outpost's runners and Debian's prometheus-blackbox-exporter probe the same loopback
//! targets (HTTP 200 and 500, an open and a closed TCP port, a DNS answer and NXDOMAIN) and
//! must reach the same probe_success verdicts in comparable time. The exporter is installed
//! by scripts/install-deps and started here on a free loopback port with its own config.

mod common;

use outpost_synthetic::run;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = "/usr/bin/prometheus-blackbox-exporter";

struct Exporter {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_exporter() -> Exporter {
    assert!(
        std::path::Path::new(BIN).exists(),
        "{BIN} is missing: run scripts/install-deps (it installs prometheus-blackbox-exporter)"
    );
    let dir = common::temp_dir("bbx");
    let cfg = dir.join("blackbox.yml");
    let dns = |name: &str| {
        format!(
            "    prober: dns\n    timeout: 5s\n    dns:\n      query_name: {name}\n      query_type: A\n      transport_protocol: udp\n      preferred_ip_protocol: ip4\n      ip_protocol_fallback: false\n"
        )
    };
    std::fs::write(
        &cfg,
        format!(
            "modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n      ip_protocol_fallback: false\n  tcp_connect:\n    prober: tcp\n    timeout: 5s\n    tcp:\n      preferred_ip_protocol: ip4\n      ip_protocol_fallback: false\n  dns_ok:\n{}  dns_nx:\n{}",
            dns("ok.test"),
            dns("nope.test")
        ),
    )
    .unwrap();
    let port = common::closed_port().port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let child = Command::new(BIN)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start blackbox_exporter");
    let e = Exporter { child, addr };
    let t0 = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "blackbox_exporter did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    e
}

/// GET /probe and read probe_success and probe_duration_seconds from the exposition.
fn bb_probe(addr: std::net::SocketAddr, module: &str, target: &str) -> (bool, f64) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /probe?module={module}&target={target} HTTP/1.0\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let val = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .trim()
            .parse()
            .unwrap()
    };
    (val("probe_success") == 1.0, val("probe_duration_seconds"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_verdicts_as_blackbox_exporter() {
    let http = common::http_server().await;
    let open = common::banner_server().await;
    let closed = common::closed_port();
    let dns = common::dns_server().await;
    let bb = start_exporter();
    let cases = [
        (
            "http 200",
            "http_2xx",
            format!("http://{http}/ok"),
            format!(
                "{{name: h, type: http, frequency: 10s, timeout: 5s, url: 'http://{http}/ok'}}"
            ),
            true,
        ),
        (
            "http 500",
            "http_2xx",
            format!("http://{http}/fail"),
            format!(
                "{{name: h, type: http, frequency: 10s, timeout: 5s, url: 'http://{http}/fail'}}"
            ),
            false,
        ),
        (
            "tcp open",
            "tcp_connect",
            open.to_string(),
            format!("{{name: t, type: tcp, frequency: 10s, timeout: 5s, target: '{open}'}}"),
            true,
        ),
        (
            "tcp closed",
            "tcp_connect",
            closed.to_string(),
            format!("{{name: t, type: tcp, frequency: 10s, timeout: 5s, target: '{closed}'}}"),
            false,
        ),
        (
            "dns answer",
            "dns_ok",
            dns.to_string(),
            format!(
                "{{name: d, type: dns, frequency: 10s, timeout: 5s, resolver: '{dns}', query: ok.test}}"
            ),
            true,
        ),
        (
            "dns nxdomain",
            "dns_nx",
            dns.to_string(),
            format!(
                "{{name: d, type: dns, frequency: 10s, timeout: 5s, resolver: '{dns}', query: nope.test}}"
            ),
            false,
        ),
    ];
    println!(
        "{:<14} {:>8} {:>8} {:>12} {:>12}",
        "target", "outpost", "blackbox", "outpost s", "blackbox s"
    );
    for (label, module, target, yaml, expected) in cases {
        let ours = run(&common::check(&yaml)).await;
        let (addr, m, t) = (bb.addr, module.to_string(), target.clone());
        let (theirs, their_dur) = tokio::task::spawn_blocking(move || bb_probe(addr, &m, &t))
            .await
            .unwrap();
        println!(
            "{label:<14} {:>8} {:>8} {:>12.6} {:>12.6}",
            ours.success,
            theirs,
            ours.duration.as_secs_f64(),
            their_dur
        );
        assert_eq!(theirs, expected, "blackbox_exporter's verdict on {label}");
        assert_eq!(
            ours.success, theirs,
            "verdicts differ on {label}: ours {ours:?}"
        );
        // Comparable: loopback probes finish well within a second on both sides.
        assert!(
            ours.duration < Duration::from_secs(1) && their_dur < 1.0,
            "{label}: {ours:?} vs {their_dur}"
        );
    }
}
