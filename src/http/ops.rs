//! Liveness and readiness.

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

#[utoipa::path(
    get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "The process is up", body = super::openapi::Health))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready = free space is above `storage.min_free_space`, the store takes a
/// durable write and the background workers run.
#[utoipa::path(
    get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, description = "Ready", body = super::openapi::Readiness),
        (status = 503, description = "Not ready (which check failed is in the body)", body = super::openapi::Readiness),
    )
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let now = state.now_ms();
    // No probe write when space is short: it is not ready either way.
    let space_ok = !state.free_space.low();
    let store_ok = space_ok
        && matches!(
            tokio::time::timeout(Duration::from_secs(2), state.store.probe(now)).await,
            Ok(Ok(()))
        );
    let workers_ok = state.workers_alive.load(Ordering::SeqCst);
    let ready = space_ok && store_ok && workers_ok;
    let body = json!({"status": if ready { "ready" } else { "not_ready" },
                      "store": store_ok, "free_space": space_ok, "workers": workers_ok});
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
