//! Storage lifecycle through the real aggregator: data aged through the retention in
//! simulated time (samples written with timestamps up to 400 days back, one day per time
//! partition), deletion interrupted by `kill -9` over and over, and `outpost-aggregator tsdb`
//! reading and verifying the folder.

use outpost_shared::remote_write::{ProtoLabel, ProtoSample, TimeSeries};
use outpost_tests::*;
use std::process::Command;
use std::time::Duration;

const DAY_MS: i64 = 86_400_000;
const SERIES: usize = 5;

/// Writes, for every day `d` in `days` back from today, `per_day` samples of each series,
/// one request per day.
fn write_days(agg: &Aggregator, days: std::ops::Range<i64>, per_day: i64) {
    let today = now_ms().div_euclid(DAY_MS);
    for d in days {
        let start = (today - d) * DAY_MS;
        let timeseries = (0..SERIES)
            .map(|s| TimeSeries {
                labels: vec![
                    ProtoLabel {
                        name: "__name__".into(),
                        value: "aged".into(),
                    },
                    ProtoLabel {
                        name: "series".into(),
                        value: format!("s{s}"),
                    },
                ],
                samples: (0..per_day)
                    .map(|i| ProtoSample {
                        value: (d * 1000 + i) as f64,
                        timestamp: start + i * (DAY_MS / per_day),
                    })
                    .collect(),
            })
            .collect();
        agg.remote_write(timeseries);
    }
}

/// Sends a series named `name` with three samples, one a second from `first_ms`.
fn write_new_series(agg: &Aggregator, name: &str, first_ms: i64) {
    agg.remote_write(vec![TimeSeries {
        labels: vec![ProtoLabel {
            name: "__name__".into(),
            value: name.into(),
        }],
        samples: (0..3)
            .map(|i| ProtoSample {
                value: 1.0,
                timestamp: first_ms + i * 1000,
            })
            .collect(),
    }]);
}

/// Per day back from today: how many samples of `aged` the aggregator holds.
fn samples_per_day(agg: &Aggregator) -> std::collections::BTreeMap<i64, usize> {
    let today = now_ms().div_euclid(DAY_MS);
    let mut out = std::collections::BTreeMap::new();
    let url = format!(
        "{}?query={}&time={}",
        agg.url("/api/v1/query"),
        encode("aged[500d]"),
        now_ms() / 1000 + 60
    );
    let v = get_json(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
    for s in v["data"]["result"].as_array().cloned().unwrap_or_default() {
        for p in s["values"].as_array().cloned().unwrap_or_default() {
            let ms = (p[0].as_f64().unwrap_or(0.0) * 1000.0) as i64;
            *out.entry(today - ms.div_euclid(DAY_MS)).or_insert(0) += 1;
        }
    }
    out
}

fn tsdb_command(args: &[&str]) -> (bool, String) {
    run(Command::new(bin("outpost-aggregator"))
        .arg("tsdb")
        .args(args))
}

#[test]
fn retention_deletes_days_past_it_and_the_folder_stays_sound_through_kill_9() {
    let dir = TempDir::new("retention");
    let certs = Certs::init(&dir.path().join("certs"));
    let mut agg =
        Aggregator::start_config(dir.path(), &certs, "", "[storage]\nretention = \"401d\"\n");
    // Days 1 to 400 back (none in the future), 48 samples per series a day; the retention
    // reaches a day further, as older samples would be dropped on arrival.
    write_days(&agg, 1..401, 48);
    let held = samples_per_day(&agg);
    assert_eq!(held.len(), 400);
    assert!(held.values().all(|n| *n == 48 * SERIES));

    // The raw retention drops to 30 days, 1-hour rollups are kept 60 days and 5-minute
    // ones 30: at start the aggregator rolls up days 31 to 60 back, then deletes a raw day
    // per partition. It is killed again and again while it rolls up and deletes; each time
    // the folder opens and every day is there whole or not at all.
    let config = std::fs::read_to_string(&agg.config).expect("config");
    std::fs::write(
        &agg.config,
        config.replace(
            "retention = \"401d\"",
            "retention = \"30d\"\nretention_5m = \"30d\"\nretention_1h = \"60d\"",
        ),
    )
    .expect("config");
    for delay_ms in [50u64, 150, 300, 600, 1000] {
        agg.restart();
        std::thread::sleep(Duration::from_millis(delay_ms));
        agg.proc.kill();
        let (ok, out) = tsdb_command(&[
            "--data-dir",
            &dir.path().join("agg-data").display().to_string(),
            "--verify",
        ]);
        assert!(
            ok,
            "the folder verifies after kill -9 at {delay_ms} ms:\n{out}"
        );
    }
    agg.restart();
    let settled = wait_for(Duration::from_secs(60), || {
        let held = samples_per_day(&agg);
        // Settled: days past 60 deleted, and days 31 and 60 back down to their 1-hour
        // buckets (the 5-minute ones are deleted in the same pass, before the raw days).
        let hourly = Some(&(24 * SERIES));
        (held.keys().max() == Some(&60) && held.get(&31) == hourly && held.get(&60) == hourly)
            .then_some(held)
    })
    .unwrap_or_else(|| panic!("old days remain: {:?}", samples_per_day(&agg).keys().max()));
    // Day 30 back ends after the horizon (30 days before now), day 31 before it: days
    // 1..=30 remain raw, each whole; days 31..=60 show their 1-hour buckets' last points
    // (24 a day, the samples being 30 minutes apart).
    assert_eq!(settled.len(), 60, "{settled:?}");
    for (day, n) in &settled {
        let want = if *day <= 30 { 48 } else { 24 };
        assert_eq!(*n, want * SERIES, "day {day} back: {settled:?}");
    }
    // The status API and the offline command report the same partitions.
    let status = get_json(&agg.url("/api/v1/status/tsdb")).expect("status");
    let storage = &status["data"]["outpostStats"]["storage"];
    let parts = storage["partitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(storage["retentionHorizon"].is_string(), "{storage}");
    assert_eq!(storage["retention"], 30 * 86_400, "{storage}");
    // Today's partition may also hold what else the aggregator stored.
    let of = |res: &str| -> Vec<&serde_json::Value> {
        parts.iter().filter(|p| p["resolution"] == res).collect()
    };
    let aged: Vec<&serde_json::Value> = of("raw")
        .into_iter()
        .filter(|p| p["samples"] == 48 * SERIES as u64)
        .collect();
    assert_eq!(aged.len(), 30, "{storage}");
    assert!(aged.iter().all(|p| p["merged"] == true), "{storage}");
    assert!(of("raw").len() <= 31, "{storage}");
    // Rollups: 5-minute ones for the 30 raw days, 1-hour ones for 60 days.
    assert_eq!(of("5m").len(), 30, "{storage}");
    assert_eq!(of("1h").len(), 60, "{storage}");
    assert_eq!(storage["retention1h"], 60 * 86_400, "{storage}");
    assert!(
        agg.proc.terminate(Duration::from_secs(15)) == Some(true),
        "clean stop"
    );
    let (ok, out) = tsdb_command(&["--config", &agg.config.display().to_string(), "--json"]);
    assert!(ok, "{out}");
    let offline: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    // Sizes are estimates that move as RocksDB flushes; the rest must agree.
    let shape = |v: &serde_json::Value| -> Vec<(String, u64, u64)> {
        v["partitions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p["start"].as_str().unwrap_or("").to_string(),
                    p["samples"].as_u64().unwrap_or(0),
                    p["chunks"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    assert_eq!(shape(&offline), shape(storage));
    // The bound below which samples are dropped, offline as the running aggregator applies
    // it: its retention horizon, not only the end of the last raw day deleted.
    let running_from = storage["acceptsFrom"].as_str().unwrap_or("");
    assert!(
        offline["acceptsFrom"]
            .as_str()
            .is_some_and(|f| !running_from.is_empty() && f >= running_from),
        "{} against {running_from}",
        offline["acceptsFrom"]
    );
    let (ok, out) = tsdb_command(&["--config", &agg.config.display().to_string(), "--verify"]);
    assert!(ok && out.contains("no problems"), "{out}");
    assert!(out.contains("retention: 2592000s"), "{out}");

    // Deletions are counted, each once: with the raw retention down to 20 days, the next
    // start deletes the raw days 21 to 30 back, ten partitions, and nothing else (their
    // rollups are kept, and none is made again only to be deleted).
    let config = std::fs::read_to_string(&agg.config).expect("config");
    std::fs::write(
        &agg.config,
        config.replace("retention = \"30d\"\n", "retention = \"20d\"\n"),
    )
    .expect("config");
    agg.restart();
    let retention_deletions = |agg: &Aggregator| {
        metric_value(
            &agg.metrics(),
            "outpost_aggregator_storage_partitions_deleted_total{reason=\"retention\"}",
        )
        .unwrap_or(0.0)
    };
    let deleted = wait_for(Duration::from_secs(60), || {
        let n = retention_deletions(&agg);
        (n >= 10.0).then_some(n)
    })
    .unwrap_or_else(|| panic!("deletions counted: {}", retention_deletions(&agg)));
    assert_eq!(deleted, 10.0, "{}", agg.metrics());
    // Samples for a deleted raw day arrive late: acknowledged, counted and dropped, as
    // VictoriaMetrics drops samples older than its retention. Stored, they would make day
    // 25 back a raw day again, and queries of days 21 to 24 would read raw days that are
    // gone instead of their rollups. Day 10's samples again are stored as before.
    write_days(&agg, 25..26, 48);
    write_days(&agg, 10..11, 48);
    // A series never seen whose samples are all too old is not made either: no empty
    // series in the index, as neither Prometheus nor VictoriaMetrics makes one.
    let series_before = get_json(&agg.url("/api/v1/status/tsdb")).expect("status")["data"]
        ["outpostStats"]["storage"]["series"]
        .clone();
    write_new_series(&agg, "ancient_only", now_ms() - 25 * DAY_MS);
    let too_old = metric_value(
        &agg.metrics(),
        "outpost_aggregator_storage_samples_too_old_total",
    );
    assert_eq!(
        too_old,
        Some(48.0 * SERIES as f64 + 3.0),
        "{}",
        agg.metrics()
    );
    let listed = get_json(&format!(
        "{}?match[]=ancient_only",
        agg.url("/api/v1/series")
    ))
    .expect("series");
    assert_eq!(listed["data"], serde_json::json!([]), "{listed}");
    let status = get_json(&agg.url("/api/v1/status/tsdb")).expect("status");
    let storage = &status["data"]["outpostStats"]["storage"];
    assert_eq!(storage["series"], series_before, "{storage}");
    assert_eq!(
        storage["samplesTooOld"],
        48 * SERIES as u64 + 3,
        "{storage}"
    );
    // The horizon of the pass that deleted them: 20 days before a time in the last minute.
    let from = storage["acceptsFrom"].as_str().unwrap_or("");
    let date = |ms: i64| {
        let (y, m, d) = outpost_shared::units::civil_from_days(ms.div_euclid(DAY_MS));
        format!("{y:04}-{m:02}-{d:02}T")
    };
    let horizon = now_ms() - 20 * DAY_MS;
    assert!(
        from.starts_with(&date(horizon)) || from.starts_with(&date(horizon - 60_000)),
        "accepts from the 20-day horizon: {storage}"
    );
    // Samples stamped more than two days ahead are dropped on arrival too, as
    // VictoriaMetrics refuses them: for known series (two a series, four days ahead) and a
    // series never seen, which is not made.
    write_days(&agg, -4..-3, 2);
    write_new_series(&agg, "future_only", now_ms() + 3 * DAY_MS);
    let too_new = metric_value(
        &agg.metrics(),
        "outpost_aggregator_storage_samples_too_new_total",
    );
    assert_eq!(
        too_new,
        Some(2.0 * SERIES as f64 + 3.0),
        "{}",
        agg.metrics()
    );
    let status = get_json(&agg.url("/api/v1/status/tsdb")).expect("status");
    let storage = &status["data"]["outpostStats"]["storage"];
    assert_eq!(storage["series"], series_before, "{storage}");
    assert_eq!(storage["samplesTooNew"], 2 * SERIES as u64 + 3, "{storage}");
    let until = storage["acceptsUntil"].as_str().unwrap_or("");
    let ceiling = now_ms() + 2 * DAY_MS;
    assert!(
        until.starts_with(&date(ceiling)) || until.starts_with(&date(ceiling - 60_000)),
        "accepts until two days ahead: {storage}"
    );
    // Those days' rollups referred to their raw points (two a 1-hour bucket, one a
    // 5-minute one) and were made from them before the raw days went: each 5-minute
    // bucket's last point shows, 48 a day; older days keep their 1-hour buckets.
    let held = samples_per_day(&agg);
    assert_eq!(held.len(), 60, "{held:?}");
    for (day, n) in &held {
        let want = if *day <= 30 { 48 } else { 24 };
        assert_eq!(*n, want * SERIES, "day {day} back: {held:?}");
    }
    // Windows over days kept only as 1-hour buckets (31 to 60 back) count every sample
    // (two an hour, and the one at the window's end: 97 over two days), at an hour and at
    // an hour and five minutes (the 5-minute buckets, gone there, were read before: each
    // hour's last point, 48).
    let hour = 3_600_000;
    let h = now_ms().div_euclid(hour) * hour - 40 * DAY_MS;
    // The value of an instant query at `t` ms, and the whole answer to show.
    let instant = |q: &str, t: i64| {
        let url = format!(
            "{}?query={}&time={}",
            agg.url("/api/v1/query"),
            encode(q),
            t as f64 / 1000.0
        );
        let v = get_json(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
        (v["data"]["result"][0]["value"][1].clone(), v)
    };
    for t in [h, h + 3_900_000] {
        let (got, v) = instant("count_over_time(aged{series=\"s0\"}[2d])", t);
        assert_eq!(got, "97", "at {t} ({} ms past the hour): {v}", t - h);
    }
    // A window off the bucket edges from days kept only as 1-hour buckets into the raw
    // days (20 back on) reads the buckets up to the oldest raw day and the raw points
    // after it. It starts 38 minutes into an hour, past both of that hour's samples, so it
    // counts every sample in it; reading each old bucket's last point, it counted one an
    // hour over days 31 to 40 back.
    let today = now_ms().div_euclid(DAY_MS);
    // Samples of a series kept (at some resolution) in `[a, b]` ms.
    let held_in = |a: i64, b: i64| {
        (1..=60i64)
            .flat_map(|d| (0..48).map(move |i| (today - d) * DAY_MS + i * (DAY_MS / 48)))
            .filter(|ts| (a..=b).contains(ts))
            .count()
    };
    let t = now_ms().div_euclid(hour) * hour - 22 * 60_000;
    let (got, v) = instant("count_over_time(aged{series=\"s0\"}[40d])", t);
    assert_eq!(got, held_in(t - 40 * DAY_MS, t).to_string(), "at {t}: {v}");
    // A window reaching back past the oldest day kept at any resolution counts what is
    // kept, as a window longer than the data does in Prometheus (it fell back to each
    // bucket's last point, about half).
    let (got, v) = instant("count_over_time(aged{series=\"s0\"}[100d])", t);
    assert_eq!(got, (60 * 48).to_string(), "{v}");
    // A range query at a 5-minute step from days kept only as 1-hour buckets through the
    // 5-minute ones into the raw days: each window reads the finest buckets that reach
    // back to its start. Over 5-minute and raw days every step is exact (2 or 3 samples
    // an hour); a window starting in the 1-hour days ends at the hour before its step (3).
    // Read all as 1-hour buckets, as before, the 5-minute days gave 3 at every step.
    let (first, last) = ((today - 31) * DAY_MS + 1_800_000, (today - 19) * DAY_MS);
    let url = format!(
        "{}?query={}&start={}&end={}&step=300",
        agg.url("/api/v1/query_range"),
        encode("count_over_time(aged{series=\"s0\"}[1h])"),
        first / 1000,
        last / 1000
    );
    let v = get_json(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
    let values = v["data"]["result"][0]["values"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(values.len() as i64, (last - first) / 300_000 + 1, "{v}");
    let five_minute_from = (today - 30) * DAY_MS;
    let mut odd = 0;
    for p in &values {
        let e = (p[0].as_f64().unwrap_or(0.0) * 1000.0).round() as i64;
        let at = if e - hour >= five_minute_from {
            odd += usize::from(held_in(e - hour, e) == 2);
            e
        } else {
            e.div_euclid(hour) * hour
        };
        let want = held_in(at - hour, at).to_string();
        assert_eq!(
            p[1],
            want.as_str(),
            "at {e} ({} days back)",
            today - e / DAY_MS
        );
    }
    assert!(odd > 1000, "{odd} steps with two samples");
    assert!(
        agg.proc.terminate(Duration::from_secs(15)) == Some(true),
        "clean stop"
    );
    let (ok, out) = tsdb_command(&["--config", &agg.config.display().to_string(), "--verify"]);
    assert!(ok && out.contains("no problems"), "{out}");
}
