//! Per-provider defaults: selectors, `statuses` tables and a small hook for
//! ids that depend on the kind of event (which a selector cannot express).
//!
//! Anything the config sets explicitly wins: its selectors replace the
//! default list, its `statuses` entries override or extend the table, and a
//! hook never touches a field the config set.

pub(crate) use super::compile::Field;
use super::selector::Ctx;
use super::Preset;
use crate::domain::Candidate;

/// Fills event-kind-dependent ids after the selectors ran. `explicit[f]`
/// says whether the config set field `f`; a hook must leave those alone.
pub(crate) type Hook = fn(&Ctx<'_>, &mut Candidate, &[bool; Field::COUNT]);

pub(crate) struct Defaults {
    pub items: Option<&'static str>,
    fields: Vec<(Field, &'static [&'static str])>,
    pub statuses: Vec<(String, &'static str)>,
    pub hook: Option<Hook>,
}

impl Defaults {
    pub fn selectors(&self, field: Field) -> &[&'static str] {
        self.fields
            .iter()
            .find(|(f, _)| *f == field)
            .map_or(&[], |(_, s)| s)
    }
}

pub(crate) fn defaults(preset: Preset) -> Defaults {
    match preset {
        Preset::Generic => generic(),
        Preset::Stripe => stripe(),
        Preset::Adyen => adyen(),
        Preset::Paymentsos => paymentsos(),
        Preset::Begateway => begateway(),
    }
}

fn table(entries: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
    entries.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Sets `slot` from a hook unless the config set the field or a selector
/// already found a value.
fn fill(
    slot: &mut Option<String>,
    field: Field,
    explicit: &[bool; Field::COUNT],
    value: Option<String>,
) {
    if !explicit[field as usize] && slot.is_none() {
        *slot = value;
    }
}

fn generic() -> Defaults {
    use Field::*;
    Defaults {
        items: None,
        fields: vec![
            (EventId, &["/id"]),
            (PaymentId, &["/data/payment_id"]),
            (Status, &["/data/status"]),
            (OccurredAt, &["/created"]),
            (MerchantId, &["/data/merchant"]),
            (AuthorizationId, &["/data/authorization_id"]),
            (ChargeId, &["/data/charge_id"]),
            (Amount, &["/data/amount"]),
            (Currency, &["/data/currency"]),
            (MerchantSiteUrl, &["/data/merchant_site_url"]),
        ],
        statuses: crate::domain::Status::ALL
            .iter()
            .map(|s| (s.as_str().to_string(), s.as_str()))
            .collect(),
        hook: None,
    }
}

/// Stripe PaymentIntent lifecycle. `/type` comes first so an unknown event
/// is reported by its type; charge and dispute objects carry `payment_intent`.
fn stripe() -> Defaults {
    use Field::*;
    Defaults {
        items: None,
        fields: vec![
            (EventId, &["/id"]),
            (
                PaymentId,
                &["/data/object/payment_intent", "/data/object/id"],
            ),
            (
                Status,
                &[
                    "/type",
                    "{/type}:{/data/object/refunded}",
                    // Only PaymentIntent objects: a refund or charge object's
                    // "succeeded" says nothing about the payment.
                    "{/data/object/object}:{/data/object/status}",
                ],
            ),
            (OccurredAt, &["/created"]),
            (MerchantId, &["/data/object/metadata/merchant_id"]),
            (
                ChargeId,
                &["/data/object/latest_charge", "/data/object/charge"],
            ),
            (Amount, &["/data/object/amount"]),
            (Currency, &["/data/object/currency"]),
            (
                MerchantSiteUrl,
                &["/data/object/metadata/merchant_site_url"],
            ),
        ],
        statuses: table(&[
            ("payment_intent.created", "pending"),
            ("payment_intent.processing", "pending"),
            ("payment_intent.requires_action", "pending"),
            ("payment_intent.amount_capturable_updated", "authorized"),
            ("payment_intent.succeeded", "succeeded"),
            ("payment_intent.payment_failed", "failed"),
            ("payment_intent.canceled", "canceled"),
            ("charge.refunded:true", "refunded"),
            ("charge.refunded:false", "partially_refunded"),
            ("charge.dispute.created", "charged_back"),
            // Charge-level echoes of the PaymentIntent events above (a
            // manual-capture charge "succeeds" at authorization), and events
            // that cannot move a payment forward.
            ("charge.succeeded", "ignore"),
            ("charge.failed", "ignore"),
            ("charge.captured", "ignore"),
            ("charge.pending", "ignore"),
            ("charge.updated", "ignore"),
            ("charge.refund.updated", "ignore"),
            ("charge.dispute.updated", "ignore"),
            ("charge.dispute.closed", "ignore"),
            ("charge.dispute.funds_withdrawn", "ignore"),
            ("charge.dispute.funds_reinstated", "ignore"),
            ("payment_intent:requires_payment_method", "pending"),
            ("payment_intent:requires_confirmation", "pending"),
            ("payment_intent:requires_action", "pending"),
            ("payment_intent:processing", "pending"),
            ("payment_intent:requires_capture", "authorized"),
            ("payment_intent:succeeded", "succeeded"),
            ("payment_intent:canceled", "canceled"),
        ]),
        hook: Some(stripe_hook),
    }
}

/// A charge object's own id is its charge id.
fn stripe_hook(ctx: &Ctx<'_>, c: &mut Candidate, explicit: &[bool; Field::COUNT]) {
    if ctx.pointer("/data/object/object").as_deref() == Some("charge") {
        fill(
            &mut c.charge_id,
            Field::ChargeId,
            explicit,
            ctx.pointer("/data/object/id"),
        );
    }
}

/// Adyen standard webhooks: a batch of `NotificationRequestItem`s, `success`
/// sent as the string "true"/"false".
fn adyen() -> Defaults {
    use Field::*;
    Defaults {
        items: Some("/notificationItems/*/NotificationRequestItem"),
        fields: vec![
            (EventId, &["{/pspReference}:{/eventCode}:{/success}"]),
            (PaymentId, &["/merchantReference"]),
            (
                Status,
                &[
                    "{/eventCode}:{/success}",
                    // CANCEL_OR_REFUND says which one happened here.
                    "{/eventCode}:{/success}:{/additionalData/modification.action}",
                ],
            ),
            (OccurredAt, &["/eventDate"]),
            (MerchantId, &["/additionalData/metadata.merchant_id"]),
            (
                MerchantSiteUrl,
                &["/additionalData/metadata.merchant_site_url"],
            ),
            (Amount, &["/amount/value"]),
            (Currency, &["/amount/currency"]),
        ],
        statuses: table(&[
            ("AUTHORISATION:true", "authorized"),
            ("AUTHORISATION:false", "failed"),
            ("PENDING:true", "pending"),
            ("CAPTURE:true", "succeeded"),
            ("CANCELLATION:true", "canceled"),
            ("TECHNICAL_CANCEL:true", "canceled"),
            ("CANCEL_OR_REFUND:true:cancel", "canceled"),
            ("CANCEL_OR_REFUND:true:refund", "refunded"),
            ("REFUND:true", "refunded"),
            ("OFFER_CLOSED:true", "expired"),
            ("EXPIRE:true", "expired"),
            ("CHARGEBACK:true", "charged_back"),
            ("SECOND_CHARGEBACK:true", "charged_back"),
            ("PREARBITRATION_LOST:true", "charged_back"),
            // A rejected modification leaves the payment where it was.
            ("CAPTURE:false", "ignore"),
            ("CANCELLATION:false", "ignore"),
            ("TECHNICAL_CANCEL:false", "ignore"),
            ("CANCEL_OR_REFUND:false", "ignore"),
            ("REFUND:false", "ignore"),
            // Reversals of an earlier success: no canonical status goes back.
            ("CAPTURE_FAILED:true", "ignore"),
            ("REFUND_FAILED:true", "ignore"),
            ("REFUNDED_REVERSED:true", "ignore"),
            ("CHARGEBACK_REVERSED:true", "ignore"),
            ("PREARBITRATION_WON:true", "ignore"),
            // Dispute notices before a chargeback, and non-payment events.
            ("NOTIFICATION_OF_CHARGEBACK:true", "ignore"),
            ("REQUEST_FOR_INFORMATION:true", "ignore"),
            ("REPORT_AVAILABLE:true", "ignore"),
        ]),
        hook: Some(adyen_hook),
    }
}

/// The authorization is the item's own pspReference for AUTHORISATION and
/// the `originalReference` for modifications (capture, refund, chargeback …).
fn adyen_hook(ctx: &Ctx<'_>, c: &mut Candidate, explicit: &[bool; Field::COUNT]) {
    let psp = ctx.pointer("/pspReference");
    let auth = if ctx.pointer("/eventCode").as_deref() == Some("AUTHORISATION") {
        psp
    } else {
        ctx.pointer("/originalReference").or(psp)
    };
    fill(
        &mut c.authorization_id,
        Field::AuthorizationId,
        explicit,
        auth,
    );
}

/// PaymentsOS: the resource kind is only in the `event-type` header
/// (`payment.<kind>.create|update`), the outcome in `/data/result/status`.
fn paymentsos() -> Defaults {
    use Field::*;
    let mut statuses = Vec::new();
    for kind in ["authorization", "capture", "charge", "void", "refund"] {
        for (result, canonical) in [
            ("Succeed", "succeeded"),
            ("Failed", "failed"),
            ("Pending", "pending"),
        ] {
            let canonical = match (kind, result) {
                ("authorization", "Succeed") => "authorized",
                ("authorization" | "charge", _) => canonical,
                ("capture", "Succeed") => "succeeded",
                ("void", "Succeed") => "canceled",
                ("refund", "Succeed") => "refunded",
                // A failed or pending capture/void/refund changes nothing.
                _ => "ignore",
            };
            for action in ["create", "update"] {
                statuses.push((format!("payment.{kind}.{action}:{result}"), canonical));
            }
        }
    }
    Defaults {
        items: None,
        fields: vec![
            (EventId, &["/id"]),
            (PaymentId, &["/payment_id"]),
            (Status, &["{header:event-type}:{/data/result/status}"]),
            (OccurredAt, &["/created"]),
            (Amount, &["/data/amount"]),
            (Currency, &["/data/currency"]),
        ],
        statuses,
        hook: Some(paymentsos_hook),
    }
}

/// `/data/id` is the resource's id: an authorization's, or a capture's or
/// charge's (the charge id). A void's or refund's own id is neither.
fn paymentsos_hook(ctx: &Ctx<'_>, c: &mut Candidate, explicit: &[bool; Field::COUNT]) {
    let event_type = ctx.header("event-type").unwrap_or_default();
    let kind = event_type.split('.').nth(1).unwrap_or_default();
    let id = || ctx.pointer("/data/id");
    match kind {
        "authorization" => fill(
            &mut c.authorization_id,
            Field::AuthorizationId,
            explicit,
            id(),
        ),
        "capture" | "charge" => fill(&mut c.charge_id, Field::ChargeId, explicit, id()),
        _ => {}
    }
}

/// beGateway and its white-label gateways: one `transaction` per webhook.
fn begateway() -> Defaults {
    use Field::*;
    Defaults {
        items: None,
        fields: vec![
            (EventId, &["{/transaction/uid}:{/transaction/status}"]),
            (PaymentId, &["/transaction/tracking_id", "/transaction/uid"]),
            (
                Status,
                &[
                    "{/transaction/type}:{/transaction/status}",
                    "/transaction/status",
                ],
            ),
            (OccurredAt, &["/transaction/created_at"]),
            (Amount, &["/transaction/amount"]),
            (Currency, &["/transaction/currency"]),
        ],
        statuses: table(&[
            ("successful", "succeeded"),
            ("failed", "failed"),
            ("error", "failed"),
            ("incomplete", "pending"),
            ("pending", "pending"),
            ("expired", "expired"),
            ("authorization:successful", "authorized"),
            ("payment:successful", "succeeded"),
            ("capture:successful", "succeeded"),
            ("void:successful", "canceled"),
            ("refund:successful", "refunded"),
            // A failed capture/void/refund leaves the payment where it was.
            ("capture:failed", "ignore"),
            ("capture:error", "ignore"),
            ("void:failed", "ignore"),
            ("void:error", "ignore"),
            ("refund:failed", "ignore"),
            ("refund:error", "ignore"),
        ]),
        hook: Some(begateway_hook),
    }
}

/// `uid` is the transaction's own id; `parent_uid` the one it acts on: the
/// authorization for capture/void, the payment or capture for a refund.
fn begateway_hook(ctx: &Ctx<'_>, c: &mut Candidate, explicit: &[bool; Field::COUNT]) {
    let uid = ctx.pointer("/transaction/uid");
    let parent = ctx.pointer("/transaction/parent_uid");
    let (auth, charge) = match ctx.pointer("/transaction/type").as_deref() {
        Some("authorization") => (uid, None),
        Some("capture") => (parent, uid),
        Some("void") => (parent, None),
        Some("refund") => (None, parent),
        _ => (None, uid),
    };
    fill(
        &mut c.authorization_id,
        Field::AuthorizationId,
        explicit,
        auth,
    );
    fill(&mut c.charge_id, Field::ChargeId, explicit, charge);
}
