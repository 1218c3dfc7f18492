#![no_main]
//! Config text (TOML) through `Settings::parse`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        ipn_relay_fuzz::config(text);
    }
});
