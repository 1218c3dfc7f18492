//! Unit tests of the return URL and its signature (SPEC §7).

use super::*;

fn params() -> ReturnParams<'static> {
    ReturnParams {
        payment_id: "pay_1",
        authorization_id: Some("auth 9"),
        charge_id: None,
        status: "succeeded",
    }
}

fn query(u: &Url) -> Vec<(String, String)> {
    u.query_pairs().into_owned().collect()
}

#[test]
fn keeps_the_merchants_query_and_sets_ours() {
    let base = Url::parse("https://shop.example.com/return?order=42&status=forged&x=a+b%2Bc#frag")
        .unwrap();
    let u = return_url(&base, &params(), None, 0);
    assert_eq!(
        query(&u),
        vec![
            ("order".into(), "42".into()),
            ("x".into(), "a b+c".into()),
            ("authorization_id".into(), "auth 9".into()),
            ("payment_id".into(), "pay_1".into()),
            ("status".into(), "succeeded".into()),
        ]
    );
    // The merchant's own parameters as written; ours RFC 3986 (%20, not +).
    assert_eq!(
        u.query(),
        Some("order=42&x=a+b%2Bc&authorization_id=auth%209&payment_id=pay_1&status=succeeded")
    );
    assert_eq!(u.fragment(), None);
    assert_eq!(u.path(), "/return");
}

#[test]
fn canonical_string_of_a_known_input() {
    assert_eq!(
        canonical(&[
            ("status", "succeeded"),
            ("ts", "1700000000"),
            ("payment_id", "sig 1é"),
            ("authorization_id", "au+1&x=2~._-"),
        ]),
        "authorization_id=au%2B1%26x%3D2~._-&payment_id=sig%201%C3%A9&status=succeeded&ts=1700000000"
    );
}

#[test]
fn signature_covers_ts_and_the_encoded_parameters_as_in_the_url() {
    let base = Url::parse("https://shop.example.com/r?order=7").unwrap();
    let p = ReturnParams {
        payment_id: "sig 1é",
        authorization_id: Some("au+1&x=2"),
        charge_id: None,
        status: "succeeded",
    };
    let u = return_url(&base, &p, Some(b"s3cret"), 1_700_000_000);
    let want = sign(
        b"s3cret",
        "authorization_id=au%2B1%26x%3D2&payment_id=sig%201%C3%A9&status=succeeded&ts=1700000000",
    );
    assert_eq!(
        u.query().unwrap(),
        format!(
            "order=7&authorization_id=au%2B1%26x%3D2&payment_id=sig%201%C3%A9\
             &status=succeeded&ts=1700000000&signature={want}"
        )
    );
    assert!(verify(&u, b"s3cret"));
    assert!(!verify(&u, b"other"));
}

#[test]
fn different_parameter_sets_sign_different_strings() {
    // Before: raw values joined with `&`, so a value holding `&status=` could
    // pose as another parameter and both sets signed the same string.
    let a = [("payment_id", "p&status=succeeded"), ("status", "failed")];
    let b = [("payment_id", "p"), ("status", "succeeded&status=failed")];
    let raw = |ps: &[(&str, &str)]| {
        ps.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    };
    assert_eq!(
        raw(&[("payment_id", "p"), ("status", "succeeded&status=failed")]),
        "payment_id=p&status=succeeded&status=failed"
    );
    assert_ne!(canonical(&a), canonical(&b));
    let sig = |ps: &[(&str, &str)]| {
        let p = ReturnParams {
            payment_id: ps[0].1,
            authorization_id: None,
            charge_id: None,
            status: ps[1].1,
        };
        let u = return_url(
            &Url::parse("https://s.example/r").unwrap(),
            &p,
            Some(b"k"),
            1,
        );
        query(&u)
            .into_iter()
            .find(|(k, _)| k == "signature")
            .unwrap()
            .1
    };
    assert_ne!(sig(&a), sig(&b));
}

#[test]
fn a_re_stamped_ts_no_longer_verifies() {
    let base = Url::parse("https://shop.example.com/r").unwrap();
    let u = return_url(&base, &params(), Some(b"s3cret"), 1_700_000_000);
    assert!(verify(&u, b"s3cret"));
    let restamped = Url::parse(&u.as_str().replace("ts=1700000000", "ts=1800000000")).unwrap();
    assert_ne!(restamped, u);
    assert!(!verify(&restamped, b"s3cret"));
}

#[test]
fn no_secret_no_ts() {
    let u = return_url(
        &Url::parse("https://s.example/r").unwrap(),
        &params(),
        None,
        5,
    );
    assert!(query(&u).iter().all(|(k, _)| k != "ts" && k != "signature"));
}
