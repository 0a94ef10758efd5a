//! `outpost-aggregator tsdb`: a data folder's series, partitions and sizes, read offline
//! (read-only, so also beside a running aggregator), and with `--verify` a full read that
//! reports damage.

use crate::status::storage_report;
use outpost_tsdb::{RetentionPolicy, Storage};
use std::io::Write;
use std::path::Path;

/// Prints the report of the store in `dir` to `out` (text, or the JSON of
/// `/api/v1/status/tsdb`'s `outpostStats.storage` with `json`); with `verify`, reads every
/// record too and adds what it found. Returns whether the folder is sound (always true
/// without `verify`).
///
/// # Errors
/// The folder does not open (the message says why), or writing `out` fails.
pub fn run(
    dir: &Path,
    policy: &RetentionPolicy,
    verify: bool,
    json: bool,
    out: &mut dyn Write,
) -> Result<bool, String> {
    let storage = Storage::open_read_only(dir).map_err(|e| e.to_string())?;
    let mut report =
        storage_report(&storage, policy, outpost_service::now_ms()).map_err(|e| e.to_string())?;
    let checked = if verify {
        let v = storage
            .verify(|n| eprintln!("verified {n} chunks…"))
            .map_err(|e| e.to_string())?;
        report["verify"] = serde_json::json!({
            "series": v.series,
            "chunks": v.chunks,
            "samples": v.samples,
            "walRecords": v.wal_records,
            "problems": v.problems,
        });
        Some(v)
    } else {
        None
    };
    let w = |e: std::io::Error| e.to_string();
    if json {
        writeln!(out, "{report:#}").map_err(w)?;
    } else {
        let r = &report;
        writeln!(out, "data folder: {}", dir.display()).map_err(w)?;
        writeln!(
            out,
            "series: {}   samples: {} ({} in the head)   bytes: {}",
            r["series"], r["samples"], r["headSamples"], r["bytes"]
        )
        .map_err(w)?;
        match r["retentionHorizon"].as_str() {
            Some(h) => writeln!(out, "retention: {}s (keeps data after {h})", r["retention"]),
            None => writeln!(out, "retention: none"),
        }
        .map_err(w)?;
        writeln!(
            out,
            "{:<10} {:<22} {:>14} {:>10} {:>14}  merged",
            "resolution", "partition start", "samples", "chunks", "bytes"
        )
        .map_err(w)?;
        for p in r["partitions"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "{:<10} {:<22} {:>14} {:>10} {:>14}  {}",
                p["resolution"].as_str().unwrap_or(""),
                p["start"].as_str().unwrap_or(""),
                p["samples"],
                p["chunks"],
                p["bytes"],
                if p["merged"] == true { "yes" } else { "no" }
            )
            .map_err(w)?;
        }
        if let Some(v) = &checked {
            writeln!(
                out,
                "verified: {} series, {} wal records, {} chunks, {} samples: {}",
                v.series,
                v.wal_records,
                v.chunks,
                v.samples,
                if v.problems.is_empty() {
                    "no problems".to_string()
                } else {
                    format!("{} problem(s)", v.problems.len())
                }
            )
            .map_err(w)?;
            for p in &v.problems {
                writeln!(out, "  {p}").map_err(w)?;
            }
        }
    }
    Ok(checked.is_none_or(|v| v.problems.is_empty()))
}
