//! `outpost-aggregator tsdb`: a data folder's series, partitions and sizes, read offline
//! (read-only, so also beside a running aggregator), with `--verify` a full read that
//! reports damage, and with `--maintain` (aggregator stopped) one maintenance pass: merges,
//! rollups and retention, as the running aggregator does every minute.

use crate::status::storage_report;
use outpost_tsdb::{RetentionPolicy, Storage};
use std::io::Write;
use std::path::Path;

/// The `[storage]` policy the command reports and applies.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Retentions and size cap.
    pub policy: RetentionPolicy,
    /// Whether they are the defaults, no config having been read (`--data-dir`): said so
    /// next to the retention shown.
    pub default: bool,
}

/// Prints the report of the store in `dir` to `out` (text, or the JSON of
/// `/api/v1/status/tsdb`'s `outpostStats.storage` with `json`); with `verify`, reads every
/// record too and adds what it found; with `maintain`, opens it for writing and runs one
/// maintenance pass under `policy` first (progress on stderr). Returns whether the folder
/// is sound (always true without `verify`).
///
/// # Errors
/// The folder does not open (the message says why: in use by a running aggregator, for
/// `maintain`), the pass fails, or writing `out` fails.
pub fn run(
    dir: &Path,
    policy: &Policy,
    verify: bool,
    json: bool,
    maintain: bool,
    out: &mut dyn Write,
) -> Result<bool, String> {
    let storage = if maintain {
        let s = Storage::open(dir).map_err(|e| {
            let e = e.to_string();
            if e.contains("lock") {
                format!("{e}: is the aggregator running on it? Stop it first; --maintain needs the folder to itself")
            } else {
                e
            }
        })?;
        eprintln!(
            "maintaining {}: compacting the head, merging, rolling up, applying retention…",
            dir.display()
        );
        s.compact_head().map_err(|e| e.to_string())?;
        let r = s
            .maintain_with_progress(outpost_service::now_ms(), &policy.policy, &mut |m| {
                eprintln!("{m}")
            })
            .map_err(|e| e.to_string())?;
        eprintln!(
            "merged {} partition(s) ({} chunks into {}), rolled up {} day(s) ({} samples read), deleted {} partition(s)",
            r.merged_partitions,
            r.chunks_before,
            r.chunks_after,
            r.rolled_up_partitions,
            r.rollup_samples,
            r.deleted.len()
        );
        s.flush().map_err(|e| e.to_string())?;
        s
    } else {
        Storage::open_read_only(dir).map_err(|e| e.to_string())?
    };
    let mut report = storage_report(&storage, &policy.policy, outpost_service::now_ms())
        .map_err(|e| e.to_string())?;
    // No pass here has set the retention horizon as a bound: the aggregator drops samples
    // before it (from its next pass on), so the bound shown is the later of the two.
    if let Some(h) = report["retentionHorizon"].as_str().map(str::to_string)
        && report["acceptsFrom"]
            .as_str()
            .is_none_or(|f| f < h.as_str())
    {
        report["acceptsFrom"] = serde_json::Value::String(h);
    }
    let checked = if verify {
        let v = storage
            .verify(|n| eprintln!("verified {n} chunks…"))
            .map_err(|e| e.to_string())?;
        report["verify"] = serde_json::json!({
            "series": v.series,
            "chunks": v.chunks,
            "rollupChunks": v.rollup_chunks,
            "samples": v.samples,
            "walRecords": v.wal_records,
            "unreadable": v.unreadable,
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
        let default = if policy.default {
            ", the default: --config for the aggregator's"
        } else {
            ""
        };
        match r["retentionHorizon"].as_str() {
            Some(h) => writeln!(
                out,
                "retention: {}s (keeps data after {h}{default})",
                r["retention"]
            ),
            None => writeln!(out, "retention: none{default}"),
        }
        .map_err(w)?;
        if let Some(from) = r["acceptsFrom"].as_str() {
            writeln!(
                out,
                "samples before {from} are dropped on arrival (past the retention horizon of \
                 the last maintenance pass, or in a raw day deleted)"
            )
            .map_err(w)?;
        }
        for res in ["raw", "5m", "1h"] {
            let t = &r["resolutions"][res];
            writeln!(
                out,
                "{res:<4} {} partition(s), {} {}, {} bytes",
                t["partitions"],
                t["samples"],
                if res == "raw" { "samples" } else { "buckets" },
                t["bytes"]
            )
            .map_err(w)?;
        }
        writeln!(
            out,
            "{:<10} {:<24} {:>14} {:>10} {:>14}  merged",
            "resolution", "partition start", "samples", "chunks", "bytes"
        )
        .map_err(w)?;
        // Numbers as text: a JSON value ignores the width.
        let n = |v: &serde_json::Value| v.as_u64().map_or_else(String::new, |n| n.to_string());
        for p in r["partitions"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "{:<10} {:<24} {:>14} {:>10} {:>14}  {}",
                p["resolution"].as_str().unwrap_or(""),
                p["start"].as_str().unwrap_or(""),
                n(&p["samples"]),
                n(&p["chunks"]),
                n(&p["bytes"]),
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
