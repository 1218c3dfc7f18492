//! Config → compiled [`Mapping`]: preset defaults merged with explicit keys,
//! every selector parsed, every `statuses` value checked.

use std::collections::BTreeMap;

use super::presets::{self, Hook};
use super::selector::{ItemsPath, Selector};
use super::{MappingConfigError, Preset, RawMapping};
use crate::domain::Status;

/// The mapped fields, in `RawMapping` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    EventId,
    PaymentId,
    Status,
    OccurredAt,
    MerchantId,
    AuthorizationId,
    ChargeId,
    Amount,
    Currency,
    MerchantSiteUrl,
}

impl Field {
    pub const COUNT: usize = 10;
    pub const ALL: [Field; Field::COUNT] = [
        Field::EventId,
        Field::PaymentId,
        Field::Status,
        Field::OccurredAt,
        Field::MerchantId,
        Field::AuthorizationId,
        Field::ChargeId,
        Field::Amount,
        Field::Currency,
        Field::MerchantSiteUrl,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::EventId => "event_id",
            Field::PaymentId => "payment_id",
            Field::Status => "status",
            Field::OccurredAt => "occurred_at",
            Field::MerchantId => "merchant_id",
            Field::AuthorizationId => "authorization_id",
            Field::ChargeId => "charge_id",
            Field::Amount => "amount",
            Field::Currency => "currency",
            Field::MerchantSiteUrl => "merchant_site_url",
        }
    }
}

/// What a provider value in `statuses` maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Status(Status),
    /// The item yields no event (e.g. a failed refund): not an error.
    Ignore,
}

/// A provider's mapping, ready to run. Build it with [`Mapping::compile`].
#[derive(Debug, Clone)]
pub struct Mapping {
    pub(crate) preset: Preset,
    /// `None`: the whole body is one event document.
    pub(crate) items: Option<ItemsPath>,
    /// Per [`Field`], the selectors in priority order (may be empty).
    pub(crate) selectors: [Vec<Selector>; Field::COUNT],
    /// Per [`Field`], whether the config set it; preset hooks leave those alone.
    pub(crate) explicit: [bool; Field::COUNT],
    pub(crate) statuses: BTreeMap<String, Target>,
    pub(crate) hook: Option<Hook>,
}

impl Mapping {
    /// Merge `raw` over `preset`'s defaults and validate the result.
    pub fn compile(preset: Preset, raw: &RawMapping) -> Result<Mapping, MappingConfigError> {
        let defaults = presets::defaults(preset);

        let items_text = raw.items.as_deref().or(defaults.items);
        let items = match items_text {
            None => None,
            Some(text) => {
                let path = ItemsPath::parse(text).map_err(|m| err("mapping.items", m))?;
                (!path.is_whole_document()).then_some(path)
            }
        };

        let mut selectors: [Vec<Selector>; Field::COUNT] = Default::default();
        let mut explicit = [false; Field::COUNT];
        for field in Field::ALL {
            let configured = raw_field(raw, field);
            explicit[field as usize] = configured.is_some();
            let texts: Vec<&str> = match configured {
                Some(v) => v.as_slice().iter().map(String::as_str).collect(),
                None => defaults.selectors(field).to_vec(),
            };
            let key = format!("mapping.{}", field.name());
            selectors[field as usize] = texts
                .into_iter()
                .map(|t| Selector::parse(t).map_err(|m| err(&key, m)))
                .collect::<Result<_, _>>()?;
        }
        for field in [Field::PaymentId, Field::Status] {
            if selectors[field as usize].is_empty() {
                return Err(err(
                    &format!("mapping.{}", field.name()),
                    "at least one selector is required".into(),
                ));
            }
        }

        let mut statuses = BTreeMap::new();
        let preset_table = defaults.statuses.iter().map(|(k, v)| (k.as_str(), *v));
        let explicit_table = raw.statuses.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        for (provider_value, canonical) in preset_table.chain(explicit_table) {
            let key = format!("mapping.statuses.{provider_value}");
            if provider_value.is_empty() {
                return Err(err(&key, "an empty provider value can never match".into()));
            }
            statuses.insert(
                provider_value.to_string(),
                parse_target(canonical).map_err(|m| err(&key, m))?,
            );
        }

        Ok(Mapping {
            preset,
            items,
            selectors,
            explicit,
            statuses,
            hook: defaults.hook,
        })
    }

    pub fn preset(&self) -> Preset {
        self.preset
    }

    /// Every provider value of the merged `statuses` table, with what it
    /// maps to (`None`: `"ignore"`), in key order.
    pub fn status_table(&self) -> impl Iterator<Item = (&str, Option<Status>)> {
        self.statuses.iter().map(|(k, t)| {
            let s = match t {
                Target::Status(s) => Some(*s),
                Target::Ignore => None,
            };
            (k.as_str(), s)
        })
    }
}

fn raw_field(raw: &RawMapping, field: Field) -> Option<&super::OneOrMany> {
    match field {
        Field::EventId => raw.event_id.as_ref(),
        Field::PaymentId => raw.payment_id.as_ref(),
        Field::Status => raw.status.as_ref(),
        Field::OccurredAt => raw.occurred_at.as_ref(),
        Field::MerchantId => raw.merchant_id.as_ref(),
        Field::AuthorizationId => raw.authorization_id.as_ref(),
        Field::ChargeId => raw.charge_id.as_ref(),
        Field::Amount => raw.amount.as_ref(),
        Field::Currency => raw.currency.as_ref(),
        Field::MerchantSiteUrl => raw.merchant_site_url.as_ref(),
    }
}

fn parse_target(canonical: &str) -> Result<Target, String> {
    if canonical == "ignore" {
        return Ok(Target::Ignore);
    }
    canonical.parse().map(Target::Status).map_err(|_| {
        let names: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        format!(
            "{canonical:?} is not a canonical status; expected one of {} or \"ignore\"",
            names.join(", ")
        )
    })
}

fn err(key: &str, message: String) -> MappingConfigError {
    MappingConfigError {
        key: key.to_string(),
        message,
    }
}
