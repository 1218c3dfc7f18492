//! Fuzz bodies: one function per target, shared by the `cargo fuzz` targets
//! (`fuzz/fuzz_targets/*.rs`, through this crate) and the property tests
//! (`tests/api/fuzz_props.rs`, which includes this file with `#[path]`).
//! Each takes plain data, calls the public `ipn_relay` entry points and
//! checks only what holds for every input; anything that panics is a bug.
//!
//! Only `ipn_relay`, `actix_web`, `serde_json` and `url` are used, so the
//! file compiles in both crates.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use ipn_relay::config::Settings;
use ipn_relay::delivery::{patterns, retry, ssrf};
use ipn_relay::mapping::{parse_body, Mapping, OneOrMany, Preset, RawMapping};

/// One provider per auth scheme and per preset.
pub const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
[storage]
path = "/nonexistent/ipn-relay-fuzz"

[[providers]]
id = "hmac-hex"
merchant_id = "m"
[providers.auth]
secrets = ["s1", "s2"]

[[providers]]
id = "hmac-b64"
merchant_id = "m"
[providers.auth]
scheme = "hmac"
algorithm = "sha512"
encoding = "base64"
prefix = "sha512="
header = "X-Hub-Signature"
secrets = ["s1"]

[[providers]]
id = "hmac-sha1"
merchant_id = "m"
[providers.auth]
algorithm = "sha1"
secrets = ["s1"]

[[providers]]
id = "stripe"
preset = "stripe"
merchant_id = "m"
[providers.auth]
secrets = ["whsec_demo_stripe_endpoint_secret"]

[[providers]]
id = "standard"
merchant_id = "m"
[providers.auth]
scheme = "standard-webhooks"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]

[[providers]]
id = "adyen"
preset = "adyen"
merchant_id = "m"
[providers.auth]
secrets = ["44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"]

[[providers]]
id = "paymentsos"
preset = "paymentsos"
merchant_id = "m"
[providers.auth]
secrets = ["pos-private-key"]

[[providers]]
id = "begateway"
preset = "begateway"
merchant_id = "m"
[providers.auth]
username = "361"
password = "secret-key"

[[providers]]
id = "rsa"
preset = "begateway"
merchant_id = "m"
[providers.auth]
scheme = "rsa-sha256"
public_key = """
-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAl3ApLX2c+0UBYETefnCk
9MNLi0/pFN2JbxY3ERHI6V7uqU7viz4sAWoIf5NAt1uBGfmHe87KhgXLW2zgUDxn
8e+FOGe/GOHiTaXfnNPRTWfzjUAbykW30ToiWW8qH7lBIYh8/DzVkuSKyZ9SE2wV
AeIO7GDhxeFdVGUm0zuS8vEkmhBuK1pXdJL5S/4Ygv0WTfoQ7W5XeiWTBEe4egR4
W40oW3O8h1fx1zwhtitRsCq05Cbg1LEwY9M4HM2FZK0HOgVvr+ZC5csH3cMWH4V7
cU959InRkWzcEN05JDqtx8jyRi8VympQRuV8xSRHxpdctVYimW0Qu8XEYejgClzG
2wIDAQAB
-----END PUBLIC KEY-----
"""

[[providers]]
id = "open"
merchant_id = "m"
allowed_ips = ["127.0.0.1/32"]
[providers.auth]
scheme = "none"
[providers.mapping]
items = "/items/*"
event_id = ["/id", "header:X-Event-Id"]
payment_id = ["{/order}:{/attempt}", "/payment"]
status = ["/state", "/status"]
occurred_at = "/at"
amount = "/amount"
[providers.mapping.statuses]
OK = "succeeded"
NO = "failed"
skip = "ignore"

[[merchants]]
id = "m"
"#;

/// The validated [`CONFIG`].
pub fn settings() -> &'static Settings {
    static S: OnceLock<Settings> = OnceLock::new();
    S.get_or_init(|| {
        Settings::parse(CONFIG, Path::new("/nonexistent"), &|_| None).expect("fuzz CONFIG is valid")
    })
}

/// Header names the schemes and mappings read; a one-byte name picks one,
/// so that inputs reach past "missing header".
pub const KNOWN_HEADERS: &[&str] = &[
    "x-signature",
    "x-hub-signature",
    "stripe-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "authorization",
    "signature",
    "event-type",
    "content-signature",
    "x-event-id",
    "content-type",
];

/// Content types the body parser distinguishes; a one-byte input picks one.
pub const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some("application/json"),
    Some("application/x-www-form-urlencoded"),
    Some("Application/X-WWW-Form-Urlencoded; charset=utf-8"),
    Some("text/plain"),
];

fn header_name(raw: &[u8]) -> Option<HeaderName> {
    match raw {
        [b] => Some(HeaderName::from_static(
            KNOWN_HEADERS[*b as usize % KNOWN_HEADERS.len()],
        )),
        _ => HeaderName::from_bytes(raw).ok(),
    }
}

/// Raw (name, value) pairs as a header map; pairs that are not valid HTTP
/// header names or values are dropped, as actix would refuse them.
pub fn header_map(headers: &[(Vec<u8>, Vec<u8>)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        if let (Some(k), Ok(v)) = (header_name(k), HeaderValue::from_bytes(v)) {
            map.append(k, v);
        }
    }
    map
}

/// (a) Verify arbitrary headers and body against every provider's auth;
/// what a provider signs for that body (when it can be signed) verifies,
/// for any clock at or after 1970 (timestamps on the wire are digits only,
/// so a negative "now" cannot round-trip and is only verified against).
pub fn auth(headers: &[(Vec<u8>, Vec<u8>)], body: &[u8], now: i64) {
    let map = header_map(headers);
    for p in &settings().providers {
        let _ = ipn_relay::auth::verify(&p.auth, &map, body, now);
        if now < 0 {
            continue;
        }
        if let Ok(signed) = ipn_relay::auth::sign(&p.auth, &map, body, now) {
            let mut with = map.clone();
            for (k, v) in &signed.headers {
                if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), v.parse()) {
                    with.insert(k, v);
                }
            }
            let body = signed.body.as_deref().unwrap_or(body);
            let got = ipn_relay::auth::verify(&p.auth, &with, body, now);
            assert!(got.is_ok(), "{}: own signature refused: {got:?}", p.id);
        }
    }
}

/// (b) Parse a body and run every provider's mapping over it, then compile
/// a mapping from arbitrary selector texts and run that too.
pub fn mapping(content_type: u8, headers: &[(String, String)], body: &[u8], selectors: &[String]) {
    let ct = CONTENT_TYPES[content_type as usize % CONTENT_TYPES.len()];
    let doc = parse_body(ct, body).ok();
    for p in &settings().providers {
        run_mapping(&p.mapping, headers, ct, body, doc.as_ref());
    }
    if selectors.is_empty() {
        return;
    }
    let pick = |i: usize| selectors.get(i).cloned().map(OneOrMany::One);
    let raw = RawMapping {
        items: selectors.first().cloned().filter(|s| !s.is_empty()),
        event_id: pick(1),
        payment_id: pick(2),
        status: Some(OneOrMany::Many(selectors.iter().skip(3).cloned().collect())),
        occurred_at: pick(4),
        amount: pick(5),
        statuses: selectors
            .iter()
            .skip(6)
            .map(|s| (s.clone(), "succeeded".to_string()))
            .collect(),
        ..RawMapping::default()
    };
    let presets = [
        Preset::Generic,
        Preset::Stripe,
        Preset::Adyen,
        Preset::Paymentsos,
        Preset::Begateway,
    ];
    let preset = presets[content_type as usize / CONTENT_TYPES.len() % presets.len()];
    if let Ok(m) = Mapping::compile(preset, &raw) {
        run_mapping(&m, headers, ct, body, doc.as_ref());
    }
}

fn run_mapping(
    m: &Mapping,
    headers: &[(String, String)],
    ct: Option<&str>,
    body: &[u8],
    doc: Option<&serde_json::Value>,
) {
    let key = m.event_key(&headers, ct, body);
    assert!(
        key.starts_with("id:") || key.starts_with("sha256:"),
        "{key}"
    );
    assert_eq!(key, m.event_key_of(&headers, doc, body));
    let direct = m.map_request(&headers, ct, body);
    if let Some(doc) = doc {
        assert_eq!(m.extract(&headers, doc), direct);
    } else {
        assert!(direct.is_err());
    }
}

/// (c) Parse and validate config text. Texts naming a `*_file` are skipped:
/// the parser would read that path (`/dev/zero` never ends).
pub fn config(text: &str) {
    if text.contains("_file") {
        return;
    }
    let _ = Settings::parse(text, Path::new("/nonexistent"), &|k| {
        (k.len() % 2 == 0).then(|| "fuzz-env-value".to_string())
    });
}

/// (d) Delivery response handling: Retry-After, the retry verdict, the SSRF
/// URL check and event-type patterns.
#[allow(clippy::too_many_arguments)]
pub fn delivery(
    retry_after: &str,
    now_ms: i64,
    schedule_ms: &[u64],
    attempts: u32,
    status: Option<u16>,
    jitter: f64,
    url: &str,
    patterns_in: &[String],
    event_type: &str,
) {
    let parsed = retry::parse_retry_after(retry_after, now_ms);
    let schedule: Vec<Duration> = schedule_ms
        .iter()
        .map(|&ms| Duration::from_millis(ms))
        .collect();
    let v = retry::verdict(&schedule, attempts, status, parsed, jitter);
    match status {
        Some(s) if (200..300).contains(&s) => assert_eq!(v, retry::Verdict::Succeeded),
        Some(410) => assert_eq!(v, retry::Verdict::Gone),
        _ => {
            if let retry::Verdict::Retry { after } = v {
                let last = *schedule.last().expect("a retry needs a schedule");
                let step = schedule[attempts.max(1) as usize - 1];
                let bound = step.saturating_add(step / 4).max(last);
                assert!(after <= bound, "{after:?} > {bound:?}");
            }
        }
    }
    if let Ok(u) = url::Url::parse(url) {
        for (allow_private, https_only) in
            [(false, false), (false, true), (true, false), (true, true)]
        {
            let policy = ssrf::Policy {
                allow_private,
                https_only,
            };
            if ssrf::check_url(&u, policy).is_ok() && https_only {
                assert_eq!(u.scheme(), "https", "{u}");
            }
        }
    }
    let _ = patterns::matches(patterns_in, event_type);
    for p in patterns_in {
        if patterns::valid(p) && !p.contains('*') {
            assert!(patterns::matches(std::slice::from_ref(p), p), "{p}");
        }
    }
}
