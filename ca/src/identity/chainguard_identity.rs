//! `chainguard-identity` issuers: Fulcio's name is the verified email when there is one, else
//! `sub` (what cosign signs); the SAN is `{iss}/{sub}`.

use serde_json::Value;

use crate::Error;
use crate::identity::{Mapping, San};
use crate::token::VerifiedToken;

pub(super) fn map(token: &VerifiedToken) -> Result<Mapping, Error> {
    let url = &token.issuer().url;
    let sub = token.string_claim("sub")?;
    let name = match token.claims().get("email").and_then(Value::as_str) {
        Some(email) if !email.is_empty() => {
            let verified = matches!(token.claims().get("email_verified"), Some(Value::Bool(true)))
                || matches!(
                    token.claims().get("email_verified").and_then(Value::as_str),
                    Some("true" | "True")
                );
            if !verified {
                return Err(Error::claim(
                    url,
                    "email_verified",
                    "is not true although an email is present",
                ));
            }
            token.bounded("email", email)?.to_string()
        }
        _ => sub.to_string(),
    };
    let san = format!("{}/{}", url.trim_end_matches('/'), sub.trim_start_matches('/'));
    Ok((name, San::uri(url, "sub", san)?, Vec::new()))
}
