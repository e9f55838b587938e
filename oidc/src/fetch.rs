//! Fetching an issuer's discovery document and JWKS over HTTP: same-host redirects that never
//! downgrade to plain HTTP, one timeout for both documents, and size limits read as the bytes
//! arrive. The document parsers are public because the fuzz tests feed them hostile bytes.

use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use keyless_ca::token::IssuerKeys;
use serde::Deserialize;

use crate::MAX_DOCUMENT_BYTES;

/// Whether a redirect from the `previous` hops to `next` may be followed: at most two redirects,
/// every hop on the same host (GHSA-59jp-pj84-45mr class of SSRF), never from `https` down to
/// `http`, and plain `http` only on loopback.
pub(crate) fn redirect_allowed(previous: &[url::Url], next: &url::Url) -> bool {
    !previous.is_empty()
        && previous.len() < 3
        && previous.iter().all(|p| p.host_str() == next.host_str())
        && match next.scheme() {
            "https" => true,
            "http" => previous.iter().all(|p| p.scheme() == "http") && keyless_config::is_loopback_url(next),
            _ => false,
        }
}

/// The HTTP client for discovery and JWKS: timeouts, safe redirects only, and optionally an
/// extra CA bundle (an IdP behind a private CA).
pub(crate) fn build_client(extra_ca_pem: Option<&[u8]>, timeout: Duration) -> Result<reqwest::Client, String> {
    // No per-request timeout: `fetch_keys` bounds discovery and JWKS together.
    let mut b = reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if redirect_allowed(attempt.previous(), attempt.url()) {
                attempt.follow()
            } else {
                attempt.stop()
            }
        }))
        .user_agent(concat!("keyless/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = extra_ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| format!("CA bundle: {e}"))?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().map_err(|e| e.to_string())
}

#[derive(Deserialize)]
pub(crate) struct Discovery {
    pub(crate) issuer: String,
    pub(crate) jwks_uri: String,
}

/// Discovery then JWKS, within `timeout` for both together.
pub(crate) async fn fetch_keys(issuer: &str, http: &reqwest::Client, timeout: Duration) -> Result<IssuerKeys, String> {
    match tokio::time::timeout(timeout, fetch_keys_unbounded(issuer, http)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "discovery and JWKS did not arrive within {} ms",
            timeout.as_millis()
        )),
    }
}

pub(crate) async fn fetch_keys_unbounded(issuer: &str, http: &reqwest::Client) -> Result<IssuerKeys, String> {
    let discovery_url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
    let jwks_url = parse_discovery(issuer, &get(http, &discovery_url).await?)?;
    let keys = parse_jwks(&get(http, jwks_url.as_str()).await?)?;
    tracing::info!(issuer, keys = keys.len(), "fetched OIDC signing keys");
    Ok(keys)
}

/// Reads the discovery document fetched for `issuer`: it must name exactly `issuer` and a
/// `jwks_uri` that is `https` (plain `http` only on loopback). Returns where the keys are.
///
/// Public because the document comes from whatever host a token names, so the fuzz tests
/// (`tests/tests/fuzz.rs`) feed it hostile bytes; the key fetch calls exactly this.
pub fn parse_discovery(issuer: &str, body: &[u8]) -> Result<url::Url, String> {
    let doc: Discovery = serde_json::from_slice(body)
        .map_err(|e| format!("discovery document is not valid JSON with issuer and jwks_uri: {e}"))?;
    if doc.issuer != issuer {
        return Err(format!(
            "discovery document names issuer {:?}, expected {issuer:?}",
            doc.issuer
        ));
    }
    let jwks_url =
        url::Url::parse(&doc.jwks_uri).map_err(|e| format!("jwks_uri {:?} is not a URL: {e}", doc.jwks_uri))?;
    let secure =
        jwks_url.scheme() == "https" || (jwks_url.scheme() == "http" && keyless_config::is_loopback_url(&jwks_url));
    if !secure {
        return Err(format!(
            "jwks_uri {:?} must be https (plain http only on loopback)",
            doc.jwks_uri
        ));
    }
    Ok(jwks_url)
}

/// Reads a fetched JWKS into the keys that can verify tokens; a set with none is an error.
///
/// Public for the same reason as [`parse_discovery`]: the key fetch calls exactly this.
pub fn parse_jwks(body: &[u8]) -> Result<IssuerKeys, String> {
    let jwks: JwkSet = serde_json::from_slice(body).map_err(|e| format!("JWKS is not a valid key set: {e}"))?;
    let keys = IssuerKeys::from_jwks(&jwks);
    if keys.is_empty() {
        return Err("JWKS holds no usable signing key".into());
    }
    Ok(keys)
}

/// GETs a document under the size limit.
pub(crate) async fn get(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let mut resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", with_sources(&e)))?;
    if resp.status().is_redirection() {
        // The redirect policy stopped here (another host, or https to http).
        return Err(format!("GET {url}: redirect refused (HTTP {})", resp.status()));
    }
    if !resp.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", resp.status()));
    }
    if resp.content_length().is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64) {
        return Err(format!("GET {url}: response larger than {MAX_DOCUMENT_BYTES} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("GET {url}: {}", with_sources(&e)))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("GET {url}: response larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error and its causes ("error sending request: connection refused"), for the operator's log:
/// reqwest's own message alone does not say what went wrong.
pub(crate) fn with_sources(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    #[test]
    fn redirect_policy() {
        let https = [u("https://idp.example/a")];
        assert!(redirect_allowed(&https, &u("https://idp.example/b")));
        assert!(redirect_allowed(&https, &u("https://idp.example:8443/b")));
        assert!(!redirect_allowed(&https, &u("http://idp.example/b")), "https to http");
        assert!(!redirect_allowed(&https, &u("https://evil.example/b")), "another host");
        let loop_http = [u("http://127.0.0.1:1/a")];
        assert!(redirect_allowed(&loop_http, &u("http://127.0.0.1:2/b")));
        assert!(redirect_allowed(&loop_http, &u("https://127.0.0.1:2/b")));
        assert!(
            !redirect_allowed(&loop_http, &u("http://localhost:1/b")),
            "another host"
        );
        // Once a hop was https, http is refused even if an earlier hop was http.
        let mixed = [u("http://127.0.0.1/a"), u("https://127.0.0.1/b")];
        assert!(!redirect_allowed(&mixed, &u("http://127.0.0.1/c")));
        assert!(
            !redirect_allowed(&[u("http://idp.example/a")], &u("http://idp.example/b")),
            "plain http off loopback"
        );
        let three = [
            u("https://idp.example/1"),
            u("https://idp.example/2"),
            u("https://idp.example/3"),
        ];
        assert!(!redirect_allowed(&three, &u("https://idp.example/4")), "too many hops");
        assert!(!redirect_allowed(&https, &u("ftp://idp.example/b")));
    }
}
