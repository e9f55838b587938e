//! `chainguard-identity` issuers: Fulcio's name is the verified email when there is one, else
//! `sub` (what cosign signs); the SAN is `sub` joined onto the issuer URL as Go's `url.JoinPath`
//! joins it. The actor (`act`, string values) and `internal` claims Fulcio decodes must have the
//! shapes it decodes them into.

use serde_json::Value;

use crate::Error;
use crate::identity::{Mapping, San, join_path};
use crate::token::VerifiedToken;

pub(super) fn map(token: &VerifiedToken) -> Result<Mapping, Error> {
    let url = &token.issuer().url;
    let sub = token.string_claim("sub")?;
    let shape = |claim: &str, ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(Error::claim(url, claim, format!("must be {what}")))
        }
    };
    match token.claims().get("act") {
        None | Some(Value::Null) => {}
        Some(Value::Object(act)) => shape(
            "act",
            act.values().all(|v| v.is_string() || v.is_null()),
            "an object of strings",
        )?,
        Some(_) => shape("act", false, "an object of strings")?,
    }
    match token.claims().get("internal") {
        None | Some(Value::Null) => {}
        Some(Value::Object(internal)) => shape(
            "internal.service-principal",
            internal
                .get("service-principal")
                .is_none_or(|v| v.is_string() || v.is_null()),
            "a string",
        )?,
        Some(_) => shape("internal", false, "an object")?,
    }
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
    let san = join_path(token, "sub", url, &[sub])?;
    Ok((name, San::uri(url, "sub", san)?, Vec::new()))
}
