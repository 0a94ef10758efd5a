//! `scrape-bench`: how fast the agent turns a large exposition into samples, with the code a
//! scrape runs. It reads one exposition file and, RUNS times each, (1) parses it
//! (`textparse::parse_each`, every sample handed over with borrowed names and labels) and (2)
//! builds the scrape's batch (`scrape::report::build`: parse, attach job/instance/agent/region,
//! owned label sets). Prints the median samples per second of each as JSON, per CPU second of
//! this thread (so other load on the machine does not count) and per wall-clock second.
//!
//! usage: scrape-bench FILE [RUNS] [text|openmetrics]

use outpost_agent::scrape::report;
use outpost_agent::textparse::{self, Format};
use rustix::time::{ClockId, clock_gettime};
use std::time::Instant;

/// CPU time of this thread, in seconds.
fn cpu() -> f64 {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: scrape-bench FILE [RUNS] [text|openmetrics]");
        std::process::exit(2);
    };
    let runs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5).max(1);
    let (format, ct) = match args.get(3).map(String::as_str) {
        Some("openmetrics") => (
            Format::OpenMetrics,
            "application/openmetrics-text; version=1.0.0",
        ),
        _ => (Format::Text, "text/plain; version=0.0.4"),
    };
    let body = std::fs::read_to_string(path).unwrap_or_else(|e| {
        eprintln!("cannot read {path}: {e}");
        std::process::exit(1);
    });
    let target: Vec<(String, String)> = [
        ("job", "bench"),
        ("instance", "127.0.0.1:9999"),
        ("agent", "bench-1"),
        ("region", "local"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let mut samples = 0;
    let (mut parse_rates, mut build_rates, mut parse_wall, mut build_wall) =
        (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        let c = cpu();
        let t = Instant::now();
        let mut sum = 0.0;
        let n = textparse::parse_each(&body, format, |s| sum += s.value + s.labels.len() as f64)
            .unwrap_or_else(|e| {
                eprintln!("{path}: {e}");
                std::process::exit(1);
            });
        let secs = t.elapsed().as_secs_f64();
        let cpu_secs = cpu() - c;
        std::hint::black_box(sum);
        samples = n;
        parse_rates.push(n as f64 / cpu_secs);
        parse_wall.push(n as f64 / secs);

        let c = cpu();
        let t = Instant::now();
        let r = report::build(
            Ok(report::Fetched {
                body: &body,
                content_type: ct,
            }),
            &target,
            1_700_000_000_000,
            0.0,
        );
        let secs = t.elapsed().as_secs_f64();
        let cpu_secs = cpu() - c;
        assert!(r.up, "{:?}", r.error);
        build_rates.push(r.scraped as f64 / cpu_secs);
        build_wall.push(r.scraped as f64 / secs);
        std::hint::black_box(r.batch);
    }
    println!(
        "{{\"samples\":{samples},\"bytes\":{},\"runs\":{runs},\"parse_samples_per_cpu_s\":{:.0},\"scrape_batch_samples_per_cpu_s\":{:.0},\"parse_samples_per_wall_s\":{:.0},\"scrape_batch_samples_per_wall_s\":{:.0}}}",
        body.len(),
        median(parse_rates),
        median(build_rates),
        median(parse_wall),
        median(build_wall)
    );
}
