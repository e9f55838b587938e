//! Keeps `scripts/bench.sh` from rotting without running the benchmark (minutes, and a peer to
//! build): both scripts parse, bad options are refused, and `--smoke` issues a few hundred
//! certificates of the real body shape (RS256 tokens, CSR/PoP mix, TLS) against Keyless with CT
//! disabled and with the embedded log, using the binaries this test build already has.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use keyless_tests::{keyless_bin, run_with_timeout};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn bench_scripts_parse_and_refuse_unknown_options() {
    for script in ["scripts/bench.sh", "scripts/bench-friendly.sh"] {
        let out = Command::new("bash")
            .arg("-n")
            .arg(repo().join(script))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new("bash")
        .arg(repo().join("scripts/bench.sh"))
        .arg("--fast")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option --fast"));
    let out = Command::new("bash")
        .arg(repo().join("scripts/bench.sh"))
        .args(["--csr-percent", "150"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--csr-percent"));
}

#[test]
fn bench_smoke_issues_real_shaped_requests_over_tls() {
    let out = run_with_timeout(
        Command::new("bash")
            .arg(repo().join("scripts/bench.sh"))
            .args(["--smoke", "--no-build"])
            .env("KEYLESS_BIN", keyless_bin())
            .env("BENCHKIT_BIN", env!("CARGO_BIN_EXE_keyless-benchkit"))
            .env("KEYLESS_LOG", "warn"),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("smoke: Keyless, CT disabled: 300 certificates"),
        "{stdout}"
    );
    assert!(
        stdout.contains("smoke: Keyless, embedded CT: 300 certificates"),
        "{stdout}"
    );
}
