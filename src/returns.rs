//! Building the 3DS return redirect (SPEC §7). Pure: time and secret passed in.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use url::Url;

/// What the merchant's page is told about the payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnParams<'a> {
    pub payment_id: &'a str,
    pub authorization_id: Option<&'a str>,
    pub charge_id: Option<&'a str>,
    pub status: &'a str,
}

/// `base` with its own query kept and our parameters set (replacing any of
/// the same name). With a `secret`, adds `ts` and `signature` =
/// base64url(HMAC-SHA256(secret, "k=v&k=v…")) over the other added
/// parameters sorted by name, values as they are (not percent-encoded).
pub fn return_url(base: &Url, p: &ReturnParams, secret: Option<&[u8]>, now_secs: i64) -> Url {
    let mut added: Vec<(&str, String)> = vec![
        ("payment_id", p.payment_id.to_string()),
        ("status", p.status.to_string()),
    ];
    if let Some(a) = p.authorization_id {
        added.push(("authorization_id", a.to_string()));
    }
    if let Some(c) = p.charge_id {
        added.push(("charge_id", c.to_string()));
    }
    added.sort_by(|a, b| a.0.cmp(b.0));
    let ours = |k: &str| {
        matches!(
            k,
            "payment_id" | "status" | "authorization_id" | "charge_id" | "ts" | "signature"
        )
    };
    let kept: Vec<(String, String)> = base
        .query_pairs()
        .filter(|(k, _)| !ours(k))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut url = base.clone();
    url.set_fragment(None);
    {
        let mut q = url.query_pairs_mut();
        q.clear();
        for (k, v) in &kept {
            q.append_pair(k, v);
        }
        for (k, v) in &added {
            q.append_pair(k, v);
        }
        if let Some(secret) = secret {
            let canonical = added
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&");
            q.append_pair("ts", &now_secs.to_string());
            q.append_pair("signature", &sign(secret, &canonical));
        }
    }
    url
}

/// base64url (no padding) HMAC-SHA256 of `canonical`.
pub fn sign(secret: &[u8], canonical: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(canonical.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ReturnParams<'static> {
        ReturnParams {
            payment_id: "pay_1",
            authorization_id: Some("auth 9"),
            charge_id: None,
            status: "succeeded",
        }
    }

    #[test]
    fn keeps_the_merchants_query_and_sets_ours() {
        let base =
            Url::parse("https://shop.example.com/return?order=42&status=forged#frag").unwrap();
        let u = return_url(&base, &params(), None, 0);
        let q: Vec<(String, String)> = u.query_pairs().into_owned().collect();
        assert_eq!(
            q,
            vec![
                ("order".into(), "42".into()),
                ("authorization_id".into(), "auth 9".into()),
                ("payment_id".into(), "pay_1".into()),
                ("status".into(), "succeeded".into()),
            ]
        );
        assert_eq!(u.fragment(), None);
        assert_eq!(u.path(), "/return");
    }

    #[test]
    fn signature_covers_the_sorted_added_parameters() {
        let base = Url::parse("https://shop.example.com/r").unwrap();
        let u = return_url(&base, &params(), Some(b"s3cret"), 1_700_000_000);
        let q: std::collections::HashMap<String, String> = u.query_pairs().into_owned().collect();
        assert_eq!(q["ts"], "1700000000");
        let expected = sign(
            b"s3cret",
            "authorization_id=auth 9&payment_id=pay_1&status=succeeded",
        );
        assert_eq!(q["signature"], expected);
        assert_ne!(
            q["signature"],
            sign(
                b"other",
                "authorization_id=auth 9&payment_id=pay_1&status=succeeded"
            )
        );
    }
}
