//! Weak setups `check-config` and `serve` refuse (SPEC §2, §5, §7), and
//! errors that name an item by id and line, in the config's own spelling.

use std::path::Path;

use ipn_relay::config::{describe, ConfigError, Settings};

const ADMIN_TOKEN: &str = "admin-tok-3b9d";
const SHARED_KEY: &str = "shared-key-77c1";

fn parse(text: &str) -> Result<Settings, ConfigError> {
    Settings::parse(text, Path::new("."), &|_| None)
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// Line 1-2: admin; merchants start at line 3.
fn merchants(shop1_key: &str, shop2_extra: &str) -> String {
    format!(
        "[admin]\ntokens = [\"{ADMIN_TOKEN}\"]\n\
         [[merchants]]\nid = \"shop-1\"\napi_keys = [\"{shop1_key}\"]\n\
         allowed_return_origins = [\"https://shop.example.com\"]\n\
         \n\
         [[merchants]]\nid = \"shop-2\"\n{shop2_extra}\n"
    )
}

#[test]
fn the_same_api_key_for_two_merchants_is_refused() {
    let e = err(&merchants(
        SHARED_KEY,
        &format!("api_keys = [\"other\", \"{SHARED_KEY}\"]"),
    ));
    assert!(e.contains("merchants \"shop-2\" (line 8) api_keys"), "{e}");
    assert!(e.contains("merchants \"shop-1\" (line 3)"), "{e}");
    assert!(!e.contains(SHARED_KEY), "key leaked: {e}");
    // Different keys are fine.
    parse(&merchants(SHARED_KEY, "api_keys = [\"other\"]")).unwrap();
}

#[test]
fn a_merchant_api_key_equal_to_an_admin_token_is_refused() {
    let e = err(&merchants(ADMIN_TOKEN, ""));
    assert!(e.contains("merchants \"shop-1\" (line 3) api_keys"), "{e}");
    assert!(e.contains("admin token"), "{e}");
    assert!(!e.contains(ADMIN_TOKEN), "token leaked: {e}");
}

#[test]
fn userinfo_in_return_origins_or_default_site_url_is_refused() {
    let e = err(&merchants(
        "k1",
        "allowed_return_origins = [\"https://user:pw-9f@shop.example.com\"]",
    ));
    assert!(
        e.contains("merchants \"shop-2\" (line 8) allowed_return_origins"),
        "{e}"
    );
    assert!(e.contains("userinfo"), "{e}");
    assert!(!e.contains("pw-9f"), "password leaked: {e}");

    let e = err(&merchants(
        "k1",
        "allowed_return_origins = [\"https://shop.example.com\"]\n\
         default_site_url = \"https://user@shop.example.com/return\"",
    ));
    assert!(
        e.contains("merchants \"shop-2\" (line 8) default_site_url"),
        "{e}"
    );
    assert!(e.contains("userinfo"), "{e}");

    // And at run time a URL with userinfo is never an allowed target.
    let s = parse(&merchants(
        "k1",
        "allowed_return_origins = [\"https://two.example.com\"]",
    ))
    .unwrap();
    let m = s.merchant("shop-2").unwrap();
    assert!(m.allows_return_to(&"https://two.example.com/r".parse().unwrap()));
    assert!(!m.allows_return_to(&"https://evil@two.example.com/r".parse().unwrap()));
}

const PROVIDERS: &str = r#"[[merchants]]
id = "shop-1"
allowed_return_origins = ["https://shop.example.com"]

[[providers]]
id = "acme"
merchant_id = "shop-1"
[providers.auth]
secrets = ["s"]

[[providers]]
id = "stripe"
preset = "stripe"
merchant_id = "shop-1"
[providers.auth]
secrets = ["whsec_x"]
"#;

#[test]
fn provider_errors_name_the_id_and_line_never_an_index_or_a_debug_name() {
    // Line 18: a third provider, an Adyen one without secrets.
    let text = format!(
        "{PROVIDERS}\n[[providers]]\nid = \"adyen\"\npreset = \"adyen\"\nmerchant_id = \"shop-1\"\n"
    );
    let e = err(&text);
    assert!(
        e.contains("providers \"adyen\" (line 18) auth.secrets"),
        "{e}"
    );
    assert!(e.contains("scheme adyen-hmac needs at least one"), "{e}");
    assert!(!e.contains("providers[") && !e.contains("AdyenHmac"), "{e}");

    // A duplicate id names both definitions.
    let text = format!(
        "{PROVIDERS}\n[[providers]]\nid = \"stripe\"\nmerchant_id = \"shop-1\"\n[providers.auth]\nsecrets = [\"t\"]\n"
    );
    let e = err(&text);
    assert!(
        e.contains("providers \"stripe\" (line 18): duplicate id"),
        "{e}"
    );
    assert!(
        e.contains("first defined as providers \"stripe\" (line 11)"),
        "{e}"
    );

    // A bad merchant reference in `merchants` names the provider.
    let text = PROVIDERS.replace(
        "id = \"acme\"\nmerchant_id = \"shop-1\"",
        "id = \"acme\"\nmerchants = [\"shop-1\", \"shop-9\"]",
    );
    let e = err(&text);
    assert!(e.contains("providers \"acme\" (line 5) merchants"), "{e}");
    assert!(e.contains("shop-9"), "{e}");
}

#[test]
fn endpoint_and_merchant_errors_name_the_id_and_line() {
    let text = "[[merchants]]\nid = \"shop-1\"\nallowed_return_origins = [\"https://a.example\"]\n\
                [[merchants.endpoints]]\nid = \"ep_a\"\nurl = \"https://a.example/h\"\n\
                secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\
                [[merchants]]\nid = \"shop-2\"\nallowed_return_origins = [\"https://b.example\"]\n\
                [[merchants.endpoints]]\nid = \"ep_b\"\nurl = \"ftp://b.example/h\"\n\
                secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n";
    let e = err(text);
    assert!(
        e.contains("merchants.endpoints \"ep_b\" (line 11) url"),
        "{e}"
    );
    let dup = "[[merchants]]\nid = \"m\"\n[[merchants]]\nid = \"m\"\n";
    let e = err(dup);
    assert!(e.contains("merchants \"m\" (line 3): duplicate id"), "{e}");
}

#[test]
fn check_config_output_uses_the_config_spelling() {
    let text = format!(
        "[retention]\ndedupe_window = \"7d\"\ntask_results = \"90s\"\n{PROVIDERS}\n\
         [[providers]]\nid = \"adyen\"\npreset = \"adyen\"\nmerchant_id = \"shop-1\"\n\
         [providers.auth]\nsecrets = [\"00ff\"]\n"
    );
    let out = describe(&parse(&text).unwrap());
    assert!(out.contains("retention.dedupe_window = 7d\n"), "{out}");
    assert!(out.contains("retention.task_results = 90s\n"), "{out}");
    assert!(out.contains("preset=adyen auth=adyen-hmac"), "{out}");
    assert!(out.contains("storage.durability = sync"), "{out}");
    assert!(!out.contains("AdyenHmac") && !out.contains("days"), "{out}");
}

#[test]
fn delivery_limits_of_zero_are_refused_by_name() {
    let base = merchants("k1", "api_keys = [\"k2\"]");
    for (line, key) in [
        ("max_in_flight = 0", "delivery.max_in_flight"),
        ("replay_max_events = 0", "delivery.replay_max_events"),
    ] {
        let e = err(&format!("{base}\n[delivery]\n{line}\n"));
        assert!(e.contains(key) && e.contains("at least 1"), "{line}: {e}");
    }
    let ok = parse(&format!("{base}\n[delivery]\nreplay_max_events = 5\n")).unwrap();
    assert_eq!(ok.delivery.replay_max_events, 5);
    assert_eq!(parse(&base).unwrap().delivery.replay_max_events, 10_000);
}
