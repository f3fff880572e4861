//! Orders' own integration tests: the gRPC server on port 0 against a fresh database
//! (PostgreSQL when `RETAIL_TEST_DATABASE_URL` is set), with catalog and membership
//! faked in process, so every downstream answer and failure is chosen by the test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

mod fakes;
mod helpers;

use helpers::*;
use retail_proto::orders::{self as pb};
use tonic::Code;

#[tokio::test]
async fn placing_prices_with_the_members_tier_reserves_for_the_payment_window_and_paying_commits() {
    let app = spawn_app().await;
    let mut order = order_of(&[("A", 2), ("B", 1)]);
    order.member = format!("members/{GOLD_MEMBER}");
    let placed = app.place(order, "cart-1").await.unwrap();
    assert_eq!(placed.state, pb::OrderState::PendingPayment as i32);
    assert_eq!(placed.total, eur(2 * 1_000 + 2_500));
    assert_eq!(placed.member_tier, "gold");
    let id = placed.name.trim_start_matches("orders/").to_owned();
    assert_eq!(app.fakes.world().quoted_tiers, ["gold"]);
    assert_eq!(app.fakes.calls_of("reserve"), [format!("reserve {id}")]);
    assert_eq!(app.fakes.world().sellable["A"], 8);
    let paid = app.pay(&placed).await.unwrap();
    assert_eq!(paid.state, pb::OrderState::Paid as i32);
    assert_eq!(app.fakes.calls_of("commit"), [format!("commit {id}")]);
    // The same request id answers the same order, without a second reservation.
    let again = app.place(order_of(&[("A", 2), ("B", 1)]), "cart-1").await;
    assert_eq!(
        again.unwrap_err().code(),
        Code::InvalidArgument,
        "another request under the same id"
    );
    assert_eq!(app.fakes.calls_of("reserve").len(), 1);
}

#[tokio::test]
async fn a_sku_catalog_does_not_know_is_named_from_catalogs_error_details() {
    // Regression: the SKU was cut out of catalog's message text.
    let app = spawn_app().await;
    let err = app.place(order_of(&[("A", 1), ("NOPE-1", 1)]), "").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("skus/NOPE-1"), "{err:?}");
    assert!(app.fakes.calls_of("reserve").is_empty(), "nothing reserved");
}

#[tokio::test]
async fn an_unknown_member_is_not_found_and_nothing_is_reserved() {
    let app = spawn_app().await;
    let mut order = order_of(&[("A", 1)]);
    order.member = "members/0190f5b2-8d3e-7c41-9a6b-000000000000".into();
    let err = app.place(order, "").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(app.fakes.calls_of("reserve").is_empty());
}

#[tokio::test]
async fn a_reservation_catalog_refuses_fails_the_placement_and_is_compensated() {
    let app = spawn_app().await;
    let err = app.place(order_of(&[("B", 6)]), "too-many").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    // Compensation asked catalog to release whatever the order id held (the sweeper
    // may ask again: a release is idempotent), and nothing is held.
    assert!(!app.fakes.calls_of("release").is_empty());
    assert_eq!(app.fakes.world().sellable["B"], 5);
    let listed = app
        .client
        .clone()
        .list_orders(authed(pb::ListOrdersRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.orders.is_empty());
}

#[tokio::test]
async fn a_cancelled_paid_order_returns_its_units_once_even_when_catalog_fails_first() {
    let app = spawn_app().await;
    let placed = app.place(order_of(&[("A", 3)]), "").await.unwrap();
    app.pay(&placed).await.unwrap();
    assert_eq!(app.fakes.world().sellable["A"], 7);
    app.fakes.world().failures.push(("get_reservation", Code::Unavailable));
    app.fakes.world().failures.push(("return_stock", Code::Unavailable));
    let cancelled = app.cancel(&placed).await.unwrap();
    assert_eq!(cancelled.state, pb::OrderState::Cancelled as i32);
    assert_eq!(cancelled.refunded, eur(3_000));
    // The sweeper keeps at it until catalog has taken the units back, once.
    app.eventually("the units are back", |w| w.sellable["A"] == 10).await;
    let id = placed.name.trim_start_matches("orders/");
    assert_eq!(app.fakes.world().returns, [format!("cancel-{id}")]);
}

#[tokio::test]
async fn a_cancelled_unpaid_order_releases_its_reservation() {
    let app = spawn_app().await;
    let placed = app.place(order_of(&[("B", 2)]), "").await.unwrap();
    assert_eq!(app.fakes.world().sellable["B"], 3);
    app.cancel(&placed).await.unwrap();
    app.eventually("the reservation is released", |w| w.sellable["B"] == 5)
        .await;
    assert!(app.fakes.world().returns.is_empty(), "nothing was shipped out");
}

#[tokio::test]
async fn numeric_extremes_and_bad_names_are_field_violations() {
    let app = spawn_app().await;
    for quantity in [i64::MIN, i64::MIN + 1, -1, 0, 10_001, i64::MAX] {
        let err = app.place(order_of(&[("A", quantity)]), "").await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{quantity}");
        assert_eq!(violated_fields(&err), ["order.lines[0].quantity"], "{quantity}");
    }
    let mut order = order_of(&[("a b", 1)]);
    order.member = "members/42".into();
    order.channel = i32::MAX;
    let err = app.place(order, "").await.unwrap_err();
    let mut fields = violated_fields(&err);
    fields.sort();
    assert_eq!(fields, ["order.channel", "order.lines[0].sku", "order.member"]);
    let err = app
        .client
        .clone()
        .list_orders(authed(pb::ListOrdersRequest {
            page_size: i32::MIN,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    for amount in [i64::MIN, i64::MAX] {
        let placed = app.place(order_of(&[("A", 1)]), "").await.unwrap();
        let err = app
            .client
            .clone()
            .pay_order(authed(pb::PayOrderRequest {
                name: placed.name.clone(),
                payment: Some(pb::Payment {
                    reference: "psp".into(),
                    amount: eur(amount),
                    pay_time: None,
                }),
                request_id: String::new(),
            }))
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&err), ["payment.amount"], "{amount}");
    }
    assert!(app.fakes.calls_of("commit").is_empty());
}

fn partner_order(lines: &[(&str, i64)]) -> pb::Order {
    let mut order = order_of(lines);
    order.channel = pb::OrderChannel::Partner as i32;
    order.partner_id = "acme".into();
    order
}

#[tokio::test]
async fn without_partner_pricing_a_partner_sale_is_priced_as_a_consumer_sale_and_special_discounts_are_refused() {
    let app = spawn_app().await;
    let placed = app.place(partner_order(&[("A", 2)]), "p-1").await.unwrap();
    assert_eq!(placed.total, eur(2 * 1_000));
    assert!(placed.lines[0].discounts.is_empty());
    assert_eq!(placed.partner_level, "");
    let mut special = partner_order(&[("A", 1)]);
    special.special_discount = "partners/acme/specialDiscounts/0190f5b2-8d3e-7c41-9a6b-2f0e1d3c4b5a".into();
    let err = app.place(special, "p-2").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(
        app.fakes.calls_of("reserve").len(),
        1,
        "the refused order reserved nothing"
    );
}

#[tokio::test]
async fn a_partner_sale_that_channel_partner_cannot_price_is_unavailable_and_nothing_is_written() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let app = spawn_app_priced_by(|_| {}, Some(closed)).await;
    let err = app.place(partner_order(&[("A", 1)]), "p-1").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(app.fakes.calls_of("reserve").is_empty(), "nothing reserved");
    let listed = app
        .client
        .clone()
        .list_orders(authed(pb::ListOrdersRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.orders.is_empty(), "an order was written: {listed:?}");
    // Consumer sales never ask channel-partner.
    let online = app.place(order_of(&[("A", 1)]), "o-1").await.unwrap();
    assert_eq!(online.total, eur(1_000));
}

#[tokio::test]
async fn a_special_discount_of_another_partner_or_on_a_consumer_sale_is_a_field_violation() {
    let app = spawn_app().await;
    let mut other = partner_order(&[("A", 1)]);
    other.special_discount = "partners/globex/specialDiscounts/0190f5b2-8d3e-7c41-9a6b-2f0e1d3c4b5a".into();
    let err = app.place(other, "").await.unwrap_err();
    assert_eq!(
        retail_testkit::tokens::violated_fields(&err),
        ["order.special_discount"]
    );
    let mut online = order_of(&[("A", 1)]);
    online.special_discount = "partners/acme/specialDiscounts/0190f5b2-8d3e-7c41-9a6b-2f0e1d3c4b5a".into();
    let err = app.place(online, "").await.unwrap_err();
    assert_eq!(
        retail_testkit::tokens::violated_fields(&err),
        ["order.special_discount"]
    );
}

fn customer(display_name: &str, region: &str, tax_id: &str) -> Option<pb::Customer> {
    Some(pb::Customer {
        display_name: display_name.into(),
        region: region.into(),
        tax_id: tax_id.into(),
    })
}

#[tokio::test]
async fn an_end_customer_is_validated_partner_sales_only_and_stored_without_a_lock_check_when_channel_partner_is_off() {
    let app = spawn_app().await;
    let mut order = partner_order(&[("A", 1)]);
    order.customer = customer(" ", "", &"9".repeat(33));
    let err = app.place(order, "").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let mut fields = violated_fields(&err);
    fields.sort();
    assert_eq!(
        fields,
        [
            "order.customer.display_name",
            "order.customer.region",
            "order.customer.tax_id"
        ]
    );
    let mut order = partner_order(&[("A", 1)]);
    order.customer = customer(&"n".repeat(201), &"r".repeat(33), "");
    let mut fields = violated_fields(&app.place(order, "").await.unwrap_err());
    fields.sort();
    assert_eq!(fields, ["order.customer.display_name", "order.customer.region"]);
    let mut online = order_of(&[("A", 1)]);
    online.customer = customer("Acme Pumps", "north", "");
    let err = app.place(online, "").await.unwrap_err();
    assert_eq!(violated_fields(&err), ["order.customer"]);
    assert!(app.fakes.calls_of("reserve").is_empty(), "nothing reserved");

    // Without channel-partner there is no lock to ask: the order is placed and
    // keeps its customer.
    let mut order = partner_order(&[("A", 1)]);
    order.customer = customer("  Acme Pumps ", "north", "DE 123");
    let placed = app.place(order, "p-1").await.unwrap();
    assert_eq!(placed.customer, customer("Acme Pumps", "north", "DE 123"));
    let read = app
        .client
        .clone()
        .get_order(authed(pb::GetOrderRequest {
            name: placed.name.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.customer, placed.customer);
    let plain = app.place(partner_order(&[("A", 1)]), "p-2").await.unwrap();
    assert_eq!(plain.customer, None);
}

#[tokio::test]
async fn a_partner_sale_naming_a_customer_when_channel_partner_is_unreachable_is_unavailable_and_nothing_is_written() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let app = spawn_app_priced_by(|_| {}, Some(closed)).await;
    let mut order = partner_order(&[("A", 1)]);
    order.customer = customer("Acme Pumps", "north", "");
    let err = app.place(order, "p-1").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(app.fakes.calls_of("reserve").is_empty(), "nothing reserved");
    let listed = app
        .client
        .clone()
        .list_orders(authed(pb::ListOrdersRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.orders.is_empty(), "an order was written: {listed:?}");
}
