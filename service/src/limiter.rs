//! Rate limits: token buckets per token owner and per issuer, charged after the claim policy
//! passed (see `keyless_ca::policy::permit`). Keyed by owner, not address, so a CI fleet behind
//! one NAT is not one client.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use keyless_config::{Bucket, RateLimits};

use crate::Error;

/// How many buckets the limiter keeps before it drops the ones that are full again.
const MAX_BUCKETS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct BucketState {
    tokens: f64,
    updated: Instant,
}

/// Token buckets per certificate identity and per issuer. Memory is bounded: buckets that have
/// refilled completely carry no information and are dropped when the map grows large.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, BucketState>>,
}

impl RateLimiter {
    /// Takes a token for `identity` (the token owner's key, see `Principal::rate_key`) and for
    /// `issuer` under `limits`, or says which limit
    /// refused and when to retry. The issuer's bucket is only charged when the identity passes,
    /// so one runaway identity cannot drain its issuer's allowance.
    pub fn check(&self, issuer: &str, identity: &str, limits: RateLimits, now: Instant) -> Result<(), Error> {
        let mut map = self.buckets.lock().expect("poisoned");
        if map.len() > MAX_BUCKETS {
            prune(&mut map, now, limits);
        }
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
            && let Err(wait) = take(&mut map, format!("id\u{0}{issuer}\u{0}{identity}"), b, now)
        {
            // The identity is the token's owner key (`<issuer> claim="value"`): name the owner.
            let owner = identity.strip_prefix(issuer).map_or(identity, str::trim_start);
            return Err(limited(b, format!("identity {owner} from issuer {issuer}"), wait));
        }
        if let Some(b) = limits.per_issuer
            && let Err(wait) = take(&mut map, format!("iss\u{0}{issuer}"), b, now)
        {
            return Err(limited(b, format!("issuer {issuer}"), wait));
        }
        Ok(())
    }
}

fn refill_rate(b: Bucket) -> f64 {
    b.rate as f64 / b.per.as_secs_f64()
}

fn take(map: &mut HashMap<String, BucketState>, key: String, b: Bucket, now: Instant) -> Result<(), Duration> {
    let state = map.entry(key).or_insert(BucketState {
        tokens: b.burst as f64,
        updated: now,
    });
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

/// Drops buckets idle long enough to be full again under the slowest refill in use.
fn prune(map: &mut HashMap<String, BucketState>, now: Instant, limits: RateLimits) {
    let slowest = [limits.per_identity, limits.per_issuer]
        .into_iter()
        .flatten()
        .map(|b| b.burst as f64 / refill_rate(b))
        .fold(60.0, f64::max);
    map.retain(|_, s| now.saturating_duration_since(s.updated).as_secs_f64() < slowest);
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(rl.check("iss", "alice", l, t0).is_ok());
        assert!(rl.check("iss", "alice", l, t0).is_ok());
        let Err(Error::RateLimited { retry_after, detail }) = rl.check("iss", "alice", l, t0) else {
            panic!("third request in the same instant must be limited");
        };
        assert!(detail.contains("alice") && detail.contains("iss"), "{detail}");
        assert!(retry_after > Duration::from_millis(900) && retry_after <= Duration::from_secs(1));
        // Another identity of the same issuer is unaffected ...
        assert!(rl.check("iss", "bob", l, t0).is_ok());
        // ... and one second later alice has one token again (60/min).
        assert!(rl.check("iss", "alice", l, t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn issuer_bucket_caps_all_identities_together() {
        let rl = RateLimiter::default();
        let t0 = Instant::now();
        let l = limits(60, 10);
        for who in ["a", "b", "c", "d"] {
            assert!(rl.check("iss", who, l, t0).is_ok());
        }
        let Err(Error::RateLimited { detail, .. }) = rl.check("iss", "e", l, t0) else {
            panic!("the issuer's burst of 4 is spent");
        };
        assert!(detail.starts_with("issuer iss"), "{detail}");
        assert!(rl.check("other", "e", l, t0).is_ok(), "other issuers are unaffected");
    }
}
