//! `kubernetes` issuers: the service account is the identity, with Fulcio's mapping:
//! `https://kubernetes.io/namespaces/{kubernetes.io.namespace}/serviceaccounts/{kubernetes.io.serviceaccount.name}`.
//! As in Fulcio, absent values are empty path segments; values of the wrong JSON type are refused,
//! as Go's decoder refuses them.

use serde_json::Value;

use crate::Error;
use crate::identity::{Mapping, San};
use crate::token::VerifiedToken;

pub(super) fn map(token: &VerifiedToken) -> Result<Mapping, Error> {
    let url = &token.issuer().url;
    let sub = token.string_claim("sub")?;
    let wrong = |claim: &str, what: &str| Error::claim(url, claim, format!("must be {what}"));
    let object = |v: Option<&Value>, claim: &str| match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m.clone())),
        Some(_) => Err(wrong(claim, "an object")),
    };
    let string = |v: Option<&Value>, claim: &str| match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => token.bounded(claim, s).map(str::to_string),
        Some(_) => Err(wrong(claim, "a string")),
    };
    let k8s = object(token.claims().get("kubernetes.io"), "kubernetes.io")?.unwrap_or_default();
    let ns = string(k8s.get("namespace"), "kubernetes.io.namespace")?;
    for nested in ["pod", "serviceaccount"] {
        let claim = format!("kubernetes.io.{nested}");
        let m = object(k8s.get(nested), &claim)?.unwrap_or_default();
        for field in ["name", "uid"] {
            string(m.get(field), &format!("{claim}.{field}"))?;
        }
    }
    let sa = k8s
        .get("serviceaccount")
        .and_then(|s| s.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let san = format!("https://kubernetes.io/namespaces/{ns}/serviceaccounts/{sa}");
    Ok((sub.to_string(), San::uri(url, "kubernetes.io", san)?, Vec::new()))
}
