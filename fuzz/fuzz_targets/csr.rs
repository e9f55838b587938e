//! `keyless_ca::possession::prove_csr`: PEM, PKCS#10 DER, the key policy and the self-signature
//! check on attacker-supplied certificate signing requests.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = keyless_ca::possession::prove_csr(data, &Default::default());
});
