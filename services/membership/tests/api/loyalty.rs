//! Points, purchases and tiers over gRPC.

use std::time::Duration;

use chrono::Utc;
use retail_proto::common::Money;
use retail_proto::membership::loyalty_service_client::LoyaltyServiceClient;
use retail_proto::membership::{self as pb};
use tonic::Code;
use tonic::transport::Channel;

use crate::helpers::*;

fn loyalty(app: &TestApp) -> LoyaltyServiceClient<Channel> {
    LoyaltyServiceClient::new(app.channel.clone())
}

fn loyalty_token() -> String {
    token(&["membership.members.read", "membership.points.write"])
}

fn eur(minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: "EUR".into(),
        amount_minor: minor,
    })
}

async fn pay(app: &TestApp, member: &str, order: &str, minor: i64, days_ago: i64) -> pb::RecordPurchaseResponse {
    loyalty(app)
        .record_purchase(with_token(
            &loyalty_token(),
            pb::RecordPurchaseRequest {
                name: member.into(),
                purchase: Some(pb::Purchase {
                    order_id: order.into(),
                    amount: eur(minor),
                    occur_time: Some(retail_kit::convert::timestamp(
                        Utc::now() - chrono::Duration::days(days_ago),
                    )),
                    channel: "store".into(),
                }),
                refund: false,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn refund(
    app: &TestApp,
    member: &str,
    order: &str,
    minor: i64,
    request: &str,
) -> Result<pb::RecordPurchaseResponse, tonic::Status> {
    loyalty(app)
        .record_purchase(with_token(
            &loyalty_token(),
            pb::RecordPurchaseRequest {
                name: member.into(),
                purchase: Some(pb::Purchase {
                    order_id: order.into(),
                    amount: eur(minor),
                    occur_time: None,
                    channel: "store".into(),
                }),
                refund: true,
                request_id: request.into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn redeem(app: &TestApp, member: &str, points: i64) -> Result<pb::PointsBalance, tonic::Status> {
    loyalty(app)
        .redeem_points(with_token(
            &loyalty_token(),
            pb::RedeemPointsRequest {
                name: member.into(),
                points,
                reason: "gift".into(),
                request_id: String::new(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn balance(app: &TestApp, member: &str) -> pb::PointsBalance {
    loyalty(app)
        .get_points_balance(with_token(
            &loyalty_token(),
            pb::GetPointsBalanceRequest { name: member.into() },
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn entries_sum(app: &TestApp, member: &str) -> i64 {
    let mut sum = 0;
    let mut token = String::new();
    loop {
        let page = loyalty(app)
            .list_points_entries(with_token(
                &loyalty_token(),
                pb::ListPointsEntriesRequest {
                    parent: member.into(),
                    page_size: 100,
                    page_token: token.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        sum += page.points_entries.iter().map(|e| e.points).sum::<i64>();
        if page.next_page_token.is_empty() {
            return sum;
        }
        token = page.next_page_token;
    }
}

async fn member(app: &TestApp, phone_number: &str) -> String {
    app.register("Loyal", vec![phone(phone_number)]).await.unwrap().name
}

#[tokio::test]
async fn of_100_concurrent_redemptions_exactly_those_the_balance_covers_succeed() {
    let app = spawn_app().await;
    let m = member(&app, "+4916000000001").await;
    // 100.00 EUR at 1 point per unit: 100 points, enough for 10 redemptions of 10.
    assert_eq!(pay(&app, &m, "order-1", 10_000, 0).await.points_change, 100);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let mut client = loyalty(&app);
            let m = m.clone();
            tokio::spawn(async move {
                client
                    .redeem_points(with_token(
                        &loyalty_token(),
                        pb::RedeemPointsRequest {
                            name: m,
                            points: 10,
                            reason: "coffee".into(),
                            request_id: String::new(),
                        },
                    ))
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(status) => assert!(
                matches!(status.code(), Code::FailedPrecondition | Code::Aborted),
                "{status:?}"
            ),
        }
    }
    assert_eq!(ok, 10);
    let b = balance(&app, &m).await;
    assert_eq!(b.balance, 0);
    assert_eq!(entries_sum(&app, &m).await, 0, "balance = sum(entries)");
}

/// Payments recorded while redemptions of the same member race them: every one of
/// both succeeds (a payment waits for the member instead of failing on a change
/// made meanwhile), and the balance is what they add up to.
#[tokio::test]
async fn payments_racing_redemptions_of_one_member_all_succeed_and_add_up() {
    let app = spawn_app().await;
    let m = member(&app, "+4916000000021").await;
    assert_eq!(pay(&app, &m, "first", 10_000, 0).await.points_change, 100);
    let orders: Vec<String> = (0..20).map(|i| format!("race-{i}")).collect();
    // All in flight at once; the first purchase's 100 points cover all 20
    // redemptions of 5.
    let payments = futures::future::join_all(orders.iter().map(|order| pay(&app, &m, order, 1_000, 0)));
    let redemptions = futures::future::join_all((0..20).map(|_| redeem(&app, &m, 5)));
    let (paid, redeemed) = tokio::join!(payments, redemptions);
    for p in paid {
        assert_eq!(p.points_change, 10);
    }
    for r in redeemed {
        r.unwrap();
    }
    let b = balance(&app, &m).await;
    assert_eq!(b.balance, 100 + 20 * 10 - 20 * 5);
    assert_eq!(entries_sum(&app, &m).await, b.balance, "balance = sum(entries)");
}

/// A debt is repaid once across a batch: the first payment repays what it can,
/// the next repays the rest and credits the remainder, as one by one.
#[tokio::test]
async fn a_debt_is_repaid_once_across_a_batch_of_payments() {
    let app = spawn_app().await;
    let (batched, single) = (
        member(&app, "+4916000000023").await,
        member(&app, "+4916000000024").await,
    );
    let order = |m: &str, n: &str| format!("{}-{n}", m.trim_start_matches("members/"));
    for m in [&batched, &single] {
        pay(&app, m, &order(m, "pre"), 10_000, 0).await; // 100 points
        redeem(&app, m, 100).await.unwrap();
        refund(&app, m, &order(m, "pre"), 10_000, &order(m, "refund"))
            .await
            .unwrap(); // 100 debt
        assert_eq!(balance(&app, m).await.debt, 100);
    }
    let events = |m: &str| {
        vec![
            order_paid(m, &order(m, "1"), 5_000),
            order_paid(m, &order(m, "2"), 8_000),
        ]
    };
    assert!(apply_order_events(&app, events(&batched)).await);
    for event in events(&single) {
        apply_order_events(&app, vec![event]).await;
    }
    for m in [&batched, &single] {
        let b = balance(&app, m).await;
        // 50 + 80 earned: 100 repay the debt, 30 are credited.
        assert_eq!((b.balance, b.debt), (30, 0));
        assert_eq!(entries_sum(&app, m).await, 30);
    }
}

/// A tier change moves the member only from the tier it was decided on: a member
/// upgraded since (by a payment) keeps its tier, and no change is recorded.
#[tokio::test]
async fn a_tier_change_from_a_tier_the_member_left_changes_nothing() {
    use retail_membership::store::loyalty::{set_tier, tier_changes};
    let app = spawn_app().await;
    let m = member(&app, "+4916000000022").await;
    let id = m.trim_start_matches("members/");
    assert!(
        !set_tier(&app.db, id, "gold", "silver", "reevaluation", Utc::now())
            .await
            .unwrap()
    );
    assert_eq!(app.identify(phone("+4916000000022")).await.unwrap().tier, "regular");
    assert!(tier_changes(&app.db, id, None).await.unwrap().is_empty());
    assert!(
        set_tier(&app.db, id, "regular", "silver", "reevaluation", Utc::now())
            .await
            .unwrap()
    );
    assert_eq!(tier_changes(&app.db, id, None).await.unwrap().len(), 1);
}

#[tokio::test]
async fn the_same_order_earns_once() {
    let app = spawn_app().await;
    let m = member(&app, "+4916000000002").await;
    let first = pay(&app, &m, "order-dup", 12_345, 0).await;
    let again = pay(&app, &m, "order-dup", 12_345, 0).await;
    assert_eq!(first.points_change, 123);
    assert_eq!(again.points_change, 123, "the replay reports the first result");
    assert_eq!(balance(&app, &m).await.balance, 123);
    assert_eq!(entries_sum(&app, &m).await, 123);
}

#[tokio::test]
async fn a_refund_of_spent_points_becomes_debt_that_the_next_earning_repays() {
    let app = spawn_app().await;
    let m = member(&app, "+4916000000003").await;
    pay(&app, &m, "order-a", 20_000, 0).await; // 200 points
    redeem(&app, &m, 150).await.unwrap();
    // Half refunded: 100 points to reverse, 50 left -> 50 debt.
    let r = refund(&app, &m, "order-a", 10_000, "refund-a-1").await.unwrap();
    assert_eq!(r.points_change, -100);
    let b = balance(&app, &m).await;
    assert_eq!((b.balance, b.debt), (0, 50));
    // The same refund request again changes nothing.
    refund(&app, &m, "order-a", 10_000, "refund-a-1").await.unwrap();
    assert_eq!(balance(&app, &m).await.debt, 50);
    // Refunding more than paid is refused.
    let err = refund(&app, &m, "order-a", 10_001, "refund-a-2").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // 80 points earned: 50 repay the debt, 30 are credited.
    pay(&app, &m, "order-b", 8_000, 0).await;
    let b = balance(&app, &m).await;
    assert_eq!((b.balance, b.debt), (30, 0));
    assert_eq!(entries_sum(&app, &m).await, 30);
}

/// The membership log's PointsChanged events: (kind, points, balance, debt).
async fn points_changes(app: &TestApp, want: usize) -> Vec<(String, i64, i64, i64)> {
    use prost::Message;
    let mut log = retail_proto::events::event_log_service_client::EventLogServiceClient::new(app.channel.clone());
    let mut stream = log
        .subscribe(authed(retail_proto::events::SubscribeRequest {
            after_position: 0,
            max_batch_size: 100,
        }))
        .await
        .unwrap()
        .into_inner();
    let mut changes = Vec::new();
    while changes.len() < want {
        let batch = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the points events arrive")
            .unwrap()
            .unwrap();
        for event in batch.events {
            if event.r#type == "retail.events.v1.PointsChanged" {
                let e = retail_proto::events::PointsChanged::decode(event.payload.unwrap().value.as_slice()).unwrap();
                changes.push((e.kind, e.points, e.balance, e.debt));
            }
        }
    }
    changes
}

async fn version(app: &TestApp, member: &str) -> i64 {
    app.client()
        .get_member(authed(pb::GetMemberRequest {
            name: member.into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .version
}

#[tokio::test]
async fn points_events_carry_the_standing_after_each_change_and_each_change_moves_the_version() {
    let app = spawn_app().await;
    let m = member(&app, "+4916000000009").await;
    let mut versions = vec![version(&app, &m).await];
    pay(&app, &m, "order-p", 20_000, 0).await; // 200 points
    versions.push(version(&app, &m).await);
    redeem(&app, &m, 150).await.unwrap();
    versions.push(version(&app, &m).await);
    refund(&app, &m, "order-p", 10_000, "refund-p-1").await.unwrap(); // 100 back: 50 taken, 50 debt
    versions.push(version(&app, &m).await);
    pay(&app, &m, "order-q", 8_000, 0).await; // 80: 50 repay the debt, 30 credited
    versions.push(version(&app, &m).await);
    assert!(
        versions.windows(2).all(|w| w[1] > w[0]),
        "every change commits a newer version: {versions:?}"
    );
    assert_eq!(
        points_changes(&app, 4).await,
        vec![
            ("earn".to_owned(), 200, 200, 0),
            ("redeem".to_owned(), -150, 50, 0),
            ("reverse".to_owned(), -50, 0, 50),
            ("earn".to_owned(), 30, 30, 0),
        ]
    );
}

#[tokio::test]
async fn redemption_takes_the_first_expiring_lot_and_expired_lots_are_written_off() {
    let app = spawn_app_with(|_| {}).await;
    let m = member(&app, "+4916000000004").await;
    pay(&app, &m, "old", 5_000, 430).await; // ~14 months ago: already past its expiry
    pay(&app, &m, "mid", 3_000, 180).await;
    pay(&app, &m, "new", 2_000, 0).await;
    let before = balance(&app, &m).await;
    assert_eq!(before.balance, 100, "expired points count until written off");
    assert_eq!(before.lots.len(), 2, "the expired lot is no longer usable");
    redeem(&app, &m, 20).await.unwrap();
    let after = balance(&app, &m).await;
    let remaining: Vec<i64> = after.lots.iter().map(|l| l.remaining).collect();
    assert_eq!(remaining, vec![10, 20], "the mid lot (expiring first) was used first");
    // The periodic job writes the expired lot off with a ledger entry.
    let state = app.state.clone().unwrap();
    assert_eq!(state.expire_points(Utc::now()).await.unwrap(), 50);
    assert_eq!(balance(&app, &m).await.balance, 30);
    assert_eq!(entries_sum(&app, &m).await, 30);
    assert_eq!(state.expire_points(Utc::now()).await.unwrap(), 0, "nothing twice");
}

#[tokio::test]
async fn upgrades_are_immediate_and_downgrades_wait_for_reevaluation_one_level_at_a_time() {
    let app = spawn_app().await;
    let m = member(&app, "+4916000000005").await;
    assert_eq!(pay(&app, &m, "o1", 40_000, 0).await.tier, "regular");
    assert_eq!(
        pay(&app, &m, "o2", 260_000, 0).await.tier,
        "gold",
        "300.00 + ... reaches gold"
    );
    // Gold multiplier x1.5 applies to the next order.
    assert_eq!(pay(&app, &m, "o3", 10_000, 0).await.points_change, 150);
    let state = app.state.clone().unwrap();
    // A year and more later the spend has left the window: one level per evaluation.
    let later = Utc::now() + chrono::Duration::days(400);
    state.reevaluate_tiers(later).await.unwrap();
    let tier_now = app.identify(phone("+4916000000005")).await.unwrap().tier;
    assert_eq!(tier_now, "silver");
    state.reevaluate_tiers(later).await.unwrap();
    assert_eq!(app.identify(phone("+4916000000005")).await.unwrap().tier, "regular");
    let changes = loyalty(&app)
        .list_tier_changes(with_token(
            &loyalty_token(),
            pb::ListTierChangesRequest {
                parent: m.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .tier_changes;
    let reasons: Vec<_> = changes
        .iter()
        .map(|c| (c.to_tier.as_str(), c.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("regular", "reevaluation"),
            ("silver", "reevaluation"),
            ("gold", "purchase")
        ]
    );
}

/// Spend outside the rolling 12-month window does not count toward an upgrade.
#[tokio::test]
async fn only_spend_inside_the_window_upgrades() {
    let app = spawn_app().await;
    let m = member(&app, "+4916000000015").await;
    assert_eq!(pay(&app, &m, "old", 280_000, 400).await.tier, "regular");
    // With the old order, 310.00 would reach gold; without it, 30.00 is regular.
    assert_eq!(pay(&app, &m, "new-1", 30_000, 0).await.tier, "regular");
    assert_eq!(
        pay(&app, &m, "new-2", 30_000, 0).await.tier,
        "silver",
        "60.00 in the window"
    );
    // A purchase just inside the window still counts.
    assert_eq!(
        pay(&app, &m, "new-3", 240_000, 360).await.tier,
        "gold",
        "300.00 in the window"
    );
}

#[tokio::test]
async fn the_profile_shows_lifecycle_and_qualifying_spend_from_purchases() {
    let app = spawn_app().await;
    let m = member(&app, "+4916000000006").await;
    assert_eq!(
        app.identify(phone("+4916000000006")).await.unwrap().lifecycle_state,
        pb::LifecycleState::Prospect as i32
    );
    pay(&app, &m, "l1", 1_000, 300).await;
    pay(&app, &m, "l2", 1_000, 10).await;
    let got = app.identify(phone("+4916000000006")).await.unwrap();
    assert_eq!(got.lifecycle_state, pb::LifecycleState::OldOnce as i32);
    assert_eq!(got.qualifying_spend.unwrap().amount_minor, 2_000);
    pay(&app, &m, "l3", 1_000, 5).await;
    let got = app.identify(phone("+4916000000006")).await.unwrap();
    assert_eq!(got.lifecycle_state, pb::LifecycleState::OldRepeat as i32);
    assert_eq!(got.points_balance, 30);
}

#[tokio::test]
async fn the_ladder_and_its_benefits_are_published() {
    let app = spawn_app().await;
    let tiers = loyalty(&app)
        .list_tiers(with_token(&loyalty_token(), pb::ListTiersRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tiers.mode, "absolute");
    let names: Vec<_> = tiers.tiers.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["regular", "silver", "gold", "platinum"]);
    let thresholds: Vec<_> = tiers
        .tiers
        .iter()
        .map(|t| t.threshold.as_ref().unwrap().amount_minor)
        .collect();
    assert_eq!(thresholds, [0, 50_000, 300_000, 800_000]);
    assert!(tiers.tiers[2].free_shipping);
}

#[tokio::test]
async fn bad_loyalty_input_is_refused_precisely() {
    let app = spawn_app().await;
    let m = member(&app, "+4916000000007").await;
    for points in [0, -5] {
        let err = redeem(&app, &m, points).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&err), ["points"]);
    }
    assert_eq!(redeem(&app, &m, 1).await.unwrap_err().code(), Code::FailedPrecondition);
    let err = loyalty(&app)
        .record_purchase(with_token(
            &loyalty_token(),
            pb::RecordPurchaseRequest {
                name: m.clone(),
                purchase: Some(pb::Purchase {
                    order_id: "bad order!".into(),
                    amount: Some(Money {
                        currency_code: "USD".into(),
                        amount_minor: 10,
                    }),
                    occur_time: None,
                    channel: String::new(),
                }),
                refund: true,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&err),
        ["purchase.order_id", "purchase.amount.currency_code", "request_id"]
    );
    let err = refund(&app, &m, "never-paid", 100, "r1").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let ghost = format!("members/{}", uuid::Uuid::new_v4());
    assert_eq!(redeem(&app, &ghost, 5).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(balance(&app, &m).await.balance, 0);
    let _ = Duration::ZERO;
}

#[tokio::test]
async fn a_read_mask_returns_only_its_fields_and_a_row_read_follows_every_change() {
    let app = spawn_app().await;
    let m = member(&app, "+4916000000010").await;
    let row = ["name", "tier", "points_balance", "version"];
    // Cold cache: answered from the member row alone.
    pay(&app, &m, "order-mask-1", 20_000, 0).await;
    let first = masked(&app, &m, &row).await.unwrap();
    let full = app
        .client()
        .get_member(authed(pb::GetMemberRequest {
            name: m.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (&first.name, &first.tier, first.points_balance, first.version),
        (&full.name, &full.tier, full.points_balance, full.version)
    );
    assert_eq!(first.points_balance, 200);
    // Nothing outside the mask: not the display name, nor what other tables hold.
    assert!(first.display_name.is_empty() && first.identifiers.is_empty());
    assert_eq!(first.lifecycle_state, 0);
    assert!(first.qualifying_spend.is_none() && first.register_time.is_none());
    assert!(!full.identifiers.is_empty() && full.qualifying_spend.is_some());

    // The full read cached the profile; a change invalidates it, and the row read
    // (from the cache or the row) shows the change.
    pay(&app, &m, "order-mask-2", 10_000, 0).await;
    let second = masked(&app, &m, &row).await.unwrap();
    assert_eq!(second.points_balance, 300);
    assert!(second.version > first.version);

    // A mask reaching into the profile is served from it.
    let ids = masked(&app, &m, &["identifiers", "qualifying_spend"]).await.unwrap();
    assert_eq!(ids.identifiers, full.identifiers);
    assert_eq!(ids.qualifying_spend.unwrap().amount_minor, 30_000);
    assert!(ids.name.is_empty() && ids.points_balance == 0);
    // `*` is the whole member.
    assert_eq!(masked(&app, &m, &["*"]).await.unwrap().display_name, full.display_name);

    let err = masked(&app, &m, &["tier", "password"]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["read_mask"]);
    let unknown = format!("members/{}", uuid::Uuid::new_v4());
    assert_eq!(masked(&app, &unknown, &row).await.unwrap_err().code(), Code::NotFound);
}

/// Pricing's tier read (`name`, `tier`) is cached apart from the profile: payments
/// that leave the tier alone keep it a hit, and every tier change (a payment's
/// upgrade over the log or through the admin RPC, a re-evaluation) shows at once.
#[tokio::test]
async fn a_cached_tier_read_survives_payments_and_follows_every_tier_change() {
    use std::sync::atomic::Ordering;
    let app = spawn_app().await;
    let state = app.state.clone().unwrap();
    let loads = || app.cache.stats.loads.load(Ordering::Relaxed);
    let tier = |m: String| {
        let app = &app;
        async move { masked(app, &m, &["name", "tier"]).await.unwrap() }
    };
    let (a, b) = (
        member(&app, "+4916000000030").await,
        member(&app, "+4916000000031").await,
    );

    let first = tier(a.clone()).await;
    assert_eq!((first.name.as_str(), first.tier.as_str()), (a.as_str(), "regular"));
    assert_eq!(first.points_balance, 0, "only the masked fields");
    // A payment that changes points but not the tier: the tier is read from the cache.
    assert!(apply_order_events(&app, vec![order_paid(&a, "tier-1", 40_000)]).await);
    let before = loads();
    assert_eq!(tier(a.clone()).await.tier, "regular");
    assert_eq!(loads(), before, "a payment without a tier change keeps the tier cached");
    // An upgrade over the orders log.
    assert!(apply_order_events(&app, vec![order_paid(&a, "tier-2", 260_000)]).await);
    assert_eq!(tier(a.clone()).await.tier, "gold");
    // A downgrade by re-evaluation, a year and more later.
    state
        .reevaluate_tiers(Utc::now() + chrono::Duration::days(400))
        .await
        .unwrap();
    assert_eq!(tier(a.clone()).await.tier, "silver");

    // An upgrade through the admin RPC.
    assert_eq!(tier(b.clone()).await.tier, "regular");
    assert_eq!(pay(&app, &b, "tier-3", 300_000, 0).await.tier, "gold");
    assert_eq!(tier(b.clone()).await.tier, "gold");
}

/// An `OrderPaid` event of the orders log for `member`.
fn order_paid(member: &str, order: &str, minor: i64) -> retail_proto::events::EventEnvelope {
    use prost::Message;
    use retail_proto::events as ev;
    ev::EventEnvelope {
        r#type: "retail.events.v1.OrderPaid".into(),
        aggregate_id: order.into(),
        payload: Some(prost_types::Any {
            type_url: "type.googleapis.com/retail.events.v1.OrderPaid".into(),
            value: ev::OrderPaid {
                order_id: order.into(),
                parties: Some(ev::OrderParties {
                    member_id: member.trim_start_matches("members/").into(),
                    channel: "online".into(),
                    ..Default::default()
                }),
                amount: eur(minor),
                pay_time: Some(retail_kit::convert::timestamp(Utc::now())),
                ..Default::default()
            }
            .encode_to_vec(),
        }),
        ..Default::default()
    }
}

/// Applies `events` as the consumer does, in one write transaction, then what the
/// handler runs after the commit; true if the handler changed anything.
async fn apply_order_events(app: &TestApp, events: Vec<retail_proto::events::EventEnvelope>) -> bool {
    use retail_kit::events::EventHandler;
    let handler = retail_membership::OrderEvents::new(app.state.clone().unwrap());
    let txn = retail_kit::db::begin_write(&app.db).await.unwrap();
    let events: Vec<_> = events.iter().collect();
    let then = handler.handle(&txn, &events).await.unwrap();
    txn.commit().await.unwrap();
    let changed = !then.is_empty();
    for after in then {
        after.await;
    }
    changed
}

/// An `OrderPaid` applied from the orders log credits the member once: again from
/// the log, or after the admin RPC recorded the same order, it changes nothing.
#[tokio::test]
async fn an_order_paid_over_the_log_twice_or_after_the_admin_rpc_earns_once() {
    let app = spawn_app().await;
    let m = member(&app, "+4916000000016").await;
    let apply = |order: &str, minor: i64| apply_order_events(&app, vec![order_paid(&m, order, minor)]);
    assert!(apply("log-1", 12_345).await, "the first application records it");
    assert!(!apply("log-1", 12_345).await, "the second changes nothing");
    assert_eq!(balance(&app, &m).await.balance, 123);

    pay(&app, &m, "admin-1", 10_000, 0).await;
    assert!(!apply("admin-1", 10_000).await);
    assert_eq!(balance(&app, &m).await.balance, 223);
    assert_eq!(entries_sum(&app, &m).await, 223);
}

/// An order already recorded that comes again in a batch beside a new payment of the
/// same member is read twice (as recorded, and in the member's spend window) but
/// counts once towards the qualifying spend.
#[tokio::test]
async fn a_recorded_order_that_comes_again_in_a_batch_counts_once_towards_the_tier() {
    let app = spawn_app().await;
    let m = member(&app, "+4916000000032").await;
    assert!(apply_order_events(&app, vec![order_paid(&m, "again-1", 30_000)]).await);
    // 300.00 and 150.00 stay below silver's 500.00; 300.00 counted twice would not.
    assert!(
        apply_order_events(
            &app,
            vec![order_paid(&m, "again-1", 30_000), order_paid(&m, "again-2", 15_000)]
        )
        .await
    );
    assert_eq!(app.identify(phone("+4916000000032")).await.unwrap().tier, "regular");
    assert_eq!(balance(&app, &m).await.balance, 450);
}

/// Payments applied from the log in one batch (two members, a tier reached
/// mid-batch, an order twice) come to exactly what applying them one by one does.
#[tokio::test]
async fn a_batch_of_payments_comes_to_what_applying_them_one_by_one_does() {
    let app = spawn_app().await;
    let phones = ["+4916000000017", "+4916000000018", "+4916000000019", "+4916000000020"];
    let mut names = Vec::new();
    for p in phones {
        names.push(member(&app, p).await);
    }
    let events = |x: &str, y: &str, tag: &str| {
        vec![
            order_paid(x, &format!("{tag}-1"), 40_000),
            order_paid(y, &format!("{tag}-2"), 5_000),
            // Reaches gold after earning at the regular rate ...
            order_paid(x, &format!("{tag}-3"), 260_000),
            // ... so this one earns at gold's x1.5.
            order_paid(x, &format!("{tag}-4"), 10_000),
            order_paid(x, &format!("{tag}-1"), 40_000),
            order_paid(y, &format!("{tag}-5"), 7_000),
        ]
    };
    assert!(apply_order_events(&app, events(&names[0], &names[1], "batch")).await);
    for event in events(&names[2], &names[3], "single") {
        apply_order_events(&app, vec![event]).await;
    }
    let tier = |i: usize| {
        let app = &app;
        async move { app.identify(phone(phones[i])).await.unwrap().tier }
    };
    for (batched, single) in [(0, 2), (1, 3)] {
        let (b, s) = (
            balance(&app, &names[batched]).await,
            balance(&app, &names[single]).await,
        );
        assert_eq!((b.balance, b.debt), (s.balance, s.debt));
        assert_eq!(b.lots.len(), s.lots.len());
        assert_eq!(entries_sum(&app, &names[batched]).await, b.balance);
        assert_eq!(tier(batched).await, tier(single).await);
    }
    assert_eq!(balance(&app, &names[0]).await.balance, 400 + 2_600 + 150);
    assert_eq!(balance(&app, &names[1]).await.balance, 50 + 70);
    assert_eq!(tier(0).await, "gold");
    assert_eq!(tier(1).await, "regular");
}

/// A batch of payments of more members than one statement writes (a hundred)
/// credits every one of them, once.
#[tokio::test]
async fn a_batch_of_payments_for_more_members_than_one_statement_writes_credits_each_once() {
    let app = spawn_app().await;
    let mut names = Vec::new();
    for i in 0..105 {
        names.push(member(&app, &format!("+491610000{i:04}")).await);
    }
    let events: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, m)| order_paid(m, &format!("wide-{i}"), 10_000 + 100 * i as i64))
        .collect();
    assert!(apply_order_events(&app, events.clone()).await);
    assert!(
        !apply_order_events(&app, events).await,
        "applied again, it changes nothing"
    );
    for (i, m) in names.iter().enumerate() {
        let expected = 100 + i as i64;
        assert_eq!(balance(&app, m).await.balance, expected, "member {i}");
        assert_eq!(entries_sum(&app, m).await, expected, "member {i}");
    }
}

/// The batch guard counts the members still at the version read, so the consumer can
/// tell a batch that one member's change overtook (fewer matched than written: the
/// batch rolls back as ABORTED) from one that took effect for every member. Were it
/// to count only "some", that member's credit would be lost or given twice.
#[tokio::test]
async fn the_batch_guard_matches_only_the_members_still_at_the_version_read() {
    use retail_kit::db::GuardedWrite;
    use retail_membership::store::{self, loyalty::Credited};
    use sea_orm::TransactionTrait;

    let app = spawn_app().await;
    let ids: Vec<String> = [
        member(&app, "+4916100009001").await,
        member(&app, "+4916100009002").await,
    ]
    .iter()
    .map(|name| name.trim_start_matches("members/").to_owned())
    .collect();
    let mut read = Vec::new();
    for id in &ids {
        read.push(store::find_member(&app.db, id).await.unwrap().unwrap());
    }
    let credit = |stale: bool| -> Vec<Credited<'_>> {
        read.iter()
            .enumerate()
            .map(|(i, m)| Credited {
                member_id: &m.id,
                // The second member as if it changed after the read.
                version: if stale && i == 1 { m.version - 1 } else { m.version },
                credit: 7,
                repaid: 0,
                tier: &m.tier,
            })
            .collect()
    };
    let backend = app.db.get_database_backend();
    for (stale, expected) in [(true, 1), (false, 2)] {
        let txn = app.db.begin().await.unwrap();
        let matched = GuardedWrite::new(store::loyalty::credit_at_versions(backend, &credit(stale), Utc::now()))
            .run_in(&txn)
            .await
            .unwrap();
        assert_eq!(matched, expected, "stale: {stale}");
        txn.rollback().await.unwrap();
    }
    for m in &read {
        let now = store::find_member(&app.db, &m.id).await.unwrap().unwrap();
        assert_eq!(
            (now.points_balance, now.version),
            (m.points_balance, m.version),
            "rolled back"
        );
    }
}

async fn record_purchase(
    app: &TestApp,
    member: &str,
    order: &str,
    minor: i64,
    refund: bool,
    request_id: &str,
) -> Result<pb::RecordPurchaseResponse, tonic::Status> {
    loyalty(app)
        .record_purchase(with_token(
            &loyalty_token(),
            pb::RecordPurchaseRequest {
                name: member.into(),
                purchase: Some(pb::Purchase {
                    order_id: order.into(),
                    amount: eur(minor),
                    occur_time: None,
                    channel: "store".into(),
                }),
                refund,
                request_id: request_id.into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

/// Every read of `member` a client makes answers (none is INTERNAL).
async fn readable(app: &TestApp, member: &str, phone_number: &str) {
    let mut client = app.client();
    client
        .get_member(authed(pb::GetMemberRequest {
            name: member.into(),
            read_mask: None,
        }))
        .await
        .unwrap();
    app.identify(phone(phone_number)).await.unwrap();
    client
        .export_member(authed(pb::ExportMemberRequest { name: member.into() }))
        .await
        .unwrap();
    client
        .list_members(authed(pb::ListMembersRequest {
            page_size: 50,
            ..Default::default()
        }))
        .await
        .unwrap();
    balance(app, member).await;
    entries_sum(app, member).await;
    redeem(app, member, 1).await.unwrap();
}

/// Amounts are bounded like the suite's prices (`MAX_AMOUNT_MINOR`): any amount up
/// to 2^63-1 used to be accepted, and some fifty of them overflowed the balance
/// into a REAL that made the member unreadable for good.
#[tokio::test]
async fn purchase_and_refund_amounts_outside_one_to_the_shared_bound_are_refused() {
    use retail_kit::money::MAX_AMOUNT_MINOR;
    let app = spawn_app().await;
    let m = member(&app, "+4916000000091").await;
    for (i, minor) in [i64::MIN, -1, 0, MAX_AMOUNT_MINOR + 1, i64::MAX]
        .into_iter()
        .enumerate()
    {
        for refund in [false, true] {
            let err = record_purchase(&app, &m, &format!("huge-{i}"), minor, refund, &format!("r-{i}"))
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "amount {minor} (refund: {refund})");
            assert_eq!(
                violated_fields(&err),
                ["purchase.amount.amount_minor"],
                "amount {minor}"
            );
        }
    }
    let at_bound = record_purchase(&app, &m, "at-bound", MAX_AMOUNT_MINOR, false, "")
        .await
        .unwrap();
    assert_eq!(at_bound.points_change, MAX_AMOUNT_MINOR / 100, "one point per euro");
    let refunded = record_purchase(&app, &m, "at-bound", MAX_AMOUNT_MINOR, true, "refund-all")
        .await
        .unwrap();
    assert_eq!(refunded.points_change, -(MAX_AMOUNT_MINOR / 100));
    record_purchase(&app, &m, "after", 10_000, false, "").await.unwrap();
    readable(&app, &m, "+4916000000091").await;
}

/// Sets a member's balance directly, as if after many large purchases.
async fn set_balance(app: &TestApp, member: &str, points: i64) -> Result<(), sea_orm::DbErr> {
    use sea_orm::ConnectionTrait;
    let backend = app.db.get_database_backend();
    let id = member.trim_start_matches("members/").to_owned();
    let sql = match backend {
        sea_orm::DatabaseBackend::Postgres => "UPDATE members SET points_balance = $1 WHERE id = $2",
        _ => "UPDATE members SET points_balance = ? WHERE id = ?",
    };
    app.db
        .execute_raw(sea_orm::Statement::from_sql_and_values(
            backend,
            sql,
            [points.into(), id.into()],
        ))
        .await
        .map(|_| ())
}

/// The balance has a cap (`MAX_POINTS`) the database enforces too: a credit from the
/// orders log that would pass it is cut to what fits, an absurd order amount is
/// refused without wedging the consumer, a grant that would pass it is refused, and
/// the member stays readable throughout.
#[tokio::test]
async fn no_credit_takes_the_balance_past_its_cap_and_an_absurd_order_amount_does_not_wedge_the_consumer() {
    use retail_membership::domain::points::MAX_POINTS;
    let app = spawn_app().await;
    let m = member(&app, "+4916000000092").await;
    set_balance(&app, &m, MAX_POINTS - 10).await.unwrap();
    // 10,000 points earned, 10 fit.
    assert!(apply_order_events(&app, vec![order_paid(&m, "cap-1", 1_000_000)]).await);
    assert_eq!(balance(&app, &m).await.balance, MAX_POINTS);
    // An absurd amount beside an ordinary payment: the batch applies, the amount is
    // refused, the balance stays at its cap.
    apply_order_events(
        &app,
        vec![order_paid(&m, "absurd", i64::MAX), order_paid(&m, "cap-2", 100)],
    )
    .await;
    assert_eq!(balance(&app, &m).await.balance, MAX_POINTS);
    let grant = loyalty(&app)
        .grant_points(with_token(
            &loyalty_token(),
            pb::GrantPointsRequest {
                name: m.clone(),
                points: 5,
                reason: "goodwill".into(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(grant.code(), Code::FailedPrecondition);
    let paid = record_purchase(&app, &m, "cap-3", 10_000, false, "").await.unwrap();
    assert_eq!(paid.points_change, 0, "nothing fits above the cap");
    assert!(
        set_balance(&app, &m, MAX_POINTS + 1).await.is_err(),
        "the database refuses a balance above the cap"
    );
    assert!(set_balance(&app, &m, i64::MAX).await.is_err());
    assert!(set_balance(&app, &m, i64::MIN).await.is_err());
    readable(&app, &m, "+4916000000092").await;
    assert_eq!(balance(&app, &m).await.balance, MAX_POINTS - 1);
}

/// RecordPurchase checks its request id like every request id (1-128 printable
/// characters) with or without `refund`: a refund's id with a NUL, and a payment's
/// id of a megabyte, used to be accepted.
#[tokio::test]
async fn a_purchase_request_id_with_control_characters_or_over_128_characters_is_refused_with_or_without_refund() {
    let app = spawn_app().await;
    let m = member(&app, "+4916000000093").await;
    pay(&app, &m, "rid-1", 10_000, 0).await;
    for (refund, order, request_id) in [
        (true, "rid-1", "refund\0one".to_string()),
        (true, "rid-1", "refund\none".to_string()),
        (true, "rid-1", "x".repeat(129)),
        (false, "rid-2", "x".repeat(1 << 20)),
        (false, "rid-2", "pay\u{7}".to_string()),
        (false, "rid-2", "x".repeat(129)),
    ] {
        let err = record_purchase(&app, &m, order, 1_000, refund, &request_id)
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "request id of {} bytes",
            request_id.len()
        );
        assert_eq!(violated_fields(&err), ["request_id"]);
    }
    assert_eq!(balance(&app, &m).await.balance, 100, "nothing was recorded");
    record_purchase(&app, &m, "rid-2", 1_000, false, "pay-rid-2")
        .await
        .unwrap();
    record_purchase(&app, &m, "rid-1", 1_000, true, "refund-rid-1")
        .await
        .unwrap();
    assert_eq!(balance(&app, &m).await.balance, 100);
}
