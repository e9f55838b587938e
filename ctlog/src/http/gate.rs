//! Admission of outside submissions before their body is read: the in-progress bound and the
//! token buckets (per source address, IPv6 by /64, and for everyone together), with the address
//! map kept bounded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyless_config::{Bucket, SubmissionLimits};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::MAX_TRACKED_ADDRESSES;

/// The bucket key of an address: IPv4 whole, IPv6 by /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum AddrKey {
    V4([u8; 4]),
    V6([u8; 8]),
}

impl AddrKey {
    fn of(ip: IpAddr) -> AddrKey {
        match ip {
            IpAddr::V4(a) => AddrKey::V4(a.octets()),
            IpAddr::V6(a) => {
                let mut p = [0u8; 8];
                p.copy_from_slice(&a.octets()[..8]);
                AddrKey::V6(p)
            }
        }
    }
}

/// One token bucket's state.
#[derive(Debug, Clone, Copy)]
struct Tokens {
    tokens: f64,
    updated: Instant,
}

impl Tokens {
    fn full(b: Bucket, now: Instant) -> Tokens {
        Tokens {
            tokens: f64::from(b.burst),
            updated: now,
        }
    }

    fn refill(&mut self, b: Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate(b)).min(f64::from(b.burst));
        self.updated = now;
    }

    /// `None` if a token is available, else how long until one is.
    fn wait(&self, b: Bucket) -> Option<Duration> {
        (self.tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - self.tokens) / rate(b)))
    }
}

fn rate(b: Bucket) -> f64 {
    f64::from(b.rate) / b.per.as_secs_f64().max(1e-3)
}

/// Why an outside submission was refused before it was read.
#[derive(Debug, PartialEq)]
pub(super) enum Refusal {
    /// A token bucket is empty: which one, its description, and when to retry.
    Limited {
        outcome: &'static str,
        message: String,
        retry_after: Duration,
    },
    /// `queue` submissions are already in progress.
    QueueFull,
}

/// Admission of outside submissions: the in-progress bound and the token buckets.
pub(super) struct Gate {
    pub(super) limits: SubmissionLimits,
    queue: Arc<Semaphore>,
    buckets: Mutex<Buckets>,
}

struct Buckets {
    per_address: HashMap<AddrKey, Tokens>,
    /// Shared by submitters whose address is unknown.
    unknown: Tokens,
    /// Shared by new addresses while the map is full.
    overflow: Tokens,
    total: Tokens,
}

/// `N per T (bursts of B)` for messages.
fn describe(b: Bucket) -> String {
    format!("{} per {} s (bursts of {})", b.rate, b.per.as_secs_f64(), b.burst)
}

impl Gate {
    pub(super) fn new(limits: SubmissionLimits, now: Instant) -> Gate {
        let zero = Bucket {
            rate: 1,
            per: Duration::from_secs(1),
            burst: 1,
        };
        let start = |b: Option<Bucket>| Tokens::full(b.unwrap_or(zero), now);
        Gate {
            queue: Arc::new(Semaphore::new(limits.queue.min(Semaphore::MAX_PERMITS))),
            buckets: Mutex::new(Buckets {
                per_address: HashMap::new(),
                unknown: start(limits.per_address),
                overflow: start(limits.per_address),
                total: start(limits.total),
            }),
            limits,
        }
    }

    /// Takes a place in the queue and a token from the source's bucket and from the total one
    /// (both or neither), or says why not. The CA's own replicas ([`SubmissionLimits::ca_addresses`])
    /// are admitted without either (`None`).
    pub(super) fn admit(&self, peer: Option<IpAddr>, now: Instant) -> Result<Option<OwnedSemaphorePermit>, Refusal> {
        if peer.is_some_and(|ip| self.limits.ca_addresses.iter().any(|r| r.contains(ip))) {
            return Ok(None);
        }
        let permit = self.queue.clone().try_acquire_owned().map_err(|_| Refusal::QueueFull)?;
        let mut guard = self.buckets.lock().expect("poisoned");
        let b = &mut *guard;
        let mut source: Option<&mut Tokens> = None;
        if let Some(limit) = self.limits.per_address {
            let slot = match peer.map(AddrKey::of) {
                None => &mut b.unknown,
                Some(key) => {
                    if !b.per_address.contains_key(&key) && b.per_address.len() >= MAX_TRACKED_ADDRESSES {
                        // Full buckets carry no information: dropping them changes nothing.
                        b.per_address.retain(|_, t| {
                            t.refill(limit, now);
                            t.tokens < f64::from(limit.burst)
                        });
                    }
                    if b.per_address.contains_key(&key) || b.per_address.len() < MAX_TRACKED_ADDRESSES {
                        b.per_address.entry(key).or_insert_with(|| Tokens::full(limit, now))
                    } else {
                        &mut b.overflow
                    }
                }
            };
            slot.refill(limit, now);
            if let Some(wait) = slot.wait(limit) {
                return Err(Refusal::Limited {
                    outcome: "rate_limited_address",
                    message: format!(
                        "too many submissions from this address: the limit is {}",
                        describe(limit)
                    ),
                    retry_after: wait,
                });
            }
            source = Some(slot);
        }
        if let Some(limit) = self.limits.total {
            b.total.refill(limit, now);
            if let Some(wait) = b.total.wait(limit) {
                return Err(Refusal::Limited {
                    outcome: "rate_limited_total",
                    message: format!(
                        "too many submissions to this log: the limit for everyone together is {}",
                        describe(limit)
                    ),
                    retry_after: wait,
                });
            }
            b.total.tokens -= 1.0;
        }
        if let Some(slot) = source {
            slot.tokens -= 1.0;
        }
        Ok(Some(permit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_address: Option<Bucket>, total: Option<Bucket>, queue: usize) -> SubmissionLimits {
        SubmissionLimits {
            per_address,
            total,
            queue,
            ca_addresses: Vec::new(),
        }
    }

    fn b(rate: u32, burst: u32) -> Option<Bucket> {
        Some(Bucket {
            rate,
            per: Duration::from_secs(1),
            burst,
        })
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn per_address_buckets_refill_and_are_independent() {
        let t0 = Instant::now();
        let g = Gate::new(limits(b(2, 2), None, 100), t0);
        let _a = g.admit(ip("10.0.0.1"), t0).unwrap();
        let _b = g.admit(ip("10.0.0.1"), t0).unwrap();
        let Err(Refusal::Limited {
            outcome, retry_after, ..
        }) = g.admit(ip("10.0.0.1"), t0)
        else {
            panic!("third in the same instant must be limited");
        };
        assert_eq!(outcome, "rate_limited_address");
        assert!(retry_after > Duration::from_millis(400) && retry_after <= Duration::from_millis(500));
        assert!(g.admit(ip("10.0.0.2"), t0).is_ok(), "another address is unaffected");
        assert!(
            g.admit(ip("10.0.0.1"), t0 + Duration::from_millis(500)).is_ok(),
            "refilled"
        );
        // IPv6 addresses share their /64; IPv4-mapped ones are IPv4.
        let _c = g.admit(ip("2001:db8::1"), t0).unwrap();
        let _d = g.admit(ip("2001:db8::2"), t0).unwrap();
        assert!(g.admit(ip("2001:db8::3"), t0).is_err());
        assert!(g.admit(ip("2001:db8:0:1::1"), t0).is_ok());
    }

    #[test]
    fn a_refusal_by_the_total_does_not_charge_the_address() {
        let t0 = Instant::now();
        let g = Gate::new(limits(b(1, 1), b(1, 1), 100), t0);
        let _a = g.admit(ip("10.0.0.1"), t0).unwrap();
        let Err(Refusal::Limited { outcome, message, .. }) = g.admit(ip("10.0.0.2"), t0) else {
            panic!("the total is spent");
        };
        assert_eq!(outcome, "rate_limited_total");
        assert!(message.contains("everyone together"), "{message}");
        // 10.0.0.2 still has its token once the total refills.
        assert!(g.admit(ip("10.0.0.2"), t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn the_queue_bounds_submissions_in_progress() {
        let t0 = Instant::now();
        let g = Gate::new(limits(None, None, 2), t0);
        let a = g.admit(None, t0).unwrap();
        let _b = g.admit(None, t0).unwrap();
        assert_eq!(g.admit(None, t0).unwrap_err(), Refusal::QueueFull);
        drop(a);
        assert!(g.admit(None, t0).is_ok());
    }

    #[test]
    fn the_address_map_stays_bounded() {
        let t0 = Instant::now();
        let g = Gate::new(limits(b(1, 2), None, usize::MAX >> 4), t0);
        // Every address spends one token, so none of their buckets is full (idle) yet; the last
        // two already share the overflow bucket.
        for i in 0..(MAX_TRACKED_ADDRESSES + 2) as u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            drop(g.admit(Some(a), t0).unwrap());
        }
        assert_eq!(g.buckets.lock().unwrap().per_address.len(), MAX_TRACKED_ADDRESSES);
        // Past the bound, new addresses share the overflow bucket (burst 2, already spent).
        let fresh = IpAddr::from(std::net::Ipv4Addr::new(192, 168, 0, 1));
        assert!(g.admit(Some(fresh), t0).is_err());
        // Once buckets are full again (idle), they are dropped and new addresses get their own.
        let later = t0 + Duration::from_secs(5);
        assert!(g.admit(Some(fresh), later).is_ok());
        assert_eq!(g.buckets.lock().unwrap().per_address.len(), 1);
    }
}
