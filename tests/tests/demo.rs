//! `outpost-aggregator demo`: two real processes, as a user deploys them, stopped together.

use outpost_tests::*;
use std::process::Command;
use std::time::Duration;

struct Demo {
    proc: Proc,
    http: String,
    _tmp: TempDir,
}

fn start(name: &str) -> Demo {
    let tmp = TempDir::new(name);
    let http = format!("127.0.0.1:{}", free_tcp_port());
    let quic = format!("127.0.0.1:{}", free_udp_port());
    let agent_http = format!("127.0.0.1:{}", free_tcp_port());
    let proc = Proc::start(
        "demo",
        tmp.path(),
        Command::new(bin("outpost-aggregator"))
            .arg("demo")
            .arg("--dir")
            .arg(tmp.path().join("outpost-demo"))
            .args([
                "--http",
                &http,
                "--quic",
                &quic,
                "--agent-http",
                &agent_http,
            ])
            .args(["--interval", "500ms"]),
    );
    Demo {
        proc,
        http,
        _tmp: tmp,
    }
}

/// The pids the demo printed for its two programs.
fn pids(d: &Demo) -> (i32, i32) {
    let got = wait_for(Duration::from_secs(30), || {
        let logs = d.proc.logs();
        let pid = |who: &str| -> Option<i32> {
            let line = logs.lines().find(|l| l.starts_with(who))?;
            line.split("pid ")
                .nth(1)?
                .split(',')
                .next()?
                .trim()
                .parse()
                .ok()
        };
        Some((pid("aggregator: ")?, pid("agent:      ")?))
    });
    got.unwrap_or_else(|| panic!("the demo did not print both pids:\n{}", d.proc.logs()))
}

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

#[test]
fn demo_runs_aggregator_and_agent_as_two_processes_and_stops_both() {
    let mut d = start("demo-stop");
    let (agg, agent) = pids(&d);
    assert_ne!(agg, agent);
    assert!(
        cmdline(agg).contains("outpost-aggregator run --config"),
        "{}",
        cmdline(agg)
    );
    assert!(
        cmdline(agent).contains("outpost-agent run --config"),
        "{}",
        cmdline(agent)
    );
    // The agent's cycles reach the aggregator's query API.
    let url = format!(
        "http://{}/api/v1/query?query=outpost_agent_cycles_total",
        d.http
    );
    let seen = wait_for(Duration::from_secs(30), || {
        let v = get_json(&url).ok()?;
        let r = v["data"]["result"].as_array()?.clone();
        (!r.is_empty()).then_some(r)
    });
    assert!(seen.is_some(), "no cycles queryable:\n{}", d.proc.logs());
    assert_eq!(
        d.proc.terminate(Duration::from_secs(20)),
        Some(true),
        "{}",
        d.proc.logs()
    );
    assert!(
        d.proc.logs().contains("stopped cleanly"),
        "{}",
        d.proc.logs()
    );
    assert!(!alive(agg) && !alive(agent), "both programs are gone");
}

#[test]
fn demo_says_which_program_died_and_stops_the_other() {
    let mut d = start("demo-died");
    let (agg, agent) = pids(&d);
    let _ = Command::new("kill")
        .args(["-KILL", &agent.to_string()])
        .status();
    let exited = wait_for(Duration::from_secs(20), || {
        d.proc.child.try_wait().ok().flatten()
    })
    .unwrap_or_else(|| panic!("the demo kept running:\n{}", d.proc.logs()));
    assert!(!exited.success());
    let logs = d.proc.logs();
    assert!(
        logs.contains("the agent exited with signal 9 (killed); stopping the aggregator"),
        "{logs}"
    );
    assert!(
        wait_for(Duration::from_secs(15), || (!alive(agg)).then_some(())).is_some(),
        "the aggregator was stopped"
    );
}
