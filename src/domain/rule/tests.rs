use super::*;
use proptest::prelude::*;
use Outcome::{Applied as A, Duplicate as D, Stale as S};

fn ev(status: Status, auth: Option<&str>, charge: Option<&str>, at: Option<i64>) -> Candidate {
    Candidate {
        provider_event_id: None,
        payment_id: "pay_1".into(),
        status,
        occurred_at: at,
        merchant_id: None,
        authorization_id: auth.map(str::to_string),
        charge_id: charge.map(str::to_string),
        amount: Some(1000),
        currency: Some("EUR".into()),
        merchant_site_url: None,
    }
}

fn state(
    status: Status,
    auth: Option<&str>,
    charge: Option<&str>,
    at: Option<i64>,
) -> PaymentState {
    PaymentState {
        status,
        sequence: 7,
        authorization_id: auth.map(str::to_string),
        charge_id: charge.map(str::to_string),
        occurred_at: at,
        amount: Some(1000),
        currency: Some("EUR".into()),
    }
}

/// Rows: current status; columns: event status; both in `Status::ALL` order
/// (pending, authorized, succeeded, failed, canceled, expired,
/// partially_refunded, refunded, charged_back).
const SAME_TXN: [[Outcome; 9]; 9] = [
    [D, A, A, A, A, A, A, A, A], // pending
    [S, D, A, A, A, A, A, A, A], // authorized
    [S, S, D, S, S, S, A, A, A], // succeeded
    [S, S, S, D, S, S, A, A, A], // failed
    [S, S, S, S, D, S, A, A, A], // canceled
    [S, S, S, S, S, D, A, A, A], // expired
    [S, S, S, S, S, S, D, A, A], // partially_refunded
    [S, S, S, S, S, S, S, D, A], // refunded
    [S, S, S, S, S, S, S, S, D], // charged_back
];

/// Same layout; the event names a different authorization, later in time.
const OTHER_TXN: [[Outcome; 9]; 9] = [
    [S, A, A, A, A, A, A, A, A], // pending
    [S, S, A, A, A, A, A, A, A], // authorized
    [S, S, S, S, S, S, A, A, A], // succeeded
    [A, A, A, A, A, A, A, A, A], // failed: new attempt
    [A, A, A, A, A, A, A, A, A], // canceled: new attempt
    [A, A, A, A, A, A, A, A, A], // expired: new attempt
    [S, S, S, S, S, S, S, A, A], // partially_refunded
    [S, S, S, S, S, S, S, S, A], // refunded
    [S, S, S, S, S, S, S, S, S], // charged_back
];

fn check_table(table: &[[Outcome; 9]; 9], event_auth: &str) {
    for (i, cur) in Status::ALL.into_iter().enumerate() {
        for (j, next) in Status::ALL.into_iter().enumerate() {
            let st = state(cur, Some("auth_1"), None, Some(100));
            let e = ev(next, Some(event_auth), None, Some(200));
            let d = decide(Some(&st), &e);
            assert_eq!(
                d.outcome, table[i][j],
                "{cur} -> {next} (event auth {event_auth})"
            );
            assert_eq!(d.previous_status, Some(cur));
            assert_eq!(d.next.is_some(), d.outcome == A);
            if let Some(n) = d.next {
                assert_eq!(n.status, next);
                assert_eq!(n.sequence, 8);
                assert_eq!(n.authorization_id.as_deref(), Some(event_auth));
            }
        }
    }
}

#[test]
fn every_status_pair_for_the_same_transaction() {
    check_table(&SAME_TXN, "auth_1");
}

#[test]
fn every_status_pair_for_a_different_transaction() {
    check_table(&OTHER_TXN, "auth_2");
}

#[test]
fn first_event_creates_the_state_with_sequence_one() {
    let e = ev(Status::Pending, Some("a"), Some("c"), Some(5));
    let d = decide(None, &e);
    assert_eq!(d.outcome, A);
    assert_eq!(d.previous_status, None);
    let n = d.next.unwrap();
    assert_eq!(n.sequence, 1);
    assert_eq!(n, PaymentState::first(&e));
    assert_eq!(n.authorization_id.as_deref(), Some("a"));
    assert_eq!(n.charge_id.as_deref(), Some("c"));
    assert_eq!(n.occurred_at, Some(5));
}

#[test]
fn missing_ids_on_either_side_do_not_conflict() {
    let st = state(Status::Authorized, Some("a"), None, None);
    let cases = [
        ev(Status::Authorized, None, None, None),
        ev(Status::Authorized, Some("a"), None, None),
        ev(Status::Authorized, None, Some("c"), None),
        ev(Status::Authorized, Some("a"), Some("c"), Some(1)),
    ];
    for e in cases {
        assert_eq!(decide(Some(&st), &e).outcome, D, "{e:?}");
    }
    let conflicting = ev(Status::Authorized, Some("b"), None, None);
    assert_eq!(decide(Some(&st), &conflicting).outcome, S);
}

#[test]
fn rank_rise_merges_event_values_over_state_values() {
    let mut st = state(Status::Authorized, Some("a"), None, Some(100));
    st.currency = Some("EUR".into());
    let mut e = ev(Status::Succeeded, None, Some("c"), None);
    e.amount = None;
    e.currency = Some("USD".into());
    let n = decide(Some(&st), &e).next.unwrap();
    assert_eq!(n.authorization_id.as_deref(), Some("a"));
    assert_eq!(n.charge_id.as_deref(), Some("c"));
    assert_eq!(n.occurred_at, Some(100));
    assert_eq!(n.amount, Some(1000));
    assert_eq!(n.currency.as_deref(), Some("USD"));
}

#[test]
fn new_attempt_replaces_the_old_attempts_ids() {
    let st = state(Status::Failed, Some("a1"), Some("c1"), Some(100));
    let e = ev(Status::Pending, Some("a2"), None, Some(100));
    let d = decide(Some(&st), &e);
    assert_eq!(d.outcome, A);
    let n = d.next.unwrap();
    assert_eq!(n.status, Status::Pending);
    assert_eq!(n.authorization_id.as_deref(), Some("a2"));
    assert_eq!(
        n.charge_id, None,
        "old attempt's charge must not carry over"
    );
    assert_eq!(n.sequence, 8);
}

#[test]
fn new_attempt_may_be_named_by_the_charge_id_alone() {
    let st = state(Status::Canceled, Some("a1"), Some("c1"), None);
    let e = ev(Status::Succeeded, None, Some("c2"), None);
    let n = decide(Some(&st), &e).next.expect("applied");
    assert_eq!(
        (n.authorization_id, n.charge_id.as_deref()),
        (None, Some("c2"))
    );
}

#[test]
fn new_attempt_when_the_state_has_no_id_for_the_field() {
    let st = state(Status::Expired, None, None, None);
    let e = ev(Status::Authorized, Some("a2"), None, None);
    assert_eq!(decide(Some(&st), &e).outcome, A);
}

#[test]
fn same_status_without_conflict_is_a_duplicate_even_after_failure() {
    // A state None never conflicts for the duplicate check, which runs first.
    let st = state(Status::Failed, None, None, None);
    let e = ev(Status::Failed, Some("a2"), None, None);
    assert_eq!(decide(Some(&st), &e).outcome, D);
}

#[test]
fn new_attempt_must_not_be_earlier() {
    let st = state(Status::Failed, Some("a1"), None, Some(100));
    assert_eq!(
        decide(Some(&st), &ev(Status::Pending, Some("a2"), None, Some(99))).outcome,
        S
    );
    assert_eq!(
        decide(Some(&st), &ev(Status::Pending, Some("a2"), None, Some(100))).outcome,
        A
    );
    assert_eq!(
        decide(Some(&st), &ev(Status::Pending, Some("a2"), None, None)).outcome,
        A
    );
    let unknown = state(Status::Failed, Some("a1"), None, None);
    assert_eq!(
        decide(
            Some(&unknown),
            &ev(Status::Pending, Some("a2"), None, Some(1))
        )
        .outcome,
        A
    );
}

#[test]
fn no_new_attempt_without_a_named_different_id() {
    let st = state(Status::Failed, Some("a1"), Some("c1"), Some(1));
    // No ids at all, or the same ids: the same transaction, so stale.
    assert_eq!(
        decide(Some(&st), &ev(Status::Succeeded, None, None, Some(2))).outcome,
        S
    );
    assert_eq!(
        decide(
            Some(&st),
            &ev(Status::Succeeded, Some("a1"), Some("c1"), Some(2))
        )
        .outcome,
        S
    );
    assert_eq!(
        decide(Some(&st), &ev(Status::Pending, Some("a1"), None, Some(2))).outcome,
        S
    );
}

#[test]
fn conflicting_transaction_outside_an_unsuccessful_end_is_stale() {
    let st = state(Status::Succeeded, Some("a1"), None, Some(1));
    assert_eq!(
        decide(Some(&st), &ev(Status::Succeeded, Some("a2"), None, Some(2))).outcome,
        S
    );
    assert_eq!(
        decide(Some(&st), &ev(Status::Failed, Some("a2"), None, Some(2))).outcome,
        S
    );
}

#[test]
fn reorder_sorts_by_time_then_rank_unknown_last_and_is_stable() {
    let mut batch = vec![
        Candidate {
            provider_event_id: Some("no-time".into()),
            ..ev(Status::Pending, None, None, None)
        },
        Candidate {
            provider_event_id: Some("t2-succ".into()),
            ..ev(Status::Succeeded, None, None, Some(2))
        },
        Candidate {
            provider_event_id: Some("t2-auth".into()),
            ..ev(Status::Authorized, None, None, Some(2))
        },
        Candidate {
            provider_event_id: Some("t1-fail".into()),
            ..ev(Status::Failed, None, None, Some(1))
        },
        Candidate {
            provider_event_id: Some("t2-auth-b".into()),
            ..ev(Status::Authorized, None, None, Some(2))
        },
        Candidate {
            provider_event_id: Some("no-time-b".into()),
            ..ev(Status::Refunded, None, None, None)
        },
        Candidate {
            provider_event_id: Some("no-time-c".into()),
            ..ev(Status::Pending, None, None, None)
        },
    ];
    assert_eq!(reorder_key(&batch[0]), (i64::MAX, 1));
    reorder(&mut batch);
    let ids: Vec<_> = batch
        .iter()
        .map(|e| e.provider_event_id.clone().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "t1-fail",
            "t2-auth",
            "t2-auth-b",
            "t2-succ",
            "no-time",
            "no-time-c",
            "no-time-b"
        ]
    );
}

#[test]
fn outcome_serializes_in_snake_case() {
    assert_eq!(
        serde_json::to_string(&Outcome::Duplicate).unwrap(),
        "\"duplicate\""
    );
}

fn arb_status() -> impl Strategy<Value = Status> {
    prop::sample::select(Status::ALL.to_vec())
}

fn arb_id(prefix: &'static str) -> impl Strategy<Value = Option<String>> {
    prop::option::of((1..4u8).prop_map(move |n| format!("{prefix}{n}")))
}

fn arb_event() -> impl Strategy<Value = Candidate> {
    (
        arb_status(),
        arb_id("a"),
        arb_id("c"),
        prop::option::of(0..5i64),
    )
        .prop_map(|(s, a, c, at)| ev(s, a.as_deref(), c.as_deref(), at))
}

fn arb_history() -> impl Strategy<Value = Vec<Candidate>> {
    prop::collection::vec(arb_event(), 1..10).prop_flat_map(|v| Just(v).prop_shuffle())
}

fn run(events: &[Candidate]) -> (Option<PaymentState>, Vec<(Option<PaymentState>, Decision)>) {
    let mut cur: Option<PaymentState> = None;
    let mut log = Vec::new();
    for e in events {
        let d = decide(cur.as_ref(), e);
        let before = cur.clone();
        if let Some(n) = &d.next {
            cur = Some(n.clone());
        }
        log.push((before, d));
    }
    (cur, log)
}

proptest! {
    #[test]
    fn applied_sequences_are_gapless_and_only_move_forward(events in arb_history()) {
        let (_, log) = run(&events);
        let mut expected = 1;
        for ((before, d), e) in log.iter().zip(&events) {
            prop_assert_eq!(d.next.is_some(), d.outcome == A);
            prop_assert_eq!(d.previous_status, before.as_ref().map(|s| s.status));
            let Some(n) = &d.next else {
                prop_assert!(before.is_some(), "the first event is always applied");
                continue;
            };
            prop_assert_eq!(n.sequence, expected);
            expected += 1;
            prop_assert_eq!(n.status, e.status);
            if let Some(b) = before {
                let rises = e.status.rank() > b.status.rank();
                let new_attempt = b.status.is_unsuccessful_end()
                    && ((e.authorization_id.is_some() && e.authorization_id != b.authorization_id)
                        || (e.charge_id.is_some() && e.charge_id != b.charge_id));
                prop_assert!(rises || new_attempt, "{:?} -> {:?}", b, e);
            }
        }
    }

    #[test]
    fn the_same_event_twice_in_a_row_is_a_duplicate(history in arb_history(), e in arb_event()) {
        let (cur, _) = run(&history);
        let first = decide(cur.as_ref(), &e);
        let after = first.next.clone().or(cur);
        let second = decide(after.as_ref(), &e);
        match first.outcome {
            A | D => prop_assert_eq!(second.outcome, D),
            // A stale event leaves the state as it was, so it stays stale.
            S => prop_assert_eq!(second.outcome, S),
        }
    }

    #[test]
    fn decide_never_panics(
        status in arb_status(),
        seq in any::<u64>(),
        ids in any::<[Option<String>; 4]>(),
        times in any::<[Option<i64>; 2]>(),
        next in arb_status(),
    ) {
        let [sa, sc, ea, ec] = ids;
        let st = PaymentState {
            status, sequence: seq, authorization_id: sa, charge_id: sc,
            occurred_at: times[0], amount: None, currency: None,
        };
        let e = Candidate { authorization_id: ea, charge_id: ec, occurred_at: times[1],
            ..ev(next, None, None, None) };
        let d = decide(Some(&st), &e);
        prop_assert_eq!(d.next.is_some(), d.outcome == A);
    }
}
