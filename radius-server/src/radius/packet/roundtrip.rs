//! The property the fuzz target (`fuzz/fuzz_targets/decode_request.rs`) checks, kept here so
//! that unit tests replay saved inputs through exactly the same code.
//!
//! Any bytes go through the server's own path (structure check, Message-Authenticator,
//! decode); every request that passes must re-encode and decode to the same value, and the
//! reply built for it must verify on the client side with Message-Authenticator first and
//! every Proxy-State echoed in order.

use super::*;

/// The shared secret the fuzz inputs are signed with (the seed corpus uses it too).
pub const FUZZ_SECRET: &[u8] = b"fuzz-secret";

/// The three policies every input is decoded under.
const POLICIES: [ClientPolicy; 3] = [
    ClientPolicy {
        require_message_authenticator: true,
        limit_proxy_state: true,
    },
    ClientPolicy {
        require_message_authenticator: false,
        limit_proxy_state: true,
    },
    ClientPolicy {
        require_message_authenticator: false,
        limit_proxy_state: false,
    },
];

/// Check the round-trip property for one input; `Err` describes the violation.
pub fn check_roundtrip(data: &[u8]) -> Result<(), String> {
    let structure = check_structure(data);
    for policy in &POLICIES {
        let Ok(request) = decode_request(data, FUZZ_SECRET, policy) else {
            continue;
        };
        if structure.is_err() {
            return Err("decode_request accepted what check_structure refused".into());
        }
        let again = encode_request(&request, FUZZ_SECRET)
            .map_err(|e| format!("a decoded request does not encode again: {e}"))?;
        let decoded = decode_request(&again, FUZZ_SECRET, policy)
            .map_err(|r| format!("the re-encoded request is dropped as {r}"))?;
        if decoded != request {
            return Err(format!(
                "round trip changed the request:\n{request:?}\n{decoded:?}"
            ));
        }
        let reply = Reply::challenge("Code?".into(), b"state".to_vec());
        match encode_reply(&request, &reply, FUZZ_SECRET) {
            Ok(bytes) => {
                let r = decode_reply(&bytes, &request.authenticator, FUZZ_SECRET)
                    .map_err(|e| format!("our own reply does not verify: {e}"))?;
                if !r.message_authenticator_first {
                    return Err("Message-Authenticator is not first in the reply".into());
                }
                if r.proxy_states != request.proxy_states {
                    return Err("Proxy-State not echoed in order".into());
                }
                if r.identifier != request.identifier {
                    return Err("reply identifier differs".into());
                }
            }
            // Echoing many Proxy-States can overflow 4096 bytes: refusing to encode is fine.
            Err(EncodeError::TooLarge(_)) => {}
            Err(e) => return Err(format!("reply does not encode: {e}")),
        }
    }
    Ok(())
}
