//! Small encodings of the store's keys and values: sortable timestamps, label sets, varints.

use outpost_shared::{Label, Labels};

/// A timestamp as 8 bytes that sort like the signed number (sign bit flipped, big endian).
pub(crate) fn sortable(ts: i64) -> [u8; 8] {
    ((ts as u64) ^ (1 << 63)).to_be_bytes()
}

/// The inverse of [`sortable`].
pub(crate) fn unsortable(b: &[u8]) -> i64 {
    (u64::from_be_bytes(b.try_into().unwrap_or_default()) ^ (1 << 63)) as i64
}

/// A label set as stored in the `series` column family: postcard list of (name, value).
pub(crate) fn labels_to_bytes(l: &Labels) -> Vec<u8> {
    let pairs: Vec<(&str, &str)> = l
        .iter()
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .collect();
    postcard::to_allocvec(&pairs).unwrap_or_default()
}

pub(crate) fn labels_from_bytes(b: &[u8]) -> Option<Labels> {
    let pairs: Vec<(String, String)> = postcard::from_bytes(b).ok()?;
    Labels::from_sorted(
        pairs
            .into_iter()
            .map(|(name, value)| Label { name, value })
            .collect(),
    )
}

/// LEB128 unsigned varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn get_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}
