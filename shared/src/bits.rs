//! Bit-level writer and reader used by the batch codec. Bits are written most significant
//! first; the reader never reads past its input and reports running out as an error.

/// Appends bits to a byte vector.
#[derive(Default)]
pub(crate) struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    pub(crate) fn new(out: Vec<u8>) -> Self {
        BitWriter { out, acc: 0, n: 0 }
    }

    /// Writes the low `bits` bits of `v` (0 ≤ bits ≤ 64).
    #[inline]
    pub(crate) fn write(&mut self, v: u64, bits: u32) {
        debug_assert!(bits <= 64);
        if bits == 0 {
            return;
        }
        if bits > 32 {
            self.write(v >> 32, bits - 32);
            self.write(v & 0xffff_ffff, 32);
            return;
        }
        let v = v & ((1u64 << bits) - 1);
        self.acc = (self.acc << bits) | v;
        self.n += bits;
        while self.n >= 8 {
            self.n -= 8;
            self.out.push((self.acc >> self.n) as u8);
        }
        self.acc &= (1u64 << self.n) - 1;
    }

    #[inline]
    pub(crate) fn bit(&mut self, b: bool) {
        self.write(b as u64, 1);
    }

    /// Writes an unsigned number of any size with a 6-bit length prefix: the length in bits
    /// (0 for zero), then the bits below the leading one. Lengths of 63 and 64 share the code
    /// 63, followed by all 64 bits.
    #[inline]
    pub(crate) fn varbits(&mut self, v: u64) {
        let len = 64 - v.leading_zeros();
        if len >= 63 {
            self.write(63, 6);
            self.write(v, 64);
        } else {
            self.write(len as u64, 6);
            if len > 1 {
                self.write(v, len - 1);
            }
        }
    }

    /// Pads the last byte with zero bits and returns the bytes.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push((self.acc << (8 - self.n)) as u8);
        }
        self.out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutOfBits;

/// Reads bits from a byte slice.
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    pos: usize, // in bits
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.data.len() * 8 - self.pos
    }

    #[inline]
    pub(crate) fn read(&mut self, bits: u32) -> Result<u64, OutOfBits> {
        if bits == 0 {
            return Ok(0);
        }
        if bits as usize > self.remaining() {
            return Err(OutOfBits);
        }
        if bits > 56 {
            // One 8-byte window holds at most 57 bits past any offset: split.
            let hi = self.read(bits - 32)?;
            return Ok((hi << 32) | self.read(32)?);
        }
        // The 8 bytes from the current one, big endian (zeros past the end), shifted so the
        // wanted bits are on top.
        let byte = self.pos / 8;
        let window = match self.data.get(byte..byte + 8) {
            Some(b) => u64::from_be_bytes(b.try_into().unwrap_or([0; 8])),
            None => {
                let mut buf = [0u8; 8];
                let tail = &self.data[byte..];
                buf[..tail.len()].copy_from_slice(tail);
                u64::from_be_bytes(buf)
            }
        };
        let v = (window << (self.pos % 8)) >> (64 - bits);
        self.pos += bits as usize;
        Ok(v)
    }

    #[inline]
    pub(crate) fn bit(&mut self) -> Result<bool, OutOfBits> {
        Ok(self.read(1)? == 1)
    }

    #[inline]
    pub(crate) fn varbits(&mut self) -> Result<u64, OutOfBits> {
        let len = self.read(6)? as u32;
        match len {
            0 => Ok(0),
            1 => Ok(1),
            63 => self.read(64),
            _ => Ok((1u64 << (len - 1)) | self.read(len - 1)?),
        }
    }
}

/// Maps signed to unsigned so small magnitudes stay small (0, -1, 1, -2 → 0, 1, 2, 3).
#[inline]
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The inverse of [`zigzag`].
#[inline]
pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_mixed_widths() {
        let vals: Vec<(u64, u32)> = vec![
            (1, 1),
            (0, 3),
            (5, 3),
            (0xabcdef, 24),
            (u64::MAX, 64),
            (7, 40),
            (0, 64),
        ];
        let mut w = BitWriter::default();
        for &(v, b) in &vals {
            w.write(v, b);
        }
        let bytes = w.finish();
        let mut r = BitReader::new(&bytes);
        for &(v, b) in &vals {
            assert_eq!(r.read(b).unwrap(), v, "{b} bits");
        }
        assert!(r.remaining() < 8);
    }

    #[test]
    fn varbits_round_trip_edges() {
        let vals = [
            0u64,
            1,
            2,
            3,
            255,
            1 << 40,
            (1 << 62) - 1,
            1 << 62,
            u64::MAX,
        ];
        let mut w = BitWriter::default();
        for &v in &vals {
            w.varbits(v);
        }
        let bytes = w.finish();
        let mut r = BitReader::new(&bytes);
        for &v in &vals {
            assert_eq!(r.varbits().unwrap(), v);
        }
    }

    proptest::proptest! {
        #[test]
        fn any_widths_round_trip(vals in proptest::collection::vec((proptest::prelude::any::<u64>(), 0u32..=64), 0..200)) {
            let mut w = BitWriter::default();
            for &(v, b) in &vals {
                w.write(v, b);
            }
            let bytes = w.finish();
            let mut r = BitReader::new(&bytes);
            for &(v, b) in &vals {
                let want = if b == 64 { v } else { v & ((1u64 << b) - 1) };
                proptest::prop_assert_eq!(r.read(b).unwrap(), want);
            }
            proptest::prop_assert!(r.remaining() < 8);
        }
    }

    #[test]
    fn reading_past_the_end_is_an_error() {
        let mut r = BitReader::new(&[0xff]);
        assert_eq!(r.read(8), Ok(0xff));
        assert_eq!(r.read(1), Err(OutOfBits));
    }

    #[test]
    fn zigzag_maps_small_magnitudes_to_small_codes() {
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, 12345, -98765] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
    }
}
