//! Merchant API: webhook endpoints (SPEC §5). Config-file endpoints are
//! listed with API ones but are read-only here (409). Secrets are shown on
//! create and rotate only. A URL is vetted by the SSRF guard at create and
//! patch (422 naming the reason), and again at every delivery.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use url::Url;

use super::caller::merchant_scope;
use super::caller::Scope;
use super::payments::rfc3339;
use super::{json_body, ApiError, AppState};
use crate::delivery::{patterns, signing, ssrf};
use crate::store::{EndpointRecord, EndpointSource, EndpointUpdate, Ordering, Replayed};

/// How long the secret before a rotation keeps signing.
pub const ROTATION_OVERLAP_MS: i64 = 24 * 3600 * 1000;
const MAX_URL: usize = 2048;
const MAX_DESCRIPTION: usize = 500;
const MAX_PATTERNS: usize = 50;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// Vetted by the SSRF guard.
    #[schema(example = "https://example.com/webhooks")]
    url: String,
    /// 1-50 patterns (`*`, `payment.*`, `payment.succeeded`); default `["payment.*"]`.
    events: Option<Vec<String>>,
    /// At most 500 characters.
    description: Option<String>,
    /// `fifo` (default) or `latest`.
    ordering: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    url: Option<String>,
    events: Option<Vec<String>>,
    /// null clears it.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    description: Option<Value>,
    ordering: Option<String>,
    disabled: Option<bool>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// RFC 3339.
    since: String,
    /// RFC 3339; default: now.
    until: Option<String>,
}

pub fn view(e: &EndpointRecord) -> Value {
    json!({
        "id": e.id,
        "merchant_id": e.merchant_id,
        "url": e.url,
        "events": e.events,
        "description": e.description,
        "ordering": ordering_str(e.ordering),
        "disabled": e.disabled,
        "disabled_reason": e.disabled_reason,
        "source": match e.source { EndpointSource::Config => "config", EndpointSource::Api => "api" },
        "created_at": rfc3339(e.created_at),
        "updated_at": rfc3339(e.updated_at),
    })
}

fn ordering_str(o: Ordering) -> &'static str {
    match o {
        Ordering::Fifo => "fifo",
        Ordering::Latest => "latest",
    }
}

fn parse_ordering(s: &str) -> Result<Ordering, ApiError> {
    match s {
        "fifo" => Ok(Ordering::Fifo),
        "latest" => Ok(Ordering::Latest),
        other => Err(ApiError::Unprocessable(format!(
            "ordering {other:?}: expected \"fifo\" or \"latest\""
        ))),
    }
}

fn check_events(events: &[String]) -> Result<(), ApiError> {
    if events.is_empty() || events.len() > MAX_PATTERNS {
        return Err(ApiError::Unprocessable(format!(
            "events: 1 to {MAX_PATTERNS} patterns"
        )));
    }
    match events.iter().find(|p| !patterns::valid(p)) {
        Some(bad) => Err(ApiError::Unprocessable(format!(
            "events: {bad:?} is not a pattern (`*`, `payment.*`, `payment.succeeded`)"
        ))),
        None => Ok(()),
    }
}

fn check_description(d: &str) -> Result<(), ApiError> {
    if d.chars().count() > MAX_DESCRIPTION || d.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(format!(
            "description: at most {MAX_DESCRIPTION} characters, no control characters"
        )));
    }
    Ok(())
}

/// Parse and vet a target URL: the SSRF guard, resolving its host now.
async fn check_url(state: &AppState, raw: &str) -> Result<String, ApiError> {
    if raw.len() > MAX_URL {
        return Err(ApiError::Unprocessable(format!(
            "url: longer than {MAX_URL} bytes"
        )));
    }
    let url = Url::parse(raw).map_err(|e| ApiError::Unprocessable(format!("url {raw:?}: {e}")))?;
    let d = &state.settings.delivery;
    let policy = ssrf::Policy {
        allow_private: d.allow_private_targets,
        https_only: d.https_only,
    };
    ssrf::check_url(&url, policy).map_err(|m| ApiError::Unprocessable(format!("url: {m}")))?;
    if let (Some(url::Host::Domain(host)), Some(port)) = (url.host(), url.port_or_known_default()) {
        ssrf::vet_host(host, port, policy)
            .await
            .map_err(|m| ApiError::Unprocessable(format!("url: {m}")))?;
    }
    Ok(url.to_string())
}

async fn own(state: &AppState, merchant: &str, id: &str) -> Result<EndpointRecord, ApiError> {
    state
        .store
        .endpoint(merchant, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no endpoint {id:?}")))
}

fn writable(e: &EndpointRecord) -> Result<(), ApiError> {
    if e.source == EndpointSource::Config {
        return Err(ApiError::Conflict(format!(
            "endpoint {:?} is defined in the config file; change it there",
            e.id
        )));
    }
    Ok(())
}

/// Create a webhook endpoint; its secret is shown here and on rotate only.
#[utoipa::path(
    post, path = "/v1/endpoints", tag = "endpoints", operation_id = "create_endpoint",
    params(Scope),
    request_body = CreateBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created (with `secret`)", body = super::openapi::Endpoint, links(
            ("get_endpoint" = (operation_id = "get_endpoint", parameters(("id" = "$response.body#/id")))),
            ("patch_endpoint" = (operation_id = "patch_endpoint", parameters(("id" = "$response.body#/id")))),
            ("delete_endpoint" = (operation_id = "delete_endpoint", parameters(("id" = "$response.body#/id")))),
            ("rotate_endpoint_secret" = (operation_id = "rotate_endpoint_secret", parameters(("id" = "$response.body#/id")))),
            ("replay_endpoint" = (operation_id = "replay_endpoint", parameters(("id" = "$response.body#/id"))))
        )),
        (status = 400, description = "Invalid body or query, or an admin token without `merchant_id`", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = super::openapi::ErrorBody),
        (status = 404, description = "An admin token naming no such merchant", body = super::openapi::ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = super::openapi::ErrorBody),
        (status = 422, description = "Invalid url (SSRF guard), events, description or ordering", body = super::openapi::ErrorBody),
        (status = 503, description = "Storage unavailable", body = super::openapi::ErrorBody),
    )
)]
pub async fn create(
    req: HttpRequest,
    scope: web::Query<Scope>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let merchant = merchant_scope(&req, &state, scope.merchant_id.as_deref())?;
    let b: CreateBody = json_body(&body)?;
    let url = check_url(&state, &b.url).await?;
    let events = b.events.unwrap_or_else(|| vec!["payment.*".into()]);
    check_events(&events)?;
    if let Some(d) = &b.description {
        check_description(d)?;
    }
    let ordering = b
        .ordering
        .as_deref()
        .map(parse_ordering)
        .transpose()?
        .unwrap_or_default();
    let now = state.now_ms();
    let ep = EndpointRecord {
        id: format!("ep_{}", ulid::Ulid::new()),
        merchant_id: merchant,
        url,
        events,
        description: b.description,
        ordering,
        disabled: false,
        disabled_reason: None,
        secret: signing::new_secret(),
        previous_secret: None,
        source: EndpointSource::Api,
        created_at: now,
        updated_at: now,
    };
    if !state.store.create_endpoint(ep.clone()).await? {
        return Err(ApiError::Internal("endpoint id collision".into()));
    }
    let mut v = view(&ep);
    v["secret"] = json!(ep.secret);
    Ok(HttpResponse::Created().json(v))
}

/// The caller's endpoints, config-file ones included.
#[utoipa::path(
    get, path = "/v1/endpoints", tag = "endpoints", operation_id = "list_endpoints",
    params(Scope),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Endpoints", body = super::openapi::EndpointList),
        (status = 400, description = "Invalid query, or an admin token without `merchant_id`", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = super::openapi::ErrorBody),
        (status = 404, description = "An admin token naming no such merchant", body = super::openapi::ErrorBody),
        (status = 503, description = "Storage unavailable", body = super::openapi::ErrorBody),
    )
)]
pub async fn list(
    req: HttpRequest,
    scope: web::Query<Scope>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let merchant = merchant_scope(&req, &state, scope.merchant_id.as_deref())?;
    let eps = state.store.endpoints(Some(&merchant)).await?;
    let data: Vec<Value> = eps.iter().map(view).collect();
    Ok(HttpResponse::Ok().json(json!({ "data": data })))
}

#[utoipa::path(
    get, path = "/v1/endpoints/{id}", tag = "endpoints", operation_id = "get_endpoint",
    params(("id" = String, Path, description = "`ep_…`"), Scope),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The endpoint", body = super::openapi::Endpoint),
        (status = 400, description = "Invalid query, or an admin token without `merchant_id`", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = super::openapi::ErrorBody),
        (status = 404, description = "No such endpoint (or, for an admin token, no such merchant)", body = super::openapi::ErrorBody),
        (status = 503, description = "Storage unavailable", body = super::openapi::ErrorBody),
    )
)]
pub async fn get(
    req: HttpRequest,
    path: web::Path<String>,
    scope: web::Query<Scope>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let merchant = merchant_scope(&req, &state, scope.merchant_id.as_deref())?;
    let ep = own(&state, &merchant, &path).await?;
    Ok(HttpResponse::Ok().json(view(&ep)))
}

/// Change an API endpoint; `description: null` clears it.
#[utoipa::path(
    patch, path = "/v1/endpoints/{id}", tag = "endpoints", operation_id = "patch_endpoint",
    params(("id" = String, Path, description = "`ep_…`"), Scope),
    request_body = PatchBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The endpoint after the change", body = super::openapi::Endpoint),
        (status = 400, description = "Invalid body or query, or an admin token without `merchant_id`", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = super::openapi::ErrorBody),
        (status = 404, description = "No such endpoint (or, for an admin token, no such merchant)", body = super::openapi::ErrorBody),
        (status = 409, description = "A config-file endpoint (read-only here)", body = super::openapi::ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = super::openapi::ErrorBody),
        (status = 422, description = "Invalid url (SSRF guard), events, description or ordering", body = super::openapi::ErrorBody),
        (status = 503, description = "Storage unavailable", body = super::openapi::ErrorBody),
    )
)]
pub async fn patch(
    req: HttpRequest,
    path: web::Path<String>,
    scope: web::Query<Scope>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let merchant = merchant_scope(&req, &state, scope.merchant_id.as_deref())?;
    writable(&own(&state, &merchant, &path).await?)?;
    let b: PatchBody = json_body(&body)?;
    let mut u = EndpointUpdate {
        now: state.now_ms(),
        ..EndpointUpdate::default()
    };
    if let Some(url) = &b.url {
        u.url = Some(check_url(&state, url).await?);
    }
    if let Some(ev) = b.events {
        check_events(&ev)?;
        u.events = Some(ev);
    }
    match b.description {
        None => {}
        Some(Value::Null) => u.description = Some(None),
        Some(Value::String(d)) => {
            check_description(&d)?;
            u.description = Some(Some(d));
        }
        Some(_) => {
            return Err(ApiError::InvalidRequest(
                "description: a string or null".into(),
            ))
        }
    }
    if let Some(o) = &b.ordering {
        u.ordering = Some(parse_ordering(o)?);
    }
    if let Some(d) = b.disabled {
        u.disabled = Some((d, d.then(|| "disabled through the API".to_string())));
    }
    let ep = state
        .store
        .update_endpoint(&merchant, &path, u)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no endpoint {:?}", path.as_str())))?;
    Ok(HttpResponse::Ok().json(view(&ep)))
}

#[utoipa::path(
    delete, path = "/v1/endpoints/{id}", tag = "endpoints", operation_id = "delete_endpoint",
    params(("id" = String, Path, description = "`ep_…`"), Scope),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid query, or an admin token without `merchant_id`", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = super::openapi::ErrorBody),
        (status = 404, description = "No such endpoint (or, for an admin token, no such merchant)", body = super::openapi::ErrorBody),
        (status = 409, description = "A config-file endpoint (read-only here)", body = super::openapi::ErrorBody),
        (status = 503, description = "Storage unavailable", body = super::openapi::ErrorBody),
    )
)]
pub async fn delete(
    req: HttpRequest,
    path: web::Path<String>,
    scope: web::Query<Scope>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let merchant = merchant_scope(&req, &state, scope.merchant_id.as_deref())?;
    writable(&own(&state, &merchant, &path).await?)?;
    if !state.store.delete_endpoint(&merchant, &path).await? {
        return Err(ApiError::NotFound(format!(
            "no endpoint {:?}",
            path.as_str()
        )));
    }
    Ok(HttpResponse::NoContent().finish())
}

/// A new secret; the old one keeps signing for 24 h.
#[utoipa::path(
    post, path = "/v1/endpoints/{id}/rotate-secret", tag = "endpoints", operation_id = "rotate_endpoint_secret",
    params(("id" = String, Path, description = "`ep_…`"), Scope),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new secret", body = super::openapi::Secret),
        (status = 400, description = "Invalid query, or an admin token without `merchant_id`", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = super::openapi::ErrorBody),
        (status = 404, description = "No such endpoint (or, for an admin token, no such merchant)", body = super::openapi::ErrorBody),
        (status = 409, description = "A config-file endpoint (read-only here)", body = super::openapi::ErrorBody),
        (status = 503, description = "Storage unavailable", body = super::openapi::ErrorBody),
    )
)]
pub async fn rotate(
    req: HttpRequest,
    path: web::Path<String>,
    scope: web::Query<Scope>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let merchant = merchant_scope(&req, &state, scope.merchant_id.as_deref())?;
    writable(&own(&state, &merchant, &path).await?)?;
    let now = state.now_ms();
    let secret = signing::new_secret();
    let u = EndpointUpdate {
        rotate: Some((secret.clone(), now + ROTATION_OVERLAP_MS)),
        now,
        ..EndpointUpdate::default()
    };
    state
        .store
        .update_endpoint(&merchant, &path, u)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no endpoint {:?}", path.as_str())))?;
    Ok(HttpResponse::Ok().json(json!({ "secret": secret })))
}

fn parse_time(field: &str, s: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| ApiError::Unprocessable(format!("{field}: {s:?} is not RFC 3339 ({e})")))
}

/// Re-enqueue the merchant's events of a time range to this endpoint.
#[utoipa::path(
    post, path = "/v1/endpoints/{id}/replay", tag = "endpoints", operation_id = "replay_endpoint",
    params(("id" = String, Path, description = "`ep_…`"), Scope),
    request_body = ReplayBody,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Deliveries enqueued", body = super::openapi::Replayed),
        (status = 400, description = "Invalid body or query, or an admin token without `merchant_id`", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = super::openapi::ErrorBody),
        (status = 404, description = "No such endpoint (or, for an admin token, no such merchant)", body = super::openapi::ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = super::openapi::ErrorBody),
        (status = 422, description = "since/until not RFC 3339, until before since, or more events in the range than `delivery.replay_max_events` (nothing replayed)", body = super::openapi::ErrorBody),
        (status = 503, description = "Storage unavailable", body = super::openapi::ErrorBody),
    )
)]
pub async fn replay(
    req: HttpRequest,
    path: web::Path<String>,
    scope: web::Query<Scope>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let merchant = merchant_scope(&req, &state, scope.merchant_id.as_deref())?;
    let ep = own(&state, &merchant, &path).await?;
    let body: ReplayBody = json_body(&body)?;
    let since = parse_time("since", &body.since)?;
    let until = match &body.until {
        Some(u) => parse_time("until", u)?,
        None => i64::MAX,
    };
    if until < since {
        return Err(ApiError::Unprocessable("until is before since".into()));
    }
    let limit = state.settings.delivery.replay_max_events;
    let done = state
        .store
        .replay(&merchant, &ep.id, (since, until), limit, state.now_ms())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no endpoint {:?}", ep.id)))?;
    match done {
        Replayed::Enqueued(n) => Ok(HttpResponse::Accepted().json(json!({ "replayed": n }))),
        Replayed::TooMany => Err(ApiError::Unprocessable(format!(
            "more than {limit} events match [since, until] (delivery.replay_max_events): \
             nothing was replayed; replay a shorter range at a time"
        ))),
    }
}
