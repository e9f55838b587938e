//! What refusals, hang-ups and a full disk leave in the log and the issuance record.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_and_misplaced_tokens_leave_no_trace() {
    let idp = TestIssuer::start("/email").await;
    let ks = Keyless::builder(&format!(
        "log: {{format: json}}\nct_log: disabled\naudit: {{export: export.jsonl}}\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    )).start();
    legitimate(&ks, &idp, "first@example.com").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let data = ks.dir.path().join("data");
    let (data_before, log_before) = (du(&data), ks.log().len());

    // Eight bodies just under the 4 MiB limit, each a JSON type error quoting its whole value.
    let junk = format!("{{\"credentials\": \"{}\"}}", "A".repeat((4 << 20) - 64));
    let http = reqwest::Client::new();
    for _ in 0..8 {
        let start = Instant::now();
        let r = http
            .post(format!("{}/api/v2/signingCert", ks.url))
            .header("content-type", "application/json")
            .body(junk.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let text = r.text().await.unwrap();
        assert!(text.len() < 2048, "the answer quotes the junk: {} bytes", text.len());
        assert!(start.elapsed() < Duration::from_secs(5));
    }
    // A real token in the wrong field, and a key and proof where the token belongs.
    let token = idp.mint(&idp.email_claims("victim@example.com"));
    let key = ClientKey::p256();
    let proof = key.public_key_request("victim@example.com")["proofOfPossession"]
        .as_str()
        .unwrap()
        .to_string();
    let misplaced = [
        json!({"credentials": token}),
        json!({"credentials": {"oidcIdentityToken": [token]}}),
        json!({"publicKeyRequest": token}),
        json!({"credentials": {"oidcIdentityToken": key.spki_pem()}, "publicKeyRequest": {"proofOfPossession": 5}}),
        json!({"credentials": {"oidcIdentityToken": proof}}),
    ];
    for body in &misplaced {
        let r = ks.sign_v2(body, None).await;
        assert!(r.status == 400, "{}: {}", r.status, r.body);
        assert!(!r.body.contains(&token), "the token is echoed back");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // the record's writer commits refusals
    let grown = du(&data).saturating_sub(data_before);
    assert!(grown < 512 * 1024, "the data directory grew by {grown} bytes");
    let log = ks.log();
    let log_grown = log.len() - log_before;
    assert!(log_grown < 64 * 1024, "the log grew by {log_grown} bytes");
    let export = std::fs::read_to_string(ks.dir.path().join("export.jsonl")).unwrap();
    let signature = token.rsplit('.').next().unwrap();
    let spki_b64 = key.spki_pem().lines().nth(1).unwrap().to_string();
    for (what, text) in [("log", &log), ("export", &export)] {
        assert!(!text.contains(signature), "the {what} holds the token's signature");
        assert!(!text.contains(&token[..40]), "the {what} holds the token");
        assert!(!text.contains(&proof[..24]), "the {what} holds the proof");
        assert!(!text.contains(&spki_b64), "the {what} holds the key");
        assert!(!text.contains(&"A".repeat(100)), "the {what} holds the junk");
    }
    let rejected = export.lines().filter(|l| l.contains("\"rejected\"")).count();
    assert_eq!(rejected, 8 + misplaced.len(), "every refusal is recorded:\n{export}");
    legitimate(&ks, &idp, "after@example.com").await;
}

/// A client that sends its request and hangs up does not leave a logged precertificate without an
/// issuance record: the issuance runs to completion, and the cross-check finds nothing to report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_hang_up_raise_no_false_alarm() {
    let idp = TestIssuer::start("/email").await;
    let ks = Keyless::builder(&format!(
        "ct_log: {{embedded: {{listen: \"127.0.0.1:0\", mmd: 100ms}}}}\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    ))
    .start();
    let addr = addr_of(&ks.url);
    for i in 0..20 {
        let who = format!("gone{i}@example.com");
        let body = sign_body(&idp.mint(&idp.email_claims(&who)), &ClientKey::p256(), &who).to_string();
        let mut s = connect_from("127.0.0.8", addr).await.unwrap();
        s.write_all(
            format!(
                "POST /api/v2/signingCert HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        // Hang up at once, or after a few milliseconds: mid-issuance either way.
        if i % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        drop(s);
    }
    legitimate(&ks, &idp, "stays@example.com").await;
    // Let every issuance finish and the log publish it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let records = keyless_audit::store::read_records(&ks.dir.path().join("data/audit")).unwrap();
    let count = |d: keyless_audit::record::Decision| records.iter().filter(|r| r.decision == d).count();
    use keyless_audit::record::Decision;
    assert_eq!(
        count(Decision::Intent),
        count(Decision::Issued) + count(Decision::Abandoned),
        "every intent has its outcome"
    );
    assert!(count(Decision::Issued) >= 1);
    let tr = ks.trusted_root();
    let spki = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        tr["ctlogs"][0]["publicKey"]["rawBytes"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(ks.dir.path().join("log.pem"), keyless_tests::pem("PUBLIC KEY", &spki)).unwrap();
    let d = ks.dir.path();
    let log_url = ks.ct_url.clone().unwrap();
    let out = keyless_tests::run_keyless(
        &[
            "audit",
            "sync",
            "--config",
            "keyless.yaml",
            "--log",
            &log_url,
            "--log-key",
            "log.pem",
            "--quiet",
        ],
        d,
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = keyless_tests::run_keyless(&["audit", "cross-check", "--config", "keyless.yaml"], d, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("record and CT logs agree"), "{text}");
}

/// A flood of refusals is recorded best effort: beyond the bounded queue refusals are dropped
/// (and counted), and issuance never waits behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_flood_never_slows_issuance() {
    let idp = TestIssuer::start("/email").await;
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\nmetrics_listen: 127.0.0.1:0\naudit: {{refusal_queue: 16}}\nrate_limits: {{per_identity: off}}\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    )).start();
    let flood = {
        let url = ks.url.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut tasks = Vec::new();
            for _ in 0..16 {
                let (http, url) = (http.clone(), url.clone());
                tasks.push(tokio::spawn(async move {
                    for _ in 0..200 {
                        let r = http
                            .post(format!("{url}/api/v2/signingCert"))
                            .json(&json!({"credentials": {"oidcIdentityToken": "a.b.c"}}))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(r.status(), 400);
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        })
    };
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        worst = worst.max(legitimate(&ks, &idp, &format!("busy{i}@example.com")).await);
    }
    flood.await.unwrap();
    assert!(
        worst < Duration::from_secs(1),
        "issuance took {worst:?} during the flood"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = ks.metrics().await;
    let dropped: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("keyless_audit_refusals_dropped_total "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as usize;
    let records = keyless_audit::store::read_records(&ks.dir.path().join("data/audit")).unwrap();
    let issued = records.iter().filter(|r| r.certificate.is_some()).count();
    assert_eq!(issued, 20, "every issuance is recorded");
    let rejected = records.len() - issued;
    // Every refusal is accounted for: recorded, or dropped and counted.
    assert_eq!(rejected + dropped, 16 * 200, "{rejected} recorded, {dropped} dropped");
    assert!(
        ks.log().len() < 512 * 1024,
        "the log stays bounded: {} bytes",
        ks.log().len()
    );
}

/// A small filesystem mounted for the data directory; unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    /// Mounts a tmpfs of `size` at `at`, or says why it cannot (not root, no mount namespace).
    fn mount(at: &Path, size: &str) -> Result<SmallDisk, String> {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(SmallDisk(at.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The data directory's disk fills up: issuance fails closed with 503 naming the record (nothing
/// is released that the record does not hold), readiness says so, and issuance resumes by itself
/// when space returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_closed_and_recovers() {
    let idp = TestIssuer::start("/email").await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let disk = match SmallDisk::mount(&data, "8m") {
        Ok(d) => d,
        Err(why) => {
            // Mounting needs root (CI and this project's machines run the suite as root).
            println!("SKIPPED: cannot mount a tmpfs for the data directory: {why}");
            return;
        }
    };
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    ))
    .dir(dir)
    .start();
    legitimate(&ks, &idp, "before@example.com").await;
    // Fill the disk.
    let filler = data.join("filler");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    let mut refused = None;
    for i in 0..20 {
        let who = format!("full{i}@example.com");
        let r = ks
            .sign_v2(
                &sign_body(&idp.mint(&idp.email_claims(&who)), &ClientKey::p256(), &who),
                None,
            )
            .await;
        if r.status != 200 {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("issuance stops once the record cannot be written");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.message().contains("issuance record is unavailable"), "{}", r.body);
    let ready = ks.get("/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.json()["record"], "unavailable");
    // Space returns: issuance resumes without operator action.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let who = "after@example.com";
        let r = ks
            .sign_v2(
                &sign_body(&idp.mint(&idp.email_claims(who)), &ClientKey::p256(), who),
                None,
            )
            .await;
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "issuance did not resume: {}", r.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = ks.log();
    assert!(log.contains("issuance record"), "the outage is logged:\n{log}");
    // The record came through the outage intact.
    let out = keyless_tests::run_keyless(&["audit", "verify", "--config", "keyless.yaml"], ks.dir.path(), &[]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Detach the small disk first so the temporary directory can be removed after it.
    drop(disk);
    drop(ks);
}
