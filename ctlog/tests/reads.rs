//! Reads: `get-entries` is capped in bytes, pages correctly, and serves entries byte for byte;
//! `get-entry-and-proof` serves a valid entry and proof.

mod common;

use common::*;
use keyless_ca::ct::CtLog;
use keyless_ctlog::http::MAX_GET_ENTRIES_BYTES;
use keyless_ctlog::merkle;

/// `u24` length-prefixed items of `bytes`.
fn u24_items(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let n = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        out.push(bytes[3..3 + n].to_vec());
        bytes = &bytes[3 + n..];
    }
    out
}

/// Splits `extra_data` of a precertificate entry into the precertificate and the chain.
fn split_extra(extra: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let n = u32::from_be_bytes([0, extra[0], extra[1], extra[2]]) as usize;
    let pre = extra[3..3 + n].to_vec();
    let list = &extra[3 + n..];
    let m = u32::from_be_bytes([0, list[0], list[1], list[2]]) as usize;
    assert_eq!(list.len(), 3 + m);
    (pre, u24_items(&list[3..]))
}

#[tokio::test]
async fn get_entries_is_capped_in_bytes_and_its_entries_are_exact() {
    let pki = Pki::new();
    // An issuing CA whose certificate is ~100 KB: every entry's extra_data carries it.
    let mut p = ca_params("Big Issuing CA", Some(0), true);
    p.custom_extensions.push(pad_extension(100_000));
    let big = sub_ca(p, &pki.root);
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &pki);
    let total = 40u64;
    let mut submitted = Vec::new();
    for i in 0..total {
        let chain = vec![
            leaf(&big, &format!("e{i}.example"), true, 0),
            big.der().to_vec(),
            pki.root_der(),
        ];
        let logged = log.add_pre_chain(&chain).await.unwrap();
        assert_eq!(logged.leaf_index, Some(i));
        submitted.push((chain, logged.sct.timestamp));
    }
    published(&log);
    let base = serve(log.clone(), unlimited()).await;
    let http = reqwest::Client::new();

    let mut next = 0u64;
    let mut pages = 0;
    while next < total {
        let r = http
            .get(format!("{base}/ct/v1/get-entries?start={next}&end={}", total - 1))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body = r.bytes().await.unwrap();
        assert!(body.len() <= MAX_GET_ENTRIES_BYTES, "{} bytes", body.len());
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let entries = json["entries"].as_array().unwrap();
        assert!(!entries.is_empty());
        assert!((entries.len() as u64) < total, "the cap must have cut the answer short");
        for (k, e) in entries.iter().enumerate() {
            let (chain, ts) = &submitted[next as usize + k];
            let leaf_input = b64(&e["leaf_input"]);
            assert_eq!(
                &leaf_input[2..10],
                &ts.to_be_bytes(),
                "timestamp of entry {}",
                next as usize + k
            );
            let (pre, rest) = split_extra(&b64(&e["extra_data"]));
            assert_eq!(&pre, &chain[0], "precertificate of entry {}", next as usize + k);
            assert_eq!(rest, chain[1..].to_vec(), "chain of entry {}", next as usize + k);
        }
        next += entries.len() as u64;
        pages += 1;
    }
    assert!(pages >= 3, "{pages} pages");

    // get-entry-and-proof: the same entry, and an audit path to the published root.
    let sth = log.sth();
    let r: serde_json::Value = http
        .get(format!(
            "{base}/ct/v1/get-entry-and-proof?leaf_index=7&tree_size={}",
            sth.tree_size
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let leaf_input = b64(&r["leaf_input"]);
    let (pre, rest) = split_extra(&b64(&r["extra_data"]));
    assert_eq!(pre, submitted[7].0[0]);
    assert_eq!(rest, submitted[7].0[1..].to_vec());
    let path: Vec<merkle::Hash> = r["audit_path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| b64(h).try_into().unwrap())
        .collect();
    assert!(merkle::verify_inclusion(
        &merkle::leaf_hash(&leaf_input),
        7,
        sth.tree_size,
        &path,
        &sth.root
    ));
    let r = http
        .get(format!("{base}/ct/v1/get-entries?start={total}&end={}", total + 5))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn small_entries_are_all_returned_up_to_the_count_limit() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &pki);
    for i in 0..5 {
        log.add_pre_chain(&pki.chain(&format!("s{i}.example"), true))
            .await
            .unwrap();
    }
    published(&log);
    let base = serve(log.clone(), unlimited()).await;
    let r: serde_json::Value = reqwest::get(format!("{base}/ct/v1/get-entries?start=1&end=100"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["entries"].as_array().unwrap().len(), 4);
}
