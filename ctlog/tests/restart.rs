//! Restarts and the stored tree: a reopened log serves byte-identical answers without reading
//! every entry, a database from before tree nodes were stored is migrated once and then served
//! identically, and the tree kept in memory stays O(log n).

mod common;

use common::*;
use keyless_ca::ct::CtLog;
use keyless_ctlog::{EmbeddedLog, merkle};

/// Every read answer of the log at `base` for a tree of `n` entries, as raw bodies.
async fn answers(base: &str, n: u64, leaf_hashes: &[String]) -> Vec<(String, String)> {
    let http = reqwest::Client::new();
    let mut urls = vec!["get-sth".to_string(), format!("get-entries?start=0&end={}", n - 1)];
    for size in [1, n / 2, n - 1, n] {
        for (i, h) in leaf_hashes.iter().enumerate().take(size as usize) {
            if i % 3 == 0 || i as u64 + 1 == size {
                urls.push(format!("get-proof-by-hash?hash={h}&tree_size={size}"));
                urls.push(format!("get-entry-and-proof?leaf_index={i}&tree_size={size}"));
            }
        }
        for first in [1, 2, n / 3, size].into_iter().filter(|&f| f <= size) {
            urls.push(format!("get-sth-consistency?first={first}&second={size}"));
        }
    }
    let mut out = Vec::new();
    for u in urls {
        let r = http.get(format!("{base}/ct/v1/{u}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{u}");
        out.push((u, r.text().await.unwrap()));
    }
    out
}

fn enc(h: &merkle::Hash) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .encode(h)
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

#[tokio::test]
async fn restarts_and_the_migration_serve_identical_answers_without_a_full_rebuild() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let n = 37u64;
    let mut hashes = Vec::new();
    let log = open(dir.path(), &pki);
    for i in 0..n {
        let chain = pki.chain(&format!("r{i}.example"), true);
        log.add_pre_chain(&chain).await.unwrap();
    }
    published(&log);
    assert_eq!(log.sth().tree_size, n);
    let base = serve(log.clone(), unlimited()).await;
    let http = reqwest::Client::new();
    let entries: serde_json::Value = http
        .get(format!("{base}/ct/v1/get-entries?start=0&end={}", n - 1))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for e in entries["entries"].as_array().unwrap() {
        hashes.push(enc(&merkle::leaf_hash(&b64(&e["leaf_input"]))));
    }
    let before = answers(&base, n, &hashes).await;
    // The proofs are real: each verifies against the published root.
    let sth = log.sth();
    for (u, body) in &before {
        if u.starts_with("get-proof-by-hash") && u.ends_with(&format!("tree_size={n}")) {
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            let i = v["leaf_index"].as_u64().unwrap();
            let path: Vec<merkle::Hash> = v["audit_path"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| b64(p).try_into().unwrap())
                .collect();
            let leaf = b64(&entries["entries"][i as usize]["leaf_input"]);
            assert!(
                merkle::verify_inclusion(&merkle::leaf_hash(&leaf), i, n, &path, &sth.root),
                "{u}"
            );
        }
    }
    assert_eq!(log.nodes_built_at_open(), 0, "a new log has nothing to build");
    drop(log);

    // An ordinary restart reads no entries to rebuild the tree and answers byte for byte alike.
    let log = open(dir.path(), &pki);
    assert_eq!(log.nodes_built_at_open(), 0);
    assert_eq!(log.size(), n);
    assert_eq!(
        answers(&serve(log.clone(), unlimited()).await, n, &hashes).await,
        before
    );
    drop(log);

    // The layout before stored nodes: no tiles, no leaf-hash index. The first open builds the
    // nodes of every entry once; the next does not.
    {
        let c = rusqlite::Connection::open(dir.path().join("log.sqlite")).unwrap();
        c.execute_batch("DROP TABLE tiles; DROP INDEX entries_by_leaf_hash;")
            .unwrap();
        let names: Vec<String> = c
            .prepare("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(names, ["chains", "entries", "entries_by_submission", "sths"]);
    }
    let log = open(dir.path(), &pki);
    assert_eq!(log.nodes_built_at_open(), n, "the migration built every entry's nodes");
    assert_eq!(
        answers(&serve(log.clone(), unlimited()).await, n, &hashes).await,
        before
    );
    // The log keeps working after the migration.
    log.add_pre_chain(&pki.chain("after.example", true)).await.unwrap();
    published(&log);
    assert_eq!(log.sth().tree_size, n + 1);
    drop(log);
    let log = open(dir.path(), &pki);
    assert_eq!(log.nodes_built_at_open(), 0, "built once");
    assert_eq!(log.size(), n + 1);
}

/// A log written outside the log (synthetic entries in the old layout) migrates, then restarts
/// read nothing but O(log n) nodes; the in-memory tree is the frontier only.
#[test]
fn a_large_old_log_migrates_once_and_its_memory_is_the_frontier() {
    let dir = tempfile::tempdir().unwrap();
    let n = 20_000u64;
    {
        let mut c = rusqlite::Connection::open(dir.path().join("log.sqlite")).unwrap();
        c.execute_batch(
            "CREATE TABLE chains (hash BLOB PRIMARY KEY, certs BLOB NOT NULL) WITHOUT ROWID;
             CREATE TABLE entries (idx INTEGER PRIMARY KEY, leaf_input BLOB NOT NULL,
                 extra_prefix BLOB NOT NULL, chain_hash BLOB NOT NULL REFERENCES chains(hash),
                 leaf_hash BLOB NOT NULL, submission_hash BLOB);
             CREATE TABLE sths (tree_size INTEGER NOT NULL, timestamp INTEGER NOT NULL PRIMARY KEY,
                 root BLOB NOT NULL, signature BLOB NOT NULL);
             CREATE INDEX entries_by_submission ON entries(submission_hash);",
        )
        .unwrap();
        let tx = c.transaction().unwrap();
        tx.execute("INSERT INTO chains VALUES (x'00', x'')", []).unwrap();
        for i in 0..n {
            let leaf = i.to_be_bytes();
            tx.execute(
                "INSERT INTO entries VALUES (?1, ?2, x'', x'00', ?3, NULL)",
                rusqlite::params![i as i64, &leaf[..], &merkle::leaf_hash(&leaf)[..]],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let mut reference = merkle::Tree::default();
    for i in 0..n {
        reference.push(merkle::leaf_hash(&i.to_be_bytes()));
    }
    let log = EmbeddedLog::open(dir.path(), &[], opts(), None).unwrap();
    assert_eq!(log.nodes_built_at_open(), n);
    assert!(log.flush(std::time::Duration::from_secs(5)));
    assert_eq!(log.sth().root, reference.root(n).unwrap());
    assert_eq!(log.tree_hashes_in_memory(), n.count_ones() as usize);
    drop(log);
    let t = std::time::Instant::now();
    let log = EmbeddedLog::open(dir.path(), &[], opts(), None).unwrap();
    let took = t.elapsed();
    assert_eq!(log.nodes_built_at_open(), 0, "a restart reads no entries to rebuild");
    assert_eq!(log.sth().root, reference.root(n).unwrap());
    assert_eq!(log.tree_hashes_in_memory(), n.count_ones() as usize);
    eprintln!("restart of a {n}-entry log: {took:?}");
}

/// A database whose stored tree disagrees with its last entry is refused at start-up.
#[test]
fn a_tree_that_does_not_match_the_entries_is_refused() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let log = open(dir.path(), &pki);
    rt.block_on(async {
        for i in 0..3 {
            log.add_pre_chain(&pki.chain(&format!("m{i}.example"), true))
                .await
                .unwrap();
        }
    });
    published(&log);
    drop(log);
    let c = rusqlite::Connection::open(dir.path().join("log.sqlite")).unwrap();
    c.execute("UPDATE tiles SET hashes = zeroblob(96) WHERE level = 0", [])
        .unwrap();
    let e = EmbeddedLog::open(dir.path(), &[pki.root_der()], opts(), None).unwrap_err();
    assert!(e.to_string().contains("does not match entry 2"), "{e}");
}
