//! Deal registration across `retail-suite up`'s wiring: a partner order naming an
//! end customer that another partner has locked is refused by orders (which asks
//! channel-partner) and writes nothing; the holder's own order, and an order
//! naming no customer, are placed. On a fresh database per service (PostgreSQL when
//! `RETAIL_TEST_DATABASE_URL` is set).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use retail_proto::orders::orders_service_client::OrdersServiceClient;
use retail_proto::orders::{self as opb};
use retail_proto::partner::deal_service_client::DealServiceClient;
use retail_proto::partner::{self as ppb};
use tonic::Code;
use tonic::transport::Channel;

mod common;
use common::{authed, channel};

struct World {
    orders: OrdersServiceClient<Channel>,
    deals: DealServiceClient<Channel>,
    admin: String,
    skus: Vec<String>,
    _suite: common::Running,
}

impl World {
    async fn start() -> Self {
        let suite = common::start("locks").await;
        let admin = suite.admin.clone();
        let skus = retail_suite::seed::seed_catalog(channel(suite.catalog), &admin, 1, 1, 1_000, 1)
            .await
            .unwrap();
        retail_suite::seed::set_partner_prices(channel(suite.catalog), &admin, "registered", &skus, "EUR", 50_00)
            .await
            .unwrap();
        World {
            orders: OrdersServiceClient::new(channel(suite.orders)),
            deals: DealServiceClient::new(channel(suite.partner)),
            admin,
            skus,
            _suite: suite,
        }
    }

    async fn place(
        &self,
        partner: &str,
        customer: Option<(&str, &str, &str)>,
        request_id: &str,
    ) -> Result<opb::Order, tonic::Status> {
        self.orders
            .clone()
            .place_order(authed(
                &self.admin,
                opb::PlaceOrderRequest {
                    order: Some(opb::Order {
                        channel: opb::OrderChannel::Partner.into(),
                        partner_id: partner.into(),
                        customer: customer.map(|(display_name, region, tax_id)| opb::Customer {
                            display_name: display_name.into(),
                            region: region.into(),
                            tax_id: tax_id.into(),
                        }),
                        lines: vec![opb::OrderLine {
                            sku: self.skus[0].clone(),
                            quantity: 1,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    request_id: request_id.into(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    async fn orders_of(&self, partner: &str) -> Vec<opb::Order> {
        self.orders
            .clone()
            .list_orders(authed(
                &self.admin,
                opb::ListOrdersRequest {
                    partner_id: partner.into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .orders
    }
}

#[tokio::test]
async fn a_partner_order_for_a_customer_locked_to_another_partner_is_refused_and_writes_nothing() {
    let w = World::start().await;
    // acme-0 locks the customer by name + region and tax id.
    let lock = w
        .deals
        .clone()
        .register_deal_lock(authed(
            &w.admin,
            ppb::RegisterDealLockRequest {
                parent: "partners/acme-0".into(),
                deal_lock: Some(ppb::DealLock {
                    subject_kind: ppb::DealSubjectKind::Customer.into(),
                    customer: Some(ppb::Customer {
                        display_name: "Initech Pumps, Ltd.".into(),
                        region: "North".into(),
                        tax_id: "DE 123.456-789".into(),
                    }),
                    ..Default::default()
                }),
                request_id: "lock-1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lock.state, ppb::DealLockState::Active as i32);

    // globex-0 sells to the same customer, spelled differently (or known only by
    // the tax id): refused, naming no holder; no order and no stock held.
    for (i, customer) in [
        ("  initech   PUMPS ltd", "north", ""),
        ("Initech Holding", "South", "de123456789"),
    ]
    .into_iter()
    .enumerate()
    {
        let err = w
            .place("globex-0", Some(customer), &format!("globex-{i}"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{customer:?}: {err:?}");
        assert!(!err.message().contains("acme"), "the holder is named: {err:?}");
    }
    assert!(w.orders_of("globex-0").await.is_empty(), "a refused order was written");

    // Another customer, and an order naming none, are globex's to sell to.
    let other = w
        .place("globex-0", Some(("Umbrella Corp", "North", "")), "globex-other")
        .await
        .unwrap();
    assert_eq!(other.customer.as_ref().unwrap().display_name, "Umbrella Corp");
    let plain = w.place("globex-0", None, "globex-plain").await.unwrap();
    assert_eq!(plain.customer, None);
    assert_eq!(w.orders_of("globex-0").await.len(), 2);

    // The holder's own order for the customer is placed and keeps the customer.
    let own = w
        .place("acme-0", Some(("initech pumps ltd", "NORTH", "")), "acme-1")
        .await
        .unwrap();
    assert_eq!(own.state, opb::OrderState::PendingPayment as i32);
    assert_eq!(
        own.customer,
        Some(opb::Customer {
            display_name: "initech pumps ltd".into(),
            region: "NORTH".into(),
            tax_id: String::new(),
        })
    );

    // Released, the customer is anyone's again.
    w.deals
        .clone()
        .release_deal_lock(authed(
            &w.admin,
            ppb::ReleaseDealLockRequest {
                name: lock.name.clone(),
                reason: "the deal fell through".into(),
            },
        ))
        .await
        .unwrap();
    w.place("globex-0", Some(("Initech Pumps Ltd", "North", "")), "globex-after")
        .await
        .unwrap();
    assert_eq!(w.orders_of("globex-0").await.len(), 3);
}
