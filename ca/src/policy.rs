//! Claim policy: after a token verifies, the issuer's `deny` rules are checked, then its `allow`
//! rules (if any). A refusal names the rule, so operators and users see why.

use serde_json::Value;

use crate::Error;
use crate::token::VerifiedToken;

fn claim_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Applies the issuer's policy to the token's claims.
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
