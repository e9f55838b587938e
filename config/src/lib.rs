//! Keyless CA configuration.
//!
//! This crate owns the YAML schema (`keyless.yaml`), the reading of Fulcio's own issuer file, and the
//! validation that turns both into a [`Config`] that cannot express an invalid combination. Every
//! error names the path of the offending key and the rule it broke, so a bad file stops start-up
//! with a message an operator can act on. It never touches the network and never logs secrets.

mod ca;
mod ctlog;
mod duration;
mod error;
mod fulcio;
mod issuer;
mod ops;
mod policy;
mod raw;
mod secret;
pub mod template;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::ca::{
    CaConfig, ClientSigningAlgorithm, FileCaConfig, GeneratedCaConfig, Pkcs11CaConfig, Pkcs11Mechanism,
};
pub use crate::ctlog::{AddressRange, CtLogConfig, DEFAULT_CT_LISTEN, EmbeddedCtLog, RemoteCtLog, SubmissionLimits};
pub use crate::duration::parse_duration;
pub use crate::error::{ConfigError, ConfigWarning};
pub use crate::issuer::{
    ALL_KINDS, CiProvider, EmailSettings, FULCIO_CLUSTER_CA_FILE, GitlabSettings, IN_CLUSTER_ISSUER, InCluster,
    IssuerConfig, IssuerKind, IssuerOptions, IssuerType, JsonPath, POD_CA_FILE, POD_TOKEN_FILE, SpiffeSettings,
    TOKEN_ALGORITHMS, UriSettings, UsernameSettings, is_loopback_url,
};
pub use crate::ops::{
    AuditConfig, AuditExport, AuditPostgres, Bucket, Limits, LogFormat, RateLimitOverrides, RateLimits, TlsConfig,
};
pub use crate::policy::{Condition, Policy, Rule};
pub use crate::secret::{Secret, SecretRef};

/// Default API listener: Fulcio deployments use port 5555.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5555";
/// Default certificate lifetime, as Fulcio issues.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(600);
/// Longest certificate lifetime the CA accepts: short-lived is the whole point.
pub const MAX_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// The audience every public Sigstore issuer uses.
pub const DEFAULT_CLIENT_ID: &str = "sigstore";

/// A validated configuration. Paths are absolute (resolved against the config file's folder).
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP API listener.
    pub listen: SocketAddr,
    /// Prometheus `/metrics` on its own listener (unset: no metrics listener).
    pub metrics_listen: Option<SocketAddr>,
    /// Fulcio's gRPC API (`dev.sigstore.fulcio.v2.CA` and `grpc.health.v1`) on its own listener
    /// (unset: no gRPC).
    pub grpc_listen: Option<SocketAddr>,
    /// Where generated state lives (the generated CA, the development issuer key, later the CT log).
    pub data_dir: PathBuf,
    /// Where the CA key and chain come from.
    pub ca: CaConfig,
    /// Certificate Transparency mode.
    pub ct_log: CtLogConfig,
    /// Trusted OIDC issuers, from `issuers_file` first and then `issuers`.
    pub issuers: Vec<IssuerConfig>,
    /// Leaf certificate settings.
    pub certificate: CertificateConfig,
    /// The file this configuration was loaded from (`None` for `--dev`); watched for reloads.
    pub source: Option<PathBuf>,
    /// The Fulcio issuer file it names, if any; watched for reloads too.
    pub issuers_file: Option<PathBuf>,
    /// Serve the insecure development issuer (`keyless serve --dev`, or `insecure_dev_issuer: true`
    /// for benchmarks); refused unless the API listens on loopback.
    pub insecure_dev_issuer: bool,
    /// Native TLS for the API (unset: plain HTTP, e.g. behind an ingress).
    pub tls: Option<TlsConfig>,
    /// Log line format (`KEYLESS_LOG_FORMAT` overrides it).
    pub log_format: LogFormat,
    /// Request, concurrency and shutdown limits.
    pub limits: Limits,
    /// Rate limits for issuers that set none of their own.
    pub rate_limits: RateLimits,
    /// The issuance record.
    pub audit: AuditConfig,
    /// `health.token`: callers of `/readyz` that present it as a bearer token see each
    /// component's reason; everyone else sees only ready / not ready per component.
    pub health_token: Option<SecretRef>,
    /// `public_good_issuers: true`: the public-good Sigstore issuer set bundled with Keyless CA
    /// ([`PUBLIC_GOOD_ISSUERS`]) is in `issuers`, first. Off by default: nothing is trusted
    /// unless the configuration names it.
    pub public_good_issuers: bool,
    /// What loaded but deserves the operator's attention (settings Fulcio ignores, and so on).
    pub warnings: Vec<ConfigWarning>,
    /// The client key and signature algorithms accepted, for proofs of possession and CSRs
    /// alike (Fulcio's `--client-signing-algorithms`, e.g. `ecdsa-sha2-256-nistp256`); unset in
    /// the file: Fulcio's default, [`ClientSigningAlgorithm::FULCIO_DEFAULT`].
    pub client_signing_algorithms: Vec<ClientSigningAlgorithm>,
}

/// Leaf certificate settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateConfig {
    /// Lifetime of issued certificates.
    pub validity: Duration,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_limited(path)?;
        let base = path
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."));
        let mut config = Config::from_yaml(&text, &base)?;
        config.source = Some(path.canonicalize().unwrap_or_else(|_| path.to_path_buf()));
        Ok(config)
    }

    /// Parses configuration text; relative paths resolve against `base`.
    pub fn from_yaml(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let value: serde_json::Value = if text.trim().is_empty() {
            serde_json::Value::Object(Default::default())
        } else {
            parse_yaml(text).map_err(|e| ConfigError::syntax("", e))?
        };
        let raw: raw::RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::rule(if path == "." { String::new() } else { path }, e.into_inner())
        })?;
        raw.validate(base)
    }

    /// The configuration `keyless serve --dev` uses: loopback listener, generated CA, the insecure
    /// development issuer, and the embedded CT log.
    pub fn dev(data_dir: PathBuf) -> Config {
        let ca = CaConfig::Generated(GeneratedCaConfig::under(&data_dir));
        Config {
            listen: DEFAULT_LISTEN.parse().expect("constant address"),
            metrics_listen: None,
            grpc_listen: None,
            data_dir,
            ca,
            ct_log: CtLogConfig::Embedded(EmbeddedCtLog::default()),
            issuers: Vec::new(),
            certificate: CertificateConfig {
                validity: DEFAULT_VALIDITY,
            },
            source: None,
            issuers_file: None,
            insecure_dev_issuer: true,
            tls: None,
            log_format: LogFormat::default(),
            limits: Limits::default(),
            rate_limits: RateLimits::default(),
            audit: AuditConfig::default(),
            health_token: None,
            public_good_issuers: false,
            warnings: Vec::new(),
            client_signing_algorithms: ClientSigningAlgorithm::FULCIO_DEFAULT.to_vec(),
        }
    }

    /// Refuses a configuration that trusts no OIDC issuer (and is not `--dev`): Keyless CA trusts
    /// nothing by default, so serving would only refuse requests, and silently trusting the
    /// world's CI systems would be worse. The error says how to name a set.
    pub fn check_trusts_issuers(&self) -> Result<(), ConfigError> {
        if !self.issuers.is_empty() || self.insecure_dev_issuer {
            return Ok(());
        }
        Err(ConfigError::rule("issuers", NO_ISSUERS))
    }
}

/// Why a configuration without issuers is refused, and what to write instead.
pub const NO_ISSUERS: &str = "no OIDC issuer is trusted, and Keyless CA trusts none by default. Name the \
issuers to trust with `issuers:` (a list), with `issuers_file:` (a Fulcio issuer file, JSON or YAML, e.g. \
`issuers_file: /etc/fulcio-config/config.yaml`), or with `public_good_issuers: true` to trust the \
public-good Sigstore set bundled with Keyless CA (config/fixtures/public-good.yaml, a copy of Fulcio's \
config/identity/config.yaml: Google, GitHub Actions, GitLab, Buildkite, CircleCI, Codefresh, Buddy, \
Chainguard, Sigstore's Dex and the EKS/GKE/AKS meta issuers)";

/// The public-good Sigstore issuer set bundled with Keyless CA: Fulcio's own
/// `config/identity/config.yaml`, unchanged. Trusted only with `public_good_issuers: true`.
pub const PUBLIC_GOOD_ISSUERS: &str = include_str!("../fixtures/public-good.yaml");

/// Parses the bundled public-good issuer set.
pub fn public_good_issuers() -> Result<Vec<IssuerConfig>, ConfigError> {
    parse_issuers_file(PUBLIC_GOOD_ISSUERS)
}

/// A Fulcio issuer file read: its issuers, and what loaded but deserves attention.
#[derive(Debug, Clone)]
pub struct IssuersFile {
    /// The issuers, `OIDCIssuers` first, then `MetaIssuers`.
    pub issuers: Vec<IssuerConfig>,
    /// Settings Fulcio ignores or applies differently, with their paths.
    pub warnings: Vec<ConfigWarning>,
}

/// Reads the text of a Fulcio issuer file (JSON or YAML, as Fulcio reads it), as `issuers_file`
/// is read.
pub fn read_issuers_file(text: &str) -> Result<IssuersFile, ConfigError> {
    fulcio::parse(text).map(|p| IssuersFile {
        issuers: p.issuers,
        warnings: p.warnings,
    })
}

/// [`read_issuers_file`] without the warnings. Public so the fuzz tests (`tests/tests/fuzz.rs`)
/// reach the parser loading uses, not a copy of it.
pub fn parse_issuers_file(text: &str) -> Result<Vec<IssuerConfig>, ConfigError> {
    read_issuers_file(text).map(|f| f.issuers)
}

/// A Fulcio issuer file as the JSON value Fulcio reads from it (YAML aliases, alias keys and merge
/// keys resolved; YAML scalars as text), e.g. to convert one format into the other.
pub fn issuers_file_as_json(text: &str) -> Result<serde_json::Value, ConfigError> {
    fulcio::value(text).map(|(v, _)| v)
}

/// Alias replays (events copied in by `*alias`) allowed in one configuration or issuer file.
/// Files use aliases for a few scalars (Fulcio's file: the issuer types); without this bound a
/// few hundred bytes of nested aliases expand to the parser's 250,000-node budget, about half a
/// second of CPU in a debug build for each load (found by `tests/tests/fuzz.rs`).
pub const MAX_YAML_ALIAS_EVENTS: usize = 10_000;

/// Parses YAML with alias replay bounded by [`MAX_YAML_ALIAS_EVENTS`].
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, serde_saphyr::Error> {
    let mut options = serde_saphyr::Options::default();
    options.alias_limits.max_total_replayed_events = MAX_YAML_ALIAS_EVENTS;
    serde_saphyr::from_str_with_options(text, options)
}

/// Config and issuer files are small; refuse anything absurd before parsing it.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

pub(crate) fn read_limited(path: &Path) -> Result<String, ConfigError> {
    let meta = std::fs::metadata(path).map_err(|e| ConfigError::io(path, e))?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::rule(
            path.display().to_string(),
            format!("file is larger than {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, e))
}

pub(crate) fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(text, Path::new("/etc/keyless"))
    }

    /// Found by `tests/tests/fuzz.rs`: 429 bytes of nested aliases took over half a second to
    /// refuse (the regression input is `tests/fuzz-regressions/config/`).
    #[test]
    fn nested_aliases_are_refused_before_they_expand() {
        let mut text = String::from("a: &a [x, x]\n");
        let mut prev = "a".to_string();
        for i in 0..20 {
            text.push_str(&format!("b{i}: &b{i} [*{prev}, *{prev}]\n"));
            prev = format!("b{i}");
        }
        let e = load(&text).unwrap_err().to_string();
        assert!(e.contains("alias replay limit"), "{e}");
        let e = fulcio::parse(&text).unwrap_err().to_string();
        assert!(e.contains("alias replay limit"), "{e}");
        // A few aliases, as Fulcio's own file has, are fine.
        let few = "define:\n  - &t github-workflow\noidc-issuers:\n  https://a.example:\n    type: *t\n  https://b.example:\n    type: *t\n";
        assert_eq!(fulcio::parse(few).unwrap().issuers.len(), 2);
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = load("").unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.data_dir, PathBuf::from("/etc/keyless/./keyless-data"));
        assert_eq!(
            c.ca,
            CaConfig::Generated(GeneratedCaConfig::under(Path::new("/etc/keyless/./keyless-data")))
        );
        assert_eq!(c.ct_log, CtLogConfig::Embedded(EmbeddedCtLog::default()));
        assert_eq!(c.certificate.validity, DEFAULT_VALIDITY);
    }

    #[test]
    fn contract_keys_parse() {
        let c = load(
            "listen: 127.0.0.1:6000\ndata_dir: /var/lib/keyless\nca:\n  file: { key: ca-key.pem, chain: ca-chain.pem, password: env:KEYLESS_CA_PASSWORD }\nct_log: disabled\nissuers: []\ncertificate: { validity: 15m }\n",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 6000);
        assert_eq!(c.ct_log, CtLogConfig::Disabled);
        assert_eq!(c.certificate.validity, Duration::from_secs(900));
        let CaConfig::File(f) = c.ca else {
            panic!("unexpected {:?}", c.ca)
        };
        assert_eq!(f.key, PathBuf::from("/etc/keyless/ca-key.pem"));
        assert_eq!(f.password, Some(SecretRef::Env("KEYLESS_CA_PASSWORD".into())));
    }

    #[test]
    fn unknown_key_is_named() {
        let e = load("listne: 1.2.3.4:5\n").unwrap_err().to_string();
        assert!(e.contains("listne"), "{e}");
    }

    #[test]
    fn unknown_issuer_type_names_path() {
        let e = load(
            "issuers:\n - {url: https://a.example, type: email}\n - {url: https://b.example, type: email}\n - {url: https://c.example, type: gitlab}\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, r#"issuers[2].type: unknown issuer type "gitlab""#);
    }

    #[test]
    fn bad_values_are_named() {
        assert!(load("ct_log: maybe\n").unwrap_err().to_string().starts_with("ct_log:"));
        assert!(
            load("certificate: {validity: 48h}\n")
                .unwrap_err()
                .to_string()
                .starts_with("certificate.validity:")
        );
        assert!(
            load("listen: nowhere\n")
                .unwrap_err()
                .to_string()
                .starts_with("listen:")
        );
    }

    #[test]
    fn per_issuer_options() {
        let dir = std::env::temp_dir().join(format!("keyless-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("ca.pem"),
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(dir.join("bad.pem"), "nope").unwrap();
        let c = Config::from_yaml(
            "issuers:\n - {url: https://idp.example, type: email, audiences: [a, b], algorithms: [RS256], max_token_age: 1h, ca_cert: ca.pem}\n",
            &dir,
        )
        .unwrap();
        let o = &c.issuers[0].options;
        assert_eq!(o.extra_audiences, ["a", "b"]);
        assert_eq!(o.max_token_age, Some(Duration::from_secs(3600)));
        assert!(o.ca_cert_pem.as_deref().unwrap().contains("BEGIN CERTIFICATE"));
        assert!(c.issuers[0].accepts_audience("sigstore") && c.issuers[0].accepts_audience("b"));
        let e = Config::from_yaml(
            "issuers:\n - {url: https://idp.example, type: email, algorithms: [HS256]}\n",
            &dir,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("issuers[0].algorithms[0]:"), "{e}");
        let e = Config::from_yaml(
            "issuers:\n - {url: https://idp.example, type: email, ca_cert: bad.pem}\n",
            &dir,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("issuers[0].ca_cert:"), "{e}");
        assert!(
            matches!(&c.issuers[0].kind, IssuerKind::Email(e) if !e.allow_sub_challenge),
            "a proof over sub is opt-in"
        );
        let c = Config::from_yaml(
            "issuers:\n - {url: https://idp.example, type: email, allow_sub_challenge: true}\n",
            &dir,
        )
        .unwrap();
        assert!(matches!(&c.issuers[0].kind, IssuerKind::Email(e) if e.allow_sub_challenge));
        let e = Config::from_yaml(
            "issuers:\n - {url: https://idp.example, type: github-workflow, allow_sub_challenge: true}\n",
            &dir,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("issuers[0].allow_sub_challenge:"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The bundled public-good file is Fulcio's own `config/identity/config.yaml`, byte for byte,
    /// and every issuer in it loads with Fulcio's settings.
    #[test]
    fn public_good_fixture_is_fulcios_file() {
        if let Ok(fulcio) = std::fs::read_to_string("/work/shared/reference/fulcio-files/public-good-config.yaml") {
            assert_eq!(
                PUBLIC_GOOD_ISSUERS, fulcio,
                "the bundled copy is Fulcio's file unchanged"
            );
        }
        let file = read_issuers_file(PUBLIC_GOOD_ISSUERS).unwrap();
        assert!(file.warnings.is_empty(), "{:?}", file.warnings);
        let exact: Vec<(&str, &str, Option<&str>)> = vec![
            ("https://accounts.google.com", "email", None),
            ("https://agent.buildkite.com", "ci-provider", Some("buildkite-job")),
            (
                "https://asia-oidc.buddyusercontent.com",
                "ci-provider",
                Some("buddy-pipeline"),
            ),
            (
                "https://auth.eclipse.org/auth/realms/foundation-service-accounts",
                "email",
                None,
            ),
            (
                "https://dev-oidc.buddyusercontent.com",
                "ci-provider",
                Some("buddy-pipeline"),
            ),
            ("https://dev.gitlab.org", "ci-provider", Some("gitlab-pipeline")),
            (
                "https://eu-oidc.buddyusercontent.com",
                "ci-provider",
                Some("buddy-pipeline"),
            ),
            ("https://gitlab.archlinux.org", "ci-provider", Some("gitlab-pipeline")),
            ("https://gitlab.com", "ci-provider", Some("gitlab-pipeline")),
            ("https://issuer.enforce.dev", "chainguard-identity", None),
            ("https://issuer.hello.coop", "email", None),
            ("https://oauth2.sigstage.dev/auth", "email", None),
            ("https://oauth2.sigstore.dev/auth", "email", None),
            (
                "https://oidc.buddyusercontent.com",
                "ci-provider",
                Some("buddy-pipeline"),
            ),
            ("https://oidc.circleci.com", "ci-provider", Some("circleci-job")),
            ("https://oidc.codefresh.io", "ci-provider", Some("codefresh-workflow")),
            ("https://ops.gitlab.net", "ci-provider", Some("gitlab-pipeline")),
            (
                "https://psd-oidc.buddyusercontent.com",
                "ci-provider",
                Some("buddy-pipeline"),
            ),
            ("https://sigstore.verify.ibm.com/oauth2", "email", None),
            (
                "https://stage-oidc.buddyusercontent.com",
                "ci-provider",
                Some("buddy-pipeline"),
            ),
            (
                "https://token.actions.githubusercontent.com",
                "ci-provider",
                Some("github-workflow"),
            ),
            ("https://www.kaggle.com/api/v1/models/signing", "email", None),
        ];
        let meta: Vec<(&str, &str, Option<&str>)> = vec![
            ("https://*.oic.prod-aks.azure.com/*/*", "kubernetes", None),
            ("https://*.oic.prod-aks.azure.com/*/*/", "kubernetes", None),
            (
                "https://container.googleapis.com/v1/projects/*/locations/*/clusters/*",
                "kubernetes",
                None,
            ),
            ("https://oidc.circleci.com/org/*", "ci-provider", Some("circleci-job")),
            ("https://oidc.eks.*.amazonaws.com/id/*", "kubernetes", None),
            ("https://oidc.prod-aks.azure.com/*", "kubernetes", None),
            ("https://oidc.prod-aks.azure.com/*/", "kubernetes", None),
            ("https://oidc.prod-aks.azure.com/*/*", "kubernetes", None),
            (
                "https://token.actions.githubusercontent.com/*",
                "ci-provider",
                Some("github-workflow"),
            ),
        ];
        let listed = |wildcard: bool| {
            let mut v: Vec<(&str, &str, Option<&str>)> = file
                .issuers
                .iter()
                .filter(|i| i.wildcard == wildcard)
                .map(|i| {
                    let provider = match &i.kind {
                        IssuerKind::CiProvider(p) => Some(p.name()),
                        _ => None,
                    };
                    (i.url.as_str(), i.kind.as_str(), provider)
                })
                .collect();
            v.sort();
            v
        };
        assert_eq!(listed(false), exact);
        assert_eq!(listed(true), meta);
        for i in &file.issuers {
            assert_eq!(i.client_id, "sigstore", "{}", i.url);
            assert_eq!(i.challenge_claim, None, "{}", i.url);
            let expected_claim = if i.kind.issuer_type() == IssuerType::Email {
                "email"
            } else {
                "sub"
            };
            assert_eq!(i.challenge_claim(), expected_claim, "{}", i.url);
            if let IssuerKind::CiProvider(p) = &i.kind {
                assert!(p.san().is_ok(), "{}: every provider renders a SAN", i.url);
            }
        }
        let by = |u: &str| file.issuers.iter().find(|i| i.url == u).unwrap();
        for dex in ["https://oauth2.sigstore.dev/auth", "https://oauth2.sigstage.dev/auth"] {
            let IssuerKind::Email(e) = &by(dex).kind else {
                panic!("{dex}")
            };
            assert_eq!(
                e.issuer_claim.as_ref().map(JsonPath::as_str),
                Some("$.federated_claims.connector_id")
            );
        }
        let IssuerKind::Email(google) = &by("https://accounts.google.com").kind else {
            panic!("google")
        };
        assert!(google.issuer_claim.is_none() && !google.skip_email_verification);
        let IssuerKind::CiProvider(gh) = &by("https://token.actions.githubusercontent.com").kind else {
            panic!("github")
        };
        assert_eq!(gh.extensions().len(), 20);
        assert_eq!(gh.defaults().get("url").map(String::as_str), Some("https://github.com"));
        assert_eq!(gh.defaults().get("environment").map(String::as_str), Some(""));
        let eks = by("https://oidc.eks.*.amazonaws.com/id/*");
        assert!(eks.matches("https://oidc.eks.us-east-1.amazonaws.com/id/ABC"));
    }

    /// The bundled set is trusted only when asked for; warnings of an issuers_file name the file.
    #[test]
    fn issuers_are_trusted_only_when_named() {
        let c = load("").unwrap();
        assert!(c.issuers.is_empty() && !c.public_good_issuers);
        let e = c.check_trusts_issuers().unwrap_err().to_string();
        assert!(e.starts_with("issuers: no OIDC issuer is trusted"), "{e}");
        assert!(
            e.contains("public_good_issuers: true") && e.contains("issuers_file:"),
            "{e}"
        );
        let c = load("public_good_issuers: true\n").unwrap();
        assert_eq!(c.issuers.len(), public_good_issuers().unwrap().len());
        assert!(c.check_trusts_issuers().is_ok() && c.warnings.is_empty());
        assert!(Config::dev(PathBuf::from("/tmp/x")).check_trusts_issuers().is_ok());
        let e = load("public_good_issuers: true\nissuers:\n - {url: https://accounts.google.com, type: email}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("configured twice"), "{e}");

        let dir = std::env::temp_dir().join(format!("keyless-warn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("fulcio.yaml"),
            "oidc-issuers:\n  https://a.example.com:\n    issuer-url: https://a.example.com\n    client-id: sigstore\n    type: kubernetes\n    subject-domain: example.com\n",
        )
        .unwrap();
        let c = Config::from_yaml("issuers_file: fulcio.yaml\n", &dir).unwrap();
        assert_eq!(c.issuers.len(), 1);
        assert_eq!(c.warnings.len(), 1);
        let w = c.warnings[0].to_string();
        let file = dir.join("fulcio.yaml").display().to_string();
        assert!(
            w.starts_with(&format!(
                "{file}: OIDCIssuers[\"https://a.example.com\"].SubjectDomain: ignored"
            )),
            "{w}"
        );
        assert!(
            c.warnings[0].clone().into_error().to_string() == w,
            "--strict reports the same text"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `gitlab_base_url` restores Fulcio's gitlab.com URLs for one issuer; it is checked at load.
    #[test]
    fn gitlab_base_url_is_per_issuer() {
        let one = |entry: &str| load(&format!("issuers:\n - {entry}\n")).map(|mut c| c.issuers.remove(0).kind);
        let IssuerKind::GitlabPipeline(g) =
            one("{url: https://gitlab.example.com, type: gitlab-pipeline, gitlab_base_url: 'https://gitlab.com'}")
                .unwrap()
        else {
            panic!("a gitlab issuer")
        };
        assert_eq!(g.base_url(), Some("https://gitlab.com"));
        let IssuerKind::GitlabPipeline(g) = one("{url: https://gitlab.example.com, type: gitlab-pipeline}").unwrap()
        else {
            panic!("a gitlab issuer")
        };
        assert_eq!(g.base_url(), None, "unset: the issuer's own host");
        for (entry, rule) in [
            (
                "{url: https://g.example.com, type: gitlab-pipeline, gitlab_base_url: 'ftp://x'}",
                "http(s) URL",
            ),
            (
                "{url: https://g.example.com, type: gitlab-pipeline, gitlab_base_url: 'https://x/?a'}",
                "query",
            ),
            (
                "{url: https://g.example.com, type: email, gitlab_base_url: 'https://gitlab.com'}",
                "gitlab-pipeline",
            ),
        ] {
            let e = one(entry).unwrap_err().to_string();
            assert!(
                e.starts_with("issuers[0].gitlab_base_url:") && e.contains(rule),
                "{entry}: {e}"
            );
        }
    }

    #[test]
    fn template_errors_stop_the_load() {
        let e = fulcio::parse("ci-issuer-metadata:\n  p:\n    subject-alternative-name-template: \"{{ .a \"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("CIIssuerMetadata[\"p\"].SubjectAlternativeNameTemplate: template:"),
            "{e}"
        );
        let e = fulcio::parse("ci-issuer-metadata:\n  p:\n    subject-alternative-name-template: x\n    extension-templates:\n      build-trigger: \"{{ if }}\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("CIIssuerMetadata[\"p\"].ExtensionTemplates.build-trigger: template:"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_issuers_are_refused() {
        let e = load("issuers:\n - {url: https://a.example, type: email}\n - {url: https://a.example, type: email}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("configured twice"), "{e}");
    }

    /// A ci-provider issuer without templates cannot be loaded: the native list has no place for
    /// them, and the error names the configuration entry, not a token claim.
    #[test]
    fn native_ci_provider_is_refused_at_load() {
        let e = load(
            "issuers:\n - {url: https://a.example, type: email}\n - {url: https://ci.example, type: ci-provider}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("issuers[1].type: ci-provider issuers need templates"),
            "{e}"
        );
        assert!(!e.contains("claim"), "{e}");
    }

    /// Each kind's settings are validated at load, from the native list, and one kind's settings
    /// are refused on a kind that has no use for them.
    #[test]
    fn kind_settings_are_validated_at_load() {
        let one = |entry: &str| load(&format!("issuers:\n - {entry}\n")).map(|mut c| c.issuers.remove(0).kind);
        let err = |entry: &str| one(entry).unwrap_err().to_string();
        assert!(matches!(
            one("{url: https://spire.example.com, type: spiffe, spiffe_trust_domain: example.com}").unwrap(),
            IssuerKind::Spiffe(s) if s.trust_domain() == "example.com"
        ));
        assert!(
            err("{url: https://spire.example.com, type: spiffe, spiffe_trust_domain: 'Bad Domain'}")
                .starts_with("issuers[0].spiffe_trust_domain:")
        );
        assert!(matches!(
            one("{url: https://id.example.com, type: uri, subject_domain: 'https://example.com'}").unwrap(),
            IssuerKind::Uri(u) if u.host() == "example.com"
        ));
        assert!(
            err("{url: https://id.example.com, type: uri, subject_domain: example.com}")
                .starts_with("issuers[0].subject_domain:")
        );
        assert!(matches!(
            one("{url: https://id.example.com, type: username, subject_domain: example.com}").unwrap(),
            IssuerKind::Username(u) if u.subject_domain() == "example.com"
        ));
        let IssuerKind::Email(e) = one(
            "{url: https://dex.example.com, type: email, skip_email_verification: true, issuer_claim: '$.a.b', allow_sub_challenge: true}",
        )
        .unwrap() else {
            panic!("an email issuer")
        };
        assert!(e.skip_email_verification && e.allow_sub_challenge);
        assert_eq!(e.issuer_claim.unwrap().steps(), ["a", "b"]);
        for (entry, path) in [
            (
                "{url: https://gh.example.com, type: github-workflow, skip_email_verification: true}",
                "skip_email_verification",
            ),
            (
                "{url: https://gh.example.com, type: github-workflow, issuer_claim: '$.a'}",
                "issuer_claim",
            ),
            (
                "{url: https://gh.example.com, type: github-workflow, allow_sub_challenge: true}",
                "allow_sub_challenge",
            ),
            (
                "{url: https://gh.example.com, type: kubernetes, subject_domain: example.com}",
                "subject_domain",
            ),
            (
                "{url: https://gh.example.com, type: email, spiffe_trust_domain: example.com}",
                "subject_domain",
            ),
            (
                "{url: https://dex.example.com, type: email, issuer_claim: 'a.b'}",
                "issuer_claim",
            ),
        ] {
            let e = err(entry);
            assert!(e.starts_with(&format!("issuers[0].{path}:")), "{entry}: {e}");
        }
    }
}
