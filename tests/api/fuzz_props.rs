//! The fuzz targets as bounded property tests: the same bodies
//! (`fuzz/src/lib.rs`, included below), fed by proptest strategies instead
//! of libFuzzer, a few hundred cases each, so that the normal suite runs
//! every target. Long runs: `cargo +nightly fuzz run <target>` in `fuzz/`.

#[path = "../../fuzz/src/lib.rs"]
mod bodies;

use proptest::collection::vec;
use proptest::prelude::*;

const EXAMPLE: &str = include_str!("../../config.example.toml");

fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn text(re: &'static str) -> BoxedStrategy<Vec<u8>> {
    re.prop_map(String::into_bytes).boxed()
}

/// A header name: a known one (one byte picks it) or arbitrary bytes.
fn header_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => any::<u8>().prop_map(|b| vec![b]),
        1 => vec(any::<u8>(), 0..16),
        1 => text("[A-Za-z-]{1,16}"),
    ]
}

/// A header value: arbitrary, or shaped like what the schemes parse.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..48),
        text("[ -~]{0,48}"),
        text("t=[0-9]{1,11}(,v1=[0-9a-f]{0,64}){0,3}"),
        text("(v1,[A-Za-z0-9+/=]{0,44} ?){0,3}"),
        text("(sha(1|256|512)=)?[0-9a-f]{0,128}"),
        text("Basic [A-Za-z0-9+/=]{0,24}"),
        text("[0-9]{0,12}"),
        text("msg_[A-Za-z0-9]{0,12}"),
    ]
}

/// JSON documents with the keys mappings and schemes look for.
fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let key = prop_oneof![
        Just("id"),
        Just("data"),
        Just("payment_id"),
        Just("status"),
        Just("created"),
        Just("amount"),
        Just("items"),
        Just("object"),
        Just("type"),
        Just("notificationItems"),
        Just("NotificationRequestItem"),
        Just("additionalData"),
        Just("hmacSignature"),
        Just("pspReference"),
        Just("eventCode"),
        Just("success"),
        Just("transaction"),
    ]
    .prop_map(String::from);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("OK"),
            Just("NO"),
            Just("skip"),
            Just("succeeded"),
            Just("AUTHORISATION")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec((key.clone(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A body: arbitrary bytes, JSON, or a form.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..96),
        json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        text("([a-z_%0-9]{0,8}=[A-Za-z0-9%+]{0,8}&?){0,5}"),
    ]
}

fn selector() -> impl Strategy<Value = String> {
    prop_oneof![
        "(/[a-z*~0-9]{0,6}){0,4}",
        "header:[A-Za-z-]{0,10}",
        "\\{(/[a-z]{0,4}){0,2}\\}:?\\{?(/[a-z]{0,4}){0,2}\\}?",
        "[ -~]{0,16}",
        any::<String>(),
    ]
}

/// config.example.toml with a few lines deleted, replaced, or its value
/// swapped for arbitrary text, or cut short anywhere.
fn config_text() -> impl Strategy<Value = String> {
    let lines: Vec<&'static str> = EXAMPLE.lines().collect();
    let n = lines.len();
    let edit = (0..n, 0u8..4, "[ -~]{0,24}");
    prop_oneof![
        4 => vec(edit, 1..4).prop_map(move |edits| {
            let mut ls: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
            for (i, op, s) in edits {
                let i = i % ls.len().max(1);
                match op {
                    0 => {
                        ls.remove(i);
                    }
                    1 => ls[i] = s,
                    2 => {
                        if let Some((k, _)) = ls[i].clone().split_once('=') {
                            ls[i] = format!("{k}= {s}");
                        }
                    }
                    _ => ls.insert(i, s),
                }
                if ls.is_empty() {
                    break;
                }
            }
            ls.join("\n")
        }),
        1 => (0..EXAMPLE.len()).prop_map(|cut| {
            let mut cut = cut;
            while !EXAMPLE.is_char_boundary(cut) {
                cut -= 1;
            }
            EXAMPLE[..cut].to_string()
        }),
        1 => any::<String>(),
    ]
}

fn retry_after() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,25}",
        " ?-?[0-9]{1,5} ?",
        "(Mon|Sun), [0-9]{2} (Jan|Feb|Dec) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
        "[ -~]{0,32}",
    ]
}

fn url_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "(https?|ftp|file)://([a-z]{0,3}(:[a-z]{0,3})?@)?[a-z0-9.]{0,16}(:[0-9]{1,5})?(/[a-z]{0,4})?",
        "https?://\\[[0-9a-f:.]{0,40}\\](/x)?",
        "https?://(0x[0-9a-f]{1,8}|[0-9]{1,10}|([0-9]{1,3}\\.){1,3}[0-9]{1,3})/",
        "[ -~]{0,32}",
    ]
}

fn pattern() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z_.*]{0,14}", "payment\\.[a-z_]{0,10}", "[ -~]{0,8}"]
}

proptest! {
    #![proptest_config(cfg(1000))]

    #[test]
    fn fuzz_auth_verifies_any_request_without_panicking(
        headers in vec((header_name(), header_value()), 0..8),
        body in body(),
        now in prop_oneof![any::<i64>(), 1_699_999_000i64..1_700_001_000],
    ) {
        bodies::auth(&headers, &body, now);
    }

    #[test]
    fn fuzz_mapping_maps_any_body_without_panicking(
        content_type in any::<u8>(),
        headers in vec((prop_oneof![Just("X-Event-Id".to_string()), "[a-z-]{1,8}"], "[ -~]{0,12}"), 0..3),
        body in body(),
        selectors in vec(selector(), 0..8),
    ) {
        bodies::mapping(content_type, &headers, &body, &selectors);
    }

    #[test]
    fn fuzz_config_parses_any_text_without_panicking(text in config_text()) {
        bodies::config(&text);
    }

    #[test]
    fn fuzz_delivery_handles_any_response_without_panicking(
        retry_after in retry_after(),
        now_ms in prop_oneof![any::<i64>(), 0i64..4_000_000_000_000],
        schedule in vec(prop_oneof![any::<u64>(), 0u64..100_000], 0..8),
        attempts in prop_oneof![any::<u32>(), 0u32..10],
        status in proptest::option::of(prop_oneof![any::<u16>(), 100u16..600]),
        jitter in prop_oneof![any::<f64>(), -1.5f64..1.5],
        url in url_text(),
        patterns in vec(pattern(), 0..4),
        event_type in pattern(),
    ) {
        bodies::delivery(
            &retry_after, now_ms, &schedule, attempts, status, jitter, &url, &patterns, &event_type,
        );
    }
}

#[test]
fn fuzz_config_is_valid() {
    assert_eq!(bodies::settings().providers.len(), 10);
}
