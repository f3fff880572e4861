//! What orders' event log does here: attributed sales move targets, levels and
//! points, each payment and refund exactly once, also across a restart of the
//! consumer.

use chrono::{Datelike, Duration, TimeZone, Utc};
use retail_channel_partner::{Applied, Sale};
use retail_proto::partner::{self as pb};

use crate::helpers::*;

fn month_start() -> String {
    let now = Utc::now();
    format!("{:04}-{:02}-01", now.year(), now.month())
}

#[tokio::test]
async fn paid_partner_orders_move_progress_and_points_of_the_partner_and_its_rep_and_attain_the_target() {
    let app = spawn_app().await;
    app.active("acme").await;
    let rep = app.rep("acme", "0190f5b2-8d3e-7c41-9a6b-00000000000a").await;
    let rep_id = rep.name.trim_start_matches("salesReps/").to_owned();
    let target = app
        .target("partners/acme", pb::PeriodKind::Month, &month_start(), 100_00)
        .await
        .unwrap();
    let rep_target = app
        .target(&rep.name, pb::PeriodKind::Month, &month_start(), 50_00)
        .await
        .unwrap();
    let now = Utc::now();
    app.orders.paid("o-1", "acme", &rep_id, 60_00, now).await;
    // The rep may also be named by the identity user id.
    app.orders
        .paid("o-2", "acme", "0190f5b2-8d3e-7c41-9a6b-00000000000a", 50_00, now)
        .await;
    // Orders of other partners, channels or unknown partners count nowhere here.
    app.orders.paid("o-3", "ghost", "", 70_00, now).await;
    let t = app
        .eventually(
            "both orders counted",
            || app.get_target(&target.name),
            |t| t.progress_minor == 110_00,
        )
        .await;
    assert_eq!(t.attainment_bp, 11_000);
    assert!(t.attain_time.is_some());
    let r = app.get_target(&rep_target.name).await;
    assert_eq!(r.progress_minor, 110_00, "both orders name the rep");
    // Registered level, x1: one point per unit, on both ledgers.
    assert_eq!(app.ledger("partners/acme/ledger").await.balance, 110);
    assert_eq!(app.ledger(&format!("{}/ledger", rep.name)).await.balance, 110);
}

#[tokio::test]
async fn an_order_event_delivered_twice_counts_once_across_a_restart_of_the_consumer() {
    let mut app = spawn_app().await;
    app.active("acme").await;
    let target = app
        .target("partners/acme", pb::PeriodKind::Month, &month_start(), 1_000_00)
        .await
        .unwrap();
    let now = Utc::now();
    app.orders.paid("o-1", "acme", "", 100_00, now).await;
    app.eventually(
        "the payment counted",
        || app.get_target(&target.name),
        |t| t.progress_minor == 100_00,
    )
    .await;
    app.restart().await;
    // The same payment published again (a redelivery), then a new one: after the
    // restart the consumer resumes from its stored position; the redelivered
    // payment is recognised by its order.
    app.orders.paid("o-1", "acme", "", 100_00, now).await;
    app.orders.paid("o-2", "acme", "", 5_00, now).await;
    app.orders.refunded("o-1", "r-1", "acme", "", 40_00, now).await;
    app.orders.refunded("o-1", "r-1", "acme", "", 40_00, now).await;
    let t = app
        .eventually(
            "the new payment counted",
            || app.get_target(&target.name),
            |t| t.progress_minor == 65_00,
        )
        .await;
    assert_eq!(t.progress_minor, 100_00 + 5_00 - 40_00);
    app.restart().await;
    app.orders.paid("o-3", "acme", "", 1_00, now).await;
    app.eventually(
        "after a second restart",
        || app.get_target(&target.name),
        |t| t.progress_minor == 66_00,
    )
    .await;
    // 100 + 5 + 1 earned, 40 reversed.
    assert_eq!(app.ledger("partners/acme/ledger").await.balance, 66);
    // And straight through the app: the same sale again is a duplicate.
    let sale = Sale {
        order_id: "o-2".into(),
        reference: String::new(),
        refund: false,
        partner_id: "acme".into(),
        sales_rep: String::new(),
        currency: "EUR".into(),
        amount_minor: 5_00,
        at: now,
    };
    assert_eq!(app.app.record_sale(&sale).await.unwrap(), Applied::Duplicate);
}

#[tokio::test]
async fn crossing_a_threshold_upgrades_at_once_and_a_drop_downgrades_one_level_only_at_reevaluation() {
    let app = spawn_app().await;
    app.active("acme").await;
    let at = Utc::now();
    let sale = |id: &str, amount_minor: i64, refund: bool| Sale {
        order_id: id.into(),
        reference: if refund { format!("return-{id}") } else { String::new() },
        refund,
        partner_id: "acme".into(),
        sales_rep: String::new(),
        currency: "EUR".into(),
        amount_minor,
        at,
    };
    // Just below silver (50,000.00): still registered.
    app.app.record_sale(&sale("o-1", 49_999_99, false)).await.unwrap();
    assert_eq!(app.partner("acme").await.level, "registered");
    // One cent more: silver at once. A big sale then jumps to platinum.
    app.app.record_sale(&sale("o-2", 1, false)).await.unwrap();
    assert_eq!(app.partner("acme").await.level, "silver");
    app.app.record_sale(&sale("o-3", 500_000_00, false)).await.unwrap();
    assert_eq!(app.partner("acme").await.level, "platinum");
    // Points of the big sale at platinum's x2.
    let ledger = app.ledger("partners/acme/ledger").await;
    // 49,999 at x1, nothing for the cent, 1,000,000 at x2.
    assert_eq!(ledger.balance, 49_999 + 1_000_000);
    // Refunded in full: sales fall to silver's range, but a refund never
    // downgrades.
    app.app.record_sale(&sale("o-3", 500_000_00, true)).await.unwrap();
    assert_eq!(app.partner("acme").await.level, "platinum");
    // The re-evaluation moves it down by one level at a time.
    let changed = app.app.reevaluate_levels(at).await.unwrap();
    assert_eq!(changed, 1);
    assert_eq!(app.partner("acme").await.level, "gold");
    app.app.reevaluate_levels(at).await.unwrap();
    assert_eq!(app.partner("acme").await.level, "silver");
    assert_eq!(
        app.app.reevaluate_levels(at).await.unwrap(),
        0,
        "silver is still earned"
    );
    // A year on, the sales have left the window.
    let later = at + Duration::days(400);
    app.app.reevaluate_levels(later).await.unwrap();
    assert_eq!(app.partner("acme").await.level, "registered");
    let changes = app
        .client()
        .list_level_changes(authed(pb::ListLevelChangesRequest {
            parent: "partners/acme".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .level_changes;
    let seen: Vec<_> = changes
        .iter()
        .map(|c| (c.to_level.as_str(), c.reason.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("silver", "sales"),
            ("platinum", "sales"),
            ("gold", "reevaluation"),
            ("silver", "reevaluation"),
            ("registered", "reevaluation"),
        ]
    );
    assert_eq!(changes[0].trailing_sales_minor, 50_000_00);
}

#[tokio::test]
async fn a_refund_of_an_order_whose_points_were_redeemed_leaves_debt_that_later_earnings_repay() {
    let app = spawn_app().await;
    app.active("acme").await;
    let at = Utc::now();
    let sale = |id: &str, reference: &str, amount_minor: i64, refund: bool| Sale {
        order_id: id.into(),
        reference: reference.into(),
        refund,
        partner_id: "acme".into(),
        sales_rep: String::new(),
        currency: "EUR".into(),
        amount_minor,
        at,
    };
    app.app.record_sale(&sale("o-1", "", 1_000_00, false)).await.unwrap();
    let item = app
        .incentives()
        .create_catalog_item(authed(pb::CreateCatalogItemRequest {
            catalog_item: Some(pb::CatalogItem {
                category: pb::CatalogCategory::Service as i32,
                display_name: "Service credit".into(),
                points_price: 900,
                unlimited_stock: true,
                ..Default::default()
            }),
        }))
        .await
        .unwrap()
        .into_inner();
    app.incentives()
        .request_redemption(authed(pb::RequestRedemptionRequest {
            parent: "partners/acme/ledger".into(),
            redemption: Some(pb::Redemption {
                catalog_item: item.name,
                quantity: 1,
                ..Default::default()
            }),
            request_id: String::new(),
        }))
        .await
        .unwrap();
    // 1,000 earned, 900 redeemed; half the order refunded reverses 500: 100 from
    // the balance, 400 as debt.
    app.app
        .record_sale(&sale("o-1", "return-a", 500_00, true))
        .await
        .unwrap();
    let ledger = app.ledger("partners/acme/ledger").await;
    assert_eq!((ledger.balance, ledger.debt), (0, 400));
    // Another 30% refunded: 300 more debt (proportional, adding up exactly).
    app.app
        .record_sale(&sale("o-1", "return-b", 300_00, true))
        .await
        .unwrap();
    let ledger = app.ledger("partners/acme/ledger").await;
    assert_eq!((ledger.balance, ledger.debt), (0, 700));
    // A new sale of 1,000 repays the debt first.
    app.app.record_sale(&sale("o-2", "", 1_000_00, false)).await.unwrap();
    let ledger = app.ledger("partners/acme/ledger").await;
    assert_eq!((ledger.balance, ledger.debt), (300, 0));
}

#[tokio::test]
async fn expired_lots_are_written_off_and_leave_the_balance() {
    let app = spawn_app().await;
    app.active("acme").await;
    let at = Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).unwrap();
    app.app
        .record_sale(&Sale {
            order_id: "o-1".into(),
            reference: String::new(),
            refund: false,
            partner_id: "acme".into(),
            sales_rep: String::new(),
            currency: "EUR".into(),
            amount_minor: 123_00,
            at,
        })
        .await
        .unwrap();
    assert_eq!(
        app.app
            .expire_points(Utc.with_ymd_and_hms(2027, 1, 31, 0, 0, 0).unwrap())
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        app.app
            .expire_points(Utc.with_ymd_and_hms(2027, 2, 1, 0, 0, 0).unwrap())
            .await
            .unwrap(),
        1
    );
    let ledger = app.ledger("partners/acme/ledger").await;
    assert_eq!(ledger.balance, 0);
}
