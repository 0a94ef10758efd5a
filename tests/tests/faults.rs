//! Faults end to end: partitions and lossy links through the UDP fault proxy, `kill -9` of
//! either side, a full buffer, a full disk, a changed config and damaged buffer files. Each
//! test asserts the exact outcome from the data (the agent's cycle counter series at the
//! aggregator: every cycle present once, consecutive) and from both sides' own counters.

use outpost_tests::proxy::{Faults, UdpProxy};
use outpost_tests::*;
use std::time::{Duration, Instant};

/// From `outpost-agent status` of a stopped agent: (dropped samples, damaged batches, dropped batches).
fn offline_counts(agent: &Agent) -> (u64, u64, u64) {
    let (ok, out) = run(std::process::Command::new(bin("outpost-agent"))
        .args(["status", "--json", "--config"])
        .arg(&agent.config));
    assert!(ok, "status failed: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["running"], false, "{v}");
    (
        v["dropped_samples"].as_u64().unwrap(),
        v["damaged_batches"].as_u64().unwrap(),
        v["dropped_batches"].as_u64().unwrap(),
    )
}

fn agent_metric(agent: &Agent, name: &str) -> f64 {
    metric_value(&agent.metrics(), name).unwrap_or_else(|| {
        panic!(
            "{name} missing from the agent's /metrics:\n{}",
            agent.metrics()
        )
    })
}

#[test]
fn a_one_minute_partition_loses_and_doubles_nothing() {
    let tmp = TempDir::new("partition");
    let certs = Certs::init(&tmp.path().join("certs"));
    let agg = Aggregator::start(tmp.path(), &certs);
    let proxy = UdpProxy::start(agg.quic.parse().unwrap());
    let spec = AgentSpec {
        endpoint: Some(proxy.listen.to_string()),
        ..AgentSpec::new("cut-1", &certs)
    };
    let mut agent = Agent::start(tmp.path(), &agg, &spec);
    let before = wait_cycle(&agg, "cut-1", 3, Duration::from_secs(30));

    proxy.set(Faults::blackhole());
    std::thread::sleep(Duration::from_secs(60));
    let during = agg.cycles("cut-1").last().map(|p| p.1).unwrap_or(0);
    assert!(
        during <= before + 12,
        "the partition held: {during} arrived during it (had {before})"
    );
    let backlog = agent_metric(&agent, "outpost_agent_buffer_batches");
    assert!(
        backlog >= 50.0,
        "the agent buffered the minute: {backlog} batches"
    );
    assert_eq!(agent_metric(&agent, "outpost_agent_uplink_connected"), 0.0);
    assert!(
        proxy
            .counters()
            .up_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );

    proxy.set(Faults::pass());
    let made = agent_cycles(&agent);
    wait_cycle(&agg, "cut-1", made, Duration::from_secs(60));
    let last = agent.stop_drained();
    assert_cycles_exact(&agg, "cut-1", last, &[]);
    assert!(
        agent.proc.logs().contains("connected"),
        "reconnected after the partition"
    );
}

#[test]
fn a_lossy_slow_link_for_a_minute_loses_and_doubles_nothing() {
    let tmp = TempDir::new("lossy");
    let certs = Certs::init(&tmp.path().join("certs"));
    let agg = Aggregator::start(tmp.path(), &certs);
    let proxy = UdpProxy::start(agg.quic.parse().unwrap());
    let spec = AgentSpec {
        endpoint: Some(proxy.listen.to_string()),
        ..AgentSpec::new("lossy-1", &certs)
    };
    let mut agent = Agent::start(tmp.path(), &agg, &spec);
    wait_cycle(&agg, "lossy-1", 2, Duration::from_secs(30));
    proxy.set(Faults::lossy(0.2, Duration::from_millis(50)));
    std::thread::sleep(Duration::from_secs(60));
    let c = proxy.counters();
    let (fwd, dropped) = (
        c.up_forwarded.load(std::sync::atomic::Ordering::Relaxed),
        c.up_dropped.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert!(
        dropped * 100 >= (fwd + dropped) * 10,
        "the link really lost datagrams: {dropped} of {}",
        fwd + dropped
    );
    proxy.set(Faults::pass());
    let last = agent.stop_drained();
    assert!(last >= 55, "a minute of cycles: {last}");
    assert_cycles_exact(&agg, "lossy-1", last, &[]);
}

#[test]
fn kill_9_of_the_agent_five_times_loses_and_doubles_nothing() {
    let tmp = TempDir::new("kill-agent");
    let certs = Certs::init(&tmp.path().join("certs"));
    let agg = Aggregator::start(tmp.path(), &certs);
    let spec = AgentSpec {
        interval: "300ms",
        ..AgentSpec::new("crashy-1", &certs)
    };
    let mut agent = Agent::start(tmp.path(), &agg, &spec);
    for round in 0..5 {
        std::thread::sleep(Duration::from_millis(fastrand::u64(700..3000)));
        agent.proc.kill();
        assert!(!agent.proc.is_running(), "round {round}: killed");
        agent.restart();
    }
    let last = agent.stop_drained();
    assert!(last >= 10, "{last}");
    assert_cycles_exact(&agg, "crashy-1", last, &[]);
}

#[test]
fn kill_9_of_the_aggregator_while_a_backlog_drains_loses_and_doubles_nothing() {
    let tmp = TempDir::new("kill-agg");
    let certs = Certs::init(&tmp.path().join("certs"));
    let mut agg = Aggregator::start(tmp.path(), &certs);
    let proxy = UdpProxy::start(agg.quic.parse().unwrap());
    let spec = AgentSpec {
        interval: "100ms",
        endpoint: Some(proxy.listen.to_string()),
        ..AgentSpec::new("drain-1", &certs)
    };
    let mut agent = Agent::start(tmp.path(), &agg, &spec);
    wait_cycle(&agg, "drain-1", 2, Duration::from_secs(30));
    for round in 0..5 {
        // A backlog builds behind a partition, then drains; the aggregator dies mid-drain.
        proxy.set(Faults::blackhole());
        std::thread::sleep(Duration::from_secs(4));
        proxy.set(Faults::lossy(0.0, Duration::from_millis(20)));
        std::thread::sleep(Duration::from_millis(fastrand::u64(50..600)));
        agg.proc.kill();
        assert!(!agg.proc.is_running(), "round {round}: killed");
        agg.restart();
    }
    proxy.set(Faults::pass());
    let last = agent.stop_drained();
    assert!(last >= 100, "{last}");
    assert_cycles_exact(&agg, "drain-1", last, &[]);
}

#[test]
fn a_full_buffer_drops_the_oldest_and_says_exactly_how_much() {
    full_buffer_case("full", false);
}

/// A scrape of a few hundred changing series every 100 ms fills the buffer in seconds, so
/// the partition ends well inside QUIC's idle timeout and the connection outlives it. While
/// it lasts, the batch stream stops at its window, new batches go out as live copies (QUIC
/// holds them until the link heals), and the buffer evicts copied batches before the batch
/// stream reaches them. The copies then arrive and are stored, so neither side may count
/// those batches as dropped.
#[test]
fn live_copies_evicted_before_their_turn_are_not_counted_as_dropped() {
    full_buffer_case("full-live", true);
}

/// Serves `bulk_value{i="0"}`..`{i="399"}` with new random values on every request, on a
/// loopback port it returns; the thread ends with the test process.
fn bulk_target() -> u16 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut req = [0u8; 4096];
            let _ = c.read(&mut req);
            let mut body = String::from("# TYPE bulk_value gauge\n");
            for i in 0..400 {
                body += &format!("bulk_value{{i=\"{i}\"}} {}\n", fastrand::f64());
            }
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// Puts a 64 KiB agent buffer behind a partition until it has dropped 20 batches (with
/// `live`: until it has evicted 3 live-copied ones), heals the link, and checks that the
/// agent, the aggregator's record and the stored cycles tell the same story of what was
/// dropped. With `live`, the agent also scrapes [`bulk_target`]; its batches are not
/// cycles, so the story is then told by the counters alone.
fn full_buffer_case(name: &str, live: bool) {
    let (until, at_least) = if live {
        ("outpost_agent_buffer_evicted_live_batches_total", 3.0)
    } else {
        ("outpost_agent_buffer_dropped_batches_total", 20.0)
    };
    let extra = if live {
        format!(
            "[[scrape]]\njob = \"bulk\"\ntargets = [\"127.0.0.1:{}\"]\n",
            bulk_target()
        )
    } else {
        String::new()
    };
    let tmp = TempDir::new(name);
    let certs = Certs::init(&tmp.path().join("certs"));
    let agg = Aggregator::start(tmp.path(), &certs);
    let proxy = UdpProxy::start(agg.quic.parse().unwrap());
    let spec = AgentSpec {
        interval: "100ms",
        max_bytes: "64KiB",
        endpoint: Some(proxy.listen.to_string()),
        extra: &extra,
        ..AgentSpec::new("full-1", &certs)
    };
    let mut agent = Agent::start(tmp.path(), &agg, &spec);
    wait_cycle(&agg, "full-1", 2, Duration::from_secs(30));
    proxy.set(Faults::blackhole());
    let filled = wait_for(Duration::from_secs(90), || {
        metric_value(&agent.metrics(), until).filter(|d| *d >= at_least)
    });
    assert!(
        filled.is_some(),
        "{until} never reached {at_least}:\n{}",
        agent.metrics()
    );
    proxy.set(Faults::pass());
    // Once the backlog is across, both sides must tell the same story.
    let made = agent_cycles(&agent);
    wait_cycle(&agg, "full-1", made, Duration::from_secs(60));
    let m = agent.metrics();
    let dropped_batches =
        metric_value(&m, "outpost_agent_buffer_dropped_batches_total").unwrap() as u64;
    let dropped_samples =
        metric_value(&m, "outpost_agent_buffer_dropped_samples_total").unwrap() as u64;
    // The gaps are recorded when the batch stream passes them, which with live copies can
    // be after the newest cycles arrived (live copies go ahead of it): wait for both.
    let a = wait_for(Duration::from_secs(40), || {
        agg.agent("full-1").filter(|a| {
            a["dropped_samples"].as_u64() == Some(dropped_samples)
                && a["gap_batches"].as_u64() == Some(dropped_batches)
        })
    });
    let a = a.unwrap_or_else(|| {
        panic!(
            "aggregator does not report {dropped_samples} dropped samples in {dropped_batches} \
             gap batches: {:?}",
            agg.agent("full-1")
        )
    });
    let gaps = a["gaps"].as_array().expect("gaps listed");
    let listed: u64 = gaps
        .iter()
        .map(|g| g["to_seq"].as_u64().unwrap() - g["from_seq"].as_u64().unwrap() + 1)
        .sum();
    assert_eq!(listed, dropped_batches, "{a}");
    assert!(
        dropped_samples > dropped_batches * 50,
        "samples of whole cycles: {dropped_samples}"
    );

    let last = agent.stop_drained();
    let (_, _, dropped_after) = offline_counts(&agent);
    assert_eq!(
        dropped_after, dropped_batches,
        "nothing was dropped after the partition healed"
    );
    if live {
        // And still after the drain: no gap was recorded late.
        let a = agg.agent("full-1").unwrap();
        assert_eq!(a["gap_batches"].as_u64(), Some(dropped_batches), "{a}");
        return;
    }
    let held: Vec<u64> = agg.cycles("full-1").iter().map(|p| p.1).collect();
    let missing: Vec<u64> = (1..=last).filter(|c| !held.contains(c)).collect();
    assert_eq!(
        missing.len() as u64,
        dropped_batches,
        "missing cycles = dropped batches"
    );
    assert!(
        missing.windows(2).all(|w| w[1] == w[0] + 1),
        "one contiguous run of the oldest: {missing:?}"
    );
    assert_cycles_exact(&agg, "full-1", last, &missing);
}

#[test]
fn an_agent_restarted_with_a_new_config_replays_its_old_backlog() {
    let tmp = TempDir::new("reconfig");
    let certs = Certs::init(&tmp.path().join("certs"));
    let agg = Aggregator::start(tmp.path(), &certs);
    let proxy = UdpProxy::start(agg.quic.parse().unwrap());
    let spec = AgentSpec {
        region: "old-region",
        endpoint: Some(proxy.listen.to_string()),
        ..AgentSpec::new("re-1", &certs)
    };
    let mut agent = Agent::start(tmp.path(), &agg, &spec);
    wait_cycle(&agg, "re-1", 2, Duration::from_secs(30));
    proxy.set(Faults::blackhole());
    std::thread::sleep(Duration::from_secs(5));
    agent.proc.kill();
    let old_cycles: u64 = {
        // The cycles the old config made, backlog included.
        agent.offline_status().0
    };
    assert!(old_cycles >= 6, "{old_cycles}");
    proxy.set(Faults::pass());
    let spec2 = AgentSpec {
        region: "new-region",
        interval: "500ms",
        endpoint: Some(proxy.listen.to_string()),
        ..AgentSpec::new("re-1", &certs)
    };
    let mut agent = Agent::start(tmp.path(), &agg, &spec2);
    wait_cycle(&agg, "re-1", old_cycles + 6, Duration::from_secs(30));
    let last = agent.stop_drained();
    assert_cycles_exact(&agg, "re-1", last, &[]);
    let regions = get_json(&agg.url(&format!(
        "/api/v1/series?match[]={}",
        encode("outpost_agent_cycles_total{agent=\"re-1\"}")
    )))
    .unwrap();
    let regions: Vec<&str> = regions["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["region"].as_str())
        .collect();
    assert_eq!(
        regions,
        vec!["new-region", "old-region"],
        "the backlog kept the labels it was collected with"
    );
    // Timestamps follow the interval each config had: old cycles 1 s apart, new ones 0.5 s.
    let c = agg.cycles("re-1");
    let gap = |a: u64| {
        c.iter().find(|p| p.1 == a + 1).unwrap().0 - c.iter().find(|p| p.1 == a).unwrap().0
    };
    assert!((900..=1100).contains(&gap(2)), "old interval: {}", gap(2));
    assert!(
        (400..=600).contains(&gap(old_cycles + 3)),
        "new interval: {}",
        gap(old_cycles + 3)
    );
}

/// Flips bytes in the middle of the largest table file and truncates the newest data file.
fn damage(buffer: &std::path::Path) -> Vec<String> {
    let mut files: Vec<(std::path::PathBuf, std::fs::Metadata)> = std::fs::read_dir(buffer)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name().to_string_lossy().ends_with(".sst")
                || e.file_name().to_string_lossy().ends_with(".log")
        })
        .filter_map(|e| Some((e.path(), e.metadata().ok()?)))
        .collect();
    let mut done = vec![];
    files.sort_by_key(|f| f.1.len());
    let largest = files
        .iter()
        .rev()
        .find(|f| f.0.extension().is_some_and(|x| x == "sst"))
        .cloned();
    if let Some((p, m)) = largest {
        let mut bytes = std::fs::read(&p).unwrap();
        let mid = (m.len() / 3) as usize;
        for b in &mut bytes[mid..mid + 64] {
            *b ^= 0x5a;
        }
        std::fs::write(&p, bytes).unwrap();
        done.push(format!("flipped 64 bytes at {mid} of {}", p.display()));
    }
    files.sort_by_key(|f| f.1.modified().ok());
    if let Some((p, m)) = files.iter().rev().find(|f| {
        !done
            .iter()
            .any(|d| d.ends_with(&*f.0.display().to_string()))
    }) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(p)
            .unwrap()
            .set_len(m.len() / 2)
            .unwrap();
        done.push(format!(
            "truncated {} from {} to {}",
            p.display(),
            m.len(),
            m.len() / 2
        ));
    }
    done
}

#[test]
fn damaged_buffer_files_keep_every_whole_record_and_count_the_rest() {
    let tmp = TempDir::new("damage");
    let certs = Certs::init(&tmp.path().join("certs"));
    let agg = Aggregator::start(tmp.path(), &certs);
    let proxy = UdpProxy::start(agg.quic.parse().unwrap());
    let spec = AgentSpec {
        interval: "100ms",
        endpoint: Some(proxy.listen.to_string()),
        ..AgentSpec::new("rot-1", &certs)
    };
    let mut agent = Agent::start(tmp.path(), &agg, &spec);
    wait_cycle(&agg, "rot-1", 2, Duration::from_secs(30));
    let delivered_before = agg.cycles("rot-1").last().unwrap().1;
    proxy.set(Faults::blackhole());
    // Two stretches of backlog: the first flushed to a table file by a clean stop, the
    // second left in the write-ahead log by a kill.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(agent.proc.terminate(Duration::from_secs(15)), Some(true));
    agent.restart();
    std::thread::sleep(Duration::from_secs(4));
    agent.proc.kill();
    let damaged = damage(&agent.buffer_dir);
    assert_eq!(damaged.len(), 2, "{damaged:?}");

    proxy.set(Faults::pass());
    let t = Instant::now();
    agent.restart();
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "the agent started despite the damage"
    );
    let made = agent_cycles(&agent);
    assert!(made > delivered_before, "{made}");
    // Everything still whole drains; the agent keeps running and collecting.
    std::thread::sleep(Duration::from_secs(3));
    let last = agent.stop_drained();
    let (_, skipped, _) = offline_counts(&agent);
    assert!(
        agent.proc.logs().contains("the buffer was damaged"),
        "the log says so"
    );
    let held: Vec<u64> = agg.cycles("rot-1").iter().map(|p| p.1).collect();
    let missing: Vec<u64> = (1..=last).filter(|c| !held.contains(c)).collect();
    assert!(skipped > 0, "the damage hit records ({damaged:?})");
    assert_eq!(
        missing.len() as u64,
        skipped,
        "every missing cycle is a counted damaged batch: missing {missing:?}"
    );
    assert!(
        missing.iter().all(|c| *c > delivered_before),
        "only undelivered cycles can be lost"
    );
    assert_cycles_exact(&agg, "rot-1", last, &missing);
    assert_eq!(
        agg.agent("rot-1").unwrap()["gap_batches"].as_u64(),
        Some(skipped)
    );
}

#[test]
fn a_full_disk_loses_the_cycles_it_must_and_buffering_resumes() {
    let tmp = TempDir::new("disk");
    let mnt = tmp.path().join("small");
    let _unmount = Mounted::tmpfs(&mnt, "24m");

    let certs = Certs::init(&tmp.path().join("certs"));
    let agg = Aggregator::start(tmp.path(), &certs);
    let proxy = UdpProxy::start(agg.quic.parse().unwrap());
    let spec = AgentSpec {
        interval: "200ms",
        endpoint: Some(proxy.listen.to_string()),
        ..AgentSpec::new("disk-1", &certs)
    };
    let agent = Agent::spawn_in(tmp.path(), &mnt.join("buffer"), &agg, &spec);
    agent.wait_healthy();
    let mut agent = agent;
    wait_cycle(&agg, "disk-1", 2, Duration::from_secs(30));
    proxy.set(Faults::blackhole());
    // Fill the disk, and keep it full: RocksDB frees its own preallocated space when it
    // reopens, and a disk that another process fills does not stay that polite.
    let filler = Filler::start(&mnt.join("filler"));
    // The buffer does not preallocate its files, so a write fails as soon as its log needs a
    // page the disk no longer has (a backlog cycle is a few hundred bytes: seconds).
    let errors = wait_for(Duration::from_secs(120), || {
        metric_value(&agent.metrics(), "outpost_agent_buffer_write_errors_total")
            .filter(|e| *e >= 5.0)
    });
    assert!(
        errors.is_some(),
        "writes did not fail on a full disk:\n{}",
        agent.metrics()
    );
    assert!(
        agent.proc.is_running(),
        "the agent keeps running on a full disk"
    );
    assert!(get_text(&agent.url("/health")).is_ok());
    assert!(
        agent.proc.logs().contains("buffer write failed"),
        "the log says so:\n{}",
        agent.proc.logs()
    );
    let status = get_json(&agent.url("/health")).unwrap();
    assert!(
        status["buffer_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{status}"
    );

    filler.stop();
    let resumed = wait_for(Duration::from_secs(30), || {
        agent
            .proc
            .logs()
            .contains("buffer writes work again")
            .then_some(())
    });
    assert!(
        resumed.is_some(),
        "buffering did not resume:\n{}",
        agent.proc.logs()
    );
    let lost = agent_metric(&agent, "outpost_agent_buffer_write_errors_total") as u64;
    std::thread::sleep(Duration::from_secs(2));
    proxy.set(Faults::pass());
    let last = agent.stop_drained();
    let held: Vec<u64> = agg.cycles("disk-1").iter().map(|p| p.1).collect();
    let missing: Vec<u64> = (1..=last).filter(|c| !held.contains(c)).collect();
    assert!(!missing.is_empty());
    assert_eq!(
        missing.len() as u64,
        lost,
        "each failed write is one missing cycle, no more: {missing:?}"
    );
    assert_cycles_exact(&agg, "disk-1", last, &missing);
}

/// A backlog written into the agent's buffer before it starts, as an agent cut off for a
/// long time would have: `batches` batches of `series` samples each, one per 10 s, ending
/// an hour ago.
fn prefill_backlog(dir: &std::path::Path, batches: u64, series: usize) {
    use outpost_agent::buffer::Buffer;
    use outpost_agent::config::{BufferConfig, WhenFull};
    use outpost_shared::units::ByteSize;
    let b = Buffer::open(&BufferConfig {
        dir: dir.to_path_buf(),
        max_bytes: ByteSize(4 << 30),
        when_full: WhenFull::DropOldest,
        sync: false,
    })
    .unwrap();
    let labels: Vec<outpost_shared::Labels> = (0..series)
        .map(|i| {
            outpost_shared::Labels::metric(
                "replay_backlog",
                [("i", i.to_string().as_str()), ("agent", "live-1")],
            )
        })
        .collect();
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 3_600_000;
    let start = end - batches as i64 * 10_000;
    for n in 0..batches {
        let ts = start + n as i64 * 10_000;
        let mut batch = outpost_shared::Batch::default();
        for (i, l) in labels.iter().enumerate() {
            batch.push(l.clone(), ts, (n * 7 + i as u64) as f64);
        }
        let payload = outpost_shared::codec::Encoder::new().encode(&batch);
        b.append_batch(&payload, series as u64, ts).unwrap();
    }
    b.flush().unwrap();
}

#[test]
fn live_data_arrives_while_a_long_backlog_drains() {
    let tmp = TempDir::new("live");
    let certs = Certs::init(&tmp.path().join("certs"));
    let agg = Aggregator::start(tmp.path(), &certs);
    // A link with some delay, so draining takes round trips as it would across a WAN.
    let proxy = UdpProxy::start(agg.quic.parse().unwrap());
    proxy.set(Faults::lossy(0.0, Duration::from_millis(40)));
    let buffer = tmp.path().join("buffer-live-1");
    const BACKLOG: u64 = 3_000;
    prefill_backlog(&buffer, BACKLOG, 1_000);
    let spec = AgentSpec {
        endpoint: Some(proxy.listen.to_string()),
        interval: "500ms",
        ..AgentSpec::new("live-1", &certs)
    };
    let started = Instant::now();
    let mut agent = Agent::spawn_in(tmp.path(), &buffer, &agg, &spec);
    // The first cycles collected after the start must be queryable while the backlog is
    // still being applied.
    let seen = wait_for(Duration::from_secs(60), || {
        let cycles = agg.cycles("live-1");
        let applied = agg
            .agent("live-1")
            .and_then(|a| a["last_seq"].as_u64())
            .unwrap_or(0);
        (!cycles.is_empty()).then_some((started.elapsed(), applied))
    });
    let (after, applied) = seen.expect("live cycles reached the aggregator");
    eprintln!(
        "first live cycle visible after {after:?}; backlog applied up to seq {applied} of {BACKLOG}"
    );
    assert!(
        applied < BACKLOG,
        "current data waited for the whole backlog ({applied} of {BACKLOG} batches applied when it appeared after {after:?})"
    );
    // Then everything drains, every backlog batch and every cycle exactly once.
    let drained = wait_for(Duration::from_secs(120), || {
        let applied = agg
            .agent("live-1")
            .and_then(|a| a["last_seq"].as_u64())
            .unwrap_or(0);
        (applied > BACKLOG).then(|| started.elapsed())
    })
    .expect("the backlog drained");
    let last = agent.stop_drained();
    let got = agg.cycles("live-1");
    let values: Vec<u64> = got.iter().map(|p| p.1).collect();
    assert_eq!(
        values,
        (1..=last).collect::<Vec<_>>(),
        "cycles exactly once"
    );
    let a = agg.agent("live-1").unwrap();
    assert_eq!(a["gap_batches"], 0, "{a}");
    assert_eq!(a["batches"].as_u64(), Some(BACKLOG + last), "{a}");
    let q = format!(
        "{}?query={}&time={}",
        agg.url("/api/v1/query"),
        encode("replay_backlog{i=\"999\"}[1d]"),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );
    let v = get_json(&q).unwrap();
    let pts = v["data"]["result"][0]["values"].as_array().map(|a| a.len());
    assert_eq!(pts, Some(BACKLOG as usize), "every backlog point once");
    let live = metric_value(
        &agg.metrics(),
        "outpost_aggregator_ingest_live_batches_total",
    )
    .unwrap_or(0.0);
    assert!(live >= 1.0, "the aggregator stored live copies: {live}");
    eprintln!("backlog of {BACKLOG} batches drained in {drained:?}; {live} live copies");
}

#[test]
fn a_restarted_aggregator_is_noticed_at_once_not_after_the_idle_timeout() {
    let tmp = TempDir::new("reset");
    let certs = Certs::init(&tmp.path().join("certs"));
    let mut agg = Aggregator::start(tmp.path(), &certs);
    let agent = Agent::start(tmp.path(), &agg, &AgentSpec::new("reset-1", &certs));
    wait_cycle(&agg, "reset-1", 2, Duration::from_secs(30));
    // kill -9 and start again on the same data and port: the new process answers the
    // agent's packets with a stateless reset the agent recognises (the reset secret is kept
    // in the store), so the agent reconnects within seconds instead of QUIC's 30 s idle
    // timeout.
    agg.restart();
    let restarted = Instant::now();
    let back = wait_for(Duration::from_secs(40), || {
        let m = agent.metrics();
        (metric_value(&m, "outpost_agent_uplink_reconnects_total").unwrap_or(0.0) >= 1.0
            && metric_value(&m, "outpost_agent_uplink_connected") == Some(1.0))
        .then(|| restarted.elapsed())
    })
    .expect("the agent reconnects");
    assert!(
        back < Duration::from_secs(10),
        "the agent took {back:?} to reconnect to the restarted aggregator"
    );
    let last = agg.cycles("reset-1").last().map(|p| p.1).unwrap_or(0);
    wait_cycle(&agg, "reset-1", last + 2, Duration::from_secs(20));
}
