//! A running Alertmanager 0.25 for comparison tests, and the sinks it sends to: HTTP
//! (webhook, Slack, PagerDuty) served here, and SMTP through Debian's python3-aiosmtpd.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Routes every `step`th combination of `values` (a label absent where its value is empty;
/// a `step` sharing no factor with the value counts visits every value of every label)
/// through `route` and through `amtool config routes test` on `file`; returns how many
/// were checked and each combination whose receivers differ.
pub fn amtool_route_differences(
    file: &std::path::Path,
    route: &outpost_alerting::route::Route,
    values: &[(&str, &[&str])],
    step: usize,
) -> (usize, Vec<String>) {
    let total: usize = values.iter().map(|(_, v)| v.len()).product();
    let mut checked = 0;
    let mut differ = Vec::new();
    for k in (0..total).step_by(step) {
        let mut rest = k;
        let mut labels = std::collections::BTreeMap::new();
        for (name, vals) in values {
            let v = vals[rest % vals.len()];
            rest /= vals.len();
            if !v.is_empty() {
                labels.insert(name.to_string(), v.to_string());
            }
        }
        let args: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let out = Command::new("amtool")
            .args(["config", "routes", "test"])
            .arg(format!("--config.file={}", file.display()))
            .args(&args)
            .output()
            .expect("amtool");
        let theirs = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let ours: Vec<&str> = route
            .matches(&labels)
            .iter()
            .map(|r| r.receiver.as_str())
            .collect();
        let ours = ours.join(",");
        if ours != theirs {
            differ.push(format!(
                "{}: {args:?}: outpost {ours}, amtool {theirs}",
                file.display()
            ));
        }
        checked += 1;
    }
    (checked, differ)
}

pub fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .args(args)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Posts alerts (a JSON array) to Alertmanager's v2 API.
pub fn post_alerts(url: &str, body: &str) {
    curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data",
        body,
        &format!("{url}/api/v2/alerts"),
    ]);
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

/// A running Alertmanager 0.25 on a free loopback port, with `config`, in its own temporary
/// folder; killed and its folder removed when dropped.
pub struct Alertmanager {
    child: std::process::Child,
    pub dir: std::path::PathBuf,
    pub url: String,
}

impl Alertmanager {
    pub fn start(tag: &str, config: &str, extra: &[&str]) -> Alertmanager {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("outpost-am-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("am.yml"), config).expect("write");
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", dir.join("am.yml").display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(
                std::fs::File::create(dir.join("log"))
                    .map_or_else(|_| std::process::Stdio::null(), std::process::Stdio::from),
            )
            .spawn()
            .expect("prometheus-alertmanager is not installed: run scripts/install-deps");
        let am = Alertmanager {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
        };
        let ready = (0..100).any(|_| {
            let up = curl(&[&format!("{}/-/ready", am.url)]).contains("OK");
            if !up {
                std::thread::sleep(Duration::from_millis(100));
            }
            up
        });
        assert!(ready, "alertmanager did not start: {}", am.log());
        am
    }

    /// What Alertmanager logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One HTTP request received by [`http_sink`].
#[derive(Clone, Debug)]
pub struct Received {
    /// When, since the sink's `t0`.
    pub at: Duration,
    /// The request path.
    pub path: String,
    /// The body as sent.
    pub body: String,
}

/// Serves HTTP on `listener`, answering 200 to every request and recording each.
pub fn http_sink(listener: std::net::TcpListener, t0: Instant) -> Arc<Mutex<Vec<Received>>> {
    use std::io::{Read, Write};
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            loop {
                let n = s.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..i]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if buf.len() >= i + 4 + len {
                    let path = head
                        .lines()
                        .next()
                        .and_then(|l| l.split_whitespace().nth(1))
                        .unwrap_or("")
                        .to_string();
                    let body = String::from_utf8_lossy(&buf[i + 4..i + 4 + len]).to_string();
                    g.lock().expect("lock").push(Received {
                        at: t0.elapsed(),
                        path,
                        body,
                    });
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                    break;
                }
            }
        }
    });
    got
}

/// Serves a webhook on `listener`: every request's arrival (since `t0`) and JSON body.
pub fn webhook_sink(
    listener: std::net::TcpListener,
    t0: Instant,
) -> Arc<Mutex<Vec<(Duration, serde_json::Value)>>> {
    let raw = http_sink(listener, t0);
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    // Parsed on arrival by a second thread, so callers see the shape they expect.
    std::thread::spawn(move || {
        let mut seen = 0;
        loop {
            std::thread::sleep(Duration::from_millis(5));
            let r = raw.lock().expect("lock");
            for rec in &r[seen..] {
                g.lock()
                    .expect("lock")
                    .push((rec.at, serde_json::from_str(&rec.body).unwrap_or_default()));
            }
            seen = r.len();
            if Arc::strong_count(&g) == 1 {
                return;
            }
        }
    });
    got
}

const SMTP_SINK: &str = r#"
import email, json, os, sys, time
from email import policy
from aiosmtpd.controller import Controller

port, out = int(sys.argv[1]), sys.argv[2]

class Handler:
    n = 0
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=policy.compat32)
        parts = []
        for p in msg.walk():
            if p.is_multipart():
                continue
            parts.append({"type": p.get_content_type(), "body": p.get_payload(decode=True).decode("utf-8")})
        Handler.n += 1
        rec = {"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
               "headers": [[k, str(v)] for k, v in msg.items()], "parts": parts}
        tmp = os.path.join(out, "%04d.tmp" % Handler.n)
        with open(tmp, "w") as f:
            json.dump(rec, f)
        os.rename(tmp, os.path.join(out, "%04d.json" % Handler.n))
        return "250 OK"

c = Controller(Handler(), hostname="127.0.0.1", port=port)
c.start()
open(os.path.join(out, "ready"), "w").close()
while True:
    time.sleep(3600)
"#;

/// An SMTP server on a loopback port (Debian's python3-aiosmtpd) writing each message it
/// receives as JSON (envelope, raw headers, decoded parts) to its folder; stopped and the
/// folder removed when dropped.
pub struct SmtpSink {
    child: std::process::Child,
    dir: std::path::PathBuf,
    pub port: u16,
}

impl SmtpSink {
    pub fn start(tag: &str) -> SmtpSink {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("outpost-smtp-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let child = Command::new("/usr/bin/python3")
            .args(["-c", SMTP_SINK, &port.to_string()])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3");
        let sink = SmtpSink { child, dir, port };
        let ready = (0..100).any(|_| {
            let up = sink.dir.join("ready").exists();
            if !up {
                std::thread::sleep(Duration::from_millis(100));
            }
            up
        });
        assert!(
            ready,
            "the SMTP sink did not start: run scripts/install-deps (python3-aiosmtpd)"
        );
        sink
    }

    /// The messages received so far, in order.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        let mut names: Vec<_> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .filter_map(|t| serde_json::from_str(&t).ok())
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
