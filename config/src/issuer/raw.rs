//! Issuer entries as written (the native `issuers:` list and Fulcio's file share [`build`]), and
//! their validation into an [`IssuerConfig`] whose kind carries its own settings.

use std::sync::Arc;

use serde::Deserialize;

use super::kind::{
    CiProvider, EmailSettings, GitlabSettings, IssuerKind, IssuerType, JsonPath, SpiffeSettings, UriSettings,
    UsernameSettings,
};
use super::{
    FULCIO_CLUSTER_CA_FILE, IN_CLUSTER_ISSUER, InCluster, IssuerConfig, IssuerOptions, POD_CA_FILE, POD_TOKEN_FILE,
    TOKEN_ALGORITHMS, check_issuer_url,
};
use crate::{ConfigError, DEFAULT_CLIENT_ID};

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
    gitlab_base_url: Option<String>,
    #[serde(default)]
    kubernetes_in_cluster: bool,
    token_file: Option<String>,
    #[serde(default)]
    insecure_plain_http: bool,
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
            gitlab_base_url: self.gitlab_base_url,
        };
        // The native list has no place for templates: a ci-provider issuer here could never map a
        // token, so it is refused now rather than failing every request.
        let no_templates = || {
            Err(ConfigError::rule(
                Keys::NATIVE.kind,
                "ci-provider issuers need templates, which only an issuers_file holds \
                 (Fulcio's CIIssuerMetadata, named by the issuer's CIProvider)",
            ))
        };
        if self.insecure_plain_http && !fields.url.starts_with("http://") {
            return Err(ConfigError::rule(
                "insecure_plain_http",
                "applies to http:// issuer URLs only (an https issuer never needs it)",
            ));
        }
        let mut issuer = build_with(fields, &Keys::NATIVE, no_templates, self.insecure_plain_http)?;
        issuer.options.insecure_plain_http = self.insecure_plain_http;
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
        let explicit_ca = self.ca_cert.is_some();
        if let Some(path) = self.ca_cert {
            let pem = std::fs::read_to_string(base.join(&path))
                .map_err(|e| ConfigError::rule("ca_cert", format!("cannot read {path}: {e}")))?;
            check_pem(&pem).map_err(|e| ConfigError::rule("ca_cert", e))?;
            issuer.options.ca_cert_pem = Some(pem);
        }
        if self.kubernetes_in_cluster {
            issuer.options.in_cluster = Some(in_cluster(&issuer, self.token_file.as_deref(), explicit_ca, base)?);
        } else if self.token_file.is_some() {
            return Err(ConfigError::rule(
                "token_file",
                "applies only with kubernetes_in_cluster: true",
            ));
        }
        if let Some(r) = self.rate_limits {
            issuer.options.rate_limits = r.validate("rate_limits")?;
        }
        if let IssuerKind::Email(settings) = &mut issuer.kind {
            settings.allow_sub_challenge = self.allow_sub_challenge;
        } else if self.allow_sub_challenge {
            return Err(ConfigError::rule(
                "allow_sub_challenge",
                format!("applies to email issuers only, not {}", issuer.kind.as_str()),
            ));
        }
        Ok(issuer)
    }
}

/// `kubernetes_in_cluster: true`: the service-account token goes to one exact https origin only.
fn in_cluster(
    issuer: &IssuerConfig,
    token_file: Option<&str>,
    explicit_ca: bool,
    base: &std::path::Path,
) -> Result<InCluster, ConfigError> {
    let key = "kubernetes_in_cluster";
    if issuer.kind != IssuerKind::Kubernetes {
        return Err(ConfigError::rule(
            key,
            format!("applies to kubernetes issuers only, not {}", issuer.kind.as_str()),
        ));
    }
    if issuer.wildcard {
        return Err(ConfigError::rule(
            key,
            "needs an exact issuer URL: the service-account token is sent to one host only",
        ));
    }
    if !issuer.url.starts_with("https://") {
        return Err(ConfigError::rule(
            key,
            "needs an https issuer URL: the service-account token never travels in clear",
        ));
    }
    let token_file = match token_file {
        Some("") => return Err(ConfigError::rule("token_file", "must not be empty")),
        Some(p) => crate::resolve(base, p),
        None => POD_TOKEN_FILE.into(),
    };
    Ok(InCluster {
        token_file,
        ca_files: if explicit_ca {
            Vec::new()
        } else {
            vec![POD_CA_FILE.into()]
        },
    })
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
    pub(crate) gitlab_base_url: Option<String>,
}

/// How each format spells its keys, for error paths.
pub(crate) struct Keys {
    pub(crate) url: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) subject_domain: &'static str,
    pub(crate) spiffe_trust_domain: &'static str,
    pub(crate) issuer_claim: &'static str,
    pub(crate) gitlab_base_url: &'static str,
    /// Fulcio's file: Fulcio's implicit behaviours apply (the in-cluster issuer).
    pub(crate) fulcio: bool,
}

impl Keys {
    pub(crate) const NATIVE: Keys = Keys {
        url: "url",
        kind: "type",
        subject_domain: "subject_domain",
        spiffe_trust_domain: "spiffe_trust_domain",
        issuer_claim: "issuer_claim",
        gitlab_base_url: "gitlab_base_url",
        fulcio: false,
    };
    pub(crate) const FULCIO: Keys = Keys {
        url: "IssuerURL",
        kind: "Type",
        subject_domain: "SubjectDomain",
        spiffe_trust_domain: "SPIFFETrustDomain",
        issuer_claim: "IssuerClaim",
        gitlab_base_url: "GitlabBaseURL",
        fulcio: true,
    };
}

/// Shared by the native list and Fulcio's file, so both follow the same rules. `ci_provider` is
/// asked for the templates only when the kind is `ci-provider`, after every other rule passed;
/// its error names the configuration path, never a token's claim.
pub(crate) fn build(
    f: Fields,
    keys: &Keys,
    ci_provider: impl FnOnce() -> Result<Arc<CiProvider>, ConfigError>,
) -> Result<IssuerConfig, ConfigError> {
    build_with(f, keys, ci_provider, false)
}

/// [`build`], with plain `http` beyond loopback allowed when the operator opted in
/// (`insecure_plain_http`, native list only).
fn build_with(
    f: Fields,
    keys: &Keys,
    ci_provider: impl FnOnce() -> Result<Arc<CiProvider>, ConfigError>,
    insecure_plain_http: bool,
) -> Result<IssuerConfig, ConfigError> {
    let wildcard = f.url.contains('*');
    let probe = f.url.replace('*', "0");
    let checked = match url::Url::parse(&probe) {
        Ok(u) if insecure_plain_http && u.scheme() == "http" && u.query().is_none() && u.fragment().is_none() => Ok(u),
        _ => check_issuer_url(&probe),
    };
    let issuer = checked.map_err(|e| {
        let hint = if keys.fulcio {
            ""
        } else {
            " (or set insecure_plain_http: true)"
        };
        ConfigError::rule(keys.url, format!("{e}{hint}"))
    })?;
    let ty = IssuerType::parse(&f.kind).map_err(|e| ConfigError::rule(keys.kind, e))?;
    if wildcard && ty == IssuerType::Spiffe {
        return Err(ConfigError::rule(
            keys.kind,
            "spiffe issuers cannot be meta (wildcard) issuers",
        ));
    }
    if f.skip_email_verification && ty != IssuerType::Email {
        return Err(ConfigError::rule(
            "skip_email_verification",
            "applies only to issuers of type email",
        ));
    }
    let issuer_claim = match &f.issuer_claim {
        None => None,
        Some(_) if ty != IssuerType::Email => {
            return Err(ConfigError::rule(
                keys.issuer_claim,
                "applies only to issuers of type email",
            ));
        }
        Some(path) => Some(JsonPath::parse(path).map_err(|e| ConfigError::rule(keys.issuer_claim, e))?),
    };
    // The advertised challenge claim must be the one the proof of possession is verified over.
    if let Some(c) = &f.challenge_claim
        && c != ty.default_challenge_claim()
    {
        return Err(ConfigError::rule(
            "challenge_claim",
            format!(
                "{} issuers verify the proof of possession over {:?}, not {c:?}",
                ty.as_str(),
                ty.default_challenge_claim()
            ),
        ));
    }
    if f.gitlab_base_url.is_some() && ty != IssuerType::GitlabPipeline {
        return Err(ConfigError::rule(
            keys.gitlab_base_url,
            "applies only to issuers of type gitlab-pipeline",
        ));
    }
    let client_id = f.client_id.unwrap_or_else(|| DEFAULT_CLIENT_ID.to_string());
    if client_id.is_empty() {
        return Err(ConfigError::rule("client_id", "must not be empty"));
    }
    // Fulcio leniency kept: a spiffe issuer ignores a subject domain, and uri/username issuers
    // ignore a trust domain; every other kind refuses both.
    let no_domains = || {
        if f.subject_domain.is_some() || f.spiffe_trust_domain.is_some() {
            return Err(ConfigError::rule(
                keys.subject_domain,
                "subject_domain and spiffe_trust_domain apply only to uri, username and spiffe issuers",
            ));
        }
        Ok(())
    };
    let kind = match ty {
        IssuerType::Spiffe => {
            let td = f
                .spiffe_trust_domain
                .as_deref()
                .ok_or_else(|| ConfigError::rule(keys.spiffe_trust_domain, "is required for spiffe issuers"))?;
            IssuerKind::Spiffe(SpiffeSettings::new(td).map_err(|e| ConfigError::rule(keys.spiffe_trust_domain, e))?)
        }
        IssuerType::Uri | IssuerType::Username => subject_domain(ty, f.subject_domain.as_deref(), &issuer, keys)?,
        IssuerType::Email => {
            no_domains()?;
            IssuerKind::Email(EmailSettings {
                skip_email_verification: f.skip_email_verification,
                issuer_claim,
                allow_sub_challenge: false,
            })
        }
        IssuerType::CiProvider => {
            no_domains()?;
            IssuerKind::CiProvider(ci_provider()?)
        }
        IssuerType::GithubWorkflow => no_domains().map(|()| IssuerKind::GithubWorkflow)?,
        IssuerType::GitlabPipeline => {
            no_domains()?;
            IssuerKind::GitlabPipeline(
                GitlabSettings::new(f.gitlab_base_url.as_deref())
                    .map_err(|e| ConfigError::rule(keys.gitlab_base_url, e))?,
            )
        }
        IssuerType::BuildkiteJob => no_domains().map(|()| IssuerKind::BuildkiteJob)?,
        IssuerType::CodefreshWorkflow => no_domains().map(|()| IssuerKind::CodefreshWorkflow)?,
        IssuerType::ChainguardIdentity => no_domains().map(|()| IssuerKind::ChainguardIdentity)?,
        IssuerType::Kubernetes => no_domains().map(|()| IssuerKind::Kubernetes)?,
    };
    // Fulcio reaches its own cluster's issuer with the pod's token and the cluster CA whenever
    // its file names it; an operator's file keeps working here without a new key.
    let in_cluster =
        (keys.fulcio && !wildcard && kind == IssuerKind::Kubernetes && f.url == IN_CLUSTER_ISSUER).then(|| InCluster {
            token_file: POD_TOKEN_FILE.into(),
            ca_files: vec![FULCIO_CLUSTER_CA_FILE.into(), POD_CA_FILE.into()],
        });
    Ok(IssuerConfig {
        url: f.url,
        kind,
        client_id,
        challenge_claim: f.challenge_claim,
        policy: crate::Policy::default(),
        options: IssuerOptions {
            in_cluster,
            ..IssuerOptions::default()
        },
        wildcard,
    })
}

/// The settings of a `uri` (subject domain with the issuer's scheme) or `username` (without a
/// scheme) issuer; either way under the issuer's registrable domain, as Fulcio requires.
fn subject_domain(ty: IssuerType, d: Option<&str>, issuer: &url::Url, keys: &Keys) -> Result<IssuerKind, ConfigError> {
    let d =
        d.ok_or_else(|| ConfigError::rule(keys.subject_domain, format!("is required for {} issuers", ty.as_str())))?;
    let (kind, host) = if ty == IssuerType::Uri {
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
        let host = u.host_str().unwrap_or_default().to_string();
        (UriSettings::new(d, &u).map(IssuerKind::Uri), host)
    } else {
        if d.contains("://") {
            return Err(ConfigError::rule(
                keys.subject_domain,
                "must not have a scheme for username issuers",
            ));
        }
        (Some(IssuerKind::Username(UsernameSettings::new(d))), d.to_string())
    };
    match kind {
        Some(kind) if same_registrable_domain(&host, issuer.host_str().unwrap_or_default()) => Ok(kind),
        _ => Err(ConfigError::rule(
            keys.subject_domain,
            format!("{host:?} must equal the issuer's host or share its last two labels"),
        )),
    }
}

/// Fulcio's rule: equal hosts, or both with ≥ 2 labels sharing the last two.
fn same_registrable_domain(a: &str, b: &str) -> bool {
    let last_two = |h: &str| {
        let labels: Vec<&str> = h.split('.').collect();
        (labels.len() >= 2).then(|| labels[labels.len() - 2..].join("."))
    };
    a == b || matches!((last_two(a), last_two(b)), (Some(x), Some(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Template;

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
            gitlab_base_url: None,
        }
    }

    fn provider() -> Result<Arc<CiProvider>, ConfigError> {
        let san = Template::parse("{{ .url }}/{{ .repo }}");
        Ok(Arc::new(CiProvider::new(
            "p".into(),
            Default::default(),
            san,
            Vec::new(),
        )))
    }

    fn no_provider() -> Result<Arc<CiProvider>, ConfigError> {
        Err(ConfigError::rule("CIProvider", "none here"))
    }

    fn native(f: Fields) -> Result<IssuerConfig, String> {
        build(f, &Keys::NATIVE, no_provider).map_err(|e| e.to_string())
    }

    #[test]
    fn issuer_claim_is_parsed_at_load_for_email_only() {
        let mut f = fields("https://dex.example.com", "email", None, None);
        f.issuer_claim = Some("$.federated_claims.connector_id".into());
        let IssuerKind::Email(s) = native(f).unwrap().kind else {
            panic!("an email issuer")
        };
        assert_eq!(s.issuer_claim.unwrap().steps(), ["federated_claims", "connector_id"]);
        let mut f = fields("https://dex.example.com", "email", None, None);
        f.issuer_claim = Some("$..x".into());
        assert!(native(f).unwrap_err().starts_with("issuer_claim:"));
        let mut f = fields("https://dex.example.com", "github-workflow", None, None);
        f.issuer_claim = Some("$.x".into());
        assert!(native(f).unwrap_err().starts_with("issuer_claim:"));
    }

    #[test]
    fn kind_specific_rules() {
        let ok = |f| native(f).map(|_| ());
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
        assert_eq!(
            ok(fields("https://spire.example.com", "spiffe", None, Some("Ex ample"))).unwrap_err(),
            r#"spiffe_trust_domain: "Ex ample" is not a SPIFFE trust domain"#
        );
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
        let mut f = fields("https://gitlab.example.com", "gitlab-pipeline", None, None);
        f.skip_email_verification = true;
        assert!(ok(f).unwrap_err().starts_with("skip_email_verification:"));
        assert!(
            ok(fields(
                "https://spire.*.example.com",
                "spiffe",
                None,
                Some("example.com")
            ))
            .unwrap_err()
            .contains("cannot be meta")
        );
    }

    /// Each kind's settings are validated at load and land in that kind's variant only.
    #[test]
    fn settings_land_in_their_own_kind() {
        let spiffe = native(fields(
            "https://spire.example.com",
            "spiffe",
            Some("example.com"),
            Some("example.com"),
        ))
        .unwrap();
        let IssuerKind::Spiffe(s) = &spiffe.kind else {
            panic!("{:?}", spiffe.kind)
        };
        assert_eq!(s.trust_domain(), "example.com");
        assert_eq!(
            spiffe.kind.subject_domain(),
            None,
            "a spiffe issuer has no subject domain"
        );

        let uri = native(fields(
            "https://accounts.example.com",
            "uri",
            Some("https://Login.Example.com"),
            Some("x"),
        ))
        .unwrap();
        let IssuerKind::Uri(u) = &uri.kind else {
            panic!("{:?}", uri.kind)
        };
        assert_eq!(
            (u.subject_domain(), u.scheme(), u.host()),
            ("https://Login.Example.com", "https", "login.example.com")
        );
        assert_eq!(uri.kind.spiffe_trust_domain(), None, "a uri issuer has no trust domain");

        let user = native(fields(
            "https://accounts.example.com",
            "username",
            Some("example.com"),
            None,
        ))
        .unwrap();
        assert!(matches!(&user.kind, IssuerKind::Username(u) if u.subject_domain() == "example.com"));

        let mut f = fields("https://accounts.example.com", "email", None, None);
        f.skip_email_verification = true;
        let email = native(f).unwrap();
        assert!(matches!(&email.kind, IssuerKind::Email(e) if e.skip_email_verification && !e.allow_sub_challenge));

        // A URI subject domain without a host can never cover a subject: refused at load.
        let e = native(fields("https://accounts.example.com", "uri", Some("https:"), None)).unwrap_err();
        assert!(e.starts_with("subject_domain:"), "{e}");
    }

    /// The provider is asked for only when the kind needs it, and its refusal is a load error.
    #[test]
    fn ci_provider_templates_are_required_at_load() {
        let f = || fields("https://ci.example.com", "ci-provider", None, None);
        let e = native(f()).unwrap_err();
        assert_eq!(e, "CIProvider: none here");
        let issuer = build(f(), &Keys::FULCIO, provider).unwrap();
        let IssuerKind::CiProvider(p) = &issuer.kind else {
            panic!("{:?}", issuer.kind)
        };
        assert_eq!(p.name(), "p");
        let asked = std::cell::Cell::new(false);
        build(
            fields("https://ci.example.com", "github-workflow", None, None),
            &Keys::FULCIO,
            || {
                asked.set(true);
                provider()
            },
        )
        .unwrap();
        assert!(!asked.get(), "only ci-provider issuers look up templates");
        // Other rules come first: a bad URL is named before a missing provider.
        let e = build(
            fields("http://ci.example.com", "ci-provider", None, None),
            &Keys::FULCIO,
            no_provider,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("IssuerURL:"), "{e}");
    }

    #[test]
    fn native_ci_provider_is_refused_naming_the_type() {
        let raw: RawIssuer =
            serde_json::from_value(serde_json::json!({"url": "https://ci.example.com", "type": "ci-provider"}))
                .unwrap();
        let e = raw.validate(std::path::Path::new("/")).unwrap_err().to_string();
        assert!(e.starts_with("type: ci-provider issuers need templates"), "{e}");
        assert!(e.contains("issuers_file"), "{e}");
    }

    fn raw(v: serde_json::Value) -> RawIssuer {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn in_cluster_issuer_defaults_to_the_pods_files() {
        let base = std::path::Path::new("/etc/keyless");
        let i = raw(
            serde_json::json!({"url": "https://kubernetes.default.svc", "type": "kubernetes",
                                       "kubernetes_in_cluster": true}),
        )
        .validate(base)
        .unwrap();
        assert_eq!(
            i.options.in_cluster,
            Some(InCluster {
                token_file: POD_TOKEN_FILE.into(),
                ca_files: vec![POD_CA_FILE.into()],
            })
        );
        // Overrides: a relative token file resolves against the config's folder; an explicit
        // ca_cert is read at load and replaces the pod's bundle.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ca.pem"),
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let i = raw(
            serde_json::json!({"url": "https://k8s.example:6443", "type": "kubernetes",
                                       "kubernetes_in_cluster": true, "token_file": "sa/token", "ca_cert": "ca.pem"}),
        )
        .validate(dir.path())
        .unwrap();
        let ic = i.options.in_cluster.unwrap();
        assert_eq!(ic.token_file, dir.path().join("sa/token"));
        assert!(ic.ca_files.is_empty());
        assert!(i.options.ca_cert_pem.is_some());
    }

    #[test]
    fn in_cluster_is_refused_where_the_token_could_leak() {
        let base = std::path::Path::new("/");
        for (v, want) in [
            (
                serde_json::json!({"url": "https://accounts.example.com", "type": "email", "kubernetes_in_cluster": true}),
                "kubernetes_in_cluster: applies to kubernetes issuers only, not email",
            ),
            (
                serde_json::json!({"url": "https://kubernetes.*.svc", "type": "kubernetes", "kubernetes_in_cluster": true}),
                "kubernetes_in_cluster: needs an exact issuer URL",
            ),
            (
                serde_json::json!({"url": "http://127.0.0.1:6443", "type": "kubernetes", "kubernetes_in_cluster": true}),
                "kubernetes_in_cluster: needs an https issuer URL",
            ),
            (
                serde_json::json!({"url": "https://kubernetes.default.svc", "type": "kubernetes", "token_file": "/t"}),
                "token_file: applies only with kubernetes_in_cluster: true",
            ),
            (
                serde_json::json!({"url": "https://kubernetes.default.svc", "type": "kubernetes",
                                   "kubernetes_in_cluster": true, "token_file": ""}),
                "token_file: must not be empty",
            ),
        ] {
            let e = raw(v.clone()).validate(base).unwrap_err().to_string();
            assert!(e.starts_with(want), "{v}: {e}");
        }
    }

    #[test]
    fn plain_http_beyond_loopback_needs_the_insecure_opt_in() {
        let base = std::path::Path::new("/");
        let dex = || serde_json::json!({"url": "http://dex-idp:8888/auth", "type": "email"});
        let e = raw(dex()).validate(base).unwrap_err().to_string();
        assert!(
            e.starts_with("url:") && e.contains("loopback") && e.contains("insecure_plain_http: true"),
            "{e}"
        );
        let mut v = dex();
        v["insecure_plain_http"] = true.into();
        let i = raw(v).validate(base).unwrap();
        assert!(i.options.insecure_plain_http && i.url == "http://dex-idp:8888/auth");
        // A pattern may opt in too; an https issuer has nothing to opt into.
        let i = raw(serde_json::json!({"url": "http://*.dex.svc/auth", "type": "email", "insecure_plain_http": true}))
            .validate(base)
            .unwrap();
        assert!(i.wildcard && i.options.insecure_plain_http);
        let e =
            raw(serde_json::json!({"url": "https://dex.example/auth", "type": "email", "insecure_plain_http": true}))
                .validate(base)
                .unwrap_err()
                .to_string();
        assert!(e.starts_with("insecure_plain_http: applies to http://"), "{e}");
        // Other schemes and queries stay refused.
        let e = raw(serde_json::json!({"url": "http://dex/auth?x=1", "type": "email", "insecure_plain_http": true}))
            .validate(base)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("url:"), "{e}");
        // Fulcio's file has no such key: its error does not suggest one.
        let e = build(
            fields("http://dex-idp:8888/auth", "email", None, None),
            &Keys::FULCIO,
            no_provider,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("IssuerURL:") && !e.contains("insecure_plain_http"), "{e}");
    }

    /// Fulcio trusts its cluster's issuer with the pod's token whenever its file names it.
    #[test]
    fn fulcio_files_reach_the_cluster_issuer_in_cluster() {
        let k8s = build(
            fields(IN_CLUSTER_ISSUER, "kubernetes", None, None),
            &Keys::FULCIO,
            no_provider,
        )
        .unwrap();
        assert_eq!(
            k8s.options.in_cluster,
            Some(InCluster {
                token_file: POD_TOKEN_FILE.into(),
                ca_files: vec![FULCIO_CLUSTER_CA_FILE.into(), POD_CA_FILE.into()],
            })
        );
        for (url, kind) in [
            (IN_CLUSTER_ISSUER, "email"),
            ("https://kubernetes.other.svc", "kubernetes"),
        ] {
            let i = build(fields(url, kind, None, None), &Keys::FULCIO, no_provider).unwrap();
            assert_eq!(i.options.in_cluster, None, "{url} {kind}");
        }
        let native = build(
            fields(IN_CLUSTER_ISSUER, "kubernetes", None, None),
            &Keys::NATIVE,
            no_provider,
        )
        .unwrap();
        assert_eq!(native.options.in_cluster, None, "the native list says so explicitly");
    }
}
