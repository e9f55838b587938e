//! Raw PKCS#11 signing throughput of the CA key: what the HSM-bound ceiling of issuance is.
//!
//! Needs a SoftHSM2 (or other) token: `scripts/bench.sh --hsm` creates one and runs
//!
//! ```text
//! SOFTHSM2_CONF=... KEYLESS_BENCH_PIN=... cargo bench -p keyless-hsm --bench pkcs11 -- <token-label>
//! ```
//!
//! It runs the key ceremony in a temporary directory, opens the issuing key, and signs 1 KiB
//! messages (hash in software, CKM_ECDSA, r‖s → DER) from 1 and then 2 threads.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use keyless_ca::Signer;
use keyless_ca::ceremony::CaNames;
use keyless_config::{Pkcs11CaConfig, Pkcs11Mechanism, SecretRef};

fn main() {
    let label = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "keyless-bench".into());
    if std::env::var("SOFTHSM2_CONF").is_err() {
        eprintln!("pkcs11 bench: SOFTHSM2_CONF is not set; run it through scripts/bench.sh --hsm");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = Pkcs11CaConfig {
        module: "/usr/lib/softhsm/libsofthsm2.so".into(),
        token_label: label,
        pin: SecretRef::parse("env:KEYLESS_BENCH_PIN").unwrap(),
        key_label: format!("bench-{}", std::process::id()),
        chain: dir.path().join("chain.pem"),
        mechanism: Pkcs11Mechanism::Ecdsa,
    };
    keyless_hsm::init_pkcs11_ca(
        &cfg,
        &CaNames::default(),
        SystemTime::now(),
        &keyless_hsm::CeremonyMode::Full,
        None,
    )
    .expect("key ceremony");
    let signer = Arc::new(keyless_hsm::Pkcs11Signer::open(&cfg).expect("open the key"));
    let msg = vec![0x5a_u8; 1024];
    for threads in [1usize, 2] {
        let n = 4000;
        let start = Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (s, m) = (signer.clone(), msg.clone());
                std::thread::spawn(move || {
                    for _ in 0..n {
                        s.sign(&m).expect("sign");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let secs = start.elapsed().max(Duration::from_nanos(1)).as_secs_f64();
        println!(
            "pkcs11 sign, {threads} thread(s): {:.0} signs/s",
            (n * threads) as f64 / secs
        );
    }
}
