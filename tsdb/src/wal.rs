//! Records of the `wal` column family: one per committed batch, holding its points as
//! (series id, point) pairs, replayed into the head at open and deleted by compaction once
//! their points are in chunks.

use crate::SeriesId;
use crate::encoding::{get_varint, put_varint};
use outpost_shared::Point;

/// A wal record: count, then per point series id (varint), ts (zigzag varint delta from the
/// previous point), value (8 bytes LE).
pub(crate) fn encode_record(points: &[(SeriesId, Point)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + points.len() * 12);
    put_varint(&mut out, points.len() as u64);
    let mut prev = 0i64;
    for (id, p) in points {
        put_varint(&mut out, *id);
        let d = p.ts.wrapping_sub(prev);
        put_varint(&mut out, ((d << 1) ^ (d >> 63)) as u64);
        prev = p.ts;
        out.extend_from_slice(&p.value.to_bits().to_le_bytes());
    }
    out
}

pub(crate) fn decode_record(b: &[u8]) -> Option<Vec<(SeriesId, Point)>> {
    let mut pos = 0;
    let n = get_varint(b, &mut pos)?;
    if n > b.len() as u64 {
        return None;
    }
    let mut out = Vec::with_capacity(n as usize);
    let mut prev = 0i64;
    for _ in 0..n {
        let id = get_varint(b, &mut pos)?;
        let z = get_varint(b, &mut pos)?;
        let ts = prev.wrapping_add(((z >> 1) as i64) ^ -((z & 1) as i64));
        prev = ts;
        let v = f64::from_bits(u64::from_le_bytes(b.get(pos..pos + 8)?.try_into().ok()?));
        pos += 8;
        out.push((id, Point { ts, value: v }));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_records_round_trip() {
        let pts = vec![
            (
                3,
                Point {
                    ts: -5,
                    value: f64::NAN,
                },
            ),
            (
                1,
                Point {
                    ts: i64::MAX,
                    value: -0.0,
                },
            ),
        ];
        let got = decode_record(&encode_record(&pts)).unwrap();
        assert_eq!(got, pts);
        assert!(decode_record(&[5, 1]).is_none());
    }
}
