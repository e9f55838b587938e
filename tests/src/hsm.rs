//! Where a test server's CA key lives: the generated file CA, or a throwaway SoftHSM2 token.

use std::path::PathBuf;
use std::process::Command;

/// Where the CA key of a test server lives.
pub enum Backend {
    /// The generated file CA.
    File,
    /// A fresh SoftHSM2 token.
    Pkcs11(SoftHsm),
}

impl Backend {
    /// A fresh SoftHSM2 token backend.
    pub fn softhsm() -> Backend {
        Backend::Pkcs11(SoftHsm::new())
    }
}

/// The SoftHSM2 PKCS#11 module installed by `softhsm2` (scripts/test.sh).
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The user PIN of test tokens. Distinctive, so "the PIN is never logged" cannot pass or fail by
/// a chance match with a serial number or timestamp.
pub const HSM_PIN: &str = "test-pin-Qz7w";

/// A throwaway SoftHSM2 token in a temporary directory (never the system token directory).
pub struct SoftHsm {
    /// Holds `softhsm2.conf` and the token files.
    pub dir: tempfile::TempDir,
    /// The token label.
    pub label: String,
}

impl SoftHsm {
    /// Creates the token (label `keyless`, PIN [`HSM_PIN`]).
    pub fn new() -> SoftHsm {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let hsm = SoftHsm {
            dir,
            label: "keyless".into(),
        };
        hsm.util(&[
            "--init-token",
            "--free",
            "--label",
            "keyless",
            "--pin",
            HSM_PIN,
            "--so-pin",
            "8765",
        ]);
        hsm
    }

    /// `SOFTHSM2_CONF` for processes using this token.
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }

    /// The environment a keyless process needs: the SoftHSM config and the PIN variable.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("SOFTHSM2_CONF".into(), self.conf().display().to_string()),
            ("KEYLESS_HSM_PIN".into(), HSM_PIN.into()),
        ]
    }

    /// The `ca:` section for this token.
    pub fn ca_yaml(&self, key_label: &str, chain: &str) -> String {
        format!(
            "ca:\n  pkcs11: {{module: {SOFTHSM_MODULE}, token_label: {}, pin: env:KEYLESS_HSM_PIN, key_label: {key_label}, chain: {chain}}}\n",
            self.label
        )
    }

    /// Runs `softhsm2-util` against this token directory.
    pub fn util(&self, args: &[&str]) -> String {
        self.tool("softhsm2-util", &[], args)
    }

    /// Runs `pkcs11-tool` (OpenSC) logged in to this token.
    pub fn pkcs11_tool(&self, args: &[&str]) -> String {
        let login = [
            "--module",
            SOFTHSM_MODULE,
            "--token-label",
            &self.label,
            "--login",
            "--pin",
            HSM_PIN,
        ];
        self.tool("pkcs11-tool", &login, args)
    }

    /// Runs `program` with this token's configuration; panics with its stderr unless it succeeds.
    fn tool(&self, program: &str, fixed: &[&str], args: &[&str]) -> String {
        let out = Command::new(program)
            .args(fixed)
            .args(args)
            .env("SOFTHSM2_CONF", self.conf())
            .output()
            .unwrap_or_else(|e| panic!("{program} is installed by scripts/test.sh: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Default for SoftHsm {
    fn default() -> Self {
        SoftHsm::new()
    }
}
