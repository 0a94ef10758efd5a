//! How a chunk's points are coded: byte-aligned columns that RocksDB's zstd then
//! compresses well, as VictoriaMetrics codes its blocks (decimal mantissas, deltas of
//! deltas, zstd), rather than the bit-packed wire coding, which zstd cannot shrink.
//!
//! Format (version 1), all varints LEB128, signed ones zigzag:
//! - `0x00` (a chunk of the older format starts with its non-zero point count);
//! - point count `n` (varint);
//! - timestamps: the first (signed), then the first delta (signed), then `n - 2` deltas of
//!   deltas (signed): a steady scrape interval with jitter costs one byte a point;
//! - values: a tag byte, then
//!   - `0x00 | e`: every value is `m / 10^e` exactly (`e` ≤ 15) for an integer `m`; then the
//!     mantissas: the first (signed), then deltas (signed) when the tag has bit 4 (`0x10`),
//!     else the first delta and then deltas of deltas (counters at a steady rate);
//!   - `0x20 | e` (with bit 4 as above): the same, when every mantissa is `r + g·k` for a
//!     common step `g` ≥ 2 (memory and disk sizes move in whole 4 KiB pages): `g` and `r`
//!     (varints, `0 ≤ r < g`), then the `k`s coded as the mantissas above;
//!   - `0x80`: the values' IEEE 754 bits, each XORed with the previous value's, as
//!     varints (gauges without a short decimal form, NaN, infinities, stale markers).
//!
//! Chunks of the older format (the wire coding, [`encode_points`]) still decode.

use outpost_shared::Point;
use outpost_shared::codec::{DecodeError, decode_points, decode_points_between};

const V1: u8 = 0x00;
const TAG_XOR: u8 = 0x80;
const TAG_DELTA: u8 = 0x10;
const TAG_STEP: u8 = 0x20;
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];
/// Mantissas stay within the integers an f64 holds exactly.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_ivarint(out: &mut Vec<u8>, n: i64) {
    put_uvarint(out, ((n << 1) ^ (n >> 63)) as u64);
}

/// The LEB128 varint at `pos`, which it advances past it.
#[inline]
pub(crate) fn uvarint(v: &[u8], pos: &mut usize) -> Result<u64, DecodeError> {
    // Most deltas of deltas fit in one byte.
    if let Some(&b) = v.get(*pos)
        && b < 0x80
    {
        *pos += 1;
        return Ok(u64::from(b));
    }
    // Up to eight bytes at once, without a loop, when eight are there to load.
    if let Some(w) = v.get(*pos..*pos + 8) {
        let w = u64::from_le_bytes(w.try_into().unwrap_or_default());
        let ends = !w & 0x8080_8080_8080_8080;
        if ends != 0 {
            let bits = ends.trailing_zeros() + 1;
            *pos += bits as usize / 8;
            let x = if bits == 64 {
                w
            } else {
                w & ((1u64 << bits) - 1)
            };
            return Ok(gather7(x));
        }
    }
    uvarint_long(v, pos)
}

/// The low seven bits of each of `x`'s eight bytes, packed together (byte 0 lowest).
#[inline]
fn gather7(x: u64) -> u64 {
    (x & 0x7f)
        | ((x >> 1) & 0x3f80)
        | ((x >> 2) & 0x1f_c000)
        | ((x >> 3) & 0xfe0_0000)
        | ((x >> 4) & 0x7_f000_0000)
        | ((x >> 5) & 0x3f8_0000_0000)
        | ((x >> 6) & 0x1_fc00_0000_0000)
        | ((x >> 7) & 0xfe_0000_0000_0000)
}

/// [`uvarint`] byte by byte: near the end of `v`, or longer than eight bytes, or
/// truncated.
fn uvarint_long(v: &[u8], pos: &mut usize) -> Result<u64, DecodeError> {
    let (mut n, mut shift) = (0u64, 0u32);
    loop {
        let b = *v.get(*pos).ok_or(DecodeError::Truncated)?;
        *pos += 1;
        n |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(n);
        }
        shift += 7;
        if shift >= 64 {
            return Err(DecodeError::Truncated);
        }
    }
}

#[inline]
fn ivarint(v: &[u8], pos: &mut usize) -> Result<i64, DecodeError> {
    let u = uvarint(v, pos)?;
    Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
}

/// The mantissas of `values` at the smallest exponent that gives every value back exactly.
fn decimal(values: &[f64]) -> Option<(u8, Vec<i64>)> {
    'e: for (e, p) in POW10.iter().enumerate() {
        let mut m = Vec::with_capacity(values.len());
        for &v in values {
            // -0.0 would come back as 0.0: its sign is kept by the bits' coding.
            if v == 0.0 && v.is_sign_negative() {
                return None;
            }
            let x = (v * p).round();
            if !x.is_finite() || x.abs() > MAX_EXACT || (x / p).to_bits() != v.to_bits() {
                continue 'e;
            }
            m.push(x as i64);
        }
        return Some((e as u8, m));
    }
    None
}

/// Writes `xs` as the first, then deltas (`order` 1) or the first delta and deltas of
/// deltas (`order` 2).
pub(crate) fn put_series(out: &mut Vec<u8>, xs: &[i64], order: u8) {
    let mut prev = 0i64;
    let mut prev_delta = 0i64;
    for (i, &x) in xs.iter().enumerate() {
        let d = x.wrapping_sub(prev);
        match (i, order) {
            (0, _) => put_ivarint(out, x),
            (1, _) | (_, 1) => put_ivarint(out, d),
            _ => put_ivarint(out, d.wrapping_sub(prev_delta)),
        }
        prev_delta = d;
        prev = x;
    }
}

/// Reads `n` integers written by [`put_series`] with the same `order`.
pub(crate) fn read_series(
    v: &[u8],
    pos: &mut usize,
    n: usize,
    order: u8,
) -> Result<Vec<i64>, DecodeError> {
    let mut out = Vec::with_capacity(n);
    read_series_each(v, pos, n, order, |x| out.push(x))?;
    Ok(out)
}

/// [`read_series`], handing each integer to `f` in order instead of collecting them.
fn read_series_each(
    v: &[u8],
    pos: &mut usize,
    n: usize,
    order: u8,
    mut f: impl FnMut(i64),
) -> Result<(), DecodeError> {
    let (mut prev, mut delta) = (0i64, 0i64);
    for i in 0..n {
        let x = ivarint(v, pos)?;
        let cur = match (i, order) {
            (0, _) => x,
            (1, _) | (_, 1) => {
                delta = x;
                prev.wrapping_add(x)
            }
            _ => {
                delta = delta.wrapping_add(x);
                prev.wrapping_add(delta)
            }
        };
        f(cur);
        prev = cur;
    }
    Ok(())
}

/// Codes a chunk's points (sorted by time, one per timestamp, not empty).
pub(crate) fn encode_chunk(points: &[Point]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + points.len() * 3);
    out.push(V1);
    put_uvarint(&mut out, points.len() as u64);
    let ts: Vec<i64> = points.iter().map(|p| p.ts).collect();
    put_series(&mut out, &ts, 2);
    let values: Vec<f64> = points.iter().map(|p| p.value).collect();
    put_values(&mut out, &values);
    out
}

/// Writes a column of values: a tag byte, then decimal mantissas (deltas or deltas of
/// deltas, whichever is shorter) or XORed bits (see the module docs).
pub(crate) fn put_values(out: &mut Vec<u8>, values: &[f64]) {
    match decimal(values) {
        Some((e, m)) => {
            let plain = mantissas(e, &[], &m);
            // A common step of the mantissas' changes: code how many steps each is, if
            // that is shorter (it is not for a column of two or three values).
            let g = common_step(&m);
            if g >= 2 {
                let r = m[0].rem_euclid(g as i64);
                let k: Vec<i64> = m.iter().map(|x| (x - r) / g as i64).collect();
                let mut head = vec![];
                put_uvarint(&mut head, g);
                put_uvarint(&mut head, r as u64);
                let stepped = mantissas(e | TAG_STEP, &head, &k);
                if stepped.len() < plain.len() {
                    out.extend_from_slice(&stepped);
                    return;
                }
            }
            out.extend_from_slice(&plain);
        }
        None => {
            out.push(TAG_XOR);
            let mut prev = 0u64;
            for &v in values {
                let b = v.to_bits();
                put_uvarint(out, (b ^ prev).swap_bytes());
                prev = b;
            }
        }
    }
}

/// A decimal column: `tag` (its exponent and flags), `head`, then `m` as deltas (with
/// [`TAG_DELTA`]) or deltas of deltas, whichever is shorter.
fn mantissas(tag: u8, head: &[u8], m: &[i64]) -> Vec<u8> {
    let mut first = Vec::with_capacity(1 + head.len() + m.len() * 2);
    first.push(tag);
    first.extend_from_slice(head);
    let mut second = first.clone();
    second[0] |= TAG_DELTA;
    put_series(&mut first, m, 2);
    put_series(&mut second, m, 1);
    if second.len() < first.len() {
        second
    } else {
        first
    }
}

/// The greatest common divisor of the changes between consecutive mantissas (0 when they
/// never change).
fn common_step(m: &[i64]) -> u64 {
    let mut g = 0u64;
    for w in m.windows(2) {
        // Mantissas are within ±2^53, so their difference fits.
        g = gcd(g, (w[1] - w[0]).unsigned_abs());
        if g == 1 {
            break;
        }
    }
    g
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Reads `n` values written by [`put_values`] at `pos`.
///
/// # Errors
/// The column is truncated or its tag unknown.
pub(crate) fn read_values(v: &[u8], pos: &mut usize, n: usize) -> Result<Vec<f64>, DecodeError> {
    let mut out = Vec::with_capacity(n);
    read_values_each(v, pos, n, |x| out.push(x))?;
    Ok(out)
}

/// [`read_values`], handing each value to `f` in order instead of collecting them.
fn read_values_each(
    v: &[u8],
    pos: &mut usize,
    n: usize,
    mut f: impl FnMut(f64),
) -> Result<(), DecodeError> {
    let tag = *v.get(*pos).ok_or(DecodeError::Truncated)?;
    *pos += 1;
    if tag == TAG_XOR {
        let mut prev = 0u64;
        for _ in 0..n {
            let b = uvarint(v, pos)?.swap_bytes() ^ prev;
            f(f64::from_bits(b));
            prev = b;
        }
        return Ok(());
    }
    let e = usize::from(tag & 0x0f);
    if tag & !(0x0f | TAG_DELTA | TAG_STEP) != 0 {
        return Err(DecodeError::Invalid("value column tag"));
    }
    let order = if tag & TAG_DELTA != 0 { 1 } else { 2 };
    if tag & TAG_STEP != 0 {
        let g = uvarint(v, pos)?;
        let r = uvarint(v, pos)?;
        if g < 2 || r >= g || g > MAX_EXACT as u64 {
            return Err(DecodeError::Invalid("value column step"));
        }
        let (g, r) = (g as i64, r as i64);
        let m = |k: i64| r.wrapping_add(g.wrapping_mul(k)) as f64;
        if e == 0 {
            return read_series_each(v, pos, n, order, |k| f(m(k)));
        }
        let p = POW10[e];
        return read_series_each(v, pos, n, order, |k| f(m(k) / p));
    }
    if e == 0 {
        // Whole numbers: dividing by one changes nothing, and a division costs.
        return read_series_each(v, pos, n, order, |m| f(m as f64));
    }
    let p = POW10[e];
    read_series_each(v, pos, n, order, |m| f(m as f64 / p))
}

/// Appends a chunk's points with `start_ms <= ts <= end_ms` to `out`: the timestamps
/// decoded into a per-thread buffer first, then each point inside the window written out
/// once, with its value.
///
/// # Errors
/// The chunk is truncated or malformed; `out` is then as it was.
pub(crate) fn decode_chunk_between(
    v: &[u8],
    start_ms: i64,
    end_ms: i64,
    out: &mut Vec<Point>,
) -> Result<(), DecodeError> {
    decode_chunk_in(v, start_ms, end_ms, true, out)
}

/// [`decode_chunk_between`] for a reader that only asks where points are and which are
/// stale markers: a column of decimal mantissas, which holds no NaN and so no stale
/// marker, is not read and its points get the value 0.0; a column of IEEE bits is read.
/// A chunk whose values are skipped is checked no further than its timestamps.
///
/// # Errors
/// The chunk is truncated or malformed; `out` is then as it was.
pub(crate) fn decode_chunk_timestamps(
    v: &[u8],
    start_ms: i64,
    end_ms: i64,
    out: &mut Vec<Point>,
) -> Result<(), DecodeError> {
    decode_chunk_in(v, start_ms, end_ms, false, out)
}

/// [`decode_chunk_between`], or with `values` false [`decode_chunk_timestamps`].
fn decode_chunk_in(
    v: &[u8],
    start_ms: i64,
    end_ms: i64,
    values: bool,
    out: &mut Vec<Point>,
) -> Result<(), DecodeError> {
    if v.first() != Some(&V1) {
        return decode_points_between(v, start_ms, end_ms, out);
    }
    let mut pos = 1;
    let n = uvarint(v, &mut pos)? as usize;
    // Every point takes at least a byte.
    if n > v.len() {
        return Err(DecodeError::Truncated);
    }
    let base = out.len();
    out.reserve(n);
    let inside = |ts: i64| ts >= start_ms && ts <= end_ms;
    // The timestamps into a buffer that stays in cache, then each point written out once,
    // with its value, if inside the window.
    let decoded = TIMES.with_borrow_mut(|times| {
        times.clear();
        times.reserve(n);
        read_series_each(v, &mut pos, n, 2, |ts| times.push(ts))?;
        let tag = *v.get(pos).ok_or(DecodeError::Truncated)?;
        if !values && tag != TAG_XOR {
            let kept = times.iter().filter(|&&ts| inside(ts));
            out.extend(kept.map(|&ts| Point { ts, value: 0.0 }));
            return Ok(());
        }
        let mut k = 0;
        read_values_each(v, &mut pos, n, |value| {
            if let Some(&ts) = times.get(k)
                && inside(ts)
            {
                out.push(Point { ts, value });
            }
            k += 1;
        })?;
        if pos != v.len() {
            return Err(DecodeError::Truncated);
        }
        Ok(())
    });
    if let Err(e) = decoded {
        out.truncate(base);
        return Err(e);
    }
    Ok(())
}

thread_local! {
    /// A chunk's timestamps while its values are read: one buffer a thread, reused.
    static TIMES: std::cell::RefCell<Vec<i64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Appends all of a chunk's points to `out`.
///
/// # Errors
/// The chunk is truncated or malformed.
pub(crate) fn decode_chunk(v: &[u8], out: &mut Vec<Point>) -> Result<(), DecodeError> {
    if v.first() != Some(&V1) {
        return decode_points(v, out);
    }
    decode_chunk_between(v, i64::MIN, i64::MAX, out)
}

/// How many points a chunk holds, read from its head.
pub(crate) fn chunk_len(v: &[u8]) -> Option<u64> {
    let mut pos = usize::from(v.first() == Some(&V1));
    uvarint(v, &mut pos).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_shared::codec::encode_points;

    fn values_of(points: &[Point]) -> Vec<f64> {
        points.iter().map(|p| p.value).collect()
    }

    fn round_trip(points: &[Point]) -> usize {
        let enc = encode_chunk(points);
        let mut back = vec![];
        decode_chunk(&enc, &mut back).unwrap();
        assert_eq!(back.len(), points.len());
        for (a, b) in back.iter().zip(points) {
            assert_eq!(a.ts, b.ts);
            assert_eq!(a.value.to_bits(), b.value.to_bits());
        }
        assert_eq!(chunk_len(&enc), Some(points.len() as u64));
        assert!(decode_chunk(&enc[..enc.len() - 1], &mut vec![]).is_err());
        // Appended after what `out` holds, clipped to the window; a damaged chunk leaves
        // `out` as it was.
        let before = Point { ts: 1, value: 2.0 };
        let (lo, hi) = (points[0].ts + 1, points[points.len() - 1].ts - 1);
        let mut some = vec![before];
        decode_chunk_between(&enc, lo, hi, &mut some).unwrap();
        let want: Vec<(i64, u64)> = std::iter::once(&before)
            .chain(points.iter().filter(|p| p.ts >= lo && p.ts <= hi))
            .map(|p| (p.ts, p.value.to_bits()))
            .collect();
        let got: Vec<(i64, u64)> = some.iter().map(|p| (p.ts, p.value.to_bits())).collect();
        assert_eq!(got, want);
        let mut kept = vec![before];
        assert!(decode_chunk_between(&enc[..enc.len() - 1], lo, hi, &mut kept).is_err());
        assert_eq!(kept.len(), 1);
        // Without values: the same times; the values of a column of IEEE bits still read
        // (they may be stale markers), a decimal column's left at zero.
        let mut times = vec![];
        decode_chunk_timestamps(&enc, lo, hi, &mut times).unwrap();
        let xor = decimal(&values_of(points)).is_none();
        let want: Vec<(i64, u64)> = points
            .iter()
            .filter(|p| p.ts >= lo && p.ts <= hi)
            .map(|p| (p.ts, if xor { p.value.to_bits() } else { 0 }))
            .collect();
        let got: Vec<(i64, u64)> = times.iter().map(|p| (p.ts, p.value.to_bits())).collect();
        assert_eq!(got, want);
        enc.len()
    }

    /// Varints of every length read the same eight bytes at a time as byte by byte, at the
    /// end of a slice too, and a truncated one is refused either way.
    #[test]
    fn varints_of_every_length_read_as_written() {
        let mut values = vec![0u64, 1, 0x7f, 0x80, u64::MAX, u64::MAX >> 1];
        for bits in 1..64 {
            values.extend([(1u64 << bits) - 1, 1u64 << bits, (1u64 << bits) | 0x55]);
        }
        for &x in &values {
            let mut one = vec![];
            put_uvarint(&mut one, x);
            for tail in [0usize, 3, 9] {
                let mut v = one.clone();
                v.extend(std::iter::repeat_n(0xffu8, tail));
                let (mut fast, mut slow) = (0, 0);
                assert_eq!(uvarint(&v, &mut fast), Ok(x), "{x:#x} then {tail} bytes");
                assert_eq!(uvarint_long(&v, &mut slow), Ok(x));
                assert_eq!((fast, slow), (one.len(), one.len()));
            }
            let cut = &one[..one.len() - 1];
            assert!(uvarint(cut, &mut 0).is_err());
        }
        // Many after one another, as a column is laid out.
        let mut v = vec![];
        for &x in &values {
            put_uvarint(&mut v, x);
        }
        let mut pos = 0;
        for &x in &values {
            assert_eq!(uvarint(&v, &mut pos), Ok(x));
        }
        assert_eq!(pos, v.len());
    }

    #[test]
    fn every_kind_of_value_round_trips_and_steady_series_are_small() {
        let at = |i: i64| 1_700_000_000_000 + i * 10_000 + (i * 7919) % 3;
        let counter: Vec<Point> = (0..1000)
            .map(|i| Point {
                ts: at(i),
                value: (i * 1234 + (i * 31) % 17) as f64 / 100.0,
            })
            .collect();
        let n = round_trip(&counter);
        assert!(n < 1000 * 3, "{n} bytes");
        let gauge: Vec<Point> = (0..1000)
            .map(|i| Point {
                ts: at(i),
                value: ((i * 2654435761) % 1000) as f64 / 7.0,
            })
            .collect();
        round_trip(&gauge);
        let odd = [
            f64::NAN,
            f64::INFINITY,
            -0.0,
            f64::from_bits(outpost_shared::model::STALE_NAN),
            1e300,
            -5.5,
        ];
        // Values at the test's timestamps, one each.
        let at_each = |values: &[f64]| -> Vec<Point> {
            values
                .iter()
                .enumerate()
                .map(|(i, &value)| Point {
                    ts: at(i as i64),
                    value,
                })
                .collect()
        };
        round_trip(&at_each(&odd));
        round_trip(&counter[..1]);
        round_trip(&counter[..2]);
        // Sizes in whole pages (memory, file systems): the changes' common step is coded
        // once, each point a count of steps: a byte instead of three.
        let mut level = 22_678_417_408 + 1_000;
        let pages: Vec<Point> = (0..1000)
            .map(|i| {
                level +=
                    (((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 57) as i64 - 63) * 4096;
                Point {
                    ts: at(i),
                    value: level as f64,
                }
            })
            .collect();
        let n = round_trip(&pages);
        let m: Vec<i64> = pages.iter().map(|p| p.value as i64).collect();
        let plain = [1, 2]
            .map(|order| {
                let mut v = vec![];
                put_series(&mut v, &m, order);
                v.len()
            })
            .into_iter()
            .min()
            .unwrap_or_default();
        assert!(
            n < 1000 + plain / 2,
            "{n} bytes, {plain} for the values without the step"
        );
        // Negative, fractional and a step of a decimal's mantissa.
        let fractional: Vec<Point> = (0..300)
            .map(|i| Point {
                ts: at(i),
                value: (-7 + ((i * 7919) % 31 - 15) * 25) as f64 / 100.0,
            })
            .collect();
        round_trip(&fractional);
        assert_eq!(common_step(&[5, 5, 5]), 0);
        // Two values: the step would cost more than it saves.
        round_trip(&pages[..2]);
        // Negative zero among numbers keeps its sign; near 2^53 the steps still add up.
        round_trip(&at_each(&[-0.0, 1.0, 0.0, -0.0]));
        let big: Vec<Point> = (0..50)
            .map(|i| Point {
                ts: at(i),
                value: (9_007_199_254_740_000 - (i % 7) * 128) as f64,
            })
            .collect();
        round_trip(&big);
        assert_eq!(common_step(&[-4096 * 3 + 7, 7, 4096 * 5 + 7]), 4096);
        // Chunks of the older coding still decode.
        let old = encode_points(&gauge);
        let mut back = vec![];
        decode_chunk(&old, &mut back).unwrap();
        assert_eq!(back.len(), 1000);
        assert_eq!(chunk_len(&old), Some(1000));
    }
}
