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
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};

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

/// A JWS algorithm the CA accepts on identity tokens: go-oidc's set (RS*, PS*, ES256/384/512,
/// EdDSA). `none` and HMAC are never accepted: the issuer's public key must not double as a
/// shared secret. (Our own type because `jsonwebtoken` has no ES512.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)]
pub enum TokenAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
    /// ECDSA P-521 with SHA-512.
    ES512,
    /// Ed25519.
    EdDSA,
}

/// Every algorithm accepted on identity tokens.
pub const ACCEPTED_ALGORITHMS: &[TokenAlgorithm] = &[
    TokenAlgorithm::RS256,
    TokenAlgorithm::RS384,
    TokenAlgorithm::RS512,
    TokenAlgorithm::PS256,
    TokenAlgorithm::PS384,
    TokenAlgorithm::PS512,
    TokenAlgorithm::ES256,
    TokenAlgorithm::ES384,
    TokenAlgorithm::ES512,
    TokenAlgorithm::EdDSA,
];

/// Key families: a key serves only its own family's algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    Ec,
    Ed,
}

impl TokenAlgorithm {
    /// The algorithm named exactly `name` (JOSE spelling), if the CA accepts it.
    pub fn parse(name: &str) -> Option<TokenAlgorithm> {
        ACCEPTED_ALGORITHMS.iter().copied().find(|a| a.as_str() == name)
    }

    /// The JOSE name, e.g. `ES512`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenAlgorithm::RS256 => "RS256",
            TokenAlgorithm::RS384 => "RS384",
            TokenAlgorithm::RS512 => "RS512",
            TokenAlgorithm::PS256 => "PS256",
            TokenAlgorithm::PS384 => "PS384",
            TokenAlgorithm::PS512 => "PS512",
            TokenAlgorithm::ES256 => "ES256",
            TokenAlgorithm::ES384 => "ES384",
            TokenAlgorithm::ES512 => "ES512",
            TokenAlgorithm::EdDSA => "EdDSA",
        }
    }

    fn family(self) -> Family {
        match self {
            TokenAlgorithm::ES256 | TokenAlgorithm::ES384 | TokenAlgorithm::ES512 => Family::Ec,
            TokenAlgorithm::EdDSA => Family::Ed,
            _ => Family::Rsa,
        }
    }
}

impl fmt::Display for TokenAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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

/// An issuer's verification keys, prepared once per JWKS fetch, and the algorithms its discovery
/// document advertises.
#[derive(Clone, Default)]
pub struct IssuerKeys {
    keys: Vec<IssuerKey>,
    /// `None`: no discovery document restricts the algorithms (keys read on their own).
    advertised: Option<Vec<TokenAlgorithm>>,
}

#[derive(Clone)]
struct IssuerKey {
    kid: Option<String>,
    alg: Option<TokenAlgorithm>,
    family: Family,
    /// One verifier per algorithm the key can serve, parsed once per JWKS fetch.
    verifiers: Vec<(TokenAlgorithm, ParsedPublicKey)>,
}

impl fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys.iter().map(|k| &k.kid)).finish()
    }
}

impl IssuerKeys {
    /// Prepares the usable keys of a JWKS; symmetric and unknown key types, and keys marked for
    /// encryption, are skipped.
    pub fn from_jwks(jwks: &JwkSet) -> IssuerKeys {
        let keys = jwks
            .keys
            .iter()
            .filter(|jwk| jwk.common.public_key_use != Some(PublicKeyUse::Encryption))
            .filter_map(|jwk| {
                let p521 =
                    matches!(&jwk.algorithm, AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P521);
                let alg = match jwk.common.key_algorithm {
                    None => None,
                    // `jsonwebtoken` reads `"alg": "ES512"` as unknown; on a P-521 key it can
                    // only be ES512 (the key verifies nothing else).
                    Some(KeyAlgorithm::UNKNOWN_ALGORITHM) if p521 => Some(TokenAlgorithm::ES512),
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
        IssuerKeys { keys, advertised: None }
    }

    /// Restricts tokens to the algorithms the issuer's discovery document lists in
    /// `id_token_signing_alg_values_supported`, as go-oidc (so Fulcio) does: the listed values
    /// the CA accepts are kept, and when none is left (or nothing is listed) only RS256 is
    /// accepted, the one algorithm OpenID Connect Discovery requires every issuer to support.
    pub fn advertised_by_discovery(mut self, listed: &[String]) -> IssuerKeys {
        let mut algs: Vec<TokenAlgorithm> = Vec::new();
        for a in listed.iter().filter_map(|a| TokenAlgorithm::parse(a)) {
            if !algs.contains(&a) {
                algs.push(a);
            }
        }
        if algs.is_empty() {
            algs.push(TokenAlgorithm::RS256);
        }
        self.advertised = Some(algs);
        self
    }

    /// The algorithms the discovery document allows (`None`: not restricted by one).
    pub fn advertised(&self) -> Option<&[TokenAlgorithm]> {
        self.advertised.as_deref()
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
fn verifiers(params: &AlgorithmParameters) -> Option<(Family, Vec<(TokenAlgorithm, ParsedPublicKey)>)> {
    let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok();
    let parse = |alg: &'static dyn VerificationAlgorithm, bytes: &[u8]| ParsedPublicKey::new(alg, bytes).ok();
    match params {
        AlgorithmParameters::EllipticCurve(p) => {
            let mut point = vec![0x04];
            point.extend(b64(&p.x)?);
            point.extend(b64(&p.y)?);
            let v = match p.curve {
                EllipticCurve::P256 => (TokenAlgorithm::ES256, parse(&sig::ECDSA_P256_SHA256_FIXED, &point)?),
                EllipticCurve::P384 => (TokenAlgorithm::ES384, parse(&sig::ECDSA_P384_SHA384_FIXED, &point)?),
                EllipticCurve::P521 => (TokenAlgorithm::ES512, parse(&sig::ECDSA_P521_SHA512_FIXED, &point)?),
                _ => return None,
            };
            Some((Family::Ec, vec![v]))
        }
        AlgorithmParameters::RSA(p) => {
            let pkcs1 = der::seq(&[&der::unsigned_integer(&b64(&p.n)?), &der::unsigned_integer(&b64(&p.e)?)]);
            let algs: [(TokenAlgorithm, &'static dyn VerificationAlgorithm); 6] = [
                (TokenAlgorithm::RS256, &sig::RSA_PKCS1_2048_8192_SHA256),
                (TokenAlgorithm::RS384, &sig::RSA_PKCS1_2048_8192_SHA384),
                (TokenAlgorithm::RS512, &sig::RSA_PKCS1_2048_8192_SHA512),
                (TokenAlgorithm::PS256, &sig::RSA_PSS_2048_8192_SHA256),
                (TokenAlgorithm::PS384, &sig::RSA_PSS_2048_8192_SHA384),
                (TokenAlgorithm::PS512, &sig::RSA_PSS_2048_8192_SHA512),
            ];
            let v: Vec<_> = algs
                .iter()
                .filter_map(|(a, v)| Some((*a, parse(*v, &pkcs1)?)))
                .collect();
            (!v.is_empty()).then_some((Family::Rsa, v))
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => Some((
            Family::Ed,
            vec![(TokenAlgorithm::EdDSA, parse(&sig::ED25519, &b64(&p.x)?)?)],
        )),
        _ => None,
    }
}

fn jwk_algorithm(ka: KeyAlgorithm) -> Option<TokenAlgorithm> {
    Some(match ka {
        KeyAlgorithm::RS256 => TokenAlgorithm::RS256,
        KeyAlgorithm::RS384 => TokenAlgorithm::RS384,
        KeyAlgorithm::RS512 => TokenAlgorithm::RS512,
        KeyAlgorithm::PS256 => TokenAlgorithm::PS256,
        KeyAlgorithm::PS384 => TokenAlgorithm::PS384,
        KeyAlgorithm::PS512 => TokenAlgorithm::PS512,
        KeyAlgorithm::ES256 => TokenAlgorithm::ES256,
        KeyAlgorithm::ES384 => TokenAlgorithm::ES384,
        KeyAlgorithm::EdDSA => TokenAlgorithm::EdDSA,
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
    let Some(alg) = TokenAlgorithm::parse(&token.alg) else {
        return Err(Error::Token(format!(
            "signing algorithm {:?} is not accepted (issuer {url}); allowed: RS*, PS*, ES256, ES384, ES512, EdDSA",
            token.alg
        )));
    };
    if !issuer.options.algorithms.is_empty() && !issuer.options.algorithms.contains(&token.alg) {
        return Err(Error::Token(format!(
            "signing algorithm {:?} is not allowed for issuer {url} (allowed: {:?})",
            token.alg, issuer.options.algorithms
        )));
    }
    if let Some(advertised) = keys.advertised()
        && !advertised.contains(&alg)
    {
        let names: Vec<&str> = advertised.iter().map(|a| a.as_str()).collect();
        return Err(Error::Token(format!(
            "signing algorithm {alg} is not one issuer {url} advertises (id_token_signing_alg_values_supported: {names:?})"
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

    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P521_SHA512_FIXED_SIGNING, EcdsaKeyPair, EcdsaSigningAlgorithm,
        KeyPair as _,
    };
    use keyless_config::IssuerKind;
    use serde_json::json;

    const ISS: &str = "https://issuer.example";

    /// An EC key as a JWK (`alg` as given) and a function signing tokens with it.
    fn ec_key(
        signing: &'static EcdsaSigningAlgorithm,
        crv: &str,
        alg: Option<&str>,
    ) -> (Value, impl Fn(&str) -> String) {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(signing, &SystemRandom::new()).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let n = (point.len() - 1) / 2;
        let mut jwk = json!({"kty": "EC", "crv": crv, "kid": "k1", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&point[1..1 + n]), "y": URL_SAFE_NO_PAD.encode(&point[1 + n..])});
        if let Some(a) = alg {
            jwk["alg"] = a.into();
        }
        let sign = move |alg: &str| {
            let header = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "kid": "k1"}).to_string());
            let claims = json!({"iss": ISS, "aud": "sigstore", "sub": "s", "exp": 2_000_000_000i64});
            let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
            let sig = pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
        };
        (jwk, sign)
    }

    fn keys(jwks: Value) -> IssuerKeys {
        IssuerKeys::from_jwks(&serde_json::from_value(jwks).unwrap())
    }

    fn check(token: &str, keys: &IssuerKeys) -> Result<VerifiedToken, Error> {
        let issuer = Arc::new(IssuerConfig::new(ISS, IssuerKind::Email(Default::default())));
        verify(parse(token)?, issuer, keys, 1_900_000_000)
    }

    #[test]
    fn es512_tokens_verify_with_p521_keys() {
        for alg in [Some("ES512"), None] {
            let (jwk, sign) = ec_key(&ECDSA_P521_SHA512_FIXED_SIGNING, "P-521", alg);
            let set = keys(json!({"keys": [jwk]}));
            assert_eq!(set.len(), 1, "{alg:?}");
            check(&sign("ES512"), &set).unwrap();
            // The same key never serves another algorithm.
            assert!(check(&sign("ES256"), &set).is_err());
        }
        // A P-521 key marked for encryption is not a verification key.
        let (mut jwk, _) = ec_key(&ECDSA_P521_SHA512_FIXED_SIGNING, "P-521", None);
        jwk["use"] = "enc".into();
        assert!(keys(json!({"keys": [jwk]})).is_empty());
    }

    /// go-oidc's rule: only algorithms the discovery document lists, RS256 when it lists none.
    #[test]
    fn the_discovery_documents_algorithms_are_honoured() {
        let (jwk, sign) = ec_key(&ECDSA_P256_SHA256_FIXED_SIGNING, "P-256", Some("ES256"));
        let set = || keys(json!({"keys": [jwk.clone()]}));
        let token = sign("ES256");
        check(&token, &set()).unwrap();
        let listed = |l: &[&str]| set().advertised_by_discovery(&l.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        check(&token, &listed(&["RS256", "ES256"])).unwrap();
        for l in [&["RS256"][..], &[], &["HS256", "none"], &["ES384", "ES512"]] {
            let keys = listed(l);
            let e = check(&token, &keys).unwrap_err().to_string();
            assert!(
                e.contains("signing algorithm ES256 is not one issuer https://issuer.example advertises"),
                "{l:?}: {e}"
            );
        }
        assert_eq!(
            listed(&["HS256", "ES256", "ES256", "RS256"]).advertised(),
            Some(&[TokenAlgorithm::ES256, TokenAlgorithm::RS256][..])
        );
        assert_eq!(listed(&[]).advertised(), Some(&[TokenAlgorithm::RS256][..]));
    }
}
