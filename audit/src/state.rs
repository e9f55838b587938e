//! The outcome of the last `verify` and `cross-check`, kept as JSON next to the record so the
//! review page can show when the record and the log were last checked, and what was found.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckState {
    /// When it ran, ms since the epoch.
    pub time_ms: u64,
    /// Nothing was found.
    pub ok: bool,
    /// One line per finding, or a summary when `ok`.
    pub lines: Vec<String>,
}

fn path(dir: &Path, check: &str) -> PathBuf {
    dir.join(format!("last-{check}.json"))
}

/// Saves the outcome of `check` (`verify` or `cross-check`).
pub fn save(dir: &Path, check: &str, ok: bool, lines: Vec<String>) -> Result<(), crate::AuditError> {
    let state = CheckState {
        time_ms: crate::now_ms(),
        ok,
        lines,
    };
    let json = serde_json::to_vec_pretty(&state).map_err(|e| crate::AuditError::Storage(e.to_string()))?;
    std::fs::write(path(dir, check), json).map_err(|e| crate::AuditError::Storage(e.to_string()))
}

/// The last saved outcome of `check`, if it ever ran.
pub fn load(dir: &Path, check: &str) -> Option<CheckState> {
    serde_json::from_slice(&std::fs::read(path(dir, check)).ok()?).ok()
}
