//! The async task API: every accepted IPN is a task with a status and a result.
//! The request_id (a random UUID v4) is the capability: no other credential.

use actix_web::{web, HttpResponse};
use serde_json::json;
use uuid::Uuid;

use super::{ApiError, AppState};
use crate::store::{TaskRecord, TaskState};

fn unknown(id: &str) -> HttpResponse {
    HttpResponse::NotFound().json(json!({"status": "unknown", "request_id": id}))
}

/// A task the async API still shows: within `task_results` of its creation,
/// and not an error result that was already handed out.
fn visible(state: &AppState, t: &TaskRecord, now: i64) -> bool {
    let keep = state.settings.retention.task_results.as_millis() as i64;
    now - t.created_at < keep && !(t.state == TaskState::Error && t.error_read)
}

/// The task behind a raw id if the async API still shows it, else the
/// 404 `unknown` answer.
async fn load(state: &AppState, raw: &str) -> Result<Result<TaskRecord, HttpResponse>, ApiError> {
    let now = state.now_ms();
    let task = match Uuid::parse_str(raw) {
        Ok(id) => state
            .store
            .task(id)
            .await?
            .filter(|t| visible(state, t, now)),
        Err(_) => None,
    };
    Ok(task.ok_or_else(|| unknown(raw)))
}

fn processing(t: &TaskRecord) -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "processing", "request_id": t.request_id}))
}

/// A task's state.
#[utoipa::path(
    get, path = "/v1/async/status/{request_id}", tag = "tasks", operation_id = "task_status",
    params(("request_id" = String, Path, description = "The `request_id` of the acknowledgement (a UUID v4)")),
    responses(
        (status = 200, description = "Processing, or completed (with `response_url`)", body = super::openapi::TaskStatus),
        (status = 404, description = "Never existed, expired, or its error result was already read", body = super::openapi::TaskUnknown),
        (status = 503, description = "Storage unavailable", body = super::openapi::ErrorBody),
    )
)]
pub async fn status(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let t = match load(&state, &path.into_inner()).await? {
        Ok(t) => t,
        Err(unknown) => return Ok(unknown),
    };
    Ok(match t.state {
        TaskState::Processing => processing(&t),
        TaskState::Completed | TaskState::Error => HttpResponse::Ok().json(json!({
            "status": "completed",
            "request_id": t.request_id,
            "response_url": state.response_url(&t.request_id),
        })),
    })
}

/// A task's result; an error result is handed out once.
#[utoipa::path(
    get, path = "/v1/async/result/{request_id}", tag = "tasks", operation_id = "task_result",
    params(("request_id" = String, Path, description = "The `request_id` of the acknowledgement (a UUID v4)")),
    responses(
        (status = 200, description = "Processing, or completed (with `events`)", body = super::openapi::TaskResult),
        (status = 404, description = "Never existed, expired, or its error result was already read", body = super::openapi::TaskUnknown),
        (status = 422, description = "The task ended in error (shown once)", body = super::openapi::TaskFailure),
        (status = 503, description = "Storage unavailable", body = super::openapi::ErrorBody),
    )
)]
pub async fn result(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let raw = path.into_inner();
    let t = match load(&state, &raw).await? {
        Ok(t) => t,
        Err(unknown) => return Ok(unknown),
    };
    Ok(match t.state {
        TaskState::Processing => processing(&t),
        TaskState::Completed => HttpResponse::Ok().json(json!({
            "status": "completed",
            "request_id": t.request_id,
            "events": t.events,
        })),
        TaskState::Error => match state.store.take_error(t.request_id).await? {
            // Handed out exactly once; a concurrent reader that lost the race sees unknown.
            Some(t) => {
                let e = t.error.unwrap_or(crate::store::TaskError {
                    code: "internal".into(),
                    message: "no error recorded".into(),
                });
                HttpResponse::UnprocessableEntity().json(json!({
                    "message": e.message,
                    "request_id": t.request_id,
                    "code": e.code,
                }))
            }
            None => unknown(&raw),
        },
    })
}
