//! Deduplication: an identical submission gets the logged entry's SCT back and the log does not
//! grow, across restarts and for databases written before the submission hash existed.

mod common;

use common::*;
use keyless_ca::ct::CtLog;

#[tokio::test]
async fn resubmission_returns_the_same_entry_and_sct_timestamp() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &pki);
    let base = serve(log.clone(), unlimited()).await;
    let http = reqwest::Client::new();

    let cert = pki.chain("a.example", false);
    let pre = pki.chain("b.example", true);
    let (s, _, first) = post(&http, &base, "add-chain", &cert).await;
    assert_eq!(s, 200, "{first}");
    let (s, _, first_pre) = post(&http, &base, "add-pre-chain", &pre).await;
    assert_eq!(s, 200, "{first_pre}");
    assert_eq!(log.size(), 2);

    for _ in 0..3 {
        let (s, _, again) = post(&http, &base, "add-chain", &cert).await;
        assert_eq!(s, 200);
        assert_eq!(again["timestamp"], first["timestamp"], "same entry, same timestamp");
        assert_eq!(again["id"], first["id"]);
        let (s, _, again) = post(&http, &base, "add-pre-chain", &pre).await;
        assert_eq!(s, 200);
        assert_eq!(again["timestamp"], first_pre["timestamp"]);
    }
    assert_eq!(log.size(), 2, "duplicates do not grow the log");

    // The same chain without the root (the log appends it) is the same stored chain.
    let (s, _, short) = post(&http, &base, "add-chain", &cert[..2]).await;
    assert_eq!(s, 200);
    assert_eq!(short["timestamp"], first["timestamp"]);
    // A different certificate is a new entry.
    let (s, _, other) = post(&http, &base, "add-chain", &pki.chain("c.example", false)).await;
    assert_eq!(s, 200);
    assert_ne!(other["timestamp"], serde_json::Value::Null);
    assert_eq!(log.size(), 3);
}

#[tokio::test]
async fn duplicate_sct_verifies_over_the_original_entry() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &pki);
    let chain = pki.chain("v.example", false);
    let first = log.submit(&chain, false).await.unwrap();
    let again = log.submit(&chain, false).await.unwrap();
    assert!(!first.deduplicated && again.deduplicated);
    assert_eq!((again.index, again.sct.timestamp), (first.index, first.sct.timestamp));
    // Verify the duplicate's signature independently over RFC 6962's X.509 signed data.
    let signed = keyless_ca::ct::x509_signed_data(first.sct.timestamp, &chain[0], &[]);
    let spki = log.public_key_spki();
    let (outer, _) = keyless_ca::der::read_tlv(spki).unwrap();
    let point = &keyless_ca::der::read_all(outer.content).unwrap()[1].content[1..];
    aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1, point)
        .verify(&signed, &again.sct.signature)
        .expect("the duplicate's SCT verifies");
}

#[tokio::test]
async fn concurrent_identical_submissions_make_one_entry() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &pki);
    let chain = pki.chain("race.example", true);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (log, chain) = (log.clone(), chain.clone());
            tokio::spawn(async move { log.submit(&chain, true).await.unwrap() })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert_eq!(log.size(), 1);
    assert!(
        results
            .iter()
            .all(|r| r.index == 0 && r.sct.timestamp == results[0].sct.timestamp)
    );
    assert_eq!(results.iter().filter(|r| !r.deduplicated).count(), 1);
}

#[tokio::test]
async fn outside_resubmission_of_a_ca_precertificate_is_deduplicated() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &pki);
    let pre = pki.chain("ca-own.example", true);
    let logged = log.add_pre_chain(&pre).await.unwrap();
    let outside = log.submit(&pre, true).await.unwrap();
    assert!(outside.deduplicated);
    assert_eq!(Some(outside.index), logged.leaf_index);
    assert_eq!(outside.sct.timestamp, logged.sct.timestamp);
    assert_eq!(log.size(), 1);
}

#[tokio::test]
async fn deduplication_survives_a_restart() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let chain = pki.chain("restart.example", false);
    let first = {
        let log = open(dir.path(), &pki);
        let s = log.submit(&chain, false).await.unwrap();
        published(&log);
        s
    };
    let log = open(dir.path(), &pki);
    let again = log.submit(&chain, false).await.unwrap();
    assert!(again.deduplicated);
    assert_eq!((again.index, again.sct.timestamp), (first.index, first.sct.timestamp));
    assert_eq!(log.size(), 1);
}

#[tokio::test]
async fn an_old_schema_database_is_migrated_and_deduplicates_its_entries() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let cert = pki.chain("old.example", false);
    let pre = pki.chain("old-pre.example", true);
    let (a, b) = {
        let log = open(dir.path(), &pki);
        let a = log.submit(&cert, false).await.unwrap();
        let b = log.add_pre_chain(&pre).await.unwrap();
        published(&log);
        (a, b)
    };
    // Give the file the schema of a release before deduplication: no column, no index.
    {
        let db = rusqlite::Connection::open(dir.path().join("log.sqlite")).unwrap();
        db.execute_batch("DROP INDEX entries_by_submission; ALTER TABLE entries DROP COLUMN submission_hash;")
            .unwrap();
        let cols: i64 = db
            .query_row(
                "SELECT count(*) FROM pragma_table_info('entries') WHERE name = 'submission_hash'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(cols, 0);
    }
    let log = open(dir.path(), &pki);
    assert_eq!(log.size(), 2, "entries kept");
    let again = log.submit(&cert, false).await.unwrap();
    assert!(again.deduplicated, "backfilled hash found");
    assert_eq!((again.index, again.sct.timestamp), (a.index, a.sct.timestamp));
    let again = log.submit(&pre, true).await.unwrap();
    assert!(again.deduplicated);
    assert_eq!(
        (Some(again.index), again.sct.timestamp),
        (b.leaf_index, b.sct.timestamp)
    );
    assert_eq!(log.size(), 2);
    let fresh = log.submit(&pki.chain("new.example", false), false).await.unwrap();
    assert_eq!((fresh.index, fresh.deduplicated), (2, false));
    drop(log);
    let db = rusqlite::Connection::open(dir.path().join("log.sqlite")).unwrap();
    let missing: i64 = db
        .query_row("SELECT count(*) FROM entries WHERE submission_hash IS NULL", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(missing, 0, "every row has its hash");
}
