//! Generic `hmac` scheme: HMAC of the raw body in a configurable header, e.g.
//! GitHub-style `X-Hub-Signature-256: sha256=<hex>`.

use actix_web::http::header::HeaderMap;

use super::mac::{any_match, b64_decode, b64_encode, tag};
use super::{
    first_secret, header_str, secrets, AuthConfig, AuthError, Encoding, SignError, Signed,
};

pub(super) fn verify(cfg: &AuthConfig, headers: &HeaderMap, body: &[u8]) -> Result<(), AuthError> {
    let raw = header_str(headers, &cfg.header)?;
    let value = raw
        .strip_prefix(cfg.prefix.as_str())
        .ok_or_else(|| AuthError::MissingPrefix(cfg.header.clone()))?
        .trim();
    // Decoding rather than comparing text makes hex case-insensitive for free
    // and keeps the comparison on fixed-size bytes.
    let given = match cfg.encoding {
        Encoding::Hex => hex::decode(value).ok(),
        Encoding::Base64 => b64_decode(value),
    }
    .filter(|v| !v.is_empty())
    .ok_or_else(|| AuthError::MalformedHeader(cfg.header.clone()))?;
    let keys = secrets(cfg)?.map(str::as_bytes);
    if any_match(cfg.algorithm, keys, &[body], &[given]) {
        Ok(())
    } else {
        Err(AuthError::NoMatch)
    }
}

pub(super) fn sign(cfg: &AuthConfig, body: &[u8]) -> Result<Signed, SignError> {
    let t = tag(cfg.algorithm, first_secret(cfg)?.as_bytes(), &[body]);
    let encoded = match cfg.encoding {
        Encoding::Hex => hex::encode(t),
        Encoding::Base64 => b64_encode(&t),
    };
    Ok(Signed::header(
        &cfg.header,
        format!("{}{encoded}", cfg.prefix),
    ))
}

#[cfg(test)]
mod tests {
    use ::hmac::{Hmac, Mac};
    use base64::Engine as _;

    use super::*;
    use crate::auth::test_support::{cfg, headers};
    use crate::auth::{Algorithm, Scheme};

    const BODY: &[u8] = br#"{"id":"evt_1","status":"paid"}"#;

    /// Reference HMAC computed with the hmac crate directly, not via the module.
    fn reference(alg: Algorithm, key: &str, body: &[u8]) -> Vec<u8> {
        fn go<M: Mac + ::hmac::digest::KeyInit>(key: &str, body: &[u8]) -> Vec<u8> {
            let mut m = <M as ::hmac::digest::KeyInit>::new_from_slice(key.as_bytes()).unwrap();
            m.update(body);
            m.finalize().into_bytes().to_vec()
        }
        match alg {
            Algorithm::Sha1 => go::<Hmac<sha1::Sha1>>(key, body),
            Algorithm::Sha256 => go::<Hmac<sha2::Sha256>>(key, body),
            Algorithm::Sha512 => go::<Hmac<sha2::Sha512>>(key, body),
        }
    }

    fn encode(enc: Encoding, b: &[u8]) -> String {
        match enc {
            Encoding::Hex => hex::encode(b),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(b),
        }
    }

    fn config(alg: Algorithm, enc: Encoding, prefix: &str, secrets: &[&str]) -> AuthConfig {
        let mut c = cfg(Scheme::Hmac, secrets);
        c.algorithm = alg;
        c.encoding = enc;
        c.prefix = prefix.into();
        c
    }

    #[test]
    fn every_algorithm_and_encoding_with_and_without_prefix() {
        for alg in [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512] {
            for enc in [Encoding::Hex, Encoding::Base64] {
                for prefix in ["", "sha256="] {
                    let c = config(alg, enc, prefix, &["s3cret"]);
                    let value = format!("{prefix}{}", encode(enc, &reference(alg, "s3cret", BODY)));
                    let h = headers(&[("X-Signature", &value)]);
                    assert_eq!(verify(&c, &h, BODY), Ok(()), "{alg:?} {enc:?} {prefix:?}");
                    assert_eq!(
                        verify(&c, &h, b"{\"id\":\"evt_2\"}"),
                        Err(AuthError::NoMatch),
                        "{alg:?} {enc:?} {prefix:?}"
                    );
                    // What sign() produces is exactly the reference value.
                    let s = sign(&c, BODY).unwrap();
                    assert_eq!(s.headers, vec![("X-Signature".to_owned(), value)]);
                }
            }
        }
    }

    #[test]
    fn uppercase_hex_is_accepted() {
        let c = config(Algorithm::Sha256, Encoding::Hex, "sha256=", &["k"]);
        let hex_upper = hex::encode_upper(reference(Algorithm::Sha256, "k", BODY));
        let h = headers(&[("x-signature", &format!("sha256={hex_upper}"))]);
        assert_eq!(verify(&c, &h, BODY), Ok(()));
    }

    #[test]
    fn wrong_or_missing_prefix_is_rejected() {
        let c = config(Algorithm::Sha256, Encoding::Hex, "sha256=", &["k"]);
        let sig = hex::encode(reference(Algorithm::Sha256, "k", BODY));
        for v in [format!("sha1={sig}"), sig.clone(), format!("SHA256={sig}")] {
            let h = headers(&[("x-signature", &v)]);
            assert_eq!(
                verify(&c, &h, BODY),
                Err(AuthError::MissingPrefix("X-Signature".into()))
            );
        }
    }

    #[test]
    fn rotation_any_secret_matches() {
        let c = config(Algorithm::Sha256, Encoding::Base64, "", &["old", "new"]);
        for key in ["old", "new"] {
            let v = encode(Encoding::Base64, &reference(Algorithm::Sha256, key, BODY));
            assert_eq!(verify(&c, &headers(&[("x-signature", &v)]), BODY), Ok(()));
        }
        let v = encode(
            Encoding::Base64,
            &reference(Algorithm::Sha256, "other", BODY),
        );
        assert_eq!(
            verify(&c, &headers(&[("x-signature", &v)]), BODY),
            Err(AuthError::NoMatch)
        );
        // Signing uses the first secret.
        let s = sign(&c, BODY).unwrap();
        let old = encode(Encoding::Base64, &reference(Algorithm::Sha256, "old", BODY));
        assert_eq!(s.headers[0].1, old);
    }

    #[test]
    fn missing_and_malformed_headers() {
        let c = config(Algorithm::Sha256, Encoding::Hex, "", &["k"]);
        assert_eq!(
            verify(&c, &headers(&[]), BODY),
            Err(AuthError::MissingHeader("X-Signature".into()))
        );
        for bad in ["zz", "abc", ""] {
            assert_eq!(
                verify(&c, &headers(&[("x-signature", bad)]), BODY),
                Err(AuthError::MalformedHeader("X-Signature".into())),
                "{bad:?}"
            );
        }
        let c = config(Algorithm::Sha256, Encoding::Base64, "", &["k"]);
        assert_eq!(
            verify(&c, &headers(&[("x-signature", "not base64!")]), BODY),
            Err(AuthError::MalformedHeader("X-Signature".into()))
        );
    }

    #[test]
    fn no_secrets_is_misconfigured() {
        let c = config(Algorithm::Sha256, Encoding::Hex, "", &[]);
        let v = hex::encode(reference(Algorithm::Sha256, "", BODY));
        assert!(matches!(
            verify(&c, &headers(&[("x-signature", &v)]), BODY),
            Err(AuthError::Misconfigured(_))
        ));
        assert_eq!(sign(&c, BODY), Err(SignError::NoSecret));
    }
}
