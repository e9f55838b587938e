//! Following an RFC 6962 log (the embedded one or any remote one) into the [`LogIndex`].
//!
//! One sync: fetch the signed tree head and verify its signature with the log key; prove it
//! extends the last verified one (a smaller tree is a rollback, a different root for the same size
//! or a failed consistency proof is a fork, and nothing is stored); refuse it if the log cannot
//! have grown that fast (`head`); then fetch the new entries chunk by chunk, hash each chunk onto
//! the verified prefix (kept as a compact Merkle frontier, so memory is bounded by
//! the chunk), prove the chunk's root is a prefix of the signed root (`get-sth-consistency`), and
//! commit the chunk's leaf hashes, the entries that chain to this CA (`entries`) and the new
//! verified prefix in one transaction. A run is bounded by [`SyncLimits`]; it ends cleanly and the
//! next one resumes.
//!
//! The log is reached through `keyless_ctlog::client::LogClient` and read through
//! `keyless_ctlog::wire`, the same code the CA's submitter uses.

use std::time::{Duration, Instant};

use keyless_ca::keys::{PublicKey, sha256};
use keyless_ctlog::client::{ClientOptions, LogClient};
use keyless_ctlog::merkle::{self, Hash};

pub use self::entries::{IssuingCa, read_entry};
use self::frontier::Frontier;
use self::progress::Progress;
use crate::AuditError;
use crate::hex::{hex, unhex32};
use crate::index::{Commit, IndexedCert, LogIndex, LogProgress, SignedHead, VerifiedSth};

mod entries;
mod frontier;
mod head;
mod progress;
#[cfg(test)]
mod tests;

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

/// Why a run stopped before the signed tree head was fully fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `SyncLimits::max_entries` reached.
    EntryLimit,
    /// `SyncLimits::max_duration` reached.
    TimeLimit,
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
    let deadline = Instant::now() + limits.max_duration;
    let ca = IssuingCa::from_chain(ca_chain_der)?;
    let key = PublicKey::from_spki_der(log_key_spki)
        .map_err(|e| AuditError::Setup(format!("the log's public key is not usable: {e}")))?;
    let log_id = hex(&sha256(log_key_spki));
    let ca_key_sha256 = hex(&ca.key_hash);
    index.check_ca(&ca_key_sha256)?;
    let options = ClientOptions {
        timeout: limits.request_timeout,
        connect_timeout: limits.request_timeout,
        follow_redirects: true,
        user_agent: concat!("keyless-audit/", env!("CARGO_PKG_VERSION")),
        ..ClientOptions::new(limits.request_timeout)
    };
    let client = LogClient::new(log_url, &options)?;
    let url = client.url().to_string();
    let sth = client.get_sth().await?.verify(&key, &url)?;
    let now = crate::now_ms();
    head::check_clock(&url, &sth, now)?;
    let stored = index.progress(&log_id)?;
    match &stored {
        Some(p) => head::check_extends(&client, &p.signed, &sth, now, limits).await?,
        None => head::check_first(&client, &sth, now, limits).await?,
    }
    let (mut current, mut frontier) = resume(index, stored.as_ref(), &log_id)?;
    let first = frontier.size();

    let signed = SignedHead {
        tree_size: sth.tree_size,
        root: sth.root,
        timestamp: sth.timestamp,
        signature: sth.signature,
        verified_at: now,
    };
    // An older tree head of an unchanged tree adds nothing; keep the newer one already stored.
    let signed = match &stored {
        Some(p) if p.signed.tree_size == signed.tree_size && signed.timestamp < p.signed.timestamp => p.signed.clone(),
        _ => signed,
    };
    let mut report = SyncReport {
        log_id: log_id.clone(),
        previous_size: first,
        tree_size: first,
        signed_size: signed.tree_size,
        new_entries: 0,
        new_certificates: 0,
        root: hex(&frontier.root()),
        stopped: None,
    };
    let budget_end = first.saturating_add(limits.max_entries).min(signed.tree_size);
    let mut meter = Progress::new(progress, first);
    loop {
        let next = frontier.size();
        let keep = |e: AuditError| kept(e, next, next - first);
        // One chunk: [next, end), cut short by the deadline.
        let chunk_end = next.saturating_add(limits.chunk_entries.max(1)).min(budget_end);
        let mut chunk = Chunk {
            frontier: frontier.clone(),
            leaves: Vec::new(),
            certificates: Vec::new(),
            out_of_time: false,
        };
        let source = Source {
            client: &client,
            ca: &ca,
            log_id: &log_id,
            signed: &signed,
        };
        source
            .fetch(&mut chunk, chunk_end, deadline, &mut meter)
            .await
            .map_err(keep)?;
        source.prove(&chunk.frontier, next).await.map_err(keep)?;

        let size = chunk.frontier.size();
        let complete = size == signed.tree_size;
        let prefix = VerifiedSth {
            log_id: log_id.clone(),
            url: url.clone(),
            tree_size: size,
            root: hex(&chunk.frontier.root()),
            // Until the signed tree head is complete, the last complete one still describes
            // what the index covers.
            timestamp: if complete {
                signed.timestamp
            } else {
                current.as_ref().map_or(0, |p| p.timestamp)
            },
            verified_at: crate::now_ms(),
            signed_size: signed.tree_size,
        };
        // The signature kept with `timestamp`: the new tree head's once complete, else the last
        // complete one's (none before a first sync completes).
        let (signature, signed_ref): (&[u8], Option<&SignedHead>) = if complete {
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
                frontier: Some(chunk.frontier.nodes()),
                leaves: &chunk.leaves,
                certificates: &chunk.certificates,
            })
            .map_err(keep)?;
        report.tree_size = size;
        report.root = prefix.root.clone();
        report.new_entries += chunk.leaves.len() as u64;
        report.new_certificates += chunk.certificates.len() as u64;
        current = Some(prefix);
        frontier = chunk.frontier;
        if complete {
            break;
        }
        if chunk.out_of_time || Instant::now() >= deadline {
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

/// Where the last run left off: the verified prefix and its frontier, checked against each
/// other (an index from before frontiers were kept has its frontier rebuilt from its leaves).
fn resume(
    index: &LogIndex,
    stored: Option<&LogProgress>,
    log_id: &str,
) -> Result<(Option<VerifiedSth>, Frontier), AuditError> {
    let previous = stored.map(|p| p.prefix.clone());
    let first = previous.as_ref().map_or(0, |p| p.tree_size);
    let damaged = || {
        AuditError::Storage(format!(
            "the index's leaves of log {log_id} do not match its last verified tree head: the index was damaged"
        ))
    };
    let frontier = match stored.and_then(|p| p.frontier.clone()) {
        Some(nodes) => Frontier::from_parts(first, nodes).ok_or_else(damaged)?,
        None => {
            // Streamed, so memory stays constant.
            let mut f = Frontier::default();
            index.for_each_leaf(log_id, |h| f.push(h))?;
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
    Ok((previous, frontier))
}

/// One chunk being fetched: the frontier grown by its leaves, and what to commit.
struct Chunk {
    frontier: Frontier,
    leaves: Vec<Hash>,
    certificates: Vec<IndexedCert>,
    /// The run's deadline passed while fetching it.
    out_of_time: bool,
}

/// The log a run reads, and the tree head it follows.
struct Source<'a> {
    client: &'a LogClient,
    ca: &'a IssuingCa,
    log_id: &'a str,
    signed: &'a SignedHead,
}

impl Source<'_> {
    /// Fetches entries into `chunk` up to `end` (exclusive), [`BATCH`] per request, stopping early
    /// at `deadline`.
    async fn fetch(
        &self,
        chunk: &mut Chunk,
        end: u64,
        deadline: Instant,
        meter: &mut Progress,
    ) -> Result<(), AuditError> {
        let url = self.client.url();
        while chunk.frontier.size() < end {
            let pos = chunk.frontier.size();
            let last = (pos + BATCH).min(end) - 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let entries = match tokio::time::timeout(remaining, self.client.get_entries(pos, last)).await {
                Err(_) => {
                    chunk.out_of_time = true;
                    return Ok(());
                }
                Ok(r) => r?,
            };
            if entries.is_empty() {
                return Err(AuditError::Log(format!(
                    "log {url} returned no entries from {pos}, although its tree head has {}",
                    self.signed.tree_size
                )));
            }
            for e in entries.iter().take((last - pos + 1) as usize) {
                let at = chunk.frontier.size();
                let (h, cert) = read_entry(self.ca, self.log_id, at, e)
                    .map_err(|what| AuditError::Log(format!("entry {at}: {what} is not base64")))?;
                chunk.frontier.push(h);
                chunk.leaves.push(h);
                chunk.certificates.extend(cert);
            }
            meter.update(chunk.frontier.size(), self.signed.tree_size);
            if Instant::now() >= deadline {
                chunk.out_of_time = true;
                return Ok(());
            }
        }
        Ok(())
    }

    /// The chunk's root must be the signed root, or a prefix of it by a consistency proof.
    async fn prove(&self, chunk: &Frontier, next: u64) -> Result<(), AuditError> {
        let (url, signed) = (self.client.url(), self.signed);
        let (size, root) = (chunk.size(), chunk.root());
        if size == signed.tree_size {
            if root != signed.root {
                return Err(AuditError::Log(format!(
                    "the entries log {url} served hash to root {}, but its signed tree head of {} entries says {}",
                    hex(&root),
                    signed.tree_size,
                    hex(&signed.root)
                )));
            }
        } else if size > next && size > 0 {
            let proof = self.client.get_sth_consistency(size, signed.tree_size).await?;
            if !merkle::verify_consistency(size, signed.tree_size, &root, &signed.root, &proof) {
                return Err(AuditError::Log(format!(
                    "the entries {next} to {} log {url} served hash to root {}, which its signed tree head of {} entries does not extend (consistency proof rejected)",
                    size - 1,
                    hex(&root),
                    signed.tree_size
                )));
            }
        }
        Ok(())
    }
}
