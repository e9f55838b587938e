//! `ca:` — where the CA signing key and chain live. One variant per backend, each with exactly the
//! settings it needs, so callers match every backend explicitly and none can be mistaken for
//! another.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{ConfigError, SecretRef, resolve};

/// Where the CA signing key lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaConfig {
    /// `ca:` omitted: a file CA generated under `data_dir/ca` on first start, unencrypted.
    Generated(GeneratedCaConfig),
    /// An existing (or `keyless ca init`-created) key file and chain file.
    File(FileCaConfig),
    /// A key inside a PKCS#11 token (an HSM; SoftHSM2 in development and tests).
    Pkcs11(Pkcs11CaConfig),
}

/// The generated development CA: an unencrypted key and its chain under `data_dir/ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedCaConfig {
    /// PKCS#8 PEM private key of the issuing CA (`data_dir/ca/ca-key.pem`).
    pub key: PathBuf,
    /// PEM chain, issuing CA first, root last (`data_dir/ca/ca-chain.pem`).
    pub chain: PathBuf,
}

impl GeneratedCaConfig {
    /// The generated CA's files under `data_dir`.
    pub fn under(data_dir: &Path) -> GeneratedCaConfig {
        GeneratedCaConfig {
            key: data_dir.join("ca").join("ca-key.pem"),
            chain: data_dir.join("ca").join("ca-chain.pem"),
        }
    }

    /// These files as the file backend reads and writes them: a key stored in the clear.
    pub fn file_config(&self) -> FileCaConfig {
        FileCaConfig {
            key: self.key.clone(),
            chain: self.chain.clone(),
            password: None,
        }
    }
}

/// `ca.pkcs11`: where the issuing key lives in the HSM, and the chain file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11CaConfig {
    /// The PKCS#11 module (`.so`).
    pub module: PathBuf,
    /// The token, found by label (slot numbers change when tokens are re-initialized).
    pub token_label: String,
    /// The user PIN, as a secret reference.
    pub pin: SecretRef,
    /// Label of the issuing key; the root key is `<key_label>-root`.
    pub key_label: String,
    /// PEM chain: issuing CA first, root last.
    pub chain: PathBuf,
    /// Signing mechanism: `ecdsa` (hash in software; SoftHSM has nothing else) or `ecdsa-sha256`.
    pub mechanism: Pkcs11Mechanism,
}

/// How the HSM is asked to sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pkcs11Mechanism {
    /// CKM_ECDSA over a digest computed in software.
    Ecdsa,
    /// CKM_ECDSA_SHA256/384: the HSM hashes (for HSMs that support it).
    EcdsaWithHash,
}

/// `ca.file`: a private key file and the chain, issuing CA first, root last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCaConfig {
    /// PEM private key of the issuing CA in any format Fulcio's file CA reads: PKCS#8 (plain or
    /// PBES2-encrypted), PKCS#1, SEC1 (plain or OpenSSL-encrypted), or sigstore's
    /// `ENCRYPTED SIGSTORE PRIVATE KEY`; ECDSA P-256/P-384/P-521, RSA or Ed25519.
    pub key: PathBuf,
    /// PEM chain: issuing CA first, root last.
    pub chain: PathBuf,
    /// Password for an encrypted key (`None`: the key must be stored in the clear).
    pub password: Option<SecretRef>,
}

impl CaConfig {
    /// The chain file (issuing CA first, root last), wherever the key lives.
    pub fn chain_path(&self) -> &Path {
        match self {
            CaConfig::Generated(g) => &g.chain,
            CaConfig::File(f) => &f.chain,
            CaConfig::Pkcs11(p) => &p.chain,
        }
    }

    /// The key file and chain when the key lives in a file (generated or configured); `None` for
    /// a key in an HSM, which has no key file.
    pub fn key_file(&self) -> Option<FileCaConfig> {
        match self {
            CaConfig::Generated(g) => Some(g.file_config()),
            CaConfig::File(f) => Some(f.clone()),
            CaConfig::Pkcs11(_) => None,
        }
    }

    /// The backend's name, for logs and messages.
    pub fn backend(&self) -> &'static str {
        match self {
            CaConfig::Generated(_) => "generated",
            CaConfig::File(_) => "file",
            CaConfig::Pkcs11(_) => "pkcs11",
        }
    }
}

/// A client key and signature algorithm, named as Fulcio's `--client-signing-algorithms` names
/// it (sigstore's algorithm registry): key type, size or curve, and hash must all match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientSigningAlgorithm {
    /// `ecdsa-sha2-256-nistp256`.
    EcdsaP256Sha256,
    /// `ecdsa-sha2-384-nistp384`.
    EcdsaP384Sha384,
    /// `ecdsa-sha2-512-nistp521`.
    EcdsaP521Sha512,
    /// `ecdsa-sha2-256-nistp384` (deprecated; CSRs only).
    EcdsaP384Sha256,
    /// `ecdsa-sha2-256-nistp521` (deprecated; CSRs only).
    EcdsaP521Sha256,
    /// `rsa-sign-pkcs1-2048-sha256`.
    Rsa2048Pkcs1Sha256,
    /// `rsa-sign-pkcs1-3072-sha256`.
    Rsa3072Pkcs1Sha256,
    /// `rsa-sign-pkcs1-4096-sha256`.
    Rsa4096Pkcs1Sha256,
    /// `rsa-sign-pss-2048-sha256`: a valid name that no request can match (PSS proofs and CSRs
    /// are refused), accepted so Fulcio's flag values carry over.
    Rsa2048PssSha256,
    /// `rsa-sign-pss-3072-sha256` (matches nothing, as above).
    Rsa3072PssSha256,
    /// `rsa-sign-pss-4096-sha256` (matches nothing, as above).
    Rsa4096PssSha256,
    /// `ed25519`: pure Ed25519.
    Ed25519,
    /// `ed25519-ph`: Ed25519ph (matches nothing: proofs and CSRs use pure Ed25519).
    Ed25519Ph,
}

impl ClientSigningAlgorithm {
    /// Every name, in the registry's order.
    pub const ALL: [ClientSigningAlgorithm; 13] = [
        ClientSigningAlgorithm::EcdsaP256Sha256,
        ClientSigningAlgorithm::EcdsaP384Sha384,
        ClientSigningAlgorithm::EcdsaP521Sha512,
        ClientSigningAlgorithm::EcdsaP384Sha256,
        ClientSigningAlgorithm::EcdsaP521Sha256,
        ClientSigningAlgorithm::Rsa2048Pkcs1Sha256,
        ClientSigningAlgorithm::Rsa3072Pkcs1Sha256,
        ClientSigningAlgorithm::Rsa4096Pkcs1Sha256,
        ClientSigningAlgorithm::Rsa2048PssSha256,
        ClientSigningAlgorithm::Rsa3072PssSha256,
        ClientSigningAlgorithm::Rsa4096PssSha256,
        ClientSigningAlgorithm::Ed25519,
        ClientSigningAlgorithm::Ed25519Ph,
    ];

    /// Fulcio's default `--client-signing-algorithms`: one algorithm per key the key policy
    /// admits, with that key's default hash.
    pub const FULCIO_DEFAULT: [ClientSigningAlgorithm; 7] = [
        ClientSigningAlgorithm::EcdsaP256Sha256,
        ClientSigningAlgorithm::EcdsaP384Sha384,
        ClientSigningAlgorithm::EcdsaP521Sha512,
        ClientSigningAlgorithm::Rsa2048Pkcs1Sha256,
        ClientSigningAlgorithm::Rsa3072Pkcs1Sha256,
        ClientSigningAlgorithm::Rsa4096Pkcs1Sha256,
        ClientSigningAlgorithm::Ed25519,
    ];

    /// The registry name (`ecdsa-sha2-256-nistp256`, …).
    pub fn name(self) -> &'static str {
        match self {
            ClientSigningAlgorithm::EcdsaP256Sha256 => "ecdsa-sha2-256-nistp256",
            ClientSigningAlgorithm::EcdsaP384Sha384 => "ecdsa-sha2-384-nistp384",
            ClientSigningAlgorithm::EcdsaP521Sha512 => "ecdsa-sha2-512-nistp521",
            ClientSigningAlgorithm::EcdsaP384Sha256 => "ecdsa-sha2-256-nistp384",
            ClientSigningAlgorithm::EcdsaP521Sha256 => "ecdsa-sha2-256-nistp521",
            ClientSigningAlgorithm::Rsa2048Pkcs1Sha256 => "rsa-sign-pkcs1-2048-sha256",
            ClientSigningAlgorithm::Rsa3072Pkcs1Sha256 => "rsa-sign-pkcs1-3072-sha256",
            ClientSigningAlgorithm::Rsa4096Pkcs1Sha256 => "rsa-sign-pkcs1-4096-sha256",
            ClientSigningAlgorithm::Rsa2048PssSha256 => "rsa-sign-pss-2048-sha256",
            ClientSigningAlgorithm::Rsa3072PssSha256 => "rsa-sign-pss-3072-sha256",
            ClientSigningAlgorithm::Rsa4096PssSha256 => "rsa-sign-pss-4096-sha256",
            ClientSigningAlgorithm::Ed25519 => "ed25519",
            ClientSigningAlgorithm::Ed25519Ph => "ed25519-ph",
        }
    }

    /// Parses a list as Fulcio's flag takes it (`a,b,c`); an unknown name is an error naming it.
    pub fn parse_list(text: &str) -> Result<Vec<ClientSigningAlgorithm>, String> {
        text.split(',').map(|s| s.trim().parse()).collect()
    }
}

impl std::fmt::Display for ClientSigningAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ClientSigningAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        ClientSigningAlgorithm::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = ClientSigningAlgorithm::ALL.iter().map(|a| a.name()).collect();
                format!("unknown signing algorithm {s:?} (known: {})", names.join(", "))
            })
    }
}

/// `client_signing_algorithms:` — unset is Fulcio's default; a list must name at least one
/// algorithm (an empty list would refuse every client) and each at most once.
pub(crate) fn validate_client_algorithms(raw: Option<Vec<String>>) -> Result<Vec<ClientSigningAlgorithm>, ConfigError> {
    const PATH: &str = "client_signing_algorithms";
    let Some(names) = raw else {
        return Ok(ClientSigningAlgorithm::FULCIO_DEFAULT.to_vec());
    };
    if names.is_empty() {
        return Err(ConfigError::rule(
            PATH,
            "the list is empty, which would refuse every client; omit the key for Fulcio's default",
        ));
    }
    let mut out: Vec<ClientSigningAlgorithm> = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let alg: ClientSigningAlgorithm = name.parse().map_err(|e| ConfigError::rule(format!("{PATH}[{i}]"), e))?;
        if out.contains(&alg) {
            return Err(ConfigError::rule(
                format!("{PATH}[{i}]"),
                format!("{name:?} is listed twice"),
            ));
        }
        out.push(alg);
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCa {
    file: Option<RawFileCa>,
    pkcs11: Option<RawPkcs11>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPkcs11 {
    module: String,
    token_label: String,
    pin: String,
    key_label: String,
    chain: String,
    mechanism: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileCa {
    key: String,
    chain: String,
    password: Option<String>,
}

/// `ca:` omitted is the generated CA under `data_dir`; otherwise exactly one backend.
pub(crate) fn validate(raw: Option<RawCa>, base: &Path, data_dir: &Path) -> Result<CaConfig, ConfigError> {
    let raw = match raw {
        None => return Ok(CaConfig::Generated(GeneratedCaConfig::under(data_dir))),
        Some(raw) => raw,
    };
    match (raw.file, raw.pkcs11) {
        (None, Some(p)) => {
            let pin = SecretRef::parse(&p.pin).map_err(|e| ConfigError::rule("ca.pkcs11.pin", e))?;
            if p.token_label.is_empty() || p.key_label.is_empty() {
                return Err(ConfigError::rule(
                    "ca.pkcs11",
                    "token_label and key_label must not be empty",
                ));
            }
            let mechanism = match p.mechanism.as_deref() {
                None | Some("ecdsa") => Pkcs11Mechanism::Ecdsa,
                Some("ecdsa-sha256") => Pkcs11Mechanism::EcdsaWithHash,
                Some(other) => {
                    return Err(ConfigError::rule(
                        "ca.pkcs11.mechanism",
                        format!("{other:?} is not `ecdsa` or `ecdsa-sha256`"),
                    ));
                }
            };
            Ok(CaConfig::Pkcs11(Pkcs11CaConfig {
                module: resolve(base, &p.module),
                token_label: p.token_label,
                pin,
                key_label: p.key_label,
                chain: resolve(base, &p.chain),
                mechanism,
            }))
        }
        (Some(file), None) => {
            let password = file
                .password
                .map(|p| SecretRef::parse(&p).map_err(|e| ConfigError::rule("ca.file.password", e)))
                .transpose()?;
            Ok(CaConfig::File(FileCaConfig {
                key: resolve(base, &file.key),
                chain: resolve(base, &file.chain),
                password,
            }))
        }
        (None, None) | (Some(_), Some(_)) => Err(ConfigError::rule("ca", "set exactly one of `file` or `pkcs11`")),
    }
}

#[cfg(test)]
mod tests {
    use crate::{CaConfig, Config, ConfigError, FileCaConfig, GeneratedCaConfig, Pkcs11Mechanism, SecretRef};
    use std::path::{Path, PathBuf};

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(text, Path::new("/etc/keyless"))
    }

    #[test]
    fn generated_ca_lives_under_data_dir() {
        let c = load("data_dir: /var/lib/keyless\n").unwrap();
        let CaConfig::Generated(g) = &c.ca else {
            panic!("{:?}", c.ca)
        };
        assert_eq!(g.key, PathBuf::from("/var/lib/keyless/ca/ca-key.pem"));
        assert_eq!(c.ca.chain_path(), Path::new("/var/lib/keyless/ca/ca-chain.pem"));
        assert_eq!(
            c.ca.key_file(),
            Some(FileCaConfig {
                key: g.key.clone(),
                chain: g.chain.clone(),
                password: None
            })
        );
        assert_eq!(
            Config::dev(PathBuf::from("/d")).ca,
            CaConfig::Generated(GeneratedCaConfig::under(Path::new("/d")))
        );
    }

    #[test]
    fn file_ca() {
        let c =
            load("ca:\n  file: { key: ca-key.pem, chain: ca-chain.pem, password: env:KEYLESS_CA_PASSWORD }\n").unwrap();
        let CaConfig::File(f) = &c.ca else { panic!("{:?}", c.ca) };
        assert_eq!(f.key, PathBuf::from("/etc/keyless/ca-key.pem"));
        assert_eq!(f.password, Some(SecretRef::Env("KEYLESS_CA_PASSWORD".into())));
        assert_eq!(c.ca.chain_path(), Path::new("/etc/keyless/ca-chain.pem"));
        assert_eq!(c.ca.key_file().as_ref(), Some(f));
    }

    #[test]
    fn nested_unknown_key_is_named_with_path() {
        let e = load("ca:\n  file: { key: a, chain: b, passwrd: x }\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("ca.file"), "{e}");
        assert!(e.contains("passwrd"), "{e}");
    }

    #[test]
    fn literal_password_is_refused() {
        let e = load("ca:\n  file: { key: a, chain: b, password: hunter2 }\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("ca.file.password:"), "{e}");
        assert!(!e.contains("hunter2"), "secret echoed: {e}");
    }

    /// A PKCS#11 CA has a chain but no key file: nothing invents one for it.
    #[test]
    fn pkcs11_ca() {
        let c = load("ca:\n  pkcs11: {module: /usr/lib/softhsm/libsofthsm2.so, token_label: keyless, pin: env:PIN, key_label: k, chain: c.pem}\n").unwrap();
        let CaConfig::Pkcs11(p) = &c.ca else {
            panic!("{:?}", c.ca)
        };
        assert_eq!(p.pin, SecretRef::Env("PIN".into()));
        assert_eq!(p.chain, PathBuf::from("/etc/keyless/c.pem"));
        assert_eq!(p.mechanism, Pkcs11Mechanism::Ecdsa);
        assert_eq!(c.ca.chain_path(), Path::new("/etc/keyless/c.pem"));
        assert_eq!(c.ca.key_file(), None);
        let e = load("ca:\n  pkcs11: {module: m, token_label: t, pin: '1234', key_label: k, chain: c}\n").unwrap_err();
        assert!(e.to_string().starts_with("ca.pkcs11.pin:"), "{e}");
        let e =
            load("ca:\n  pkcs11: {module: m, token_label: t, pin: env:P, key_label: k, chain: c, mechanism: rsa}\n")
                .unwrap_err();
        assert!(e.to_string().starts_with("ca.pkcs11.mechanism:"), "{e}");
        let e = load("ca:\n  pkcs11: {module: m, token_label: '', pin: env:P, key_label: k, chain: c}\n").unwrap_err();
        assert!(e.to_string().starts_with("ca.pkcs11:"), "{e}");
        for both_or_none in [
            "ca: {}\n",
            "ca:\n  file: {key: a, chain: b}\n  pkcs11: {module: m, token_label: t, pin: env:P, key_label: k, chain: c}\n",
        ] {
            let e = load(both_or_none).unwrap_err();
            assert!(e.to_string().contains("exactly one"), "{e}");
        }
    }

    #[test]
    fn client_signing_algorithms() {
        use crate::ClientSigningAlgorithm as A;
        assert_eq!(load("").unwrap().client_signing_algorithms, A::FULCIO_DEFAULT.to_vec());
        let c = load("client_signing_algorithms: [ecdsa-sha2-256-nistp256, rsa-sign-pkcs1-4096-sha256, ed25519]\n")
            .unwrap();
        assert_eq!(
            c.client_signing_algorithms,
            vec![A::EcdsaP256Sha256, A::Rsa4096Pkcs1Sha256, A::Ed25519]
        );
        for a in A::ALL {
            assert_eq!(a.name().parse::<A>(), Ok(a));
        }
        assert_eq!(
            A::parse_list("ecdsa-sha2-256-nistp384, ed25519-ph"),
            Ok(vec![A::EcdsaP384Sha256, A::Ed25519Ph])
        );
        let e = load("client_signing_algorithms: [ed25519, ecdsa-p256]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("client_signing_algorithms[1]: unknown signing algorithm \"ecdsa-p256\""),
            "{e}"
        );
        assert!(e.contains("ecdsa-sha2-256-nistp256"), "names the known algorithms: {e}");
        let e = load("client_signing_algorithms: []\n").unwrap_err().to_string();
        assert!(e.starts_with("client_signing_algorithms: the list is empty"), "{e}");
        let e = load("client_signing_algorithms: [ed25519, ed25519]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("client_signing_algorithms[1]:") && e.contains("twice"),
            "{e}"
        );
        let e = load("client_signing_algorithms: ed25519\n").unwrap_err().to_string();
        assert!(e.starts_with("client_signing_algorithms"), "{e}");
    }

    /// Every backend is its own variant, named by an exhaustive match (no wildcard arm: a new
    /// backend does not compile until every caller handles it).
    #[test]
    fn every_backend_is_matched_explicitly() {
        let forms = [
            ("", "generated"),
            ("ca:\n  file: {key: k.pem, chain: c.pem}\n", "file"),
            (
                "ca:\n  pkcs11: {module: m, token_label: t, pin: env:P, key_label: k, chain: c.pem}\n",
                "pkcs11",
            ),
        ];
        for (text, backend) in forms {
            let ca = load(text).unwrap().ca;
            assert_eq!(ca.backend(), backend);
            let has_key_file = match &ca {
                CaConfig::Generated(_) | CaConfig::File(_) => true,
                CaConfig::Pkcs11(_) => false,
            };
            assert_eq!(ca.key_file().is_some(), has_key_file, "{backend}");
        }
    }
}
