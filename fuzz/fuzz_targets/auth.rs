#![no_main]
//! Arbitrary headers + body against every provider's auth scheme.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Vec<(Vec<u8>, Vec<u8>)>, i64, Vec<u8>)| {
    let (headers, now, body) = input;
    ipn_relay_fuzz::auth(&headers, &body, now);
});
