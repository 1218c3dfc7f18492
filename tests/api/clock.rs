//! Time-dependent behaviour driven by a clock the test moves: timestamp
//! tolerance of the signing schemes (result windows and `wait_for_final`
//! are in `tasks.rs` and `returns.rs`).

use std::time::Duration;

use ipn_relay::clock::{Clock, ManualClock};
use serde_json::json;

use crate::helpers::*;

const STRIPE: &str = r#"
[[providers]]
id = "st"
merchant_id = "shop-1"
[providers.auth]
scheme = "stripe"
secrets = ["whsec_clock_test"]
tolerance = "5m"
"#;

/// One signature, checked against the service's clock as it moves: inside
/// the tolerance it is accepted, a second past it a signature of that time is 401.
#[tokio::test]
async fn a_stripe_signature_is_accepted_within_its_tolerance_of_the_service_clock_only() {
    let clock = ManualClock::new(1_900_000_000_000);
    let app = spawn_with_clock(&format!("{BASE}{STRIPE}"), &clock).await;
    let t = clock.now_secs();
    let post = |id: &str| {
        let b = serde_json::to_vec(
            &json!({"id": id, "data": {"payment_id": "clk_1", "status": "Pending"}}),
        )
        .unwrap();
        let sig = ipn_relay::auth::sign(
            &app.settings.provider("st").unwrap().auth,
            &Default::default(),
            &b,
            t,
        )
        .unwrap();
        (b, sig.headers)
    };
    // Signed "now" on the service clock; the service clock moves 5 minutes on.
    clock.advance(Duration::from_secs(300));
    let (b, h) = post("evt_in");
    let r = app.post_raw("st", b, &h).await;
    assert_eq!(r.status().as_u16(), 202, "at the edge of the tolerance");
    clock.advance(Duration::from_secs(1));
    let (b, h) = post("evt_out");
    let r = app.post_raw("st", b, &h).await;
    assert_eq!(r.status().as_u16(), 401, "past the tolerance");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(error_code(&v), "invalid_signature");
}
