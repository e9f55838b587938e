//! `keyless_ca::keys::PublicKey::from_pem_or_der`: PEM or DER SubjectPublicKeyInfo and the key
//! policy (RSA size/exponent/small factors/ROCA, EC curve and point checks, Ed25519).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = keyless_ca::keys::PublicKey::from_pem_or_der(data) {
        // Exercise verification on the accepted key with arbitrary bytes as message and signature.
        let _ = key.verify(key.key_type().default_hash(), data, data);
    }
});
