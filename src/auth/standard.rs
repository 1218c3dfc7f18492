//! Standard Webhooks (standardwebhooks.com): `webhook-id`,
//! `webhook-timestamp`, `webhook-signature: v1,<b64> [v1,<b64> …]`;
//! HMAC-SHA256 of `"{id}.{ts}.{body}"` keyed with the base64-decoded secret.

use actix_web::http::header::HeaderMap;
use sha2::{Digest, Sha256};

use super::mac::{any_match, b64_decode, b64_encode, tag};
use super::{
    first_secret, header_opt, header_str, parse_timestamp, secrets, within_tolerance, Algorithm,
    AuthConfig, AuthError, SignError, Signed,
};

const ID: &str = "webhook-id";
const TIMESTAMP: &str = "webhook-timestamp";
const SIGNATURE: &str = "webhook-signature";

/// The HMAC key is the base64 part of `whsec_<base64>`, not the string itself.
fn decode_secret(s: &str) -> Option<Vec<u8>> {
    b64_decode(s.strip_prefix("whsec_").unwrap_or(s))
}

pub(super) fn verify(
    cfg: &AuthConfig,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), AuthError> {
    let id = header_str(headers, ID)?;
    let ts_text = header_str(headers, TIMESTAMP)?;
    let raw = header_str(headers, SIGNATURE)?;
    let ts = parse_timestamp(ts_text, TIMESTAMP)?;
    let mut sigs = Vec::new();
    for entry in raw.split_whitespace() {
        let (version, sig) = entry
            .split_once(',')
            .ok_or_else(|| AuthError::MalformedHeader(SIGNATURE.to_owned()))?;
        // Other versions (e.g. v1a, asymmetric) are for other verifiers; a v1
        // that is not base64 cannot match.
        if version == "v1" {
            sigs.extend(b64_decode(sig));
        }
    }
    if sigs.is_empty() {
        return Err(AuthError::MissingField {
            header: SIGNATURE,
            field: "v1 signature",
        });
    }
    let keys = secrets(cfg)?
        .map(decode_secret)
        .collect::<Option<Vec<_>>>()
        .ok_or(AuthError::Misconfigured(
            "standard-webhooks secret is not base64",
        ))?;
    let parts: [&[u8]; 5] = [id.as_bytes(), b".", ts_text.as_bytes(), b".", body];
    if !any_match(Algorithm::Sha256, &keys, &parts, &sigs) {
        return Err(AuthError::NoMatch);
    }
    if !within_tolerance(now, ts, cfg.tolerance) {
        return Err(AuthError::OutsideTolerance);
    }
    Ok(())
}

/// Uses the caller's `webhook-id` when given; otherwise derives one from the
/// content so that re-signing the same delivery gives the same id.
pub(super) fn sign(
    cfg: &AuthConfig,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Signed, SignError> {
    let key = decode_secret(first_secret(cfg)?).ok_or(SignError::Misconfigured(
        "standard-webhooks secret is not base64",
    ))?;
    let ts = now.to_string();
    let id = match header_opt(headers, ID).map_err(|_| SignError::MalformedHeader(ID.into()))? {
        Some(id) => id.to_owned(),
        None => {
            let digest = Sha256::new()
                .chain_update(ts.as_bytes())
                .chain_update(body)
                .finalize();
            format!("msg_{}", hex::encode(&digest[..12]))
        }
    };
    let sig = tag(
        Algorithm::Sha256,
        &key,
        &[id.as_bytes(), b".", ts.as_bytes(), b".", body],
    );
    Ok(Signed {
        headers: vec![
            (ID.to_owned(), id),
            (TIMESTAMP.to_owned(), ts),
            (SIGNATURE.to_owned(), format!("v1,{}", b64_encode(&sig))),
        ],
        body: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_support::{apply, cfg, headers};
    use crate::auth::Scheme;

    // The example published in the Standard Webhooks specification.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1_614_265_330;
    const PAYLOAD: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn spec_headers(sig: &str) -> HeaderMap {
        headers(&[
            ("webhook-id", MSG_ID),
            ("webhook-timestamp", "1614265330"),
            ("webhook-signature", sig),
        ])
    }

    #[test]
    fn spec_example_verifies() {
        let c = cfg(Scheme::StandardWebhooks, &[SECRET]);
        assert_eq!(verify(&c, &spec_headers(SIG), PAYLOAD, TS), Ok(()));
    }

    #[test]
    fn spec_example_sign_reproduces_signature() {
        let c = cfg(Scheme::StandardWebhooks, &[SECRET]);
        let s = sign(&c, &headers(&[("webhook-id", MSG_ID)]), PAYLOAD, TS).unwrap();
        assert_eq!(
            s.headers,
            vec![
                ("webhook-id".to_owned(), MSG_ID.to_owned()),
                ("webhook-timestamp".to_owned(), "1614265330".to_owned()),
                ("webhook-signature".to_owned(), SIG.to_owned()),
            ]
        );
    }

    #[test]
    fn spec_example_outside_tolerance() {
        let c = cfg(Scheme::StandardWebhooks, &[SECRET]);
        let h = spec_headers(SIG);
        assert_eq!(verify(&c, &h, PAYLOAD, TS + 300), Ok(()));
        assert_eq!(verify(&c, &h, PAYLOAD, TS - 300), Ok(()));
        assert_eq!(
            verify(&c, &h, PAYLOAD, TS + 301),
            Err(AuthError::OutsideTolerance)
        );
        assert_eq!(
            verify(&c, &h, PAYLOAD, TS - 301),
            Err(AuthError::OutsideTolerance)
        );
    }

    #[test]
    fn spec_example_one_byte_changed() {
        let c = cfg(Scheme::StandardWebhooks, &[SECRET]);
        let h = spec_headers(SIG);
        for i in 0..PAYLOAD.len() {
            let mut p = PAYLOAD.to_vec();
            p[i] ^= 0x01;
            assert_eq!(verify(&c, &h, &p, TS), Err(AuthError::NoMatch), "byte {i}");
        }
        // Changed id or timestamp also breaks it.
        let mut h2 = spec_headers(SIG);
        h2.insert(
            actix_web::http::header::HeaderName::from_static("webhook-id"),
            actix_web::http::header::HeaderValue::from_static("msg_p5jXN8AQM9LWM0D4loKWxJeK"),
        );
        assert_eq!(verify(&c, &h2, PAYLOAD, TS), Err(AuthError::NoMatch));
        let h3 = headers(&[
            ("webhook-id", MSG_ID),
            ("webhook-timestamp", "1614265331"),
            ("webhook-signature", SIG),
        ]);
        assert_eq!(verify(&c, &h3, PAYLOAD, TS), Err(AuthError::NoMatch));
    }

    #[test]
    fn several_signatures_and_versions() {
        let c = cfg(Scheme::StandardWebhooks, &[SECRET]);
        let other = "v1,Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE=";
        for s in [
            format!("{other} {SIG}"),
            format!("v1a,abc {SIG}"),
            format!("v1,!!notbase64!! {SIG}"),
            format!("  {SIG}  {other}"),
        ] {
            assert_eq!(verify(&c, &spec_headers(&s), PAYLOAD, TS), Ok(()), "{s}");
        }
        // The right bytes under another version label do not count.
        let v2 = SIG.replacen("v1,", "v2,", 1);
        assert_eq!(
            verify(&c, &spec_headers(&v2), PAYLOAD, TS),
            Err(AuthError::MissingField {
                header: "webhook-signature",
                field: "v1 signature"
            })
        );
        assert_eq!(
            verify(&c, &spec_headers("g0hM9SsE"), PAYLOAD, TS),
            Err(AuthError::MalformedHeader("webhook-signature".into()))
        );
    }

    #[test]
    fn missing_headers_and_bad_timestamp() {
        let c = cfg(Scheme::StandardWebhooks, &[SECRET]);
        let h = headers(&[
            ("webhook-timestamp", "1614265330"),
            ("webhook-signature", SIG),
        ]);
        assert_eq!(
            verify(&c, &h, PAYLOAD, TS),
            Err(AuthError::MissingHeader("webhook-id".into()))
        );
        let h = headers(&[
            ("webhook-id", MSG_ID),
            ("webhook-timestamp", "16142653.30"),
            ("webhook-signature", SIG),
        ]);
        assert_eq!(
            verify(&c, &h, PAYLOAD, TS),
            Err(AuthError::MalformedHeader("webhook-timestamp".into()))
        );
    }

    #[test]
    fn rotation_and_bad_secret() {
        let c = cfg(Scheme::StandardWebhooks, &["whsec_AAAA", SECRET]);
        assert_eq!(verify(&c, &spec_headers(SIG), PAYLOAD, TS), Ok(()));
        // A secret without the prefix is accepted as plain base64.
        let bare = SECRET.trim_start_matches("whsec_");
        let c = cfg(Scheme::StandardWebhooks, &[bare]);
        assert_eq!(verify(&c, &spec_headers(SIG), PAYLOAD, TS), Ok(()));
        let c = cfg(Scheme::StandardWebhooks, &["whsec_not base64!"]);
        assert!(matches!(
            verify(&c, &spec_headers(SIG), PAYLOAD, TS),
            Err(AuthError::Misconfigured(_))
        ));
        assert!(matches!(
            sign(&c, &HeaderMap::new(), PAYLOAD, TS),
            Err(SignError::Misconfigured(_))
        ));
    }

    #[test]
    fn sign_without_id_generates_a_stable_one() {
        let c = cfg(Scheme::StandardWebhooks, &[SECRET]);
        let a = sign(&c, &HeaderMap::new(), PAYLOAD, TS).unwrap();
        let b = sign(&c, &HeaderMap::new(), PAYLOAD, TS).unwrap();
        assert_eq!(a, b);
        assert!(a.headers[0].1.starts_with("msg_"));
        let (h, body) = apply(&HeaderMap::new(), PAYLOAD, &a);
        assert_eq!(verify(&c, &h, &body, TS), Ok(()));
    }
}
