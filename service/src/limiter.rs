//! Rate limits: token buckets per token owner and per issuer, charged after the claim policy
//! passed (see `keyless_ca::policy::permit_async`). Keyed by owner, not address, so a CI fleet behind
//! one NAT is not one client.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keyless_audit::record::hex;
use keyless_audit::store::SharedBuckets;
use keyless_config::{Bucket, RateLimits};

use crate::Error;

/// Above this many buckets the limiter drops the ones that are full again.
const MAX_BUCKETS: usize = 100_000;
/// Beyond this many live buckets (a flood of distinct identities within one refill period) the
/// least recently used are dropped, loosening only their limits, so memory stays bounded.
const HARD_MAX_BUCKETS: usize = 1_000_000;

#[derive(Debug, Clone, Copy)]
struct BucketState {
    tokens: f64,
    updated: Instant,
    /// Idle this long, the bucket is full again and carries no information.
    full_after: Duration,
}

#[derive(Debug)]
struct Buckets {
    map: HashMap<String, BucketState>,
    /// The size at which the next prune runs: at least [`MAX_BUCKETS`], and twice what the last
    /// prune kept, so a map full of live buckets is not scanned again on every request (a prune
    /// that removes nothing used to run on each check once the map passed the limit).
    prune_at: usize,
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets {
            map: HashMap::new(),
            prune_at: MAX_BUCKETS,
        }
    }
}

/// Token buckets per certificate identity and per issuer: in this process's memory, or, when the
/// issuance record is on PostgreSQL, in that database, shared by every replica
/// ([`RateLimiter::shared`]). In memory, the map is bounded: buckets that have refilled completely
/// carry no information and are dropped when the map grows large; pruning costs amortized O(1)
/// per request.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<Buckets>,
    shared: Option<SharedBuckets>,
    /// Whether the last take from the shared buckets failed (to log an outage once).
    shared_failing: AtomicBool,
}

impl RateLimiter {
    /// Limits kept in the record's PostgreSQL database, so they hold across replicas.
    pub fn shared(buckets: SharedBuckets) -> RateLimiter {
        RateLimiter {
            buckets: Mutex::default(),
            shared: Some(buckets),
            shared_failing: AtomicBool::new(false),
        }
    }

    /// Takes a token for `identity` (the token owner's key, see `Principal::rate_key`) and for
    /// `issuer` under `limits`, or says which limit refused and when to retry. The issuer's
    /// bucket is only charged when the identity passes, so one runaway identity cannot drain its
    /// issuer's allowance. Shared buckets that cannot be reached refuse (fail closed) with
    /// [`Error::RecordUnavailable`]: they live in the record's database.
    pub async fn check(&self, issuer: &str, identity: &str, limits: RateLimits, now: Instant) -> Result<(), Error> {
        let limited = |b: Bucket, who: String, wait: Duration| Error::RateLimited {
            detail: format!(
                "{who} may request {} certificates per {} s (bursts of {})",
                b.rate,
                b.per.as_secs(),
                b.burst
            ),
            retry_after: wait,
        };
        if let Some(b) = limits.per_identity
            && let Err(wait) = self.take(format!("id\u{0}{issuer}\u{0}{identity}"), b, now).await?
        {
            // The identity is the token's owner key (`<issuer> claim="value"`): name the owner.
            let owner = identity.strip_prefix(issuer).map_or(identity, str::trim_start);
            return Err(limited(b, format!("identity {owner} from issuer {issuer}"), wait));
        }
        if let Some(b) = limits.per_issuer
            && let Err(wait) = self.take(format!("iss\u{0}{issuer}"), b, now).await?
        {
            return Err(limited(b, format!("issuer {issuer}"), wait));
        }
        Ok(())
    }

    async fn take(&self, key: String, b: Bucket, now: Instant) -> Result<Result<(), Duration>, Error> {
        match &self.shared {
            Some(shared) => {
                let taken = shared
                    .take(&row_key(&key), b.burst, refill_rate(b), full_after(b))
                    .await;
                // Logged once when an outage starts and once when it ends, like the record's.
                match &taken {
                    Err(e) if !self.shared_failing.swap(true, Ordering::Relaxed) => {
                        tracing::error!(cause = %e, "the shared rate-limit buckets are unreachable: issuances are refused until they answer");
                    }
                    Ok(_) if self.shared_failing.swap(false, Ordering::Relaxed) => {
                        tracing::info!("the shared rate-limit buckets answer again");
                    }
                    _ => {}
                }
                taken.map_err(|e| Error::RecordUnavailable(format!("rate-limit buckets: {e}")))
            }
            None => {
                let mut buckets = self.buckets.lock().expect("poisoned");
                if buckets.map.len() > buckets.prune_at {
                    prune(&mut buckets.map, now);
                    buckets.prune_at = (buckets.map.len() * 2).clamp(MAX_BUCKETS, HARD_MAX_BUCKETS);
                }
                Ok(take(&mut buckets.map, key, b, now))
            }
        }
    }
}

/// The shared table names a bucket by its kind and a digest of its key: PostgreSQL text refuses
/// the NUL separators, and the table then holds no identity (an email address) in plain text.
fn row_key(key: &str) -> String {
    let kind = key.split_once('\0').map_or("", |(kind, _)| kind);
    format!("{kind}:{}", hex(&keyless_ca::keys::sha256(key.as_bytes())))
}

fn refill_rate(b: Bucket) -> f64 {
    b.rate as f64 / b.per.as_secs_f64()
}

fn take(map: &mut HashMap<String, BucketState>, key: String, b: Bucket, now: Instant) -> Result<(), Duration> {
    let state = map.entry(key).or_insert(BucketState {
        tokens: b.burst as f64,
        updated: now,
        full_after: full_after(b),
    });
    state.full_after = full_after(b);
    let rate = refill_rate(b);
    let elapsed = now.saturating_duration_since(state.updated).as_secs_f64();
    state.tokens = (state.tokens + elapsed * rate).min(b.burst as f64);
    state.updated = now;
    if state.tokens >= 1.0 {
        state.tokens -= 1.0;
        Ok(())
    } else {
        Err(Duration::from_secs_f64((1.0 - state.tokens) / rate))
    }
}

/// How long an idle bucket of `b` takes to be full again (at least a minute): each bucket keeps
/// its own, since issuers may set slower limits than the global ones.
fn full_after(b: Bucket) -> Duration {
    Duration::from_secs_f64((b.burst as f64 / refill_rate(b)).max(60.0))
}

/// Drops buckets idle long enough to be full again; if more than [`HARD_MAX_BUCKETS`] are still
/// live, keeps the most recently used three quarters of that.
fn prune(map: &mut HashMap<String, BucketState>, now: Instant) {
    map.retain(|_, s| now.saturating_duration_since(s.updated) < s.full_after);
    if map.len() > HARD_MAX_BUCKETS {
        let keep = HARD_MAX_BUCKETS / 4 * 3;
        let mut times: Vec<Instant> = map.values().map(|s| s.updated).collect();
        let cut = times.len() - keep;
        let (_, oldest_kept, _) = times.select_nth_unstable(cut);
        let oldest_kept = *oldest_kept;
        map.retain(|_, s| s.updated >= oldest_kept);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl RateLimiter {
        /// The in-memory limiter never waits: run its check to completion here.
        fn check_now(&self, issuer: &str, identity: &str, limits: RateLimits, now: Instant) -> Result<(), Error> {
            let fut = std::pin::pin!(self.check(issuer, identity, limits, now));
            match fut.poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
                std::task::Poll::Ready(r) => r,
                std::task::Poll::Pending => panic!("the in-memory limiter waited"),
            }
        }
    }

    fn limits(rate: u32, burst: u32) -> RateLimits {
        RateLimits {
            per_identity: Some(Bucket {
                rate,
                per: Duration::from_secs(60),
                burst,
            }),
            per_issuer: Some(Bucket {
                rate: 100,
                per: Duration::from_secs(60),
                burst: 4,
            }),
        }
    }

    #[test]
    fn identities_have_their_own_buckets_and_refill() {
        let rl = RateLimiter::default();
        let t0 = Instant::now();
        let l = limits(60, 2);
        assert!(rl.check_now("iss", "alice", l, t0).is_ok());
        assert!(rl.check_now("iss", "alice", l, t0).is_ok());
        let Err(Error::RateLimited { retry_after, detail }) = rl.check_now("iss", "alice", l, t0) else {
            panic!("third request in the same instant must be limited");
        };
        assert!(detail.contains("alice") && detail.contains("iss"), "{detail}");
        assert!(retry_after > Duration::from_millis(900) && retry_after <= Duration::from_secs(1));
        // Another identity of the same issuer is unaffected ...
        assert!(rl.check_now("iss", "bob", l, t0).is_ok());
        // ... and one second later alice has one token again (60/min).
        assert!(rl.check_now("iss", "alice", l, t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn issuer_bucket_caps_all_identities_together() {
        let rl = RateLimiter::default();
        let t0 = Instant::now();
        let l = limits(60, 10);
        for who in ["a", "b", "c", "d"] {
            assert!(rl.check_now("iss", who, l, t0).is_ok());
        }
        let Err(Error::RateLimited { detail, .. }) = rl.check_now("iss", "e", l, t0) else {
            panic!("the issuer's burst of 4 is spent");
        };
        assert!(detail.starts_with("issuer iss"), "{detail}");
        assert!(
            rl.check_now("other", "e", l, t0).is_ok(),
            "other issuers are unaffected"
        );
    }

    /// A map full of live buckets is pruned once, not on every request, and limits still hold.
    #[test]
    fn live_buckets_beyond_the_limit_are_not_rescanned_on_every_request() {
        let rl = RateLimiter::default();
        let t0 = Instant::now();
        let l = RateLimits {
            per_identity: limits(1, 1).per_identity,
            per_issuer: None,
        };
        for i in 0..=MAX_BUCKETS {
            rl.check_now("iss", &i.to_string(), l, t0).unwrap();
        }
        // Over the limit: this request prunes, finds every bucket live, and moves the threshold
        // so the following ones do not scan again.
        rl.check_now("iss", "next", l, t0).unwrap();
        let (len, prune_at) = {
            let b = rl.buckets.lock().unwrap();
            (b.map.len(), b.prune_at)
        };
        assert_eq!(len, MAX_BUCKETS + 2, "live buckets are kept");
        assert_eq!(prune_at, 2 * (MAX_BUCKETS + 1));
        let Err(Error::RateLimited { detail, .. }) = rl.check_now("iss", "7", l, t0) else {
            panic!("identity 7 spent its burst of one and its bucket was kept");
        };
        assert!(detail.starts_with("identity 7"), "{detail}");
        // An hour later everything has refilled: the next prune empties the map.
        rl.buckets.lock().unwrap().prune_at = 0;
        rl.check_now("iss", "x", l, t0 + Duration::from_secs(3600)).unwrap();
        assert_eq!(rl.buckets.lock().unwrap().map.len(), 1);
    }

    #[test]
    fn a_flood_of_live_buckets_keeps_the_most_recent() {
        let mut map = HashMap::new();
        let t0 = Instant::now();
        for i in 0..HARD_MAX_BUCKETS + 10 {
            map.insert(
                i.to_string(),
                BucketState {
                    tokens: 0.0,
                    updated: t0 + Duration::from_micros(i as u64),
                    full_after: Duration::from_secs(60),
                },
            );
        }
        prune(&mut map, t0 + Duration::from_secs(1));
        assert_eq!(map.len(), HARD_MAX_BUCKETS / 4 * 3);
        assert!(
            map.contains_key(&(HARD_MAX_BUCKETS + 9).to_string()),
            "the newest stays"
        );
        assert!(!map.contains_key("0"), "the oldest goes");
    }
}
