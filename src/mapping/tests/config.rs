//! Config merging, validation, generic mappings and every `MapError`.

use serde_json::json;

use crate::domain::Status;
use crate::mapping::presets::defaults;
use crate::mapping::{
    parse_body, MapError, Mapping, MappingConfigError, NoHeaders, OneOrMany, Preset, RawMapping,
};

fn raw(toml_text: &str) -> RawMapping {
    toml::from_str(toml_text).unwrap()
}

fn compile_err(preset: Preset, toml_text: &str) -> MappingConfigError {
    Mapping::compile(preset, &raw(toml_text)).unwrap_err()
}

#[test]
fn raw_mapping_reads_the_config_table() {
    let r = raw(r#"
        payment_id = "/data/payment_id"
        status = ["{/a}:{/b}", "/data/status"]
        [statuses]
        Succeed = "succeeded"
        "refund:Failed" = "ignore"
    "#);
    assert_eq!(
        r.payment_id,
        Some(OneOrMany::One("/data/payment_id".into()))
    );
    assert_eq!(r.status.as_ref().unwrap().as_slice().len(), 2);
    assert_eq!(r.statuses["refund:Failed"], "ignore");
    assert!(
        toml::from_str::<RawMapping>("paymentid = \"/x\"").is_err(),
        "unknown keys are errors"
    );
    let preset: toml::Value = toml::from_str("preset = \"paymentsos\"").unwrap();
    assert_eq!(
        preset["preset"].clone().try_into::<Preset>().unwrap(),
        Preset::Paymentsos
    );
}

#[test]
fn config_errors_name_the_key() {
    let e = compile_err(Preset::Generic, "[statuses]\nFoo = \"paid\"");
    assert_eq!(e.key, "mapping.statuses.Foo");
    assert!(
        e.message.contains("\"paid\" is not a canonical status"),
        "{e}"
    );
    assert_eq!(
        compile_err(Preset::Generic, "status = \"data/status\"").key,
        "mapping.status"
    );
    assert_eq!(
        compile_err(Preset::Stripe, "charge_id = [\"/a\", \"{/b\"]").key,
        "mapping.charge_id"
    );
    assert_eq!(
        compile_err(Preset::Generic, "payment_id = []").key,
        "mapping.payment_id"
    );
    assert_eq!(
        compile_err(Preset::Adyen, "status = []").key,
        "mapping.status"
    );
    assert_eq!(
        compile_err(Preset::Adyen, "items = \"notificationItems\"").key,
        "mapping.items"
    );
    assert_eq!(
        compile_err(Preset::Generic, "[statuses]\n\"\" = \"failed\"").key,
        "mapping.statuses."
    );
    assert_eq!(
        e.to_string(),
        format!("mapping.statuses.Foo: {}", e.message)
    );
}

#[test]
fn explicit_settings_beat_the_preset() {
    let m = Mapping::compile(
        Preset::Adyen,
        &raw(r#"
            payment_id = "/additionalData/orderId"
            authorization_id = "/pspReference"
            merchant_id = []
            [statuses]
            "CAPTURE:true" = "authorized"
            "CAPTURE:false" = "failed"
            "OFFER_CLOSED:true" = "ignore"
        "#),
    )
    .unwrap();
    let doc = json!({"live": "false", "notificationItems": [
        {"NotificationRequestItem": {"eventCode": "CAPTURE", "success": "true", "pspReference": "P2",
            "originalReference": "P1", "merchantReference": "ref", "additionalData":
            {"orderId": "order-9", "metadata.merchant_id": "shop-1"}}},
        {"NotificationRequestItem": {"eventCode": "CAPTURE", "success": "false", "pspReference": "P3",
            "originalReference": "P1", "additionalData": {"orderId": "order-9"}}},
        {"NotificationRequestItem": {"eventCode": "OFFER_CLOSED", "success": "true", "pspReference": "P4"}},
        {"NotificationRequestItem": {"eventCode": "AUTHORISATION", "success": "true", "pspReference": "P5",
            "additionalData": {"orderId": "order-9"}}}
    ]});
    let events = m.extract(&NoHeaders, &doc).unwrap();
    let got: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.payment_id.as_str(),
                e.status,
                e.authorization_id.as_deref(),
                e.merchant_id.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("order-9", Status::Authorized, Some("P2"), None),
            ("order-9", Status::Failed, Some("P3"), None),
            ("order-9", Status::Authorized, Some("P5"), None),
        ],
        "explicit selectors, statuses and the hook-owned authorization_id all win"
    );
}

#[test]
fn generic_mapping_with_custom_statuses_on_a_form_body() {
    let m = Mapping::compile(
        Preset::Generic,
        &raw(r#"
            event_id = "/txn_id"
            payment_id = ["/order", "/invoice"]
            status = "/state"
            occurred_at = "/ts"
            amount = "/sum"
            currency = "/cur"
            [statuses]
            Succeed = "succeeded"
            Refund = "refunded"
        "#),
    )
    .unwrap();
    let body = b"txn_id=T-1&invoice=INV-7&state=Succeed&ts=1700000000&sum=-150&cur=byn&order=";
    let doc = parse_body(Some("application/x-www-form-urlencoded"), body).unwrap();
    let ev = &m.extract(&NoHeaders, &doc).unwrap()[0];
    assert_eq!(ev.payment_id, "INV-7", "an empty value counts as absent");
    assert_eq!(ev.status, Status::Succeeded);
    assert_eq!(
        (ev.amount, ev.currency.as_deref()),
        (Some(-150), Some("BYN"))
    );
    assert_eq!(ev.occurred_at, Some(1_700_000_000_000));
    // The canonical names still map to themselves.
    let doc = json!({"order": "o", "state": "charged_back"});
    assert_eq!(
        m.extract(&NoHeaders, &doc).unwrap()[0].status,
        Status::ChargedBack
    );
}

#[test]
fn status_lists_take_the_first_mapped_value() {
    let m = Mapping::compile(
        Preset::Generic,
        &raw(r#"
            payment_id = "/p"
            status = ["{/kind}:{/result}", "/result", "/fallback"]
            [statuses]
            "refund:ok" = "refunded"
            ok = "succeeded"
        "#),
    )
    .unwrap();
    let status = |doc: serde_json::Value| m.extract(&NoHeaders, &doc).map(|v| v[0].status);
    assert_eq!(
        status(json!({"p": "1", "kind": "refund", "result": "ok"})),
        Ok(Status::Refunded)
    );
    assert_eq!(
        status(json!({"p": "1", "kind": "sale", "result": "ok"})),
        Ok(Status::Succeeded)
    );
    assert_eq!(
        status(json!({"p": "1", "result": "ok"})),
        Ok(Status::Succeeded),
        "missing part renders empty"
    );
    assert_eq!(
        status(json!({"p": "1", "fallback": "failed"})),
        Ok(Status::Failed)
    );
    assert_eq!(
        status(json!({"p": "1", "kind": "sale", "result": "nope"})),
        Err(MapError::UnmappedStatus("sale:nope".into()))
    );
    assert_eq!(
        status(json!({"p": "1", "result": null})),
        Err(MapError::MissingStatus)
    );
}

#[test]
fn every_map_error_has_its_code_and_a_message() {
    let generic = Mapping::compile(Preset::Generic, &RawMapping::default()).unwrap();
    let adyen = Mapping::compile(Preset::Adyen, &RawMapping::default()).unwrap();
    let ok = json!({"data": {"payment_id": "p1", "status": "succeeded"}});
    assert_eq!(generic.extract(&NoHeaders, &ok).unwrap().len(), 1);
    let with = |path: &str, v: serde_json::Value| {
        let mut doc = ok.clone();
        *doc.pointer_mut(path).unwrap() = v;
        generic.extract(&NoHeaders, &doc).unwrap_err()
    };
    let cases = [
        (parse_body(None, b"{").unwrap_err(), "malformed_payload"),
        (
            adyen
                .extract(
                    &NoHeaders,
                    &json!({"live": "false", "notificationItems": []}),
                )
                .unwrap_err(),
            "no_items",
        ),
        (with("/data/payment_id", json!("")), "missing_payment_id"),
        (with("/data/status", json!(null)), "missing_status"),
        (with("/data/status", json!("paid")), "unmapped_status"),
        (
            generic
                .extract(&NoHeaders, &json!({"created": "soon", "data": ok["data"]}))
                .unwrap_err(),
            "invalid_occurred_at",
        ),
        (
            with(
                "/data",
                json!({"payment_id": "p1", "status": "failed", "amount": 10.5}),
            ),
            "invalid_amount",
        ),
    ];
    for (err, code) in cases {
        assert_eq!(err.code(), code);
        assert!(err.to_string().len() > 20, "{code}: {err}");
    }
    assert_eq!(
        with("/data/status", json!("paid")).to_string(),
        "unmapped status \"paid\": add it to mapping.statuses (a canonical status or \"ignore\")"
    );
}

#[test]
fn event_keys_are_stable_and_fall_back_to_the_body_hash() {
    let m = Mapping::compile(Preset::Generic, &RawMapping::default()).unwrap();
    let body = br#"{"id":"evt_1","data":{"payment_id":"p","status":"succeeded"}}"#;
    let key = m.event_key(&NoHeaders, None, body);
    assert_eq!(key, "id:evt_1");
    assert_eq!(m.event_key(&NoHeaders, Some("application/json"), body), key);
    assert_eq!(
        m.event_key(&NoHeaders, None, b""),
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let no_id = br#"{"data":{"payment_id":"p","status":"succeeded"}}"#;
    let hashed = m.event_key(&NoHeaders, None, no_id);
    assert!(
        hashed.starts_with("sha256:") && hashed.len() == 7 + 64,
        "{hashed}"
    );
    assert_eq!(m.event_key(&NoHeaders, None, no_id), hashed, "stable");
    // An id that looks like a hash still cannot collide with the hash form.
    let sneaky = format!(r#"{{"id":"{}"}}"#, &hashed);
    assert_eq!(
        m.event_key(&NoHeaders, None, sneaky.as_bytes()),
        format!("id:{hashed}")
    );

    let adyen = Mapping::compile(Preset::Adyen, &RawMapping::default()).unwrap();
    let one_without_id =
        br#"{"notificationItems":[{"NotificationRequestItem":{"pspReference":"A"}},
        {"NotificationRequestItem":{"merchantReference":"m"}}]}"#;
    assert!(adyen
        .event_key(&NoHeaders, None, one_without_id)
        .starts_with("sha256:"));
    assert!(adyen
        .event_key(&NoHeaders, None, b"{\"notificationItems\":[]}")
        .starts_with("sha256:"));
    assert_eq!(
        adyen.event_key(
            &NoHeaders,
            None,
            br#"{"notificationItems":[{"NotificationRequestItem":{"pspReference":"A"}}]}"#
        ),
        "id:A::",
        "a template with some parts present is present"
    );
}

#[test]
fn every_preset_compiles_and_its_table_only_names_canonical_statuses() {
    for preset in [
        Preset::Generic,
        Preset::Stripe,
        Preset::Adyen,
        Preset::Paymentsos,
        Preset::Begateway,
    ] {
        Mapping::compile(preset, &RawMapping::default()).unwrap();
        for (_, v) in defaults(preset).statuses {
            assert!(
                v == "ignore" || v.parse::<Status>().is_ok(),
                "{preset:?}: {v}"
            );
        }
    }
}

#[test]
fn paymentsos_table_covers_each_kind_and_action() {
    let t: std::collections::BTreeMap<_, _> =
        defaults(Preset::Paymentsos).statuses.into_iter().collect();
    assert_eq!(t.len(), 30);
    assert_eq!(t["payment.authorization.update:Failed"], "failed");
    assert_eq!(t["payment.capture.create:Failed"], "ignore");
    assert_eq!(t["payment.charge.create:Failed"], "failed");
    assert_eq!(t["payment.void.update:Succeed"], "canceled");
    assert_eq!(t["payment.refund.create:Pending"], "ignore");
}
