//! The index against real SQLite files.

use super::*;

fn cert(log: &str, index: u64, serial: &str) -> IndexedCert {
    IndexedCert {
        log_id: log.into(),
        leaf_index: index,
        entry_type: "precert".into(),
        timestamp: 1_700_000_000_000 + index,
        serial: serial.into(),
        san: format!("email:u{index}@example.com"),
        issuer: "https://issuer.example".into(),
        tbs_sha256: format!("{index:064x}"),
        extensions: vec![Extension {
            oid: "1.3.6.1.4.1.57264.1.8".into(),
            name: "Issuer (V2)".into(),
            value: "https://issuer.example".into(),
            critical: false,
        }],
        not_before: 1_700_000_000,
    }
}

fn sth(log: &str, size: u64, root: &str) -> VerifiedSth {
    VerifiedSth {
        log_id: log.into(),
        url: format!("http://{log}.example"),
        tree_size: size,
        root: root.into(),
        timestamp: 1_700_000_000_000 + size,
        verified_at: 1_700_000_000_500,
        signed_size: size,
    }
}

#[test]
fn commits_reads_back_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let index = LogIndex::open(dir.path()).unwrap();
        assert!(index.logs().unwrap().is_empty());
        assert!(index.certificates().unwrap().is_empty());
        assert_eq!(index.verified_sth("aa").unwrap(), None);
        let first = sth("bb", 3, "r3");
        index
            .commit(Commit {
                ca_key_sha256: "ca",
                previous: None,
                sth: &first,
                signature: b"sig",
                signed: None,
                frontier: None,
                leaves: &[[1; 32], [2; 32], [3; 32]],
                certificates: &[cert("bb", 2, "a"), cert("bb", 0, "1f")],
            })
            .unwrap();
        let other = sth("aa", 1, "r1");
        index
            .commit(Commit {
                ca_key_sha256: "ca",
                previous: None,
                sth: &other,
                signature: b"sig",
                signed: None,
                frontier: None,
                leaves: &[[9; 32]],
                certificates: &[cert("aa", 0, "a")],
            })
            .unwrap();
        // A sync that started from a stale view of the log is refused, storing nothing.
        let stale = index
            .commit(Commit {
                ca_key_sha256: "ca",
                previous: None,
                sth: &sth("bb", 4, "r4"),
                signature: b"sig",
                signed: None,
                frontier: None,
                leaves: &[[4; 32]],
                certificates: &[cert("bb", 3, "33")],
            })
            .unwrap_err();
        assert!(stale.to_string().contains("another sync"), "{stale}");
        let next = sth("bb", 4, "r4");
        index
            .commit(Commit {
                ca_key_sha256: "ca",
                previous: Some(&first),
                sth: &next,
                signature: b"sig",
                signed: None,
                frontier: None,
                leaves: &[[4; 32]],
                certificates: &[],
            })
            .unwrap();
    }
    let index = LogIndex::open(dir.path()).unwrap();
    let mode: String = index.conn().query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let certs = index.certificates().unwrap();
    let order: Vec<(&str, u64)> = certs.iter().map(|c| (c.log_id.as_str(), c.leaf_index)).collect();
    assert_eq!(order, [("aa", 0), ("bb", 0), ("bb", 2)]);
    assert_eq!(certs[2], cert("bb", 2, "a"));
    assert_eq!(index.verified_sth("bb").unwrap(), Some(sth("bb", 4, "r4")));
    assert_eq!(index.verified_sth("BB").unwrap(), Some(sth("bb", 4, "r4")));
    let logs: Vec<String> = index.logs().unwrap().into_iter().map(|s| s.log_id).collect();
    assert_eq!(logs, ["aa", "bb"]);
    assert_eq!(index.leaf_hashes("bb").unwrap(), [[1; 32], [2; 32], [3; 32], [4; 32]]);
    assert_eq!(index.find_serial("0x0A").unwrap().len(), 2);
    assert_eq!(index.find_serial("1F").unwrap()[0].leaf_index, 0);
    assert_eq!(index.find_serial("00:1f").unwrap().len(), 1);
    assert!(index.find_serial("2").unwrap().is_empty());
    assert_eq!(index.find_tbs(&format!("{:064x}", 2)).unwrap().len(), 1);
    let summary = certs[2].summary();
    assert_eq!(summary.leaf_index, Some(2));
    assert_eq!(summary.time_ms, 1_700_000_000_000);
    assert_eq!(summary.issuer, "https://issuer.example");
}

#[test]
fn the_index_belongs_to_one_ca() {
    let dir = tempfile::tempdir().unwrap();
    let index = LogIndex::open(dir.path()).unwrap();
    index.check_ca("aa").unwrap();
    index.check_ca("bb").unwrap();
    let first = sth("l1", 0, "r");
    let commit = |ca, sth| Commit {
        ca_key_sha256: ca,
        previous: None,
        sth,
        signature: b"",
        signed: None,
        frontier: None,
        leaves: &[],
        certificates: &[],
    };
    index.commit(commit("aa", &first)).unwrap();
    index.check_ca("aa").unwrap();
    let err = index.check_ca("bb").unwrap_err();
    assert!(err.to_string().contains("another audit directory"), "{err}");
    let err = index.commit(commit("bb", &sth("l2", 0, "r"))).unwrap_err();
    assert!(err.to_string().contains("another audit directory"), "{err}");
    assert_eq!(index.logs().unwrap().len(), 1);
}
