//! Claim policy: after a token verifies, the issuer's `deny` rules are checked, then its `allow`
//! rules (if any). A refusal names the rule, so operators and users see why.

use serde_json::Value;

use crate::Error;
use crate::identity::Principal;
use crate::token::VerifiedToken;

fn claim_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Applies the issuer's policy to the token's claims (without charging anything: `keyless config
/// check` explains a token with it; issuance goes through [`permit`]).
pub fn check(token: &VerifiedToken) -> Result<(), Error> {
    let issuer = token.issuer();
    let policy = &issuer.policy;
    let matches = |rule: &keyless_config::Rule| {
        rule.when.iter().all(|(claim, cond)| {
            let text = token.claims().get(claim).and_then(claim_text);
            cond.holds(text.as_deref())
        })
    };
    if let Some(rule) = policy.deny.iter().find(|r| matches(r)) {
        return Err(Error::Policy {
            issuer: issuer.url.clone(),
            detail: format!("denied by rule {:?}", rule.name),
        });
    }
    if !policy.allow.is_empty() && !policy.allow.iter().any(matches) {
        let names: Vec<&str> = policy.allow.iter().map(|r| r.name.as_str()).collect();
        return Err(Error::Policy {
            issuer: issuer.url.clone(),
            detail: format!("no allow rule matched (rules: {names:?})"),
        });
    }
    Ok(())
}

/// A principal whose issuer's claim policy passed and whose rate limits were charged. Only
/// [`permit`] makes one, and only a `Permitted` principal can have a certificate prepared
/// ([`crate::CertificateAuthority::prepare`]), so no front door can skip either gate.
#[derive(Debug)]
pub struct Permitted {
    principal: Principal,
}

impl Permitted {
    /// The identity that passed.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }
}

/// Why [`permit`] refused.
#[derive(Debug)]
pub enum Refused<E> {
    /// A deny rule matched, or no allow rule did.
    Policy(Error),
    /// The rate limiter refused (its own error).
    Limited(E),
}

/// The policy gate then the rate-limit gate, in that order: `charge` (the caller's limiter) runs
/// only for an identity the policy allows, so refused identities never spend anyone's allowance.
pub fn permit<E>(
    token: &VerifiedToken,
    principal: Principal,
    charge: impl FnOnce(&Principal) -> Result<(), E>,
) -> Result<Permitted, Refused<E>> {
    check(token).map_err(Refused::Policy)?;
    charge(&principal).map_err(Refused::Limited)?;
    Ok(Permitted { principal })
}

/// [`permit`] with a limiter that waits (buckets shared by replicas in a database).
pub async fn permit_async<E, F: Future<Output = Result<(), E>>>(
    token: &VerifiedToken,
    principal: Principal,
    charge: impl FnOnce(&Principal) -> F,
) -> Result<Permitted, Refused<E>> {
    check(token).map_err(Refused::Policy)?;
    charge(&principal).await.map_err(Refused::Limited)?;
    Ok(Permitted { principal })
}
