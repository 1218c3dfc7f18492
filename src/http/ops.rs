//! Liveness, readiness and metrics.

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

/// Prometheus text; the gauges are read from the store when scraped.
#[utoipa::path(
    get, path = "/metrics", tag = "ops",
    responses(
        (status = 200, description = "Prometheus text exposition format", body = String,
            content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 503, description = "The store cannot answer", body = String, content_type = "text/plain"),
    )
)]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let stats = match state.store.stats().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the store's counts");
            return HttpResponse::ServiceUnavailable().body("store unavailable\n");
        }
    };
    let body = crate::metrics::render(&state.metrics, &stats, state.free_space.available());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body)
}
