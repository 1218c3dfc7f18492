//! Merchant API: deliveries and their attempts (SPEC §5). A merchant sees
//! its own; an admin token sees every merchant's (or one, with
//! `?merchant_id=`). Another merchant's delivery is a 404.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::caller::merchant_scope_or_all as scope;
use super::caller::Scope;
use super::payments::rfc3339;
use super::{ApiError, AppState};
use crate::store::{AttemptRecord, DeliveryFilter, DeliveryRecord, DeliveryState, Retried};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Admin tokens: only this merchant's (default: every merchant's).
    merchant_id: Option<String>,
    endpoint_id: Option<String>,
    /// `pending`, `succeeded`, `dead` or `superseded`.
    state: Option<String>,
    payment_id: Option<String>,
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

pub fn view(d: &DeliveryRecord) -> Value {
    json!({
        "id": d.id,
        "event_id": d.event.event_id,
        "endpoint_id": d.endpoint_id,
        "merchant_id": d.merchant_id,
        "payment_id": d.payment_id,
        "sequence": d.sequence,
        "state": d.state.as_str(),
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at.map(rfc3339),
        "last_status": d.last_status,
        "last_error": d.last_error,
        "created_at": rfc3339(d.created_at),
    })
}

fn attempt_view(a: &AttemptRecord) -> Value {
    json!({
        "at": rfc3339(a.at),
        "status": a.status,
        "latency_ms": a.latency_ms,
        "error": a.error,
        "response_body": a.response_body,
    })
}

/// Deliveries, newest first; an admin token sees every merchant's.
#[utoipa::path(
    get, path = "/v1/deliveries", tag = "deliveries", operation_id = "list_deliveries",
    params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Deliveries", body = super::openapi::DeliveryList),
        (status = 400, description = "Invalid query, state or limit", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = super::openapi::ErrorBody),
        (status = 404, description = "An admin token naming no such merchant", body = super::openapi::ErrorBody),
        (status = 503, description = "Storage unavailable", body = super::openapi::ErrorBody),
    )
)]
pub async fn list(
    req: HttpRequest,
    q: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let merchant = scope(&req, &state, q.merchant_id.as_deref())?;
    let st = match q.state.as_deref() {
        None => None,
        Some(s) => Some(DeliveryState::parse(s).ok_or_else(|| {
            ApiError::InvalidRequest(format!(
                "state {s:?}: expected pending, succeeded, dead or superseded"
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::InvalidRequest(format!("limit: 1 to {MAX_LIMIT}")));
    }
    let f = DeliveryFilter {
        merchant_id: merchant,
        endpoint_id: q.endpoint_id.clone(),
        state: st,
        payment_id: q.payment_id.clone(),
        limit,
    };
    let data: Vec<Value> = state.store.deliveries(f).await?.iter().map(view).collect();
    Ok(HttpResponse::Ok().json(json!({ "data": data })))
}

/// A delivery with its attempts.
#[utoipa::path(
    get, path = "/v1/deliveries/{id}", tag = "deliveries", operation_id = "get_delivery",
    params(("id" = String, Path), Scope),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The delivery (with `attempt_log`)", body = super::openapi::Delivery),
        (status = 400, description = "Invalid query", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = super::openapi::ErrorBody),
        (status = 404, description = "No such delivery of the caller's (or, for an admin token, no such merchant)", body = super::openapi::ErrorBody),
        (status = 503, description = "Storage unavailable", body = super::openapi::ErrorBody),
    )
)]
pub async fn get(
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<Scope>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let merchant = scope(&req, &state, q.merchant_id.as_deref())?;
    let not_found = || ApiError::NotFound(format!("no delivery {:?}", path.as_str()));
    let (d, attempts) = state.store.delivery(&path).await?.ok_or_else(not_found)?;
    if merchant.as_ref().is_some_and(|m| *m != d.merchant_id) {
        return Err(not_found());
    }
    let mut v = view(&d);
    v["attempt_log"] = attempts.iter().map(attempt_view).collect();
    Ok(HttpResponse::Ok().json(v))
}

/// Retry a dead delivery (a fresh run of the retry schedule).
#[utoipa::path(
    post, path = "/v1/deliveries/{id}/retry", tag = "deliveries", operation_id = "retry_delivery",
    params(("id" = String, Path), Scope),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Queued", body = super::openapi::Delivery),
        (status = 400, description = "Invalid query", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = super::openapi::ErrorBody),
        (status = 404, description = "No such delivery of the caller's (or, for an admin token, no such merchant)", body = super::openapi::ErrorBody),
        (status = 409, description = "The delivery is not dead", body = super::openapi::ErrorBody),
        (status = 503, description = "Storage unavailable", body = super::openapi::ErrorBody),
    )
)]
pub async fn retry(
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<Scope>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let merchant = scope(&req, &state, q.merchant_id.as_deref())?;
    match state
        .store
        .retry_delivery(merchant.as_deref(), &path, state.now_ms())
        .await?
    {
        Retried::Queued(d) => Ok(HttpResponse::Accepted().json(view(&d))),
        Retried::NotFound => Err(ApiError::NotFound(format!(
            "no delivery {:?}",
            path.as_str()
        ))),
        Retried::NotDead(s) => Err(ApiError::Conflict(format!(
            "only a dead delivery can be retried; this one is {}",
            s.as_str()
        ))),
    }
}
