//! Adyen standard notifications: the signature is inside the JSON body, one
//! per item (`additionalData.hmacSignature`), over eight colon-joined fields.
//! The fields are joined raw, without escaping, as Adyen's own libraries do
//! for notifications.

use serde_json::{Map, Value};

use super::mac::{any_match, b64_decode, b64_encode, tag};
use super::{
    first_secret, scalar_text, secrets, Algorithm, AuthConfig, AuthError, SignError, Signed,
};

const FIELDS: [&str; 8] = [
    "pspReference",
    "originalReference",
    "merchantAccountCode",
    "merchantReference",
    "value",
    "currency",
    "eventCode",
    "success",
];

/// The HMAC key is given as hex in Adyen's dashboard.
fn decode_key(s: &str) -> Option<Vec<u8>> {
    hex::decode(s.trim()).ok()
}

fn item_field<'a>(item: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    match name {
        "value" | "currency" => item.get("amount").and_then(|a| a.get(name)),
        _ => item.get(name),
    }
}

fn signing_string(item: &Map<String, Value>) -> Result<String, &'static str> {
    let mut parts = Vec::with_capacity(FIELDS.len());
    for name in FIELDS {
        parts
            .push(scalar_text(item_field(item, name)).ok_or("notification field is not a scalar")?);
    }
    Ok(parts.join(":"))
}

fn items_mut(v: &mut Value) -> Result<Vec<&mut Map<String, Value>>, &'static str> {
    let items = v
        .get_mut("notificationItems")
        .and_then(Value::as_array_mut)
        .ok_or("expected an object with a notificationItems array")?;
    items
        .iter_mut()
        .map(|i| {
            i.get_mut("NotificationRequestItem")
                .and_then(Value::as_object_mut)
                .ok_or("notification item without NotificationRequestItem")
        })
        .collect()
}

pub(super) fn verify(cfg: &AuthConfig, body: &[u8]) -> Result<(), AuthError> {
    let keys = secrets(cfg)?
        .map(decode_key)
        .collect::<Option<Vec<_>>>()
        .ok_or(AuthError::Misconfigured("adyen hmac key is not hex"))?;
    let mut v: Value =
        serde_json::from_slice(body).map_err(|_| AuthError::MalformedBody("not JSON"))?;
    let items = items_mut(&mut v).map_err(AuthError::MalformedBody)?;
    if items.is_empty() {
        return Err(AuthError::NoItems);
    }
    // Every item must verify: accepting a batch because one item is genuine
    // would let a forger append items to a captured notification.
    for item in items {
        let sig = item
            .get("additionalData")
            .and_then(|d| d.get("hmacSignature"))
            .and_then(Value::as_str)
            .ok_or(AuthError::MalformedBody(
                "notification item without additionalData.hmacSignature",
            ))?;
        let sig = b64_decode(sig).ok_or(AuthError::MalformedBody("hmacSignature is not base64"))?;
        let payload = signing_string(item).map_err(AuthError::MalformedBody)?;
        if !any_match(Algorithm::Sha256, &keys, &[payload.as_bytes()], &[sig]) {
            return Err(AuthError::NoMatch);
        }
    }
    Ok(())
}

/// Rewrites the body with `hmacSignature` set in every item. The output is
/// re-serialised JSON, so key order and whitespace may differ from the input.
pub(super) fn sign(cfg: &AuthConfig, body: &[u8]) -> Result<Signed, SignError> {
    let key = decode_key(first_secret(cfg)?)
        .ok_or(SignError::Misconfigured("adyen hmac key is not hex"))?;
    let mut v: Value =
        serde_json::from_slice(body).map_err(|_| SignError::MalformedBody("not JSON"))?;
    let items = items_mut(&mut v).map_err(SignError::MalformedBody)?;
    if items.is_empty() {
        return Err(SignError::MalformedBody("no notification items"));
    }
    for item in items {
        let payload = signing_string(item).map_err(SignError::MalformedBody)?;
        let sig = b64_encode(&tag(Algorithm::Sha256, &key, &[payload.as_bytes()]));
        let data = item
            .entry("additionalData")
            .or_insert_with(|| Value::Object(Map::new()));
        if data.is_null() {
            *data = Value::Object(Map::new());
        }
        data.as_object_mut()
            .ok_or(SignError::MalformedBody("additionalData is not an object"))?
            .insert("hmacSignature".into(), Value::String(sig));
    }
    let body = serde_json::to_vec(&v).map_err(|_| SignError::MalformedBody("not serialisable"))?;
    Ok(Signed {
        headers: Vec::new(),
        body: Some(body),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::auth::test_support::cfg;
    use crate::auth::Scheme;

    // Adyen's published test vector (its libraries' unit tests use it too).
    const KEY: &str = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";
    const EXPECTED: &str = "coqCmt/IZ4E3CzPvMY8zTjQVL5hYJUiBRg8UU+iCWo0=";

    fn item(sig: Option<&str>, psp: &str) -> Value {
        let mut i = json!({
            "pspReference": psp,
            "merchantAccountCode": "TestMerchant",
            "merchantReference": "TestPayment-1407325143704",
            "amount": {"value": 1130, "currency": "EUR"},
            "eventCode": "AUTHORISATION",
            "success": "true",
            "eventDate": "2019-05-06T17:15:34.121+02:00",
            "paymentMethod": "visa",
        });
        if let Some(s) = sig {
            i["additionalData"] = json!({ "hmacSignature": s });
        }
        json!({ "NotificationRequestItem": i })
    }

    fn body(items: Vec<Value>) -> Vec<u8> {
        serde_json::to_vec(&json!({"live": "false", "notificationItems": items})).unwrap()
    }

    #[test]
    fn published_vector_signing_string() {
        let i = item(None, "7914073381342284");
        let inner = i["NotificationRequestItem"].as_object().unwrap();
        assert_eq!(
            signing_string(inner).unwrap(),
            "7914073381342284::TestMerchant:TestPayment-1407325143704:1130:EUR:AUTHORISATION:true"
        );
    }

    #[test]
    fn published_vector_verifies() {
        let c = cfg(Scheme::AdyenHmac, &[KEY]);
        assert_eq!(
            verify(&c, &body(vec![item(Some(EXPECTED), "7914073381342284")])),
            Ok(())
        );
        // Lower-case hex key is the same key.
        let c = cfg(Scheme::AdyenHmac, &[&KEY.to_lowercase()]);
        assert_eq!(
            verify(&c, &body(vec![item(Some(EXPECTED), "7914073381342284")])),
            Ok(())
        );
    }

    #[test]
    fn published_vector_sign() {
        let c = cfg(Scheme::AdyenHmac, &[KEY]);
        let s = sign(&c, &body(vec![item(None, "7914073381342284")])).unwrap();
        assert!(s.headers.is_empty());
        let v: Value = serde_json::from_slice(s.body.as_ref().unwrap()).unwrap();
        assert_eq!(
            v["notificationItems"][0]["NotificationRequestItem"]["additionalData"]["hmacSignature"],
            EXPECTED
        );
    }

    #[test]
    fn one_bad_item_rejects_the_batch() {
        let c = cfg(Scheme::AdyenHmac, &[KEY]);
        let signed = sign(&c, &body(vec![item(None, "1"), item(None, "2")])).unwrap();
        let good = signed.body.unwrap();
        assert_eq!(verify(&c, &good), Ok(()));
        // Swap in a different item under the second item's signature.
        let mut v: Value = serde_json::from_slice(&good).unwrap();
        v["notificationItems"][1]["NotificationRequestItem"]["pspReference"] = json!("3");
        assert_eq!(
            verify(&c, &serde_json::to_vec(&v).unwrap()),
            Err(AuthError::NoMatch)
        );
        // Or the first item is the bad one.
        let bad_first = body(vec![
            item(Some(EXPECTED), "1"),
            item(Some(EXPECTED), "7914073381342284"),
        ]);
        assert_eq!(verify(&c, &bad_first), Err(AuthError::NoMatch));
    }

    #[test]
    fn tampered_amount_rejected() {
        let c = cfg(Scheme::AdyenHmac, &[KEY]);
        let mut i = item(Some(EXPECTED), "7914073381342284");
        i["NotificationRequestItem"]["amount"]["value"] = json!(1131);
        assert_eq!(verify(&c, &body(vec![i])), Err(AuthError::NoMatch));
    }

    #[test]
    fn missing_fields_are_empty_and_booleans_are_text() {
        let c = cfg(Scheme::AdyenHmac, &[KEY]);
        let mut i = item(None, "7914073381342284");
        // A JSON boolean renders as the same text Adyen signs.
        i["NotificationRequestItem"]["success"] = json!(true);
        i["NotificationRequestItem"]["originalReference"] = Value::Null;
        let inner = i["NotificationRequestItem"].as_object().unwrap();
        assert_eq!(
            signing_string(inner).unwrap(),
            "7914073381342284::TestMerchant:TestPayment-1407325143704:1130:EUR:AUTHORISATION:true"
        );
        i["NotificationRequestItem"]["additionalData"] = json!({"hmacSignature": EXPECTED});
        assert_eq!(verify(&c, &body(vec![i])), Ok(()));
        let bare = json!({"NotificationRequestItem": {}});
        assert_eq!(
            signing_string(bare["NotificationRequestItem"].as_object().unwrap()).unwrap(),
            ":::::::"
        );
    }

    #[test]
    fn rotation() {
        let other = "00".repeat(32);
        let c = cfg(Scheme::AdyenHmac, &[&other, KEY]);
        assert_eq!(
            verify(&c, &body(vec![item(Some(EXPECTED), "7914073381342284")])),
            Ok(())
        );
    }

    #[test]
    fn structural_errors() {
        let c = cfg(Scheme::AdyenHmac, &[KEY]);
        assert_eq!(verify(&c, &body(vec![])), Err(AuthError::NoItems));
        assert!(matches!(
            verify(&c, b"not json"),
            Err(AuthError::MalformedBody(_))
        ));
        assert!(matches!(
            verify(&c, b"[]"),
            Err(AuthError::MalformedBody(_))
        ));
        assert!(matches!(
            verify(&c, b"{\"notificationItems\":{}}"),
            Err(AuthError::MalformedBody(_))
        ));
        assert!(matches!(
            verify(&c, b"{\"notificationItems\":[1]}"),
            Err(AuthError::MalformedBody(_))
        ));
        assert!(matches!(
            verify(&c, &body(vec![item(None, "1")])),
            Err(AuthError::MalformedBody(_))
        ));
        assert!(matches!(
            verify(&c, &body(vec![item(Some("***"), "1")])),
            Err(AuthError::MalformedBody(_))
        ));
        let mut i = item(Some(EXPECTED), "1");
        i["NotificationRequestItem"]["merchantReference"] = json!({"nested": 1});
        assert!(matches!(
            verify(&c, &body(vec![i])),
            Err(AuthError::MalformedBody(_))
        ));
        let bad_key = cfg(Scheme::AdyenHmac, &["xyz"]);
        assert!(matches!(
            verify(&bad_key, &body(vec![item(Some(EXPECTED), "1")])),
            Err(AuthError::Misconfigured(_))
        ));
        assert!(matches!(
            sign(&c, &body(vec![])),
            Err(SignError::MalformedBody(_))
        ));
    }
}
