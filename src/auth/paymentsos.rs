//! PaymentsOS: `signature: sig1=<hex>`, HMAC-SHA256 over a comma-joined list
//! of the `event-type` header and fixed body fields.

use actix_web::http::header::HeaderMap;
use serde_json::Value;

use super::mac::{any_match, tag};
use super::{
    first_secret, header_opt, header_str, scalar_text, secrets, Algorithm, AuthConfig, AuthError,
    SignError, Signed,
};

const HEADER: &str = "signature";
const EVENT_TYPE: &str = "event-type";

/// Body fields after the event type, in signing order, as JSON pointers.
const FIELDS: [&str; 13] = [
    "/id",
    "/account_id",
    "/payment_id",
    "/created",
    "/app_id",
    "/data/id",
    "/data/result/status",
    "/data/result/category",
    "/data/result/sub_category",
    "/data/provider_data/response_code",
    "/data/reconciliation_id",
    "/data/amount",
    "/data/currency",
];

fn signing_string(event_type: &str, body: &[u8]) -> Result<String, &'static str> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "not JSON")?;
    if !v.is_object() {
        return Err("expected a JSON object");
    }
    let mut parts = vec![event_type.into()];
    for p in FIELDS {
        parts.push(scalar_text(v.pointer(p)).ok_or("signed field is not a scalar")?);
    }
    Ok(parts.join(","))
}

pub(super) fn verify(cfg: &AuthConfig, headers: &HeaderMap, body: &[u8]) -> Result<(), AuthError> {
    let raw = header_str(headers, HEADER)?;
    let sig = raw
        .trim()
        .strip_prefix("sig1=")
        .and_then(|h| hex::decode(h).ok())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AuthError::MalformedHeader(HEADER.to_owned()))?;
    // A missing event-type signs as "", like any other missing input; the
    // signature still binds it, so this cannot be used to swap event types.
    let event_type = header_opt(headers, EVENT_TYPE)?.unwrap_or("");
    let payload = signing_string(event_type, body).map_err(AuthError::MalformedBody)?;
    let keys = secrets(cfg)?.map(str::as_bytes);
    if any_match(Algorithm::Sha256, keys, &[payload.as_bytes()], &[sig]) {
        Ok(())
    } else {
        Err(AuthError::NoMatch)
    }
}

pub(super) fn sign(
    cfg: &AuthConfig,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Signed, SignError> {
    let event_type = header_opt(headers, EVENT_TYPE)
        .map_err(|_| SignError::MalformedHeader(EVENT_TYPE.into()))?
        .unwrap_or("");
    let payload = signing_string(event_type, body).map_err(SignError::MalformedBody)?;
    let sig = tag(
        Algorithm::Sha256,
        first_secret(cfg)?.as_bytes(),
        &[payload.as_bytes()],
    );
    Ok(Signed::header(HEADER, format!("sig1={}", hex::encode(sig))))
}

#[cfg(test)]
mod tests {
    use ::hmac::{Hmac, Mac};
    use sha2::Sha256;

    use super::*;
    use crate::auth::test_support::{apply, cfg, headers};
    use crate::auth::Scheme;

    const KEY: &str = "pos-private-key";
    const BODY: &str = r#"{
        "id": "8f6b6b1a-evt", "created": "2024-01-02T03:04:05.678Z",
        "account_id": "acc-1", "app_id": "com.shop.app", "payment_id": "pay-9",
        "data": {
            "id": "chg-7", "amount": 1250, "currency": "EUR", "reconciliation_id": "rec-3",
            "result": {"status": "Succeed", "category": null},
            "provider_data": {"response_code": "00"}
        }
    }"#;

    fn reference(key: &str, payload: &str) -> String {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).unwrap();
        m.update(payload.as_bytes());
        hex::encode(m.finalize().into_bytes())
    }

    #[test]
    fn independent_vector() {
        // category is null and sub_category missing: both sign as "".
        let payload = "payment.charge.create,8f6b6b1a-evt,acc-1,pay-9,2024-01-02T03:04:05.678Z,\
                       com.shop.app,chg-7,Succeed,,,00,rec-3,1250,EUR";
        assert_eq!(
            signing_string("payment.charge.create", BODY.as_bytes()).unwrap(),
            payload
        );
        let c = cfg(Scheme::Paymentsos, &[KEY]);
        let sig = format!("sig1={}", reference(KEY, payload));
        let h = headers(&[("event-type", "payment.charge.create"), ("signature", &sig)]);
        assert_eq!(verify(&c, &h, BODY.as_bytes()), Ok(()));
        // Upper-case hex is the same signature.
        let upper = format!("sig1={}", reference(KEY, payload).to_uppercase());
        let h = headers(&[
            ("event-type", "payment.charge.create"),
            ("signature", &upper),
        ]);
        assert_eq!(verify(&c, &h, BODY.as_bytes()), Ok(()));
    }

    #[test]
    fn round_trip_and_rotation() {
        let c = cfg(Scheme::Paymentsos, &["old", KEY]);
        let base = headers(&[("event-type", "payment.refund.update")]);
        let s = sign(&c, &base, BODY.as_bytes()).unwrap();
        let (h, body) = apply(&base, BODY.as_bytes(), &s);
        assert_eq!(verify(&c, &h, &body), Ok(()));
        // Signed by the second secret also passes.
        let payload = signing_string("payment.refund.update", BODY.as_bytes()).unwrap();
        let sig = format!("sig1={}", reference(KEY, &payload));
        let h = headers(&[("event-type", "payment.refund.update"), ("signature", &sig)]);
        assert_eq!(verify(&c, &h, BODY.as_bytes()), Ok(()));
    }

    #[test]
    fn missing_fields_are_empty() {
        assert_eq!(signing_string("e", b"{}").unwrap(), "e,,,,,,,,,,,,,");
        assert_eq!(
            signing_string(
                "",
                br#"{"id":7,"data":{"amount":12.5,"result":{"status":true}}}"#
            )
            .unwrap(),
            ",7,,,,,,true,,,,,12.5,"
        );
        // Without the event-type header, sign and verify agree on "".
        let c = cfg(Scheme::Paymentsos, &[KEY]);
        let s = sign(&c, &HeaderMap::new(), b"{}").unwrap();
        let (h, body) = apply(&HeaderMap::new(), b"{}", &s);
        assert_eq!(verify(&c, &h, &body), Ok(()));
        assert_eq!(
            s.headers[0].1,
            format!("sig1={}", reference(KEY, ",,,,,,,,,,,,,"))
        );
    }

    #[test]
    fn wrong_event_type_rejected() {
        let c = cfg(Scheme::Paymentsos, &[KEY]);
        let base = headers(&[("event-type", "payment.charge.create")]);
        let s = sign(&c, &base, BODY.as_bytes()).unwrap();
        let (_, body) = apply(&base, BODY.as_bytes(), &s);
        let sig = &s.headers[0].1;
        let h = headers(&[("event-type", "payment.charge.update"), ("signature", sig)]);
        assert_eq!(verify(&c, &h, &body), Err(AuthError::NoMatch));
        let h = headers(&[("signature", sig)]);
        assert_eq!(verify(&c, &h, &body), Err(AuthError::NoMatch));
    }

    #[test]
    fn malformed_inputs() {
        let c = cfg(Scheme::Paymentsos, &[KEY]);
        let sig = format!("sig1={}", reference(KEY, "x"));
        for bad in ["abc", "sig2=00", "sig1=", "sig1=zz", &sig[1..]] {
            let h = headers(&[("signature", bad)]);
            assert_eq!(
                verify(&c, &h, b"{}"),
                Err(AuthError::MalformedHeader("signature".into())),
                "{bad}"
            );
        }
        let h = headers(&[("signature", &sig)]);
        assert!(matches!(
            verify(&c, &h, b"nope"),
            Err(AuthError::MalformedBody(_))
        ));
        assert!(matches!(
            verify(&c, &h, b"[1]"),
            Err(AuthError::MalformedBody(_))
        ));
        assert!(matches!(
            verify(&c, &h, br#"{"data":{"amount":{"v":1}}}"#),
            Err(AuthError::MalformedBody(_))
        ));
        assert_eq!(
            verify(&c, &HeaderMap::new(), b"{}"),
            Err(AuthError::MissingHeader("signature".into()))
        );
    }
}
