//! `email` issuers (Google, Dex, Keycloak, ...): the verified `email` claim is the identity.

use keyless_config::EmailSettings;
use serde_json::Value;

use crate::Error;
use crate::identity::{Mapping, San};
use crate::profile::Fact;
use crate::token::VerifiedToken;

pub(super) fn map(token: &VerifiedToken, settings: &EmailSettings) -> Result<Mapping, Error> {
    let issuer = token.issuer();
    let email = token.string_claim("email")?;
    if !looks_like_email(email) {
        return Err(Error::claim(
            &issuer.url,
            "email",
            format!("{email:?} is not an email address"),
        ));
    }
    if !settings.skip_email_verification {
        // Accept a JSON bool or the strings some IdPs send; absent means unverified.
        let verified = match token.claims().get("email_verified") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) if s == "true" || s == "True" => true,
            Some(Value::String(s)) if s == "false" || s == "False" => false,
            Some(_) => {
                return Err(Error::claim(&issuer.url, "email_verified", "must be true or false"));
            }
        };
        if !verified {
            return Err(Error::claim(
                &issuer.url,
                "email_verified",
                "is not true: the issuer has not verified this email",
            ));
        }
    }
    // A federated issuer (Dex) names the real upstream issuer in a claim.
    let mut facts = Vec::new();
    if let Some(path) = &settings.issuer_claim {
        let text = match path.select(token.claims()) {
            Some(Value::String(s)) if !s.is_empty() => token.bounded(path.as_str(), s)?.to_string(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            _ => {
                return Err(Error::claim(
                    &issuer.url,
                    path.as_str(),
                    "is missing or empty (issuer claim)",
                ));
            }
        };
        facts.push((Fact::Issuer, text));
    }
    Ok((email.to_string(), San::Email(email.to_string()), facts))
}

/// A deliberately plain check: one `@`, a non-empty local part, a dotted-label domain, no spaces.
fn looks_like_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !local.contains('@')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && !domain.is_empty()
        && domain
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_alphanumeric() || c == '-'))
}

#[cfg(test)]
mod tests {
    use super::looks_like_email;

    #[test]
    fn emails() {
        assert!(looks_like_email("alice@example.com"));
        assert!(looks_like_email("a.b+c@sub.example.org"));
        assert!(!looks_like_email("alice"));
        assert!(!looks_like_email("@example.com"));
        assert!(!looks_like_email("alice@"));
        assert!(!looks_like_email("al ice@example.com"));
        assert!(!looks_like_email("alice@exa..mple.com"));
    }
}
