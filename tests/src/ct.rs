//! An independent RFC 6962 checker for the test suite: it shares no code with the CA or the log.
//! It takes SCTs out of final certificates, rebuilds the precertificate TBS by removing the SCT
//! extension with its own DER walker, verifies SCT and STH signatures, and verifies inclusion and
//! consistency proofs with RFC 9162's algorithms.

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

/// A parsed SCT.
#[derive(Debug, Clone)]
pub struct Sct {
    /// Log id.
    pub log_id: Vec<u8>,
    /// Milliseconds.
    pub timestamp: u64,
    /// CtExtensions.
    pub extensions: Vec<u8>,
    /// DER ECDSA signature.
    pub signature: Vec<u8>,
}

/// Reads one DER TLV: (tag, header length, total length).
fn tlv(b: &[u8]) -> (u8, usize, usize) {
    let tag = b[0];
    let l = b[1] as usize;
    if l < 0x80 {
        (tag, 2, 2 + l)
    } else {
        let n = l & 0x7f;
        let len = b[2..2 + n].iter().fold(0usize, |a, x| (a << 8) | *x as usize);
        (tag, 2 + n, 2 + n + len)
    }
}

fn children(mut b: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (_, _, total) = tlv(b);
        out.push(&b[..total]);
        b = &b[total..];
    }
    out
}

fn content(b: &[u8]) -> &[u8] {
    let (_, h, t) = tlv(b);
    &b[h..t]
}

fn encode(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = body.len();
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend([0x81, n as u8]);
    } else if n < 0x10000 {
        out.extend([0x82, (n >> 8) as u8, n as u8]);
    } else {
        out.extend([0x83, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(body);
    out
}

const SCT_LIST_OID: &[u8] = &[0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0xd6, 0x79, 0x02, 0x04, 0x02];

/// The certificate's TBS with the SCT-list extension removed, and that extension's value.
pub fn split_final_cert(cert_der: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    let cert = content(cert_der);
    let tbs = children(cert)[0];
    let mut sct_value = None;
    let fields: Vec<Vec<u8>> = children(content(tbs))
        .into_iter()
        .map(|f| {
            if f[0] != 0xa3 {
                return f.to_vec();
            }
            let exts = content(content(f));
            let kept: Vec<u8> = children(exts)
                .into_iter()
                .filter(|e| {
                    let parts = children(content(e));
                    if parts[0] == SCT_LIST_OID {
                        sct_value = Some(content(parts[parts.len() - 1]).to_vec());
                        false
                    } else {
                        true
                    }
                })
                .flatten()
                .copied()
                .collect();
            encode(0xa3, &encode(0x30, &kept))
        })
        .collect();
    (encode(0x30, &fields.concat()), sct_value)
}

/// Parses the TLS SCT list inside the extension value (an OCTET STRING).
pub fn parse_sct_list(ext_value: &[u8]) -> Vec<Sct> {
    let list = content(ext_value);
    let total = u16::from_be_bytes([list[0], list[1]]) as usize;
    assert_eq!(total + 2, list.len(), "SCT list length");
    let mut rest = &list[2..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        let s = &rest[2..2 + n];
        assert_eq!(s[0], 0, "SCT v1");
        let log_id = s[1..33].to_vec();
        let timestamp = u64::from_be_bytes(s[33..41].try_into().unwrap());
        let el = u16::from_be_bytes([s[41], s[42]]) as usize;
        let extensions = s[43..43 + el].to_vec();
        let p = 43 + el;
        assert_eq!((s[p], s[p + 1]), (4, 3), "SHA-256 / ECDSA");
        let sl = u16::from_be_bytes([s[p + 2], s[p + 3]]) as usize;
        let signature = s[p + 4..p + 4 + sl].to_vec();
        assert_eq!(p + 4 + sl, s.len());
        out.push(Sct {
            log_id,
            timestamp,
            extensions,
            signature,
        });
        rest = &rest[2 + n..];
    }
    out
}

/// The subjectPublicKey point of a P-256 DER SPKI.
fn spki_point(spki: &[u8]) -> Vec<u8> {
    let parts = children(content(spki));
    content(parts[1])[1..].to_vec()
}

/// The DER SubjectPublicKeyInfo of a certificate.
pub fn cert_spki(cert_der: &[u8]) -> Vec<u8> {
    let tbs = children(content(cert_der))[0];
    let fields = children(content(tbs));
    // [0] version, serial, sigalg, issuer, validity, subject, spki
    let offset = if fields[0][0] == 0xa0 { 1 } else { 0 };
    fields[5 + offset].to_vec()
}

/// SHA-256.
pub fn sha256(b: &[u8]) -> [u8; 32] {
    digest(&SHA256, b).as_ref().try_into().unwrap()
}

/// The `MerkleTreeLeaf` of a precertificate entry rebuilt from the final certificate.
pub fn precert_leaf(timestamp: u64, issuer_key_hash: &[u8; 32], tbs: &[u8], extensions: &[u8]) -> Vec<u8> {
    let mut leaf = vec![0, 0];
    leaf.extend_from_slice(&timestamp.to_be_bytes());
    leaf.extend_from_slice(&[0, 1]);
    leaf.extend_from_slice(issuer_key_hash);
    leaf.extend_from_slice(&(tbs.len() as u32).to_be_bytes()[1..]);
    leaf.extend_from_slice(tbs);
    leaf.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    leaf.extend_from_slice(extensions);
    leaf
}

/// Verifies the one embedded SCT of `leaf` issued by `issuer`, with the log key `log_spki`.
/// Returns the SCT and the Merkle leaf hash of the entry it promises.
pub fn verify_embedded_sct(leaf: &[u8], issuer: &[u8], log_spki: &[u8]) -> (Sct, [u8; 32]) {
    let (tbs, value) = split_final_cert(leaf);
    let scts = parse_sct_list(&value.expect("SCT list extension present"));
    assert_eq!(scts.len(), 1, "exactly one SCT");
    let sct = scts.into_iter().next().unwrap();
    assert_eq!(sct.log_id, sha256(log_spki), "log id is SHA-256 of the log key");
    let ikh = sha256(&cert_spki(issuer));
    let entry = precert_leaf(sct.timestamp, &ikh, &tbs, &sct.extensions);
    // digitally-signed struct: version, signature_type, then the entry without the leaf header.
    let mut signed = vec![0, 0];
    signed.extend_from_slice(&entry[2..]);
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, spki_point(log_spki))
        .verify(&signed, &sct.signature)
        .expect("SCT signature verifies over the rebuilt precertificate entry");
    let mut hash_input = vec![0u8];
    hash_input.extend_from_slice(&entry);
    (sct, sha256(&hash_input))
}

/// A signed tree head from `get-sth`, signature checked.
#[derive(Debug, Clone)]
pub struct Sth {
    /// Size.
    pub tree_size: u64,
    /// Root.
    pub root: [u8; 32],
    /// Timestamp.
    pub timestamp: u64,
}

/// Parses and verifies a `get-sth` response.
pub fn verify_sth(json: &Value, log_spki: &[u8]) -> Sth {
    let tree_size = json["tree_size"].as_u64().unwrap();
    let timestamp = json["timestamp"].as_u64().unwrap();
    let root: [u8; 32] = STANDARD
        .decode(json["sha256_root_hash"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let ds = STANDARD.decode(json["tree_head_signature"].as_str().unwrap()).unwrap();
    assert_eq!((ds[0], ds[1]), (4, 3));
    let mut data = vec![0, 1];
    data.extend_from_slice(&timestamp.to_be_bytes());
    data.extend_from_slice(&tree_size.to_be_bytes());
    data.extend_from_slice(&root);
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, spki_point(log_spki))
        .verify(&data, &ds[4..])
        .expect("STH signature verifies");
    Sth {
        tree_size,
        root,
        timestamp,
    }
}

fn node(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    let mut b = vec![1u8];
    b.extend_from_slice(l);
    b.extend_from_slice(r);
    sha256(&b)
}

/// RFC 9162 §2.1.3.2.
pub fn verify_inclusion(leaf_hash: &[u8; 32], index: u64, size: u64, path: &[[u8; 32]], root: &[u8; 32]) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in path {
        if s == 0 {
            return false;
        }
        if f % 2 == 1 || f == s {
            r = node(p, &r);
            while f % 2 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// RFC 9162 §2.1.4.2.
pub fn verify_consistency(m: u64, n: u64, old: &[u8; 32], new: &[u8; 32], proof: &[[u8; 32]]) -> bool {
    if m == n {
        return proof.is_empty() && old == new;
    }
    if m == 0 || m > n {
        return m == 0 && proof.is_empty();
    }
    let mut path = proof.to_vec();
    if m.is_power_of_two() {
        path.insert(0, *old);
    }
    let (mut f, mut s) = (m - 1, n - 1);
    while f % 2 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s == 0 {
            return false;
        }
        if f % 2 == 1 || f == s {
            fr = node(c, &fr);
            sr = node(c, &sr);
            while f % 2 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && fr == *old && sr == *new
}

/// Decodes a JSON array of base64 hashes.
pub fn hashes(v: &Value) -> Vec<[u8; 32]> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| STANDARD.decode(h.as_str().unwrap()).unwrap().try_into().unwrap())
        .collect()
}

/// Polls the embedded log's `get-sth` until the tree holds at least `size` entries; returns the
/// verified STH. Panics after `within`.
pub async fn sth_at_least(ks: &crate::Keyless, spki: &[u8], size: u64, within: std::time::Duration) -> Sth {
    let start = std::time::Instant::now();
    loop {
        let sth = verify_sth(&ks.ct_get("/ct/v1/get-sth").await, spki);
        if sth.tree_size >= size {
            return sth;
        }
        assert!(
            start.elapsed() < within,
            "STH did not reach {size} entries within {within:?} (at {})",
            sth.tree_size
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
