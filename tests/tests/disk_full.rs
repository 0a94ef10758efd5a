//! A full data folder at the aggregator, end to end: its store on a small tmpfs that a
//! filler file fills while a real agent streams over QUIC and remote_write floods in.
//! Ingestion must stop acknowledging (the agent keeps its cycles buffered), queries must
//! keep answering, a metric and a log line must say why, and ingestion must resume by
//! itself once the filler is gone, with every cycle the agent made stored exactly once.

use outpost_shared::remote_write::{ProtoLabel, ProtoSample, TimeSeries, WriteRequest};
use outpost_tests::*;
use std::time::{Duration, Instant};

/// The tmpfs under the store. RocksDB takes writes again only once 64 MiB are free, and
/// keeps about as much preallocated for its log: the file system must hold both.
const SIZE: &str = "192m";

/// One remote_write request of 20 new series with 1,000 samples each over the last hour.
fn flood_request(n: usize) -> Vec<u8> {
    let now = now_ms();
    let timeseries = (0..20)
        .map(|s| TimeSeries {
            labels: vec![
                ProtoLabel {
                    name: "__name__".into(),
                    value: "flood".into(),
                },
                ProtoLabel {
                    name: "series".into(),
                    value: format!("r{n}s{s}"),
                },
            ],
            samples: (0..1000)
                .map(|i| ProtoSample {
                    value: (n * 1000 + i) as f64 * 0.37,
                    timestamp: now - 3_600_000 + i as i64 * 3_600,
                })
                .collect(),
        })
        .collect();
    outpost_shared::remote_write::encode(&WriteRequest {
        timeseries,
        metadata: vec![],
    })
}

fn agg_metric(agg: &Aggregator, name: &str) -> Option<f64> {
    metric_value(&agg.metrics(), name)
}

#[test]
fn a_full_data_folder_pauses_ingestion_and_it_resumes_by_itself() {
    if !is_root() {
        println!(
            "skipped: this test mounts a small tmpfs for the aggregator's data and needs root"
        );
        return;
    }
    let started = Instant::now();
    let tmp = TempDir::new("agg-disk");
    let mnt = tmp.path().join("small");
    let _mounted = Mounted::tmpfs(&mnt, SIZE);
    let certs = Certs::init(&tmp.path().join("certs"));
    let agg = Aggregator::start_data(tmp.path(), &mnt.join("data"), &certs, "", "");
    let spec = AgentSpec {
        interval: "200ms",
        ..AgentSpec::new("full-1", &certs)
    };
    let mut agent = Agent::start(tmp.path(), &agg, &spec);
    wait_cycle(&agg, "full-1", 3, Duration::from_secs(30));
    assert_eq!(
        agg_metric(&agg, "outpost_aggregator_storage_disk_full"),
        Some(0.0)
    );

    // Fill the file system. RocksDB still has room in its preallocated log, so remote_write
    // floods it until the store refuses.
    let filler = Filler::start(&mnt.join("filler"));
    let url = agg.url("/api/v1/write");
    let mut refused = None;
    let t = Instant::now();
    let mut n = 0;
    while refused.is_none() && t.elapsed() < Duration::from_secs(40) {
        let (code, text) = post_remote_write(&url, &flood_request(n), None);
        n += 1;
        if code != 204 {
            refused = Some((code, text));
        }
    }
    let (code, text) = refused.unwrap_or_else(|| {
        panic!(
            "{n} remote_write requests were all stored on a full file system:\n{}",
            agg.metrics()
        )
    });
    eprintln!(
        "store refused after {n} requests ({:?}): {code} {text}",
        t.elapsed()
    );
    assert_eq!(
        code, 503,
        "a full store answers remote_write with 503: {text}"
    );
    assert!(text.contains("is full"), "{text}");

    let metrics = agg.metrics();
    assert_eq!(
        metric_value(&metrics, "outpost_aggregator_storage_disk_full"),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        metric_value(
            &metrics,
            "outpost_aggregator_storage_write_errors_total{reason=\"no_space\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "{metrics}"
    );
    let logs = agg.proc.logs();
    let warning = format!(
        "data folder {} is full: ingestion paused",
        mnt.join("data").display()
    );
    assert!(logs.contains(&warning), "the log says why:\n{logs}");
    assert!(
        logs.contains("[storage] max_bytes"),
        "and what to do:\n{logs}"
    );

    // Nothing more is stored or acknowledged; the agent buffers; queries answer.
    let held = agg.cycles("full-1");
    let last_held = held
        .last()
        .map(|p| p.1)
        .expect("cycles stored before the disk filled");
    let buffered_before = metric_value(&agent.metrics(), "outpost_agent_buffer_batches");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        agg.cycles("full-1").last().map(|p| p.1),
        Some(last_held),
        "queries answer from what is stored, and nothing new is stored"
    );
    let q = get_json(&format!(
        "{}?query={}",
        agg.url("/api/v1/query"),
        encode("count(flood)")
    ))
    .expect("an instant query answers");
    assert_eq!(q["status"], "success", "{q}");
    let buffered = metric_value(&agent.metrics(), "outpost_agent_buffer_batches").unwrap_or(0.0);
    assert!(
        buffered >= 15.0 && buffered > buffered_before.unwrap_or(0.0),
        "the agent keeps its unacknowledged cycles: {buffered} batches buffered (had {buffered_before:?})"
    );
    assert_eq!(
        metric_value(&agent.metrics(), "outpost_agent_uplink_connected"),
        Some(1.0),
        "the agent stays connected"
    );
    assert_eq!(
        metric_value(&agg.metrics(), "outpost_aggregator_storage_disk_full"),
        Some(1.0)
    );
    assert!(
        agg.proc.logs().matches(&warning).count() == 1,
        "one warning per episode"
    );

    // Space returns: ingestion resumes with nothing restarted.
    filler.stop();
    let resumed = wait_for(Duration::from_secs(30), || {
        (agg_metric(&agg, "outpost_aggregator_storage_disk_full") == Some(0.0)).then_some(())
    });
    assert!(
        resumed.is_some(),
        "ingestion did not resume:\n{}",
        agg.proc.logs()
    );
    assert!(
        agg.proc
            .logs()
            .contains("has space again: ingestion resumed"),
        "{}",
        agg.proc.logs()
    );
    let made = agent_cycles(&agent);
    wait_cycle(&agg, "full-1", made, Duration::from_secs(30));
    assert_eq!(
        post_remote_write(&url, &flood_request(n), None).0,
        204,
        "remote_write is stored again"
    );
    let last = agent.stop_drained();
    assert!(
        last > last_held + 20,
        "cycles were made while the disk was full"
    );
    assert_cycles_exact(&agg, "full-1", last, &[]);
    eprintln!("done in {:?}", started.elapsed());
}
