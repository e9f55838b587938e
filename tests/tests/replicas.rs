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
            ca_cert_pem: None,
        }),
        ..AuditOptions::default()
    }
}

fn source(url: &str) -> RecordSource {
    RecordSource::Postgres(Postgres {
        url: url.to_string(),
        pool_size: 1,
        ca_cert_pem: None,
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

/// What replicas share, as an operator would set it up: the CA made once (`keyless ca init`),
/// the audit key, one `keyless ctlog serve`, and one PostgreSQL database.
struct Fleet {
    shared: tempfile::TempDir,
    log_url: String,
    log_spki: Vec<u8>,
    db_url: String,
    _log: keyless_tests::LogServer,
}

impl Fleet {
    fn new(pg: &PgCluster) -> Fleet {
        pg.create_db("ca");
        let shared = tempfile::tempdir().unwrap();
        let d = shared.path();
        std::fs::write(
            d.join("log.yaml"),
            "data_dir: ./logdata\nca:\n  file: {key: pki/key.pem, chain: pki/chain.pem}\nct_log: {embedded: {listen: \"127.0.0.1:0\", prefix: shared-log, submissions: {ca_addresses: [127.0.0.1]}}}\n",
        )
        .unwrap();
        let out = run_keyless(&["ca", "init", "--config", "log.yaml"], d, &[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let log = keyless_tests::LogServer::start(d, "log.yaml");
        Fleet {
            db_url: pg.url("ca"),
            log_url: log.url.clone(),
            log_spki: log.spki.clone(),
            shared,
            _log: log,
        }
    }

    /// A replica's configuration: its own data directory, everything else shared.
    fn config(&self, idp: &TestIssuer, extra: &str) -> String {
        let d = self.shared.path().display();
        format!(
            "ca:\n  file: {{key: {d}/pki/key.pem, chain: {d}/pki/chain.pem}}\n\
             ct_log: {{url: \"{}\", public_key: {d}/log-pub.pem}}\n\
             audit: {{key: {d}/audit-key.pem, postgres: {{url: \"env:KEYLESS_AUDIT_DB\"}}}}\n\
             issuers:\n  - {{url: \"{}\", type: email}}\n{extra}",
            self.log_url, idp.url
        )
    }

    /// Starts replicas one after the other (the first makes the audit key).
    fn replicas(&self, idp: &TestIssuer, extra: &str, n: usize) -> Vec<Keyless> {
        (0..n)
            .map(|_| {
                Keyless::builder(&self.config(idp, extra))
                    .env("KEYLESS_AUDIT_DB", self.db_url.clone())
                    .start()
            })
            .collect()
    }
}

/// What the clients saw while the fleet was under load.
#[derive(Default)]
struct Seen {
    /// Leaf and issuing CA of every certificate a client received.
    certificates: Vec<(Vec<u8>, Vec<u8>)>,
    /// Requests that never got an answer (the replica they went to was killed).
    dropped: usize,
    /// `(status, body)` of every answer that was not 200.
    refused: Vec<(u16, String)>,
}

fn pem_der(pem: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>())
        .unwrap()
}

/// `workers` clients issue round-robin over `urls` (read before each request, so a restarted
/// replica's new address is used) until `stop`, each with its own identity per request.
fn load(
    idp: &TestIssuer,
    urls: std::sync::Arc<std::sync::RwLock<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    workers: usize,
) -> Vec<tokio::task::JoinHandle<Seen>> {
    use std::sync::atomic::Ordering;
    // Bodies are made up front: the issuer's signing key stays in the test's thread.
    let bodies: std::sync::Arc<Vec<serde_json::Value>> = std::sync::Arc::new(
        (0..3000)
            .map(|i| sign_body(idp, &format!("load{i}@example.com")))
            .collect(),
    );
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    (0..workers)
        .map(|_| {
            let (urls, stop, bodies, next) = (urls.clone(), stop.clone(), bodies.clone(), next.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                let mut seen = Seen::default();
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { break };
                    let url = {
                        let urls = urls.read().unwrap();
                        urls[i % urls.len()].clone()
                    };
                    let sent = http.post(format!("{url}/api/v2/signingCert")).json(body).send().await;
                    let Ok(resp) = sent else {
                        seen.dropped += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    let status = resp.status().as_u16();
                    let Ok(text) = resp.text().await else {
                        seen.dropped += 1;
                        continue;
                    };
                    if status != 200 {
                        seen.refused.push((status, text));
                        continue;
                    }
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    let chain = v["signedCertificateEmbeddedSct"]["chain"]["certificates"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| pem_der(c.as_str().unwrap()))
                        .collect::<Vec<_>>();
                    seen.certificates.push((chain[0].clone(), chain[1].clone()));
                }
                seen
            })
        })
        .collect()
}

async fn join(handles: Vec<tokio::task::JoinHandle<Seen>>) -> Seen {
    let mut all = Seen::default();
    for h in handles {
        let s = h.await.unwrap();
        all.certificates.extend(s.certificates);
        all.dropped += s.dropped;
        all.refused.extend(s.refused);
    }
    all
}

/// Waits for the shared log's tree head to hold `size` entries; returns it.
async fn shared_sth(fleet: &Fleet, size: u64) -> keyless_tests::ct::Sth {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: serde_json::Value = reqwest::get(format!("{}/ct/v1/get-sth", fleet.log_url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let sth = keyless_tests::ct::verify_sth(&v, &fleet.log_spki);
        if sth.tree_size >= size {
            return sth;
        }
        assert!(Instant::now() < deadline, "the log stayed at {} entries", sth.tree_size);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The acceptance test: three replicas on one PostgreSQL and one `keyless ctlog serve`,
/// clients spread over them, one replica SIGKILLed under load and restarted, then the database
/// restarted under load. Every certificate any client received is in the record and in the log,
/// the record verifies as one chain, and `keyless audit cross-check` finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_lose_nothing_when_one_is_killed_or_the_database_restarts() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, RwLock};
    let pg = PgCluster::start_new();
    let fleet = Fleet::new(&pg);
    let idp = TestIssuer::start("/email").await;
    let mut replicas = fleet.replicas(&idp, "", 3);
    let urls = Arc::new(RwLock::new(replicas.iter().map(|r| r.url.clone()).collect::<Vec<_>>()));

    // Phase 1: one replica is killed under load and restarted.
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&idp, urls.clone(), stop.clone(), 6);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_url = replicas[1].url.clone();
    replicas[1].kill9();
    tokio::time::sleep(Duration::from_millis(700)).await;
    tokio::task::block_in_place(|| replicas[1].restart_after_kill9());
    urls.write().unwrap()[1] = replicas[1].url.clone();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let phase1 = join(clients).await;
    assert!(
        phase1.refused.is_empty(),
        "the live replicas answered every request: {:?}",
        &phase1.refused[..phase1.refused.len().min(3)]
    );
    assert!(
        phase1.certificates.len() >= 20,
        "only {} issued",
        phase1.certificates.len()
    );
    assert_ne!(killed_url, replicas[1].url, "the restarted replica listens anew");

    // Phase 2: the database is stopped under load: every answer is a certificate or a 503 that
    // names the record; then it comes back and all three replicas issue again by themselves.
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&idp, urls.clone(), stop.clone(), 4);
    tokio::time::sleep(Duration::from_millis(800)).await;
    tokio::task::block_in_place(|| pg.stop());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    tokio::task::block_in_place(|| pg.start());
    let deadline = Instant::now() + Duration::from_secs(60);
    for r in &replicas {
        loop {
            let reply = r.sign_v2(&sign_body(&idp, "after@example.com"), None).await;
            if reply.status == 200 {
                break;
            }
            assert_eq!(reply.status, 503, "{}", reply.body);
            assert!(Instant::now() < deadline, "a replica did not resume: {}", reply.body);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let phase2 = join(clients).await;
    assert_eq!(phase2.dropped, 0, "no replica died");
    assert!(!phase2.refused.is_empty(), "the outage was seen by clients");
    for (status, body) in &phase2.refused {
        assert_eq!(*status, 503, "{body}");
        assert!(body.contains("issuance record"), "{body}");
    }

    // Every certificate a client received: recorded as issued exactly once, and in the log.
    let received: Vec<_> = phase1.certificates.iter().chain(&phase2.certificates).collect();
    let records = read_records_from(&source(&fleet.db_url)).unwrap();
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as u64, "one sequence, no gaps");
    }
    let issued: std::collections::HashMap<String, usize> = records
        .iter()
        .filter(|r| r.decision == Decision::Issued)
        .fold(Default::default(), |mut m, r| {
            *m.entry(r.certificate.as_ref().unwrap().der.clone()).or_default() += 1;
            m
        });
    let mut leaf_hashes = Vec::new();
    for (leaf, issuer) in &received {
        use base64::Engine as _;
        let der = base64::engine::general_purpose::STANDARD.encode(leaf);
        assert_eq!(issued.get(&der), Some(&1), "a received certificate is recorded once");
        leaf_hashes.push(keyless_tests::ct::verify_embedded_sct(leaf, issuer, &fleet.log_spki).1);
    }
    let sth = shared_sth(&fleet, received.len() as u64).await;
    for h in &leaf_hashes {
        use base64::Engine as _;
        let hash = base64::engine::general_purpose::STANDARD
            .encode(h)
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        let v: serde_json::Value = reqwest::get(format!(
            "{}/ct/v1/get-proof-by-hash?hash={hash}&tree_size={}",
            fleet.log_url, sth.tree_size
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let path = keyless_tests::ct::hashes(&v["audit_path"]);
        let index = v["leaf_index"].as_u64().expect("the log has the certificate");
        assert!(keyless_tests::ct::verify_inclusion(
            h,
            index,
            sth.tree_size,
            &path,
            &sth.root
        ));
    }

    // The compliance tools, from any replica's configuration, agree.
    let env = [("KEYLESS_AUDIT_DB", fleet.db_url.as_str())];
    let dir = replicas[2].dir.path();
    let out = run_keyless(&["audit", "verify", "--config", "keyless.yaml"], dir, &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("the issuance record verifies"),
        "{stdout}"
    );
    let out = run_keyless(&["audit", "sync", "--config", "keyless.yaml"], dir, &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run_keyless(&["audit", "cross-check", "--config", "keyless.yaml"], dir, &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "cross-check found something:\n{stdout}");
}

/// A per-identity limit of N holds across three replicas as on one: the buckets are rows in the
/// record's database, so clients spreading requests over the replicas get the same allowance
/// (per-replica buckets would grant three times the burst), and a restart forgets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_across_three_replicas() {
    let pg = PgCluster::start_new();
    let fleet = Fleet::new(&pg);
    let idp = TestIssuer::start("/email").await;
    let extra = "rate_limits: {per_identity: {rate: 60/min, burst: 5}, per_issuer: off}\n";
    let mut replicas = fleet.replicas(&idp, extra, 3);
    let start = Instant::now();
    let mut granted = 0u32;
    let mut limited = 0u32;
    for i in 0..30 {
        let r = replicas[i % 3]
            .sign_v2(&sign_body(&idp, "busy@example.com"), None)
            .await;
        match r.status {
            200 => granted += 1,
            429 => {
                limited += 1;
                assert!(r.message().contains("busy@example.com"), "{}", r.body);
            }
            other => panic!("{other}: {}", r.body),
        }
    }
    // Tolerance: the burst plus what refills at 1/s while the requests run, plus one for the
    // refill between the clock readings.
    let allowance = 5 + start.elapsed().as_secs() as u32 + 1;
    assert!(
        (5..=allowance).contains(&granted),
        "{granted} granted over three replicas, allowance {allowance}"
    );
    assert_eq!(granted + limited, 30);
    // Another identity has its own bucket.
    let r = replicas[0].sign_v2(&sign_body(&idp, "calm@example.com"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The bucket outlives a replica: a restarted one still refuses busy@ right away.
    tokio::task::block_in_place(|| replicas[0].restart_after_kill9());
    let r = replicas[0].sign_v2(&sign_body(&idp, "busy@example.com"), None).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(
        pg.sql("ca", "SELECT count(*) FROM rate_buckets WHERE key LIKE 'id%'"),
        "2"
    );
}

/// Every replica must issue under the chain the record was started with: one given other key
/// material is refused at start with both fingerprints, until an operator adopts the new chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_another_ca_is_refused_until_the_new_chain_is_adopted() {
    let pg = PgCluster::start_new();
    let fleet = Fleet::new(&pg);
    let idp = TestIssuer::start("/email").await;
    let first = fleet.replicas(&idp, "", 1);
    drop(first);
    // A replica that generated its own CA (no shared key files) on the same database.
    let other = tempfile::tempdir().unwrap();
    let yaml = format!(
        "ct_log: disabled\naudit: {{key: {}/audit-key.pem, postgres: {{url: \"env:KEYLESS_AUDIT_DB\"}}}}\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        fleet.shared.path().display(),
        idp.url
    );
    std::fs::write(
        other.path().join("keyless.yaml"),
        format!("listen: 127.0.0.1:0\ndata_dir: ./data\n{yaml}"),
    )
    .unwrap();
    let env = [("KEYLESS_AUDIT_DB", fleet.db_url.as_str())];
    let out = run_keyless(&["ca", "init", "--config", "keyless.yaml"], other.path(), &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run_keyless(&["serve", "--config", "keyless.yaml"], other.path(), &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a replica with another CA started");
    assert!(
        stderr.contains("is not the chain the issuance record") && stderr.contains("adopt-ca-chain"),
        "{stderr}"
    );
    // Adopting it on purpose lets it in (and prints both chains) ...
    let out = run_keyless(
        &["audit", "adopt-ca-chain", "--config", "keyless.yaml"],
        other.path(),
        &env,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("(it was "),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ks = Keyless::builder(&yaml)
        .dir(other)
        .env("KEYLESS_AUDIT_DB", fleet.db_url.clone())
        .start();
    let r = ks.sign_v2(&sign_body(&idp, "new@example.com"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // ... and now the old key material is the one refused.
    let old = tempfile::tempdir().unwrap();
    std::fs::write(
        old.path().join("keyless.yaml"),
        format!("listen: 127.0.0.1:0\ndata_dir: ./data\n{}", fleet.config(&idp, "")),
    )
    .unwrap();
    let out = run_keyless(&["serve", "--config", "keyless.yaml"], old.path(), &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("is not the chain"), "{stderr}");
}

/// `sslmode=require` is verified TLS: the server's certificate must chain to `ca_cert` and name
/// the host. A server that accepts only TLS refuses plain connections, another CA is refused
/// naming the certificate, and a `ca_cert` without `sslmode=require` is a setup error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_reaches_postgres_over_verified_tls_only() {
    let pg = PgCluster::start_new();
    let url = pg.create_db("ca");
    let tls = keyless_tests::TestTls::new("keyless-test PostgreSQL CA");
    pg.require_tls(&tls.cert_pem, &tls.key_pem);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("audit-key.pem");
    let with = |url: String, ca: Option<&str>| AuditOptions {
        key: Some(key.clone()),
        postgres: Some(Postgres {
            url,
            pool_size: 1,
            ca_cert_pem: ca.map(str::to_string),
        }),
        ..AuditOptions::default()
    };
    let audit = dir.path().join("audit");
    let err = AuditLog::open(&audit, with(url.clone(), None)).unwrap_err().to_string();
    assert!(err.contains("no encryption"), "the server wants TLS: {err}");
    let other = keyless_tests::TestTls::new("another CA");
    let required = format!("{url}?sslmode=require");
    let err = AuditLog::open(&audit, with(required.clone(), Some(&other.ca_pem)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("certificate"), "another CA's server is refused: {err}");
    let err = AuditLog::open(&audit, with(url.clone(), Some(&tls.ca_pem)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("sslmode=require"), "{err}");

    let log = AuditLog::open(&audit, with(required.clone(), Some(&tls.ca_pem))).unwrap();
    assert_eq!(log.append_durable(refusal(1, "tls")).await.unwrap(), 0);
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'keyless'"
        ),
        "t",
        "the writer's sessions are encrypted"
    );
    close(log);
    let source = RecordSource::Postgres(Postgres {
        url: required,
        pool_size: 1,
        ca_cert_pem: Some(tls.ca_pem.clone()),
    });
    assert_eq!(read_records_from(&source).unwrap().len(), 1, "readers use TLS too");
}
