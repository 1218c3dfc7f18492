//! Who is calling the merchant and admin APIs: `Authorization: Bearer <key>`
//! with a merchant API key, or an admin token (with `?merchant_id=` to act
//! for a merchant). Keys are compared in constant time.

use actix_web::http::header;
use actix_web::HttpRequest;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};

/// `?merchant_id=` of the merchant and admin APIs.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Scope {
    /// Admin tokens only: the merchant to act for (on `GET /v1/deliveries*`
    /// optional: without it an admin sees every merchant's). A merchant
    /// key always acts for its own merchant.
    pub merchant_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Merchant(String),
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn matches(keys: &[SecretString], token: &str) -> bool {
    // No early exit: every key is compared.
    keys.iter().fold(false, |hit, k| {
        hit | bool::from(k.expose_secret().as_bytes().ct_eq(token.as_bytes()))
    })
}

pub fn identify(req: &HttpRequest, state: &AppState) -> Result<Caller, ApiError> {
    let token = bearer(req)
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthorized)?;
    if matches(&state.settings.admin_tokens, token) {
        return Ok(Caller::Admin);
    }
    state
        .settings
        .merchants
        .iter()
        .find(|m| matches(&m.api_keys, token))
        .map(|m| Caller::Merchant(m.id.clone()))
        .ok_or(ApiError::Unauthorized)
}

pub fn require_admin(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    match identify(req, state)? {
        Caller::Admin => Ok(()),
        Caller::Merchant(_) => Err(ApiError::not_found()),
    }
}

/// The merchant whose data this call may see: the caller's own, or for an
/// admin the `merchant_id` it names (which must exist).
pub fn merchant_scope(
    req: &HttpRequest,
    state: &AppState,
    merchant_id: Option<&str>,
) -> Result<String, ApiError> {
    scope_of(identify(req, state)?, state, merchant_id)
}

/// [`merchant_scope`] for a caller already identified.
pub fn scope_of(
    caller: Caller,
    state: &AppState,
    merchant_id: Option<&str>,
) -> Result<String, ApiError> {
    match caller {
        Caller::Merchant(m) => Ok(m),
        Caller::Admin => {
            let m = merchant_id.ok_or_else(|| {
                ApiError::InvalidRequest("admin tokens must name ?merchant_id=".into())
            })?;
            known_merchant(state, m)
        }
    }
}

/// Like [`merchant_scope`], but an admin naming no merchant sees every
/// merchant's data (None).
pub fn merchant_scope_or_all(
    req: &HttpRequest,
    state: &AppState,
    merchant_id: Option<&str>,
) -> Result<Option<String>, ApiError> {
    match identify(req, state)? {
        Caller::Merchant(m) => Ok(Some(m)),
        Caller::Admin => merchant_id.map(|m| known_merchant(state, m)).transpose(),
    }
}

fn known_merchant(state: &AppState, m: &str) -> Result<String, ApiError> {
    state
        .settings
        .merchant(m)
        .map(|m| m.id.clone())
        .ok_or_else(|| ApiError::NotFound(format!("no merchant {m:?}")))
}
