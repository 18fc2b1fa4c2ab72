//! Arbitrary bytes through the server's validation + Message-Authenticator + decode path;
//! every request that passes must re-encode and decode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_server::radius::packet::roundtrip::check_roundtrip;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = check_roundtrip(data) {
        panic!("{violation}");
    }
});
