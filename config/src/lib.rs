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

pub use crate::ca::{CaConfig, FileCaConfig, GeneratedCaConfig, Pkcs11CaConfig, Pkcs11Mechanism};
pub use crate::ctlog::{CtLogConfig, DEFAULT_CT_LISTEN, EmbeddedCtLog, RemoteCtLog, SubmissionLimits};
pub use crate::duration::parse_duration;
pub use crate::error::ConfigError;
pub use crate::issuer::{
    ALL_KINDS, CiProvider, EmailSettings, FULCIO_CLUSTER_CA_FILE, IN_CLUSTER_ISSUER, InCluster, IssuerConfig,
    IssuerKind, IssuerOptions, IssuerType, JsonPath, POD_CA_FILE, POD_TOKEN_FILE, SpiffeSettings, TOKEN_ALGORITHMS,
    UriSettings, UsernameSettings, is_loopback_url,
};
pub use crate::ops::{AuditConfig, AuditExport, Bucket, Limits, LogFormat, RateLimitOverrides, RateLimits, TlsConfig};
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
    /// The client key and signature algorithms accepted (Fulcio's `--client-signing-algorithms`,
    /// e.g. `ecdsa-sha2-256-nistp256`); unset: every algorithm the key policy allows.
    pub client_signing_algorithms: Option<Vec<String>>,
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
            client_signing_algorithms: None,
        }
    }
}

/// Keyless CA's copy of the public-good Sigstore issuer set (Fulcio's issuer-file format); the
/// issuers of `keyless serve` when a configuration names none.
pub const PUBLIC_GOOD_ISSUERS: &str = include_str!("../fixtures/public-good.yaml");

/// Parses the built-in public-good issuer set.
pub fn public_good_issuers() -> Result<Vec<IssuerConfig>, ConfigError> {
    parse_issuers_file(PUBLIC_GOOD_ISSUERS)
}

/// Parses the text of a Fulcio issuer file (JSON or YAML), as `issuers_file` is read. Public so
/// the fuzz tests (`tests/tests/fuzz.rs`) reach the parser loading uses, not a copy of it.
pub fn parse_issuers_file(text: &str) -> Result<Vec<IssuerConfig>, ConfigError> {
    fulcio::parse(text)
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
        assert_eq!(fulcio::parse(few).unwrap().len(), 2);
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

    #[test]
    fn public_good_fixture_loads_unchanged() {
        let issuers = public_good_issuers().unwrap();
        assert_eq!(issuers.len(), 10);
        assert!(issuers.iter().all(|i| i.client_id == "sigstore"));
        let gh = issuers
            .iter()
            .find(|i| i.url == "https://token.actions.githubusercontent.com")
            .unwrap();
        let IssuerKind::CiProvider(p) = &gh.kind else {
            panic!("{:?}", gh.kind)
        };
        assert_eq!(p.extensions().len(), 20);
        let dex = issuers
            .iter()
            .find(|i| i.url == "https://oauth2.sigstore.dev/auth")
            .unwrap();
        let IssuerKind::Email(e) = &dex.kind else {
            panic!("{:?}", dex.kind)
        };
        assert_eq!(
            e.issuer_claim.as_ref().map(JsonPath::as_str),
            Some("$.federated_claims.connector_id")
        );
        assert!(
            issuers
                .iter()
                .any(|i| i.wildcard && i.matches("https://oidc.eks.us-east-1.amazonaws.com/id/ABC"))
        );
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
        let e = fulcio::parse("oidc-issuers:\n  https://x.example:\n    type: ci-provider\n    ci-provider: nope\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown provider \"nope\""), "{e}");
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
