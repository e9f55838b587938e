//! Public keys from clients and CAs: parsing, the key policy, and signature verification.
//!
//! The policy follows Fulcio's (Let's Encrypt `goodkey`): RSA 2048/3072/4096 with e = 65537, no
//! small factors, no ROCA fingerprint and primes not close enough for Fermat's method to find in
//! 100 rounds; P-256/P-384/P-521 with a valid point; Ed25519. Anything else is refused as
//! insecure. The CA's own key passes the same policy at start-up.

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, VerificationAlgorithm};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey as X509PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::Error;

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_ED25519: &str = "1.3.101.112";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_P521: &str = "1.3.132.0.35";

/// The kinds of key the policy admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// NIST P-256.
    P256,
    /// NIST P-384.
    P384,
    /// NIST P-521.
    P521,
    /// RSA with this modulus size in bits.
    Rsa(usize),
    /// Ed25519.
    Ed25519,
}

impl KeyType {
    /// The hash a proof of possession over the challenge uses with this key (none for Ed25519).
    pub fn default_hash(self) -> Hash {
        match self {
            KeyType::P256 | KeyType::Rsa(_) => Hash::Sha256,
            KeyType::P384 => Hash::Sha384,
            KeyType::P521 => Hash::Sha512,
            KeyType::Ed25519 => Hash::None,
        }
    }

    /// Human-readable name for messages and audit records.
    pub fn name(self) -> String {
        match self {
            KeyType::P256 => "ECDSA P-256".into(),
            KeyType::P384 => "ECDSA P-384".into(),
            KeyType::P521 => "ECDSA P-521".into(),
            KeyType::Rsa(bits) => format!("RSA-{bits}"),
            KeyType::Ed25519 => "Ed25519".into(),
        }
    }
}

/// Message digests used by signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
    /// Pure signature over the message (Ed25519).
    None,
}

impl Hash {
    /// Name as Fulcio prints it.
    pub fn name(self) -> &'static str {
        match self {
            Hash::Sha256 => "SHA-256",
            Hash::Sha384 => "SHA-384",
            Hash::Sha512 => "SHA-512",
            Hash::None => "none",
        }
    }
}

/// A public key that passed the key policy.
#[derive(Clone)]
pub struct PublicKey {
    spki: Vec<u8>,
    key_type: KeyType,
    /// The subjectPublicKey contents: a SEC1 point, a PKCS#1 RSAPublicKey, or 32 Ed25519 bytes.
    key_bits: Vec<u8>,
    /// The key parsed once for its default hash (EC and Ed25519): parsing an EC point costs
    /// about as much as half a verification, so it is not repeated per signature.
    parsed: Option<ParsedPublicKey>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("key_type", &self.key_type)
            .finish_non_exhaustive()
    }
}

impl PublicKey {
    /// Parses a DER SubjectPublicKeyInfo and applies the key policy.
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, Error> {
        let (rest, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| Error::KeyParse(format!("not a DER SubjectPublicKeyInfo: {e}")))?;
        if !rest.is_empty() {
            return Err(Error::KeyParse("trailing bytes after the SubjectPublicKeyInfo".into()));
        }
        let key_bits = spki.subject_public_key.data.to_vec();
        let alg = spki.algorithm.algorithm.to_id_string();
        let mut parsed = None;
        let key_type = match alg.as_str() {
            OID_EC_PUBLIC_KEY => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string())
                    .ok_or_else(|| Error::KeyParse("EC key without a named curve".into()))?;
                let (kt, coord) = match curve.as_str() {
                    OID_P256 => (KeyType::P256, 32),
                    OID_P384 => (KeyType::P384, 48),
                    OID_P521 => (KeyType::P521, 66),
                    other => {
                        return Err(Error::InsecureKey(format!(
                            "EC curve {other} is not allowed (allowed: P-256, P-384, P-521)"
                        )));
                    }
                };
                if key_bits.len() != 1 + 2 * coord || key_bits[0] != 0x04 {
                    return Err(Error::InsecureKey(format!(
                        "{} point must be uncompressed and {} bytes long",
                        kt.name(),
                        1 + 2 * coord
                    )));
                }
                let probe: &'static dyn VerificationAlgorithm = match kt {
                    KeyType::P256 => &sig::ECDSA_P256_SHA256_ASN1,
                    KeyType::P384 => &sig::ECDSA_P384_SHA384_ASN1,
                    _ => &sig::ECDSA_P521_SHA512_ASN1,
                };
                parsed = Some(
                    ParsedPublicKey::new(probe, &key_bits)
                        .map_err(|_| Error::InsecureKey(format!("{} point is not on the curve", kt.name())))?,
                );
                kt
            }
            OID_RSA => {
                let Ok(X509PublicKey::RSA(rsa)) = spki.parsed() else {
                    return Err(Error::KeyParse("malformed RSA public key".into()));
                };
                let kt = rsa_policy(rsa.modulus, rsa.exponent)?;
                let pkcs1 = crate::der::seq(&[
                    &crate::der::unsigned_integer(rsa.modulus),
                    &crate::der::unsigned_integer(rsa.exponent),
                ]);
                if pkcs1 != key_bits {
                    return Err(not_der());
                }
                kt
            }
            OID_ED25519 => {
                if key_bits.len() != 32 {
                    return Err(Error::KeyParse("Ed25519 key must be 32 bytes".into()));
                }
                ed25519_policy(&key_bits)?;
                parsed = ParsedPublicKey::new(&sig::ED25519, &key_bits).ok();
                KeyType::Ed25519
            }
            other => {
                return Err(Error::InsecureKey(format!(
                    "key algorithm {other} is not allowed (allowed: RSA, ECDSA P-256/384/521, Ed25519)"
                )));
            }
        };
        if canonical_spki(key_type, &key_bits) != der {
            return Err(not_der());
        }
        Ok(PublicKey {
            spki: der.to_vec(),
            key_type,
            key_bits,
            parsed,
        })
    }

    /// Parses PEM (`PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY`), falling back to DER SPKI.
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<PublicKey, Error> {
        if bytes.is_empty() {
            return Err(Error::KeyParse("no public key was sent".into()));
        }
        if let Ok(p) = pem::parse(bytes) {
            return match p.tag() {
                "PUBLIC KEY" => PublicKey::from_spki_der(p.contents()),
                "RSA PUBLIC KEY" => PublicKey::from_spki_der(&rsa_spki_from_pkcs1(p.contents())),
                other => Err(Error::KeyParse(format!("PEM block {other:?} is not a public key"))),
            };
        }
        if bytes.starts_with(b"-----") {
            return Err(Error::KeyParse("malformed PEM".into()));
        }
        PublicKey::from_spki_der(bytes)
    }

    /// The DER SubjectPublicKeyInfo, copied verbatim into certificates.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The subjectPublicKey BIT STRING contents (what a key identifier hashes).
    pub fn key_bits(&self) -> &[u8] {
        &self.key_bits
    }

    /// The key's type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// Verifies `signature` over `message` with the given hash. ECDSA accepts DER or IEEE P1363.
    pub fn verify(&self, hash: Hash, message: &[u8], signature: &[u8]) -> bool {
        if let (Some(parsed), true) = (&self.parsed, hash == self.key_type.default_hash()) {
            if parsed.verify_sig(message, signature).is_ok() {
                return true;
            }
            // IEEE P1363 r‖s: re-encode as DER for the parsed (ASN.1) verifier.
            let coord = (self.key_bits.len() - 1) / 2;
            return self.key_type != KeyType::Ed25519
                && signature.len() == 2 * coord
                && parsed.verify_sig(message, &p1363_to_der(signature)).is_ok();
        }
        let algs: &[&'static dyn VerificationAlgorithm] = match (self.key_type, hash) {
            (KeyType::P256, Hash::Sha256) => &[&sig::ECDSA_P256_SHA256_ASN1, &sig::ECDSA_P256_SHA256_FIXED],
            // Other curve/hash pairs: CA chains made with OpenSSL's default digest (SHA-256 for
            // every curve), and CSRs the allow-list may admit (`ecdsa-sha2-256-nistp521`).
            (KeyType::P256, Hash::Sha384) => &[&sig::ECDSA_P256_SHA384_ASN1],
            (KeyType::P256, Hash::Sha512) => &[&sig::ECDSA_P256_SHA512_ASN1],
            (KeyType::P384, Hash::Sha384) => &[&sig::ECDSA_P384_SHA384_ASN1, &sig::ECDSA_P384_SHA384_FIXED],
            (KeyType::P384, Hash::Sha256) => &[&sig::ECDSA_P384_SHA256_ASN1],
            (KeyType::P384, Hash::Sha512) => &[&sig::ECDSA_P384_SHA512_ASN1],
            (KeyType::P521, Hash::Sha512) => &[&sig::ECDSA_P521_SHA512_ASN1, &sig::ECDSA_P521_SHA512_FIXED],
            (KeyType::P521, Hash::Sha256) => &[&sig::ECDSA_P521_SHA256_ASN1, &sig::ECDSA_P521_SHA256_FIXED],
            (KeyType::P521, Hash::Sha384) => &[&sig::ECDSA_P521_SHA384_ASN1, &sig::ECDSA_P521_SHA384_FIXED],
            (KeyType::Rsa(_), Hash::Sha256) => &[&sig::RSA_PKCS1_2048_8192_SHA256],
            (KeyType::Rsa(_), Hash::Sha384) => &[&sig::RSA_PKCS1_2048_8192_SHA384],
            (KeyType::Rsa(_), Hash::Sha512) => &[&sig::RSA_PKCS1_2048_8192_SHA512],
            (KeyType::Ed25519, Hash::None) => &[&sig::ED25519],
            _ => &[],
        };
        algs.iter().any(|alg| {
            sig::UnparsedPublicKey::new(*alg, &self.key_bits)
                .verify(message, signature)
                .is_ok()
        })
    }
}

/// The client's SPKI is copied verbatim into the certificate, so it must be exactly DER.
/// x509-parser is lenient in places (it reads an OBJECT IDENTIFIER under any tag, found by
/// `tests/tests/fuzz.rs`), so an accepted key is re-encoded here and must match byte for byte.
fn canonical_spki(key_type: KeyType, key_bits: &[u8]) -> Vec<u8> {
    use crate::der;
    const EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10045, 2, 1];
    let alg = match key_type {
        KeyType::P256 => der::seq(&[&der::oid(EC_PUBLIC_KEY), &der::oid(&[1, 2, 840, 10045, 3, 1, 7])]),
        KeyType::P384 => der::seq(&[&der::oid(EC_PUBLIC_KEY), &der::oid(&[1, 3, 132, 0, 34])]),
        KeyType::P521 => der::seq(&[&der::oid(EC_PUBLIC_KEY), &der::oid(&[1, 3, 132, 0, 35])]),
        KeyType::Rsa(_) => der::seq(&[&der::oid(&[1, 2, 840, 113549, 1, 1, 1]), &[der::NULL, 0]]),
        KeyType::Ed25519 => der::seq(&[&der::oid(&[1, 3, 101, 112])]),
    };
    der::seq(&[&alg, &der::bit_string(key_bits)])
}

fn not_der() -> Error {
    Error::KeyParse(
        "the SubjectPublicKeyInfo is not in DER form (RSA parameters must be NULL, integers minimal)".into(),
    )
}

/// `r‖s` → DER `ECDSA-Sig-Value`.
fn p1363_to_der(sig: &[u8]) -> Vec<u8> {
    use crate::der;
    let (r, s) = sig.split_at(sig.len() / 2);
    der::seq(&[&der::unsigned_integer(r), &der::unsigned_integer(s)])
}

/// Maps an X.509/PKCS#10 signature algorithm OID to its hash, or `None` if unrecognized.
/// RSA-PSS is deliberately absent, as in Fulcio.
pub fn signature_oid_hash(oid: &str) -> Option<Hash> {
    Some(match oid {
        "1.2.840.10045.4.3.2" | "1.2.840.113549.1.1.11" => Hash::Sha256,
        "1.2.840.10045.4.3.3" | "1.2.840.113549.1.1.12" => Hash::Sha384,
        "1.2.840.10045.4.3.4" | "1.2.840.113549.1.1.13" => Hash::Sha512,
        OID_ED25519 => Hash::None,
        _ => return None,
    })
}

/// Wraps a PKCS#1 RSAPublicKey into a SubjectPublicKeyInfo.
fn rsa_spki_from_pkcs1(pkcs1: &[u8]) -> Vec<u8> {
    use crate::der;
    let alg = der::seq(&[&der::oid(&[1, 2, 840, 113549, 1, 1, 1]), &[der::NULL, 0]]);
    der::seq(&[&alg, &der::bit_string(pkcs1)])
}

/// The y-coordinates (little-endian, sign bit of x cleared) of Ed25519's points of order 1, 2, 4
/// and 8, plus the non-canonical encodings y = p and y = p + 1 of the same points. A small-order
/// public key makes signatures that verify for many messages under some verifiers (and signatures
/// by nobody in particular), so a key must not be one. libsodium refuses the same list.
const ED25519_SMALL_ORDER_Y: [[u8; 32]; 7] = {
    let zero = [0u8; 32];
    let mut one = [0u8; 32];
    one[0] = 1;
    let p_minus_1 = le_p_plus(-1);
    let p = le_p_plus(0);
    let p_plus_1 = le_p_plus(1);
    [
        zero,
        one,
        // order 8
        [
            0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98, 0xf0, 0xd5, 0xdf,
            0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05,
        ],
        // order 8 (the negated y)
        [
            0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67, 0x0f, 0x2a, 0x20,
            0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03, 0x7a,
        ],
        p_minus_1,
        p,
        p_plus_1,
    ]
};

/// p + k for p = 2^255 - 19 and k in -1..=1, little-endian.
const fn le_p_plus(k: i8) -> [u8; 32] {
    let mut out = [0xffu8; 32];
    out[31] = 0x7f;
    out[0] = (0xed_i16 + k as i16) as u8;
    out
}

/// Refuses Ed25519 keys that are small-order points (in any encoding) or whose y is not reduced
/// modulo p. Real key generators never produce either.
fn ed25519_policy(key: &[u8]) -> Result<(), Error> {
    let mut y = [0u8; 32];
    y.copy_from_slice(key);
    y[31] &= 0x7f;
    if ED25519_SMALL_ORDER_Y.contains(&y) {
        return Err(Error::InsecureKey("Ed25519 public key is a small-order point".into()));
    }
    // y >= p: compare little-endian from the most significant byte.
    let p = le_p_plus(0);
    if y.iter().rev().cmp(p.iter().rev()) != std::cmp::Ordering::Less {
        return Err(Error::InsecureKey(
            "Ed25519 public key is not canonically encoded (y >= p)".into(),
        ));
    }
    Ok(())
}

fn rsa_policy(modulus: &[u8], exponent: &[u8]) -> Result<KeyType, Error> {
    let n: &[u8] = &modulus[modulus.iter().take_while(|b| **b == 0).count()..];
    let bits = n.first().map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
    if ![2048, 3072, 4096].contains(&bits) {
        return Err(Error::InsecureKey(format!(
            "RSA modulus is {bits} bits; allowed sizes are 2048, 3072 and 4096"
        )));
    }
    let e = exponent
        .iter()
        .skip_while(|b| **b == 0)
        .try_fold(0u64, |acc, b| acc.checked_mul(256).map(|a| a + *b as u64));
    if e != Some(65537) {
        return Err(Error::InsecureKey("RSA public exponent must be 65537".into()));
    }
    if n.last().is_some_and(|b| b & 1 == 0) {
        return Err(Error::InsecureKey("RSA modulus is even".into()));
    }
    if let Some(p) = SMALL_PRIMES.iter().find(|p| mod_small(n, **p) == 0) {
        return Err(Error::InsecureKey(format!("RSA modulus has the small factor {p}")));
    }
    if roca_fingerprint(n) {
        return Err(Error::InsecureKey(
            "RSA key has the ROCA (CVE-2017-15361) fingerprint".into(),
        ));
    }
    if fermat_factors(n, FERMAT_ROUNDS) {
        return Err(Error::InsecureKey(
            "RSA modulus factors by Fermat's method: its primes are too close together".into(),
        ));
    }
    Ok(KeyType::Rsa(bits))
}

/// Rounds of Fermat's method, as in Let's Encrypt's `goodkey` (which Fulcio uses).
const FERMAT_ROUNDS: u32 = 100;

/// True if `n = a² - b²` for one of `a = ⌊√n⌋ + 1, …, ⌊√n⌋ + rounds`: the primes of `n` are then
/// `a ± b`, close enough to find by walking up from the square root (keys from broken generators
/// that pick `q` as the next prime after `p`).
///
/// `b² = a² - n` grows by `2a + 1` per step, so a round is one addition; `b²` is only square-rooted
/// when it is a square modulo 64, 63, 65 and 11, which fewer than 1 in 150 non-squares are.
fn fermat_factors(n: &[u8], rounds: u32) -> bool {
    use num_bigint::BigUint;
    let n = BigUint::from_bytes_be(n);
    let a = n.sqrt() + 1u32;
    let mut b2 = &a * &a - &n;
    // (a + 1)² - a² = 2a + 1, which grows by 2 per round.
    let mut step = a * 2u32 + 1u32;
    let residues = square_residues();
    for _ in 0..rounds {
        let maybe_square = residues
            .iter()
            .all(|(m, squares)| squares[(&b2 % *m).iter_u32_digits().next().unwrap_or(0) as usize]);
        if maybe_square {
            let b = b2.sqrt();
            if &b * &b == b2 {
                return true;
            }
        }
        b2 += &step;
        step += 2u32;
    }
    false
}

/// For each small modulus, which residues are squares.
fn square_residues() -> [(u32, Vec<bool>); 4] {
    [64u32, 63, 65, 11].map(|m| {
        let mut squares = vec![false; m as usize];
        for x in 0..m {
            squares[(x * x % m) as usize] = true;
        }
        (m, squares)
    })
}

fn mod_small(n: &[u8], p: u32) -> u32 {
    n.iter().fold(0u64, |r, b| (r * 256 + *b as u64) % p as u64) as u32
}

/// Odd primes below 1000.
const SMALL_PRIMES: &[u32] = &[
    3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107, 109,
    113, 127, 131, 137, 139, 149, 151, 157, 163, 167, 173, 179, 181, 191, 193, 197, 199, 211, 223, 227, 229, 233, 239,
    241, 251, 257, 263, 269, 271, 277, 281, 283, 293, 307, 311, 313, 317, 331, 337, 347, 349, 353, 359, 367, 373, 379,
    383, 389, 397, 401, 409, 419, 421, 431, 433, 439, 443, 449, 457, 461, 463, 467, 479, 487, 491, 499, 503, 509, 521,
    523, 541, 547, 557, 563, 569, 571, 577, 587, 593, 599, 601, 607, 613, 617, 619, 631, 641, 643, 647, 653, 659, 661,
    673, 677, 683, 691, 701, 709, 719, 727, 733, 739, 743, 751, 757, 761, 769, 773, 787, 797, 809, 811, 821, 823, 827,
    829, 839, 853, 857, 859, 863, 877, 881, 883, 887, 907, 911, 919, 929, 937, 941, 947, 953, 967, 971, 977, 983, 991,
    997,
];

/// Primes of the ROCA test: Infineon moduli are, modulo each, in the subgroup generated by 65537.
const ROCA_PRIMES: &[u32] = &[
    3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107, 109,
    113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
];

/// True if `n mod p` lies in `<65537 mod p>` for every ROCA prime (the published detection test).
fn roca_fingerprint(n: &[u8]) -> bool {
    ROCA_PRIMES.iter().all(|&p| {
        let r = mod_small(n, p);
        let g = 65537 % p;
        let mut x = 1u32;
        for _ in 0..p {
            if x == r {
                return true;
            }
            x = x * g % p;
        }
        false
    })
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roca_detects_constructed_fingerprint() {
        // Infineon moduli are, modulo every ROCA prime, a power of 65537. 65537^7 has that shape.
        let x: u128 = (0..7).fold(1u128, |acc, _| acc * 65537);
        assert!(roca_fingerprint(&x.to_be_bytes()));
        assert!(!roca_fingerprint(&(x + 2).to_be_bytes()));
        // A typical odd number fails the test for some prime.
        assert!(!roca_fingerprint(&[0xc3, 0x51, 0x9f, 0x27, 0x11, 0x05]));
    }

    /// The eight points of the Ed25519 torsion subgroup (orders 1, 8, 4, 8, 2, 8, 4, 8), as
    /// curve25519-dalek lists them, and their non-canonical twins.
    #[test]
    fn ed25519_small_order_keys_are_refused() {
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let spki = |key: &[u8]| {
            let alg = crate::der::seq(&[&crate::der::oid(&[1, 3, 101, 112])]);
            crate::der::seq(&[&alg, &crate::der::bit_string(key)])
        };
        let torsion = [
            "0100000000000000000000000000000000000000000000000000000000000000",
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
            "0000000000000000000000000000000000000000000000000000000000000080",
            "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
            "0000000000000000000000000000000000000000000000000000000000000000",
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        ];
        let non_canonical = [
            "0100000000000000000000000000000000000000000000000000000000000080", // identity, x = -0
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", // order 2, x = -0
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p (= 0)
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p + 1 (= 1)
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        ];
        for k in torsion.iter().chain(&non_canonical) {
            let err = PublicKey::from_spki_der(&spki(&hex(k))).unwrap_err();
            assert!(
                matches!(&err, Error::InsecureKey(m) if m.contains("small-order")),
                "{k}: {err}"
            );
            assert_eq!(
                err.fulcio_message(),
                "The public key supplied in the request is insecure"
            );
        }
        // y = p + 2 is on no small subgroup but is not reduced either.
        let err = PublicKey::from_spki_der(&spki(&hex(
            "efffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        )))
        .unwrap_err();
        assert!(
            matches!(&err, Error::InsecureKey(m) if m.contains("canonical")),
            "{err}"
        );
        // A real key passes, and its signatures verify.
        let pair = aws_lc_rs::signature::Ed25519KeyPair::generate().unwrap();
        use aws_lc_rs::signature::KeyPair as _;
        let key = PublicKey::from_spki_der(&spki(pair.public_key().as_ref())).unwrap();
        assert!(key.verify(Hash::None, b"sub", pair.sign(b"sub").as_ref()));
    }

    /// Found by `tests/tests/fuzz.rs` (regression `tests/fuzz-regressions/public_key/`):
    /// x509-parser read an algorithm OID under the wrong tag, and the key was accepted and
    /// would have been copied, not DER, into a certificate.
    #[test]
    fn only_der_spkis_are_accepted() {
        use aws_lc_rs::encoding::AsDer as _;
        use aws_lc_rs::signature::KeyPair as _;
        let not_der = |der: &[u8]| {
            let err = PublicKey::from_spki_der(der).unwrap_err();
            assert!(matches!(&err, Error::KeyParse(_)), "{err}");
        };
        let ed = aws_lc_rs::signature::Ed25519KeyPair::generate().unwrap();
        let good = ed.public_key().as_der().unwrap().as_ref().to_vec();
        assert!(PublicKey::from_spki_der(&good).is_ok());
        assert_eq!(&good[4..6], &[0x06, 0x03]);
        let mut mistagged = good.clone();
        mistagged[4] = 0x07; // OBJECT IDENTIFIER -> ObjectDescriptor
        not_der(&mistagged);

        let rng = aws_lc_rs::rand::SystemRandom::new();
        let alg = &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING;
        let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let ec = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref()).unwrap();
        let good = ec.public_key().as_der().unwrap().as_ref().to_vec();
        assert!(PublicKey::from_spki_der(&good).is_ok());
        // The named curve under another tag (OCTET STRING).
        let curve_at = good.windows(2).position(|w| w == [0x06, 0x08]).unwrap();
        let mut mistagged = good.clone();
        mistagged[curve_at] = 0x04;
        not_der(&mistagged);

        // RSA: parameters absent instead of NULL, and a modulus with a superfluous zero byte.
        let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let good = rsa.public_key().as_der().unwrap().as_ref().to_vec();
        let key = PublicKey::from_spki_der(&good).unwrap();
        let pkcs1 = key.key_bits().to_vec();
        let rsa_oid = crate::der::oid(&[1, 2, 840, 113549, 1, 1, 1]);
        let wrap = |alg: &[u8], bits: &[u8]| crate::der::seq(&[alg, &crate::der::bit_string(bits)]);
        assert_eq!(
            wrap(&crate::der::seq(&[&rsa_oid, &[crate::der::NULL, 0]]), &pkcs1),
            good
        );
        not_der(&wrap(&crate::der::seq(&[&rsa_oid]), &pkcs1));
        let (n, e) = {
            let (seq, _) = crate::der::read_tlv(&pkcs1).unwrap();
            let items = crate::der::read_all(seq.content).unwrap();
            (items[0].content.to_vec(), items[1].content.to_vec())
        };
        let padded_n = crate::der::wrap(crate::der::INTEGER, &[&[0], &n]);
        let e_der = crate::der::wrap(crate::der::INTEGER, &[&e]);
        let loose = crate::der::seq(&[&padded_n, &e_der]);
        not_der(&wrap(&crate::der::seq(&[&rsa_oid, &[crate::der::NULL, 0]]), &loose));
    }

    /// The first primes after 2^1023 + 2^1022 (`p`, `q`) and after that plus 2^520 (`far`), found
    /// with a Miller-Rabin search in Python.
    const FERMAT_P_OFFSET: u32 = 1037;
    const FERMAT_Q_OFFSET: u32 = 1697;
    const FERMAT_FAR_OFFSET: u32 = 913;

    /// `p·q`: a 2048-bit modulus that passes every other check, factored by Fermat's method in
    /// its first round.
    #[test]
    fn fermat_finds_close_primes() {
        use num_bigint::BigUint;
        let base = (BigUint::from(1u32) << 1023u32) + (BigUint::from(1u32) << 1022u32);
        let p = &base + FERMAT_P_OFFSET;
        let q = &base + FERMAT_Q_OFFSET;
        let n = (&p * &q).to_bytes_be();
        assert_eq!(n.len() * 8, 2048);
        assert!(fermat_factors(&n, 1));
        let err = rsa_policy(&n, &[1, 0, 1]).unwrap_err();
        assert!(matches!(&err, Error::InsecureKey(m) if m.contains("Fermat")), "{err}");
        // Primes 2^520 apart are out of reach of 100 rounds.
        let far = &base + (BigUint::from(1u32) << 520u32) + FERMAT_FAR_OFFSET;
        let n_far = (&p * &far).to_bytes_be();
        assert!(!fermat_factors(&n_far, FERMAT_ROUNDS));
        assert!(rsa_policy(&n_far, &[1, 0, 1]).is_ok());
        // Neither is a real key from aws-lc-rs's generator.
        use aws_lc_rs::encoding::AsDer as _;
        use aws_lc_rs::signature::KeyPair as _;
        let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let key = PublicKey::from_spki_der(rsa.public_key().as_der().unwrap().as_ref()).unwrap();
        assert_eq!(key.key_type(), KeyType::Rsa(2048));
    }

    /// `n = a² - b²` is found in the round that reaches `a`, and not one round earlier: the
    /// walk starts at ⌊√n⌋ + 1 ≈ a - b²/2a and the number of rounds is exactly the budget.
    #[test]
    fn fermat_checks_exactly_the_given_rounds() {
        use num_bigint::BigUint;
        let a = (BigUint::from(1u32) << 1024u32) + 12345u32;
        for (b_multiple, min_rounds) in [(1u32, 1u32), (3, 10), (7, 90)] {
            let b = BigUint::from(b_multiple) << 513u32;
            let n = &a * &a - &b * &b;
            let start = n.sqrt() + 1u32;
            let rounds = u32::try_from(&a - &start + 1u32).unwrap();
            assert!(rounds >= min_rounds && rounds <= FERMAT_ROUNDS, "{rounds}");
            let n = n.to_bytes_be();
            assert!(fermat_factors(&n, rounds), "round {rounds}");
            assert!(!fermat_factors(&n, rounds - 1), "before round {rounds}");
        }
    }

    #[test]
    fn small_factor_arithmetic() {
        assert_eq!(mod_small(&[0x01, 0x00], 7), 256 % 7);
        assert_eq!(mod_small(&(1_000_003u64 * 997).to_be_bytes(), 997), 0);
    }
}
