//! Start-up and the command line: bad configuration stops the CA with a precise message, the key
//! ceremony creates usable material and never overwrites it, and the README quickstart works.

use std::path::Path;

use keyless_tests::inspect;
use keyless_tests::{ClientKey, Keyless, run_keyless};
use serde_json::json;

fn serve_fails(config: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k.yaml"), config).unwrap();
    let out = run_keyless(&["serve", "--config", "k.yaml"], dir.path(), env);
    assert!(!out.status.success(), "keyless started with a bad config");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn bad_configuration_names_path_and_rule() {
    let e = serve_fails(
        "ct_log: disabled\nissuers:\n  - {url: https://a.example, type: email}\n  - {url: https://b.example, type: email}\n  - {url: https://c.example, type: gitlab}\n",
        &[],
    );
    assert!(e.contains(r#"issuers[2].type: unknown issuer type "gitlab""#), "{e}");
    let e = serve_fails("ct_log: disabled\nlisten_addr: 127.0.0.1:1\n", &[]);
    assert!(e.contains("listen_addr"), "{e}");
    let e = serve_fails(
        "ct_log: disabled\nissuers:\n  - {url: http://idp.example.com, type: email}\n",
        &[],
    );
    assert!(e.contains("issuers[0].url") && e.contains("loopback"), "{e}");
    let e = serve_fails("ct_log: disabled\nissuers_file: missing.json\n", &[]);
    assert!(e.contains("missing.json"), "{e}");
    // A CT mapping without a URL must never silently become "disabled".
    let e = serve_fails("ct_log: {public_key: ct.pem}\n", &[]);
    assert!(e.contains("ct_log:") && e.contains("ct_log: disabled"), "{e}");
}

/// Keyless CA trusts no issuer by default: a configuration naming none is refused at start-up
/// and by `keyless config check`, with a message saying how to name a set, the bundled
/// public-good file included.
#[test]
fn no_issuers_is_refused_with_the_ways_to_name_them() {
    let e = serve_fails("ct_log: disabled\n", &[]);
    for hint in [
        "no OIDC issuer is trusted",
        "issuers_file:",
        "public_good_issuers: true",
        "config/fixtures/public-good.yaml",
    ] {
        assert!(e.contains(hint), "{hint}: {e}");
    }
    let e = serve_fails("ct_log: disabled\nissuers: []\n", &[]);
    assert!(e.contains("no OIDC issuer is trusted"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k.yaml"), "ct_log: disabled\n").unwrap();
    let out = run_keyless(&["config", "check", "k.yaml"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("INVALID") && stdout.contains("public_good_issuers: true"),
        "{stdout}"
    );
}

#[tokio::test]
async fn fulcio_issuer_file_is_accepted_unchanged() {
    let idp = keyless_tests::TestIssuer::start("/dex").await;
    let dir = tempfile::tempdir().unwrap();
    let fulcio =
        json!({"OIDCIssuers": {idp.url.clone(): {"IssuerURL": idp.url, "ClientID": "sigstore", "Type": "email"}}});
    std::fs::write(dir.path().join("fulcio-config.json"), fulcio.to_string()).unwrap();
    let ks = Keyless::builder("ct_log: disabled\nissuers_file: fulcio-config.json\n")
        .dir(dir)
        .start();
    let key = ClientKey::p256();
    let token = idp.mint(&idp.email_claims("fed@example.com"));
    let body = json!({"credentials": {"oidcIdentityToken": token}, "publicKeyRequest": key.public_key_request("fed@example.com")});
    let chain = ks.sign_v2(&body, None).await.chain();
    assert_eq!(inspect::san(&inspect::parse(&chain[0])).1, "email:fed@example.com");
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn ca_init_with_password_then_serve() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "k.yaml",
        "listen: 127.0.0.1:0\nct_log: disabled\nca:\n  file: {key: pki/ca-key.pem, chain: pki/ca-chain.pem, password: env:KEYLESS_TEST_CA_PW}\n",
    );
    let pw = [("KEYLESS_TEST_CA_PW", "init-secret-8d1f")];
    let out = run_keyless(&["ca", "init", "--config", "k.yaml"], d, &pw);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("root SHA-256"), "{stdout}");
    let key = std::fs::read_to_string(d.join("pki/ca-key.pem")).unwrap();
    assert!(key.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    // The chain is intermediate then root, and openssl agrees the intermediate chains to the root.
    let chain = std::fs::read_to_string(d.join("pki/ca-chain.pem")).unwrap();
    let certs: Vec<String> = chain
        .split_inclusive("-----END CERTIFICATE-----\n")
        .map(str::to_string)
        .collect();
    assert_eq!(certs.len(), 2);
    let inter = inspect::parse(&certs[0]);
    let root = inspect::parse(&certs[1]);
    assert_eq!(inter.tbs_certificate().issuer(), root.tbs_certificate().subject());
    assert!(
        inspect::extension(&inter, "2.5.29.37").is_some(),
        "intermediate carries EKU codeSigning"
    );
    assert!(inspect::extension(&root, "2.5.29.37").is_none(), "root has no EKU");
    std::fs::write(d.join("root.pem"), &certs[1]).unwrap();
    std::fs::write(d.join("inter.pem"), &certs[0]).unwrap();
    let v = keyless_tests::openssl(&["verify", "-CAfile", "root.pem", "inter.pem"], d);
    assert!(String::from_utf8_lossy(&v).contains("OK"));

    // A second init refuses to overwrite anything.
    let again = run_keyless(&["ca", "init", "--config", "k.yaml"], d, &pw);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
    assert_eq!(std::fs::read_to_string(d.join("pki/ca-key.pem")).unwrap(), key);

    // Serving without the password names the missing variable and never prints a secret.
    let out = run_keyless(&["serve", "--config", "k.yaml"], d, &[]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("KEYLESS_TEST_CA_PW is not set"), "{e}");
    let out = run_keyless(&["serve", "--config", "k.yaml"], d, &[("KEYLESS_TEST_CA_PW", "wrong")]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("wrong password"), "{e}");
    assert!(!e.contains("init-secret"), "{e}");
}

#[test]
fn mismatched_key_and_chain_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "a.yaml",
        "ct_log: disabled\nca:\n  file: {key: a/key.pem, chain: a/chain.pem}\n",
    );
    write(
        d,
        "b.yaml",
        "ct_log: disabled\nca:\n  file: {key: b/key.pem, chain: b/chain.pem}\n",
    );
    for c in ["a.yaml", "b.yaml"] {
        assert!(run_keyless(&["ca", "init", "--config", c], d, &[]).status.success());
    }
    write(
        d,
        "mixed.yaml",
        "listen: 127.0.0.1:0\nct_log: disabled\nca:\n  file: {key: a/key.pem, chain: b/chain.pem}\n",
    );
    let out = run_keyless(&["serve", "--config", "mixed.yaml"], d, &[]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("not the issuing certificate's public key"), "{e}");
}

#[tokio::test]
async fn readme_quickstart_dev_mode() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let mut child = std::process::Command::new(keyless_tests::keyless_bin())
        .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir", "state"])
        .current_dir(&d)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let ct_line = lines.next().unwrap().unwrap();
    assert!(
        ct_line.starts_with("keyless: ct log listening on http://127.0.0.1:"),
        "{ct_line}"
    );
    let line = lines.next().unwrap().unwrap();
    let url = line
        .trim()
        .strip_prefix("keyless: listening on ")
        .expect("listen line")
        .to_string();
    let out = run_keyless(
        &[
            "dev",
            "token",
            "--email",
            "you@example.com",
            "--url",
            &url,
            "--data-dir",
            "state",
        ],
        &d,
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let key = ClientKey::p256();
    let body = json!({"credentials": {"oidcIdentityToken": token}, "publicKeyRequest": key.public_key_request("you@example.com")});
    let resp = reqwest::Client::new()
        .post(format!("{url}/api/v2/signingCert"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200, "{v}");
    let leaf = inspect::parse(
        v["signedCertificateEmbeddedSct"]["chain"]["certificates"][0]
            .as_str()
            .unwrap(),
    );
    assert_eq!(inspect::san(&leaf).1, "email:you@example.com");
    assert!(inspect::sigstore(&leaf, 1).unwrap().ends_with("/insecure-dev-issuer"));
    // CT is on in dev mode: the certificate carries exactly one SCT from the embedded log.
    let (_, sct) = keyless_tests::ct::split_final_cert(&leaf_der(&v));
    assert_eq!(keyless_tests::ct::parse_sct_list(&sct.expect("an SCT")).len(), 1);

    // --dev refuses to listen beyond loopback.
    let out = run_keyless(
        &["serve", "--dev", "--listen", "0.0.0.0:0", "--data-dir", "state"],
        &d,
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

fn leaf_der(v: &serde_json::Value) -> Vec<u8> {
    use base64::Engine as _;
    let pem = v["signedCertificateEmbeddedSct"]["chain"]["certificates"][0]
        .as_str()
        .unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>())
        .unwrap()
}
