//! Compaction: the head becomes chunks (one per series and time partition), and the wal
//! records it came from are deleted, in one atomic write with the partitions' statistics.
//! Until that write lands, the frozen head is still read, and a failed write puts its points
//! back.

use crate::chunk_codec::encode_chunk;
use crate::db::{CF_PARTS, CF_WAL, KEY_WAL_NEXT, Storage, StorageError};
use crate::maintain::PartitionStats;
use crate::partition::{self, RAW};
use rocksdb::WriteBatch;
use std::collections::BTreeMap;
use std::sync::Arc;

impl Storage {
    /// Moves the head into chunks and drops the wal records it came from. Returns the number
    /// of points compacted.
    ///
    /// # Errors
    /// The write failed; the points stay in the head and the wal, to be compacted later.
    pub fn compact_head(&self) -> Result<usize, StorageError> {
        let _maint = self.maint.lock().unwrap_or_else(|p| p.into_inner());
        let (frozen, upto) = {
            let mut h = self.head.write().unwrap_or_else(|p| p.into_inner());
            if h.active.is_empty() || h.frozen.is_some() {
                return Ok(0);
            }
            let f = Arc::new(std::mem::take(&mut h.active));
            h.active_points = 0;
            h.frozen = Some(f.clone());
            (f, h.last_wal)
        };
        let cf_parts = self.cf(CF_PARTS)?;
        let cf_wal = self.cf(CF_WAL)?;
        let mut wb = WriteBatch::default();
        let mut n = 0;
        let mut added: BTreeMap<i32, PartitionStats> = BTreeMap::new();
        // Points committed before their day was deleted (or replayed from the wal after)
        // go as later ones would.
        let floor = self.accepts_from_ms().unwrap_or(i64::MIN);
        let mut too_old = 0;
        for (sid, pts) in frozen.iter() {
            let mut pts = pts.clone();
            // Newest write wins for a repeated timestamp: reverse, stable sort, keep first.
            pts.reverse();
            pts.sort_by_key(|p| p.ts);
            pts.dedup_by_key(|p| p.ts);
            let old = pts.partition_point(|p| p.ts < floor);
            if old > 0 {
                too_old += old as u64;
                pts.drain(..old);
            }
            n += pts.len();
            for run in
                pts.chunk_by(|a, b| partition::partition_of(a.ts) == partition::partition_of(b.ts))
            {
                let (first, last) = (run[0].ts, run[run.len() - 1].ts);
                wb.put_cf(
                    &cf_parts,
                    partition::chunk_key(RAW, *sid, first, last, upto),
                    encode_chunk(run),
                );
                let st = added.entry(partition::partition_of(first)).or_default();
                st.samples += run.len() as u64;
                st.chunks += 1;
            }
        }
        for (&p, add) in &added {
            let mut st = self.partition_stats(RAW, p)?;
            st.samples += add.samples;
            st.chunks += add.chunks;
            st.writes += 1;
            wb.put(PartitionStats::key(RAW, p), st.to_bytes());
        }
        wb.delete_range_cf(&cf_wal, 0u64.to_be_bytes(), (upto + 1).to_be_bytes());
        wb.put(KEY_WAL_NEXT, (upto + 1).to_le_bytes());
        let r = self.db.write(wb);
        let mut h = self.head.write().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = r {
            // Put the points back in front of what arrived meanwhile; the wal still has them.
            if let Some(f) = h.frozen.take() {
                let f = Arc::try_unwrap(f).unwrap_or_else(|a| (*a).clone());
                for (sid, mut pts) in f {
                    h.active_points += pts.len();
                    let e = h.active.entry(sid).or_default();
                    pts.append(e);
                    *e = pts;
                }
            }
            return Err(self.err(e));
        }
        // Readers holding an older chunk cursor must make a new one before they miss what
        // leaves the head now.
        self.parts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(added.keys());
        self.chunk_generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        h.frozen = None;
        if too_old > 0 {
            self.count_too_old(too_old);
            tracing::warn!(
                points = too_old,
                "points older than the oldest time kept left the head without being stored"
            );
        }
        Ok(n)
    }
}
