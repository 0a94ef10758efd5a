//! A fault-injecting UDP proxy for the end-to-end tests: it sits between agents and the
//! aggregator on loopback and forwards QUIC datagrams both ways, subject to [`Faults`] that
//! a test can change while traffic flows: pass, blackhole, drop a fraction, add delay.
//!
//! Each client address (an agent's UDP socket) gets its own upstream socket, so the
//! aggregator sees one peer per agent, as it would without the proxy. Delayed datagrams are
//! released by one scheduler thread in due order. Everything stops when the proxy drops.

use std::collections::{BinaryHeap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What happens to datagrams, in both directions.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Drop everything.
    pub blackhole: bool,
    /// Fraction of datagrams dropped at random, 0.0–1.0.
    pub drop: f64,
    /// Added one-way latency.
    pub delay: Duration,
}

impl Faults {
    pub fn pass() -> Faults {
        Faults::default()
    }
    pub fn blackhole() -> Faults {
        Faults {
            blackhole: true,
            ..Faults::default()
        }
    }
    pub fn lossy(drop: f64, delay: Duration) -> Faults {
        Faults {
            blackhole: false,
            drop,
            delay,
        }
    }
}

/// Datagram counters, per direction.
#[derive(Default, Debug)]
pub struct Counters {
    pub up_forwarded: AtomicU64,
    pub up_dropped: AtomicU64,
    pub down_forwarded: AtomicU64,
    pub down_dropped: AtomicU64,
}

struct Delayed {
    due: Instant,
    order: u64,
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    bytes: Vec<u8>,
}

impl PartialEq for Delayed {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.order) == (o.due, o.order)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Delayed {
    // Reversed: BinaryHeap is a max-heap and the earliest due must come out first.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.due, o.order).cmp(&(self.due, self.order))
    }
}

struct Shared {
    faults: Mutex<Faults>,
    counters: Counters,
    stop: AtomicBool,
    order: AtomicU64,
}

impl Shared {
    /// Decides one datagram's fate: `None` = dropped, else the delay to apply.
    fn fate(&self) -> Option<Duration> {
        let f = *self.faults.lock().unwrap_or_else(|p| p.into_inner());
        if f.blackhole || (f.drop > 0.0 && fastrand::f64() < f.drop) {
            return None;
        }
        Some(f.delay)
    }
}

pub struct UdpProxy {
    pub listen: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

const POLL: Duration = Duration::from_millis(50);

impl UdpProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> UdpProxy {
        let front =
            Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("proxy bind: {e}")));
        front
            .set_read_timeout(Some(POLL))
            .unwrap_or_else(|e| panic!("{e}"));
        let listen = front.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let shared = Arc::new(Shared {
            faults: Mutex::new(Faults::pass()),
            counters: Counters::default(),
            stop: AtomicBool::new(false),
            order: AtomicU64::new(0),
        });
        let (delay_tx, delay_rx) = mpsc::channel::<Delayed>();
        let mut threads = vec![];
        {
            let shared = shared.clone();
            threads.push(std::thread::spawn(move || scheduler(delay_rx, shared)));
        }
        {
            let shared = shared.clone();
            threads.push(std::thread::spawn(move || {
                front_loop(front, upstream, shared, delay_tx)
            }));
        }
        UdpProxy {
            listen,
            shared,
            threads,
        }
    }

    /// Changes the faults for every datagram from now on (both directions).
    pub fn set(&self, f: Faults) {
        *self.shared.faults.lock().unwrap_or_else(|p| p.into_inner()) = f;
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn send_or_delay(
    shared: &Shared,
    delay: Duration,
    socket: &Arc<UdpSocket>,
    to: SocketAddr,
    bytes: &[u8],
    delay_tx: &Sender<Delayed>,
) {
    if delay.is_zero() {
        let _ = socket.send_to(bytes, to);
    } else {
        let order = shared.order.fetch_add(1, Ordering::Relaxed);
        let _ = delay_tx.send(Delayed {
            due: Instant::now() + delay,
            order,
            socket: socket.clone(),
            to,
            bytes: bytes.to_vec(),
        });
    }
}

/// Client → upstream. Starts one back-channel thread per new client.
fn front_loop(
    front: Arc<UdpSocket>,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    delay_tx: Sender<Delayed>,
) {
    let mut clients: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut backs = vec![];
    let mut buf = vec![0u8; 65_536];
    while !shared.stop.load(Ordering::Relaxed) {
        let (n, from) = match front.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue,
        };
        let up = clients
            .entry(from)
            .or_insert_with(|| {
                let s = Arc::new(
                    UdpSocket::bind("127.0.0.1:0")
                        .unwrap_or_else(|e| panic!("proxy upstream bind: {e}")),
                );
                s.set_read_timeout(Some(POLL))
                    .unwrap_or_else(|e| panic!("{e}"));
                let (s2, front2, shared2, tx2) =
                    (s.clone(), front.clone(), shared.clone(), delay_tx.clone());
                backs.push(std::thread::spawn(move || {
                    back_loop(s2, front2, from, shared2, tx2)
                }));
                s
            })
            .clone();
        match shared.fate() {
            None => {
                shared.counters.up_dropped.fetch_add(1, Ordering::Relaxed);
            }
            Some(d) => {
                shared.counters.up_forwarded.fetch_add(1, Ordering::Relaxed);
                send_or_delay(&shared, d, &up, upstream, &buf[..n], &delay_tx);
            }
        }
    }
    for b in backs {
        let _ = b.join();
    }
}

/// Upstream → one client.
fn back_loop(
    up: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    shared: Arc<Shared>,
    delay_tx: Sender<Delayed>,
) {
    let mut buf = vec![0u8; 65_536];
    while !shared.stop.load(Ordering::Relaxed) {
        let n = match up.recv_from(&mut buf) {
            Ok((n, _)) => n,
            Err(_) => continue,
        };
        match shared.fate() {
            None => {
                shared.counters.down_dropped.fetch_add(1, Ordering::Relaxed);
            }
            Some(d) => {
                shared
                    .counters
                    .down_forwarded
                    .fetch_add(1, Ordering::Relaxed);
                send_or_delay(&shared, d, &front, client, &buf[..n], &delay_tx);
            }
        }
    }
}

/// Releases delayed datagrams when due.
fn scheduler(rx: Receiver<Delayed>, shared: Arc<Shared>) {
    let mut heap: BinaryHeap<Delayed> = BinaryHeap::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while heap.peek().is_some_and(|d| d.due <= now) {
            if let Some(d) = heap.pop() {
                let _ = d.socket.send_to(&d.bytes, d.to);
            }
        }
        let wait = heap
            .peek()
            .map(|d| d.due.saturating_duration_since(now))
            .unwrap_or(POLL)
            .min(POLL);
        match rx.recv_timeout(wait) {
            Ok(d) => heap.push(d),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if heap.is_empty() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback echo server behind the proxy: faults apply as set, and can be switched.
    #[test]
    fn forwards_drops_and_delays_as_told() {
        let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
        let echo_addr = echo.local_addr().unwrap();
        echo.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let server = std::thread::spawn(move || {
            let mut b = [0u8; 1500];
            while !s2.load(Ordering::Relaxed) {
                if let Ok((n, from)) = echo.recv_from(&mut b) {
                    let _ = echo.send_to(&b[..n], from);
                }
            }
        });
        let proxy = UdpProxy::start(echo_addr);
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_millis(400)))
            .unwrap();
        let mut b = [0u8; 16];
        let ping = |c: &UdpSocket, b: &mut [u8; 16]| -> Option<Duration> {
            let t = Instant::now();
            c.send_to(b"ping", proxy.listen).unwrap();
            c.recv_from(b).ok().map(|_| t.elapsed())
        };
        assert!(ping(&c, &mut b).is_some(), "pass forwards both ways");
        proxy.set(Faults::blackhole());
        assert!(ping(&c, &mut b).is_none(), "blackhole drops");
        assert!(proxy.counters().up_dropped.load(Ordering::Relaxed) >= 1);
        proxy.set(Faults::lossy(0.0, Duration::from_millis(100)));
        let rtt = ping(&c, &mut b).expect("delayed, not dropped");
        assert!(
            rtt >= Duration::from_millis(200),
            "delay applies in each direction: {rtt:?}"
        );
        proxy.set(Faults::lossy(0.5, Duration::ZERO));
        c.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let answered = (0..100).filter(|_| ping(&c, &mut b).is_some()).count();
        // Each round trip survives with probability 0.25 (binomial, sd 4.3).
        assert!(
            (8..=45).contains(&answered),
            "{answered} of 100 round trips survived 50% loss each way"
        );
        drop(proxy);
        stop.store(true, Ordering::Relaxed);
        server.join().unwrap();
    }
}
