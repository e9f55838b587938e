//! Test fixtures shared by the crate's unit tests: a CA built with the CA crate's ceremony, leaves
//! shaped like the pipeline's, and an RFC 6962 log served over loopback HTTP.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyless_ca::ceremony::{self, CaNames};
use keyless_ca::der;
use keyless_ca::keys::sha256;
use keyless_ca::{Serial, SignatureAlgorithm, Signer, SoftwareSigner, ct, profile};
use keyless_ctlog::merkle::{self, Tree};
use keyless_ctlog::wire::{
    DigitallySigned, LeafEntry, MerkleTreeLeaf, PrecertChainEntry, encode_chain, tree_head_signed_data,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A root and an issuing CA.
pub(crate) struct TestCa {
    pub(crate) root_der: Vec<u8>,
    pub(crate) issuing_der: Vec<u8>,
    pub(crate) issuing: SoftwareSigner,
    subject: Vec<u8>,
}

/// One leaf in its three forms.
pub(crate) struct TestLeaf {
    /// The TBS as the log holds it (no poison, no SCT list).
    pub(crate) log_tbs: Vec<u8>,
    /// The precertificate (poison).
    pub(crate) precert: Vec<u8>,
    /// The final certificate (SCT list).
    pub(crate) final_cert: Vec<u8>,
    /// Serial, hex.
    pub(crate) serial: String,
}

const ECDSA_SHA256: &[u64] = &[1, 2, 840, 10045, 4, 3, 2];

impl TestCa {
    pub(crate) fn new(name: &str) -> TestCa {
        let root = SoftwareSigner::generate(SignatureAlgorithm::EcdsaP384Sha384).unwrap().0;
        let issuing = SoftwareSigner::generate(SignatureAlgorithm::EcdsaP256Sha256).unwrap().0;
        let names = CaNames {
            organization: name.into(),
            ..CaNames::default()
        };
        let year = Duration::from_secs(365 * 86400);
        let now = SystemTime::now();
        let root_der = ceremony::root_certificate(&root, &names, year, now).unwrap();
        let issuing_der =
            ceremony::intermediate_certificate(&root, &root_der, issuing.public_key_spki(), &names, year, now).unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(&issuing_der).unwrap();
        let subject = c.subject().as_raw().to_vec();
        TestCa {
            root_der,
            issuing_der,
            issuing,
            subject,
        }
    }

    /// The chain `sync` takes: issuing CA, root.
    pub(crate) fn chain(&self) -> Vec<Vec<u8>> {
        vec![self.issuing_der.clone(), self.root_der.clone()]
    }

    pub(crate) fn key_hash(&self) -> [u8; 32] {
        sha256(self.issuing.public_key_spki())
    }

    /// A certificate over `tbs` signed by `key`.
    pub(crate) fn sign_with(key: &SoftwareSigner, tbs: &[u8]) -> Vec<u8> {
        let sig = key.sign(tbs).unwrap();
        der::seq(&[tbs, &der::seq(&[&der::oid(ECDSA_SHA256)]), &der::bit_string(&sig)])
    }

    /// A leaf shaped like the pipeline's: KU, EKU, SAN (critical), Sigstore 1.1 and 1.8, then
    /// the poison (precertificate) or an SCT list (final certificate).
    pub(crate) fn leaf(&self, email: &str, issuer_url: &str) -> TestLeaf {
        let mut serial = [0u8; 16];
        aws_lc_rs::rand::fill(&mut serial).unwrap();
        serial[0] = 0x01; // positive, no leading zero byte
        let client = SoftwareSigner::generate(SignatureAlgorithm::EcdsaP256Sha256).unwrap().0;
        let nb = time::OffsetDateTime::from_unix_timestamp(1_750_000_000).unwrap();
        let validity = der::seq(&[&der::time(nb), &der::time(nb + time::Duration::minutes(10))]);
        let san = der::seq(&[&der::wrap(0x81, &[email.as_bytes()])]);
        let sigstore = |arc: u64| {
            let mut oid = profile::SIGSTORE_ARC.to_vec();
            oid.push(arc);
            oid
        };
        let base = vec![
            profile::extension(&[2, 5, 29, 15], true, &[3, 2, 7, 0x80]),
            profile::extension(
                &[2, 5, 29, 37],
                false,
                &der::seq(&[&der::oid(&[1, 3, 6, 1, 5, 5, 7, 3, 3])]),
            ),
            profile::extension(&[2, 5, 29, 17], true, &san),
            profile::extension(&sigstore(1), false, issuer_url.as_bytes()),
            profile::extension(&sigstore(8), false, &der::utf8_string(issuer_url)),
        ];
        let tbs = |extra: Option<Vec<u8>>| {
            let mut exts = base.clone();
            exts.extend(extra);
            let refs: Vec<&[u8]> = exts.iter().map(Vec::as_slice).collect();
            der::seq(&[
                &der::context(0, true, &der::small_integer(2)),
                &der::unsigned_integer(&serial),
                &der::seq(&[&der::oid(ECDSA_SHA256)]),
                &self.subject,
                &validity,
                &[0x30, 0],
                client.public_key_spki(),
                &der::context(3, true, &der::seq(&refs)),
            ])
        };
        let sct = ct::Sct {
            log_id: [7; 32],
            timestamp: 1_750_000_000_123,
            extensions: Vec::new(),
            hash_algorithm: ct::HASH_SHA256,
            signature_algorithm: ct::SIG_ECDSA,
            signature: vec![0x30, 0x03, 0x02, 0x01, 0x01],
        };
        let poison = profile::extension(ct::POISON_OID, true, &[der::NULL, 0]);
        let sct_list = profile::extension(ct::SCT_LIST_OID, false, &ct::sct_list(&[sct]));
        TestLeaf {
            log_tbs: tbs(None),
            precert: Self::sign_with(&self.issuing, &tbs(Some(poison))),
            final_cert: Self::sign_with(&self.issuing, &tbs(Some(sct_list))),
            serial: Serial::from_be_bytes(&serial).to_string(),
        }
    }

    /// The log entry of a precertificate this CA signed.
    pub(crate) fn precert_entry(&self, leaf: &TestLeaf, timestamp: u64) -> (Vec<u8>, Vec<u8>) {
        precert_entry(timestamp, &self.key_hash(), &leaf.log_tbs, &leaf.precert, &self.chain())
    }
}

/// `(leaf_input, extra_data)` of a precertificate entry.
pub(crate) fn precert_entry(
    timestamp: u64,
    issuer_key_hash: &[u8; 32],
    tbs: &[u8],
    precert: &[u8],
    chain: &[Vec<u8>],
) -> (Vec<u8>, Vec<u8>) {
    let entry = LeafEntry::Precert {
        issuer_key_hash: *issuer_key_hash,
        tbs,
    };
    let extra = PrecertChainEntry {
        pre_certificate: precert,
        precertificate_chain: chain.iter().map(Vec::as_slice).collect(),
    };
    (MerkleTreeLeaf::new(timestamp, entry).encode(), extra.encode())
}

/// `(leaf_input, extra_data)` of an X.509 entry.
pub(crate) fn x509_entry(timestamp: u64, cert: &[u8], chain: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>) {
    (
        MerkleTreeLeaf::new(timestamp, LeafEntry::X509(cert)).encode(),
        encode_chain(chain),
    )
}

/// What the fake log serves.
pub(crate) struct LogState {
    pub(crate) key: Arc<SoftwareSigner>,
    pub(crate) entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// The size of the published tree head.
    pub(crate) published: u64,
    pub(crate) sth_timestamp: u64,
    /// At most this many entries per `get-entries`.
    pub(crate) max_per_get: u64,
    /// Serve this entry with one byte flipped (the tree head covers the original).
    pub(crate) corrupt: Option<u64>,
    /// Sign and serve a tree head of this size (with a made-up root) instead.
    pub(crate) claim: Option<u64>,
    /// Answer `get-entries` after this long.
    pub(crate) entries_delay: Duration,
    /// Never answer `get-entries` from this index on (a stalled log).
    pub(crate) stall_from: Option<u64>,
    /// `get-entries` requests served.
    pub(crate) entries_requests: u64,
}

impl LogState {
    /// Publishes a tree head covering every entry.
    pub(crate) fn publish(&mut self) {
        self.published = self.entries.len() as u64;
        self.sth_timestamp += 1000;
    }

    fn tree(&self) -> Tree {
        let mut t = Tree::default();
        for (leaf, _) in &self.entries {
            t.push(merkle::leaf_hash(leaf));
        }
        t
    }
}

/// An RFC 6962 log over loopback HTTP.
pub(crate) struct FakeLog {
    pub(crate) url: String,
    pub(crate) state: Arc<Mutex<LogState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn query(q: &str, name: &str) -> u64 {
    q.split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn respond(state: &mut LogState, target: &str) -> (u16, serde_json::Value) {
    use serde_json::json;
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let tree = state.tree();
    let b64 = |h: &[u8]| STANDARD.encode(h);
    match path {
        "/ct/v1/get-sth" => {
            let (size, root) = match state.claim {
                Some(size) => (size, [0x5a; 32]),
                None => (state.published, tree.root(state.published).unwrap()),
            };
            let data = tree_head_signed_data(state.sth_timestamp, size, &root);
            let ds = DigitallySigned::ecdsa_sha256(state.key.sign(&data).unwrap()).encode();
            (
                200,
                json!({"tree_size": size, "timestamp": state.sth_timestamp,
                       "sha256_root_hash": b64(&root), "tree_head_signature": b64(&ds)}),
            )
        }
        "/ct/v1/get-sth-consistency" => {
            let (first, second) = (query(q, "first"), query(q, "second"));
            if second > state.published {
                return (400, json!({"error": "second too large"}));
            }
            let proof = tree.consistency_proof(first, second).unwrap();
            (
                200,
                json!({"consistency": proof.iter().map(|h| b64(h)).collect::<Vec<_>>()}),
            )
        }
        "/ct/v1/get-entries" => {
            let (start, end) = (query(q, "start"), query(q, "end"));
            state.entries_requests += 1;
            if start > end || start >= state.published {
                return (400, json!({"error": "bad range"}));
            }
            let end = end.min(state.published - 1).min(start + state.max_per_get - 1);
            let entries: Vec<_> = (start..=end)
                .map(|i| {
                    let (mut leaf, extra) = state.entries[i as usize].clone();
                    if state.corrupt == Some(i) {
                        let n = leaf.len() - 3;
                        leaf[n] ^= 1;
                    }
                    json!({"leaf_input": b64(&leaf), "extra_data": b64(&extra)})
                })
                .collect();
            (200, json!({ "entries": entries }))
        }
        _ => (404, json!({"error": "not found"})),
    }
}

impl FakeLog {
    /// Starts an empty log signing with `key`.
    pub(crate) async fn start(key: Arc<SoftwareSigner>) -> FakeLog {
        let state = Arc::new(Mutex::new(LogState {
            key,
            entries: Vec::new(),
            published: 0,
            sth_timestamp: 1_750_000_000_000,
            max_per_get: 1000,
            corrupt: None,
            claim: None,
            entries_delay: Duration::ZERO,
            stall_from: None,
            entries_requests: 0,
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&buf);
                    let target = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                    if target.starts_with("/ct/v1/get-entries") {
                        let (delay, stall_from) = {
                            let s = state.lock().unwrap();
                            (s.entries_delay, s.stall_from)
                        };
                        let start = query(target.split_once('?').map_or("", |(_, q)| q), "start");
                        if stall_from.is_some_and(|from| start >= from) {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                        }
                        tokio::time::sleep(delay).await;
                    }
                    let (status, body) = respond(&mut state.lock().unwrap(), &target);
                    let body = body.to_string();
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(body.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        FakeLog { url, state, task }
    }

    /// The log's DER public key.
    pub(crate) fn spki(&self) -> Vec<u8> {
        self.state.lock().unwrap().key.public_key_spki().to_vec()
    }

    /// Appends entries and publishes a tree head covering them.
    pub(crate) fn add(&self, entries: Vec<(Vec<u8>, Vec<u8>)>) {
        let mut s = self.state.lock().unwrap();
        s.entries.extend(entries);
        s.publish();
    }
}

/// The TBS of a DER certificate.
pub(crate) fn tbs(cert: &[u8]) -> Vec<u8> {
    crate::tbs::tbs_of(cert).unwrap().raw.to_vec()
}

/// A fresh P-256 log key.
pub(crate) fn log_key() -> Arc<SoftwareSigner> {
    Arc::new(SoftwareSigner::generate(SignatureAlgorithm::EcdsaP256Sha256).unwrap().0)
}
