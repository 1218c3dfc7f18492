//! Merchant API: register a payment, read it with its history, poll events.

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use url::Url;

use super::caller::Scope;
use super::caller::{identify, merchant_scope, scope_of, Caller};
use super::{ApiError, AppState};
use crate::store::{EventRecord, PaymentKey, PaymentRecord, Registered, Registration};

/// History entries `GET /v1/payments/{id}` shows at most (the newest).
const HISTORY_SHOWN: usize = 1000;

pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// 1-200 characters, no control characters.
    #[schema(min_length = 1, max_length = 200, example = "order-1001")]
    payment_id: String,
    /// Its origin must be in the merchant's `allowed_return_origins`.
    merchant_site_url: Option<String>,
    /// Must report for this merchant.
    provider: Option<String>,
    /// Any JSON, kept and shown as given.
    metadata: Option<Value>,
}

fn check_payment_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 200 || id.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(
            "payment_id must be 1-200 characters without control characters".into(),
        ));
    }
    Ok(())
}

/// Register a payment of the caller's merchant before the 3DS redirect.
#[utoipa::path(
    post, path = "/v1/payments", tag = "payments", operation_id = "register_payment",
    params(Scope),
    request_body = RegisterBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Registered", body = super::openapi::Payment, links(
            ("get_payment" = (operation_id = "get_payment", parameters(("payment_id" = "$response.body#/payment_id")))),
            ("short_return_get" = (operation_id = "short_return_get", parameters(("payment_id" = "$response.body#/payment_id")))),
            ("merchant_return_get" = (operation_id = "merchant_return_get", parameters(("merchant_id" = "$response.body#/merchant_id"), ("payment_id" = "$response.body#/payment_id")))),
        )),
        (status = 200, description = "Already known from an IPN; now registered too", body = super::openapi::Payment),
        (status = 400, description = "Invalid body or query, or an admin token without `merchant_id`", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = super::openapi::ErrorBody),
        (status = 404, description = "An admin token naming no such merchant", body = super::openapi::ErrorBody),
        (status = 409, description = "This payment_id is already registered", body = super::openapi::ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = super::openapi::ErrorBody),
        (status = 422, description = "Invalid payment_id, merchant_site_url or provider", body = super::openapi::ErrorBody),
        (status = 503, description = "Storage unavailable", body = super::openapi::ErrorBody),
    )
)]
pub async fn register(
    req: HttpRequest,
    scope: web::Query<Scope>,
    body: web::Json<RegisterBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let merchant_id = merchant_scope(&req, &state, scope.merchant_id.as_deref())?;
    let body = body.into_inner();
    check_payment_id(&body.payment_id)?;
    let merchant = state
        .settings
        .merchant(&merchant_id)
        .ok_or_else(ApiError::not_found)?;
    let site = match &body.merchant_site_url {
        None => None,
        Some(s) => {
            let u = Url::parse(s)
                .map_err(|e| ApiError::Unprocessable(format!("merchant_site_url: {e}")))?;
            if !merchant.allows_return_to(&u) {
                return Err(ApiError::Unprocessable(format!(
                    "merchant_site_url origin {} is not in allowed_return_origins",
                    u.origin().ascii_serialization()
                )));
            }
            Some(u.to_string())
        }
    };
    if let Some(p) = &body.provider {
        // An unknown provider and one that does not serve this merchant look alike.
        if !state
            .settings
            .provider(p)
            .is_some_and(|p| p.serves(&merchant_id))
        {
            return Err(ApiError::Unprocessable(format!(
                "provider {p:?} does not report for merchant {merchant_id:?}"
            )));
        }
    }
    let reg = Registration {
        key: PaymentKey::new(&merchant_id, &body.payment_id),
        provider: body.provider.clone(),
        site_url: site,
        metadata: body.metadata.as_ref().map(Value::to_string),
        now: state.now_ms(),
    };
    match state.store.register_payment(reg).await? {
        Registered::Created(rec) => Ok(HttpResponse::Created().json(view(&rec, None))),
        // The record came from an IPN that arrived first; now it is registered too.
        Registered::Updated(rec) => Ok(HttpResponse::Ok().json(view(&rec, None))),
        Registered::AlreadyRegistered => Err(ApiError::Conflict(
            "this payment_id is already registered".into(),
        )),
    }
}

fn view(rec: &PaymentRecord, history: Option<Value>) -> Value {
    let st = rec.state.as_ref();
    let mut v = json!({
        "payment_id": rec.payment_id,
        "merchant_id": rec.merchant_id,
        "provider": rec.provider,
        "status": st.map(|s| s.status),
        "sequence": st.map(|s| s.sequence).unwrap_or(0),
        "authorization_id": st.and_then(|s| s.authorization_id.clone()),
        "charge_id": st.and_then(|s| s.charge_id.clone()),
        "amount": st.and_then(|s| s.amount),
        "currency": st.and_then(|s| s.currency.clone()),
        "merchant_site_url": rec.registered_site_url.as_ref().or(rec.ipn_site_url.as_ref()),
        "metadata": rec.metadata.as_deref().and_then(|m| serde_json::from_str::<Value>(m).ok()),
        "created_at": rfc3339(rec.created_at),
        "updated_at": rfc3339(rec.updated_at),
    });
    if let Some(h) = history {
        v["history"] = h;
    }
    v
}

/// A payment with its history.
#[utoipa::path(
    get, path = "/v1/payments/{payment_id}", tag = "payments", operation_id = "get_payment",
    params(("payment_id" = String, Path), Scope),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The payment", body = super::openapi::Payment),
        (status = 400, description = "Invalid query, or an admin token without `merchant_id`", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = super::openapi::ErrorBody),
        (status = 404, description = "No such payment (or, for an admin token, no such merchant)", body = super::openapi::ErrorBody),
        (status = 503, description = "Storage unavailable", body = super::openapi::ErrorBody),
    )
)]
pub async fn get(
    req: HttpRequest,
    path: web::Path<String>,
    scope: web::Query<Scope>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = identify(&req, &state)?;
    let admin = matches!(caller, Caller::Admin);
    let merchant_id = scope_of(caller, &state, scope.merchant_id.as_deref())?;
    // Only the caller's own namespace is looked at: another merchant's
    // payment of the same id is indistinguishable from no payment.
    let key = PaymentKey::new(merchant_id, path.into_inner());
    let rec = state
        .store
        .payment(&key)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such payment".into()))?;
    let entries = state.store.history(&key, HISTORY_SHOWN).await?;
    // A request_id opens its task on the (unauthenticated) task API, whose
    // result lists every event of the request: for a batch, other
    // merchants' payments too. A merchant sees the id of a request only
    // when every event of it is one of this payment's entries here; an
    // admin sees all.
    let mut shown: HashMap<uuid::Uuid, bool> = HashMap::new();
    if !admin {
        let mut entries_of: HashMap<uuid::Uuid, usize> = HashMap::new();
        for h in &entries {
            *entries_of.entry(h.request_id).or_default() += 1;
        }
        for (id, n) in entries_of {
            let own = state.store.task(id).await?.is_none_or(|t| {
                t.events.is_empty()
                    || (t.events.len() == n
                        && t.events.iter().all(|e| e.payment_id == key.payment_id))
            });
            shown.insert(id, own);
        }
    }
    let history: Vec<Value> = entries
        .into_iter()
        .map(|h| {
            let request_id =
                (admin || shown.get(&h.request_id) == Some(&true)).then_some(h.request_id);
            json!({
                "sequence": h.sequence,
                "status": h.status,
                "outcome": h.outcome,
                "occurred_at": h.occurred_at.map(rfc3339),
                "received_at": rfc3339(h.received_at),
                "request_id": request_id,
                "event_id": h.event_id,
                "provider_event_id": h.provider_event_id,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(view(&rec, Some(Value::Array(history)))))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Admin tokens only: the merchant to act for.
    merchant_id: Option<String>,
    payment_id: Option<String>,
    /// The `event_id` after which to start (a cursor).
    after: Option<String>,
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// The normalized event as merchants see it (also the outbound `data`).
pub fn event_json(e: &EventRecord) -> Value {
    json!({
        "event_id": e.event_id,
        "type": format!("payment.{}", e.status),
        "payment_id": e.payment_id,
        "merchant_id": e.merchant_id,
        "provider": e.provider,
        "status": e.status,
        "previous_status": e.previous_status,
        "sequence": e.sequence,
        "authorization_id": e.authorization_id,
        "charge_id": e.charge_id,
        "amount": e.amount,
        "currency": e.currency,
        "occurred_at": e.occurred_at.map(rfc3339),
        "created_at": rfc3339(e.created_at),
        "provider_event_id": e.provider_event_id,
    })
}

/// Normalized events, oldest first (the polling alternative to webhooks).
#[utoipa::path(
    get, path = "/v1/events", tag = "payments", operation_id = "list_events",
    params(EventsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Events", body = super::openapi::EventList),
        (status = 400, description = "Invalid query, limit or cursor, or an admin token without `merchant_id`", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = super::openapi::ErrorBody),
        (status = 404, description = "An admin token naming no such merchant", body = super::openapi::ErrorBody),
        (status = 503, description = "Storage unavailable", body = super::openapi::ErrorBody),
    )
)]
pub async fn events(
    req: HttpRequest,
    q: web::Query<EventsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let merchant_id = merchant_scope(&req, &state, q.merchant_id.as_deref())?;
    let after = q.after.as_deref().filter(|a| !a.is_empty());
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::InvalidRequest(
            "limit must be between 1 and 1000".into(),
        ));
    }
    // One extra row tells whether there is more.
    let mut evs = state
        .store
        .events(&merchant_id, q.payment_id.as_deref(), after, limit + 1)
        .await?
        .map_err(|_| {
            ApiError::InvalidRequest(
                "after must be the event_id (evt_…) of one of your events that is still kept"
                    .into(),
            )
        })?;
    let has_more = evs.len() > limit;
    evs.truncate(limit);
    let data: Vec<Value> = evs.iter().map(event_json).collect();
    Ok(HttpResponse::Ok().json(json!({"data": data, "has_more": has_more})))
}
