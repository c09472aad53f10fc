//! The TFRecord framing of TensorBoard event files: each record is
//! `u64 length (LE) | u32 masked_crc32c(length bytes) | data | u32 masked_crc32c(data)`, with
//! mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8 (tensorflow/core/lib/hash/crc32c.h, `Mask`).
use anyhow::{Context, Result};
use std::path::Path;

const MASK_DELTA: u32 = 0xa282_ead8;

/// TensorFlow's masked CRC-32C (Castagnoli) of `bytes`.
pub fn masked_crc(bytes: &[u8]) -> u32 {
    let c = crc32c::crc32c(bytes);
    ((c >> 15) | (c << 17)).wrapping_add(MASK_DELTA)
}

/// One framed record around `data`, ready for a single `write`.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// The records of a framed byte string, and whether it ended cleanly: a torn or corrupt tail (a process killed
/// mid-write) stops the reading there (`false`), as TensorBoard's own reader does.
pub fn parse(bytes: &[u8]) -> (Vec<&[u8]>, bool) {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some(head) = bytes.get(at..at + 12) else { return (records, false) };
        let (len, len_crc) = (&head[..8], u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")));
        if masked_crc(len) != len_crc {
            return (records, false);
        }
        let n = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
        let Some(data) = bytes.get(at + 12..at + 12 + n) else { return (records, false) };
        let Some(crc) = bytes.get(at + 12 + n..at + 16 + n) else { return (records, false) };
        if masked_crc(data) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return (records, false);
        }
        records.push(data);
        at += 16 + n;
    }
    (records, true)
}

/// The records of a file (see [`parse`]), owned.
pub fn read(path: &Path) -> Result<(Vec<Vec<u8>>, bool)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (records, clean) = parse(&bytes);
    Ok((records.into_iter().map(<[u8]>::to_vec).collect(), clean))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_published_check_value_and_tensorflows_mask() {
        // CRC-32C check value (RFC 3720, B.4): crc("123456789") = 0xE3069283.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        let c = 0xE306_9283u32;
        assert_eq!(masked_crc(b"123456789"), ((c >> 15) | (c << 17)).wrapping_add(0xa282_ead8));
        // 32 zero bytes: 0x8A9136AA (RFC 3720, B.4).
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8A91_36AA);
    }

    #[test]
    fn frames_read_back_and_a_torn_or_flipped_tail_stops_the_reading() {
        let mut bytes = frame(b"first");
        bytes.extend(frame(b""));
        bytes.extend(frame(&[7u8; 300]));
        let (records, clean) = parse(&bytes);
        assert!(clean);
        assert_eq!(records, vec![&b"first"[..], &b""[..], &[7u8; 300][..]]);
        for cut in [1, 5, 13, 100, 315] {
            let (r, clean) = parse(&bytes[..bytes.len() - cut]);
            assert!(!clean && r.len() == 2, "cut {cut}: {} records", r.len());
        }
        let mut flipped = bytes.clone();
        flipped[16 + 5 + 16 + 12 + 40] ^= 1;
        let (r, clean) = parse(&flipped);
        assert!(!clean && r.len() == 2, "a flipped data byte fails its CRC");
    }
}
