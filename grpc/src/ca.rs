//! `dev.sigstore.fulcio.v2.CA`: CreateSigningCertificate, GetTrustBundle and GetConfiguration.
//!
//! A signing call only decodes and encodes: the message is decoded into an [`IssueRequest`] (the
//! token from `credentials.oidc_identity_token`, else the `oidcidentitytoken` metadata Fulcio
//! reads, else an `authorization: Bearer` metadata; the key and proof, or the CSR) and handed to
//! [`Service::issue`], which decides, issues and records, exactly as for the REST API.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse as _, Response};
use axum::routing::post;
use keyless_api::error::ApiError;
use keyless_service::{IssueRequest, KeyMaterial, Service};
use tonic::metadata::MetadataMap;

use crate::codec::Lenient;
use crate::fulcio::{
    CertificateChain, Configuration, CreateSigningCertificateRequest, GetConfigurationRequest, GetTrustBundleRequest,
    OidcIssuer, SigningCertificate, SigningCertificateEmbeddedSct, TrustBundle, create_signing_certificate_request,
    credentials, oidc_issuer, signing_certificate,
};
use crate::guard::CallContext;
use crate::{MAX_MESSAGE_BYTES, status};

/// The service's full name.
pub const SERVICE: &str = "dev.sigstore.fulcio.v2.CA";

/// The CA's three methods.
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route(
            "/dev.sigstore.fulcio.v2.CA/CreateSigningCertificate",
            post(create_signing_certificate),
        )
        .route("/dev.sigstore.fulcio.v2.CA/GetTrustBundle", post(get_trust_bundle))
        .route("/dev.sigstore.fulcio.v2.CA/GetConfiguration", post(get_configuration))
        .with_state(service)
}

fn grpc<C: tonic::codec::Codec>(codec: C) -> tonic::server::Grpc<C> {
    tonic::server::Grpc::new(codec)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

async fn create_signing_certificate(State(service): State<Arc<Service>>, req: Request) -> Response {
    let ctx = req.extensions().get::<CallContext>().cloned().unwrap_or(CallContext {
        request_id: String::new(),
        deadline: None,
    });
    let method = tower::service_fn(
        move |call: tonic::Request<Result<CreateSigningCertificateRequest, prost::DecodeError>>| {
            let (service, ctx) = (service.clone(), ctx.clone());
            async move { issue(&service, ctx, call).await }
        },
    );
    grpc(Lenient::<SigningCertificate, CreateSigningCertificateRequest>::default())
        .unary(method, req)
        .await
        .into_response()
}

/// Decodes, issues through the service, encodes the chain as Fulcio does (PEM strings without a
/// trailing newline, leaf first, in `signed_certificate_embedded_sct`).
async fn issue(
    service: &Arc<Service>,
    ctx: CallContext,
    call: tonic::Request<Result<CreateSigningCertificateRequest, prost::DecodeError>>,
) -> Result<tonic::Response<SigningCertificate>, tonic::Status> {
    let (metadata, _, message) = call.into_parts();
    let message = match message {
        Ok(m) => m,
        Err(e) => {
            let e = ApiError::BadRequest(format!(
                "request message is not a valid CreateSigningCertificateRequest: {e}"
            ));
            service.refuse_undecoded(&ctx.request_id, e.class(), &e.parts().2);
            return Err(status::from_api(e));
        }
    };
    let mut req = decode(ctx.request_id, &metadata, message);
    req.deadline = ctx.deadline;
    let chain = service.issue(req).await.map_err(status::from_service)?;
    let certificates = chain.iter().map(|p| p.trim_end().to_string()).collect();
    Ok(tonic::Response::new(SigningCertificate {
        certificate: Some(signing_certificate::Certificate::SignedCertificateEmbeddedSct(
            SigningCertificateEmbeddedSct {
                chain: Some(CertificateChain { certificates }),
            },
        )),
    }))
}

/// Decodes a CreateSigningCertificate message and its metadata into an [`IssueRequest`]. Nothing
/// here refuses: a missing token or key is refused by the service, after the token is checked, in
/// Fulcio's order.
pub fn decode(request_id: String, metadata: &MetadataMap, req: CreateSigningCertificateRequest) -> IssueRequest {
    let from_body = req.credentials.and_then(|c| match c.credentials {
        Some(credentials::Credentials::OidcIdentityToken(t)) if !t.is_empty() => Some(t),
        _ => None,
    });
    let token = from_body
        .or_else(|| single(metadata, "oidcidentitytoken").map(str::to_string))
        .or_else(|| {
            single(metadata, "authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string)
        })
        .unwrap_or_default();
    let key = match req.key {
        Some(create_signing_certificate_request::Key::CertificateSigningRequest(csr)) if !csr.is_empty() => {
            KeyMaterial::Csr { pem: csr }
        }
        Some(create_signing_certificate_request::Key::PublicKeyRequest(pkr)) => KeyMaterial::Signature {
            public_key: pkr.public_key.map(|k| k.content).unwrap_or_default().into_bytes(),
            proof: pkr.proof_of_possession,
        },
        // No key at all: an empty one, refused as "could not be parsed" once the token passes.
        _ => KeyMaterial::Signature {
            public_key: Vec::new(),
            proof: Vec::new(),
        },
    };
    IssueRequest {
        token,
        key,
        request_id,
        deadline: None,
    }
}

/// The value of `key` when the metadata holds exactly one (as Fulcio reads its token metadata).
fn single<'a>(metadata: &'a MetadataMap, key: &str) -> Option<&'a str> {
    let mut values = metadata.get_all(key).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

async fn get_trust_bundle(State(service): State<Arc<Service>>, req: Request) -> Response {
    let method = tower::service_fn(move |_: tonic::Request<GetTrustBundleRequest>| {
        let service = service.clone();
        async move {
            Ok::<_, tonic::Status>(tonic::Response::new(TrustBundle {
                chains: vec![CertificateChain {
                    certificates: service.chain_pem().to_vec(),
                }],
            }))
        }
    });
    grpc(tonic_prost::ProstCodec::<TrustBundle, GetTrustBundleRequest>::default())
        .unary(method, req)
        .await
        .into_response()
}

async fn get_configuration(State(service): State<Arc<Service>>, req: Request) -> Response {
    let method = tower::service_fn(move |_: tonic::Request<GetConfigurationRequest>| {
        let service = service.clone();
        async move { Ok::<_, tonic::Status>(tonic::Response::new(configuration(&service))) }
    });
    grpc(tonic_prost::ProstCodec::<Configuration, GetConfigurationRequest>::default())
        .unary(method, req)
        .await
        .into_response()
}

/// The issuers in force, as `/api/v2/configuration` lists them.
pub fn configuration(service: &Service) -> Configuration {
    let issuers = service
        .current_issuers()
        .list
        .iter()
        .map(|i| OidcIssuer {
            issuer: Some(if i.wildcard {
                oidc_issuer::Issuer::WildcardIssuerUrl(i.url.clone())
            } else {
                oidc_issuer::Issuer::IssuerUrl(i.url.clone())
            }),
            audience: i.client_id.clone(),
            challenge_claim: i.challenge_claim().to_string(),
            spiffe_trust_domain: i.kind.spiffe_trust_domain().unwrap_or_default().to_string(),
            issuer_type: i.kind.as_str().to_string(),
            subject_domain: i.kind.subject_domain().unwrap_or_default().to_string(),
            skip_email_verification: i.kind.skip_email_verification(),
        })
        .collect();
    Configuration { issuers }
}

#[cfg(test)]
mod tests {
    use tonic::metadata::MetadataValue;

    use super::*;
    use crate::fulcio::{Credentials, PublicKey, PublicKeyRequest};

    fn with_token(t: &str) -> CreateSigningCertificateRequest {
        CreateSigningCertificateRequest {
            credentials: Some(Credentials {
                credentials: Some(credentials::Credentials::OidcIdentityToken(t.into())),
            }),
            key: None,
        }
    }

    #[test]
    fn the_token_comes_from_the_body_then_fulcios_metadata_then_authorization() {
        let mut md = MetadataMap::new();
        md.insert("oidcidentitytoken", MetadataValue::from_static("from-metadata"));
        md.insert("authorization", MetadataValue::from_static("Bearer from-header"));
        assert_eq!(decode(String::new(), &md, with_token("from-body")).token, "from-body");
        assert_eq!(decode(String::new(), &md, with_token("")).token, "from-metadata");
        md.remove("oidcidentitytoken");
        assert_eq!(decode(String::new(), &md, with_token("")).token, "from-header");
        // Two values are ambiguous: Fulcio takes the metadata token only when there is exactly one.
        md.append("authorization", MetadataValue::from_static("Bearer other"));
        assert_eq!(decode(String::new(), &md, with_token("")).token, "");
        let mut md = MetadataMap::new();
        md.insert("authorization", MetadataValue::from_static("Basic dXNlcjpwYXNz"));
        assert_eq!(
            decode(String::new(), &md, CreateSigningCertificateRequest::default()).token,
            ""
        );
    }

    #[test]
    fn the_key_is_the_csr_or_the_public_key_with_its_proof() {
        let md = MetadataMap::new();
        let mut req = with_token("t");
        req.key = Some(create_signing_certificate_request::Key::CertificateSigningRequest(
            b"-----BEGIN CERTIFICATE REQUEST-----".to_vec(),
        ));
        assert!(
            matches!(decode("id".into(), &md, req).key, KeyMaterial::Csr { ref pem } if pem.starts_with(b"-----BEGIN"))
        );
        let mut req = with_token("t");
        req.key = Some(create_signing_certificate_request::Key::PublicKeyRequest(
            PublicKeyRequest {
                public_key: Some(PublicKey {
                    algorithm: 2,
                    content: "PEM".into(),
                }),
                proof_of_possession: b"sig".to_vec(),
            },
        ));
        let decoded = decode("id".into(), &md, req);
        assert_eq!(decoded.request_id, "id");
        assert!(
            matches!(decoded.key, KeyMaterial::Signature { ref public_key, ref proof } if public_key == b"PEM" && proof == b"sig")
        );
        // An empty CSR is no CSR: the (missing) public key is refused after the token, as in Fulcio.
        let mut req = with_token("t");
        req.key = Some(create_signing_certificate_request::Key::CertificateSigningRequest(
            Vec::new(),
        ));
        assert!(
            matches!(decode(String::new(), &md, req).key, KeyMaterial::Signature { ref public_key, .. } if public_key.is_empty())
        );
    }
}
