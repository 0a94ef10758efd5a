//! Content codings of HTTP response bodies (RFC 9110 §8.4): `gzip` (also `x-gzip`),
//! `deflate`, `br` and `zstd`, undone in the reverse order of the `Content-Encoding` list
//! before any assertion sees the body, as blackbox_exporter decodes before its regexes. The
//! decoded length is what `probe_http_uncompressed_body_length` reports. Pure: bytes in,
//! bytes out.

use std::io::Read;

/// The codings [`decode`] undoes, as a reason lists them.
pub const SUPPORTED: &str = "gzip, deflate, br, zstd";

/// The codings of a `Content-Encoding` value (or of several header lines joined with `,`),
/// lower case, in the order the server applied them; `identity` is left out.
pub fn codings(header: &str) -> Vec<String> {
    header
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect()
}

/// Undoes every coding of `header` on `body`, keeping at most `max` decoded bytes (the rest
/// is not decoded, as the rest of a plain body is not read). `truncated` says `body` was cut
/// short at the read limit: an early end of the coded data is then expected, and what was
/// decoded up to it is kept.
///
/// Errors: a coding other than [`SUPPORTED`], or a body that is not valid in its coding,
/// named together with the header, e.g. `body is not valid gzip (Content-Encoding: gzip):
/// invalid gzip header`.
pub fn decode(header: &str, body: Vec<u8>, truncated: bool, max: u64) -> Result<Vec<u8>, String> {
    let mut data = body;
    for coding in codings(header).iter().rev() {
        data = decode_one(coding, &data, truncated, max)
            .map_err(|e| format!("body is not valid {coding} (Content-Encoding: {header}): {e}"))?;
    }
    Ok(data)
}

/// Does `b` start with a zlib header (RFC 1950: method 8, check bits)?
fn is_zlib(b: &[u8]) -> bool {
    matches!(b, [cmf, flg, ..] if cmf & 0x0f == 8 && ((u16::from(*cmf) << 8) | u16::from(*flg)) % 31 == 0)
}

fn decode_one(coding: &str, input: &[u8], truncated: bool, max: u64) -> Result<Vec<u8>, String> {
    let reader: Box<dyn Read + '_> = match coding {
        "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(input)),
        // RFC 9110's deflate is the zlib format; some servers send bare deflate data, which
        // browsers accept as well.
        "deflate" if is_zlib(input) => Box::new(flate2::read::ZlibDecoder::new(input)),
        "deflate" => Box::new(flate2::read::DeflateDecoder::new(input)),
        "br" => Box::new(brotli::Decompressor::new(input, 4096)),
        "zstd" => match ruzstd::decoding::StreamingDecoder::new(input) {
            Ok(d) => Box::new(d),
            // Cut within the frame header: nothing decodable was read.
            Err(_) if truncated => return Ok(Vec::new()),
            Err(e) => return Err(e.to_string()),
        },
        other => {
            return Err(format!(
                "{other:?} is not a supported content coding (supported: {SUPPORTED})"
            ));
        }
    };
    let mut out = Vec::new();
    match reader.take(max).read_to_end(&mut out) {
        Ok(_) => Ok(out),
        // Bytes decoded before the error are in `out` (Read::read_to_end).
        Err(_) if truncated => Ok(out),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const TEXT: &[u8] = b"the quick brown fox jumps over the lazy dog; the quick brown fox again";

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }
    fn zlib(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }
    fn raw_deflate(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }
    fn br(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(b).unwrap();
        }
        out
    }
    fn zstd(b: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(b, ruzstd::encoding::CompressionLevel::Fastest)
    }

    #[test]
    fn every_supported_coding_decodes() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("", TEXT.to_vec()),
            ("identity", TEXT.to_vec()),
            ("gzip", gzip(TEXT)),
            ("x-gzip", gzip(TEXT)),
            ("GZip", gzip(TEXT)),
            ("deflate", zlib(TEXT)),
            ("deflate", raw_deflate(TEXT)),
            ("br", br(TEXT)),
            ("zstd", zstd(TEXT)),
            // Applied in order, so undone from the last.
            ("gzip, br", br(&gzip(TEXT))),
            ("zstd,identity, gzip", gzip(&zstd(TEXT))),
        ];
        for (header, body) in cases {
            assert_eq!(
                decode(header, body, false, 1 << 20).as_deref(),
                Ok(TEXT),
                "{header}"
            );
        }
    }

    #[test]
    fn bodies_invalid_in_their_coding_and_unknown_codings_are_reasons() {
        let mut cut = gzip(TEXT);
        cut.truncate(cut.len() - 12);
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "gzip",
                TEXT.to_vec(),
                "body is not valid gzip (Content-Encoding: gzip): invalid gzip header",
            ),
            (
                "gzip",
                cut.clone(),
                "body is not valid gzip (Content-Encoding: gzip): ",
            ),
            (
                "br",
                TEXT.to_vec(),
                "body is not valid br (Content-Encoding: br): ",
            ),
            (
                "zstd",
                TEXT.to_vec(),
                "body is not valid zstd (Content-Encoding: zstd): ",
            ),
            (
                "deflate",
                TEXT.to_vec(),
                "body is not valid deflate (Content-Encoding: deflate): ",
            ),
            (
                "compress",
                TEXT.to_vec(),
                "body is not valid compress (Content-Encoding: compress): \"compress\" is not a supported content coding (supported: gzip, deflate, br, zstd)",
            ),
        ];
        for (header, body, want) in cases {
            let e = decode(header, body, false, 1 << 20).unwrap_err();
            assert!(e.starts_with(want), "{header}: {e}");
        }
        // The same cut body, when it was cut at the read limit, yields what decoded so far.
        let partial = decode("gzip", cut, true, 1 << 20).unwrap();
        assert!(TEXT.starts_with(&partial), "{partial:?}");
    }

    #[test]
    fn decoded_bodies_stop_at_the_limit() {
        let big = vec![b'a'; 100_000];
        for (header, body) in [("gzip", gzip(&big)), ("br", br(&big)), ("zstd", zstd(&big))] {
            assert_eq!(
                decode(header, body, false, 1000).map(|b| b.len()),
                Ok(1000),
                "{header}"
            );
        }
    }
}
