//! Thin actix handlers over the store and the pure core. Routing lives here;
//! each submodule is one area of the API.

mod admin;
mod caller;
mod deliveries;
mod endpoints;
pub mod error;
mod ipn;
pub mod limits;
pub mod openapi;
mod ops;
mod payments;
mod returns;
mod tasks;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use actix_web::web;

use crate::clock::Clock;
use crate::config::Settings;
use crate::store::Store;
pub use error::ApiError;

/// Shared by every handler.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Arc<dyn Store>,
    /// One token bucket per provider (SPEC: `ingress.rate_limit` is per
    /// provider), spent by authenticated requests only.
    pub limiters: HashMap<String, limits::DirectLimiter>,
    /// `ingress.unauthenticated_rate_limit`, per source address.
    pub sources: limits::SourceLimiter,
    /// Throttles the failed-authentication log line, per provider.
    pub auth_log: HashMap<String, Mutex<limits::LogThrottle>>,
    /// Cleared when a background worker stops unexpectedly (readiness).
    pub workers_alive: Arc<AtomicBool>,
    /// Base of status/response URLs, resolved against the bound port.
    pub public_url: String,
    pub clock: Arc<dyn Clock>,
    /// Moves whenever the processor applied something (wakes held 3DS returns).
    pub applied: tokio::sync::watch::Receiver<u64>,
    /// Free space on the store's filesystem vs `storage.min_free_space`.
    pub free_space: crate::store::space::FreeSpace,
    /// Renders `GET /metrics` (the process's one recorder).
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

impl AppState {
    pub fn new(
        settings: Arc<Settings>,
        store: Arc<dyn Store>,
        workers_alive: Arc<AtomicBool>,
        public_url: String,
        clock: Arc<dyn Clock>,
        applied: tokio::sync::watch::Receiver<u64>,
    ) -> Self {
        let limiters = settings
            .providers
            .iter()
            .map(|p| {
                (
                    p.id.clone(),
                    limits::direct(settings.ingress.rate_limit, &clock),
                )
            })
            .collect();
        let auth_log = settings
            .providers
            .iter()
            .map(|p| (p.id.clone(), Mutex::default()))
            .collect();
        AppState {
            sources: limits::SourceLimiter::new(
                settings.ingress.unauthenticated_rate_limit,
                &clock,
            ),
            auth_log,
            store,
            limiters,
            workers_alive,
            public_url,
            clock,
            free_space: crate::store::space::FreeSpace::new(
                &settings.storage.path,
                settings.storage.min_free_space,
            ),
            settings,
            applied,
            metrics: crate::metrics::install(),
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn status_url(&self, id: &uuid::Uuid) -> String {
        format!("{}/v1/async/status/{id}", self.public_url)
    }

    pub fn response_url(&self, id: &uuid::Uuid) -> String {
        format!("{}/v1/async/result/{id}", self.public_url)
    }
}

/// A JSON body, parsed only after the caller was authenticated (so a
/// request without a key is 401 whatever its body). 413 above [`JSON_LIMIT`].
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.len() > JSON_LIMIT {
        return Err(ApiError::PayloadTooLarge(JSON_LIMIT));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::InvalidRequest(format!("body: {e}")))
}

fn bad_request(msg: String) -> actix_web::Error {
    ApiError::InvalidRequest(msg).into()
}

/// A resource's default service: 405 naming the methods it does serve.
fn allow(methods: &'static str) -> actix_web::Route {
    web::to(move || async move {
        Err::<actix_web::HttpResponse, _>(ApiError::MethodNotAllowed(methods))
    })
}

/// The largest JSON body the merchant and admin APIs take (413 above).
pub const JSON_LIMIT: usize = 64 * 1024;

/// All routes; `main` and the tests mount the same thing. Each path is one
/// resource: a method it does not serve is 405 with `Allow` (SPEC §8); a
/// path it does not know is 404.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(JSON_LIMIT)
            .error_handler(|e, _| match e {
                actix_web::error::JsonPayloadError::Overflow { .. }
                | actix_web::error::JsonPayloadError::OverflowKnownLength { .. } => {
                    ApiError::PayloadTooLarge(JSON_LIMIT).into()
                }
                e => bad_request(e.to_string()),
            }),
    )
    .app_data(web::PathConfig::default().error_handler(|e, _| bad_request(e.to_string())))
    .app_data(web::QueryConfig::default().error_handler(|e, _| bad_request(e.to_string())))
    .app_data(web::FormConfig::default().error_handler(|e, _| bad_request(e.to_string())))
    .service(
        web::resource("/healthz")
            .route(web::get().to(ops::healthz))
            .default_service(allow("GET")),
    )
    .service(
        web::resource("/readyz")
            .route(web::get().to(ops::readyz))
            .default_service(allow("GET")),
    )
    .service(
        web::resource("/metrics")
            .route(web::get().to(ops::metrics))
            .default_service(allow("GET")),
    )
    .service(
        web::resource("/openapi.json")
            .route(web::get().to(openapi::openapi_json))
            .default_service(allow("GET")),
    )
    .service(
        web::resource("/v1/ipn/{provider}")
            .route(web::post().to(ipn::ingest))
            .default_service(allow("POST")),
    )
    .service(
        web::resource("/v1/async/status/{request_id}")
            .route(web::get().to(tasks::status))
            .default_service(allow("GET")),
    )
    .service(
        web::resource("/v1/async/result/{request_id}")
            .route(web::get().to(tasks::result))
            .default_service(allow("GET")),
    )
    .service(
        web::resource("/v1/admin/requests")
            .route(web::get().to(admin::requests))
            .default_service(allow("GET")),
    )
    .service(
        web::resource("/v1/admin/requests/{request_id}/reprocess")
            .route(web::post().to(admin::reprocess))
            .default_service(allow("POST")),
    )
    .service(
        web::resource("/v1/admin/quarantine")
            .route(web::get().to(admin::quarantine))
            .default_service(allow("GET")),
    )
    .service(
        web::resource("/v1/admin/purge")
            .route(web::post().to(admin::purge))
            .default_service(allow("POST")),
    )
    .service(
        web::resource("/v1/admin/backup")
            .route(web::post().to(admin::backup))
            .default_service(allow("POST")),
    )
    .service(
        web::resource("/v1/payments")
            .route(web::post().to(payments::register))
            .default_service(allow("POST")),
    )
    .service(
        web::resource("/v1/payments/{payment_id}")
            .route(web::get().to(payments::get))
            .default_service(allow("GET")),
    )
    .service(
        web::resource("/v1/events")
            .route(web::get().to(payments::events))
            .default_service(allow("GET")),
    )
    .service(
        web::resource("/v1/endpoints")
            .route(web::post().to(endpoints::create))
            .route(web::get().to(endpoints::list))
            .default_service(allow("GET, POST")),
    )
    .service(
        web::resource("/v1/endpoints/{id}")
            .route(web::get().to(endpoints::get))
            .route(web::patch().to(endpoints::patch))
            .route(web::delete().to(endpoints::delete))
            .default_service(allow("GET, PATCH, DELETE")),
    )
    .service(
        web::resource("/v1/endpoints/{id}/rotate-secret")
            .route(web::post().to(endpoints::rotate))
            .default_service(allow("POST")),
    )
    .service(
        web::resource("/v1/endpoints/{id}/replay")
            .route(web::post().to(endpoints::replay))
            .default_service(allow("POST")),
    )
    .service(
        web::resource("/v1/deliveries")
            .route(web::get().to(deliveries::list))
            .default_service(allow("GET")),
    )
    .service(
        web::resource("/v1/deliveries/{id}")
            .route(web::get().to(deliveries::get))
            .default_service(allow("GET")),
    )
    .service(
        web::resource("/v1/deliveries/{id}/retry")
            .route(web::post().to(deliveries::retry))
            .default_service(allow("POST")),
    )
    .service(
        web::resource("/v1/return/{merchant_id}/{payment_id}")
            .route(web::get().to(returns::merchant_return))
            .route(web::post().to(returns::merchant_return))
            .default_service(allow("GET, POST")),
    )
    .service(
        web::resource("/v1/return/{payment_id}")
            .route(web::get().to(returns::short_return))
            .route(web::post().to(returns::short_return))
            .default_service(allow("GET, POST")),
    )
    .default_service(web::to(|| async {
        Err::<actix_web::HttpResponse, _>(ApiError::NotFound("no such route".into()))
    }));
}
