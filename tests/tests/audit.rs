//! Compliance review through the `keyless audit` commands and the review page, against records a
//! running server wrote: tamper detection, queries that match what was issued field by field,
//! refusals recorded without tokens, watchlists, and the page in a real browser.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyless_tests::clients::{ClientRun, node};
use keyless_tests::{ClientKey, Keyless, TestIssuer, inspect, keyless_bin, run_keyless};
use serde_json::{Value, json};

fn sign_body(token: &str, key: &ClientKey, name: &str) -> Value {
    json!({"credentials": {"oidcIdentityToken": token}, "publicKeyRequest": key.public_key_request(name)})
}

/// `keyless audit <args> --config keyless.yaml` in the server's directory: (exit code, stdout, stderr).
fn audit(ks: &Keyless, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["audit"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", "keyless.yaml"]);
    let out = run_keyless(&all, ks.dir.path(), &[]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Two issuers, the embedded log, and a JSON-lines export of the record.
async fn setup() -> (TestIssuer, TestIssuer, Keyless) {
    let email = TestIssuer::start("/email").await;
    let github = TestIssuer::start("/gh").await;
    let ks = Keyless::builder(&format!(
        "ct_log: {{embedded: {{listen: \"127.0.0.1:0\", mmd: 200ms}}}}\naudit: {{export: records.jsonl}}\n\
         issuers:\n  - {{url: \"{}\", type: email}}\n  - {{url: \"{}\", type: github-workflow}}\n",
        email.url, github.url
    ))
    .start();
    (email, github, ks)
}

/// Issues a certificate; returns the leaf PEM.
async fn issue(ks: &Keyless, idp: &TestIssuer, claims: &Value, name: &str) -> String {
    let r = ks
        .sign_v2(&sign_body(&idp.mint(claims), &ClientKey::p256(), name), None)
        .await;
    r.chain()[0].clone()
}

fn der(pem: &str) -> Vec<u8> {
    STANDARD
        .decode(pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>())
        .unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn serial_of(pem: &str) -> String {
    let hex: String = inspect::parse(pem)
        .tbs_certificate()
        .serial_number()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    hex.trim_start_matches('0').to_string()
}

#[tokio::test]
async fn queries_match_what_was_issued_and_refusals_hold_no_token() {
    let (email, github, ks) = setup().await;
    let alice = issue(
        &ks,
        &email,
        &email.email_claims("alice@example.com"),
        "alice@example.com",
    )
    .await;
    let sub = github.github_claims()["sub"].as_str().unwrap().to_string();
    let workflow = issue(&ks, &github, &github.github_claims(), &sub).await;
    // Two refusals, each carrying a token the record must not keep.
    let mut c = email.email_claims("mallory@example.com");
    c["aud"] = json!("someone-else");
    let wrong_aud = email.mint(&c);
    assert_eq!(
        ks.sign_v2(&sign_body(&wrong_aud, &ClientKey::p256(), "mallory@example.com"), None)
            .await
            .status,
        400
    );
    let bad_pop = email.mint(&email.email_claims("bob@example.com"));
    assert_eq!(
        ks.sign_v2(&sign_body(&bad_pop, &ClientKey::p256(), "eve@example.com"), None)
            .await
            .status,
        400
    );

    // JSON query: every issued certificate, field by field.
    let (code, out, err) = audit(&ks, &["query", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let records: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(records.len(), 2, "refusals are left out unless asked for");
    let trusted = ks.trusted_root();
    let log_id = hex_of_b64(trusted["ctlogs"][0]["logId"]["keyId"].as_str().unwrap());
    for (rec, pem, issuer, san) in [
        (&records[0], &alice, &email.url, "email:alice@example.com".to_string()),
        (
            &records[1],
            &workflow,
            &github.url,
            "uri:https://github.com/octo-org/octo-repo/.github/workflows/release.yml@refs/heads/main".to_string(),
        ),
    ] {
        let cert = &rec["certificate"];
        let leaf = inspect::parse(pem);
        assert_eq!(rec["decision"], "issued");
        assert_eq!(rec["issuer"], *issuer);
        assert_eq!(cert["san"], san);
        assert_eq!(cert["serial"], serial_of(pem));
        assert_eq!(cert["sha256"], sha256_hex(&der(pem)));
        assert_eq!(STANDARD.decode(cert["der"].as_str().unwrap()).unwrap(), der(pem));
        assert_eq!(cert["sct_log_id"], log_id);
        assert!(cert["leaf_index"].is_u64());
        assert_eq!(
            cert["not_before"].as_i64().unwrap(),
            leaf.tbs_certificate()
                .validity()
                .not_before
                .to_unix_duration()
                .as_secs() as i64
        );
        // Every extension, named and decoded, with the values the certificate carries.
        let exts: Vec<&Value> = cert["extensions"].as_array().unwrap().iter().collect();
        assert_eq!(exts.len(), inspect::extension_oids(&leaf).len());
        for e in &exts {
            let oid = e["oid"].as_str().unwrap();
            if let Some(arc) = oid.strip_prefix("1.3.6.1.4.1.57264.1.") {
                assert_eq!(
                    e["value"].as_str(),
                    inspect::sigstore(&leaf, arc.parse().unwrap()).as_deref(),
                    "{oid}"
                );
                assert!(!e["name"].as_str().unwrap().starts_with("Sigstore"), "named: {e}");
            }
        }
        assert_eq!(rec["key_sha256"].as_str().unwrap().len(), 64);
        assert_eq!(rec["claims_sha256"].as_str().unwrap().len(), 64);
    }
    assert_eq!(
        records[1]["certificate"]["extensions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["oid"] == "1.3.6.1.4.1.57264.1.12")
            .unwrap()["value"],
        "https://github.com/octo-org/octo-repo"
    );

    // Filters.
    let serials = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["query", "--format", "json"];
        all.extend_from_slice(args);
        let (code, out, err) = audit(&ks, &all);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<Vec<Value>>(&out)
            .unwrap()
            .iter()
            .map(|r| r["certificate"]["serial"].as_str().unwrap_or("-").to_string())
            .collect()
    };
    assert_eq!(serials(&["--identity", "alice@*"]), [serial_of(&alice)]);
    assert_eq!(
        serials(&["--repository", "https://github.com/octo-org/*"]),
        [serial_of(&workflow)]
    );
    assert_eq!(serials(&["--trigger", "push"]), [serial_of(&workflow)]);
    assert_eq!(serials(&["--issuer", &email.url]), [serial_of(&alice)]);
    assert_eq!(
        serials(&["--serial", &serial_of(&workflow).to_uppercase()]),
        [serial_of(&workflow)]
    );
    assert!(serials(&["--since", "2099-01-01T00:00:00Z"]).is_empty());
    assert_eq!(serials(&["--until", "2099-01-01T00:00:00Z"]).len(), 2);
    let (code, _, err) = audit(&ks, &["query", "--since", "yesterday"]);
    assert_eq!(code, 2, "a bad argument is an error, not a finding");
    assert!(err.contains("RFC 3339"), "{err}");

    // Refusals are recorded with their class and message, and no token.
    let (_, out, _) = audit(&ks, &["query", "--rejected", "--format", "json"]);
    let all: Vec<Value> = serde_json::from_str(&out).unwrap();
    let refused: Vec<&Value> = all.iter().filter(|r| r["decision"] == "rejected").collect();
    assert_eq!(refused.len(), 2);
    assert_eq!(refused[0]["rejection"]["class"], "token");
    assert!(refused[0]["rejection"]["message"].as_str().unwrap().contains("aud"));
    assert_eq!(refused[0]["issuer"], email.url);
    assert_eq!(refused[1]["rejection"]["class"], "pop");
    assert_eq!(refused[1]["subject"], "bob@example.com");
    // Each refusal keeps the digest of its token's claims and, when the key parsed, of the key.
    let payload_digest = |token: &str| {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap();
        sha256_hex(&payload)
    };
    assert_eq!(refused[0]["claims_sha256"], payload_digest(&wrong_aud));
    assert_eq!(refused[1]["claims_sha256"], payload_digest(&bad_pop));
    assert_eq!(refused[1]["key_sha256"].as_str().map(str::len), Some(64));
    let (_, csv, _) = audit(&ks, &["query", "--rejected", "--format", "csv"]);
    assert_eq!(csv.lines().count(), 5, "{csv}");
    let (_, table, _) = audit(&ks, &["query"]);
    assert!(table.contains("email:alice@example.com"), "{table}");

    // The stored record and its export hold digests, never the tokens (nor their signatures).
    let stored = std::fs::read(ks.dir.path().join("data/audit/record.sqlite")).unwrap();
    let wal = std::fs::read(ks.dir.path().join("data/audit/record.sqlite-wal")).unwrap_or_default();
    let export = std::fs::read_to_string(ks.dir.path().join("records.jsonl")).unwrap();
    // Two issuances (each an intent, then the issued record naming it) and two refusals.
    let kinds: Vec<Value> = export.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let count = |d: &str| kinds.iter().filter(|r| r["decision"] == d).count();
    assert_eq!(
        (count("intent"), count("issued"), count("rejected")),
        (2, 2, 2),
        "every decision is exported:\n{export}"
    );
    for issued in kinds.iter().filter(|r| r["decision"] == "issued") {
        let intent = &kinds[issued["intent_seq"].as_u64().expect("issued names its intent") as usize];
        assert_eq!(intent["decision"], "intent");
        assert_eq!(intent["intent"]["serial"], issued["certificate"]["serial"]);
    }
    for token in [&wrong_aud, &bad_pop] {
        for secret in [token.as_str(), token.rsplit('.').next().unwrap()] {
            for (name, bytes) in [
                ("record", &stored),
                ("wal", &wal),
                ("export", &export.as_bytes().to_vec()),
            ] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "the {name} holds a token"
                );
            }
        }
    }
    let (code, out, _) = audit(&ks, &["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("6 records (2 issued, 2 refused, 2 intents)"), "{out}");
}

fn hex_of_b64(b64: &str) -> String {
    STANDARD
        .decode(b64)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Copies the record files aside so each tampering starts from the original.
fn snapshot(dir: &Path) -> PathBuf {
    let saved = dir.join("pristine");
    std::fs::create_dir_all(&saved).unwrap();
    for f in ["record.sqlite", "record.sqlite-wal", "record.sqlite-shm"] {
        let _ = std::fs::copy(dir.join(f), saved.join(f));
    }
    saved
}

fn restore(saved: &Path, dir: &Path) {
    for f in ["record.sqlite", "record.sqlite-wal", "record.sqlite-shm"] {
        let _ = std::fs::remove_file(dir.join(f));
        if saved.join(f).exists() {
            std::fs::copy(saved.join(f), dir.join(f)).unwrap();
        }
    }
}

#[tokio::test]
async fn verify_finds_edits_deletions_and_reorders_at_the_first_bad_record() {
    let (email, _github, mut ks) = setup().await;
    for who in ["a", "b", "c", "d", "e"] {
        let name = format!("{who}@example.com");
        issue(&ks, &email, &email.email_claims(&name), &name).await;
    }
    ks.kill9(); // stop writing; what is on disk is what a reviewer gets
    let dir = ks.dir.path().join("data/audit");
    let saved = snapshot(&dir);
    let (code, out, _) = audit(&ks, &["verify"]);
    assert_eq!(code, 0, "{out}");

    let cases: [(&str, &str, &str); 4] = [
        (
            "edit",
            // Each issuance is two records (intent, issued): c's issued record is 5.
            "UPDATE records SET json = replace(json, 'c@example.com', 'x@example.com') WHERE seq = 5",
            "record 5: its content was changed",
        ),
        ("delete", "DELETE FROM records WHERE seq = 1", "record 1:"),
        (
            "reorder",
            "UPDATE records SET seq = -1 WHERE seq = 3; UPDATE records SET seq = 3 WHERE seq = 4; UPDATE records SET seq = 4 WHERE seq = -1;",
            "record 3:",
        ),
        (
            "truncate",
            "DELETE FROM records WHERE seq = 9",
            "record 9: records 9 to 9 are missing",
        ),
    ];
    for (what, sql, expected) in cases {
        restore(&saved, &dir);
        let conn = rusqlite::Connection::open(dir.join("record.sqlite")).unwrap();
        conn.execute_batch(sql).unwrap();
        drop(conn);
        let (code, out, err) = audit(&ks, &["verify"]);
        assert_eq!(code, 1, "{what}: {out}{err}");
        assert!(out.starts_with(expected), "{what}: {out}");
        // The server refuses to extend a damaged record.
        let serve = run_keyless(&["serve", "--config", "keyless.yaml"], ks.dir.path(), &[]);
        assert!(!serve.status.success());
        assert!(
            String::from_utf8_lossy(&serve.stderr).contains("fails verification at record"),
            "{what}"
        );
    }
    // A pinned audit key that does not match rejects every checkpoint.
    restore(&saved, &dir);
    let other = tempfile::tempdir().unwrap();
    keyless_tests::openssl(
        &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "k.pem"],
        other.path(),
    );
    keyless_tests::openssl(&["ec", "-in", "k.pem", "-pubout", "-out", "pub.pem"], other.path());
    let pinned = other.path().join("pub.pem");
    let (code, out, _) = audit(&ks, &["verify", "--audit-key", pinned.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("valid audit key signature"), "{out}");
}

#[tokio::test]
async fn watch_reports_identities_outside_the_watchlist() {
    let (email, github, ks) = setup().await;
    issue(
        &ks,
        &email,
        &email.email_claims("alice@acme.example"),
        "alice@acme.example",
    )
    .await;
    let sub = github.github_claims()["sub"].as_str().unwrap().to_string();
    issue(&ks, &github, &github.github_claims(), &sub).await;
    let list = ks.dir.path().join("watchlist.yaml");
    std::fs::write(
        &list,
        format!(
            "issuers:\n  \"{}\": [\"*@acme.example\"]\n  \"{}\": [\"https://github.com/octo-org/*\"]\n",
            email.url, github.url
        ),
    )
    .unwrap();
    let (code, out, err) = audit(&ks, &["watch", "--watchlist", "watchlist.yaml", "--source", "record"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 certificates checked"), "{out}");
    issue(
        &ks,
        &email,
        &email.email_claims("mallory@evil.example"),
        "mallory@evil.example",
    )
    .await;
    let (code, out, _) = audit(&ks, &["watch", "--watchlist", "watchlist.yaml", "--source", "record"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("email:mallory@evil.example is not an expected identity"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1, "{out}");
    // From the log's point of view (after a sync) the same finding appears.
    let (url, key) = log_of(&ks);
    let (code, out, err) = audit(
        &ks,
        &["sync", "--log", &url, "--log-key", key.to_str().unwrap(), "--quiet"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = audit(&ks, &["watch", "--watchlist", "watchlist.yaml"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("mallory@evil.example"), "{out}");
}

/// The embedded log's URL and its key as a PEM file (from `keyless trusted-root`).
fn log_of(ks: &Keyless) -> (String, PathBuf) {
    let root = ks.trusted_root();
    let log = &root["ctlogs"][0];
    let key = ks.dir.path().join("log.pub.pem");
    std::fs::write(
        &key,
        keyless_tests::pem(
            "PUBLIC KEY",
            &STANDARD.decode(log["publicKey"]["rawBytes"].as_str().unwrap()).unwrap(),
        ),
    )
    .unwrap();
    (log["baseUrl"].as_str().unwrap().to_string(), key)
}

/// `keyless audit serve` as a subprocess, killed on drop.
struct Review {
    url: String,
    child: std::process::Child,
}

impl Drop for Review {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn review(ks: &Keyless, extra: &[&str]) -> Review {
    let mut child = Command::new(keyless_bin())
        .args(["audit", "serve", "--config", "keyless.yaml", "--listen", "127.0.0.1:0"])
        .args(extra)
        .current_dir(ks.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("keyless: review page on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    Review { url, child }
}

/// Where tests keep artifacts (screenshots) for a human to look at after the run.
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_page_in_a_real_browser() {
    let (email, github, ks) = setup().await;
    for who in ["alice", "bob", "carol"] {
        let name = format!("{who}@example.com");
        issue(&ks, &email, &email.email_claims(&name), &name).await;
    }
    let sub = github.github_claims()["sub"].as_str().unwrap().to_string();
    issue(&ks, &github, &github.github_claims(), &sub).await;
    let mut c = email.email_claims("nobody@example.com");
    c["aud"] = json!("other");
    assert_eq!(
        ks.sign_v2(
            &sign_body(&email.mint(&c), &ClientKey::p256(), "nobody@example.com"),
            None
        )
        .await
        .status,
        400
    );
    tokio::time::sleep(Duration::from_millis(500)).await; // past the log's merge delay
    let (url, key) = log_of(&ks);
    for args in [
        vec!["verify"],
        vec!["sync", "--log", &url, "--log-key", key.to_str().unwrap(), "--quiet"],
        vec!["cross-check"],
    ] {
        let (code, out, err) = audit(&ks, &args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
    }

    // With a token, the page refuses anyone without it.
    std::fs::write(ks.dir.path().join("review-token"), "s3cret-review-token\n").unwrap();
    let page = review(&ks, &["--token-file", "review-token"]);
    let anonymous = reqwest::get(&page.url).await.unwrap();
    assert_eq!(anonymous.status(), 401);

    let shots = artifacts();
    let run = ClientRun::run(
        node("review-page.mjs")
            .args([
                "--url",
                &page.url,
                "--identity",
                "bob@*",
                "--token",
                "s3cret-review-token",
            ])
            .arg("--screenshot-dir")
            .arg(&shots),
    );
    let got = run.json();
    assert_eq!(got["before"], 4, "{got}");
    assert_eq!(got["visibleWhileTyping"], 1);
    assert_eq!(got["identities"], json!(["email:bob@example.com"]));
    assert_eq!(got["charts"]["rejections"], 1, "one refusal class");
    assert!(got["charts"]["issuance"].as_u64().unwrap() >= 2, "a bar per issuer");
    let checks = got["checks"].as_str().unwrap();
    assert!(
        checks.contains("audit verify") && checks.contains("audit cross-check"),
        "{checks}"
    );
    assert_eq!(checks.matches("clean").count(), 2, "{checks}");
    let detail = &got["detail"];
    assert_eq!(detail["san"], "email:bob@example.com");
    assert_eq!(detail["issuer"], email.url);
    let ext = &detail["extensions"];
    assert_eq!(ext["1.3.6.1.4.1.57264.1.8"]["name"], "Issuer (V2)");
    assert_eq!(ext["1.3.6.1.4.1.57264.1.8"]["value"], email.url);
    assert_eq!(ext["1.3.6.1.4.1.57264.1.24"]["value"], "user-bob@example.com");
    assert_eq!(ext["2.5.29.17"]["critical"], true);
    assert_eq!(ext["2.5.29.37"]["value"], "codeSigning");
    assert!(detail["sct"].as_str().unwrap().starts_with(&format!(
        "log {}",
        hex_of_b64(ks.trusted_root()["ctlogs"][0]["logId"]["keyId"].as_str().unwrap())
    )));
    assert!(
        detail["inclusion"].as_str().unwrap().starts_with("included: leaf "),
        "{detail}"
    );
    assert_eq!(got["external"], json!([]), "the page loads nothing from elsewhere");
    for shot in ["review-index.png", "review-certificate.png"] {
        let png = std::fs::read(shots.join(shot)).unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{shot} is a real screenshot"
        );
    }
}
