//! `username` issuers: the SAN is an OtherName (type 1.3.6.1.4.1.57264.1.7) holding
//! `sub!subject_domain`.

use keyless_config::UsernameSettings;

use crate::Error;
use crate::identity::{Mapping, San};
use crate::token::VerifiedToken;

pub(super) fn map(token: &VerifiedToken, settings: &UsernameSettings) -> Result<Mapping, Error> {
    let url = &token.issuer().url;
    let sub = token.string_claim("sub")?;
    if sub.contains('!') {
        return Err(Error::claim(url, "sub", "must not contain '!'"));
    }
    if sub.contains('@') {
        return Err(Error::claim(url, "sub", "looks like an email address, not a username"));
    }
    let domain = settings.subject_domain();
    Ok((sub.to_string(), San::OtherName(format!("{sub}!{domain}")), Vec::new()))
}
