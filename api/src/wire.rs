//! Fulcio's JSON shapes with protojson's input rules: camelCase or snake_case names, unknown
//! fields ignored, `bytes` as standard or URL-safe base64 with or without padding.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use serde::{Deserialize, Deserializer};

/// A protojson `bytes` field.
#[derive(Debug, Default, Clone)]
pub(crate) struct Bytes(pub(crate) Vec<u8>);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        decode_base64(&s)
            .map(Bytes)
            .ok_or_else(|| serde::de::Error::custom("bytes field is not base64"))
    }
}

pub(crate) fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
}

/// `POST /api/v2/signingCert`.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct CreateSigningCertificateRequest {
    pub(crate) credentials: Option<Credentials>,
    #[serde(alias = "public_key_request")]
    #[serde(rename = "publicKeyRequest")]
    pub(crate) public_key_request: Option<PublicKeyRequest>,
    #[serde(alias = "certificate_signing_request")]
    #[serde(rename = "certificateSigningRequest")]
    pub(crate) certificate_signing_request: Option<Bytes>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct Credentials {
    #[serde(alias = "oidc_identity_token")]
    #[serde(rename = "oidcIdentityToken")]
    pub(crate) oidc_identity_token: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct PublicKeyRequest {
    #[serde(alias = "public_key")]
    #[serde(rename = "publicKey")]
    pub(crate) public_key: Option<PublicKey>,
    #[serde(alias = "proof_of_possession")]
    #[serde(rename = "proofOfPossession")]
    pub(crate) proof_of_possession: Option<Bytes>,
}

/// v2 `PublicKey`: `content` is a string (PEM, or DER that happens to be UTF-8).
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct PublicKey {
    #[allow(dead_code)]
    pub(crate) algorithm: Option<serde_json::Value>,
    pub(crate) content: Option<String>,
}

/// `POST /api/v1/signingCert` (legacy): `content` is `bytes`, i.e. base64.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct LegacyRequest {
    #[serde(rename = "publicKey")]
    #[serde(alias = "public_key")]
    pub(crate) public_key: Option<LegacyPublicKey>,
    #[serde(rename = "signedEmailAddress")]
    #[serde(alias = "signed_email_address")]
    pub(crate) signed_email_address: Option<Bytes>,
    #[serde(rename = "certificateSigningRequest")]
    #[serde(alias = "certificate_signing_request")]
    pub(crate) certificate_signing_request: Option<Bytes>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct LegacyPublicKey {
    #[allow(dead_code)]
    pub(crate) algorithm: Option<serde_json::Value>,
    pub(crate) content: Option<Bytes>,
}
