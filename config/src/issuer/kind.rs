//! Issuer kinds and the settings each kind owns.
//!
//! [`IssuerKind`] carries every kind-specific setting inside its variant, validated once at load, so
//! an identity module receives exactly its own settings and a kind cannot read (or be configured
//! with) another's. [`IssuerType`] is the bare name, for messages, metrics and exhaustive tests.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::template::Template;

/// The name of an issuer kind: the `type` string of configuration files, without settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IssuerType {
    /// `email`
    Email,
    /// `github-workflow`
    GithubWorkflow,
    /// `gitlab-pipeline`
    GitlabPipeline,
    /// `buildkite-job`
    BuildkiteJob,
    /// `codefresh-workflow`
    CodefreshWorkflow,
    /// `chainguard-identity`
    ChainguardIdentity,
    /// `kubernetes`
    Kubernetes,
    /// `spiffe`
    Spiffe,
    /// `uri`
    Uri,
    /// `username`
    Username,
    /// `ci-provider`
    CiProvider,
}

/// Every kind, for exhaustive tests and messages.
pub const ALL_KINDS: &[IssuerType] = &[
    IssuerType::Email,
    IssuerType::GithubWorkflow,
    IssuerType::GitlabPipeline,
    IssuerType::BuildkiteJob,
    IssuerType::CodefreshWorkflow,
    IssuerType::ChainguardIdentity,
    IssuerType::Kubernetes,
    IssuerType::Spiffe,
    IssuerType::Uri,
    IssuerType::Username,
    IssuerType::CiProvider,
];

impl IssuerType {
    /// The `type` string in configuration files (Fulcio's spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            IssuerType::Email => "email",
            IssuerType::GithubWorkflow => "github-workflow",
            IssuerType::GitlabPipeline => "gitlab-pipeline",
            IssuerType::BuildkiteJob => "buildkite-job",
            IssuerType::CodefreshWorkflow => "codefresh-workflow",
            IssuerType::ChainguardIdentity => "chainguard-identity",
            IssuerType::Kubernetes => "kubernetes",
            IssuerType::Spiffe => "spiffe",
            IssuerType::Uri => "uri",
            IssuerType::Username => "username",
            IssuerType::CiProvider => "ci-provider",
        }
    }

    /// The claim whose value the proof of possession signs, advertised in `/api/v2/configuration`.
    pub fn default_challenge_claim(self) -> &'static str {
        match self {
            IssuerType::Email => "email",
            IssuerType::GithubWorkflow
            | IssuerType::GitlabPipeline
            | IssuerType::BuildkiteJob
            | IssuerType::CodefreshWorkflow
            | IssuerType::ChainguardIdentity
            | IssuerType::Kubernetes
            | IssuerType::Spiffe
            | IssuerType::Uri
            | IssuerType::Username
            | IssuerType::CiProvider => "sub",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<IssuerType, String> {
        ALL_KINDS
            .iter()
            .find(|k| k.as_str() == s)
            .copied()
            .ok_or_else(|| format!("unknown issuer type {s:?}"))
    }
}

/// How tokens from an issuer become certificate identities, with the settings that kind needs.
/// Each kind has one module in `keyless_ca::identity`; matching on this enum is exhaustive
/// everywhere, so a new kind cannot be half-added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerKind {
    /// People: the `email` claim, which must be verified, becomes an rfc822Name SAN.
    Email(EmailSettings),
    /// GitHub Actions workflows: `job_workflow_ref` becomes a URI SAN, the run's facts extensions.
    GithubWorkflow,
    /// GitLab CI pipelines (gitlab.com or self-managed: URLs use the issuer's own host unless
    /// [`GitlabSettings::base_url`] says otherwise).
    GitlabPipeline(GitlabSettings),
    /// Buildkite jobs.
    BuildkiteJob,
    /// Codefresh workflows.
    CodefreshWorkflow,
    /// Chainguard identities: the verified email if there is one, else `sub`.
    ChainguardIdentity,
    /// Kubernetes service accounts.
    Kubernetes,
    /// SPIFFE workloads: `sub` is a SPIFFE ID in the configured trust domain.
    Spiffe(SpiffeSettings),
    /// URI subjects under the configured subject domain.
    Uri(UriSettings),
    /// Usernames: an OtherName SAN `sub!subject_domain`.
    Username(UsernameSettings),
    /// Any CI system described by templates (Fulcio's `CIIssuerMetadata`).
    CiProvider(Arc<CiProvider>),
}

impl IssuerKind {
    /// The kind's name.
    pub fn issuer_type(&self) -> IssuerType {
        match self {
            IssuerKind::Email(_) => IssuerType::Email,
            IssuerKind::GithubWorkflow => IssuerType::GithubWorkflow,
            IssuerKind::GitlabPipeline(_) => IssuerType::GitlabPipeline,
            IssuerKind::BuildkiteJob => IssuerType::BuildkiteJob,
            IssuerKind::CodefreshWorkflow => IssuerType::CodefreshWorkflow,
            IssuerKind::ChainguardIdentity => IssuerType::ChainguardIdentity,
            IssuerKind::Kubernetes => IssuerType::Kubernetes,
            IssuerKind::Spiffe(_) => IssuerType::Spiffe,
            IssuerKind::Uri(_) => IssuerType::Uri,
            IssuerKind::Username(_) => IssuerType::Username,
            IssuerKind::CiProvider(_) => IssuerType::CiProvider,
        }
    }

    /// The `type` string in configuration files (Fulcio's spelling).
    pub fn as_str(&self) -> &'static str {
        self.issuer_type().as_str()
    }

    /// See [`IssuerType::default_challenge_claim`].
    pub fn default_challenge_claim(&self) -> &'static str {
        self.issuer_type().default_challenge_claim()
    }

    /// `spiffeTrustDomain` as `/api/v2/configuration` advertises it.
    pub fn spiffe_trust_domain(&self) -> Option<&str> {
        match self {
            IssuerKind::Spiffe(s) => Some(s.trust_domain()),
            IssuerKind::Email(_)
            | IssuerKind::GithubWorkflow
            | IssuerKind::GitlabPipeline(_)
            | IssuerKind::BuildkiteJob
            | IssuerKind::CodefreshWorkflow
            | IssuerKind::ChainguardIdentity
            | IssuerKind::Kubernetes
            | IssuerKind::Uri(_)
            | IssuerKind::Username(_)
            | IssuerKind::CiProvider(_) => None,
        }
    }

    /// `subjectDomain` as `/api/v2/configuration` advertises it (as configured).
    pub fn subject_domain(&self) -> Option<&str> {
        match self {
            IssuerKind::Uri(s) => Some(s.subject_domain()),
            IssuerKind::Username(s) => Some(s.subject_domain()),
            IssuerKind::Email(_)
            | IssuerKind::GithubWorkflow
            | IssuerKind::GitlabPipeline(_)
            | IssuerKind::BuildkiteJob
            | IssuerKind::CodefreshWorkflow
            | IssuerKind::ChainguardIdentity
            | IssuerKind::Kubernetes
            | IssuerKind::Spiffe(_)
            | IssuerKind::CiProvider(_) => None,
        }
    }

    /// `skipEmailVerification` as `/api/v2/configuration` advertises it.
    pub fn skip_email_verification(&self) -> bool {
        matches!(self, IssuerKind::Email(s) if s.skip_email_verification)
    }
}

/// `email` settings. Every combination is valid, so the fields are public.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmailSettings {
    /// Accept tokens whose `email_verified` is absent or false.
    pub skip_email_verification: bool,
    /// Where the real issuer is inside a federated token (Dex: `$.federated_claims.connector_id`);
    /// it becomes the certificate's issuer extensions instead of `iss`.
    pub issuer_claim: Option<JsonPath>,
    /// Also accept a proof of possession signed over the token's `sub` (what `@sigstore/cli` 0.8
    /// sends for issuers it does not know). Off by default: a proof over `sub` is replayable across
    /// every email that one subject may hold.
    pub allow_sub_challenge: bool,
}

/// `gitlab-pipeline` settings: where the repository, owner and job URLs point.
///
/// Fulcio writes `https://gitlab.com/...` into those URLs even for a self-managed GitLab, so its
/// certificates point at the wrong host (sigstore/fulcio#1325). Keyless CA uses the issuer's own
/// `scheme://host` unless `base_url` is set; `base_url: https://gitlab.com` gives Fulcio's values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitlabSettings {
    base_url: Option<String>,
}

impl GitlabSettings {
    /// `base_url`, if given, must be an absolute http(s) URL with a host and without userinfo,
    /// query or fragment.
    pub fn new(base_url: Option<&str>) -> Result<GitlabSettings, String> {
        let Some(base) = base_url else {
            return Ok(GitlabSettings::default());
        };
        let u = url::Url::parse(base).map_err(|e| format!("{base:?} is not a URL: {e}"))?;
        let plain = matches!(u.scheme(), "https" | "http")
            && u.host_str().is_some_and(|h| !h.is_empty())
            && u.username().is_empty()
            && u.password().is_none()
            && u.query().is_none()
            && u.fragment().is_none();
        if !plain {
            return Err(format!(
                "{base:?} must be an http(s) URL with a host and no userinfo, query or fragment"
            ));
        }
        Ok(GitlabSettings {
            base_url: Some(base.to_string()),
        })
    }

    /// The configured base (unset: the issuer's own `scheme://host`).
    pub fn base_url(&self) -> Option<&str> {
        self.base_url.as_deref()
    }
}

/// `spiffe` settings: the trust domain SPIFFE IDs must be in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeSettings {
    trust_domain: String,
}

impl SpiffeSettings {
    /// A SPIFFE trust domain: lower-case letters, digits, `.`, `-`, `_`.
    pub fn new(trust_domain: &str) -> Result<SpiffeSettings, String> {
        let valid = !trust_domain.is_empty()
            && trust_domain
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c));
        if !valid {
            return Err(format!("{trust_domain:?} is not a SPIFFE trust domain"));
        }
        Ok(SpiffeSettings {
            trust_domain: trust_domain.to_string(),
        })
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }
}

/// `uri` settings: the subject domain (a URL with a scheme), parsed once at load; subjects must
/// have its scheme and host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriSettings {
    subject_domain: String,
    scheme: String,
    host: String,
}

impl UriSettings {
    /// Checked against the issuer URL by the loader (same scheme, same registrable domain).
    pub(crate) fn new(subject_domain: &str, parsed: &url::Url) -> Option<UriSettings> {
        Some(UriSettings {
            subject_domain: subject_domain.to_string(),
            scheme: parsed.scheme().to_string(),
            host: parsed.host_str().filter(|h| !h.is_empty())?.to_string(),
        })
    }

    /// The subject domain as configured (e.g. `https://example.com`).
    pub fn subject_domain(&self) -> &str {
        &self.subject_domain
    }

    /// Its scheme, as parsed (lower case).
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// Its host, as parsed (never empty).
    pub fn host(&self) -> &str {
        &self.host
    }
}

/// `username` settings: the domain after `!` in the OtherName SAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsernameSettings {
    subject_domain: String,
}

impl UsernameSettings {
    pub(crate) fn new(subject_domain: &str) -> UsernameSettings {
        UsernameSettings {
            subject_domain: subject_domain.to_string(),
        }
    }

    /// The subject domain (a host, without scheme).
    pub fn subject_domain(&self) -> &str {
        &self.subject_domain
    }
}

/// A `ci-provider` description: defaults, the SAN template, and one template per extension field
/// (keyed by the field's folded name, e.g. `buildsigneruri`). Built only by the loader.
///
/// Fulcio loads an issuer whose provider has an empty SAN template, or names no provider in
/// `CIIssuerMetadata`, and then refuses each of its tokens; so does Keyless CA (with a warning at
/// load): such a provider's SAN is the reason it cannot render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiProvider {
    name: String,
    defaults: BTreeMap<String, String>,
    san: Result<Template, String>,
    extensions: Vec<(String, Template)>,
}

impl CiProvider {
    pub(crate) fn new(
        name: String,
        defaults: BTreeMap<String, String>,
        san: Result<Template, String>,
        extensions: Vec<(String, Template)>,
    ) -> CiProvider {
        CiProvider {
            name,
            defaults,
            san,
            extensions,
        }
    }

    /// The provider's name (the key in `CIIssuerMetadata`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Values a claim of the same name overrides.
    pub fn defaults(&self) -> &BTreeMap<String, String> {
        &self.defaults
    }

    /// The URI SAN's template, or why this provider has none (every token is refused).
    pub fn san(&self) -> Result<&Template, &str> {
        self.san.as_ref().map_err(String::as_str)
    }

    /// Extension field → template.
    pub fn extensions(&self) -> &[(String, Template)] {
        &self.extensions
    }
}

/// The JSONPath subset Fulcio's configs use: `$` then `.name` or `['name']` steps, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    steps: Vec<String>,
}

impl JsonPath {
    /// Parses `path`; the error says what is wrong with it.
    pub fn parse(path: &str) -> Result<JsonPath, String> {
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
        Ok(JsonPath {
            text: path.to_string(),
            steps,
        })
    }

    /// The path as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The member names it follows, outermost first (never empty).
    pub fn steps(&self) -> &[String] {
        &self.steps
    }

    /// The value at this path in `claims`, if every step exists.
    pub fn select<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        let (first, rest) = self.steps.split_first()?;
        rest.iter().try_fold(claims.get(first)?, |v, step| v.get(step))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(IssuerType::parse("email"), Ok(IssuerType::Email));
        assert_eq!(
            IssuerType::parse("gitlab"),
            Err(r#"unknown issuer type "gitlab""#.into())
        );
        for k in ALL_KINDS {
            assert_eq!(IssuerType::parse(k.as_str()), Ok(*k));
        }
    }

    #[test]
    fn json_paths() {
        let p = JsonPath::parse("$.federated_claims.connector_id").unwrap();
        assert_eq!(p.steps(), ["federated_claims", "connector_id"]);
        assert_eq!(p.as_str(), "$.federated_claims.connector_id");
        assert_eq!(JsonPath::parse("$['a.b']['c']").unwrap().steps(), ["a.b", "c"]);
        assert!(JsonPath::parse("federated_claims").is_err());
        assert!(JsonPath::parse("$").is_err());
        assert!(JsonPath::parse("$..x").is_err());
        assert!(JsonPath::parse("$['a'").unwrap_err().contains("unclosed"));
        let claims = serde_json::json!({"a": {"b.c": {"d": 1}}, "x": "y"});
        let claims = claims.as_object().unwrap();
        let at = |p: &str| JsonPath::parse(p).unwrap().select(claims).cloned();
        assert_eq!(at("$.a['b.c'].d"), Some(serde_json::json!(1)));
        assert_eq!(at("$.x"), Some(serde_json::json!("y")));
        assert_eq!(at("$.x.y"), None);
        assert_eq!(at("$.missing"), None);
    }

    #[test]
    fn trust_domains() {
        assert_eq!(
            SpiffeSettings::new("example.org").unwrap().trust_domain(),
            "example.org"
        );
        for bad in ["", "Example.org", "ex ample", "spiffe://example.org"] {
            assert!(SpiffeSettings::new(bad).is_err(), "{bad:?}");
        }
    }

    /// The advertised settings come only from the variant that owns them.
    #[test]
    fn advertised_settings_belong_to_their_kind() {
        let email = IssuerKind::Email(EmailSettings {
            skip_email_verification: true,
            ..EmailSettings::default()
        });
        assert!(email.skip_email_verification());
        assert_eq!((email.subject_domain(), email.spiffe_trust_domain()), (None, None));
        let spiffe = IssuerKind::Spiffe(SpiffeSettings::new("example.org").unwrap());
        assert_eq!(spiffe.spiffe_trust_domain(), Some("example.org"));
        assert_eq!(spiffe.subject_domain(), None);
        assert!(!spiffe.skip_email_verification());
        let user = IssuerKind::Username(UsernameSettings::new("example.org"));
        assert_eq!(user.subject_domain(), Some("example.org"));
        assert_eq!(user.spiffe_trust_domain(), None);
        let uri = IssuerKind::Uri(
            UriSettings::new("https://Example.org", &url::Url::parse("https://Example.org").unwrap()).unwrap(),
        );
        assert_eq!(uri.subject_domain(), Some("https://Example.org"));
        let IssuerKind::Uri(s) = &uri else { unreachable!() };
        assert_eq!((s.scheme(), s.host()), ("https", "example.org"));
        assert!(
            UriSettings::new(
                "mailto:a@example.org",
                &url::Url::parse("mailto:a@example.org").unwrap()
            )
            .is_none()
        );
        for k in ALL_KINDS {
            assert_eq!(k.as_str(), IssuerType::parse(k.as_str()).unwrap().as_str());
        }
        assert_eq!(uri.issuer_type(), IssuerType::Uri);
        assert_eq!(email.default_challenge_claim(), "email");
        assert_eq!(uri.default_challenge_claim(), "sub");
    }
}
