//! A minimal DER writer: just the encodings the certificate profile needs, so the TBS bytes are
//! fully under our control (the precertificate and final certificate must match byte for byte).

pub(crate) const SEQUENCE: u8 = 0x30;
pub(crate) const SET: u8 = 0x31;
pub(crate) const INTEGER: u8 = 0x02;
pub(crate) const BIT_STRING: u8 = 0x03;
pub(crate) const OCTET_STRING: u8 = 0x04;
pub(crate) const NULL: u8 = 0x05;
pub(crate) const OID: u8 = 0x06;
pub(crate) const UTF8_STRING: u8 = 0x0c;
pub(crate) const BOOLEAN: u8 = 0x01;

/// Appends `tag || length || content`.
pub(crate) fn tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
}

/// `tag || length || concat(parts)`.
pub(crate) fn wrap(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let content: Vec<u8> = parts.concat();
    let mut out = Vec::with_capacity(content.len() + 4);
    tlv(&mut out, tag, &content);
    out
}

pub(crate) fn seq(parts: &[&[u8]]) -> Vec<u8> {
    wrap(SEQUENCE, parts)
}

pub(crate) fn octet_string(content: &[u8]) -> Vec<u8> {
    wrap(OCTET_STRING, &[content])
}

pub(crate) fn utf8_string(s: &str) -> Vec<u8> {
    wrap(UTF8_STRING, &[s.as_bytes()])
}

/// A BIT STRING with no unused bits.
pub(crate) fn bit_string(bits: &[u8]) -> Vec<u8> {
    wrap(BIT_STRING, &[&[0u8], bits])
}

pub(crate) fn boolean_true() -> Vec<u8> {
    vec![BOOLEAN, 1, 0xff]
}

/// A non-negative INTEGER from big-endian magnitude bytes (leading zeros trimmed, sign byte added).
pub(crate) fn unsigned_integer(magnitude: &[u8]) -> Vec<u8> {
    let start = magnitude.iter().take_while(|b| **b == 0).count();
    let m = &magnitude[start.min(magnitude.len().saturating_sub(1))..];
    if m.first().is_some_and(|b| b & 0x80 != 0) {
        wrap(INTEGER, &[&[0u8], m])
    } else {
        wrap(INTEGER, &[m])
    }
}

pub(crate) fn small_integer(v: u8) -> Vec<u8> {
    unsigned_integer(&[v])
}

/// Encodes an OBJECT IDENTIFIER from its arcs.
pub(crate) fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = Vec::with_capacity(arcs.len() + 4);
    body.push((arcs[0] * 40 + arcs[1]) as u8);
    for &arc in &arcs[2..] {
        let mut stack = [0u8; 10];
        let mut n = 0;
        let mut v = arc;
        loop {
            stack[n] = (v & 0x7f) as u8;
            n += 1;
            v >>= 7;
            if v == 0 {
                break;
            }
        }
        for i in (0..n).rev() {
            body.push(stack[i] | if i > 0 { 0x80 } else { 0 });
        }
    }
    wrap(OID, &[&body])
}

/// `[n] EXPLICIT` (constructed) or IMPLICIT primitive context tags.
pub(crate) fn context(n: u8, constructed: bool, content: &[u8]) -> Vec<u8> {
    wrap(0x80 | if constructed { 0x20 } else { 0 } | n, &[content])
}

/// RFC 5280 time: UTCTime through 2049, GeneralizedTime from 2050, seconds precision.
pub(crate) fn time(t: time::OffsetDateTime) -> Vec<u8> {
    let t = t.to_offset(time::UtcOffset::UTC);
    let (y, mo, d, h, mi, s) = (t.year(), t.month() as u8, t.day(), t.hour(), t.minute(), t.second());
    if (1950..2050).contains(&y) {
        let text = format!("{:02}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z", y % 100);
        wrap(0x17, &[text.as_bytes()])
    } else {
        let text = format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z");
        wrap(0x18, &[text.as_bytes()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(
            oid(&[1, 3, 6, 1, 4, 1, 57264, 1, 8]),
            [6, 10, 0x2b, 6, 1, 4, 1, 0x83, 0xbf, 0x30, 1, 8]
        );
        assert_eq!(oid(&[2, 5, 29, 15]), [6, 3, 0x55, 0x1d, 0x0f]);
        assert_eq!(unsigned_integer(&[0, 0, 0x80]), [2, 2, 0, 0x80]);
        assert_eq!(unsigned_integer(&[0, 0x7f]), [2, 1, 0x7f]);
        assert_eq!(unsigned_integer(&[0]), [2, 1, 0]);
        let long = vec![0u8; 300];
        let w = octet_string(&long);
        assert_eq!(&w[..4], &[4, 0x82, 0x01, 0x2c]);
        let t = time::macros::datetime!(2026-11-25 16:31:05 UTC);
        assert_eq!(time(t), b"\x17\x0d261125163105Z");
        let t = time::macros::datetime!(2050-01-01 00:00:00 UTC);
        assert_eq!(time(t), b"\x18\x0f20500101000000Z");
    }
}
