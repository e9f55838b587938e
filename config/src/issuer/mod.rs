//! Trusted OIDC issuers: the settings every issuer has ([`IssuerConfig`]), the kinds and their own
//! settings ([`kind`]), and the loading of both file formats' entries ([`raw`]).

pub(crate) mod kind;
pub(crate) mod raw;

pub use kind::{
    ALL_KINDS, CiProvider, EmailSettings, GitlabSettings, IssuerKind, IssuerType, JsonPath, SpiffeSettings,
    UriSettings, UsernameSettings,
};

use crate::DEFAULT_CLIENT_ID;

/// One trusted OIDC issuer, validated. Kind-specific settings live in [`IssuerKind`]'s variants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerConfig {
    /// The exact `iss` value tokens must carry.
    pub url: String,
    /// How tokens from this issuer become certificate identities, with that kind's settings.
    pub kind: IssuerKind,
    /// The audience the token's `aud` must contain.
    pub client_id: String,
    /// Overrides the advertised challenge claim (the server always verifies the kind's name).
    pub challenge_claim: Option<String>,
    /// Claim policy (allow/deny rules) applied after the token verifies.
    pub policy: crate::Policy,
    /// Per-issuer verification settings.
    pub options: IssuerOptions,
    /// `url` is a pattern (Fulcio's MetaIssuers): each `*` matches one run of `[-_a-zA-Z0-9]`,
    /// the whole URL anchored. A matching token's issuer gets this configuration.
    pub wildcard: bool,
}

/// Per-issuer verification settings beyond Fulcio's, the same for every kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IssuerOptions {
    /// Audiences accepted besides `client_id`.
    pub extra_audiences: Vec<String>,
    /// JWS algorithms accepted from this issuer (empty: every algorithm the CA accepts).
    pub algorithms: Vec<String>,
    /// Tokens whose `iat` is older than this are refused (unset: `iat` is not checked, as Fulcio).
    pub max_token_age: Option<std::time::Duration>,
    /// PEM CA bundle trusted (besides the system roots) for this issuer's discovery and JWKS.
    pub ca_cert_pem: Option<String>,
    /// This issuer's own rate limits, over the global `rate_limits`.
    pub rate_limits: crate::RateLimitOverrides,
    /// `kubernetes_in_cluster`: discovery and JWKS are fetched as a pod talks to its cluster's API
    /// server, with the projected service-account token as a bearer and the cluster CA.
    pub in_cluster: Option<InCluster>,
    /// `insecure_plain_http`: the operator accepted plain `http` for this issuer beyond loopback
    /// (anyone on the path could substitute its keys); logged loudly whenever it is used.
    pub insecure_plain_http: bool,
}

/// How an in-cluster issuer (the cluster's own API server) is reached. Both files are read again
/// before every fetch: the kubelet rotates the projected token (hourly by default) and the
/// cluster CA bundle can be rotated too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InCluster {
    /// The service-account token, sent as `Authorization: Bearer` to the issuer's own origin
    /// only, never across a redirect (redirects are not followed at all).
    pub token_file: std::path::PathBuf,
    /// Candidate cluster CA bundles; the first that exists is trusted (besides the system roots
    /// and `ca_cert_pem`). Empty when `ca_cert` was given, which is read at load instead.
    pub ca_files: Vec<std::path::PathBuf>,
}

/// Where a pod finds its projected service-account token.
pub const POD_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// Where a pod finds its cluster's CA bundle.
pub const POD_CA_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
/// Where Fulcio (and its Helm chart) puts the cluster CA for `https://kubernetes.default.svc`.
pub const FULCIO_CLUSTER_CA_FILE: &str = "/var/run/fulcio/ca.crt";
/// The in-cluster API server's issuer URL, which a Fulcio issuer file reaches in-cluster without
/// any extra key.
pub const IN_CLUSTER_ISSUER: &str = "https://kubernetes.default.svc";

/// JWS algorithms the CA accepts at all.
pub const TOKEN_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
];

impl IssuerConfig {
    /// An exact issuer of `kind` with every common setting at its default (audience `sigstore`).
    pub fn new(url: impl Into<String>, kind: IssuerKind) -> IssuerConfig {
        IssuerConfig {
            url: url.into(),
            kind,
            client_id: DEFAULT_CLIENT_ID.to_string(),
            challenge_claim: None,
            policy: crate::Policy::default(),
            options: IssuerOptions::default(),
            wildcard: false,
        }
    }

    /// Whether `aud` names this issuer's client.
    pub fn accepts_audience(&self, aud: &str) -> bool {
        aud == self.client_id || self.options.extra_audiences.iter().any(|a| a == aud)
    }

    /// Whether this issuer accepts tokens whose `iss` is `iss`.
    pub fn matches(&self, iss: &str) -> bool {
        if !self.wildcard {
            return self.url == iss;
        }
        wildcard_match(self.url.as_bytes(), iss.as_bytes())
    }

    /// This configuration applied to a concrete issuer URL a pattern matched.
    pub fn for_issuer(&self, iss: &str) -> IssuerConfig {
        IssuerConfig {
            url: iss.to_string(),
            wildcard: false,
            ..self.clone()
        }
    }

    /// The claim advertised as the proof-of-possession challenge.
    pub fn challenge_claim(&self) -> &str {
        self.challenge_claim
            .as_deref()
            .unwrap_or(self.kind.default_challenge_claim())
    }
}

/// Anchored match where `*` is one or more of `[-_a-zA-Z0-9]` (never `.`, `/`, `:` or `?`), so a
/// pattern cannot match a URL that merely contains an allowed issuer (GHSA-59jp-pj84-45mr).
///
/// `iss` comes from a token nobody has verified yet, so this simulates the pattern as an automaton
/// (the set of pattern positions reachable after each byte) instead of backtracking: at most
/// O(len(pattern)·len(iss)) steps, no recursion.
fn wildcard_match(pattern: &[u8], s: &[u8]) -> bool {
    let in_run = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    let m = pattern.len();
    // live[j]: pattern[..j] matches the bytes read so far.
    let mut live = vec![false; m + 1];
    let mut next = vec![false; m + 1];
    live[0] = true;
    for &c in s {
        next.iter_mut().for_each(|n| *n = false);
        let mut any = false;
        for j in (0..=m).filter(|&j| live[j]) {
            // A `*` that has matched at least one byte may take more.
            if j > 0 && pattern[j - 1] == b'*' && in_run(c) {
                next[j] = true;
                any = true;
            }
            if let Some(&t) = pattern.get(j)
                && (if t == b'*' { in_run(c) } else { t == c })
            {
                next[j + 1] = true;
                any = true;
            }
        }
        if !any {
            return false;
        }
        std::mem::swap(&mut live, &mut next);
    }
    live[m]
}

/// Issuer URLs must be https; plain http is allowed only for loopback hosts (tests, development).
pub(crate) fn check_issuer_url(s: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!("{s:?}: an issuer URL has no query or fragment"));
    }
    match u.scheme() {
        "https" => Ok(u),
        "http" if is_loopback_url(&u) => Ok(u),
        "http" => Err(format!(
            "{s:?}: plain http is allowed only for loopback issuers; use https"
        )),
        other => Err(format!("{s:?}: scheme {other:?} is not allowed; use https")),
    }
}

/// True for `localhost`, 127.0.0.0/8 and `[::1]`.
pub fn is_loopback_url(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(check_issuer_url("https://token.actions.githubusercontent.com").is_ok());
        assert!(check_issuer_url("http://127.0.0.1:8080/dex").is_ok());
        assert!(check_issuer_url("http://localhost:1").is_ok());
        assert!(check_issuer_url("http://[::1]:1").is_ok());
        assert!(check_issuer_url("http://example.com").unwrap_err().contains("loopback"));
        assert!(check_issuer_url("ftp://example.com").is_err());
        assert!(check_issuer_url("https://x.example/?a=b").is_err());
    }

    fn pattern(url: &str) -> IssuerConfig {
        IssuerConfig {
            wildcard: true,
            ..IssuerConfig::new(url, IssuerKind::Kubernetes)
        }
    }

    #[test]
    fn meta_patterns_are_anchored() {
        let eks = pattern("https://oidc.eks.*.amazonaws.com/id/*");
        assert!(eks.matches("https://oidc.eks.us-west-2.amazonaws.com/id/B02C93B6A2D30341AD01E1B6D48164CB"));
        for miss in [
            "https://oidc.eks.us.west.2.amazonaws.com/id/B02C",
            "https://oidc.eks.us-west-2.amazonaws.com/id/B02C/extra",
            "https://oidc.eks..amazonaws.com/id/B02C",
            "https://oidc.eks.us-west-2.amazonaws.com/id/",
            "http://localhost?issuer=https://oidc.eks.us-west-2.amazonaws.com/id/B02C",
            "https://oidc.eks.us-west-2.amazonaws.com/id/B02C?x=1",
            "https://evil.example/https://oidc.eks.us-west-2.amazonaws.com/id/B02C",
        ] {
            assert!(!eks.matches(miss), "{miss}");
        }
        let aks = pattern("https://oidc.prod-aks.azure.com/*/*");
        assert!(aks.matches("https://oidc.prod-aks.azure.com/a1/b2"));
        assert!(!aks.matches("https://oidc.prod-aks.azure.com/a1/b2/"));
        assert!(!aks.matches("https://oidc.prod-aks.azure.com/a1"));
        let concrete = eks.for_issuer("https://oidc.eks.x.amazonaws.com/id/y");
        assert_eq!(concrete.url, "https://oidc.eks.x.amazonaws.com/id/y");
        assert!(!concrete.wildcard && concrete.kind == eks.kind);
        // An unverified `iss` built to make a backtracking matcher take exponential time.
        let gke = pattern("https://*-*-*-*-*.example.com/*");
        let hostile = format!("https://{}.example.org/x", "a-".repeat(3000));
        let started = std::time::Instant::now();
        assert!(!gke.matches(&hostile));
        assert!(gke.matches("https://a-b-c-d-e.example.com/x"));
        assert!(
            !gke.matches("https://a-b-c-d.example.com/x"),
            "each * takes at least one byte"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_millis(200),
            "{:?}",
            started.elapsed()
        );
    }
}
