//! The batch codec: a compact, columnar encoding of time series points.
//!
//! An [`Encoder`] and a [`Decoder`] each hold a context: the strings and series defined so
//! far and, per series, the last timestamp, timestamp delta and value. A batch carries only
//! the strings and series its context has not seen yet, then one bit stream with, per point,
//! a timestamp code (same as the previous point, or a delta-of-delta against the series) and
//! a value code (unchanged, a decimal delta, or the XOR of float bits as in Gorilla).
//! `docs/WIRE.md` describes the layout bit by bit.
//!
//! A fresh encoder makes self-contained batches (the agent's buffer stores these). On a QUIC
//! stream, one encoder and one decoder live as long as the stream, so series are named once
//! per connection and values cost a few bits; both sides must see the same batches in the same
//! order, which an ordered stream gives. After a decode error a decoder's context is no longer
//! in step with its encoder: it refuses further input and the stream must be closed.

use crate::bits::{BitReader, BitWriter, OutOfBits, unzigzag, zigzag};
use crate::model::{Batch, Label, Labels, Point, SeriesPoints};
use rustc_hash::FxHashMap;

/// The first byte of every encoded batch.
pub const FORMAT_V1: u8 = 1;
const FLAG_SINGLE_POINT: u8 = 1;
/// Every entry after the first is the series after the previous entry's: no series codes.
const FLAG_IN_ORDER: u8 = 2;
/// Every point after the first has the first's timestamp: no more timestamp codes. Only
/// with [`FLAG_SINGLE_POINT`].
const FLAG_ONE_TIMESTAMP: u8 = 4;
/// Decimal deltas may reuse the series' last explicit length (`100` + that many bits).
const FLAG_PREDICTED_LENGTHS: u8 = 8;
const KNOWN_FLAGS: u8 =
    FLAG_SINGLE_POINT | FLAG_IN_ORDER | FLAG_ONE_TIMESTAMP | FLAG_PREDICTED_LENGTHS;

/// The flags byte after the format byte; `Invalid("flags")` for bits this build does not
/// know and for a single timestamp without single points.
fn check_flags(flags: u8) -> Result<u8, DecodeError> {
    if flags & !KNOWN_FLAGS != 0
        || (flags & FLAG_ONE_TIMESTAMP != 0 && flags & FLAG_SINGLE_POINT == 0)
    {
        return Err(DecodeError::Invalid("flags"));
    }
    Ok(flags)
}
/// With predicted lengths, how many bits a decimal delta may waste in the series' last
/// length before it is written with a length of its own.
const PREDICTED_SLACK: u8 = 3;
const POW10: [f64; 8] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7];
const MAX_EXACT: f64 = 9_007_199_254_740_992.0; // 2^53

/// Why a batch payload cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload ends before the batch does.
    #[error("batch ends early (truncated or damaged)")]
    Truncated,
    /// A format byte this build does not know.
    #[error("unknown batch format {0} (this build reads format {FORMAT_V1})")]
    UnknownFormat(u8),
    /// A reference to a string or series the context has not defined.
    #[error("batch refers to {what} #{id}, but only {known} are defined")]
    BadReference {
        /// "string" or "series".
        what: &'static str,
        /// The number referred to.
        id: u64,
        /// How many are defined.
        known: usize,
    },
    /// A field with a value out of its range; names the field.
    #[error("batch has an invalid {0}")]
    Invalid(&'static str),
    /// An earlier batch failed to decode, so the shared context is unknown.
    #[error("decoder is out of step after an earlier error; the stream must be restarted")]
    Poisoned,
}

impl From<OutOfBits> for DecodeError {
    fn from(_: OutOfBits) -> Self {
        DecodeError::Truncated
    }
}

#[derive(Clone, Copy)]
struct SeriesState {
    ts: i64,
    delta: i64,
    bits: u64,
    /// The value as `m / 10^e` when it has an exact short decimal form.
    dec: Option<(u8, i64)>,
    /// The bit length of the last decimal delta written with its length (0 before any).
    len: u8,
}

impl SeriesState {
    const NEW: SeriesState = SeriesState {
        ts: 0,
        delta: 0,
        bits: 0,
        dec: Some((0, 0)),
        len: 0,
    };

    fn advance_ts(&mut self, ts: i64) {
        self.delta = ts.wrapping_sub(self.ts);
        self.ts = ts;
    }
}

/// `v` as `m / 10^e`, when that division gives back exactly the same bits.
#[inline]
fn dec_at(v: f64, e: u8) -> Option<i64> {
    let p = POW10[e as usize];
    let m = (v * p).round();
    if !m.is_finite() || m.abs() > MAX_EXACT {
        return None;
    }
    let mi = m as i64;
    ((mi as f64 / p).to_bits() == v.to_bits()).then_some(mi)
}

#[inline]
fn varbits_cost(v: u64) -> u32 {
    let len = 64 - v.leading_zeros();
    if len >= 63 {
        70
    } else {
        6 + len.saturating_sub(1)
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct ByteReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.data.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                if shift == 63 && b > 1 {
                    return Err(DecodeError::Invalid("varint"));
                }
                return Ok(v);
            }
        }
        Err(DecodeError::Invalid("varint"))
    }
    /// A count that cannot exceed the bytes left, each item taking at least `min_bytes`.
    fn count(&mut self, min_bytes: usize) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        let left = (self.data.len() - self.pos) / min_bytes.max(1);
        if n > left as u64 {
            return Err(DecodeError::Truncated);
        }
        Ok(n as usize)
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.data.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn rest(&self) -> &'a [u8] {
        &self.data[self.pos..]
    }
}

/// Encodes batches against a context that lives as long as the encoder.
#[derive(Default)]
pub struct Encoder {
    // FxHash (rustc-hash) rather than std's SipHash: interning every series of a
    // self-contained batch hashed each label string with SipHash, 11 % of a connected
    // agent's instructions under callgrind (its measured CPU fell by less). The keys are the agent's own series and what local programs push or
    // expose to it, not input from the network.
    strings: FxHashMap<String, u32>,
    series: FxHashMap<Labels, u32>,
    state: Vec<SeriesState>,
    last_ts: i64,
    /// Whether batches may use [`FLAG_IN_ORDER`], [`FLAG_ONE_TIMESTAMP`] and
    /// [`FLAG_PREDICTED_LENGTHS`].
    compact: bool,
}

impl Encoder {
    /// An encoder with an empty context (the first batch defines every string and series).
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets batches leave out the series code of entries that follow each other in the
    /// context's order and the timestamp codes of points that share one timestamp, and
    /// write decimal deltas in the series' last length (flags 2, 4 and 8, bits 1 to 3 in
    /// `docs/WIRE.md`). Only for a decoder that knows those flags: an aggregator of protocol
    /// [`crate::frame::COMPACT_VERSION`] or later. Off by default.
    pub fn set_compact(&mut self, on: bool) {
        self.compact = on;
    }

    /// Number of series this context has defined.
    pub fn series_count(&self) -> usize {
        self.state.len()
    }

    /// Encodes `batch` against the context, then adds its new strings and series to it.
    pub fn encode(&mut self, batch: &Batch) -> Vec<u8> {
        if self.state.is_empty() {
            // A fresh context defines every series of the batch: size the maps once
            // instead of growing them through every power of two.
            self.series.reserve(batch.series.len());
            self.strings.reserve(batch.series.len());
        }
        let mut new_strings: Vec<&str> = Vec::new();
        let mut new_series: Vec<&Labels> = Vec::new();
        let ids: Vec<u32> = batch
            .series
            .iter()
            .map(|s| self.intern(&s.labels, &mut new_strings, &mut new_series))
            .collect();
        let single = batch.series.iter().all(|s| s.points.len() == 1);
        let flags = self.flags(
            single,
            &ids,
            batch
                .series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.ts)),
        );
        self.write(
            &new_strings,
            &new_series,
            flags,
            batch.series.len(),
            batch
                .series
                .iter()
                .zip(&ids)
                .map(|(s, &id)| (id, s.points.iter().copied())),
        )
    }

    /// The context's id of `labels`; a series the context lacks is added, and it and its
    /// strings the context lacks are appended to `new_series` and `new_strings`.
    fn intern<'a>(
        &mut self,
        labels: &'a Labels,
        new_strings: &mut Vec<&'a str>,
        new_series: &mut Vec<&'a Labels>,
    ) -> u32 {
        if let Some(&id) = self.series.get(labels) {
            return id;
        }
        let id = self.state.len() as u32;
        self.series.insert(labels.clone(), id);
        self.state.push(SeriesState::NEW);
        for l in labels.iter() {
            for text in [&l.name, &l.value] {
                if !self.strings.contains_key(text.as_str()) {
                    self.strings.insert(text.clone(), self.strings.len() as u32);
                    new_strings.push(text);
                }
            }
        }
        new_series.push(labels);
        id
    }

    /// The flags of a batch of entries with series `ids` (in entry order) and points at
    /// `ts` (in order), every entry one point when `single`.
    fn flags(&self, single: bool, ids: &[u32], mut ts: impl Iterator<Item = i64>) -> u8 {
        let mut flags = if single { FLAG_SINGLE_POINT } else { 0 };
        if self.compact {
            if ids.windows(2).all(|w| w[1] == w[0].wrapping_add(1)) {
                flags |= FLAG_IN_ORDER;
            }
            if single && ts.next().is_some_and(|first| ts.all(|t| t == first)) {
                flags |= FLAG_ONE_TIMESTAMP;
            }
            flags |= FLAG_PREDICTED_LENGTHS;
        }
        flags
    }

    /// Writes one batch: the definitions of the new strings and series (already interned),
    /// then `n_entries` entries of (series id, points), as `flags` allow.
    fn write<P: ExactSizeIterator<Item = Point>>(
        &mut self,
        new_strings: &[&str],
        new_series: &[&Labels],
        flags: u8,
        n_entries: usize,
        entries: impl Iterator<Item = (u32, P)>,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + n_entries * 2);
        out.push(FORMAT_V1);
        out.push(flags);
        put_dictionary(&mut out, new_strings, new_series, |s| self.strings[s]);
        put_varint(&mut out, n_entries as u64);
        self.write_entries(out, flags, entries)
    }

    /// Appends the bit stream of a batch's entries to `out` (which already holds the format
    /// byte, `flags`, the dictionary and the entry count), against this context's states.
    fn write_entries<P: ExactSizeIterator<Item = Point>>(
        &mut self,
        out: Vec<u8>,
        flags: u8,
        entries: impl Iterator<Item = (u32, P)>,
    ) -> Vec<u8> {
        let single = flags & FLAG_SINGLE_POINT != 0;
        let in_order = flags & FLAG_IN_ORDER != 0;
        let one_ts = flags & FLAG_ONE_TIMESTAMP != 0;
        let predict = flags & FLAG_PREDICTED_LENGTHS != 0;
        let mut w = BitWriter::new(out);
        let mut prev_id: i64 = -1;
        let mut prev_ts = self.last_ts;
        for (i, (id, points)) in entries.enumerate() {
            if in_order && i > 0 {
                debug_assert_eq!(id as i64, prev_id + 1);
            } else if id as i64 == prev_id + 1 {
                w.bit(true);
            } else {
                w.bit(false);
                w.varbits(zigzag(id as i64 - prev_id - 1));
            }
            prev_id = id as i64;
            if !single {
                w.varbits(points.len() as u64);
            }
            let st = &mut self.state[id as usize];
            for p in points {
                // One timestamp implies one point per entry.
                if one_ts && i > 0 {
                    debug_assert_eq!(p.ts, prev_ts);
                    st.advance_ts(p.ts);
                } else {
                    encode_ts(&mut w, st, p.ts, prev_ts);
                }
                prev_ts = p.ts;
                encode_value(&mut w, st, p.value, predict);
            }
        }
        self.last_ts = prev_ts;
        w.finish()
    }
}

/// Writes the string and series definitions of a batch; `id` gives a string's number.
fn put_dictionary(
    out: &mut Vec<u8>,
    new_strings: &[&str],
    new_series: &[&Labels],
    id: impl Fn(&str) -> u32,
) {
    put_varint(out, new_strings.len() as u64);
    for s in new_strings {
        put_varint(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
    put_varint(out, new_series.len() as u64);
    for labels in new_series {
        put_varint(out, labels.len() as u64);
        for l in labels.iter() {
            put_varint(out, id(&l.name) as u64);
            put_varint(out, id(&l.value) as u64);
        }
    }
}

/// Encodes self-contained batches of one point per series for a list of series that stays
/// the same from batch to batch, as an agent's collection cycles do: the strings and series
/// are numbered and written once, when the encoder is made, and each batch copies them and
/// encodes only its points. A batch is byte for byte what a fresh [`Encoder`] makes of the
/// same series and points.
pub struct CycleEncoder {
    /// Format byte, flags, the string and series definitions.
    head: Vec<u8>,
    /// Per entry, its series' number (a series listed twice is one series).
    ids: Vec<u32>,
    /// Distinct series.
    n_series: usize,
}

impl CycleEncoder {
    /// An encoder for batches whose entries are `series`, in this order.
    pub fn new<'a>(series: impl IntoIterator<Item = &'a Labels>) -> Self {
        let mut enc = Encoder::new();
        let mut new_strings: Vec<&str> = Vec::new();
        let mut new_series: Vec<&Labels> = Vec::new();
        let ids: Vec<u32> = series
            .into_iter()
            .map(|l| enc.intern(l, &mut new_strings, &mut new_series))
            .collect();
        let mut head = vec![FORMAT_V1, FLAG_SINGLE_POINT];
        put_dictionary(&mut head, &new_strings, &new_series, |s| enc.strings[s]);
        CycleEncoder {
            head,
            ids,
            n_series: new_series.len(),
        }
    }

    /// How many entries (values) a batch has.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when the series list is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// One batch: every series of the list at `ts` (ms since the Unix epoch) with its value
    /// from `values`, in list order. Entries beyond the shorter of the list and `values` are
    /// left out.
    pub fn encode(&self, ts: i64, values: &[f64]) -> Vec<u8> {
        let n = self.ids.len().min(values.len());
        let mut out = Vec::with_capacity(self.head.len() + 10 + n * 3);
        out.extend_from_slice(&self.head);
        put_varint(&mut out, n as u64);
        let mut state = vec![SeriesState::NEW; self.n_series];
        let mut w = BitWriter::new(out);
        let mut prev_id: i64 = -1;
        let mut prev_ts = 0;
        for (&id, &v) in self.ids.iter().zip(values) {
            if id as i64 == prev_id + 1 {
                w.bit(true);
            } else {
                w.bit(false);
                w.varbits(zigzag(id as i64 - prev_id - 1));
            }
            prev_id = id as i64;
            let st = &mut state[id as usize];
            encode_ts(&mut w, st, ts, prev_ts);
            prev_ts = ts;
            encode_value(&mut w, st, v, false);
        }
        w.finish()
    }
}

/// Re-encodes self-contained batches (each made by a fresh [`Encoder`], as the agent's buffer
/// stores them) against one stream's context, without building label sets for every batch:
/// the series of a batch are mapped to the stream's numbers once per distinct dictionary
/// (the strings and series a batch defines), so a run of collection cycles with the same
/// series costs a comparison of their dictionaries and the points' codes. The output is
/// byte for byte what the stream's [`Encoder`] makes of the decoded batch.
#[derive(Default)]
pub struct Transcoder {
    enc: Encoder,
    /// The dictionary bytes of the last batch and, per series it defines, the stream's number.
    dict: Vec<u8>,
    map: Vec<u32>,
    scratch: RawBatch,
    /// The stream's numbers of the last batch's entries, in order (reused between batches).
    ids: Vec<u32>,
    state: Vec<SeriesState>,
    /// For a transcoder made by [`Transcoder::continuing`]: the dictionary bytes of the key
    /// it continues and the sizes of the string and series maps right after they were built
    /// from it, so [`Transcoder::continue_from`] can tell whether a new key leaves them as
    /// they are.
    key: Option<KeyContext>,
}

/// What [`Transcoder::continue_from`] compares a new key with.
struct KeyContext {
    dict: Vec<u8>,
    strings: usize,
    series: usize,
}

impl Transcoder {
    /// A transcoder whose stream context is empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// As [`Encoder::set_compact`], for the batches this transcoder writes.
    pub fn set_compact(&mut self, on: bool) {
        self.enc.set_compact(on);
    }

    /// Re-encodes one self-contained batch for the stream. The stream's context changes only
    /// when the whole batch decodes.
    ///
    /// # Errors
    /// The payload is damaged or not self-contained (it refers to strings or series it does
    /// not define); nothing is added to the stream's context then.
    pub fn transcode(&mut self, payload: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let mut r = ByteReader {
            data: payload,
            pos: 0,
        };
        let format = r.u8()?;
        if format != FORMAT_V1 {
            return Err(DecodeError::UnknownFormat(format));
        }
        let flags = check_flags(r.u8()?)?;
        let dict_start = r.pos;
        // The dictionary: skipped when it is the last one's, read and checked otherwise.
        let same = payload[dict_start..].starts_with(&self.dict) && !self.dict.is_empty() && {
            // Equal bytes parse alike: check the length by skipping through it.
            skip_dictionary(&mut r)?;
            r.pos - dict_start == self.dict.len()
        };
        let labels = if same {
            None
        } else {
            r.pos = dict_start;
            let mut dec = Decoder::new();
            dec.read_dictionary(&mut r)?;
            Some(dec.series)
        };
        let n_series = labels.as_ref().map_or(self.map.len(), Vec::len);
        let dict_end = r.pos;
        let n_entries = r.varint()?;
        let mut bits = BitReader::new(r.rest());
        if n_entries > bits.remaining() as u64 {
            return Err(DecodeError::Truncated);
        }
        self.state.clear();
        self.state.resize(n_series, SeriesState::NEW);
        self.scratch.entries.clear();
        self.scratch.points.clear();
        let mut last_ts = 0;
        decode_entries(
            &mut bits,
            &mut self.state,
            &mut last_ts,
            flags,
            n_entries,
            &mut self.scratch,
        )?;
        // The whole batch decoded: now the stream's context may change.
        let mut new_strings: Vec<&str> = Vec::new();
        let mut new_series: Vec<&Labels> = Vec::new();
        if let Some(labels) = &labels {
            self.map.clear();
            for l in labels {
                let id = self.enc.intern(l, &mut new_strings, &mut new_series);
                self.map.push(id);
            }
            self.dict.clear();
            self.dict.extend_from_slice(&payload[dict_start..dict_end]);
        }
        let single = self.scratch.entries.iter().all(|&(_, n)| n == 1);
        self.ids.clear();
        self.ids.extend(
            self.scratch
                .entries
                .iter()
                .map(|&(local, _)| self.map[local as usize]),
        );
        let flags = self
            .enc
            .flags(single, &self.ids, self.scratch.points.iter().map(|p| p.ts));
        let map = &self.map;
        let points = &self.scratch.points;
        let mut at = 0usize;
        let entries = self.scratch.entries.iter().map(move |&(local, n)| {
            let pts = &points[at..at + n as usize];
            at += n as usize;
            let pts = pts.iter().map(|p| Point {
                ts: p.ts,
                value: p.value,
            });
            (map[local as usize], pts)
        });
        let n = self.scratch.entries.len();
        Ok(self.enc.write(&new_strings, &new_series, flags, n, entries))
    }
}

impl Transcoder {
    /// A transcoder whose stream context is what a [`Decoder`] holds after decoding `key`
    /// (the strings and series `key` defines, numbered as `key` numbers them, and every
    /// series' last timestamp and value), so the batches it writes next decode in that
    /// decoder. This is how the agent's buffer codes a batch against the group it continues
    /// (`docs/BUFFER.md`) without re-encoding the group's first batch. Compact flags are on.
    ///
    /// # Errors
    /// `key` does not decode on its own (damaged, or not self-contained).
    pub fn continuing(key: &[u8]) -> Result<Transcoder, DecodeError> {
        let mut dec = Decoder::new();
        dec.decode_raw(key)?;
        // It decoded, so its dictionary is there to skip over.
        let mut r = ByteReader { data: key, pos: 2 };
        skip_dictionary(&mut r)?;
        let dict = key[2..r.pos].to_vec();
        let mut enc = Encoder {
            compact: true,
            last_ts: dec.last_ts,
            state: dec.state,
            ..Encoder::default()
        };
        enc.strings.reserve(dec.strings.len());
        enc.series.reserve(dec.series.len());
        for (id, text) in dec.strings.into_iter().enumerate() {
            enc.strings.entry(text).or_insert(id as u32);
        }
        for (id, labels) in dec.series.into_iter().enumerate() {
            enc.series.entry(labels).or_insert(id as u32);
        }
        let key = Some(KeyContext {
            dict,
            strings: enc.strings.len(),
            series: enc.series.len(),
        });
        Ok(Transcoder {
            enc,
            key,
            ..Transcoder::default()
        })
    }

    /// Makes this transcoder's stream context what [`Transcoder::continuing`] makes of `key`.
    /// When `key` defines, byte for byte, the strings and series of the key this transcoder
    /// last continued, and the batches transcoded since defined nothing new, only `key`'s
    /// points are decoded: the string and series maps, and what the transcoder remembers of
    /// the last batch's dictionary, are kept. A connected agent's collection cycles start a
    /// group every few batches (each acknowledgement ends one), all with the same series, so
    /// this spares it decoding and hashing every label of a cycle each time. Otherwise the
    /// context is made afresh, as [`Transcoder::continuing`] does.
    ///
    /// # Errors
    /// As [`Transcoder::continuing`]; the transcoder is then empty (as [`Transcoder::new`],
    /// compact flags off) until the next `continue_from` succeeds.
    pub fn continue_from(&mut self, key: &[u8]) -> Result<(), DecodeError> {
        let r = self.continue_in_place(key).and_then(|reused| {
            if !reused {
                *self = Transcoder::continuing(key)?;
            }
            Ok(())
        });
        if r.is_err() {
            *self = Transcoder::default();
        }
        r
    }

    /// The cheap path of [`Transcoder::continue_from`]: `Ok(false)` when the maps cannot be
    /// kept (nothing changed then), `Ok(true)` when the context now continues `key`.
    fn continue_in_place(&mut self, key: &[u8]) -> Result<bool, DecodeError> {
        let Some(k) = &self.key else {
            return Ok(false);
        };
        if self.enc.strings.len() != k.strings
            || self.enc.series.len() != k.series
            || self.enc.state.len() != k.series
            || key.len() < 2 + k.dict.len()
            || key[2..2 + k.dict.len()] != k.dict[..]
        {
            return Ok(false);
        }
        let mut r = ByteReader { data: key, pos: 0 };
        let format = r.u8()?;
        if format != FORMAT_V1 {
            return Err(DecodeError::UnknownFormat(format));
        }
        let flags = check_flags(r.u8()?)?;
        // Equal bytes parse alike: check the length by skipping through them.
        skip_dictionary(&mut r)?;
        if r.pos != 2 + k.dict.len() {
            return Ok(false);
        }
        let n_entries = r.varint()?;
        let mut bits = BitReader::new(r.rest());
        if n_entries > bits.remaining() as u64 {
            return Err(DecodeError::Truncated);
        }
        let mut state = std::mem::take(&mut self.state);
        state.clear();
        state.resize(k.series, SeriesState::NEW);
        self.scratch.entries.clear();
        self.scratch.points.clear();
        let mut last_ts = 0;
        let decoded = decode_entries(
            &mut bits,
            &mut state,
            &mut last_ts,
            flags,
            n_entries,
            &mut self.scratch,
        );
        if let Err(e) = decoded {
            self.state = state;
            return Err(e);
        }
        self.state = std::mem::replace(&mut self.enc.state, state);
        self.enc.last_ts = last_ts;
        self.enc.compact = true;
        Ok(true)
    }
}

/// Turns a run of batches coded against one continuing context (the first self-contained,
/// each later one against the context the ones before it left, as a long-lived [`Encoder`]
/// or a [`Transcoder::continuing`] writes them) back into self-contained batches, one by
/// one and in order.
///
/// A batch it returns defines every string and series the run has defined so far, numbered
/// as the run numbers them, and codes its points against fresh series states: any fresh
/// [`Decoder`] reads it, and decodes the same series and points as a decoder that followed
/// the run. The dictionary is built again only when the run defines something new.
#[derive(Default)]
pub struct Unchainer {
    dec: Decoder,
    /// The run's dictionary as a self-contained batch writes it, for `dict_counts` strings
    /// and series (`None` before the first batch).
    dict: Vec<u8>,
    dict_counts: Option<(usize, usize)>,
}

impl Unchainer {
    /// An unchainer at the start of a run (the next batch must be self-contained).
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes the run's next batch and returns it self-contained.
    ///
    /// # Errors
    /// The batch is damaged or refers to what the run has not defined; the unchainer is then
    /// poisoned (every later call fails) until it is replaced.
    pub fn unchain(&mut self, payload: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let raw = self.dec.decode_raw(payload)?;
        let counts = (self.dec.strings.len(), self.dec.series.len());
        if Some(counts) != self.dict_counts {
            self.dict.clear();
            let mut ids: FxHashMap<&str, u32> =
                FxHashMap::with_capacity_and_hasher(counts.0, Default::default());
            put_varint(&mut self.dict, counts.0 as u64);
            for (id, text) in self.dec.strings.iter().enumerate() {
                ids.entry(text.as_str()).or_insert(id as u32);
                put_varint(&mut self.dict, text.len() as u64);
                self.dict.extend_from_slice(text.as_bytes());
            }
            put_varint(&mut self.dict, counts.1 as u64);
            for labels in &self.dec.series {
                put_varint(&mut self.dict, labels.len() as u64);
                for l in labels.iter() {
                    put_varint(&mut self.dict, ids[l.name.as_str()] as u64);
                    put_varint(&mut self.dict, ids[l.value.as_str()] as u64);
                }
            }
            self.dict_counts = Some(counts);
        }
        let single = raw.entries.iter().all(|&(_, n)| n == 1);
        let flags = if single { FLAG_SINGLE_POINT } else { 0 };
        let mut out = Vec::with_capacity(self.dict.len() + 8 + raw.points.len() * 3);
        out.push(FORMAT_V1);
        out.push(flags);
        out.extend_from_slice(&self.dict);
        put_varint(&mut out, raw.entries.len() as u64);
        let mut fresh = Encoder {
            state: vec![SeriesState::NEW; counts.1],
            ..Encoder::default()
        };
        let mut at = 0usize;
        let points = &raw.points;
        let entries = raw.entries.iter().map(|&(id, n)| {
            let pts = points[at..at + n as usize].iter().map(|p| Point {
                ts: p.ts,
                value: p.value,
            });
            at += n as usize;
            (id, pts)
        });
        Ok(fresh.write_entries(out, flags, entries))
    }
}

/// Moves `r` past a batch's string and series definitions without keeping them.
fn skip_dictionary(r: &mut ByteReader<'_>) -> Result<(), DecodeError> {
    let n_strings = r.count(1)?;
    for _ in 0..n_strings {
        let len = r.varint()?;
        r.bytes(usize::try_from(len).map_err(|_| DecodeError::Truncated)?)?;
    }
    let n_series = r.count(1)?;
    for _ in 0..n_series {
        let n_labels = r.count(2)?;
        for _ in 0..2 * n_labels {
            r.varint()?;
        }
    }
    Ok(())
}

#[inline]
fn encode_ts(w: &mut BitWriter, st: &mut SeriesState, ts: i64, prev_ts: i64) {
    if ts == prev_ts {
        w.bit(false);
    } else {
        let dod = ts.wrapping_sub(st.ts).wrapping_sub(st.delta);
        if dod == 0 {
            w.write(0b10, 2);
        } else {
            w.write(0b11, 2);
            w.varbits(zigzag(dod));
        }
    }
    st.advance_ts(ts);
}

#[inline]
/// Writes `v`'s value code against the series state `st`; with `predict`
/// ([`FLAG_PREDICTED_LENGTHS`]), a decimal delta that fits the series' last explicit length,
/// wasting at most [`PREDICTED_SLACK`] bits, is written in that length.
fn encode_value(w: &mut BitWriter, st: &mut SeriesState, v: f64, predict: bool) {
    let bits = v.to_bits();
    if bits == st.bits {
        w.bit(false);
        return;
    }
    let xor = bits ^ st.bits;
    let lz = xor.leading_zeros().min(63);
    let tz = xor.trailing_zeros();
    let meaningful = 64 - lz - tz;
    let xor_cost = 15 + meaningful;
    let same_exp = st
        .dec
        .and_then(|(e, pm)| dec_at(v, e).map(|m| (e, m, zigzag(m.wrapping_sub(pm)))));
    if let Some((e, m, d)) = same_exp {
        let len = (64 - d.leading_zeros()) as u8;
        let window = predict && len <= st.len && len + PREDICTED_SLACK >= st.len;
        let cost = match (predict, window) {
            (false, _) => 2 + varbits_cost(d),
            (true, true) => 3 + st.len as u32,
            (true, false) => 3 + varbits_cost(d),
        };
        if cost <= xor_cost {
            if window {
                w.write(0b100, 3);
                w.write(d, st.len as u32);
            } else {
                w.write(
                    if predict { 0b101 } else { 0b10 },
                    if predict { 3 } else { 2 },
                );
                w.varbits(d);
                st.len = len;
            }
            st.bits = bits;
            st.dec = Some((e, m));
            return;
        }
    }
    let fresh = (0..POW10.len() as u8).find_map(|e| dec_at(v, e).map(|m| (e, m)));
    if let Some((e, m)) = fresh
        && 6 + varbits_cost(zigzag(m)) <= xor_cost
    {
        w.write(0b110, 3);
        w.write(e as u64, 3);
        w.varbits(zigzag(m));
        st.bits = bits;
        st.dec = Some((e, m));
        return;
    }
    w.write(0b111, 3);
    w.write(lz as u64, 6);
    w.write((meaningful - 1) as u64, 6);
    w.write(xor >> tz, meaningful);
    st.bits = bits;
    st.dec = st.dec.and_then(|(e, _)| dec_at(v, e).map(|m| (e, m)));
}

/// One decoded point with its series as the context's number for it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RawPoint {
    /// The series' number in the decoder's context.
    pub series: u32,
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    /// The value.
    pub value: f64,
}

/// A decoded batch before label sets are attached: cheap to map onto storage ids.
#[derive(Debug, Default)]
pub struct RawBatch {
    /// Context numbers of the series this batch defined (they were new to the decoder).
    pub new_series: std::ops::Range<u32>,
    /// Per series entry in the batch: its context number and how many points follow.
    pub entries: Vec<(u32, u32)>,
    /// Every point, entry after entry.
    pub points: Vec<RawPoint>,
}

/// Decodes batches made by an [`Encoder`], keeping the matching context.
#[derive(Default)]
pub struct Decoder {
    strings: Vec<String>,
    series: Vec<Labels>,
    state: Vec<SeriesState>,
    last_ts: i64,
    poisoned: bool,
}

impl Decoder {
    /// A decoder with an empty context, matching a new [`Encoder`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The label set of a series this context has defined.
    pub fn labels(&self, id: u32) -> Option<&Labels> {
        self.series.get(id as usize)
    }

    /// Decodes one batch with its label sets attached.
    ///
    /// # Errors
    /// As [`Decoder::decode_raw`].
    pub fn decode(&mut self, data: &[u8]) -> Result<Batch, DecodeError> {
        let raw = self.decode_raw(data)?;
        let mut series = Vec::with_capacity(raw.entries.len());
        let mut it = raw.points.iter();
        for &(id, n) in &raw.entries {
            let labels = self.series[id as usize].clone();
            let points = it
                .by_ref()
                .take(n as usize)
                .map(|p| Point {
                    ts: p.ts,
                    value: p.value,
                })
                .collect();
            series.push(SeriesPoints { labels, points });
        }
        Ok(Batch { series })
    }

    /// Decodes one batch, series as context numbers.
    ///
    /// # Errors
    /// The payload is damaged or refers to what the context lacks; the decoder is then
    /// poisoned, as its context no longer matches the encoder's.
    pub fn decode_raw(&mut self, data: &[u8]) -> Result<RawBatch, DecodeError> {
        if self.poisoned {
            return Err(DecodeError::Poisoned);
        }
        let r = self.decode_inner(data);
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }

    fn decode_inner(&mut self, data: &[u8]) -> Result<RawBatch, DecodeError> {
        let mut r = ByteReader { data, pos: 0 };
        let format = r.u8()?;
        if format != FORMAT_V1 {
            return Err(DecodeError::UnknownFormat(format));
        }
        let flags = check_flags(r.u8()?)?;
        let first_new = self.series.len() as u32;
        self.read_dictionary(&mut r)?;
        let n_entries = r.varint()?;
        let mut bits = BitReader::new(r.rest());
        if n_entries > bits.remaining() as u64 {
            return Err(DecodeError::Truncated);
        }
        let mut out = RawBatch {
            new_series: first_new..self.series.len() as u32,
            entries: Vec::with_capacity(n_entries as usize),
            points: Vec::with_capacity(n_entries as usize),
        };
        decode_entries(
            &mut bits,
            &mut self.state,
            &mut self.last_ts,
            flags,
            n_entries,
            &mut out,
        )?;
        Ok(out)
    }

    /// Reads a batch's string and series definitions into the context.
    fn read_dictionary(&mut self, r: &mut ByteReader<'_>) -> Result<(), DecodeError> {
        let n_strings = r.count(1)?;
        self.strings.reserve(n_strings);
        for _ in 0..n_strings {
            let len = r.varint()?;
            let b = r.bytes(usize::try_from(len).map_err(|_| DecodeError::Truncated)?)?;
            let s =
                std::str::from_utf8(b).map_err(|_| DecodeError::Invalid("string (not UTF-8)"))?;
            self.strings.push(s.to_string());
        }
        let n_series = r.count(1)?;
        for _ in 0..n_series {
            let n_labels = r.count(2)?;
            let mut v = Vec::with_capacity(n_labels);
            for _ in 0..n_labels {
                let name = self.string(r.varint()?)?;
                let value = self.string(r.varint()?)?;
                v.push(Label { name, value });
            }
            let labels = Labels::from_sorted(v).ok_or(DecodeError::Invalid(
                "label set (unsorted or repeated names)",
            ))?;
            self.series.push(labels);
            self.state.push(SeriesState::NEW);
        }
        Ok(())
    }

    fn string(&self, id: u64) -> Result<String, DecodeError> {
        self.strings
            .get(id as usize)
            .cloned()
            .ok_or(DecodeError::BadReference {
                what: "string",
                id,
                known: self.strings.len(),
            })
    }
}

/// Decodes `n_entries` entries of a batch's bit stream with `flags` against `state` (per
/// series) and `last_ts`, appending them to `out`.
fn decode_entries(
    bits: &mut BitReader<'_>,
    state: &mut [SeriesState],
    last_ts: &mut i64,
    flags: u8,
    n_entries: u64,
    out: &mut RawBatch,
) -> Result<(), DecodeError> {
    let single = flags & FLAG_SINGLE_POINT != 0;
    let in_order = flags & FLAG_IN_ORDER != 0;
    let one_ts = flags & FLAG_ONE_TIMESTAMP != 0;
    let predict = flags & FLAG_PREDICTED_LENGTHS != 0;
    let mut prev_id: i64 = -1;
    let mut prev_ts = *last_ts;
    for i in 0..n_entries {
        let id = if (in_order && i > 0) || bits.bit()? {
            prev_id + 1
        } else {
            (prev_id + 1).wrapping_add(unzigzag(bits.varbits()?))
        };
        if id < 0 || id as usize >= state.len() {
            return Err(DecodeError::BadReference {
                what: "series",
                id: id as u64,
                known: state.len(),
            });
        }
        prev_id = id;
        let n = if single {
            1
        } else {
            let n = bits.varbits()?;
            if n > (bits.remaining() / 2) as u64 {
                return Err(DecodeError::Truncated);
            }
            n as u32
        };
        out.entries.push((id as u32, n));
        let st = &mut state[id as usize];
        for _ in 0..n {
            let ts = if one_ts && i > 0 {
                st.advance_ts(prev_ts);
                prev_ts
            } else {
                decode_ts(bits, st, prev_ts)?
            };
            prev_ts = ts;
            let value = decode_value(bits, st, predict)?;
            out.points.push(RawPoint {
                series: id as u32,
                ts,
                value,
            });
        }
    }
    *last_ts = prev_ts;
    Ok(())
}

#[inline]
fn decode_ts(r: &mut BitReader, st: &mut SeriesState, prev_ts: i64) -> Result<i64, DecodeError> {
    let ts = if !r.bit()? {
        prev_ts
    } else if !r.bit()? {
        st.ts.wrapping_add(st.delta)
    } else {
        st.ts
            .wrapping_add(st.delta)
            .wrapping_add(unzigzag(r.varbits()?))
    };
    st.advance_ts(ts);
    Ok(ts)
}

#[inline]
/// Reads a value code written by [`encode_value`] with the same `predict`.
fn decode_value(
    r: &mut BitReader,
    st: &mut SeriesState,
    predict: bool,
) -> Result<f64, DecodeError> {
    if !r.bit()? {
        return Ok(f64::from_bits(st.bits));
    }
    if !r.bit()? {
        let (e, pm) = st
            .dec
            .ok_or(DecodeError::Invalid("decimal delta without a decimal base"))?;
        let d = if predict && !r.bit()? {
            if st.len == 0 {
                return Err(DecodeError::Invalid("predicted length before any length"));
            }
            r.read(st.len as u32)?
        } else {
            let d = r.varbits()?;
            st.len = (64 - d.leading_zeros()) as u8;
            d
        };
        let m = pm.wrapping_add(unzigzag(d));
        let v = m as f64 / POW10[e as usize];
        st.bits = v.to_bits();
        st.dec = Some((e, m));
        return Ok(v);
    }
    if !r.bit()? {
        let e = r.read(3)? as u8;
        let m = unzigzag(r.varbits()?);
        let v = m as f64 / POW10[e as usize];
        st.bits = v.to_bits();
        st.dec = Some((e, m));
        return Ok(v);
    }
    let lz = r.read(6)? as u32;
    let meaningful = r.read(6)? as u32 + 1;
    if lz + meaningful > 64 {
        return Err(DecodeError::Invalid("XOR window"));
    }
    let xor = r.read(meaningful)? << (64 - lz - meaningful);
    st.bits ^= xor;
    let v = f64::from_bits(st.bits);
    st.dec = st.dec.and_then(|(e, _)| dec_at(v, e).map(|m| (e, m)));
    Ok(v)
}

/// Encodes one series' points on their own (a storage chunk): a varint count, then the
/// same timestamp and value codes as in a batch.
pub fn encode_points(points: &[Point]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + points.len() * 2);
    put_varint(&mut out, points.len() as u64);
    let mut w = BitWriter::new(out);
    let mut st = SeriesState::NEW;
    let mut prev_ts = 0;
    for p in points {
        encode_ts(&mut w, &mut st, p.ts, prev_ts);
        prev_ts = p.ts;
        encode_value(&mut w, &mut st, p.value, false);
    }
    w.finish()
}

/// Decodes what [`encode_points`] wrote, appending to `out`.
pub fn decode_points(data: &[u8], out: &mut Vec<Point>) -> Result<(), DecodeError> {
    let mut r = ByteReader { data, pos: 0 };
    let n = r.varint()?;
    let mut bits = BitReader::new(r.rest());
    if n > (bits.remaining() / 2) as u64 {
        return Err(DecodeError::Truncated);
    }
    out.reserve(n as usize);
    let mut st = SeriesState::NEW;
    let mut prev_ts = 0;
    for _ in 0..n {
        let ts = decode_ts(&mut bits, &mut st, prev_ts)?;
        prev_ts = ts;
        let value = decode_value(&mut bits, &mut st, false)?;
        out.push(Point { ts, value });
    }
    Ok(())
}

/// Decodes the points of what [`encode_points`] wrote with `start_ms <= ts <= end_ms`,
/// appending to `out`. The points must be in time order (as stored chunks are): decoding
/// stops at the first point after `end_ms`.
pub fn decode_points_between(
    data: &[u8],
    start_ms: i64,
    end_ms: i64,
    out: &mut Vec<Point>,
) -> Result<(), DecodeError> {
    let mut r = ByteReader { data, pos: 0 };
    let n = r.varint()?;
    let mut bits = BitReader::new(r.rest());
    if n > (bits.remaining() / 2) as u64 {
        return Err(DecodeError::Truncated);
    }
    let mut st = SeriesState::NEW;
    let mut prev_ts = 0;
    for _ in 0..n {
        let ts = decode_ts(&mut bits, &mut st, prev_ts)?;
        prev_ts = ts;
        if ts > end_ms {
            break;
        }
        let value = decode_value(&mut bits, &mut st, false)?;
        if ts >= start_ms {
            out.push(Point { ts, value });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::stale_nan;
    use proptest::prelude::*;

    fn one(labels: Labels, ts: i64, v: f64) -> SeriesPoints {
        SeriesPoints {
            labels,
            points: vec![Point { ts, value: v }],
        }
    }

    #[test]
    fn a_stream_names_each_series_once_and_then_costs_bits() {
        let mut enc = Encoder::new();
        let mut dec = Decoder::new();
        let mut sizes = vec![];
        for cycle in 0..10i64 {
            let ts = 1_700_000_000_000 + cycle * 10_000 + (cycle % 3);
            let mut b = Batch::default();
            for i in 0..100 {
                let l = Labels::metric(
                    "node_cpu_seconds_total",
                    [
                        ("cpu", "0"),
                        ("mode", ["idle", "user", "system", "iowait"][i % 4]),
                    ],
                )
                .with("n", &i.to_string());
                b.series
                    .push(one(l, ts, 1234.5 + (cycle * i as i64) as f64 * 0.01));
            }
            let bytes = enc.encode(&b);
            sizes.push(bytes.len());
            assert_eq!(dec.decode(&bytes).unwrap(), b);
        }
        assert!(
            sizes[0] > 1000,
            "first batch carries the dictionary: {sizes:?}"
        );
        // Each later value moves by i hundredths: a decimal delta of up to 8 bits plus its
        // length and codes, about 2 B per sample, with no label bytes at all.
        assert!(
            sizes[9] < 250,
            "later batches cost under 2.5 B per sample: {sizes:?}"
        );
        assert!(
            sizes[9] * 5 < sizes[0],
            "later batches do not repeat the dictionary: {sizes:?}"
        );
    }

    #[test]
    fn special_values_round_trip() {
        let vals = [
            f64::NAN,
            stale_nan(),
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            0.0,
            f64::MIN_POSITIVE,
            f64::MAX,
            1e-300,
            0.1,
            3.0,
        ];
        let b = Batch {
            series: vec![SeriesPoints {
                labels: Labels::metric("x", []),
                points: vals
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| Point {
                        ts: i as i64 * 7 - 3,
                        value: v,
                    })
                    .collect(),
            }],
        };
        let bytes = Encoder::new().encode(&b);
        assert_eq!(Decoder::new().decode(&bytes).unwrap(), b);
    }

    #[test]
    fn errors_poison_the_decoder() {
        let b = Batch {
            series: vec![one(Labels::metric("x", []), 5, 1.0)],
        };
        let bytes = Encoder::new().encode(&b);
        let mut d = Decoder::new();
        assert_eq!(d.decode(&bytes[..3]), Err(DecodeError::Truncated));
        assert_eq!(d.decode(&bytes), Err(DecodeError::Poisoned));
        assert_eq!(
            Decoder::new().decode(&[9]),
            Err(DecodeError::UnknownFormat(9))
        );
    }

    fn arb_value() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(stale_nan()),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0),
            (-1_000_000i64..1_000_000).prop_map(|m| m as f64 / 100.0),
            (0u64..1 << 40).prop_map(|m| m as f64),
        ]
    }

    fn arb_batch() -> impl Strategy<Value = Batch> {
        let labels = prop::collection::vec(("[a-c]{1,2}", "[x-z0-9]{0,3}"), 0..4).prop_map(|v| {
            Labels::new(
                v.into_iter()
                    .chain([("__name__".to_string(), "m".to_string())]),
            )
        });
        let points = prop::collection::vec(
            (prop_oneof![any::<i64>(), 0i64..100_000], arb_value()),
            0..6,
        )
        .prop_map(|v| {
            v.into_iter()
                .map(|(ts, value)| Point { ts, value })
                .collect()
        });
        prop::collection::vec(
            (labels, points).prop_map(|(labels, points)| SeriesPoints { labels, points }),
            0..12,
        )
        .prop_map(|series| Batch { series })
    }

    /// Collection cycles: the same series (in one order, some left out now and then) at one
    /// timestamp per batch, timestamps 10 s apart with jitter.
    fn arb_cycles() -> impl Strategy<Value = Vec<Batch>> {
        (
            1usize..40,
            prop::collection::vec(
                (
                    -50i64..50,
                    prop::collection::vec((any::<bool>(), arb_value()), 40),
                ),
                1..6,
            ),
        )
            .prop_map(|(n, cycles)| {
                let labels: Vec<Labels> = (0..n)
                    .map(|i| Labels::new([("__name__".to_string(), format!("m{i}"))]))
                    .collect();
                cycles
                    .into_iter()
                    .enumerate()
                    .map(|(c, (jitter, values))| {
                        let ts = 1_700_000_000_000 + c as i64 * 10_000 + jitter;
                        let mut b = Batch::default();
                        for (l, (skip, v)) in labels.iter().zip(values) {
                            // Most cycles have every series; some leave one out.
                            if !(skip && c % 2 == 1) {
                                b.push(l.clone(), ts, v);
                            }
                        }
                        b
                    })
                    .collect()
            })
    }

    #[test]
    fn a_chained_cycle_costs_what_changed_and_a_damaged_one_poisons_the_run() {
        let labels: Vec<Labels> = (0..200)
            .map(|i| Labels::new([("__name__".to_string(), format!("node_metric_{i}"))]))
            .collect();
        let cycle = |c: i64| {
            let mut b = Batch::default();
            for (i, l) in labels.iter().enumerate() {
                // Half constant gauges, half counters growing by a steady step.
                let v = if i % 2 == 0 {
                    i as f64
                } else {
                    (c * i as i64) as f64
                };
                b.push(l.clone(), 1_700_000_000_000 + c * 10_000, v);
            }
            b
        };
        let key = Encoder::new().encode(&cycle(0));
        let mut chain = Transcoder::continuing(&key).unwrap();
        let alone = Encoder::new().encode(&cycle(1));
        let delta = chain.transcode(&alone).unwrap();
        // No dictionary, no timestamps after the first, a bit per constant gauge and a few
        // per counter: about a byte a sample, against the self-contained batch's labels.
        assert!(delta.len() < 250, "{} bytes", delta.len());
        assert!(
            alone.len() > 10 * delta.len(),
            "{} vs {}",
            alone.len(),
            delta.len()
        );
        let mut un = Unchainer::new();
        un.unchain(&key).unwrap();
        assert_eq!(
            Decoder::new().decode(&un.unchain(&delta).unwrap()).unwrap(),
            cycle(1)
        );
        // A batch of the run that does not decode ends the run: the next ones cannot be read.
        let next = chain.transcode(&Encoder::new().encode(&cycle(2))).unwrap();
        let mut un = Unchainer::new();
        un.unchain(&key).unwrap();
        assert!(un.unchain(&delta[..delta.len() / 2]).is_err());
        assert_eq!(un.unchain(&next), Err(DecodeError::Poisoned));
        // A run cannot start with a batch that needs its context.
        assert!(Unchainer::new().unchain(&next).is_err());
        assert!(Transcoder::continuing(&next).is_err());
    }

    #[test]
    fn compact_cycles_spend_no_series_or_timestamp_codes_and_predict_lengths() {
        let labels: Vec<Labels> = (0..300)
            .map(|i| Labels::new([("__name__".to_string(), format!("m{i}"))]))
            .collect();
        // Counters: each series grows by the same amount every cycle (40 plus its number).
        let cycle = |c: i64| {
            let mut b = Batch::default();
            for (i, l) in labels.iter().enumerate() {
                let v = c * (40 + i as i64);
                b.push(l.clone(), 10_000 * c, v as f64);
            }
            b
        };
        let all = FLAG_SINGLE_POINT | FLAG_IN_ORDER | FLAG_ONE_TIMESTAMP | FLAG_PREDICTED_LENGTHS;
        let (mut plain, mut compact) = (Encoder::new(), Encoder::new());
        compact.set_compact(true);
        let mut dec = Decoder::new();
        for c in 1..=4 {
            let b = cycle(c);
            let (p, k) = (plain.encode(&b), compact.encode(&b));
            assert_eq!(k[1], all);
            assert_eq!(p[1], FLAG_SINGLE_POINT);
            assert_eq!(dec.decode(&k).unwrap(), b, "cycle {c}");
            // From the third cycle each of the 299 entries after the first saves its series
            // bit, its timestamp bit and, at the predicted length, the 6-bit length less
            // the bit that says so and the top bit a length-coded delta leaves out.
            if c > 2 {
                assert!(
                    p.len() - k.len() >= (2 + 4) * 299 / 8 - 1,
                    "{} {}",
                    p.len(),
                    k.len()
                );
            }
        }
        // Out of order or at two timestamps: those flags are not set, and the batch decodes.
        let mut b = cycle(5);
        b.series.swap(3, 4);
        b.series[7].points[0].ts += 1;
        let k = compact.encode(&b);
        assert_eq!(k[1], FLAG_SINGLE_POINT | FLAG_PREDICTED_LENGTHS);
        assert_eq!(dec.decode(&k).unwrap(), b);
    }

    #[test]
    fn continuing_from_a_key_with_the_same_series_keeps_the_maps_and_only_then() {
        let labels = |n: usize| -> Vec<Labels> {
            (0..n)
                .map(|i| Labels::new([("__name__".to_string(), format!("node_metric_{i}"))]))
                .collect()
        };
        let cycle = |labels: &[Labels], c: i64| {
            let mut b = Batch::default();
            for (i, l) in labels.iter().enumerate() {
                b.push(
                    l.clone(),
                    1_700_000_000_000 + c * 1_000,
                    (c * i as i64) as f64,
                );
            }
            b
        };
        let (some, more) = (labels(50), labels(51));
        let alone = |l: &[Labels], c| Encoder::new().encode(&cycle(l, c));
        let mut t = Transcoder::continuing(&alone(&some, 0)).unwrap();
        t.transcode(&alone(&some, 1)).unwrap();
        assert!(!t.dict.is_empty());
        // Same series: the maps and the last batch's dictionary stay, the points are new.
        t.continue_from(&alone(&some, 2)).unwrap();
        assert!(!t.dict.is_empty(), "the maps were made again");
        let (mut fresh, next) = (
            Transcoder::continuing(&alone(&some, 2)).unwrap(),
            alone(&some, 3),
        );
        assert_eq!(t.transcode(&next).unwrap(), fresh.transcode(&next).unwrap());
        // A batch of the group defines a series: the next key's context is made afresh.
        t.transcode(&alone(&more, 4)).unwrap();
        t.continue_from(&alone(&some, 5)).unwrap();
        assert!(t.dict.is_empty());
        // Other series in the key: made afresh too.
        t.continue_from(&alone(&more, 6)).unwrap();
        assert!(t.dict.is_empty());
        // A damaged key empties the transcoder.
        let mut bad = alone(&more, 7);
        bad.truncate(bad.len() - 3);
        t.transcode(&alone(&more, 8)).unwrap();
        assert!(t.continue_from(&bad).is_err());
        assert!(t.key.is_none() && t.enc.series_count() == 0);
    }

    #[test]
    fn a_decoder_refuses_flags_it_does_not_know_or_that_contradict() {
        // One timestamp without one point per entry, and an unknown bit.
        for flags in [
            FLAG_ONE_TIMESTAMP,
            FLAG_IN_ORDER | FLAG_ONE_TIMESTAMP,
            16,
            0x80,
        ] {
            let data = [FORMAT_V1, flags, 0, 0, 0];
            assert_eq!(
                Decoder::new().decode(&data),
                Err(DecodeError::Invalid("flags")),
                "{flags}"
            );
            assert_eq!(
                Transcoder::new().transcode(&data),
                Err(DecodeError::Invalid("flags")),
                "{flags}"
            );
        }
    }

    proptest! {
        #[test]
        fn compact_cycles_round_trip_on_one_stream(cycles in arb_cycles()) {
            let mut enc = Encoder::new();
            enc.set_compact(true);
            let mut dec = Decoder::new();
            let mut t = Transcoder::new();
            t.set_compact(true);
            let mut tdec = Decoder::new();
            for b in &cycles {
                prop_assert_eq!(&dec.decode(&enc.encode(b)).unwrap(), b);
                let got = t.transcode(&Encoder::new().encode(b)).unwrap();
                prop_assert_eq!(&tdec.decode(&got).unwrap(), b);
            }
        }

        /// A buffer group: the first batch stored as made, the rest coded against the group by
        /// a continuing transcoder; unchained, every one is self-contained again and decodes
        /// alone to what was stored.
        #[test]
        fn chained_batches_unchain_to_self_contained_ones(
            batches in prop::collection::vec(arb_batch(), 1..6),
            cycles in arb_cycles(),
        ) {
            for run in [&batches, &cycles] {
                let key = Encoder::new().encode(&run[0]);
                let mut chain = Transcoder::continuing(&key).unwrap();
                let mut un = Unchainer::new();
                prop_assert_eq!(&Decoder::new().decode(&un.unchain(&key).unwrap()).unwrap(), &run[0]);
                for b in &run[1..] {
                    let delta = chain.transcode(&Encoder::new().encode(b)).unwrap();
                    let alone = un.unchain(&delta).unwrap();
                    prop_assert_eq!(&Decoder::new().decode(&alone).unwrap(), b);
                }
            }
        }

        /// A transcoder kept from group to group (`continue_from`) writes, byte for byte,
        /// what one made afresh for each group (`continuing`) writes, whether it keeps its
        /// maps (groups of cycles with the same series) or not (a group defined something
        /// new, or the next key has other series).
        #[test]
        fn a_transcoder_kept_across_groups_writes_what_a_fresh_one_writes(
            cycles in arb_cycles(),
            batches in prop::collection::vec(arb_batch(), 1..6),
            size in 1usize..4,
        ) {
            let run: Vec<&Batch> = cycles.iter().chain(&batches).chain(&cycles).collect();
            let mut kept = Transcoder::new();
            for group in run.chunks(size) {
                let key = Encoder::new().encode(group[0]);
                kept.continue_from(&key).unwrap();
                let mut fresh = Transcoder::continuing(&key).unwrap();
                for b in &group[1..] {
                    let alone = Encoder::new().encode(b);
                    prop_assert_eq!(kept.transcode(&alone).unwrap(), fresh.transcode(&alone).unwrap());
                }
            }
        }

        #[test]
        fn batches_round_trip_on_one_stream(batches in prop::collection::vec(arb_batch(), 1..5)) {
            let mut enc = Encoder::new();
            let mut dec = Decoder::new();
            let mut compact = Encoder::new();
            compact.set_compact(true);
            let mut compact_dec = Decoder::new();
            for b in &batches {
                let bytes = enc.encode(b);
                prop_assert_eq!(&dec.decode(&bytes).unwrap(), b);
                prop_assert_eq!(&compact_dec.decode(&compact.encode(b)).unwrap(), b);
                prop_assert_eq!(&Decoder::new().decode(&Encoder::new().encode(b)).unwrap(), b);
            }
        }

        #[test]
        fn a_cycle_encoder_writes_what_a_fresh_encoder_writes(
            b in arb_batch(),
            ts in prop_oneof![any::<i64>(), 0i64..100_000],
        ) {
            let values: Vec<f64> = b.series.iter().map(|s| s.points.first().map_or(1.5, |p| p.value)).collect();
            let mut one = Batch::default();
            for (s, &v) in b.series.iter().zip(&values) {
                one.push(s.labels.clone(), ts, v);
            }
            let c = CycleEncoder::new(b.series.iter().map(|s| &s.labels));
            prop_assert_eq!(c.len(), b.series.len());
            prop_assert_eq!(c.encode(ts, &values), Encoder::new().encode(&one));
            // Twice from the same encoder: nothing carries over between batches.
            prop_assert_eq!(c.encode(ts, &values), Encoder::new().encode(&one));
        }

        #[test]
        fn transcoding_writes_what_decoding_and_encoding_write(
            batches in prop::collection::vec(arb_batch(), 1..6),
            repeat in prop::collection::vec(any::<bool>(), 6),
            compact in any::<bool>(),
        ) {
            let mut stream = Encoder::new();
            stream.set_compact(compact);
            let mut t = Transcoder::new();
            t.set_compact(compact);
            let mut dec = Decoder::new();
            let mut prev: Option<&Batch> = None;
            for (b, again) in batches.iter().zip(repeat) {
                // Runs of one dictionary take the cached path.
                let b = if again { prev.unwrap_or(b) } else { b };
                prev = Some(b);
                let stored = Encoder::new().encode(b);
                let want = stream.encode(&Decoder::new().decode(&stored).unwrap());
                let got = t.transcode(&stored).unwrap();
                prop_assert_eq!(&got, &want);
                prop_assert_eq!(&dec.decode(&got).unwrap(), b);
            }
        }

        #[test]
        fn a_damaged_batch_leaves_the_stream_context_alone(
            a in arb_batch(), b in arb_batch(), cut in 0usize..400,
        ) {
            let mut t = Transcoder::new();
            let mut dec = Decoder::new();
            prop_assert_eq!(&dec.decode(&t.transcode(&Encoder::new().encode(&a)).unwrap()).unwrap(), &a);
            let whole = Encoder::new().encode(&b);
            if cut < whole.len() {
                prop_assert!(t.transcode(&whole[..cut]).is_err());
            }
            prop_assert_eq!(&dec.decode(&t.transcode(&whole).unwrap()).unwrap(), &b);
        }

        #[test]
        fn chunks_round_trip(b in arb_batch()) {
            for s in &b.series {
                let mut got = vec![];
                decode_points(&encode_points(&s.points), &mut got).unwrap();
                prop_assert_eq!(&got, &s.points);
            }
        }

        #[test]
        fn a_time_window_of_a_chunk_is_what_the_whole_chunk_holds_in_it(
            b in arb_batch(),
            a in -5i64..40,
            len in 0i64..40,
        ) {
            for s in &b.series {
                let mut pts = s.points.clone();
                pts.sort_by_key(|p| p.ts);
                pts.dedup_by_key(|p| p.ts);
                let data = encode_points(&pts);
                let (lo, hi) = match pts.first() {
                    Some(p) => (p.ts.saturating_add(a * 1000), p.ts.saturating_add((a + len) * 1000)),
                    None => (0, 0),
                };
                let mut got = vec![];
                decode_points_between(&data, lo, hi, &mut got).unwrap();
                let want: Vec<Point> =
                    pts.iter().copied().filter(|p| p.ts >= lo && p.ts <= hi).collect();
                prop_assert_eq!(got, want);
            }
        }

        #[test]
        fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = Decoder::new().decode(&data);
            let mut with_format = vec![FORMAT_V1];
            with_format.extend_from_slice(&data);
            let _ = Decoder::new().decode(&with_format);
            let _ = decode_points(&data, &mut vec![]);
        }

        #[test]
        fn truncation_is_always_an_error(b in arb_batch(), cut in 0usize..400) {
            let bytes = Encoder::new().encode(&b);
            let cut = cut.min(bytes.len());
            if cut < bytes.len() {
                prop_assert!(Decoder::new().decode(&bytes[..cut]).is_err());
            }
        }

        #[test]
        fn flipped_bytes_never_panic(b in arb_batch(), pos in any::<usize>(), x in 1u8..) {
            let mut bytes = Encoder::new().encode(&b);
            if !bytes.is_empty() {
                let i = pos % bytes.len();
                bytes[i] ^= x;
                let _ = Decoder::new().decode(&bytes);
            }
        }
    }
}
