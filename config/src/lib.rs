//! Keyless CA configuration.
//!
//! This crate owns the YAML schema (`keyless.yaml`), the reading of Fulcio's own issuer file, and the
//! validation that turns both into a [`Config`] that cannot express an invalid combination. Every
//! error names the path of the offending key and the rule it broke, so a bad file stops start-up
//! with a message an operator can act on. It never touches the network and never logs secrets.

mod duration;
mod error;
mod fulcio;
mod issuer;
mod ops;
mod policy;
mod secret;
pub mod template;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::duration::parse_duration;
pub use crate::error::ConfigError;
pub use crate::issuer::{
    ALL_KINDS, CiProvider, IssuerConfig, IssuerKind, IssuerOptions, TOKEN_ALGORITHMS, is_loopback_url, json_path,
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
}

/// Where the CA signing key lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaConfig {
    /// `ca:` omitted: a file CA generated under `data_dir/ca` on first start, unencrypted.
    Generated,
    /// An existing (or `keyless ca init`-created) key file and chain file.
    File(FileCaConfig),
    /// A key inside a PKCS#11 token (an HSM; SoftHSM2 in development and tests).
    Pkcs11(Pkcs11CaConfig),
}

/// `ca.pkcs11`: where the issuing key lives in the HSM, and the chain file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11CaConfig {
    /// The PKCS#11 module (`.so`).
    pub module: PathBuf,
    /// The token, found by label (slot numbers change when tokens are re-initialized).
    pub token_label: String,
    /// The user PIN, as a secret reference.
    pub pin: SecretRef,
    /// Label of the issuing key; the root key is `<key_label>-root`.
    pub key_label: String,
    /// PEM chain: issuing CA first, root last.
    pub chain: PathBuf,
    /// Signing mechanism: `ecdsa` (hash in software; SoftHSM has nothing else) or `ecdsa-sha256`.
    pub mechanism: Pkcs11Mechanism,
}

/// How the HSM is asked to sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pkcs11Mechanism {
    /// CKM_ECDSA over a digest computed in software.
    Ecdsa,
    /// CKM_ECDSA_SHA256/384: the HSM hashes (for HSMs that support it).
    EcdsaWithHash,
}

/// `ca.file`: a PKCS#8 key (optionally encrypted) and the chain, issuing CA first, root last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCaConfig {
    /// PKCS#8 PEM private key of the issuing CA.
    pub key: PathBuf,
    /// PEM chain: issuing CA first, root last.
    pub chain: PathBuf,
    /// Password for an encrypted key; `None` means the key is stored in the clear.
    pub password: Option<SecretRef>,
}

impl CaConfig {
    /// The file CA that this configuration names, with the generated one resolved under `data_dir`.
    pub fn file(&self, data_dir: &Path) -> FileCaConfig {
        match self {
            CaConfig::Generated => FileCaConfig {
                key: data_dir.join("ca").join("ca-key.pem"),
                chain: data_dir.join("ca").join("ca-chain.pem"),
                password: None,
            },
            CaConfig::File(f) => f.clone(),
            CaConfig::Pkcs11(p) => FileCaConfig {
                key: PathBuf::new(),
                chain: p.chain.clone(),
                password: None,
            },
        }
    }

    /// The chain file, wherever the key lives.
    pub fn chain_path(&self, data_dir: &Path) -> PathBuf {
        self.file(data_dir).chain
    }
}

/// Certificate Transparency mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtLogConfig {
    /// Explicit opt-out: certificates are issued without an SCT. Logged loudly at start-up.
    Disabled,
    /// The embedded RFC 6962 log (the default).
    Embedded(EmbeddedCtLog),
    /// A remote RFC 6962 log.
    Remote(RemoteCtLog),
}

/// `ct_log: embedded` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedCtLog {
    /// The log's own HTTP listener (RFC 6962 API for monitors and auditors).
    pub listen: SocketAddr,
    /// Path prefix: the log's base URL is `http://<listen>/<prefix>`.
    pub prefix: String,
    /// Maximum merge delay.
    pub mmd: Duration,
    /// Keep the log's signing key in the CA's PKCS#11 token under this label (needs `ca.pkcs11`;
    /// `keyless ca init` creates it). Unset: a P-256 key file in `data_dir/ctlog`.
    pub pkcs11_key_label: Option<String>,
    /// Quotas for `add-chain`/`add-pre-chain` over HTTP (outside submitters). The CA's own
    /// submissions never count against them and never wait behind them.
    pub submissions: SubmissionLimits,
}

impl Default for EmbeddedCtLog {
    fn default() -> Self {
        EmbeddedCtLog {
            listen: DEFAULT_CT_LISTEN.parse().expect("constant address"),
            prefix: "keyless".into(),
            mmd: Duration::from_secs(1),
            pkcs11_key_label: None,
            submissions: SubmissionLimits::default(),
        }
    }
}

/// `ct_log.embedded.submissions`: what outside submitters may add to the embedded log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubmissionLimits {
    /// Per source address (`None`: unlimited).
    pub per_address: Option<Bucket>,
    /// All outside submitters together (`None`: unlimited).
    pub total: Option<Bucket>,
    /// Outside submissions waiting for the writer at once; more are answered 503.
    pub queue: usize,
}

impl Default for SubmissionLimits {
    /// 10/s per address (bursts of 20) and 100/s in all (bursts of 200): far more than monitors
    /// resubmitting certificates need, far less than the log's write capacity.
    fn default() -> Self {
        SubmissionLimits {
            per_address: Some(Bucket {
                rate: 10,
                per: Duration::from_secs(1),
                burst: 20,
            }),
            total: Some(Bucket {
                rate: 100,
                per: Duration::from_secs(1),
                burst: 200,
            }),
            queue: 256,
        }
    }
}

/// `ct_log: {url, public_key}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCtLog {
    /// Base URL (`<url>/ct/v1/add-pre-chain`).
    pub url: String,
    /// PEM file with the log's public key; every SCT is verified with it.
    pub public_key: PathBuf,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Attempts, including the first.
    pub attempts: u32,
}

/// Default listener of the embedded CT log (RFC 6962 logs conventionally use 6962).
pub const DEFAULT_CT_LISTEN: &str = "127.0.0.1:6962";

/// Leaf certificate settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateConfig {
    /// Lifetime of issued certificates.
    pub validity: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    metrics_listen: Option<String>,
    data_dir: Option<String>,
    ca: Option<RawCa>,
    ct_log: Option<serde_json::Value>,
    issuers_file: Option<String>,
    #[serde(default)]
    issuers: Vec<issuer::RawIssuer>,
    certificate: Option<RawCertificate>,
    /// Serve the INSECURE development issuer (loopback listeners only), e.g. for benchmarks.
    #[serde(default)]
    insecure_dev_issuer: bool,
    tls: Option<ops::RawTls>,
    log: Option<ops::RawLog>,
    limits: Option<ops::RawLimits>,
    rate_limits: Option<ops::RawRateLimits>,
    audit: Option<ops::RawAudit>,
    health: Option<RawHealth>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCa {
    file: Option<RawFileCa>,
    pkcs11: Option<RawPkcs11>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPkcs11 {
    module: String,
    token_label: String,
    pin: String,
    key_label: String,
    chain: String,
    mechanism: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileCa {
    key: String,
    chain: String,
    password: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificate {
    validity: Option<String>,
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
        let raw: RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::rule(if path == "." { String::new() } else { path }, e.into_inner())
        })?;
        raw.validate(base)
    }

    /// The configuration `keyless serve --dev` uses: loopback listener, generated CA, the insecure
    /// development issuer, and the embedded CT log.
    pub fn dev(data_dir: PathBuf) -> Config {
        Config {
            listen: DEFAULT_LISTEN.parse().expect("constant address"),
            metrics_listen: None,
            data_dir,
            ca: CaConfig::Generated,
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
        }
    }
}

impl RawConfig {
    fn validate(self, base: &Path) -> Result<Config, ConfigError> {
        let listen = match self.listen {
            None => DEFAULT_LISTEN.parse().expect("constant address"),
            Some(s) => s
                .parse()
                .map_err(|_| ConfigError::rule("listen", format!("{s:?} is not an address such as 127.0.0.1:5555")))?,
        };
        let metrics_listen = self
            .metrics_listen
            .map(|s| {
                s.parse()
                    .map_err(|_| ConfigError::rule("metrics_listen", format!("{s:?} is not an address")))
            })
            .transpose()?;
        let data_dir = resolve(base, self.data_dir.as_deref().unwrap_or("./keyless-data"));
        let ca = match self.ca {
            None => CaConfig::Generated,
            Some(RawCa {
                file: None,
                pkcs11: Some(p),
            }) => {
                let pin = SecretRef::parse(&p.pin).map_err(|e| ConfigError::rule("ca.pkcs11.pin", e))?;
                if p.token_label.is_empty() || p.key_label.is_empty() {
                    return Err(ConfigError::rule(
                        "ca.pkcs11",
                        "token_label and key_label must not be empty",
                    ));
                }
                let mechanism = match p.mechanism.as_deref() {
                    None | Some("ecdsa") => Pkcs11Mechanism::Ecdsa,
                    Some("ecdsa-sha256") => Pkcs11Mechanism::EcdsaWithHash,
                    Some(other) => {
                        return Err(ConfigError::rule(
                            "ca.pkcs11.mechanism",
                            format!("{other:?} is not `ecdsa` or `ecdsa-sha256`"),
                        ));
                    }
                };
                CaConfig::Pkcs11(Pkcs11CaConfig {
                    module: resolve(base, &p.module),
                    token_label: p.token_label,
                    pin,
                    key_label: p.key_label,
                    chain: resolve(base, &p.chain),
                    mechanism,
                })
            }
            Some(RawCa {
                file: None,
                pkcs11: None,
            })
            | Some(RawCa {
                file: Some(_),
                pkcs11: Some(_),
            }) => {
                return Err(ConfigError::rule("ca", "set exactly one of `file` or `pkcs11`"));
            }
            Some(RawCa {
                file: Some(file),
                pkcs11: None,
            }) => {
                let password = file
                    .password
                    .map(|p| SecretRef::parse(&p).map_err(|e| ConfigError::rule("ca.file.password", e)))
                    .transpose()?;
                CaConfig::File(FileCaConfig {
                    key: resolve(base, &file.key),
                    chain: resolve(base, &file.chain),
                    password,
                })
            }
        };
        let ct_log = ct_log(self.ct_log, base)?;
        if let CtLogConfig::Embedded(EmbeddedCtLog {
            pkcs11_key_label: Some(label),
            ..
        }) = &ct_log
        {
            match &ca {
                CaConfig::Pkcs11(p) if *label != p.key_label && *label != format!("{}-root", p.key_label) => {}
                CaConfig::Pkcs11(_) => {
                    return Err(ConfigError::rule(
                        "ct_log.embedded.pkcs11_key_label",
                        "must differ from the CA's key labels: the log never signs with the CA key",
                    ));
                }
                _ => {
                    return Err(ConfigError::rule(
                        "ct_log.embedded.pkcs11_key_label",
                        "needs `ca.pkcs11` (the log key lives in the CA's token)",
                    ));
                }
            }
        }
        let mut issuers = Vec::new();
        let mut issuers_file = None;
        if let Some(file) = self.issuers_file {
            let path = resolve(base, &file);
            issuers_file = Some(path.clone());
            let text = read_limited(&path)?;
            issuers.extend(parse_issuers_file(&text).map_err(|e| e.in_file(&path))?);
        }
        for (i, raw) in self.issuers.into_iter().enumerate() {
            issuers.push(raw.validate(base).map_err(|e| e.under(&format!("issuers[{i}]")))?);
        }
        for (i, a) in issuers.iter().enumerate() {
            if issuers[..i].iter().any(|b| b.url == a.url) {
                return Err(ConfigError::rule(
                    "issuers",
                    format!("issuer {:?} is configured twice", a.url),
                ));
            }
        }
        let validity = match self.certificate.and_then(|c| c.validity) {
            None => DEFAULT_VALIDITY,
            Some(v) => {
                let d = parse_duration(&v).map_err(|e| ConfigError::rule("certificate.validity", e))?;
                if d < Duration::from_secs(60) || d > MAX_VALIDITY {
                    return Err(ConfigError::rule(
                        "certificate.validity",
                        format!("{v} is outside the allowed range 1m to 24h"),
                    ));
                }
                d
            }
        };
        Ok(Config {
            listen,
            metrics_listen,
            data_dir,
            ca,
            ct_log,
            issuers,
            certificate: CertificateConfig { validity },
            source: None,
            issuers_file,
            insecure_dev_issuer: self.insecure_dev_issuer,
            tls: self.tls.map(|t| t.validate(base)),
            log_format: self.log.map(ops::RawLog::validate).transpose()?.unwrap_or_default(),
            limits: self
                .limits
                .map(ops::RawLimits::validate)
                .transpose()?
                .unwrap_or_default(),
            rate_limits: match self.rate_limits {
                None => RateLimits::default(),
                Some(r) => RateLimits::default().with(&r.validate("rate_limits")?),
            },
            audit: self.audit.map(|a| a.validate(base)).transpose()?.unwrap_or_default(),
            health_token: self
                .health
                .and_then(|h| h.token)
                .map(|t| SecretRef::parse(&t).map_err(|e| ConfigError::rule("health.token", e)))
                .transpose()?,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCtLog {
    embedded: Option<RawEmbedded>,
    url: Option<String>,
    public_key: Option<String>,
    timeout: Option<String>,
    attempts: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEmbedded {
    listen: Option<String>,
    prefix: Option<String>,
    mmd: Option<String>,
    pkcs11_key_label: Option<String>,
    submissions: Option<RawSubmissions>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSubmissions {
    per_address: Option<ops::RawBucket>,
    total: Option<ops::RawBucket>,
    queue: Option<usize>,
}

impl RawSubmissions {
    fn validate(self) -> Result<SubmissionLimits, ConfigError> {
        let mut out = SubmissionLimits::default();
        if let Some(b) = self.per_address {
            out.per_address = b.validate("ct_log.embedded.submissions.per_address")?;
        }
        if let Some(b) = self.total {
            out.total = b.validate("ct_log.embedded.submissions.total")?;
        }
        if let Some(q) = self.queue {
            if q == 0 {
                return Err(ConfigError::rule("ct_log.embedded.submissions.queue", "must be above zero"));
            }
            out.queue = q;
        }
        Ok(out)
    }
}

/// `ct_log:` is `embedded` (default), `disabled`, `{embedded: {...}}` or `{url, public_key}`.
/// A map without a URL is an error, never a silent opt-out.
fn ct_log(raw: Option<serde_json::Value>, base: &Path) -> Result<CtLogConfig, ConfigError> {
    let value = match raw {
        None => return Ok(CtLogConfig::Embedded(EmbeddedCtLog::default())),
        Some(serde_json::Value::String(s)) if s == "disabled" => return Ok(CtLogConfig::Disabled),
        Some(serde_json::Value::String(s)) if s == "embedded" => {
            return Ok(CtLogConfig::Embedded(EmbeddedCtLog::default()));
        }
        Some(v @ serde_json::Value::Object(_)) => v,
        Some(other) => {
            return Err(ConfigError::rule(
                "ct_log",
                format!("expected `embedded`, `disabled` or a mapping, found {other}"),
            ));
        }
    };
    let raw: RawCtLog = serde_path_to_error::deserialize(value)
        .map_err(|e| ConfigError::rule(format!("ct_log.{}", e.path()), e.into_inner()))?;
    match (raw.embedded, raw.url) {
        (Some(_), Some(_)) => Err(ConfigError::rule("ct_log", "set either `embedded` or `url`, not both")),
        (Some(e), None) => {
            if raw.public_key.is_some() || raw.timeout.is_some() || raw.attempts.is_some() {
                return Err(ConfigError::rule(
                    "ct_log",
                    "public_key, timeout and attempts apply to a remote log (`url`)",
                ));
            }
            let mut out = EmbeddedCtLog::default();
            if let Some(l) = e.listen {
                out.listen = l
                    .parse()
                    .map_err(|_| ConfigError::rule("ct_log.embedded.listen", format!("{l:?} is not an address")))?;
            }
            if let Some(p) = e.prefix {
                let p = p.trim_matches('/').to_string();
                if p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)) {
                    return Err(ConfigError::rule(
                        "ct_log.embedded.prefix",
                        "use letters, digits, '-', '_', '.', '/'",
                    ));
                }
                out.prefix = p;
            }
            if let Some(m) = e.mmd {
                out.mmd = parse_duration(&m).map_err(|e| ConfigError::rule("ct_log.embedded.mmd", e))?;
                if out.mmd < Duration::from_millis(20) || out.mmd > Duration::from_secs(86400) {
                    return Err(ConfigError::rule("ct_log.embedded.mmd", "must be between 20ms and 24h"));
                }
            }
            out.pkcs11_key_label = e.pkcs11_key_label;
            if let Some(s) = e.submissions {
                out.submissions = s.validate()?;
            }
            Ok(CtLogConfig::Embedded(out))
        }
        (None, Some(url)) => {
            let u = url::Url::parse(&url)
                .map_err(|e| ConfigError::rule("ct_log.url", format!("{url:?} is not a URL: {e}")))?;
            if u.scheme() != "https" && !(u.scheme() == "http" && is_loopback_url(&u)) {
                return Err(ConfigError::rule(
                    "ct_log.url",
                    "must be https (plain http only on loopback)",
                ));
            }
            let public_key = raw.public_key.ok_or_else(|| {
                ConfigError::rule(
                    "ct_log.public_key",
                    "is required with a url: every SCT is verified with it",
                )
            })?;
            let timeout = match raw.timeout {
                Some(t) => parse_duration(&t).map_err(|e| ConfigError::rule("ct_log.timeout", e))?,
                None => Duration::from_secs(10),
            };
            let attempts = raw.attempts.unwrap_or(3);
            if attempts == 0 || attempts > 10 {
                return Err(ConfigError::rule("ct_log.attempts", "must be between 1 and 10"));
            }
            Ok(CtLogConfig::Remote(RemoteCtLog {
                url,
                public_key: resolve(base, &public_key),
                timeout,
                attempts,
            }))
        }
        (None, None) => Err(ConfigError::rule(
            "ct_log",
            "a mapping needs `url` (a remote log) or `embedded`; to run without CT say `ct_log: disabled`",
        )),
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

fn read_limited(path: &Path) -> Result<String, ConfigError> {
    let meta = std::fs::metadata(path).map_err(|e| ConfigError::io(path, e))?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::rule(
            path.display().to_string(),
            format!("file is larger than {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, e))
}

fn resolve(base: &Path, p: &str) -> PathBuf {
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
        assert_eq!(c.ca, CaConfig::Generated);
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
        match c.ca {
            CaConfig::File(f) => {
                assert_eq!(f.key, PathBuf::from("/etc/keyless/ca-key.pem"));
                assert_eq!(f.password, Some(SecretRef::Env("KEYLESS_CA_PASSWORD".into())));
            }
            other => panic!("unexpected {other:?}"),
        }
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
    fn nested_unknown_key_is_named_with_path() {
        let e = load("ca:\n  file: { key: a, chain: b, passwrd: x }\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("ca.file"), "{e}");
        assert!(e.contains("passwrd"), "{e}");
    }

    #[test]
    fn literal_password_is_refused() {
        let e = load("ca:\n  file: { key: a, chain: b, password: hunter2 }\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("ca.file.password:"), "{e}");
        assert!(!e.contains("hunter2"), "secret echoed: {e}");
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
    fn pkcs11_ca() {
        let c = load("ca:\n  pkcs11: {module: /usr/lib/softhsm/libsofthsm2.so, token_label: keyless, pin: env:PIN, key_label: k, chain: c.pem}\n").unwrap();
        match c.ca {
            CaConfig::Pkcs11(p) => {
                assert_eq!(p.pin, SecretRef::Env("PIN".into()));
                assert_eq!(p.chain, PathBuf::from("/etc/keyless/c.pem"));
                assert_eq!(p.mechanism, Pkcs11Mechanism::Ecdsa);
            }
            other => panic!("{other:?}"),
        }
        let e = load("ca:\n  pkcs11: {module: m, token_label: t, pin: '1234', key_label: k, chain: c}\n").unwrap_err();
        assert!(e.to_string().starts_with("ca.pkcs11.pin:"), "{e}");
        let e = load("ca: {}\n").unwrap_err();
        assert!(e.to_string().contains("exactly one"), "{e}");
    }

    #[test]
    fn ct_log_forms() {
        let c = load("ct_log: {embedded: {listen: 127.0.0.1:0, prefix: /logs/a/, mmd: 250ms}}\n").unwrap();
        match c.ct_log {
            CtLogConfig::Embedded(e) => {
                assert_eq!(
                    (e.listen.port(), e.prefix.as_str(), e.mmd),
                    (0, "logs/a", Duration::from_millis(250))
                )
            }
            other => panic!("{other:?}"),
        }
        let c = load("ct_log: {url: https://ct.example/log, public_key: ct.pem}\n").unwrap();
        assert!(
            matches!(c.ct_log, CtLogConfig::Remote(r) if r.public_key == Path::new("/etc/keyless/ct.pem") && r.attempts == 3)
        );
        let e = load("ct_log: {public_key: ct.pem}\n").unwrap_err().to_string();
        assert!(e.starts_with("ct_log:") && e.contains("disabled"), "{e}");
        let e = load("ct_log: {url: https://ct.example/log}\n").unwrap_err().to_string();
        assert!(e.starts_with("ct_log.public_key:"), "{e}");
        let e = load("ct_log: {url: http://ct.example/log, public_key: k}\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("ct_log.url:"), "{e}");
        let e = load("ct_log: {embedded: {lisen: x}}\n").unwrap_err().to_string();
        assert!(e.contains("lisen"), "{e}");
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
        assert!(!o.allow_sub_challenge, "a proof over sub is opt-in");
        let c = Config::from_yaml(
            "issuers:\n - {url: https://idp.example, type: email, allow_sub_challenge: true}\n",
            &dir,
        )
        .unwrap();
        assert!(c.issuers[0].options.allow_sub_challenge);
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
        assert_eq!(gh.kind, IssuerKind::CiProvider);
        assert_eq!(gh.ci_provider.as_ref().unwrap().extensions.len(), 20);
        let dex = issuers
            .iter()
            .find(|i| i.url == "https://oauth2.sigstore.dev/auth")
            .unwrap();
        assert_eq!(dex.issuer_claim.as_deref(), Some("$.federated_claims.connector_id"));
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
}
