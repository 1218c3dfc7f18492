//! The OpenAPI 3.1 document, `GET /openapi.json`, generated with `utoipa`
//! from the `#[utoipa::path]` attributes on the handlers.
//!
//! Request bodies and query parameters are the handlers' own structs
//! (`ToSchema` / `IntoParams`). Most responses are built with `json!`, so
//! the structs below mirror what the handlers send, field by field (a field
//! the handler writes as `null` is an `Option`). They are never built: only
//! their schemas are used. The document is checked against the running
//! service by schemathesis (`scripts/test`), and against the routes by
//! `tests/api/openapi.rs`.

#![allow(dead_code)]

use actix_web::HttpResponse;
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use uuid::Uuid;

use crate::domain::{Outcome, Status};

/// Every technical error (SPEC §4): `{"error":{"code","message"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `unknown_provider`, `forbidden`, `rate_limited`, `payload_too_large`,
    /// `invalid_signature`, `unauthorized`, `not_found`,
    /// `method_not_allowed`, `invalid_request`, `conflict`, `unavailable`,
    /// `internal`.
    pub code: String,
    pub message: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Ok {
    Ok,
}

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: Ok,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadyStatus {
    Ready,
    NotReady,
}

/// `GET /readyz`: 200 when every check holds, else 503 with the same shape.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub status: ReadyStatus,
    /// The store took a durable probe write.
    pub store: bool,
    /// Free space is above `storage.min_free_space`.
    pub free_space: bool,
    /// The background workers run.
    pub workers: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskProgress {
    Processing,
    Completed,
}

/// The JSON acknowledgement of an accepted IPN (and of a reprocess).
#[derive(Serialize, ToSchema)]
pub struct Ack {
    /// The task's current state (`processing` for a new request).
    pub status: TaskProgress,
    pub request_id: Uuid,
    pub status_url: String,
    pub response_url: String,
}

/// `GET /v1/async/status/{request_id}`.
#[derive(Serialize, ToSchema)]
pub struct TaskStatus {
    pub status: TaskProgress,
    pub request_id: Uuid,
    /// Present once completed.
    #[schema(required = false)]
    pub response_url: Option<String>,
}

/// `GET /v1/async/result/{request_id}` (200).
#[derive(Serialize, ToSchema)]
pub struct TaskResult {
    pub status: TaskProgress,
    pub request_id: Uuid,
    /// Present once completed.
    #[schema(required = false)]
    pub events: Option<Vec<TaskEvent>>,
}

/// One item of a request as it was applied (or recorded as duplicate/stale).
#[derive(Serialize, ToSchema)]
pub struct TaskEvent {
    pub payment_id: String,
    pub status: Status,
    pub outcome: Outcome,
    /// Applied changes only.
    pub sequence: Option<u64>,
    /// `evt_…` of the applied change; null for duplicates and stale events.
    pub event_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unknown {
    Unknown,
}

/// 404 of the async task API: never existed, expired, or its error result
/// was already read.
#[derive(Serialize, ToSchema)]
pub struct TaskUnknown {
    pub status: Unknown,
    /// The id as it was asked for (not necessarily a UUID).
    pub request_id: String,
}

/// 422 of `GET /v1/async/result/{request_id}`: the task ended in error;
/// handed out exactly once.
#[derive(Serialize, ToSchema)]
pub struct TaskFailure {
    pub message: String,
    pub request_id: Uuid,
    /// `unmapped_status`, `malformed_payload`, `unknown_merchant`, …
    pub code: String,
}

#[derive(Serialize, ToSchema)]
pub struct TaskErrorDetail {
    pub code: String,
    pub message: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Processing,
    Completed,
    Error,
}

/// A stored request (`GET /v1/admin/requests`).
#[derive(Serialize, ToSchema)]
pub struct StoredRequest {
    pub request_id: Uuid,
    pub provider: String,
    pub state: TaskState,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
    pub error: Option<TaskErrorDetail>,
    pub events: Vec<TaskEvent>,
}

#[derive(Serialize, ToSchema)]
pub struct StoredRequestList {
    pub data: Vec<StoredRequest>,
}

/// A request that failed authentication (`GET /v1/admin/quarantine`).
#[derive(Serialize, ToSchema)]
pub struct Quarantined {
    pub provider: String,
    #[schema(format = DateTime)]
    pub received_at: String,
    pub reason: String,
    pub peer: Option<String>,
    /// `[name, value]` pairs; credentials dropped.
    pub headers: Vec<[String; 2]>,
    pub body_len: u64,
    /// Lower-case hex SHA-256 of the whole body.
    pub body_sha256: String,
    /// The first 4 KiB of the body, base64.
    pub body_head_base64: String,
}

#[derive(Serialize, ToSchema)]
pub struct QuarantineList {
    pub data: Vec<Quarantined>,
}

/// `POST /v1/admin/backup`.
#[derive(Serialize, ToSchema)]
pub struct BackupDone {
    pub to: String,
    pub records: u64,
    pub bytes: u64,
    pub took_ms: u64,
}

/// `POST /v1/admin/purge`: records removed, per kind.
#[derive(Serialize, ToSchema)]
pub struct Purged {
    pub dedupe: u64,
    pub requests: u64,
    pub events: u64,
    pub history: u64,
    pub deliveries: u64,
    pub quarantine: u64,
}

/// A payment (`POST /v1/payments`, `GET /v1/payments/{payment_id}`).
#[derive(Serialize, ToSchema)]
pub struct Payment {
    pub payment_id: String,
    pub merchant_id: String,
    pub provider: Option<String>,
    /// Null until an IPN was applied.
    pub status: Option<Status>,
    /// 0 until an IPN was applied.
    pub sequence: u64,
    pub authorization_id: Option<String>,
    pub charge_id: Option<String>,
    /// Integer minor units.
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub merchant_site_url: Option<String>,
    /// The registration's `metadata`, as given.
    pub metadata: Option<Value>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// `GET` only: the newest entries, oldest first.
    #[schema(required = false)]
    pub history: Option<Vec<HistoryItem>>,
}

#[derive(Serialize, ToSchema)]
pub struct HistoryItem {
    pub sequence: Option<u64>,
    pub status: Status,
    pub outcome: Outcome,
    #[schema(format = DateTime)]
    pub occurred_at: Option<String>,
    #[schema(format = DateTime)]
    pub received_at: String,
    pub request_id: Uuid,
    pub event_id: Option<String>,
    pub provider_event_id: Option<String>,
}

/// A normalized event (`GET /v1/events`; also the `data` of a webhook).
#[derive(Serialize, ToSchema)]
pub struct Event {
    /// `evt_…`.
    pub event_id: String,
    /// `payment.<status>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub payment_id: String,
    pub merchant_id: String,
    pub provider: String,
    pub status: Status,
    pub previous_status: Option<Status>,
    pub sequence: u64,
    pub authorization_id: Option<String>,
    pub charge_id: Option<String>,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    #[schema(format = DateTime)]
    pub occurred_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub provider_event_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EventList {
    pub data: Vec<Event>,
    pub has_more: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndpointOrdering {
    Fifo,
    Latest,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndpointSource {
    Config,
    Api,
}

/// A webhook endpoint.
#[derive(Serialize, ToSchema)]
pub struct Endpoint {
    /// `ep_…`.
    pub id: String,
    pub merchant_id: String,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    pub ordering: EndpointOrdering,
    pub disabled: bool,
    pub disabled_reason: Option<String>,
    /// `config` endpoints are read-only through the API (409).
    pub source: EndpointSource,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// On create only: `whsec_` + base64.
    #[schema(required = false)]
    pub secret: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EndpointList {
    pub data: Vec<Endpoint>,
}

/// `POST /v1/endpoints/{id}/rotate-secret`.
#[derive(Serialize, ToSchema)]
pub struct Secret {
    pub secret: String,
}

/// `POST /v1/endpoints/{id}/replay`: deliveries enqueued.
#[derive(Serialize, ToSchema)]
pub struct Replayed {
    pub replayed: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Succeeded,
    Dead,
    Superseded,
}

/// One event to one endpoint.
#[derive(Serialize, ToSchema)]
pub struct Delivery {
    pub id: String,
    pub event_id: String,
    pub endpoint_id: String,
    pub merchant_id: String,
    pub payment_id: String,
    pub sequence: u64,
    pub state: DeliveryState,
    pub attempts: u32,
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// `GET /v1/deliveries/{id}` only.
    #[schema(required = false)]
    pub attempt_log: Option<Vec<Attempt>>,
}

#[derive(Serialize, ToSchema)]
pub struct Attempt {
    #[schema(format = DateTime)]
    pub at: String,
    /// The HTTP status, null when no response came.
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
    /// The first 1 KiB of the response body (lossy UTF-8).
    pub response_body: String,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    pub data: Vec<Delivery>,
}

/// The bearer scheme of the merchant and admin APIs.
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some(
            "A merchant API key (its own data), or an admin token (admin API; \
             merchant API with `?merchant_id=`)."
                .into(),
        );
        c.add_security_scheme("bearer", SecurityScheme::Http(http));
        // One handler serving several methods (the 3DS return) gives each
        // the same operationId: make them unique with the method.
        for item in doc.paths.paths.values_mut() {
            let ops = [
                ("get", &mut item.get),
                ("post", &mut item.post),
                ("put", &mut item.put),
                ("patch", &mut item.patch),
                ("delete", &mut item.delete),
            ];
            let mut ops: Vec<_> = ops
                .into_iter()
                .filter_map(|(m, op)| op.as_mut().map(|op| (m, op)))
                .collect();
            for i in 0..ops.len() {
                let id = ops[i].1.operation_id.clone();
                let shared = ops.iter().filter(|(_, o)| o.operation_id == id).count() > 1;
                if shared {
                    let (m, op) = &mut ops[i];
                    op.operation_id = id.map(|id| format!("{id}_{m}"));
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ipn-relay",
        description = "Verify, store, order and relay payment-provider IPNs to merchants. \
            Technical errors share one shape: `{\"error\":{\"code\",\"message\"}}`. \
            A wrong method on a known path is 405 with `Allow`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
        openapi_json,
        super::ipn::ingest,
        super::tasks::status,
        super::tasks::result,
        super::admin::requests,
        super::admin::reprocess,
        super::admin::quarantine,
        super::admin::purge,
        super::admin::backup,
        super::payments::register,
        super::payments::get,
        super::payments::events,
        super::endpoints::create,
        super::endpoints::list,
        super::endpoints::get,
        super::endpoints::patch,
        super::endpoints::delete,
        super::endpoints::rotate,
        super::endpoints::replay,
        super::deliveries::list,
        super::deliveries::get,
        super::deliveries::retry,
        super::returns::merchant_return,
        super::returns::short_return,
    ),
    modifiers(&Security),
    tags(
        (name = "provider", description = "Provider-facing: IPN ingress (SPEC §4)"),
        (name = "tasks", description = "The async task API (SPEC §4)"),
        (name = "payments", description = "Merchant API: payments and events (SPEC §5)"),
        (name = "endpoints", description = "Merchant API: webhook endpoints (SPEC §5)"),
        (name = "deliveries", description = "Merchant API: deliveries (SPEC §5)"),
        (name = "returns", description = "Browser return after 3DS (SPEC §7)"),
        (name = "admin", description = "Operator API (SPEC §8)"),
        (name = "ops", description = "Health, readiness, this document"),
    )
)]
pub struct ApiDoc;

/// The document, built once.
pub fn document() -> &'static str {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
        fix_links(&mut doc);
        serde_json::to_string_pretty(&doc).expect("the document serializes")
    })
}

/// utoipa 5.5 writes a response link's fields in snake case
/// (`operation_id`); OpenAPI spells them `operationId`, `operationRef`,
/// `requestBody`.
fn fix_links(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let links = paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op.get_mut("responses").and_then(Value::as_object_mut))
        .flat_map(|responses| responses.values_mut())
        .filter_map(|r| r.get_mut("links").and_then(Value::as_object_mut))
        .flat_map(|links| links.values_mut())
        .filter_map(Value::as_object_mut);
    for link in links {
        for (from, to) in [
            ("operation_id", "operationId"),
            ("operation_ref", "operationRef"),
            ("request_body", "requestBody"),
        ] {
            if let Some(v) = link.remove(from) {
                link.insert(to.to_string(), v);
            }
        }
    }
}

/// This document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}
