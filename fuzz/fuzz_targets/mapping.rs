#![no_main]
//! JSON / form bodies through every provider's mapping and through mappings
//! compiled from arbitrary selectors.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, Vec<(String, String)>, Vec<String>, Vec<u8>)| {
    let (content_type, headers, selectors, body) = input;
    ipn_relay_fuzz::mapping(content_type, &headers, &body, &selectors);
});
