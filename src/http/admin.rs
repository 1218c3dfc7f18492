//! Operator endpoints: stored requests by state, reprocessing, quarantine,
//! online backup, retention on demand.

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::caller::require_admin;
use super::{ApiError, AppState};
use crate::store::{Reprocess, TaskState};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RequestsQuery {
    /// `error`, `processing` or `completed`.
    state: Option<String>,
    provider: Option<String>,
    /// 1 to 1000 (clamped), default 100.
    limit: Option<usize>,
}

/// Stored requests, newest first, by state and provider.
#[utoipa::path(
    get, path = "/v1/admin/requests", tag = "admin",
    params(RequestsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Stored requests", body = super::openapi::StoredRequestList),
        (status = 400, description = "Invalid query (e.g. an unknown state)", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = super::openapi::ErrorBody),
        (status = 404, description = "A merchant key (the admin API is invisible to merchants)", body = super::openapi::ErrorBody),
        (status = 503, description = "Storage unavailable", body = super::openapi::ErrorBody),
    )
)]
pub async fn requests(
    req: HttpRequest,
    q: web::Query<RequestsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let filter = match q.state.as_deref() {
        None => None,
        Some("error") => Some(TaskState::Error),
        Some("processing") => Some(TaskState::Processing),
        Some("completed") => Some(TaskState::Completed),
        Some(other) => {
            return Err(ApiError::InvalidRequest(format!(
                "state must be error, processing or completed, not {other:?}"
            )))
        }
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let tasks = state
        .store
        .tasks(filter, q.provider.as_deref(), limit)
        .await?;
    let items: Vec<_> = tasks
        .iter()
        .map(|t| {
            json!({
                "request_id": t.request_id,
                "provider": t.provider,
                "state": t.state,
                "created_at": crate::http::payments::rfc3339(t.created_at),
                "finished_at": t.finished_at.map(crate::http::payments::rfc3339),
                "error": t.error,
                "events": t.events,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "data": items })))
}

/// Queue a request in error for processing again.
#[utoipa::path(
    post, path = "/v1/admin/requests/{request_id}/reprocess", tag = "admin",
    params(("request_id" = String, Path, description = "A stored request's id")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Queued; a new task under the same id", body = super::openapi::Ack),
        (status = 401, description = "Missing or invalid bearer token", body = super::openapi::ErrorBody),
        (status = 404, description = "No stored request with that id (or a merchant key)", body = super::openapi::ErrorBody),
        (status = 409, description = "The request is not in error", body = super::openapi::ErrorBody),
        (status = 503, description = "Storage unavailable", body = super::openapi::ErrorBody),
    )
)]
pub async fn reprocess(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let id = Uuid::parse_str(&path.into_inner()).map_err(|_| ApiError::not_found())?;
    match state.store.reprocess(id, state.now_ms()).await? {
        Reprocess::Queued => Ok(HttpResponse::Accepted().json(json!({
            "status": "processing",
            "request_id": id,
            "status_url": state.status_url(&id),
            "response_url": state.response_url(&id),
        }))),
        Reprocess::NotFound => Err(ApiError::NotFound("no stored request with that id".into())),
        Reprocess::NotInError(s) => Err(ApiError::Conflict(format!(
            "only requests in error can be reprocessed; this one is {}",
            serde_json::to_value(s)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        ))),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QuarantineQuery {
    /// 1 to 1000 (clamped), default 100.
    limit: Option<usize>,
}

/// The newest requests that failed authentication.
#[utoipa::path(
    get, path = "/v1/admin/quarantine", tag = "admin",
    params(QuarantineQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Quarantined requests", body = super::openapi::QuarantineList),
        (status = 400, description = "Invalid query", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = super::openapi::ErrorBody),
        (status = 404, description = "A merchant key (the admin API is invisible to merchants)", body = super::openapi::ErrorBody),
        (status = 503, description = "Storage unavailable", body = super::openapi::ErrorBody),
    )
)]
pub async fn quarantine(
    req: HttpRequest,
    q: web::Query<QuarantineQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let items: Vec<_> = state
        .store
        .quarantined(q.limit.unwrap_or(100).clamp(1, 1000))
        .await?
        .into_iter()
        .map(|r| {
            json!({
                "provider": r.provider,
                "received_at": crate::http::payments::rfc3339(r.received_at),
                "reason": r.reason,
                "peer": r.peer,
                "headers": r.headers,
                "body_len": r.body_len,
                "body_sha256": r.body_sha256,
                "body_head_base64": base64::engine::general_purpose::STANDARD.encode(&r.body_head),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "data": items })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupBody {
    /// An absolute directory on the service's machine, missing or empty.
    to: String,
}

#[utoipa::path(
    post, path = "/v1/admin/backup", tag = "admin",
    request_body = BackupBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Backup written", body = super::openapi::BackupDone),
        (status = 400, description = "Invalid body", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = super::openapi::ErrorBody),
        (status = 404, description = "A merchant key (the admin API is invisible to merchants)", body = super::openapi::ErrorBody),
        (status = 409, description = "The target exists and is not empty", body = super::openapi::ErrorBody),
        (status = 422, description = "`to` is not an absolute path", body = super::openapi::ErrorBody),
        (status = 503, description = "Storage unavailable", body = super::openapi::ErrorBody),
    )
)]
/// `POST /v1/admin/backup {"to": "/abs/dir"}`: a consistent copy of the
/// store, written by the service itself (it holds the store's lock).
pub async fn backup(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let b: BackupBody = super::json_body(&body)?;
    let to = std::path::PathBuf::from(&b.to);
    if !to.is_absolute() {
        return Err(ApiError::Unprocessable(
            "to: an absolute path on the service's machine".into(),
        ));
    }
    if to.exists()
        && std::fs::read_dir(&to)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(ApiError::Conflict(format!(
            "{} exists and is not empty",
            to.display()
        )));
    }
    let done = state.store.backup(&to).await?;
    tracing::info!(to = %to.display(), records = done.records, took_ms = done.took_ms, "backup written");
    Ok(HttpResponse::Ok().json(json!({
        "to": to.display().to_string(),
        "records": done.records,
        "bytes": done.bytes,
        "took_ms": done.took_ms,
    })))
}

#[utoipa::path(
    post, path = "/v1/admin/purge", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Records removed", body = super::openapi::Purged),
        (status = 401, description = "Missing or invalid bearer token", body = super::openapi::ErrorBody),
        (status = 404, description = "A merchant key (the admin API is invisible to merchants)", body = super::openapi::ErrorBody),
        (status = 503, description = "Storage unavailable", body = super::openapi::ErrorBody),
    )
)]
/// `POST /v1/admin/purge`: run retention now (it also runs in the background).
pub async fn purge(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let limits = crate::store::RetentionMs::of(&state.settings.retention);
    let p = state.store.purge_expired(state.now_ms(), limits).await?;
    Ok(HttpResponse::Ok().json(json!({
        "dedupe": p.dedupe,
        "requests": p.requests,
        "events": p.events,
        "history": p.history,
        "deliveries": p.deliveries,
        "quarantine": p.quarantine,
    })))
}
