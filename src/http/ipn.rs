//! `POST /v1/ipn/{provider}`: checks, one durable write, acknowledge.
//!
//! Order of work (SPEC §4): provider known (404) → IP allowed (403) → size
//! (413) → source over `ingress.unauthenticated_rate_limit` (429, before any
//! verification) → authenticate the raw body (401; charges the source's
//! bucket, quarantines a bounded record) → provider `rate_limit` (429,
//! authenticated requests only) → dedupe → persist request + task durably →
//! ack. Nothing else happens before the ack, and failed authentications
//! never spend a provider's bucket.

use std::net::IpAddr;

use actix_web::http::header::{self, HeaderMap};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use governor::clock::Clock;
use ipnet::IpNet;
use tracing::Instrument;
use uuid::Uuid;

use super::limits::whole_seconds;
use super::{ApiError, AppState};
use crate::config::{Ack, ProviderSettings};
use crate::store::{Accepted, NewIpn, QuarantineRecord, RawRequest, TaskState};

/// Headers not kept with a stored request: credentials, and transport
/// details of the hop to us that no mapping or audit needs.
const DROPPED_HEADERS: [&str; 11] = [
    "authorization",
    "cookie",
    "proxy-authorization",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "expect",
    "content-length",
    "accept-encoding",
];

/// Receive an IPN: authenticate the raw body, store it durably, acknowledge
/// ([`receive`] in a span naming the provider and, once known, the request
/// id; counted in `ipn_relay_ingress_total` and `ipn_relay_ack_seconds`).
///
/// The body is the provider's own (JSON, form or other). How it is
/// authenticated depends on the provider's `auth.scheme`, with its own
/// headers: `hmac` (a configured header), `stripe` (`Stripe-Signature`),
/// `standard-webhooks` (`webhook-id`, `webhook-timestamp`,
/// `webhook-signature`), `basic` (`Authorization: Basic`), `rsa-sha256`
/// (`Content-Signature`), `adyen-hmac` (in the body), `paymentsos`
/// (`signature`, `event-type`), `none` (address allow-list only). A provider
/// with a fixed `ack` answers its configured status and body instead of the
/// JSON acknowledgement.
#[utoipa::path(
    post, path = "/v1/ipn/{provider}", tag = "provider",
    params(
        ("provider" = String, Path, description = "A configured provider id"),
        ("Stripe-Signature" = Option<String>, Header, description = "`stripe`: `t=…,v1=…`"),
        ("webhook-id" = Option<String>, Header, description = "`standard-webhooks`"),
        ("webhook-timestamp" = Option<String>, Header, description = "`standard-webhooks`"),
        ("webhook-signature" = Option<String>, Header, description = "`standard-webhooks`: `v1,<base64> …`"),
        ("Content-Signature" = Option<String>, Header, description = "`rsa-sha256`: base64 RSA-SHA256 of the body"),
        ("signature" = Option<String>, Header, description = "`paymentsos`: `sig1=<hex>`"),
        ("event-type" = Option<String>, Header, description = "`paymentsos`"),
        ("X-Forwarded-For" = Option<String>, Header, description = "Read only when the peer is in `ingress.trusted_proxies`"),
    ),
    request_body(
        description = "The provider's raw notification (any content type; these two are the common ones)",
        content((Object = "application/json"), (Object = "application/x-www-form-urlencoded")),
    ),
    responses(
        (status = 202, description = "Accepted: a new task", body = super::openapi::Ack,
            headers(("x-request-id" = String, description = "The request_id"))),
        (status = 200, description = "A duplicate: the original request_id and its task's status", body = super::openapi::Ack,
            headers(("x-request-id" = String, description = "The request_id"))),
        (status = 400, description = "The body could not be read", body = super::openapi::ErrorBody),
        (status = 401, description = "Authentication failed (quarantined)", body = super::openapi::ErrorBody),
        (status = 403, description = "The source address is not in the provider's `allowed_ips`", body = super::openapi::ErrorBody),
        (status = 404, description = "No such provider", body = super::openapi::ErrorBody),
        (status = 413, description = "Body over `server.max_body_bytes`", body = super::openapi::ErrorBody),
        (status = 429, description = "Over a rate limit", body = super::openapi::ErrorBody,
            headers(("Retry-After" = String, description = "Seconds"))),
        (status = 503, description = "Storage unavailable or disk nearly full; retry", body = super::openapi::ErrorBody),
    )
)]
pub async fn ingest(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let started = std::time::Instant::now();
    let name = path.into_inner();
    // Names of unknown providers come from the caller: one label for all.
    let label = match state.settings.provider(&name) {
        Some(p) => p.id.as_str(),
        None => "unknown",
    };
    let span = tracing::info_span!("ipn", provider = %label, request_id = tracing::field::Empty);
    let res = receive(req, name, payload, &state).instrument(span).await;
    match &res {
        Ok((_, result)) => crate::metrics::ingress(label, result, Some(started.elapsed())),
        Err(e) => crate::metrics::ingress(label, e.code(), None),
    }
    res.map(|(r, _)| r)
}

/// The checks, the write and the ack; the result label with the ack.
async fn receive(
    req: HttpRequest,
    name: String,
    mut payload: web::Payload,
    state: &AppState,
) -> Result<(HttpResponse, &'static str), ApiError> {
    let provider = state
        .settings
        .provider(&name)
        .ok_or_else(|| ApiError::UnknownProvider(truncate(&name, 64)))?;

    let peer = client_ip(
        req.peer_addr().map(|a| a.ip()),
        req.headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok()),
        &state.settings.ingress.trusted_proxies,
    );
    if !provider.allowed_ips.is_empty()
        && !peer.is_some_and(|ip| provider.allowed_ips.iter().any(|n| n.contains(&ip)))
    {
        return Err(ApiError::Forbidden);
    }

    let max = state.settings.server.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(ApiError::PayloadTooLarge(max));
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::InvalidRequest(format!("could not read the body: {e}")))?;
        if body.len() + chunk.len() > max {
            return Err(ApiError::PayloadTooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    let body = body.freeze();

    if let Some(secs) = peer.and_then(|ip| state.sources.retry_after(ip)) {
        return Err(ApiError::RateLimited(secs));
    }

    let now_ms = state.now_ms();
    let headers = kept_headers(req.headers());
    let peer_s = peer.map(|p| p.to_string());

    if let Err(e) = crate::auth::verify(
        &provider.auth,
        req.headers(),
        &body,
        now_ms.div_euclid(1000),
    ) {
        if let Some(ip) = peer {
            state.sources.charge_failure(ip);
        }
        let reason = e.to_string();
        log_rejection(state, &provider.id, peer_s.as_deref(), &reason, now_ms);
        let rec = QuarantineRecord::new(
            provider.id.clone(),
            now_ms,
            reason.clone(),
            peer_s,
            headers,
            &body,
        );
        if let Err(qe) = state.store.quarantine(rec).await {
            tracing::warn!(error = %qe, "could not quarantine a rejected request");
        }
        return Err(ApiError::InvalidSignature(reason));
    }

    if let Some(limiter) = state.limiters.get(&provider.id) {
        if let Err(not_until) = limiter.check() {
            let clock = limiter.clock();
            return Err(ApiError::RateLimited(whole_seconds(
                not_until.earliest_possible(),
                clock.now(),
            )));
        }
    }

    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Parsed once here for the dedupe key, and handed to the processor.
    let doc = crate::mapping::parse_body(content_type.as_deref(), &body).ok();
    let (event_key, item_keys) = provider
        .mapping
        .event_keys_of(&headers, doc.as_ref(), &body);
    let raw = RawRequest {
        request_id: Uuid::new_v4(),
        provider: provider.id.clone(),
        received_at: now_ms,
        content_type,
        headers,
        body: body.to_vec(),
        peer: peer_s,
        event_key,
    };
    let window = state.settings.retention.dedupe_window.as_millis() as i64;
    let new_id = raw.request_id;
    let ipn = NewIpn {
        request: raw,
        doc,
        dedupe_window_ms: window,
        item_keys,
    };
    // Refuse before sled meets ENOSPC (a failed sled write is fatal).
    if state.free_space.low() {
        return Err(ApiError::Unavailable(
            "free disk space is below storage.min_free_space; retry later".into(),
        ));
    }
    let accepted = state.store.accept(ipn, now_ms).await?;
    Ok(match accepted {
        Accepted::New => {
            tracing::Span::current().record("request_id", tracing::field::display(new_id));
            tracing::info!(provider = %provider.id, request_id = %new_id, "IPN accepted");
            (ack(state, provider, new_id, "processing", None), "accepted")
        }
        Accepted::Duplicate {
            request_id,
            state: task_state,
        } => {
            tracing::Span::current().record("request_id", tracing::field::display(request_id));
            tracing::info!(provider = %provider.id, %request_id, "duplicate IPN acknowledged");
            let s = match task_state {
                Some(TaskState::Processing) => "processing",
                _ => "completed",
            };
            (ack(state, provider, request_id, s, Some(200)), "duplicate")
        }
    })
}

/// The failed-authentication line, at most a few a second per provider
/// (service clock); the next one logged says how many were left out.
fn log_rejection(state: &AppState, provider: &str, peer: Option<&str>, reason: &str, now_ms: i64) {
    let admitted = state
        .auth_log
        .get(provider)
        .and_then(|t| t.lock().unwrap_or_else(|e| e.into_inner()).admit(now_ms));
    if let Some(suppressed) = admitted {
        tracing::info!(
            %provider,
            peer = peer.unwrap_or("-"),
            %reason,
            suppressed,
            "IPN rejected: authentication failed"
        );
    }
}

/// The JSON acknowledgement (SPEC §4).
#[derive(serde::Serialize)]
struct AckBody<'a> {
    status: &'a str,
    request_id: Uuid,
    status_url: String,
    response_url: String,
}

fn ack(
    state: &AppState,
    provider: &ProviderSettings,
    id: Uuid,
    status: &str,
    force: Option<u16>,
) -> HttpResponse {
    match &provider.ack {
        Ack::Json { status: code } => {
            let code = actix_web::http::StatusCode::from_u16(force.unwrap_or(*code))
                .unwrap_or(actix_web::http::StatusCode::ACCEPTED);
            HttpResponse::build(code)
                .insert_header(("x-request-id", id.to_string()))
                .json(AckBody {
                    status,
                    request_id: id,
                    status_url: state.status_url(&id),
                    response_url: state.response_url(&id),
                })
        }
        // A provider that wants a fixed answer (Adyen's "[accepted]") gets it for duplicates too.
        Ack::Fixed {
            status: code,
            body,
            content_type,
        } => {
            let code = actix_web::http::StatusCode::from_u16(*code)
                .unwrap_or(actix_web::http::StatusCode::OK);
            HttpResponse::build(code)
                .insert_header(("x-request-id", id.to_string()))
                .content_type(content_type.as_str())
                .body(body.clone())
        }
    }
}

fn kept_headers(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .filter(|(k, _)| !DROPPED_HEADERS.contains(&k.as_str()))
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// The address a request came from: the peer, or — when the peer is a
/// trusted proxy — the right-most `X-Forwarded-For` entry that is not.
pub fn client_ip(peer: Option<IpAddr>, xff: Option<&str>, trusted: &[IpNet]) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    let mut ip = peer?.to_canonical();
    if !is_trusted(&ip) {
        return Some(ip);
    }
    for part in xff.unwrap_or("").rsplit(',') {
        let Ok(a) = part.trim().parse::<IpAddr>() else {
            break;
        };
        ip = a.to_canonical();
        if !is_trusted(&ip) {
            break;
        }
    }
    Some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|x| x.parse().unwrap()).collect()
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_xff_says() {
        let ip = client_ip(
            Some("203.0.113.9".parse().unwrap()),
            Some("10.0.0.1"),
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(ip, Some("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn trusted_proxy_chain_yields_the_rightmost_untrusted_entry() {
        let ip = client_ip(
            Some("10.0.0.2".parse().unwrap()),
            Some("198.51.100.7, 203.0.113.5, 10.0.0.3"),
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(ip, Some("203.0.113.5".parse().unwrap()));
    }

    #[test]
    fn garbage_in_xff_stops_the_walk_at_the_last_good_hop() {
        let ip = client_ip(
            Some("10.0.0.2".parse().unwrap()),
            Some("nonsense"),
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(ip, Some("10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_rules() {
        let ip = client_ip(Some("::ffff:127.0.0.1".parse().unwrap()), None, &[]);
        assert_eq!(ip, Some("127.0.0.1".parse().unwrap()));
    }
}
