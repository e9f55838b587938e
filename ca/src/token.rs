//! OIDC identity tokens: the cheap structural checks, then signature and claim verification.
//!
//! [`VerifiedToken`] can only be made by [`verify`], so holding one proves the token's signature,
//! issuer, audience and lifetime were checked. Fetching the issuer's keys is the `oidc` crate's job;
//! this module works on keys already in hand and never touches the network.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, VerificationAlgorithm};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, AlgorithmFamily};

use crate::der;
use keyless_config::IssuerConfig;
use serde_json::{Map, Value};

use crate::Error;

/// Tokens larger than this are refused before any decoding. Real ID tokens are 1–3 KiB.
pub const MAX_TOKEN_BYTES: usize = 32 * 1024;
/// The longest claim value an identity mapping reads. Real claims (refs, paths, ids, emails) are
/// well under 1 KiB; the cap bounds the work and certificate size one token can cause, and a claim
/// over it is refused with its name rather than silently cut.
pub const MAX_CLAIM_BYTES: usize = 4096;
/// The longest value written into a certificate (a SAN or an extension), which may be composed of
/// several claims or rendered from a template.
pub const MAX_VALUE_BYTES: usize = 8192;
/// Clock-skew allowance for `nbf` (as Fulcio); `exp` has none.
pub const NBF_LEEWAY_SECS: i64 = 300;

/// Signature algorithms accepted on identity tokens. `none` and HMAC are never accepted: the
/// issuer's public key must not double as a shared secret.
pub const ACCEPTED_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// A structurally valid token whose signature has not been checked. Only `iss` and `kid` may be
/// trusted enough to pick the issuer and key.
pub struct UnverifiedToken {
    raw: String,
    alg: String,
    kid: Option<String>,
    iss: String,
    claims: Map<String, Value>,
}

impl fmt::Debug for UnverifiedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnverifiedToken")
            .field("iss", &self.iss)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Splits and decodes a compact JWS. Size and the exact two dots are checked before any decoding
/// (GHSA-f83f-xpx7-ffpw: a token of many dots must not cost memory).
pub fn parse(raw: &str) -> Result<UnverifiedToken, Error> {
    if raw.is_empty() {
        return Err(Error::Token("no identity token was sent".into()));
    }
    if raw.len() > MAX_TOKEN_BYTES {
        return Err(Error::Token(format!("token is larger than {MAX_TOKEN_BYTES} bytes")));
    }
    if raw.bytes().filter(|b| *b == b'.').count() != 2 {
        return Err(Error::Token(
            "token is not a compact JWS (it must contain exactly two dots)".into(),
        ));
    }
    let mut parts = raw.splitn(3, '.');
    let (h, p) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let header: Map<String, Value> = decode_part(h, "header")?;
    let claims: Map<String, Value> = decode_part(p, "payload")?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a.clone(),
        _ => return Err(Error::Token("token header has no \"alg\"".into())),
    };
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(Error::Token("token header \"kid\" is not a string".into())),
    };
    let iss = match claims.get("iss") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(Error::Token("token has no \"iss\" claim".into())),
    };
    Ok(UnverifiedToken {
        raw: raw.to_string(),
        alg,
        kid,
        iss,
        claims,
    })
}

fn decode_part(part: &str, what: &str) -> Result<Map<String, Value>, Error> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Error::Token(format!("token {what} is not base64url without padding")))?;
    serde_json::from_slice(&bytes).map_err(|_| Error::Token(format!("token {what} is not a JSON object")))
}

impl UnverifiedToken {
    /// The claimed issuer, used only to choose which configured issuer verifies the token.
    pub fn issuer(&self) -> &str {
        &self.iss
    }

    /// The claimed key id.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The claimed `sub` (unverified), for the audit record of a refusal.
    pub fn subject(&self) -> Option<&str> {
        self.claims.get("sub").and_then(Value::as_str)
    }
}

/// SHA-256 of a compact JWS's decoded payload, without parsing it: what the audit record keeps
/// instead of the token. `None` unless the token has the shape of a JWS.
pub fn claims_sha256(raw: &str) -> Option<[u8; 32]> {
    let mut parts = raw.split('.');
    let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else {
        return None;
    };
    Some(crate::keys::sha256(&URL_SAFE_NO_PAD.decode(payload).ok()?))
}

/// An issuer's verification keys, prepared once per JWKS fetch.
#[derive(Clone, Default)]
pub struct IssuerKeys {
    keys: Vec<IssuerKey>,
}

#[derive(Clone)]
struct IssuerKey {
    kid: Option<String>,
    alg: Option<Algorithm>,
    family: AlgorithmFamily,
    /// One verifier per algorithm the key can serve, parsed once per JWKS fetch.
    verifiers: Vec<(Algorithm, ParsedPublicKey)>,
}

impl fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys.iter().map(|k| &k.kid)).finish()
    }
}

impl IssuerKeys {
    /// Prepares the usable keys of a JWKS; symmetric and unknown key types are skipped.
    pub fn from_jwks(jwks: &JwkSet) -> IssuerKeys {
        let keys = jwks
            .keys
            .iter()
            .filter_map(|jwk| {
                let alg = match jwk.common.key_algorithm {
                    None => None,
                    Some(ka) => Some(jwk_algorithm(ka)?),
                };
                let (family, verifiers) = verifiers(&jwk.algorithm)?;
                Some(IssuerKey {
                    kid: jwk.common.key_id.clone(),
                    alg,
                    family,
                    verifiers,
                })
            })
            .collect();
        IssuerKeys { keys }
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is usable.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Parses a JWK's public key for every JWS algorithm of its family. Keys that do not parse (or
/// RSA keys under 2048 bits) are skipped.
fn verifiers(params: &AlgorithmParameters) -> Option<(AlgorithmFamily, Vec<(Algorithm, ParsedPublicKey)>)> {
    let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok();
    let parse = |alg: &'static dyn VerificationAlgorithm, bytes: &[u8]| ParsedPublicKey::new(alg, bytes).ok();
    match params {
        AlgorithmParameters::EllipticCurve(p) => {
            let mut point = vec![0x04];
            point.extend(b64(&p.x)?);
            point.extend(b64(&p.y)?);
            let v = match p.curve {
                EllipticCurve::P256 => (Algorithm::ES256, parse(&sig::ECDSA_P256_SHA256_FIXED, &point)?),
                EllipticCurve::P384 => (Algorithm::ES384, parse(&sig::ECDSA_P384_SHA384_FIXED, &point)?),
                _ => return None,
            };
            Some((AlgorithmFamily::Ec, vec![v]))
        }
        AlgorithmParameters::RSA(p) => {
            let pkcs1 = der::seq(&[&der::unsigned_integer(&b64(&p.n)?), &der::unsigned_integer(&b64(&p.e)?)]);
            let algs: [(Algorithm, &'static dyn VerificationAlgorithm); 6] = [
                (Algorithm::RS256, &sig::RSA_PKCS1_2048_8192_SHA256),
                (Algorithm::RS384, &sig::RSA_PKCS1_2048_8192_SHA384),
                (Algorithm::RS512, &sig::RSA_PKCS1_2048_8192_SHA512),
                (Algorithm::PS256, &sig::RSA_PSS_2048_8192_SHA256),
                (Algorithm::PS384, &sig::RSA_PSS_2048_8192_SHA384),
                (Algorithm::PS512, &sig::RSA_PSS_2048_8192_SHA512),
            ];
            let v: Vec<_> = algs
                .iter()
                .filter_map(|(a, v)| Some((*a, parse(*v, &pkcs1)?)))
                .collect();
            (!v.is_empty()).then_some((AlgorithmFamily::Rsa, v))
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => Some((
            AlgorithmFamily::Ed,
            vec![(Algorithm::EdDSA, parse(&sig::ED25519, &b64(&p.x)?)?)],
        )),
        _ => None,
    }
}

fn jwk_algorithm(ka: KeyAlgorithm) -> Option<Algorithm> {
    Some(match ka {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// A token whose signature, issuer, audience and lifetime have been verified.
pub struct VerifiedToken {
    issuer: Arc<IssuerConfig>,
    claims: Map<String, Value>,
}

impl fmt::Debug for VerifiedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedToken")
            .field("issuer", &self.issuer.url)
            .finish_non_exhaustive()
    }
}

impl VerifiedToken {
    /// Unit tests of the core only: a token that skipped verification.
    #[cfg(test)]
    pub(crate) fn unchecked_for_tests(issuer: IssuerConfig, claims: Map<String, Value>) -> VerifiedToken {
        VerifiedToken {
            issuer: Arc::new(issuer),
            claims,
        }
    }

    /// The configured issuer that vouched for this token.
    pub fn issuer(&self) -> &IssuerConfig {
        &self.issuer
    }

    /// All claims.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// An optional string claim; absent (or not a string) reads as empty, which renders nothing.
    pub fn optional_claim(&self, name: &str) -> Result<String, Error> {
        let v = self.claims.get(name).and_then(Value::as_str).unwrap_or_default();
        self.bounded(name, v).map(str::to_string)
    }

    /// A claim that must be a non-empty string.
    pub fn string_claim(&self, name: &str) -> Result<&str, Error> {
        match self.claims.get(name) {
            Some(Value::String(s)) if !s.is_empty() => self.bounded(name, s),
            Some(Value::String(_)) => Err(Error::claim(&self.issuer.url, name, "is empty")),
            Some(other) => Err(Error::claim(
                &self.issuer.url,
                name,
                format!("must be a string, found {}", json_type(other)),
            )),
            None => Err(Error::claim(&self.issuer.url, name, "is missing")),
        }
    }

    /// `value` (of the claim `name`) if it is at most [`MAX_CLAIM_BYTES`] long.
    pub fn bounded<'a>(&self, name: &str, value: &'a str) -> Result<&'a str, Error> {
        if value.len() > MAX_CLAIM_BYTES {
            return Err(Error::claim(
                &self.issuer.url,
                name,
                format!("is {} bytes long, over the limit of {MAX_CLAIM_BYTES}", value.len()),
            ));
        }
        Ok(value)
    }
}

pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Verifies `token` against the configured `issuer` and its `keys` at time `now` (Unix seconds).
pub fn verify(
    token: UnverifiedToken,
    issuer: Arc<IssuerConfig>,
    keys: &IssuerKeys,
    now: i64,
) -> Result<VerifiedToken, Error> {
    let url = issuer.url.as_str();
    let alg: Algorithm = match token.alg.parse() {
        Ok(a) if ACCEPTED_ALGORITHMS.contains(&a) => a,
        _ => {
            return Err(Error::Token(format!(
                "signing algorithm {:?} is not accepted (issuer {url}); allowed: RS*, PS*, ES256, ES384, EdDSA",
                token.alg
            )));
        }
    };
    if !issuer.options.algorithms.is_empty() && !issuer.options.algorithms.contains(&token.alg) {
        return Err(Error::Token(format!(
            "signing algorithm {:?} is not allowed for issuer {url} (allowed: {:?})",
            token.alg, issuer.options.algorithms
        )));
    }
    if token.iss != url {
        return Err(Error::Token(format!(
            "token issuer {:?} does not match configured issuer {url}",
            token.iss
        )));
    }
    let candidates: Vec<&IssuerKey> = keys
        .keys
        .iter()
        .filter(|k| k.family == alg.family() && k.alg.is_none_or(|a| a == alg))
        .filter(|k| token.kid.is_none() || k.kid == token.kid)
        .collect();
    if candidates.is_empty() {
        if let Some(kid) = &token.kid {
            return Err(Error::UnknownKeyId {
                issuer: url.to_string(),
                kid: kid.clone(),
            });
        }
        return Err(Error::Token(format!(
            "issuer {url} publishes no key for algorithm {}",
            token.alg
        )));
    }
    let (signing_input, signature) = token.raw.rsplit_once('.').unwrap_or((&token.raw, ""));
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap_or_default();
    let valid = candidates.iter().any(|k| {
        k.verifiers
            .iter()
            .any(|(a, v)| *a == alg && v.verify_sig(signing_input.as_bytes(), &signature).is_ok())
    });
    if !valid {
        return Err(Error::Token(format!(
            "signature does not verify with the keys of issuer {url}"
        )));
    }
    let claims = token.claims;
    let exp = numeric(&claims, "exp", url)?
        .ok_or_else(|| Error::Token(format!("token has no \"exp\" claim (issuer {url})")))?;
    if (now as f64) > exp {
        return Err(Error::Token(format!("token expired at {} (issuer {url})", exp as i64)));
    }
    if let Some(max) = issuer.options.max_token_age {
        let iat = numeric(&claims, "iat", url)?.ok_or_else(|| {
            Error::Token(format!(
                "token has no \"iat\" claim, required by issuer {url}'s max_token_age"
            ))
        })?;
        if (now as f64) - iat > max.as_secs() as f64 {
            return Err(Error::Token(format!(
                "token was issued at {} and is older than max_token_age {}s (issuer {url})",
                iat as i64,
                max.as_secs()
            )));
        }
    }
    if let Some(nbf) = numeric(&claims, "nbf", url)?
        && ((now + NBF_LEEWAY_SECS) as f64) < nbf
    {
        return Err(Error::Token(format!(
            "token is not valid before {} (nbf, issuer {url})",
            nbf as i64
        )));
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => issuer.accepts_audience(a),
        Some(Value::Array(list)) => list
            .iter()
            .any(|a| a.as_str().is_some_and(|a| issuer.accepts_audience(a))),
        _ => false,
    };
    if !aud_ok {
        let got = claims.get("aud").map_or("nothing".to_string(), Value::to_string);
        return Err(Error::Token(format!(
            "token audience {got} does not contain {:?}, required by issuer {url}",
            issuer.client_id
        )));
    }
    Ok(VerifiedToken { issuer, claims })
}

fn numeric(claims: &Map<String, Value>, name: &str, url: &str) -> Result<Option<f64>, Error> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(_) => Err(Error::Token(format!(
            "token claim {name:?} is not a number (issuer {url})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structural_checks_come_first() {
        let dots = ".".repeat(100_000);
        assert!(matches!(parse(&dots), Err(Error::Token(m)) if m.contains("larger")));
        let dots = ".".repeat(1000);
        assert!(matches!(parse(&dots), Err(Error::Token(m)) if m.contains("two dots")));
        assert!(matches!(parse("a.b"), Err(Error::Token(m)) if m.contains("two dots")));
        assert!(matches!(parse("!!.e30.x"), Err(Error::Token(m)) if m.contains("base64url")));
        // {"alg":"none"} . {} -> no iss
        assert!(matches!(parse("eyJhbGciOiJub25lIn0.e30.x"), Err(Error::Token(m)) if m.contains("iss")));
    }
}
