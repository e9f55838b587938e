//! Reading a CA private key file in every format Fulcio's file CA reads, so an operator keeps
//! the file they have: PKCS#8 (`PRIVATE KEY`, or `ENCRYPTED PRIVATE KEY` with PBES2: PBKDF2 with
//! SHA-1 or SHA-2, or scrypt; AES-CBC or 3DES), PKCS#1 (`RSA PRIVATE KEY`), SEC1
//! (`EC PRIVATE KEY`, an `EC PARAMETERS` block before it is skipped), both optionally with OpenSSL's
//! legacy `Proc-Type` encryption, and sigstore's `ENCRYPTED SIGSTORE PRIVATE KEY` (or cosign's
//! `ENCRYPTED COSIGN PRIVATE KEY`). Errors name the format and the problem, never the password
//! or key bytes.

use keyless_ca::SoftwareSigner;
use keyless_config::Secret;
use pkcs8::EncryptedPrivateKeyInfoRef;
use pkcs8::der::Decode;
use zeroize::Zeroizing;

use super::{legacy, sigstore};

/// The format a key file was in, for the start-up log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyFormat {
    /// `PRIVATE KEY`.
    Pkcs8,
    /// `ENCRYPTED PRIVATE KEY` (PBES2).
    EncryptedPkcs8,
    /// `RSA PRIVATE KEY`.
    Pkcs1,
    /// `EC PRIVATE KEY`.
    Sec1,
    /// `RSA PRIVATE KEY` or `EC PRIVATE KEY` with `Proc-Type: 4,ENCRYPTED`.
    LegacyEncrypted,
    /// `ENCRYPTED SIGSTORE PRIVATE KEY` / `ENCRYPTED COSIGN PRIVATE KEY`.
    Sigstore,
}

impl KeyFormat {
    pub(crate) fn name(self) -> &'static str {
        match self {
            KeyFormat::Pkcs8 => "PKCS#8",
            KeyFormat::EncryptedPkcs8 => "encrypted PKCS#8 (PBES2)",
            KeyFormat::Pkcs1 => "PKCS#1",
            KeyFormat::Sec1 => "SEC1",
            KeyFormat::LegacyEncrypted => "OpenSSL legacy-encrypted PEM",
            KeyFormat::Sigstore => "sigstore encrypted key (scrypt + secretbox)",
        }
    }

    fn encrypted(self) -> bool {
        matches!(
            self,
            KeyFormat::EncryptedPkcs8 | KeyFormat::LegacyEncrypted | KeyFormat::Sigstore
        )
    }
}

/// A key read from a file.
pub(crate) struct LoadedKey {
    pub(crate) signer: SoftwareSigner,
    pub(crate) format: KeyFormat,
    /// A password was configured but the key is stored in the clear (Fulcio ignores the
    /// password then; so does Keyless CA, with a warning).
    pub(crate) password_unused: bool,
}

const WRONG_PASSWORD: &str = "cannot decrypt the key: wrong password or corrupt file";

/// Reads the one private key in `text` (PEM), decrypting it with `password` when it is encrypted.
pub(crate) fn read_key(text: &str, password: Option<&Secret>) -> Result<LoadedKey, String> {
    let blocks = pem::parse_many(text).map_err(|e| format!("not a PEM key: {e}"))?;
    let keys: Vec<&pem::Pem> = blocks.iter().filter(|b| b.tag() != "EC PARAMETERS").collect();
    let block = match keys.as_slice() {
        [one] => *one,
        [] => return Err("no private key PEM block in the file".into()),
        more => {
            let labels: Vec<&str> = more.iter().map(|b| b.tag()).collect();
            return Err(format!(
                "the file holds {} PEM blocks ({}); it must hold exactly one private key",
                more.len(),
                labels.join(", ")
            ));
        }
    };
    let label = block.tag();
    let format = match label {
        "PRIVATE KEY" if legacy::is_encrypted(block) => KeyFormat::LegacyEncrypted,
        "PRIVATE KEY" => KeyFormat::Pkcs8,
        "ENCRYPTED PRIVATE KEY" => KeyFormat::EncryptedPkcs8,
        "RSA PRIVATE KEY" | "EC PRIVATE KEY" if legacy::is_encrypted(block) => KeyFormat::LegacyEncrypted,
        "RSA PRIVATE KEY" => KeyFormat::Pkcs1,
        "EC PRIVATE KEY" => KeyFormat::Sec1,
        l if sigstore::LABELS.contains(&l) => KeyFormat::Sigstore,
        other => {
            return Err(format!(
                "PEM label {other:?} is not a supported private key (PRIVATE KEY, ENCRYPTED PRIVATE KEY, \
                 RSA PRIVATE KEY, EC PRIVATE KEY, ENCRYPTED SIGSTORE PRIVATE KEY)"
            ));
        }
    };
    let pw = match (format.encrypted(), password) {
        (true, None) => {
            return Err(format!(
                "the key is encrypted ({}) but ca.file.password is not set",
                format.name()
            ));
        }
        (true, Some(pw)) => Some(pw.expose().as_bytes()),
        (false, _) => None,
    };
    let fail = |e: keyless_ca::SignError| format!("{} key: {e}", format.name());
    let signer = match (format, pw) {
        (KeyFormat::Pkcs8, _) => SoftwareSigner::from_pkcs8_any(block.contents()).map_err(fail)?,
        (KeyFormat::Pkcs1, _) => SoftwareSigner::from_rsa_pkcs1(block.contents()).map_err(fail)?,
        (KeyFormat::Sec1, _) => SoftwareSigner::from_sec1(block.contents()).map_err(fail)?,
        (KeyFormat::EncryptedPkcs8, Some(pw)) => {
            let info = EncryptedPrivateKeyInfoRef::from_der(block.contents())
                .map_err(|e| format!("{}: not an EncryptedPrivateKeyInfo: {e}", format.name()))?;
            let der = info.decrypt(pw).map_err(|e| match e {
                pkcs8::Error::EncryptedPrivateKey(pkcs8::pkcs5::Error::AlgorithmParametersInvalid { oid })
                | pkcs8::Error::EncryptedPrivateKey(pkcs8::pkcs5::Error::UnsupportedAlgorithm { oid }) => {
                    format!("{}: unsupported encryption algorithm {oid}", format.name())
                }
                pkcs8::Error::EncryptedPrivateKey(pkcs8::pkcs5::Error::NoPbes1CryptSupport) => format!(
                    "{}: PBES1 (e.g. openssl pkcs8 -v1) is not supported; re-encrypt with \
                     openssl pkcs8 -topk8 -v2 aes-256-cbc",
                    format.name()
                ),
                _ => WRONG_PASSWORD.to_string(),
            })?;
            SoftwareSigner::from_pkcs8_any(der.as_bytes()).map_err(|_| WRONG_PASSWORD.to_string())?
        }
        (KeyFormat::Sigstore, Some(pw)) => {
            let der = sigstore::open(block.contents(), pw).map_err(|e| match e {
                sigstore::OpenError::Format(m) => format!("{}: {m}", format.name()),
                sigstore::OpenError::Authentication => WRONG_PASSWORD.to_string(),
            })?;
            SoftwareSigner::from_pkcs8_any(&der).map_err(fail)?
        }
        (KeyFormat::LegacyEncrypted, Some(pw)) => {
            let der: Zeroizing<Vec<u8>> = legacy::decrypt(block, pw).map_err(|e| match e {
                legacy::DecryptError::Format(m) => format!("{}: {m}", format.name()),
                legacy::DecryptError::Padding => WRONG_PASSWORD.to_string(),
            })?;
            // The padding check passes by chance for 1 wrong password in ~256: a key that then
            // does not decode is the same failure.
            match label {
                "RSA PRIVATE KEY" => SoftwareSigner::from_rsa_pkcs1(&der),
                "EC PRIVATE KEY" => SoftwareSigner::from_sec1(&der),
                _ => SoftwareSigner::from_pkcs8_any(&der),
            }
            .map_err(|_| WRONG_PASSWORD.to_string())?
        }
        (KeyFormat::EncryptedPkcs8 | KeyFormat::Sigstore | KeyFormat::LegacyEncrypted, None) => {
            return Err("internal: an encrypted key without a password".into());
        }
    };
    Ok(LoadedKey {
        signer,
        format,
        password_unused: password.is_some() && !format.encrypted(),
    })
}
