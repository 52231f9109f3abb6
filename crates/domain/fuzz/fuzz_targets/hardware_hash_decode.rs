//! Hash decoding must never panic, whatever decodes must re-decode to itself, and the device
//! call's lookup decode must accept and refuse exactly what the full decode does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use unbox_domain::hardware_hash::{decode, decode_bytes, decode_for_lookup, seal};
use unbox_domain::identity::Identity;

fuzz_target!(|data: &[u8]| {
    // As text, the way the API and CSV files hand it over.
    if let Ok(text) = std::str::from_utf8(data) {
        lookup_agrees(text);
        check(decode(text));
    }
    // As raw bytes.
    check(decode_bytes(data));
    // As the records of a correctly sealed envelope, so the fuzzer gets past the checksum
    // and explores the record walk and the record parsers.
    if let Ok(bytes) = seal(data) {
        lookup_agrees(&STANDARD.encode(&bytes));
        check(decode_bytes(&bytes));
    }
});

fn lookup_agrees(text: &str) {
    assert_eq!(
        decode_for_lookup(text),
        decode(text).map(|hash| hash.lookup_values()),
        "the lookup decode must agree with the full decode"
    );
}

fn check(
    result: Result<
        unbox_domain::hardware_hash::HardwareHash,
        unbox_domain::hardware_hash::HashError,
    >,
) {
    let Ok(hash) = result else {
        return;
    };
    let again = decode(&hash.normalized_base64());
    assert_eq!(
        again.as_ref().ok(),
        Some(&hash),
        "normalised text must decode to the same hash"
    );
    let identity = Identity::from_hash(&hash);
    let _ = identity.normalized();
    let _ = identity.keys().strong_claims();
}
