use serde::Deserialize;

use crate::{ConfigError, DEFAULT_CLIENT_ID};

/// Every issuer kind the CA understands. Each kind has one module in `keyless_ca::identity` that
/// maps its tokens to a certificate identity; matching on this enum is exhaustive everywhere, so a
/// new kind cannot be half-added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IssuerKind {
    /// People: the `email` claim, which must be verified, becomes an rfc822Name SAN.
    Email,
    /// GitHub Actions workflows: `job_workflow_ref` becomes a URI SAN, the run's facts extensions.
    GithubWorkflow,
    /// GitLab CI pipelines (gitlab.com or self-managed: URLs use the issuer's own host).
    GitlabPipeline,
    /// Buildkite jobs.
    BuildkiteJob,
    /// Codefresh workflows.
    CodefreshWorkflow,
    /// Chainguard identities: the verified email if there is one, else `sub`.
    ChainguardIdentity,
    /// Kubernetes service accounts.
    Kubernetes,
    /// SPIFFE workloads: `sub` is a SPIFFE ID in the configured trust domain.
    Spiffe,
    /// URI subjects under the configured subject domain.
    Uri,
    /// Usernames: an OtherName SAN `sub!subject_domain`.
    Username,
    /// Any CI system described by templates (Fulcio's `CIIssuerMetadata`).
    CiProvider,
}

/// A `ci-provider` description: defaults, the SAN template, and one template per extension field
/// (keyed by the field's folded name, e.g. `buildsigneruri`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiProvider {
    /// The provider's name (the key in `CIIssuerMetadata`).
    pub name: String,
    /// Values a claim of the same name overrides.
    pub defaults: std::collections::BTreeMap<String, String>,
    /// The URI SAN.
    pub san: crate::template::Template,
    /// Extension field → template.
    pub extensions: Vec<(String, crate::template::Template)>,
}

/// Every kind, for exhaustive tests and messages.
pub const ALL_KINDS: &[IssuerKind] = &[
    IssuerKind::Email,
    IssuerKind::GithubWorkflow,
    IssuerKind::GitlabPipeline,
    IssuerKind::BuildkiteJob,
    IssuerKind::CodefreshWorkflow,
    IssuerKind::ChainguardIdentity,
    IssuerKind::Kubernetes,
    IssuerKind::Spiffe,
    IssuerKind::Uri,
    IssuerKind::Username,
    IssuerKind::CiProvider,
];

impl IssuerKind {
    /// The `type` string in configuration files (Fulcio's spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            IssuerKind::Email => "email",
            IssuerKind::GithubWorkflow => "github-workflow",
            IssuerKind::GitlabPipeline => "gitlab-pipeline",
            IssuerKind::BuildkiteJob => "buildkite-job",
            IssuerKind::CodefreshWorkflow => "codefresh-workflow",
            IssuerKind::ChainguardIdentity => "chainguard-identity",
            IssuerKind::Kubernetes => "kubernetes",
            IssuerKind::Spiffe => "spiffe",
            IssuerKind::Uri => "uri",
            IssuerKind::Username => "username",
            IssuerKind::CiProvider => "ci-provider",
        }
    }

    /// The claim whose value the proof of possession signs, advertised in `/api/v2/configuration`.
    pub fn default_challenge_claim(self) -> &'static str {
        match self {
            IssuerKind::Email => "email",
            IssuerKind::GithubWorkflow
            | IssuerKind::GitlabPipeline
            | IssuerKind::BuildkiteJob
            | IssuerKind::CodefreshWorkflow
            | IssuerKind::ChainguardIdentity
            | IssuerKind::Kubernetes
            | IssuerKind::Spiffe
            | IssuerKind::Uri
            | IssuerKind::Username
            | IssuerKind::CiProvider => "sub",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<IssuerKind, String> {
        if let Some(k) = ALL_KINDS.iter().find(|k| k.as_str() == s) {
            return Ok(*k);
        }
        Err(format!("unknown issuer type {s:?}"))
    }
}

/// One trusted OIDC issuer, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerConfig {
    /// The exact `iss` value tokens must carry.
    pub url: String,
    /// How tokens from this issuer become certificate identities.
    pub kind: IssuerKind,
    /// The audience the token's `aud` must contain.
    pub client_id: String,
    /// Email issuers only: accept tokens whose `email_verified` is absent or false.
    pub skip_email_verification: bool,
    /// Overrides the advertised challenge claim (the server always verifies the kind's name).
    pub challenge_claim: Option<String>,
    /// `uri` (with scheme) and `username` (without): the domain subjects must belong to.
    pub subject_domain: Option<String>,
    /// `spiffe`: the trust domain SPIFFE IDs must be in.
    pub spiffe_trust_domain: Option<String>,
    /// Email issuers only: a JSONPath (`$.a.b` or `$['a']['b']`) to the real issuer inside a
    /// federated token (Dex: `$.federated_claims.connector_id`); it becomes the certificate's
    /// issuer extensions instead of `iss`.
    pub issuer_claim: Option<String>,
    /// Claim policy (allow/deny rules) applied after the token verifies.
    pub policy: crate::Policy,
    /// Per-issuer verification settings.
    pub options: IssuerOptions,
    /// `ci-provider` issuers: the provider's templates.
    pub ci_provider: Option<std::sync::Arc<CiProvider>>,
    /// `url` is a pattern (Fulcio's MetaIssuers): each `*` matches one run of `[-_a-zA-Z0-9]`,
    /// the whole URL anchored. A matching token's issuer gets this configuration.
    pub wildcard: bool,
}

/// Per-issuer verification settings beyond Fulcio's.
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
    /// Email issuers only: also accept a proof of possession signed over the token's `sub`
    /// (what `@sigstore/cli` 0.8 sends for issuers it does not know). Off by default: a proof
    /// over `sub` is replayable across every email that one subject may hold.
    pub allow_sub_challenge: bool,
}

/// JWS algorithms the CA accepts at all.
pub const TOKEN_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

impl IssuerConfig {
    /// An exact issuer of `kind` with every setting at its default (audience `sigstore`).
    pub fn new(url: impl Into<String>, kind: IssuerKind) -> IssuerConfig {
        IssuerConfig {
            url: url.into(),
            kind,
            client_id: DEFAULT_CLIENT_ID.to_string(),
            skip_email_verification: false,
            challenge_claim: None,
            subject_domain: None,
            spiffe_trust_domain: None,
            issuer_claim: None,
            policy: crate::Policy::default(),
            options: IssuerOptions::default(),
            ci_provider: None,
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

impl IssuerConfig {
    /// The claim advertised as the proof-of-possession challenge.
    pub fn challenge_claim(&self) -> &str {
        self.challenge_claim
            .as_deref()
            .unwrap_or(self.kind.default_challenge_claim())
    }
}

/// The native `issuers:` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIssuer {
    url: String,
    #[serde(rename = "type")]
    kind: String,
    client_id: Option<String>,
    #[serde(default)]
    skip_email_verification: bool,
    challenge_claim: Option<String>,
    subject_domain: Option<String>,
    spiffe_trust_domain: Option<String>,
    issuer_claim: Option<String>,
    policy: Option<crate::policy::RawPolicy>,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default)]
    algorithms: Vec<String>,
    max_token_age: Option<String>,
    ca_cert: Option<String>,
    rate_limits: Option<crate::ops::RawRateLimits>,
    #[serde(default)]
    allow_sub_challenge: bool,
}

/// A CA bundle must hold at least one PEM certificate.
pub(crate) fn check_pem(pem: &str) -> Result<(), String> {
    if pem.contains("-----BEGIN CERTIFICATE-----") && pem.contains("-----END CERTIFICATE-----") {
        Ok(())
    } else {
        Err("is not a PEM certificate bundle".into())
    }
}

impl RawIssuer {
    pub(crate) fn validate(self, base: &std::path::Path) -> Result<IssuerConfig, ConfigError> {
        let fields = Fields {
            url: self.url,
            kind: self.kind,
            client_id: self.client_id,
            skip_email_verification: self.skip_email_verification,
            challenge_claim: self.challenge_claim,
            subject_domain: self.subject_domain,
            spiffe_trust_domain: self.spiffe_trust_domain,
            issuer_claim: self.issuer_claim,
        };
        let mut issuer = build(fields, &Keys::NATIVE)?;
        if let Some(p) = self.policy {
            issuer.policy = p.validate()?;
        }
        if self.audiences.iter().any(String::is_empty) {
            return Err(ConfigError::rule("audiences", "must not contain an empty audience"));
        }
        issuer.options.extra_audiences = self.audiences;
        for (i, a) in self.algorithms.iter().enumerate() {
            if !TOKEN_ALGORITHMS.contains(&a.as_str()) {
                return Err(ConfigError::rule(
                    format!("algorithms[{i}]"),
                    format!("{a:?} is not one of {TOKEN_ALGORITHMS:?}"),
                ));
            }
        }
        issuer.options.algorithms = self.algorithms;
        if let Some(age) = self.max_token_age {
            issuer.options.max_token_age =
                Some(crate::parse_duration(&age).map_err(|e| ConfigError::rule("max_token_age", e))?);
        }
        if let Some(path) = self.ca_cert {
            let pem = std::fs::read_to_string(base.join(&path))
                .map_err(|e| ConfigError::rule("ca_cert", format!("cannot read {path}: {e}")))?;
            check_pem(&pem).map_err(|e| ConfigError::rule("ca_cert", e))?;
            issuer.options.ca_cert_pem = Some(pem);
        }
        if let Some(r) = self.rate_limits {
            issuer.options.rate_limits = r.validate("rate_limits")?;
        }
        if self.allow_sub_challenge && issuer.kind != IssuerKind::Email {
            return Err(ConfigError::rule(
                "allow_sub_challenge",
                format!("applies to email issuers only, not {}", issuer.kind.as_str()),
            ));
        }
        issuer.options.allow_sub_challenge = self.allow_sub_challenge;
        Ok(issuer)
    }
}

/// An issuer's settings before validation, from either file format.
pub(crate) struct Fields {
    pub(crate) url: String,
    pub(crate) kind: String,
    pub(crate) client_id: Option<String>,
    pub(crate) skip_email_verification: bool,
    pub(crate) challenge_claim: Option<String>,
    pub(crate) subject_domain: Option<String>,
    pub(crate) spiffe_trust_domain: Option<String>,
    pub(crate) issuer_claim: Option<String>,
}

/// How each format spells its keys, for error paths.
pub(crate) struct Keys {
    pub(crate) url: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) subject_domain: &'static str,
    pub(crate) spiffe_trust_domain: &'static str,
    pub(crate) issuer_claim: &'static str,
}

impl Keys {
    pub(crate) const NATIVE: Keys = Keys {
        url: "url",
        kind: "type",
        subject_domain: "subject_domain",
        spiffe_trust_domain: "spiffe_trust_domain",
        issuer_claim: "issuer_claim",
    };
    pub(crate) const FULCIO: Keys = Keys {
        url: "IssuerURL",
        kind: "Type",
        subject_domain: "SubjectDomain",
        spiffe_trust_domain: "SPIFFETrustDomain",
        issuer_claim: "IssuerClaim",
    };
}

/// Shared by the native list and Fulcio's file, so both follow the same rules.
pub(crate) fn build(f: Fields, keys: &Keys) -> Result<IssuerConfig, ConfigError> {
    let wildcard = f.url.contains('*');
    let issuer = check_issuer_url(&f.url.replace('*', "0")).map_err(|e| ConfigError::rule(keys.url, e))?;
    let kind = IssuerKind::parse(&f.kind).map_err(|e| ConfigError::rule(keys.kind, e))?;
    if wildcard && kind == IssuerKind::Spiffe {
        return Err(ConfigError::rule(
            keys.kind,
            "spiffe issuers cannot be meta (wildcard) issuers",
        ));
    }
    if f.skip_email_verification && kind != IssuerKind::Email {
        return Err(ConfigError::rule(
            "skip_email_verification",
            "applies only to issuers of type email",
        ));
    }
    if let Some(path) = &f.issuer_claim {
        if kind != IssuerKind::Email {
            return Err(ConfigError::rule(
                keys.issuer_claim,
                "applies only to issuers of type email",
            ));
        }
        json_path(path).map_err(|e| ConfigError::rule(keys.issuer_claim, e))?;
    }
    // The advertised challenge claim must be the one the proof of possession is verified over.
    if let Some(c) = &f.challenge_claim
        && c != kind.default_challenge_claim()
    {
        return Err(ConfigError::rule(
            "challenge_claim",
            format!(
                "{} issuers verify the proof of possession over {:?}, not {c:?}",
                kind.as_str(),
                kind.default_challenge_claim()
            ),
        ));
    }
    let client_id = f.client_id.unwrap_or_else(|| DEFAULT_CLIENT_ID.to_string());
    if client_id.is_empty() {
        return Err(ConfigError::rule("client_id", "must not be empty"));
    }
    match kind {
        IssuerKind::Spiffe => {
            let td = f
                .spiffe_trust_domain
                .as_deref()
                .ok_or_else(|| ConfigError::rule(keys.spiffe_trust_domain, "is required for spiffe issuers"))?;
            if !valid_trust_domain(td) {
                return Err(ConfigError::rule(
                    keys.spiffe_trust_domain,
                    format!("{td:?} is not a SPIFFE trust domain"),
                ));
            }
        }
        IssuerKind::Uri | IssuerKind::Username => {
            let d = f.subject_domain.as_deref().ok_or_else(|| {
                ConfigError::rule(
                    keys.subject_domain,
                    format!("is required for {} issuers", kind.as_str()),
                )
            })?;
            let host = if kind == IssuerKind::Uri {
                let u = url::Url::parse(d).map_err(|_| {
                    ConfigError::rule(
                        keys.subject_domain,
                        format!("{d:?} must be a URL with a scheme for uri issuers"),
                    )
                })?;
                if u.scheme() != issuer.scheme() {
                    return Err(ConfigError::rule(
                        keys.subject_domain,
                        "must have the issuer URL's scheme",
                    ));
                }
                u.host_str().unwrap_or_default().to_string()
            } else {
                if d.contains("://") {
                    return Err(ConfigError::rule(
                        keys.subject_domain,
                        "must not have a scheme for username issuers",
                    ));
                }
                d.to_string()
            };
            if !same_registrable_domain(&host, issuer.host_str().unwrap_or_default()) {
                return Err(ConfigError::rule(
                    keys.subject_domain,
                    format!("{host:?} must equal the issuer's host or share its last two labels"),
                ));
            }
        }
        _ => {
            if f.subject_domain.is_some() || f.spiffe_trust_domain.is_some() {
                return Err(ConfigError::rule(
                    keys.subject_domain,
                    "subject_domain and spiffe_trust_domain apply only to uri, username and spiffe issuers",
                ));
            }
        }
    }
    Ok(IssuerConfig {
        url: f.url,
        kind,
        client_id,
        skip_email_verification: f.skip_email_verification,
        challenge_claim: f.challenge_claim,
        subject_domain: f.subject_domain,
        spiffe_trust_domain: f.spiffe_trust_domain,
        issuer_claim: f.issuer_claim,
        policy: crate::Policy::default(),
        options: IssuerOptions::default(),
        ci_provider: None,
        wildcard,
    })
}

/// Parses the JSONPath subset Fulcio's configs use: `$` then `.name` or `['name']` steps.
pub fn json_path(path: &str) -> Result<Vec<String>, String> {
    let mut rest = path
        .strip_prefix('$')
        .ok_or_else(|| format!("{path:?} must start with $"))?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("['") {
            let end = r.find("']").ok_or_else(|| format!("{path:?}: unclosed ['...']"))?;
            steps.push(r[..end].to_string());
            rest = &r[end + 2..];
        } else if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            steps.push(r[..end].to_string());
            rest = &r[end..];
        } else {
            return Err(format!(
                "{path:?}: expected .name or ['name'] after {:?}",
                &path[..path.len() - rest.len()]
            ));
        }
        if steps.last().is_some_and(String::is_empty) {
            return Err(format!("{path:?}: empty step"));
        }
    }
    if steps.is_empty() {
        return Err(format!("{path:?} selects the whole token"));
    }
    Ok(steps)
}

/// A SPIFFE trust domain: lower-case letters, digits, `.`, `-`, `_`.
fn valid_trust_domain(td: &str) -> bool {
    !td.is_empty()
        && td
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c))
}

/// Fulcio's rule: equal hosts, or both with ≥ 2 labels sharing the last two.
fn same_registrable_domain(a: &str, b: &str) -> bool {
    let last_two = |h: &str| {
        let labels: Vec<&str> = h.split('.').collect();
        (labels.len() >= 2).then(|| labels[labels.len() - 2..].join("."))
    };
    a == b || matches!((last_two(a), last_two(b)), (Some(x), Some(y)) if x == y)
}

/// Issuer URLs must be https; plain http is allowed only for loopback hosts (tests, development).
fn check_issuer_url(s: &str) -> Result<url::Url, String> {
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

    fn fields(url: &str, kind: &str, sd: Option<&str>, td: Option<&str>) -> Fields {
        Fields {
            url: url.into(),
            kind: kind.into(),
            client_id: None,
            skip_email_verification: false,
            challenge_claim: None,
            subject_domain: sd.map(Into::into),
            spiffe_trust_domain: td.map(Into::into),
            issuer_claim: None,
        }
    }

    #[test]
    fn json_paths() {
        assert_eq!(
            json_path("$.federated_claims.connector_id").unwrap(),
            ["federated_claims", "connector_id"]
        );
        assert_eq!(json_path("$['a.b']['c']").unwrap(), ["a.b", "c"]);
        assert!(json_path("federated_claims").is_err());
        assert!(json_path("$").is_err());
        assert!(json_path("$..x").is_err());
        let mut f = fields("https://dex.example.com", "github-workflow", None, None);
        f.issuer_claim = Some("$.x".into());
        assert!(
            build(f, &Keys::NATIVE)
                .unwrap_err()
                .to_string()
                .starts_with("issuer_claim:")
        );
    }

    #[test]
    fn kind_specific_rules() {
        let ok = |f| build(f, &Keys::NATIVE).map(|_| ()).map_err(|e| e.to_string());
        let mut f = fields("https://accounts.example.com", "email", None, None);
        f.challenge_claim = Some("sub".into());
        assert!(ok(f).unwrap_err().starts_with("challenge_claim:"));
        let mut f = fields("https://accounts.example.com", "email", None, None);
        f.challenge_claim = Some("email".into());
        assert!(ok(f).is_ok());
        assert!(ok(fields("https://spire.example.com", "spiffe", None, Some("example.com"))).is_ok());
        assert!(
            ok(fields("https://spire.example.com", "spiffe", None, None))
                .unwrap_err()
                .starts_with("spiffe_trust_domain:")
        );
        assert!(ok(fields("https://spire.example.com", "spiffe", None, Some("Ex ample"))).is_err());
        assert!(
            ok(fields(
                "https://accounts.example.com",
                "uri",
                Some("https://example.com"),
                None
            ))
            .is_ok()
        );
        assert!(
            ok(fields("https://accounts.example.com", "uri", Some("example.com"), None))
                .unwrap_err()
                .contains("scheme")
        );
        assert!(
            ok(fields(
                "https://accounts.example.com",
                "uri",
                Some("http://example.com"),
                None
            ))
            .is_err()
        );
        assert!(
            ok(fields(
                "https://accounts.example.com",
                "uri",
                Some("https://other.org"),
                None
            ))
            .unwrap_err()
            .contains("last two labels")
        );
        assert!(
            ok(fields(
                "https://accounts.example.com",
                "username",
                Some("example.com"),
                None
            ))
            .is_ok()
        );
        assert!(
            ok(fields(
                "https://accounts.example.com",
                "username",
                Some("https://example.com"),
                None
            ))
            .is_err()
        );
        assert!(
            ok(fields(
                "https://gitlab.example.com",
                "gitlab-pipeline",
                Some("example.com"),
                None
            ))
            .is_err()
        );
    }

    #[test]
    fn meta_patterns_are_anchored() {
        let eks = build(
            fields("https://oidc.eks.*.amazonaws.com/id/*", "kubernetes", None, None),
            &Keys::NATIVE,
        )
        .unwrap();
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
        let aks = build(
            fields("https://oidc.prod-aks.azure.com/*/*", "kubernetes", None, None),
            &Keys::NATIVE,
        )
        .unwrap();
        assert!(aks.matches("https://oidc.prod-aks.azure.com/a1/b2"));
        assert!(!aks.matches("https://oidc.prod-aks.azure.com/a1/b2/"));
        assert!(!aks.matches("https://oidc.prod-aks.azure.com/a1"));
        assert_eq!(
            eks.for_issuer("https://oidc.eks.x.amazonaws.com/id/y").url,
            "https://oidc.eks.x.amazonaws.com/id/y"
        );
        // An unverified `iss` built to make a backtracking matcher take exponential time.
        let gke = build(
            fields("https://*-*-*-*-*.example.com/*", "kubernetes", None, None),
            &Keys::NATIVE,
        )
        .unwrap();
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
        assert!(
            build(
                fields("https://spire.*.example.com", "spiffe", None, Some("example.com")),
                &Keys::NATIVE
            )
            .is_err()
        );
    }

    #[test]
    fn kinds() {
        assert_eq!(IssuerKind::parse("email"), Ok(IssuerKind::Email));
        assert_eq!(
            IssuerKind::parse("gitlab"),
            Err(r#"unknown issuer type "gitlab""#.into())
        );
        for k in ALL_KINDS {
            assert_eq!(IssuerKind::parse(k.as_str()), Ok(*k));
        }
    }
}
