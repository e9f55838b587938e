//! The embedded RFC 6962 log: chain validation, group-committed sequencing, SCT and STH signing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    reply: tokio::sync::oneshot::Sender<Result<u64, LogError>>,
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
    pub(crate) reader: Mutex<Connection>,
    /// Chain tails (everything after the leaf) already verified up to a root, by SHA-256.
    verified_tails: Mutex<HashMap<[u8; 32], Arc<Tail>>>,
}

/// An RFC 6962 log running in this process. Cheap to clone; the writer thread stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct EmbeddedLog {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Pending>,
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
            reader: Mutex::new(store::open_reader(&db)?),
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
        let (tx, rx) = mpsc::channel();
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("ctlog-writer".into())
            .spawn(move || writer.run(conn, rx))
            .map_err(|e| LogError::Setup(format!("cannot start the log writer: {e}")))?;
        Ok(EmbeddedLog { shared, tx })
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

    /// Validates and durably logs a chain; returns the SCT (and the entry's position) only after
    /// the entry is committed. Every SCT signature is verified once before it leaves: here, unless
    /// the submitter is this process's CA, which verifies it itself with the configured log key.
    pub async fn submit(&self, chain: &[Vec<u8>], precert: bool) -> Result<(Sct, u64), LogError> {
        self.submit_checked(chain, precert, true).await
    }

    async fn submit_checked(&self, chain: &[Vec<u8>], precert: bool, verify_sct: bool) -> Result<(Sct, u64), LogError> {
        let v = self.shared.validate(chain, precert)?;
        let timestamp = now_ms();
        let (leaf_input, extra_prefix, signed) = match &v.precert {
            Some((ikh, tbs)) => {
                let mut prefix = Vec::with_capacity(chain[0].len() + 3);
                tls::u24_prefixed(&mut prefix, &chain[0]);
                (
                    tls::precert_leaf(timestamp, ikh, tbs),
                    prefix,
                    ct::precert_signed_data(timestamp, ikh, tbs, &[]),
                )
            }
            None => (
                tls::x509_leaf(timestamp, &chain[0]),
                Vec::new(),
                ct::x509_signed_data(timestamp, &chain[0], &[]),
            ),
        };
        let (reply, wait) = tokio::sync::oneshot::channel();
        let leaf_hash = merkle::leaf_hash(&leaf_input);
        self.tx
            .send(Pending {
                leaf_input,
                extra_prefix,
                chain: v.chain,
                leaf_hash,
                reply,
            })
            .map_err(|_| LogError::Unavailable("the log writer has stopped".into()))?;
        let index = match tokio::time::timeout(self.shared.opts.commit_timeout, wait).await {
            Ok(Ok(result)) => result?,
            Ok(Err(_)) => return Err(LogError::Unavailable("the log writer dropped the submission".into())),
            Err(_) => {
                return Err(LogError::Unavailable(
                    "the durable commit did not finish in time".into(),
                ));
            }
        };
        let signature = self.shared.sign(signed, verify_sct).await?;
        let sct = Sct {
            log_id: self.shared.log_id,
            timestamp,
            extensions: Vec::new(),
            hash_algorithm: ct::HASH_SHA256,
            signature_algorithm: ct::SIG_ECDSA,
            signature,
        };
        Ok((sct, index))
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
            let (sct, index) = self
                .submit_checked(chain, true, false)
                .await
                .map_err(|e| ct::CtError(e.to_string()))?;
            Ok(ct::Logged {
                sct,
                leaf_index: Some(index),
            })
        })
    }
}

/// A verified chain tail.
struct Tail {
    issuer_key: PublicKey,
    issuer_key_hash: [u8; 32],
    precert_signer: bool,
    /// The stored `certificate_chain` (the tail plus the root if it was left out) and its hash.
    stored: Arc<(Vec<u8>, [u8; 32])>,
}

struct Validated {
    /// `certificate_chain` of `extra_data` (everything after the leaf, plus the root if it was
    /// left out) and its hash, shared by every entry from the same CA.
    chain: Arc<(Vec<u8>, [u8; 32])>,
    /// For precertificates: issuer key hash and the TBS without the poison.
    precert: Option<([u8; 32], Vec<u8>)>,
}

const MAX_CHAIN: usize = 8;

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

    fn validate(&self, chain: &[Vec<u8>], precert: bool) -> Result<Validated, LogError> {
        if chain.is_empty() || chain.len() > MAX_CHAIN {
            return Err(LogError::Client(format!("a chain holds 1 to {MAX_CHAIN} certificates")));
        }
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
            let blob = tls::cert_list(&rest);
            let hash = sha256(&blob);
            return Ok(Validated {
                chain: Arc::new((blob, hash)),
                precert: None,
            });
        }
        let tail = self.tail(chain)?;
        if !tail.issuer_key.verify_x509(&leaf) {
            return Err(LogError::Client("chain[0] is not signed by chain[1]".into()));
        }
        let precert = if precert {
            if tail.precert_signer {
                return Err(LogError::Client(
                    "precertificate signing certificates are not supported".into(),
                ));
            }
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
        if self.roots.iter().any(|r| r.der == last.as_ref()) {
            return Ok(None);
        }
        self.roots
            .iter()
            .find(|r| r.subject == last.issuer().as_raw() && verify_issued_by(last, &r.spki))
            .map(|r| Some(r.der.clone()))
            .ok_or_else(|| LogError::Client("the chain does not lead to a root this log trusts".into()))
    }

    /// Everything after the leaf is the same for every entry from one CA: it is verified once, up
    /// to a trusted root, and remembered by its hash.
    fn tail(&self, chain: &[Vec<u8>]) -> Result<Arc<Tail>, LogError> {
        let id = sha256(&chain[1..].concat());
        if let Some(t) = self.verified_tails.lock().expect("poisoned").get(&id) {
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
        let issuer = &certs[0];
        let issuer_key = PublicKey::from_spki_der(issuer.public_key().raw)
            .map_err(|e| LogError::Client(format!("chain[1] key: {e}")))?;
        let precert_signer = matches!(issuer.extended_key_usage(), Ok(Some(e)) if e.value.other.iter().any(|o| o.to_id_string() == "1.3.6.1.4.1.11129.2.4.4"));
        let mut certs_after_leaf = chain[1..].to_vec();
        certs_after_leaf.extend(root_appended);
        let blob = tls::cert_list(&certs_after_leaf);
        let stored = Arc::new((blob.clone(), sha256(&blob)));
        let tail = Arc::new(Tail {
            issuer_key_hash: sha256(issuer.public_key().raw),
            issuer_key,
            precert_signer,
            stored,
        });
        let mut cache = self.verified_tails.lock().expect("poisoned");
        if cache.len() >= 1024 {
            cache.clear();
        }
        cache.insert(id, tail.clone());
        Ok(tail)
    }

    /// The writer thread: group commits, then tree update, then replies; STHs on schedule.
    fn run(self: Arc<Self>, mut conn: Connection, rx: mpsc::Receiver<Pending>) {
        let tick = (self.opts.mmd / 4).max(Duration::from_millis(5));
        loop {
            let first = match rx.recv_timeout(tick) {
                Ok(p) => Some(p),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.publish_if_due(&conn, true);
                    return;
                }
            };
            let mut batch: Vec<Pending> = first.into_iter().collect();
            while !batch.is_empty() && batch.len() < 4096 {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.commit(&mut conn, batch);
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
            })
            .collect();
        match store::append(conn, first, &rows) {
            Ok(()) => {
                {
                    let mut st = self.state.write().expect("poisoned");
                    for (i, p) in batch.iter().enumerate() {
                        st.tree.push(p.leaf_hash);
                        st.by_hash.insert(p.leaf_hash, first + i as u64);
                    }
                }
                for (i, p) in batch.into_iter().enumerate() {
                    let _ = p.reply.send(Ok(first + i as u64));
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

    pub(crate) fn published_size(&self) -> u64 {
        self.state.read().expect("poisoned").sth.tree_size
    }
}
