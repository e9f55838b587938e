//! The log's single writer thread and its two queues: every queued CA entry, then a bounded slice
//! of outside entries, committed in one SQLite transaction (group commit) with the tree nodes they
//! complete, then the in-memory frontier advanced, then answered. Deduplication happens inside that transaction
//! (`store::append`), so concurrent identical outside submissions collapse too.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::Shared;
use crate::LogError;
use crate::merkle::Hash;
use crate::store;

/// One validated submission waiting for the writer.
pub(super) struct Pending {
    pub(super) leaf_input: Vec<u8>,
    pub(super) extra_prefix: Vec<u8>,
    pub(super) chain: Arc<(Vec<u8>, [u8; 32])>,
    pub(super) leaf_hash: Hash,
    pub(super) submission_hash: [u8; 32],
    pub(super) source: Source,
    pub(super) reply: tokio::sync::oneshot::Sender<Result<store::Placed, LogError>>,
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
pub(super) enum Source {
    /// This process's CA (`CtLog::add_pre_chain`).
    Ca,
    /// Anyone else (`add-chain` / `add-pre-chain` over HTTP).
    Outside,
}

/// The writer's two queues.
#[derive(Default)]
pub(super) struct Queues {
    pub(super) ca: VecDeque<Pending>,
    pub(super) outside: VecDeque<Pending>,
    pub(super) closed: bool,
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
pub(super) struct Inbox {
    pub(super) queues: Mutex<Queues>,
    pub(super) wake: Condvar,
}

/// Closes the inbox when the last [`EmbeddedLog`] clone is dropped, which stops the writer.
pub(super) struct WriterHandle(pub(super) Arc<Inbox>);

impl Drop for WriterHandle {
    fn drop(&mut self) {
        if let Ok(mut q) = self.0.queues.lock() {
            q.closed = true;
        }
        self.0.wake.notify_all();
    }
}

impl Shared {
    /// The writer thread: group commits (CA entries first), then tree update, then replies; STHs
    /// on schedule. Stops once the inbox is closed and empty.
    pub(super) fn run(self: Arc<Self>, mut conn: Connection, inbox: &Inbox) {
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
        // Only this thread changes the frontier, so a copy is current.
        let frontier = self.state.read().expect("poisoned").frontier.clone();
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
        match store::append(conn, &frontier, &rows) {
            Ok((placed, frontier)) => {
                self.state.write().expect("poisoned").frontier = frontier;
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
}
