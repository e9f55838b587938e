//! Whether to believe a log's new signed tree head (its signature is checked by
//! [`GetSthResponse::verify`](keyless_ctlog::wire::GetSthResponse::verify) before it gets here):
//! not dated ahead of this clock, extending the last one verified (a smaller tree is a rollback;
//! another root for the same size, or a failed consistency proof, a fork), and no larger than the
//! log can have grown since (or, on a first sync, since its entry 0 was logged). Nothing is stored
//! when a tree head is refused.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyless_ctlog::client::LogClient;
use keyless_ctlog::merkle;
use keyless_ctlog::wire::{MerkleTreeLeaf, SignedTreeHead};

use super::SyncLimits;
use crate::AuditError;
use crate::hex::hex;
use crate::index::SignedHead;

/// A tree head dated further ahead of the local clock than this is refused.
const MAX_CLOCK_SKEW_MS: u64 = 3_600_000;
/// A previous tree head is taken to describe the log no earlier than this before it was
/// verified (the usual CT maximum merge delay), whatever its own timestamp says.
const MAX_STH_AGE_MS: u64 = 86_400_000;

/// Refuses a tree head dated more than [`MAX_CLOCK_SKEW_MS`] ahead of `now`.
pub(super) fn check_clock(log: &str, sth: &SignedTreeHead, now: u64) -> Result<(), AuditError> {
    if sth.timestamp > now.saturating_add(MAX_CLOCK_SKEW_MS) {
        return Err(AuditError::Log(format!(
            "implausible tree head: log {log} dates its tree head of {} entries {} ms, {} s ahead of this clock: refused",
            sth.tree_size,
            sth.timestamp,
            (sth.timestamp - now) / 1000
        )));
    }
    Ok(())
}

/// The new tree head must extend `prev`, the last signed one verified, and be believable.
pub(super) async fn check_extends(
    client: &LogClient,
    prev: &SignedHead,
    sth: &SignedTreeHead,
    now: u64,
    limits: &SyncLimits,
) -> Result<(), AuditError> {
    let log = client.url();
    if sth.tree_size < prev.tree_size {
        return Err(AuditError::Log(format!(
            "log {log} presents a smaller tree ({} entries) than it did before ({} entries, verified at {} ms): rollback",
            sth.tree_size, prev.tree_size, prev.verified_at
        )));
    }
    if sth.tree_size == prev.tree_size && sth.root != prev.root {
        return Err(AuditError::Log(format!(
            "log {log} presents two different roots for the tree of {} entries ({} before, {} now): the log forked",
            sth.tree_size,
            hex(&prev.root),
            hex(&sth.root)
        )));
    }
    if sth.tree_size > prev.tree_size {
        let since = prev.timestamp.max(prev.verified_at.saturating_sub(MAX_STH_AGE_MS));
        check_growth(
            log,
            prev.tree_size,
            sth.tree_size,
            since,
            "in the tree head verified",
            now,
            limits,
        )?;
        if prev.tree_size > 0 {
            let proof = client.get_sth_consistency(prev.tree_size, sth.tree_size).await?;
            if !merkle::verify_consistency(prev.tree_size, sth.tree_size, &prev.root, &sth.root, &proof) {
                return Err(AuditError::Log(format!(
                    "inconsistent tree heads: log {log} does not prove that its tree of {} entries (root {}) extends the tree of {} entries (root {}) verified at {} ms: the log forked or rewrote its history",
                    sth.tree_size,
                    hex(&sth.root),
                    prev.tree_size,
                    hex(&prev.root),
                    prev.verified_at
                )));
            }
        }
    }
    Ok(())
}

/// A first sync: the log cannot have grown faster than the ceiling since its first entry (only
/// asked for when the tree is larger than the slack believed anyway).
pub(super) async fn check_first(
    client: &LogClient,
    sth: &SignedTreeHead,
    now: u64,
    limits: &SyncLimits,
) -> Result<(), AuditError> {
    if sth.tree_size <= limits.slack_entries {
        return Ok(());
    }
    let log = client.url();
    let first = client.get_entries(0, 0).await?;
    let leaf = first
        .first()
        .and_then(|e| STANDARD.decode(&e.leaf_input).ok())
        .ok_or_else(|| AuditError::Log(format!("log {log} does not serve entry 0")))?;
    let t0 = MerkleTreeLeaf::decode(&leaf)
        .map_err(|why| {
            AuditError::Log(format!(
                "entry 0 of log {log} is not a MerkleTreeLeaf ({why}): its age, and so its size, cannot be judged"
            ))
        })?
        .timestamp;
    if t0 > now.saturating_add(MAX_CLOCK_SKEW_MS) {
        return Err(AuditError::Log(format!(
            "implausible log: entry 0 of log {log} is dated {t0} ms, ahead of this clock"
        )));
    }
    check_growth(log, 0, sth.tree_size, t0, "since entry 0 was logged", now, limits)
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
