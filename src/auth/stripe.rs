//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`, HMAC-SHA256 of
//! `"{t}.{body}"` keyed with the whole secret string (`whsec_…` included).

use actix_web::http::header::HeaderMap;

use super::mac::{any_match, tag};
use super::{
    first_secret, header_str, parse_timestamp, secrets, within_tolerance, Algorithm, AuthConfig,
    AuthError, SignError, Signed,
};

const HEADER: &str = "Stripe-Signature";

pub(super) fn verify(
    cfg: &AuthConfig,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), AuthError> {
    let raw = header_str(headers, HEADER)?;
    let malformed = || AuthError::MalformedHeader(HEADER.to_owned());
    let mut t: Option<&str> = None;
    let mut sigs = Vec::new();
    for item in raw.split(',') {
        let (k, v) = item.trim().split_once('=').ok_or_else(malformed)?;
        match k {
            // Two timestamps would make it ambiguous which one was signed.
            "t" if t.is_some() => return Err(malformed()),
            "t" => t = Some(v),
            // Stripe may add several v1 (during secret rotation on its side);
            // one that is not hex simply cannot match.
            "v1" => sigs.extend(hex::decode(v).ok()),
            // v0 (test-mode legacy) and future schemes are not ours to check.
            _ => {}
        }
    }
    let t = t.ok_or(AuthError::MissingField {
        header: HEADER,
        field: "timestamp",
    })?;
    let ts = parse_timestamp(t, HEADER)?;
    if sigs.is_empty() {
        return Err(AuthError::MissingField {
            header: HEADER,
            field: "v1 signature",
        });
    }
    let keys = secrets(cfg)?.map(str::as_bytes);
    if !any_match(Algorithm::Sha256, keys, &[t.as_bytes(), b".", body], &sigs) {
        return Err(AuthError::NoMatch);
    }
    // Checked after the signature so that the timestamp we judge is authentic.
    if !within_tolerance(now, ts, cfg.tolerance) {
        return Err(AuthError::OutsideTolerance);
    }
    Ok(())
}

pub(super) fn sign(cfg: &AuthConfig, body: &[u8], now: i64) -> Result<Signed, SignError> {
    let t = now.to_string();
    let sig = tag(
        Algorithm::Sha256,
        first_secret(cfg)?.as_bytes(),
        &[t.as_bytes(), b".", body],
    );
    Ok(Signed::header(
        HEADER,
        format!("t={t},v1={}", hex::encode(sig)),
    ))
}

#[cfg(test)]
mod tests {
    use ::hmac::{Hmac, Mac};
    use sha2::Sha256;

    use super::*;
    use crate::auth::test_support::{cfg, headers};
    use crate::auth::Scheme;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","object":"event","type":"payment_intent.succeeded"}"#;
    const T: i64 = 1_700_000_000;

    /// Computed with the hmac crate directly, independent of the module.
    fn reference(secret: &str, t: i64, body: &[u8]) -> String {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
        m.update(format!("{t}.").as_bytes());
        m.update(body);
        hex::encode(m.finalize().into_bytes())
    }

    fn check(c: &AuthConfig, header: &str, now: i64) -> Result<(), AuthError> {
        verify(c, &headers(&[("Stripe-Signature", header)]), BODY, now)
    }

    #[test]
    fn hand_computed_vector() {
        let c = cfg(Scheme::Stripe, &[SECRET]);
        let h = format!("t={T},v1={}", reference(SECRET, T, BODY));
        assert_eq!(check(&c, &h, T), Ok(()));
        // sign() yields the same header.
        let s = sign(&c, BODY, T).unwrap();
        assert_eq!(s.headers, vec![("Stripe-Signature".to_owned(), h)]);
        assert_eq!(s.body, None);
    }

    #[test]
    fn multiple_v1_and_other_keys() {
        let c = cfg(Scheme::Stripe, &[SECRET]);
        let good = reference(SECRET, T, BODY);
        let bad = reference("whsec_other", T, BODY);
        for h in [
            format!("t={T},v1={bad},v1={good}"),
            format!("t={T},v1={good},v1={bad}"),
            format!("t={T}, v0={bad}, v1=nothex, v1={good}"),
            format!("v1={good},t={T}"),
        ] {
            assert_eq!(check(&c, &h, T), Ok(()), "{h}");
        }
        // A matching v0 is not enough.
        assert_eq!(
            check(&c, &format!("t={T},v0={good},v1={bad}"), T),
            Err(AuthError::NoMatch)
        );
        assert_eq!(
            check(&c, &format!("t={T},v0={good}"), T),
            Err(AuthError::MissingField {
                header: "Stripe-Signature",
                field: "v1 signature"
            })
        );
    }

    #[test]
    fn tolerance_both_sides() {
        let c = cfg(Scheme::Stripe, &[SECRET]); // 300 s
        let h = format!("t={T},v1={}", reference(SECRET, T, BODY));
        assert_eq!(check(&c, &h, T + 300), Ok(()));
        assert_eq!(check(&c, &h, T - 300), Ok(()));
        assert_eq!(check(&c, &h, T + 301), Err(AuthError::OutsideTolerance));
        assert_eq!(check(&c, &h, T - 301), Err(AuthError::OutsideTolerance));
    }

    #[test]
    fn missing_or_bad_timestamp() {
        let c = cfg(Scheme::Stripe, &[SECRET]);
        let sig = reference(SECRET, T, BODY);
        assert_eq!(
            check(&c, &format!("v1={sig}"), T),
            Err(AuthError::MissingField {
                header: "Stripe-Signature",
                field: "timestamp"
            })
        );
        for h in [
            format!("t=abc,v1={sig}"),
            format!("t=-5,v1={sig}"),
            format!("t={T},t={T},v1={sig}"),
            format!("t={T},garbage,v1={sig}"),
            format!("t=99999999999999999999,v1={sig}"),
        ] {
            assert_eq!(
                check(&c, &h, T),
                Err(AuthError::MalformedHeader("Stripe-Signature".into())),
                "{h}"
            );
        }
        assert_eq!(
            verify(&c, &headers(&[]), BODY, T),
            Err(AuthError::MissingHeader("Stripe-Signature".into()))
        );
    }

    #[test]
    fn tampered_body_or_timestamp() {
        let c = cfg(Scheme::Stripe, &[SECRET]);
        let sig = reference(SECRET, T, BODY);
        assert_eq!(
            check(&c, &format!("t={},v1={sig}", T + 1), T),
            Err(AuthError::NoMatch)
        );
        let h = headers(&[("Stripe-Signature", &format!("t={T},v1={sig}"))]);
        assert_eq!(verify(&c, &h, b"{}", T), Err(AuthError::NoMatch));
    }

    #[test]
    fn rotation_second_secret_matches() {
        let c = cfg(Scheme::Stripe, &["whsec_old", SECRET]);
        let h = format!("t={T},v1={}", reference(SECRET, T, BODY));
        assert_eq!(check(&c, &h, T), Ok(()));
        // Signing uses the first secret.
        let s = sign(&c, BODY, T).unwrap();
        assert!(s.headers[0].1.ends_with(&reference("whsec_old", T, BODY)));
    }
}
