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
}

/// Fulcio issuer types that exist but are not implemented yet; named so the error is honest.
const NOT_YET_SUPPORTED: &[&str] = &[
    "gitlab-pipeline",
    "buildkite-job",
    "codefresh-workflow",
    "chainguard-identity",
    "kubernetes",
    "spiffe",
    "uri",
    "username",
    "ci-provider",
];

impl IssuerKind {
    /// The `type` string in configuration files (Fulcio's spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            IssuerKind::Email => "email",
            IssuerKind::GithubWorkflow => "github-workflow",
        }
    }

    /// The claim whose value the proof of possession signs, advertised in `/api/v2/configuration`.
    pub fn default_challenge_claim(self) -> &'static str {
        match self {
            IssuerKind::Email => "email",
            IssuerKind::GithubWorkflow => "sub",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<IssuerKind, String> {
        match s {
            "email" => Ok(IssuerKind::Email),
            "github-workflow" => Ok(IssuerKind::GithubWorkflow),
            s if NOT_YET_SUPPORTED.contains(&s) => Err(format!(
                "issuer type {s:?} is not supported yet (supported: email, github-workflow)"
            )),
            s => Err(format!("unknown issuer type {s:?}")),
        }
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
}

impl RawIssuer {
    pub(crate) fn validate(self) -> Result<IssuerConfig, ConfigError> {
        build(
            self.url,
            &self.kind,
            self.client_id,
            self.skip_email_verification,
            self.challenge_claim,
            "url",
            "type",
        )
    }
}

/// Shared by the native list and Fulcio's file, so both follow the same rules.
pub(crate) fn build(
    url: String,
    kind: &str,
    client_id: Option<String>,
    skip_email_verification: bool,
    challenge_claim: Option<String>,
    url_key: &str,
    type_key: &str,
) -> Result<IssuerConfig, ConfigError> {
    check_issuer_url(&url).map_err(|e| ConfigError::rule(url_key, e))?;
    let kind = IssuerKind::parse(kind).map_err(|e| ConfigError::rule(type_key, e))?;
    if skip_email_verification && kind != IssuerKind::Email {
        return Err(ConfigError::rule(
            "skip_email_verification",
            "applies only to issuers of type email",
        ));
    }
    let client_id = client_id.unwrap_or_else(|| DEFAULT_CLIENT_ID.to_string());
    if client_id.is_empty() {
        return Err(ConfigError::rule("client_id", "must not be empty"));
    }
    Ok(IssuerConfig {
        url,
        kind,
        client_id,
        skip_email_verification,
        challenge_claim,
    })
}

/// Issuer URLs must be https; plain http is allowed only for loopback hosts (tests, development).
fn check_issuer_url(s: &str) -> Result<(), String> {
    let u = url::Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!("{s:?}: an issuer URL has no query or fragment"));
    }
    match u.scheme() {
        "https" => Ok(()),
        "http" if is_loopback_url(&u) => Ok(()),
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

    #[test]
    fn kinds() {
        assert_eq!(IssuerKind::parse("email"), Ok(IssuerKind::Email));
        assert_eq!(
            IssuerKind::parse("gitlab"),
            Err(r#"unknown issuer type "gitlab""#.into())
        );
        assert!(
            IssuerKind::parse("kubernetes")
                .unwrap_err()
                .contains("not supported yet")
        );
        for k in [IssuerKind::Email, IssuerKind::GithubWorkflow] {
            assert_eq!(IssuerKind::parse(k.as_str()), Ok(k));
        }
    }
}
