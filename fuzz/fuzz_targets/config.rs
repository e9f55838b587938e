//! `keyless_config::Config::from_yaml`: the operator's configuration file (YAML, validated rules).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = keyless_config::Config::from_yaml(text, Path::new("/"));
    }
});
