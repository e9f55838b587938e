//! The insecure development issuer: an OIDC issuer served by `keyless serve --dev` itself, so a
//! newcomer can get a certificate offline. Its key sits unprotected in the data directory and it
//! vouches for any email `keyless dev token` asks for, so it only runs on loopback and only with
//! `--dev`.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use keyless_config::{DEFAULT_CLIENT_ID, IssuerConfig, IssuerKind};
use serde_json::{Value, json};

/// Path prefix of the development issuer on the API listener.
pub const PATH: &str = "/insecure-dev-issuer";

/// The development issuer's signing key and public description.
pub struct DevIssuer {
    url: String,
    kid: String,
    jwk: Value,
    key: EncodingKey,
}

fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("insecure-dev-issuer").join("signing-key.pem")
}

impl DevIssuer {
    /// Loads the key from `data_dir`, creating it on first use. `base_url` is the API's own URL.
    pub fn load_or_create(data_dir: &Path, base_url: &str) -> anyhow::Result<DevIssuer> {
        let path = key_path(data_dir);
        if !path.exists() {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| anyhow::anyhow!("cannot generate the development issuer key"))?;
            let pem = format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                STANDARD
                    .encode(pkcs8.as_ref())
                    .as_bytes()
                    .chunks(64)
                    .map(|c| std::str::from_utf8(c).unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::fs::create_dir_all(path.parent().unwrap_or(data_dir))
                .with_context(|| format!("creating {}", path.display()))?;
            write_private(&path, pem.as_bytes())?;
        }
        DevIssuer::load(&path, base_url)
    }

    /// Loads an existing key (for `keyless dev token`).
    pub fn open(data_dir: &Path, base_url: &str) -> anyhow::Result<DevIssuer> {
        let path = key_path(data_dir);
        if !path.exists() {
            bail!(
                "{} does not exist: start `keyless serve --dev` first (it creates the development issuer)",
                path.display()
            );
        }
        DevIssuer::load(&path, base_url)
    }

    fn load(path: &Path, base_url: &str) -> anyhow::Result<DevIssuer> {
        let pem = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let der = STANDARD
            .decode(pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>())
            .context("development issuer key is not PEM")?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
            .map_err(|_| anyhow::anyhow!("{} is not a P-256 key", path.display()))?;
        let point = pair.public_key().as_ref();
        let kid = hex::encode(&keyless_ca::keys::sha256(point)[..8]);
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        Ok(DevIssuer {
            url: format!("{}{PATH}", base_url.trim_end_matches('/')),
            kid,
            jwk,
            key: EncodingKey::from_ec_der(&der),
        })
    }

    /// The issuer URL tokens carry.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The issuer as the CA trusts it: an email issuer with the default audience.
    pub fn issuer_config(&self) -> IssuerConfig {
        IssuerConfig::new(self.url.clone(), IssuerKind::Email(Default::default()))
    }

    /// Discovery and JWKS routes.
    pub fn router(&self) -> Router {
        let discovery = json!({
            "issuer": self.url,
            "jwks_uri": format!("{}/jwks", self.url),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        });
        let jwks = json!({ "keys": [self.jwk] });
        Router::new()
            .route(
                &format!("{PATH}/.well-known/openid-configuration"),
                get(move || async move { Json(discovery) }),
            )
            .route(&format!("{PATH}/jwks"), get(move || async move { Json(jwks) }))
    }

    /// Mints an ID token for `email` valid for `ttl_secs`.
    pub fn mint(&self, email: &str, subject: &str, ttl_secs: u64) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = json!({
            "iss": self.url, "aud": DEFAULT_CLIENT_ID, "sub": subject, "email": email, "email_verified": true,
            "iat": now, "nbf": now, "exp": now + ttl_secs,
        });
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, &claims, &self.key)?)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}
