//! `keyless-benchkit`: the pieces of `scripts/bench.sh` that need crypto, kept out of the clock.
//!
//! ```text
//! keyless-benchkit issuer --dir D     # loopback OIDC issuer (discovery + JWKS, RS256); runs until killed
//! keyless-benchkit tls --dir D        # a private CA and a 127.0.0.1 server certificate for Keyless's `tls:`
//! keyless-benchkit bodies --dir D --count N --csr-percent 50 --shape fulcio --tag T --out F
//! keyless-benchkit balance --backend 127.0.0.1:P1 --backend 127.0.0.1:P2 ...   # prints its address
//! ```
//!
//! `bodies` writes one JSON request body a line, the shape real clients send: every body has its
//! own RS256 ID token (distinct `sub`/`email`, from the issuer whose key `issuer` left in D) and its
//! own fresh P-256 key. `--shape fulcio` mixes CSR bodies (sigstore-python's: subject
//! `emailAddress`, critical `basicConstraints CA:FALSE`, token in `credentials`) with signed-challenge
//! bodies (`publicKeyRequest` + `proofOfPossession` over the email), interleaved evenly at
//! `--csr-percent`. `--shape stepca` writes step-ca's `/1.0/sign` bodies (`{"csr", "ott"}`), which
//! have no signed-challenge form. The Go load generator then replays the lines as they are.

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::{Parser, Subcommand, ValueEnum};
use keyless_tests::{IssuerKey, TestTls, mint_with, pem};
use serde_json::{Value, json};

/// Key id of the benchmark issuer's RS256 key.
const KID: &str = "bench-rsa";

#[derive(Parser, Debug)]
#[command(name = "keyless-benchkit", about)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve a loopback OIDC issuer until killed; writes DIR/issuer-key.p8 and then DIR/issuer-url.
    Issuer {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Write DIR/tls.crt, DIR/tls.key and DIR/tls-ca.pem (a server certificate for 127.0.0.1).
    Tls {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Write step-ca's PKI (P-384 root, P-256 intermediate: the shapes `keyless ca init` makes) and
    /// a `ca.json` with one OIDC provisioner trusting the issuer in DIR, on a free loopback port;
    /// prints that port.
    Stepca {
        /// The directory `issuer` wrote its URL into.
        #[arg(long)]
        dir: PathBuf,
        /// Where the PKI and ca.json go.
        #[arg(long)]
        out: PathBuf,
    },
    /// Send every body once (`--clients` at a time) and print how many got a 2xx: the smoke mode's
    /// stand-in for the Go generator when the peer is not built. Not a measuring instrument.
    Replay {
        #[arg(long)]
        url: String,
        #[arg(long)]
        cafile: PathBuf,
        #[arg(long)]
        bodies: PathBuf,
        #[arg(long, default_value_t = 8)]
        clients: usize,
    },
    /// A layer-4 load balancer in front of replicas, as a Kubernetes Service or an L4 cloud
    /// balancer is: each accepted TCP connection goes to the next backend in turn and is relayed
    /// as bytes (TLS passes through). Prints `127.0.0.1:PORT`, then runs until killed.
    Balance {
        #[arg(long, required = true)]
        backend: Vec<std::net::SocketAddr>,
    },
    /// Write request bodies, one JSON object a line.
    Bodies {
        /// The directory `issuer` wrote its key and URL into.
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        count: usize,
        /// Share of CSR bodies (the rest are signed challenges); `--shape stepca` is all CSR.
        #[arg(long, default_value_t = 50)]
        csr_percent: u32,
        #[arg(long, value_enum, default_value_t = Shape::Fulcio)]
        shape: Shape,
        /// Goes into every identity, so bodies of different files never share one.
        #[arg(long)]
        tag: String,
        #[arg(long)]
        out: PathBuf,
        /// Worker threads (default: every core; this runs before the clock).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Shape {
    /// Fulcio v2 `POST /api/v2/signingCert` (Keyless).
    Fulcio,
    /// step-ca `POST /1.0/sign`.
    Stepca,
}

fn main() -> anyhow::Result<()> {
    match Args::parse().cmd {
        Cmd::Issuer { dir } => issuer(&dir),
        Cmd::Tls { dir } => {
            let t = TestTls::new("keyless-bench TLS CA");
            std::fs::write(dir.join("tls.crt"), &t.cert_pem)?;
            std::fs::write(dir.join("tls.key"), &t.key_pem)?;
            std::fs::write(dir.join("tls-ca.pem"), &t.ca_pem)?;
            Ok(())
        }
        Cmd::Stepca { dir, out } => stepca(&dir, &out),
        Cmd::Balance { backend } => balance(backend),
        Cmd::Replay {
            url,
            cafile,
            bodies,
            clients,
        } => replay(&url, &cafile, &bodies, clients),
        Cmd::Bodies {
            dir,
            count,
            csr_percent,
            shape,
            tag,
            out,
            threads,
        } => {
            if csr_percent > 100 {
                bail!("--csr-percent must be 0..=100, not {csr_percent}");
            }
            let threads = if threads == 0 {
                std::thread::available_parallelism().map_or(1, |n| n.get())
            } else {
                threads
            };
            bodies(&dir, count, csr_percent, shape, &tag, &out, threads)
        }
    }
}

fn issuer(dir: &Path) -> anyhow::Result<()> {
    let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
        .map_err(|e| anyhow::anyhow!("generating the issuer key: {e}"))?;
    let pkcs8: Pkcs8V1Der = kp
        .as_der()
        .map_err(|e| anyhow::anyhow!("encoding the issuer key: {e}"))?;
    let key = IssuerKey::rsa_from_pkcs8(KID, pkcs8.as_ref())?;
    std::fs::write(dir.join("issuer-key.p8"), pkcs8.as_ref())?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let discovery = json!({
            "issuer": url,
            "jwks_uri": format!("{url}/jwks"),
            "authorization_endpoint": format!("{url}/auth"),
            "token_endpoint": format!("{url}/token"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        });
        let jwks = json!({ "keys": [key.jwk] });
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { Json(discovery) }),
            )
            .route("/jwks", get(move || async move { Json(jwks) }));
        // Written last: its presence tells the script the issuer is up.
        let tmp = dir.join("issuer-url.tmp");
        std::fs::write(&tmp, &url)?;
        std::fs::rename(&tmp, dir.join("issuer-url"))?;
        println!("keyless-benchkit: issuer {url}");
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}

fn bodies(
    dir: &Path,
    count: usize,
    csr_percent: u32,
    shape: Shape,
    tag: &str,
    out: &Path,
    threads: usize,
) -> anyhow::Result<()> {
    let pkcs8 = std::fs::read(dir.join("issuer-key.p8")).context("the issuer's key (run `issuer` first)")?;
    let url = std::fs::read_to_string(dir.join("issuer-url")).context("the issuer's URL (run `issuer` first)")?;
    let key = IssuerKey::rsa_from_pkcs8(KID, &pkcs8)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let per = count.div_ceil(threads.max(1)).max(1);
    let chunks: Vec<anyhow::Result<Vec<String>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..count)
            .step_by(per)
            .map(|start| {
                let (key, url) = (&key, url.as_str());
                s.spawn(move || {
                    (start..(start + per).min(count))
                        .map(|i| {
                            body(
                                key,
                                url,
                                now,
                                i,
                                is_csr(i, csr_percent) || shape == Shape::Stepca,
                                shape,
                                tag,
                            )
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("body writer thread"))
            .collect()
    });
    let mut w = std::io::BufWriter::new(std::fs::File::create(out).with_context(|| format!("{}", out.display()))?);
    for chunk in chunks {
        for line in chunk? {
            w.write_all(line.as_bytes())?;
            w.write_all(b"\n")?;
        }
    }
    w.flush()?;
    Ok(())
}

/// Spreads CSR bodies evenly through the file (the generator replays it in order).
fn is_csr(i: usize, percent: u32) -> bool {
    let p = percent as usize;
    (i + 1) * p / 100 > i * p / 100
}

fn body(key: &IssuerKey, iss: &str, now: u64, i: usize, csr: bool, shape: Shape, tag: &str) -> anyhow::Result<String> {
    let email = format!("{tag}-{i}@bench.example");
    let claims = json!({
        "iss": iss, "aud": "sigstore", "sub": format!("{tag}-user-{i}"), "email": email,
        "email_verified": true, "iat": now, "nbf": now - 5, "exp": now + 3600,
    });
    let token = mint_with(key, &claims);
    let v: Value = match (shape, csr) {
        (Shape::Stepca, _) => json!({"csr": csr_pem(None)?, "ott": token}),
        (Shape::Fulcio, true) => json!({
            "credentials": {"oidcIdentityToken": token},
            "certificateSigningRequest": STANDARD.encode(csr_pem(Some(&email))?),
        }),
        (Shape::Fulcio, false) => {
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
                .map_err(|e| anyhow::anyhow!("P-256 key: {e}"))?;
            let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
                .map_err(|e| anyhow::anyhow!("P-256 key: {e}"))?;
            let spki: PublicKeyX509Der = kp.public_key().as_der().map_err(|e| anyhow::anyhow!("SPKI: {e}"))?;
            let sig = kp
                .sign(&rng, email.as_bytes())
                .map_err(|e| anyhow::anyhow!("PoP: {e}"))?;
            json!({
                "credentials": {"oidcIdentityToken": token},
                "publicKeyRequest": {
                    "publicKey": {"algorithm": "ECDSA", "content": pem("PUBLIC KEY", spki.as_ref())},
                    "proofOfPossession": STANDARD.encode(sig.as_ref()),
                },
            })
        }
    };
    Ok(v.to_string())
}

/// A PEM CSR over a fresh P-256 key. With an email: sigstore-python's shape (subject
/// `emailAddress`, critical `basicConstraints CA:FALSE`); without: a bare `CN=peer-bench`, the
/// subject step-ca's OIDC provisioner is known to accept.
fn csr_pem(email: Option<&str>) -> anyhow::Result<String> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    match email {
        Some(email) => {
            params.distinguished_name.push(
                rcgen::DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
                rcgen::DnValue::Ia5String(email.try_into()?),
            );
            let mut bc = rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 19], vec![0x30, 0x00]);
            bc.set_criticality(true);
            params.custom_extensions.push(bc);
        }
        None => params.distinguished_name.push(rcgen::DnType::CommonName, "peer-bench"),
    }
    Ok(params.serialize_request(&key)?.pem()?)
}

/// step-ca's x509 template, as close to Fulcio's leaf profile as its templates allow: empty
/// subject (so the SAN is critical), the token's email as SAN, digitalSignature, codeSigning,
/// and Sigstore's issuer extensions .1.1 (raw) and .1.8 (DER UTF8String, short form).
const STEPCA_TEMPLATE: &str = r#"{
	"subject": {},
	"sans": [{"type": "email", "value": {{ toJson .Token.email }}}],
	"keyUsage": ["digitalSignature"],
	"extKeyUsage": ["codeSigning"],
	"extensions": [
		{"id": "1.3.6.1.4.1.57264.1.1", "critical": false, "value": {{ .Token.iss | b64enc | toJson }}},
		{"id": "1.3.6.1.4.1.57264.1.8", "critical": false, "value": {{ printf "%c%c%s" 12 (len .Token.iss) .Token.iss | b64enc | toJson }}}
	]
}"#;

fn stepca(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let url = std::fs::read_to_string(dir.join("issuer-url")).context("the issuer's URL (run `issuer` first)")?;
    std::fs::create_dir_all(out)?;
    let name = |cn: &str| {
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "keyless-bench");
        dn.push(rcgen::DnType::CommonName, cn);
        dn
    };
    let root_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
    let mut root_params = rcgen::CertificateParams::default();
    root_params.distinguished_name = name("keyless-bench step-ca root");
    root_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(1));
    root_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let root = root_params.self_signed(&root_key)?;
    let root_issuer = rcgen::Issuer::new(root_params, &root_key);
    // No EKU on the intermediate: step-ca also issues its own HTTPS certificate from it.
    let int_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut int_params = rcgen::CertificateParams::default();
    int_params.distinguished_name = name("keyless-bench step-ca intermediate");
    int_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    int_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let inter = int_params.signed_by(&int_key, &root_issuer)?;
    std::fs::write(out.join("root_ca.crt"), root.pem())?;
    std::fs::write(out.join("intermediate_ca.crt"), inter.pem())?;
    std::fs::write(out.join("intermediate_ca_key"), int_key.serialize_pem())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let p = |f: &str| out.join(f).display().to_string();
    let cfg = json!({
        "root": p("root_ca.crt"), "crt": p("intermediate_ca.crt"), "key": p("intermediate_ca_key"),
        "address": format!("127.0.0.1:{port}"),
        "dnsNames": ["127.0.0.1", "localhost"],
        "logger": {"format": "text"},
        // No database: step-ca's lightest mode (an in-memory token-reuse map, no certificate store).
        "db": null,
        "authority": {"provisioners": [{
            "type": "OIDC", "name": "bench-oidc", "clientID": "sigstore", "clientSecret": "unused",
            "configurationEndpoint": format!("{url}/.well-known/openid-configuration"),
            "claims": {"minTLSCertDuration": "1m", "maxTLSCertDuration": "10m",
                       "defaultTLSCertDuration": "10m", "disableRenewal": true},
            "options": {"x509": {"template": STEPCA_TEMPLATE}},
        }]},
        "tls": {"cipherSuites": ["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                                 "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"],
                "minVersion": 1.2, "maxVersion": 1.3, "renegotiation": false},
    });
    std::fs::write(out.join("ca.json"), serde_json::to_string_pretty(&cfg)?)?;
    println!("{port}");
    Ok(())
}

fn balance(backends: Vec<std::net::SocketAddr>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?);
        std::io::stdout().flush()?;
        let mut next = 0usize;
        loop {
            let (mut inbound, _) = listener.accept().await?;
            let backend = backends[next % backends.len()];
            next += 1;
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(backend).await {
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

fn replay(url: &str, cafile: &Path, bodies: &Path, clients: usize) -> anyhow::Result<()> {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(cafile)?)?;
    let client = reqwest::Client::builder().add_root_certificate(ca).build()?;
    let lines: Vec<String> = std::fs::read_to_string(bodies)?.lines().map(str::to_owned).collect();
    let lines = std::sync::Arc::new(lines);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let ok = rt.block_on(async {
        let tasks: Vec<_> = (0..clients.max(1))
            .map(|_| {
                let (client, lines, next, url) = (client.clone(), lines.clone(), next.clone(), url.to_string());
                tokio::spawn(async move {
                    let mut ok = 0usize;
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(body) = lines.get(i) else { return ok };
                        let resp = client
                            .post(&url)
                            .header("Content-Type", "application/json")
                            .body(body.clone())
                            .send()
                            .await;
                        match resp {
                            Ok(r) if r.status().is_success() => ok += 1,
                            Ok(r) => eprintln!(
                                "keyless-benchkit replay: {} {}",
                                r.status(),
                                r.text().await.unwrap_or_default()
                            ),
                            Err(e) => eprintln!("keyless-benchkit replay: {e}"),
                        }
                    }
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            ok += t.await.unwrap_or(0);
        }
        ok
    });
    println!("{ok}");
    Ok(())
}
