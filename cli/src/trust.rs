//! Trust material for clients of a private deployment: the Sigstore `TrustedRoot` (the CA chain and
//! the CT log key) and the `ClientTrustConfig` that sigstore-python's `--trust-config` takes.

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyless_ca::pipeline::parse_pem_chain;
use keyless_config::{Config, CtLogConfig};
use serde_json::{Value, json};
use x509_parser::prelude::FromDer;

/// URLs the trust material names; taken from the configuration unless overridden.
#[derive(Debug, Default, Clone)]
pub struct Urls {
    /// The CA's API base URL.
    pub ca: Option<String>,
    /// The CT log's base URL.
    pub ct: Option<String>,
}

fn rfc3339(unix: i64) -> anyhow::Result<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(unix)?;
    Ok(t.format(&time::format_description::well_known::Rfc3339)?)
}

fn url_for(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<String> {
    if addr.port() == 0 {
        bail!("{what} listens on port 0, so its URL is not known in advance; pass it explicitly");
    }
    Ok(format!("http://{addr}"))
}

/// The `TrustedRoot` JSON for this configuration.
pub fn trusted_root(config: &Config, urls: &Urls) -> anyhow::Result<Value> {
    let chain_path = config.ca.chain_path();
    let chain_text = std::fs::read_to_string(chain_path).with_context(|| {
        format!(
            "reading {} (run `keyless ca init` or start the CA once)",
            chain_path.display()
        )
    })?;
    let chain = parse_pem_chain(&chain_text)?;
    let root = chain.last().context("empty chain")?;
    let (_, root_cert) = x509_parser::certificate::X509Certificate::from_der(root)?;
    let attr = |oid: &x509_parser::der_parser::oid::Oid<'static>| {
        root_cert
            .subject()
            .iter_by_oid(oid)
            .next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (o, cn) = (
        x509_parser::oid_registry::OID_X509_ORGANIZATION_NAME,
        x509_parser::oid_registry::OID_X509_COMMON_NAME,
    );
    let organization = attr(&o);
    let common_name = attr(&cn);
    let start = chain
        .iter()
        .map(|d| {
            x509_parser::certificate::X509Certificate::from_der(d).map(|(_, c)| c.validity().not_before.timestamp())
        })
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .max()
        .unwrap_or(0);
    let ca_url = match &urls.ca {
        Some(u) => u.clone(),
        None => url_for(config.listen, "the API")?,
    };
    let ctlogs = match &config.ct_log {
        CtLogConfig::Disabled => Vec::new(),
        CtLogConfig::Embedded(e) => {
            let spki = match crate::serve::log_key(config, e)? {
                Some(key) => key.public_key_spki().to_vec(),
                None => keyless_ctlog::log_public_key(&config.data_dir.join("ctlog"))?,
            };
            let url = match &urls.ct {
                Some(u) => u.clone(),
                None => format!("{}/{}", url_for(e.listen, "the embedded CT log")?, e.prefix),
            };
            vec![log_entry(&url, &spki, start)?]
        }
        CtLogConfig::Remote(r) => {
            let spki = crate::serve::read_public_key(&r.public_key)?;
            vec![log_entry(urls.ct.as_deref().unwrap_or(&r.url), &spki, start)?]
        }
    };
    Ok(json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [],
        "certificateAuthorities": [{
            "subject": {"organization": organization, "commonName": common_name},
            "uri": ca_url,
            "certChain": {"certificates": chain.iter().map(|d| json!({"rawBytes": STANDARD.encode(d)})).collect::<Vec<_>>()},
            "validFor": {"start": rfc3339(start)?},
        }],
        "ctlogs": ctlogs,
        "timestampAuthorities": [],
    }))
}

fn log_entry(url: &str, spki: &[u8], start: i64) -> anyhow::Result<Value> {
    Ok(json!({
        "baseUrl": url,
        "hashAlgorithm": "SHA2_256",
        "publicKey": {"rawBytes": STANDARD.encode(spki), "keyDetails": "PKIX_ECDSA_P256_SHA_256", "validFor": {"start": rfc3339(start)?}},
        "logId": {"keyId": STANDARD.encode(keyless_ca::keys::sha256(spki))},
    }))
}

/// The `ClientTrustConfig` (trusted root plus signing config) for sigstore-python's
/// `--trust-config`. This project has no Rekor, so `rekorTlogUrls` is empty unless one is given.
pub fn client_trust_config(config: &Config, urls: &Urls, rekor_url: Option<&str>) -> anyhow::Result<Value> {
    let root = trusted_root(config, urls)?;
    let start = root["certificateAuthorities"][0]["validFor"]["start"].clone();
    let service =
        |url: &str| json!({"url": url, "majorApiVersion": 1, "validFor": {"start": start}, "operator": "keyless"});
    let ca_url = root["certificateAuthorities"][0]["uri"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let rekor: Vec<Value> = rekor_url.map(service).into_iter().collect();
    Ok(json!({
        "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
        "trustedRoot": root,
        "signingConfig": {
            "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
            "caUrls": [service(&ca_url)],
            "oidcUrls": [],
            "rekorTlogUrls": rekor,
            "tsaUrls": [],
            "rekorTlogConfig": {"selector": "ANY"},
            "tsaConfig": {"selector": "ANY"},
        },
    }))
}
