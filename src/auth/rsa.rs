//! `rsa-sha256` (beGateway): `Content-Signature: base64(RSASSA-PKCS1-v1_5
//! SHA-256 signature of the raw body)`, checked with the provider's public key.

use ::rsa::pkcs1::DecodeRsaPublicKey;
use ::rsa::pkcs8::DecodePublicKey;
use ::rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use actix_web::http::header::HeaderMap;
use sha2::{Digest, Sha256};

use super::mac::{b64_decode, b64_encode};
use super::{header_str, AuthConfig, AuthError};

const HEADER: &str = "Content-Signature";

pub(super) fn verify(cfg: &AuthConfig, headers: &HeaderMap, body: &[u8]) -> Result<(), AuthError> {
    let key = cfg
        .public_key
        .as_ref()
        .ok_or(AuthError::Misconfigured("rsa-sha256 needs a public key"))?;
    let raw = header_str(headers, HEADER)?;
    let sig =
        b64_decode(raw.trim()).ok_or_else(|| AuthError::MalformedHeader(HEADER.to_owned()))?;
    let digest = Sha256::digest(body);
    // A signature of the wrong length is rejected inside verify as well, so
    // there is no separate (and leakier) length check here.
    key.verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &sig)
        .map_err(|_| AuthError::NoMatch)
}

/// The base64 `Content-Signature` value a provider holding `private_key` would
/// send. For tests and tools.
///
/// # Panics
/// Only if the key is too small to hold a SHA-256 DigestInfo (a modulus under
/// 62 bytes), which no real key is.
pub fn sign_rsa(private_key: &RsaPrivateKey, body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let sig = private_key
        .sign(Pkcs1v15Sign::new::<Sha256>(), &digest)
        .expect("RSA key large enough for a SHA-256 signature");
    b64_encode(&sig)
}

/// Accepts SPKI (`BEGIN PUBLIC KEY`) and PKCS#1 (`BEGIN RSA PUBLIC KEY`) PEM;
/// providers publish either.
pub fn parse_public_key(pem: &str) -> Result<RsaPublicKey, String> {
    let pem = pem.trim();
    if pem.contains("BEGIN RSA PUBLIC KEY") {
        RsaPublicKey::from_pkcs1_pem(pem).map_err(|e| format!("invalid PKCS#1 RSA public key: {e}"))
    } else {
        RsaPublicKey::from_public_key_pem(pem)
            .map_err(|e| format!("invalid SPKI RSA public key: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use ::rsa::pkcs1::EncodeRsaPublicKey;
    use ::rsa::pkcs8::{EncodePublicKey, LineEnding};

    use super::*;
    use crate::auth::test_support::{cfg, headers, rsa_key};
    use crate::auth::{sign, Scheme, SignError};

    const BODY: &[u8] = br#"{"transaction":{"uid":"1-310b0da80b","status":"successful"}}"#;

    fn config() -> AuthConfig {
        let mut c = cfg(Scheme::RsaSha256, &[]);
        c.public_key = Some(rsa_key().to_public_key());
        c
    }

    fn check(sig: &str, body: &[u8]) -> Result<(), AuthError> {
        verify(&config(), &headers(&[("Content-Signature", sig)]), body)
    }

    #[test]
    fn valid_signature() {
        let sig = sign_rsa(rsa_key(), BODY);
        assert_eq!(check(&sig, BODY), Ok(()));
        assert_eq!(check(&format!(" {sig} "), BODY), Ok(()));
    }

    #[test]
    fn tampered_body_or_signature() {
        let sig = sign_rsa(rsa_key(), BODY);
        let mut body = BODY.to_vec();
        body[5] ^= 1;
        assert_eq!(check(&sig, &body), Err(AuthError::NoMatch));
        let mut raw = b64_decode(&sig).unwrap();
        raw[10] ^= 1;
        assert_eq!(check(&b64_encode(&raw), BODY), Err(AuthError::NoMatch));
        // Wrong length, empty.
        assert_eq!(check(&b64_encode(&raw[1..]), BODY), Err(AuthError::NoMatch));
        assert_eq!(check("", BODY), Err(AuthError::NoMatch));
    }

    #[test]
    fn bad_base64_and_missing_header() {
        assert_eq!(
            check("not*base64", BODY),
            Err(AuthError::MalformedHeader("Content-Signature".into()))
        );
        assert_eq!(
            verify(&config(), &headers(&[]), BODY),
            Err(AuthError::MissingHeader("Content-Signature".into()))
        );
        let no_key = cfg(Scheme::RsaSha256, &[]);
        let sig = sign_rsa(rsa_key(), BODY);
        assert!(matches!(
            verify(&no_key, &headers(&[("Content-Signature", &sig)]), BODY),
            Err(AuthError::Misconfigured(_))
        ));
    }

    #[test]
    fn parse_both_pem_forms() {
        let public = rsa_key().to_public_key();
        let spki = public.to_public_key_pem(LineEnding::LF).unwrap();
        let pkcs1 = public.to_pkcs1_pem(LineEnding::CRLF).unwrap();
        assert!(spki.contains("BEGIN PUBLIC KEY"));
        assert!(pkcs1.contains("BEGIN RSA PUBLIC KEY"));
        assert_eq!(parse_public_key(&spki), Ok(public.clone()));
        assert_eq!(parse_public_key(&format!("\n  {pkcs1}\n")), Ok(public));
        assert!(parse_public_key("").is_err());
        assert!(
            parse_public_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").is_err()
        );
        assert!(parse_public_key(
            "-----BEGIN RSA PUBLIC KEY-----\n!!\n-----END RSA PUBLIC KEY-----"
        )
        .is_err());
    }

    #[test]
    fn generic_sign_refuses_rsa() {
        assert_eq!(
            sign(&config(), &headers(&[]), BODY, 0),
            Err(SignError::Unsupported(Scheme::RsaSha256))
        );
    }
}
