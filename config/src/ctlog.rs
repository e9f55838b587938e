//! `ct_log:` — Certificate Transparency: the embedded RFC 6962 log (the default), a remote log,
//! or an explicit opt-out.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::{Bucket, CaConfig, ConfigError, is_loopback_url, ops, parse_duration, resolve};

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionLimits {
    /// Per source address (`None`: unlimited).
    pub per_address: Option<Bucket>,
    /// All outside submitters together (`None`: unlimited).
    pub total: Option<Bucket>,
    /// Outside submissions waiting for the writer at once; more are answered 503.
    pub queue: usize,
    /// `ca_addresses`: where the CA's own replicas submit from when the log runs on its own
    /// (`keyless ctlog serve`). Their submissions are not outside ones: no bucket, no queue place,
    /// as the in-process CA's never are; everyone else stays limited.
    pub ca_addresses: Vec<AddressRange>,
}

/// An IP address or a CIDR range (`10.0.0.0/8`, `2001:db8::/32`, `127.0.0.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl AddressRange {
    /// Parses `ADDR` or `ADDR/PREFIX`.
    pub fn parse(s: &str) -> Result<AddressRange, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0..={max}"))?,
        };
        Ok(AddressRange { addr, prefix })
    }

    /// Whether `ip` (IPv4-mapped IPv6 counts as IPv4) is in the range.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let bits = |ip: std::net::IpAddr| -> (u128, u32) {
            match ip.to_canonical() {
                std::net::IpAddr::V4(a) => (u128::from(u32::from(a)) << 96, 32),
                std::net::IpAddr::V6(a) => (u128::from(a), 128),
            }
        };
        let ((net, width), (candidate, candidate_width)) = (bits(self.addr), bits(ip));
        if width != candidate_width {
            return false;
        }
        let mask = if self.prefix == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(self.prefix))
        };
        net & mask == candidate & mask
    }
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
            ca_addresses: Vec::new(),
        }
    }
}

/// `ct_log: {url, public_key}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCtLog {
    /// Base URL (`<url>/ct/v1/add-pre-chain`): for a static-ct-api log (Sunlight, TesseraCT), its
    /// submission prefix. Plain `http` is accepted for any host (an in-cluster Service, as in
    /// Fulcio's chart): the SCT is verified with `public_key` either way.
    pub url: String,
    /// PEM file with the log's public key; every SCT is verified with it.
    pub public_key: PathBuf,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Attempts, including the first.
    pub attempts: u32,
    /// `ct_log.ca_cert`: PEM bundle trusted (besides the system roots) for the log's TLS, read at
    /// load (Fulcio's `--ct-log.tls-ca-cert`).
    pub ca_cert_pem: Option<String>,
    /// `ct_log.origin`: sent as the HTTP `Host` of every request to the log instead of the URL's
    /// host (Fulcio's `--ct-log-origin`), for a log reached through an address other than the
    /// name its router dispatches on.
    pub origin: Option<String>,
}

impl RemoteCtLog {
    /// Whether submissions travel unencrypted beyond this machine (start-up warns about it).
    pub fn plain_http_off_loopback(&self) -> bool {
        url::Url::parse(&self.url).is_ok_and(|u| u.scheme() == "http" && !is_loopback_url(&u))
    }
}

/// Default listener of the embedded CT log (RFC 6962 logs conventionally use 6962).
pub const DEFAULT_CT_LISTEN: &str = "127.0.0.1:6962";

/// `ct_log.embedded.pkcs11_key_label` names a key in the CA's own token, and never the CA's keys.
pub(crate) fn check_log_key(ct_log: &CtLogConfig, ca: &CaConfig) -> Result<(), ConfigError> {
    let label = match ct_log {
        CtLogConfig::Embedded(EmbeddedCtLog {
            pkcs11_key_label: Some(label),
            ..
        }) => label,
        CtLogConfig::Embedded(_) | CtLogConfig::Disabled | CtLogConfig::Remote(_) => return Ok(()),
    };
    match ca {
        CaConfig::Pkcs11(p) if *label != p.key_label && *label != format!("{}-root", p.key_label) => Ok(()),
        CaConfig::Pkcs11(_) => Err(ConfigError::rule(
            "ct_log.embedded.pkcs11_key_label",
            "must differ from the CA's key labels: the log never signs with the CA key",
        )),
        CaConfig::Generated(_) | CaConfig::File(_) => Err(ConfigError::rule(
            "ct_log.embedded.pkcs11_key_label",
            "needs `ca.pkcs11` (the log key lives in the CA's token)",
        )),
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
    ca_cert: Option<String>,
    origin: Option<String>,
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
    ca_addresses: Option<Vec<String>>,
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
                return Err(ConfigError::rule(
                    "ct_log.embedded.submissions.queue",
                    "must be above zero",
                ));
            }
            out.queue = q;
        }
        for a in self.ca_addresses.unwrap_or_default() {
            out.ca_addresses.push(
                AddressRange::parse(&a)
                    .map_err(|e| ConfigError::rule("ct_log.embedded.submissions.ca_addresses", e))?,
            );
        }
        Ok(out)
    }
}

/// `ct_log:` is `embedded` (default), `disabled`, `{embedded: {...}}` or `{url, public_key}`.
/// A map without a URL is an error, never a silent opt-out.
pub(crate) fn validate(raw: Option<serde_json::Value>, base: &Path) -> Result<CtLogConfig, ConfigError> {
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
            if raw.public_key.is_some()
                || raw.timeout.is_some()
                || raw.attempts.is_some()
                || raw.ca_cert.is_some()
                || raw.origin.is_some()
            {
                return Err(ConfigError::rule(
                    "ct_log",
                    "public_key, timeout, attempts, ca_cert and origin apply to a remote log (`url`)",
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
            // Plain http is accepted anywhere: the SCT is verified with the configured key, so
            // the network can delay or drop submissions but not forge them (start-up warns).
            if u.scheme() != "https" && u.scheme() != "http" {
                return Err(ConfigError::rule(
                    "ct_log.url",
                    format!("scheme {:?} is not allowed; use https (or http)", u.scheme()),
                ));
            }
            if u.host_str().is_none_or(str::is_empty) || u.query().is_some() || u.fragment().is_some() {
                return Err(ConfigError::rule(
                    "ct_log.url",
                    "must be the log's base URL: a host, an optional path, no query or fragment",
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
            let ca_cert_pem = match raw.ca_cert {
                None => None,
                Some(path) => {
                    let pem = std::fs::read_to_string(resolve(base, &path))
                        .map_err(|e| ConfigError::rule("ct_log.ca_cert", format!("cannot read {path}: {e}")))?;
                    crate::issuer::raw::check_pem(&pem).map_err(|e| ConfigError::rule("ct_log.ca_cert", e))?;
                    if u.scheme() != "https" {
                        return Err(ConfigError::rule("ct_log.ca_cert", "applies to an https log URL only"));
                    }
                    Some(pem)
                }
            };
            let origin = raw
                .origin
                .map(|o| check_origin(&o).map_err(|e| ConfigError::rule("ct_log.origin", e)))
                .transpose()?;
            Ok(CtLogConfig::Remote(RemoteCtLog {
                url,
                public_key: resolve(base, &public_key),
                timeout,
                attempts,
                ca_cert_pem,
                origin,
            }))
        }
        (None, None) => Err(ConfigError::rule(
            "ct_log",
            "a mapping needs `url` (a remote log) or `embedded`; to run without CT say `ct_log: disabled`",
        )),
    }
}

/// `ct_log.origin` becomes a `Host` header, so it must be one: a host name or IP literal with an
/// optional port. A static-ct checkpoint origin with a path (`ct.example/2025h1`) is not.
fn check_origin(o: &str) -> Result<String, String> {
    let valid = !o.is_empty()
        && o.len() <= 253
        && o.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
        && url::Url::parse(&format!("http://{o}/")).is_ok_and(|u| u.host_str().is_some());
    if valid {
        Ok(o.to_string())
    } else {
        Err(format!(
            "{o:?} is not a host[:port]: the origin is sent as the HTTP Host header (no scheme or path)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_addresses_are_addresses_or_cidr_ranges() {
        let r = |s: &str| AddressRange::parse(s).unwrap();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(r("10.0.0.0/8").contains(ip("10.200.3.4")));
        assert!(!r("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(r("127.0.0.1").contains(ip("127.0.0.1")) && !r("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(
            r("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")),
            "IPv4-mapped IPv6 is IPv4"
        );
        assert!(r("2001:db8::/32").contains(ip("2001:db8:1::7")));
        assert!(!r("2001:db8::/32").contains(ip("10.0.0.1")));
        assert!(r("0.0.0.0/0").contains(ip("192.0.2.1")));
        for bad in ["10.0.0.0/33", "example.com", "10.0.0.0/x", "::/129"] {
            assert!(AddressRange::parse(bad).is_err(), "{bad}");
        }
    }
    use crate::Config;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(text, Path::new("/etc/keyless"))
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
        let e = load("ct_log: {url: ftp://ct.example/log, public_key: k}\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("ct_log.url: scheme \"ftp\""), "{e}");
        let e = load("ct_log: {url: \"https://ct.example/log?x=1\", public_key: k}\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("ct_log.url:"), "{e}");
        let e = load("ct_log: {embedded: {lisen: x}}\n").unwrap_err().to_string();
        assert!(e.contains("lisen"), "{e}");
    }

    /// Fulcio's CT flags have a key each: plain http to an in-cluster log, a private TLS CA, and
    /// the origin sent as the Host header.
    #[test]
    fn remote_log_transport_settings() {
        let c = load("ct_log: {url: http://ctlog.ctlog-system.svc/fulcio, public_key: ct.pem}\n").unwrap();
        let CtLogConfig::Remote(r) = c.ct_log else { panic!() };
        assert!(r.plain_http_off_loopback());
        assert_eq!((r.ca_cert_pem, r.origin), (None, None));
        let c = load("ct_log: {url: http://127.0.0.1:6962/x, public_key: ct.pem}\n").unwrap();
        let CtLogConfig::Remote(r) = c.ct_log else { panic!() };
        assert!(!r.plain_http_off_loopback());

        let dir = tempfile::tempdir().unwrap();
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        std::fs::write(dir.path().join("ca.pem"), pem).unwrap();
        std::fs::write(dir.path().join("junk.pem"), "junk").unwrap();
        let at = |text: &str| Config::from_yaml(text, dir.path());
        let c = at(
            "ct_log: {url: https://ct.internal/log, public_key: k.pem, ca_cert: ca.pem, origin: \"tesseract:6962\"}\n",
        )
        .unwrap();
        let CtLogConfig::Remote(r) = c.ct_log else { panic!() };
        assert_eq!(r.ca_cert_pem.as_deref(), Some(pem));
        assert_eq!(r.origin.as_deref(), Some("tesseract:6962"));
        for (text, want) in [
            (
                "ct_log: {url: https://ct.internal/log, public_key: k, ca_cert: junk.pem}",
                "ct_log.ca_cert: is not a PEM",
            ),
            (
                "ct_log: {url: https://ct.internal/log, public_key: k, ca_cert: gone.pem}",
                "ct_log.ca_cert: cannot read gone.pem",
            ),
            (
                "ct_log: {url: http://ct.internal/log, public_key: k, ca_cert: ca.pem}",
                "ct_log.ca_cert: applies to an https",
            ),
            (
                "ct_log: {url: https://ct.internal/log, public_key: k, origin: \"ct.example/2025h1\"}",
                "ct_log.origin: \"ct.example/2025h1\" is not a host[:port]",
            ),
            (
                "ct_log: {url: https://ct.internal/log, public_key: k, origin: \"https://ct.example\"}",
                "ct_log.origin:",
            ),
            (
                "ct_log: {url: https://ct.internal/log, public_key: k, origin: \"\"}",
                "ct_log.origin:",
            ),
            (
                "ct_log: {embedded: {}, origin: x}",
                "ct_log: public_key, timeout, attempts, ca_cert and origin apply",
            ),
        ] {
            let e = at(&format!("{text}\n")).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text}: {e}");
        }
    }

    #[test]
    fn log_key_in_the_token_needs_a_pkcs11_ca_and_another_label() {
        let p11 = "ca:\n  pkcs11: {module: m, token_label: t, pin: env:P, key_label: ca, chain: c.pem}\n";
        let c = load(&format!("{p11}ct_log: {{embedded: {{pkcs11_key_label: log}}}}\n")).unwrap();
        assert!(matches!(c.ct_log, CtLogConfig::Embedded(e) if e.pkcs11_key_label.as_deref() == Some("log")));
        for label in ["ca", "ca-root"] {
            let e = load(&format!("{p11}ct_log: {{embedded: {{pkcs11_key_label: {label}}}}}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("ct_log.embedded.pkcs11_key_label: must differ"), "{e}");
        }
        let e = load("ct_log: {embedded: {pkcs11_key_label: log}}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("ct_log.embedded.pkcs11_key_label: needs `ca.pkcs11`"),
            "{e}"
        );
    }
}
