//! The PKCS#11 key ceremony (`keyless ca init` with `ca.pkcs11`): keys generated inside the
//! token, the root and intermediate certificates, the chain file, and a typed ceremony record
//! written beside it. Nothing is overwritten, and every label is checked before any key is made.

use std::path::PathBuf;

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use keyless_ca::Signer as _;
use keyless_ca::der;
use keyless_config::Pkcs11CaConfig;
use serde::{Deserialize, Serialize};

use super::{P256_PARAMS, P384_PARAMS, Pkcs11Signer, context, find_slot, login, setup};
use crate::HsmError;

/// The ceremony record, written as JSON next to the chain file (`<chain>.ceremony.json`): which
/// ceremony ran, when, by whom, on which tokens, which keys it generated and which certificates
/// it made. It never holds a PIN or key material. Fields are in alphabetical order, the order the
/// record has always been written in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CeremonyRecord {
    /// `keyless ca init`, with `--root-only` or `--intermediate-from` when split.
    pub ceremony: String,
    /// The certificates made (or, for the root of a split ceremony, used), root first.
    pub certificates: Vec<CertificateRecord>,
    /// The chain file written.
    pub chain_file: String,
    /// The keys generated, in the order they were made.
    pub keys: Vec<KeyRecord>,
    /// The OS user who ran it.
    pub operator: String,
    /// `keyless <version>`.
    pub software: String,
    /// The token configured in `ca.pkcs11` (the first of `tokens`).
    pub token: TokenRecord,
    /// Every token used: the configured one, then the root's token of a split ceremony.
    pub tokens: Vec<TokenRecord>,
    /// When, RFC 3339 UTC.
    pub when: String,
}

/// A token as the ceremony record names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Token label.
    pub label: String,
    /// Manufacturer id.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// The PKCS#11 module's path.
    pub module: String,
    /// Token serial number.
    pub serial: String,
}

/// A key the ceremony generated inside a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// `ECDSA P-256` or `ECDSA P-384`.
    pub algorithm: String,
    /// Always false: the key never leaves the token.
    pub extractable: bool,
    /// CKA_ID, hex.
    pub id: String,
    /// CKA_LABEL.
    pub label: String,
    /// `root`, `issuing` or `ct-log`.
    pub role: String,
    /// Always true.
    pub sensitive: bool,
    /// The label of the token holding it.
    pub token: String,
    /// What the key may do: `sign` only.
    pub usage: Vec<String>,
}

/// A certificate the ceremony made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRecord {
    /// Validity end, RFC 3339 (empty if it could not be read).
    pub not_after: String,
    /// Validity start, RFC 3339 (empty if it could not be read).
    pub not_before: String,
    /// `root` or `issuing`.
    pub role: String,
    /// SHA-256 of the DER certificate, hex.
    pub sha256: String,
    /// `O=…, CN=…`.
    pub subject: String,
}

/// What the PKCS#11 key ceremony made, for the operator and the ceremony record.
#[derive(Debug, Clone)]
pub struct Pkcs11CeremonyReport {
    /// The ceremony record, also written next to the chain file.
    pub record: CeremonyRecord,
    /// Where the record was written.
    pub record_path: PathBuf,
}

/// Which part of the key ceremony to run.
#[derive(Debug, Clone)]
pub enum CeremonyMode {
    /// Root and issuing keys in the same token.
    Full,
    /// Only the root key and its self-signed certificate (an offline root token); the chain file
    /// then holds just the root.
    RootOnly,
    /// Only the issuing key in this token, certified by the root described by this configuration
    /// (its token connected for the ceremony, its chain file holding the root certificate).
    IntermediateFrom(Pkcs11CaConfig),
}

/// An open, logged-in read-write session on a configured token.
struct TokenSession {
    ctx: Pkcs11,
    slot: Slot,
    pin: AuthPin,
    session: Session,
    info: TokenRecord,
}

fn open_token(cfg: &Pkcs11CaConfig) -> Result<TokenSession, HsmError> {
    let pin = AuthPin::from(cfg.pin.resolve().map_err(HsmError::Secret)?.expose().to_string());
    let ctx = context(&cfg.module)?;
    let slot = find_slot(&ctx, &cfg.token_label)?;
    let token = ctx
        .get_token_info(slot)
        .map_err(|e| setup("ca.pkcs11.token_label", e))?;
    let session = ctx
        .open_rw_session(slot)
        .map_err(|e| setup("ca.pkcs11.token_label", e))?;
    login(&session, &pin)?;
    let info = TokenRecord {
        label: token.label().trim_end().to_string(),
        manufacturer: token.manufacturer_id().trim_end().to_string(),
        model: token.model().trim_end().to_string(),
        module: cfg.module.display().to_string(),
        serial: token.serial_number().trim_end().to_string(),
    };
    Ok(TokenSession {
        ctx,
        slot,
        pin,
        session,
        info,
    })
}

/// Generates an EC key pair inside the token: sensitive, never extractable, CKA_SIGN only.
/// Refuses if anything already carries `label`.
fn generate_key(t: &TokenSession, label: &str, role: &str, p384: bool) -> Result<KeyRecord, HsmError> {
    let existing = t
        .session
        .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
        .map_err(|e| setup("ca.pkcs11.key_label", e))?;
    if !existing.is_empty() {
        return Err(HsmError::Exists(format!("key {label:?} on token {:?}", t.info.label)));
    }
    let (params, name) = if p384 {
        (P384_PARAMS, "ECDSA P-384")
    } else {
        (P256_PARAMS, "ECDSA P-256")
    };
    let mut id = [0u8; 8];
    aws_lc_rs::rand::fill(&mut id).map_err(|_| setup("ca.pkcs11", "random number generator failed"))?;
    let public = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::EcParams(params.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Derive(false),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    t.session
        .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
        .map_err(|e| setup("ca.pkcs11", format!("generating {role} key {label:?}: {e}")))?;
    Ok(KeyRecord {
        algorithm: name.to_string(),
        extractable: false,
        id: hex(&id),
        label: label.to_string(),
        role: role.to_string(),
        sensitive: true,
        token: t.info.label.clone(),
        usage: vec!["sign".to_string()],
    })
}

/// `keyless ca init` with `ca.pkcs11`: generates the root (P-384, `<key_label>-root`) and issuing
/// (P-256, `<key_label>`) keys inside the token — sensitive, never extractable, CKA_SIGN only —
/// self-signs the root, issues the intermediate, writes the chain and a ceremony record. Refuses to
/// overwrite keys or files. [`CeremonyMode`] splits it for an offline root token.
///
/// `ct_log_label` also creates the embedded CT log's P-256 signing key in the same token.
pub fn init_pkcs11_ca(
    cfg: &Pkcs11CaConfig,
    names: &keyless_ca::ceremony::CaNames,
    now: std::time::SystemTime,
    mode: &CeremonyMode,
    ct_log_label: Option<&str>,
) -> Result<Pkcs11CeremonyReport, HsmError> {
    let record_path = PathBuf::from(format!("{}.ceremony.json", cfg.chain.display()));
    for p in [&cfg.chain, &record_path] {
        if p.exists() {
            return Err(HsmError::Exists(p.display().to_string()));
        }
    }
    let here = open_token(cfg)?;
    // Check every label this ceremony will create before creating any, so a refusal leaves no
    // orphaned key behind.
    let root_label = format!("{}-root", cfg.key_label);
    let mut labels: Vec<&str> = match mode {
        CeremonyMode::Full => vec![&cfg.key_label, &root_label],
        CeremonyMode::RootOnly => vec![&root_label],
        CeremonyMode::IntermediateFrom(_) => vec![&cfg.key_label],
    };
    let ct_log_label = ct_log_label.filter(|_| !matches!(mode, CeremonyMode::RootOnly));
    labels.extend(ct_log_label);
    for label in labels {
        let existing = here
            .session
            .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
            .map_err(|e| setup("ca.pkcs11.key_label", e))?;
        if !existing.is_empty() {
            return Err(HsmError::Exists(format!(
                "key {label:?} on token {:?}",
                here.info.label
            )));
        }
    }
    let mut keys = Vec::new();
    let mut tokens = vec![here.info.clone()];
    let open = |t: &TokenSession, label: &str, c: &Pkcs11CaConfig| {
        Pkcs11Signer::open_label(t.ctx.clone(), t.slot, &c.token_label, t.pin.clone(), label, c.mechanism)
    };
    let (root, root_der) = match mode {
        CeremonyMode::Full | CeremonyMode::RootOnly => {
            let label = format!("{}-root", cfg.key_label);
            keys.push(generate_key(&here, &label, "root", true)?);
            let root = open(&here, &label, cfg)?;
            let der = keyless_ca::ceremony::root_certificate(&root, names, crate::file::ROOT_LIFETIME, now)?;
            (root, der)
        }
        CeremonyMode::IntermediateFrom(root_cfg) => {
            let root_token = open_token(root_cfg)?;
            tokens.push(root_token.info.clone());
            let root = open(&root_token, &format!("{}-root", root_cfg.key_label), root_cfg)?;
            let text = std::fs::read_to_string(&root_cfg.chain).map_err(|source| HsmError::Io {
                path: root_cfg.chain.display().to_string(),
                source,
            })?;
            let chain = keyless_ca::pipeline::parse_pem_chain(&text)?;
            let der = chain
                .last()
                .cloned()
                .ok_or_else(|| setup("--intermediate-from", "the root chain file is empty"))?;
            (root, der)
        }
    };
    let pem = keyless_ca::pipeline::pem_encode;
    let mut certs = vec![("root", root_der.clone())];
    let chain = match mode {
        CeremonyMode::RootOnly => pem(&root_der),
        CeremonyMode::Full | CeremonyMode::IntermediateFrom(_) => {
            keys.push(generate_key(&here, &cfg.key_label, "issuing", false)?);
            let issuing = open(&here, &cfg.key_label, cfg)?;
            let inter_der = keyless_ca::ceremony::intermediate_certificate(
                &root,
                &root_der,
                issuing.public_key_spki(),
                names,
                crate::file::INTERMEDIATE_LIFETIME,
                now,
            )?;
            let chain = format!("{}{}", pem(&inter_der), pem(&root_der));
            keyless_ca::CertificateAuthority::new(
                std::sync::Arc::new(issuing),
                &chain,
                std::time::Duration::from_secs(600),
                now,
            )?;
            certs.push(("issuing", inter_der));
            chain
        }
    };
    if let Some(label) = ct_log_label {
        keys.push(generate_key(&here, label, "ct-log", false)?);
    }
    if let Some(dir) = cfg.chain.parent() {
        std::fs::create_dir_all(dir).map_err(|source| HsmError::Io {
            path: dir.display().to_string(),
            source,
        })?;
    }
    crate::file::write_new(&cfg.chain, chain.as_bytes(), false)?;
    let cert_record = |(role, d): &(&str, Vec<u8>)| {
        let (not_before, not_after, subject) = x509_summary(d).unwrap_or_default();
        CertificateRecord {
            not_after,
            not_before,
            role: role.to_string(),
            sha256: crate::file::sha256_hex(d),
            subject,
        }
    };
    let record = CeremonyRecord {
        ceremony: match mode {
            CeremonyMode::Full => "keyless ca init",
            CeremonyMode::RootOnly => "keyless ca init --root-only",
            CeremonyMode::IntermediateFrom(_) => "keyless ca init --intermediate-from",
        }
        .to_string(),
        certificates: certs.iter().map(cert_record).collect(),
        chain_file: cfg.chain.display().to_string(),
        keys,
        operator: operator(),
        software: concat!("keyless ", env!("CARGO_PKG_VERSION")).to_string(),
        token: here.info.clone(),
        tokens,
        when: rfc3339(now),
    };
    let text = serde_json::to_string_pretty(&record)
        .map_err(|e| setup("ca.pkcs11", format!("the ceremony record: {e}")))?
        + "\n";
    crate::file::write_new(&record_path, text.as_bytes(), false)?;
    Ok(Pkcs11CeremonyReport { record, record_path })
}

fn hex(b: &[u8]) -> String {
    ::hex::encode(b)
}

fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Who ran the ceremony: the OS user.
fn operator() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Validity (RFC 3339) and subject (`O=…, CN=…`) of a certificate, read with the core's DER reader.
fn x509_summary(cert: &[u8]) -> Option<(String, String, String)> {
    let (c, _) = der::read_tlv(cert)?;
    let (tbs, _) = der::read_tlv(c.content)?;
    let fields = der::read_all(tbs.content)?;
    let off = usize::from(fields.first()?.tag == 0xa0);
    let validity = der::read_all(fields.get(3 + off)?.content)?;
    let mut subject = Vec::new();
    for rdn in der::read_all(fields.get(4 + off)?.content)? {
        for atv in der::read_all(rdn.content)? {
            let parts = der::read_all(atv.content)?;
            let name = match parts.first()?.raw {
                [0x06, 0x03, 0x55, 0x04, 0x03] => "CN",
                [0x06, 0x03, 0x55, 0x04, 0x0a] => "O",
                _ => "?",
            };
            subject.push(format!("{name}={}", String::from_utf8_lossy(parts.get(1)?.content)));
        }
    }
    let time = |t: &der::Tlv<'_>| {
        let s = String::from_utf8_lossy(t.content).into_owned();
        let s = if t.tag == 0x17 { format!("20{s}") } else { s };
        (s.len() == 15).then(|| {
            format!(
                "{}-{}-{}T{}:{}:{}Z",
                &s[0..4],
                &s[4..6],
                &s[6..8],
                &s[8..10],
                &s[10..12],
                &s[12..14]
            )
        })
    };
    Some((time(validity.first()?)?, time(validity.get(1)?)?, subject.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> CeremonyRecord {
        let token = TokenRecord {
            label: "keyless".into(),
            manufacturer: "SoftHSM project".into(),
            model: "SoftHSM v2".into(),
            module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            serial: "1234".into(),
        };
        CeremonyRecord {
            ceremony: "keyless ca init".into(),
            certificates: vec![CertificateRecord {
                not_after: "2035-01-01T00:00:00Z".into(),
                not_before: "2025-01-01T00:00:00Z".into(),
                role: "root".into(),
                sha256: "ab".repeat(32),
                subject: "O=Keyless, CN=Keyless CA Root".into(),
            }],
            chain_file: "pki/chain.pem".into(),
            keys: vec![KeyRecord {
                algorithm: "ECDSA P-384".into(),
                extractable: false,
                id: "0011223344556677".into(),
                label: "keyless-root".into(),
                role: "root".into(),
                sensitive: true,
                token: "keyless".into(),
                usage: vec!["sign".into()],
            }],
            operator: "ops".into(),
            software: "keyless 0.1.0".into(),
            token: token.clone(),
            tokens: vec![token],
            when: "2025-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn the_record_is_written_as_before_and_reads_back() {
        let r = record();
        let text = serde_json::to_string_pretty(&r).unwrap();
        // Keys in alphabetical order at every level, as the untyped record was written.
        let keys: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("  \"") && !l.starts_with("   "))
            .filter_map(|l| l.trim().split('"').nth(1))
            .collect();
        assert_eq!(
            keys,
            [
                "ceremony",
                "certificates",
                "chain_file",
                "keys",
                "operator",
                "software",
                "token",
                "tokens",
                "when"
            ]
        );
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut sorted = value.clone();
        sorted.sort_all_objects();
        assert_eq!(serde_json::to_string_pretty(&sorted).unwrap(), text);
        assert_eq!(value["keys"][0]["usage"][0], "sign");
        assert_eq!(value["token"]["label"], "keyless");
        assert_eq!(serde_json::from_str::<CeremonyRecord>(&text).unwrap(), r);
    }
}
