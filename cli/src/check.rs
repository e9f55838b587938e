//! `keyless config check`: validate a configuration, optionally probe every issuer, and explain
//! what a token would get — all without issuing anything. Warnings (what loads, as Fulcio loads
//! it, but deserves attention) are reported apart from errors; `--strict` makes them errors.

use std::path::Path;

use keyless_ca::profile::{Encoding, SIGSTORE_EXTENSIONS};
use keyless_config::Config;
use keyless_oidc::OidcVerifier;
use serde_json::{Value, json};

/// Runs the check; returns the report and whether everything passed.
pub async fn run(path: &Path, token: Option<&str>, online: bool, strict: bool) -> (Value, bool) {
    let invalid = |errors: Vec<String>, warnings: Vec<String>| {
        json!({"config": path.display().to_string(), "valid": false, "error": errors.join("\n"),
               "errors": errors, "warnings": warnings})
    };
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return (invalid(vec![e.to_string()], Vec::new()), false),
    };
    let mut warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    let mut errors = Vec::new();
    // What `keyless serve` refuses at start-up is an error here too.
    if let Err(e) = config.check_trusts_issuers() {
        errors.push(e.to_string());
    }
    if strict {
        errors.append(&mut warnings);
    }
    if !errors.is_empty() {
        return (invalid(errors, warnings), false);
    }
    // Where decisions are recorded; a PostgreSQL URL is shown as its reference, never its value.
    let record = match (&config.audit.enabled, &config.audit.postgres) {
        (false, _) => "disabled".to_string(),
        (true, Some(p)) => format!(
            "postgresql, url from {:?}, pool_size {}{}; rate limits shared by every replica",
            p.url,
            p.pool_size,
            p.ca_cert
                .as_ref()
                .map(|c| format!(", server verified against {}", c.display()))
                .unwrap_or_default()
        ),
        (true, None) => format!(
            "sqlite in {}",
            keyless_audit::store::audit_dir(&config.data_dir).display()
        ),
    };
    let mut report = json!({"config": path.display().to_string(), "valid": true, "issuers": config.issuers.len(),
                            "record": record, "warnings": warnings});
    let mut ok = true;
    let verifier = match OidcVerifier::new(&config.issuers) {
        Ok(v) => v,
        Err(e) => {
            return (
                json!({"config": path.display().to_string(), "valid": false, "error": e.to_string()}),
                false,
            );
        }
    };
    if online {
        let mut probes = Vec::new();
        for i in config.issuers.iter().filter(|i| !i.wildcard) {
            let r = verifier.probe(&i.url).await;
            ok &= r.is_ok();
            probes.push(match r {
                Ok(n) => json!({"issuer": i.url, "reachable": true, "keys": n}),
                Err(e) => json!({"issuer": i.url, "reachable": false, "error": e}),
            });
        }
        report["online"] = json!(probes);
    }
    if let Some(raw) = token {
        let explanation = explain(&verifier, raw.trim()).await;
        ok &= explanation["would_issue"] == true;
        report["token"] = explanation;
    }
    (report, ok)
}

async fn explain(verifier: &OidcVerifier, raw: &str) -> Value {
    let unverified = keyless_ca::token::parse(raw);
    let claimed_issuer = unverified.as_ref().map(|t| t.issuer().to_string()).unwrap_or_default();
    let token = match verifier.verify(raw).await {
        Ok(t) => t,
        Err(e) => return json!({"issuer": claimed_issuer, "would_issue": false, "verification": e.to_string()}),
    };
    let mut out = json!({
        "issuer": token.issuer().url, "kind": token.issuer().kind.as_str(),
        "verification": "signature, issuer, audience and lifetime are valid",
    });
    let principal = match keyless_ca::identity::principal(&token) {
        Ok(p) => p,
        Err(e) => {
            out["would_issue"] = json!(false);
            out["identity"] = json!(e.to_string());
            return out;
        }
    };
    out["policy"] = match keyless_ca::policy::check(&token) {
        Ok(()) => json!("allowed"),
        Err(e) => {
            out["would_issue"] = json!(false);
            json!(e.to_string())
        }
    };
    out["proof_of_possession_signs"] = json!(principal.name());
    out["san"] = json!(principal.san().value());
    let mut exts = Vec::new();
    for row in SIGSTORE_EXTENSIONS {
        if let Some((_, v)) = principal.facts().iter().find(|(f, v)| *f == row.fact && !v.is_empty()) {
            let encoding = if row.encoding == Encoding::Raw {
                "raw"
            } else {
                "UTF8String"
            };
            exts.push(json!({"oid": format!("1.3.6.1.4.1.57264.1.{}", row.arc), "name": row.name, "encoding": encoding, "value": v}));
        }
    }
    out["extensions"] = json!(exts);
    if out.get("would_issue").is_none() {
        out["would_issue"] = json!(true);
    }
    out
}

/// Human-readable rendering of the report.
pub fn render(report: &Value) -> String {
    let mut s = String::new();
    let lines = |key: &str| {
        report[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    if report["valid"] == false {
        s += &format!("{}: INVALID\n", report["config"].as_str().unwrap_or(""));
        for e in lines("errors") {
            s += &format!("  error: {e}\n");
        }
        for w in lines("warnings") {
            s += &format!("  warning: {w}\n");
        }
        return s;
    }
    s += &format!(
        "{}: valid ({} issuers)\n",
        report["config"].as_str().unwrap_or(""),
        report["issuers"]
    );
    if let Some(record) = report["record"].as_str() {
        s += &format!("  issuance record: {record}\n");
    }
    for w in lines("warnings") {
        s += &format!("  warning: {w}\n");
    }
    for p in report["online"].as_array().into_iter().flatten() {
        match p["reachable"].as_bool() {
            Some(true) => {
                s += &format!(
                    "  online  {}  ({} keys)\n",
                    p["issuer"].as_str().unwrap_or(""),
                    p["keys"]
                )
            }
            _ => {
                s += &format!(
                    "  DOWN    {}  {}\n",
                    p["issuer"].as_str().unwrap_or(""),
                    p["error"].as_str().unwrap_or("")
                )
            }
        }
    }
    let t = &report["token"];
    if !t.is_null() {
        s += &format!("token from {}\n", t["issuer"].as_str().unwrap_or("?"));
        for key in ["verification", "identity", "policy"] {
            if let Some(v) = t[key].as_str() {
                s += &format!("  {key}: {v}\n");
            }
        }
        if let Some(san) = t["san"].as_str() {
            s += &format!(
                "  SAN: {san}\n  proof of possession signs: {}\n",
                t["proof_of_possession_signs"].as_str().unwrap_or("")
            );
            for e in t["extensions"].as_array().into_iter().flatten() {
                s += &format!(
                    "  {} {} = {}\n",
                    e["oid"].as_str().unwrap_or(""),
                    e["name"].as_str().unwrap_or(""),
                    e["value"].as_str().unwrap_or("")
                );
            }
        }
        s += &format!(
            "  would issue: {}\n",
            if t["would_issue"] == true { "yes" } else { "no" }
        );
    }
    s
}
