//! Payments (registration, state, history) and merchants' event feed.

use ulid::Ulid;

use super::*;

impl Store {
    pub fn payment(&self, payment_id: &str) -> Result<Option<PaymentRecord>, StoreError> {
        self.payments
            .get(payment_id.as_bytes())?
            .map(|b| dec(&b))
            .transpose()
    }

    /// Register (or update the registration of) a payment before the 3DS redirect.
    pub fn register_payment(
        &self,
        payment_id: &str,
        merchant_id: &str,
        provider: Option<String>,
        site_url: Option<String>,
        metadata: Option<String>,
        now: i64,
    ) -> Result<Registered, StoreError> {
        let key = payment_id.as_bytes();
        let _lock = self.payment_lock(payment_id);
        loop {
            let old = self.payments.get(key)?;
            let (rec, created) = match &old {
                None => (
                    PaymentRecord {
                        payment_id: payment_id.to_string(),
                        merchant_id: merchant_id.to_string(),
                        provider: provider.clone(),
                        state: None,
                        registered_site_url: site_url.clone(),
                        ipn_site_url: None,
                        metadata: metadata.clone(),
                        created_at: now,
                        updated_at: now,
                        history: Vec::new(),
                    },
                    true,
                ),
                Some(b) => {
                    let mut r: PaymentRecord = dec(b)?;
                    if r.merchant_id != merchant_id {
                        return Ok(Registered::Taken);
                    }
                    if site_url.is_some() {
                        r.registered_site_url = site_url.clone();
                    }
                    if metadata.is_some() {
                        r.metadata = metadata.clone();
                    }
                    if r.provider.is_none() {
                        r.provider = provider.clone();
                    }
                    r.updated_at = now;
                    (r, false)
                }
            };
            if self
                .payments
                .compare_and_swap(key, old, Some(enc(&rec)?))?
                .is_ok()
            {
                return Ok(if created {
                    Registered::Created(rec)
                } else {
                    Registered::Updated(rec)
                });
            }
        }
    }

    /// Everything recorded for a payment, in arrival order.
    pub fn history(&self, payment_id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        Ok(self
            .payment(payment_id)?
            .map(|p| p.history)
            .unwrap_or_default())
    }

    /// Applied events of a merchant, oldest first, strictly after `after`.
    pub fn events(
        &self,
        merchant_id: &str,
        payment_id: Option<&str>,
        after: Option<Ulid>,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let prefix = joined(merchant_id, &[]);
        let start = match after {
            Some(u) => joined(merchant_id, &(u.0 + 1).to_be_bytes()),
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        for r in self.events.range(start..) {
            let (k, v) = r?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            let ev: EventRecord = dec(&v)?;
            if payment_id.is_none_or(|p| p == ev.payment_id) {
                out.push(ev);
            }
        }
        Ok(out)
    }
}
