//! Fulcio's own issuer file (`config/identity/config.yaml` or its JSON twin), accepted unchanged
//! and read as Fulcio reads it.
//!
//! Fulcio tries JSON first, then YAML (see [`yaml`] for how YAML is read). Go's JSON decoder
//! matches keys case-insensitively and the YAML spellings are kebab-case, so keys are compared
//! after folding case and dropping `-`/`_`: `OIDCIssuers`, `oidc-issuers` and `oidc_issuers` are
//! one key.
//!
//! Where Keyless CA used to be stricter than Fulcio, it now accepts what Fulcio accepts and
//! records a [`ConfigWarning`] with the path: unknown keys (Fulcio ignores them; a top-level
//! `define:` holding anchors is expected and not reported), settings on a type that does not use
//! them, a `ChallengeClaim` other than the type's, an `IssuerURL` that differs from its key or is
//! missing, a missing `ClientID`, unknown extension template fields, and `ci-provider` issuers
//! whose templates cannot render a SAN (every such token is refused, as in Fulcio). What Fulcio
//! refuses at load (an unknown type, `IssuerClaim` off email, bad trust or subject domains, a
//! template that does not parse) stays an error, as do Keyless CA's own rules (https issuer URLs,
//! no wildcard outside `MetaIssuers`, no issuer listed twice).

mod yaml;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::issuer::{self, CiProvider, IssuerConfig, IssuerType};
use crate::template::Template;
use crate::{ConfigError, ConfigWarning};

fn fold(k: &str) -> String {
    k.chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

fn get<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.iter()
        .find(|(k, _)| fold(k) == key)
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

fn string(m: &Map<String, Value>, key: &str, path: &str) -> Result<Option<String>, ConfigError> {
    match get(m, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ConfigError::rule(
            format!("{path}.{}", spelling(key)),
            format!("expected a string, found {other}"),
        )),
    }
}

/// Fulcio's JSON spelling of a folded key, for paths.
fn spelling(folded: &str) -> &str {
    [
        "OIDCIssuers",
        "MetaIssuers",
        "CIIssuerMetadata",
        "IssuerURL",
        "ClientID",
        "Type",
        "CIProvider",
        "IssuerClaim",
        "SubjectDomain",
        "SPIFFETrustDomain",
        "ChallengeClaim",
        "Description",
        "Contact",
        "Environment",
        "CACert",
        "SkipEmailVerification",
        "GitlabBaseURL",
        "DefaultTemplateValues",
        "ExtensionTemplates",
        "SubjectAlternativeNameTemplate",
    ]
    .into_iter()
    .find(|k| fold(k) == folded)
    .unwrap_or(folded)
}

/// Keys of an `OIDCIssuers`/`MetaIssuers` entry, folded: every field Fulcio reads, and
/// `GitlabBaseURL` (Keyless CA's; Fulcio ignores it).
const ENTRY_KEYS: &[&str] = &[
    "issuerurl",
    "clientid",
    "type",
    "ciprovider",
    "issuerclaim",
    "subjectdomain",
    "spiffetrustdomain",
    "challengeclaim",
    "description",
    "contact",
    "environment",
    "cacert",
    "skipemailverification",
    "gitlabbaseurl",
];

/// Keys of a `CIIssuerMetadata` entry, folded.
const METADATA_KEYS: &[&str] = &[
    "defaulttemplatevalues",
    "extensiontemplates",
    "subjectalternativenametemplate",
];

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

/// A Fulcio issuer file read: its issuers and what the operator should know.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) issuers: Vec<IssuerConfig>,
    pub(crate) warnings: Vec<ConfigWarning>,
}

/// The file as the JSON value Fulcio reads: JSON if it parses as JSON, YAML otherwise.
pub(crate) fn value(text: &str) -> Result<(Value, Vec<ConfigWarning>), ConfigError> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Ok((v, Vec::new()));
    }
    let doc = yaml::parse(text)?;
    Ok((doc.value, doc.warnings))
}

struct Reader {
    warnings: Vec<ConfigWarning>,
}

impl Reader {
    fn warn(&mut self, path: impl Into<String>, message: impl std::fmt::Display) {
        self.warnings.push(ConfigWarning::new(path, message));
    }

    /// Warns about each key of `m` not in `known` (folded).
    fn unknown_keys(&mut self, m: &Map<String, Value>, known: &[&str], path: &str) {
        for k in m.keys().filter(|k| !known.contains(&fold(k).as_str())) {
            self.warn(format!("{path}.{k}"), "unknown key, ignored (Fulcio ignores it too)");
        }
    }

    /// `CIIssuerMetadata`: every template is parsed now, so a syntax error stops the load.
    fn ci_providers(&mut self, root: &Map<String, Value>) -> Result<BTreeMap<String, Arc<CiProvider>>, ConfigError> {
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
            let empty = Map::new();
            let m = match m {
                Value::Object(m) => m,
                Value::Null => &empty,
                _ => return Err(ConfigError::rule(path, "expected a mapping")),
            };
            self.unknown_keys(m, METADATA_KEYS, &path);
            let mut defaults = BTreeMap::new();
            match get(m, "defaulttemplatevalues") {
                None => {}
                Some(Value::Object(d)) => {
                    for (k, v) in d {
                        defaults.insert(k.clone(), crate::template::claim_text(v));
                    }
                }
                Some(_) => {
                    return Err(ConfigError::rule(
                        format!("{path}.DefaultTemplateValues"),
                        "expected a mapping of name to value",
                    ));
                }
            }
            let san_path = format!("{path}.SubjectAlternativeNameTemplate");
            let san = match string(m, "subjectalternativenametemplate", &path)?.filter(|s| !s.trim().is_empty()) {
                Some(src) => {
                    Ok(Template::parse(&src).map_err(|e| ConfigError::rule(&san_path, format!("template: {e}")))?)
                }
                None => {
                    self.warn(
                        &san_path,
                        format!(
                            "is missing or empty: every token from an issuer using provider {name:?} is refused \
                             (Fulcio loads it and refuses them too)"
                        ),
                    );
                    Err("its subject-alternative-name-template is empty".to_string())
                }
            };
            let mut extensions = Vec::new();
            match get(m, "extensiontemplates") {
                None => {}
                Some(Value::Object(t)) => {
                    for (field, tpl) in t {
                        let key = fold(field);
                        let field_path = format!("{path}.ExtensionTemplates.{field}");
                        if key == "issuer" || key == "subject" {
                            continue; // always the token's iss and sub, as in Fulcio
                        }
                        if !EXTENSION_FIELDS.contains(&key.as_str()) {
                            self.warn(field_path, "unknown extension field, ignored (Fulcio ignores it too)");
                            continue;
                        }
                        let src = match tpl {
                            Value::Null => continue,
                            Value::String(src) => src,
                            _ => return Err(ConfigError::rule(field_path, "expected a string")),
                        };
                        if src.trim().is_empty() {
                            continue;
                        }
                        let t = Template::parse(src)
                            .map_err(|e| ConfigError::rule(field_path, format!("template: {e}")))?;
                        extensions.push((key, t));
                    }
                }
                Some(_) => {
                    return Err(ConfigError::rule(
                        format!("{path}.ExtensionTemplates"),
                        "expected a mapping of extension field to template",
                    ));
                }
            }
            out.insert(
                name.clone(),
                Arc::new(CiProvider::new(name.clone(), defaults, san, extensions)),
            );
        }
        Ok(out)
    }

    /// One `OIDCIssuers`/`MetaIssuers` entry.
    fn entry(
        &mut self,
        key: &str,
        entry: &Value,
        path: &str,
        meta: bool,
        providers: &BTreeMap<String, Arc<CiProvider>>,
    ) -> Result<IssuerConfig, ConfigError> {
        let Value::Object(e) = entry else {
            return Err(ConfigError::rule(path, "expected a mapping"));
        };
        self.unknown_keys(e, ENTRY_KEYS, path);
        for metadata in ["description", "contact", "environment"] {
            string(e, metadata, path)?; // read by people and deployment tooling, not the server
        }
        let written_url = string(e, "issuerurl", path)?.filter(|u| !u.is_empty());
        // A meta issuer's key is its pattern; Fulcio replaces its IssuerURL with the token's iss.
        let url = match written_url {
            _ if meta => {
                if written_url.is_some() {
                    self.warn(
                        format!("{path}.IssuerURL"),
                        "ignored: a meta issuer's key is its pattern (Fulcio ignores it too)",
                    );
                }
                key.to_string()
            }
            None => {
                self.warn(
                    format!("{path}.IssuerURL"),
                    format!(
                        "is missing: Keyless CA serves tokens whose iss is the key {key:?} \
                         (Fulcio would accept no token for this entry)"
                    ),
                );
                key.to_string()
            }
            Some(u) if u != key => {
                self.warn(
                    format!("{path}.IssuerURL"),
                    format!(
                        "{u:?} differs from the key it is listed under: tokens whose iss is {u:?} are served \
                         (Fulcio matches them too, but then finds no configuration under that URL for most \
                         issuer types and refuses them)"
                    ),
                );
                u
            }
            Some(u) => u,
        };
        if !meta && url.contains('*') {
            return Err(ConfigError::rule(path, "wildcards belong in MetaIssuers"));
        }
        let kind = string(e, "type", path)?.ok_or_else(|| ConfigError::rule(format!("{path}.Type"), "is required"))?;
        let ty = IssuerType::parse(&kind).ok();
        let uses = |t: &[IssuerType]| ty.is_none_or(|ty| t.contains(&ty));
        // Settings Fulcio ignores on a type that does not use them are dropped with a warning.
        let ignored = |reader: &mut Reader, field: &str, users: &str| {
            reader.warn(
                format!("{path}.{field}"),
                format!(
                    "ignored: only {users} issuers use it, not {} (Fulcio ignores it too)",
                    kind
                ),
            );
        };
        let mut subject_domain = string(e, "subjectdomain", path)?;
        if subject_domain.is_some() && !uses(&[IssuerType::Uri, IssuerType::Username]) {
            ignored(self, "SubjectDomain", "uri and username");
            subject_domain = None;
        }
        let mut spiffe_trust_domain = string(e, "spiffetrustdomain", path)?;
        if spiffe_trust_domain.is_some() && !uses(&[IssuerType::Spiffe]) {
            ignored(self, "SPIFFETrustDomain", "spiffe");
            spiffe_trust_domain = None;
        }
        let mut skip_email_verification = boolean(e, "skipemailverification", path)?;
        if skip_email_verification && !uses(&[IssuerType::Email]) {
            ignored(self, "SkipEmailVerification", "email");
            skip_email_verification = false;
        }
        let mut gitlab_base_url = string(e, "gitlabbaseurl", path)?;
        if gitlab_base_url.is_some() && !uses(&[IssuerType::GitlabPipeline]) {
            ignored(self, "GitlabBaseURL", "gitlab-pipeline");
            gitlab_base_url = None;
        }
        let named = string(e, "ciprovider", path)?;
        if named.is_some() && !uses(&[IssuerType::CiProvider]) {
            ignored(self, "CIProvider", "ci-provider");
        }
        // Fulcio only advertises ChallengeClaim; the proof is always over the type's own claim.
        let mut advertised = string(e, "challengeclaim", path)?;
        let mut challenge_claim = advertised.clone();
        if let (Some(c), Some(ty)) = (&advertised, ty) {
            if c == ty.default_challenge_claim() {
                advertised = None;
                challenge_claim = None;
            } else {
                self.warn(
                    format!("{path}.ChallengeClaim"),
                    format!(
                        "{c:?} is advertised in /api/v2/configuration, as Fulcio does, but the proof of \
                         possession is verified over {:?}, the claim {} issuers sign (as in Fulcio)",
                        ty.default_challenge_claim(),
                        ty.as_str()
                    ),
                );
                challenge_claim = None;
            }
        }
        let client_id = string(e, "clientid", path)?;
        if client_id.is_none() {
            self.warn(
                format!("{path}.ClientID"),
                format!(
                    "is missing: Keyless CA expects the audience {:?} (Fulcio would refuse every token)",
                    crate::DEFAULT_CLIENT_ID
                ),
            );
        }
        let fields = issuer::raw::Fields {
            url,
            kind: kind.clone(),
            client_id,
            skip_email_verification,
            challenge_claim,
            subject_domain,
            spiffe_trust_domain,
            issuer_claim: string(e, "issuerclaim", path)?,
            gitlab_base_url,
        };
        let mut unusable = None;
        let templates = || {
            let provider = match &named {
                Some(name) => providers.get(name).cloned().unwrap_or_else(|| {
                    unusable = Some(format!(
                        "names {name:?}, which is not in CIIssuerMetadata: every token from this issuer is \
                         refused (Fulcio loads it and refuses them too)"
                    ));
                    Arc::new(CiProvider::new(
                        name.clone(),
                        BTreeMap::new(),
                        Err(format!("CIIssuerMetadata has no provider {name:?}")),
                        Vec::new(),
                    ))
                }),
                None => {
                    unusable = Some(
                        "is missing: every token from this ci-provider issuer is refused \
                         (Fulcio loads it and refuses them too)"
                            .to_string(),
                    );
                    Arc::new(CiProvider::new(
                        String::new(),
                        BTreeMap::new(),
                        Err("the issuer names no CIProvider".to_string()),
                        Vec::new(),
                    ))
                }
            };
            Ok(provider)
        };
        let mut issuer =
            issuer::raw::build(fields, &issuer::raw::Keys::FULCIO, templates).map_err(|err| err.under(path))?;
        if let Some(reason) = unusable {
            self.warn(format!("{path}.CIProvider"), reason);
        }
        if advertised.is_some() {
            issuer.challenge_claim = advertised;
        }
        if let Some(pem) = string(e, "cacert", path)? {
            issuer::raw::check_pem(&pem).map_err(|err| ConfigError::rule(format!("{path}.CACert"), err))?;
            issuer.options.ca_cert_pem = Some(pem);
        }
        Ok(issuer)
    }
}

/// `SkipEmailVerification`: a JSON bool, or what yaml.v3 decodes into a Go bool (YAML 1.1's
/// `yes`/`no`/`on`/`off` included).
fn boolean(m: &Map<String, Value>, key: &str, path: &str) -> Result<bool, ConfigError> {
    match get(m, key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => match s.as_str() {
            "true" | "True" | "TRUE" | "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Ok(true),
            "false" | "False" | "FALSE" | "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Ok(false),
            other => Err(ConfigError::rule(
                format!("{path}.{}", spelling(key)),
                format!("expected true or false, found {other:?}"),
            )),
        },
        Some(other) => Err(ConfigError::rule(
            format!("{path}.{}", spelling(key)),
            format!("expected true or false, found {other}"),
        )),
    }
}

pub(crate) fn parse(text: &str) -> Result<Parsed, ConfigError> {
    let (root, warnings) = value(text)?;
    let mut reader = Reader { warnings };
    let root = match root {
        Value::Object(root) => root,
        Value::Null => {
            reader.warn("", "the file is empty: it names no issuers");
            Map::new()
        }
        _ => {
            return Err(ConfigError::rule(
                "",
                "expected a mapping with OIDCIssuers and/or MetaIssuers",
            ));
        }
    };
    // `define:` is where Fulcio's public file keeps its anchors.
    reader.unknown_keys(&root, &["oidcissuers", "metaissuers", "ciissuermetadata", "define"], "");
    let providers = reader.ci_providers(&root)?;
    let mut issuers = Vec::new();
    for (section, key, meta) in [
        ("OIDCIssuers", "oidcissuers", false),
        ("MetaIssuers", "metaissuers", true),
    ] {
        let Some(v) = get(&root, key) else { continue };
        let Value::Object(entries) = v else {
            return Err(ConfigError::rule(section, "expected a mapping of issuer URL to issuer"));
        };
        for (url, entry) in entries {
            let path = format!("{section}[{url:?}]");
            issuers.push(reader.entry(url, entry, &path, meta, &providers)?);
        }
    }
    // Unknown top-level keys were reported as `.key`; paths start at the root.
    for w in &mut reader.warnings {
        if let Some(p) = w.path.strip_prefix('.') {
            w.path = p.to_string();
        }
    }
    Ok(Parsed {
        issuers,
        warnings: reader.warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IssuerKind, IssuerType};

    fn issuers(text: &str) -> Vec<IssuerConfig> {
        parse(text).unwrap_or_else(|e| panic!("{text}: {e}")).issuers
    }

    fn warnings(text: &str) -> Vec<String> {
        parse(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .warnings
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("{text} loaded"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn json_and_yaml_spellings() {
        let json = r#"{"OIDCIssuers": {"https://accounts.google.com": {"IssuerURL": "https://accounts.google.com", "ClientID": "sigstore", "Type": "email"},
            "https://token.actions.githubusercontent.com": {"IssuerURL": "https://token.actions.githubusercontent.com", "ClientID": "sigstore", "Type": "github-workflow"}}}"#;
        let yaml = "define: [1]\noidc-issuers:\n  https://accounts.google.com:\n    issuer-url: https://accounts.google.com\n    client-id: sigstore\n    type: email\n  https://token.actions.githubusercontent.com:\n    issuer-url: https://token.actions.githubusercontent.com\n    client-id: sigstore\n    type: github-workflow\n";
        for text in [json, yaml] {
            let mut v = issuers(text);
            v.sort_by(|a, b| a.url.cmp(&b.url));
            assert_eq!(v.len(), 2);
            assert_eq!(v[0].kind.issuer_type(), IssuerType::Email);
            assert_eq!(v[1].kind, IssuerKind::GithubWorkflow);
            assert_eq!(v[1].client_id, "sigstore");
            assert!(warnings(text).is_empty(), "{text}");
        }
    }

    #[test]
    fn errors_name_the_entry() {
        assert_eq!(
            error(r#"{"OIDCIssuers": {"https://x.example": {"Type": "gitlab"}}}"#),
            r#"OIDCIssuers["https://x.example"].Type: unknown issuer type "gitlab""#
        );
        let e = error(r#"{"OIDCIssuers": {"http://x.example": {"Type": "email"}}}"#);
        assert!(e.starts_with(r#"OIDCIssuers["http://x.example"].IssuerURL:"#), "{e}");
        let e = error(r#"{"OIDCIssuers": {"https://x.example": {"Type": "email", "ClientID": 7}}}"#);
        assert!(
            e.starts_with(r#"OIDCIssuers["https://x.example"].ClientID: expected a string"#),
            "{e}"
        );
    }

    #[test]
    fn meta_issuers() {
        let v = issuers(
            r#"{"MetaIssuers": {"https://oidc.eks.*.amazonaws.com/id/*": {"ClientID": "sigstore", "Type": "kubernetes"}}}"#,
        );
        assert!(v[0].wildcard && v[0].kind == IssuerKind::Kubernetes);
        assert!(v[0].matches("https://oidc.eks.eu-west-1.amazonaws.com/id/ABC"));
        let e = error(
            r#"{"MetaIssuers": {"https://spire.*.example.com": {"Type": "spiffe", "SPIFFETrustDomain": "example.com"}}}"#,
        );
        assert!(e.starts_with("MetaIssuers[") && e.contains("cannot be meta"), "{e}");
        let e = error(r#"{"OIDCIssuers": {"https://*.example.com": {"Type": "email"}}}"#);
        assert!(e.contains("MetaIssuers"), "{e}");
    }

    /// A ci-provider entry whose templates cannot render a SAN loads, as in Fulcio, with a warning
    /// naming the entry; its tokens are refused when they come.
    #[test]
    fn unusable_ci_providers_load_with_warnings() {
        let meta = "ci-issuer-metadata:\n  my-ci:\n    subject-alternative-name-template: \"{{ .url }}/{{ .repo }}\"\n";
        let entry = |extra: &str| {
            format!(
                "{meta}oidc-issuers:\n  https://ci.example.com:\n    client-id: sigstore\n    issuer-url: https://ci.example.com\n    type: ci-provider\n{extra}"
            )
        };
        let v = issuers(&entry("    ci-provider: my-ci\n"));
        let IssuerKind::CiProvider(p) = &v[0].kind else {
            panic!("{:?}", v[0].kind)
        };
        assert_eq!(p.name(), "my-ci");
        assert!(p.san().is_ok());
        for (extra, warning, reason) in [
            (
                "",
                r#"OIDCIssuers["https://ci.example.com"].CIProvider: is missing: every token"#,
                "the issuer names no CIProvider",
            ),
            (
                "    ci-provider: other\n",
                r#"OIDCIssuers["https://ci.example.com"].CIProvider: names "other", which is not in CIIssuerMetadata"#,
                r#"CIIssuerMetadata has no provider "other""#,
            ),
        ] {
            let text = entry(extra);
            let w = warnings(&text);
            assert!(w.len() == 1 && w[0].starts_with(warning), "{w:?}");
            let IssuerKind::CiProvider(p) = &issuers(&text)[0].kind else {
                panic!("a ci-provider issuer")
            };
            assert_eq!(p.san().unwrap_err(), reason);
        }
        let text = "ci-issuer-metadata:\n  my-ci:\n    subject-alternative-name-template: \" \"\n";
        assert_eq!(
            warnings(text),
            [
                r#"CIIssuerMetadata["my-ci"].SubjectAlternativeNameTemplate: is missing or empty: every token from an issuer using provider "my-ci" is refused (Fulcio loads it and refuses them too)"#
            ]
        );
        // CIProvider on another type is ignored, as Fulcio ignores it.
        let text = format!(
            "{meta}oidc-issuers:\n  https://gh.example.com:\n    issuer-url: https://gh.example.com\n    client-id: sigstore\n    type: github-workflow\n    ci-provider: my-ci\n"
        );
        assert_eq!(issuers(&text)[0].kind, IssuerKind::GithubWorkflow);
        assert_eq!(
            warnings(&text),
            [
                r#"OIDCIssuers["https://gh.example.com"].CIProvider: ignored: only ci-provider issuers use it, not github-workflow (Fulcio ignores it too)"#
            ]
        );
    }

    /// Fulcio's spellings of kind settings reach the kind that owns them.
    #[test]
    fn kind_settings_from_fulcio_keys() {
        let v = issuers(
            r#"{"OIDCIssuers": {
                "https://spire.example.com": {"Type": "spiffe", "SPIFFETrustDomain": "example.com"},
                "https://id.example.com": {"Type": "username", "SubjectDomain": "example.com"},
                "https://gitlab.example.com": {"Type": "gitlab-pipeline", "GitlabBaseURL": "https://gitlab.com"},
                "https://dex.example.com": {"Type": "email", "IssuerClaim": "$.federated_claims.connector_id", "SkipEmailVerification": true}}}"#,
        );
        let by = |u: &str| &v.iter().find(|i| i.url == u).unwrap().kind;
        assert_eq!(
            by("https://spire.example.com").spiffe_trust_domain(),
            Some("example.com")
        );
        assert_eq!(by("https://id.example.com").subject_domain(), Some("example.com"));
        assert!(
            matches!(by("https://gitlab.example.com"), IssuerKind::GitlabPipeline(g) if g.base_url() == Some("https://gitlab.com"))
        );
        let IssuerKind::Email(e) = by("https://dex.example.com") else {
            panic!("an email issuer")
        };
        assert!(e.skip_email_verification && !e.allow_sub_challenge);
        assert_eq!(
            e.issuer_claim.as_ref().map(|p| p.as_str()),
            Some("$.federated_claims.connector_id")
        );
        // Fulcio refuses IssuerClaim on other types and malformed paths at load; so does Keyless CA.
        let e = error(r#"{"OIDCIssuers": {"https://dex.example.com": {"Type": "email", "IssuerClaim": "connector"}}}"#);
        assert!(
            e.starts_with(r#"OIDCIssuers["https://dex.example.com"].IssuerClaim:"#),
            "{e}"
        );
        let e = error(r#"{"OIDCIssuers": {"https://x.example.com": {"Type": "kubernetes", "IssuerClaim": "$.a"}}}"#);
        assert!(
            e.starts_with(r#"OIDCIssuers["https://x.example.com"].IssuerClaim:"#),
            "{e}"
        );
        // YAML's spellings of booleans, as yaml.v3 decodes them into Go's bool.
        let yes = "oidc-issuers:\n  https://a.example.com:\n    issuer-url: https://a.example.com\n    client-id: x\n    type: email\n    skip-email-verification: yes\n";
        assert!(issuers(yes)[0].kind.skip_email_verification());
        let e = error(&yes.replace("yes\n", "maybe\n"));
        assert!(
            e.ends_with(r#"SkipEmailVerification: expected true or false, found "maybe""#),
            "{e}"
        );
    }

    /// Everything Fulcio accepts at load loads here too, with a warning naming its path.
    #[test]
    fn fulcio_leniency_is_kept_with_warnings() {
        let text = r#"{"Unknown": 1, "OIDCIssuers": {
            "https://a.example.com": {"IssuerURL": "https://a.example.com", "ClientID": "sigstore", "Type": "email", "ChallengeClaim": "sub", "SubjectDomain": "example.com", "Extra": "x"},
            "https://b.example.com": {"IssuerURL": "https://b.example.com", "ClientID": "sigstore", "Type": "kubernetes", "SPIFFETrustDomain": "example.com", "SkipEmailVerification": true, "GitlabBaseURL": "https://gitlab.com"},
            "https://c.example.com": {"IssuerURL": "https://other.example.com", "ClientID": "sigstore", "Type": "github-workflow"},
            "https://d.example.com": {"Type": "chainguard-identity"},
            "https://e.example.com": {"IssuerURL": "https://e.example.com", "ClientID": "sigstore", "Type": "email", "ChallengeClaim": "email"}},
          "MetaIssuers": {"https://*.f.example.com": {"IssuerURL": "https://x.f.example.com", "ClientID": "sigstore", "Type": "kubernetes"}},
          "CIIssuerMetadata": {"p": {"SubjectAlternativeNameTemplate": "x", "ExtensionTemplates": {"NotAField": "y", "Issuer": "z"}}}}"#;
        let parsed = parse(text).unwrap();
        let got: Vec<String> = parsed.warnings.iter().map(ToString::to_string).collect();
        let expected = [
            "Unknown: unknown key, ignored (Fulcio ignores it too)",
            r#"CIIssuerMetadata["p"].ExtensionTemplates.NotAField: unknown extension field, ignored (Fulcio ignores it too)"#,
            r#"OIDCIssuers["https://a.example.com"].Extra: unknown key, ignored (Fulcio ignores it too)"#,
            r#"OIDCIssuers["https://a.example.com"].SubjectDomain: ignored: only uri and username issuers use it, not email (Fulcio ignores it too)"#,
            r#"OIDCIssuers["https://a.example.com"].ChallengeClaim: "sub" is advertised in /api/v2/configuration, as Fulcio does, but the proof of possession is verified over "email", the claim email issuers sign (as in Fulcio)"#,
            r#"OIDCIssuers["https://b.example.com"].SPIFFETrustDomain: ignored: only spiffe issuers use it, not kubernetes (Fulcio ignores it too)"#,
            r#"OIDCIssuers["https://b.example.com"].SkipEmailVerification: ignored: only email issuers use it, not kubernetes (Fulcio ignores it too)"#,
            r#"OIDCIssuers["https://b.example.com"].GitlabBaseURL: ignored: only gitlab-pipeline issuers use it, not kubernetes (Fulcio ignores it too)"#,
            r#"OIDCIssuers["https://c.example.com"].IssuerURL: "https://other.example.com" differs from the key it is listed under: tokens whose iss is "https://other.example.com" are served (Fulcio matches them too, but then finds no configuration under that URL for most issuer types and refuses them)"#,
            r#"OIDCIssuers["https://d.example.com"].IssuerURL: is missing: Keyless CA serves tokens whose iss is the key "https://d.example.com" (Fulcio would accept no token for this entry)"#,
            r#"OIDCIssuers["https://d.example.com"].ClientID: is missing: Keyless CA expects the audience "sigstore" (Fulcio would refuse every token)"#,
            r#"MetaIssuers["https://*.f.example.com"].IssuerURL: ignored: a meta issuer's key is its pattern (Fulcio ignores it too)"#,
        ];
        assert_eq!(got, expected);
        let by = |u: &str| parsed.issuers.iter().find(|i| i.url == u).unwrap();
        let a = by("https://a.example.com");
        assert_eq!(a.challenge_claim(), "sub", "advertised as configured, as Fulcio does");
        assert_eq!(a.kind.subject_domain(), None);
        assert!(!by("https://b.example.com").kind.skip_email_verification());
        assert!(parsed.issuers.iter().all(|i| i.url != "https://c.example.com"));
        assert_eq!(by("https://other.example.com").kind, IssuerKind::GithubWorkflow);
        assert_eq!(by("https://d.example.com").client_id, "sigstore");
        assert_eq!(
            by("https://e.example.com").challenge_claim,
            None,
            "the default is not an override"
        );
        assert!(by("https://*.f.example.com").wildcard);
    }

    /// Fulcio's public-good file: every issuer type, anchors used as mapping keys, no warnings.
    #[test]
    fn the_public_good_file_loads_without_warnings() {
        let parsed = parse(crate::PUBLIC_GOOD_ISSUERS).unwrap();
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        assert_eq!(parsed.issuers.len(), 22 + 9);
    }
}
