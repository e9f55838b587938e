use std::path::Path;

/// A configuration problem: the path of the offending key and the rule it broke.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value broke a rule. Displayed as `path: rule`.
    #[error("{}{rule}", prefix(path))]
    Rule {
        /// Dotted path such as `issuers[2].type`.
        path: String,
        /// What is wrong, in words.
        rule: String,
    },
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

fn prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

impl ConfigError {
    pub(crate) fn rule(path: impl Into<String>, rule: impl std::fmt::Display) -> Self {
        ConfigError::Rule {
            path: path.into(),
            rule: rule.to_string(),
        }
    }

    pub(crate) fn syntax(path: &str, e: impl std::fmt::Display) -> Self {
        ConfigError::rule(path, format!("invalid YAML/JSON: {e}"))
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        ConfigError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// Prefixes the path with a parent path (`issuers[2]` + `type` = `issuers[2].type`).
    pub(crate) fn under(self, parent: &str) -> Self {
        match self {
            ConfigError::Rule { path, rule } => {
                let path = if path.is_empty() {
                    parent.to_string()
                } else if path.starts_with('[') {
                    format!("{parent}{path}")
                } else {
                    format!("{parent}.{path}")
                };
                ConfigError::Rule { path, rule }
            }
            io => io,
        }
    }

    /// Names the file an error came from.
    pub(crate) fn in_file(self, file: &Path) -> Self {
        match self {
            ConfigError::Rule { path, rule } => ConfigError::Rule {
                path: if path.is_empty() {
                    file.display().to_string()
                } else {
                    format!("{}: {path}", file.display())
                },
                rule,
            },
            io => io,
        }
    }
}

/// Something a configuration does that loads (Fulcio accepts it, so Keyless CA does too) but that
/// an operator should know about: a setting that is ignored, or one Keyless CA applies
/// differently. `keyless config check` prints these apart from errors; `--strict` makes them
/// errors; `keyless serve` logs each at start-up and at every reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// Where, as in errors (`fulcio.yaml: OIDCIssuers["https://x"].ChallengeClaim`).
    pub path: String,
    /// What and why, in words.
    pub message: String,
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", prefix(&self.path), self.message)
    }
}

impl ConfigWarning {
    pub(crate) fn new(path: impl Into<String>, message: impl std::fmt::Display) -> Self {
        ConfigWarning {
            path: path.into(),
            message: message.to_string(),
        }
    }

    /// The same finding as an error (`keyless config check --strict`).
    pub fn into_error(self) -> ConfigError {
        ConfigError::Rule {
            path: self.path,
            rule: self.message,
        }
    }

    /// Names the file a warning came from.
    pub(crate) fn in_file(self, file: &Path) -> Self {
        let path = if self.path.is_empty() {
            file.display().to_string()
        } else {
            format!("{}: {}", file.display(), self.path)
        };
        ConfigWarning { path, ..self }
    }
}
