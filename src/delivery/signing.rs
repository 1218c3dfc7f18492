//! Standard Webhooks signing and the notification body (SPEC §6), as pure
//! functions.
//!
//! Outbound notifications follow the Standard Webhooks format so a merchant
//! can verify them with any Standard Webhooks library: the signature is
//! `v1,<base64 HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")>`,
//! one per endpoint secret (several while a secret is being rotated), and the
//! body is built from the stored event alone, byte for byte the same on every
//! retry and replay, so only the timestamp and signature change per attempt.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::store::EventRecord;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A new endpoint secret: `whsec_` + standard base64 of 24 random bytes from
/// the OS CSPRNG.
pub fn new_secret() -> String {
    use rand::RngCore;
    let mut key = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut key);
    format!("whsec_{}", B64.encode(key))
}

/// The `webhook-signature` header value: one
/// `v1,<base64 HMAC-SHA256(key, "{msg_id}.{ts}.{body}")>` per secret,
/// space-separated, in the order given. Each secret is `whsec_<base64 key>`
/// (see [`crate::config::decode_whsec`]). Err if there is no secret or one
/// does not decode (config validation refuses both, so this is a bug guard).
pub fn signature_header(
    secrets: &[&str],
    msg_id: &str,
    ts: i64,
    body: &[u8],
) -> Result<String, String> {
    if secrets.is_empty() {
        return Err("no signing secret".into());
    }
    let mut out = String::new();
    for (i, secret) in secrets.iter().enumerate() {
        let key = crate::config::decode_whsec(secret).map_err(|m| format!("secret {i}: {m}"))?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(ts.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        if i > 0 {
            out.push(' ');
        }
        out.push_str("v1,");
        out.push_str(&B64.encode(mac.finalize().into_bytes()));
    }
    Ok(out)
}

/// The notification body of SPEC §6 for one applied change. Deterministic:
/// fields in a fixed order, times as RFC 3339 UTC with milliseconds.
pub fn payload(ev: &EventRecord) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        r#type: String,
        timestamp: String,
        data: Data<'a>,
    }
    #[derive(Serialize)]
    struct Data<'a> {
        event_id: &'a str,
        payment_id: &'a str,
        merchant_id: &'a str,
        provider: &'a str,
        status: crate::domain::Status,
        previous_status: Option<crate::domain::Status>,
        sequence: u64,
        authorization_id: Option<&'a str>,
        charge_id: Option<&'a str>,
        amount: Option<i64>,
        currency: Option<&'a str>,
        occurred_at: Option<String>,
        provider_event_id: Option<&'a str>,
    }
    let body = Body {
        r#type: super::patterns::event_type(ev.status),
        timestamp: rfc3339_ms(ev.created_at),
        data: Data {
            event_id: &ev.event_id,
            payment_id: &ev.payment_id,
            merchant_id: &ev.merchant_id,
            provider: &ev.provider,
            status: ev.status,
            previous_status: ev.previous_status,
            sequence: ev.sequence,
            authorization_id: ev.authorization_id.as_deref(),
            charge_id: ev.charge_id.as_deref(),
            amount: ev.amount,
            currency: ev.currency.as_deref(),
            occurred_at: ev.occurred_at.map(rfc3339_ms),
            provider_event_id: ev.provider_event_id.as_deref(),
        },
    };
    serde_json::to_vec(&body).expect("plain structs serialize")
}

/// Unix milliseconds as RFC 3339 UTC, e.g. `2026-12-01T12:00:00.123Z`.
/// Out of chrono's range (not a real timestamp) reads as the epoch.
fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Status;
    use reqwest::header::{HeaderMap, HeaderValue};
    use standardwebhooks::Webhook;

    const EXAMPLE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn headers(msg_id: &str, ts: i64, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", HeaderValue::from_str(msg_id).unwrap());
        h.insert(
            "webhook-timestamp",
            HeaderValue::from_str(&ts.to_string()).unwrap(),
        );
        h.insert("webhook-signature", HeaderValue::from_str(sig).unwrap());
        h
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn record() -> EventRecord {
        EventRecord {
            event_id: "evt_01JDQ7Z5Y0000000000000000".into(),
            payment_id: "pay_1".into(),
            merchant_id: "shop-1".into(),
            provider: "acme".into(),
            status: Status::PartiallyRefunded,
            previous_status: Some(Status::Succeeded),
            sequence: 3,
            authorization_id: Some("auth_9".into()),
            charge_id: None,
            amount: Some(1000),
            currency: Some("EUR".into()),
            occurred_at: Some(1_796_126_399_000),
            created_at: 1_796_126_400_123,
            provider_event_id: Some("ipn-77".into()),
            request_id: uuid::Uuid::nil(),
        }
    }

    #[test]
    fn published_standard_webhooks_example_vector() {
        let sig = signature_header(
            &[EXAMPLE_SECRET],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn an_independent_implementation_verifies_our_signature() {
        let body = payload(&record());
        let ts = now();
        let sig = signature_header(&[EXAMPLE_SECRET], "evt_1", ts, &body).unwrap();
        let wh = Webhook::new(EXAMPLE_SECRET).unwrap();
        wh.verify(&body, &headers("evt_1", ts, &sig)).unwrap();
        // And it agrees byte for byte with its own signer.
        assert_eq!(sig, wh.sign("evt_1", ts, &body).unwrap());
        // A changed body, id or timestamp does not verify.
        assert!(wh.verify(b"{}", &headers("evt_1", ts, &sig)).is_err());
        assert!(wh.verify(&body, &headers("evt_2", ts, &sig)).is_err());
        assert!(wh.verify(&body, &headers("evt_1", ts - 1, &sig)).is_err());
    }

    #[test]
    fn two_secrets_give_two_signatures_each_verifying() {
        let old = new_secret();
        let body = payload(&record());
        let ts = now();
        let sig = signature_header(&[EXAMPLE_SECRET, &old], "evt_1", ts, &body).unwrap();
        let parts: Vec<&str> = sig.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        for secret in [EXAMPLE_SECRET, old.as_str()] {
            Webhook::new(secret)
                .unwrap()
                .verify(&body, &headers("evt_1", ts, &sig))
                .unwrap_or_else(|e| panic!("{secret}: {e}"));
        }
        // In the order given.
        assert_eq!(
            parts[0],
            signature_header(&[EXAMPLE_SECRET], "evt_1", ts, &body).unwrap()
        );
        assert_eq!(
            parts[1],
            signature_header(&[&old], "evt_1", ts, &body).unwrap()
        );
        // A third, unrelated secret verifies neither.
        assert!(Webhook::new(&new_secret())
            .unwrap()
            .verify(&body, &headers("evt_1", ts, &sig))
            .is_err());
    }

    #[test]
    fn bad_secrets_are_errors() {
        assert!(signature_header(&[], "m", 1, b"").is_err());
        assert!(signature_header(&["whsec_!!!"], "m", 1, b"").is_err());
        assert!(signature_header(&["whsec_c2hvcnQ="], "m", 1, b"").is_err());
        let e = signature_header(&[EXAMPLE_SECRET, "whsec_%"], "m", 1, b"").unwrap_err();
        assert!(e.starts_with("secret 1:"), "{e}");
    }

    #[test]
    fn new_secrets_are_24_random_bytes() {
        let a = new_secret();
        let b = new_secret();
        assert_ne!(a, b);
        for s in [&a, &b] {
            let b64 = s.strip_prefix("whsec_").expect("whsec_ prefix");
            assert_eq!(B64.decode(b64).unwrap().len(), 24);
            assert_eq!(crate::config::decode_whsec(s).unwrap().len(), 24);
            Webhook::new(s).unwrap();
        }
    }

    #[test]
    fn payload_is_the_spec_body() {
        let body = payload(&record());
        let expected = concat!(
            r#"{"type":"payment.partially_refunded","timestamp":"2026-12-01T12:00:00.123Z","#,
            r#""data":{"event_id":"evt_01JDQ7Z5Y0000000000000000","payment_id":"pay_1","#,
            r#""merchant_id":"shop-1","provider":"acme","status":"partially_refunded","#,
            r#""previous_status":"succeeded","sequence":3,"authorization_id":"auth_9","#,
            r#""charge_id":null,"amount":1000,"currency":"EUR","#,
            r#""occurred_at":"2026-12-01T11:59:59.000Z","provider_event_id":"ipn-77"}}"#
        );
        assert_eq!(std::str::from_utf8(&body).unwrap(), expected);
    }

    #[test]
    fn payload_nulls_and_determinism() {
        let mut ev = record();
        ev.previous_status = None;
        ev.authorization_id = None;
        ev.amount = None;
        ev.currency = None;
        ev.occurred_at = None;
        ev.provider_event_id = None;
        ev.status = Status::Pending;
        let body = payload(&ev);
        assert_eq!(body, payload(&ev.clone()));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], "payment.pending");
        let d = &v["data"];
        for k in [
            "previous_status",
            "authorization_id",
            "charge_id",
            "amount",
            "currency",
            "occurred_at",
            "provider_event_id",
        ] {
            assert!(d[k].is_null(), "{k}");
        }
        assert_eq!(d["status"], "pending");
        assert_eq!(d.as_object().unwrap().len(), 13);
    }

    #[test]
    fn every_status_uses_its_canonical_string() {
        for st in Status::ALL {
            let mut ev = record();
            ev.status = st;
            ev.previous_status = Some(st);
            let v: serde_json::Value = serde_json::from_slice(&payload(&ev)).unwrap();
            assert_eq!(v["type"], format!("payment.{}", st.as_str()));
            assert_eq!(v["data"]["status"], st.as_str());
            assert_eq!(v["data"]["previous_status"], st.as_str());
        }
    }

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_796_126_400_123), "2026-12-01T12:00:00.123Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms(i64::MAX), "1970-01-01T00:00:00.000Z");
    }
}
