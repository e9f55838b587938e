//! `username` issuers: the SAN is an OtherName (type 1.3.6.1.4.1.57264.1.7) holding
//! `sub!subject_domain`.

use crate::Error;
use crate::identity::{Mapping, San};
use crate::token::VerifiedToken;

pub(super) fn map(token: &VerifiedToken) -> Result<Mapping, Error> {
    let url = &token.issuer().url;
    let sub = token.string_claim("sub")?;
    if sub.contains('!') {
        return Err(Error::claim(url, "sub", "must not contain '!'"));
    }
    if sub.contains('@') {
        return Err(Error::claim(url, "sub", "looks like an email address, not a username"));
    }
    let domain = token.issuer().subject_domain.as_deref().unwrap_or_default();
    Ok((sub.to_string(), San::OtherName(format!("{sub}!{domain}")), Vec::new()))
}
