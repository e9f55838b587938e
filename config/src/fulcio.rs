//! Fulcio's own issuer file (`config/identity/config.yaml` or its JSON twin), accepted unchanged.
//!
//! Fulcio decodes JSON keys case-insensitively and also has kebab-case YAML spellings, so keys are
//! compared after folding case and dropping `-`/`_`: `OIDCIssuers`, `oidc-issuers` and
//! `oidc_issuers` are one key. Unknown keys are ignored, as Fulcio does (its public file carries a
//! `define:` list used only for YAML anchors).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::ConfigError;
use crate::issuer::{self, CiProvider, IssuerConfig, IssuerType};
use crate::template::Template;

fn fold(k: &str) -> String {
    k.chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

fn get<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.iter().find(|(k, _)| fold(k) == key).map(|(_, v)| v)
}

fn string(m: &Map<String, Value>, key: &str, path: &str) -> Result<Option<String>, ConfigError> {
    match get(m, key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ConfigError::rule(
            format!("{path}.{key}"),
            format!("expected a string, found {other}"),
        )),
    }
}

/// Extension template fields Fulcio knows, folded (`GithubWorkflowTrigger` → `githubworkflowtrigger`).
pub(crate) const EXTENSION_FIELDS: &[&str] = &[
    "githubworkflowtrigger",
    "githubworkflowsha",
    "githubworkflowname",
    "githubworkflowrepository",
    "githubworkflowref",
    "buildsigneruri",
    "buildsignerdigest",
    "runnerenvironment",
    "sourcerepositoryuri",
    "sourcerepositorydigest",
    "sourcerepositoryref",
    "sourcerepositoryidentifier",
    "sourcerepositoryowneruri",
    "sourcerepositoryowneridentifier",
    "buildconfiguri",
    "buildconfigdigest",
    "buildtrigger",
    "runinvocationuri",
    "sourcerepositoryvisibilityatsigning",
    "deploymentenvironment",
];

/// `CIIssuerMetadata`: every template is parsed now, so a syntax error stops the load.
fn ci_providers(root: &Map<String, Value>) -> Result<BTreeMap<String, Arc<CiProvider>>, ConfigError> {
    let mut out = BTreeMap::new();
    let Some(meta) = get(root, "ciissuermetadata") else {
        return Ok(out);
    };
    let Value::Object(meta) = meta else {
        return Err(ConfigError::rule(
            "CIIssuerMetadata",
            "expected a mapping of provider name to metadata",
        ));
    };
    for (name, m) in meta {
        let path = format!("CIIssuerMetadata[{name:?}]");
        let Value::Object(m) = m else {
            return Err(ConfigError::rule(path, "expected a mapping"));
        };
        let mut defaults = BTreeMap::new();
        if let Some(Value::Object(d)) = get(m, "defaulttemplatevalues") {
            for (k, v) in d {
                defaults.insert(k.clone(), crate::template::claim_text(v));
            }
        }
        let san_src = string(m, "subjectalternativenametemplate", &path)?
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                ConfigError::rule(
                    format!("{path}.SubjectAlternativeNameTemplate"),
                    "is required and must not be empty",
                )
            })?;
        let san = Template::parse(&san_src).map_err(|e| {
            ConfigError::rule(
                format!("{path}.SubjectAlternativeNameTemplate"),
                format!("template: {e}"),
            )
        })?;
        let mut extensions = Vec::new();
        if let Some(Value::Object(t)) = get(m, "extensiontemplates") {
            for (field, tpl) in t {
                let key = fold(field);
                if key == "issuer" || key == "subject" {
                    continue; // always the token's iss and sub, as in Fulcio
                }
                if !EXTENSION_FIELDS.contains(&key.as_str()) {
                    return Err(ConfigError::rule(
                        format!("{path}.ExtensionTemplates.{field}"),
                        "unknown extension field",
                    ));
                }
                let Value::String(src) = tpl else {
                    return Err(ConfigError::rule(
                        format!("{path}.ExtensionTemplates.{field}"),
                        "expected a string",
                    ));
                };
                if src.trim().is_empty() {
                    continue;
                }
                let t = Template::parse(src).map_err(|e| {
                    ConfigError::rule(format!("{path}.ExtensionTemplates.{field}"), format!("template: {e}"))
                })?;
                extensions.push((key, t));
            }
        }
        out.insert(
            name.clone(),
            Arc::new(CiProvider::new(name.clone(), defaults, san, extensions)),
        );
    }
    Ok(out)
}

/// One `OIDCIssuers`/`MetaIssuers` entry. A `ci-provider` entry gets its templates from
/// `providers` (named by `CIProvider`), so one without usable templates never loads.
fn entry_issuer(
    url: &str,
    entry: &Value,
    path: &str,
    wildcard: bool,
    providers: &BTreeMap<String, Arc<CiProvider>>,
) -> Result<IssuerConfig, ConfigError> {
    let Value::Object(e) = entry else {
        return Err(ConfigError::rule(path, "expected a mapping"));
    };
    // A meta issuer's key is its pattern; its IssuerURL (if any) is ignored, as in Fulcio.
    let issuer_url = if wildcard {
        url.to_string()
    } else {
        string(e, "issuerurl", path)?.unwrap_or_else(|| url.to_string())
    };
    if issuer_url != url {
        return Err(ConfigError::rule(
            format!("{path}.IssuerURL"),
            format!("{issuer_url:?} differs from the key it is listed under"),
        ));
    }
    if !wildcard && url.contains('*') {
        return Err(ConfigError::rule(path, "wildcards belong in MetaIssuers"));
    }
    let kind = string(e, "type", path)?.ok_or_else(|| ConfigError::rule(format!("{path}.Type"), "is required"))?;
    let skip = match get(e, "skipemailverification") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ConfigError::rule(
                format!("{path}.SkipEmailVerification"),
                format!("expected true or false, found {other}"),
            ));
        }
    };
    let fields = issuer::raw::Fields {
        url: issuer_url,
        kind,
        client_id: string(e, "clientid", path)?,
        skip_email_verification: skip,
        challenge_claim: string(e, "challengeclaim", path)?,
        subject_domain: string(e, "subjectdomain", path)?,
        spiffe_trust_domain: string(e, "spiffetrustdomain", path)?,
        issuer_claim: string(e, "issuerclaim", path)?,
    };
    let named = get(e, "ciprovider").and_then(Value::as_str);
    let templates = || match named {
        Some(name) => providers.get(name).cloned().ok_or_else(|| {
            ConfigError::rule(
                "CIProvider",
                format!("unknown provider {name:?} (not in CIIssuerMetadata)"),
            )
        }),
        None => Err(ConfigError::rule("CIProvider", "is required for ci-provider issuers")),
    };
    let mut issuer =
        issuer::raw::build(fields, &issuer::raw::Keys::FULCIO, templates).map_err(|err| err.under(path))?;
    if let Some(pem) = string(e, "cacert", path)? {
        issuer::raw::check_pem(&pem).map_err(|err| ConfigError::rule(format!("{path}.CACert"), err))?;
        issuer.options.ca_cert_pem = Some(pem);
    }
    if named.is_some() && issuer.kind.issuer_type() != IssuerType::CiProvider {
        return Err(ConfigError::rule(
            format!("{path}.CIProvider"),
            "applies only to issuers of type ci-provider",
        ));
    }
    Ok(issuer)
}

pub(crate) fn parse(text: &str) -> Result<Vec<IssuerConfig>, ConfigError> {
    let root: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => crate::parse_yaml(text).map_err(|e| ConfigError::syntax("", e))?,
    };
    let Value::Object(root) = root else {
        return Err(ConfigError::rule(
            "",
            "expected a mapping with OIDCIssuers and/or MetaIssuers",
        ));
    };
    let providers = ci_providers(&root)?;
    let mut out = Vec::new();
    for (section, key, wildcard) in [
        ("OIDCIssuers", "oidcissuers", false),
        ("MetaIssuers", "metaissuers", true),
    ] {
        let Some(v) = get(&root, key) else { continue };
        let Value::Object(issuers) = v else {
            return Err(ConfigError::rule(section, "expected a mapping of issuer URL to issuer"));
        };
        for (url, entry) in issuers {
            let path = format!("{section}[{url:?}]");
            out.push(entry_issuer(url, entry, &path, wildcard, &providers)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IssuerType;

    #[test]
    fn json_and_yaml_spellings() {
        let json = r#"{"OIDCIssuers": {"https://accounts.google.com": {"IssuerURL": "https://accounts.google.com", "ClientID": "sigstore", "Type": "email"},
            "https://token.actions.githubusercontent.com": {"IssuerURL": "https://token.actions.githubusercontent.com", "ClientID": "sigstore", "Type": "github-workflow"}}}"#;
        let yaml = "define: [1]\noidc-issuers:\n  https://accounts.google.com:\n    issuer-url: https://accounts.google.com\n    client-id: sigstore\n    type: email\n  https://token.actions.githubusercontent.com:\n    issuer-url: https://token.actions.githubusercontent.com\n    client-id: sigstore\n    type: github-workflow\n";
        for text in [json, yaml] {
            let mut v = parse(text).unwrap();
            v.sort_by(|a, b| a.url.cmp(&b.url));
            assert_eq!(v.len(), 2);
            assert_eq!(v[0].kind.issuer_type(), IssuerType::Email);
            assert_eq!(v[1].kind, crate::IssuerKind::GithubWorkflow);
            assert_eq!(v[1].client_id, "sigstore");
        }
    }

    #[test]
    fn errors_name_the_entry() {
        let e = parse(r#"{"OIDCIssuers": {"https://x.example": {"Type": "gitlab"}}}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            r#"OIDCIssuers["https://x.example"].Type: unknown issuer type "gitlab""#
        );
        let e = parse(r#"{"OIDCIssuers": {"http://x.example": {"Type": "email"}}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(r#"OIDCIssuers["http://x.example"].IssuerURL:"#), "{e}");
    }

    #[test]
    fn meta_issuers() {
        let v = parse(r#"{"MetaIssuers": {"https://oidc.eks.*.amazonaws.com/id/*": {"ClientID": "sigstore", "Type": "kubernetes"}}}"#)
            .unwrap();
        assert!(v[0].wildcard && v[0].kind == crate::IssuerKind::Kubernetes);
        assert!(v[0].matches("https://oidc.eks.eu-west-1.amazonaws.com/id/ABC"));
        let e = parse(r#"{"MetaIssuers": {"https://spire.*.example.com": {"Type": "spiffe", "SPIFFETrustDomain": "example.com"}}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("MetaIssuers[") && e.contains("cannot be meta"), "{e}");
        let e = parse(r#"{"OIDCIssuers": {"https://*.example.com": {"Type": "email"}}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("MetaIssuers"), "{e}");
    }

    /// A ci-provider entry loads only with usable templates; every refusal names the entry.
    #[test]
    fn ci_provider_entries_need_usable_templates() {
        let meta = "ci-issuer-metadata:\n  my-ci:\n    subject-alternative-name-template: \"{{ .url }}/{{ .repo }}\"\n";
        let entry =
            |extra: &str| format!("{meta}oidc-issuers:\n  https://ci.example.com:\n    type: ci-provider\n{extra}");
        let v = parse(&entry("    ci-provider: my-ci\n")).unwrap();
        let crate::IssuerKind::CiProvider(p) = &v[0].kind else {
            panic!("{:?}", v[0].kind)
        };
        assert_eq!(p.name(), "my-ci");
        assert_eq!(
            parse(&entry("")).unwrap_err().to_string(),
            r#"OIDCIssuers["https://ci.example.com"].CIProvider: is required for ci-provider issuers"#
        );
        assert_eq!(
            parse(&entry("    ci-provider: other\n")).unwrap_err().to_string(),
            r#"OIDCIssuers["https://ci.example.com"].CIProvider: unknown provider "other" (not in CIIssuerMetadata)"#
        );
        let e = parse("ci-issuer-metadata:\n  my-ci:\n    subject-alternative-name-template: \" \"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            r#"CIIssuerMetadata["my-ci"].SubjectAlternativeNameTemplate: is required and must not be empty"#
        );
        let e = parse(&format!(
            "{meta}oidc-issuers:\n  https://gh.example.com:\n    type: github-workflow\n    ci-provider: my-ci\n"
        ))
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            r#"OIDCIssuers["https://gh.example.com"].CIProvider: applies only to issuers of type ci-provider"#
        );
    }

    /// Fulcio's spellings of kind settings reach the kind that owns them.
    #[test]
    fn kind_settings_from_fulcio_keys() {
        let v = parse(
            r#"{"OIDCIssuers": {
                "https://spire.example.com": {"Type": "spiffe", "SPIFFETrustDomain": "example.com"},
                "https://id.example.com": {"Type": "username", "SubjectDomain": "example.com"},
                "https://dex.example.com": {"Type": "email", "IssuerClaim": "$.federated_claims.connector_id", "SkipEmailVerification": true}}}"#,
        )
        .unwrap();
        let by = |u: &str| &v.iter().find(|i| i.url == u).unwrap().kind;
        assert_eq!(
            by("https://spire.example.com").spiffe_trust_domain(),
            Some("example.com")
        );
        assert_eq!(by("https://id.example.com").subject_domain(), Some("example.com"));
        let crate::IssuerKind::Email(e) = by("https://dex.example.com") else {
            panic!("an email issuer")
        };
        assert!(e.skip_email_verification && !e.allow_sub_challenge);
        assert_eq!(
            e.issuer_claim.as_ref().map(|p| p.as_str()),
            Some("$.federated_claims.connector_id")
        );
        let e = parse(r#"{"OIDCIssuers": {"https://dex.example.com": {"Type": "email", "IssuerClaim": "connector"}}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(r#"OIDCIssuers["https://dex.example.com"].IssuerClaim:"#),
            "{e}"
        );
    }
}
