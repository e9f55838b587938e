//! The writer's two inputs: durable records (waited for, never dropped, always taken first) and
//! refusals (a bounded queue; beyond it they are dropped and counted, with a rate-limited
//! warning), and the handles that close them when the last [`super::AuditLog`] goes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::AuditError;
use crate::record::Record;

/// Refusals taken into one batch at most, so a backlog of refusals never makes a durable
/// record wait behind a huge transaction.
pub const REFUSALS_PER_BATCH: usize = 1024;

/// At most one "refusals dropped" warning per this period.
const DROP_WARNING_EVERY: Duration = Duration::from_secs(10);

/// A durable record and its waiter.
pub(super) struct Pending {
    pub(super) record: Record,
    pub(super) done: tokio::sync::oneshot::Sender<Result<u64, AuditError>>,
}

/// What waits for the writer.
#[derive(Default)]
pub(super) struct Queues {
    durable: VecDeque<Pending>,
    refusals: VecDeque<Record>,
    closed: bool,
}

/// What the writer finds when it looks for work.
pub(super) enum Taken {
    /// Every durable record and at most [`REFUSALS_PER_BATCH`] refusals.
    Batch(Vec<Pending>, Vec<Record>),
    /// Nothing arrived within the idle period.
    Idle,
    /// Closed and drained.
    Closed,
}

/// State shared by the handles and the writer thread.
pub(super) struct Shared {
    queues: Mutex<Queues>,
    wake: Condvar,
    refusal_capacity: usize,
    pub(super) dropped: AtomicU64,
    /// Dropped since the last warning, and when that was.
    warning: Mutex<(u64, Option<Instant>)>,
    pub(super) unavailable: AtomicBool,
}

impl Shared {
    pub(super) fn new(refusal_capacity: usize) -> Shared {
        Shared {
            queues: Mutex::new(Queues::default()),
            wake: Condvar::new(),
            refusal_capacity: refusal_capacity.max(1),
            dropped: AtomicU64::new(0),
            warning: Mutex::new((0, None)),
            unavailable: AtomicBool::new(false),
        }
    }

    pub(super) fn queues(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a durable record; false once the writer is closing.
    pub(super) fn push_durable(&self, p: Pending) -> bool {
        let mut q = self.queues();
        if q.closed {
            return false;
        }
        q.durable.push_back(p);
        drop(q);
        self.wake.notify_one();
        true
    }

    /// Queues a refusal, or drops and counts it when the queue is full. Never blocks.
    pub(super) fn push_refusal(&self, record: Record) {
        let mut q = self.queues();
        if q.closed {
            return;
        }
        if q.refusals.len() >= self.refusal_capacity {
            drop(q);
            self.dropped_refusals(1, "the refusal queue is full");
            return;
        }
        q.refusals.push_back(record);
        drop(q);
        self.wake.notify_one();
    }

    pub(super) fn dropped_refusals(&self, n: u64, why: &str) {
        if n == 0 {
            return;
        }
        self.dropped.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("keyless_audit_refusals_dropped_total").increment(n);
        let mut w = self.warning.lock().unwrap_or_else(|e| e.into_inner());
        w.0 += n;
        if w.1.is_none_or(|t| t.elapsed() >= DROP_WARNING_EVERY) {
            tracing::warn!(
                dropped = w.0,
                total = self.dropped.load(Ordering::Relaxed),
                capacity = self.refusal_capacity,
                reason = why,
                "refusal records dropped from the issuance record (issuances are unaffected)"
            );
            *w = (0, Some(Instant::now()));
        }
    }

    /// Waits for work; takes every durable record and at most [`REFUSALS_PER_BATCH`] refusals.
    /// `None` once closed and drained.
    #[cfg(test)]
    pub(super) fn take_batch(&self) -> Option<(Vec<Pending>, Vec<Record>)> {
        match self.take_batch_or_idle(None) {
            Taken::Batch(d, r) => Some((d, r)),
            Taken::Idle | Taken::Closed => None,
        }
    }

    /// Waits for work for `idle` at most (`None`: until there is some or the queues close).
    pub(super) fn take_batch_or_idle(&self, idle: Option<Duration>) -> Taken {
        let since = Instant::now();
        let mut q = self.queues();
        while q.durable.is_empty() && q.refusals.is_empty() {
            if q.closed {
                return Taken::Closed;
            }
            if idle.is_some_and(|idle| since.elapsed() >= idle) {
                return Taken::Idle;
            }
            q = self
                .wake
                .wait_timeout(q, idle.unwrap_or(Duration::from_secs(1)).min(Duration::from_secs(1)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let durable: Vec<Pending> = q.durable.drain(..).collect();
        let n = q.refusals.len().min(REFUSALS_PER_BATCH);
        let refusals: Vec<Record> = q.refusals.drain(..n).collect();
        Taken::Batch(durable, refusals)
    }

    pub(super) fn close(&self) {
        self.queues().closed = true;
        self.wake.notify_all();
    }
}

/// Closes the queues when the last [`AuditLog`] clone goes: the writer then commits what is
/// queued and stops.
pub(super) struct Handle(pub(super) Arc<Shared>);

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Signals that the writer thread has committed its queue and stopped.
#[derive(Clone, Default)]
pub struct Stopped(Arc<(Mutex<bool>, Condvar)>);

impl Stopped {
    pub(super) fn set(&self) {
        let (flag, cv) = &*self.0;
        *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }

    /// Blocks until the writer has stopped (true) or `timeout` passed (false).
    pub fn wait(&self, timeout: Duration) -> bool {
        let (flag, cv) = &*self.0;
        let guard = flag.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = cv
            .wait_timeout_while(guard, timeout, |stopped| !*stopped)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::test_refusal;
    use crate::store::tests::durable;

    #[test]
    fn refusals_wait_in_a_bounded_queue_and_durable_records_go_first() {
        let shared = Shared::new(4);
        for i in 0..10 {
            shared.push_refusal(test_refusal(i));
        }
        assert_eq!(shared.queues().refusals.len(), 4);
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 6);

        let shared = Shared::new(5000);
        for i in 0..3000 {
            shared.push_refusal(test_refusal(i));
        }
        let mut waiting = Vec::new();
        for i in 0..2 {
            let (done, wait) = tokio::sync::oneshot::channel();
            assert!(shared.push_durable(Pending {
                record: durable(i, "d"),
                done
            }));
            waiting.push(wait);
        }
        let (d, r) = shared.take_batch().unwrap();
        assert_eq!((d.len(), r.len()), (2, REFUSALS_PER_BATCH));
        assert_eq!(r[0].request_id, "req-0", "refusals keep their order");
        let (d, r) = shared.take_batch().unwrap();
        assert_eq!((d.len(), r.len()), (0, REFUSALS_PER_BATCH));
        shared.close();
        assert_eq!(shared.take_batch().map(|(d, r)| (d.len(), r.len())), Some((0, 952)));
        assert!(shared.take_batch().is_none(), "closed and drained");
        let (done, _) = tokio::sync::oneshot::channel();
        assert!(!shared.push_durable(Pending {
            record: durable(9, "late"),
            done
        }));
    }
}
