//! Request bodies → one JSON document.
//!
//! `application/x-www-form-urlencoded` becomes a flat object of strings
//! (a repeated key: the last one wins). Anything else is parsed as JSON
//! whatever its content type says: many providers send JSON as `text/plain`.

use serde_json::{Map, Value};

use super::MapError;

/// Parse a raw IPN body. Errors are [`MapError::MalformedPayload`]; invalid
/// UTF-8 and deep nesting (serde_json's recursion limit) included, and each
/// names the content type the body was read as.
///
/// A body labelled `application/x-www-form-urlencoded` that is a JSON object
/// (what `curl --data-binary @ipn.json` sends) is read as JSON; any other
/// label, or none, is read as JSON.
pub fn parse_body(content_type: Option<&str>, body: &[u8]) -> Result<Value, MapError> {
    match content_type {
        Some(ct) if is_form(ct) => match parse_json(body) {
            Ok(v) if v.is_object() => Ok(v),
            _ => parse_form(body),
        },
        ct => parse_json(body).map_err(|e| {
            let label = match ct {
                Some(ct) => format!("content-type {ct:?}"),
                None => "no content-type".to_string(),
            };
            MapError::MalformedPayload(format!(
                "body ({label}, read as JSON) is not valid JSON: {e}"
            ))
        }),
    }
}

fn is_form(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/x-www-form-urlencoded")
}

fn parse_json(body: &[u8]) -> Result<Value, serde_json::Error> {
    // A UTF-8 byte order mark is legal in front of JSON text, serde_json
    // just does not expect it.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    serde_json::from_slice(body)
}

fn parse_form(body: &[u8]) -> Result<Value, MapError> {
    std::str::from_utf8(body).map_err(|e| {
        MapError::MalformedPayload(format!(
            "body (content-type application/x-www-form-urlencoded) is not valid UTF-8: {e}"
        ))
    })?;
    // Percent-escapes that decode to invalid UTF-8 become U+FFFD.
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|e| {
        MapError::MalformedPayload(format!(
            "body (content-type application/x-www-form-urlencoded) is not a valid form: {e}"
        ))
    })?;
    let object: Map<String, Value> = pairs
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    Ok(Value::Object(object))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn form_bodies_become_flat_objects_of_strings_last_key_wins() {
        let body = b"status=ok&amount=1000&name=J%C3%B6rg+M&status=paid&empty=";
        let doc = parse_body(
            Some("Application/X-WWW-Form-Urlencoded; charset=UTF-8"),
            body,
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"status": "paid", "amount": "1000", "name": "Jörg M", "empty": ""})
        );
    }

    #[test]
    fn json_is_parsed_whatever_the_content_type() {
        let body = br#"{"a":[1,{"b":null}]}"#;
        for ct in [
            None,
            Some("application/json"),
            Some("text/plain"),
            Some("garbage"),
        ] {
            assert_eq!(
                parse_body(ct, body).unwrap(),
                json!({"a": [1, {"b": null}]})
            );
        }
        assert_eq!(
            parse_body(None, b"\xEF\xBB\xBF{\"x\":1}").unwrap(),
            json!({"x": 1})
        );
    }

    #[test]
    fn malformed_bodies_are_malformed_payload_errors() {
        let deep_array = "[".repeat(100_000);
        let deep_object = "{\"a\":".repeat(100_000);
        let cases: Vec<(Option<&str>, Vec<u8>)> = vec![
            (None, b"".to_vec()),
            (None, b"{\"a\":".to_vec()),
            (None, b"not json".to_vec()),
            (Some("application/json"), deep_array.into_bytes()),
            (None, deep_object.into_bytes()),
            (None, b"{\"a\":\"\xff\xfe\"}".to_vec()),
            (
                Some("application/x-www-form-urlencoded"),
                b"a=\xff".to_vec(),
            ),
        ];
        for (ct, body) in cases {
            let err = parse_body(ct, &body).unwrap_err();
            assert_eq!(err.code(), "malformed_payload", "{err}");
        }
    }

    #[test]
    fn json_labelled_as_a_form_is_read_as_json() {
        // `curl --data-binary @ipn.json` labels the body as a form.
        let body = br#"{"id":"evt_1","data":{"status":"Succeed"}}"#;
        for ct in [
            Some("application/x-www-form-urlencoded"),
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            None,
        ] {
            assert_eq!(
                parse_body(ct, body).unwrap(),
                json!({"id": "evt_1", "data": {"status": "Succeed"}}),
                "{ct:?}"
            );
        }
        // A form is still a form; a JSON non-object labelled form too.
        assert_eq!(
            parse_body(Some("application/x-www-form-urlencoded"), b"a=1").unwrap(),
            json!({"a": "1"})
        );
        assert_eq!(
            parse_body(Some("application/x-www-form-urlencoded"), b"[1]").unwrap(),
            json!({"[1]": ""})
        );
    }

    #[test]
    fn parse_errors_name_the_content_type_used() {
        let msg = |ct, body: &[u8]| parse_body(ct, body).unwrap_err().to_string();
        let m = msg(Some("application/json"), b"{");
        assert!(
            m.contains("content-type \"application/json\", read as JSON"),
            "{m}"
        );
        let m = msg(None, b"{");
        assert!(m.contains("no content-type, read as JSON"), "{m}");
        let m = msg(Some("application/x-www-form-urlencoded"), b"a=\xff");
        assert!(
            m.contains("content-type application/x-www-form-urlencoded"),
            "{m}"
        );
    }
}
