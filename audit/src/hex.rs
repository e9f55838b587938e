//! Hex text for digests, log ids and record heads (lower-case, fixed width). Serials have their
//! own form, [`keyless_ca::Serial`].

use keyless_ctlog::merkle::Hash;

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}

/// A 32-byte hash from 64 lower-case hex digits; `None` otherwise.
pub(crate) fn unhex32(s: &str) -> Option<Hash> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_32_byte_hashes_only() {
        let h: Hash = std::array::from_fn(|i| i as u8 * 7);
        assert_eq!(unhex32(&hex(&h)), Some(h));
        assert_eq!(unhex32(&hex(&h[..31])), None);
        assert_eq!(unhex32(&"zz".repeat(32)), None);
        assert_eq!(unhex32(&"é".repeat(32)), None, "multi-byte text is not hex");
    }
}
