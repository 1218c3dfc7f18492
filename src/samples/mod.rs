//! Realistic sample IPNs per preset, for `ipn-relay trigger` (a local dev
//! loop, as `stripe trigger` is for Stripe). Pure: the payment id, the
//! provider-native status value and "now" are inputs.
//!
//! A [`Sample`] is a named builder, a function of `(payment_id, native, now)`,
//! plus the provider-native status values it can carry (its default first).
//! [`build`] picks the sample and the value: when a canonical status is asked
//! for, it runs each candidate through the provider's own [`Mapping`], so a
//! config's `statuses` overrides are honoured and what is sent is what the
//! service will map. [`sign`] then signs the request as the provider would,
//! with [`auth::sign`] and the provider's first configured secret.

mod builders;
#[cfg(test)]
mod tests;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::auth::{self, AuthConfig, Scheme, SignError};
use crate::domain::Status;
use crate::mapping::{Mapping, Preset};

/// A sample before signing: a JSON body and the unsigned headers the provider
/// sends with it (PaymentsOS's `event-type`, …).
#[derive(Debug, Clone, PartialEq)]
pub struct Unsigned {
    pub body: serde_json::Value,
    pub headers: Vec<(String, String)>,
}

/// `(payment_id, native status value, now as unix seconds)` → a sample.
pub type Builder = fn(&str, &str, i64) -> Unsigned;

/// The provider-native values a sample can carry.
#[derive(Debug, Clone, Copy)]
pub enum Natives {
    Fixed(&'static [&'static str]),
    /// Canonical names first, then every other key of the provider's
    /// `statuses` table (generic: the status is the field's value).
    StatusTable,
}

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub name: &'static str,
    pub natives: Natives,
    pub build: Builder,
}

impl Sample {
    /// The native values to try, in preference order.
    pub fn natives(&self, mapping: &Mapping) -> Vec<String> {
        match self.natives {
            Natives::Fixed(v) => v.iter().map(|s| s.to_string()).collect(),
            Natives::StatusTable => {
                let mut out: Vec<String> = std::iter::once(Status::Succeeded)
                    .chain(Status::ALL.into_iter().filter(|s| *s != Status::Succeeded))
                    .map(|s| s.as_str().to_string())
                    .collect();
                for (k, _) in mapping.status_table() {
                    if !out.iter().any(|o| o == k) {
                        out.push(k.to_string());
                    }
                }
                out
            }
        }
    }
}

/// The samples of a preset; the first is the default.
pub fn samples(preset: Preset) -> &'static [Sample] {
    builders::samples(preset)
}

pub fn preset_name(preset: Preset) -> &'static str {
    match preset {
        Preset::Generic => "generic",
        Preset::Stripe => "stripe",
        Preset::Adyen => "adyen",
        Preset::Paymentsos => "paymentsos",
        Preset::Begateway => "begateway",
    }
}

/// A built sample: what to send, and what the provider's mapping makes of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub sample: &'static str,
    /// The provider-native status value used.
    pub native: String,
    pub payment_id: String,
    /// The canonical status the mapping gives the request's last event.
    pub status: Status,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SampleError {
    #[error("no sample {name:?} for preset {preset}; its samples: {}", .names.join(", "))]
    UnknownSample {
        name: String,
        preset: &'static str,
        names: Vec<&'static str>,
    },
    #[error(
        "{what} cannot produce {} with this provider's mapping; it can produce: {}",
        want.map_or("any status".to_string(), |w| format!("status {w}")),
        join(.reachable)
    )]
    Unreachable {
        what: String,
        /// `None`: no status was asked for, and nothing maps.
        want: Option<Status>,
        reachable: Vec<Status>,
    },
    #[error(
        "provider uses rsa-sha256: signing needs the gateway's RSA private key, and the config \
         holds only its public key; use `auth.scheme = \"basic\"` for local testing"
    )]
    NeedsPrivateKey,
    #[error("signing failed: {0}")]
    Sign(#[from] SignError),
}

fn join(v: &[Status]) -> String {
    if v.is_empty() {
        return "nothing (every value is unmapped or ignored)".into();
    }
    v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

/// What the mapping makes of one sample with one native value: the last
/// event's status, if every event is for `payment_id`.
fn mapped(mapping: &Mapping, u: &Unsigned, payment_id: &str) -> Option<(Vec<u8>, Status)> {
    let body = serde_json::to_vec(&u.body).ok()?;
    let events = mapping
        .map_request(&u.headers, Some("application/json"), &body)
        .ok()?;
    let last = events.last()?;
    events
        .iter()
        .all(|e| e.payment_id == payment_id)
        .then_some((body, last.status))
}

/// Build a sample for a provider with this `mapping`: `sample` by name (else
/// the preset's first, or when `want` is given the first that can produce
/// it), carrying the first native value the mapping turns into `want` (else
/// the sample's first value that maps to any status).
pub fn build(
    mapping: &Mapping,
    sample: Option<&str>,
    payment_id: &str,
    want: Option<Status>,
    now: i64,
) -> Result<Request, SampleError> {
    let preset = mapping.preset();
    let all = samples(preset);
    let candidates: Vec<&Sample> =
        match sample {
            Some(name) => vec![all.iter().find(|s| s.name == name).ok_or_else(|| {
                SampleError::UnknownSample {
                    name: name.into(),
                    preset: preset_name(preset),
                    names: all.iter().map(|s| s.name).collect(),
                }
            })?],
            None if want.is_some() => all.iter().collect(),
            None => all.iter().take(1).collect(),
        };
    let mut reachable = Vec::new();
    for s in &candidates {
        for native in s.natives(mapping) {
            let u = (s.build)(payment_id, &native, now);
            let Some((body, status)) = mapped(mapping, &u, payment_id) else {
                continue;
            };
            if want.is_none_or(|w| w == status) {
                return Ok(Request {
                    sample: s.name,
                    native,
                    payment_id: payment_id.into(),
                    status,
                    body,
                    headers: u.headers,
                });
            }
            if !reachable.contains(&status) {
                reachable.push(status);
            }
        }
    }
    let what = match sample {
        Some(name) => format!("sample {name:?}"),
        None => format!("no {} sample", preset_name(preset)),
    };
    Err(SampleError::Unreachable {
        what,
        want,
        reachable,
    })
}

/// The canonical statuses a sample can produce with this mapping.
pub fn reachable(mapping: &Mapping, sample: &Sample, payment_id: &str, now: i64) -> Vec<Status> {
    let mut out = Vec::new();
    for native in sample.natives(mapping) {
        let u = (sample.build)(payment_id, &native, now);
        if let Some((_, s)) = mapped(mapping, &u, payment_id) {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
}

/// What goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wire {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Sign `req` exactly as the provider would: its headers plus the scheme's,
/// and the body (rewritten when the signature lives inside it, as Adyen's).
pub fn sign(auth: &AuthConfig, req: &Request, now: i64) -> Result<Wire, SampleError> {
    if auth.scheme == Scheme::RsaSha256 {
        return Err(SampleError::NeedsPrivateKey);
    }
    let mut map = HeaderMap::new();
    for (k, v) in &req.headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| SignError::MalformedHeader(k.clone()))?;
        let value = HeaderValue::from_str(v).map_err(|_| SignError::MalformedHeader(k.clone()))?;
        map.insert(name, value);
    }
    let signed = auth::sign(auth, &map, &req.body, now)?;
    let mut headers = req.headers.clone();
    headers.push(("Content-Type".into(), "application/json".into()));
    headers.extend(signed.headers);
    Ok(Wire {
        headers,
        body: signed.body.unwrap_or_else(|| req.body.clone()),
    })
}

/// A reproducible pseudo-random id: `len` hex digits of SHA-256 over the
/// inputs, so one trigger's ids differ from the next one's and tests are
/// deterministic.
pub(crate) fn digest(parts: &[&str], len: usize) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())[..len].to_string()
}
