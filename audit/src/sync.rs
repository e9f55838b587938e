//! Following an RFC 6962 log (the embedded one or any remote one) into the [`LogIndex`].
//!
//! One sync: fetch the signed tree head and verify its signature with the log key; prove it
//! extends the last verified one (a smaller tree is a rollback, a different root for the same size
//! or a failed consistency proof is a fork, and nothing is stored); refuse it if the log cannot
//! have grown that fast; then fetch the new entries chunk by chunk, hash each chunk onto the
//! verified prefix (kept as a compact Merkle frontier, so memory is bounded by the chunk), prove
//! the chunk's root is a prefix of the signed root (`get-sth-consistency`), and commit the chunk's
//! leaf hashes, the entries that chain to this CA and the new verified prefix in one
//! transaction. A run is bounded by [`SyncLimits`]; it ends cleanly and the next one resumes.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyless_ca::ct;
use keyless_ca::der::{self, Tlv, read_all, read_tlv};
use keyless_ca::keys::{Hash as Digest, PublicKey, sha256, signature_oid_hash};
use keyless_ctlog::merkle::{self, Hash};
use x509_parser::prelude::*;

use crate::AuditError;
use crate::index::{Commit, IndexedCert, LogIndex};
use crate::record::{decode_extensions, hex, san_text, serial_hex};

/// What one sync did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncReport {
    /// Hex log id.
    pub log_id: String,
    /// Tree size verified before this sync (0 on the first).
    pub previous_size: u64,
    /// Tree size verified now.
    pub tree_size: u64,
    /// Entries fetched and hashed.
    pub new_entries: u64,
    /// New entries that chain to this CA.
    pub new_certificates: u64,
    /// The verified root, hex.
    pub root: String,
    /// The size of the signed tree head being followed (`tree_size` once complete).
    pub signed_size: u64,
    /// Why the run stopped before reaching `signed_size`; `None` when it did.
    pub stopped: Option<StopReason>,
}

/// Entries asked for per `get-entries` call (logs may return fewer).
const BATCH: u64 = 256;
/// Per-request timeout (default of [`SyncLimits::request_timeout`]).
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest `get-entries` response accepted.
const MAX_ENTRIES_BYTES: usize = 16 << 20;
/// Largest `get-sth` / `get-sth-consistency` response accepted.
const MAX_SMALL_BYTES: usize = 1 << 20;
/// Without a terminal, one progress line per this many entries.
const PROGRESS_EVERY: u64 = 10_000;
/// Precertificate Signing Certificate EKU (RFC 6962 §3.1).
const PRECERT_SIGNING_EKU: &str = "1.3.6.1.4.1.11129.2.4.4";

// ---------------------------------------------------------------------------------------------
// The TBS hash shared by records and log entries.

/// `tbs` re-encoded without the CT poison and SCT-list extensions (an extensions field left empty
/// is dropped), or `None` if it is not a DER TBSCertificate.
fn strip_ct_extensions(tbs: &[u8]) -> Option<Vec<u8>> {
    let (outer, rest) = read_tlv(tbs)?;
    if outer.tag != der::SEQUENCE || !rest.is_empty() {
        return None;
    }
    let poison = ct::oid_der(ct::POISON_OID);
    let sct_list = ct::oid_der(ct::SCT_LIST_OID);
    let mut parts: Vec<Vec<u8>> = Vec::new();
    for field in read_all(outer.content)? {
        if field.tag != 0xa3 {
            parts.push(field.raw.to_vec());
            continue;
        }
        let (list, rest) = read_tlv(field.content)?;
        if list.tag != der::SEQUENCE || !rest.is_empty() {
            return None;
        }
        let mut kept: Vec<&[u8]> = Vec::new();
        for ext in read_all(list.content)? {
            let (id, _) = read_tlv(ext.content)?;
            if id.raw != poison.as_slice() && id.raw != sct_list.as_slice() {
                kept.push(ext.raw);
            }
        }
        if !kept.is_empty() {
            parts.push(der::context(3, true, &der::seq(&kept)));
        }
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    Some(der::seq(&refs))
}

/// Hex SHA-256 of a DER TBSCertificate without its CT extensions (poison, SCT list): the value
/// an `intent` record carries, equal to [`tbs_sha256_of_certificate`] of the final certificate
/// and of its precertificate, and to the CT log entry's.
pub fn tbs_sha256(tbs_der: &[u8]) -> Result<String, AuditError> {
    let stripped =
        strip_ct_extensions(tbs_der).ok_or_else(|| AuditError::Setup("a TBSCertificate is not valid DER".into()))?;
    Ok(hex(&sha256(&stripped)))
}

/// The TBS of a DER certificate.
fn tbs_of(cert: &[u8]) -> Option<Tlv<'_>> {
    let (outer, _) = read_tlv(cert)?;
    if outer.tag != der::SEQUENCE {
        return None;
    }
    Some(read_tlv(outer.content)?.0)
}

/// Hex SHA-256 of a certificate's TBS with the CT poison and SCT-list extensions removed and the
/// rest re-encoded in order: a final certificate (which carries the SCT list) and the
/// precertificate entry a log holds for it (neither poison nor SCT list) give the same value.
pub fn tbs_sha256_of_certificate(der: &[u8]) -> Result<String, AuditError> {
    let tbs = tbs_of(der).ok_or_else(|| AuditError::Setup("the certificate is not DER".into()))?;
    tbs_sha256(tbs.raw).map_err(|_| AuditError::Setup("the certificate's TBS is not valid DER".into()))
}

// ---------------------------------------------------------------------------------------------
// RFC 6962 structures.

/// A TLS reader over a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn uint(&mut self, n: usize) -> Result<u64, String> {
        Ok(self.take(n)?.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64))
    }
    fn vec(&mut self, len_bytes: usize) -> Result<&'a [u8], String> {
        let n = self.uint(len_bytes)? as usize;
        self.take(n)
    }
    fn end(&self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(format!("{} trailing bytes", self.0.len()))
        }
    }
}

/// A `MerkleTreeLeaf`'s entry.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LeafEntry<'a> {
    /// `x509_entry`: the certificate.
    X509(&'a [u8]),
    /// `precert_entry`: the issuer's key hash and the TBS without the poison.
    Precert {
        /// SHA-256 of the issuing CA's SPKI.
        issuer_key_hash: [u8; 32],
        /// The TBSCertificate as the log holds it.
        tbs: &'a [u8],
    },
}

/// A parsed v1 `MerkleTreeLeaf` (timestamped entry).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Leaf<'a> {
    /// ms since the epoch.
    pub(crate) timestamp: u64,
    /// The entry.
    pub(crate) entry: LeafEntry<'a>,
}

/// Parses a `MerkleTreeLeaf` (RFC 6962 §3.4).
pub(crate) fn parse_leaf(input: &[u8]) -> Result<Leaf<'_>, String> {
    let mut r = Reader(input);
    let version = r.uint(1)?;
    let leaf_type = r.uint(1)?;
    if version != 0 || leaf_type != 0 {
        return Err(format!("unsupported leaf version {version} / type {leaf_type}"));
    }
    let timestamp = r.uint(8)?;
    let entry = match r.uint(2)? {
        0 => LeafEntry::X509(r.vec(3)?),
        1 => {
            let issuer_key_hash: [u8; 32] = r.take(32)?.try_into().map_err(|_| "truncated")?;
            LeafEntry::Precert {
                issuer_key_hash,
                tbs: r.vec(3)?,
            }
        }
        other => return Err(format!("unknown entry type {other}")),
    };
    r.vec(2)?; // CtExtensions
    r.end()?;
    Ok(Leaf { timestamp, entry })
}

/// `extra_data` of a precertificate entry: the precertificate and the chain after it.
fn parse_precert_extra(extra: &[u8]) -> Result<(&[u8], Vec<&[u8]>), String> {
    let mut r = Reader(extra);
    let precert = r.vec(3)?;
    let mut list = Reader(r.vec(3)?);
    r.end()?;
    let mut chain = Vec::new();
    while !list.0.is_empty() {
        chain.push(list.vec(3)?);
    }
    Ok((precert, chain))
}

// ---------------------------------------------------------------------------------------------
// Which entries are this CA's.

/// The issuing CA, as entries are matched against it (see [`read_entry`]).
pub struct IssuingCa {
    key: PublicKey,
    key_hash: [u8; 32],
    subject: Vec<u8>,
}

impl IssuingCa {
    /// The CA whose certificates a sync indexes: the first certificate of its chain (DER).
    pub fn from_chain(chain: &[Vec<u8>]) -> Result<IssuingCa, AuditError> {
        let first = chain
            .first()
            .ok_or_else(|| AuditError::Setup("the CA chain is empty".into()))?;
        let (_, ca) = X509Certificate::from_der(first)
            .map_err(|e| AuditError::Setup(format!("the issuing CA certificate does not parse: {e}")))?;
        let spki = ca.public_key().raw;
        Ok(IssuingCa {
            key: PublicKey::from_spki_der(spki)
                .map_err(|e| AuditError::Setup(format!("the issuing CA key is not usable: {e}")))?,
            key_hash: sha256(spki),
            subject: ca.subject().as_raw().to_vec(),
        })
    }

    /// The certificate's signature verifies with `key`.
    fn signed(key: &PublicKey, cert: &X509Certificate<'_>) -> bool {
        signature_oid_hash(&cert.signature_algorithm.algorithm.to_id_string())
            .is_some_and(|h| key.verify(h, cert.tbs_certificate.as_ref(), &cert.signature_value.data))
    }

    /// Whether an entry chains to this CA: precertificates by issuer key hash, with the
    /// precertificate in `extra_data` matching the leaf and signed by the CA key (directly or
    /// through a precertificate signing certificate it issued); X.509 entries by issuer name and
    /// signature.
    fn describe(&self, log_id: &str, index: u64, leaf: &Leaf<'_>, extra: &[u8]) -> Result<Option<IndexedCert>, String> {
        match &leaf.entry {
            LeafEntry::X509(cert_der) => {
                let Ok((_, cert)) = X509Certificate::from_der(cert_der) else {
                    return Ok(None);
                };
                if cert.issuer().as_raw() != self.subject.as_slice() || !Self::signed(&self.key, &cert) {
                    return Ok(None);
                }
                describe(&cert, log_id, index, "x509", leaf.timestamp).map(Some)
            }
            LeafEntry::Precert { issuer_key_hash, tbs } => {
                if *issuer_key_hash != self.key_hash {
                    return Ok(None);
                }
                self.check_precert(tbs, extra)?;
                let wrapped = wrap_tbs(tbs).ok_or("the precertificate TBS is not DER")?;
                let (_, cert) = X509Certificate::from_der(&wrapped)
                    .map_err(|e| format!("the precertificate TBS does not parse: {e}"))?;
                describe(&cert, log_id, index, "precert", leaf.timestamp).map(Some)
            }
        }
    }

    /// The precertificate in `extra_data` is this leaf's, and the CA key signed it.
    fn check_precert(&self, leaf_tbs: &[u8], extra: &[u8]) -> Result<(), String> {
        let (precert_der, chain) = parse_precert_extra(extra).map_err(|e| format!("extra_data is malformed: {e}"))?;
        let (_, precert) = X509Certificate::from_der(precert_der)
            .map_err(|e| format!("the precertificate in extra_data does not parse: {e}"))?;
        if strip_ct_extensions(precert.tbs_certificate.as_ref()) != strip_ct_extensions(leaf_tbs) {
            return Err("the precertificate in extra_data is not the one in the leaf".into());
        }
        if Self::signed(&self.key, &precert) {
            return Ok(());
        }
        // RFC 6962 §3.1: a Precertificate Signing Certificate issued by the CA may sign it.
        let signer = chain
            .first()
            .and_then(|d| X509Certificate::from_der(d).ok())
            .map(|(_, c)| c);
        if let Some(signer) = signer {
            let is_precert_signer = matches!(signer.extended_key_usage(),
                Ok(Some(e)) if e.value.other.iter().any(|o| o.to_id_string() == PRECERT_SIGNING_EKU));
            let key = PublicKey::from_spki_der(signer.public_key().raw);
            if is_precert_signer
                && signer.issuer().as_raw() == self.subject.as_slice()
                && Self::signed(&self.key, &signer)
                && key.is_ok_and(|k| Self::signed(&k, &precert))
            {
                return Ok(());
            }
        }
        Err("the precertificate names this CA's key but is not signed by it".into())
    }
}

/// A TBS wrapped as a certificate with an empty signature, so x509-parser can decode it.
pub(crate) fn wrap_tbs(tbs: &[u8]) -> Option<Vec<u8>> {
    let (outer, _) = read_tlv(tbs)?;
    let fields = read_all(outer.content)?;
    let alg = if fields.first()?.tag == 0xa0 {
        fields.get(2)?
    } else {
        fields.get(1)?
    };
    Some(der::seq(&[tbs, alg.raw, &[der::BIT_STRING, 1, 0]]))
}

/// The index row of a (pre)certificate.
fn describe(
    cert: &X509Certificate<'_>,
    log_id: &str,
    index: u64,
    entry_type: &str,
    timestamp: u64,
) -> Result<IndexedCert, String> {
    let san = san_text(cert);
    let mut extensions = decode_extensions(cert);
    for e in &mut extensions {
        if e.oid == "2.5.29.17" {
            e.value = san.clone();
        }
    }
    let ext = |oid: &str| extensions.iter().find(|e| e.oid == oid).map(|e| e.value.clone());
    let issuer = ext("1.3.6.1.4.1.57264.1.8")
        .or_else(|| ext("1.3.6.1.4.1.57264.1.1"))
        .unwrap_or_default();
    Ok(IndexedCert {
        log_id: log_id.to_string(),
        leaf_index: index,
        entry_type: entry_type.to_string(),
        timestamp,
        serial: serial_hex(cert.raw_serial()),
        san,
        issuer,
        tbs_sha256: tbs_sha256(cert.tbs_certificate.as_ref()).map_err(|e| e.to_string())?,
        extensions,
        not_before: cert.validity().not_before.timestamp(),
    })
}

// ---------------------------------------------------------------------------------------------
// HTTP.

/// A `get-sth` answer as the log sent it; [`SthJson::verify`] turns it into a [`Sth`].
#[derive(serde::Deserialize)]
pub struct SthJson {
    /// Entries in the tree.
    pub tree_size: u64,
    /// ms since the epoch.
    pub timestamp: u64,
    /// Base64 root hash.
    pub sha256_root_hash: String,
    /// Base64 TLS `DigitallySigned`.
    pub tree_head_signature: String,
}

#[derive(serde::Deserialize)]
struct ConsistencyJson {
    consistency: Vec<String>,
}

/// A `get-entries` answer as the log sent it.
#[derive(serde::Deserialize)]
pub struct EntriesJson {
    /// The entries, from the first asked for (a log may send fewer than asked).
    pub entries: Vec<EntryJson>,
}

/// One `get-entries` entry as the log sent it; [`read_entry`] reads it.
#[derive(serde::Deserialize)]
pub struct EntryJson {
    /// Base64 `MerkleTreeLeaf`.
    pub leaf_input: String,
    /// Base64 `extra_data` (the chain; for a precertificate, the precertificate first).
    pub extra_data: String,
}

/// A signed tree head whose signature verified with the log key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sth {
    /// Entries in the tree.
    pub tree_size: u64,
    /// ms since the epoch.
    pub timestamp: u64,
    /// The Merkle root.
    pub root: Hash,
    /// The TLS `DigitallySigned` the log sent.
    pub signature: Vec<u8>,
}

// The log's answers are read by these public functions, which `sync` calls on every answer: the
// log is untrusted, so the fuzz tests (`tests/tests/fuzz.rs`) feed them hostile answers.

impl SthJson {
    /// Decodes the tree head and verifies its signature with the log `key`; `log` names the log
    /// in errors.
    pub fn verify(&self, key: &PublicKey, log: &str) -> Result<Sth, AuditError> {
        let root: Hash = STANDARD
            .decode(&self.sha256_root_hash)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| AuditError::Log("get-sth: sha256_root_hash is not a base64 32-byte hash".into()))?;
        let signature = STANDARD
            .decode(&self.tree_head_signature)
            .map_err(|_| AuditError::Log("get-sth: tree_head_signature is not base64".into()))?;
        let (hash_alg, sig_alg, sig) = ct::Sct::parse_digitally_signed(&signature)
            .ok_or_else(|| AuditError::Log("get-sth: tree_head_signature is not a TLS DigitallySigned".into()))?;
        if (hash_alg, sig_alg) != (ct::HASH_SHA256, ct::SIG_ECDSA) {
            return Err(AuditError::Log(format!(
                "get-sth: the tree head is signed with hash {hash_alg} / signature {sig_alg}, not SHA-256 / ECDSA"
            )));
        }
        let data = keyless_ctlog::tls::tree_head_signed_data(self.timestamp, self.tree_size, &root);
        if !key.verify(Digest::Sha256, &data, &sig) {
            return Err(AuditError::Log(format!(
                "the tree head of size {} from {log} does not verify with the log key",
                self.tree_size
            )));
        }
        Ok(Sth {
            tree_size: self.tree_size,
            timestamp: self.timestamp,
            root,
            signature,
        })
    }
}

/// What a sync makes of entry `at` of log `log_id` (hex): its Merkle leaf hash, and its index
/// row if it is a certificate of `ca`. An entry that is not a `MerkleTreeLeaf`, or that names
/// `ca` without verifying, is still hashed (it is in the tree) but not indexed, with a warning.
/// Only base64 that does not decode is an error (naming the field).
pub fn read_entry(
    ca: &IssuingCa,
    log_id: &str,
    at: u64,
    entry: &EntryJson,
) -> Result<(Hash, Option<IndexedCert>), &'static str> {
    let leaf_input = STANDARD.decode(&entry.leaf_input).map_err(|_| "leaf_input")?;
    let extra = STANDARD.decode(&entry.extra_data).map_err(|_| "extra_data")?;
    let h = merkle::leaf_hash(&leaf_input);
    let cert = match parse_leaf(&leaf_input) {
        Err(why) => {
            tracing::warn!(log_id, entry = at, %why, "unparseable CT log entry");
            None
        }
        Ok(leaf) => match ca.describe(log_id, at, &leaf, &extra) {
            Ok(cert) => cert,
            Err(why) => {
                tracing::warn!(
                    log_id, entry = at, %why,
                    "CT log entry names this CA but does not verify; not indexed"
                );
                None
            }
        },
    };
    Ok((h, cert))
}

struct LogClient {
    http: reqwest::Client,
    base: String,
}

impl LogClient {
    fn new(url: &str, timeout: Duration) -> Result<LogClient, AuditError> {
        let base = url.trim_end_matches('/').to_string();
        let base = base.strip_suffix("/ct/v1").unwrap_or(&base).to_string();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("keyless-audit/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AuditError::Setup(format!("HTTP client: {e}")))?;
        Ok(LogClient { http, base })
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str, cap: usize) -> Result<T, AuditError> {
        let url = format!("{}/ct/v1/{path}", self.base);
        let mut resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| AuditError::Unreachable(format!("GET {url}: {e}")))?;
        let status = resp.status();
        if resp.content_length().is_some_and(|n| n > cap as u64) {
            return Err(AuditError::Log(format!(
                "GET {url}: the response is larger than {cap} bytes"
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| AuditError::Unreachable(format!("GET {url}: {e}")))?
        {
            if body.len() + chunk.len() > cap {
                return Err(AuditError::Log(format!(
                    "GET {url}: the response is larger than {cap} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            let msg = format!("GET {url}: {status}: {}", text.trim());
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                AuditError::Unreachable(msg)
            } else {
                AuditError::Log(msg)
            });
        }
        serde_json::from_slice(&body).map_err(|e| AuditError::Log(format!("GET {url}: not the RFC 6962 answer: {e}")))
    }

    async fn sth(&self, key: &PublicKey) -> Result<Sth, AuditError> {
        let j: SthJson = self.get("get-sth", MAX_SMALL_BYTES).await?;
        j.verify(key, &self.base)
    }

    async fn consistency(&self, first: u64, second: u64) -> Result<Vec<Hash>, AuditError> {
        let j: ConsistencyJson = self
            .get(
                &format!("get-sth-consistency?first={first}&second={second}"),
                MAX_SMALL_BYTES,
            )
            .await?;
        j.consistency
            .iter()
            .map(|h| STANDARD.decode(h).ok().and_then(|h| h.try_into().ok()))
            .collect::<Option<Vec<Hash>>>()
            .ok_or_else(|| AuditError::Log("get-sth-consistency: a proof node is not a base64 32-byte hash".into()))
    }

    async fn entries(&self, start: u64, end: u64) -> Result<Vec<EntryJson>, AuditError> {
        let j: EntriesJson = self
            .get(&format!("get-entries?start={start}&end={end}"), MAX_ENTRIES_BYTES)
            .await?;
        Ok(j.entries)
    }
}

// ---------------------------------------------------------------------------------------------
// Progress.

struct Progress {
    enabled: bool,
    tty: bool,
    last: u64,
}

impl Progress {
    fn new(enabled: bool, start: u64) -> Progress {
        use std::io::IsTerminal as _;
        Progress {
            enabled,
            tty: std::io::stderr().is_terminal(),
            last: start,
        }
    }

    fn line(done: u64, total: u64) -> String {
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        format!("synced {done}/{total} entries ({pct}%)")
    }

    fn update(&mut self, done: u64, total: u64) {
        if !self.enabled {
            return;
        }
        if self.tty {
            eprint!("\r{}", Self::line(done, total));
        } else if done / PROGRESS_EVERY > self.last / PROGRESS_EVERY {
            eprintln!("{}", Self::line(done, total));
        }
        self.last = done;
    }

    fn finish(&self, started: u64, total: u64) {
        if self.enabled && self.tty && total > started {
            eprintln!();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sync.

pub(crate) fn unhex32(s: &str) -> Option<Hash> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The right edge of a Merkle tree: the roots of its perfect subtrees, largest first (one per
/// set bit of the size). Enough to append leaves and compute the root, in O(log n) memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// A frontier as stored; `None` if `nodes` cannot be the frontier of `size` leaves.
    pub(crate) fn from_parts(size: u64, nodes: Vec<Hash>) -> Option<Frontier> {
        (nodes.len() == size.count_ones() as usize).then_some(Frontier { size, nodes })
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    pub(crate) fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut n = self.size;
        while n & 1 == 1 {
            // A complete subtree of the same height sits on the left: merge.
            let Some(left) = self.nodes.pop() else { break };
            h = merkle::node_hash(&left, &h);
            n >>= 1;
        }
        self.nodes.push(h);
        self.size += 1;
    }

    /// RFC 6962 MTH of the leaves pushed so far.
    pub(crate) fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(last) = nodes.next() else {
            return merkle::empty_root();
        };
        nodes.fold(*last, |right, left| merkle::node_hash(left, &right))
    }
}

/// What bounds one `audit sync` run, and what it believes about a log's growth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncLimits {
    /// Entries fetched in one run at most; the run ends cleanly with what it verified and the
    /// next run resumes there.
    pub max_entries: u64,
    /// Time one run spends at most (checked between requests; a request in flight when it
    /// passes is abandoned), likewise ending cleanly.
    pub max_duration: Duration,
    /// Entries per verified chunk: fetched, proven consistent with the signed tree head, and
    /// committed together. Memory is bounded by this.
    pub chunk_entries: u64,
    /// The fastest growth believed, entries per second: a tree head claiming more since the
    /// last verified one (or, on a first sync, since entry 0's timestamp) is refused.
    pub max_rate: u64,
    /// Growth always believed on top of `max_rate` (entries).
    pub slack_entries: u64,
    /// Per-request timeout.
    pub request_timeout: Duration,
}

impl Default for SyncLimits {
    fn default() -> Self {
        SyncLimits {
            max_entries: 1_000_000,
            max_duration: Duration::from_secs(600),
            chunk_entries: 8192,
            max_rate: 10_000,
            slack_entries: 100_000,
            request_timeout: TIMEOUT,
        }
    }
}

/// A tree head dated further ahead of the local clock than this is refused.
const MAX_CLOCK_SKEW_MS: u64 = 3_600_000;
/// A previous tree head is taken to describe the log no earlier than this before it was
/// verified (the usual CT maximum merge delay), whatever its own timestamp says.
const MAX_STH_AGE_MS: u64 = 86_400_000;

/// Why a run stopped before the signed tree head was fully fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `SyncLimits::max_entries` reached.
    EntryLimit,
    /// `SyncLimits::max_duration` reached.
    TimeLimit,
}

/// Refuses a tree head that grew faster than `limits` believe possible since `since_ms` (local
/// clock), naming the numbers.
fn check_growth(
    log: &str,
    from: u64,
    to: u64,
    since_ms: u64,
    since_what: &str,
    now_ms: u64,
    limits: &SyncLimits,
) -> Result<(), AuditError> {
    let growth = to.saturating_sub(from);
    let elapsed_s = now_ms.saturating_sub(since_ms).div_ceil(1000);
    let allowed = limits
        .max_rate
        .saturating_mul(elapsed_s)
        .saturating_add(limits.slack_entries);
    if growth > allowed {
        return Err(AuditError::Log(format!(
            "implausible tree head: log {log} claims {to} entries, {growth} more than {from} {since_what} {elapsed_s} s ago; at most {} entries/s (+{}) allows {allowed}: refused",
            limits.max_rate, limits.slack_entries
        )));
    }
    Ok(())
}

/// The error of a run that already committed progress, saying so.
fn kept(e: AuditError, verified: u64, committed: u64) -> AuditError {
    if committed == 0 {
        return e;
    }
    let note = |m: String| {
        format!(
            "{m} (the {committed} entries verified before this are kept: the index covers {verified}, and the next sync resumes there)"
        )
    };
    match e {
        AuditError::Setup(m) => AuditError::Setup(note(m)),
        AuditError::Storage(m) => AuditError::Storage(note(m)),
        AuditError::Unavailable(m) => AuditError::Unavailable(note(m)),
        AuditError::Log(m) => AuditError::Log(note(m)),
        AuditError::Unreachable(m) => AuditError::Unreachable(note(m)),
    }
}

/// Follows the log at `log_url` (base URL, without `/ct/v1`) whose DER public key is
/// `log_key_spki` from what `index` verified to its current tree head, indexing the certificates
/// `ca_chain_der` (issuing CA first) issued, with the default [`SyncLimits`].
pub async fn sync(
    index: &LogIndex,
    log_url: &str,
    log_key_spki: &[u8],
    ca_chain_der: &[Vec<u8>],
    progress: bool,
) -> Result<SyncReport, AuditError> {
    sync_with_limits(
        index,
        log_url,
        log_key_spki,
        ca_chain_der,
        progress,
        &SyncLimits::default(),
    )
    .await
}

/// [`sync`] within `limits`. The tree head must verify with the log key, extend the last one
/// verified (else: rollback or fork, nothing stored) and be plausible; then entries are fetched
/// in chunks, each hashed onto the verified prefix, proven consistent with the signed tree head
/// (`get-sth-consistency`) and committed with its certificates, so a run that stops (a limit,
/// a stalled or lying log) keeps everything it verified and the next run resumes there.
pub async fn sync_with_limits(
    index: &LogIndex,
    log_url: &str,
    log_key_spki: &[u8],
    ca_chain_der: &[Vec<u8>],
    progress: bool,
    limits: &SyncLimits,
) -> Result<SyncReport, AuditError> {
    let started = std::time::Instant::now();
    let deadline = started + limits.max_duration;
    let ca = IssuingCa::from_chain(ca_chain_der)?;
    let key = PublicKey::from_spki_der(log_key_spki)
        .map_err(|e| AuditError::Setup(format!("the log's public key is not usable: {e}")))?;
    let log_id = hex(&sha256(log_key_spki));
    let ca_key_sha256 = hex(&ca.key_hash);
    index.check_ca(&ca_key_sha256)?;
    let client = LogClient::new(log_url, limits.request_timeout)?;
    let sth = client.sth(&key).await?;
    let now = crate::store::now_ms();
    if sth.timestamp > now.saturating_add(MAX_CLOCK_SKEW_MS) {
        return Err(AuditError::Log(format!(
            "implausible tree head: log {} dates its tree head of {} entries {} ms, {} s ahead of this clock: refused",
            client.base,
            sth.tree_size,
            sth.timestamp,
            (sth.timestamp - now) / 1000
        )));
    }
    let stored = index.progress(&log_id)?;

    // The new tree head must extend the last signed one verified, and be believable.
    if let Some(p) = &stored {
        let prev = &p.signed;
        if sth.tree_size < prev.tree_size {
            return Err(AuditError::Log(format!(
                "log {} presents a smaller tree ({} entries) than it did before ({} entries, verified at {} ms): rollback",
                client.base, sth.tree_size, prev.tree_size, prev.verified_at
            )));
        }
        if sth.tree_size == prev.tree_size && sth.root != prev.root {
            return Err(AuditError::Log(format!(
                "log {} presents two different roots for the tree of {} entries ({} before, {} now): the log forked",
                client.base,
                sth.tree_size,
                hex(&prev.root),
                hex(&sth.root)
            )));
        }
        if sth.tree_size > prev.tree_size {
            let since = prev.timestamp.max(prev.verified_at.saturating_sub(MAX_STH_AGE_MS));
            check_growth(
                &client.base,
                prev.tree_size,
                sth.tree_size,
                since,
                "in the tree head verified",
                now,
                limits,
            )?;
            if prev.tree_size > 0 {
                let proof = client.consistency(prev.tree_size, sth.tree_size).await?;
                if !merkle::verify_consistency(prev.tree_size, sth.tree_size, &prev.root, &sth.root, &proof) {
                    return Err(AuditError::Log(format!(
                        "inconsistent tree heads: log {} does not prove that its tree of {} entries (root {}) extends the tree of {} entries (root {}) verified at {} ms: the log forked or rewrote its history",
                        client.base,
                        sth.tree_size,
                        hex(&sth.root),
                        prev.tree_size,
                        hex(&prev.root),
                        prev.verified_at
                    )));
                }
            }
        }
    } else if sth.tree_size > limits.slack_entries {
        // A first sync: the log cannot have grown faster than the ceiling since its first entry.
        let first = client.entries(0, 0).await?;
        let leaf = first
            .first()
            .and_then(|e| STANDARD.decode(&e.leaf_input).ok())
            .ok_or_else(|| AuditError::Log(format!("log {} does not serve entry 0", client.base)))?;
        let t0 = parse_leaf(&leaf)
            .map_err(|why| {
                AuditError::Log(format!(
                    "entry 0 of log {} is not a MerkleTreeLeaf ({why}): its age, and so its size, cannot be judged",
                    client.base
                ))
            })?
            .timestamp;
        if t0 > now.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(AuditError::Log(format!(
                "implausible log: entry 0 of log {} is dated {t0} ms, ahead of this clock",
                client.base
            )));
        }
        check_growth(
            &client.base,
            0,
            sth.tree_size,
            t0,
            "since entry 0 was logged",
            now,
            limits,
        )?;
    }

    // The verified prefix: its size, root and frontier, checked against each other.
    let previous = stored.as_ref().map(|p| p.prefix.clone());
    let first = previous.as_ref().map_or(0, |p| p.tree_size);
    let damaged = || {
        AuditError::Storage(format!(
            "the index's leaves of log {log_id} do not match its last verified tree head: the index was damaged"
        ))
    };
    let mut frontier = match stored.as_ref().and_then(|p| p.frontier.clone()) {
        Some(nodes) => Frontier::from_parts(first, nodes).ok_or_else(damaged)?,
        None => {
            // An index from before frontiers were kept: rebuilt by streaming its leaves.
            let mut f = Frontier::default();
            index.for_each_leaf(&log_id, |h| f.push(h))?;
            f
        }
    };
    let previous_root = previous
        .as_ref()
        .map(|p| unhex32(&p.root).ok_or_else(damaged))
        .transpose()?
        .unwrap_or_else(merkle::empty_root);
    if frontier.size() != first || frontier.root() != previous_root {
        return Err(damaged());
    }

    let signed = crate::index::SignedHead {
        tree_size: sth.tree_size,
        root: sth.root,
        timestamp: sth.timestamp,
        signature: sth.signature.clone(),
        verified_at: now,
    };
    // An older tree head of an unchanged tree adds nothing; keep the newer one already stored.
    let signed = match &stored {
        Some(p) if p.signed.tree_size == sth.tree_size && sth.timestamp < p.signed.timestamp => p.signed.clone(),
        _ => signed,
    };
    let mut report = SyncReport {
        log_id: log_id.clone(),
        previous_size: first,
        tree_size: first,
        signed_size: signed.tree_size,
        new_entries: 0,
        new_certificates: 0,
        root: hex(&previous_root),
        stopped: None,
    };
    let mut current = previous;
    let budget_end = first.saturating_add(limits.max_entries).min(signed.tree_size);
    let mut meter = Progress::new(progress, first);
    let url = client.base.clone();
    loop {
        let next = frontier.size();
        // One chunk: [next, end), cut short by the deadline.
        let chunk_end = next.saturating_add(limits.chunk_entries.max(1)).min(budget_end);
        let mut chunk = frontier.clone();
        let mut leaves = Vec::new();
        let mut certificates = Vec::new();
        let mut out_of_time = false;
        while chunk.size() < chunk_end {
            let pos = chunk.size();
            let end = (pos + BATCH).min(chunk_end) - 1;
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            let entries = match tokio::time::timeout(remaining, client.entries(pos, end)).await {
                Err(_) => {
                    out_of_time = true;
                    break;
                }
                Ok(r) => r.map_err(|e| kept(e, next, next - first))?,
            };
            if entries.is_empty() {
                return Err(kept(
                    AuditError::Log(format!(
                        "log {url} returned no entries from {pos}, although its tree head has {}",
                        signed.tree_size
                    )),
                    next,
                    next - first,
                ));
            }
            for e in entries.iter().take((end - pos + 1) as usize) {
                let at = chunk.size();
                let (h, cert) = read_entry(&ca, &log_id, at, e).map_err(|what| {
                    kept(
                        AuditError::Log(format!("entry {at}: {what} is not base64")),
                        next,
                        next - first,
                    )
                })?;
                chunk.push(h);
                leaves.push(h);
                certificates.extend(cert);
            }
            meter.update(chunk.size(), signed.tree_size);
            if std::time::Instant::now() >= deadline {
                out_of_time = true;
                break;
            }
        }

        // The chunk's root must be the signed root, or a prefix of it by a consistency proof.
        let size = chunk.size();
        let root = chunk.root();
        if size == signed.tree_size {
            if root != signed.root {
                return Err(kept(
                    AuditError::Log(format!(
                        "the entries log {url} served hash to root {}, but its signed tree head of {} entries says {}",
                        hex(&root),
                        signed.tree_size,
                        hex(&signed.root)
                    )),
                    next,
                    next - first,
                ));
            }
        } else if size > next && size > 0 {
            let proof = client
                .consistency(size, signed.tree_size)
                .await
                .map_err(|e| kept(e, next, next - first))?;
            if !merkle::verify_consistency(size, signed.tree_size, &root, &signed.root, &proof) {
                return Err(kept(
                    AuditError::Log(format!(
                        "the entries {next} to {} log {url} served hash to root {}, which its signed tree head of {} entries does not extend (consistency proof rejected)",
                        size - 1,
                        hex(&root),
                        signed.tree_size
                    )),
                    next,
                    next - first,
                ));
            }
        }

        let complete = size == signed.tree_size;
        let prefix = crate::index::VerifiedSth {
            log_id: log_id.clone(),
            url: url.clone(),
            tree_size: size,
            root: hex(&root),
            // Until the signed tree head is complete, the last complete one still describes
            // what the index covers.
            timestamp: if complete {
                signed.timestamp
            } else {
                current.as_ref().map_or(0, |p| p.timestamp)
            },
            verified_at: crate::store::now_ms(),
            signed_size: signed.tree_size,
        };
        // The signature kept with `timestamp`: the new tree head's once complete, else the last
        // complete one's (none before a first sync completes).
        let (signature, signed_ref): (&[u8], Option<&crate::index::SignedHead>) = if complete {
            (&signed.signature, None)
        } else {
            (stored.as_ref().map_or(&[][..], |p| &p.prefix_signature), Some(&signed))
        };
        index
            .commit(Commit {
                ca_key_sha256: &ca_key_sha256,
                previous: current.as_ref(),
                sth: &prefix,
                signature,
                signed: signed_ref,
                frontier: Some(chunk.nodes()),
                leaves: &leaves,
                certificates: &certificates,
            })
            .map_err(|e| kept(e, next, next - first))?;
        report.tree_size = size;
        report.root = prefix.root.clone();
        report.new_entries += leaves.len() as u64;
        report.new_certificates += certificates.len() as u64;
        current = Some(prefix);
        frontier = chunk;
        if complete {
            break;
        }
        if out_of_time || std::time::Instant::now() >= deadline {
            report.stopped = Some(StopReason::TimeLimit);
            break;
        }
        if size >= budget_end {
            report.stopped = Some(StopReason::EntryLimit);
            break;
        }
    }
    meter.finish(first, signed.tree_size);
    Ok(report)
}

// ---------------------------------------------------------------------------------------------

/// Test fixtures shared by the crate's unit tests: a CA built with the CA crate's ceremony, leaves
/// shaped like the pipeline's, and an RFC 6962 log served over loopback HTTP.
#[cfg(test)]
pub(crate) mod testkit {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, SystemTime};

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use keyless_ca::ceremony::{self, CaNames};
    use keyless_ca::der;
    use keyless_ca::keys::sha256;
    use keyless_ca::{SignatureAlgorithm, Signer, SoftwareSigner, ct, profile};
    use keyless_ctlog::merkle::{self, Tree};
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
                ceremony::intermediate_certificate(&root, &root_der, issuing.public_key_spki(), &names, year, now)
                    .unwrap();
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
                serial: crate::record::serial_hex(&serial),
            }
        }

        /// The log entry of a precertificate this CA signed.
        pub(crate) fn precert_entry(&self, leaf: &TestLeaf, timestamp: u64) -> (Vec<u8>, Vec<u8>) {
            precert_entry(timestamp, &self.key_hash(), &leaf.log_tbs, &leaf.precert, &self.chain())
        }
    }

    fn u24(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(b);
    }

    fn cert_list(chain: &[Vec<u8>]) -> Vec<u8> {
        let mut inner = Vec::new();
        for c in chain {
            u24(&mut inner, c);
        }
        let mut out = Vec::new();
        u24(&mut out, &inner);
        out
    }

    /// `(leaf_input, extra_data)` of a precertificate entry.
    pub(crate) fn precert_entry(
        timestamp: u64,
        issuer_key_hash: &[u8; 32],
        tbs: &[u8],
        precert: &[u8],
        chain: &[Vec<u8>],
    ) -> (Vec<u8>, Vec<u8>) {
        let mut leaf = vec![0, 0];
        leaf.extend_from_slice(&timestamp.to_be_bytes());
        leaf.extend_from_slice(&[0, 1]);
        leaf.extend_from_slice(issuer_key_hash);
        u24(&mut leaf, tbs);
        leaf.extend_from_slice(&[0, 0]);
        let mut extra = Vec::new();
        u24(&mut extra, precert);
        extra.extend(cert_list(chain));
        (leaf, extra)
    }

    /// `(leaf_input, extra_data)` of an X.509 entry.
    pub(crate) fn x509_entry(timestamp: u64, cert: &[u8], chain: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>) {
        let mut leaf = vec![0, 0];
        leaf.extend_from_slice(&timestamp.to_be_bytes());
        leaf.extend_from_slice(&[0, 0]);
        u24(&mut leaf, cert);
        leaf.extend_from_slice(&[0, 0]);
        (leaf, cert_list(chain))
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
                let data = keyless_ctlog::tls::tree_head_signed_data(state.sth_timestamp, size, &root);
                let sig = state.key.sign(&data).unwrap();
                let mut ds = vec![4, 3];
                ds.extend_from_slice(&(sig.len() as u16).to_be_bytes());
                ds.extend_from_slice(&sig);
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
        super::tbs_of(cert).unwrap().raw.to_vec()
    }

    /// A fresh P-256 log key.
    pub(crate) fn log_key() -> Arc<SoftwareSigner> {
        Arc::new(SoftwareSigner::generate(SignatureAlgorithm::EcdsaP256Sha256).unwrap().0)
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use super::*;
    use keyless_ca::Signer as _;

    const ISSUER: &str = "https://issuer.example";

    #[test]
    fn final_certificate_and_logged_precertificate_hash_alike() {
        let ca = TestCa::new("Audit Test CA");
        let leaf = ca.leaf("alice@example.com", ISSUER);
        let from_final = tbs_sha256_of_certificate(&leaf.final_cert).unwrap();
        assert_eq!(tbs_sha256_of_certificate(&leaf.precert).unwrap(), from_final);
        assert_eq!(tbs_sha256(&leaf.log_tbs).unwrap(), from_final);
        // The log's TBS is the embedded log's own rebuild: the precertificate TBS minus the poison.
        let rebuilt =
            der::tbs_without_extension(tbs_of(&leaf.precert).unwrap().raw, &ct::oid_der(ct::POISON_OID)).unwrap();
        assert_eq!(rebuilt, leaf.log_tbs);
        assert_eq!(tbs_sha256(&rebuilt).unwrap(), from_final);
        // Without CT extensions nothing changes: the hash is the plain TBS hash.
        assert_eq!(from_final, hex(&sha256(&leaf.log_tbs)));
        // Another leaf, another hash; a CA certificate hashes its TBS as is.
        let other = ca.leaf("alice@example.com", ISSUER);
        assert_ne!(tbs_sha256_of_certificate(&other.final_cert).unwrap(), from_final);
        assert_eq!(
            tbs_sha256_of_certificate(&ca.issuing_der).unwrap(),
            hex(&sha256(tbs_of(&ca.issuing_der).unwrap().raw))
        );
        assert!(tbs_sha256_of_certificate(b"\x30\x03\x02\x01").is_err());
        assert!(tbs_sha256_of_certificate(b"not DER").is_err());
    }

    #[test]
    fn a_tbs_with_only_ct_extensions_loses_its_extensions_field() {
        let tbs = der::seq(&[
            &der::small_integer(5),
            &der::context(
                3,
                true,
                &der::seq(&[&keyless_ca::profile::extension(ct::POISON_OID, true, &[5, 0])]),
            ),
        ]);
        assert_eq!(strip_ct_extensions(&tbs).unwrap(), der::seq(&[&der::small_integer(5)]));
        let empty = der::seq(&[&der::small_integer(5), &der::context(3, true, &der::seq(&[]))]);
        assert_eq!(strip_ct_extensions(&empty), strip_ct_extensions(&tbs));
    }

    #[test]
    fn parses_merkle_tree_leaves() {
        let ca = TestCa::new("Audit Test CA");
        let leaf = ca.leaf("bob@example.com", ISSUER);
        let (input, extra) = ca.precert_entry(&leaf, 42);
        assert_eq!(
            parse_leaf(&input).unwrap(),
            Leaf {
                timestamp: 42,
                entry: LeafEntry::Precert {
                    issuer_key_hash: ca.key_hash(),
                    tbs: &leaf.log_tbs
                }
            }
        );
        let (precert, chain) = parse_precert_extra(&extra).unwrap();
        assert_eq!(precert, leaf.precert.as_slice());
        assert_eq!(chain, [ca.issuing_der.as_slice(), ca.root_der.as_slice()]);
        let (input, _) = x509_entry(7, &leaf.final_cert, &ca.chain());
        assert_eq!(
            parse_leaf(&input).unwrap(),
            Leaf {
                timestamp: 7,
                entry: LeafEntry::X509(&leaf.final_cert)
            }
        );
        let mut trailing = input.clone();
        trailing.push(0);
        assert!(parse_leaf(&trailing).unwrap_err().contains("trailing"));
        assert!(parse_leaf(&input[..input.len() - 5]).is_err());
        let mut v2 = input.clone();
        v2[0] = 1;
        assert!(parse_leaf(&v2).is_err());
        let mut kind = input.clone();
        kind[11] = 2;
        assert!(parse_leaf(&kind).unwrap_err().contains("entry type"));
    }

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

    #[test]
    fn progress_lines() {
        assert_eq!(Progress::line(256, 1024), "synced 256/1024 entries (25%)");
        assert_eq!(Progress::line(0, 0), "synced 0/0 entries (100%)");
    }

    #[test]
    fn the_frontier_computes_the_trees_root() {
        let mut tree = keyless_ctlog::merkle::Tree::default();
        let mut frontier = Frontier::default();
        assert_eq!(frontier.root(), merkle::empty_root());
        for i in 0..70u32 {
            let h = merkle::leaf_hash(&i.to_be_bytes());
            tree.push(h);
            frontier.push(h);
            assert_eq!(Some(frontier.root()), tree.root(tree.size()), "size {}", i + 1);
            assert_eq!(frontier.nodes().len(), (i + 1).count_ones() as usize);
        }
        let again = Frontier::from_parts(frontier.size(), frontier.nodes().to_vec()).unwrap();
        assert_eq!(again, frontier);
        assert!(
            Frontier::from_parts(70, vec![[0; 32]]).is_none(),
            "70 has three set bits"
        );
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
        let hour_ago = crate::store::now_ms() - 3_600_000;
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
            s.sth_timestamp = crate::store::now_ms() + 86_400_000;
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
        log.add(vec![ca.precert_entry(&more, crate::store::now_ms())]);
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
        conn.execute_batch(
            "UPDATE logs SET frontier = NULL; UPDATE leaves SET hash = zeroblob(32) WHERE leaf_index = 3",
        )
        .unwrap();
        drop(conn);
        let err = sync(&index, &log.url, &log.spki(), &ca.chain(), false)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
    }
}
