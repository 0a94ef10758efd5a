//! Check alerts that understand regions, on real processes: an aggregator with a checks file
//! whose checks have `alert:`, agents in several regions, a local HTTP target whose answer
//! depends on which agent process asks (found through /proc), and (in the first test) a
//! real Alertmanager.
//!
//! - two of three regions failing fire `OutpostCheckFailing` naming them and the failing
//!   step, while the region of an agent killed with `kill -9` is unknown and not counted;
//! - a slow but passing target fires `OutpostCheckDegraded`, never `OutpostCheckFailing`;
//! - a failure seen by one agent only is re-run by another agent of its region and does
//!   not count, while a failure every agent sees does;
//! - with `agent_down_after = "8s"`, agents are welcomed with a 2 s liveness interval, an
//!   idle agent (nothing to send between cycles a minute apart) stays up on its heartbeats,
//!   and an agent killed with `kill -9` is noticed about 8 s later (`outpost_agent_up` 0,
//!   `OutpostAgentDown` firing) and its checks move to the other agent of its region;
//! - so is an agent cut off by a partition (the harness' UDP proxy), which is up again
//!   once the partition ends.
//!
//! The tests run one at a time: they measure seconds.

use outpost_tests::proxy::{Faults, UdpProxy};
use outpost_tests::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

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

fn respond(s: &mut TcpStream, status: &str) {
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    );
}

/// A target: `/ok` 200; `/fail` 503; `/slow` 200 after 1.2 s; `/flaky` 503 to the agent
/// processes in `blocked`, 200 to the others.
fn target(blocked: Arc<Mutex<Vec<u32>>>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let blocked = blocked.clone();
            std::thread::spawn(move || {
                let mut s = s;
                let peer = s.peer_addr().map(|a| a.port()).unwrap_or(0);
                let mut r = BufReader::new(s.try_clone().expect("clone"));
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    return;
                }
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                }
                match line.split_whitespace().nth(1).unwrap_or("") {
                    "/ok" => respond(&mut s, "200 OK"),
                    "/fail" => respond(&mut s, "503 Service Unavailable"),
                    "/slow" => {
                        std::thread::sleep(Duration::from_millis(1200));
                        respond(&mut s, "200 OK")
                    }
                    "/flaky" => {
                        let pids = blocked.lock().map(|b| b.clone()).unwrap_or_default();
                        let from_blocked = client_socket_inode(peer)
                            .is_some_and(|i| pids.iter().any(|&p| process_holds(p, &i)));
                        if from_blocked {
                            respond(&mut s, "503 Service Unavailable")
                        } else {
                            respond(&mut s, "200 OK")
                        }
                    }
                    _ => respond(&mut s, "404 Not Found"),
                }
            });
        }
    });
    port
}

/// The active alerts named `name` (and whose labels include `check` or `agent` = `who`).
fn alerts(agg: &Aggregator, name: &str, key: &str, who: &str) -> Vec<Value> {
    get_json(&agg.url("/api/v1/alerts"))
        .ok()
        .and_then(|v| v["data"]["alerts"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a["labels"]["alertname"] == name && a["labels"][key] == who)
        .collect()
}

fn firing(agg: &Aggregator, name: &str, key: &str, who: &str) -> Option<Value> {
    alerts(agg, name, key, who)
        .into_iter()
        .find(|a| a["state"] == "firing")
}

/// The one value of an instant query that must return at most one series.
fn scalar(agg: &Aggregator, q: &str) -> Option<f64> {
    let r = agg.query(q);
    assert!(r.len() <= 1, "{q}: {r:?}");
    r.first().and_then(|s| sample_value(&s["value"]))
}

/// The agent running `check` in `region`, per `/api/v1/checks`.
fn runner(agg: &Aggregator, check: &str, region: &str) -> Option<String> {
    let v = get_json(&agg.url("/api/v1/checks")).ok()?;
    v["data"]["checks"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == check)?["regions"]
        .as_array()?
        .iter()
        .find(|r| r["region"] == region)?["agent"]
        .as_str()
        .map(str::to_string)
}

struct Setup {
    dir: TempDir,
    certs: Certs,
    agg: Aggregator,
    agents: Vec<Agent>,
    blocked: Arc<Mutex<Vec<u32>>>,
}

impl Setup {
    /// An aggregator with `checks` (the target's port replaces `PORT`), rules evaluated
    /// every second and agents down after 4 s of silence (unless `alerting` says otherwise),
    /// plus one agent per (id, region) collecting every 5 s.
    fn start(name: &str, checks: &str, agents: &[(&str, &str)], alerting: &str) -> Setup {
        Setup::start_every(name, checks, agents, alerting, "5s")
    }

    /// [`Setup::start`] with agents collecting every `interval`.
    fn start_every(
        name: &str,
        checks: &str,
        agents: &[(&str, &str)],
        alerting: &str,
        interval: &'static str,
    ) -> Setup {
        let dir = TempDir::new(name);
        let certs = Certs::init(&dir.path().join("pki"));
        let blocked = Arc::new(Mutex::new(vec![]));
        let port = target(blocked.clone());
        let file = dir.path().join("checks.yaml");
        std::fs::write(&file, checks.replace("PORT", &port.to_string())).expect("write");
        let down_after = if alerting.contains("agent_down_after") {
            ""
        } else {
            "agent_down_after = \"4s\"\n"
        };
        let agg = Aggregator::start_config(
            dir.path(),
            &certs,
            &format!("checks_file = \"{}\"\n", file.display()),
            &format!(
                "[alerting]\nevaluation_interval = \"1s\"\nagent_down_for = \"0s\"\n{down_after}{alerting}"
            ),
        );
        let mut s = Setup {
            dir,
            certs,
            agg,
            agents: vec![],
            blocked,
        };
        for (id, region) in agents {
            let mut spec = AgentSpec::new(id, &s.certs);
            spec.region = region;
            spec.interval = interval;
            s.agents.push(Agent::start(s.dir.path(), &s.agg, &spec));
        }
        s
    }

    fn agent(&mut self, id: &str) -> &mut Agent {
        self.agents
            .iter_mut()
            .find(|a| a.proc.name == format!("agent-{id}"))
            .expect("agent")
    }

    fn logs(&self) -> String {
        let mut out = self.agg.proc.logs();
        for a in &self.agents {
            out.push_str(&format!("\n===== {} =====\n{}", a.proc.name, a.proc.logs()));
        }
        out
    }
}

const REGIONS_CHECKS: &str = r#"checks:
  - name: api
    type: http
    frequency: 1s
    locations: [us-east, us-west, eu-central]
    steps:
      - name: login
        url: http://127.0.0.1:PORT/ok
      - name: orders
        url: http://127.0.0.1:PORT/fail
    alert: {failing_regions: 2, for: 2s, severity: page}
  - name: api-everywhere
    type: http
    frequency: 1s
    url: http://127.0.0.1:PORT/fail
    locations: [us-east, us-west, eu-central]
    alert: {failing_regions: 3, for: 2s}
"#;

#[test]
fn two_of_three_regions_failing_fire_naming_them_while_a_killed_agents_region_is_unknown() {
    let _one = serial();
    let am_dir = TempDir::new("check-alerts-am");
    let (_am, am_url) = start_alertmanager(am_dir.path(), "alertmanager");
    let mut s = Setup::start(
        "check-alerts-regions",
        REGIONS_CHECKS,
        &[
            ("east-1", "us-east"),
            ("west-1", "us-west"),
            ("central-1", "eu-central"),
        ],
        &format!("alertmanagers = [\"{am_url}\"]\n"),
    );
    let agg = &s.agg;

    // Every region fails: both alerts fire, the first naming all three regions.
    let all3 = wait_for(Duration::from_secs(30), || {
        let a = firing(agg, "OutpostCheckFailing", "check", "api")?;
        firing(agg, "OutpostCheckFailing", "check", "api-everywhere")?;
        (a["annotations"]["failing_regions"] == "eu-central, us-east, us-west").then_some(a)
    })
    .unwrap_or_else(|| panic!("the alerts never fired with three regions:\n{}", s.logs()));
    assert_eq!(all3["labels"]["severity"], "page", "{all3}");
    assert_eq!(all3["annotations"]["unknown_regions"], "", "{all3}");

    // eu-central's only agent dies: its region is unknown, counted neither way.
    s.agent("central-1").proc.kill();
    let agg = &s.agg;
    let two = wait_for(Duration::from_secs(20), || {
        let a = firing(agg, "OutpostCheckFailing", "check", "api")?;
        let gone = alerts(agg, "OutpostCheckFailing", "check", "api-everywhere").is_empty();
        (gone && a["annotations"]["unknown_regions"] == "eu-central").then_some(a)
    })
    .unwrap_or_else(|| {
        panic!(
            "the cut-off region was not left out: {:?}\n{}",
            alerts(agg, "OutpostCheckFailing", "check", "api"),
            s.logs()
        )
    });
    assert_eq!(two["annotations"]["failing_regions"], "us-east, us-west");
    assert_eq!(
        two["annotations"]["failing_steps"],
        "us-east (step orders), us-west (step orders)"
    );
    assert_eq!(
        two["annotations"]["summary"],
        "Check \"api\" is failing from 2 regions"
    );
    assert_eq!(
        two["annotations"]["description"],
        "Failing from us-east (step orders), us-west (step orders); unknown (not counted): eu-central."
    );
    assert_eq!(two["value"], "2e+00");
    assert_eq!(
        scalar(
            agg,
            "outpost_check_region_unknown{check=\"api\",region=\"eu-central\"}"
        ),
        Some(1.0)
    );
    assert!(
        agg.query("outpost_check_region_failing{region=\"eu-central\"}")
            .is_empty(),
        "an unknown region has no failing series"
    );
    // The same alert is in /api/v1/rules, in the generated group.
    let rules = get_json(&agg.url("/api/v1/rules")).expect("rules");
    let group = rules["data"]["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["name"] == "outpost-checks"))
        .cloned()
        .unwrap_or_else(|| panic!("no generated group: {rules}"));
    assert_eq!(group["file"], "outpost:generated");
    let names: Vec<&str> = group["rules"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["OutpostCheckFailing", "OutpostCheckFailing"]);
    assert_eq!(
        group["rules"][0]["query"],
        "count by (check) (outpost_check_region_failing{check=\"api\"} == 1) >= 2"
    );
    // The killed agent's own alert, and both alerts at the Alertmanager.
    assert!(
        wait_for(Duration::from_secs(10), || firing(
            agg,
            "OutpostAgentDown",
            "agent",
            "central-1"
        ))
        .is_some()
    );
    let in_am = wait_for(Duration::from_secs(20), || {
        let v = get_json(&format!("{am_url}/api/v2/alerts")).ok()?;
        let list = v.as_array()?.clone();
        let check = list.iter().find(|a| {
            a["labels"]["alertname"] == "OutpostCheckFailing" && a["labels"]["check"] == "api"
        })?;
        list.iter().find(|a| {
            a["labels"]["alertname"] == "OutpostAgentDown" && a["labels"]["agent"] == "central-1"
        })?;
        Some(check.clone())
    })
    .unwrap_or_else(|| panic!("the Alertmanager did not get the alerts:\n{}", s.logs()));
    assert_eq!(in_am["labels"]["severity"], "page", "{in_am}");
    assert_eq!(in_am["status"]["state"], "active", "{in_am}");
}

const SLOW_CHECKS: &str = r#"checks:
  - name: slow
    type: http
    frequency: 2s
    timeout: 2s
    url: http://127.0.0.1:PORT/slow
    locations: [a, b]
    alert: {failing_regions: 2, for: 1s, degraded_ms: 800}
"#;

#[test]
fn a_slow_but_passing_check_fires_the_degraded_alert_not_the_failing_one() {
    let _one = serial();
    let s = Setup::start(
        "check-alerts-slow",
        SLOW_CHECKS,
        &[("a-1", "a"), ("b-1", "b")],
        "",
    );
    let agg = &s.agg;
    let degraded = wait_for(Duration::from_secs(30), || {
        firing(agg, "OutpostCheckDegraded", "check", "slow")
    })
    .unwrap_or_else(|| panic!("no degraded alert:\n{}", s.logs()));
    assert_eq!(degraded["labels"]["severity"], "warning");
    assert_eq!(degraded["annotations"]["degraded_regions"], "a, b");
    assert_eq!(degraded["annotations"]["unknown_regions"], "");
    // Every run passed, each slower than 800 ms; the failing alert never was active.
    let runs = agg.query("probe_success{check=\"slow\"}[1m]");
    let values: BTreeSet<String> = runs
        .iter()
        .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p[1].as_str().map(str::to_string))
        .collect();
    assert_eq!(values, BTreeSet::from(["1".to_string()]), "{runs:?}");
    assert!(
        scalar(
            agg,
            "min(min_over_time(probe_duration_seconds{check=\"slow\"}[1m])) > 0.8"
        )
        .is_some(),
        "every run took more than 800 ms"
    );
    assert!(
        agg.query("ALERTS{alertname=\"OutpostCheckFailing\"}[1m]")
            .is_empty(),
        "the failing alert was active"
    );
    assert_eq!(
        scalar(
            agg,
            "max(max_over_time(outpost_check_region_failing{check=\"slow\"}[1m]))"
        ),
        Some(0.0)
    );
    assert_eq!(
        scalar(
            agg,
            "count(outpost_check_region_degraded{check=\"slow\"} == 1)"
        ),
        Some(2.0)
    );
}

const RERUN_CHECKS: &str = r#"checks:
  - name: flaky
    type: http
    frequency: 1s
    url: http://127.0.0.1:PORT/flaky
    locations: [r]
    alert: {failing_regions: 1, for: 1s}
  - name: down
    type: http
    frequency: 1s
    url: http://127.0.0.1:PORT/fail
    locations: [r]
    alert: {failing_regions: 1, for: 1s}
"#;

#[test]
fn a_failure_seen_by_one_agent_only_is_rerun_by_another_and_does_not_count() {
    let _one = serial();
    let mut s = Setup::start(
        "check-alerts-rerun",
        RERUN_CHECKS,
        &[("r-1", "r"), ("r-2", "r")],
        "",
    );
    let holder = wait_for(Duration::from_secs(20), || runner(&s.agg, "flaky", "r"))
        .unwrap_or_else(|| panic!("flaky was never assigned:\n{}", s.logs()));
    let other = if holder == "r-1" { "r-2" } else { "r-1" };
    let pid = s.agent(&holder).proc.pid();
    s.blocked.lock().expect("lock").push(pid);
    let agg = &s.agg;

    // The control: a target down for every agent fires, confirmed by the other agent.
    let down = wait_for(Duration::from_secs(30), || {
        firing(agg, "OutpostCheckFailing", "check", "down")
    })
    .unwrap_or_else(|| panic!("the control never fired:\n{}", s.logs()));
    assert_eq!(down["annotations"]["failing_regions"], "r");
    let down_holder = runner(agg, "down", "r").expect("down runs");
    let down_other = if down_holder == "r-1" { "r-2" } else { "r-1" };
    assert_eq!(
        scalar(
            agg,
            &format!("max_over_time(probe_success{{check=\"down\",agent=\"{down_other}\"}}[1m])")
        ),
        Some(0.0),
        "the re-run of the control came from the agent that does not run it"
    );

    // Meanwhile flaky failed from its agent again and again, and each failure was re-run
    // by the other agent, which passed: the region never counted as failing.
    std::thread::sleep(Duration::from_secs(4));
    let sel = format!("probe_success{{check=\"flaky\",agent=\"{holder}\"}}[1m]");
    let failed = scalar(
        agg,
        &format!("count_over_time({sel}) - sum_over_time({sel})"),
    )
    .unwrap_or(0.0);
    assert!(
        failed >= 3.0,
        "{holder} failed {failed} times:\n{}",
        s.logs()
    );
    let reruns = scalar(
        agg,
        &format!("count_over_time(probe_success{{check=\"flaky\",agent=\"{other}\"}}[1m])"),
    )
    .unwrap_or(0.0);
    assert!(reruns >= 3.0, "{reruns} re-runs by {other}:\n{}", s.logs());
    assert_eq!(
        scalar(
            agg,
            &format!("min_over_time(probe_success{{check=\"flaky\",agent=\"{other}\"}}[1m])")
        ),
        Some(1.0),
        "every re-run passed"
    );
    assert_eq!(
        scalar(
            agg,
            "max_over_time(outpost_check_region_failing{check=\"flaky\"}[1m])"
        ),
        Some(0.0),
        "the flake was never counted"
    );
    assert!(
        agg.query("ALERTS{alertname=\"OutpostCheckFailing\",check=\"flaky\"}[1m]")
            .is_empty(),
        "the flake raised an alert"
    );
}

const MOVING_CHECKS: &str = r#"checks:
  - name: moving
    type: http
    frequency: 1s
    url: http://127.0.0.1:PORT/ok
    locations: [r]
"#;

#[test]
fn an_idle_agent_stays_up_and_one_killed_with_kill_9_is_noticed_and_its_checks_move() {
    let _one = serial();
    // Agents down after 8 s of silence: the aggregator asks them for something every 2 s.
    // Both collect once a minute; only the holder of `moving` has results to send between.
    let mut s = Setup::start_every(
        "check-alerts-down",
        MOVING_CHECKS,
        &[("d-1", "r"), ("d-2", "r")],
        "agent_down_after = \"8s\"\n",
        "60s",
    );
    let holder = wait_for(Duration::from_secs(20), || runner(&s.agg, "moving", "r"))
        .unwrap_or_else(|| panic!("moving was never assigned:\n{}", s.logs()));
    let other = if holder == "d-1" { "d-2" } else { "d-1" };
    let both_up = wait_for(Duration::from_secs(10), || {
        let up = s.agg.query("outpost_agent_up == 1");
        (up.len() == 2).then_some(up)
    });
    assert!(both_up.is_some(), "{:?}", s.agg.query("outpost_agent_up"));
    for a in &s.agents {
        let logs = a.proc.logs();
        assert!(
            logs.contains(&format!(
                "protocol={}",
                outpost_shared::frame::PROTOCOL_VERSION
            )) && logs.contains("alive_every_ms=2000"),
            "{} was not welcomed with a 2 s interval:\n{logs}",
            a.proc.name
        );
    }

    // The idle agent (no batch between its cycles a minute apart) stays up on its
    // heartbeats alone, for longer than agent_down_after.
    std::thread::sleep(Duration::from_secs(12));
    let idle_up = format!("min_over_time(outpost_agent_up{{agent=\"{other}\"}}[11s])");
    assert_eq!(scalar(&s.agg, &idle_up), Some(1.0), "{}", s.logs());
    assert!(
        !s.agg.proc.logs().contains("agent is down"),
        "{}",
        s.agg.proc.logs()
    );

    let killed_at = Instant::now();
    s.agent(&holder).proc.kill();
    let agg = &s.agg;
    let up_query = format!("outpost_agent_up{{agent=\"{holder}\",region=\"r\"}}");
    wait_for(Duration::from_secs(30), || {
        (scalar(agg, &up_query) == Some(0.0)).then_some(())
    })
    .unwrap_or_else(|| panic!("the dead agent was never noticed:\n{}", s.logs()));
    let noticed = killed_at.elapsed();
    // 8 s after the last result it sent (a second or less before the kill), plus the sweep
    // and the next write of outpost_agent_up.
    assert!(
        noticed >= Duration::from_secs(6) && noticed < Duration::from_secs(12),
        "noticed after {noticed:?}, not about agent_down_after (8 s) after the kill"
    );
    let alert = wait_for(Duration::from_secs(5), || {
        firing(agg, "OutpostAgentDown", "agent", &holder)
    })
    .unwrap_or_else(|| panic!("no OutpostAgentDown:\n{}", s.logs()));
    assert_eq!(alert["labels"]["region"], "r");
    assert!(alerts(agg, "OutpostAgentDown", "agent", other).is_empty());
    assert_eq!(
        scalar(agg, &format!("outpost_agent_up{{agent=\"{other}\"}}")),
        Some(1.0)
    );
    // The check moved to the other agent of the region, which runs it now.
    assert_eq!(runner(agg, "moving", "r").as_deref(), Some(other));
    let moved = wait_for(Duration::from_secs(10), || {
        let q = format!("count_over_time(probe_success{{check=\"moving\",agent=\"{other}\"}}[3s])");
        scalar(agg, &q).filter(|n| *n >= 2.0)
    });
    assert!(
        moved.is_some(),
        "{other} does not run the check:\n{}",
        s.logs()
    );
    assert!(
        killed_at.elapsed() < Duration::from_secs(24),
        "the move took {:?}",
        killed_at.elapsed()
    );
}

#[test]
fn a_partitioned_agent_is_down_within_seconds_and_up_again_after_the_partition() {
    let _one = serial();
    let mut s = Setup::start("check-alerts-partition", MOVING_CHECKS, &[("p-1", "r")], "");
    let proxy = UdpProxy::start(s.agg.quic.parse().expect("quic address"));
    let mut spec = AgentSpec::new("p-2", &s.certs);
    spec.region = "r";
    spec.interval = "5s";
    spec.endpoint = Some(proxy.listen.to_string());
    s.agents.push(Agent::start(s.dir.path(), &s.agg, &spec));
    let agg = &s.agg;
    let up = "outpost_agent_up{agent=\"p-2\",region=\"r\"}";
    // Idle but alive (5 s collect interval): p-2 stays up on its heartbeats alone.
    assert!(
        wait_for(Duration::from_secs(20), || (scalar(agg, up) == Some(1.0))
            .then_some(()))
        .is_some(),
        "{:?}",
        agg.query("outpost_agent_up")
    );
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(scalar(agg, up), Some(1.0), "a quiet agent is not down");
    assert!(
        agg.query("min_over_time(outpost_agent_up{agent=\"p-2\"}[6s]) < 1")
            .is_empty()
    );

    proxy.set(Faults::blackhole());
    let cut_at = Instant::now();
    wait_for(Duration::from_secs(30), || {
        (scalar(agg, up) == Some(0.0)).then_some(())
    })
    .unwrap_or_else(|| panic!("the partition was not noticed:\n{}", s.logs()));
    let noticed = cut_at.elapsed();
    assert!(
        noticed < Duration::from_secs(8),
        "noticed after {noticed:?}"
    );
    assert!(
        wait_for(Duration::from_secs(5), || firing(
            agg,
            "OutpostAgentDown",
            "agent",
            "p-2"
        ))
        .is_some()
    );
    assert_eq!(scalar(agg, "outpost_agent_up{agent=\"p-1\"}"), Some(1.0));

    proxy.set(Faults::pass());
    wait_for(Duration::from_secs(60), || {
        (scalar(agg, up) == Some(1.0)).then_some(())
    })
    .unwrap_or_else(|| panic!("the agent did not come back:\n{}", s.logs()));
    assert!(
        wait_for(Duration::from_secs(5), || alerts(
            agg,
            "OutpostAgentDown",
            "agent",
            "p-2"
        )
        .is_empty()
        .then_some(()))
        .is_some(),
        "OutpostAgentDown resolved"
    );
}
