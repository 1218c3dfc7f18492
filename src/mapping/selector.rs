//! Selectors: where a field's value comes from (SPEC §2 `[providers.mapping]`).
//!
//! - an RFC 6901 JSON pointer into the event document (`"/data/status"`,
//!   `""` = the whole document);
//! - `header:Name`, a request header (case-insensitive);
//! - a template mixing text and `{…}` parts, each a pointer or header:
//!   `"{/eventCode}:{/success}"`. Absent parts render as `""`; the template
//!   is absent only when every part is.
//!
//! A value is read as a string: JSON strings as they are, numbers and bools
//! as their JSON text. Null, objects, arrays, missing values and empty
//! strings are absent.

use serde_json::Value;

use super::HeaderLookup;

/// Where a selector is evaluated: one event document and its request headers.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub doc: &'a Value,
    pub headers: &'a dyn HeaderLookup,
}

impl Ctx<'_> {
    /// The string value at a (known-valid) pointer.
    pub fn pointer(&self, pointer: &str) -> Option<String> {
        self.doc.pointer(pointer).and_then(scalar_text)
    }

    /// A header's value, if present and not empty.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .header(name)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Pointer(String),
    Header(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Text(String),
    Part(Source),
}

/// A compiled selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selector {
    Source(Source),
    Template(Vec<Piece>),
}

impl Selector {
    pub fn parse(text: &str) -> Result<Selector, String> {
        if !text.contains(['{', '}']) {
            return parse_source(text).map(Selector::Source);
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let open = rest.find('{');
            let close = rest.find('}');
            match (open, close) {
                (None, None) => {
                    pieces.push(Piece::Text(rest.to_string()));
                    break;
                }
                (Some(o), Some(c)) if o < c => {
                    if o > 0 {
                        pieces.push(Piece::Text(rest[..o].to_string()));
                    }
                    let inner = &rest[o + 1..c];
                    if inner.contains('{') {
                        return Err(format!("nested '{{' in template {text:?}"));
                    }
                    let source = parse_source(inner)
                        .map_err(|e| format!("in template {text:?}: part {{{inner}}}: {e}"))?;
                    pieces.push(Piece::Part(source));
                    rest = &rest[c + 1..];
                }
                (Some(_), None) => return Err(format!("unclosed '{{' in template {text:?}")),
                _ => return Err(format!("unmatched '}}' in template {text:?}")),
            }
        }
        Ok(Selector::Template(pieces))
    }

    pub fn value(&self, ctx: &Ctx<'_>) -> Option<String> {
        match self {
            Selector::Source(source) => source.value(ctx),
            Selector::Template(pieces) => {
                let mut out = String::new();
                let mut any = false;
                for piece in pieces {
                    match piece {
                        Piece::Text(text) => out.push_str(text),
                        Piece::Part(source) => {
                            if let Some(v) = source.value(ctx) {
                                any = true;
                                out.push_str(&v);
                            }
                        }
                    }
                }
                any.then_some(out)
            }
        }
    }
}

impl Source {
    fn value(&self, ctx: &Ctx<'_>) -> Option<String> {
        match self {
            Source::Pointer(p) => ctx.pointer(p),
            Source::Header(name) => ctx.header(name),
        }
    }
}

fn parse_source(text: &str) -> Result<Source, String> {
    if let Some(name) = strip_prefix_ci(text, "header:") {
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(format!("{text:?} does not name a valid HTTP header"));
        }
        return Ok(Source::Header(name.to_ascii_lowercase()));
    }
    check_pointer(text)?;
    Ok(Source::Pointer(text.to_string()))
}

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// RFC 7230 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn check_pointer(text: &str) -> Result<(), String> {
    if !(text.is_empty() || text.starts_with('/')) {
        return Err(format!(
            "{text:?} is not a selector: expected a JSON pointer starting with '/' \
             (\"\" = whole document), header:Name, or a template with {{…}} parts"
        ));
    }
    let bytes = text.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'~' && !matches!(bytes.get(i + 1), Some(b'0' | b'1')) {
            return Err(format!(
                "invalid escape in JSON pointer {text:?}: '~' must be followed by 0 or 1"
            ));
        }
    }
    Ok(())
}

/// A value read as a string; `None` for null, containers and empty strings.
pub(crate) fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The `items` selector: a JSON pointer whose `*` segments match every
/// element of an array, e.g. `/notificationItems/*/NotificationRequestItem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ItemsPath(Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    AnyElement,
}

impl ItemsPath {
    /// `""` parses to the empty path: the whole document is the one item.
    pub fn parse(text: &str) -> Result<ItemsPath, String> {
        check_pointer(text)?;
        let segments = text
            .split('/')
            .skip(1)
            .map(|s| match s {
                "*" => Segment::AnyElement,
                s => Segment::Key(s.replace("~1", "/").replace("~0", "~")),
            })
            .collect();
        Ok(ItemsPath(segments))
    }

    pub fn is_whole_document(&self) -> bool {
        self.0.is_empty()
    }

    /// Every matched element, in document order; nulls are not items.
    pub fn select<'v>(&self, doc: &'v Value) -> Vec<&'v Value> {
        let mut current = vec![doc];
        for segment in &self.0 {
            current = current
                .into_iter()
                .flat_map(|v| -> Vec<&Value> {
                    match (segment, v) {
                        (Segment::AnyElement, Value::Array(items)) => items.iter().collect(),
                        (Segment::AnyElement, _) => Vec::new(),
                        (Segment::Key(k), Value::Object(map)) => map.get(k).into_iter().collect(),
                        (Segment::Key(k), Value::Array(items)) => array_index(k)
                            .and_then(|i| items.get(i))
                            .into_iter()
                            .collect(),
                        (Segment::Key(_), _) => Vec::new(),
                    }
                })
                .collect();
        }
        current.retain(|v| !v.is_null());
        current
    }
}

/// RFC 6901 array index: `0` or digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    let ok = token == "0"
        || (!token.starts_with('0')
            && !token.is_empty()
            && token.bytes().all(|b| b.is_ascii_digit()));
    ok.then(|| token.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::NoHeaders;
    use serde_json::json;

    fn eval(selector: &str, doc: &Value, headers: &dyn HeaderLookup) -> Option<String> {
        Selector::parse(selector)
            .unwrap()
            .value(&Ctx { doc, headers })
    }

    #[test]
    fn pointers_read_scalars_as_text_and_skip_the_rest() {
        let doc = json!({"s": "x", "n": 12, "f": 1.5, "b": false, "null": null,
            "o": {"a/b": {"m~n": "esc"}}, "arr": ["first"], "empty": ""});
        let v = |s| eval(s, &doc, &NoHeaders);
        assert_eq!(v("/s").as_deref(), Some("x"));
        assert_eq!(v("/n").as_deref(), Some("12"));
        assert_eq!(v("/f").as_deref(), Some("1.5"));
        assert_eq!(v("/b").as_deref(), Some("false"));
        assert_eq!(v("/o/a~1b/m~0n").as_deref(), Some("esc"));
        assert_eq!(v("/arr/0").as_deref(), Some("first"));
        for absent in ["/null", "/o", "/arr", "/missing", "/empty", "", "/s/deeper"] {
            assert_eq!(v(absent), None, "{absent}");
        }
        assert_eq!(
            eval("", &json!("whole"), &NoHeaders).as_deref(),
            Some("whole")
        );
    }

    #[test]
    fn headers_are_case_insensitive() {
        let headers = vec![(
            "event-type".to_string(),
            "payment.capture.create".to_string(),
        )];
        let doc = json!({});
        assert_eq!(
            eval("header:Event-Type", &doc, &headers).as_deref(),
            Some("payment.capture.create")
        );
        assert_eq!(
            eval("HEADER:event-type", &doc, &headers).as_deref(),
            Some("payment.capture.create")
        );
        assert_eq!(eval("header:x-missing", &doc, &headers), None);
    }

    #[test]
    fn templates_render_missing_parts_empty_and_are_absent_only_if_all_are() {
        let doc = json!({"code": "CAPTURE", "ok": true});
        let headers = vec![("x-env".to_string(), "live".to_string())];
        let v = |s| eval(s, &doc, &headers);
        assert_eq!(v("{/code}:{/ok}").as_deref(), Some("CAPTURE:true"));
        assert_eq!(v("{/code}:{/nope}").as_deref(), Some("CAPTURE:"));
        assert_eq!(v("{/nope}-{/code}").as_deref(), Some("-CAPTURE"));
        assert_eq!(v("{header:X-Env}/{/code}").as_deref(), Some("live/CAPTURE"));
        assert_eq!(v("pre {/nope}:{/nada} post"), None);
    }

    #[test]
    fn bad_selectors_are_rejected_with_a_reason() {
        for bad in [
            "data/status",
            "{/a",
            "/a}",
            "{/a{/b}}",
            "{x}",
            "/a~2",
            "/a~",
            "header:",
            "header:a b",
        ] {
            let err = Selector::parse(bad).unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
        assert!(ItemsPath::parse("items/*").is_err());
    }

    #[test]
    fn items_path_expands_wildcards_in_document_order() {
        let doc =
            json!({"list": [{"it": 1}, {"other": 2}, {"it": null}, {"it": 3}], "obj": {"it": 4}});
        let items = ItemsPath::parse("/list/*/it").unwrap();
        assert_eq!(items.select(&doc), vec![&json!(1), &json!(3)]);
        assert_eq!(
            ItemsPath::parse("/list/1/other").unwrap().select(&doc),
            vec![&json!(2)]
        );
        assert!(ItemsPath::parse("/list/01/other")
            .unwrap()
            .select(&doc)
            .is_empty());
        assert!(ItemsPath::parse("/obj/*").unwrap().select(&doc).is_empty());
        assert!(ItemsPath::parse("").unwrap().is_whole_document());
    }
}
