//! A notification receiver for tests: a real HTTP/1.1 server on loopback that records
//! every request (time, path, headers, body) and answers as told: `200`, a number of
//! `500`s first, or not at all for a while (a receiver hanging mid-send). It honours the
//! `Idempotency-Key` header as PagerDuty honours `dedup_key`: a request whose key it has
//! already accepted is answered `200` and not counted again, so [`Sink::accepted`] is what a
//! person would have received.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    /// When it arrived (since the sink started).
    pub at: Duration,
    /// The request path.
    pub path: String,
    /// Header names lowercased, values as sent.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
    /// The status answered (0: no answer, the connection was held then dropped).
    pub status: u16,
}

impl Received {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Default)]
struct State {
    all: Vec<Received>,
    accepted: Vec<Received>,
    keys: BTreeSet<String>,
}

/// The sink; it stops accepting when dropped.
pub struct Sink {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    state: Arc<Mutex<State>>,
    fail_next: Arc<AtomicU32>,
    hang: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    started: Instant,
}

impl Sink {
    /// When it started: [`Received::at`] counts from here.
    pub fn started_at(&self) -> Instant {
        self.started
    }

    /// Starts a sink on a free loopback port.
    pub fn start() -> Sink {
        Self::start_on(0)
    }

    /// Starts a sink on loopback `port` (0: a free one).
    pub fn start_on(port: u16) -> Sink {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind a sink");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let started = Instant::now();
        let sink = Sink {
            url,
            state: Arc::default(),
            fail_next: Arc::default(),
            hang: Arc::default(),
            stop: Arc::default(),
            started,
        };
        let (state, fail, hang, stop) = (
            sink.state.clone(),
            sink.fail_next.clone(),
            sink.hang.clone(),
            sink.stop.clone(),
        );
        listener.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (state, fail, hang, stop) =
                            (state.clone(), fail.clone(), hang.clone(), stop.clone());
                        std::thread::spawn(move || {
                            let _ = serve(s, started, &state, &fail, &hang, &stop);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        sink
    }

    /// Answers the next `n` requests with `500`.
    pub fn fail_next(&self, n: u32) {
        self.fail_next.store(n, Ordering::Relaxed);
    }

    /// While true, requests are held unanswered (their connection dropped when it ends).
    pub fn hang(&self, on: bool) {
        self.hang.store(on, Ordering::Relaxed);
    }

    /// Every request, in arrival order.
    pub fn all(&self) -> Vec<Received> {
        self.state.lock().expect("sink").all.clone()
    }

    /// The requests answered `200` whose idempotency key was new: what was delivered.
    pub fn accepted(&self) -> Vec<Received> {
        self.state.lock().expect("sink").accepted.clone()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    s: TcpStream,
    started: Instant,
    state: &Mutex<State>,
    fail: &AtomicU32,
    hang: &AtomicBool,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut w = s;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut headers = vec![];
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                if k == "content-length" {
                    len = v.parse().unwrap_or(0);
                }
                headers.push((k, v));
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        let mut rec = Received {
            at: started.elapsed(),
            path,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            status: 0,
        };
        if hang.load(Ordering::Relaxed) {
            state.lock().expect("sink").all.push(rec);
            while hang.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            return Ok(());
        }
        let failing = fail
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        rec.status = if failing { 500 } else { 200 };
        {
            let mut st = state.lock().expect("sink");
            st.all.push(rec.clone());
            if !failing {
                let key = rec.header("idempotency-key").map(String::from);
                let new = match key {
                    Some(k) => st.keys.insert(k),
                    None => true,
                };
                if new {
                    st.accepted.push(rec);
                }
            }
        }
        let reply = if failing {
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nfail"
        } else {
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        };
        w.write_all(reply.as_bytes())?;
        w.flush()?;
    }
}
