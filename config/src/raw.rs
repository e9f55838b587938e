//! The configuration file as written (`RawConfig`) and its validation into a [`Config`]. Each
//! section with rules of its own validates in its module (`ca`, `ctlog`, `issuer`, `ops`).

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::{
    CertificateConfig, Config, ConfigError, DEFAULT_LISTEN, DEFAULT_VALIDITY, MAX_VALIDITY, RateLimits, SecretRef, ca,
    ctlog, issuer, ops, parse_duration, read_issuers_file, read_limited, resolve,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    listen: Option<String>,
    metrics_listen: Option<String>,
    grpc_listen: Option<String>,
    data_dir: Option<String>,
    ca: Option<ca::RawCa>,
    ct_log: Option<serde_json::Value>,
    issuers_file: Option<String>,
    #[serde(default)]
    issuers: Vec<issuer::raw::RawIssuer>,
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
    client_signing_algorithms: Option<Vec<String>>,
    /// Trust the public-good Sigstore issuer set bundled with Keyless CA.
    #[serde(default)]
    public_good_issuers: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificate {
    validity: Option<String>,
}

impl RawConfig {
    pub(crate) fn validate(self, base: &Path) -> Result<Config, ConfigError> {
        let listen = match self.listen {
            None => DEFAULT_LISTEN.parse().expect("constant address"),
            Some(s) => s
                .parse()
                .map_err(|_| ConfigError::rule("listen", format!("{s:?} is not an address such as 127.0.0.1:5555")))?,
        };
        let grpc_listen = self
            .grpc_listen
            .map(|s| {
                s.parse()
                    .map_err(|_| ConfigError::rule("grpc_listen", format!("{s:?} is not an address")))
            })
            .transpose()?;
        let metrics_listen = self
            .metrics_listen
            .map(|s| {
                s.parse()
                    .map_err(|_| ConfigError::rule("metrics_listen", format!("{s:?} is not an address")))
            })
            .transpose()?;
        let data_dir = resolve(base, self.data_dir.as_deref().unwrap_or("./keyless-data"));
        let ca = ca::validate(self.ca, base, &data_dir)?;
        let ct_log = ctlog::validate(self.ct_log, base)?;
        ctlog::check_log_key(&ct_log, &ca)?;
        let mut issuers = Vec::new();
        let mut warnings = Vec::new();
        if self.public_good_issuers {
            issuers.extend(crate::public_good_issuers().map_err(|e| e.under("public_good_issuers"))?);
        }
        let mut issuers_file = None;
        if let Some(file) = self.issuers_file {
            let path = resolve(base, &file);
            issuers_file = Some(path.clone());
            let text = read_limited(&path)?;
            let read = read_issuers_file(&text).map_err(|e| e.in_file(&path))?;
            issuers.extend(read.issuers);
            warnings.extend(read.warnings.into_iter().map(|w| w.in_file(&path)));
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
            grpc_listen,
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
            client_signing_algorithms: ca::validate_client_algorithms(self.client_signing_algorithms)?,
            public_good_issuers: self.public_good_issuers,
            warnings,
            health_token: self
                .health
                .and_then(|h| h.token)
                .map(|t| SecretRef::parse(&t).map_err(|e| ConfigError::rule("health.token", e)))
                .transpose()?,
        })
    }
}
