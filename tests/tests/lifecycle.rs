//! Lifecycle of the real binaries: SIGTERM with a backlog loses nothing, SIGHUP reloads a
//! good config and refuses a bad one (logs and metrics say which), and readiness,
//! watchdog, reload and stop reach systemd's notification socket.

use outpost_tests::*;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Upper bound for a clean stop: the agent's drain grace (3 s) plus its uplink wind-down,
/// with room for a loaded CI machine.
const STOP_BOUND: Duration = Duration::from_secs(12);

fn health(agent_http: &str) -> Option<serde_json::Value> {
    get_json(&format!("http://{agent_http}/health")).ok()
}

fn cycles_at(agg: &Aggregator, agent: &str) -> Vec<f64> {
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        + 5.0;
    let raw = get_json(&agg.url(&format!(
        "/api/v1/query?query={}&time={end}",
        encode(&format!(
            "outpost_agent_cycles_total{{agent=\"{agent}\"}}[1h]"
        ))
    )));
    raw.ok()
        .and_then(|r| r["data"]["result"][0]["values"].as_array().cloned())
        .map(|v| v.iter().filter_map(sample_value).collect())
        .unwrap_or_default()
}

fn assert_consecutive_from_one(vals: &[f64]) {
    assert_eq!(
        vals.first(),
        Some(&1.0),
        "the first cycle is stored: {vals:?}"
    );
    for w in vals.windows(2) {
        assert_eq!(
            w[1],
            w[0] + 1.0,
            "cycles must be consecutive, none lost or repeated: {vals:?}"
        );
    }
}

fn sighup(pid: u32) {
    let st = Command::new("kill")
        .arg("-HUP")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(st.success());
}

/// SIGTERM while the aggregator is down and while it is up: each time the agent exits 0
/// within the bound, and after restarts the aggregator holds every cycle exactly once.
#[test]
fn sigterm_keeps_the_backlog_and_the_cycle_counter_continues() {
    let tmp = TempDir::new("sigterm");
    let certs = Certs::init(&tmp.path().join("certs"));
    let mut agg = Aggregator::start(tmp.path(), &certs);
    let (agg_config, agg_http, agg_quic) = (agg.config.clone(), agg.http.clone(), agg.quic.clone());
    assert_eq!(
        agg.proc.terminate(STOP_BOUND),
        Some(true),
        "aggregator did not stop cleanly:\n{}",
        agg.proc.logs()
    );

    // The aggregator is down: everything the agent collects waits in its buffer.
    let mut spec = AgentSpec::new("term-1", &certs);
    spec.interval = "300ms";
    let mut agent = Agent::start(tmp.path(), &agg, &spec);
    let backlog = wait_for(Duration::from_secs(20), || {
        health(&agent.http)
            .and_then(|h| h["buffer_batches"].as_u64())
            .filter(|&b| b >= 5)
    });
    assert!(
        backlog.is_some(),
        "no backlog built up:\n{}",
        agent.proc.logs()
    );
    let t = Instant::now();
    assert_eq!(
        agent.proc.terminate(STOP_BOUND),
        Some(true),
        "agent did not exit 0 within {STOP_BOUND:?}:\n{}",
        agent.proc.logs()
    );
    let stop_took = t.elapsed();
    let logs = agent.proc.logs();
    let stopped = logs
        .lines()
        .rfind(|l| l.contains("agent stopped"))
        .unwrap_or_else(|| panic!("no stop line:\n{logs}"));
    let buffered: u64 = stopped
        .split("buffered_batches=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{stopped}"));
    assert!(buffered >= 5, "the backlog was kept on stop: {stopped}");
    eprintln!("agent stopped in {stop_took:?} with {buffered} batches buffered");

    // Aggregator back, agent restarted on the same buffer: the backlog arrives, nothing lost.
    let agg = Aggregator::start_with(tmp.path(), agg_config, agg_http, agg_quic);
    let restart = |name: &str| {
        let p = Proc::start(
            name,
            tmp.path(),
            Command::new(bin("outpost-agent"))
                .arg("run")
                .arg("--config")
                .arg(&agent.config),
        );
        assert!(
            wait_for(Duration::from_secs(20), || health(&agent.http)).is_some(),
            "agent did not come back:\n{}",
            p.logs()
        );
        p
    };
    agent.proc = restart("agent-term-1-second");
    let vals = wait_for(Duration::from_secs(30), || {
        Some(cycles_at(&agg, "term-1")).filter(|v| v.len() as u64 >= buffered + 3)
    });
    let vals = vals.unwrap_or_else(|| {
        panic!(
            "backlog never arrived: {:?}\n{}",
            cycles_at(&agg, "term-1"),
            agent.proc.logs()
        )
    });
    assert_consecutive_from_one(&vals);

    // SIGTERM while connected: in-flight batches are acknowledged or stay buffered.
    let t = Instant::now();
    assert_eq!(
        agent.proc.terminate(STOP_BOUND),
        Some(true),
        "agent did not exit 0 while connected:\n{}",
        agent.proc.logs()
    );
    eprintln!("connected agent stopped in {:?}", t.elapsed());
    let before = cycles_at(&agg, "term-1").len();
    agent.proc = restart("agent-term-1-third");
    let vals = wait_for(Duration::from_secs(30), || {
        Some(cycles_at(&agg, "term-1")).filter(|v| v.len() >= before + 3)
    });
    let vals =
        vals.unwrap_or_else(|| panic!("cycles stopped after restart:\n{}", agent.proc.logs()));
    assert_consecutive_from_one(&vals);
}

/// An agent config for tests that start the process themselves; `extra` holds the
/// sections after `[buffer]` (the HTTP listen address among them).
fn write_agent_config(dir: &Path, certs: &Certs, id: &str, quic: &str, extra: &str) -> PathBuf {
    let (cert, key) = certs.agent(id);
    let text = format!(
        "id = \"{id}\"\nregion = \"r\"\n[aggregator]\nendpoints = [\"{quic}\"]\nserver_name = \"localhost\"\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n[buffer]\ndir = \"{buf}\"\n{extra}",
        ca = certs.ca().display(),
        cert = cert.display(),
        key = key.display(),
        buf = dir.join(format!("buffer-{id}")).display(),
    );
    let f = dir.join(format!("agent-{id}.toml"));
    std::fs::write(&f, text).unwrap();
    f
}

/// Starts the agent without `RUST_LOG`, so `[log] level` is in charge.
fn start_agent(name: &str, dir: &Path, config: &Path, http: &str, envs: &[(&str, &str)]) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let f = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(bin("outpost-agent"));
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .stdout(f.try_clone().unwrap())
        .stderr(f);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let p = Proc {
        name: name.into(),
        child,
        log,
    };
    assert!(
        wait_for(Duration::from_secs(20), || health(http)).is_some(),
        "agent did not start:\n{}",
        p.logs()
    );
    p
}

fn agent_metric(http: &str, name: &str) -> Option<f64> {
    metric_value(&get_text(&format!("http://{http}/metrics")).ok()?, name)
}

/// Cycles the agent completes in `d`.
fn cycles_in(http: &str, d: Duration) -> u64 {
    let c = || health(http).and_then(|h| h["cycles"].as_u64()).unwrap_or(0);
    let a = c();
    std::thread::sleep(d);
    c() - a
}

#[test]
fn sighup_applies_a_good_config_and_refuses_a_bad_one() {
    let tmp = TempDir::new("sighup");
    let certs = Certs::init(&tmp.path().join("certs"));
    let quic = format!("127.0.0.1:{}", free_udp_port()); // nobody listens: no aggregator needed here
    let http = format!("127.0.0.1:{}", free_tcp_port());
    let base = format!(
        "[collect]\ninterval = \"1s\"\n[http]\nlisten = \"{http}\"\n[log]\nlevel = \"info\"\n"
    );
    let config = write_agent_config(tmp.path(), &certs, "hup-1", &quic, &base);
    let mut agent = start_agent("agent-hup-1", tmp.path(), &config, &http, &[]);

    assert_eq!(
        agent_metric(&http, "outpost_agent_config_last_reload_successful "),
        Some(1.0)
    );
    let t0 = agent_metric(
        &http,
        "outpost_agent_config_last_reload_success_timestamp_seconds ",
    )
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || health(&http)
            .and_then(|h| h["cycles"].as_u64())
            .filter(|&c| c >= 2))
        .is_some()
    );
    assert!(
        !agent.logs().contains("cycle buffered"),
        "debug lines appear at level info"
    );

    // A good config: interval and level apply now; a new listen address needs a restart.
    let other = format!("127.0.0.1:{}", free_tcp_port());
    let text = std::fs::read_to_string(&config).unwrap();
    let good = text
        .replace("\"1s\"", "\"200ms\"")
        .replace("\"info\"", "\"debug\"")
        .replace(&http, &other);
    std::fs::write(&config, &good).unwrap();
    sighup(agent.pid());
    let reloaded = wait_for(Duration::from_secs(10), || {
        agent
            .logs()
            .contains("configuration reloaded")
            .then_some(())
    });
    assert!(reloaded.is_some(), "no reload logged:\n{}", agent.logs());
    assert!(
        wait_for(Duration::from_secs(5), || agent
            .logs()
            .contains("cycle buffered")
            .then_some(()))
        .is_some(),
        "log.level debug was not applied:\n{}",
        agent.logs()
    );
    assert!(
        agent
            .logs()
            .contains("http.listen changed; it takes effect after a restart"),
        "{}",
        agent.logs()
    );
    assert_eq!(
        agent_metric(&http, "outpost_agent_config_last_reload_successful "),
        Some(1.0)
    );
    let t1 = agent_metric(
        &http,
        "outpost_agent_config_last_reload_success_timestamp_seconds ",
    )
    .unwrap();
    assert!(
        t1 > t0,
        "success timestamp moves on a good reload: {t0} -> {t1}"
    );
    // 200 ms gives about 15 cycles in 3 s, the old 1 s at most 4; the margin absorbs a busy machine.
    let fast = cycles_in(&http, Duration::from_secs(3));
    assert!(
        fast >= 8,
        "collect.interval 200ms was not applied: {fast} cycles in 3s"
    );

    // A bad config: every problem is logged, the running config stays, the metric says so.
    let bad = good
        .replace("\"200ms\"", "\"10ms\"")
        .replace("region = \"r\"", "region = \"\"")
        .replace(&quic, "nohost");
    std::fs::write(&config, &bad).unwrap();
    sighup(agent.pid());
    let failed = wait_for(Duration::from_secs(10), || {
        (agent_metric(&http, "outpost_agent_config_last_reload_successful ") == Some(0.0))
            .then_some(())
    });
    assert!(
        failed.is_some(),
        "a bad config was not reported:\n{}",
        agent.logs()
    );
    let logs = agent.logs();
    for needle in [
        "collect.interval: 10ms is too short",
        "region: must not be empty",
        "aggregator.endpoints: \"nohost\"",
    ] {
        assert!(
            logs.lines().any(|l| l
                .contains("config reload failed, still running on the previous config")
                && l.contains(needle)),
            "problem {needle:?} not logged:\n{logs}"
        );
    }
    assert_eq!(
        agent_metric(
            &http,
            "outpost_agent_config_last_reload_success_timestamp_seconds "
        ),
        Some(t1)
    );
    assert!(agent.is_running());
    // The refused 10 ms would give hundreds.
    let still = cycles_in(&http, Duration::from_secs(3));
    assert!(
        (8..=25).contains(&still),
        "the previous 200ms interval stays in force: {still} cycles in 3s"
    );
    assert_eq!(agent.terminate(STOP_BOUND), Some(true));
}

#[test]
fn aggregator_sighup_reports_reload_outcome() {
    let tmp = TempDir::new("agg-hup");
    let certs = Certs::init(&tmp.path().join("certs"));
    let mut agg = Aggregator::start(tmp.path(), &certs);
    let m = |agg: &Aggregator, n: &str| metric_value(&agg.metrics(), n);
    assert_eq!(
        m(&agg, "outpost_aggregator_config_last_reload_successful "),
        Some(1.0)
    );
    let t0 = m(
        &agg,
        "outpost_aggregator_config_last_reload_success_timestamp_seconds ",
    )
    .unwrap();

    let text = std::fs::read_to_string(&agg.config).unwrap();
    std::fs::write(&agg.config, format!("{text}[log]\nlevel = \"debug\"\n")).unwrap();
    sighup(agg.proc.pid());
    let ok = wait_for(Duration::from_secs(10), || {
        m(
            &agg,
            "outpost_aggregator_config_last_reload_success_timestamp_seconds ",
        )
        .filter(|&t| t > t0)
    });
    assert!(
        ok.is_some(),
        "good reload not reported:\n{}",
        agg.proc.logs()
    );
    // The harness sets RUST_LOG, which keeps precedence; the reload says so.
    assert!(
        agg.proc
            .logs()
            .contains("RUST_LOG is set and takes precedence"),
        "{}",
        agg.proc.logs()
    );

    let bad = text
        .replace(&certs.ca().display().to_string(), "/nonexistent/ca.crt")
        .replace("[listen]\n", "[listen]\nbogus = 1\n");
    std::fs::write(&agg.config, &bad).unwrap();
    sighup(agg.proc.pid());
    let failed = wait_for(Duration::from_secs(10), || {
        (m(&agg, "outpost_aggregator_config_last_reload_successful ") == Some(0.0)).then_some(())
    });
    assert!(
        failed.is_some(),
        "bad reload not reported:\n{}",
        agg.proc.logs()
    );
    assert!(
        agg.proc
            .logs()
            .contains("config reload failed, still running on the previous config")
            && agg.proc.logs().contains("bogus"),
        "{}",
        agg.proc.logs()
    );
    // Fix the parse error: now the missing CA file is the (validation) problem reported.
    std::fs::write(&agg.config, bad.replace("bogus = 1\n", "")).unwrap();
    sighup(agg.proc.pid());
    assert!(
        wait_for(Duration::from_secs(10), || agg
            .proc
            .logs()
            .contains("tls.ca: cannot open /nonexistent/ca.crt")
            .then_some(()))
        .is_some(),
        "{}",
        agg.proc.logs()
    );
    assert_eq!(
        m(&agg, "outpost_aggregator_config_last_reload_successful "),
        Some(0.0)
    );
    assert!(
        get_text(&agg.url("/health")).is_ok(),
        "still serving on the old config"
    );
    assert_eq!(
        agg.proc.terminate(STOP_BOUND),
        Some(true),
        "{}",
        agg.proc.logs()
    );
}

/// Collects datagrams from a notification socket until `pred` holds for the messages so far.
fn wait_for_message(
    sock: &UnixDatagram,
    got: &mut Vec<String>,
    timeout: Duration,
    pred: impl Fn(&[String]) -> bool,
) -> bool {
    let end = Instant::now() + timeout;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        if pred(got) {
            return true;
        }
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    pred(got)
}

#[test]
fn both_programs_talk_to_the_systemd_notify_socket() {
    let tmp = TempDir::new("notify");
    let certs = Certs::init(&tmp.path().join("certs"));

    // The aggregator, with the variables systemd sets for Type=notify and WatchdogSec=.
    let agg_sock_path = tmp.path().join("agg-notify.sock");
    let agg_sock = UnixDatagram::bind(&agg_sock_path).unwrap();
    let http = format!("127.0.0.1:{}", free_tcp_port());
    let quic = format!("127.0.0.1:{}", free_udp_port());
    let agg_config = tmp.path().join("aggregator.toml");
    std::fs::write(
        &agg_config,
        certs.aggregator_config(&tmp.path().join("agg-data"), &http, &quic),
    )
    .unwrap();
    let mut cmd = Command::new(bin("outpost-aggregator"));
    cmd.arg("run")
        .arg("--config")
        .arg(&agg_config)
        .env("NOTIFY_SOCKET", &agg_sock_path)
        .env("WATCHDOG_USEC", "400000");
    let mut agg = Proc::start("aggregator", tmp.path(), &mut cmd);
    let mut got = vec![];
    assert!(
        wait_for_message(&agg_sock, &mut got, Duration::from_secs(20), |m| m
            .iter()
            .any(|s| s.starts_with("READY=1"))),
        "no READY=1 from the aggregator: {got:?}\n{}",
        agg.logs()
    );
    // Ready means ready: the HTTP API answers as soon as READY=1 has arrived.
    assert!(get_text(&format!("http://{http}/health")).is_ok());
    assert!(
        wait_for_message(&agg_sock, &mut got, Duration::from_secs(5), |m| m
            .iter()
            .filter(|s| *s == "WATCHDOG=1")
            .count()
            >= 3),
        "{got:?}"
    );

    // The agent, with an abstract socket name as systemd may use.
    let name = format!(
        "outpost-test-notify-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    );
    let addr =
        <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            name.as_bytes(),
        )
        .unwrap();
    let agent_sock = UnixDatagram::bind_addr(&addr).unwrap();
    let agent_http = format!("127.0.0.1:{}", free_tcp_port());
    let config = write_agent_config(
        tmp.path(),
        &certs,
        "notify-1",
        &quic,
        &format!("[http]\nlisten = \"{agent_http}\"\n"),
    );
    let mut agent = start_agent(
        "agent-notify-1",
        tmp.path(),
        &config,
        &agent_http,
        &[
            ("NOTIFY_SOCKET", &format!("@{name}")),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut agot = vec![];
    assert!(
        wait_for_message(&agent_sock, &mut agot, Duration::from_secs(10), |m| m
            .first()
            .is_some_and(|s| s.starts_with("READY=1\nSTATUS="))),
        "{agot:?}"
    );
    assert!(
        wait_for_message(&agent_sock, &mut agot, Duration::from_secs(5), |m| m
            .iter()
            .filter(|s| *s == "WATCHDOG=1")
            .count()
            >= 3),
        "{agot:?}"
    );
    sighup(agent.pid());
    assert!(
        wait_for_message(&agent_sock, &mut agot, Duration::from_secs(10), |m| {
            let r = m.iter().position(|s| s.starts_with("RELOADING=1"));
            r.is_some_and(|r| m[r..].iter().any(|s| s.starts_with("READY=1")))
        }),
        "no RELOADING=1 then READY=1 around SIGHUP: {agot:?}"
    );
    assert_eq!(agent.terminate(STOP_BOUND), Some(true), "{}", agent.logs());
    assert!(
        wait_for_message(&agent_sock, &mut agot, Duration::from_secs(2), |m| m
            .iter()
            .any(|s| s.starts_with("STOPPING=1"))),
        "{agot:?}"
    );
    assert_eq!(agg.terminate(STOP_BOUND), Some(true), "{}", agg.logs());
    assert!(
        wait_for_message(&agg_sock, &mut got, Duration::from_secs(2), |m| m
            .iter()
            .any(|s| s.starts_with("STOPPING=1"))),
        "{got:?}"
    );
}
