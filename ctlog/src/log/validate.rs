//! Chain validation: what a chain must be before the log promises to include it (see the limits
//! in the parent module's docs). The part after the leaf is the same for every entry of one CA,
//! so it is verified once and cached while every certificate in it is valid.

use std::sync::Arc;

use keyless_ca::ct;
use keyless_ca::der;
use keyless_ca::keys::{PublicKey, sha256, signature_oid_hash};
use x509_parser::certificate::X509Certificate;

use super::Shared;
use crate::LogError;
use crate::wire::encode_chain;

/// A verified chain tail.
pub(super) struct Tail {
    issuer_key: PublicKey,
    issuer_key_hash: [u8; 32],
    /// The stored `certificate_chain` (the tail plus the root if it was left out) and its hash.
    stored: Arc<(Vec<u8>, [u8; 32])>,
    /// The window (Unix seconds) in which every certificate of the tail is valid: a cached tail
    /// is reused only inside it.
    valid_from: i64,
    valid_until: i64,
}

pub(super) struct Validated {
    /// `certificate_chain` of `extra_data` (everything after the leaf, plus the root if it was
    /// left out) and its hash, shared by every entry from the same CA.
    pub(super) chain: Arc<(Vec<u8>, [u8; 32])>,
    /// For precertificates: issuer key hash and the TBS without the poison.
    pub(super) precert: Option<([u8; 32], Vec<u8>)>,
}

/// Most certificates in a submitted chain (leaf included).
pub const MAX_CHAIN: usize = 8;
/// Most DER bytes in a submitted chain, all certificates together.
pub const MAX_CHAIN_BYTES: usize = 128 * 1024;
/// EKU of an RFC 6962 precertificate signing certificate.
const PRECERT_SIGNING_EKU: &str = "1.3.6.1.4.1.11129.2.4.4";

/// Checks the CA rules for one certificate of the path above the leaf. `label` names it in
/// messages; `trusted_root` relaxes only the keyUsage presence rule.
fn check_ca(c: &X509Certificate<'_>, label: &str, trusted_root: bool, now_s: i64) -> Result<(), LogError> {
    let client = |m: String| Err(LogError::Client(m));
    match c.basic_constraints() {
        Err(e) => return client(format!("{label}: malformed basicConstraints: {e}")),
        Ok(Some(bc)) if bc.value.ca => {}
        Ok(_) => {
            return client(format!(
                "{label} is not a CA certificate (basicConstraints cA is not TRUE)"
            ));
        }
    }
    match c.key_usage() {
        Err(e) => return client(format!("{label}: malformed keyUsage: {e}")),
        Ok(Some(ku)) if !ku.value.key_cert_sign() => {
            return client(format!("{label}: keyUsage does not include keyCertSign"));
        }
        Ok(None) if !trusted_root => {
            return client(format!(
                "{label} has no keyUsage extension; an intermediate CA must have keyCertSign"
            ));
        }
        Ok(_) => {}
    }
    let v = c.validity();
    if now_s < v.not_before.timestamp() || now_s > v.not_after.timestamp() {
        return client(format!(
            "{label} is not valid now (valid from {} to {})",
            v.not_before, v.not_after
        ));
    }
    Ok(())
}

/// Checks every pathLenConstraint of `path` (issuer first, root last): a CA may have at most
/// that many non-self-issued intermediate CAs below it, the leaf not counted.
fn check_path_len(path: &[(X509Certificate<'_>, String)]) -> Result<(), LogError> {
    let mut below = 0u64;
    for (c, label) in path {
        if let Ok(Some(bc)) = c.basic_constraints()
            && let Some(max) = bc.value.path_len_constraint
            && below > u64::from(max)
        {
            return Err(LogError::Client(format!(
                "{label} has pathLenConstraint {max} but {below} intermediate CA certificate(s) follow it"
            )));
        }
        if c.subject().as_raw() != c.issuer().as_raw() {
            below += 1;
        }
    }
    Ok(())
}

fn verify_issued_by(child: &X509Certificate<'_>, parent_spki: &[u8]) -> bool {
    PublicKey::from_spki_der(parent_spki).is_ok_and(|key| key.verify_x509(child))
}

/// Checks a certificate's signature with its issuer's key.
trait VerifyX509 {
    fn verify_x509(&self, child: &X509Certificate<'_>) -> bool;
}

impl VerifyX509 for PublicKey {
    fn verify_x509(&self, child: &X509Certificate<'_>) -> bool {
        let Some(hash) = signature_oid_hash(&child.signature_algorithm.algorithm.to_id_string()) else {
            return false;
        };
        self.verify(hash, child.tbs_certificate.as_ref(), &child.signature_value.data)
    }
}

fn has_poison(c: &X509Certificate<'_>) -> bool {
    c.extensions()
        .iter()
        .any(|e| e.critical && e.oid.to_id_string() == "1.3.6.1.4.1.11129.2.4.3")
}

impl Shared {
    pub(super) fn validate(&self, chain: &[Vec<u8>], precert: bool, now: u64) -> Result<Validated, LogError> {
        if chain.is_empty() || chain.len() > MAX_CHAIN {
            return Err(LogError::Client(format!(
                "a chain holds 1 to {MAX_CHAIN} certificates; this one has {}",
                chain.len()
            )));
        }
        let total: usize = chain.iter().map(Vec::len).sum();
        if total > MAX_CHAIN_BYTES {
            return Err(LogError::Client(format!(
                "the chain's certificates hold {total} bytes; at most {MAX_CHAIN_BYTES} are accepted"
            )));
        }
        let now_s = (now / 1000) as i64;
        let leaf = match x509_parser::parse_x509_certificate(&chain[0]) {
            Ok(([], c)) => c,
            _ => return Err(LogError::Client("chain[0] is not a DER certificate".into())),
        };
        match (precert, has_poison(&leaf)) {
            (true, false) => {
                return Err(LogError::Client(
                    "add-pre-chain needs a precertificate (critical poison extension)".into(),
                ));
            }
            (false, true) => {
                return Err(LogError::Client(
                    "add-chain does not accept precertificates; use add-pre-chain".into(),
                ));
            }
            _ => {}
        }
        if chain.len() == 1 {
            if precert {
                return Err(LogError::Client(
                    "a precertificate chain must include its issuer".into(),
                ));
            }
            let rest: Vec<Vec<u8>> = self.anchor(&leaf)?.into_iter().collect();
            if let Some(root) = rest.first() {
                let (_, root) = x509_parser::parse_x509_certificate(root)
                    .map_err(|e| LogError::Setup(format!("trusted root: {e}")))?;
                check_ca(&root, "the trusted root that issued chain[0]", true, now_s)?;
            }
            let blob = encode_chain(&rest);
            let hash = sha256(&blob);
            return Ok(Validated {
                chain: Arc::new((blob, hash)),
                precert: None,
            });
        }
        let tail = self.tail(chain, now_s)?;
        if !tail.issuer_key.verify_x509(&leaf) {
            return Err(LogError::Client("chain[0] is not signed by chain[1]".into()));
        }
        let precert = if precert {
            let tbs = der::tbs_without_extension(leaf.tbs_certificate.as_ref(), &ct::oid_der(ct::POISON_OID))
                .ok_or_else(|| LogError::Client("cannot remove the poison from the precertificate".into()))?;
            Some((tail.issuer_key_hash, tbs))
        } else {
            None
        };
        Ok(Validated {
            chain: tail.stored.clone(),
            precert,
        })
    }

    /// The trusted root `last` chains to: `None` if `last` is itself a trusted root, otherwise the
    /// root that issued it (to be appended to the stored chain).
    fn anchor(&self, last: &X509Certificate<'_>) -> Result<Option<Vec<u8>>, LogError> {
        if self.is_root(last.as_ref()) {
            return Ok(None);
        }
        self.roots
            .iter()
            .find(|r| r.subject == last.issuer().as_raw() && verify_issued_by(last, &r.spki))
            .map(|r| Some(r.der.clone()))
            .ok_or_else(|| LogError::Client("the chain does not lead to a root this log trusts".into()))
    }

    fn is_root(&self, der: &[u8]) -> bool {
        self.roots.iter().any(|r| r.der == der)
    }

    /// Everything after the leaf is the same for every entry from one CA: it is verified once, up
    /// to a trusted root, and remembered by its hash (reused only while every certificate in it
    /// is within its validity).
    fn tail(&self, chain: &[Vec<u8>], now_s: i64) -> Result<Arc<Tail>, LogError> {
        // Length-prefixed, so two chains cannot share an id by splitting bytes differently.
        let id = sha256(&encode_chain(&chain[1..]));
        if let Some(t) = self.verified_tails.lock().expect("poisoned").get(&id)
            && (t.valid_from..=t.valid_until).contains(&now_s)
        {
            return Ok(t.clone());
        }
        let certs = chain[1..]
            .iter()
            .enumerate()
            .map(|(i, d)| match x509_parser::parse_x509_certificate(d) {
                Ok(([], c)) => Ok(c),
                _ => Err(LogError::Client(format!("chain[{}] is not a DER certificate", i + 1))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let issuer = &certs[0];
        if matches!(issuer.extended_key_usage(), Ok(Some(e)) if e.value.other.iter().any(|o| o.to_id_string() == PRECERT_SIGNING_EKU))
        {
            return Err(LogError::Client(format!(
                "chain[1] is a precertificate signing certificate (EKU {PRECERT_SIGNING_EKU}); these are not supported"
            )));
        }
        for i in 0..certs.len() - 1 {
            if !verify_issued_by(&certs[i], certs[i + 1].public_key().raw) {
                return Err(LogError::Client(format!(
                    "chain[{}] is not signed by chain[{}]",
                    i + 1,
                    i + 2
                )));
            }
        }
        let root_appended = self.anchor(&certs[certs.len() - 1])?;
        let root_cert = match &root_appended {
            Some(d) => Some(
                x509_parser::parse_x509_certificate(d)
                    .map_err(|e| LogError::Setup(format!("trusted root: {e}")))?
                    .1,
            ),
            None => None,
        };
        let mut path: Vec<(X509Certificate<'_>, String)> = Vec::with_capacity(certs.len() + 1);
        for (i, c) in certs.into_iter().enumerate() {
            path.push((c, format!("chain[{}]", i + 1)));
        }
        if let Some(r) = root_cert {
            path.push((r, format!("the trusted root that issued chain[{}]", chain.len() - 1)));
        }
        let (mut valid_from, mut valid_until) = (i64::MIN, i64::MAX);
        for (i, (c, label)) in path.iter().enumerate() {
            let trusted_root = i == path.len() - 1 && (root_appended.is_some() || self.is_root(c.as_ref()));
            check_ca(c, label, trusted_root, now_s)?;
            valid_from = valid_from.max(c.validity().not_before.timestamp());
            valid_until = valid_until.min(c.validity().not_after.timestamp());
        }
        check_path_len(&path)?;
        let issuer = &path[0].0;
        let issuer_key = PublicKey::from_spki_der(issuer.public_key().raw)
            .map_err(|e| LogError::Client(format!("chain[1] key: {e}")))?;
        let mut certs_after_leaf = chain[1..].to_vec();
        certs_after_leaf.extend(root_appended.iter().cloned());
        let blob = encode_chain(&certs_after_leaf);
        let stored = Arc::new((blob.clone(), sha256(&blob)));
        let tail = Arc::new(Tail {
            issuer_key_hash: sha256(issuer.public_key().raw),
            issuer_key,
            stored,
            valid_from,
            valid_until,
        });
        let mut cache = self.verified_tails.lock().expect("poisoned");
        if cache.len() >= 1024 {
            cache.clear();
        }
        cache.insert(id, tail.clone());
        Ok(tail)
    }
}
