//! `GET|POST /v1/return/{merchant_id}/{payment_id}` (and the short form
//! `/v1/return/{payment_id}` while one merchant alone has that id): send the
//! browser back to the merchant.
//! Only ever to an origin the merchant allowed — never an open redirect.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use secrecy::ExposeSecret;
use url::Url;

use super::{ApiError, AppState};
use crate::returns::{return_url, ReturnParams};
use crate::store::{PaymentKey, PaymentRecord};

fn page(status: actix_web::http::StatusCode, title: &str, text: &str) -> HttpResponse {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
             <body><h1>{t}</h1><p>{x}</p></body></html>",
            t = esc(title),
            x = esc(text)
        ))
}

fn not_found() -> HttpResponse {
    page(
        actix_web::http::StatusCode::NOT_FOUND,
        "Payment not found",
        "We could not find this payment.",
    )
}

#[utoipa::path(
    method(get, post), path = "/v1/return/{merchant_id}/{payment_id}", tag = "returns",
    params(("merchant_id" = String, Path), ("payment_id" = String, Path)),
    responses(
        (status = 303, description = "To the merchant's allowed return URL, with signed status parameters",
            headers(("location" = String, description = "The return URL"))),
        (status = 404, description = "No such payment (HTML page)", content_type = "text/html", body = String),
        (status = 422, description = "No allowed return address (HTML page)", content_type = "text/html", body = String),
        (status = 503, description = "Storage unavailable", body = super::openapi::ErrorBody),
    )
)]
pub async fn merchant_return(
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (merchant_id, payment_id) = path.into_inner();
    if state.settings.merchant(&merchant_id).is_none() {
        return Ok(not_found());
    }
    let key = PaymentKey::new(merchant_id, payment_id);
    match state.store.payment(&key).await? {
        Some(rec) => redirect(&state, rec).await,
        None => Ok(not_found()),
    }
}

#[utoipa::path(
    method(get, post), path = "/v1/return/{payment_id}", tag = "returns",
    params(("payment_id" = String, Path)),
    responses(
        (status = 303, description = "To the merchant's allowed return URL, with signed status parameters",
            headers(("location" = String, description = "The return URL"))),
        (status = 404, description = "No such payment, or more than one merchant has this id (HTML page)", content_type = "text/html", body = String),
        (status = 422, description = "No allowed return address (HTML page)", content_type = "text/html", body = String),
        (status = 503, description = "Storage unavailable", body = super::openapi::ErrorBody),
    )
)]
/// The short form: only while exactly one merchant has this payment id.
pub async fn short_return(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let payment_id = path.into_inner();
    let mut found = None;
    for m in &state.settings.merchants {
        if let Some(rec) = state
            .store
            .payment(&PaymentKey::new(&m.id, &payment_id))
            .await?
        {
            if found.is_some() {
                // Ambiguous: say nothing about either.
                return Ok(not_found());
            }
            found = Some(rec);
        }
    }
    match found {
        Some(rec) => redirect(&state, rec).await,
        None => Ok(not_found()),
    }
}

async fn redirect(state: &AppState, mut rec: PaymentRecord) -> Result<HttpResponse, ApiError> {
    use actix_web::http::StatusCode;
    let key = rec.key();
    let wait = state.settings.returns.wait_for_final;
    if !wait.is_zero() {
        // Until a final status, or `wait` has passed on the service's clock;
        // woken by every applied change, and every 100 ms to see the clock move.
        let deadline = state.now_ms().saturating_add(wait.as_millis() as i64);
        let mut applied = state.applied.clone();
        while !rec.state.as_ref().is_some_and(|s| s.status.is_final()) && state.now_ms() < deadline
        {
            tokio::select! {
                _ = applied.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            rec = state.store.payment(&key).await?.unwrap_or(rec);
        }
    }
    let Some(merchant) = state.settings.merchant(&rec.merchant_id) else {
        return Ok(page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "No return address",
            "This payment has no merchant.",
        ));
    };
    let Some(base) = target(&rec, merchant) else {
        return Ok(page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "No return address",
            "The shop has no valid return address for this payment.",
        ));
    };
    let st = rec.state.as_ref();
    let params = ReturnParams {
        payment_id: &rec.payment_id,
        authorization_id: st.and_then(|s| s.authorization_id.as_deref()),
        charge_id: st.and_then(|s| s.charge_id.as_deref()),
        status: st.map(|s| s.status.as_str()).unwrap_or("pending"),
    };
    let secret = merchant
        .return_secret
        .as_ref()
        .map(|s| s.expose_secret().as_bytes());
    let url = return_url(&base, &params, secret, state.clock.now_secs());
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, url.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .finish())
}

/// Registered URL > the IPN's > the merchant default; the first one whose
/// origin the merchant allows.
fn target(rec: &PaymentRecord, merchant: &crate::config::MerchantSettings) -> Option<Url> {
    [rec.registered_site_url.as_deref(), rec.ipn_site_url.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(|s| Url::parse(s).ok())
        .chain(merchant.default_site_url.clone())
        .find(|u| {
            let ok = matches!(u.scheme(), "http" | "https") && merchant.allows_return_to(u);
            if !ok {
                tracing::warn!(payment_id = %rec.payment_id, url = %u, "return URL origin not allowed; skipped");
            }
            ok
        })
}
