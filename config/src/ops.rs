//! Operational settings: native TLS, log format, request limits and rate limits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::{ConfigError, SecretRef, parse_duration, resolve};

/// Native TLS for the API listener. The files are re-read when they change on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (colour only on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    /// Parses `text` or `json`.
    pub fn parse(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?} is not `text` or `json`")),
        }
    }
}

/// Limits that protect the server from overload, slow clients and oversized requests. The API
/// listener and the embedded CT log's listener each apply their own copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Requests handled at once (after their body has arrived); more are shed at once with 503
    /// and `Retry-After`.
    pub max_concurrent_requests: usize,
    /// A request that takes longer (once its body has arrived) is answered 503.
    pub request_timeout: Duration,
    /// Total size of a request's header block; larger gets 431.
    pub max_header_bytes: usize,
    /// On SIGTERM, how long requests in flight may take to finish.
    pub shutdown_grace: Duration,
    /// Open connections at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Open connections from one source address (`None`: no per-address limit, e.g. behind a
    /// load balancer whose address every connection shares).
    pub max_connections_per_address: Option<usize>,
    /// A connection must deliver a request's whole header block within this.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no bytes moving is closed after this.
    pub idle_timeout: Duration,
    /// A request body must arrive completely within this ...
    pub body_timeout: Duration,
    /// ... and, after its first second, at no less than this many bytes per second on average.
    pub min_body_rate: u64,
    /// Concurrent HTTP/2 streams per connection.
    pub max_h2_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent_requests: 1024,
            request_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            shutdown_grace: Duration::from_secs(20),
            max_connections: 4096,
            max_connections_per_address: Some(512),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(10),
            min_body_rate: 1024,
            max_h2_streams: 64,
        }
    }
}

/// A token bucket: `rate` requests per `per` on average, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Requests refilled per `per`.
    pub rate: u32,
    /// Refill period.
    pub per: Duration,
    /// Bucket size.
    pub burst: u32,
}

impl Bucket {
    /// Parses `N/s`, `N/min` or `N/h` with a burst.
    fn parse(rate: &str, burst: Option<u32>) -> Result<Bucket, String> {
        let (n, unit) = rate
            .split_once('/')
            .ok_or_else(|| format!("{rate:?} is not a rate such as 300/min"))?;
        let n: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("{rate:?}: {n:?} is not a whole number"))?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => return Err(format!("{rate:?}: unit {other:?} is not s, min or h")),
        };
        if n == 0 {
            return Err(format!("{rate:?}: a rate must be above zero"));
        }
        let burst = burst.unwrap_or(n);
        if burst == 0 {
            return Err("burst must be above zero".into());
        }
        Ok(Bucket { rate: n, per, burst })
    }
}

/// Rate limits applied after the token verifies: per certificate identity (issuer + SAN), so a
/// CI fleet behind one address is not throttled as one client, and per issuer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Per identity (issuer URL + SAN); `None`: unlimited.
    pub per_identity: Option<Bucket>,
    /// Per issuer; `None`: unlimited.
    pub per_issuer: Option<Bucket>,
}

impl Default for RateLimits {
    /// 300 certificates a minute per identity (bursts of 100): far above what one workflow
    /// needs, low enough to stop a runaway loop. No per-issuer limit.
    fn default() -> Self {
        RateLimits {
            per_identity: Some(Bucket {
                rate: 300,
                per: Duration::from_secs(60),
                burst: 100,
            }),
            per_issuer: None,
        }
    }
}

/// The issuance record (`<data_dir>/audit/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// Record every decision (default). Off only for throwaway benchmarks.
    pub enabled: bool,
    /// Also write each committed record as a JSON line: `-` for stdout, or a file path.
    pub export: Option<AuditExport>,
    /// The checkpoint signing key (default `<data_dir>/audit/audit-key.pem`). Keep it away from
    /// the database, so whoever can rewrite the record cannot also re-sign it.
    pub key: Option<PathBuf>,
    /// After every commit, the latest signed checkpoint is written here (atomically, as JSON):
    /// an anchor outside the record for `keyless audit verify --against`.
    pub checkpoint_export: Option<PathBuf>,
    /// Refusal records waiting for the writer; beyond this they are dropped and counted, so
    /// refusals can never slow or fail an issuance.
    pub refusal_queue: usize,
    /// Keep the record on PostgreSQL, shared by every replica, instead of SQLite in the data
    /// directory.
    pub postgres: Option<AuditPostgres>,
}

/// `audit.postgres`: the shared issuance record of several replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPostgres {
    /// The connection URL (`postgres://user:password@host/db`): a secret, as it carries the
    /// password, so only `env:NAME` or `file:PATH`.
    pub url: SecretRef,
    /// Connections the writer keeps at most (default 4).
    pub pool_size: usize,
    /// `audit.postgres.ca_cert`: the PEM bundle that a URL with `sslmode=require` verifies the
    /// server against (instead of the system roots). Read at start-up.
    pub ca_cert: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuditPostgres {
    url: String,
    pool_size: Option<usize>,
    ca_cert: Option<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            export: None,
            key: None,
            checkpoint_export: None,
            refusal_queue: 10_000,
            postgres: None,
        }
    }
}

/// Where the JSON-lines export goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditExport {
    /// Standard output.
    Stdout,
    /// Appended to this file.
    File(PathBuf),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAudit {
    enabled: Option<bool>,
    export: Option<String>,
    key: Option<String>,
    checkpoint_export: Option<String>,
    refusal_queue: Option<usize>,
    postgres: Option<RawAuditPostgres>,
}

impl RawAudit {
    pub(crate) fn validate(self, base: &Path) -> Result<AuditConfig, ConfigError> {
        let refusal_queue = self.refusal_queue.unwrap_or(AuditConfig::default().refusal_queue);
        if refusal_queue == 0 {
            return Err(ConfigError::rule("audit.refusal_queue", "must be above zero"));
        }
        let postgres = match self.postgres {
            None => None,
            Some(p) => {
                let url = SecretRef::parse(&p.url).map_err(|e| ConfigError::rule("audit.postgres.url", e))?;
                let pool_size = p.pool_size.unwrap_or(4);
                if pool_size == 0 {
                    return Err(ConfigError::rule("audit.postgres.pool_size", "must be above zero"));
                }
                Some(AuditPostgres {
                    url,
                    pool_size,
                    ca_cert: p.ca_cert.map(|c| resolve(base, &c)),
                })
            }
        };
        Ok(AuditConfig {
            enabled: self.enabled.unwrap_or(true),
            export: self.export.map(|e| match e.as_str() {
                "-" => AuditExport::Stdout,
                path => AuditExport::File(resolve(base, path)),
            }),
            key: self.key.map(|k| resolve(base, &k)),
            checkpoint_export: self.checkpoint_export.map(|c| resolve(base, &c)),
            refusal_queue,
            postgres,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    cert: String,
    key: String,
}

impl RawTls {
    pub(crate) fn validate(self, base: &Path) -> TlsConfig {
        TlsConfig {
            cert: resolve(base, &self.cert),
            key: resolve(base, &self.key),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    format: Option<String>,
}

impl RawLog {
    pub(crate) fn validate(self) -> Result<LogFormat, ConfigError> {
        self.format
            .map(|f| LogFormat::parse(&f).map_err(|e| ConfigError::rule("log.format", e)))
            .transpose()
            .map(Option::unwrap_or_default)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    max_concurrent_requests: Option<usize>,
    request_timeout: Option<String>,
    max_header_bytes: Option<usize>,
    shutdown_grace: Option<String>,
    max_connections: Option<usize>,
    max_connections_per_address: Option<serde_json::Value>,
    header_read_timeout: Option<String>,
    idle_timeout: Option<String>,
    body_timeout: Option<String>,
    min_body_rate: Option<u64>,
    max_h2_streams: Option<u32>,
}

impl RawLimits {
    pub(crate) fn validate(self) -> Result<Limits, ConfigError> {
        let mut limits = Limits::default();
        if let Some(n) = self.max_concurrent_requests {
            if n == 0 {
                return Err(ConfigError::rule(
                    "limits.max_concurrent_requests",
                    "must be above zero",
                ));
            }
            limits.max_concurrent_requests = n;
        }
        if let Some(n) = self.max_header_bytes {
            if n < 1024 {
                return Err(ConfigError::rule("limits.max_header_bytes", "must be at least 1024"));
            }
            limits.max_header_bytes = n;
        }
        let duration = |path: &str, v: Option<String>, default: Duration| match v {
            None => Ok(default),
            Some(v) => parse_duration(&v).map_err(|e| ConfigError::rule(path, e)),
        };
        limits.request_timeout = duration("limits.request_timeout", self.request_timeout, limits.request_timeout)?;
        if limits.request_timeout < Duration::from_millis(100) {
            return Err(ConfigError::rule("limits.request_timeout", "must be at least 100ms"));
        }
        limits.shutdown_grace = duration("limits.shutdown_grace", self.shutdown_grace, limits.shutdown_grace)?;
        if let Some(n) = self.max_connections {
            if n < 16 {
                return Err(ConfigError::rule("limits.max_connections", "must be at least 16"));
            }
            limits.max_connections = n;
        }
        match self.max_connections_per_address {
            None => {}
            Some(serde_json::Value::String(s)) if s == "off" => limits.max_connections_per_address = None,
            Some(serde_json::Value::Bool(false)) => limits.max_connections_per_address = None,
            Some(serde_json::Value::Number(n)) if n.as_u64().is_some_and(|n| n >= 1) => {
                limits.max_connections_per_address = n.as_u64().map(|n| n as usize);
            }
            Some(other) => {
                return Err(ConfigError::rule(
                    "limits.max_connections_per_address",
                    format!("expected a number above zero or `off`, found {other}"),
                ));
            }
        }
        limits.header_read_timeout = duration(
            "limits.header_read_timeout",
            self.header_read_timeout,
            limits.header_read_timeout,
        )?;
        limits.idle_timeout = duration("limits.idle_timeout", self.idle_timeout, limits.idle_timeout)?;
        limits.body_timeout = duration("limits.body_timeout", self.body_timeout, limits.body_timeout)?;
        for (path, d) in [
            ("limits.header_read_timeout", limits.header_read_timeout),
            ("limits.idle_timeout", limits.idle_timeout),
            ("limits.body_timeout", limits.body_timeout),
        ] {
            if d < Duration::from_millis(100) {
                return Err(ConfigError::rule(path, "must be at least 100ms"));
            }
        }
        if let Some(r) = self.min_body_rate {
            limits.min_body_rate = r;
        }
        if let Some(n) = self.max_h2_streams {
            if n == 0 {
                return Err(ConfigError::rule("limits.max_h2_streams", "must be above zero"));
            }
            limits.max_h2_streams = n;
        }
        Ok(limits)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimits {
    per_identity: Option<RawBucket>,
    per_issuer: Option<RawBucket>,
}

/// A bucket, or `off` (which YAML 1.1 readers also see as `false`).
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum RawBucket {
    Flag(bool),
    Off(String),
    On { rate: String, burst: Option<u32> },
}

impl RawBucket {
    pub(crate) fn validate(self, path: &str) -> Result<Option<Bucket>, ConfigError> {
        match self {
            RawBucket::Flag(false) => Ok(None),
            RawBucket::Off(s) if s == "off" => Ok(None),
            RawBucket::Flag(true) => Err(ConfigError::rule(path, "expected `off` or {rate, burst}, found true")),
            RawBucket::Off(s) => Err(ConfigError::rule(
                path,
                format!("expected `off` or {{rate, burst}}, found {s:?}"),
            )),
            RawBucket::On { rate, burst } => Bucket::parse(&rate, burst)
                .map(Some)
                .map_err(|e| ConfigError::rule(path, e)),
        }
    }
}

/// Rate-limit settings as written: each one absent (inherit), `off`, or a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimitOverrides {
    /// `Some(None)`: `off`.
    pub per_identity: Option<Option<Bucket>>,
    /// `Some(None)`: `off`.
    pub per_issuer: Option<Option<Bucket>>,
}

impl RateLimits {
    /// These limits with `overrides` applied (an issuer's own over the global ones).
    pub fn with(self, overrides: &RateLimitOverrides) -> RateLimits {
        RateLimits {
            per_identity: overrides.per_identity.unwrap_or(self.per_identity),
            per_issuer: overrides.per_issuer.unwrap_or(self.per_issuer),
        }
    }
}

impl RawRateLimits {
    pub(crate) fn validate(self, prefix: &str) -> Result<RateLimitOverrides, ConfigError> {
        Ok(RateLimitOverrides {
            per_identity: self
                .per_identity
                .map(|b| b.validate(&format!("{prefix}.per_identity")))
                .transpose()?,
            per_issuer: self
                .per_issuer
                .map(|b| b.validate(&format!("{prefix}.per_issuer")))
                .transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_postgres_record_takes_a_secret_url_and_a_pool_size() {
        let raw = |yaml: &str| -> Result<AuditConfig, String> {
            crate::parse_yaml::<RawAudit>(yaml)
                .map_err(|e| e.to_string())?
                .validate(Path::new("/etc/keyless"))
                .map_err(|e| e.to_string())
        };
        let a = raw("postgres: {url: 'env:KEYLESS_AUDIT_DB'}").unwrap();
        assert_eq!(
            a.postgres,
            Some(AuditPostgres {
                url: SecretRef::Env("KEYLESS_AUDIT_DB".into()),
                pool_size: 4,
                ca_cert: None,
            })
        );
        let a = raw("postgres: {url: 'file:/run/secrets/db', pool_size: 8, ca_cert: db-ca.pem}").unwrap();
        let p = a.postgres.unwrap();
        assert_eq!(p.pool_size, 8);
        assert_eq!(
            p.ca_cert,
            Some(PathBuf::from("/etc/keyless/db-ca.pem")),
            "relative to the file"
        );
        let err = raw("postgres: {url: 'postgres://u:hunter2@db/keyless'}").unwrap_err();
        assert!(err.contains("audit.postgres.url") && !err.contains("hunter2"), "{err}");
        let err = raw("postgres: {url: 'env:DB', pool_size: 0}").unwrap_err();
        assert!(err.contains("audit.postgres.pool_size"), "{err}");
        assert!(
            raw("postgres: {url: 'env:DB', pool: 3}").is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn buckets_parse_and_refuse_nonsense() {
        let b = Bucket::parse("300/min", Some(100)).unwrap();
        assert_eq!((b.rate, b.per, b.burst), (300, Duration::from_secs(60), 100));
        assert_eq!(Bucket::parse("5/s", None).unwrap().burst, 5);
        assert!(Bucket::parse("0/s", None).is_err());
        assert!(Bucket::parse("10", None).unwrap_err().contains("300/min"));
        assert!(Bucket::parse("10/day", None).unwrap_err().contains("unit"));
        assert!(Bucket::parse("10/s", Some(0)).is_err());
    }
}
