use std::fmt;
use std::path::PathBuf;

/// Where a secret comes from. Secrets are never written literally in a config file.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// `env:NAME`
    Env(String),
    /// `file:PATH` (trailing newline stripped)
    File(PathBuf),
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "env:{n}"),
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// A resolved secret. Its `Debug` output is redacted so it cannot reach a log by accident.
#[derive(Clone)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// The secret's bytes, for handing to the code that needs them.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl SecretRef {
    /// Parses `env:NAME` or `file:PATH`. The error never repeats the value, which may be a secret.
    pub fn parse(s: &str) -> Result<SecretRef, String> {
        if let Some(name) = s.strip_prefix("env:") {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err("env: needs a variable name of letters, digits and _".into());
            }
            Ok(SecretRef::Env(name.to_string()))
        } else if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err("file: needs a path".into());
            }
            Ok(SecretRef::File(PathBuf::from(path)))
        } else {
            Err("secrets must be references (`env:NAME` or `file:PATH`), never literal values".into())
        }
    }

    /// Reads the secret. The error names the reference, never the value.
    pub fn resolve(&self) -> Result<Secret, String> {
        match self {
            SecretRef::Env(name) => std::env::var(name)
                .map(Secret)
                .map_err(|_| format!("environment variable {name} is not set")),
            SecretRef::File(p) => std::fs::read_to_string(p)
                .map(|s| Secret(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| format!("cannot read secret file {}: {e}", p.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(SecretRef::parse("env:A_B"), Ok(SecretRef::Env("A_B".into())));
        assert_eq!(SecretRef::parse("file:/x"), Ok(SecretRef::File("/x".into())));
        assert!(SecretRef::parse("literal").is_err());
        assert!(SecretRef::parse("env:").is_err());
        assert_eq!(format!("{:?}", Secret("pw".into())), "Secret(<redacted>)");
    }
}
