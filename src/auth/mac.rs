//! HMAC and comparison helpers shared by every HMAC-based scheme, so that the
//! constant-time and rotation logic exists exactly once.

use base64::Engine as _;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha512};
use subtle::{Choice, ConstantTimeEq};

use super::Algorithm;

/// HMAC of the concatenation of `parts`. Taking parts avoids building
/// `"{t}.{body}"`-style strings, which would copy large bodies.
pub(crate) fn tag(alg: Algorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    match alg {
        Algorithm::Sha1 => compute::<Hmac<Sha1>>(key, parts),
        Algorithm::Sha256 => compute::<Hmac<Sha256>>(key, parts),
        Algorithm::Sha512 => compute::<Hmac<Sha512>>(key, parts),
    }
}

fn compute<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC hashes over-long keys and pads short ones, so this cannot fail.
    let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// True when any key's tag equals any candidate. Every pair is compared, in
/// constant time, so timing reveals neither which secret nor which
/// candidate matched.
pub(crate) fn any_match<K: AsRef<[u8]>>(
    alg: Algorithm,
    keys: impl IntoIterator<Item = K>,
    parts: &[&[u8]],
    candidates: &[Vec<u8>],
) -> bool {
    let mut hit = Choice::from(0);
    for key in keys {
        let expected = tag(alg, key.as_ref(), parts);
        for c in candidates {
            hit |= expected.as_slice().ct_eq(c.as_slice());
        }
    }
    hit.into()
}

pub(crate) fn b64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn b64_decode(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// Constant-time equality for credentials (basic auth).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> Choice {
    a.ct_eq(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let t = tag(
            Algorithm::Sha256,
            b"Jefe",
            &[b"what do ya want ", b"for nothing?"],
        );
        assert_eq!(
            hex::encode(t),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let t = tag(
            Algorithm::Sha512,
            b"Jefe",
            &[b"what do ya want for nothing?"],
        );
        assert!(hex::encode(t).starts_with("164b7a7bfcf819e2e395fbe73b56e0a387bd6422"));
    }

    #[test]
    fn rfc2202_sha1_case_2() {
        let t = tag(Algorithm::Sha1, b"Jefe", &[b"what do ya want for nothing?"]);
        assert_eq!(hex::encode(t), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
    }

    #[test]
    fn any_match_rotation_and_lengths() {
        let good = tag(Algorithm::Sha256, b"k2", &[b"x"]);
        let cands = vec![vec![1, 2, 3], good];
        assert!(any_match(Algorithm::Sha256, ["k1", "k2"], &[b"x"], &cands));
        assert!(!any_match(Algorithm::Sha256, ["k1", "k3"], &[b"x"], &cands));
        assert!(!any_match(Algorithm::Sha256, ["k2"], &[b"x"], &[]));
    }
}
