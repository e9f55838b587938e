//! Inputs for the fuzz properties: arbitrary bytes, and valid seeds mutated with knowledge of their
//! format (JSON, YAML, DER, PEM, compact JWS, base64 inside JSON strings), so that most inputs get
//! past the first syntax check and reach the code behind it.
//!
//! A mutation is a list of [`Op`]s drawn by proptest and applied to a seed in order. Ops are plain
//! numbers interpreted modulo the input, so proptest shrinks a failure towards fewer, simpler ops
//! on the same seed.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;

/// Largest input the properties feed (the time bound is stated for inputs up to this size).
pub(crate) const MAX_INPUT: usize = 64 * 1024;

/// One input, printed as escaped text so a failure report is readable.
#[derive(Clone)]
pub(crate) struct Input(pub(crate) Vec<u8>);

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = &self.0[..self.0.len().min(2048)];
        write!(f, "{} bytes: b\"{}\"", self.0.len(), shown.escape_ascii())?;
        if shown.len() < self.0.len() {
            write!(f, "…")?;
        }
        Ok(())
    }
}

/// How a seed is structured, which decides the structure-aware mutations it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Opaque bytes: byte-level mutations only.
    Bytes,
    /// JSON text.
    Json,
    /// YAML text (mutated as its JSON data model, re-emitted as JSON, which YAML reads).
    Yaml,
    /// DER.
    Der,
    /// PEM around DER.
    Pem,
    /// A compact JWS: base64url JSON header and payload, base64url signature.
    Jws,
    /// Text (a template, a URL): byte-level mutations plus the dictionary.
    Text,
}

/// A valid input and its format.
#[derive(Debug, Clone)]
pub(crate) struct Seed {
    /// The bytes.
    pub(crate) bytes: Vec<u8>,
    /// Their format.
    pub(crate) format: Format,
}

impl Seed {
    /// A seed of the given format.
    pub(crate) fn new(format: Format, bytes: impl Into<Vec<u8>>) -> Seed {
        Seed {
            bytes: bytes.into(),
            format,
        }
    }
}

/// One mutation step: `kind` picks the operation, the numbers pick positions and sizes.
#[derive(Debug, Clone)]
pub(crate) struct Op {
    kind: u8,
    a: u32,
    b: u32,
    c: u32,
    data: Vec<u8>,
}

fn op() -> impl Strategy<Value = Op> {
    (
        any::<u8>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(|(kind, a, b, c, data)| Op { kind, a, b, c, data })
}

/// Arbitrary bytes: mostly short, sometimes up to [`MAX_INPUT`].
pub(crate) fn arbitrary() -> impl Strategy<Value = Input> {
    prop_oneof![
        6 => proptest::collection::vec(any::<u8>(), 0..512),
        2 => proptest::collection::vec(any::<u8>(), 512..8192),
        1 => proptest::collection::vec(any::<u8>(), 8192..MAX_INPUT),
    ]
    .prop_map(Input)
}

/// Seeds mutated by up to 7 ops, with `dict` (format-specific tokens) as extra material.
pub(crate) fn mutated(seeds: Vec<Seed>, dict: Vec<Vec<u8>>) -> impl Strategy<Value = Input> {
    assert!(!seeds.is_empty(), "a mutation strategy needs seeds");
    let seeds = std::sync::Arc::new(seeds);
    let dict = std::sync::Arc::new(dict);
    // Mostly one to three ops, so most inputs stay close enough to valid to get deep.
    let ops = prop_oneof![
        6 => proptest::collection::vec(op(), 1..3),
        3 => proptest::collection::vec(op(), 3..8),
        1 => proptest::collection::vec(op(), 0..1),
    ];
    (any::<Index>(), ops).prop_map(move |(i, ops)| {
        let seed = &seeds[i.index(seeds.len())];
        let mut m = Mutator {
            seeds: &seeds,
            dict: &dict,
        };
        let mut bytes = seed.bytes.clone();
        for op in &ops {
            bytes = m.apply(seed.format, bytes, op);
            bytes.truncate(MAX_INPUT);
        }
        Input(bytes)
    })
}

/// Both kinds of input, one mutated seed in four being arbitrary bytes instead.
pub(crate) fn inputs(seeds: Vec<Seed>, dict: Vec<Vec<u8>>) -> impl Strategy<Value = Input> {
    prop_oneof![1 => arbitrary(), 3 => mutated(seeds, dict)]
}

/// Tokens every format gets: numbers at the limits, invalid UTF-8, control characters, and
/// the openers of deep nesting.
pub(crate) fn common_dict() -> Vec<Vec<u8>> {
    let mut d: Vec<Vec<u8>> = [
        "0",
        "-1",
        "-0",
        "255",
        "256",
        "65535",
        "65536",
        "2147483647",
        "2147483648",
        "-2147483649",
        "4294967296",
        "9007199254740993",
        "9223372036854775807",
        "-9223372036854775809",
        "18446744073709551615",
        "18446744073709551616",
        "1e308",
        "1e309",
        "-1e400",
        "1e-400",
        "0.1",
        "NaN",
        "Infinity",
        "null",
        "true",
        "\"\"",
        "[]",
        "{}",
        "[",
        "{",
        "{\"a\":",
        "\\u0000",
        "\\ud800",
        "\\udfff\\ud800",
        "%00",
        "\u{202e}",
        "\u{feff}",
        "\u{10ffff}",
        "=",
        ".",
        "..",
        "/",
        "*",
        ":",
        "@",
        "\r\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    for bad in [
        &[0xff_u8][..],
        &[0xc3, 0x28],
        &[0xed, 0xa0, 0x80],
        &[0xf4, 0x90, 0x80, 0x80],
        &[0xc0, 0xaf],
        &[0],
    ] {
        d.push(bad.to_vec());
    }
    d
}

struct Mutator<'a> {
    seeds: &'a [Seed],
    dict: &'a [Vec<u8>],
}

/// `x` modulo `n` (0 when `n` is 0).
fn at(x: u32, n: usize) -> usize {
    if n == 0 { 0 } else { x as usize % n }
}

impl Mutator<'_> {
    fn apply(&mut self, format: Format, input: Vec<u8>, op: &Op) -> Vec<u8> {
        // Half the ops are byte-level whatever the format; the rest understand it.
        if op.kind < 128 || format == Format::Bytes || format == Format::Text {
            return self.bytes(input, op);
        }
        let structured = match format {
            Format::Json => self.json_text(&input, op),
            Format::Yaml => self.yaml_text(&input, op),
            Format::Der => Some(self.der(&input, op)),
            Format::Pem => self.pem(&input, op),
            Format::Jws => self.jws(&input, op),
            Format::Bytes | Format::Text => None,
        };
        // Input that no longer parses as its format (an earlier op broke it) gets byte ops.
        structured.unwrap_or_else(|| self.bytes(input, op))
    }

    fn dict_token(&self, x: u32) -> Vec<u8> {
        static COMMON: std::sync::LazyLock<Vec<Vec<u8>>> = std::sync::LazyLock::new(common_dict);
        let common = &*COMMON;
        let n = self.dict.len() + common.len();
        let i = at(x, n);
        if i < self.dict.len() {
            self.dict[i].clone()
        } else {
            common[i - self.dict.len()].clone()
        }
    }

    /// Byte-level mutations.
    fn bytes(&mut self, mut v: Vec<u8>, op: &Op) -> Vec<u8> {
        let len = v.len();
        match op.kind % 12 {
            // Flip one bit.
            0 if len > 0 => {
                let i = at(op.a, len);
                v[i] ^= 1 << (op.b % 8);
            }
            // Set a byte to a value that often matters.
            1 if len > 0 => {
                const SPECIAL: &[u8] = b"\x00\xff\x7f\x80\"\\.={}[],:-+0 \n\xc0";
                let i = at(op.a, len);
                v[i] = SPECIAL[at(op.b, SPECIAL.len())];
            }
            // Truncate.
            2 => v.truncate(at(op.a, len + 1)),
            // Delete a range.
            3 if len > 0 => {
                let i = at(op.a, len);
                let n = (op.b as usize % 64).min(len - i);
                v.drain(i..i + n);
            }
            // Insert random bytes.
            4 => {
                let i = at(op.a, len + 1);
                v.splice(i..i, op.data.iter().copied());
            }
            // A long run: repeat a slice of the input (or a dictionary token) many times.
            5 => {
                let i = at(op.a, len + 1);
                let unit = if len > 0 && op.c.is_multiple_of(2) {
                    let s = at(op.c / 2, len);
                    let n = 1 + (op.b as usize % 16).min(len - s - 1);
                    v[s..s + n].to_vec()
                } else {
                    self.dict_token(op.c / 2)
                };
                let times = 1 + (op.b as usize >> 4) % (MAX_INPUT / unit.len().max(1)).max(1);
                let run: Vec<u8> = unit.iter().copied().cycle().take(unit.len() * times).collect();
                v.splice(i..i, run);
            }
            // Splice in a slice of another seed.
            6 => {
                let other = &self.seeds[at(op.c, self.seeds.len())].bytes;
                if !other.is_empty() {
                    let s = at(op.b, other.len());
                    let n = (other.len() - s).min(1 + op.data.len() * 64);
                    let i = at(op.a, len + 1);
                    let end = (i + op.data.len()).min(len);
                    v.splice(i..end, other[s..s + n].iter().copied());
                }
            }
            // Insert a dictionary token.
            7 | 8 => {
                let i = at(op.a, len + 1);
                v.splice(i..i, self.dict_token(op.b));
            }
            // Swap two ranges of equal length.
            9 if len > 1 => {
                let n = 1 + (op.c as usize % 32).min(len / 2 - 1);
                let i = at(op.a, len - n + 1);
                let j = at(op.b, len - n + 1);
                if i + n <= j || j + n <= i {
                    for k in 0..n {
                        v.swap(i + k, j + k);
                    }
                }
            }
            // Overwrite with random bytes.
            10 if len > 0 => {
                let i = at(op.a, len);
                for (k, b) in op.data.iter().enumerate() {
                    if let Some(slot) = v.get_mut(i + k) {
                        *slot = *b;
                    }
                }
            }
            // Replace everything after a point with a dictionary token (a cut-off value).
            11 => {
                v.truncate(at(op.a, len + 1));
                v.extend(self.dict_token(op.b));
            }
            _ => v.extend_from_slice(&op.data),
        }
        v
    }

    // ---- JSON and YAML ----

    fn json_text(&mut self, input: &[u8], op: &Op) -> Option<Vec<u8>> {
        let mut value: Value = serde_json::from_slice(input).ok()?;
        self.json(&mut value, op);
        serde_json::to_vec(&value).ok()
    }

    fn yaml_text(&mut self, input: &[u8], op: &Op) -> Option<Vec<u8>> {
        let text = std::str::from_utf8(input).ok()?;
        let mut value: Value = serde_saphyr::from_str(text).ok()?;
        self.json(&mut value, op);
        // Emitted as JSON (valid YAML) half the time, as YAML block style otherwise.
        if op.c.is_multiple_of(2) {
            serde_json::to_vec(&value).ok()
        } else {
            serde_saphyr::to_string(&value).ok().map(String::into_bytes)
        }
    }

    /// Mutates one node of a JSON value, picked by `op.a` in document order.
    fn json(&mut self, root: &mut Value, op: &Op) {
        let count = count_nodes(root);
        let target = at(op.a, count);
        let mut seen = 0;
        let Some(node) = nth_node(root, target, &mut seen) else {
            return;
        };
        match op.kind % 12 {
            // A value at a limit, of the same or another type.
            0 => *node = limit_value(op.b),
            // Delete a member, or an element.
            1 => match node {
                Value::Object(m) if !m.is_empty() => {
                    let k = m.keys().nth(at(op.b, m.len())).cloned().unwrap_or_default();
                    m.remove(&k);
                }
                Value::Array(a) if !a.is_empty() => {
                    a.remove(at(op.b, a.len()));
                }
                other => *other = Value::Null,
            },
            // Swap the values of two members (a field swap).
            2 => {
                if let Value::Object(m) = node
                    && m.len() > 1
                {
                    let keys: Vec<String> = m.keys().cloned().collect();
                    let (k1, k2) = (&keys[at(op.b, keys.len())], &keys[at(op.c, keys.len())]);
                    let v1 = m.get(k1).cloned().unwrap_or(Value::Null);
                    let v2 = m.get(k2).cloned().unwrap_or(Value::Null);
                    m.insert(k1.clone(), v2);
                    m.insert(k2.clone(), v1);
                }
            }
            // Rename a member: snake_case / camelCase / case change / a dictionary token.
            3 => {
                if let Value::Object(m) = node
                    && !m.is_empty()
                {
                    let k = m.keys().nth(at(op.b, m.len())).cloned().unwrap_or_default();
                    let v = m.remove(&k).unwrap_or(Value::Null);
                    let new = match op.c % 4 {
                        0 => snake(&k),
                        1 => k.to_uppercase(),
                        2 => String::from_utf8_lossy(&self.dict_token(op.c / 4)).into_owned(),
                        _ => format!("{k}{k}"),
                    };
                    m.insert(new, v);
                }
            }
            // Deep nesting around the node (serde_json's limit is 128; YAML has its own).
            4 => {
                let depth = 1 + op.b as usize % 300;
                let mut v = std::mem::take(node);
                for i in 0..depth {
                    v = if (i + op.c as usize).is_multiple_of(2) {
                        Value::Array(vec![v])
                    } else {
                        let mut m = serde_json::Map::new();
                        m.insert("a".into(), v);
                        Value::Object(m)
                    };
                }
                *node = v;
            }
            // Many members or elements.
            5 => {
                let n = 1 + op.b as usize % 2000;
                *node = if op.c.is_multiple_of(2) {
                    Value::Array(vec![node.clone(); n.min(200)])
                } else {
                    Value::Object((0..n).map(|i| (format!("k{i}"), Value::from(i))).collect())
                };
            }
            // Copy another node of the document here (a value of the wrong kind, or duplicated).
            6 => {
                let mut seen = 0;
                let copy = nth_node(&mut root.clone(), at(op.b, count), &mut seen).map(|v| v.clone());
                let mut seen = 0;
                if let (Some(copy), Some(node)) = (copy, nth_node(root, target, &mut seen)) {
                    *node = copy;
                }
            }
            // Mutate a string's contents, looking inside base64, PEM and compact JWS strings.
            _ => {
                if let Value::String(s) = node {
                    *s = self.string(s, op);
                } else {
                    *node = Value::String(String::from_utf8_lossy(&self.dict_token(op.b)).into_owned());
                }
            }
        }
    }

    /// Mutates a string value, decoding the encodings protocols nest inside JSON strings.
    fn string(&mut self, s: &str, op: &Op) -> String {
        let sub = Op {
            kind: op.kind.wrapping_mul(31).wrapping_add(op.c as u8),
            a: op.b,
            b: op.c,
            c: op.a,
            data: op.data.clone(),
        };
        if s.starts_with("-----BEGIN")
            && let Some(m) = self.pem(
                s.as_bytes(),
                &Op {
                    kind: sub.kind | 128,
                    ..sub.clone()
                },
            )
        {
            return String::from_utf8_lossy(&m).into_owned();
        }
        if s.len() > 8
            && s.bytes().filter(|b| *b == b'.').count() == 2
            && !s.contains(' ')
            && let Some(m) = self.jws(
                s.as_bytes(),
                &Op {
                    kind: sub.kind | 128,
                    ..sub.clone()
                },
            )
        {
            return String::from_utf8_lossy(&m).into_owned();
        }
        if s.len() >= 8
            && let Ok(inner) = STANDARD.decode(s)
        {
            // Base64 of DER, PEM or text: mutate what it encodes.
            let inner = if inner.starts_with(b"-----BEGIN") {
                self.pem(
                    &inner,
                    &Op {
                        kind: sub.kind | 128,
                        ..sub.clone()
                    },
                )
                .unwrap_or_else(|| self.bytes(inner.clone(), &sub))
            } else if inner.first() == Some(&0x30) {
                self.der(&inner, &sub)
            } else {
                self.bytes(inner, &sub)
            };
            return STANDARD.encode(inner);
        }
        String::from_utf8_lossy(&self.bytes(s.as_bytes().to_vec(), &sub)).into_owned()
    }

    // ---- DER, PEM, JWS ----

    /// Mutates one TLV of a DER tree, picked by `op.a` in document order.
    fn der(&mut self, input: &[u8], op: &Op) -> Vec<u8> {
        let mut nodes = Vec::new();
        tlvs(input, 0, 0, &mut nodes);
        if nodes.is_empty() {
            return self.bytes(input.to_vec(), op);
        }
        let n = nodes[at(op.a, nodes.len())];
        let (start, header_len, end) = (n.start, n.header, n.end);
        let mut out = input.to_vec();
        match op.kind % 10 {
            // A huge or indefinite length.
            0 => {
                let len_bytes: &[u8] = match op.b % 4 {
                    0 => &[0x84, 0xff, 0xff, 0xff, 0xff],
                    1 => &[0x80],
                    2 => &[0x88, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                    _ => &[0x81, 0x01], // non-minimal long form
                };
                out.splice(start + 1..start + header_len, len_bytes.iter().copied());
            }
            // Another tag (class, constructed bit, or number).
            1 => {
                out[start] = [
                    0x30, 0x31, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0c, 0x13, 0x17, 0xa0, 0xa3, 0x1f, 0x00,
                ][at(op.b, 14)]
            }
            // Delete the TLV (lengths above it now lie).
            2 => {
                out.drain(start..end);
            }
            // Duplicate the TLV.
            3 => {
                let tlv = out[start..end].to_vec();
                out.splice(end..end, tlv);
            }
            // Swap with another TLV that does not overlap it.
            4 => {
                let m = nodes[at(op.b, nodes.len())];
                if m.end <= start || end <= m.start {
                    let (first, second) = if m.start < start { (m, n) } else { (n, m) };
                    let a = input[first.start..first.end].to_vec();
                    let b = input[second.start..second.end].to_vec();
                    let mut v = input[..first.start].to_vec();
                    v.extend(&b);
                    v.extend(&input[first.end..second.start]);
                    v.extend(&a);
                    v.extend(&input[second.end..]);
                    out = v;
                }
            }
            // Nest the TLV in many SEQUENCEs (definite lengths, correct).
            5 => {
                let mut tlv = out[start..end].to_vec();
                for _ in 0..1 + op.b as usize % 200 {
                    tlv = der_wrap(0x30, &tlv);
                }
                out.splice(start..end, tlv);
            }
            // Content replaced by an INTEGER / length at a limit, lengths fixed up.
            6 => {
                let content: Vec<u8> = match op.b % 6 {
                    0 => vec![],
                    1 => vec![0x00],
                    2 => vec![0x80],
                    3 => vec![0xff; 9],
                    4 => vec![0x00, 0x00, 0x01],
                    _ => vec![0x41; 1 + op.c as usize % 8192],
                };
                out.splice(start..end, der_wrap(input[start], &content));
            }
            // Mutate the content bytes and re-encode with a correct length.
            _ => {
                let content = input[start + header_len..end].to_vec();
                let m = self.bytes(
                    content,
                    &Op {
                        kind: op.c as u8,
                        ..op.clone()
                    },
                );
                out.splice(start..end, der_wrap(input[start], &m));
            }
        }
        out
    }

    fn pem(&mut self, input: &[u8], op: &Op) -> Option<Vec<u8>> {
        let text = std::str::from_utf8(input).ok()?;
        let begin = text.find("-----BEGIN ")?;
        let label_end = begin + 11 + text[begin + 11..].find("-----")?;
        let label = &text[begin + 11..label_end];
        let body_start = label_end + 5;
        let end = body_start + text[body_start..].find("-----END ")?;
        let b64: String = text[body_start..end].chars().filter(|c| !c.is_whitespace()).collect();
        let der = STANDARD.decode(b64).ok()?;
        let (label, der) = match op.b % 8 {
            0 => (String::from_utf8_lossy(&self.dict_token(op.c)).into_owned(), der),
            1 => (label.to_lowercase(), der),
            _ => (label.to_string(), self.der(&der, op)),
        };
        let body = STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap_or(""))
            .collect();
        let mut out = text[..begin].to_string();
        out.push_str(&format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        ));
        Some(out.into_bytes())
    }

    fn jws(&mut self, input: &[u8], op: &Op) -> Option<Vec<u8>> {
        let text = std::str::from_utf8(input).ok()?;
        let mut parts: Vec<String> = text.split('.').map(str::to_string).collect();
        if parts.len() != 3 {
            return None;
        }
        let i = at(op.b, 3);
        match op.c % 4 {
            // Re-encode the part with padding or in the standard alphabet.
            0 => {
                let raw = URL_SAFE_NO_PAD.decode(&parts[i]).ok()?;
                parts[i] = if op.c.is_multiple_of(8) {
                    STANDARD.encode(raw)
                } else {
                    format!("{}==", parts[i])
                };
            }
            // Swap two parts.
            1 => parts.swap(i, at(op.c / 4, 3)),
            // Mutate what a part encodes: JSON for header and payload, bytes for the signature.
            _ => {
                let raw = URL_SAFE_NO_PAD.decode(&parts[i]).ok()?;
                let m = if i < 2 {
                    self.json_text(&raw, op).unwrap_or_else(|| self.bytes(raw, op))
                } else {
                    self.bytes(raw, op)
                };
                parts[i] = URL_SAFE_NO_PAD.encode(m);
            }
        }
        Some(parts.join(".").into_bytes())
    }
}

fn snake(k: &str) -> String {
    let mut out = String::new();
    for c in k.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn limit_value(x: u32) -> Value {
    match x % 16 {
        0 => Value::from(u64::MAX),
        1 => Value::from(i64::MIN),
        2 => serde_json::json!(1.7976931348623157e308),
        3 => serde_json::json!(-0.0),
        4 => serde_json::json!(5e-324),
        5 => Value::from(9_007_199_254_740_993_u64),
        6 => Value::from(0),
        7 => Value::from(-1),
        8 => Value::Null,
        9 => Value::Bool(true),
        10 => Value::String(String::new()),
        11 => Value::String("A".repeat(1 + (x as usize >> 4) % 40_000)),
        12 => Value::String("\u{0}\u{202e}\u{feff}\u{10ffff}\u{fffd}".into()),
        13 => Value::Array(vec![]),
        14 => Value::Object(Default::default()),
        _ => Value::String("x".repeat(4097)),
    }
}

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count_nodes).sum(),
        Value::Object(m) => m.values().map(count_nodes).sum(),
        _ => 0,
    }
}

fn nth_node<'v>(v: &'v mut Value, n: usize, seen: &mut usize) -> Option<&'v mut Value> {
    if *seen == n {
        return Some(v);
    }
    *seen += 1;
    match v {
        Value::Array(a) => a.iter_mut().find_map(|c| nth_node(c, n, seen)),
        Value::Object(m) => m.values_mut().find_map(|c| nth_node(c, n, seen)),
        _ => None,
    }
}

#[derive(Clone, Copy)]
struct Node {
    start: usize,
    header: usize,
    end: usize,
}

/// Collects the TLVs of a DER buffer (recursing into constructed ones and into BIT STRING and
/// OCTET STRING contents that parse as DER), stopping at the first thing that does not parse.
fn tlvs(buf: &[u8], offset: usize, depth: usize, out: &mut Vec<Node>) {
    let mut pos = 0;
    while pos < buf.len() && depth < 64 && out.len() < 4096 {
        let Some((header, len)) = der_header(&buf[pos..]) else {
            return;
        };
        let end = pos + header + len;
        if end > buf.len() {
            return;
        }
        out.push(Node {
            start: offset + pos,
            header,
            end: offset + end,
        });
        let tag = buf[pos];
        let content = &buf[pos + header..end];
        // Constructed values, and OCTET STRINGs wrapping a SEQUENCE (extension values).
        if tag & 0x20 != 0 || (tag == 0x04 && content.first() == Some(&0x30)) {
            tlvs(content, offset + pos + header, depth + 1, out);
        } else if tag == 0x03 && content.len() > 1 && content[0] == 0 && content[1] == 0x30 {
            tlvs(&content[1..], offset + pos + header + 1, depth + 1, out);
        }
        pos = end;
    }
}

/// (header length, content length) of a DER TLV with a one-byte tag.
fn der_header(b: &[u8]) -> Option<(usize, usize)> {
    let first = *b.get(1)?;
    if first < 0x80 {
        return Some((2, first as usize));
    }
    let n = (first & 0x7f) as usize;
    if n == 0 || n > 4 {
        return None;
    }
    let len = b.get(2..2 + n)?.iter().fold(0usize, |acc, x| (acc << 8) | *x as usize);
    Some((2 + n, len))
}

/// A TLV with a correct definite length.
pub(crate) fn der_wrap(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = (n as u32).to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (4 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}
