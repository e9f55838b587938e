//! The CA key in a PKCS#11 token (SoftHSM2): the key ceremony and its record, keys that never
//! leave the token, and start-up failures that name their cause.

use base64::Engine as _;
use keyless_tests::{SoftHsm, run_keyless};
use serde_json::Value;

fn write_config(dir: &std::path::Path, hsm: &SoftHsm, key_label: &str, chain: &str) {
    let text = format!(
        "listen: 127.0.0.1:0\nct_log: disabled\n{}",
        hsm.ca_yaml(key_label, chain)
    );
    std::fs::write(dir.join("keyless.yaml"), text).unwrap();
}

fn env(hsm: &SoftHsm) -> Vec<(String, String)> {
    hsm.env()
}

fn run(args: &[&str], dir: &std::path::Path, env: &[(String, String)]) -> std::process::Output {
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    run_keyless(args, dir, &refs)
}

fn der_certs(pem: &str) -> Vec<Vec<u8>> {
    pem.split("-----END CERTIFICATE-----")
        .filter(|b| b.contains("BEGIN"))
        .map(|b| {
            let body: String = b.lines().filter(|l| !l.starts_with("-----") && !l.is_empty()).collect();
            base64::engine::general_purpose::STANDARD.decode(body).unwrap()
        })
        .collect()
}

#[test]
fn key_ceremony_records_everything_and_keys_never_leave_the_token() {
    let hsm = SoftHsm::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d, &hsm, "ci-issuing", "pki/chain.pem");
    let out = run(&["ca", "init", "--config", "keyless.yaml"], d, &env(&hsm));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("root SHA-256") && stdout.contains("issuing SHA-256"),
        "{stdout}"
    );
    assert!(!stdout.contains(keyless_tests::HSM_PIN), "the PIN is never printed");

    // The chain: intermediate then root, verified by openssl.
    let chain = std::fs::read_to_string(d.join("pki/chain.pem")).unwrap();
    let certs = der_certs(&chain);
    assert_eq!(certs.len(), 2);
    let pems: Vec<&str> = chain.split_inclusive("-----END CERTIFICATE-----\n").collect();
    std::fs::write(d.join("inter.pem"), pems[0]).unwrap();
    std::fs::write(d.join("root.pem"), pems[1]).unwrap();
    let v = keyless_tests::openssl(&["verify", "-CAfile", "root.pem", "inter.pem"], d);
    assert!(String::from_utf8_lossy(&v).contains("OK"));

    // The ceremony record names the token, the keys and the certificates.
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("pki/chain.pem.ceremony.json")).unwrap()).unwrap();
    assert_eq!(record["token"]["label"], "keyless");
    assert!(!record["token"]["serial"].as_str().unwrap().is_empty());
    assert!(record["when"].as_str().unwrap().ends_with('Z'));
    assert!(record["software"].as_str().unwrap().starts_with("keyless "));
    assert!(!record["operator"].as_str().unwrap().is_empty());
    let keys = record["keys"].as_array().unwrap();
    assert_eq!(keys[0]["label"], "ci-issuing-root");
    assert_eq!(keys[0]["algorithm"], "ECDSA P-384");
    assert_eq!(keys[1]["label"], "ci-issuing");
    assert_eq!(keys[1]["algorithm"], "ECDSA P-256");
    let sha = |d: &[u8]| {
        keyless_tests::ct::sha256(d)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert_eq!(
        record["certificates"][0]["sha256"].as_str().unwrap(),
        sha(&certs[1]),
        "root fingerprint"
    );
    assert_eq!(
        record["certificates"][1]["sha256"].as_str().unwrap(),
        sha(&certs[0]),
        "issuing fingerprint"
    );
    assert!(
        record["certificates"][0]["subject"]
            .as_str()
            .unwrap()
            .contains("CN=Keyless CA Root")
    );
    assert!(record.to_string().find(keyless_tests::HSM_PIN).is_none());

    // OpenSC sees both private keys as sensitive, never extractable, usable only to sign.
    let objects = hsm.pkcs11_tool(&["--list-objects", "--type", "privkey"]);
    for label in ["ci-issuing", "ci-issuing-root"] {
        let block = objects
            .split("Private Key Object")
            .find(|b| b.contains(&format!("label:      {label}\n")))
            .unwrap_or_else(|| panic!("{label} not listed:\n{objects}"));
        assert!(
            block.contains("sensitive") && block.contains("never extractable"),
            "{block}"
        );
        assert!(block.contains("Usage:      sign\n"), "{block}");
    }

    // A second ceremony refuses to overwrite the chain or the keys.
    let again = run(&["ca", "init", "--config", "keyless.yaml"], d, &env(&hsm));
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
    std::fs::rename(d.join("pki/chain.pem"), d.join("pki/old.pem")).unwrap();
    std::fs::remove_file(d.join("pki/chain.pem.ceremony.json")).unwrap();
    let again = run(&["ca", "init", "--config", "keyless.yaml"], d, &env(&hsm));
    let e = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && e.contains("\"ci-issuing\"") && e.contains("refusing to overwrite"),
        "{e}"
    );
}

#[test]
fn startup_failures_name_their_cause() {
    let hsm = SoftHsm::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d, &hsm, "k", "pki/chain.pem");
    assert!(
        run(&["ca", "init", "--config", "keyless.yaml"], d, &env(&hsm))
            .status
            .success()
    );
    let serve_err = |config: &str, env: &[(String, String)]| {
        std::fs::write(d.join("bad.yaml"), config).unwrap();
        let out = run(&["serve", "--config", "bad.yaml"], d, env);
        assert!(!out.status.success(), "started with {config}");
        String::from_utf8(out.stderr).unwrap()
    };
    let good = std::fs::read_to_string(d.join("keyless.yaml")).unwrap();

    let mut wrong_pin = env(&hsm);
    wrong_pin[1].1 = "0000".into();
    let e = serve_err(&good, &wrong_pin);
    assert!(e.contains("ca.pkcs11.pin") && e.contains("CKR_PIN_INCORRECT"), "{e}");
    assert!(!e.contains("0000"), "the PIN is never echoed: {e}");

    let e = serve_err(&good.replace("key_label: k,", "key_label: missing,"), &env(&hsm));
    assert!(e.contains("ca.pkcs11.key_label") && e.contains("\"missing\""), "{e}");

    let e = serve_err(&good.replace("token_label: keyless", "token_label: other"), &env(&hsm));
    assert!(e.contains("ca.pkcs11.token_label") && e.contains("\"other\""), "{e}");

    let e = serve_err(
        &good.replace(keyless_tests::SOFTHSM_MODULE, "/nonexistent/libpkcs11.so"),
        &env(&hsm),
    );
    assert!(
        e.contains("ca.pkcs11.module") && e.contains("/nonexistent/libpkcs11.so"),
        "{e}"
    );

    // A chain whose issuing certificate is for another key (a file CA's chain).
    std::fs::write(
        d.join("file.yaml"),
        "ca:\n  file: {key: other/key.pem, chain: other/chain.pem}\n",
    )
    .unwrap();
    assert!(run(&["ca", "init", "--config", "file.yaml"], d, &[]).status.success());
    let e = serve_err(
        &good.replace("chain: pki/chain.pem", "chain: other/chain.pem"),
        &env(&hsm),
    );
    assert!(e.contains("not the issuing certificate's public key"), "{e}");

    let out = run(
        &["serve", "--config", "keyless.yaml"],
        d,
        &[("SOFTHSM2_CONF".into(), hsm.conf().display().to_string())],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("KEYLESS_HSM_PIN is not set"));
}

/// Fault injection: the token's storage disappears under load (as when a token is pulled).
/// Requests get 503 "signing backend unavailable" — quickly, because a circuit breaker stops
/// hammering the token after a failed recovery — and nothing with a bad signature is issued.
/// (SoftHSM itself stays broken in-process after its token directory vanished, so recovery
/// after re-insertion is not exercised here.)
/// The CA trusts no issuer by default; this one is never contacted.
const ISSUER: &str = "issuers: [{url: https://token.actions.githubusercontent.com, type: github-workflow}]\n";

#[tokio::test]
async fn token_fault_under_load_is_503_and_fails_fast() {
    use keyless_tests::{Backend, ClientKey, Keyless, TestIssuer, inspect};
    use serde_json::json;
    use std::time::{Duration, Instant};

    let idp = TestIssuer::start("/idp").await;
    let ks = Keyless::builder(&format!(
        "metrics_listen: 127.0.0.1:0\nct_log: disabled\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    ))
    .backend(Backend::softhsm())
    .start();
    let tokens_dir = ks.hsm.as_ref().unwrap().dir.path().join("tokens");
    let token = std::fs::read_dir(&tokens_dir).unwrap().next().unwrap().unwrap().path();
    let body = |n: usize| {
        let email = format!("f{n}@example.com");
        let key = ClientKey::p256();
        json!({"credentials": {"oidcIdentityToken": idp.mint(&idp.email_claims(&email))}, "publicKeyRequest": key.public_key_request(&email)})
    };
    let ok = ks.sign_v2(&body(0), None).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let chain: Vec<String> = ok.chain();
    inspect::openssl_verify(&chain);

    std::fs::remove_dir_all(&token).unwrap();
    // Four concurrent clients, 25 requests each, while the token is gone.
    let started = Instant::now();
    let replies = ks
        .sign_v2_concurrently((1..=100).map(body).collect(), 4, Duration::ZERO)
        .await
        .unwrap();
    for r in replies.iter().filter(|r| r.status == 503) {
        assert_eq!(r.message(), "signing backend unavailable; try again later");
    }
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert!(
        statuses.iter().all(|s| *s == 503),
        "only 503 while the token is gone: {statuses:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "fails fast: {:?}",
        started.elapsed()
    );
    let log = ks.log();
    let attempts = log.matches("PKCS#11 signing failed; reopening sessions").count();
    assert!(
        (1..20).contains(&attempts),
        "the breaker bounds recovery attempts ({attempts} for 100 requests)"
    );
    assert!(log.contains("recovery failed"), "the cause is logged for operators");
    assert!(!log.contains(keyless_tests::HSM_PIN), "the PIN is never logged");
    assert!(ks.healthy().await);
    // The signer's failures are counted, and readiness says the signer is down.
    let metrics = ks.metrics().await;
    let errors: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("keyless_signer_errors_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no keyless_signer_errors_total in:\n{metrics}"));
    assert!(errors >= 1.0, "{errors}");
    let ready = ks.get("/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(
        ready.json()["signer"].as_str().unwrap().starts_with("unavailable"),
        "{}",
        ready.body
    );
}

/// Fault injection: the CA's sessions lose their login from the side (a test hook logs the process
/// out of the token) while clients issue. Signing reopens its sessions and logs in again; no
/// request fails with anything but 503, every certificate verifies, and issuance goes on.
#[tokio::test]
async fn sessions_logged_out_under_load_recover_without_restart() {
    use keyless_tests::{Backend, ClientKey, Keyless, TestIssuer, inspect};
    use serde_json::json;
    use std::time::Duration;

    let idp = TestIssuer::start("/idp").await;
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    ))
    .backend(Backend::softhsm())
    .env("KEYLESS_INSECURE_TEST_HOOKS", "1")
    .start();
    let body = |n: usize| {
        let email = format!("s{n}@example.com");
        let key = ClientKey::p256();
        json!({"credentials": {"oidcIdentityToken": idp.mint(&idp.email_claims(&email))}, "publicKeyRequest": key.public_key_request(&email)})
    };
    let load = ks.sign_v2_concurrently((0..120).map(body).collect(), 4, Duration::from_millis(3));
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        ks.signal("USR1");
    }
    let replies = load.await.unwrap();
    assert!(
        replies.iter().all(|r| r.status == 200 || r.status == 503),
        "only 200 or 503"
    );
    let issued: Vec<_> = replies.iter().filter(|r| r.status == 200).collect();
    assert!(
        issued.len() >= 100,
        "issuance went on through the faults: {} of 120",
        issued.len()
    );
    for r in issued.iter().step_by(5) {
        inspect::openssl_verify(&r.chain());
    }
    let log = ks.log();
    assert!(log.contains("test hook: logging out of the PKCS#11 token"), "{log}");
    assert!(
        log.contains("reopening sessions"),
        "the logout was noticed and recovered from:\n{log}"
    );
    // After the faults, a fresh request still succeeds.
    let last = ks.sign_v2(&body(999), None).await;
    assert_eq!(last.status, 200, "{}", last.body);
    // SIGTERM releases the token's sessions before exit; a new process opens it again.
    let mut ks = ks;
    let status = ks.restart_after_sigterm();
    assert!(status.success(), "{status}");
    assert!(ks.log().contains("CA signer released"), "{}", ks.log());
    let again = ks.sign_v2(&body(1000), None).await;
    assert_eq!(again.status, 200, "{}", again.body);
}

/// An offline root: the root key lives in its own token (`--root-only`), and the issuing key in
/// the online token is certified by it in a second ceremony (`--intermediate-from`). The online
/// token never holds the root key, and the CA serves from the online token alone.
#[tokio::test]
async fn offline_root_in_a_separate_token() {
    use keyless_tests::{HSM_PIN, Keyless};
    let hsm = SoftHsm::new();
    hsm.util(&[
        "--init-token",
        "--free",
        "--label",
        "offline-root",
        "--pin",
        HSM_PIN,
        "--so-pin",
        "8765",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root_yaml = hsm
        .ca_yaml("keyless", "root/chain.pem")
        .replace("token_label: keyless", "token_label: offline-root");
    std::fs::write(d.join("root.yaml"), format!("ct_log: disabled\n{root_yaml}")).unwrap();
    std::fs::write(
        d.join("keyless.yaml"),
        format!(
            "listen: 127.0.0.1:0\nct_log: disabled\n{ISSUER}{}",
            hsm.ca_yaml("keyless", "online/chain.pem")
        ),
    )
    .unwrap();

    let out = run(&["ca", "init", "--config", "root.yaml", "--root-only"], d, &env(&hsm));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        der_certs(&std::fs::read_to_string(d.join("root/chain.pem")).unwrap()).len(),
        1
    );
    let out = run(
        &[
            "ca",
            "init",
            "--config",
            "keyless.yaml",
            "--intermediate-from",
            "root.yaml",
        ],
        d,
        &env(&hsm),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let online = der_certs(&std::fs::read_to_string(d.join("online/chain.pem")).unwrap());
    let root = der_certs(&std::fs::read_to_string(d.join("root/chain.pem")).unwrap());
    assert_eq!(online.len(), 2);
    assert_eq!(online[1], root[0], "the online chain ends with the offline root");
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("online/chain.pem.ceremony.json")).unwrap()).unwrap();
    assert_eq!(record["ceremony"], "keyless ca init --intermediate-from");
    assert_eq!(record["tokens"].as_array().unwrap().len(), 2);

    // The online token holds only the issuing key; the offline token only the root key.
    let online_keys = hsm.pkcs11_tool(&["--list-objects", "--type", "privkey"]);
    assert!(
        online_keys.contains("label:      keyless\n") && !online_keys.contains("keyless-root"),
        "{online_keys}"
    );
    let conf = hsm.conf();
    let offline = std::process::Command::new("pkcs11-tool")
        .args([
            "--module",
            keyless_tests::SOFTHSM_MODULE,
            "--token-label",
            "offline-root",
            "--login",
            "--pin",
            HSM_PIN,
            "--list-objects",
            "--type",
            "privkey",
        ])
        .env("SOFTHSM2_CONF", conf)
        .output()
        .unwrap();
    let offline = String::from_utf8_lossy(&offline.stdout);
    assert!(
        offline.contains("label:      keyless-root\n") && !offline.contains("label:      keyless\n"),
        "{offline}"
    );

    // The CA starts from the online token (its start-up checks the chain against the key).
    let config = std::fs::read_to_string(d.join("keyless.yaml")).unwrap();
    let ks = Keyless::builder(&config).dir(dir).envs(env(&hsm)).start();
    assert!(ks.healthy().await);
    let bundle = ks.get("/api/v2/trustBundle").await.json();
    assert_eq!(bundle["chains"][0]["certificates"].as_array().unwrap().len(), 2);
}

/// The embedded CT log's key lives in the CA's token under its own label: `ca init` makes it, the
/// log signs SCTs and tree heads with it, the trusted root publishes it, and no log key file exists.
#[tokio::test]
async fn ct_log_key_in_the_same_token() {
    use keyless_tests::{Keyless, TestIssuer, ct};
    let hsm = SoftHsm::new();
    let idp = TestIssuer::start("/idp").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = format!(
        "listen: 127.0.0.1:0\ndata_dir: ./data\nct_log: {{embedded: {{listen: \"127.0.0.1:0\", pkcs11_key_label: keyless-ctlog}}}}\nissuers:\n  - {{url: \"{}\", type: email}}\n{}",
        idp.url,
        hsm.ca_yaml("keyless-issuing", "pki/chain.pem")
    );
    std::fs::write(d.join("keyless.yaml"), &config).unwrap();
    let out = run(&["ca", "init", "--config", "keyless.yaml"], d, &env(&hsm));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let keys = hsm.pkcs11_tool(&["--list-objects", "--type", "privkey"]);
    let block = keys
        .split("Private Key Object")
        .find(|b| b.contains("label:      keyless-ctlog\n"))
        .expect("log key in the token");
    assert!(block.contains("never extractable"), "{block}");

    let ks = Keyless::builder(&config).dir(dir).envs(env(&hsm)).start();
    let spki = base64::engine::general_purpose::STANDARD
        .decode(
            ks.trusted_root()["ctlogs"][0]["publicKey"]["rawBytes"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let key = keyless_tests::ClientKey::p256();
    let body = serde_json::json!({"credentials": {"oidcIdentityToken": idp.mint(&idp.email_claims("log@example.com"))},
                                  "publicKeyRequest": key.public_key_request("log@example.com")});
    let chain = ks.sign_v2(&body, None).await.chain();
    let der = |p: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(p.lines().filter(|l| !l.starts_with("-----")).collect::<String>())
            .unwrap()
    };
    ct::verify_embedded_sct(&der(&chain[0]), &der(&chain[1]), &spki);
    let sth = ks.ct_get("/ct/v1/get-sth").await;
    ct::verify_sth(&sth, &spki);
    assert!(
        !ks.dir.path().join("data/ctlog/log-key.pem").exists(),
        "no log key file when it lives in the token"
    );
}
