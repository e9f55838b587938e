//! Fulcio's JSON shapes with protojson's input rules: camelCase or snake_case names, unknown
//! fields ignored, `bytes` as standard or URL-safe base64 with or without padding.

use axum::body::Bytes as Body;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use serde::{Deserialize, Deserializer};

use crate::error::ApiError;
use keyless_service::{IssueRequest, KeyMaterial};

/// Bodies larger than this are refused before parsing (Fulcio's 4 MiB).
pub const MAX_BODY_BYTES: usize = 4 << 20;

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

/// protojson messages are JSON objects (or null) only; serde's derive would also read a struct
/// from an array of its fields, which no Fulcio client sends and Fulcio refuses.
fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    struct ObjectOnly<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectOnly<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    d.deserialize_any(ObjectOnly(std::marker::PhantomData))
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
    #[serde(deserialize_with = "object")]
    pub(crate) credentials: Option<Credentials>,
    #[serde(alias = "public_key_request")]
    #[serde(rename = "publicKeyRequest")]
    #[serde(deserialize_with = "object")]
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
    #[serde(deserialize_with = "object")]
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
    #[serde(deserialize_with = "object")]
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

// ---- decoding a signing request ----
//
// These are public (re-exported at the crate root) because the body is the first thing an
// attacker controls: the fuzz tests (`tests/tests/fuzz.rs`) feed them hostile bodies, and the
// routes call exactly these.

/// Decodes a `POST /api/v2/signingCert` body: the token from `credentials.oidcIdentityToken`,
/// else `Authorization: Bearer`; a public key with its proof, or a CSR, never both.
pub fn decode_v2(
    request_id: String,
    headers: &HeaderMap,
    body: Result<Body, BytesRejection>,
) -> Result<IssueRequest, ApiError> {
    let req: CreateSigningCertificateRequest = body_json(body)?;
    let token = req
        .credentials
        .and_then(|c| c.oidc_identity_token)
        .filter(|t| !t.is_empty())
        .or_else(|| bearer(headers))
        .unwrap_or_default();
    let csr = req.certificate_signing_request.filter(|c| !c.0.is_empty());
    let key = match (req.public_key_request, csr) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "send either publicKeyRequest or certificateSigningRequest, not both".into(),
            ));
        }
        (None, Some(csr)) => KeyMaterial::Csr { pem: csr.0 },
        (pkr, None) => {
            // A missing key is refused after the token is checked, so token errors come first,
            // as in Fulcio.
            let pkr = pkr.unwrap_or_default();
            KeyMaterial::Signature {
                public_key: pkr.public_key.and_then(|k| k.content).unwrap_or_default().into_bytes(),
                proof: pkr.proof_of_possession.unwrap_or_default().0,
            }
        }
    };
    Ok(IssueRequest {
        token,
        key,
        request_id,
        deadline: None,
    })
}

/// Decodes a legacy `POST /api/v1/signingCert` body (the token comes only from the header).
pub fn decode_v1(
    request_id: String,
    headers: &HeaderMap,
    body: Result<Body, BytesRejection>,
) -> Result<IssueRequest, ApiError> {
    let req: LegacyRequest = body_json(body)?;
    let csr = req.certificate_signing_request.filter(|c| !c.0.is_empty());
    let key = req.public_key.and_then(|k| k.content).filter(|c| !c.0.is_empty());
    let token = bearer(headers).unwrap_or_default();
    let key = match (csr, key) {
        (Some(csr), _) => KeyMaterial::Csr { pem: csr.0 },
        (None, Some(key)) => KeyMaterial::Signature {
            public_key: key.0,
            proof: req.signed_email_address.unwrap_or_default().0,
        },
        // Fulcio answers this before looking at the token.
        (None, None) => {
            return Err(
                keyless_ca::Error::KeyParse("send publicKey.content or certificateSigningRequest".into()).into(),
            );
        }
    };
    Ok(IssueRequest {
        token,
        key,
        request_id,
        deadline: None,
    })
}

/// Reads the body under the size limit (a rejection here means it was too large or unreadable).
fn body_json<T: serde::de::DeserializeOwned>(body: Result<Body, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(MAX_BODY_BYTES)
        } else {
            ApiError::BadRequest(format!("cannot read the request body: {e}"))
        }
    })?;
    let invalid =
        |e: serde_json::Error| ApiError::BadRequest(format!("request body is not valid JSON for this endpoint: {e}"));
    let mut de = serde_json::Deserializer::from_slice(&body);
    let req = object(&mut de).map_err(invalid)?;
    de.end().map_err(invalid)?;
    req.ok_or_else(|| {
        ApiError::BadRequest(
            "request body is not valid JSON for this endpoint: expected a JSON object, found null".into(),
        )
    })
}

/// The token of an `Authorization: Bearer` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(body: &str) -> Result<IssueRequest, ApiError> {
        decode_v2(String::new(), &HeaderMap::new(), Ok(Body::from(body.to_string())))
    }

    #[test]
    fn messages_are_objects_never_arrays() {
        for body in [
            r#"{"credentials": ["eyJ.x.y"]}"#,
            r#"["eyJ.x.y"]"#,
            r#"{"publicKeyRequest": [{"content": "k"}, "c2ln"]}"#,
            r#"{"publicKeyRequest": {"publicKey": ["ECDSA", "k"]}}"#,
            "null",
            r#"{"credentials": {}} trailing"#,
        ] {
            assert!(matches!(v2(body), Err(ApiError::BadRequest(_))), "{body}");
        }
        let ok = v2(r#"{"credentials": {"oidcIdentityToken": "t"}, "publicKeyRequest": {"publicKey": {"content": "k"}, "proofOfPossession": "c2ln"}}"#)
            .unwrap();
        assert_eq!(ok.token, "t");
        assert!(
            matches!(ok.key, KeyMaterial::Signature { ref public_key, ref proof } if public_key == b"k" && proof == b"sig")
        );
        assert_eq!(v2(r#"{"credentials": null}"#).unwrap().token, "");
    }
}
