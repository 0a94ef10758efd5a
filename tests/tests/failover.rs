//! Several aggregators per agent (`[aggregator] endpoints`): an agent moves between two
//! aggregators that both forward to one real VictoriaMetrics, through a partition of the
//! first (the agent fails over to the second), a `kill -9` of the first while cut off, and
//! its return (the agent moves back). Afterwards VictoriaMetrics holds every cycle of the
//! agent's cycle counter exactly once, each aggregator counts no missing batch, and what
//! each did not receive is counted as handed over to the other.

use outpost_tests::proxy::{Faults, UdpProxy};
use outpost_tests::*;
use std::collections::BTreeSet;
use std::time::Duration;

const AGENT: &str = "move-1";

/// The cycles `agg` holds of the agent (values of its cycle counter), as a set.
fn held(agg: &Aggregator) -> BTreeSet<u64> {
    agg.cycles(AGENT).into_iter().map(|p| p.1).collect()
}

fn metric(text: &str, name: &str) -> f64 {
    metric_value(text, name).unwrap_or_else(|| panic!("{name} missing:\n{text}"))
}

/// Waits until `agg` has forwarded everything it holds to its destination `vm`.
fn wait_forwarded(agg: &Aggregator) {
    let done = wait_for(Duration::from_secs(60), || {
        let m = agg.metrics();
        (metric_value(
            &m,
            "outpost_aggregator_forward_pending_records{destination=\"vm\"}",
        ) == Some(0.0))
        .then_some(())
    });
    assert!(
        done.is_some(),
        "forwarding did not finish:\n{}",
        agg.metrics()
    );
}

#[test]
fn an_agent_moving_between_two_aggregators_reaches_the_cluster_exactly_once() {
    let dir = TempDir::new("failover");
    let certs = Certs::init(&dir.path().join("certs"));
    let vm_port = free_tcp_port();
    let _vm = start_victoria_metrics(dir.path(), vm_port);
    let vm = format!("http://127.0.0.1:{vm_port}");
    let forward = format!(
        "[[forward]]\nname = \"vm\"\nurl = \"{vm}/api/v1/write\"\nmax_backoff = \"500ms\"\n"
    );
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a_dir).expect("dir a");
    std::fs::create_dir_all(&b_dir).expect("dir b");
    let mut a = Aggregator::start_config(&a_dir, &certs, "", &forward);
    let b = Aggregator::start_config(&b_dir, &certs, "", &forward);
    let proxy = UdpProxy::start(a.quic.parse().expect("quic address"));
    let endpoints = format!("{},{}", proxy.listen, b.quic);
    let spec = AgentSpec {
        endpoint: Some(endpoints),
        aggregator_extra: "failback_interval = \"2s\"",
        ..AgentSpec::new(AGENT, &certs)
    };
    let mut agent = Agent::start(dir.path(), &a, &spec);
    wait_for(Duration::from_secs(30), || {
        held(&a).last().filter(|c| **c >= 3).copied()
    })
    .expect("cycles reach the first aggregator");

    // The first aggregator becomes unreachable: the agent fails over to the second.
    proxy.set(Faults::blackhole());
    let on_b = wait_for(Duration::from_secs(60), || {
        held(&b).last().filter(|c| **c >= 2).copied()
    })
    .unwrap_or_else(|| panic!("the agent did not fail over:\n{}", agent.proc.logs()));
    eprintln!("failed over: the second aggregator holds up to cycle {on_b}");
    // While cut off, the first one crashes and comes back on the same data.
    a.restart();
    proxy.set(Faults::pass());

    // It answers again: the agent moves back to it within the failback interval.
    let before = held(&b).last().copied().unwrap_or(0);
    wait_for(Duration::from_secs(30), || {
        held(&a).last().filter(|c| **c > before + 2).copied()
    })
    .unwrap_or_else(|| panic!("the agent did not move back:\n{}", agent.proc.logs()));
    assert_eq!(
        metric(&agent.metrics(), "outpost_agent_uplink_failbacks_total"),
        1.0
    );
    let b_last = held(&b).last().copied().unwrap_or(0);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        held(&b).last().copied().unwrap_or(0),
        b_last,
        "nothing more goes to the second aggregator once the agent is back"
    );

    let last = agent.stop_drained();
    wait_forwarded(&a);
    wait_forwarded(&b);

    // Between them the two aggregators hold every cycle; a batch both stored (in flight
    // when the link was cut) is the only overlap.
    let (on_a, on_b) = (held(&a), held(&b));
    let all: BTreeSet<u64> = on_a.union(&on_b).copied().collect();
    let want: BTreeSet<u64> = (1..=last).collect();
    assert_eq!(
        all.symmetric_difference(&want).collect::<Vec<_>>(),
        Vec::<&u64>::new(),
        "cycles held by neither aggregator, or unexpected"
    );
    let both = on_a.intersection(&on_b).count();
    eprintln!(
        "first aggregator: {} cycles, second: {} cycles, both: {both}",
        on_a.len(),
        on_b.len()
    );
    assert!(!on_b.is_empty(), "the second aggregator took part");
    assert!(
        on_a.first() == Some(&1) && on_a.last() == Some(&last),
        "the first aggregator has the start and, after the move back, the end"
    );

    // VictoriaMetrics has every cycle exactly once, one sample per cycle timestamp.
    // (VictoriaMetrics makes what it took searchable within about a second.)
    let got = wait_for(Duration::from_secs(20), || {
        let got = cycles_at(&vm, AGENT);
        (got.last().map(|p| p.1) == Some(last)).then_some(got)
    })
    .unwrap_or_else(|| cycles_at(&vm, AGENT));
    let values: Vec<u64> = got.iter().map(|p| p.1).collect();
    assert_eq!(
        values,
        want.iter().copied().collect::<Vec<_>>(),
        "cycles in VictoriaMetrics"
    );

    // Neither aggregator counts a missing batch: what each lacks went to the other.
    let (ra, rb) = (a.agent(AGENT).expect("a"), b.agent(AGENT).expect("b"));
    assert_eq!(ra["gap_batches"], 0, "first aggregator: {ra}");
    assert_eq!(rb["gap_batches"], 0, "second aggregator: {rb}");
    let handed_a = ra["handed_over_batches"].as_u64().unwrap_or(0);
    let handed_b = rb["handed_over_batches"].as_u64().unwrap_or(0);
    let (batches_a, batches_b) = (
        ra["batches"].as_u64().unwrap_or(0),
        rb["batches"].as_u64().unwrap_or(0),
    );
    assert!(handed_b > 0, "the second aggregator took over: {rb}");
    assert!(handed_a > 0, "the first aggregator took back: {ra}");
    // One batch per cycle: what each applied plus what it was handed covers every seq up
    // to its last, the overlap counted in both.
    assert_eq!(ra["last_seq"].as_u64(), Some(batches_a + handed_a), "{ra}");
    assert_eq!(rb["last_seq"].as_u64(), Some(batches_b + handed_b), "{rb}");
    for (name, agg) in [("first", &a), ("second", &b)] {
        let m = agg.metrics();
        for counter in ["failed", "dropped"] {
            // (A counter that never moved is not listed.)
            let n = metric_value(
                &m,
                &format!(
                    "outpost_aggregator_forward_samples_{counter}_total{{destination=\"vm\"}}"
                ),
            );
            assert_eq!(
                n.unwrap_or(0.0),
                0.0,
                "{name} aggregator: samples {counter}"
            );
        }
    }
}
