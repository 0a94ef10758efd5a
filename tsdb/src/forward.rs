//! The forward log: while forwarding is on ([`Storage::set_forwarding`]), every committed wal
//! record is also written, in the same atomic write, to the `forward` column family under
//! its wal record id (ascending, never reused) and stamped with its commit time. Forwarders
//! read it from their own durable cursor ([`Storage::forward_read`]), so whatever the store
//! takes (agents' batches, remote_write, rule output, late and backfilled points) is
//! forwarded in commit order, and a cursor kept by the caller survives restarts. Records are
//! deleted by range once every destination is past them ([`Storage::forward_trim`]).
//!
//! Value layout: commit time (ms since the Unix epoch, i64 LE), then the wal record
//! (see [`crate::wal`]).

use crate::db::{CF_FORWARD, Storage, StorageError};
use crate::wal;
use outpost_shared::{Labels, Point};
use rocksdb::{Direction, IteratorMode, WriteBatch};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The commit time stamped on forward records: the wall clock, ms.
pub(crate) fn stamp_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One committed batch, as forwarders read it.
#[derive(Clone, Debug)]
pub struct ForwardRecord {
    /// Its id: ascending in commit order; a cursor is the last id sent.
    pub id: u64,
    /// When it was committed, ms since the Unix epoch.
    pub committed_ms: i64,
    /// Its points with their series' labels, in the batch's order.
    pub points: Vec<(Arc<Labels>, Point)>,
}

impl Storage {
    /// Turns writing the forward log on or off for the commits that follow. Off does not
    /// delete what is there.
    pub fn set_forwarding(&self, on: bool) {
        self.forwarding.store(on, Ordering::Relaxed);
    }

    /// Whether commits write the forward log (see [`Storage::set_forwarding`]).
    pub fn forwarding(&self) -> bool {
        self.forwarding.load(Ordering::Relaxed)
    }

    /// Records after `after` (exclusive), in id order, until about `max_points` points (at
    /// least one record when there is one).
    ///
    /// # Errors
    /// RocksDB fails to read, or a record does not decode.
    pub fn forward_read(
        &self,
        after: u64,
        max_points: usize,
    ) -> Result<Vec<ForwardRecord>, StorageError> {
        let cf = self.cf(CF_FORWARD)?;
        let from = after.saturating_add(1).to_be_bytes();
        let mut out = vec![];
        let mut n = 0;
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(&from, Direction::Forward))
        {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let id = u64::from_be_bytes(
                k[..]
                    .try_into()
                    .map_err(|_| self.damaged("forward key".into()))?,
            );
            if v.len() < 8 {
                return Err(self.damaged(format!("forward record {id}")));
            }
            let committed_ms = i64::from_le_bytes(v[..8].try_into().unwrap_or_default());
            let pts = wal::decode_record(&v[8..])
                .ok_or_else(|| self.damaged(format!("forward record {id}")))?;
            n += pts.len();
            out.push(ForwardRecord {
                id,
                committed_ms,
                points: pts
                    .into_iter()
                    .filter_map(|(sid, p)| Some((index.labels.get(&sid)?.clone(), p)))
                    .collect(),
            });
            if n >= max_points {
                break;
            }
        }
        Ok(out)
    }

    /// Deletes every record up to and including `upto` (a range delete; the space returns
    /// with RocksDB's compaction).
    ///
    /// # Errors
    /// The write failed.
    pub fn forward_trim(&self, upto: u64) -> Result<(), StorageError> {
        let cf = self.cf(CF_FORWARD)?;
        let mut wb = WriteBatch::default();
        wb.delete_range_cf(cf, 0u64.to_be_bytes(), upto.saturating_add(1).to_be_bytes());
        self.db.write(wb).map_err(|e| self.err(e))
    }

    /// The first and last record ids held, if any.
    ///
    /// # Errors
    /// RocksDB fails to read.
    pub fn forward_bounds(&self) -> Result<Option<(u64, u64)>, StorageError> {
        let cf = self.cf(CF_FORWARD)?;
        let id = |item: Option<Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>>| -> Result<Option<u64>, StorageError> {
            match item {
                None => Ok(None),
                Some(r) => {
                    let (k, _) = r.map_err(|e| self.err(e))?;
                    Ok(k[..].try_into().ok().map(u64::from_be_bytes))
                }
            }
        };
        let first = id(self.db.iterator_cf(cf, IteratorMode::Start).next())?;
        let last = id(self.db.iterator_cf(cf, IteratorMode::End).next())?;
        Ok(first.zip(last))
    }

    /// The forward log's size on disk and in memtables, bytes (RocksDB's estimate).
    pub fn forward_bytes(&self) -> u64 {
        let Some(h) = self.db.cf_handle(CF_FORWARD) else {
            return 0;
        };
        [
            "rocksdb.estimate-live-data-size",
            "rocksdb.size-all-mem-tables",
        ]
        .iter()
        .filter_map(|p| self.db.property_int_value_cf(&h, *p).ok().flatten())
        .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{tmp_dir, write};

    /// Written only while on, in commit order, read from a cursor, kept across a reopen and
    /// a head compaction (which deletes the wal records), trimmed by range.
    #[test]
    fn the_forward_log_follows_commits_from_a_cursor() {
        let dir = tmp_dir("forward");
        let s = Storage::open(&dir).unwrap();
        write(&s, "before", 1);
        assert!(s.forward_bounds().unwrap().is_none());
        s.set_forwarding(true);
        for (i, n) in ["a", "b", "c"].iter().enumerate() {
            write(&s, n, 1000 * (i as i64 + 1));
        }
        s.compact_head().unwrap();
        drop(s);
        let s = Storage::open(&dir).unwrap();
        let all = s.forward_read(0, 100).unwrap();
        let names: Vec<String> = all
            .iter()
            .map(|r| {
                r.points[0]
                    .0
                    .get("__name__")
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(all.windows(2).all(|w| w[0].id < w[1].id));
        assert!(all[0].committed_ms > 1_700_000_000_000);
        // From a cursor, and at least one record however small the limit.
        let next = s.forward_read(all[0].id, 1).unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].id, all[1].id);
        s.forward_trim(all[1].id).unwrap();
        assert_eq!(s.forward_bounds().unwrap(), Some((all[2].id, all[2].id)));
        // Ids keep growing after the reopen.
        s.set_forwarding(true);
        write(&s, "d", 4000);
        let last = s.forward_read(all[2].id, 10).unwrap();
        assert_eq!(last.len(), 1);
        assert!(last[0].id > all[2].id);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Points older than the store keeps are dropped from its wal and head but forwarded:
    /// the destination keeps what its own retention allows.
    #[test]
    fn points_too_old_for_the_store_are_still_forwarded() {
        let dir = tmp_dir("forward-old");
        let s = Storage::open(&dir).unwrap();
        write(&s, "old", 1000);
        s.compact_head().unwrap();
        s.delete_partition(
            crate::partition::RAW,
            0,
            crate::DeleteReason::Retention,
            false,
        )
        .unwrap();
        s.set_forwarding(true);
        crate::testutil::write_points(&s, "old", &[(2000, 1.0), (86_400_000, 2.0)]);
        assert_eq!(s.samples_too_old(), 1);
        assert_eq!(s.head_points(), 1);
        let sent: Vec<i64> = s
            .forward_read(0, 10)
            .unwrap()
            .iter()
            .flat_map(|r| r.points.iter().map(|(_, p)| p.ts))
            .collect();
        assert_eq!(sent, [2000, 86_400_000]);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
