//! Body parsing, selectors and presets: raw IPN → candidate events. Pure.
//!
//! A provider's `[providers.mapping]` table ([`RawMapping`]) is merged with
//! its [`Preset`]'s defaults and compiled once ([`Mapping::compile`]); config
//! errors name the offending key. At run time [`parse_body`] turns the raw
//! body into JSON, [`Mapping::event_key`] gives the dedupe key and
//! [`Mapping::extract`] the [`Candidate`](crate::domain::Candidate)s, one per
//! item in document order.

mod body;
mod compile;
mod extract;
mod presets;
mod selector;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use body::parse_body;
pub use compile::Mapping;
pub use extract::item_key;

/// A known provider whose defaults fill everything not set explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    #[default]
    Generic,
    Stripe,
    Adyen,
    Paymentsos,
    Begateway,
}

/// `[providers.mapping]` as written in the config. Every field is a selector
/// (see the `selector` module docs) or a list of them: the first with a value
/// wins. An empty list switches a preset's default off.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMapping {
    /// Where the event documents are when one request carries several, e.g.
    /// `/notificationItems/*/NotificationRequestItem` (`*` = each array
    /// element). Absent or `""`: the whole body is one event.
    pub items: Option<String>,
    pub event_id: Option<OneOrMany>,
    pub payment_id: Option<OneOrMany>,
    /// A list means: the first selector whose value is a key of `statuses`.
    pub status: Option<OneOrMany>,
    pub occurred_at: Option<OneOrMany>,
    pub merchant_id: Option<OneOrMany>,
    pub authorization_id: Option<OneOrMany>,
    pub charge_id: Option<OneOrMany>,
    pub amount: Option<OneOrMany>,
    pub currency: Option<OneOrMany>,
    pub merchant_site_url: Option<OneOrMany>,
    /// Provider value → canonical status name, or `"ignore"` (the item yields
    /// no event). Entries override or extend the preset's table.
    #[serde(default)]
    pub statuses: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn as_slice(&self) -> &[String] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }
}

/// A mapping config error, naming the key (`mapping.status`,
/// `mapping.statuses.Foo`, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct MappingConfigError {
    pub key: String,
    pub message: String,
}

/// Why a stored request could not be mapped. The message is meant for an
/// operator: it ends up in the task's error result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("malformed payload: {0}")]
    MalformedPayload(String),
    #[error("no event items: the mapping's items selector matched nothing in the body")]
    NoItems,
    #[error("missing payment id: none of the mapping.payment_id selectors has a value")]
    MissingPaymentId,
    #[error("missing status: none of the mapping.status selectors has a value")]
    MissingStatus,
    #[error(
        "unmapped status {0:?}: add it to mapping.statuses (a canonical status or \"ignore\")"
    )]
    UnmappedStatus(String),
    #[error("invalid occurred_at {0:?}: expected an RFC 3339 timestamp or unix seconds")]
    InvalidOccurredAt(String),
    #[error("invalid amount {0:?}: expected an integer amount in minor units")]
    InvalidAmount(String),
}

impl MapError {
    /// Stable machine-readable code for the task's error result.
    pub fn code(&self) -> &'static str {
        match self {
            MapError::MalformedPayload(_) => "malformed_payload",
            MapError::NoItems => "no_items",
            MapError::MissingPaymentId => "missing_payment_id",
            MapError::MissingStatus => "missing_status",
            MapError::UnmappedStatus(_) => "unmapped_status",
            MapError::InvalidOccurredAt(_) => "invalid_occurred_at",
            MapError::InvalidAmount(_) => "invalid_amount",
        }
    }
}

/// Request headers as the mapping sees them. Names are case-insensitive.
pub trait HeaderLookup {
    fn header(&self, name: &str) -> Option<&str>;
}

/// Stored headers, `(name, value)` with lower-case names; the first wins.
impl HeaderLookup for [(String, String)] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl HeaderLookup for Vec<(String, String)> {
    fn header(&self, name: &str) -> Option<&str> {
        self.as_slice().header(name)
    }
}

/// Lets an unsized lookup (`&[(String, String)]`) be passed as `&dyn`.
impl<T: HeaderLookup + ?Sized> HeaderLookup for &T {
    fn header(&self, name: &str) -> Option<&str> {
        (**self).header(name)
    }
}

/// No headers at all.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHeaders;

impl HeaderLookup for NoHeaders {
    fn header(&self, _name: &str) -> Option<&str> {
        None
    }
}
