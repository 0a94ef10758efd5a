//! `drain-fill`: writes a backlog into real agent buffers, as agents cut off from their
//! aggregator would have, for `scripts/bench-drain`.
//!
//! It reads a VictoriaMetrics import file (`vm_import.jsonl` from
//! `/work/shared/peers/gen_dataset.py`), groups series by their `instance` label, gives each of
//! `--agents` agents an equal share of the hosts, and for each agent appends one batch per
//! timestamp to a RocksDB buffer at `<root>/<agent id>/buffer` through the agent's own
//! [`Buffer`] (the same encoding, header and counters a running agent writes), labelled with
//! `agent` and `region` as the agent labels its samples. Prints one JSON line per agent: its
//! id, series, batches, samples, the buffer's bytes of batch data, the folder's size on disk
//! and the size of its table files (what grows with the data).
//!
//! usage: drain-fill --file vm_import.jsonl --root DIR [--agents 1]

use anyhow::{Context, Result, bail};
use outpost_agent::buffer::Buffer;
use outpost_agent::config::{BufferConfig, WhenFull};
use outpost_shared::codec::Encoder;
use outpost_shared::units::ByteSize;
use outpost_shared::{Batch, Labels};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

struct Series {
    labels: Labels,
    ts: Vec<i64>,
    values: Vec<f64>,
}

fn du(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    e.metadata()
                        .map(|m| if m.is_dir() { du(&e.path()) } else { m.len() })
                        .unwrap_or(0)
                })
                .sum()
        })
        .unwrap_or(0)
}

fn main() -> Result<()> {
    let mut file = None;
    let mut root = None;
    let mut agents = 1usize;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--file" => file = Some(PathBuf::from(it.next().context("--file needs a value")?)),
            "--root" => root = Some(PathBuf::from(it.next().context("--root needs a value")?)),
            "--agents" => {
                agents = it
                    .next()
                    .context("--agents needs a value")?
                    .parse()
                    .context("--agents: a number")?
            }
            "-h" | "--help" => {
                println!("usage: drain-fill --file vm_import.jsonl --root DIR [--agents 1]");
                return Ok(());
            }
            _ => bail!("unexpected argument {a:?} (see --help)"),
        }
    }
    let (file, root) = (
        file.context("--file is required")?,
        root.context("--root is required")?,
    );
    let mut hosts: BTreeMap<String, Vec<Series>> = BTreeMap::new();
    for line in std::io::BufReader::new(
        std::fs::File::open(&file).with_context(|| format!("open {}", file.display()))?,
    )
    .lines()
    {
        let v: Value = serde_json::from_str(&line?)?;
        let m = v["metric"]
            .as_object()
            .context("a line without \"metric\"")?;
        let pairs: Vec<(String, String)> = m
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let host = m
            .get("instance")
            .and_then(|h| h.as_str())
            .unwrap_or("")
            .to_string();
        let ts = v["timestamps"]
            .as_array()
            .context("timestamps")?
            .iter()
            .filter_map(|t| t.as_i64())
            .collect();
        let values = v["values"]
            .as_array()
            .context("values")?
            .iter()
            .filter_map(|x| x.as_f64())
            .collect();
        hosts.entry(host).or_default().push(Series {
            labels: Labels::new(pairs),
            ts,
            values,
        });
    }
    if agents == 0 || hosts.len() < agents || !hosts.len().is_multiple_of(agents) {
        bail!(
            "{} hosts cannot be shared equally by {agents} agents",
            hosts.len()
        );
    }
    let per = hosts.len() / agents;
    let hosts: Vec<Vec<Series>> = hosts.into_values().collect();
    let mut chunks = hosts.into_iter();
    for a in 0..agents {
        let id = format!("drain-{a:03}");
        let series: Vec<Series> = chunks.by_ref().take(per).flatten().collect();
        let cfg = BufferConfig {
            dir: root.join(&id).join("buffer"),
            max_bytes: ByteSize(8 << 30),
            when_full: WhenFull::DropOldest,
            sync: false,
        };
        let buffer = Buffer::open(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
        let points = series.iter().map(|s| s.ts.len()).max().unwrap_or(0);
        let mut samples = 0u64;
        let labels: Vec<Labels> = series
            .iter()
            .map(|s| s.labels.with("agent", &id).with("region", "bench"))
            .collect();
        for i in 0..points {
            let mut b = Batch::default();
            let mut oldest = i64::MAX;
            for (s, l) in series.iter().zip(&labels) {
                if let (Some(&t), Some(&v)) = (s.ts.get(i), s.values.get(i)) {
                    b.push(l.clone(), t, v);
                    oldest = oldest.min(t);
                }
            }
            let n = b.sample_count() as u64;
            samples += n;
            let payload = Encoder::new().encode(&b);
            buffer
                .append(i as u64 + 1, &payload, n, oldest)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        buffer.flush().map_err(|e| anyhow::anyhow!("{e}"))?;
        let st = buffer.stats();
        drop(buffer);
        let disk = du(&cfg.dir);
        // Table files only: what grows with the data. The rest of the folder (RocksDB's LOG
        // and OPTIONS files, about 65 KB) is the same for an hour or a week.
        let tables: u64 = std::fs::read_dir(&cfg.dir)?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "sst"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        println!(
            "{}",
            json!({"id": id, "series": series.len(), "batches": st.batches, "samples": samples, "buffer_bytes": st.bytes,
                   "disk_bytes": disk, "bytes_per_sample": (st.bytes as f64 / samples.max(1) as f64 * 1000.0).round() / 1000.0,
                   "disk_bytes_per_sample": (disk as f64 / samples.max(1) as f64 * 1000.0).round() / 1000.0,
                   "table_bytes": tables,
                   "table_bytes_per_sample": (tables as f64 / samples.max(1) as f64 * 1000.0).round() / 1000.0})
        );
    }
    Ok(())
}
