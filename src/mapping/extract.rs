//! Running a compiled [`Mapping`]: dedupe keys and candidate events.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::compile::{Mapping, Target};
use super::presets::Field;
use super::selector::Ctx;
use super::{parse_body, HeaderLookup, MapError};
use crate::domain::Candidate;

impl Mapping {
    /// The provider event key used to dedupe requests: `id:` + each item's
    /// mapped event id, joined with `,`; or, when the body does not parse or
    /// any item has no event id, `sha256:` + hex SHA-256 of the raw body.
    /// The prefixes keep the two forms from ever colliding.
    pub fn event_key(
        &self,
        headers: &dyn HeaderLookup,
        content_type: Option<&str>,
        body: &[u8],
    ) -> String {
        self.event_key_of(headers, parse_body(content_type, body).ok().as_ref(), body)
    }

    /// [`Mapping::event_key`] for a body already parsed with [`parse_body`]
    /// (`doc` None: it did not parse).
    pub fn event_key_of(
        &self,
        headers: &dyn HeaderLookup,
        doc: Option<&Value>,
        body: &[u8],
    ) -> String {
        self.event_keys_of(headers, doc, body).0
    }

    /// [`Mapping::event_key_of`], and for a batch of several items each
    /// with an event id, every item's own key (`id:` + its event id, the
    /// key a request of that item alone would have); empty otherwise.
    pub fn event_keys_of(
        &self,
        headers: &dyn HeaderLookup,
        doc: Option<&Value>,
        body: &[u8],
    ) -> (String, Vec<String>) {
        match doc.and_then(|doc| self.mapped_ids(headers, doc)) {
            Some(ids) => {
                let key = format!("id:{}", ids.join(","));
                let items = if ids.len() > 1 {
                    ids.iter().map(|id| item_key(id)).collect()
                } else {
                    Vec::new()
                };
                (key, items)
            }
            None => (sha256_key(body), Vec::new()),
        }
    }

    fn mapped_ids(&self, headers: &dyn HeaderLookup, doc: &Value) -> Option<Vec<String>> {
        self.items(doc)
            .ok()?
            .into_iter()
            .map(|doc| self.first(Field::EventId, &Ctx { doc, headers }))
            .collect()
    }

    /// All candidate events of one request, in document order. Items whose
    /// status maps to `"ignore"` yield nothing; any other item that cannot be
    /// mapped fails the whole request (an operator fixes the config and
    /// reprocesses it).
    pub fn extract(
        &self,
        headers: &dyn HeaderLookup,
        doc: &Value,
    ) -> Result<Vec<Candidate>, MapError> {
        let mut out = Vec::new();
        for doc in self.items(doc)? {
            if let Some(c) = self.candidate(&Ctx { doc, headers })? {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// [`parse_body`] then [`Mapping::extract`]: a stored request's events.
    pub fn map_request(
        &self,
        headers: &dyn HeaderLookup,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Vec<Candidate>, MapError> {
        self.extract(headers, &parse_body(content_type, body)?)
    }

    fn items<'v>(&self, doc: &'v Value) -> Result<Vec<&'v Value>, MapError> {
        match &self.items {
            None => Ok(vec![doc]),
            Some(path) => {
                let items = path.select(doc);
                if items.is_empty() {
                    Err(MapError::NoItems)
                } else {
                    Ok(items)
                }
            }
        }
    }

    /// The first selector of `field` with a value.
    fn first(&self, field: Field, ctx: &Ctx<'_>) -> Option<String> {
        self.selectors[field as usize]
            .iter()
            .find_map(|s| s.value(ctx))
    }

    fn status(&self, ctx: &Ctx<'_>) -> Result<Target, MapError> {
        let mut first_present = None;
        for selector in &self.selectors[Field::Status as usize] {
            let Some(value) = selector.value(ctx) else {
                continue;
            };
            if let Some(target) = self.statuses.get(&value) {
                return Ok(*target);
            }
            first_present.get_or_insert(value);
        }
        Err(first_present.map_or(MapError::MissingStatus, MapError::UnmappedStatus))
    }

    fn candidate(&self, ctx: &Ctx<'_>) -> Result<Option<Candidate>, MapError> {
        // Status first: an ignored item needs no other field (Adyen's
        // REPORT_AVAILABLE has no payment at all).
        let status = match self.status(ctx)? {
            Target::Ignore => return Ok(None),
            Target::Status(s) => s,
        };
        let get = |field| self.first(field, ctx);
        let mut c = Candidate {
            provider_event_id: get(Field::EventId),
            payment_id: get(Field::PaymentId).ok_or(MapError::MissingPaymentId)?,
            status,
            occurred_at: get(Field::OccurredAt)
                .map(|v| parse_occurred_at(&v))
                .transpose()?,
            merchant_id: get(Field::MerchantId),
            authorization_id: get(Field::AuthorizationId),
            charge_id: get(Field::ChargeId),
            amount: get(Field::Amount).map(|v| parse_amount(&v)).transpose()?,
            currency: get(Field::Currency).map(|v| v.to_uppercase()),
            merchant_site_url: get(Field::MerchantSiteUrl),
        };
        if let Some(hook) = self.hook {
            hook(ctx, &mut c, &self.explicit);
        }
        Ok(Some(c))
    }
}

/// The dedupe key of one item with this mapped event id: the key of a
/// request that holds that item alone.
pub fn item_key(event_id: &str) -> String {
    format!("id:{event_id}")
}

fn sha256_key(body: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(body)))
}

/// `-?[0-9]+`, nothing else (no `+`, no spaces, no fraction).
fn is_integer(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// RFC 3339, or unix seconds (a JSON integer or a digit string) → unix millis.
pub(crate) fn parse_occurred_at(v: &str) -> Result<i64, MapError> {
    let invalid = || MapError::InvalidOccurredAt(v.to_string());
    if is_integer(v) {
        return v
            .parse::<i64>()
            .ok()
            .and_then(|secs| secs.checked_mul(1000))
            // Beyond chrono's range it could not be shown: every reader
            // (API, webhook) would print the epoch instead.
            .filter(|&ms| chrono::DateTime::from_timestamp_millis(ms).is_some())
            .ok_or_else(invalid);
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis())
        .map_err(|_| invalid())
}

/// Integer minor units: a JSON integer or a digit string, optionally negative.
pub(crate) fn parse_amount(v: &str) -> Result<i64, MapError> {
    is_integer(v)
        .then(|| v.parse().ok())
        .flatten()
        .ok_or_else(|| MapError::InvalidAmount(v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occurred_at_accepts_rfc3339_and_unix_seconds() {
        assert_eq!(parse_occurred_at("1700000000"), Ok(1_700_000_000_000));
        assert_eq!(
            parse_occurred_at("2019-06-28T18:03:50+01:00"),
            Ok(1_561_741_430_000)
        );
        assert_eq!(
            parse_occurred_at("2018-10-03T04:58:59.497Z"),
            Ok(1_538_542_739_497)
        );
        for bad in [
            "yesterday",
            "1700000000.5",
            "2019-06-28",
            "+1",
            "9223372036854775807",
            " 1",
        ] {
            assert_eq!(
                parse_occurred_at(bad),
                Err(MapError::InvalidOccurredAt(bad.into()))
            );
        }
    }

    #[test]
    fn amount_is_integer_minor_units() {
        assert_eq!(parse_amount("1000"), Ok(1000));
        assert_eq!(parse_amount("-250"), Ok(-250));
        for bad in [
            "10.50",
            "1e3",
            "+5",
            "",
            "-",
            "12 ",
            "99999999999999999999",
            "ten",
        ] {
            assert_eq!(parse_amount(bad), Err(MapError::InvalidAmount(bad.into())));
        }
    }
}
