//! Liveness and readiness.

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready = the store takes a durable write and the background workers run.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let now = state.now_ms();
    let store_ok = matches!(
        tokio::time::timeout(Duration::from_secs(2), state.store.probe(now)).await,
        Ok(Ok(()))
    );
    let workers_ok = state.workers_alive.load(Ordering::SeqCst);
    let body = json!({"status": if store_ok && workers_ok { "ready" } else { "not_ready" },
                      "store": store_ok, "workers": workers_ok});
    if store_ok && workers_ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
