//! Runs one check many times in a row and prints this process's CPU time for the run, for
//! scripts/bench-probes. Usage: `probe-bench <http|tcp|dns> <url|host:port|resolver> <count>`.

use outpost_synthetic::{CheckDef, run};
use std::time::Instant;

/// utime + stime of this process in clock ticks, from /proc/self/stat.
fn cpu_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the command name (which may contain spaces) start at state (field 3).
    let rest = &s[s.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: probe-bench <http|tcp|dns> <url|host:port|resolver> <count>");
        std::process::exit(2);
    }
    let (kind, target, n) = (&args[1], &args[2], args[3].parse::<usize>().expect("count"));
    let yaml = match kind.as_str() {
        "http" => format!("{{name: b, type: http, frequency: 10s, timeout: 5s, url: '{target}'}}"),
        "tcp" => format!("{{name: b, type: tcp, frequency: 10s, timeout: 5s, target: '{target}'}}"),
        "dns" => format!(
            "{{name: b, type: dns, frequency: 10s, timeout: 5s, resolver: '{target}', query: bench.test}}"
        ),
        k => panic!("unknown kind {k}"),
    };
    let def: CheckDef = serde_saphyr::from_str(&yaml).expect("check");
    def.validate().expect("valid check");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // One warm-up run (TLS roots, resolver) outside the measurement, as for the exporter.
        let _ = run(&def).await;
        let c0 = cpu_ticks();
        let t0 = Instant::now();
        let mut ok = 0;
        let mut last_err = None;
        for _ in 0..n {
            let o = run(&def).await;
            if o.success {
                ok += 1;
            } else {
                last_err = o.reason;
            }
        }
        let wall = t0.elapsed().as_secs_f64();
        let ticks = cpu_ticks() - c0;
        println!("probes={n} ok={ok} cpu_ticks={ticks} wall_s={wall:.3}");
        if let Some(e) = last_err {
            eprintln!("last failure: {e}");
        }
    });
}
