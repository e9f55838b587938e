//! `buildkite-job` issuers: the pipeline is the identity.

use crate::Error;
use crate::identity::{Mapping, San};
use crate::token::VerifiedToken;

pub(super) fn map(token: &VerifiedToken) -> Result<Mapping, Error> {
    let sub = token.string_claim("sub")?;
    let org = token.string_claim("organization_slug")?;
    let pipeline = token.string_claim("pipeline_slug")?;
    let san = San::uri(
        &token.issuer().url,
        "organization_slug/pipeline_slug",
        format!("https://buildkite.com/{org}/{pipeline}"),
    )?;
    Ok((sub.to_string(), san, Vec::new()))
}
