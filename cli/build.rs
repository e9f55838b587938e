//! Build facts for `fulcio_build_info` (Fulcio's version, revision, build date and toolchain
//! labels): the compiler version from `$RUSTC`, and the revision and date from the environment
//! of a release build (`KEYLESS_REVISION`, `KEYLESS_BUILD_DATE`), "unknown" otherwise, so builds
//! stay reproducible.

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| v.split_whitespace().nth(1).map(|n| format!("rustc{n}")))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=KEYLESS_RUSTC_VERSION={version}");
    for var in ["KEYLESS_REVISION", "KEYLESS_BUILD_DATE"] {
        println!("cargo:rerun-if-env-changed={var}");
        let value = std::env::var(var).unwrap_or_else(|_| "unknown".into());
        println!("cargo:rustc-env={var}={value}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
