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

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, UnparsedPublicKey};
use keyless_ca::ct::{self, CtFuture, CtLog, Sct};
use keyless_ca::der;
use keyless_ca::keys::{PublicKey, sha256, signature_oid_hash};
use keyless_ca::{SignatureAlgorithm, Signer, SoftwareSigner};
use rusqlite::Connection;
use x509_parser::certificate::X509Certificate;

use crate::merkle::{self, Hash, Tree};
use crate::store::{self, StoredSth};
use crate::{LogError, tls};

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

/// A signed tree head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTreeHead {
    /// Number of entries.
    pub tree_size: u64,
    /// Milliseconds since the epoch.
    pub timestamp: u64,
    /// Merkle root.
    pub root: Hash,
    /// TLS `DigitallySigned` over the tree head.
    pub signature: Vec<u8>,
}

struct Root {
    der: Vec<u8>,
    spki: Vec<u8>,
    subject: Vec<u8>,
}

struct State {
    tree: Tree,
    by_hash: HashMap<Hash, u64>,
    sth: SignedTreeHead,
}

struct Pending {
    leaf_input: Vec<u8>,
    extra_prefix: Vec<u8>,
    chain: Arc<(Vec<u8>, [u8; 32])>,
    leaf_hash: Hash,
    submission_hash: [u8; 32],
    source: Source,
    reply: tokio::sync::oneshot::Sender<Result<store::Placed, LogError>>,
}

impl Pending {
    /// Bytes this entry adds to a transaction (the chain is counted: it may be new).
    fn weight(&self) -> usize {
        self.leaf_input.len() + self.extra_prefix.len() + self.chain.0.len()
    }
}

/// At most this many entries in one transaction.
pub const MAX_BATCH: usize = 4096;
/// At most this many outside entries in one transaction: bounds how long a CA entry can wait
/// behind outside ones.
pub const MAX_OUTSIDE_PER_BATCH: usize = 32;
/// At most this many bytes of outside entries in one transaction (at least one entry is taken).
pub const MAX_OUTSIDE_BYTES_PER_BATCH: usize = 512 * 1024;
/// Hard cap on queued outside entries, below the HTTP layer's own `queue` limit in practice.
pub const MAX_OUTSIDE_QUEUED: usize = 4096;

/// Which queue a submission goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// This process's CA (`CtLog::add_pre_chain`).
    Ca,
    /// Anyone else (`add-chain` / `add-pre-chain` over HTTP).
    Outside,
}

/// The writer's two queues.
#[derive(Default)]
struct Queues {
    ca: VecDeque<Pending>,
    outside: VecDeque<Pending>,
    closed: bool,
}

impl Queues {
    /// The next transaction: every queued CA entry first (up to [`MAX_BATCH`]), then outside
    /// entries up to [`MAX_OUTSIDE_PER_BATCH`] and [`MAX_OUTSIDE_BYTES_PER_BATCH`].
    fn take_batch(&mut self) -> Vec<Pending> {
        let n = self.ca.len().min(MAX_BATCH);
        let mut batch: Vec<Pending> = self.ca.drain(..n).collect();
        let mut bytes = 0usize;
        let mut taken = 0usize;
        while batch.len() < MAX_BATCH && taken < MAX_OUTSIDE_PER_BATCH {
            let Some(next) = self.outside.front() else { break };
            if taken > 0 && bytes + next.weight() > MAX_OUTSIDE_BYTES_PER_BATCH {
                break;
            }
            bytes += next.weight();
            taken += 1;
            batch.extend(self.outside.pop_front());
        }
        batch
    }
}

/// The queues the writer thread drains, and its wake-up.
#[derive(Default)]
struct Inbox {
    queues: Mutex<Queues>,
    wake: Condvar,
}

/// Closes the inbox when the last [`EmbeddedLog`] clone is dropped, which stops the writer.
struct WriterHandle(Arc<Inbox>);

impl Drop for WriterHandle {
    fn drop(&mut self) {
        if let Ok(mut q) = self.0.queues.lock() {
            q.closed = true;
        }
        self.0.wake.notify_all();
    }
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
}

/// An RFC 6962 log running in this process. Cheap to clone; the writer thread stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct EmbeddedLog {
    shared: Arc<Shared>,
    inbox: Arc<Inbox>,
    _writer: Arc<WriterHandle>,
}

/// Idle read-only connections kept for reuse.
const MAX_IDLE_READERS: usize = 8;

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

/// The log's signing key: P-256, made on first start and kept beside the database.
/// Loads a P-256 PKCS#8 PEM key, creating it (mode 0600, never overwritten) on first use: the
/// log's key, and the audit record's checkpoint key.
pub fn load_or_create_key(path: &Path) -> Result<SoftwareSigner, LogError> {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    let setup = |m: String| LogError::Setup(format!("{}: {m}", path.display()));
    if !path.exists() {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
            .map_err(|_| setup("cannot generate the log key".into()))?;
        let b64 = STANDARD.encode(pkcs8.as_ref());
        let body: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap_or(""))
            .collect();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            body.join("\n")
        );
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        use std::io::Write;
        let mut f = opts.open(path).map_err(|e| setup(e.to_string()))?;
        f.write_all(pem.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| setup(e.to_string()))?;
    }
    let text = std::fs::read_to_string(path).map_err(|e| setup(e.to_string()))?;
    let der = STANDARD
        .decode(text.lines().filter(|l| !l.starts_with("-----")).collect::<String>())
        .map_err(|_| setup("not a PEM key".into()))?;
    SoftwareSigner::from_pkcs8(SignatureAlgorithm::EcdsaP256Sha256, &der)
        .map_err(|_| setup("not a P-256 PKCS#8 key".into()))
}

/// The SEC1 point of a DER SPKI.
fn spki_point(spki: &[u8]) -> Option<Vec<u8>> {
    let (outer, _) = der::read_tlv(spki)?;
    let parts = der::read_all(outer.content)?;
    parts.get(1)?.content.get(1..).map(<[u8]>::to_vec)
}

/// The public key of the log stored in `dir`, creating the key if needed (for `trusted-root`).
pub fn log_public_key(dir: &Path) -> Result<Vec<u8>, LogError> {
    std::fs::create_dir_all(dir).map_err(|e| LogError::Setup(format!("{}: {e}", dir.display())))?;
    Ok(load_or_create_key(&dir.join("log-key.pem"))?.public_key_spki().to_vec())
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
        let conn = store::open_writer(&db)?;
        let mut tree = Tree::default();
        let mut by_hash = HashMap::new();
        for (i, h) in store::leaf_hashes(&conn)?.into_iter().enumerate() {
            tree.push(h);
            by_hash.insert(h, i as u64);
        }
        let point = spki_point(&spki).ok_or_else(|| LogError::Setup("the log key is not a valid P-256 key".into()))?;
        let verifier = ct::log_verifier(&point).map_err(|e| LogError::Setup(e.0))?;
        let mut latest = None;
        for sth in store::sths(&conn)? {
            let root = tree.root(sth.tree_size).ok_or_else(|| {
                LogError::Setup(format!(
                    "published STH of size {} is larger than the stored tree ({})",
                    sth.tree_size,
                    tree.size()
                ))
            })?;
            if root != sth.root {
                return Err(LogError::Setup(format!(
                    "stored entries do not match the STH published at size {}",
                    sth.tree_size
                )));
            }
            let (_, _, sig) = Sct::parse_digitally_signed(&sth.signature)
                .ok_or_else(|| LogError::Setup("stored STH signature is malformed".into()))?;
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &point)
                .verify(
                    &tls::tree_head_signed_data(sth.timestamp, sth.tree_size, &sth.root),
                    &sig,
                )
                .map_err(|_| LogError::Setup("a stored STH was not signed by this log's key".into()))?;
            latest = Some(sth);
        }
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
                tree,
                by_hash,
                sth: placeholder,
            }),
            readers: Mutex::new(vec![store::open_reader(&db)?]),
            db,
            verified_tails: Mutex::new(HashMap::new()),
            opts,
        });
        match latest {
            Some(s) => {
                shared.state.write().expect("poisoned").sth = SignedTreeHead {
                    tree_size: s.tree_size,
                    timestamp: s.timestamp,
                    root: s.root,
                    signature: s.signature,
                };
                shared.publish_if_due(&conn, true)?;
            }
            None => shared.publish_if_due(&conn, true)?,
        }
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
        self.shared.state.read().expect("poisoned").tree.size()
    }

    /// Waits (blocking, at most `timeout`) until the published STH covers every committed entry,
    /// so a shutdown leaves a tree head that includes everything the log promised.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            {
                let st = self.shared.state.read().expect("poisoned");
                if st.sth.tree_size >= st.tree.size() {
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
            Some((ikh, tbs)) => {
                let mut prefix = Vec::with_capacity(chain[0].len() + 3);
                tls::u24_prefixed(&mut prefix, &chain[0]);
                (tls::precert_leaf(timestamp, ikh, tbs), prefix)
            }
            None => (tls::x509_leaf(timestamp, &chain[0]), Vec::new()),
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
                let ts = leaf_input
                    .get(2..10)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| LogError::Storage(format!("entry {index} has a malformed leaf")))?;
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

/// A verified chain tail.
struct Tail {
    issuer_key: PublicKey,
    issuer_key_hash: [u8; 32],
    /// The stored `certificate_chain` (the tail plus the root if it was left out) and its hash.
    stored: Arc<(Vec<u8>, [u8; 32])>,
    /// The window (Unix seconds) in which every certificate of the tail is valid: a cached tail
    /// is reused only inside it.
    valid_from: i64,
    valid_until: i64,
}

struct Validated {
    /// `certificate_chain` of `extra_data` (everything after the leaf, plus the root if it was
    /// left out) and its hash, shared by every entry from the same CA.
    chain: Arc<(Vec<u8>, [u8; 32])>,
    /// For precertificates: issuer key hash and the TBS without the poison.
    precert: Option<([u8; 32], Vec<u8>)>,
}

/// Most certificates in a submitted chain (leaf included).
pub const MAX_CHAIN: usize = 8;
/// Most DER bytes in a submitted chain, all certificates together.
pub const MAX_CHAIN_BYTES: usize = 128 * 1024;
/// EKU of an RFC 6962 precertificate signing certificate.
const PRECERT_SIGNING_EKU: &str = "1.3.6.1.4.1.11129.2.4.4";

/// Checks the CA rules for one certificate of the path above the leaf. `label` names it in
/// messages; `trusted_root` relaxes only the keyUsage presence rule.
fn check_ca(c: &X509Certificate<'_>, label: &str, trusted_root: bool, now_s: i64) -> Result<(), LogError> {
    let client = |m: String| Err(LogError::Client(m));
    match c.basic_constraints() {
        Err(e) => return client(format!("{label}: malformed basicConstraints: {e}")),
        Ok(Some(bc)) if bc.value.ca => {}
        Ok(_) => {
            return client(format!(
                "{label} is not a CA certificate (basicConstraints cA is not TRUE)"
            ));
        }
    }
    match c.key_usage() {
        Err(e) => return client(format!("{label}: malformed keyUsage: {e}")),
        Ok(Some(ku)) if !ku.value.key_cert_sign() => {
            return client(format!("{label}: keyUsage does not include keyCertSign"));
        }
        Ok(None) if !trusted_root => {
            return client(format!(
                "{label} has no keyUsage extension; an intermediate CA must have keyCertSign"
            ));
        }
        Ok(_) => {}
    }
    let v = c.validity();
    if now_s < v.not_before.timestamp() || now_s > v.not_after.timestamp() {
        return client(format!(
            "{label} is not valid now (valid from {} to {})",
            v.not_before, v.not_after
        ));
    }
    Ok(())
}

/// Checks every pathLenConstraint of `path` (issuer first, root last): a CA may have at most
/// that many non-self-issued intermediate CAs below it, the leaf not counted.
fn check_path_len(path: &[(X509Certificate<'_>, String)]) -> Result<(), LogError> {
    let mut below = 0u64;
    for (c, label) in path {
        if let Ok(Some(bc)) = c.basic_constraints()
            && let Some(max) = bc.value.path_len_constraint
            && below > u64::from(max)
        {
            return Err(LogError::Client(format!(
                "{label} has pathLenConstraint {max} but {below} intermediate CA certificate(s) follow it"
            )));
        }
        if c.subject().as_raw() != c.issuer().as_raw() {
            below += 1;
        }
    }
    Ok(())
}

fn verify_issued_by(child: &X509Certificate<'_>, parent_spki: &[u8]) -> bool {
    PublicKey::from_spki_der(parent_spki).is_ok_and(|key| key.verify_x509(child))
}

/// Checks a certificate's signature with its issuer's key.
trait VerifyX509 {
    fn verify_x509(&self, child: &X509Certificate<'_>) -> bool;
}

impl VerifyX509 for PublicKey {
    fn verify_x509(&self, child: &X509Certificate<'_>) -> bool {
        let Some(hash) = signature_oid_hash(&child.signature_algorithm.algorithm.to_id_string()) else {
            return false;
        };
        self.verify(hash, child.tbs_certificate.as_ref(), &child.signature_value.data)
    }
}

fn has_poison(c: &X509Certificate<'_>) -> bool {
    c.extensions()
        .iter()
        .any(|e| e.critical && e.oid.to_id_string() == "1.3.6.1.4.1.11129.2.4.3")
}

impl Shared {
    /// Signs an SCT input (off the async workers when the key is in an HSM) and checks the
    /// signature before it becomes a promise.
    async fn sign(self: &Arc<Self>, data: Vec<u8>, verify: bool) -> Result<Vec<u8>, LogError> {
        let shared = self.clone();
        let work = move || {
            let sig = shared
                .key
                .sign(&data)
                .map_err(|e| LogError::Unavailable(format!("SCT signing failed: {e}")))?;
            if verify {
                shared.verifier.verify_sig(&data, &sig).map_err(|_| {
                    LogError::Unavailable("the log key returned an SCT signature that does not verify".into())
                })?;
            }
            Ok(sig)
        };
        if self.key.blocking() {
            tokio::task::spawn_blocking(work)
                .await
                .map_err(|e| LogError::Unavailable(e.to_string()))?
        } else {
            work()
        }
    }

    fn validate(&self, chain: &[Vec<u8>], precert: bool, now: u64) -> Result<Validated, LogError> {
        if chain.is_empty() || chain.len() > MAX_CHAIN {
            return Err(LogError::Client(format!(
                "a chain holds 1 to {MAX_CHAIN} certificates; this one has {}",
                chain.len()
            )));
        }
        let total: usize = chain.iter().map(Vec::len).sum();
        if total > MAX_CHAIN_BYTES {
            return Err(LogError::Client(format!(
                "the chain's certificates hold {total} bytes; at most {MAX_CHAIN_BYTES} are accepted"
            )));
        }
        let now_s = (now / 1000) as i64;
        let leaf = match x509_parser::parse_x509_certificate(&chain[0]) {
            Ok(([], c)) => c,
            _ => return Err(LogError::Client("chain[0] is not a DER certificate".into())),
        };
        match (precert, has_poison(&leaf)) {
            (true, false) => {
                return Err(LogError::Client(
                    "add-pre-chain needs a precertificate (critical poison extension)".into(),
                ));
            }
            (false, true) => {
                return Err(LogError::Client(
                    "add-chain does not accept precertificates; use add-pre-chain".into(),
                ));
            }
            _ => {}
        }
        if chain.len() == 1 {
            if precert {
                return Err(LogError::Client(
                    "a precertificate chain must include its issuer".into(),
                ));
            }
            let rest: Vec<Vec<u8>> = self.anchor(&leaf)?.into_iter().collect();
            if let Some(root) = rest.first() {
                let (_, root) = x509_parser::parse_x509_certificate(root)
                    .map_err(|e| LogError::Setup(format!("trusted root: {e}")))?;
                check_ca(&root, "the trusted root that issued chain[0]", true, now_s)?;
            }
            let blob = tls::cert_list(&rest);
            let hash = sha256(&blob);
            return Ok(Validated {
                chain: Arc::new((blob, hash)),
                precert: None,
            });
        }
        let tail = self.tail(chain, now_s)?;
        if !tail.issuer_key.verify_x509(&leaf) {
            return Err(LogError::Client("chain[0] is not signed by chain[1]".into()));
        }
        let precert = if precert {
            let tbs = der::tbs_without_extension(leaf.tbs_certificate.as_ref(), &ct::oid_der(ct::POISON_OID))
                .ok_or_else(|| LogError::Client("cannot remove the poison from the precertificate".into()))?;
            Some((tail.issuer_key_hash, tbs))
        } else {
            None
        };
        Ok(Validated {
            chain: tail.stored.clone(),
            precert,
        })
    }

    /// The trusted root `last` chains to: `None` if `last` is itself a trusted root, otherwise the
    /// root that issued it (to be appended to the stored chain).
    fn anchor(&self, last: &X509Certificate<'_>) -> Result<Option<Vec<u8>>, LogError> {
        if self.is_root(last.as_ref()) {
            return Ok(None);
        }
        self.roots
            .iter()
            .find(|r| r.subject == last.issuer().as_raw() && verify_issued_by(last, &r.spki))
            .map(|r| Some(r.der.clone()))
            .ok_or_else(|| LogError::Client("the chain does not lead to a root this log trusts".into()))
    }

    fn is_root(&self, der: &[u8]) -> bool {
        self.roots.iter().any(|r| r.der == der)
    }

    /// Everything after the leaf is the same for every entry from one CA: it is verified once, up
    /// to a trusted root, and remembered by its hash (reused only while every certificate in it
    /// is within its validity).
    fn tail(&self, chain: &[Vec<u8>], now_s: i64) -> Result<Arc<Tail>, LogError> {
        // Length-prefixed, so two chains cannot share an id by splitting bytes differently.
        let id = sha256(&tls::cert_list(&chain[1..]));
        if let Some(t) = self.verified_tails.lock().expect("poisoned").get(&id)
            && (t.valid_from..=t.valid_until).contains(&now_s)
        {
            return Ok(t.clone());
        }
        let certs = chain[1..]
            .iter()
            .enumerate()
            .map(|(i, d)| match x509_parser::parse_x509_certificate(d) {
                Ok(([], c)) => Ok(c),
                _ => Err(LogError::Client(format!("chain[{}] is not a DER certificate", i + 1))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let issuer = &certs[0];
        if matches!(issuer.extended_key_usage(), Ok(Some(e)) if e.value.other.iter().any(|o| o.to_id_string() == PRECERT_SIGNING_EKU))
        {
            return Err(LogError::Client(format!(
                "chain[1] is a precertificate signing certificate (EKU {PRECERT_SIGNING_EKU}); these are not supported"
            )));
        }
        for i in 0..certs.len() - 1 {
            if !verify_issued_by(&certs[i], certs[i + 1].public_key().raw) {
                return Err(LogError::Client(format!(
                    "chain[{}] is not signed by chain[{}]",
                    i + 1,
                    i + 2
                )));
            }
        }
        let root_appended = self.anchor(&certs[certs.len() - 1])?;
        let root_cert = match &root_appended {
            Some(d) => Some(
                x509_parser::parse_x509_certificate(d)
                    .map_err(|e| LogError::Setup(format!("trusted root: {e}")))?
                    .1,
            ),
            None => None,
        };
        let mut path: Vec<(X509Certificate<'_>, String)> = Vec::with_capacity(certs.len() + 1);
        for (i, c) in certs.into_iter().enumerate() {
            path.push((c, format!("chain[{}]", i + 1)));
        }
        if let Some(r) = root_cert {
            path.push((r, format!("the trusted root that issued chain[{}]", chain.len() - 1)));
        }
        let (mut valid_from, mut valid_until) = (i64::MIN, i64::MAX);
        for (i, (c, label)) in path.iter().enumerate() {
            let trusted_root = i == path.len() - 1 && (root_appended.is_some() || self.is_root(c.as_ref()));
            check_ca(c, label, trusted_root, now_s)?;
            valid_from = valid_from.max(c.validity().not_before.timestamp());
            valid_until = valid_until.min(c.validity().not_after.timestamp());
        }
        check_path_len(&path)?;
        let issuer = &path[0].0;
        let issuer_key = PublicKey::from_spki_der(issuer.public_key().raw)
            .map_err(|e| LogError::Client(format!("chain[1] key: {e}")))?;
        let mut certs_after_leaf = chain[1..].to_vec();
        certs_after_leaf.extend(root_appended.iter().cloned());
        let blob = tls::cert_list(&certs_after_leaf);
        let stored = Arc::new((blob.clone(), sha256(&blob)));
        let tail = Arc::new(Tail {
            issuer_key_hash: sha256(issuer.public_key().raw),
            issuer_key,
            stored,
            valid_from,
            valid_until,
        });
        let mut cache = self.verified_tails.lock().expect("poisoned");
        if cache.len() >= 1024 {
            cache.clear();
        }
        cache.insert(id, tail.clone());
        Ok(tail)
    }

    /// The writer thread: group commits (CA entries first), then tree update, then replies; STHs
    /// on schedule. Stops once the inbox is closed and empty.
    fn run(self: Arc<Self>, mut conn: Connection, inbox: &Inbox) {
        let tick = (self.opts.mmd / 4).max(Duration::from_millis(5));
        loop {
            let (batch, stop) = {
                let mut q = inbox.queues.lock().expect("poisoned");
                let deadline = Instant::now() + tick;
                while q.ca.is_empty() && q.outside.is_empty() && !q.closed {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    q = inbox.wake.wait_timeout(q, left).expect("poisoned").0;
                }
                let batch = q.take_batch();
                (batch, q.closed && q.ca.is_empty() && q.outside.is_empty())
            };
            if !batch.is_empty() {
                self.commit(&mut conn, batch);
            }
            if stop {
                let _ = self.publish_if_due(&conn, true);
                return;
            }
            if let Err(e) = self.publish_if_due(&conn, false) {
                tracing::error!(error = %e, "publishing a signed tree head failed");
            }
        }
    }

    fn commit(&self, conn: &mut Connection, batch: Vec<Pending>) {
        let first = self.state.read().expect("poisoned").tree.size();
        let rows: Vec<store::NewEntry<'_>> = batch
            .iter()
            .map(|p| store::NewEntry {
                leaf_input: &p.leaf_input,
                extra_prefix: &p.extra_prefix,
                chain: &p.chain.0,
                chain_hash: &p.chain.1,
                leaf_hash: &p.leaf_hash,
                submission_hash: &p.submission_hash,
                dedup: p.source == Source::Outside,
            })
            .collect();
        match store::append(conn, first, &rows) {
            Ok(placed) => {
                {
                    let mut st = self.state.write().expect("poisoned");
                    for (p, at) in batch.iter().zip(&placed) {
                        if let store::Placed::New(index) = at {
                            st.tree.push(p.leaf_hash);
                            st.by_hash.insert(p.leaf_hash, *index);
                        }
                    }
                }
                for (p, at) in batch.into_iter().zip(placed) {
                    let _ = p.reply.send(Ok(at));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, entries = batch.len(), "CT log commit failed; no SCTs issued for this batch");
                for p in batch {
                    let _ = p.reply.send(Err(LogError::Storage(e.to_string())));
                }
            }
        }
    }

    /// Signs and stores a new STH when the tree grew and the last one is older than MMD/4, or
    /// when `force` is set and the tree differs from the published head.
    fn publish_if_due(&self, conn: &Connection, force: bool) -> Result<(), LogError> {
        let (size, root, last) = {
            let st = self.state.read().expect("poisoned");
            (
                st.tree.size(),
                st.tree.root(st.tree.size()).unwrap_or_else(merkle::empty_root),
                st.sth.clone(),
            )
        };
        let now = now_ms();
        let fresh_enough = now.saturating_sub(last.timestamp) < (self.opts.mmd / 4).as_millis() as u64;
        let unchanged = size == last.tree_size && !last.signature.is_empty();
        if unchanged || (!force && fresh_enough) {
            return Ok(());
        }
        let timestamp = now.max(last.timestamp + 1);
        let data = tls::tree_head_signed_data(timestamp, size, &root);
        let sig = self
            .key
            .sign(&data)
            .map_err(|e| LogError::Storage(format!("STH signing failed: {e}")))?;
        self.verifier
            .verify_sig(&data, &sig)
            .map_err(|_| LogError::Storage("the log key returned an STH signature that does not verify".into()))?;
        let signature = Sct {
            log_id: self.log_id,
            timestamp,
            extensions: Vec::new(),
            hash_algorithm: ct::HASH_SHA256,
            signature_algorithm: ct::SIG_ECDSA,
            signature: sig,
        }
        .digitally_signed();
        store::insert_sth(
            conn,
            &StoredSth {
                tree_size: size,
                timestamp,
                root,
                signature: signature.clone(),
            },
        )?;
        self.state.write().expect("poisoned").sth = SignedTreeHead {
            tree_size: size,
            timestamp,
            root,
            signature,
        };
        Ok(())
    }

    /// Inclusion proof for a leaf hash in the tree of `size` (≤ the published size).
    pub(crate) fn proof_by_hash(&self, hash: &Hash, size: u64) -> Result<(u64, Vec<Hash>), LogError> {
        let st = self.state.read().expect("poisoned");
        if size == 0 || size > st.sth.tree_size {
            return Err(LogError::Client(format!(
                "tree_size must be between 1 and {}",
                st.sth.tree_size
            )));
        }
        let index = *st
            .by_hash
            .get(hash)
            .ok_or_else(|| LogError::Client("no entry with that leaf hash".into()))?;
        if index >= size {
            return Err(LogError::Client(format!("the entry is not in the tree of size {size}")));
        }
        Ok((index, st.tree.inclusion_proof(index, size).unwrap_or_default()))
    }

    pub(crate) fn proof_by_index(&self, index: u64, size: u64) -> Result<Vec<Hash>, LogError> {
        let st = self.state.read().expect("poisoned");
        if size == 0 || size > st.sth.tree_size || index >= size {
            return Err(LogError::Client(format!(
                "need leaf_index < tree_size <= {}",
                st.sth.tree_size
            )));
        }
        Ok(st.tree.inclusion_proof(index, size).unwrap_or_default())
    }

    pub(crate) fn consistency(&self, first: u64, second: u64) -> Result<Vec<Hash>, LogError> {
        let st = self.state.read().expect("poisoned");
        if first > second || second > st.sth.tree_size {
            return Err(LogError::Client(format!(
                "need first <= second <= {}",
                st.sth.tree_size
            )));
        }
        Ok(st.tree.consistency_proof(first, second).unwrap_or_default())
    }

    /// Runs `f` on a read-only connection (call from a blocking thread): an idle one, or a new
    /// one when all are busy. At most [`MAX_IDLE_READERS`] are kept afterwards; the HTTP layer
    /// bounds how many run at once.
    pub(crate) fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T, LogError>) -> Result<T, LogError> {
        let idle = self.readers.lock().expect("poisoned").pop();
        let conn = match idle {
            Some(c) => c,
            None => store::open_reader(&self.db)?,
        };
        let out = f(&conn);
        let mut pool = self.readers.lock().expect("poisoned");
        if pool.len() < MAX_IDLE_READERS {
            pool.push(conn);
        }
        out
    }

    pub(crate) fn published_size(&self) -> u64 {
        self.state.read().expect("poisoned").sth.tree_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(source: Source, size: usize) -> Pending {
        let (reply, _) = tokio::sync::oneshot::channel();
        Pending {
            leaf_input: vec![0; size],
            extra_prefix: Vec::new(),
            chain: Arc::new((Vec::new(), [0; 32])),
            leaf_hash: [0; 32],
            submission_hash: [0; 32],
            source,
            reply,
        }
    }

    #[test]
    fn a_batch_takes_every_ca_entry_first_and_a_bounded_slice_of_outside_ones() {
        let mut q = Queues::default();
        for _ in 0..500 {
            q.outside.push_back(pending(Source::Outside, 100));
        }
        for _ in 0..3 {
            q.ca.push_back(pending(Source::Ca, 100));
        }
        let batch = q.take_batch();
        assert_eq!(batch.len(), 3 + MAX_OUTSIDE_PER_BATCH);
        assert!(batch[..3].iter().all(|p| p.source == Source::Ca), "CA entries first");
        assert!(batch[3..].iter().all(|p| p.source == Source::Outside));
        assert_eq!(q.outside.len(), 500 - MAX_OUTSIDE_PER_BATCH);
        // A CA entry queued behind 468 outside ones goes into the very next transaction.
        q.ca.push_back(pending(Source::Ca, 100));
        assert_eq!(q.take_batch()[0].source, Source::Ca);
    }

    #[test]
    fn outside_bytes_per_batch_are_capped_but_one_entry_always_goes() {
        let mut q = Queues::default();
        let big = MAX_OUTSIDE_BYTES_PER_BATCH / 2 + 1;
        for _ in 0..4 {
            q.outside.push_back(pending(Source::Outside, big));
        }
        assert_eq!(q.take_batch().len(), 1, "two would pass the byte cap");
        let mut q = Queues::default();
        q.outside
            .push_back(pending(Source::Outside, MAX_OUTSIDE_BYTES_PER_BATCH * 4));
        assert_eq!(q.take_batch().len(), 1, "an oversized entry still goes alone");
        let mut q = Queues::default();
        for _ in 0..MAX_BATCH + 10 {
            q.ca.push_back(pending(Source::Ca, 1));
        }
        q.outside.push_back(pending(Source::Outside, 1));
        assert_eq!(q.take_batch().len(), MAX_BATCH);
    }

    #[test]
    fn the_sct_signed_data_is_the_merkle_tree_leaf() {
        let (ts, ikh, tbs, cert) = (1_700_000_000_123u64, [7u8; 32], vec![1u8; 300], vec![2u8; 500]);
        assert_eq!(
            tls::precert_leaf(ts, &ikh, &tbs),
            ct::precert_signed_data(ts, &ikh, &tbs, &[])
        );
        assert_eq!(tls::x509_leaf(ts, &cert), ct::x509_signed_data(ts, &cert, &[]));
    }
}
