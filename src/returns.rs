//! Building the 3DS return redirect (SPEC §7). Pure: time and secret passed in.
//!
//! Our parameters are written into the URL percent-encoded per RFC 3986:
//! unreserved characters (`A-Z a-z 0-9 - . _ ~`) kept, every other byte of
//! the UTF-8 text as `%XX` (a space is `%20`, never `+`). With a secret, the
//! signature is computed over exactly those encoded `k=v` pairs, so what the
//! merchant reads from the URL is what was signed.

use base64::Engine;
use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use url::Url;

/// Everything but RFC 3986 unreserved characters is encoded.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Names we set; a merchant's own parameter of one of these names is dropped.
const OURS: [&str; 6] = [
    "payment_id",
    "status",
    "authorization_id",
    "charge_id",
    "ts",
    "signature",
];

/// What the merchant's page is told about the payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnParams<'a> {
    pub payment_id: &'a str,
    pub authorization_id: Option<&'a str>,
    pub charge_id: Option<&'a str>,
    pub status: &'a str,
}

/// RFC 3986 percent-encoding of `s` (unreserved kept).
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}

/// The signed string: `pairs` sorted by name, key and value each
/// [`encode`]d, written `k=v` and joined by `&`.
pub fn canonical(pairs: &[(&str, &str)]) -> String {
    let mut enc: Vec<(String, String)> =
        pairs.iter().map(|(k, v)| (encode(k), encode(v))).collect();
    enc.sort();
    enc.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `base` with its own query kept (as written, minus any parameter named
/// like one of ours) and our parameters appended, RFC 3986-encoded. With a
/// `secret`, adds `ts` = `now_secs` and `signature` =
/// base64url(HMAC-SHA256(secret, [`canonical`])) over every other added
/// parameter, `ts` included.
pub fn return_url(base: &Url, p: &ReturnParams, secret: Option<&[u8]>, now_secs: i64) -> Url {
    let ts = now_secs.to_string();
    let mut added: Vec<(&str, &str)> = vec![("payment_id", p.payment_id), ("status", p.status)];
    if let Some(a) = p.authorization_id {
        added.push(("authorization_id", a));
    }
    if let Some(c) = p.charge_id {
        added.push(("charge_id", c));
    }
    if secret.is_some() {
        added.push(("ts", &ts));
    }
    added.sort();
    let mut parts: Vec<String> = base
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|seg| !seg.is_empty() && !OURS.contains(&segment_key(seg).as_str()))
        .map(str::to_string)
        .collect();
    parts.extend(
        added
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v))),
    );
    if let Some(secret) = secret {
        parts.push(format!("signature={}", sign(secret, &canonical(&added))));
    }
    let mut url = base.clone();
    url.set_fragment(None);
    url.set_query(Some(&parts.join("&")));
    url
}

/// Checks a return URL as a merchant would: our parameters (but
/// `signature`) taken from the URL, [`canonical`] of them, compared with
/// `signature`. Says nothing about the age of `ts`: that is the caller's.
pub fn verify(url: &Url, secret: &[u8]) -> bool {
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let Some(sig) = pairs.iter().find(|(k, _)| k == "signature") else {
        return false;
    };
    let signed: Vec<(&str, &str)> = pairs
        .iter()
        .filter(|(k, _)| k != "signature" && OURS.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let want = sign(secret, &canonical(&signed));
    want.as_bytes().ct_eq(sig.1.as_bytes()).into()
}

/// The decoded name of one `k=v` query segment.
fn segment_key(seg: &str) -> String {
    let k = seg.split('=').next().unwrap_or("").replace('+', " ");
    percent_decode_str(&k).decode_utf8_lossy().into_owned()
}

/// base64url (no padding) HMAC-SHA256 of `canonical`.
pub fn sign(secret: &[u8], canonical: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(canonical.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests;
