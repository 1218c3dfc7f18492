//! `check-config`'s view of what would run, secrets redacted.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Settings;

/// A one-line-per-key view for `check-config`: what would run, secrets redacted.
pub fn describe(s: &Settings) -> String {
    let mut out = BTreeMap::new();
    out.insert("server.listen", s.server.listen.to_string());
    out.insert("server.public_url", public_url(s));
    out.insert("server.max_body_bytes", s.server.max_body_bytes.to_string());
    out.insert(
        "server.shutdown_timeout",
        fmt_dur(s.server.shutdown_timeout),
    );
    out.insert("storage.path", s.storage.path.display().to_string());
    out.insert(
        "storage.durability",
        match s.storage.durability {
            super::Durability::Sync => "sync".into(),
            super::Durability::Async => "async".into(),
        },
    );
    out.insert(
        "storage.min_free_space",
        s.storage.min_free_space.to_string(),
    );
    out.insert("retention.task_results", fmt_dur(s.retention.task_results));
    out.insert(
        "retention.dedupe_window",
        fmt_dur(s.retention.dedupe_window),
    );
    out.insert("retention.events", fmt_dur(s.retention.events));
    out.insert(
        "admin.tokens",
        format!("{} [redacted]", s.admin_tokens.len()),
    );
    out.insert(
        "ingress.rate_limit",
        format!(
            "{}/s burst {} per provider",
            s.ingress.rate_limit.per_second, s.ingress.rate_limit.burst
        ),
    );
    out.insert(
        "ingress.unauthenticated_rate_limit",
        format!(
            "{}/s burst {} per source address, charged per failed authentication",
            s.ingress.unauthenticated_rate_limit.per_second,
            s.ingress.unauthenticated_rate_limit.burst
        ),
    );
    out.insert("returns.wait_for_final", fmt_dur(s.returns.wait_for_final));
    let mut text: String = out.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    for p in &s.providers {
        text.push_str(&format!(
            "provider {}: POST {}/v1/ipn/{} preset={} auth={} secrets={} [redacted] merchant={} allowed_ips={} reorder_window={}\n",
            p.id,
            public_url(s),
            p.id,
            super::spelling(&p.preset),
            super::spelling(&p.auth.scheme),
            p.auth.secrets.len(),
            p.merchant_id.as_deref().unwrap_or("-"),
            if p.allowed_ips.is_empty() { "any".into() } else { format!("{:?}", p.allowed_ips) },
            fmt_dur(p.reorder_window),
        ));
    }
    for m in &s.merchants {
        text.push_str(&format!(
            "merchant {}: api_keys={} [redacted] return_origins={:?} default_site_url={} endpoints={}\n",
            m.id,
            m.api_keys.len(),
            m.allowed_return_origins,
            m.default_site_url.as_ref().map(|u| u.as_str()).unwrap_or("-"),
            m.endpoints.iter().map(|e| format!("{}={}", e.id, e.url)).collect::<Vec<_>>().join(","),
        ));
    }
    text
}

fn public_url(s: &Settings) -> String {
    s.server
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", s.server.listen))
}

fn fmt_dur(d: Duration) -> String {
    super::duration_spelling(d)
}
