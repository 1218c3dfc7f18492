//! Fixtures shared by the scheme tests.

use std::sync::OnceLock;
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use secrecy::SecretString;

use super::{Algorithm, AuthConfig, Encoding, Scheme, Signed};

pub(crate) fn cfg(scheme: Scheme, secrets: &[&str]) -> AuthConfig {
    AuthConfig {
        scheme,
        algorithm: Algorithm::Sha256,
        header: "X-Signature".into(),
        encoding: Encoding::Hex,
        prefix: String::new(),
        secrets: secrets.iter().map(|s| SecretString::from(*s)).collect(),
        tolerance: Duration::from_secs(300),
        username: None,
        public_key: None,
    }
}

pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

/// The request a provider would send: signed headers added to `base`, and the
/// body replaced when the scheme rewrites it.
pub(crate) fn apply(base: &HeaderMap, body: &[u8], signed: &Signed) -> (HeaderMap, Vec<u8>) {
    let mut h = base.clone();
    for (k, v) in &signed.headers {
        h.insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    (h, signed.body.clone().unwrap_or_else(|| body.to_vec()))
}

/// RSA key generation takes seconds in debug builds: do it once per test run.
pub(crate) fn rsa_key() -> &'static ::rsa::RsaPrivateKey {
    static KEY: OnceLock<::rsa::RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        ::rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("key generation")
    })
}
