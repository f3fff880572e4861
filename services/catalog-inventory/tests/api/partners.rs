//! What partner principals can read. Identity gives partner users and API keys at
//! most `catalog.read` of catalog-inventory's scopes, and catalog does not know which
//! partner an order belongs to: so reservations and the stock audit trail (which
//! name order ids and staff) are not theirs to read, and staff identities are not
//! shown to them anywhere.

use retail_kit::auth::PrincipalKind;
use retail_proto::catalog::{self as pb};
use retail_testkit::tokens::{claims, sign};
use tonic::Code;

use crate::helpers::*;

/// Every scope identity lets a partner principal hold.
const PARTNER_SCOPES: &[&str] = &[
    "catalog.read",
    "orders.read",
    "orders.write",
    "partner.read",
    "partner.write",
];

fn partner_token(kind: PrincipalKind, subject: &str, partner: &str) -> String {
    sign(&claims(subject, kind, PARTNER_SCOPES, Some(partner)))
}

fn reservation(order: &str) -> String {
    format!("reservations/{order}")
}

/// Partner B's orders as catalog holds them: one shipped and partly returned, one
/// still held. Staff changed a listing.
async fn stock_with_partner_b_orders(app: &TestApp) {
    app.warehouse("W1", 0).await;
    app.skus(&["P-1"]).await;
    app.receive("P-1", "W1", 10).await;
    app.reserve("order-of-b-shipped", &[("P-1", 3)]).await.unwrap();
    app.inventory()
        .commit_reservation(authed(pb::CommitReservationRequest {
            name: reservation("order-of-b-shipped"),
        }))
        .await
        .unwrap();
    app.inventory()
        .return_stock(authed(pb::ReturnStockRequest {
            name: reservation("order-of-b-shipped"),
            lines: vec![pb::ReservationLine {
                sku: "skus/P-1".into(),
                quantity: 1,
            }],
            damaged: true,
            request_id: "return-1".into(),
        }))
        .await
        .unwrap();
    app.reserve("order-of-b-held", &[("P-1", 2)]).await.unwrap();
    app.catalog()
        .set_listing(authed(pb::SetListingRequest {
            sku: "skus/P-1".into(),
            channel: pb::SalesChannel::Partner as i32,
            listed: true,
            reason: "partner launch".into(),
        }))
        .await
        .unwrap();
}

/// Fails if `answer` shows one of partner B's order ids or a staff identity.
fn shows_nothing_of_b(rpc: &str, answer: &impl std::fmt::Debug) {
    let text = format!("{answer:?}");
    for secret in ["order-of-b", "staff-1"] {
        assert!(!text.contains(secret), "{rpc} shows {secret}: {text}");
    }
}

#[tokio::test]
async fn a_partner_reads_no_reservation_movement_or_staff_identity_of_anyone_through_catalog() {
    let app = spawn_app().await;
    stock_with_partner_b_orders(&app).await;
    let product = app
        .catalog()
        .list_products(authed(pb::ListProductsRequest::default()))
        .await
        .unwrap();
    let product_name = product.into_inner().products[0].name.clone();
    for kind in [PrincipalKind::PartnerUser, PrincipalKind::PartnerSystem] {
        let a = partner_token(kind, "partner-a-user", "p-a");
        let b = partner_token(kind, "partner-b-user", "p-b");
        let mut inv = app.inventory();
        let mut cat = app.catalog();
        let mut pri = app.pricing();

        // Reservations: NOT_FOUND for every partner, exactly as for an order that
        // does not exist, whether it is the other partner's order or (as catalog
        // cannot tell) its own.
        let missing = inv
            .get_reservation(with_token(
                &a,
                pb::GetReservationRequest {
                    name: reservation("never-made"),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        for (token, order) in [
            (&a, "order-of-b-shipped"),
            (&a, "order-of-b-held"),
            (&b, "order-of-b-shipped"),
            (&b, "order-of-b-held"),
        ] {
            let err = inv
                .get_reservation(with_token(
                    token,
                    pb::GetReservationRequest {
                        name: reservation(order),
                    },
                ))
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::NotFound, "{kind:?} {order}");
            assert_eq!(
                err.message(),
                missing.message().replace("never-made", order),
                "no hint that {order} exists"
            );
        }
        // Changing another partner's reservation needs a scope partners never hold.
        let refused = [
            inv.commit_reservation(with_token(
                &a,
                pb::CommitReservationRequest {
                    name: reservation("order-of-b-held"),
                },
            ))
            .await
            .map(drop),
            inv.release_reservation(with_token(
                &a,
                pb::ReleaseReservationRequest {
                    name: reservation("order-of-b-held"),
                },
            ))
            .await
            .map(drop),
            inv.return_stock(with_token(
                &a,
                pb::ReturnStockRequest {
                    name: reservation("order-of-b-shipped"),
                    lines: vec![pb::ReservationLine {
                        sku: "skus/P-1".into(),
                        quantity: 1,
                    }],
                    damaged: false,
                    request_id: "return-by-a".into(),
                },
            ))
            .await
            .map(drop),
            inv.reserve_stock(with_token(
                &a,
                pb::ReserveStockRequest {
                    order_id: "order-of-b-held".into(),
                    lines: vec![pb::ReservationLine {
                        sku: "skus/P-1".into(),
                        quantity: 2,
                    }],
                    ttl: None,
                },
            ))
            .await
            .map(drop),
        ];
        for r in refused {
            assert_eq!(r.unwrap_err().code(), Code::PermissionDenied, "{kind:?}");
        }

        // The stock audit trail names orders and staff: not for partners.
        for token in [&a, &b] {
            let err = inv
                .list_stock_movements(with_token(
                    token,
                    pb::ListStockMovementsRequest {
                        sku: "skus/P-1".into(),
                        ..Default::default()
                    },
                ))
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::PermissionDenied, "{kind:?}");
            shows_nothing_of_b("ListStockMovements", &err);
        }

        // Everything else a partner can read shows no order of B and no staff.
        let stock = inv
            .get_stock(with_token(&a, pb::GetStockRequest { sku: "skus/P-1".into() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stock.totals.as_ref().map(|t| t.reserved), Some(2));
        shows_nothing_of_b("GetStock", &stock);
        let warehouses = inv
            .list_warehouses(with_token(&a, pb::ListWarehousesRequest {}))
            .await
            .unwrap()
            .into_inner();
        shows_nothing_of_b("ListWarehouses", &warehouses);
        let changes = cat
            .list_listing_changes(with_token(
                &a,
                pb::ListListingChangesRequest {
                    sku: "skus/P-1".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(changes.changes.len(), 1, "the change itself is shown");
        assert_eq!(changes.changes[0].actor, "", "without who made it");
        shows_nothing_of_b("ListListingChanges", &changes);
        shows_nothing_of_b(
            "GetProduct",
            &cat.get_product(with_token(
                &a,
                pb::GetProductRequest {
                    name: product_name.clone(),
                },
            ))
            .await
            .unwrap(),
        );
        shows_nothing_of_b(
            "BatchGetProducts",
            &cat.batch_get_products(with_token(
                &a,
                pb::BatchGetProductsRequest {
                    names: vec![product_name.clone()],
                },
            ))
            .await
            .unwrap(),
        );
        shows_nothing_of_b(
            "BatchGetSkus",
            &cat.batch_get_skus(with_token(
                &a,
                pb::BatchGetSkusRequest {
                    names: vec!["skus/P-1".into()],
                },
            ))
            .await
            .unwrap(),
        );
        shows_nothing_of_b(
            "ListProducts",
            &cat.list_products(with_token(&a, pb::ListProductsRequest::default()))
                .await
                .unwrap(),
        );
        shows_nothing_of_b(
            "ReconcileListings",
            &cat.reconcile_listings(with_token(
                &a,
                pb::ReconcileListingsRequest {
                    channel: pb::SalesChannel::Partner as i32,
                },
            ))
            .await
            .unwrap(),
        );
        shows_nothing_of_b(
            "ListTierDiscounts",
            &pri.list_tier_discounts(with_token(&a, pb::ListTierDiscountsRequest {}))
                .await
                .unwrap(),
        );
        shows_nothing_of_b(
            "ListPromotions",
            &pri.list_promotions(with_token(&a, pb::ListPromotionsRequest::default()))
                .await
                .unwrap(),
        );
        shows_nothing_of_b(
            "ListCompetitorAlerts",
            &pri.list_competitor_alerts(with_token(&a, pb::ListCompetitorAlertsRequest::default()))
                .await
                .unwrap(),
        );
        // No price is set: the quote is refused, and says nothing of B either.
        let quote = pri
            .quote_prices(with_token(
                &a,
                pb::QuotePricesRequest {
                    channel: pb::SalesChannel::Store as i32,
                    lines: vec![pb::QuoteLine {
                        sku: "skus/P-1".into(),
                        quantity: 1,
                    }],
                    ..Default::default()
                },
            ))
            .await;
        shows_nothing_of_b("QuotePrices", &quote);
    }

    // Staff still read all of it.
    let held = app
        .inventory()
        .get_reservation(with_token(
            &staff_token(&["catalog.read"]),
            pb::GetReservationRequest {
                name: reservation("order-of-b-held"),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(held.state, pb::ReservationState::Active as i32);
    let moves = app
        .inventory()
        .list_stock_movements(with_token(
            &staff_token(&["catalog.read"]),
            pb::ListStockMovementsRequest {
                sku: "skus/P-1".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        moves
            .movements
            .iter()
            .any(|m| m.reason == "order-of-b-shipped" && m.kind == "return")
    );
    assert!(moves.movements.iter().all(|m| m.actor == "staff-1"));
    let changes = app
        .catalog()
        .list_listing_changes(with_token(
            &staff_token(&["catalog.read"]),
            pb::ListListingChangesRequest {
                sku: "skus/P-1".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changes.changes[0].actor, "staff-1");
}
