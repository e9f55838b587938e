//! Start-up time and memory of an embedded log holding many entries (issue 16's measurement).
//!
//! `cargo run --release -p keyless-ctlog --example startup -- DIR [ENTRIES]` writes ENTRIES
//! (default 1,000,000) synthetic entries into DIR/log.sqlite with the layout of the log before tree
//! nodes were stored, if DIR holds no log yet, then opens the log twice and prints the time of each
//! open and the process's RSS. The first open of such a directory builds the stored tree nodes
//! once; the second is an ordinary restart.

use std::time::Instant;

use keyless_ctlog::{EmbeddedLog, LogOptions, merkle};

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("usage: startup DIR [ENTRIES]"));
    let n: u64 = args
        .next()
        .map_or(1_000_000, |s| s.parse().expect("ENTRIES is a number"));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("log.sqlite");
    if !db.exists() {
        let t = Instant::now();
        let mut c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE chains (hash BLOB PRIMARY KEY, certs BLOB NOT NULL) WITHOUT ROWID;
             CREATE TABLE entries (idx INTEGER PRIMARY KEY, leaf_input BLOB NOT NULL,
                 extra_prefix BLOB NOT NULL, chain_hash BLOB NOT NULL REFERENCES chains(hash),
                 leaf_hash BLOB NOT NULL, submission_hash BLOB);
             CREATE TABLE sths (tree_size INTEGER NOT NULL, timestamp INTEGER NOT NULL PRIMARY KEY,
                 root BLOB NOT NULL, signature BLOB NOT NULL);
             CREATE INDEX entries_by_submission ON entries(submission_hash);",
        )
        .unwrap();
        let tx = c.transaction().unwrap();
        tx.execute(
            "INSERT INTO chains VALUES (?1, ?2)",
            rusqlite::params![&[0u8; 32][..], &[0u8; 3][..]],
        )
        .unwrap();
        {
            let mut ins = tx
                .prepare("INSERT INTO entries VALUES (?1, ?2, x'', ?3, ?4, ?5)")
                .unwrap();
            for i in 0..n {
                // A 400-byte leaf: about the size of a precertificate entry's TBS.
                let mut leaf = vec![0u8; 400];
                leaf[..8].copy_from_slice(&i.to_be_bytes());
                let h = merkle::leaf_hash(&leaf);
                let s = merkle::leaf_hash(&h);
                ins.execute(rusqlite::params![i as i64, leaf, &[0u8; 32][..], &h[..], &s[..]])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
        eprintln!("wrote {n} entries in {:?}", t.elapsed());
    }
    let opts = LogOptions {
        name: "bench".into(),
        ..LogOptions::default()
    };
    for round in 1..=2 {
        let before = rss_kb();
        let t = Instant::now();
        let log = EmbeddedLog::open(&dir, &[], opts.clone(), None).unwrap();
        let took = t.elapsed();
        println!(
            "open {round}: {took:?}, size {}, RSS {} MB (before open {} MB)",
            log.size(),
            rss_kb() / 1024,
            before / 1024
        );
        drop(log);
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}
