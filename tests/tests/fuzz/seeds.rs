//! Valid inputs to mutate, made with real keys and independent tools (rcgen, aws-lc-rs,
//! jsonwebtoken) each run, plus the repository's own files and, when the checkout has it beside
//! it, the shared reference material (captured client requests, Fulcio's issuer file).

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use keyless_tests::{ClientKey, IssuerKey, email_claims, mint_with, now, pem};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose, SignatureAlgorithm,
};
use serde_json::{Value, json};

use super::mutate::{Format, Seed};

/// The issuer the minted tokens name.
pub(crate) const ISSUER: &str = "https://issuer.example";

/// The repository root.
pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `shared/reference`, found beside the checkout or above it; `None` if this checkout has none.
pub(crate) fn shared_reference() -> Option<PathBuf> {
    repo()
        .canonicalize()
        .ok()?
        .ancestors()
        .map(|a| a.join("shared/reference"))
        .find(|p| p.is_dir())
}

fn shared_file(rel: &str) -> Option<Vec<u8>> {
    std::fs::read(shared_reference()?.join(rel)).ok()
}

// ---- identity tokens and key sets ----

/// The issuer's signing keys (RSA, P-256, P-384, Ed25519) and tokens each one minted.
pub(crate) struct Tokens {
    /// Keys, each with its public JWK.
    pub(crate) keys: Vec<IssuerKey>,
    /// `{"keys": [...]}` with every key.
    pub(crate) jwks: Value,
    /// One token per key, valid for an hour for [`ISSUER`] and audience `sigstore`.
    pub(crate) minted: Vec<String>,
}

fn issuer_key(kid: &str, alg: Algorithm, encoding: EncodingKey) -> IssuerKey {
    let mut jwk = Jwk::from_encoding_key(&encoding, alg).expect("a JWK for a fresh key");
    jwk.common.key_id = Some(kid.to_string());
    IssuerKey {
        kid: kid.to_string(),
        alg,
        encoding,
        jwk: serde_json::to_value(&jwk).expect("JWK as JSON"),
        public_pem: None,
    }
}

/// jsonwebtoken cannot derive an Ed25519 JWK from its key, so this one is written out.
fn ed25519_key(kid: &str, pkcs8: &[u8]) -> IssuerKey {
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8).expect("Ed25519 key");
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    IssuerKey {
        kid: kid.to_string(),
        alg: Algorithm::EdDSA,
        encoding: EncodingKey::from_ed_der(pkcs8),
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig"}),
        public_pem: None,
    }
}

impl Tokens {
    /// Fresh keys and tokens.
    pub(crate) fn new() -> Tokens {
        let rng = SystemRandom::new();
        let p384 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &rng).expect("P-384 key");
        let ed = Ed25519KeyPair::generate_pkcs8(&rng).expect("Ed25519 key");
        let keys = vec![
            IssuerKey::rsa("rsa-1"),
            IssuerKey::ec("ec-1"),
            issuer_key("ec384-1", Algorithm::ES384, EncodingKey::from_ec_der(p384.as_ref())),
            ed25519_key("ed-1", ed.as_ref()),
        ];
        let jwks = json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
        let mut claims = email_claims(ISSUER, "alice@example.com");
        claims["exp"] = json!(now() + 3600);
        let minted = keys.iter().map(|k| mint_with(k, &claims)).collect();
        Tokens { keys, jwks, minted }
    }

    /// Token seeds: the minted tokens, variants without `kid` or with more claims, and the
    /// captured example token.
    pub(crate) fn token_seeds(&self) -> Vec<Seed> {
        let mut out: Vec<Seed> = self
            .minted
            .iter()
            .map(|t| Seed::new(Format::Jws, t.as_bytes()))
            .collect();
        let mut claims = email_claims(ISSUER, "bob@example.com");
        claims["exp"] = json!(now() + 3600);
        claims["nbf"] = json!(now() - 10);
        claims["aud"] = json!(["other", "sigstore"]);
        claims["groups"] = json!(["a", {"nested": [1, 2.5, null, true]}]);
        for key in &self.keys {
            let mut header = jsonwebtoken::Header::new(key.alg);
            header.kid = None;
            let t = jsonwebtoken::encode(&header, &claims, &key.encoding).expect("token without kid");
            out.push(Seed::new(Format::Jws, t.into_bytes()));
        }
        if let Some(t) = shared_file("captures/example-token.jwt") {
            out.push(Seed::new(Format::Jws, String::from_utf8_lossy(&t).trim().as_bytes()));
        }
        out
    }

    /// JWKS seeds: the whole set, each key alone, and sets with keys the CA skips.
    pub(crate) fn jwks_seeds(&self) -> Vec<Seed> {
        let mut sets = vec![self.jwks.clone()];
        for k in &self.keys {
            sets.push(json!({ "keys": [k.jwk] }));
        }
        let mut with_alg = self.keys[1].jwk.clone();
        with_alg["alg"] = json!("ES256");
        with_alg["use"] = json!("sig");
        sets.push(json!({ "keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"},
            {"kty": "OKP", "crv": "X25519", "x": "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"},
            with_alg,
        ]}));
        sets.into_iter()
            .map(|s| Seed::new(Format::Json, serde_json::to_vec(&s).expect("JSON")))
            .collect()
    }
}

/// Discovery documents: minimal, a full one shaped like GitHub's, and a loopback issuer's.
pub(crate) fn discovery_seeds() -> Vec<Seed> {
    [
        json!({"issuer": ISSUER, "jwks_uri": format!("{ISSUER}/.well-known/jwks")}),
        json!({
            "issuer": ISSUER,
            "jwks_uri": format!("{ISSUER}/.well-known/jwks"),
            "subject_types_supported": ["public", "pairwise"],
            "response_types_supported": ["id_token"],
            "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti", "nbf", "ref", "repository"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid"]
        }),
        json!({"issuer": "http://127.0.0.1:8080", "jwks_uri": "http://127.0.0.1:8080/keys"}),
        json!({"issuer": "http://127.0.0.1:8080", "jwks_uri": "http://[::1]:8080/keys", "extra": null}),
    ]
    .iter()
    .map(|d| Seed::new(Format::Json, serde_json::to_vec(d).expect("JSON")))
    .collect()
}

// ---- keys and CSRs ----

/// Client keys of every accepted type (P-256, P-384, P-521, RSA-2048, Ed25519), as DER SPKI.
pub(crate) fn client_spkis() -> Vec<Vec<u8>> {
    let rng = SystemRandom::new();
    let p521 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P521_SHA512_ASN1_SIGNING, &rng).expect("P-521 key");
    let p521 = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P521_SHA512_ASN1_SIGNING, p521.as_ref()).expect("P-521");
    let mut out: Vec<Vec<u8>> = [
        ClientKey::p256(),
        ClientKey::p384(),
        ClientKey::rsa2048(),
        ClientKey::ed25519(),
    ]
    .iter()
    .map(ClientKey::spki_der)
    .collect();
    out.push(p521.public_key().as_der().expect("P-521 SPKI").as_ref().to_vec());
    out
}

/// SPKI seeds: DER and PEM of each key, and the RSA key as PKCS#1 `RSA PUBLIC KEY`.
pub(crate) fn spki_seeds(spkis: &[Vec<u8>]) -> Vec<Seed> {
    let mut out = Vec::new();
    for der in spkis {
        out.push(Seed::new(Format::Der, der.clone()));
        out.push(Seed::new(Format::Pem, pem("PUBLIC KEY", der)));
    }
    // The RSA key (third) as PKCS#1: the contents of the SPKI's BIT STRING.
    use der::Decode as _;
    let spki = x509_cert::spki::SubjectPublicKeyInfoOwned::from_der(&spkis[2]).expect("RSA SPKI");
    let pkcs1 = spki.subject_public_key.raw_bytes().to_vec();
    out.push(Seed::new(Format::Pem, pem("RSA PUBLIC KEY", &pkcs1)));
    out
}

/// PEM CSRs made by rcgen for P-256, P-384, Ed25519 and RSA (one with SANs and a subject), and
/// sigstore-python's captured CSR.
pub(crate) fn csr_seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    let algs: [&'static SignatureAlgorithm; 4] = [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
        &rcgen::PKCS_RSA_SHA256,
    ];
    for (i, alg) in algs.into_iter().enumerate() {
        let key = KeyPair::generate_for(alg).expect("rcgen key");
        let mut params = CertificateParams::default();
        if i == 0 {
            params = CertificateParams::new(vec!["a.example".to_string(), "b.example".to_string()]).expect("params");
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "alice@example.com");
            dn.push(DnType::OrganizationName, "Example");
            params.distinguished_name = dn;
        }
        let csr = params.serialize_request(&key).expect("CSR");
        out.push(Seed::new(Format::Pem, csr.pem().expect("CSR PEM")));
    }
    if let Some(captured) = shared_file("captures/sigstore-python-4.5.1-csr.pem") {
        out.push(Seed::new(Format::Pem, captured));
    }
    out
}

// ---- signing requests ----

/// v2 and v1 request bodies: generated (key + proof, CSR, snake_case, DER key), and the bodies
/// real clients sent, when the shared captures are present.
pub(crate) fn signing_request_seeds(token: &str) -> Vec<Seed> {
    let key = ClientKey::p256();
    let proof = STANDARD.encode(key.sign(b"alice@example.com"));
    let csr = csr_seeds().remove(0).bytes;
    let mut bodies = vec![
        json!({"credentials": {"oidcIdentityToken": token}, "publicKeyRequest": key.public_key_request("alice@example.com")}),
        json!({"credentials": {"oidcIdentityToken": token}, "certificateSigningRequest": STANDARD.encode(&csr)}),
        json!({"credentials": {"oidc_identity_token": token}, "public_key_request": {"public_key": {"algorithm": "ECDSA", "content": key.spki_pem()}, "proof_of_possession": proof}}),
        json!({"publicKey": {"algorithm": "ecdsa", "content": STANDARD.encode(key.spki_der())}, "signedEmailAddress": proof}),
        json!({"certificateSigningRequest": STANDARD.encode(&csr)}),
    ];
    if let Some(dir) = shared_reference() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("captures"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        for f in files
            .iter()
            .filter(|f| f.to_string_lossy().ends_with("signingCert.json"))
        {
            let Some(capture) = std::fs::read(f)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            else {
                continue;
            };
            if let Some(text) = capture.get("body_text").and_then(Value::as_str) {
                bodies.push(serde_json::from_str(text).unwrap_or(Value::String(text.to_string())));
            } else if let Some(body) = capture.get("body").or_else(|| capture.get("body_json")) {
                bodies.push(body.clone());
            }
        }
    }
    bodies
        .iter()
        .map(|b| Seed::new(Format::Json, serde_json::to_vec(b).expect("JSON")))
        .collect()
}

// ---- certificate transparency ----

const POISON: &[u64] = &[1, 3, 6, 1, 4, 1, 11129, 2, 4, 3];

/// A root, an issuing CA under it, and leaves it issued: the chains a log accepts.
pub(crate) struct Pki {
    /// Self-signed root.
    pub(crate) root: CertifiedIssuer<'static, KeyPair>,
    /// Issuing CA (path length 0).
    pub(crate) issuing: CertifiedIssuer<'static, KeyPair>,
}

fn ca_params(name: &str, path_len: u8) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

impl Pki {
    /// A fresh root and issuing CA (P-256).
    pub(crate) fn new() -> Pki {
        let root =
            CertifiedIssuer::self_signed(ca_params("Fuzz Root", 1), KeyPair::generate().expect("key")).expect("root");
        let issuing = CertifiedIssuer::signed_by(
            ca_params("Fuzz Issuing CA", 0),
            KeyPair::generate().expect("key"),
            &root,
        )
        .expect("issuing CA");
        Pki { root, issuing }
    }

    /// `[leaf, issuing CA, root]`; the leaf carries the CT poison when `precert`.
    pub(crate) fn chain(&self, name: &str, precert: bool) -> Vec<Vec<u8>> {
        let mut p = CertificateParams::new(vec![name.to_string()]).expect("params");
        p.is_ca = IsCa::ExplicitNoCa;
        if precert {
            let mut poison = CustomExtension::from_oid_content(POISON, vec![5, 0]);
            poison.set_criticality(true);
            p.custom_extensions.push(poison);
        }
        let leaf = p
            .signed_by(&KeyPair::generate().expect("key"), &self.issuing)
            .expect("leaf");
        vec![
            leaf.der().to_vec(),
            self.issuing.der().to_vec(),
            self.root.der().to_vec(),
        ]
    }

    /// The issuing CA's chain, issuing CA first.
    pub(crate) fn ca_chain(&self) -> Vec<Vec<u8>> {
        vec![self.issuing.der().to_vec(), self.root.der().to_vec()]
    }
}

/// An `add-chain` body.
pub(crate) fn chain_body(chain: &[Vec<u8>]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "chain": chain.iter().map(|c| STANDARD.encode(c)).collect::<Vec<_>>() })).expect("JSON")
}

/// The embedded log's options for tests: a short merge delay.
pub(crate) fn log_options() -> keyless_ctlog::LogOptions {
    keyless_ctlog::LogOptions {
        mmd: Duration::from_millis(200),
        commit_timeout: Duration::from_secs(10),
        name: "fuzz".into(),
    }
}

// ---- configuration ----

/// The YAML blocks of a Markdown file.
fn yaml_blocks(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        match &mut current {
            None if trimmed.starts_with("```yaml") => current = Some(Vec::new()),
            Some(lines) if trimmed.starts_with("```") => {
                let indent = line.len() - trimmed.len();
                let block: Vec<&str> = lines
                    .iter()
                    .map(|l| l.get(indent..).unwrap_or(l.trim_start()))
                    .collect();
                out.push(block.join("\n"));
                current = None;
            }
            Some(lines) => lines.push(line),
            None => {}
        }
    }
    out
}

/// Configuration seeds: the README's examples, the deployment files, and a file exercising most
/// keys (`issuers_file: fulcio.yaml` resolves in the fuzz base directory, see [`config_base`]).
pub(crate) fn config_seeds() -> Vec<Seed> {
    let root = repo();
    let mut texts: Vec<String> = Vec::new();
    for md in ["README.md", "deploy/README.md", "docs/operations.md"] {
        if let Ok(text) = std::fs::read_to_string(root.join(md)) {
            texts.extend(yaml_blocks(&text));
        }
    }
    for f in ["deploy/docker/keyless.yaml", "deploy/systemd/keyless.yaml"] {
        if let Ok(text) = std::fs::read_to_string(root.join(f)) {
            texts.push(text);
        }
    }
    texts.push(
        r#"listen: 127.0.0.1:5555
metrics_listen: 127.0.0.1:9090
data_dir: ./data
ca: { pkcs11: { module: /usr/lib/softhsm/libsofthsm2.so, token_label: keyless, pin: env:PIN, key_label: k, chain: c.pem, mechanism: ecdsa-sha256 } }
ct_log: { embedded: { listen: 127.0.0.1:6962, prefix: /keyless, mmd: 1s, pkcs11_key_label: log } }
issuers_file: fulcio.yaml
issuers:
  - url: https://token.actions.githubusercontent.com
    type: github-workflow
    algorithms: [RS256]
    max_token_age: 10m
    audiences: [extra]
    policy:
      deny: [{ name: no-self-hosted, when: { runner_environment: self-hosted } }]
      allow: [{ name: rel, when: { repository_owner: acme, ref: "refs/tags/*", environment: { in: [prod, staging] } } }]
    rate_limits: { per_identity: { rate: 10/s, burst: 5 } }
  - { url: "https://oidc.eks.*.amazonaws.com/id/*", type: kubernetes }
  - { url: https://spiffe.example, type: spiffe, spiffe_trust_domain: example.com }
  - { url: https://uri.example, type: uri, subject_domain: https://uri.example }
  - { url: https://user.example, type: username, subject_domain: user.example }
  - { url: https://dex.example, type: email, issuer_claim: $.federated_claims.connector_id }
certificate: { validity: 20m }
tls: { cert: tls.crt, key: tls.key }
log: { format: json }
limits: { max_concurrent_requests: 64, request_timeout: 5s, shutdown_grace: 1s }
rate_limits: { per_identity: { rate: 300/min, burst: 100 }, per_issuer: { rate: 1000/s, burst: 10 } }
audit: { export: records.jsonl }
health: { token: env:HEALTH }
"#
        .to_string(),
    );
    texts
        .into_iter()
        .map(|t| Seed::new(Format::Yaml, t.into_bytes()))
        .collect()
}

/// A directory holding the files configuration seeds refer to (`fulcio.yaml`,
/// `fulcio-config.json`), so loading them follows `issuers_file` for real.
pub(crate) fn config_base(dir: &Path) {
    let fixture = std::fs::read_to_string(repo().join("config/fixtures/public-good.yaml")).expect("fixture");
    std::fs::write(dir.join("fulcio.yaml"), &fixture).expect("write fulcio.yaml");
    let value: Value = keyless_config::issuers_file_as_json(&fixture).expect("fixture is Fulcio's YAML");
    std::fs::write(
        dir.join("fulcio-config.json"),
        serde_json::to_vec(&value).expect("JSON"),
    )
    .expect("write");
}

/// Fulcio issuer-file seeds: the repository's public-good copy (as YAML and as JSON), Fulcio's
/// own file when the shared reference is present, and a small ci-provider file.
pub(crate) fn fulcio_file_seeds() -> Vec<Seed> {
    let fixture = std::fs::read_to_string(repo().join("config/fixtures/public-good.yaml")).expect("fixture");
    let value: Value = keyless_config::issuers_file_as_json(&fixture).expect("fixture is Fulcio's YAML");
    let mut out = vec![
        Seed::new(Format::Yaml, fixture.into_bytes()),
        Seed::new(Format::Json, serde_json::to_vec(&value).expect("JSON")),
        Seed::new(
            Format::Yaml,
            r#"oidc-issuers:
  https://ci.example:
    issuer-url: https://ci.example
    client-id: sigstore
    type: ci-provider
    ci-provider: my-ci
meta-issuers:
  https://*.ci.example:
    client-id: sigstore
    type: ci-provider
    ci-provider: my-ci
ci-issuer-metadata:
  my-ci:
    default-template-values:
      url: https://ci.example
    extension-templates:
      build-signer-uri: "{{ .url }}/{{ .workflow }}"
      source-repository-ref: '{{ if eq .kind "tag" }}refs/tags/{{ .ref }}{{ else }}{{ index . "x.y/z" }}{{ end }}'
    subject-alternative-name-template: "{{ .url }}/{{ .repository }}"
"#,
        ),
    ];
    if let Some(text) = shared_file("fulcio-files/public-good-config.yaml") {
        out.push(Seed::new(Format::Yaml, text));
    }
    out
}

/// Every string of the issuer files that is a template, plus ones covering each construct.
pub(crate) fn template_seeds() -> Vec<Seed> {
    fn strings(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) if s.contains("{{") => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            Value::Object(m) => m.values().for_each(|x| strings(x, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    for seed in fulcio_file_seeds() {
        if let Ok(v) = keyless_config::issuers_file_as_json(&String::from_utf8_lossy(&seed.bytes)) {
            strings(&v, &mut found);
        }
    }
    found.extend(
        [
            "repository",
            "{{ .url }}/{{ .repository }}",
            r#"{{ index . "oidc.circleci.com/vcs-ref" }}"#,
            r#"{{ if eq .ref_type "tag" }}tag {{ .ref }}{{ else }}branch{{ end }}"#,
            r#"{{ if eq (index . "a.b") "x" }}{{ if .ref }}{{ .ref }}{{ end }}{{ end }}"#,
            "{{- .sha -}}",
        ]
        .map(String::from),
    );
    found.sort();
    found.dedup();
    found
        .into_iter()
        .map(|t| Seed::new(Format::Text, t.into_bytes()))
        .collect()
}
