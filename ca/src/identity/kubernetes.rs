//! `kubernetes` issuers: the service account is the identity. Unlike Fulcio, empty namespace or
//! service-account names are refused rather than producing empty path segments.

use serde_json::Value;

use crate::Error;
use crate::identity::{Mapping, San};
use crate::token::VerifiedToken;

pub(super) fn map(token: &VerifiedToken) -> Result<Mapping, Error> {
    let url = &token.issuer().url;
    let sub = token.string_claim("sub")?;
    let k8s = token.claims().get("kubernetes.io");
    let ns = k8s
        .and_then(|k| k.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let sa = k8s
        .and_then(|k| k.get("serviceaccount"))
        .and_then(|s| s.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if ns.is_empty() {
        return Err(Error::claim(url, "kubernetes.io.namespace", "is missing or empty"));
    }
    if sa.is_empty() {
        return Err(Error::claim(
            url,
            "kubernetes.io.serviceaccount.name",
            "is missing or empty",
        ));
    }
    token.bounded("kubernetes.io.namespace", ns)?;
    token.bounded("kubernetes.io.serviceaccount.name", sa)?;
    let san = format!("https://kubernetes.io/namespaces/{ns}/serviceaccounts/{sa}");
    Ok((sub.to_string(), San::uri(url, "kubernetes.io", san)?, Vec::new()))
}
