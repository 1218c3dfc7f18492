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

fn load(state: &AppState, raw: &str, now: i64) -> Result<Option<TaskRecord>, ApiError> {
    let Ok(id) = Uuid::parse_str(raw) else {
        return Ok(None);
    };
    Ok(state.store.task(id)?.filter(|t| visible(state, t, now)))
}

pub async fn status(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let raw = path.into_inner();
    let now = chrono::Utc::now().timestamp_millis();
    let Some(t) = load(&state, &raw, now)? else {
        return Ok(unknown(&raw));
    };
    Ok(match t.state {
        TaskState::Processing => {
            HttpResponse::Ok().json(json!({"status": "processing", "request_id": t.request_id}))
        }
        TaskState::Completed | TaskState::Error => HttpResponse::Ok().json(json!({
            "status": "completed",
            "request_id": t.request_id,
            "response_url": state.response_url(&t.request_id),
        })),
    })
}

pub async fn result(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let raw = path.into_inner();
    let now = chrono::Utc::now().timestamp_millis();
    let Some(t) = load(&state, &raw, now)? else {
        return Ok(unknown(&raw));
    };
    Ok(match t.state {
        TaskState::Processing => {
            HttpResponse::Ok().json(json!({"status": "processing", "request_id": t.request_id}))
        }
        TaskState::Completed => HttpResponse::Ok().json(json!({
            "status": "completed",
            "request_id": t.request_id,
            "events": t.events,
        })),
        TaskState::Error => match state.store.take_error(t.request_id)? {
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
