//! OpenSSL's legacy PEM encryption (`Proc-Type: 4,ENCRYPTED` with `DEK-Info: <cipher>,<iv hex>`)
//! of `RSA PRIVATE KEY` and `EC PRIVATE KEY` blocks, which `openssl rsa -aes256` and older
//! tooling write and Fulcio's file CA reads. The key is OpenSSL's `EVP_BytesToKey` with MD5, one
//! iteration and the first 8 bytes of the IV as salt: weak, so it is only ever read, never written.

use aes::{Aes128, Aes192, Aes256};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockCipherDecrypt, BlockModeDecrypt, KeyInit, KeyIvInit};
use des::TdesEde3;
use md5::{Digest, Md5};
use zeroize::Zeroizing;

/// True if the block carries OpenSSL's legacy encryption headers.
pub(crate) fn is_encrypted(block: &pem::Pem) -> bool {
    block
        .headers()
        .get("Proc-Type")
        .is_some_and(|v| v.replace(' ', "") == "4,ENCRYPTED")
}

/// Why a block could not be decrypted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DecryptError {
    /// The headers name a cipher this reader does not support, or are malformed.
    Format(String),
    /// The padding is wrong: wrong password, or a corrupt file.
    Padding,
}

/// Decrypts a legacy-encrypted block's contents with `password`.
pub(crate) fn decrypt(block: &pem::Pem, password: &[u8]) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
    let dek = block
        .headers()
        .get("DEK-Info")
        .ok_or_else(|| DecryptError::Format("Proc-Type says ENCRYPTED but there is no DEK-Info header".into()))?;
    let (cipher, iv_hex) = dek
        .split_once(',')
        .ok_or_else(|| DecryptError::Format(format!("DEK-Info {dek:?} is not <cipher>,<iv>")))?;
    let iv =
        hex_decode(iv_hex.trim()).ok_or_else(|| DecryptError::Format("the DEK-Info IV is not hexadecimal".into()))?;
    let cipher = cipher.trim();
    let (key_len, iv_len) = match cipher {
        "AES-128-CBC" => (16, 16),
        "AES-192-CBC" => (24, 16),
        "AES-256-CBC" => (32, 16),
        "DES-EDE3-CBC" => (24, 8),
        other => {
            return Err(DecryptError::Format(format!(
                "legacy PEM cipher {other:?} is not supported (AES-128/192/256-CBC or DES-EDE3-CBC); \
                 re-encrypt the key as PKCS#8: openssl pkcs8 -topk8 -v2 aes-256-cbc"
            )));
        }
    };
    if iv.len() != iv_len {
        return Err(DecryptError::Format(format!(
            "the DEK-Info IV is {} bytes; {cipher} needs {iv_len}",
            iv.len()
        )));
    }
    let key = bytes_to_key(password, &iv[..8], key_len);
    let body = block.contents();
    match cipher {
        "AES-128-CBC" => cbc_decrypt::<Aes128>(&key, &iv, body),
        "AES-192-CBC" => cbc_decrypt::<Aes192>(&key, &iv, body),
        "AES-256-CBC" => cbc_decrypt::<Aes256>(&key, &iv, body),
        _ => cbc_decrypt::<TdesEde3>(&key, &iv, body),
    }
}

fn cbc_decrypt<C: BlockCipherDecrypt + KeyInit>(
    key: &[u8],
    iv: &[u8],
    body: &[u8],
) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
    let mut buf = Zeroizing::new(body.to_vec());
    let len = cbc::Decryptor::<C>::new_from_slices(key, iv)
        .map_err(|_| DecryptError::Format("bad key or IV length".into()))?
        .decrypt_padded::<Pkcs7>(&mut buf)
        .map_err(|_| DecryptError::Padding)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

/// OpenSSL's `EVP_BytesToKey(MD5, salt, password, count = 1)`: D_i = MD5(D_{i-1} ‖ password ‖
/// salt), concatenated until `len` bytes.
fn bytes_to_key(password: &[u8], salt: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(len + 16));
    let mut prev: Vec<u8> = Vec::new();
    while out.len() < len {
        let mut h = Md5::new();
        h.update(&prev);
        h.update(password);
        h.update(salt);
        prev = h.finalize().to_vec();
        out.extend_from_slice(&prev);
    }
    out.truncate(len);
    out
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl enc -aes-256-cbc -P -md md5 -S 0102030405060708 -pass pass:secret` prints this key.
    #[test]
    fn bytes_to_key_matches_openssl() {
        let key = bytes_to_key(b"secret", &[1, 2, 3, 4, 5, 6, 7, 8], 32);
        assert_eq!(
            hex(&key),
            "c9e5a1bd216dbe1317e230cef48f38ee7f0e17ad64022144bccec4a1aa2879ab"
        );
    }

    fn hex(b: &[u8]) -> String {
        ::hex::encode(b)
    }

    #[test]
    fn malformed_headers_are_named() {
        let mut block = pem::parse("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: DES-CBC,0102030405060708\n\nAAAA\n-----END RSA PRIVATE KEY-----\n").unwrap();
        assert!(is_encrypted(&block));
        assert!(matches!(decrypt(&block, b"pw"), Err(DecryptError::Format(m)) if m.contains("DES-CBC")));
        block = pem::parse("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,0102\n\nAAAA\n-----END RSA PRIVATE KEY-----\n").unwrap();
        assert!(matches!(decrypt(&block, b"pw"), Err(DecryptError::Format(m)) if m.contains("IV is 2 bytes")));
        block = pem::parse(
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(matches!(decrypt(&block, b"pw"), Err(DecryptError::Format(m)) if m.contains("DEK-Info")));
    }
}
