//! A minimal DER writer and TLV reader: just what the certificate profile and RFC 6962 need, so
//! the TBS bytes are fully under our control (the precertificate and final certificate must match
//! byte for byte, and the CT log must rebuild one from the other).

pub const SEQUENCE: u8 = 0x30;
pub const SET: u8 = 0x31;
pub const INTEGER: u8 = 0x02;
pub const BIT_STRING: u8 = 0x03;
pub const OCTET_STRING: u8 = 0x04;
pub const NULL: u8 = 0x05;
pub const OID: u8 = 0x06;
pub const UTF8_STRING: u8 = 0x0c;
pub const BOOLEAN: u8 = 0x01;

/// Appends `tag || length || content`.
pub fn tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
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
pub fn wrap(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let content: Vec<u8> = parts.concat();
    let mut out = Vec::with_capacity(content.len() + 4);
    tlv(&mut out, tag, &content);
    out
}

pub fn seq(parts: &[&[u8]]) -> Vec<u8> {
    wrap(SEQUENCE, parts)
}

pub fn octet_string(content: &[u8]) -> Vec<u8> {
    wrap(OCTET_STRING, &[content])
}

pub fn utf8_string(s: &str) -> Vec<u8> {
    wrap(UTF8_STRING, &[s.as_bytes()])
}

/// A BIT STRING with no unused bits.
pub fn bit_string(bits: &[u8]) -> Vec<u8> {
    wrap(BIT_STRING, &[&[0u8], bits])
}

pub fn boolean_true() -> Vec<u8> {
    vec![BOOLEAN, 1, 0xff]
}

/// A non-negative INTEGER from big-endian magnitude bytes (leading zeros trimmed, sign byte added).
pub fn unsigned_integer(magnitude: &[u8]) -> Vec<u8> {
    let start = magnitude.iter().take_while(|b| **b == 0).count();
    let m = &magnitude[start.min(magnitude.len().saturating_sub(1))..];
    if m.first().is_some_and(|b| b & 0x80 != 0) {
        wrap(INTEGER, &[&[0u8], m])
    } else {
        wrap(INTEGER, &[m])
    }
}

pub fn small_integer(v: u8) -> Vec<u8> {
    unsigned_integer(&[v])
}

/// Encodes an OBJECT IDENTIFIER from its arcs.
pub fn oid(arcs: &[u64]) -> Vec<u8> {
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
pub fn context(n: u8, constructed: bool, content: &[u8]) -> Vec<u8> {
    wrap(0x80 | if constructed { 0x20 } else { 0 } | n, &[content])
}

/// RFC 5280 time: UTCTime through 2049, GeneralizedTime from 2050, seconds precision.
pub fn time(t: time::OffsetDateTime) -> Vec<u8> {
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

/// One decoded TLV: its tag, the whole encoding and the content.
#[derive(Debug, Clone, Copy)]
pub struct Tlv<'a> {
    /// The identifier octet (single-byte tags only, which is all X.509 needs).
    pub tag: u8,
    /// Tag, length and content.
    pub raw: &'a [u8],
    /// Content only.
    pub content: &'a [u8],
}

/// Reads one DER TLV from the front of `input`, returning it and the rest.
pub fn read_tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let tag = *input.first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let first = *input.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = input.get(2..2 + n)?;
        if bytes[0] == 0 {
            return None;
        }
        (bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize), 2 + n)
    };
    let end = header.checked_add(len)?;
    let raw = input.get(..end)?;
    Some((
        Tlv {
            tag,
            raw,
            content: &raw[header..],
        },
        &input[end..],
    ))
}

/// Splits a constructed value's content into its elements.
pub fn read_all(mut content: &[u8]) -> Option<Vec<Tlv<'_>>> {
    let mut out = Vec::new();
    while !content.is_empty() {
        let (t, rest) = read_tlv(content)?;
        out.push(t);
        content = rest;
    }
    Some(out)
}

/// Re-encodes a DER TBSCertificate without the extension whose encoded OID is `oid_der`
/// (`06 len ...`). Returns `None` if the input is not a TBS with that extension. Used to rebuild
/// the RFC 6962 precertificate TBS without the poison or SCT-list extension.
pub fn tbs_without_extension(tbs: &[u8], oid_der: &[u8]) -> Option<Vec<u8>> {
    let (outer, rest) = read_tlv(tbs)?;
    if outer.tag != SEQUENCE || !rest.is_empty() {
        return None;
    }
    let fields = read_all(outer.content)?;
    let mut found = false;
    let mut parts: Vec<Vec<u8>> = Vec::with_capacity(fields.len());
    for f in &fields {
        if f.tag != 0xa3 {
            parts.push(f.raw.to_vec());
            continue;
        }
        let (list, rest) = read_tlv(f.content)?;
        if list.tag != SEQUENCE || !rest.is_empty() {
            return None;
        }
        let kept: Vec<&[u8]> = read_all(list.content)?
            .into_iter()
            .filter(|ext| {
                let drop = read_tlv(ext.content).is_some_and(|(id, _)| id.raw == oid_der);
                found |= drop;
                !drop
            })
            .map(|e| e.raw)
            .collect();
        parts.push(context(3, true, &seq(&kept)));
    }
    if !found {
        return None;
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    Some(seq(&refs))
}
