//! The embedded RFC 6962 log: chain validation, group-committed sequencing, deduplication, SCT
//! and STH signing.
//!
//! Limits (each refuses with a message naming the rule; see also [`crate::http`]):
//! - A chain holds at most [`MAX_CHAIN`] certificates and [`MAX_CHAIN_BYTES`] of DER in all, so one
//!   submission cannot make the log verify or store an unbounded amount.
//! - Every certificate after the leaf, and a trusted root appended to it, must be a CA
//!   (basicConstraints cA=TRUE), have keyUsage keyCertSign (intermediates must carry keyUsage; a
//!   root without it is accepted), be within its validity now, and have its pathLenConstraint
//!   honoured (self-issued certificates are not counted). Without this a holder of any leaf
//!   certificate issued under a trusted root could "issue" entries with its leaf key.
//! - `add-chain` leaves must not carry the CT poison; `add-pre-chain` leaves must. Precertificate
//!   signing certificates (EKU 1.3.6.1.4.1.11129.2.4.4) are refused, as before.
//! - Deduplication: a submission identical to a logged one (same entry type, same certificate or
//!   precertificate TBS with issuer key hash, same stored chain; see `store::submission_hash`)
//!   gets the logged entry's SCT back: its timestamp and entry, signed again over the same
//!   signed data (ECDSA signatures differ each time but all verify; storing the first one would cost
//!   a second write per entry). The log does not grow. Outside submissions are looked up in the
//!   writer's transaction, so concurrent identical submissions collapse too; the CA's own
//!   submissions (unique by serial) skip the lookup but record their hash.
//! - The writer has two queues. Each transaction takes every queued CA entry (up to
//!   [`MAX_BATCH`]) and at most [`MAX_OUTSIDE_PER_BATCH`] outside entries holding at most
//!   [`MAX_OUTSIDE_BYTES_PER_BATCH`] (always at least one), so the CA never waits behind more
//!   than one small slice of outside work. At most [`MAX_OUTSIDE_QUEUED`] outside entries may be
//!   queued at all, whatever the HTTP layer allows.
//!
//! This module holds the log's state and its submission path; its parts are `validate` (chains),
//! `writer` (the queues and group commit), `signing` (keys, SCTs and tree heads) and `reads`
//! (proofs and read-only connections).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keyless_ca::ct::{self, CtFuture, CtLog, DigitallySigned, Sct};
use keyless_ca::keys::sha256;
use keyless_ca::{SignatureAlgorithm, Signer};
use rusqlite::Connection;

use self::signing::spki_point;
use self::validate::Tail;
use self::writer::{Inbox, Pending, Source, WriterHandle};
use crate::LogError;
use crate::merkle::{self, Frontier, Nodes as _};
use crate::store;
use crate::wire::{LeafEntry, MerkleTreeLeaf, PrecertChainEntry, SignedTreeHead};

mod reads;
mod signing;
mod validate;
mod writer;

pub use self::signing::{load_or_create_key, log_public_key};
pub use self::validate::{MAX_CHAIN, MAX_CHAIN_BYTES};
pub use self::writer::{MAX_BATCH, MAX_OUTSIDE_BYTES_PER_BATCH, MAX_OUTSIDE_PER_BATCH, MAX_OUTSIDE_QUEUED};

/// Tuning for the embedded log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Maximum merge delay: every entry whose SCT is older than this is in the published STH.
    pub mmd: Duration,
    /// How long a submission may wait for its durable commit before the CA gives up.
    pub commit_timeout: Duration,
    /// Name used in messages (e.g. the log's URL).
    pub name: String,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            mmd: Duration::from_secs(1),
            commit_timeout: Duration::from_secs(10),
            name: "embedded".into(),
        }
    }
}

struct Root {
    der: Vec<u8>,
    spki: Vec<u8>,
    subject: Vec<u8>,
}

/// What the log keeps in memory: the tree's right edge (O(log n) hashes) and the latest STH.
/// Everything else (entries, tree nodes, the leaf-hash index) is read from storage.
struct State {
    frontier: Frontier,
    sth: SignedTreeHead,
}

/// The result of an outside submission.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The SCT (for a duplicate: the logged entry's timestamp, signed again).
    pub sct: Sct,
    /// The entry's index.
    pub index: u64,
    /// True when an identical entry was already logged and nothing was added.
    pub deduplicated: bool,
}

pub(crate) struct Shared {
    opts: LogOptions,
    /// The log's signing key: a P-256 file key, or a key in the CA's PKCS#11 token.
    key: Arc<dyn Signer>,
    /// The key's own verifier: every signature it returns is checked before it is published.
    verifier: aws_lc_rs::signature::ParsedPublicKey,
    spki: Vec<u8>,
    log_id: [u8; 32],
    roots: Vec<Root>,
    state: RwLock<State>,
    /// The database file, for read-only connections.
    db: PathBuf,
    /// Idle read-only connections (at most [`MAX_IDLE_READERS`] kept).
    readers: Mutex<Vec<Connection>>,
    /// Chain tails (everything after the leaf) already verified up to a root, by SHA-256.
    verified_tails: Mutex<HashMap<[u8; 32], Arc<Tail>>>,
    /// Entries whose tree nodes had to be built when the log was opened.
    built_at_open: u64,
}

/// An RFC 6962 log running in this process. Cheap to clone; the writer thread stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct EmbeddedLog {
    shared: Arc<Shared>,
    inbox: Arc<Inbox>,
    _writer: Arc<WriterHandle>,
}

impl std::fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLog")
            .field("name", &self.shared.opts.name)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl EmbeddedLog {
    /// Opens the log stored in `dir` (creating it on first start), trusting `roots` (DER). Fails if
    /// the stored entries are inconsistent with any STH the log has published.
    ///
    /// `key` is the log's signing key (a P-256 key in an HSM); `None` uses the file key kept in
    /// `dir`, made on first start.
    pub fn open(
        dir: &Path,
        roots: &[Vec<u8>],
        opts: LogOptions,
        key: Option<Arc<dyn Signer>>,
    ) -> Result<EmbeddedLog, LogError> {
        std::fs::create_dir_all(dir).map_err(|e| LogError::Setup(format!("{}: {e}", dir.display())))?;
        let key: Arc<dyn Signer> = match key {
            Some(k) => k,
            None => Arc::new(load_or_create_key(&dir.join("log-key.pem"))?),
        };
        if key.algorithm() != SignatureAlgorithm::EcdsaP256Sha256 {
            return Err(LogError::Setup(
                "the log key must be ECDSA P-256 (RFC 6962 clients require it)".into(),
            ));
        }
        let spki = key.public_key_spki().to_vec();
        let db: PathBuf = dir.join("log.sqlite");
        let mut conn = store::open_writer(&db)?;
        let built_at_open = store::build_tiles(&mut conn)?;
        let size = store::entry_count(&conn)?;
        let point = spki_point(&spki).ok_or_else(|| LogError::Setup("the log key is not a valid P-256 key".into()))?;
        let verifier = ct::log_verifier(&point).map_err(|e| LogError::Setup(e.0))?;
        // Start-up reads O(log n) stored nodes, never every entry: the frontier, the last entry
        // against its stored leaf node, and the latest STH against the stored tree.
        let mut nodes = store::StoredNodes::new(&conn);
        let frontier = Frontier::from_nodes(&mut nodes, size)?;
        if size > 0 {
            let stored = store::leaf_hash_at(&conn, size - 1)?;
            if stored.as_deref() != Some(&nodes.node(0, size - 1)?[..]) {
                return Err(LogError::Setup(format!(
                    "the stored tree does not match entry {}",
                    size - 1
                )));
            }
        }
        let latest = store::latest_sth(&conn)?;
        if let Some(sth) = &latest {
            if sth.tree_size > size {
                return Err(LogError::Setup(format!(
                    "published STH of size {} is larger than the stored tree ({size})",
                    sth.tree_size
                )));
            }
            let root = if sth.tree_size == size {
                frontier.root()
            } else {
                merkle::root_from(&mut nodes, sth.tree_size)?
            };
            if root != sth.root {
                return Err(LogError::Setup(format!(
                    "stored entries do not match the STH published at size {}",
                    sth.tree_size
                )));
            }
            let signature = DigitallySigned::decode(&sth.signature)
                .map_err(|_| LogError::Setup("stored STH signature is malformed".into()))?;
            verifier
                .verify_sig(&sth.signed_data(), &signature.signature)
                .map_err(|_| LogError::Setup("a stored STH was not signed by this log's key".into()))?;
        }
        drop(nodes);
        let roots = roots
            .iter()
            .map(|d| {
                let (_, c) = x509_parser::parse_x509_certificate(d)
                    .map_err(|e| LogError::Setup(format!("trusted root: {e}")))?;
                Ok(Root {
                    der: d.clone(),
                    spki: c.public_key().raw.to_vec(),
                    subject: c.subject().as_raw().to_vec(),
                })
            })
            .collect::<Result<Vec<_>, LogError>>()?;
        let placeholder = SignedTreeHead {
            tree_size: 0,
            timestamp: 0,
            root: merkle::empty_root(),
            signature: Vec::new(),
        };
        let shared = Arc::new(Shared {
            log_id: sha256(&spki),
            spki,
            key,
            verifier,
            roots,
            state: RwLock::new(State {
                frontier,
                sth: placeholder,
            }),
            readers: Mutex::new(vec![store::open_reader(&db)?]),
            db,
            verified_tails: Mutex::new(HashMap::new()),
            built_at_open,
            opts,
        });
        if let Some(sth) = latest {
            shared.state.write().expect("poisoned").sth = sth;
        }
        shared.publish_if_due(&conn, true)?;
        let inbox = Arc::new(Inbox::default());
        let writer = shared.clone();
        let writer_inbox = inbox.clone();
        std::thread::Builder::new()
            .name("ctlog-writer".into())
            .spawn(move || writer.run(conn, &writer_inbox))
            .map_err(|e| LogError::Setup(format!("cannot start the log writer: {e}")))?;
        Ok(EmbeddedLog {
            shared,
            _writer: Arc::new(WriterHandle(inbox.clone())),
            inbox,
        })
    }

    /// The log's DER public key.
    pub fn public_key_spki(&self) -> &[u8] {
        &self.shared.spki
    }

    /// SHA-256 of the public key: the log id in SCTs.
    pub fn log_id(&self) -> [u8; 32] {
        self.shared.log_id
    }

    /// The latest published signed tree head.
    pub fn sth(&self) -> SignedTreeHead {
        self.shared.state.read().expect("poisoned").sth.clone()
    }

    /// Entries durably committed (the published STH may trail by up to the MMD).
    pub fn size(&self) -> u64 {
        self.shared.state.read().expect("poisoned").frontier.size()
    }

    /// Hashes of the tree held in memory: the frontier's, one per set bit of the size (≤ 64),
    /// however large the log grows.
    pub fn tree_hashes_in_memory(&self) -> usize {
        self.shared.state.read().expect("poisoned").frontier.hashes_held()
    }

    /// Entries whose stored tree nodes were built when the log was opened: all of them the first
    /// time a database from before stored nodes is opened, 0 on an ordinary start.
    pub fn nodes_built_at_open(&self) -> u64 {
        self.shared.built_at_open
    }

    /// Waits (blocking, at most `timeout`) until the published STH covers every committed entry,
    /// so a shutdown leaves a tree head that includes everything the log promised.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            {
                let st = self.shared.state.read().expect("poisoned");
                if st.sth.tree_size >= st.frontier.size() {
                    return true;
                }
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The trusted roots (DER).
    pub fn roots(&self) -> Vec<Vec<u8>> {
        self.shared.roots.iter().map(|r| r.der.clone()).collect()
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Validates and durably logs a chain from an outside submitter; returns the SCT (and the
    /// entry's position) only after the entry is committed. An identical earlier submission is
    /// answered with its own entry and timestamp instead. Outside submissions queue behind the
    /// CA's own and are taken a few at a time (see the module docs).
    pub async fn submit(&self, chain: &[Vec<u8>], precert: bool) -> Result<Submitted, LogError> {
        self.submit_from(chain, precert, Source::Outside).await
    }

    /// Every SCT signature is verified once before it leaves: here, unless the submitter is this
    /// process's CA, which verifies it itself with the configured log key.
    async fn submit_from(&self, chain: &[Vec<u8>], precert: bool, source: Source) -> Result<Submitted, LogError> {
        let v = self.shared.validate(chain, precert, now_ms())?;
        let timestamp = now_ms();
        let (leaf_input, extra_prefix) = match &v.precert {
            Some((issuer_key_hash, tbs)) => {
                let entry = LeafEntry::Precert {
                    issuer_key_hash: *issuer_key_hash,
                    tbs,
                };
                (
                    MerkleTreeLeaf::new(timestamp, entry).encode(),
                    PrecertChainEntry::prefix(&chain[0]),
                )
            }
            None => (
                MerkleTreeLeaf::new(timestamp, LeafEntry::X509(&chain[0])).encode(),
                Vec::new(),
            ),
        };
        // RFC 6962's signed data for an SCT is byte for byte the entry's `MerkleTreeLeaf` (both
        // start with version 0 and type 0, then timestamp, entry type, entry and extensions), so
        // a duplicate's SCT can be signed again from the stored leaf.
        let signed = leaf_input.clone();
        let (reply, wait) = tokio::sync::oneshot::channel();
        let pending = Pending {
            submission_hash: store::submission_hash(&leaf_input, &v.chain.1),
            leaf_hash: merkle::leaf_hash(&leaf_input),
            leaf_input,
            extra_prefix,
            chain: v.chain,
            source,
            reply,
        };
        {
            let mut q = self.inbox.queues.lock().expect("poisoned");
            if q.closed {
                return Err(LogError::Unavailable("the log writer has stopped".into()));
            }
            match source {
                Source::Ca => q.ca.push_back(pending),
                Source::Outside if q.outside.len() >= MAX_OUTSIDE_QUEUED => {
                    return Err(LogError::Unavailable("too many outside submissions are queued".into()));
                }
                Source::Outside => q.outside.push_back(pending),
            }
        }
        self.inbox.wake.notify_one();
        let placed = match tokio::time::timeout(self.shared.opts.commit_timeout, wait).await {
            Ok(Ok(result)) => result?,
            Ok(Err(_)) => return Err(LogError::Unavailable("the log writer dropped the submission".into())),
            Err(_) => {
                return Err(LogError::Unavailable(
                    "the durable commit did not finish in time".into(),
                ));
            }
        };
        let (index, timestamp, signed, deduplicated) = match placed {
            store::Placed::New(index) => (index, timestamp, signed, false),
            store::Placed::Existing { index, leaf_input } => {
                let ts = MerkleTreeLeaf::decode(&leaf_input)
                    .map_err(|e| LogError::Storage(format!("entry {index} has a malformed leaf: {e}")))?
                    .timestamp;
                (index, ts, leaf_input, true)
            }
        };
        let signature = self.shared.sign(signed, source == Source::Outside).await?;
        let sct = Sct {
            log_id: self.shared.log_id,
            timestamp,
            extensions: Vec::new(),
            hash_algorithm: ct::HASH_SHA256,
            signature_algorithm: ct::SIG_ECDSA,
            signature,
        };
        Ok(Submitted {
            sct,
            index,
            deduplicated,
        })
    }
}

impl CtLog for EmbeddedLog {
    fn name(&self) -> &str {
        &self.shared.opts.name
    }

    fn verifies_precertificate_signature(&self) -> bool {
        true
    }

    fn add_pre_chain<'a>(&'a self, chain: &'a [Vec<u8>]) -> CtFuture<'a> {
        Box::pin(async move {
            // The CA verifies the SCT with the configured log key before using it (and so checks
            // that the log's view of the TBS is its own), so the log need not verify it twice.
            let done = self
                .submit_from(chain, true, Source::Ca)
                .await
                .map_err(|e| ct::CtError(e.to_string()))?;
            Ok(ct::Logged {
                sct: done.sct,
                leaf_index: Some(done.index),
            })
        })
    }
}
