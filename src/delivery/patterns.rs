//! Endpoint event-type patterns: `*` (everything), `payment.*` (every type
//! under `payment.`), or an exact type such as `payment.succeeded`.

/// The notification type of an applied change to `status`.
pub fn event_type(status: crate::domain::Status) -> String {
    format!("payment.{}", status.as_str())
}

/// Does any of `patterns` match `event_type`?
pub fn matches(patterns: &[String], event_type: &str) -> bool {
    patterns.iter().any(|p| matches_one(p, event_type))
}

fn matches_one(pattern: &str, event_type: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('.') => event_type.starts_with(prefix),
        Some(_) => false,
        None => pattern == event_type,
    }
}

/// Is `pattern` one of the accepted shapes? (`*`, `a.*`, `a.b`)
pub fn valid(pattern: &str) -> bool {
    let body = pattern.strip_suffix(".*").unwrap_or(pattern);
    pattern == "*"
        || (!body.is_empty()
            && body.split('.').all(|seg| {
                !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_prefixes_and_exact_types() {
        let p = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches(&p(&["*"]), "payment.succeeded"));
        assert!(matches(&p(&["payment.*"]), "payment.succeeded"));
        assert!(matches(&p(&["payment.succeeded"]), "payment.succeeded"));
        assert!(!matches(&p(&["payment.failed"]), "payment.succeeded"));
        assert!(!matches(&p(&["refund.*"]), "payment.succeeded"));
        assert!(!matches(&p(&["pay*"]), "payment.succeeded"));
        assert!(!matches(&p(&[]), "payment.succeeded"));
        assert!(matches(
            &p(&["payment.failed", "payment.refunded"]),
            "payment.refunded"
        ));
    }

    #[test]
    fn only_the_documented_shapes_are_valid() {
        for ok in [
            "*",
            "payment.*",
            "payment.succeeded",
            "payment.partially_refunded",
        ] {
            assert!(valid(ok), "{ok}");
        }
        for bad in [
            "",
            "pay*",
            "payment.",
            ".*",
            "payment..x",
            "Payment.*",
            "payment.*.x",
            "a b",
        ] {
            assert!(!valid(bad), "{bad}");
        }
    }
}
