//! Certificate serial numbers, and the one text form they have everywhere: lower-case hex without
//! leading zeros (`0` for zero). The CA, the issuance record, the CT index and the audit queries
//! all produce and compare serials through [`Serial`], so their strings cannot drift apart.

use std::fmt;

use crate::Error;

/// A certificate serial number: a non-negative integer, kept as its big-endian magnitude without
/// leading zero bytes (so two encodings of one number are one value).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// The serial whose big-endian magnitude is `bytes` (a DER INTEGER's content, as
    /// `x509-parser`'s `raw_serial` gives it; a leading sign byte is just a leading zero here).
    pub fn from_be_bytes(bytes: &[u8]) -> Serial {
        let start = bytes.iter().take_while(|b| **b == 0).count();
        Serial(bytes[start..].to_vec())
    }

    /// A fresh positive serial of at most 159 bits (20 random bytes, top bit cleared), as RFC 5280
    /// and the CA/Browser Forum want: unpredictable, and never zero.
    pub fn random() -> Result<Serial, Error> {
        let mut s = [0u8; 20];
        aws_lc_rs::rand::fill(&mut s).map_err(|_| Error::Signer("random number generator failed".into()))?;
        s[0] &= 0x7f;
        if s.iter().all(|b| *b == 0) {
            s[19] = 1;
        }
        Ok(Serial::from_be_bytes(&s))
    }

    /// Reads a serial as people write it: hex in either case, with or without `0x`, colons
    /// (`00:1f`), surrounding spaces or leading zeros. `None` when what remains is not hex.
    pub fn parse_hex(text: &str) -> Option<Serial> {
        let t = text.trim();
        let t = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
        let digits: Vec<u8> = t.bytes().filter(|b| *b != b':').collect();
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let nibble = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
        // Pad to whole bytes on the left, then pair the digits.
        let pad = digits.len() % 2;
        let mut bytes = Vec::with_capacity(digits.len() / 2 + 1);
        let mut iter = std::iter::repeat_n(b'0', pad).chain(digits.iter().copied());
        while let (Some(hi), Some(lo)) = (iter.next(), iter.next()) {
            bytes.push(nibble(hi) << 4 | nibble(lo));
        }
        Some(Serial::from_be_bytes(&bytes))
    }

    /// The big-endian magnitude without leading zeros (empty for zero).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Lower-case hex without leading zeros; `0` for zero.
impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some((first, rest)) = self.0.split_first() else {
            return f.write_str("0");
        };
        write!(f, "{first:x}")?;
        for b in rest {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_text_form_without_leading_zeros() {
        assert_eq!(Serial::from_be_bytes(&[0x00, 0x0a, 0xbc]).to_string(), "abc");
        assert_eq!(Serial::from_be_bytes(&[0x01, 0x00]).to_string(), "100");
        assert_eq!(Serial::from_be_bytes(&[0xff]).to_string(), "ff");
        assert_eq!(Serial::from_be_bytes(&[0, 0]).to_string(), "0");
        assert_eq!(Serial::from_be_bytes(&[]).to_string(), "0");
        // A DER sign byte is a leading zero like any other.
        assert_eq!(Serial::from_be_bytes(&[0x00, 0x80]), Serial::from_be_bytes(&[0x80]));
        assert_eq!(Serial::from_be_bytes(&[0x00, 0x80]).as_bytes(), [0x80]);
    }

    #[test]
    fn parses_what_people_type() {
        let want = Serial::from_be_bytes(&[0x0a, 0xbd]);
        for text in ["abd", "ABD", "0x0ABD", "0X0abd", " 0a:bd ", "000abd"] {
            assert_eq!(Serial::parse_hex(text), Some(want.clone()), "{text:?}");
        }
        assert_eq!(Serial::parse_hex("0"), Some(Serial::from_be_bytes(&[])));
        assert_eq!(Serial::parse_hex("1f").unwrap().to_string(), "1f");
        for bad in ["", "0x", "xyz", "12 34", "-1", "१२"] {
            assert_eq!(Serial::parse_hex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn random_serials_are_positive_159_bit_and_round_trip() {
        let a = Serial::random().unwrap();
        let b = Serial::random().unwrap();
        assert_ne!(a, b);
        assert!(a.as_bytes().len() <= 20);
        assert!(a.as_bytes().first().is_some_and(|b| *b != 0));
        if a.as_bytes().len() == 20 {
            assert!(a.as_bytes()[0] < 0x80, "top bit cleared");
        }
        assert_eq!(Serial::parse_hex(&a.to_string()), Some(a));
    }
}
