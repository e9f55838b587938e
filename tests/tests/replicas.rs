//! The issuance record on PostgreSQL, shared by replicas: against a real, private PostgreSQL
//! cluster (see `keyless_tests::postgres`), one chain with concurrent writers, outages that fail
//! closed and end by themselves, refused newer schemas, and `keyless serve` plus the audit
//! commands on it.

use std::path::Path;
use std::time::{Duration, Instant};

use keyless_audit::AuditError;
use keyless_audit::record::{Decision, Record, Rejection};
use keyless_audit::store::{
    AuditLog, AuditOptions, Postgres, RecordSource, SCHEMA_VERSION, latest_checkpoint_from, read_records_from,
};
use keyless_audit::verify::verify_source;
use keyless_tests::postgres::PgCluster;
use keyless_tests::{ClientKey, Keyless, TestIssuer, run_keyless};
use serde_json::json;

fn refusal(n: u64, who: &str) -> Record {
    Record {
        seq: 0,
        time_ms: 1_700_000_000_000 + n,
        request_id: format!("{who}-{n}"),
        issuer: None,
        subject: None,
        claims_sha256: None,
        key_sha256: None,
        decision: Decision::Rejected,
        rule: "token".into(),
        certificate: None,
        rejection: Some(Rejection {
            class: "token".into(),
            message: format!("refusal {n} by {who}"),
        }),
        intent: None,
        intent_seq: None,
    }
}

fn options(url: &str, key: &Path) -> AuditOptions {
    AuditOptions {
        key: Some(key.to_path_buf()),
        postgres: Some(Postgres {
            url: url.to_string(),
            pool_size: 2,
        }),
        ..AuditOptions::default()
    }
}

fn source(url: &str) -> RecordSource {
    RecordSource::Postgres(Postgres {
        url: url.to_string(),
        pool_size: 1,
    })
}

fn spki(dir: &Path) -> Vec<u8> {
    use base64::Engine as _;
    let pem = std::fs::read_to_string(keyless_audit::store::public_key_path(dir)).unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>())
        .unwrap()
}

/// Drops the log and waits until its writer has committed what was queued.
fn close(log: AuditLog) {
    let stopped = log.stopped();
    drop(log);
    assert!(stopped.wait(Duration::from_secs(30)), "the writer did not stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_on_postgres_appends_reads_back_verifies_and_finds_a_tampered_row() {
    let pg = PgCluster::start_new();
    let url = pg.create_db("record");
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("audit-key.pem");
    let log = AuditLog::open(dir.path(), options(&url, &key)).unwrap();
    for n in 0..3 {
        assert_eq!(log.append_durable(refusal(n, "durable")).await.unwrap(), n);
    }
    log.append(refusal(3, "queued"));
    close(log);

    let records = read_records_from(&source(&url)).unwrap();
    let ids: Vec<&str> = records.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids, ["durable-0", "durable-1", "durable-2", "queued-3"]);
    assert!(records.iter().enumerate().all(|(i, r)| r.seq == i as u64));
    let key_der = spki(dir.path());
    let report = verify_source(&source(&url), &key_der, None).unwrap();
    assert_eq!((report.records, report.first_bad.clone()), (4, None), "{report:?}");
    assert!(report.checkpoints >= 2, "{report:?}");
    let latest = latest_checkpoint_from(&source(&url), &key_der).unwrap().unwrap();
    assert_eq!(latest.size, 4);
    assert_eq!(
        verify_source(&source(&url), &key_der, Some(&latest)).unwrap().first_bad,
        None
    );
    assert_eq!(
        pg.sql("record", "SELECT size FROM head"),
        "4",
        "the head row follows the chain"
    );

    // A row edited in SQL is found at its position, and the writer refuses to extend it.
    pg.sql(
        "record",
        "UPDATE records SET json = replace(json, 'refusal 1', 'nothing') WHERE seq = 1",
    );
    let report = verify_source(&source(&url), &key_der, None).unwrap();
    let (seq, why) = report.first_bad.expect("the edit is found");
    assert_eq!(seq, 1);
    assert!(why.contains("changed"), "{why}");
    let err = AuditLog::open(dir.path(), options(&url, &key)).unwrap_err().to_string();
    assert!(
        err.contains("record 1") && err.contains("postgresql 127.0.0.1"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_writers_on_one_database_make_one_chain() {
    let pg = PgCluster::start_new();
    let url = pg.create_db("shared");
    // Three replicas: their own directories, one database, one audit key (as they share the CA
    // key).
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("audit-key.pem");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let logs: Vec<AuditLog> = dirs
        .iter()
        .map(|d| AuditLog::open(d.path(), options(&url, &key)).unwrap())
        .collect();
    const PER_TASK: u64 = 15;
    let mut tasks = Vec::new();
    for (w, log) in logs.iter().enumerate() {
        // Three concurrent issuances per replica, so batches of several records meet batches of
        // other replicas.
        for t in 0..3 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for n in 0..PER_TASK {
                    let who = format!("w{w}t{t}");
                    got.push((
                        log.append_durable(refusal(n, &who)).await.unwrap(),
                        format!("{who}-{n}"),
                    ));
                    log.append(refusal(n, &format!("{who}-refused")));
                }
                got
            }));
        }
    }
    let mut acknowledged = Vec::new();
    for t in tasks {
        acknowledged.extend(t.await.unwrap());
    }
    for log in logs {
        close(log);
    }
    let total = 9 * PER_TASK as usize;
    let mut seqs: Vec<u64> = acknowledged.iter().map(|(s, _)| *s).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), total, "every durable append got its own position");

    let records = read_records_from(&source(&url)).unwrap();
    assert!(
        records.iter().enumerate().all(|(i, r)| r.seq == i as u64),
        "positions 0..n without gaps"
    );
    for (seq, id) in &acknowledged {
        assert_eq!(
            &records[*seq as usize].request_id, id,
            "the acknowledged position holds the record"
        );
    }
    let report = verify_source(&source(&url), &spki(dirs[0].path()), None).unwrap();
    assert_eq!(report.first_bad, None, "{report:?}");
    assert_eq!(report.records, records.len() as u64);
    assert!(report.count("rejected") >= total as u64);
    let checkpoints: u64 = pg.sql("shared", "SELECT count(*) FROM checkpoints").parse().unwrap();
    assert_eq!(
        report.checkpoints, checkpoints,
        "every checkpoint was checked and verifies"
    );
    assert_eq!(
        pg.sql("shared", "SELECT max(size) FROM checkpoints"),
        records.len().to_string(),
        "the last checkpoint covers the whole chain"
    );
}

async fn append_until_ok(log: &AuditLog, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match log.append_durable(refusal(n, "after")).await {
            Ok(seq) => return seq,
            Err(e) => {
                assert!(
                    matches!(e, AuditError::Unavailable(_)),
                    "only outages while the server comes back: {e}"
                );
                assert!(Instant::now() < deadline, "the writer did not resume: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn wait_available(log: &AuditLog, want: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while log.available() != want {
        assert!(Instant::now() < deadline, "available() did not become {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_or_killed_database_fails_closed_and_the_writer_resumes_by_itself() {
    let pg = PgCluster::start_new();
    let url = pg.create_db("outage");
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), options(&url, &dir.path().join("k.pem"))).unwrap();
    assert_eq!(log.append_durable(refusal(0, "before")).await.unwrap(), 0);

    pg.stop();
    let err = log.append_durable(refusal(1, "during")).await.unwrap_err();
    assert!(matches!(err, AuditError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("issuance record unavailable"), "{err}");
    assert!(!err.to_string().contains("postgres@"), "no URL in messages: {err}");
    wait_available(&log, false).await;
    pg.start();
    // Without traffic, readiness follows the server back (the idle writer asks it).
    wait_available(&log, true).await;
    let seq = append_until_ok(&log, 2).await;
    assert_eq!(seq, 1, "nothing was written during the outage");

    // A crash instead of a shutdown: whatever was acknowledged is kept, and the writer resumes.
    pg.kill();
    let mut acknowledged = 2;
    match log.append_durable(refusal(3, "crash")).await {
        // A backend may outlive its postmaster for a moment.
        Ok(_) => acknowledged += 1,
        Err(e) => assert!(matches!(e, AuditError::Unavailable(_)), "{e:?}"),
    }
    pg.start();
    let seq = append_until_ok(&log, 4).await;
    assert_eq!(seq, acknowledged);
    close(log);
    let report = verify_source(&source(&url), &spki(dir.path()), None).unwrap();
    assert_eq!((report.records, report.first_bad), (acknowledged + 1, None));
}

#[test]
fn a_schema_newer_than_the_binary_is_refused_naming_both_versions() {
    let pg = PgCluster::start_new();
    let url = pg.create_db("future");
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    drop(AuditLog::open(dir.path(), options(&url, &key)).unwrap());
    assert_eq!(
        pg.sql("future", "SELECT max(version) FROM schema_version"),
        SCHEMA_VERSION.to_string()
    );
    // Opening again is a no-op migration.
    drop(AuditLog::open(dir.path(), options(&url, &key)).unwrap());
    pg.sql("future", "INSERT INTO schema_version (version) VALUES (99)");
    let err = AuditLog::open(dir.path(), options(&url, &key)).unwrap_err().to_string();
    assert!(
        err.contains("schema version 99") && err.contains(&format!("version {SCHEMA_VERSION} ")),
        "{err}"
    );
    let err = read_records_from(&source(&url)).unwrap_err().to_string();
    assert!(err.contains("schema version 99"), "readers refuse it too: {err}");
}

fn sign_body(idp: &TestIssuer, who: &str) -> serde_json::Value {
    json!({"credentials": {"oidcIdentityToken": idp.mint(&idp.email_claims(who))},
           "publicKeyRequest": ClientKey::p256().public_key_request(who)})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_serve_records_on_postgres_and_the_audit_commands_read_it() {
    let pg = PgCluster::start_new();
    pg.create_db("ca");
    // Trust authentication ignores the password; it is there to show it never reaches a log.
    let url = format!("postgres://postgres:hunter2secret@127.0.0.1:{}/ca", pg.port());
    let idp = TestIssuer::start("/email").await;
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\naudit: {{postgres: {{url: \"env:KEYLESS_AUDIT_DB\"}}}}\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    ))
    .env("KEYLESS_AUDIT_DB", url.clone())
    .start();
    let r = ks.sign_v2(&sign_body(&idp, "alice@example.com"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        pg.sql(
            "ca",
            "SELECT count(*) FROM records WHERE json::jsonb->>'decision' = 'issued'"
        ) == "1",
        "the issuance is in PostgreSQL"
    );
    assert!(
        !ks.dir.path().join("data/audit/record.sqlite").exists(),
        "and not in SQLite"
    );

    let env = [("KEYLESS_AUDIT_DB", url.as_str())];
    let out = run_keyless(&["audit", "verify", "--config", "keyless.yaml"], ks.dir.path(), &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("the issuance record verifies") && stdout.contains("1 issued"),
        "{stdout}"
    );
    let out = run_keyless(&["audit", "query", "--config", "keyless.yaml"], ks.dir.path(), &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("alice@example.com"), "{stdout}");

    // The database goes away: issuance fails closed naming the record, readiness says so, and
    // both come back without restarting the server.
    pg.stop();
    let r = ks.sign_v2(&sign_body(&idp, "bob@example.com"), None).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.message().contains("issuance record"), "{}", r.body);
    let ready = ks.get("/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    pg.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = ks.sign_v2(&sign_body(&idp, "carol@example.com"), None).await;
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "issuance did not resume: {}", r.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Readiness follows (it may be cached for a moment).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ready = ks.get("/readyz").await;
        if ready.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still not ready: {}", ready.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = run_keyless(&["audit", "verify", "--config", "keyless.yaml"], ks.dir.path(), &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("2 issued"), "{stdout}");
    let log = ks.log();
    assert!(
        !log.contains("hunter2secret"),
        "the password never reaches the log:\n{log}"
    );
    assert!(
        log.contains("postgresql 127.0.0.1"),
        "the log names the database:\n{log}"
    );
}
