//! `outpost-tests`: the end-to-end harness. It starts the real `outpost-aggregator` and
//! `outpost-agent` binaries on loopback with certificates made by the real `certs`
//! commands, in temporary folders, and talks to them over HTTP. Every process is killed
//! when its handle drops; when a test fails, the logs of every process it started are
//! printed.

pub mod proxy;
pub mod sim;
pub mod sink;

use serde_json::Value;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the binaries are: `OUTPOST_BIN_DIR`, else the profile folder of this test binary.
pub fn bin(name: &str) -> PathBuf {
    if let Ok(d) = std::env::var("OUTPOST_BIN_DIR") {
        return PathBuf::from(d).join(name);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let profile = exe.parent().and_then(|d| {
        if d.ends_with("deps") {
            d.parent()
        } else {
            Some(d)
        }
    });
    let p = profile
        .map(|d| d.join(name))
        .unwrap_or_else(|| PathBuf::from(name));
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --release --workspace --bins` first (scripts/test does)",
        p.display()
    );
    p
}

/// A folder removed on drop (kept when `OUTPOST_KEEP_TMP` is set).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "outpost-e2e-{name}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("OUTPOST_KEEP_TMP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Polls `f` every 100 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a command to completion; returns (success, stdout + stderr).
pub fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

/// A started program; killed (SIGKILL) on drop. Its output goes to `<dir>/<name>.log`.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn start(name: &str, dir: &Path, cmd: &mut Command) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("{e}"));
        let f2 = f.try_clone().unwrap_or_else(|e| panic!("{e}"));
        cmd.stdout(Stdio::from(f)).stderr(Stdio::from(f2)).env(
            "RUST_LOG",
            std::env::var("OUTPOST_TEST_LOG").unwrap_or_else(|_| "info".into()),
        );
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit; returns the exit status' success.
    pub fn terminate(&mut self, timeout: Duration) -> Option<bool> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st.success());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "===== log of {} ({}) =====\n{}",
                self.name,
                self.log.display(),
                self.logs()
            );
        }
    }
}

/// HTTP GET returning the body as JSON, or an error string naming the status.
pub fn get_json(url: &str) -> Result<Value, String> {
    match ureq::get(url).call() {
        Ok(mut r) => r.body_mut().read_json::<Value>().map_err(|e| e.to_string()),
        Err(ureq::Error::StatusCode(c)) => Err(format!("HTTP {c}")),
        Err(e) => Err(e.to_string()),
    }
}

pub fn get_text(url: &str) -> Result<String, String> {
    match ureq::get(url).call() {
        Ok(mut r) => r.body_mut().read_to_string().map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// POSTs a remote_write body (snappy + protobuf) with an optional bearer token; the status
/// and body, errors included.
pub fn post_remote_write(url: &str, body: &[u8], bearer: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent
        .post(url)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0");
    if let Some(t) = bearer {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    match req.send(body) {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(e) => (0, e.to_string()),
    }
}

/// Debian's `prometheus` on `127.0.0.1:port` with `config` and its data under `dir`, plus
/// `extra` flags; killed on drop, its output in `<dir>/prometheus.log`.
pub fn start_prometheus(dir: &Path, config: &Path, port: u16, extra: &[&str]) -> Proc {
    Proc::start(
        "prometheus",
        dir,
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(extra),
    )
}

/// Starts Debian's `victoria-metrics` on `127.0.0.1:port` with its data under `dir`; waits
/// for `/health`. Deduplication is on (`-dedup.minScrapeInterval=1ms`): a sample written
/// twice (a request resent after a crash, a batch two aggregators both stored) is kept once,
/// as VictoriaMetrics' documentation prescribes for HA pairs. Caches are off so a query
/// sees what was just written.
pub fn start_victoria_metrics(dir: &Path, port: u16) -> Proc {
    let p = Proc::start(
        "victoria-metrics",
        dir,
        Command::new("victoria-metrics")
            .arg(format!(
                "-storageDataPath={}",
                dir.join("vm-data").display()
            ))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg("-retentionPeriod=1y")
            .arg("-dedup.minScrapeInterval=1ms")
            .arg("-search.latencyOffset=0s")
            .arg("-search.disableCache"),
    );
    wait_for(Duration::from_secs(20), || {
        get_text(&format!("http://127.0.0.1:{port}/health")).ok()
    })
    .unwrap_or_else(|| panic!("victoria-metrics did not start:\n{}", p.logs()));
    p
}

/// Starts Debian's `prometheus-alertmanager` (0.25) on a free loopback port with a config
/// that accepts every alert (one receiver, no integrations), its data in `dir/<name>-data`,
/// and waits until it is ready. Returns the process and its base URL.
pub fn start_alertmanager(dir: &Path, name: &str) -> (Proc, String) {
    let port = free_tcp_port();
    let cfg = dir.join(format!("{name}.yml"));
    std::fs::write(
        &cfg,
        "route:\n  receiver: blackhole\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let proc = Proc::start(
        name,
        dir,
        Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.path={}",
                dir.join(format!("{name}-data")).display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address="),
    );
    let url = format!("http://127.0.0.1:{port}");
    let ready = wait_for(Duration::from_secs(20), || {
        get_text(&format!("{url}/-/ready")).ok()
    });
    assert!(ready.is_some(), "{name} did not start:\n{}", proc.logs());
    (proc, url)
}

/// Status code and body of a GET, errors included.
pub fn get_status(url: &str, bearer: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(url);
    if let Some(t) = bearer {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    match req.call() {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(e) => (0, e.to_string()),
    }
}

/// The value of one sample line `name{labels} value` in a text exposition (first match).
pub fn metric_value(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(name_and_labels)
            .and_then(|rest| rest.trim().split(' ').next()?.parse().ok())
    })
}

/// Certificates made with the real `certs` commands.
pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    pub fn init(dir: &Path) -> Certs {
        let (ok, out) = run(Command::new(bin("outpost-aggregator"))
            .args(["certs", "init", "--dir"])
            .arg(dir));
        assert!(ok, "certs init failed: {out}");
        Certs {
            dir: dir.to_path_buf(),
        }
    }
    pub fn agent(&self, id: &str) -> (PathBuf, PathBuf) {
        let (ok, out) = run(Command::new(bin("outpost-aggregator"))
            .args(["certs", "agent", "--dir"])
            .arg(&self.dir)
            .args(["--id", id]));
        assert!(ok, "certs agent failed: {out}");
        (
            self.dir.join("agents").join(format!("{id}.crt")),
            self.dir.join("agents").join(format!("{id}.key")),
        )
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// An aggregator config with its store in `data`, listening on `http` and `quic`
    /// (`host:port`), with this CA's aggregator certificate.
    pub fn aggregator_config(&self, data: &Path, http: &str, quic: &str) -> String {
        format!(
            "data_dir = \"{data}\"\n[listen]\nquic = \"{quic}\"\nhttp = \"{http}\"\n[tls]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n",
            data = data.display(),
            ca = self.ca().display(),
            cert = self.dir.join("aggregator.crt").display(),
            key = self.dir.join("aggregator.key").display(),
        )
    }
}

pub struct Aggregator {
    pub proc: Proc,
    pub http: String,
    pub quic: String,
    pub config: PathBuf,
}

impl Aggregator {
    /// Writes a config under `dir` and starts the aggregator; waits for `/health`.
    pub fn start(dir: &Path, certs: &Certs) -> Aggregator {
        Self::start_top(dir, certs, "")
    }

    /// [`Aggregator::start`] with `top` (top-level keys such as `checks_file = "..."`) at the
    /// head of the config.
    pub fn start_top(dir: &Path, certs: &Certs, top: &str) -> Aggregator {
        Self::start_config(dir, certs, top, "")
    }

    /// [`Aggregator::start_top`] plus `tail` (tables such as `[api]`) at the end.
    pub fn start_config(dir: &Path, certs: &Certs, top: &str, tail: &str) -> Aggregator {
        Self::start_data(dir, &dir.join("agg-data"), certs, top, tail)
    }

    /// [`Aggregator::start_config`] with the store in `data` (config and log stay in `dir`).
    /// A port taken between choosing it and binding it (another test's server) is chosen
    /// again, up to three times.
    pub fn start_data(dir: &Path, data: &Path, certs: &Certs, top: &str, tail: &str) -> Aggregator {
        let mut tries = 0;
        loop {
            let http = format!("127.0.0.1:{}", free_tcp_port());
            let quic = format!("127.0.0.1:{}", free_udp_port());
            let config = dir.join("aggregator.toml");
            let text = certs.aggregator_config(data, &http, &quic);
            std::fs::write(&config, format!("{top}{text}{tail}")).unwrap_or_else(|e| panic!("{e}"));
            match Self::try_start_with(dir, config, http, quic) {
                Ok(a) => return a,
                Err(logs) if logs.contains("Address already in use") && tries < 2 => tries += 1,
                Err(logs) => panic!("aggregator did not become healthy:\n{logs}"),
            }
        }
    }

    pub fn start_with(dir: &Path, config: PathBuf, http: String, quic: String) -> Aggregator {
        Self::try_start_with(dir, config, http, quic)
            .unwrap_or_else(|logs| panic!("aggregator did not become healthy:\n{logs}"))
    }

    /// Starts the aggregator and waits until it answers `/health` while still running: a
    /// server of another test on a port this one could not bind would answer too. `Err`
    /// holds its log.
    fn try_start_with(
        dir: &Path,
        config: PathBuf,
        http: String,
        quic: String,
    ) -> Result<Aggregator, String> {
        let proc = Proc::start(
            "aggregator",
            dir,
            Command::new(bin("outpost-aggregator"))
                .arg("run")
                .arg("--config")
                .arg(&config),
        );
        let mut a = Aggregator {
            proc,
            http,
            quic,
            config,
        };
        let url = a.url("/health");
        let up = wait_for(Duration::from_secs(20), || {
            if !a.proc.is_running() {
                return Some(false);
            }
            get_text(&url).ok().map(|_| true)
        });
        // A failed bind exits within milliseconds of starting: look again a little later.
        std::thread::sleep(Duration::from_millis(200));
        if up == Some(true) && a.proc.is_running() {
            return Ok(a);
        }
        let logs = a.proc.logs();
        drop(a);
        Err(logs)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// Starts the aggregator again on the same config, data and ports (after a kill).
    pub fn restart(&mut self) {
        self.proc.kill();
        let p = Proc::start(
            "aggregator",
            self.config.parent().unwrap_or(Path::new(".")),
            Command::new(bin("outpost-aggregator"))
                .arg("run")
                .arg("--config")
                .arg(&self.config),
        );
        let old = std::mem::replace(&mut self.proc, p);
        std::mem::forget(old);
        let up = wait_for(Duration::from_secs(30), || {
            get_text(&self.url("/health")).ok()
        });
        assert!(
            up.is_some(),
            "aggregator did not become healthy again (does its data directory still open?):\n{}",
            self.proc.logs()
        );
    }

    /// Every raw sample of the agent's cycle counter: (ms, cycle), oldest first.
    pub fn cycles(&self, agent: &str) -> Vec<(i64, u64)> {
        cycles_at(&format!("http://{}", self.http), agent)
    }

    /// Writes `timeseries` through the aggregator's remote_write endpoint; panics unless it
    /// answers 204.
    pub fn remote_write(&self, timeseries: Vec<outpost_shared::remote_write::TimeSeries>) {
        let body =
            outpost_shared::remote_write::encode(&outpost_shared::remote_write::WriteRequest {
                timeseries,
                metadata: vec![],
            });
        let (code, text) = post_remote_write(&self.url("/api/v1/write"), &body, None);
        assert_eq!(code, 204, "remote write: {text}");
    }

    /// An instant query; returns `data.result`.
    pub fn query(&self, q: &str) -> Vec<Value> {
        let url = format!("{}?query={}", self.url("/api/v1/query"), encode(q));
        match get_json(&url) {
            Ok(v) => v["data"]["result"].as_array().cloned().unwrap_or_default(),
            Err(_) => vec![],
        }
    }

    pub fn agent(&self, id: &str) -> Option<Value> {
        get_json(&self.url("/api/v1/agents"))
            .ok()?
            .get("data")?
            .as_array()?
            .iter()
            .find(|a| a["id"] == id)
            .cloned()
    }

    pub fn metrics(&self) -> String {
        get_text(&self.url("/metrics")).unwrap_or_default()
    }
}

pub struct Agent {
    pub proc: Proc,
    pub http: String,
    pub config: PathBuf,
    pub buffer_dir: PathBuf,
    dir: PathBuf,
}

/// What an agent's config says, for tests that need a twist.
pub struct AgentSpec<'a> {
    pub id: &'a str,
    pub region: &'a str,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub interval: &'a str,
    pub extra: &'a str,
    /// Where the agent sends (e.g. a fault proxy); default: the aggregator's QUIC address.
    /// Several endpoints, in order of preference, are separated by commas.
    pub endpoint: Option<String>,
    /// Extra keys of the agent's `[aggregator]` table (e.g. `failback_interval = "2s"`).
    pub aggregator_extra: &'a str,
    pub max_bytes: &'a str,
}

impl<'a> AgentSpec<'a> {
    pub fn new(id: &'a str, certs: &Certs) -> AgentSpec<'a> {
        let (cert, key) = certs.agent(id);
        AgentSpec {
            id,
            region: "test-region",
            ca: certs.ca(),
            cert,
            key,
            interval: "1s",
            extra: "",
            endpoint: None,
            aggregator_extra: "",
            max_bytes: "64MiB",
        }
    }
}

impl Agent {
    pub fn start(dir: &Path, agg: &Aggregator, spec: &AgentSpec) -> Agent {
        let a = Self::spawn(dir, agg, spec);
        a.wait_healthy();
        a
    }

    /// Writes the config and starts the agent without waiting for it.
    pub fn spawn(dir: &Path, agg: &Aggregator, spec: &AgentSpec) -> Agent {
        Self::spawn_in(dir, &dir.join(format!("buffer-{}", spec.id)), agg, spec)
    }

    /// As [`Agent::spawn`], with the buffer in `buffer_dir`.
    pub fn spawn_in(dir: &Path, buffer_dir: &Path, agg: &Aggregator, spec: &AgentSpec) -> Agent {
        let http = format!("127.0.0.1:{}", free_tcp_port());
        let config = dir.join(format!("agent-{}.toml", spec.id));
        let text = format!(
            "id = \"{id}\"\nregion = \"{region}\"\n[aggregator]\nendpoints = [{quic}]\nserver_name = \"localhost\"\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n{agg_extra}\n[buffer]\ndir = \"{buf}\"\nmax_bytes = \"{max_bytes}\"\n[collect]\ninterval = \"{interval}\"\n[http]\nlisten = \"{http}\"\n{extra}",
            id = spec.id,
            region = spec.region,
            quic = spec
                .endpoint
                .as_deref()
                .unwrap_or(&agg.quic)
                .split(',')
                .map(|e| format!("\"{}\"", e.trim()))
                .collect::<Vec<_>>()
                .join(", "),
            agg_extra = spec.aggregator_extra,
            max_bytes = spec.max_bytes,
            ca = spec.ca.display(),
            cert = spec.cert.display(),
            key = spec.key.display(),
            buf = buffer_dir.display(),
            interval = spec.interval,
            extra = spec.extra,
        );
        std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
        let proc = Proc::start(
            &format!("agent-{}", spec.id),
            dir,
            Command::new(bin("outpost-agent"))
                .arg("run")
                .arg("--config")
                .arg(&config),
        );
        Agent {
            proc,
            http,
            config,
            buffer_dir: buffer_dir.to_path_buf(),
            dir: dir.to_path_buf(),
        }
    }

    pub fn wait_healthy(&self) {
        let up = wait_for(Duration::from_secs(30), || {
            get_text(&self.url("/health")).ok()
        });
        assert!(
            up.is_some(),
            "agent did not become healthy:\n{}",
            self.proc.logs()
        );
    }

    /// Starts the agent again with the same config (after a kill or a clean stop).
    pub fn restart(&mut self) {
        self.proc.kill();
        let name = self.proc.name.clone();
        let p = Proc::start(
            &name,
            &self.dir,
            Command::new(bin("outpost-agent"))
                .arg("run")
                .arg("--config")
                .arg(&self.config),
        );
        // The old handle is already dead; replacing it must not print its log.
        let old = std::mem::replace(&mut self.proc, p);
        std::mem::forget(old);
        self.wait_healthy();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn metrics(&self) -> String {
        get_text(&self.url("/metrics")).unwrap_or_default()
    }

    /// What `outpost-agent status` says about this agent's buffer while it is stopped:
    /// (cycles, buffered batches).
    pub fn offline_status(&self) -> (u64, u64) {
        let (ok, out) = run(Command::new(bin("outpost-agent"))
            .args(["status", "--config"])
            .arg(&self.config));
        assert!(ok, "status failed: {out}");
        let field = |name: &str| -> u64 {
            out.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .and_then(|v| v.trim().split(' ').next()?.parse().ok())
                .unwrap_or_else(|| panic!("status shows no {name}\n{out}"))
        };
        (field("cycles:"), field("backlog:"))
    }

    /// Stops the agent cleanly (SIGTERM) once everything it collected was acknowledged by
    /// an aggregator; returns the number of cycles it made. Cycles made just before a stop
    /// may still be buffered: the agent is started again until its buffer is empty.
    pub fn stop_drained(&mut self) -> u64 {
        for _ in 0..5 {
            assert_eq!(
                self.proc.terminate(Duration::from_secs(15)),
                Some(true),
                "agent stops cleanly on SIGTERM:\n{}",
                self.proc.logs()
            );
            let (cycles, buffered) = self.offline_status();
            eprintln!("stopped: {cycles} cycles, {buffered} batches buffered");
            if buffered == 0 {
                return cycles;
            }
            self.restart();
            let _ = wait_for(Duration::from_secs(30), || {
                (metric_value(&self.metrics(), "outpost_agent_buffer_batches") == Some(0.0))
                    .then_some(())
            });
        }
        panic!("the agent never drained its buffer")
    }
}

/// The wall clock, ms since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Every raw sample of `agent`'s cycle counter (`outpost_agent_cycles_total`) over the last
/// day that the Prometheus-compatible API at `base` (`http://host:port`: an aggregator,
/// VictoriaMetrics, Prometheus) holds: (ms, cycle), oldest first; empty when it cannot be
/// asked.
pub fn cycles_at(base: &str, agent: &str) -> Vec<(i64, u64)> {
    let q = format!("outpost_agent_cycles_total{{agent=\"{agent}\"}}[1d]");
    let url = format!(
        "{base}/api/v1/query?query={}&time={}",
        encode(&q),
        now_ms() as f64 / 1000.0 + 60.0
    );
    let Ok(v) = get_json(&url) else { return vec![] };
    let mut out = vec![];
    for series in v["data"]["result"].as_array().cloned().unwrap_or_default() {
        for p in series["values"].as_array().cloned().unwrap_or_default() {
            let ts = (p[0].as_f64().unwrap_or(0.0) * 1000.0).round() as i64;
            if let Some(c) = sample_value(&p) {
                out.push((ts, c as u64));
            }
        }
    }
    out.sort();
    out
}

/// Percent-encodes a query parameter value.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The numeric value of a Prometheus API sample `[ts, "v"]`.
pub fn sample_value(v: &Value) -> Option<f64> {
    v.get(1)?.as_str()?.parse().ok()
}

/// `outpost-agent collect --once --config cfg`: its stdout (the exposition) and stderr
/// (collector failures). Panics, with stderr, when the command fails.
pub fn collect_once(cfg: &Path) -> (String, String) {
    let out = Command::new(bin("outpost-agent"))
        .args(["collect", "--once", "--config"])
        .arg(cfg)
        .output()
        .expect("run outpost-agent collect");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "outpost-agent collect failed: {stderr}"
    );
    (stdout, stderr)
}

/// Whether this process runs as root (mounting a tmpfs needs it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A mount, removed (lazily, so open files do not keep it) when dropped.
pub struct Mounted(pub PathBuf);

impl Mounted {
    /// Mounts a tmpfs of `size` (`24m`) on `dir`, creating it; panics when that fails (it
    /// needs root).
    pub fn tmpfs(dir: &Path, size: &str) -> Mounted {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let (ok, out) = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "outpost-test"])
            .arg(dir));
        assert!(
            ok,
            "mount -t tmpfs on {} failed (needs root): {out}",
            dir.display()
        );
        Mounted(dir.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A file that fills its file system and keeps it full, as another process would: a
/// program that frees some of its own (preallocated) space finds it taken again within
/// 20 ms. Removed by [`Filler::stop`] or on drop.
pub struct Filler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Filler {
    /// Starts filling the file system of `path` through the file `path`.
    pub fn start(path: &Path) -> Filler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (path, stop) = (path.to_path_buf(), stop.clone());
            std::thread::spawn(move || {
                use std::io::Write;
                let mut f = std::fs::File::create(&path)
                    .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Down to the last byte: smaller and smaller writes until not even one fits.
                    for size in [64 << 10, 4 << 10, 256, 1] {
                        let block = vec![7u8; size];
                        while f.write_all(&block).is_ok() {}
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                drop(f);
                let _ = std::fs::remove_file(&path);
            })
        };
        Filler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops filling and removes the file: the space is free again when this returns.
    pub fn stop(mut self) {
        self.end();
    }

    fn end(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        self.end();
    }
}

/// The cycles the aggregator holds for `agent` must be exactly `1..=last` (or that range
/// minus `missing`), one sample per cycle, and the aggregator must have applied each batch
/// once.
pub fn assert_cycles_exact(agg: &Aggregator, agent: &str, last: u64, missing: &[u64]) {
    let got = agg.cycles(agent);
    let values: Vec<u64> = got.iter().map(|p| p.1).collect();
    let want: Vec<u64> = (1..=last).filter(|c| !missing.contains(c)).collect();
    if values != want {
        let extra: Vec<u64> = values
            .iter()
            .filter(|v| !want.contains(v))
            .copied()
            .collect();
        let lost: Vec<u64> = want
            .iter()
            .filter(|v| !values.contains(v))
            .copied()
            .collect();
        panic!(
            "cycles at the aggregator differ: {} held, {} wanted; lost {lost:?}, unexpected {extra:?}",
            values.len(),
            want.len()
        );
    }
    let mut ts: Vec<i64> = got.iter().map(|p| p.0).collect();
    ts.dedup();
    assert_eq!(ts.len(), got.len(), "one sample per cycle timestamp");
    let a = agg.agent(agent).expect("agent listed");
    // Every applied batch is counted once; a resend of an applied seq is not applied again.
    assert_eq!(
        a["batches"].as_u64(),
        Some(want.len() as u64),
        "batches applied once each: {a}"
    );
}

/// Waits until the aggregator holds cycle `n` (or more) of `agent`; returns the highest.
pub fn wait_cycle(agg: &Aggregator, agent: &str, n: u64, timeout: Duration) -> u64 {
    let got = wait_for(timeout, || {
        agg.cycles(agent).last().map(|p| p.1).filter(|c| *c >= n)
    });
    got.unwrap_or_else(|| {
        panic!(
            "cycle {n} of {agent} did not arrive within {timeout:?}; have {:?}",
            agg.cycles(agent).last()
        )
    })
}

/// The agent's persisted cycle count, from its /health.
pub fn agent_cycles(agent: &Agent) -> u64 {
    get_json(&agent.url("/health"))
        .ok()
        .and_then(|v| v["cycles"].as_u64())
        .unwrap_or(0)
}
