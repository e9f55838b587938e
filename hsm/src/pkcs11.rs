//! The PKCS#11 key backend (cryptoki): SoftHSM2 in development and tests, and any HSM with a
//! PKCS#11 module in production.
//!
//! One context per module per process (`C_Initialize` works once); the slot is found by token
//! label; an anchor session holds the login for the life of the signer (closing the last session
//! logs the application out); signing sessions come from a pool, one per concurrent signer, since a
//! session must not be shared between threads. Signing is CKM_ECDSA over a software digest (SoftHSM
//! has no CKM_ECDSA_SHA256) or, when configured, the HSM's hashing mechanism. The core verifies
//! every signature before use: SoftHSM has returned invalid ECDSA signatures (SoftHSMv2#901).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use aws_lc_rs::digest;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use keyless_ca::der;
use keyless_ca::{SignError, SignatureAlgorithm, Signer};
use keyless_config::{Pkcs11CaConfig, Pkcs11Mechanism};

use crate::HsmError;

const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_PARAMS: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

fn setup(path: &str, reason: impl std::fmt::Display) -> HsmError {
    HsmError::Key {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

/// The PKCS#11 context for `module`, loaded and initialized once per process.
fn context(module: &Path) -> Result<Pkcs11, HsmError> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut map = CONTEXTS.get_or_init(Default::default).lock().expect("poisoned");
    if let Some(ctx) = map.get(module) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(module).map_err(|e| {
        setup(
            "ca.pkcs11.module",
            format!("cannot load the PKCS#11 module {}: {e}", module.display()),
        )
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(setup("ca.pkcs11.module", format!("C_Initialize failed: {e}"))),
    }
    map.insert(module.to_path_buf(), ctx.clone());
    Ok(ctx)
}

/// The slot holding the token labelled `label` (never by index: slot ids change).
fn find_slot(ctx: &Pkcs11, label: &str) -> Result<Slot, HsmError> {
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| setup("ca.pkcs11.token_label", e))?;
    let mut seen = Vec::new();
    for slot in slots {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| setup("ca.pkcs11.token_label", e))?;
        if info.label().trim_end() == label {
            return Ok(slot);
        }
        seen.push(info.label().trim_end().to_string());
    }
    Err(setup(
        "ca.pkcs11.token_label",
        format!("no token labelled {label:?} (tokens present: {seen:?})"),
    ))
}

/// Logs the application in; "already logged in" is success (login is per application).
fn login(session: &Session, pin: &AuthPin) -> Result<(), HsmError> {
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
            Err(setup("ca.pkcs11.pin", "the token refused the PIN (CKR_PIN_INCORRECT)"))
        }
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
            Err(setup("ca.pkcs11.pin", "the PIN is locked (CKR_PIN_LOCKED)"))
        }
        Err(e) => Err(setup("ca.pkcs11.pin", format!("C_Login failed: {e}"))),
    }
}

fn find_one(session: &Session, class: ObjectClass, label: &str) -> Result<Option<ObjectHandle>, HsmError> {
    let found = session
        .find_objects(&[Attribute::Class(class), Attribute::Label(label.as_bytes().to_vec())])
        .map_err(|e| setup("ca.pkcs11.key_label", e))?;
    match found.len() {
        0 => Ok(None),
        1 => Ok(Some(found[0])),
        n => Err(setup(
            "ca.pkcs11.key_label",
            format!("{n} objects are labelled {label:?}; labels must be unique"),
        )),
    }
}

/// The SubjectPublicKeyInfo of the public key object labelled `label`.
fn public_key(session: &Session, label: &str) -> Result<(Vec<u8>, SignatureAlgorithm), HsmError> {
    let handle = find_one(session, ObjectClass::PUBLIC_KEY, label)?.ok_or_else(|| {
        setup(
            "ca.pkcs11.key_label",
            format!("no public key labelled {label:?} next to the private key"),
        )
    })?;
    let attrs = session
        .get_attributes(handle, &[AttributeType::EcParams, AttributeType::EcPoint])
        .map_err(|e| setup("ca.pkcs11.key_label", e))?;
    let (mut params, mut point) = (None, None);
    for a in attrs {
        match a {
            Attribute::EcParams(p) => params = Some(p),
            Attribute::EcPoint(p) => point = Some(p),
            _ => {}
        }
    }
    let params = params.ok_or_else(|| setup("ca.pkcs11.key_label", format!("{label:?} is not an EC key")))?;
    let algorithm = match params.as_slice() {
        P256_PARAMS => SignatureAlgorithm::EcdsaP256Sha256,
        P384_PARAMS => SignatureAlgorithm::EcdsaP384Sha384,
        _ => {
            return Err(setup(
                "ca.pkcs11.key_label",
                format!("{label:?} is not a P-256 or P-384 key"),
            ));
        }
    };
    // CKA_EC_POINT is a DER OCTET STRING around the SEC1 point.
    let point = point.ok_or_else(|| setup("ca.pkcs11.key_label", "public key has no CKA_EC_POINT"))?;
    let point = match der::read_tlv(&point) {
        Some((t, rest)) if t.tag == der::OCTET_STRING && rest.is_empty() => t.content.to_vec(),
        _ => point,
    };
    let alg = der::seq(&[&der::oid(&[1, 2, 840, 10045, 2, 1]), &params]);
    Ok((der::seq(&[&alg, &der::bit_string(&point)]), algorithm))
}

/// A CA key held in a PKCS#11 token.
pub struct Pkcs11Signer {
    ctx: Pkcs11,
    /// The token's slot; looked up again by label when recovering (a re-inserted token may come
    /// back in another slot).
    slot: Mutex<Slot>,
    token_label: String,
    pin: AuthPin,
    label: String,
    key: Mutex<ObjectHandle>,
    algorithm: SignatureAlgorithm,
    spki: Vec<u8>,
    mechanism: Pkcs11Mechanism,
    /// Keeps the application logged in; replaced when the token has lost the login.
    anchor: Mutex<Option<Session>>,
    /// Idle signing sessions (a session is used by one thread at a time).
    pool: Mutex<Vec<Session>>,
    /// Circuit breaker: after a failed recovery, signing fails fast until this instant, so a dead
    /// token costs requests nothing and the HSM is not hammered; the back-off doubles to a cap.
    breaker: Mutex<Breaker>,
}

#[derive(Default)]
struct Breaker {
    open_until: Option<std::time::Instant>,
    backoff: std::time::Duration,
}

const BACKOFF_MIN: std::time::Duration = std::time::Duration::from_millis(100);
const BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(5);

impl std::fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Signer")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Signer {
    /// Opens another key in the same token as `cfg` (e.g. the CT log's key).
    pub fn open_other(cfg: &Pkcs11CaConfig, label: &str) -> Result<Pkcs11Signer, HsmError> {
        let mut c = cfg.clone();
        c.key_label = label.to_string();
        Pkcs11Signer::open(&c)
    }

    /// Opens the issuing key `cfg.key_label` and runs nothing else; the CA's construction performs
    /// the sign-and-verify self-test and the key/certificate match.
    pub fn open(cfg: &Pkcs11CaConfig) -> Result<Pkcs11Signer, HsmError> {
        let pin = AuthPin::from(cfg.pin.resolve().map_err(HsmError::Secret)?.expose().to_string());
        let ctx = context(&cfg.module)?;
        let slot = find_slot(&ctx, &cfg.token_label)?;
        Pkcs11Signer::open_label(ctx, slot, &cfg.token_label, pin, &cfg.key_label, cfg.mechanism)
    }

    pub(crate) fn open_label(
        ctx: Pkcs11,
        slot: Slot,
        token_label: &str,
        pin: AuthPin,
        label: &str,
        mechanism: Pkcs11Mechanism,
    ) -> Result<Pkcs11Signer, HsmError> {
        let anchor = ctx
            .open_ro_session(slot)
            .map_err(|e| setup("ca.pkcs11.token_label", e))?;
        login(&anchor, &pin)?;
        let key = find_one(&anchor, ObjectClass::PRIVATE_KEY, label)?.ok_or_else(|| {
            setup(
                "ca.pkcs11.key_label",
                format!("no private key labelled {label:?} on the token"),
            )
        })?;
        let (spki, algorithm) = public_key(&anchor, label)?;
        Ok(Pkcs11Signer {
            ctx,
            slot: Mutex::new(slot),
            token_label: token_label.to_string(),
            pin,
            label: label.to_string(),
            key: Mutex::new(key),
            algorithm,
            spki,
            mechanism,
            anchor: Mutex::new(Some(anchor)),
            pool: Mutex::new(Vec::new()),
            breaker: Mutex::new(Breaker::default()),
        })
    }

    /// Logs the application out of the token, as an operator or another component might: every
    /// session loses access to the key. Used by the fault-injection test hook.
    pub fn insecure_logout_for_tests(&self) {
        if let Some(anchor) = self.anchor.lock().expect("poisoned").as_ref() {
            let _ = anchor.logout();
        }
    }

    /// Re-establishes the login and key handle after the token lost them.
    fn recover(&self) -> Result<(), String> {
        self.pool.lock().expect("poisoned").clear();
        let slot = find_slot(&self.ctx, &self.token_label).map_err(|e| e.to_string())?;
        *self.slot.lock().expect("poisoned") = slot;
        let anchor = self
            .ctx
            .open_ro_session(slot)
            .map_err(|e| format!("C_OpenSession: {e}"))?;
        login(&anchor, &self.pin).map_err(|e| e.to_string())?;
        let key = find_one(&anchor, ObjectClass::PRIVATE_KEY, &self.label)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("private key {:?} is gone", self.label))?;
        *self.key.lock().expect("poisoned") = key;
        *self.anchor.lock().expect("poisoned") = Some(anchor);
        Ok(())
    }

    fn sign_once(&self, data: &[u8], mechanism: &Mechanism<'_>) -> Result<Vec<u8>, CkError> {
        let session = match self.pool.lock().expect("poisoned").pop() {
            Some(s) => s,
            None => {
                let slot = *self.slot.lock().expect("poisoned");
                self.ctx.open_ro_session(slot)?
            }
        };
        let key = *self.key.lock().expect("poisoned");
        let rs = session.sign(mechanism, key, data)?;
        self.pool.lock().expect("poisoned").push(session);
        Ok(rs)
    }
}

/// IEEE P1363 `r‖s` → DER `ECDSA-Sig-Value`.
fn rs_to_der(rs: &[u8]) -> Result<Vec<u8>, SignError> {
    if rs.is_empty() || !rs.len().is_multiple_of(2) {
        return Err(SignError(format!(
            "the HSM returned a {}-byte ECDSA signature",
            rs.len()
        )));
    }
    let (r, s) = rs.split_at(rs.len() / 2);
    Ok(der::seq(&[&der::unsigned_integer(r), &der::unsigned_integer(s)]))
}

impl Signer for Pkcs11Signer {
    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    fn public_key_spki(&self) -> &[u8] {
        &self.spki
    }

    fn blocking(&self) -> bool {
        true
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let (digest_alg, hashing) = match self.algorithm {
            SignatureAlgorithm::EcdsaP256Sha256 => (&digest::SHA256, Mechanism::EcdsaSha256),
            SignatureAlgorithm::EcdsaP384Sha384 => (&digest::SHA384, Mechanism::EcdsaSha384),
        };
        let digest = digest::digest(digest_alg, message);
        let (mechanism, data): (Mechanism<'_>, &[u8]) = match self.mechanism {
            Pkcs11Mechanism::Ecdsa => (Mechanism::Ecdsa, digest.as_ref()),
            Pkcs11Mechanism::EcdsaWithHash => (hashing, message),
        };
        {
            let b = self.breaker.lock().expect("poisoned");
            if b.open_until.is_some_and(|t| std::time::Instant::now() < t) {
                return Err(SignError(format!(
                    "PKCS#11 token unavailable; retrying in up to {:?}",
                    b.backoff
                )));
            }
        }
        let result = match self.sign_once(data, &mechanism) {
            Ok(rs) => Ok(rs),
            Err(first) => {
                // Sessions invalidated, login lost, device hiccup: reopen once, then give up.
                tracing::warn!(label = %self.label, error = %first, "PKCS#11 signing failed; reopening sessions");
                self.recover()
                    .map_err(|e| format!("PKCS#11 C_Sign failed ({first}); recovery failed: {e}"))
                    .and_then(|()| {
                        self.sign_once(data, &mechanism)
                            .map_err(|e| format!("PKCS#11 C_Sign failed after reopening sessions: {e}"))
                    })
            }
        };
        let mut b = self.breaker.lock().expect("poisoned");
        match result {
            Ok(rs) => {
                if b.open_until.take().is_some() {
                    tracing::info!(label = %self.label, "PKCS#11 token recovered");
                }
                b.backoff = std::time::Duration::ZERO;
                rs_to_der(&rs)
            }
            Err(e) => {
                b.backoff = (b.backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
                b.open_until = Some(std::time::Instant::now() + b.backoff);
                Err(SignError(e))
            }
        }
    }
}

/// What the PKCS#11 key ceremony made, for the operator and the ceremony record.
#[derive(Debug, Clone)]
pub struct Pkcs11CeremonyReport {
    /// The ceremony record (JSON), also written next to the chain file.
    pub record: serde_json::Value,
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
    info: serde_json::Value,
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
    let info = serde_json::json!({
        "label": token.label().trim_end(), "serial": token.serial_number().trim_end(),
        "manufacturer": token.manufacturer_id().trim_end(), "model": token.model().trim_end(),
        "module": cfg.module.display().to_string(),
    });
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
fn generate_key(t: &TokenSession, label: &str, role: &str, p384: bool) -> Result<serde_json::Value, HsmError> {
    let existing = t
        .session
        .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
        .map_err(|e| setup("ca.pkcs11.key_label", e))?;
    if !existing.is_empty() {
        return Err(HsmError::Exists(format!("key {label:?} on token {}", t.info["label"])));
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
    Ok(serde_json::json!({
        "role": role, "label": label, "id": hex(&id), "algorithm": name, "token": t.info["label"],
        "sensitive": true, "extractable": false, "usage": ["sign"],
    }))
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
                "key {label:?} on token {}",
                here.info["label"]
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
    let cert_record = |(role, d): &(&str, Vec<u8>)| -> serde_json::Value {
        let (nb, na, subject) = x509_summary(d).unwrap_or_default();
        serde_json::json!({"role": role, "sha256": crate::file::sha256_hex(d), "subject": subject, "not_before": nb, "not_after": na})
    };
    let record = serde_json::json!({
        "ceremony": match mode {
            CeremonyMode::Full => "keyless ca init",
            CeremonyMode::RootOnly => "keyless ca init --root-only",
            CeremonyMode::IntermediateFrom(_) => "keyless ca init --intermediate-from",
        },
        "when": rfc3339(now),
        "operator": operator(),
        "software": concat!("keyless ", env!("CARGO_PKG_VERSION")),
        "token": tokens[0],
        "tokens": tokens,
        "keys": keys,
        "certificates": certs.iter().map(cert_record).collect::<Vec<_>>(),
        "chain_file": cfg.chain.display().to_string(),
    });
    let text = serde_json::to_string_pretty(&record).unwrap_or_default() + "\n";
    crate::file::write_new(&record_path, text.as_bytes(), false)?;
    Ok(Pkcs11CeremonyReport { record, record_path })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
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
