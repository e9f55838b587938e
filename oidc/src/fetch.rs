//! Fetching an issuer's discovery document and JWKS over HTTP: same-host redirects that never
//! downgrade to plain HTTP, one timeout for both documents, and size limits read as the bytes
//! arrive. The document parsers are public because the fuzz tests feed them hostile bytes.

use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use keyless_ca::token::IssuerKeys;
use keyless_config::IssuerConfig;
use serde::Deserialize;

use crate::MAX_DOCUMENT_BYTES;

/// Whether a redirect from the `previous` hops to `next` may be followed: at most two redirects,
/// every hop on the same host (GHSA-59jp-pj84-45mr class of SSRF), never from `https` down to
/// `http`, and plain `http` only on loopback (or anywhere for an `insecure_plain_http` issuer).
pub(crate) fn redirect_allowed(previous: &[url::Url], next: &url::Url, plain_http_ok: bool) -> bool {
    !previous.is_empty()
        && previous.len() < 3
        && previous.iter().all(|p| p.host_str() == next.host_str())
        && match next.scheme() {
            "https" => true,
            "http" => {
                previous.iter().all(|p| p.scheme() == "http")
                    && (plain_http_ok || keyless_config::is_loopback_url(next))
            }
            _ => false,
        }
}

/// Which redirects an issuer's client follows.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Redirects {
    /// Same host, no downgrade, plain http on loopback only.
    Safe,
    /// As `Safe`, with plain http beyond loopback (`insecure_plain_http`).
    SafeWithPlainHttp,
    /// None at all: the client carries a bearer token (in-cluster issuers).
    Never,
}

/// The HTTP client for discovery and JWKS: timeouts, the issuer's redirect rule, and optionally
/// extra CA bundles (an IdP behind a private CA, a cluster's CA).
pub(crate) fn build_client(
    extra_ca_pems: &[&[u8]],
    timeout: Duration,
    redirects: Redirects,
) -> Result<reqwest::Client, String> {
    let policy = match redirects {
        Redirects::Never => reqwest::redirect::Policy::none(),
        Redirects::Safe | Redirects::SafeWithPlainHttp => {
            let plain = redirects == Redirects::SafeWithPlainHttp;
            reqwest::redirect::Policy::custom(move |attempt| {
                if redirect_allowed(attempt.previous(), attempt.url(), plain) {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            })
        }
    };
    // No per-request timeout: `fetch_keys` bounds discovery and JWKS together.
    let mut b = reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(policy)
        .user_agent(concat!("keyless/", env!("CARGO_PKG_VERSION")));
    for pem in extra_ca_pems {
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
    /// Absent reads as empty, which go-oidc (and so the CA) treats as RS256 only.
    #[serde(default)]
    pub(crate) id_token_signing_alg_values_supported: Vec<String>,
}

/// The service-account token of an in-cluster issuer, for one fetch: sent only to the issuer's
/// own origin.
struct Bearer {
    origin: url::Origin,
    header: reqwest::header::HeaderValue,
}

/// Projected tokens are about 1 KiB; anything far larger is not one.
const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;
/// Largest cluster CA bundle read.
const MAX_CA_FILE_BYTES: u64 = 1 << 20;

/// Reads a small local file, bounded; the error names the file and the cause, never the content.
fn read_bounded(path: &std::path::Path, cap: u64, what: &str) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let mut out = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(cap + 1).read_to_end(&mut out))
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
    if out.len() as u64 > cap {
        return Err(format!("the {what} {} is larger than {cap} bytes", path.display()));
    }
    Ok(out)
}

impl Bearer {
    /// Reads the token now (the kubelet rotates it, so it is read before every fetch).
    fn read(issuer: &str, token_file: &std::path::Path) -> Result<Bearer, String> {
        let raw = read_bounded(token_file, MAX_TOKEN_FILE_BYTES, "service-account token file")?;
        let token = std::str::from_utf8(&raw).map(str::trim).unwrap_or_default();
        let not_a_token = || format!("the service-account token file {} holds no token", token_file.display());
        if token.is_empty() {
            return Err(not_a_token());
        }
        let mut header =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| not_a_token())?;
        header.set_sensitive(true);
        let origin = url::Url::parse(issuer)
            .map_err(|e| format!("issuer URL: {e}"))?
            .origin();
        Ok(Bearer { origin, header })
    }
}

/// Discovery then JWKS for `issuer`, within `timeout` for both together. `http` is the issuer's
/// client; an in-cluster issuer gets a client of its own per fetch (its CA bundle may have been
/// rotated) and the bearer token.
pub(crate) async fn fetch_keys(
    issuer: &IssuerConfig,
    http: &reqwest::Client,
    timeout: Duration,
) -> Result<IssuerKeys, String> {
    let fetch = async {
        match &issuer.options.in_cluster {
            None => fetch_keys_with(issuer, http, None).await,
            Some(ic) => {
                let bearer = Bearer::read(&issuer.url, &ic.token_file)?;
                let mut pems: Vec<Vec<u8>> = issuer
                    .options
                    .ca_cert_pem
                    .iter()
                    .map(|p| p.as_bytes().to_vec())
                    .collect();
                if !ic.ca_files.is_empty() {
                    let Some(path) = ic.ca_files.iter().find(|p| p.exists()) else {
                        let names: Vec<String> = ic.ca_files.iter().map(|p| p.display().to_string()).collect();
                        return Err(format!("no cluster CA bundle: none of {} exists", names.join(", ")));
                    };
                    pems.push(read_bounded(path, MAX_CA_FILE_BYTES, "cluster CA bundle")?);
                }
                let refs: Vec<&[u8]> = pems.iter().map(Vec::as_slice).collect();
                let client = build_client(&refs, timeout, Redirects::Never)?;
                fetch_keys_with(issuer, &client, Some(&bearer)).await
            }
        }
    };
    match tokio::time::timeout(timeout, fetch).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "discovery and JWKS did not arrive within {} ms",
            timeout.as_millis()
        )),
    }
}

async fn fetch_keys_with(
    issuer: &IssuerConfig,
    http: &reqwest::Client,
    bearer: Option<&Bearer>,
) -> Result<IssuerKeys, String> {
    let url = issuer.url.as_str();
    let discovery_url = format!("{}/.well-known/openid-configuration", url.trim_end_matches('/'));
    let plain_http_ok = issuer.options.insecure_plain_http;
    let doc = read_discovery(url, &get(http, &discovery_url, bearer).await?, plain_http_ok)?;
    let keys = parse_jwks(&get(http, doc.jwks_uri.as_str(), bearer).await?)?
        .advertised_by_discovery(&doc.id_token_signing_alg_values_supported);
    tracing::info!(issuer = url, keys = keys.len(), "fetched OIDC signing keys");
    Ok(keys)
}

/// What the key fetch takes from a discovery document.
pub(crate) struct DiscoveryDoc {
    pub(crate) jwks_uri: url::Url,
    pub(crate) id_token_signing_alg_values_supported: Vec<String>,
}

/// Reads the discovery document fetched for `issuer`: it must name exactly `issuer` and a
/// `jwks_uri` that is `https` (plain `http` only on loopback). Returns where the keys are.
///
/// Public because the document comes from whatever host a token names, so the fuzz tests
/// (`tests/tests/fuzz.rs`) feed it hostile bytes; the key fetch calls exactly this.
pub fn parse_discovery(issuer: &str, body: &[u8]) -> Result<url::Url, String> {
    read_discovery(issuer, body, false).map(|d| d.jwks_uri)
}

/// [`parse_discovery`], with plain `http` keys anywhere for an `insecure_plain_http` issuer, and
/// the advertised signing algorithms.
pub(crate) fn read_discovery(issuer: &str, body: &[u8], plain_http_ok: bool) -> Result<DiscoveryDoc, String> {
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
    let secure = jwks_url.scheme() == "https"
        || (jwks_url.scheme() == "http" && (plain_http_ok || keyless_config::is_loopback_url(&jwks_url)));
    if !secure {
        return Err(format!(
            "jwks_uri {:?} must be https (plain http only on loopback)",
            doc.jwks_uri
        ));
    }
    Ok(DiscoveryDoc {
        jwks_uri: jwks_url,
        id_token_signing_alg_values_supported: doc.id_token_signing_alg_values_supported,
    })
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

/// GETs a document under the size limit; `bearer` goes with it only to its own origin.
async fn get(http: &reqwest::Client, url: &str, bearer: Option<&Bearer>) -> Result<Vec<u8>, String> {
    let mut req = http.get(url);
    let mut withheld = false;
    if let Some(b) = bearer {
        if url::Url::parse(url).is_ok_and(|u| u.origin() == b.origin) {
            req = req.header(reqwest::header::AUTHORIZATION, b.header.clone());
        } else {
            withheld = true;
        }
    }
    let mut resp = req
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", with_sources(&e)))?;
    if resp.status().is_redirection() {
        // The redirect policy stopped here (another host, https to http, or a bearer client).
        return Err(format!("GET {url}: redirect refused (HTTP {})", resp.status()));
    }
    if !resp.status().is_success() {
        let hint = if withheld && matches!(resp.status().as_u16(), 401 | 403) {
            " (the service-account token is sent to the issuer's own origin only; allow anonymous \
             access to these keys or publish them on the issuer's origin)"
        } else {
            ""
        };
        return Err(format!("GET {url}: HTTP {}{hint}", resp.status()));
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
        let redirect_allowed = |p: &[url::Url], n: &url::Url| redirect_allowed(p, n, false);
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
        // insecure_plain_http: plain http beyond loopback, on the same host, never a downgrade.
        let dex = [u("http://dex:8888/auth/a")];
        assert!(super::redirect_allowed(&dex, &u("http://dex:8888/auth/b"), true));
        assert!(!super::redirect_allowed(&dex, &u("http://evil:8888/b"), true));
        assert!(!super::redirect_allowed(&https, &u("http://idp.example/b"), true));
    }

    #[test]
    fn discovery_algorithms_and_insecure_jwks() {
        let doc = br#"{"issuer": "http://dex:8888/auth", "jwks_uri": "http://dex:8888/auth/keys",
                      "id_token_signing_alg_values_supported": ["RS256", "ES512"]}"#;
        assert!(read_discovery("http://dex:8888/auth", doc, false).is_err());
        let d = read_discovery("http://dex:8888/auth", doc, true).unwrap();
        assert_eq!(d.id_token_signing_alg_values_supported, ["RS256", "ES512"]);
        let bad =
            br#"{"issuer": "https://i", "jwks_uri": "https://i/k", "id_token_signing_alg_values_supported": "RS256"}"#;
        let e = read_discovery("https://i", bad, false).err().unwrap();
        assert!(e.contains("discovery document is not valid JSON"), "{e}");
        let none = br#"{"issuer": "https://i", "jwks_uri": "https://i/k"}"#;
        assert!(
            read_discovery("https://i", none, false)
                .unwrap()
                .id_token_signing_alg_values_supported
                .is_empty()
        );
    }
}
