//! Cold timings of typical queries over an in-memory store: 10,000 counters
//! `x{instance="i<N>", job="j<N%10>"}` and 1,000 classic histogram series
//! `x_bucket{instance, le}` (100 instances × 10 buckets), one hour of 15 s samples.
//!
//! Run with `cargo run --release -p outpost-promql --example bench_eval`; each query runs
//! once as a range query (15 s step, 241 steps) and once as an instant query at the end.
//! An argument keeps only the queries that contain it.

use outpost_promql::memory::MemStorage;
use outpost_promql::{Steps, Value, instant_query, parse, range_query};
use outpost_shared::Labels;
use std::time::Instant;

const START: i64 = 1_700_000_000_000;
const HOUR: i64 = 3_600_000;
const STEP: i64 = 15_000;

fn store() -> MemStorage {
    let n_points = (HOUR / STEP) as usize + 1;
    let mut src = MemStorage::default();
    let mut pts = Vec::with_capacity(n_points);
    for n in 0..10_000u64 {
        pts.clear();
        let mut v = 0.0;
        for i in 0..n_points {
            v += ((n + i as u64) % 13) as f64;
            // A counter reset now and then.
            if (n + i as u64).is_multiple_of(997) {
                v = 1.0;
            }
            pts.push((START + i as i64 * STEP, v));
        }
        let (inst, job) = (format!("i{n}"), format!("j{}", n % 10));
        src = src.with(
            Labels::metric("x", [("instance", inst.as_str()), ("job", job.as_str())]),
            &pts,
        );
    }
    let les = [
        "0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "10", "50", "+Inf",
    ];
    for n in 0..100u64 {
        let inst = format!("i{n}");
        for (b, le) in les.iter().enumerate() {
            pts.clear();
            let mut v = 0.0;
            for i in 0..n_points {
                v += ((n + i as u64) % 5 + b as u64) as f64;
                pts.push((START + i as i64 * STEP, v));
            }
            src = src.with(
                Labels::metric("x_bucket", [("instance", inst.as_str()), ("le", le)]),
                &pts,
            );
        }
    }
    src
}

fn size(v: &Value) -> usize {
    match v {
        Value::Vector(s) => s.len(),
        Value::Matrix(m) => m.iter().map(|s| s.points.len()).sum(),
        Value::Scalar(_) | Value::String { .. } => 1,
    }
}

fn main() {
    let t0 = Instant::now();
    let src = store();
    println!("store built in {:?}", t0.elapsed());
    let queries = [
        "sum(rate(x[5m]))",
        "histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m])))",
        "x * 2",
        "rate(x[5m])",
        "avg_over_time(x[5m])",
        "sum by (job) (x)",
        // Beyond the headline set: vector matching, topk, per-series buckets, a subquery.
        "x / x",
        "topk(5, x)",
        "histogram_quantile(0.9, rate(x_bucket[5m]))",
        "max_over_time(rate(x[5m])[10m:1m])",
    ];
    let end = START + HOUR;
    let steps = Steps::new(end - HOUR, end, STEP).expect("steps");
    println!(
        "{:<62} {:>10} {:>10} {:>10}",
        "query", "range ms", "instant ms", "points"
    );
    let only = std::env::args().nth(1).unwrap_or_default();
    for q in queries.into_iter().filter(|q| q.contains(only.as_str())) {
        let expr = parse(q).expect("parse");
        let t = Instant::now();
        let r = range_query(&src, &expr, &steps).expect("range query");
        let range_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let i = instant_query(&src, &expr, end).expect("instant query");
        let instant_ms = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "{q:<62} {range_ms:>10.1} {instant_ms:>10.2} {:>10}",
            size(&r) + size(&i)
        );
    }
}
