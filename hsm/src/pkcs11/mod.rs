//! The PKCS#11 key backend (cryptoki): SoftHSM2 in development and tests, and any HSM with a
//! PKCS#11 module in production.
//!
//! One context per module per process (`C_Initialize` works once); the slot is found by token
//! label; an anchor session holds the login for the life of the signer (closing the last session
//! logs the application out); signing sessions come from a pool, one per concurrent signer, since a
//! session must not be shared between threads. Signing is CKM_ECDSA over a software digest (SoftHSM
//! has no CKM_ECDSA_SHA256) or, when configured, the HSM's hashing mechanism. The core verifies
//! every signature before use: SoftHSM has returned invalid ECDSA signatures (SoftHSMv2#901).
//!
//! The key ceremony (`keyless ca init` for this backend) and its typed record are in `ceremony`.

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

pub use self::ceremony::{
    CeremonyMode, CeremonyRecord, CertificateRecord, KeyRecord, Pkcs11CeremonyReport, TokenRecord, init_pkcs11_ca,
};
use crate::HsmError;

mod ceremony;

const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_PARAMS: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const P521_PARAMS: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];

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
        P521_PARAMS => SignatureAlgorithm::EcdsaP521Sha512,
        _ => {
            return Err(setup(
                "ca.pkcs11.key_label",
                format!("{label:?} is not a P-256, P-384 or P-521 key"),
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
            SignatureAlgorithm::EcdsaP521Sha512 => (&digest::SHA512, Mechanism::EcdsaSha512),
            // `public_key` only ever finds EC keys.
            SignatureAlgorithm::RsaPkcs1Sha256 | SignatureAlgorithm::Ed25519 => {
                return Err(SignError(format!(
                    "PKCS#11 keys sign with ECDSA only, not {}",
                    self.algorithm.name()
                )));
            }
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
