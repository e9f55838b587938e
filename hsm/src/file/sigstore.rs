//! Sigstore's encrypted private key (`ENCRYPTED SIGSTORE PRIVATE KEY`, and cosign's older
//! `ENCRYPTED COSIGN PRIVATE KEY`): a JSON envelope around a PKCS#8 key, sealed with NaCl
//! secretbox (XSalsa20-Poly1305) under a key derived from the password with scrypt.
//!
//! ```json
//! {"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},"salt":"<base64, 32 bytes>"},
//!  "cipher":{"name":"nacl/secretbox","nonce":"<base64, 24 bytes>"},
//!  "ciphertext":"<base64: 16-byte Poly1305 tag, then the encrypted PKCS#8>"}
//! ```
//!
//! Only the three scrypt parameter sets sigstore writes are accepted (N = 2^15, 2^16 or 2^17 with
//! r = 8, p = 1), as sigstore's own reader does, which also bounds what a key file can make
//! start-up spend (at most 128 MiB and well under a second).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use poly1305::Poly1305;
use poly1305::universal_hash::KeyInit;
use salsa20::XSalsa20;
use salsa20::cipher::{KeyIvInit, StreamCipher};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The PEM labels of this format.
pub(crate) const LABELS: [&str; 2] = ["ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY"];

const KDF: &str = "scrypt";
const CIPHER: &str = "nacl/secretbox";
const SALT_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// The scrypt cost sigstore writes: log2(N) with r = 8, p = 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScryptCost {
    /// N = 2^15 (sigstore's "legacy" parameters).
    Legacy,
    /// N = 2^16 ("standard").
    Standard,
    /// N = 2^17 ("OWASP").
    Owasp,
}

impl ScryptCost {
    fn log_n(self) -> u8 {
        match self {
            ScryptCost::Legacy => 15,
            ScryptCost::Standard => 16,
            ScryptCost::Owasp => 17,
        }
    }

    fn from_params(p: &Params) -> Option<ScryptCost> {
        if p.r != 8 || p.p != 1 {
            return None;
        }
        [ScryptCost::Legacy, ScryptCost::Standard, ScryptCost::Owasp]
            .into_iter()
            .find(|c| p.n == 1u64 << c.log_n())
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: Params,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct Params {
    #[serde(rename = "N")]
    n: u64,
    r: u64,
    p: u64,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

fn derive_key(password: &[u8], salt: &[u8], cost: ScryptCost) -> Result<Zeroizing<[u8; 32]>, String> {
    let params = scrypt::Params::new(cost.log_n(), 8, 1).map_err(|e| format!("scrypt parameters: {e}"))?;
    let mut key = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(password, salt, &params, key.as_mut()).map_err(|e| format!("scrypt: {e}"))?;
    Ok(key)
}

/// XSalsa20 keystream: its first 32 bytes key Poly1305, the rest encrypts (NaCl secretbox).
fn stream(key: &[u8; 32], nonce: &[u8; NONCE_LEN]) -> (XSalsa20, Poly1305) {
    let mut cipher = XSalsa20::new(key.into(), nonce.into());
    let mut mac_key = Zeroizing::new([0u8; 32]);
    cipher.apply_keystream(mac_key.as_mut());
    let mac_key: &[u8; 32] = &mac_key;
    let mac = Poly1305::new(mac_key.into());
    (cipher, mac)
}

/// Seals `plaintext` (a PKCS#8 DER key) as the envelope's JSON, with the given salt and nonce
/// (random ones in real use; fixed ones reproduce a test vector).
pub fn seal_with(
    plaintext: &[u8],
    password: &[u8],
    cost: ScryptCost,
    salt: &[u8; SALT_LEN],
    nonce: &[u8; NONCE_LEN],
) -> Result<String, String> {
    let key = derive_key(password, salt, cost)?;
    let (mut cipher, mac) = stream(&key, nonce);
    let mut body = plaintext.to_vec();
    cipher.apply_keystream(&mut body);
    let tag = mac.compute_unpadded(&body);
    let mut sealed = tag.to_vec();
    sealed.extend_from_slice(&body);
    let envelope = Envelope {
        kdf: Kdf {
            name: KDF.into(),
            params: Params {
                n: 1u64 << cost.log_n(),
                r: 8,
                p: 1,
            },
            salt: STANDARD.encode(salt),
        },
        cipher: Cipher {
            name: CIPHER.into(),
            nonce: STANDARD.encode(nonce),
        },
        ciphertext: STANDARD.encode(&sealed),
    };
    serde_json::to_string(&envelope).map_err(|e| e.to_string())
}

/// Seals `pkcs8` as a PEM `ENCRYPTED SIGSTORE PRIVATE KEY` with a random salt and nonce, as
/// `cosign generate-key-pair` writes it.
pub fn seal_pem(pkcs8: &[u8], password: &[u8], cost: ScryptCost) -> Result<String, String> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::SecureRandom::fill(&rng, &mut salt).map_err(|_| "no randomness".to_string())?;
    aws_lc_rs::rand::SecureRandom::fill(&rng, &mut nonce).map_err(|_| "no randomness".to_string())?;
    let json = seal_with(pkcs8, password, cost, &salt, &nonce)?;
    Ok(pem::encode_config(
        &pem::Pem::new(LABELS[0], json.into_bytes()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    ))
}

/// Why an envelope could not be opened. A wrong password and a tampered file look the same.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// The envelope is malformed or uses parameters sigstore never writes.
    Format(String),
    /// The authentication tag does not match: wrong password, or a corrupt file.
    Authentication,
}

/// Opens an envelope (the PEM block's contents) with `password`; returns the PKCS#8 DER.
pub(crate) fn open(envelope: &[u8], password: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let format = |m: &str| OpenError::Format(m.to_string());
    let env: Envelope = serde_json::from_slice(envelope)
        .map_err(|e| OpenError::Format(format!("the sigstore key envelope is not the expected JSON: {e}")))?;
    if env.kdf.name != KDF {
        return Err(OpenError::Format(format!(
            "unsupported key derivation {:?} (only \"scrypt\")",
            env.kdf.name
        )));
    }
    if env.cipher.name != CIPHER {
        return Err(OpenError::Format(format!(
            "unsupported cipher {:?} (only \"nacl/secretbox\")",
            env.cipher.name
        )));
    }
    let cost = ScryptCost::from_params(&env.kdf.params).ok_or_else(|| {
        OpenError::Format(format!(
            "unsupported scrypt parameters N={}, r={}, p={} (sigstore writes N=32768, 65536 or 131072 with r=8, p=1)",
            env.kdf.params.n, env.kdf.params.r, env.kdf.params.p
        ))
    })?;
    let b64 = |field: &str, v: &str| {
        STANDARD
            .decode(v)
            .map_err(|e| OpenError::Format(format!("{field} is not base64: {e}")))
    };
    let salt = b64("kdf.salt", &env.kdf.salt)?;
    let nonce: [u8; NONCE_LEN] = b64("cipher.nonce", &env.cipher.nonce)?
        .try_into()
        .map_err(|_| format("cipher.nonce is not 24 bytes"))?;
    let sealed = b64("ciphertext", &env.ciphertext)?;
    if sealed.len() < TAG_LEN {
        return Err(format("ciphertext is shorter than its authentication tag"));
    }
    let key = derive_key(password, &salt, cost).map_err(OpenError::Format)?;
    let (mut cipher, mac) = stream(&key, &nonce);
    let (tag, body) = sealed.split_at(TAG_LEN);
    if !bool::from(mac.compute_unpadded(body).as_slice().ct_eq(tag)) {
        return Err(OpenError::Authentication);
    }
    let mut plain = Zeroizing::new(body.to_vec());
    cipher.apply_keystream(&mut plain);
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// go-securesystemslib's own decryption vector (`encrypted_test.go`, `TestDecrypt`): the
    /// envelope sigstore's Go code writes opens here.
    #[test]
    fn opens_the_go_implementations_vector() {
        let env = br#"{"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},"salt":"N9a7x5JFGbrtB2uBR81jPwp0eiLR4A7FV3mjVAQrg1g="},"cipher":{"name":"nacl/secretbox","nonce":"2h8HxMmgRfuYdpswZBQaU3xJ1nkA/5Ik"},"ciphertext":"SEW6sUh0jf2wfdjJGPNS9+bkk2uB+Cxamf32zR8XkQ=="}"#;
        assert_eq!(open(env, b"supersecret").unwrap().as_slice(), b"reallyimportant");
        assert_eq!(open(env, b"supersecreT"), Err(OpenError::Authentication));
    }

    /// A vector made independently with Python (`pynacl` `SecretBox` and `hashlib.scrypt`, see
    /// `tests/fixtures/sigstore/make_vector.py`): sealing reproduces it byte for byte and opening
    /// it returns the plaintext.
    #[test]
    fn reproduces_the_python_vector() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/sigstore/vector.json")).unwrap();
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        let salt: [u8; 32] = STANDARD.decode(s("salt")).unwrap().try_into().unwrap();
        let nonce: [u8; 24] = STANDARD.decode(s("nonce")).unwrap().try_into().unwrap();
        let plaintext = STANDARD.decode(s("plaintext")).unwrap();
        let sealed = seal_with(&plaintext, s("password").as_bytes(), ScryptCost::Legacy, &salt, &nonce).unwrap();
        let ours: serde_json::Value = serde_json::from_str(&sealed).unwrap();
        assert_eq!(ours, v["envelope"]);
        let opened = open(sealed.as_bytes(), s("password").as_bytes()).unwrap();
        assert_eq!(opened.as_slice(), plaintext.as_slice());
    }

    #[test]
    fn tampering_and_foreign_parameters_are_refused() {
        let sealed = seal_with(b"pkcs8", b"pw", ScryptCost::Legacy, &[7; 32], &[9; 24]).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&sealed).unwrap();
        let reopen = |v: &serde_json::Value| open(v.to_string().as_bytes(), b"pw");
        assert_eq!(reopen(&v).unwrap().as_slice(), b"pkcs8");
        let mut ct = STANDARD.decode(v["ciphertext"].as_str().unwrap()).unwrap();
        ct[TAG_LEN] ^= 1;
        let mut flipped = v.clone();
        flipped["ciphertext"] = STANDARD.encode(&ct).into();
        assert_eq!(reopen(&flipped), Err(OpenError::Authentication));
        v["kdf"]["params"]["N"] = 1_048_576.into();
        assert!(matches!(reopen(&v), Err(OpenError::Format(m)) if m.contains("N=1048576")));
        v["kdf"]["params"]["N"] = 32768.into();
        v["cipher"]["name"] = "aes-gcm".into();
        assert!(matches!(reopen(&v), Err(OpenError::Format(m)) if m.contains("aes-gcm")));
        assert!(matches!(open(b"not json", b"pw"), Err(OpenError::Format(_))));
    }
}
