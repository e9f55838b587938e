//! Shared test fixtures: a real PKI made with rcgen, a real log in a temp dir, and its HTTP API on
//! a real loopback listener that records peer addresses.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyless_config::SubmissionLimits;
use keyless_ctlog::{EmbeddedLog, LogOptions};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};

pub const POISON: &[u64] = &[1, 3, 6, 1, 4, 1, 11129, 2, 4, 3];

pub type Ca = CertifiedIssuer<'static, KeyPair>;

/// CA parameters: `cA=TRUE`, the given path length, keyCertSign unless `ku` is false.
pub fn ca_params(name: &str, path_len: Option<u8>, ku: bool) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    if ku {
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    }
    p
}

pub fn root() -> Ca {
    CertifiedIssuer::self_signed(ca_params("Test Root", Some(1), true), KeyPair::generate().unwrap()).unwrap()
}

pub fn sub_ca(params: CertificateParams, issuer: &Ca) -> Ca {
    CertifiedIssuer::signed_by(params, KeyPair::generate().unwrap(), issuer).unwrap()
}

/// A root and an issuing CA under it.
pub struct Pki {
    pub root: Ca,
    pub issuing: Ca,
}

impl Pki {
    pub fn new() -> Pki {
        let root = root();
        let issuing = sub_ca(ca_params("Test Issuing CA", Some(0), true), &root);
        Pki { root, issuing }
    }

    pub fn root_der(&self) -> Vec<u8> {
        self.root.der().to_vec()
    }

    pub fn issuing_der(&self) -> Vec<u8> {
        self.issuing.der().to_vec()
    }

    /// `[leaf, issuing, root]` for a new leaf (a precertificate when `precert`).
    pub fn chain(&self, name: &str, precert: bool) -> Vec<Vec<u8>> {
        vec![
            leaf(&self.issuing, name, precert, 0),
            self.issuing_der(),
            self.root_der(),
        ]
    }
}

/// An end-entity certificate issued by `issuer`, with the CT poison when `precert`, padded with a
/// non-critical extension of `pad` bytes.
pub fn leaf(issuer: &Ca, name: &str, precert: bool, pad: usize) -> Vec<u8> {
    let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
    p.is_ca = IsCa::ExplicitNoCa;
    if precert {
        let mut poison = CustomExtension::from_oid_content(POISON, vec![5, 0]);
        poison.set_criticality(true);
        p.custom_extensions.push(poison);
    }
    if pad > 0 {
        p.custom_extensions.push(pad_extension(pad));
    }
    p.signed_by(&KeyPair::generate().unwrap(), issuer)
        .unwrap()
        .der()
        .to_vec()
}

/// A non-critical private extension of `n` opaque bytes.
pub fn pad_extension(n: usize) -> CustomExtension {
    CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![0x41; n])
}

pub fn opts() -> LogOptions {
    LogOptions {
        mmd: Duration::from_millis(200),
        commit_timeout: Duration::from_secs(10),
        name: "test".into(),
    }
}

pub fn open(dir: &Path, pki: &Pki) -> EmbeddedLog {
    EmbeddedLog::open(dir, &[pki.root_der()], opts(), None).unwrap()
}

/// No quotas at all (a big queue, no buckets).
pub fn unlimited() -> SubmissionLimits {
    SubmissionLimits {
        per_address: None,
        total: None,
        queue: 100_000,
        ca_addresses: Vec::new(),
    }
}

/// The log's API on 127.0.0.1 with peer addresses recorded; returns its base URL.
pub async fn serve(log: EmbeddedLog, limits: SubmissionLimits) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = keyless_ctlog::http::router(log, limits);
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .unwrap();
    });
    format!("http://{addr}")
}

pub fn body(chain: &[Vec<u8>]) -> serde_json::Value {
    serde_json::json!({ "chain": chain.iter().map(|c| STANDARD.encode(c)).collect::<Vec<_>>() })
}

/// POSTs a chain; returns status, headers and the JSON answer.
pub async fn post(
    http: &reqwest::Client,
    base: &str,
    endpoint: &str,
    chain: &[Vec<u8>],
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let r = http
        .post(format!("{base}/ct/v1/{endpoint}"))
        .json(&body(chain))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let json = r.json().await.unwrap_or(serde_json::Value::Null);
    (status, headers, json)
}

pub fn b64(v: &serde_json::Value) -> Vec<u8> {
    STANDARD.decode(v.as_str().unwrap()).unwrap()
}

/// Waits until the published tree head covers every committed entry.
pub fn published(log: &EmbeddedLog) {
    assert!(log.flush(Duration::from_secs(5)), "the tree head caught up");
}
