//! The agent's code layout: the functions listed in agent/link-order.txt (the ones the agent
//! runs, found by scripts/agent-link-order) exist in this build and sit together at the start
//! of `.text`, which is what keeps the resident program small (see agent/build.rs).

use std::collections::HashMap;
use std::process::Command;

/// Runs a binutils program on the agent binary and returns its standard output.
fn binutils(program: &str, args: &[&str]) -> String {
    let bin = env!("CARGO_BIN_EXE_outpost-agent");
    let out = Command::new(program)
        .args(args)
        .arg(bin)
        .output()
        .unwrap_or_else(|e| panic!("{program} (binutils) could not run: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("binutils prints UTF-8")
}

/// Whether a symbol is Rust's: its name carries a hash of the compiler and of the crate's
/// dependencies (legacy mangling's `17h<16 hex digits>E`, or v0 mangling's `_R` prefix).
fn is_rust(symbol: &str) -> bool {
    symbol.starts_with("_R")
        || symbol.match_indices("17h").any(|(i, _)| {
            let hash = &symbol.as_bytes()[i + 3..];
            hash.len() > 16 && hash[..16].iter().all(u8::is_ascii_hexdigit) && hash[16] == b'E'
        })
}

#[test]
fn listed_functions_exist_and_lead_the_text_section() {
    let file = include_str!("../link-order.txt");
    // The compiler the list was made with, from its header ("# rustc 1.95.0 (...)"), and the
    // one that built this binary, from its .comment section ("rustc version 1.95.0 (...)").
    let listed_with = file
        .lines()
        .find_map(|l| l.strip_prefix("# rustc "))
        .expect("agent/link-order.txt names the compiler it was made with");
    let built_with = binutils("readelf", &["-p", ".comment"])
        .lines()
        .find_map(|l| {
            l.split_once("rustc version ")
                .map(|(_, v)| v.trim().to_string())
        })
        .expect("the agent binary's .comment names its compiler");
    // With another compiler every Rust symbol is renamed, so only the C and C++ functions
    // (RocksDB, zstd, ring's assembly) are checked; with the same one, all of them.
    let same_compiler = listed_with.trim() == built_with;
    let listed: Vec<&str> = file
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| same_compiler || !is_rust(l))
        .collect();
    assert!(
        listed.len() > 1000,
        "agent/link-order.txt lists only {} functions",
        listed.len()
    );

    // Every defined function of the binary: name -> (address, size).
    let mut functions = HashMap::new();
    for line in binutils("nm", &["-S", "--defined-only"]).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() == 4 && matches!(f[2], "t" | "T" | "w" | "W") {
            let address = u64::from_str_radix(f[0], 16).unwrap();
            let size = u64::from_str_radix(f[1], 16).unwrap();
            functions.entry(f[3].to_string()).or_insert((address, size));
        }
    }
    let found: Vec<(u64, u64)> = listed
        .iter()
        .filter_map(|n| functions.get(*n).copied())
        .collect();
    let share = found.len() as f64 / listed.len() as f64;
    assert!(
        share >= 0.9,
        "only {} of the {} functions in agent/link-order.txt are in this build (made with rustc \
         {listed_with}, built with {built_with}; symbol names change with the dependency \
         versions): run scripts/agent-link-order",
        found.len(),
        listed.len()
    );

    // The listed functions come first: all but a few lie within their own total size (plus
    // alignment padding) of the start of .text.
    let sections = binutils("readelf", &["-SW"]);
    let text = sections
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let i = f.iter().position(|s| *s == ".text")?;
            u64::from_str_radix(f.get(i + 2)?, 16).ok()
        })
        .expect("the agent binary has a .text section");
    let listed_bytes: u64 = found.iter().map(|(_, size)| size).sum();
    let limit = text + listed_bytes + listed_bytes / 4;
    let packed = found
        .iter()
        .filter(|(address, _)| (text..limit).contains(address))
        .count();
    assert!(
        packed as f64 >= 0.95 * found.len() as f64,
        "only {packed} of {} listed functions lie in the first {} bytes of .text at {text:#x}: \
         the linker did not apply agent/link-order.txt (agent/build.rs passes it to lld)",
        found.len(),
        limit - text
    );
}
