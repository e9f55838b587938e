//! Sync against a real RFC 6962 server on loopback (`testkit::FakeLog`): indexing, growth,
//! forks, rollbacks and lies, plausibility, bounded runs and resumption.

use std::time::Duration;

use keyless_ca::Signer as _;
use keyless_ca::keys::sha256;

use super::*;
use crate::tbs::{tbs_of, tbs_sha256_of_certificate};
use crate::testkit::*;

const ISSUER: &str = "https://issuer.example";

#[tokio::test]
async fn sync_indexes_this_cas_entries_and_follows_the_log() {
    let ca = TestCa::new("Audit Test CA");
    let stranger = TestCa::new("Another CA");
    let log = FakeLog::start(log_key()).await;
    log.state.lock().unwrap().max_per_get = 3; // fewer than asked: sync continues from there
    let ours_pre = ca.leaf("alice@example.com", ISSUER);
    let ours_x509 = ca.leaf("bob@example.com", "https://other-idp.example");
    let theirs = stranger.leaf("carol@example.com", ISSUER);
    // Same issuer name and key hash claims as ours, but signed by another key.
    let impostor_key = keyless_ca::SoftwareSigner::generate(keyless_ca::SignatureAlgorithm::EcdsaP256Sha256)
        .unwrap()
        .0;
    let forged = ca.leaf("mallory@example.com", ISSUER);
    let forged_final = TestCa::sign_with(&impostor_key, tbs_of(&forged.final_cert).unwrap().raw);
    let forged_pre = TestCa::sign_with(&impostor_key, tbs_of(&forged.precert).unwrap().raw);
    log.add(vec![
        ca.precert_entry(&ours_pre, 1000),
        stranger.precert_entry(&theirs, 1001),
        x509_entry(1002, &theirs.final_cert, &stranger.chain()),
        x509_entry(1003, &ours_x509.final_cert, &ca.chain()),
        x509_entry(1004, &forged_final, &ca.chain()),
        precert_entry(1005, &ca.key_hash(), &forged.log_tbs, &forged_pre, &ca.chain()),
        (b"garbage".to_vec(), Vec::new()),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let index = LogIndex::open(dir.path()).unwrap();
    let report = sync(&index, &format!("{}/", log.url), &log.spki(), &ca.chain(), false)
        .await
        .unwrap();
    let log_id = hex(&sha256(&log.spki()));
    assert_eq!(report.log_id, log_id);
    assert_eq!((report.previous_size, report.tree_size, report.new_entries), (0, 7, 7));
    assert_eq!(report.new_certificates, 2);
    let certs = index.certificates().unwrap();
    assert_eq!(certs.len(), 2);
    let (a, b) = (&certs[0], &certs[1]);
    assert_eq!((a.leaf_index, a.entry_type.as_str(), a.timestamp), (0, "precert", 1000));
    assert_eq!((b.leaf_index, b.entry_type.as_str(), b.timestamp), (3, "x509", 1003));
    assert_eq!(a.serial, ours_pre.serial);
    assert_eq!(b.serial, ours_x509.serial);
    assert_eq!(a.san, "email:alice@example.com");
    assert_eq!(b.san, "email:bob@example.com");
    assert_eq!(a.issuer, ISSUER);
    assert_eq!(b.issuer, "https://other-idp.example");
    assert_eq!(a.not_before, 1_750_000_000);
    assert_eq!(a.tbs_sha256, tbs_sha256_of_certificate(&ours_pre.final_cert).unwrap());
    assert_eq!(b.tbs_sha256, tbs_sha256_of_certificate(&ours_x509.final_cert).unwrap());
    let oids: Vec<&str> = a.extensions.iter().map(|e| e.oid.as_str()).collect();
    assert_eq!(
        oids,
        [
            "2.5.29.15",
            "2.5.29.37",
            "2.5.29.17",
            "1.3.6.1.4.1.57264.1.1",
            "1.3.6.1.4.1.57264.1.8"
        ]
    );
    assert_eq!(a.extensions[2].value, "email:alice@example.com");
    assert!(b.extensions.iter().any(|e| e.oid == "1.3.6.1.4.1.11129.2.4.2"));
    let sth = index.verified_sth(&log_id).unwrap().unwrap();
    assert_eq!(
        (sth.tree_size, sth.url.as_str(), sth.root.as_str()),
        (7, log.url.as_str(), report.root.as_str())
    );
    assert_eq!(index.leaf_hashes(&log_id).unwrap().len(), 7);

    // Nothing new: the same tree head verifies again and nothing is added.
    let again = sync(&index, &log.url, &log.spki(), &ca.chain(), false).await.unwrap();
    assert_eq!((again.previous_size, again.tree_size, again.new_entries), (7, 7, 0));

    // The log grows: the consistency proof verifies and only the new entries are fetched.
    let more: Vec<_> = (0..5).map(|i| ca.leaf(&format!("u{i}@example.com"), ISSUER)).collect();
    log.add(
        more.iter()
            .enumerate()
            .map(|(i, l)| ca.precert_entry(l, 2000 + i as u64))
            .collect(),
    );
    let grown = sync(&index, &log.url, &log.spki(), &ca.chain(), false).await.unwrap();
    assert_eq!(
        (
            grown.previous_size,
            grown.tree_size,
            grown.new_entries,
            grown.new_certificates
        ),
        (7, 12, 5, 5)
    );
    let certs = index.certificates().unwrap();
    assert_eq!(certs.len(), 7);
    assert_eq!(index.find_serial(&more[4].serial).unwrap()[0].leaf_index, 11);
    assert_eq!(index.logs().unwrap().len(), 1);
}

#[tokio::test]
async fn forks_rollbacks_and_lies_store_nothing() {
    let ca = TestCa::new("Audit Test CA");
    let log = FakeLog::start(log_key()).await;
    let leaves: Vec<_> = (0..6).map(|i| ca.leaf(&format!("u{i}@example.com"), ISSUER)).collect();
    log.add(leaves[..3].iter().map(|l| ca.precert_entry(l, 1)).collect());
    let dir = tempfile::tempdir().unwrap();
    let index = LogIndex::open(dir.path()).unwrap();
    let spki = log.spki();
    let log_id = hex(&sha256(&spki));
    sync(&index, &log.url, &spki, &ca.chain(), false).await.unwrap();
    let good = index.verified_sth(&log_id).unwrap().unwrap();
    let unchanged = |index: &LogIndex| {
        assert_eq!(index.verified_sth(&log_id).unwrap().unwrap(), good);
        assert_eq!(index.leaf_hashes(&log_id).unwrap().len(), 3);
        assert_eq!(index.certificates().unwrap().len(), 3);
    };

    // A signature by another key.
    let other = FakeLog::start(log_key()).await;
    other.add(leaves.iter().map(|l| ca.precert_entry(l, 1)).collect());
    let err = sync(&index, &other.url, &spki, &ca.chain(), false).await.unwrap_err();
    assert!(err.to_string().contains("does not verify with the log key"), "{err}");

    // History rewritten: entry 2 replaced, tree grown. Same key, so the tree head verifies.
    {
        let mut s = log.state.lock().unwrap();
        s.entries.truncate(2);
        s.entries.extend(leaves[3..].iter().map(|l| ca.precert_entry(l, 1)));
        s.publish();
    }
    let err = sync(&index, &log.url, &spki, &ca.chain(), false).await.unwrap_err();
    assert!(matches!(err, AuditError::Log(_)));
    assert!(err.to_string().contains("inconsistent tree heads"), "{err}");
    assert!(err.to_string().contains("forked"), "{err}");
    unchanged(&index);

    // Same size, another root.
    {
        let mut s = log.state.lock().unwrap();
        s.entries.truncate(3);
        s.publish();
    }
    let err = sync(&index, &log.url, &spki, &ca.chain(), false).await.unwrap_err();
    assert!(err.to_string().contains("forked"), "{err}");
    unchanged(&index);

    // A smaller tree.
    {
        let mut s = log.state.lock().unwrap();
        s.entries.truncate(2);
        s.publish();
    }
    let err = sync(&index, &log.url, &spki, &ca.chain(), false).await.unwrap_err();
    assert!(err.to_string().contains("smaller tree"), "{err}");
    assert!(err.to_string().contains("rollback"), "{err}");
    unchanged(&index);

    // Honest history again, grown, but one served entry differs from what the tree head signed.
    {
        let mut s = log.state.lock().unwrap();
        s.entries = leaves.iter().map(|l| ca.precert_entry(l, 1)).collect();
        s.publish();
    }
    log.state.lock().unwrap().corrupt = Some(4);
    let err = sync(&index, &log.url, &spki, &ca.chain(), false).await.unwrap_err();
    assert!(err.to_string().contains("hash to root"), "{err}");
    unchanged(&index);

    // Served faithfully, it syncs.
    log.state.lock().unwrap().corrupt = None;
    let report = sync(&index, &log.url, &spki, &ca.chain(), false).await.unwrap();
    assert_eq!(
        (report.previous_size, report.new_entries, report.new_certificates),
        (3, 3, 3)
    );
}

#[tokio::test]
async fn unreachable_logs_and_other_cas() {
    let ca = TestCa::new("Audit Test CA");
    let dir = tempfile::tempdir().unwrap();
    let index = LogIndex::open(dir.path()).unwrap();
    let key = log_key();
    // Nothing listens on port 9 of loopback.
    let err = sync(&index, "http://127.0.0.1:9", key.public_key_spki(), &ca.chain(), false)
        .await
        .unwrap_err();
    assert!(matches!(err, AuditError::Unreachable(_)), "{err}");
    let log = FakeLog::start(key).await;
    log.add(vec![]);
    sync(&index, &log.url, &log.spki(), &ca.chain(), true).await.unwrap();
    let err = sync(&index, &log.url, &log.spki(), &TestCa::new("Other").chain(), false)
        .await
        .unwrap_err();
    assert!(matches!(err, AuditError::Setup(_)), "{err}");
}

#[test]
fn sync_is_a_send_future() {
    fn send<T: Send>(_: &T) {}
    let dir = tempfile::tempdir().unwrap();
    let index = LogIndex::open(dir.path()).unwrap();
    let fut = sync(&index, "http://127.0.0.1:9", &[], &[], false);
    send(&fut);
}

fn limits(chunk: u64, max_entries: u64) -> SyncLimits {
    SyncLimits {
        chunk_entries: chunk,
        max_entries,
        ..SyncLimits::default()
    }
}

/// A log of `n` precertificates of `ca`, entries dated an hour ago.
async fn log_of(ca: &TestCa, n: usize) -> FakeLog {
    let log = FakeLog::start(log_key()).await;
    let hour_ago = crate::now_ms() - 3_600_000;
    log.add(
        (0..n)
            .map(|i| ca.precert_entry(&ca.leaf(&format!("u{i}@example.com"), ISSUER), hour_ago + i as u64))
            .collect(),
    );
    log
}

#[tokio::test]
async fn implausible_tree_heads_are_refused_fast_and_store_nothing() {
    let ca = TestCa::new("Audit Test CA");
    let log = log_of(&ca, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let index = LogIndex::open(dir.path()).unwrap();
    let log_id = hex(&sha256(&log.spki()));

    // A first sync of a log claiming 2^40 entries, whose entry 0 is an hour old.
    log.state.lock().unwrap().claim = Some(1 << 40);
    let started = std::time::Instant::now();
    let err = sync(&index, &log.url, &log.spki(), &ca.chain(), false)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    let msg = err.to_string();
    assert!(matches!(err, AuditError::Log(_)), "{msg}");
    assert!(msg.contains("implausible tree head"), "{msg}");
    assert!(
        msg.contains(&(1u64 << 40).to_string()) && msg.contains("since entry 0"),
        "{msg}"
    );
    assert!(msg.contains("10000 entries/s"), "{msg}");
    assert!(index.logs().unwrap().is_empty());
    assert!(
        log.state.lock().unwrap().entries_requests <= 1,
        "only entry 0 was fetched"
    );

    // After an honest sync, the same claim is refused against the verified tree head.
    log.state.lock().unwrap().claim = None;
    sync(&index, &log.url, &log.spki(), &ca.chain(), false).await.unwrap();
    let good = index.verified_sth(&log_id).unwrap().unwrap();
    log.state.lock().unwrap().claim = Some(1 << 40);
    let err = sync(&index, &log.url, &log.spki(), &ca.chain(), false)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("implausible tree head"), "{msg}");
    assert!(msg.contains("more than 3 in the tree head verified"), "{msg}");
    assert_eq!(index.verified_sth(&log_id).unwrap().unwrap(), good);
    assert_eq!(index.leaf_hashes(&log_id).unwrap().len(), 3);

    // A tree head dated tomorrow is refused too.
    {
        let mut s = log.state.lock().unwrap();
        s.claim = None;
        s.sth_timestamp = crate::now_ms() + 86_400_000;
    }
    let err = sync(&index, &log.url, &log.spki(), &ca.chain(), false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ahead of this clock"), "{err}");
    assert_eq!(index.verified_sth(&log_id).unwrap().unwrap(), good);
}

#[tokio::test]
async fn a_bounded_run_commits_verified_chunks_and_the_next_one_resumes() {
    let ca = TestCa::new("Audit Test CA");
    let log = log_of(&ca, 50).await;
    log.state.lock().unwrap().max_per_get = 5;
    let dir = tempfile::tempdir().unwrap();
    let index = LogIndex::open(dir.path()).unwrap();
    let log_id = hex(&sha256(&log.spki()));

    let first = sync_with_limits(&index, &log.url, &log.spki(), &ca.chain(), false, &limits(8, 20))
        .await
        .unwrap();
    assert_eq!(first.stopped, Some(StopReason::EntryLimit));
    assert_eq!(
        (
            first.previous_size,
            first.tree_size,
            first.signed_size,
            first.new_entries
        ),
        (0, 20, 50, 20)
    );
    assert_eq!(first.new_certificates, 20);
    let partial = index.verified_sth(&log_id).unwrap().unwrap();
    assert_eq!((partial.tree_size, partial.signed_size), (20, 50));
    assert_eq!(partial.timestamp, 0, "no signed tree head is complete yet");
    assert_eq!(index.leaf_hashes(&log_id).unwrap().len(), 20);
    assert_eq!(index.certificates().unwrap().len(), 20);
    let mut tree = keyless_ctlog::merkle::Tree::default();
    for h in index.leaf_hashes(&log_id).unwrap() {
        tree.push(h);
    }
    assert_eq!(hex(&tree.root(20).unwrap()), partial.root);

    // The log grows meanwhile; the next run resumes at 20 and follows the new tree head.
    let more = ca.leaf("late@example.com", ISSUER);
    log.add(vec![ca.precert_entry(&more, crate::now_ms())]);
    let second = sync(&index, &log.url, &log.spki(), &ca.chain(), false).await.unwrap();
    assert_eq!(second.stopped, None);
    assert_eq!(
        (
            second.previous_size,
            second.tree_size,
            second.signed_size,
            second.new_entries
        ),
        (20, 51, 51, 31)
    );
    let done = index.verified_sth(&log_id).unwrap().unwrap();
    assert_eq!(done.timestamp, log.state.lock().unwrap().sth_timestamp);
    assert_eq!(index.certificates().unwrap().len(), 51);
    assert_eq!(index.find_serial(&more.serial).unwrap()[0].leaf_index, 50);
}

#[tokio::test]
async fn garbage_mid_way_keeps_the_chunks_verified_before_it() {
    let ca = TestCa::new("Audit Test CA");
    let log = log_of(&ca, 50).await;
    log.state.lock().unwrap().corrupt = Some(30);
    let dir = tempfile::tempdir().unwrap();
    let index = LogIndex::open(dir.path()).unwrap();
    let log_id = hex(&sha256(&log.spki()));
    let err = sync_with_limits(&index, &log.url, &log.spki(), &ca.chain(), false, &limits(8, 1000))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, AuditError::Log(_)), "{msg}");
    assert!(msg.contains("entries 24 to 31"), "{msg}");
    assert!(msg.contains("consistency proof rejected"), "{msg}");
    assert!(msg.contains("the 24 entries verified before this are kept"), "{msg}");
    let kept = index.verified_sth(&log_id).unwrap().unwrap();
    assert_eq!((kept.tree_size, kept.signed_size), (24, 50));
    assert_eq!(index.leaf_hashes(&log_id).unwrap().len(), 24);

    // Served faithfully again, the next run picks up at 24.
    log.state.lock().unwrap().corrupt = None;
    let report = sync(&index, &log.url, &log.spki(), &ca.chain(), false).await.unwrap();
    assert_eq!(
        (report.previous_size, report.tree_size, report.new_entries),
        (24, 50, 26)
    );
    assert_eq!(index.certificates().unwrap().len(), 50);
}

#[tokio::test]
async fn a_stalled_log_keeps_the_progress_before_it() {
    let ca = TestCa::new("Audit Test CA");
    let log = log_of(&ca, 40).await;
    {
        let mut s = log.state.lock().unwrap();
        s.stall_from = Some(20);
        s.max_per_get = 4;
    }
    let dir = tempfile::tempdir().unwrap();
    let index = LogIndex::open(dir.path()).unwrap();
    let log_id = hex(&sha256(&log.spki()));
    let limits = SyncLimits {
        request_timeout: Duration::from_millis(300),
        ..limits(8, 1000)
    };
    let started = std::time::Instant::now();
    let err = sync_with_limits(&index, &log.url, &log.spki(), &ca.chain(), false, &limits)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(err, AuditError::Unreachable(_)), "{err}");
    assert!(err.to_string().contains("are kept"), "{err}");
    assert_eq!(index.verified_sth(&log_id).unwrap().unwrap().tree_size, 16);
}

#[tokio::test]
async fn the_time_limit_ends_a_run_cleanly() {
    let ca = TestCa::new("Audit Test CA");
    let log = log_of(&ca, 200).await;
    {
        let mut s = log.state.lock().unwrap();
        s.entries_delay = Duration::from_millis(40);
        s.max_per_get = 4;
    }
    let dir = tempfile::tempdir().unwrap();
    let index = LogIndex::open(dir.path()).unwrap();
    let log_id = hex(&sha256(&log.spki()));
    let limits = SyncLimits {
        max_duration: Duration::from_millis(400),
        ..limits(8, 1000)
    };
    let started = std::time::Instant::now();
    let report = sync_with_limits(&index, &log.url, &log.spki(), &ca.chain(), false, &limits)
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report.stopped, Some(StopReason::TimeLimit));
    assert!(report.tree_size > 0 && report.tree_size < 200, "{report:?}");
    let stored = index.verified_sth(&log_id).unwrap().unwrap();
    assert_eq!(stored.tree_size, report.tree_size);
    assert_eq!(index.leaf_hashes(&log_id).unwrap().len() as u64, report.tree_size);

    log.state.lock().unwrap().entries_delay = Duration::ZERO;
    let rest = sync(&index, &log.url, &log.spki(), &ca.chain(), false).await.unwrap();
    assert_eq!(
        (rest.previous_size, rest.tree_size, rest.stopped),
        (report.tree_size, 200, None)
    );
}

#[tokio::test]
async fn an_index_without_a_frontier_is_rebuilt_from_its_leaves() {
    let ca = TestCa::new("Audit Test CA");
    let log = log_of(&ca, 7).await;
    let dir = tempfile::tempdir().unwrap();
    let index = LogIndex::open(dir.path()).unwrap();
    sync(&index, &log.url, &log.spki(), &ca.chain(), false).await.unwrap();
    // As an index written before frontiers and signed heads were kept.
    let conn = rusqlite::Connection::open(crate::index::index_path(dir.path())).unwrap();
    conn.execute_batch(
        "UPDATE logs SET frontier = NULL, signed_size = NULL, signed_root = NULL, signed_timestamp = NULL,
             signed_signature = NULL, signed_verified_at = NULL",
    )
    .unwrap();
    drop(conn);
    log.add(vec![ca.precert_entry(&ca.leaf("x@example.com", ISSUER), 5)]);
    let report = sync(&index, &log.url, &log.spki(), &ca.chain(), false).await.unwrap();
    assert_eq!((report.previous_size, report.tree_size), (7, 8));
    // A damaged leaf is noticed instead of silently extending a wrong tree.
    let conn = rusqlite::Connection::open(crate::index::index_path(dir.path())).unwrap();
    conn.execute_batch("UPDATE logs SET frontier = NULL; UPDATE leaves SET hash = zeroblob(32) WHERE leaf_index = 3")
        .unwrap();
    drop(conn);
    let err = sync(&index, &log.url, &log.spki(), &ca.chain(), false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("damaged"), "{err}");
}
