//! `keyless_ca::token::parse`: the structural checks every identity token goes through before any
//! key is looked up. It must never panic and never allocate beyond the size limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(token) = keyless_ca::token::parse(text) {
            let _ = (token.issuer(), token.kid());
        }
    }
});
