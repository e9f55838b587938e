//! The file key backend: the issuing key in a PEM file plus the PEM chain file.
//!
//! Any key format and algorithm Fulcio's file CA loads is read ([`keyfile`]); `ca init` writes
//! PKCS#8, encrypted (PBES2, scrypt + AES-256-CBC) when a password is configured.

mod keyfile;
mod legacy;
pub mod sigstore;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use keyless_ca::ceremony::{self, CaNames};
use keyless_ca::pipeline::pem_encode;
use keyless_ca::{KeySpec, SignatureAlgorithm, Signer, SoftwareSigner};
use keyless_config::{FileCaConfig, Secret};
use pkcs8::PrivateKeyInfoRef;
use pkcs8::der::Decode;
use pkcs8::der::pem::LineEnding;

use crate::HsmError;

/// Root certificates live about ten years; intermediates about five (clipped to the root).
pub(crate) const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
pub(crate) const INTERMEDIATE_LIFETIME: Duration = Duration::from_secs(5 * 365 * 24 * 3600);

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HsmError + '_ {
    move |source| HsmError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn password(cfg: &FileCaConfig) -> Result<Option<Secret>, HsmError> {
    cfg.password
        .as_ref()
        .map(|r| r.resolve().map_err(HsmError::Secret))
        .transpose()
}

/// Loads the issuing key and the chain text.
pub fn load_file_ca(cfg: &FileCaConfig) -> Result<(Arc<dyn Signer>, String), HsmError> {
    let key_pem = fs::read_to_string(&cfg.key).map_err(io(&cfg.key))?;
    let chain = fs::read_to_string(&cfg.chain).map_err(io(&cfg.chain))?;
    let pw = password(cfg)?;
    let loaded = keyfile::read_key(&key_pem, pw.as_ref()).map_err(|reason| HsmError::Key {
        path: cfg.key.display().to_string(),
        reason,
    })?;
    if loaded.password_unused {
        tracing::warn!(
            key = %cfg.key.display(),
            "ca.file.password is set but the key file is not encrypted; the password is ignored"
        );
    }
    tracing::info!(
        key = %cfg.key.display(),
        format = loaded.format.name(),
        algorithm = loaded.signer.algorithm().name(),
        "CA key loaded from file"
    );
    Ok((Arc::new(loaded.signer), chain))
}

/// What `ca init` made.
#[derive(Debug, Clone)]
pub struct FileCaReport {
    /// SHA-256 fingerprints (hex) of the root and intermediate certificates.
    pub root_sha256: String,
    /// Intermediate fingerprint.
    pub intermediate_sha256: String,
    /// Where the root's private key went (move it offline).
    pub root_key_path: String,
}

/// Creates a P-384 root and an issuing intermediate with a key of `issuing` (P-256 unless the
/// operator asks otherwise), writes the issuing key (encrypted when a password is configured),
/// the root key beside it, and the chain. Refuses to overwrite.
pub fn init_file_ca(
    cfg: &FileCaConfig,
    names: &CaNames,
    issuing: KeySpec,
    now: SystemTime,
) -> Result<FileCaReport, HsmError> {
    let root_key_path = cfg.key.with_file_name(format!(
        "{}-root.pem",
        cfg.key.file_stem().and_then(|s| s.to_str()).unwrap_or("ca-key")
    ));
    for p in [&cfg.key, &cfg.chain, &root_key_path] {
        if p.exists() {
            return Err(HsmError::Exists(p.display().to_string()));
        }
    }
    let pw = password(cfg)?;
    let (root, root_pkcs8) =
        SoftwareSigner::generate(SignatureAlgorithm::EcdsaP384Sha384).map_err(|e| HsmError::Secret(e.0))?;
    let (issuing, issuing_pkcs8) = SoftwareSigner::generate_key(issuing).map_err(|e| HsmError::Secret(e.0))?;
    let root_der = ceremony::root_certificate(&root, names, ROOT_LIFETIME, now)?;
    let inter_der = ceremony::intermediate_certificate(
        &root,
        &root_der,
        issuing.public_key_spki(),
        names,
        INTERMEDIATE_LIFETIME,
        now,
    )?;
    let chain = format!("{}{}", pem_encode(&inter_der), pem_encode(&root_der));
    // Prove the result is loadable before writing anything.
    keyless_ca::CertificateAuthority::new(
        Arc::new(SoftwareSigner::from_pkcs8_any(&issuing_pkcs8).map_err(|e| HsmError::Secret(e.0))?),
        &chain,
        Duration::from_secs(600),
        now,
    )?;

    for dir in [&cfg.key, &cfg.chain, &root_key_path].iter().filter_map(|p| p.parent()) {
        fs::create_dir_all(dir).map_err(io(dir))?;
    }
    write_new(
        &cfg.key,
        key_pem(&issuing_pkcs8, pw.as_ref(), &cfg.key)?.as_bytes(),
        true,
    )?;
    write_new(
        &root_key_path,
        key_pem(&root_pkcs8, pw.as_ref(), &root_key_path)?.as_bytes(),
        true,
    )?;
    write_new(&cfg.chain, chain.as_bytes(), false)?;
    Ok(FileCaReport {
        root_sha256: sha256_hex(&root_der),
        intermediate_sha256: sha256_hex(&inter_der),
        root_key_path: root_key_path.display().to_string(),
    })
}

fn key_pem(pkcs8_der: &[u8], pw: Option<&Secret>, path: &Path) -> Result<String, HsmError> {
    let err = |e: pkcs8::Error| HsmError::Key {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let info = PrivateKeyInfoRef::from_der(pkcs8_der).map_err(|e| err(e.into()))?;
    let pem = match pw {
        Some(pw) => info
            .encrypt(pw.expose().as_bytes())
            .map_err(err)?
            .to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF),
        None => pkcs8::der::SecretDocument::try_from(info)
            .map_err(err)?
            .to_pem("PRIVATE KEY", LineEnding::LF),
    };
    pem.map(|z| z.to_string()).map_err(|e| err(e.into()))
}

/// Creates a file that must not exist yet; private keys are readable by the owner only.
pub(crate) fn write_new(path: &Path, bytes: &[u8], private: bool) -> Result<(), HsmError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(path).map_err(io(path))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(io(path))
}

/// Lower-case hex SHA-256.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(keyless_ca::keys::sha256(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyless_config::SecretRef;

    fn cfg(dir: &Path, password: Option<SecretRef>) -> FileCaConfig {
        FileCaConfig {
            key: dir.join("ca-key.pem"),
            chain: dir.join("ca-chain.pem"),
            password,
        }
    }

    #[test]
    fn init_then_load_plain_and_encrypted() {
        let dir = tempfile::tempdir().unwrap();
        let pw_file = dir.path().join("pw");
        fs::write(&pw_file, "correct horse\n").unwrap();
        for (sub, password) in [("plain", None), ("enc", Some(SecretRef::File(pw_file.clone())))] {
            let c = cfg(&dir.path().join(sub), password);
            let report = init_file_ca(&c, &CaNames::default(), KeySpec::EcdsaP256, SystemTime::now()).unwrap();
            assert_eq!(report.root_sha256.len(), 64);
            let text = fs::read_to_string(&c.key).unwrap();
            assert_eq!(text.contains("ENCRYPTED"), sub == "enc");
            let (signer, chain) = load_file_ca(&c).unwrap();
            keyless_ca::CertificateAuthority::new(signer, &chain, Duration::from_secs(600), SystemTime::now()).unwrap();
            // Refuses to overwrite.
            assert!(matches!(
                init_file_ca(&c, &CaNames::default(), KeySpec::EcdsaP256, SystemTime::now()),
                Err(HsmError::Exists(_))
            ));
        }
    }

    /// `ca init --algorithm`: each issuing key type makes a CA that loads and passes the
    /// start-up checks, and certificates name the algorithm the key signs with.
    #[test]
    fn init_with_every_issuing_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        for spec in KeySpec::ALL {
            if spec == KeySpec::Rsa4096 {
                continue; // slow to generate; 2048 and 3072 exercise the same code
            }
            let c = cfg(&dir.path().join(spec.name()), None);
            init_file_ca(&c, &CaNames::default(), spec, SystemTime::now()).unwrap();
            let (signer, chain) = load_file_ca(&c).unwrap();
            assert_eq!(signer.algorithm(), spec.signature_algorithm(), "{spec:?}");
            keyless_ca::CertificateAuthority::new(signer, &chain, Duration::from_secs(600), SystemTime::now())
                .unwrap_or_else(|e| panic!("{spec:?}: {e}"));
        }
    }

    #[test]
    fn wrong_password_is_refused_without_echo() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        let bad = dir.path().join("bad");
        fs::write(&good, "s3cret-one").unwrap();
        fs::write(&bad, "s3cret-two").unwrap();
        init_file_ca(
            &cfg(dir.path(), Some(SecretRef::File(good))),
            &CaNames::default(),
            KeySpec::Ed25519,
            SystemTime::now(),
        )
        .unwrap();
        let e = load_file_ca(&cfg(dir.path(), Some(SecretRef::File(bad))))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("wrong password"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        let e = load_file_ca(&cfg(dir.path(), None)).err().unwrap().to_string();
        assert!(e.contains("password is not set"), "{e}");
    }

    #[test]
    fn mismatched_key_and_chain_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = cfg(&dir.path().join("a"), None);
        let b = cfg(&dir.path().join("b"), None);
        init_file_ca(&a, &CaNames::default(), KeySpec::EcdsaP256, SystemTime::now()).unwrap();
        init_file_ca(&b, &CaNames::default(), KeySpec::EcdsaP256, SystemTime::now()).unwrap();
        let (signer, _) = load_file_ca(&a).unwrap();
        let chain_b = fs::read_to_string(&b.chain).unwrap();
        let e = keyless_ca::CertificateAuthority::new(signer, &chain_b, Duration::from_secs(600), SystemTime::now())
            .unwrap_err();
        assert!(
            e.to_string().contains("not the issuing certificate's public key"),
            "{e}"
        );
    }
}
